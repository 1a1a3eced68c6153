//! What a path given as a model is (a `.llq`, a GGUF, a safetensors file, a checkpoint
//! directory, something else), so that a wrong one gets an error that says what was
//! found and what to pass instead, rather than a parser's "bad magic".

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{show_magic, Error, Result};

/// What a model path holds, judged by its first bytes (not by its name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathKind {
    Missing,
    /// A directory; `config` says whether it has a `config.json`.
    Directory {
        config: bool,
    },
    Llq,
    Gguf,
    Safetensors,
    /// A device, FIFO or socket: not read (a FIFO would block).
    Special,
    /// Anything else, with its first (up to 4) bytes.
    Other(Vec<u8>),
}

/// The kind of `path`. Errors other than "not found" (permissions, I/O) are errors.
pub fn inspect(path: &Path) -> Result<PathKind> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PathKind::Missing),
        Err(e) => return Err(Error::io(path, e)),
    };
    if meta.is_dir() {
        return Ok(PathKind::Directory {
            config: path.join("config.json").is_file(),
        });
    }
    if !meta.is_file() {
        return Ok(PathKind::Special);
    }
    let mut head = Vec::with_capacity(9);
    std::fs::File::open(path)
        .and_then(|f| f.take(9).read_to_end(&mut head))
        .map_err(|e| Error::io(path, e))?;
    Ok(match head.get(..4) {
        Some(b"LLQF") => PathKind::Llq,
        Some(b"GGUF") => PathKind::Gguf,
        // safetensors: a little-endian u64 header length, then the JSON header.
        _ if head.len() == 9 && head[8] == b'{' && {
            let n = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
            n >= 2 && n < meta.len()
        } =>
        {
            PathKind::Safetensors
        }
        _ => PathKind::Other(head.into_iter().take(4).collect()),
    })
}

/// The error for a path that is not a checkpoint `llq convert` reads, saying what was
/// found and what to pass instead; `None` for a GGUF file or a checkpoint directory.
pub fn not_a_checkpoint(path: &Path, kind: &PathKind) -> Option<Error> {
    const WANT: &str = "give a Hugging Face checkpoint directory (config.json and \
                        *.safetensors) or a .gguf file";
    let msg = match kind {
        PathKind::Gguf | PathKind::Directory { config: true } => return None,
        PathKind::Missing => format!("cannot convert it: no such file or directory ({WANT})"),
        PathKind::Directory { config: false } => {
            let mut m = "cannot convert this directory: it has no config.json, so it is not a \
                         Hugging Face checkpoint (one has config.json and model.safetensors or \
                         model.safetensors.index.json)"
                .to_string();
            match candidates(path).as_slice() {
                [] => {}
                [one, ..] => m.push_str(&format!("; pass {} instead", one.display())),
            }
            m
        }
        PathKind::Safetensors => {
            let dir = parent_dir(path);
            if dir.join("config.json").is_file() {
                format!(
                    "is a safetensors file: convert reads the whole checkpoint, so pass the \
                     directory that holds it and its config.json: {}",
                    dir.display()
                )
            } else {
                format!(
                    "is a safetensors file, and {} has no config.json: pass the checkpoint \
                     directory that holds config.json and the weights",
                    dir.display()
                )
            }
        }
        PathKind::Llq => "is already a .llq file: nothing to convert (run it as it is)".into(),
        PathKind::Special => format!("not a regular file (a device, FIFO or socket): {WANT}"),
        PathKind::Other(head) => format!(
            "not a checkpoint: it starts with {}, while a GGUF file starts with {} ({WANT})",
            show_magic(head),
            show_magic(b"GGUF")
        ),
    };
    Some(Error::invalid(path, msg))
}

/// The error for a `-m` path that is no model llq runs or converts (see
/// [`not_a_checkpoint`] for directories and safetensors files).
pub fn not_a_model(path: &Path, kind: &PathKind) -> Option<Error> {
    match kind {
        PathKind::Llq | PathKind::Gguf | PathKind::Directory { config: true } => None,
        PathKind::Missing => Some(Error::invalid(
            path,
            "cannot open the model: no such file or directory (give a .llq file, a .gguf file \
             or a Hugging Face checkpoint directory)",
        )),
        PathKind::Other(head) => Some(Error::invalid(
            path,
            format!(
                "not a model llq runs: it starts with {}; a .llq file starts with {}, a GGUF \
                 file with {}, and a Hugging Face checkpoint is a directory",
                show_magic(head),
                show_magic(b"LLQF"),
                show_magic(b"GGUF")
            ),
        )),
        PathKind::Special => Some(Error::invalid(
            path,
            "not a regular file (a device, FIFO or socket): give a .llq file, a .gguf file or \
             a Hugging Face checkpoint directory",
        )),
        PathKind::Directory { .. } | PathKind::Safetensors => not_a_checkpoint(path, kind),
    }
}

/// The directory holding `path` ("." for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Inside a directory that is no checkpoint: a GGUF file, or a subdirectory with a
/// config.json (a download that nests the checkpoint), the first by name.
fn candidates(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let gguf = p
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
            (gguf && p.is_file()) || p.join("config.json").is_file()
        })
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str, b: &[u8]| {
            let f = dir.path().join(n);
            std::fs::write(&f, b).unwrap();
            f
        };
        assert_eq!(inspect(&p("a", b"LLQF....")).unwrap(), PathKind::Llq);
        assert_eq!(inspect(&p("b", b"GGUF\x03")).unwrap(), PathKind::Gguf);
        let mut st = 2u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{}");
        assert_eq!(inspect(&p("c", &st)).unwrap(), PathKind::Safetensors);
        assert_eq!(
            inspect(&p("d", b"hello")).unwrap(),
            PathKind::Other(b"hell".to_vec())
        );
        assert_eq!(
            inspect(dir.path()).unwrap(),
            PathKind::Directory { config: false }
        );
        assert_eq!(inspect(&dir.path().join("no")).unwrap(), PathKind::Missing);
    }
}
