//! llq: a quantized LLM runtime for the LLaMA family.
//!
//! Data flows one way: [`convert`] reads a checkpoint (Hugging Face safetensors or
//! [`gguf`]) and writes a `.llq` file ([`format`]); [`model::Model`] maps that file and runs
//! the forward pass with the [`kernels`]; [`tokenizer`] turns text into ids and back,
//! [`chat`] renders the model's chat template, and [`sample`] turns logits into tokens.

pub mod chat;
pub mod convert;
pub mod error;
pub mod ffi;
pub mod format;
pub mod generate;
pub mod gguf;
pub mod imatrix;
pub mod kernels;
pub mod kv;
pub mod lora;
pub mod model;
pub mod perplexity;
pub mod quant;
pub mod sample;
pub mod sys;
pub mod threads;
pub mod tokenizer;
mod tsan;

pub use error::{Error, Result};
