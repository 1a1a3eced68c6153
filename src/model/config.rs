//! LLaMA hyper-parameters: what the forward pass needs, stored as `.llq` metadata; plus
//! what the close relatives change in the LLaMA block ([`Arch`]).

use crate::error::{Error, Result};
use crate::format::{keys, LlqFile, Value};

#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (equivalently, frequencies divided by it).
    Linear {
        factor: f32,
    },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_context: u32,
    },
}

/// What a Gemma 3 model changes in the LLaMA block (llama.cpp's `gemma3`, transformers'
/// `Gemma3ForCausalLM`): token embeddings scaled by `√dim`; an RMSNorm on each query and
/// key head before RoPE; RMSNorms on the attention's and the MLP's outputs before their
/// residual adds; GeGLU (`gelu_tanh(gate) · up`) for SwiGLU; and sliding-window layers,
/// which see only the last [`Gemma3::sliding_window`] positions and rotate with their own
/// RoPE base. Norm weights are stored as applied (`1 + w` in transformers' terms, as
/// llama.cpp's GGUF files hold them).
#[derive(Clone, Debug, PartialEq)]
pub struct Gemma3 {
    /// Positions a sliding-window layer's query sees, itself included.
    pub sliding_window: usize,
    /// Layer `i` is global when `(i + 1) % pattern == 0`, sliding-window otherwise
    /// (llama.cpp's `set_swa_pattern`; 6 for every Gemma 3, 1 for none).
    pub pattern: usize,
    /// RoPE base of the sliding-window layers (no scaling); global layers use
    /// `rope_theta` and `rope_scaling`.
    pub rope_theta_local: f32,
    /// Scores are scaled by `1 / √query_pre_attn_scalar` (the head size but for the 27B).
    pub query_pre_attn_scalar: f32,
}

/// The architecture: LLaMA's block, or a close relative that changes a few pieces of it.
#[derive(Clone, Debug, PartialEq)]
pub enum Arch {
    /// LLaMA 1/2/3, TinyLlama, SmolLM, Mistral-style models.
    Llama,
    /// Qwen2 and Qwen2.5: biases on the Q, K and V projections.
    Qwen2,
    /// Qwen3 (dense): an RMSNorm on each query and key head before RoPE.
    Qwen3,
    /// Gemma 3 (see [`Gemma3`]).
    Gemma3(Gemma3),
}

impl Arch {
    /// Every architecture's name, as [`Arch::name`] gives it.
    pub const NAMES: [&'static str; 4] = ["llama", "qwen2", "qwen3", "gemma3"];

    /// The architecture of `name`, except Gemma 3, whose hyper-parameters its reader
    /// supplies (`None` for "gemma3" and for unknown names).
    pub fn plain(name: &str) -> Option<Arch> {
        match name {
            "llama" => Some(Arch::Llama),
            "qwen2" => Some(Arch::Qwen2),
            "qwen3" => Some(Arch::Qwen3),
            _ => None,
        }
    }

    /// The name in `.llq` and GGUF metadata (`general.architecture`).
    pub fn name(&self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3(_) => "gemma3",
        }
    }

    /// Whether Q, K and V have bias vectors (`attn_{q,k,v}.bias`).
    pub fn qkv_bias(&self) -> bool {
        matches!(self, Arch::Qwen2)
    }

    /// Whether each query and key head is RMS-normed before RoPE (`attn_{q,k}_norm`).
    pub fn qk_norm(&self) -> bool {
        matches!(self, Arch::Qwen3 | Arch::Gemma3(_))
    }

