//! llama.cpp's GGUF LoRA adapters (`convert_lora_to_gguf.py`): `general.type = adapter`,
//! `adapter.type = lora`, `adapter.lora.alpha`, and per adapted projection
//! `blk.N.<part>.weight.lora_a` (ggml dims `[in, r]`, i.e. `[r, in]` row-major) and
//! `.lora_b` (`[r, out]`, i.e. `[out, r]`).
//!
//! Two conventions differ from PEFT's. llama.cpp's converter runs `B` of `q_proj` and
//! `k_proj` through the same row permutation as the base weights (interleaved RoPE
//! pairs), so those `B` rows are put back into Hugging Face order here, as the base
//! model's rows are at import; the file has no head counts, so the base model's config is
//! needed. And llama.cpp scales by `alpha / r` whatever the PEFT config said (an rsLoRA
//! adapter's `use_rslora` does not survive conversion), with `alpha = 0` meaning a scaling
//! of 1: the same rule is applied here so a GGUF adapter behaves as it does in llama.cpp.

use std::path::Path;

use super::{LoraAdapter, LoraTarget, PROJECTIONS};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::model::{names, ModelConfig};

/// Read a GGUF LoRA adapter for `cfg`'s model (shapes checked against it).
pub fn open_gguf_adapter(path: &Path, cfg: &ModelConfig) -> Result<LoraAdapter> {
    let bad = |msg: String| Error::invalid(path, msg);
    let f = GgufFile::open(path).map_err(|e| bad(e.to_string()))?;
    match f.get_str("general.type") {
        Some("adapter") => {}
        t => {
            return Err(bad(format!(
                "general.type is {t:?}, not \"adapter\": not a GGUF LoRA adapter"
            )))
        }
    }
    match f.get_str("adapter.type") {
        Some("lora") => {}
        t => {
            return Err(bad(format!(
                "adapter.type {t:?} is not supported (lora only)"
            )))
        }
    }
    match f.get_str("general.architecture") {
        Some("llama") => {}
        a => {
            return Err(bad(format!(
                "general.architecture {a:?}: a llama adapter expected"
            )))
        }
    }
    if f.get("adapter.alora_invocation_tokens").is_some() {
        return Err(bad(
            "activated LoRA (adapter.alora_invocation_tokens) is not supported (plain LoRA only)"
                .into(),
        ));
    }
    let alpha = f
        .get_f32("adapter.lora.alpha")
        .filter(|a| a.is_finite())
        .ok_or_else(|| bad("adapter.lora.alpha is missing or not a finite f32".into()))?;

    let mut targets = Vec::new();
    let mut rank = None;
    for t in f.tensors() {
        let Some(base) = t.name.strip_suffix(".lora_a") else {
            if t.name.ends_with(".lora_b") {
                continue; // read with its lora_a
            }
            return Err(bad(format!(
                "tensor '{}' is not a lora_a/lora_b matrix (trained norms or other extra \
                 tensors are not supported: plain LoRA only)",
                t.name
            )));
        };
        let part = base
            .strip_prefix("blk.")
            .and_then(|r| r.split_once('.'))
            .and_then(|(i, p)| Some((i.parse::<usize>().ok()?, p.strip_suffix(".weight")?)));
        let Some((layer, part)) = part.filter(|(_, p)| PROJECTIONS.iter().any(|(_, q)| q == p))
        else {
            return Err(bad(format!(
                "tensor '{}' adapts '{base}', which is not a linear projection of a llama \
                 layer (embedding and output targets are not supported)",
                t.name
            )));
        };
        let b_name = format!("{base}.lora_b");
        let tb = f
            .tensor(&b_name)
            .ok_or_else(|| bad(format!("tensor '{}' has no '{b_name}'", t.name)))?;
        let (&[in_dim, r], &[r_b, out_dim]) = (t.dims.as_slice(), tb.dims.as_slice()) else {
            return Err(bad(format!(
                "'{}' / '{b_name}': LoRA matrices must be 2-D (dims {:?} / {:?})",
                t.name, t.dims, tb.dims
            )));
        };
        if r != r_b || r == 0 {
            return Err(bad(format!(
                "'{}' has rank {r}, '{b_name}' rank {r_b}",
                t.name
            )));
        }
        if *rank.get_or_insert(r) != r {
            return Err(bad(format!(
                "'{}' has rank {r}, other tensors {}: per-module ranks are not supported",
                t.name,
                rank.unwrap()
            )));
        }
        let name = names::layer(layer, part);
        // Shapes against the base before anything is allocated for the data.
        let (rows, cols) = match cfg.expected_tensors().into_iter().find(|(n, _)| *n == name) {
            Some((_, s)) => (s[0], s[1]),
            None => {
                return Err(bad(format!(
                    "tensor '{}' targets '{name}', which the base model ({} layers) does not have",
                    t.name, cfg.n_layers
                )))
            }
        };
        if (out_dim, in_dim) != (rows, cols) {
            return Err(bad(format!(
                "'{name}' is [{rows}, {cols}] in the base, but the adapter's B·A is \
                 [{out_dim}, {in_dim}] (an adapter for another model?)"
            )));
        }
        let load = |info| f.dequantize_tensor(info).map_err(|e| bad(e.to_string()));
        let a = load(t)?;
        let mut b = load(tb)?;
        if part == "attn_q" {
            b = crate::convert::unpermute_rows(&b, cfg.n_heads, cfg.head_dim);
        } else if part == "attn_k" {
            b = crate::convert::unpermute_rows(&b, cfg.n_kv_heads, cfg.head_dim);
        }
        targets.push(LoraTarget {
            name,
            rank: r as usize,
            in_dim: in_dim as usize,
            out_dim: out_dim as usize,
            a,
            b,
        });
    }
    let Some(rank) = rank else {
        return Err(bad("no lora_a/lora_b tensors".into()));
    };
    targets.sort_by(|x, y| x.name.cmp(&y.name));
    if let Some(w) = targets.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(bad(format!("'{}' is adapted twice", w[0].name)));
    }
    let rank = rank as usize;
    let name = f
        .get_str("general.name")
        .map(str::to_string)
        .or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    Ok(LoraAdapter {
        name,
        sha256: super::sha256_hex(f.as_bytes()),
        rank,
        // llama.cpp: scale = alpha / r, and alpha = 0 means "no scaling".
        alpha: if alpha == 0.0 {
            rank as f64
        } else {
            alpha as f64
        },
        use_rslora: false,
        targets,
    })
}
