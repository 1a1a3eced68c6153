//! The `.llq` file: one self-contained, memory-mappable model file.
//! The byte-level specification is docs/FORMAT.md; this module is its only implementation.

mod reader;
mod spec;
pub mod temp;
mod value;
mod writer;

pub use reader::{LlqFile, TensorEntry};
pub use spec::*;
pub use value::Value;
pub use writer::{LlqWriter, TensorPlan};
