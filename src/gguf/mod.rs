//! GGUF (v2/v3) model files: a hardened reader and reference dequantization
//! of ggml tensor types.
//!
//! ```no_run
//! use llq::gguf::GgufFile;
//! let f = GgufFile::open(std::path::Path::new("model.gguf"))?;
//! println!("arch = {:?}", f.get_str("general.architecture"));
//! for t in f.tensors() {
//!     println!("{} {} {:?}", t.name, t.ggml_type, t.dims);
//! }
//! # Ok::<(), llq::gguf::GgufError>(())
//! ```

mod dequant;
mod error;
mod reader;
mod types;
mod value;

pub use dequant::dequantize;
pub use error::GgufError;
pub use reader::{GgufFile, GgufTensorInfo, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS};
pub use types::{GgmlType, QK_K};
pub use value::{GgufArray, GgufValue, GgufValueType};
