//! Error type of the GGUF reader and the dequantizers.

use std::path::PathBuf;

/// Everything that can go wrong reading a GGUF file or dequantizing a tensor.
///
/// Messages always say what was wrong and where: a byte offset, a metadata
/// key or a tensor name.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened, stat'ed or mapped.
    #[error("cannot read GGUF file {}: {}", path.display(), crate::error::io_reason(source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The first four bytes are not `GGUF`.
    #[error(
        "not a GGUF file: its magic (first 4 bytes) is {}, expected {}",
        crate::error::show_magic(found),
        crate::error::show_magic(b"GGUF")
    )]
    BadMagic { found: Vec<u8> },

    /// A GGUF version other than 2 or 3.
    #[error("unsupported GGUF version {version} at byte offset 4 (only versions 2 and 3 are supported){hint}")]
    UnsupportedVersion { version: u32, hint: &'static str },

    /// The file ends (or a length/count points) past the end of the data.
    #[error("truncated GGUF file: {what} at byte offset {offset} needs {needed} bytes but only {available} remain (past the end of the file)")]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        available: u64,
    },

    /// Structurally invalid header / metadata / tensor-info content.
    #[error("invalid GGUF file at byte offset {offset}: {msg}")]
    Invalid { offset: u64, msg: String },

    /// A metadata key appears twice.
    #[error("duplicate metadata key '{key}' at byte offset {offset}")]
    DuplicateKey { key: String, offset: u64 },

    /// A tensor name appears twice.
    #[error("duplicate tensor name '{name}' at byte offset {offset}")]
    DuplicateTensor { name: String, offset: u64 },

    /// A tensor info names a ggml type id this reader does not know.
    #[error("tensor '{tensor}' has unknown ggml type id {id} (at byte offset {offset})")]
    UnknownType {
        tensor: String,
        id: u32,
        offset: u64,
    },

    /// A tensor info is inconsistent (shape, size, offset, alignment, ...).
    #[error("invalid tensor '{tensor}': {msg}")]
    Tensor { tensor: String, msg: String },

    /// Two tensors' data ranges overlap.
    #[error("tensor data overlaps: '{a}' (bytes {a_start}..{a_end}) and '{b}' (bytes {b_start}..{b_end})")]
    Overlap {
        a: String,
        a_start: u64,
        a_end: u64,
        b: String,
        b_start: u64,
        b_end: u64,
    },

    /// A metadata value has the wrong type or an invalid value for its key.
    #[error("metadata key '{key}': {msg}")]
    Metadata { key: String, msg: String },

    /// Dequantization was asked for an unsupported type or wrong lengths.
    #[error("dequantize {ty}: {msg}")]
    Dequant { ty: &'static str, msg: String },
}
