//! A LLaMA model mapped from a `.llq` file: hyper-parameters plus zero-copy weight views.

mod attention;
mod config;
mod forward;
mod rope;

pub use config::{Arch, Gemma3, ModelConfig, RopeScaling};
pub use forward::{Logits, MatmulInput, Observer, State};
pub use rope::Rope;

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::{keys, LlqFile, TensorEntry};
use crate::quant::{blocks, WeightKind, WeightView};
use crate::tokenizer::Tokenizer;

/// Where one weight matrix lives in the mapped file.
#[derive(Clone, Debug)]
pub struct TensorRef {
    pub kind: WeightKind,
    pub rows: usize,
    pub cols: usize,
    offset: usize,
    n_bytes: usize,
}

pub struct LayerWeights {
    pub attn_norm: TensorRef,
    pub wq: TensorRef,
    pub wk: TensorRef,
    pub wv: TensorRef,
    pub wo: TensorRef,
    pub ffn_norm: TensorRef,
    pub w_gate: TensorRef,
    pub w_up: TensorRef,
    pub w_down: TensorRef,
    /// What the relatives add to the layer (see [`Arch`]); all `None` for LLaMA.
    pub extra: LayerExtras,
}

/// A layer's vectors beyond LLaMA's, present as its [`Arch`] has them.
#[derive(Default)]
pub struct LayerExtras {
    /// Qwen2: biases of the Q, K and V projections (`q_dim`, `kv_dim`, `kv_dim`).
    pub q_bias: Option<TensorRef>,
    pub k_bias: Option<TensorRef>,
    pub v_bias: Option<TensorRef>,
    /// Qwen3, Gemma 3: RMSNorm weights of each query / key head, before RoPE (`head_dim`).
    pub q_norm: Option<TensorRef>,
    pub k_norm: Option<TensorRef>,
    /// Gemma 3: RMSNorm of the attention block's output, before the residual add (`dim`).
    pub post_attn_norm: Option<TensorRef>,
    /// Gemma 3: RMSNorm of the MLP's output, before the residual add (`dim`).
    pub post_ffw_norm: Option<TensorRef>,
}

impl LayerExtras {
    /// Every vector present, with its name in layer `i`.
    fn named(&self, i: usize) -> impl Iterator<Item = (String, &TensorRef)> {
        [
            (names::layer_bias(i, "attn_q"), &self.q_bias),
            (names::layer_bias(i, "attn_k"), &self.k_bias),
            (names::layer_bias(i, "attn_v"), &self.v_bias),
            (names::layer(i, "attn_q_norm"), &self.q_norm),
            (names::layer(i, "attn_k_norm"), &self.k_norm),
            (names::layer(i, "post_attention_norm"), &self.post_attn_norm),
            (names::layer(i, "post_ffw_norm"), &self.post_ffw_norm),
        ]
        .into_iter()
        .filter_map(|(n, t)| Some((n, t.as_ref()?)))
    }
}

pub struct Model {
    pub file: LlqFile,
    pub config: ModelConfig,
    pub token_embd: TensorRef,
    pub layers: Vec<LayerWeights>,
    pub output_norm: TensorRef,
    /// `output.weight`, or the token embedding when they are tied.
    pub output: TensorRef,
    pub rope: Rope,
    /// Gemma 3's sliding-window layers' rotation (their own base, no scaling).
    pub rope_local: Option<Rope>,
    /// The tokenizer stored in the file, if the checkpoint had one.
    pub tokenizer: Option<Tokenizer>,
    /// The model's own Jinja chat template, if it has one.
    pub chat_template: Option<String>,
}

/// Canonical tensor names inside a `.llq` file.
pub mod names {
    pub const TOKEN_EMBD: &str = "token_embd.weight";
    pub const OUTPUT_NORM: &str = "output_norm.weight";
    pub const OUTPUT: &str = "output.weight";

    pub fn layer(i: usize, part: &str) -> String {
        format!("blk.{i}.{part}.weight")
    }

    /// A layer's bias vector (Qwen2's `attn_q.bias`, ...).
    pub fn layer_bias(i: usize, part: &str) -> String {
        format!("blk.{i}.{part}.bias")
    }

