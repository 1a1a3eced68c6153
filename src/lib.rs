//! llq: a quantized LLM runtime for the LLaMA family.

pub mod chat;
pub mod tokenizer;
