//! Hugging Face PEFT LoRA adapters: `adapter_config.json` + `adapter_model.safetensors`.
//!
//! Only plain LoRA on the seven linear projections of a LLaMA layer is accepted. PEFT has
//! many variants whose merge is *not* `W + scaling·B·A` (DoRA rescales columns, rsLoRA
//! changes the scaling, `rank_pattern` changes it per module, `fan_in_fan_out` transposes,
//! `modules_to_save` replaces whole tensors, …): each one llq does not implement is
//! refused by name, because silently merging the rest would produce a plausible but wrong
//! model. The config's `base_model_name_or_path` is ignored: the caller names the base.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::Metadata;
use serde_json::Value as Json;

use super::{LoraAdapter, LoraTarget, PROJECTIONS};
use crate::error::{Error, Result};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// PEFT's key prefix for a causal LM (`PeftModelForCausalLM.base_model.model`).
const KEY_PREFIX: &str = "base_model.model.";

/// The LoRA hyper-parameters llq honours, from `adapter_config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct PeftConfig {
    pub rank: usize,
    pub alpha: f64,
    pub use_rslora: bool,
}

/// Read and validate a PEFT adapter directory.
pub fn open_peft(dir: &Path) -> Result<LoraAdapter> {
    let config_path = dir.join(CONFIG_FILE);
    let bytes = std::fs::read(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let cfg = parse_config(&bytes).map_err(|m| Error::invalid(&config_path, m))?;
    let weights_path = dir.join(WEIGHTS_FILE);
    if !weights_path.is_file() && dir.join("adapter_model.bin").is_file() {
        return Err(Error::invalid(
            dir,
            "adapter_model.bin (a pickled PyTorch file) is not supported: save the adapter with \
             safe_serialization=True (adapter_model.safetensors)",
        ));
    }
    let data = std::fs::read(&weights_path).map_err(|e| Error::io(&weights_path, e))?;
    let targets = read_targets(&data, &cfg).map_err(|m| Error::invalid(&weights_path, m))?;
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    Ok(LoraAdapter {
        name,
        sha256: super::sha256_hex(&data),
        rank: cfg.rank,
        alpha: cfg.alpha,
        use_rslora: cfg.use_rslora,
        targets,
    })
}

/// `adapter_config.json` → the supported parameters, or a message naming the first
/// unsupported feature.
pub fn parse_config(bytes: &[u8]) -> std::result::Result<PeftConfig, String> {
    let j: Json = serde_json::from_slice(bytes).map_err(|e| format!("malformed JSON: {e}"))?;
    if !j.is_object() {
        return Err("not a JSON object".into());
    }
    let get = |k: &str| j.get(k).filter(|v| !v.is_null());
    let refuse = |what: &str| Err(format!("{what} is not supported (plain LoRA only)"));

    match get("peft_type").map(|v| v.as_str()) {
        None | Some(Some("LORA")) => {}
        Some(Some(t)) => return refuse(&format!("peft_type '{t}'")),
        Some(None) => return Err("'peft_type' is not a string".into()),
    }
    // Flags whose `true` changes what the weights mean.
    for (key, what) in [
        (
            "use_dora",
            "DoRA ('use_dora': true, weight-decomposed LoRA)",
        ),
        (
            "fan_in_fan_out",
            "'fan_in_fan_out': true (transposed Conv1D weights)",
        ),
        ("lora_bias", "'lora_bias': true (a bias on lora_B)"),
        ("use_qalora", "QA-LoRA ('use_qalora': true)"),
        ("use_bdlora", "'use_bdlora'"),
    ] {
        match get(key) {
            None | Some(Json::Bool(false)) => {}
            Some(Json::Bool(true)) => return refuse(what),
            Some(Json::Object(o)) if o.is_empty() => {}
            Some(_) => return refuse(what),
        }
    }
    match get("bias").map(|v| v.as_str()) {
        None | Some(Some("none")) => {}
        Some(Some(b)) => return refuse(&format!("'bias': '{b}' (trained biases)")),
        Some(None) => return Err("'bias' is not a string".into()),
    }
    // Settings that must be absent or empty.
    for (key, what) in [
        (
            "modules_to_save",
            "'modules_to_save' (fully trained extra tensors)",
        ),
        ("rank_pattern", "'rank_pattern' (per-module ranks)"),
        ("alpha_pattern", "'alpha_pattern' (per-module alphas)"),
        (
            "layers_to_transform",
            "'layers_to_transform' (adapting a subset of layers)",
        ),
        (
            "layer_replication",
            "'layer_replication' (duplicated base layers)",
        ),
        (
            "trainable_token_indices",
            "'trainable_token_indices' (trained embedding rows)",
        ),
        (
            "alora_invocation_tokens",
            "activated LoRA ('alora_invocation_tokens')",
        ),
        (
            "target_parameters",
            "'target_parameters' (LoRA on raw parameters)",
        ),
    ] {
        let empty = match get(key) {
            None => true,
            Some(Json::Array(a)) => a.is_empty(),
            Some(Json::Object(o)) => o.is_empty(),
            Some(Json::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if !empty {
            return refuse(what);
        }
    }
    if let Some(Json::Array(t)) = get("target_modules") {
        for m in t.iter().filter_map(Json::as_str) {
            if m.contains("embed_tokens") {
                return refuse(&format!("target module '{m}' (an embedding target)"));
            }
            if m.contains("lm_head") {
                return refuse(&format!("target module '{m}' (an lm_head target)"));
            }
        }
    }
    let rank = match get("r") {
        Some(v) => v
            .as_u64()
            .filter(|&r| r > 0 && r <= 1 << 16)
            .ok_or_else(|| format!("'r' = {v} is not a rank between 1 and 65536"))?
            as usize,
        None => return Err("'r' is missing".into()),
    };
    let alpha = match get("lora_alpha") {
        Some(v) => v
            .as_f64()
            .filter(|a| a.is_finite())
            .ok_or_else(|| format!("'lora_alpha' = {v} is not a finite number"))?,
        None => return Err("'lora_alpha' is missing".into()),
    };
    let use_rslora = match get("use_rslora") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| format!("'use_rslora' = {v} is not a boolean"))?,
    };
    Ok(PeftConfig {
        rank,
        alpha,
        use_rslora,
    })
}

/// What an adapter key refers to.
enum Key {
    /// (layer, llq part, is B)
    Lora(usize, &'static str, bool),
}

/// Classify a safetensors key, or say why it cannot be used.
fn classify(key: &str) -> std::result::Result<Key, String> {
    let refuse = |what: &str| Err(format!("tensor '{key}': {what} is not supported"));
    if key.contains("lora_magnitude_vector") {
        return refuse("DoRA (lora_magnitude_vector)");
    }
    if key.contains("modules_to_save") || key.contains("original_module") {
        return refuse("'modules_to_save'");
    }
    if key.contains("lora_embedding_A") || key.contains("lora_embedding_B") {
        return refuse("an embedding target (lora_embedding_A/B)");
    }
    if key.contains("embed_tokens") {
        return refuse("an embedding target");
    }
    if key.contains("lm_head") {
        return refuse("an lm_head target");
    }
    let body = key.strip_prefix(KEY_PREFIX).ok_or_else(|| {
        format!("tensor '{key}' does not start with '{KEY_PREFIX}' (not a PEFT causal-LM adapter)")
    })?;
    let (module, is_b) = if let Some(m) = body.strip_suffix(".lora_A.weight") {
        (m, false)
    } else if let Some(m) = body.strip_suffix(".lora_B.weight") {
        (m, true)
    } else if body.ends_with(".bias") {
        return refuse("a bias");
    } else {
        return Err(format!(
            "tensor '{key}' is neither a lora_A nor a lora_B weight"
        ));
    };
    let unknown = || {
        format!(
            "tensor '{key}' adapts '{module}', which is not a linear projection of a LLaMA layer \
             (model.layers.N.self_attn.{{q,k,v,o}}_proj or model.layers.N.mlp.{{gate,up,down}}_proj)"
        )
    };
    let (layer, proj) = module
        .strip_prefix("model.layers.")
        .and_then(|r| r.split_once('.'))
        .ok_or_else(unknown)?;
    let layer: usize = layer.parse().map_err(|_| unknown())?;
    let (_, part) = PROJECTIONS
        .iter()
        .find(|(p, _)| *p == proj)
        .ok_or_else(unknown)?;
    Ok(Key::Lora(layer, part, is_b))
}

/// The safetensors payload → one [`LoraTarget`] per adapted projection, shapes checked
/// against each other and the config's rank (the base is checked later, by the caller).
fn read_targets(data: &[u8], cfg: &PeftConfig) -> std::result::Result<Vec<LoraTarget>, String> {
    let (n, meta): (usize, Metadata) = safetensors::SafeTensors::read_metadata(data)
        .map_err(|e| format!("invalid safetensors file: {e}"))?;
    let data_start = 8 + n;
    // name → (A key, B key)
    let mut pairs: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
    let mut keys: Vec<String> = meta.tensors().into_keys().collect();
    keys.sort();
    for key in &keys {
        let Key::Lora(layer, part, is_b) = classify(key)?;
        let e = pairs
            .entry(crate::model::names::layer(layer, part))
            .or_default();
        let slot = if is_b { &mut e.1 } else { &mut e.0 };
        *slot = Some(key.clone());
    }
    if pairs.is_empty() {
        return Err("no lora_A/lora_B tensors".into());
    }
    let mut targets = Vec::with_capacity(pairs.len());
    for (name, (a, b)) in pairs {
        let (a, b) = match (a, b) {
            (Some(a), Some(b)) => (a, b),
            (Some(k), None) | (None, Some(k)) => {
                return Err(format!("tensor '{k}' has no lora_A/lora_B partner"))
            }
            (None, None) => unreachable!("an entry is created with one key"),
        };
        let (a_shape, a_vals) = tensor_f32(data, data_start, &meta, &a)?;
        let (b_shape, b_vals) = tensor_f32(data, data_start, &meta, &b)?;
        if a_shape.len() != 2 || b_shape.len() != 2 {
            return Err(format!(
                "'{a}' {a_shape:?} / '{b}' {b_shape:?}: LoRA matrices must be 2-D"
            ));
        }
        let (rank, in_dim, out_dim) = (a_shape[0], a_shape[1], b_shape[0]);
        if b_shape[1] != rank || rank != cfg.rank {
            return Err(format!(
                "'{a}' is {a_shape:?} and '{b}' is {b_shape:?}: expected [r, in] and [out, r] \
                 with r = {} from adapter_config.json",
                cfg.rank
            ));
        }
        targets.push(LoraTarget {
            name,
            rank,
            in_dim,
            out_dim,
            a: a_vals,
            b: b_vals,
        });
    }
    Ok(targets)
}

/// One tensor as f32 (F32, F16 or BF16 in the file).
fn tensor_f32(
    data: &[u8],
    data_start: usize,
    meta: &Metadata,
    key: &str,
) -> std::result::Result<(Vec<usize>, Vec<f32>), String> {
    let info = meta.info(key).expect("key listed by the metadata");
    // read_metadata checked that the offsets lie inside the buffer and match the shape.
    let (s, e) = info.data_offsets;
    let bytes = &data[data_start + s..data_start + e];
    let Some(vals) = crate::convert::safetensors_f32(info.dtype, bytes) else {
        return Err(format!(
            "tensor '{key}' has dtype {:?}; only F32, F16 and BF16 are supported",
            info.dtype
        ));
    };
    if let Some(i) = vals.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "tensor '{key}' has a non-finite value at index {i}"
        ));
    }
    Ok((info.shape.clone(), vals))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_names() {
        let k = "base_model.model.model.layers.3.mlp.down_proj.lora_B.weight";
        let Ok(Key::Lora(3, "ffn_down", true)) = classify(k) else {
            panic!("{k}")
        };
        for (k, want) in [
            (
                "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector",
                "DoRA",
            ),
            (
                "base_model.model.model.embed_tokens.lora_embedding_A",
                "embedding",
            ),
            ("base_model.model.lm_head.lora_A.weight", "lm_head"),
            (
                "base_model.model.model.layers.0.mlp.fc1.lora_A.weight",
                "not a linear projection",
            ),
        ] {
            let Err(e) = classify(k) else { panic!("{k}") };
            assert!(e.contains(want), "{k}: {e}");
        }
    }

    #[test]
    fn scaling_rules() {
        assert_eq!(super::super::scaling(16.0, 8, false), 2.0);
        assert_eq!(super::super::scaling(8.0, 4, true), 4.0);
    }
}
