//! GGUF files (llama.cpp's format) as a conversion source: `llama`, `qwen2`, `qwen3` and
//! `gemma3` architectures.
//!
//! GGUF stores tensor dims innermost first and, for LLaMA, the rows of Q and K permuted so
//! that RoPE rotates adjacent pairs (llama.cpp's convention). llq keeps Hugging Face's
//! rotate-half order, so those rows are put back here and the forward pass needs no
//! second RoPE variant. (Qwen and Gemma 3 files keep Hugging Face's order already.)

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use super::Checkpoint;
use crate::error::{Error, Result};
use crate::format::{keys, Value};
use crate::gguf::{GgmlType, GgufFile};
use crate::model::{names, Arch, Gemma3, ModelConfig, RopeScaling};
use crate::quant::DType;
use crate::tokenizer::{GgufTokenizerParts, Tokenizer};

pub struct GgufCheckpoint {
    path: PathBuf,
    file: GgufFile,
    config: ModelConfig,
}

impl GgufCheckpoint {
    pub fn open(path: &Path) -> Result<GgufCheckpoint> {
        let file = GgufFile::open(path).map_err(|e| Error::invalid(path, e.to_string()))?;
        let config = config_from_gguf(path, &file)?;
        let ck = GgufCheckpoint {
            path: path.to_path_buf(),
            file,
            config,
        };
        let expected = ck.config.expected_tensors();
        for (name, shape) in &expected {
            ck.check(name, shape)?;
        }
        let expected: std::collections::HashSet<&str> =
            expected.iter().map(|(name, _)| name.as_str()).collect();
        let known = |n: &str| {
            n == "rope_freqs.weight"
                || expected.contains(n)
                || (ck.config.tie_embeddings && n == names::OUTPUT)
        };
        if let Some(t) = ck.file.tensors().iter().find(|t| !known(&t.name)) {
            return Err(Error::invalid(
                path,
                format!(
                    "unexpected tensor '{}' for a {}-layer {} model",
                    t.name,
                    ck.config.n_layers,
                    ck.config.arch_name()
                ),
            ));
        }
        Ok(ck)
    }

    fn check(&self, name: &str, shape: &[u64]) -> Result<()> {
        let t = self
            .file
            .tensor(name)
            .ok_or_else(|| Error::invalid(&self.path, format!("tensor '{name}' is missing")))?;
        let got: Vec<u64> = t.dims.iter().rev().copied().collect();
        if got != shape {
            return Err(Error::invalid(
                &self.path,
                format!("tensor '{name}' has shape {got:?}, the metadata implies {shape:?}"),
            ));
        }
        Ok(())
    }
}

impl GgufCheckpoint {
    /// Q and K rows back in Hugging Face's order (values or whole rows of blocks).
    /// Whether [`Self::unpermute`] reorders tensor `name`'s rows.
    /// (Qwen's and Gemma 3's GGUF files keep Hugging Face's order: llama.cpp rotates them
    /// as NeoX.)
    fn unpermuted(&self, name: &str) -> bool {
        self.config.arch == Arch::Llama
            && (name.ends_with(".attn_q.weight") || name.ends_with(".attn_k.weight"))
    }

    fn unpermute<T: Copy + Default>(&self, name: &str, w: Vec<T>) -> Vec<T> {
        let cfg = &self.config;
        if !self.unpermuted(name) {
            w
        } else if name.ends_with(".attn_q.weight") {
            unpermute_rows(&w, cfg.n_heads, cfg.head_dim)
        } else if name.ends_with(".attn_k.weight") {
            unpermute_rows(&w, cfg.n_kv_heads, cfg.head_dim)
        } else {
            w
        }
    }
}