    /// Per-layer parts in file order.
    pub const LAYER_PARTS: [&str; 9] = [
        "attn_norm",
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_norm",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    ];

    /// Qwen2's Q, K and V biases (`blk.N.{part}.bias`), after [`LAYER_PARTS`].
    pub const QKV_BIASES: [&str; 3] = ["attn_q", "attn_k", "attn_v"];
    /// Qwen3's and Gemma 3's per-head norms, after the biases.
    pub const QK_NORMS: [&str; 2] = ["attn_q_norm", "attn_k_norm"];
    /// Gemma 3's output norms, last in a layer.
    pub const GEMMA3_POST_NORMS: [&str; 2] = ["post_attention_norm", "post_ffw_norm"];
}

impl ModelConfig {
    /// Every tensor the model needs, with its `[rows, cols]` (or `[n]`) shape, in file order.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<u64>)> {
        let (d, q, kv, f, v) = (
            self.dim as u64,
            self.q_dim() as u64,
            self.kv_dim() as u64,
            self.ffn_dim as u64,
            self.vocab_size as u64,
        );
        let mut t = vec![(names::TOKEN_EMBD.to_string(), vec![v, d])];
        for i in 0..self.n_layers {
            let shapes = [
                vec![d],
                vec![q, d],
                vec![kv, d],
                vec![kv, d],
                vec![d, q],
                vec![d],
                vec![f, d],
                vec![f, d],
                vec![d, f],
            ];
            for (part, shape) in names::LAYER_PARTS.iter().zip(shapes) {
                t.push((names::layer(i, part), shape));
            }
            if self.arch.qkv_bias() {
                for (part, n) in names::QKV_BIASES.iter().zip([q, kv, kv]) {
                    t.push((names::layer_bias(i, part), vec![n]));
                }
            }
            if self.arch.qk_norm() {
                for part in names::QK_NORMS {
                    t.push((names::layer(i, part), vec![self.head_dim as u64]));
                }
            }
            if self.arch.gemma3().is_some() {
                for part in names::GEMMA3_POST_NORMS {
                    t.push((names::layer(i, part), vec![d]));
                }
            }
        }
        t.push((names::OUTPUT_NORM.to_string(), vec![d]));
        if !self.tie_embeddings {
            t.push((names::OUTPUT.to_string(), vec![v, d]));
        }
        t
    }
}

impl Model {
    /// How a prompt cache names this model (see [`crate::kv::prompt_cache`]).
    pub fn identity(&self) -> crate::kv::prompt_cache::ModelIdentity {
        let f = &self.file;
        let hs = f.header_size();
        let crc = f.bytes_at(hs..hs + 4);
        crate::kv::prompt_cache::ModelIdentity {
            format: f.version(),
            file_size: f.file_size() as u64,
            header_crc: u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]),
            n_layers: self.config.n_layers,
            kv_dim: self.config.kv_dim(),
            vocab: self.config.vocab_size,
        }
    }

    pub fn open(path: &Path) -> Result<Model> {
        Self::open_with(path, false)
    }

    /// `in_memory`: read the file into memory instead of mapping it (see
    /// [`LlqFile::open_with`]).
    pub fn open_with(path: &Path, in_memory: bool) -> Result<Model> {
        let file = LlqFile::open_with(path, in_memory)?;
        let config = ModelConfig::from_file(&file)?;
        let get = |name: &str, shape: &[u64]| -> Result<TensorRef> {
            let t = file
                .tensor(name)
                .ok_or_else(|| Error::invalid(path, format!("tensor '{name}' is missing")))?;
            check_tensor(path, t, shape)
        };
        let mut want = config.expected_tensors().into_iter();
        let mut next = || {
            let (name, shape) = want.next().expect("expected_tensors covers the model");
            get(&name, &shape)
        };
        let token_embd = next()?;
        let mut layers = Vec::with_capacity(config.n_layers);
        for _ in 0..config.n_layers {
            layers.push(LayerWeights {
                attn_norm: next()?,
                wq: next()?,
                wk: next()?,
                wv: next()?,
                wo: next()?,
                ffn_norm: next()?,
                w_gate: next()?,
                w_up: next()?,
                w_down: next()?,
                extra: {
                    let a = &config.arch;
                    let mut e = LayerExtras::default();
                    if a.qkv_bias() {
                        (e.q_bias, e.k_bias, e.v_bias) =
                            (Some(next()?), Some(next()?), Some(next()?));
                    }
                    if a.qk_norm() {
                        (e.q_norm, e.k_norm) = (Some(next()?), Some(next()?));
                    }
                    if a.gemma3().is_some() {
                        (e.post_attn_norm, e.post_ffw_norm) = (Some(next()?), Some(next()?));
                    }
                    e
                },
            });
        }
        let output_norm = next()?;
        let output = if config.tie_embeddings {
            token_embd.clone()
        } else {
            next()?
        };
        // The norm vectors (a few KB) are read whole here: a NaN or infinity in one, from a
        // file changed after conversion, would otherwise be hidden by the next matmul's
        // activation quantization (the forward pass checks the rest, see forward.rs).
        for (i, l) in layers.iter().enumerate() {
            check_finite_vector(path, &file, &l.attn_norm, || names::layer(i, "attn_norm"))?;
            check_finite_vector(path, &file, &l.ffn_norm, || names::layer(i, "ffn_norm"))?;
            for (name, t) in l.extra.named(i) {
                check_finite_vector(path, &file, t, || name.clone())?;
            }
        }
        check_finite_vector(path, &file, &output_norm, || names::OUTPUT_NORM.into())?;
        let rope = Rope::new(&config);
        let rope_local = config
            .arch
            .gemma3()
            .map(|g| Rope::plain(config.head_dim, g.rope_theta_local));
        let tokenizer = match file.get_bytes(keys::TOKENIZER) {
            None => None,
            Some(b) => Some(Tokenizer::from_bytes(b).map_err(|e| {
                Error::invalid(path, format!("metadata '{}': {e}", keys::TOKENIZER))
            })?),
        };
        if let Some(t) = &tokenizer {
            check_special_ids(path, &config, t)?;
        }
        let chat_template = file
            .get(keys::CHAT_TEMPLATE)
            .and_then(|v| v.as_str())
            .map(str::to_string);
        Ok(Model {
            file,
            config,
            token_embd,
            layers,
            output_norm,
            output,
            rope,
            rope_local,
            tokenizer,
            chat_template,
        })
    }

    /// The tokenizer, or an error naming the file when it has none.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| {
            Error::invalid(
                self.file.path(),
                "has no tokenizer (its checkpoint had no tokenizer.json or tokenizer.model): \
                 convert it from a checkpoint that has one",
            )
        })
    }

    pub fn weight(&self, t: &TensorRef) -> WeightView<'_> {
        WeightView {
            kind: t.kind,
            rows: t.rows,
            cols: t.cols,
            data: self.bytes(t),
        }
    }

    /// A 1-D f32 tensor (norm weights), viewed in place.
    pub fn vector(&self, t: &TensorRef) -> &[f32] {
        blocks::<f32>(self.bytes(t))
    }

    fn bytes(&self, t: &TensorRef) -> &[u8] {
        self.file.bytes_at(t.offset..t.offset + t.n_bytes)
    }

    /// Total bytes of weights read for one token (each weight once).
    pub fn weight_bytes(&self) -> usize {
        self.file.tensors().iter().map(|t| t.n_bytes).sum()
    }
}

