//! One error type for the library. Every message says what was wrong and where
//! (file, key, tensor), so the CLI can print it as a single line.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error while touching a file.
    #[error("{}: {source}", path.display())]
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
