//! LoRA adapters: low-rank updates `W' = W + s · B·A` of a base model's projections.
//!
//! [`peft`] reads and validates a Hugging Face PEFT adapter directory into a [`LoraAdapter`]
//! (f32 matrices in llq's tensor naming); [`merge`] folds adapters into a checkpoint's
//! weights before conversion (`llq convert --lora`). Everything PEFT can express that these
//! do not implement is refused with a message naming it, never ignored.

pub mod apply;
pub mod file;
pub mod gguf;
pub mod merge;
pub mod peft;

pub use apply::{AdapterSet, LoraScratch};
pub use file::{write_adapter, Adapter};
pub use merge::{merge_adapters, MergedCheckpoint};
pub use peft::open_peft;
/// The hex SHA-256 of `data` (what `sha256sum` prints): the provenance of merged adapters.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

use crate::model::ModelConfig;

/// The linear projections of a LLaMA layer an adapter may target, as
/// (PEFT module path inside `model.layers.N`, llq per-layer part).
pub const PROJECTIONS: [(&str, &str); 7] = [
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

/// A projection of a LLaMA layer, in [`PROJECTIONS`] order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proj {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Proj {
    pub const ALL: [Proj; 7] = [
        Proj::Q,
        Proj::K,
        Proj::V,
        Proj::O,
        Proj::Gate,
        Proj::Up,
        Proj::Down,
    ];

    /// `[out, in]` of this projection's weight in `cfg`'s model.
    pub fn shape(self, cfg: &ModelConfig) -> (usize, usize) {
        let (d, q, kv, f) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.ffn_dim);
        match self {
            Proj::Q => (q, d),
            Proj::K | Proj::V => (kv, d),
            Proj::O => (d, q),
            Proj::Gate | Proj::Up => (f, d),
            Proj::Down => (d, f),
        }
    }
}

/// One adapted projection: `delta = scaling · B·A` with `A` `[rank, in_dim]` and `B`
/// `[out_dim, rank]`, both row-major f32.
#[derive(Clone, Debug)]
pub struct LoraTarget {
    /// The base tensor it modifies, in llq naming (`blk.N.attn_q.weight`).
    pub name: String,
    pub rank: usize,
    pub in_dim: usize,
    pub out_dim: usize,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
}

/// A plain LoRA adapter (no DoRA, no per-module ranks): what llq can merge or apply.
#[derive(Clone, Debug)]
pub struct LoraAdapter {
    /// A human-readable name (the adapter directory's name).
    pub name: String,
    /// SHA-256 of the file the weights came from (`adapter_model.safetensors`).
    pub sha256: String,
    pub rank: usize,
    pub alpha: f64,
    pub use_rslora: bool,
    /// Targets sorted by tensor name; at most one per base tensor.
    pub targets: Vec<LoraTarget>,
}

/// PEFT's multiplier of `B·A`: `alpha / r`, or `alpha / sqrt(r)` for rank-stabilized LoRA
/// (rsLoRA), whose point is that the update's size no longer shrinks as the rank grows.
pub fn scaling(alpha: f64, rank: usize, use_rslora: bool) -> f32 {
    let r = rank as f64;
    (if use_rslora {
        alpha / r.sqrt()
    } else {
        alpha / r
    }) as f32
}

impl LoraAdapter {
    pub fn scaling(&self) -> f32 {
        scaling(self.alpha, self.rank, self.use_rslora)
    }

    pub fn target(&self, name: &str) -> Option<&LoraTarget> {
        self.targets
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.targets[i])
    }

    /// Check that every target names a projection of `cfg`'s model with matching shapes:
    /// an adapter trained for another base must not be applied to this one.
    pub fn check_base(&self, cfg: &ModelConfig) -> Result<(), String> {
        let expected = cfg.expected_tensors();
        for t in &self.targets {
            let Some((_, shape)) = expected.iter().find(|(n, _)| *n == t.name) else {
                return Err(format!(
                    "adapter '{}' targets '{}', which the base model ({} layers) does not have",
                    self.name, t.name, cfg.n_layers
                ));
            };
            let (rows, cols) = (shape[0] as usize, shape[1] as usize);
            if (t.out_dim, t.in_dim) != (rows, cols) {
                return Err(format!(
                    "adapter '{}': '{}' is [{rows}, {cols}] in the base, but the adapter's B·A is \
                     [{}, {}] (an adapter for another model?)",
                    self.name, t.name, t.out_dim, t.in_dim
                ));
            }
        }
        Ok(())
    }
}
