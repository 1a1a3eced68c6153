//! One error type for the library. Every message says what was wrong and where
//! (file, key, tensor), so the CLI can print it as a single line.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error while touching a file.
    #[error("{}: {}", path.display(), io_reason(source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The content of a file is invalid: `file` names the file, `msg` the problem and where.
    #[error("{}: {msg}", file.display())]
    Invalid { file: PathBuf, msg: String },
    /// A request that cannot be honoured (bad argument, unsupported option).
    #[error("{0}")]
    Usage(String),
    /// Tokens that do not fit the context under the `stop` policy.
    #[error("{0}")]
    ContextFull(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// An I/O error on `path` while `doing` something ("cannot open the model file"):
    /// the message says what was being done and why it failed, in words.
    pub fn io_while(path: impl AsRef<Path>, doing: &str, source: std::io::Error) -> Self {
        let msg = one_line(format!("{doing}: {}", io_reason(&source)));
        Error::io(path, std::io::Error::new(source.kind(), msg))
    }

    pub fn invalid(file: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Invalid {
            file: file.as_ref().to_path_buf(),
            msg: one_line(msg.into()),
        }
    }

    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(one_line(msg.into()))
    }

    pub fn context_full(msg: impl Into<String>) -> Self {
        Error::ContextFull(one_line(msg.into()))
    }
}

/// What an I/O error means, in words a user acts on: "no such file or directory" rather
/// than std's "entity not found" (which is what an error built from a bare kind says),
/// and without the "(os error 2)" suffix.
pub fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    if e.get_ref().is_some() {
        // A message of its own (from `Error::io_while` or a library) says more than its
        // kind.
        return e.to_string();
    }
    match e.kind() {
        K::NotFound => "no such file or directory".into(),
        K::PermissionDenied => "permission denied".into(),
        K::IsADirectory => "is a directory".into(),
        K::NotADirectory => "a part of the path is not a directory".into(),
        K::AlreadyExists => "already exists".into(),
        K::StorageFull => "no space left on the device".into(),
        _ => {
            let s = e.to_string();
            match s.rfind(" (os error ") {
                Some(i) if s.ends_with(')') => s[..i].to_string(),
                _ => s,
            }
        }
    }
}

/// A file's leading bytes as text and as hex, e.g. `"GGUF" (47 47 55 46)`: the text is
/// what a user recognises, the hex what a byte dump shows (unprintable bytes are escaped
/// in the text).
pub fn show_magic(bytes: &[u8]) -> String {
    let text: String = bytes
        .iter()
        .map(|&b| match b {
            0x20..=0x7e if b != b'"' && b != b'\\' => (b as char).to_string(),
            _ => format!("\\x{b:02x}"),
        })
        .collect();
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{text}\" ({})", hex.join(" "))
}

/// Longest error message kept (characters): names and keys read from a corrupt file can
/// be kilobytes long.
const MAX_MESSAGE: usize = 400;

/// A message as one printable line: control characters (newlines, NULs, escapes that a
/// corrupt file may carry in a name) are escaped, and an overlong message is cut.
fn one_line(msg: String) -> String {
    if msg.len() <= MAX_MESSAGE && !msg.chars().any(char::is_control) {
        return msg;
    }
    let mut out = String::with_capacity(msg.len().min(MAX_MESSAGE + 16));
    for (n, c) in msg.chars().enumerate() {
        if n == MAX_MESSAGE {
            out.push_str("… (message cut)");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn magic_as_text_and_hex() {
        assert_eq!(super::show_magic(b"GGUF"), "\"GGUF\" (47 47 55 46)");
        assert_eq!(
            super::show_magic(&[0xa0, 0x76, 0, 0]),
            "\"\\xa0v\\x00\\x00\" (a0 76 00 00)"
        );
    }

    #[test]
    fn io_errors_in_words() {
        let e = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(super::io_reason(&e), "no such file or directory");
        let e = std::io::Error::from_raw_os_error(libc::ENODEV);
        assert!(!super::io_reason(&e).contains("os error"));
    }
}