impl Checkpoint for GgufCheckpoint {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn load(&self, name: &str) -> Result<Cow<'_, [f32]>> {
        let t = self
            .file
            .tensor(name)
            .ok_or_else(|| Error::invalid(&self.path, format!("tensor '{name}' is missing")))?;
        let bytes = self.file.tensor_data(t);
        let reordered = self.unpermuted(name);
        if t.ggml_type == GgmlType::F32 && !reordered && bytes.len() as u64 == t.n_bytes {
            if let Some(w) = super::borrow_f32(bytes) {
                return Ok(Cow::Borrowed(w));
            }
        }
        let w = self
            .file
            .dequantize_tensor(t)
            .map_err(|e| Error::invalid(&self.path, e.to_string()))?;
        Ok(Cow::Owned(self.unpermute(name, w)))
    }

    fn native_dtype(&self, name: &str) -> Option<DType> {
        DType::from_ggml(self.file.tensor(name)?.ggml_type)
    }

    fn load_native(&self, name: &str) -> Result<(DType, Vec<u8>)> {
        let t = self
            .file
            .tensor(name)
            .ok_or_else(|| Error::invalid(&self.path, format!("tensor '{name}' is missing")))?;
        let dtype = DType::from_ggml(t.ggml_type).ok_or_else(|| {
            Error::invalid(
                &self.path,
                format!(
                    "tensor '{name}': {} has no llq storage type",
                    t.ggml_type.name()
                ),
            )
        })?;
        let bytes = self.file.tensor_data(t);
        if bytes.len() as u64 != t.n_bytes {
            return Err(Error::invalid(
                &self.path,
                format!("tensor '{name}': data lies outside the file"),
            ));
        }
        Ok((dtype, self.unpermute(name, bytes.to_vec())))
    }

    fn extra_metadata(&self) -> Result<Vec<(String, Value)>> {
        let mut m = vec![
            (keys::SOURCE.to_string(), Value::Str("gguf".into())),
            (
                keys::SOURCE_FILES.to_string(),
                Value::ArrStr(vec![self
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()]),
            ),
        ];
        if let Some(n) = self.file.get_str("general.name") {
            m.push((keys::NAME.to_string(), Value::Str(n.to_string())));
        }
        if let Some(parts) = gguf_tokenizer_parts(&self.file) {
            let tok = Tokenizer::from_gguf_parts(parts)
                .map_err(|e| Error::invalid(&self.path, format!("tokenizer.ggml.*: {e}")))?;
            m.push((keys::TOKENIZER.to_string(), Value::Bytes(tok.to_bytes())));
        }
        if let Some(t) = self.file.get_str("tokenizer.chat_template") {
            m.push((keys::CHAT_TEMPLATE.to_string(), Value::Str(t.to_string())));
        }
        Ok(m)
    }
}

/// The tokenizer described by `tokenizer.ggml.*`, if the file has one.
pub fn gguf_tokenizer_parts(f: &GgufFile) -> Option<GgufTokenizerParts> {
    let model = f.get_str("tokenizer.ggml.model")?.to_string();
    // llama.cpp's names for a file without a vocabulary (token ids in, logits out).
    if matches!(model.as_str(), "none" | "no_vocab") {
        return None;
    }
    let tokens = f
        .get_str_array("tokenizer.ggml.tokens")?
        .iter()
        .map(|t| t.as_bytes().to_vec())
        .collect();
    Some(GgufTokenizerParts {
        model,
        pre: f.get_str("tokenizer.ggml.pre").map(str::to_string),
        tokens,
        scores: f.get_f32_array("tokenizer.ggml.scores"),
        token_types: f.get_i32_array("tokenizer.ggml.token_type"),
        merges: f
            .get_str_array("tokenizer.ggml.merges")
            .map(<[String]>::to_vec),
        bos_id: f.get_u32("tokenizer.ggml.bos_token_id"),
        eos_id: f.get_u32("tokenizer.ggml.eos_token_id"),
        unk_id: f.get_u32("tokenizer.ggml.unknown_token_id"),
        pad_id: f.get_u32("tokenizer.ggml.padding_token_id"),
        eot_id: f.get_u32("tokenizer.ggml.eot_token_id"),
        add_bos: f.get_bool("tokenizer.ggml.add_bos_token"),
        add_eos: f.get_bool("tokenizer.ggml.add_eos_token"),
        add_space_prefix: f.get_bool("tokenizer.ggml.add_space_prefix"),
    })
}

