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
            msg: msg.into(),
        }
    }

    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }

    pub fn context_full(msg: impl Into<String>) -> Self {
        Error::ContextFull(msg.into())
    }
}
