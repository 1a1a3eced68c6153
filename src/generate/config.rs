//! A session's configuration and its defaults: the one place where the context size, the
//! cache and the sampler are decided for every shell (CLI, C API).

use crate::error::{Error, Result};
use crate::kv::KvConfig;
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
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            n_ctx: 0,
            kv: KvConfig::default(),
            sampler: SamplerParams::default(),
            batch: super::BATCH,
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