/// Undo llama.cpp's Q/K row permutation: within each head, GGUF row `2i + j` is Hugging
/// Face row `j · head_dim/2 + i`.
/// `w` is any row-major element type: f32 values, or a quantized tensor's bytes (a row
/// is then its blocks).
pub(crate) fn unpermute_rows<T: Copy + Default>(
    w: &[T],
    n_heads: usize,
    head_dim: usize,
) -> Vec<T> {
    let rows = n_heads * head_dim;
    let cols = w.len() / rows;
    let half = head_dim / 2;
    let mut out = vec![T::default(); w.len()];
    for h in 0..n_heads {
        for i in 0..half {
            for j in 0..2 {
                let src = h * head_dim + 2 * i + j;
                let dst = h * head_dim + j * half + i;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

fn config_from_gguf(path: &Path, f: &GgufFile) -> Result<ModelConfig> {
    let bad = |msg: String| Error::invalid(path, msg);
    let arch = f.get_str("general.architecture").unwrap_or("");
    if !Arch::NAMES.contains(&arch) {
        return Err(bad(format!(
            "general.architecture '{arch}' is not supported (one of {} expected)",
            Arch::NAMES.join(", ")
        )));
    }
    // Every hyper-parameter key is under the architecture's name.
    let key = |k: &str| format!("{arch}.{k}");
    let need = |k: &str| -> Result<usize> {
        f.get_u64(&key(k)).map(|v| v as usize).ok_or_else(|| {
            bad(format!(
                "metadata '{}' is missing or not an integer",
                key(k)
            ))
        })
    };
    let opt = |k: &str| f.get_u64(&key(k)).map(|v| v as usize);
    let dim = need("embedding_length")?;
    let n_heads = need("attention.head_count")?;
    if n_heads == 0 {
        return Err(bad(format!("{} is 0", key("attention.head_count"))));
    }
    let head_dim = opt("attention.key_length").unwrap_or(dim / n_heads);
    let embd = f
        .tensor(names::TOKEN_EMBD)
        .ok_or_else(|| bad(format!("tensor '{}' is missing", names::TOKEN_EMBD)))?;
    let vocab_size = opt("vocab_size")
        .or_else(|| f.get_str_array("tokenizer.ggml.tokens").map(|t| t.len()))
        .or_else(|| embd.dims.get(1).map(|&d| d as usize))
        .unwrap_or(0);
    let rope_scaling = match f.get_str(&key("rope.scaling.type")) {
        None | Some("none") => RopeScaling::None,
        Some("linear") => RopeScaling::Linear {
            factor: f.get_f32(&key("rope.scaling.factor")).ok_or_else(|| {
                bad(format!(
                    "linear rope scaling without {}",
                    key("rope.scaling.factor")
                ))
            })?,
        },
        Some(t) => return Err(bad(format!("rope scaling type '{t}' is not supported"))),
    };
    let rope_freq_factors = match f.tensor("rope_freqs.weight") {
        None => None,
        Some(t) => Some(f.dequantize_tensor(t).map_err(|e| bad(e.to_string()))?),
    };
    let mut eos_ids: Vec<u32> = Vec::new();
    for k in [
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
    ] {
        if let Some(id) = f.get_u32(k) {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
    }
    let n_layers = need("block_count")?;
    let arch = match Arch::plain(arch) {
        Some(a) => a,
        None => Arch::Gemma3(gemma3_params(path, f, n_layers, dim, n_heads, head_dim)?),
    };
    let cfg = ModelConfig {
        vocab_size,
        dim,
        ffn_dim: need("feed_forward_length")?,
        n_layers,
        n_heads,
        n_kv_heads: opt("attention.head_count_kv").unwrap_or(n_heads),
        head_dim,
        rms_eps: f
            .get_f32(&key("attention.layer_norm_rms_epsilon"))
            .unwrap_or(1e-5),
        rope_theta: f.get_f32(&key("rope.freq_base")).unwrap_or(10000.0),
        rope_scaling,
        rope_freq_factors,
        context_length: opt("context_length").unwrap_or(2048),
        tie_embeddings: f.tensor(names::OUTPUT).is_none(),
        bos_id: f.get_u32("tokenizer.ggml.bos_token_id"),
        eos_ids,
        arch,
    };
    cfg.validate().map_err(bad)?;
    Ok(cfg)
}

/// Gemma 3's hyper-parameters beyond LLaMA's, as llama.cpp reads them: the window from
/// `gemma3.attention.sliding_window` (missing or 0: no sliding-window layer, every layer
/// global); every sixth layer global (llama.cpp's fixed pattern; an integer
/// `gemma3.attention.sliding_window_pattern` overrides it); sliding-window layers
/// rotating with base 10000 (llama.cpp's fixed `rope_freq_base_train_swa`); scores scaled
/// by the head size, or by `dim / heads` for the 62-layer 27B (llama.cpp's rule;
/// transformers' `query_pre_attn_scalar`).
fn gemma3_params(
    path: &Path,
    f: &GgufFile,
    n_layers: usize,
    dim: usize,
    n_heads: usize,
    head_dim: usize,
) -> Result<Gemma3> {
    let bad = |msg: String| Error::invalid(path, msg);
    if let Some(c) = f.get_f32("gemma3.final_logit_softcapping") {
        if c != 0.0 {
            return Err(bad(format!(
                "gemma3.final_logit_softcapping = {c}: logit soft-capping is not supported"
            )));
        }
    }
    let to_usize = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    let (sliding_window, pattern) = match f.get_u64("gemma3.attention.sliding_window") {
        None | Some(0) => (1, 1),
        Some(w) => {
            let pattern = f
                .get_u64("gemma3.attention.sliding_window_pattern")
                .unwrap_or(6);
            (to_usize(w), to_usize(pattern))
        }
    };
    let query_pre_attn_scalar = if n_layers == 62 {
        (dim / n_heads) as f32
    } else {
        head_dim as f32
    };
    Ok(Gemma3 {
        sliding_window,
        pattern,
        rope_theta_local: f.get_f32("gemma3.rope.freq_base_swa").unwrap_or(10000.0),
        query_pre_attn_scalar,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's permutation, written as in its converter: reshape (heads, 2, half, cols),
    /// swap axes 1 and 2.
    fn permute(w: &[f32], n_heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
        let half = head_dim / 2;
        let mut out = vec![0.0; w.len()];
        for h in 0..n_heads {
            for j in 0..2 {
                for i in 0..half {
                    let src = h * head_dim + j * half + i;
                    let dst = h * head_dim + i * 2 + j;
                    out[dst * cols..(dst + 1) * cols]
                        .copy_from_slice(&w[src * cols..(src + 1) * cols]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        let (heads, hd, cols) = (3, 8, 5);
        let w: Vec<f32> = (0..heads * hd * cols).map(|i| i as f32).collect();
        assert_eq!(unpermute_rows(&permute(&w, heads, hd, cols), heads, hd), w);
    }
}