/// The tokenizer's BOS, EOS and end-of-generation ids must be in the model's vocabulary
/// (the rows of the embedding and logits), which can differ from the tokenizer's own;
/// the config's are checked by [`ModelConfig::validate`].
fn check_special_ids(path: &Path, config: &ModelConfig, t: &Tokenizer) -> Result<()> {
    let n = config.vocab_size;
    let named = [("BOS", t.bos_id()), ("EOS", t.eos_id())];
    let named = named.into_iter().filter_map(|(what, id)| Some((what, id?)));
    let eog = t.eog_ids().iter().map(|&id| ("end-of-generation", id));
    match named.chain(eog).find(|&(_, id)| id as usize >= n) {
        Some((what, id)) => Err(Error::invalid(
            path,
            format!("tokenizer: {what} token id {id} is outside the vocabulary (vocab size {n})"),
        )),
        None => Ok(()),
    }
}

fn check_finite_vector(
    path: &Path,
    file: &LlqFile,
    t: &TensorRef,
    name: impl Fn() -> String,
) -> Result<()> {
    let v = blocks::<f32>(file.bytes_at(t.offset..t.offset + t.n_bytes));
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::invalid(
            path,
            format!(
                "tensor '{}' holds {} at index {i}: the weight data is corrupted (changed \
                 after conversion; `llq info {}` checks the data checksum)",
                name(),
                v[i],
                path.display()
            ),
        )),
    }
}

fn check_tensor(path: &Path, t: &TensorEntry, shape: &[u64]) -> Result<TensorRef> {
    if t.shape != shape {
        return Err(Error::invalid(
            path,
            format!(
                "tensor '{}' has shape {:?}, expected {:?}",
                t.name, t.shape, shape
            ),
        ));
    }
    // (Which kinds exist at all, e.g. quantized matrices only in the rows16 layout, the
    // reader already checked.)
    if shape.len() == 1 && t.kind != WeightKind::F32 {
        return Err(Error::invalid(
            path,
            format!(
                "tensor '{}' is {}, vectors must be f32",
                t.name,
                t.kind.dtype().name()
            ),
        ));
    }
    let (rows, cols) = match *shape {
        [n] => (1, n as usize),
        [r, c] => (r as usize, c as usize),
        _ => unreachable!("expected shapes are 1-D or 2-D"),
    };
    Ok(TensorRef {
        kind: t.kind,
        rows,
        cols,
        offset: t.offset,
        n_bytes: t.n_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_must_be_f32() {
        let entry = |kind, shape: &[u64]| TensorEntry {
            name: "blk.0.attn_norm.weight".into(),
            kind,
            shape: shape.to_vec(),
            offset: 0,
            n_bytes: 0,
        };
        let p = Path::new("m.llq");
        let e = check_tensor(p, &entry(WeightKind::F16, &[64]), &[64])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("vectors must be f32"), "{e}");
        assert!(check_tensor(p, &entry(WeightKind::F32, &[64]), &[64]).is_ok());
        assert!(check_tensor(p, &entry(WeightKind::Q8_0x16, &[16, 64]), &[16, 64]).is_ok());
    }
}
