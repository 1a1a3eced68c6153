//! A session's configuration and its defaults: the one place where the context size, the
//! cache and the sampler are decided for every shell (CLI, C API).

use crate::error::{Error, Result};
use crate::kv::{ContextPolicy, KvConfig};
use crate::model::Model;
use crate::sample::SamplerParams;

/// Context size used when none is asked for: the model's trained context, capped here
/// (a 128k-context model would otherwise allocate gigabytes of cache by default).
pub const DEFAULT_MAX_CTX: usize = 4096;

/// Largest context size accepted (positions), whatever the memory.
pub const MAX_CTX: usize = 1 << 20;

/// How a session is built.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Context size in tokens; 0 = the model's trained context, capped at
    /// [`DEFAULT_MAX_CTX`].
    pub n_ctx: usize,
    /// Cache storage and full-window policy (default: f32, stop).
    pub kv: KvConfig,
    pub sampler: SamplerParams,
    /// Most tokens per forward call (activation buffers grow with it).
    pub batch: usize,
    /// What [`super::SessionOf::set_prompt`] does with a prompt longer than the context.
    pub long_prompt: LongPrompt,
}

/// What to do with a prompt longer than the context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LongPrompt {
    /// Under the `shift` policy, stream it through the ring: its oldest tokens after the
    /// sinks are dropped. Under `stop` it is refused all the same. The library's default
    /// (an application that chose `shift` chose this).
    #[default]
    ShiftIfAllowed,
    /// Refuse it ([`Error::ContextFull`]) whatever the policy: for a shell whose user did
    /// not ask for `shift` but got it as a default (the CLI), a prompt cut silently is a
    /// surprise, not a service.
    Refuse,
}

impl LongPrompt {
    /// Whether a prompt of `len` tokens may be set into a context of `n_ctx` positions
    /// under `policy`; the error says how long the prompt and the context are.
    pub(super) fn check(self, len: usize, n_ctx: usize, policy: ContextPolicy) -> Result<()> {
        if len <= n_ctx || (policy == ContextPolicy::Shift && self == LongPrompt::ShiftIfAllowed) {
            return Ok(());
        }
        Err(Error::context_full(format!(
            "prompt of {len} tokens does not fit the context of {n_ctx} (set a larger \
             context, or the shift policy to drop the prompt's oldest tokens)"
        )))
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            n_ctx: 0,
            kv: KvConfig::default(),
            sampler: SamplerParams::default(),
            batch: super::BATCH,
            long_prompt: LongPrompt::default(),
        }
    }
}

impl SessionConfig {
    /// The context size this configuration gives `model`.
    pub fn n_ctx_for(&self, model: &Model) -> Result<usize> {
        let n = match self.n_ctx {
            0 => model.config.context_length.clamp(1, DEFAULT_MAX_CTX),
            n => n,
        };
        if n > MAX_CTX {
            return Err(Error::usage(format!(
                "context size {n} is larger than the maximum {MAX_CTX}"
            )));
        }
        Ok(n)
    }
}
