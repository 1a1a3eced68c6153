//! llq: a quantized LLM runtime for the LLaMA family.
pub mod gguf;
