//! The C types of the API: opaque handles, parameter and result structs, the callback.

use std::ffi::{c_char, c_void};

use super::llq_token;

/// A loaded model (opaque handle). Shareable between threads and contexts.
pub struct llq_model {
    _opaque: [u8; 0],
}

/// A generation context (opaque handle): KV cache, sampler and stop flag over a model.
pub struct llq_context {
    _opaque: [u8; 0],
}

/// Options for `llq_model_open`. Get the defaults from `llq_model_default_params()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct llq_model_params {
    /// Threads of the process-wide compute pool (0 = one per physical core, or
    /// `RAYON_NUM_THREADS` if set; more than 4 per CPU the process may use is
    /// `LLQ_ERR_INVALID_ARG`, more than one per CPU is capped at one per CPU). Only the
    /// first model opened in the process sizes the pool; later values are checked but
    /// otherwise ignored.
    pub n_threads: i32,
    /// Map the file (true, the default: zero copy, pages loaded on demand) or read it into
    /// an anonymous allocation (false: for file systems without mmap).
    pub use_mmap: bool,
    /// Lock the mapped weights in RAM (`mlock`); fails if RLIMIT_MEMLOCK is too low.
    pub use_mlock: bool,
}

/// Options for `llq_context_new`. Get the defaults from `llq_context_default_params()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct llq_context_params {
    /// Context size in tokens (0 = the model's trained context, capped at 4096).
    pub n_ctx: u32,
    /// Random seed: the same seed, model and parameters give the same output.
    pub seed: u64,
    /// Temperature, finite and >= 0; 0 = greedy.
    pub temp: f32,
    /// Keep the k most likely tokens (0 = off).
    pub top_k: i32,
    /// Nucleus sampling threshold (1 = off).
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one (0 = off).
    pub min_p: f32,
    /// Divide the logits of recent tokens by this (1 = off).
    pub repeat_penalty: f32,
    /// How many recent tokens the repetition penalty looks at.
    pub repeat_last_n: i32,
    /// KV cache storage: `LLQ_CACHE_F32` (default, exact), `LLQ_CACHE_F16` (half the
    /// memory, mean KL ~1e-6 on SmolLM2) or `LLQ_CACHE_Q8_0` (a quarter; needs
    /// head_dim % 32 == 0).
    pub cache_type: i32,
    /// When the context is full: false (default) stops (`llq_generate` with
    /// `LLQ_STOP_CONTEXT_FULL`, `llq_eval` with `LLQ_ERR_CONTEXT_FULL`); true overwrites
    /// the oldest positions after the first `n_keep`, and generation and evaluation go on.
    pub context_shift: bool,
    /// Positions never evicted when shifting (attention sinks; default 4).
    pub n_keep: u32,
}

/// KV cache stored as f32.
pub const LLQ_CACHE_F32: i32 = 0;
/// KV cache stored as f16 (half the memory of f32, no measurable accuracy cost).
pub const LLQ_CACHE_F16: i32 = 1;
/// KV cache stored as Q8_0 blocks (a quarter of f32).
pub const LLQ_CACHE_Q8_0: i32 = 2;

/// Options for `llq_generate`. Get the defaults from `llq_generate_default_params()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct llq_generate_params {
    /// Most tokens to generate (0 = only evaluate the prompt).
    pub max_tokens: i32,
    /// Stop at an end-of-generation token (EOS, `<|im_end|>`, ...), which is not reported.
    pub stop_at_eog: bool,
    /// Prepend BOS to the prompt when the model's tokenizer asks for it.
    pub add_special: bool,
    /// Turn special-token text in the prompt (e.g. `<|im_start|>`) into special tokens.
    pub parse_special: bool,
    /// Leave special tokens out of the text passed to the callback.
    pub skip_special: bool,
}

/// What `llq_generate` did.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct llq_generate_result {
    /// Tokens reported to the callback (and kept in the context).
    pub n_tokens: i32,
    /// Why generation ended: one of `LLQ_STOP_*`.
    pub stop_reason: i32,
}

/// One chat message: NUL-terminated UTF-8 role ("system", "user", "assistant") and content.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct llq_chat_message {
    pub role: *const c_char,
    pub content: *const c_char,
}

/// Called for each generated token with its newly completed UTF-8 text (`piece`, `len`
/// bytes, NUL-terminated, possibly empty when a character spans several tokens) and its
/// id; a final call with `token == LLQ_TOKEN_NULL` may deliver trailing text. `piece` is
/// only valid during the call. Return true to continue, false to stop. The callback must
/// not call other llq functions on the same context (they return `LLQ_ERR_BUSY`);
/// `llq_context_request_stop` is allowed.
// The pointer type is `unsafe` because llq calls foreign code through it; llq upholds its
// side by passing a valid NUL-terminated `piece` for the duration of the call.
pub type llq_token_callback = Option<
    unsafe extern "C" fn(
        piece: *const c_char,
        len: usize,
        token: llq_token,
        user_data: *mut c_void,
    ) -> bool,
>;
