//! Saved prompts (`llq run --prompt-cache FILE`): a prompt's token ids, the logits after
//! its last token and the cache contents of its positions, so a later run whose prompt
//! starts with the same tokens evaluates only the rest.
//!
//! File layout (little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `LLQPC\x01\0\0` (the last non-zero byte is this file format's version) |
//! | 2 + 2 | `.llq` format version (major, minor) of the model file |
//! | 8 + 4 | model fingerprint: model file size, its header CRC32 (covers every hyper-parameter, tensor name, type and offset, and the data CRC) |
//! | 1 + 3 | cache type code, padding |
//! | 4 × 4 | n_layers, kv_dim, vocab, n_tokens |
//! | 4 × n_tokens | token ids |
//! | 4 × vocab | f32 logits after the last token |
//! | … | K then V of slots `0..n_tokens`, layer by layer, in the cache's storage type |
//! | 4 | CRC32 of everything above |
//!
//! Files are written to a temporary file next to the target and renamed over it, and only
//! over a missing file or an earlier prompt cache: a path that holds anything else (the
//! model itself, a text, a device) is refused, never overwritten.
//!
//! The cache does not know models: the caller names the model by a [`ModelIdentity`].

use std::io::Write;
use std::path::Path;

use super::{CacheType, KvCache};
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"LLQPC\x01\0\0";
const HEAD: usize = 8 + 4 + 12 + 4 + 16;

/// The model a cache is computed with, as the cache file records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelIdentity {
    /// `.llq` format version (major, minor) of the model file.
    pub format: (u16, u16),
    /// The model file's size and its header CRC32 (which covers every hyper-parameter,
    /// tensor name, type and offset, and the data CRC).
    pub file_size: u64,
    pub header_crc: u32,
    pub n_layers: usize,
    pub kv_dim: usize,
    pub vocab: usize,
}

/// Whether `path` may be written: it does not exist, or it is a regular file that starts
/// like a prompt cache.
fn check_replaceable(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
        Ok(m) => m,
    };
    let refuse = |what: &str| {
        Err(Error::invalid(
            path,
            format!("{what}, not a prompt cache: refusing to overwrite it"),
        ))
    };
    if !meta.file_type().is_file() {
        return refuse("this path is not a regular file");
    }
    let mut head = [0u8; 8];
    let read =
        std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head));
    match read {
        Ok(()) if &head == MAGIC => Ok(()),
        _ if meta.len() == 0 => Ok(()),
        _ => refuse("the file exists and is something else"),
    }
}

/// Write a prompt cache for `tokens` (which must be exactly the cache's first positions,
/// not wrapped) atomically.
pub fn save(
    path: &Path,
    model: &ModelIdentity,
    cache: &KvCache,
    tokens: &[u32],
    logits: &[f32],
) -> Result<()> {
    let n = tokens.len();
    if cache.wrapped() || cache.pos() != n || n == 0 {
        return Err(Error::usage(
            "prompt cache: the cache does not hold exactly the prompt",
        ));
    }
    let vocab = model.vocab;
    if logits.len() != vocab {
        return Err(Error::usage("prompt cache: no logits for the prompt"));
    }
    check_replaceable(path)?;
    let ((major, minor), size, crc) = (model.format, model.file_size, model.header_crc);
    let mut buf = Vec::with_capacity(HEAD + 4 * n + 4 * vocab + cache.prefix_len(n) + 4);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&major.to_le_bytes());
    buf.extend_from_slice(&minor.to_le_bytes());
    buf.extend_from_slice(&size.to_le_bytes());
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(&[cache.config().cache_type.code(), 0, 0, 0]);
    for v in [model.n_layers, model.kv_dim, vocab, n] {
        buf.extend_from_slice(&(v as u32).to_le_bytes());
    }
    tokens
        .iter()
        .for_each(|t| buf.extend_from_slice(&t.to_le_bytes()));
    logits
        .iter()
        .for_each(|v| buf.extend_from_slice(&v.to_le_bytes()));
    cache.prefix_bytes(n, |b| buf.extend_from_slice(b));
    let sum = crc32fast::hash(&buf);
    buf.extend_from_slice(&sum.to_le_bytes());

    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let io = |e| Error::io(path, e);
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    tmp.write_all(&buf).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// A validated prompt cache file.
pub struct Loaded {
    pub tokens: Vec<u32>,
    pub logits: Vec<f32>,
    bytes: Vec<u8>,
    cache_at: usize,
}

/// Read and validate a prompt cache for `model` and a cache like `cache`. The error says
/// why the file cannot be used (the caller warns and evaluates the prompt normally).
pub fn load(path: &Path, model: &ModelIdentity, cache: &KvCache) -> Result<Loaded> {
    let bad = |m: String| Error::invalid(path, m);
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.len() < HEAD + 4 || &bytes[..8] != MAGIC {
        return Err(bad(
            "not an llq prompt cache (or an unsupported version)".into()
        ));
    }
    let body = bytes.len() - 4;
    let stored = u32::from_le_bytes(bytes[body..].try_into().unwrap());
    if crc32fast::hash(&bytes[..body]) != stored {
        return Err(bad(
            "checksum mismatch: the file is corrupt or truncated".into()
        ));
    }
    let u16_at = |o: usize| u16::from_le_bytes(bytes[o..o + 2].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let ((major, minor), size, crc) = (model.format, model.file_size, model.header_crc);
    if (u16_at(8), u16_at(10)) != (major, minor) {
        return Err(bad(format!(
            "made for llq format {}.{}, this model file is {major}.{minor}",
            u16_at(8),
            u16_at(10)
        )));
    }
    let f_size = u64::from_le_bytes(bytes[12..20].try_into().unwrap());
    if f_size != size || u32_at(20) != crc {
        return Err(bad("made with a different model".into()));
    }
    let ct = cache.config().cache_type;
    if bytes[24] != ct.code() {
        let name = CacheType::ALL
            .into_iter()
            .find(|c| c.code() == bytes[24])
            .map_or("unknown", |c| c.name());
        return Err(bad(format!(
            "holds a {name} cache, this run uses {}",
            ct.name()
        )));
    }
    let vocab = model.vocab;
    let n = u32_at(40) as usize;
    if (
        u32_at(28) as usize,
        u32_at(32) as usize,
        u32_at(36) as usize,
    ) != (model.n_layers, model.kv_dim, vocab)
    {
        return Err(bad("made with different model dimensions".into()));
    }
    if n == 0 || n > cache.n_ctx() {
        return Err(bad(format!(
            "holds {n} tokens, more than the context of {} (set -c)",
            cache.n_ctx()
        )));
    }
    let cache_at = HEAD + 4 * n + 4 * vocab;
    if cache_at + cache.prefix_len(n) != body {
        return Err(bad("size does not match its header".into()));
    }
    let tokens: Vec<u32> = (0..n).map(|i| u32_at(HEAD + 4 * i)).collect();
    if let Some(t) = tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(bad(format!("token id {t} is outside the vocabulary")));
    }
    let logits = bytes[HEAD + 4 * n..cache_at]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    Ok(Loaded {
        tokens,
        logits,
        bytes,
        cache_at,
    })
}

impl Loaded {
    /// Put the saved positions into `cache` (made for the same model and type).
    pub fn restore(&self, cache: &mut KvCache) {
        let n = self.tokens.len();
        let end = self.cache_at + cache.prefix_len(n);
        cache.load_prefix(n, &self.bytes[self.cache_at..end]);
    }
}