    pub fn gemma3(&self) -> Option<&Gemma3> {
        match self {
            Arch::Gemma3(g) => Some(g),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub dim: usize,
    pub ffn_dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: RopeScaling,
    /// Per-frequency divisors (GGUF's `rope_freqs` tensor, used by Llama 3.1 GGUFs):
    /// inv_freq[i] /= factors[i]. Length head_dim / 2.
    pub rope_freq_factors: Option<Vec<f32>>,
    pub context_length: usize,
    pub tie_embeddings: bool,
    pub bos_id: Option<u32>,
    pub eos_ids: Vec<u32>,
    /// LLaMA, or which relative (and its own hyper-parameters).
    pub arch: Arch,
}

impl ModelConfig {
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// The architecture's name in `.llq` metadata and in `llq info`.
    pub fn arch_name(&self) -> &'static str {
        self.arch.name()
    }

    /// The sliding window of layer `l` (positions its queries see, themselves included);
    /// `None` for a layer that sees the whole context.
    pub fn layer_window(&self, l: usize) -> Option<usize> {
        let g = self.arch.gemma3()?;
        (!(l + 1).is_multiple_of(g.pattern)).then_some(g.sliding_window)
    }

    /// The factor applied to every attention score.
    pub fn attn_scale(&self) -> f32 {
        match self.arch.gemma3() {
            None => 1.0 / (self.head_dim as f32).sqrt(),
            Some(g) => 1.0 / g.query_pre_attn_scalar.sqrt(),
        }
    }

    /// The most layers a model may declare. The largest LLaMA-family models have about
    /// 130; the bound keeps what a file's header can make llq build per layer (the list of
    /// tensors to look for, before any tensor is read) small: a GGUF declaring 2^24 layers
    /// used to allocate gigabytes for that list (found by the `gguf` fuzz target).
    pub const MAX_LAYERS: usize = 4096;

    /// Check the relations the forward pass relies on.
    pub fn validate(&self) -> std::result::Result<(), String> {
        // Every size is positive and bounded; the layer count more tightly (see MAX_LAYERS).
        const MAX: usize = 1 << 24;
        let sizes = [
            ("vocab_size", self.vocab_size, MAX),
            ("hidden size", self.dim, MAX),
            ("intermediate size", self.ffn_dim, MAX),
            ("layer count", self.n_layers, Self::MAX_LAYERS),
            ("head count", self.n_heads, MAX),
            ("kv head count", self.n_kv_heads, MAX),
            ("head_dim", self.head_dim, MAX),
            ("context length", self.context_length, MAX),
        ];
        for (what, v, max) in sizes {
            if v == 0 {
                return Err(format!("{what} = 0 is out of range"));
            }
            if v > max {
                return Err(format!("{what} = {v} is out of range (at most {max})"));
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(format!(
                "{} heads are not a multiple of {} kv heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!(
                "head_dim {} is odd; RoPE needs pairs",
                self.head_dim
            ));
        }
        if !(self.rms_eps.is_finite() && self.rms_eps > 0.0) {
            return Err(format!(
                "rms_norm_eps {} is not a positive number",
                self.rms_eps
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return Err(format!("rope theta {} is out of range", self.rope_theta));
        }
        if let Some(f) = &self.rope_freq_factors {
            if f.len() != self.head_dim / 2 || !f.iter().all(|v| v.is_finite() && *v > 0.0) {
                return Err(format!(
                    "rope frequency factors: {} values, expected {} positive numbers",
                    f.len(),
                    self.head_dim / 2
                ));
            }
        }
        match self.rope_scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => {
                if !(factor.is_finite() && factor > 0.0) {
                    return Err(format!("rope scaling factor {factor} is out of range"));
                }
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_context,
            } => {
                if !(factor > 0.0 && low_freq_factor > 0.0 && high_freq_factor > low_freq_factor)
                    || original_context == 0
                {
                    return Err(format!(
                        "llama3 rope scaling parameters are inconsistent: {:?}",
                        self.rope_scaling
                    ));
                }
            }
        }
        if let Some(g) = self.arch.gemma3() {
            if g.sliding_window == 0 || g.sliding_window > MAX || g.pattern == 0 {
                return Err(format!(
                    "sliding window {} / pattern {} is out of range",
                    g.sliding_window, g.pattern
                ));
            }
            if !(g.rope_theta_local.is_finite() && g.rope_theta_local > 1.0) {
                return Err(format!(
                    "local rope theta {} is out of range",
                    g.rope_theta_local
                ));
            }
            if !(g.query_pre_attn_scalar.is_finite() && g.query_pre_attn_scalar > 0.0) {
                return Err(format!(
                    "query_pre_attn_scalar {} is out of range",
                    g.query_pre_attn_scalar
                ));
            }
        }
        // Prompts start with BOS and generation stops at EOS: an id with no row in the
        // embedding (and no logit) would be an out-of-range lookup, or a stop never seen.
        let n = self.vocab_size;
        let bos = self.bos_id.map(|id| ("BOS", id));
        let eos = self.eos_ids.iter().map(|&id| ("EOS", id));
        if let Some((what, id)) = bos.into_iter().chain(eos).find(|&(_, id)| id as usize >= n) {
            return Err(format!(
                "{what} token id {id} is outside the vocabulary (vocab size {n})"
            ));
        }
        Ok(())
    }

    pub fn to_metadata(&self) -> Vec<(String, Value)> {
        let u = |k: &str, v: usize| (k.to_string(), Value::U32(v as u32));
        let mut m = vec![
            (
                keys::ARCHITECTURE.to_string(),
                Value::Str(self.arch_name().into()),
            ),
            u(keys::VOCAB_SIZE, self.vocab_size),
            u(keys::CONTEXT_LENGTH, self.context_length),
            u(keys::EMBEDDING_LENGTH, self.dim),
            u(keys::FEED_FORWARD_LENGTH, self.ffn_dim),
            u(keys::BLOCK_COUNT, self.n_layers),
            u(keys::HEAD_COUNT, self.n_heads),
            u(keys::HEAD_COUNT_KV, self.n_kv_heads),
            u(keys::HEAD_DIM, self.head_dim),
            (keys::RMS_EPS.to_string(), Value::F32(self.rms_eps)),
            (keys::ROPE_THETA.to_string(), Value::F32(self.rope_theta)),
            (
                keys::TIED_EMBEDDINGS.to_string(),
                Value::Bool(self.tie_embeddings),
            ),
        ];
        let s = |k: &str, v: &str| (k.to_string(), Value::Str(v.into()));
        let f = |k: &str, v: f32| (k.to_string(), Value::F32(v));
        match self.rope_scaling {
            RopeScaling::None => m.push(s(keys::ROPE_SCALING_TYPE, "none")),
            RopeScaling::Linear { factor } => {
                m.push(s(keys::ROPE_SCALING_TYPE, "linear"));
                m.push(f(keys::ROPE_SCALING_FACTOR, factor));
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_context,
            } => {
                m.push(s(keys::ROPE_SCALING_TYPE, "llama3"));
                m.push(f(keys::ROPE_SCALING_FACTOR, factor));
                m.push(f(keys::ROPE_SCALING_LOW_FREQ, low_freq_factor));
                m.push(f(keys::ROPE_SCALING_HIGH_FREQ, high_freq_factor));
                m.push(u(keys::ROPE_SCALING_ORIG_CTX, original_context as usize));
            }
        }
        if let Some(f) = &self.rope_freq_factors {
            m.push((
                keys::ROPE_FREQ_FACTORS.to_string(),
                Value::ArrF32(f.clone()),
            ));
        }
        if let Some(g) = self.arch.gemma3() {
            m.push(u(keys::GEMMA3_SLIDING_WINDOW, g.sliding_window));
            m.push(u(keys::GEMMA3_SLIDING_PATTERN, g.pattern));
            m.push(f(keys::GEMMA3_ROPE_THETA_LOCAL, g.rope_theta_local));
            m.push(f(
                keys::GEMMA3_QUERY_PRE_ATTN_SCALAR,
                g.query_pre_attn_scalar,
            ));
        }
        if let Some(b) = self.bos_id {
            m.push((keys::BOS_ID.to_string(), Value::U32(b)));
        }
        m.push((
            keys::EOS_IDS.to_string(),
            Value::ArrU32(self.eos_ids.clone()),
        ));
        m
    }

    pub fn from_file(f: &LlqFile) -> Result<ModelConfig> {
        let bad = |msg: String| Error::invalid(f.path(), msg);
        let arch = f.get(keys::ARCHITECTURE).and_then(Value::as_str);
        if arch == Some(crate::lora::file::ARCHITECTURE) {
            return Err(bad(
                "is a LoRA adapter, not a model: load it beside a base model with --lora \
                 (C API: llq_adapter_open)"
                    .into(),
            ));
        }
        let Some(arch) = arch.filter(|a| Arch::NAMES.contains(a)) else {
            return Err(bad(format!(
                "architecture {arch:?} is not supported (one of {} expected)",
                Arch::NAMES.join(", ")
            )));
        };
        let int = |k: &str| -> Result<usize> {
            f.get(k)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| bad(format!("metadata '{k}' is missing or not an integer")))
        };
        let float = |k: &str| -> Result<f32> {
            f.get(k)
                .and_then(Value::as_f64)
                .map(|v| v as f32)
                .ok_or_else(|| bad(format!("metadata '{k}' is missing or not a number")))
        };
        let rope_scaling = match f.get(keys::ROPE_SCALING_TYPE).and_then(Value::as_str) {
            None | Some("none") => RopeScaling::None,
            Some("linear") => RopeScaling::Linear {
                factor: float(keys::ROPE_SCALING_FACTOR)?,
            },
            Some("llama3") => RopeScaling::Llama3 {
                factor: float(keys::ROPE_SCALING_FACTOR)?,
                low_freq_factor: float(keys::ROPE_SCALING_LOW_FREQ)?,
                high_freq_factor: float(keys::ROPE_SCALING_HIGH_FREQ)?,
                original_context: int(keys::ROPE_SCALING_ORIG_CTX)? as u32,
            },
            Some(t) => return Err(bad(format!("rope scaling type '{t}' is not supported"))),
        };
        let cfg = ModelConfig {
            vocab_size: int(keys::VOCAB_SIZE)?,
            dim: int(keys::EMBEDDING_LENGTH)?,
            ffn_dim: int(keys::FEED_FORWARD_LENGTH)?,
            n_layers: int(keys::BLOCK_COUNT)?,
            n_heads: int(keys::HEAD_COUNT)?,
            n_kv_heads: int(keys::HEAD_COUNT_KV)?,
            head_dim: int(keys::HEAD_DIM)?,
            rms_eps: float(keys::RMS_EPS)?,
            rope_theta: float(keys::ROPE_THETA)?,
            rope_scaling,
            rope_freq_factors: match f.get(keys::ROPE_FREQ_FACTORS) {
                Some(Value::ArrF32(v)) => Some(v.clone()),
                _ => None,
            },
            context_length: int(keys::CONTEXT_LENGTH)?,
            tie_embeddings: matches!(f.get(keys::TIED_EMBEDDINGS), Some(Value::Bool(true))),
            bos_id: f
                .get(keys::BOS_ID)
                .and_then(Value::as_u64)
                .map(|v| v as u32),
            eos_ids: match f.get(keys::EOS_IDS) {
                Some(Value::ArrU32(v)) => v.clone(),
                _ => Vec::new(),
            },
            arch: match Arch::plain(arch) {
                Some(a) => a,
                None => Arch::Gemma3(Gemma3 {
                    sliding_window: int(keys::GEMMA3_SLIDING_WINDOW)?,
                    pattern: int(keys::GEMMA3_SLIDING_PATTERN)?,
                    rope_theta_local: float(keys::GEMMA3_ROPE_THETA_LOCAL)?,
                    query_pre_attn_scalar: float(keys::GEMMA3_QUERY_PRE_ATTN_SCALAR)?,
                }),
            },
        };
        cfg.validate().map_err(bad)?;
        Ok(cfg)
    }
}
