//! Compact little-endian binary form of a tokenizer (for `.llq` files).
//!
//! ```text
//! magic "LLQTOK\0\0" | version u32 (=1)
//! kind u8 (0 spm, 1 byte-level) | pre u8 | flags u8 | flags2 u8 (bit 0: NFC)
//! bos, eos, unk, pad: u32 each (u32::MAX = none)
//! n_eog u32 | eog ids u32 * n_eog
//! n_tokens u32 | types u8 * n | scores f32 * n | piece lengths u32 * n | piece bytes
//! n_merges u32 | (left u32, right u32, merged u32) * n_merges
//! ```
//! Every count and length is checked against the remaining input.

use super::index::ByteTable;
use super::{ModelKind, PreTokenizer, SpmConfig, TokenType, Tokenizer, TokenizerError};

pub(crate) const MAGIC: &[u8; 8] = b"LLQTOK\0\0";
pub(crate) const VERSION: u32 = 1;
const NONE: u32 = u32::MAX;

const F_DUMMY: u8 = 1;
const F_REMOVE_WS: u8 = 2;
const F_ESCAPE_WS: u8 = 4;
const F_SPLIT_DIGITS: u8 = 8;
const F_BYTE_FALLBACK: u8 = 16;
const F_IGNORE_MERGES: u8 = 32;
const F_ADD_BOS: u8 = 64;
const F_ADD_EOS: u8 = 128;
const F2_NFC: u8 = 1;

