//! What a generation call is asked to do, what it reports, and why it ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Options of one [`super::SessionOf::generate`] call.
#[derive(Clone, Debug)]
pub struct GenerateParams {
    /// Most tokens to generate (0: only what the prompt needed is evaluated).
    pub max_tokens: usize,
    /// End at an end-of-generation token (EOS, `<|im_end|>`, ...), which is then neither
    /// reported nor kept.
    pub stop_at_eog: bool,
    /// Leave special tokens out of the pieces' text.
    pub skip_special: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 256,
            stop_at_eog: true,
            skip_special: true,
        }
    }
}

/// One streamed step: a generated token and the UTF-8 text it completes (possibly empty
/// when a character spans several tokens), or, last, text without a token (what was held
/// back for an incomplete character).
#[derive(Clone, Copy, Debug)]
pub struct Piece<'a> {
    pub token: Option<u32>,
    pub text: &'a str,
}

/// Why generation ended. Every shell reports it: the C API as `LLQ_STOP_*`, the CLI by
/// [`StopReason::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// `max_tokens` tokens were generated.
    MaxTokens,
    /// An end-of-generation token was sampled.
    EndOfGeneration,
    /// The context is full and its policy is `stop`.
    ContextFull,
    /// The caller's callback asked to stop.
    Callback,
    /// A [`StopHandle`] asked to stop (another thread, Ctrl-C).
    Requested,
}

impl StopReason {
    pub fn name(self) -> &'static str {
        match self {
            StopReason::MaxTokens => "max tokens",
            StopReason::EndOfGeneration => "end of generation",
            StopReason::ContextFull => "context full",
            StopReason::Callback => "stopped by the caller",
            StopReason::Requested => "stop requested",
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a generation call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generated {
    /// Tokens reported (and kept in the context).
    pub n_tokens: usize,
    pub stop: StopReason,
}

/// Asks a running generation to stop after its current token. Cloneable and `Send`; a
/// request only stores an atomic, so a signal handler may make it.
#[derive(Clone, Debug, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    pub(super) fn clear(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}