pub(crate) fn to_bytes(t: &Tokenizer) -> Vec<u8> {
    let piece_bytes = t.pieces.total_bytes();
    let mut out =
        Vec::with_capacity(64 + t.pieces.len() * 9 + piece_bytes + t.merge_list.len() * 12);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    let mut flags = 0u8;
    let mut flags2 = 0u8;
    let (kind, pre) = match t.kind {
        ModelKind::Spm(c) => {
            for (on, f) in [
                (c.add_dummy_prefix, F_DUMMY),
                (c.remove_extra_whitespaces, F_REMOVE_WS),
                (c.escape_whitespaces, F_ESCAPE_WS),
                (c.split_digits, F_SPLIT_DIGITS),
                (c.byte_fallback, F_BYTE_FALLBACK),
            ] {
                if on {
                    flags |= f;
                }
            }
            (0u8, 0u8)
        }
        ModelKind::ByteLevel {
            pre,
            ignore_merges,
            nfc,
        } => {
            if ignore_merges {
                flags |= F_IGNORE_MERGES;
            }
            if nfc {
                flags2 |= F2_NFC;
            }
            (1u8, pre.to_u8())
        }
    };
    if t.add_bos {
        flags |= F_ADD_BOS;
    }
    if t.add_eos {
        flags |= F_ADD_EOS;
    }
    out.extend_from_slice(&[kind, pre, flags, flags2]);
    for id in [t.bos, t.eos, t.unk, t.pad] {
        out.extend_from_slice(&id.unwrap_or(NONE).to_le_bytes());
    }
    out.extend_from_slice(&(t.eog.len() as u32).to_le_bytes());
    for &e in &t.eog {
        out.extend_from_slice(&e.to_le_bytes());
    }
    out.extend_from_slice(&(t.pieces.len() as u32).to_le_bytes());
    out.extend(t.types.iter().map(|&ty| ty as u8));
    for s in &t.scores {
        out.extend_from_slice(&s.to_le_bytes());
    }
    for p in t.pieces.iter() {
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
    }
    for p in t.pieces.iter() {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(&(t.merge_list.len() as u32).to_le_bytes());
    for (i, &(a, b)) in t.merge_list.iter().enumerate() {
        out.extend_from_slice(&a.to_le_bytes());
        out.extend_from_slice(&b.to_le_bytes());
        out.extend_from_slice(&t.merge_out.get(i).copied().unwrap_or(0).to_le_bytes());
    }
    out
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn err(&self, msg: impl Into<String>) -> TokenizerError {
        TokenizerError::Serialized {
            offset: self.pos,
            msg: msg.into(),
        }
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], TokenizerError> {
        if n > self.b.len() - self.pos {
            return Err(self.err(format!(
                "{what}: needs {n} bytes, {} left",
                self.b.len() - self.pos
            )));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32, TokenizerError> {
        let s = self.take(4, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    /// A count of items of `item_size` bytes each, checked against the remaining input.
    fn count(&mut self, item_size: usize, what: &str) -> Result<usize, TokenizerError> {
        let at = self.pos;
        let n = self.u32(what)? as usize;
        let left = self.b.len() - self.pos;
        if n.saturating_mul(item_size) > left {
            return Err(TokenizerError::Serialized {
                offset: at,
                msg: format!("{what} count {n} exceeds the {left} remaining bytes"),
            });
        }
        Ok(n)
    }
}

pub(crate) fn from_bytes(b: &[u8]) -> Result<Tokenizer, TokenizerError> {
    let mut c = Cursor { b, pos: 0 };
    if c.take(8, "magic")? != MAGIC {
        return Err(TokenizerError::Serialized {
            offset: 0,
            msg: "bad magic (not a serialized llq tokenizer)".into(),
        });
    }
    let version = c.u32("version")?;
    if version != VERSION {
        return Err(c.err(format!(
            "unsupported version {version} (expected {VERSION})"
        )));
    }
    let h = c.take(4, "header")?;
    let (kind, pre, flags, flags2) = (h[0], h[1], h[2], h[3]);
    if flags2 & !F2_NFC != 0 {
        return Err(c.err(format!("unknown flags {flags2:#x}")));
    }
    let kind = match kind {
        0 => ModelKind::Spm(SpmConfig {
            add_dummy_prefix: flags & F_DUMMY != 0,
            remove_extra_whitespaces: flags & F_REMOVE_WS != 0,
            escape_whitespaces: flags & F_ESCAPE_WS != 0,
            split_digits: flags & F_SPLIT_DIGITS != 0,
            byte_fallback: flags & F_BYTE_FALLBACK != 0,
        }),
        1 => ModelKind::ByteLevel {
            pre: PreTokenizer::from_u8(pre)
                .ok_or_else(|| c.err(format!("unknown pre-tokenizer {pre}")))?,
            ignore_merges: flags & F_IGNORE_MERGES != 0,
            nfc: flags2 & F2_NFC != 0,
        },
        k => return Err(c.err(format!("unknown model kind {k}"))),
    };
    let mut ids = [None; 4];
    for slot in &mut ids {
        let v = c.u32("special id")?;
        *slot = (v != NONE).then_some(v);
    }
    let n_eog = c.count(4, "eog")?;
    let mut eog = Vec::with_capacity(n_eog);
    for _ in 0..n_eog {
        eog.push(c.u32("eog id")?);
    }
    let n = c.count(9, "token")?;
    let types_raw = c.take(n, "token types")?;
    let mut types = Vec::with_capacity(n);
    for (i, &t) in types_raw.iter().enumerate() {
        if !(1..=6).contains(&t) {
            return Err(c.err(format!("token {i} has invalid type {t}")));
        }
        types.push(TokenType::from_i32(i32::from(t)));
    }
    let scores: Vec<f32> = c
        .take(n * 4, "scores")?
        .chunks_exact(4)
        .map(|s| f32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .collect();
    let lens = c.take(n * 4, "piece lengths")?;
    let mut pieces = ByteTable::with_capacity(n, b.len() - c.pos);
    for s in lens.chunks_exact(4) {
        let len = u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize;
        pieces.push(c.take(len, "piece bytes")?);
    }
    let n_merges = c.count(12, "merge")?;
    let mut merge_list = Vec::with_capacity(n_merges);
    let mut merge_out = Vec::with_capacity(n_merges);
    for _ in 0..n_merges {
        let a = c.u32("merge")?;
        let b = c.u32("merge")?;
        let m = c.u32("merge")?;
        if a as usize >= n || b as usize >= n || m as usize >= n {
            return Err(c.err(format!("merge ({a}, {b}) -> {m} out of range")));
        }
        merge_list.push((a, b));
        merge_out.push(m);
    }
    if c.pos != b.len() {
        return Err(c.err(format!("{} trailing bytes", b.len() - c.pos)));
    }
    let t = Tokenizer {
        kind,
        pieces,
        scores,
        types,
        merge_list,
        merge_out,
        bos: ids[0],
        eos: ids[1],
        unk: ids[2],
        pad: ids[3],
        eog,
        add_bos: flags & F_ADD_BOS != 0,
        add_eos: flags & F_ADD_EOS != 0,
        d: Default::default(),
    };
    t.finish()
}
