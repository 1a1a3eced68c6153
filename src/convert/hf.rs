//! Hugging Face checkpoints: `config.json` + safetensors (single or sharded, F32/F16/BF16)
//! + tokenizer files, read tensor by tensor from memory maps.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata};
use serde_json::Value as Json;

use super::Checkpoint;
use crate::error::{Error, Result};
use crate::format::{keys, Value};
use crate::model::{names, Arch, ModelConfig, RopeScaling};
use crate::tokenizer::Tokenizer;

struct Shard {
    path: PathBuf,
    map: Mmap,
    /// Byte offset of the data section (8 + header length).
    data_start: usize,
    meta: Metadata,
}

pub struct HfCheckpoint {
    dir: PathBuf,
    config: ModelConfig,
    shards: Vec<Shard>,
    /// llq name → (shard index, HF name)
    tensors: HashMap<String, (usize, String)>,
}

impl HfCheckpoint {
    pub fn open(dir: &Path) -> Result<HfCheckpoint> {
        let config_path = dir.join("config.json");
        let config = parse_config(&config_path, &read(&config_path)?)?;
        let shards = open_shards(dir)?;
        let tensors = map_names(&config, &shards)?;
        let ck = HfCheckpoint {
            dir: dir.to_path_buf(),
            config,
            shards,
            tensors,
        };
        for (name, shape) in ck.config.expected_tensors() {
            ck.check_shape(&name, &shape)?;
        }
        Ok(ck)
    }

    fn check_shape(&self, name: &str, shape: &[u64]) -> Result<()> {
        let (s, hf_name) = &self.tensors[name];
        let shard = &self.shards[*s];
        let info = shard.meta.info(hf_name).expect("listed in this shard");
        let got: Vec<u64> = info.shape.iter().map(|&d| d as u64).collect();
        if got != shape {
            return Err(Error::invalid(
                &shard.path,
                format!("tensor '{hf_name}' has shape {got:?}, config.json implies {shape:?}"),
            ));
        }
        if !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(Error::invalid(
                &shard.path,
                format!(
                    "tensor '{hf_name}' has dtype {:?}; only F32, F16 and BF16 are supported",
                    info.dtype
                ),
            ));
        }
        Ok(())
    }
}

impl Checkpoint for HfCheckpoint {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn load(&self, name: &str) -> Result<Cow<'_, [f32]>> {
        let (s, hf_name) = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::usage(format!("tensor '{name}' is not in the checkpoint")))?;
        let shard = &self.shards[*s];
        let info = shard.meta.info(hf_name).expect("listed in this shard");
        let (a, b) = info.data_offsets;
        let bytes = &shard.map[shard.data_start + a..shard.data_start + b];
        if info.dtype == Dtype::F32 {
            if let Some(w) = super::borrow_f32(bytes) {
                return Ok(Cow::Borrowed(w));
            }
        }
        let vals = super::safetensors_f32(info.dtype, bytes);
        Ok(Cow::Owned(vals.expect("dtype checked at open")))
    }

    fn release(&self, name: &str) {
        let Some((s, hf_name)) = self.tensors.get(name) else {
            return;
        };
        let shard = &self.shards[*s];
        let (a, b) = shard.meta.info(hf_name).expect("listed").data_offsets;
        // Whole pages strictly inside the tensor, so neighbours are not affected.
        let page = 4096;
        let start = (shard.data_start + a).div_ceil(page) * page;
        let end = (shard.data_start + b) / page * page;
        if end > start {
            // SAFETY: the map is a read-only private file mapping: dropping its pages only
            // means a later read faults them back in from the file; no slice into this range
            // is alive (the converter drops the tensor's values before releasing it).
            let _ = unsafe {
                shard.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    end - start,
                )
            };
        }
    }

    fn extra_metadata(&self) -> Result<Vec<(String, Value)>> {
        let mut m = Vec::new();
        let name = self
            .dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        m.push((keys::NAME.to_string(), Value::Str(name)));
        m.push((
            keys::SOURCE.to_string(),
            Value::Str("huggingface-safetensors".into()),
        ));
        let mut files = vec!["config.json".to_string()];
        files.extend(self.shards.iter().map(|s| file_name(&s.path)));

        let mut template = None;
        let mut tok_json = None;
        let mut tok_config = None;
        let mut tok_model = None;
        for (file, key) in [
            ("tokenizer.json", keys::TOKENIZER_JSON),
            ("tokenizer_config.json", keys::TOKENIZER_CONFIG_JSON),
            ("tokenizer.model", keys::TOKENIZER_MODEL),
        ] {
            let p = self.dir.join(file);
            if p.is_file() {
                let bytes = read(&p)?;
                match file {
                    "tokenizer_config.json" => {
                        template = chat_template_from_config(&p, &bytes)?;
                        tok_config = Some(bytes.clone());
                    }
                    "tokenizer.json" => tok_json = Some((p.clone(), bytes.clone())),
                    _ => tok_model = Some((p.clone(), bytes.clone())),
                }
                m.push((key.to_string(), Value::Bytes(bytes)));
                files.push(file.to_string());
            }
        }
        // The runtime's tokenizer, in llq's compact form (no JSON parsing at start-up).
        // tokenizer.json wins over tokenizer.model, as in transformers' fast tokenizers.
        let tok = match (&tok_json, &tok_model) {
            (Some((p, json)), _) => Some(
                Tokenizer::from_hf_json(json, tok_config.as_deref())
                    .map_err(|e| Error::invalid(p, e.to_string()))?,
            ),
            (None, Some((p, model))) => Some(
                Tokenizer::from_sentencepiece_model(model)
                    .map_err(|e| Error::invalid(p, e.to_string()))?,
            ),
            _ => None,
        };
        if let Some(tok) = tok {
            m.push((keys::TOKENIZER.to_string(), Value::Bytes(tok.to_bytes())));
        }
        let jinja = self.dir.join("chat_template.jinja");
        if jinja.is_file() {
            let bytes = read(&jinja)?;
            let s =
                String::from_utf8(bytes).map_err(|_| Error::invalid(&jinja, "not valid UTF-8"))?;
            template = Some(s);
            files.push("chat_template.jinja".to_string());
        }
        if let Some(t) = template {
            m.push((keys::CHAT_TEMPLATE.to_string(), Value::Str(t)));
        }
        m.push((keys::SOURCE_FILES.to_string(), Value::ArrStr(files)));
        Ok(m)
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).map_err(|e| Error::io(p, e))
}

fn parse_json(p: &Path, bytes: &[u8]) -> Result<Json> {
    serde_json::from_slice(bytes).map_err(|e| Error::invalid(p, format!("malformed JSON: {e}")))
}

/// `chat_template` of tokenizer_config.json: a string, or a list of `{name, template}` of
/// which the one named "default" (else the first) is used.
fn chat_template_from_config(p: &Path, bytes: &[u8]) -> Result<Option<String>> {
    let j = parse_json(p, bytes)?;
    Ok(match j.get("chat_template") {
        Some(Json::String(s)) => Some(s.clone()),
        Some(Json::Array(list)) => {
            let pick = list
                .iter()
                .find(|e| e.get("name").and_then(Json::as_str) == Some("default"))
                .or(list.first());
            pick.and_then(|e| e.get("template"))
                .and_then(Json::as_str)
                .map(str::to_string)
        }
        _ => None,
    })
}

/// Map `config.json` (transformers 4 or 5 spelling) to the model's hyper-parameters.
pub fn parse_config(p: &Path, bytes: &[u8]) -> Result<ModelConfig> {
    let j = parse_json(p, bytes)?;
    let bad = |msg: String| Error::invalid(p, msg);
    let arch = j
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(Json::as_str)
        .unwrap_or("");
    let arch = match arch {
        "LlamaForCausalLM" | "MistralForCausalLM" => Arch::Llama,
        "Qwen2ForCausalLM" => Arch::Qwen2,
        "Qwen3ForCausalLM" => Arch::Qwen3,
        _ => {
            return Err(bad(format!(
                "architecture '{arch}' is not supported (LlamaForCausalLM, MistralForCausalLM, \
                 Qwen2ForCausalLM or Qwen3ForCausalLM expected)"
            )))
        }
    };
    if arch != Arch::Llama && j.get("use_sliding_window").and_then(Json::as_bool) == Some(true) {
        return Err(bad(
            "use_sliding_window = true is not supported (Qwen's sliding-window attention)".into(),
        ));
    }
    let int = |k: &str| -> Result<Option<usize>> {
        match j.get(k) {
            None | Some(Json::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|v| Some(v as usize))
                .ok_or_else(|| bad(format!("'{k}' is not a non-negative integer: {v}"))),
        }
    };
    let need =
        |k: &str| -> Result<usize> { int(k)?.ok_or_else(|| bad(format!("'{k}' is missing"))) };
    let num = |obj: &Json, k: &str| -> Result<Option<f64>> {
        match obj.get(k) {
            None | Some(Json::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| bad(format!("'{k}' is not a number: {v}"))),
        }
    };
    if let Some(act) = j.get("hidden_act").and_then(Json::as_str) {
        if act != "silu" {
            return Err(bad(format!(
                "hidden_act '{act}' is not supported (silu expected)"
            )));
        }
    }
    for flag in ["attention_bias", "mlp_bias"] {
        if j.get(flag).and_then(Json::as_bool) == Some(true) {
            return Err(bad(format!("'{flag}: true' is not supported")));
        }
    }
    let dim = need("hidden_size")?;
    let n_heads = need("num_attention_heads")?;
    if n_heads == 0 {
        return Err(bad("num_attention_heads is 0".into()));
    }
    let context_length = int("max_position_embeddings")?.unwrap_or(2048);
    if let Some(w) = int("sliding_window")? {
        if w < context_length {
            return Err(bad(format!(
                "sliding_window {w} < max_position_embeddings {context_length}: sliding-window attention is not supported"
            )));
        }
    }

    // transformers 5 keeps theta and scaling in `rope_parameters`; 4.x uses `rope_theta` and
    // `rope_scaling`. Prefer the newer spelling when present.
    let rp = j.get("rope_parameters").filter(|v| v.is_object());
    let scaling = rp.or(j.get("rope_scaling").filter(|v| v.is_object()));
    let theta = match rp.map(|r| num(r, "rope_theta")).transpose()?.flatten() {
        Some(t) => t,
        None => num(&j, "rope_theta")?.unwrap_or(10000.0),
    };
    let rope_scaling = match scaling {
        None => RopeScaling::None,
        Some(s) => {
            let ty = s
                .get("rope_type")
                .or(s.get("type"))
                .and_then(Json::as_str)
                .unwrap_or("default");
            let f = |k: &str| -> Result<f32> {
                num(s, k)?
                    .map(|v| v as f32)
                    .ok_or_else(|| bad(format!("rope scaling '{ty}' needs '{k}'")))
            };
            match ty {
                "default" => RopeScaling::None,
                "linear" => RopeScaling::Linear {
                    factor: f("factor")?,
                },
                "llama3" => RopeScaling::Llama3 {
                    factor: f("factor")?,
                    low_freq_factor: f("low_freq_factor")?,
                    high_freq_factor: f("high_freq_factor")?,
                    original_context: f("original_max_position_embeddings")? as u32,
                },
                other => {
                    return Err(bad(format!(
                        "rope scaling type '{other}' is not supported (default, linear, llama3)"
                    )))
                }
            }
        }
    };
    let eos_ids = match j.get("eos_token_id") {
        Some(Json::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_u64())
            .map(|v| v as u32)
            .collect(),
        Some(v) => v.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
        None => Vec::new(),
    };
    let cfg = ModelConfig {
        vocab_size: need("vocab_size")?,
        dim,
        ffn_dim: need("intermediate_size")?,
        n_layers: need("num_hidden_layers")?,
        n_heads,
        n_kv_heads: int("num_key_value_heads")?.unwrap_or(n_heads),
        head_dim: int("head_dim")?.unwrap_or(dim / n_heads),
        rms_eps: num(&j, "rms_norm_eps")?.unwrap_or(1e-6) as f32,
        rope_theta: theta as f32,
        rope_scaling,
        rope_freq_factors: None,
        context_length,
        tie_embeddings: j
            .get("tie_word_embeddings")
            .and_then(Json::as_bool)
            .unwrap_or(false),
        bos_id: int("bos_token_id")?.map(|v| v as u32),
        eos_ids,
        arch,
    };
    cfg.validate().map_err(bad)?;
    Ok(cfg)
}

fn open_shards(dir: &Path) -> Result<Vec<Shard>> {
    let index = dir.join("model.safetensors.index.json");
    let single = dir.join("model.safetensors");
    let files: Vec<PathBuf> = if index.is_file() {
        let j = parse_json(&index, &read(&index)?)?;
        let map = j
            .get("weight_map")
            .and_then(Json::as_object)
            .ok_or_else(|| Error::invalid(&index, "'weight_map' is missing or not an object"))?;
        let mut files: Vec<String> = Vec::new();
        for (t, f) in map {
            let f = f.as_str().ok_or_else(|| {
                Error::invalid(&index, format!("weight_map['{t}'] is not a string"))
            })?;
            if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                return Err(Error::invalid(
                    &index,
                    format!("shard name '{f}' is not a plain file name"),
                ));
            }
            if !files.iter().any(|x| x == f) {
                files.push(f.to_string());
            }
        }
        if files.is_empty() {
            return Err(Error::invalid(
                &index,
                "'weight_map' names no tensor (an empty index: no shard to read)",
            ));
        }
        files.sort();
        files.into_iter().map(|f| dir.join(f)).collect()
    } else if single.is_file() {
        vec![single]
    } else {
        return Err(Error::invalid(
            dir,
            "no model.safetensors or model.safetensors.index.json in this directory",
        ));
    };
    files.into_iter().map(|p| open_shard(&p)).collect()
}

fn open_shard(path: &Path) -> Result<Shard> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: read-only private mapping of a checkpoint file that llq does not modify.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let (n, meta) = safetensors::SafeTensors::read_metadata(&map).map_err(|e| {
        let hint = match e {
            safetensors::SafeTensorError::InvalidHeaderLength
            | safetensors::SafeTensorError::HeaderTooSmall => {
                " (header length runs past the end of the file)"
            }
            safetensors::SafeTensorError::MetadataIncompleteBuffer => {
                " (the tensors do not cover the file exactly: truncated or padded)"
            }
            _ => "",
        };
        Error::invalid(path, format!("invalid safetensors file: {e}{hint}"))
    })?;
    Ok(Shard {
        path: path.to_path_buf(),
        map,
        data_start: 8 + n,
        meta,
    })
}

/// HF per-layer tensor suffix ↔ llq per-layer suffix (`blk.N.` then this). Which of them
/// a model must have is the architecture's (`ModelConfig::expected_tensors`).
const LAYER_PARTS: [(&str, &str); 14] = [
    ("input_layernorm.weight", "attn_norm.weight"),
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
    // Qwen2
    ("self_attn.q_proj.bias", "attn_q.bias"),
    ("self_attn.k_proj.bias", "attn_k.bias"),
    ("self_attn.v_proj.bias", "attn_v.bias"),
    // Qwen3
    ("self_attn.q_norm.weight", "attn_q_norm.weight"),
    ("self_attn.k_norm.weight", "attn_k_norm.weight"),
];
const GLOBAL: [(&str, &str); 3] = [
    ("model.embed_tokens.weight", names::TOKEN_EMBD),
    ("model.norm.weight", names::OUTPUT_NORM),
    ("lm_head.weight", names::OUTPUT),
];

/// HF tensor name → llq name; `Some(None)` for tensors llq knowingly ignores (old
/// checkpoints store RoPE's inv_freq), `None` for unknown names.
fn llq_name(hf: &str) -> Option<Option<String>> {
    if let Some((_, l)) = GLOBAL.iter().find(|(h, _)| *h == hf) {
        return Some(Some(l.to_string()));
    }
    let (i, part) = hf.strip_prefix("model.layers.")?.split_once('.')?;
    let i: usize = i.parse().ok()?;
    if part == "self_attn.rotary_emb.inv_freq" {
        return Some(None);
    }
    let (_, p) = LAYER_PARTS.iter().find(|(h, _)| *h == part)?;
    Some(Some(format!("blk.{i}.{p}")))
}

/// llq name → HF name, for error messages.
fn hf_name(llq: &str) -> String {
    if let Some((h, _)) = GLOBAL.iter().find(|(_, l)| *l == llq) {
        return h.to_string();
    }
    let mut it = llq.splitn(3, '.');
    let (i, part) = (it.nth(1).unwrap_or("?"), it.next().unwrap_or("?"));
    let suffix = LAYER_PARTS
        .iter()
        .find(|(_, l)| *l == part)
        .map_or("?", |(h, _)| h);
    format!("model.layers.{i}.{suffix}")
}

fn map_names(cfg: &ModelConfig, shards: &[Shard]) -> Result<HashMap<String, (usize, String)>> {
    let mut out = HashMap::new();
    let mut hf_of: BTreeMap<String, String> = BTreeMap::new();
    for (s, shard) in shards.iter().enumerate() {
        let mut hf_names: Vec<String> = shard.meta.tensors().into_keys().collect();
        hf_names.sort();
        for hf in &hf_names {
            let name = match llq_name(hf) {
                Some(Some(n)) => n,
                Some(None) => continue,
                None => {
                    return Err(Error::invalid(
                        &shard.path,
                        format!("unexpected tensor '{hf}' (not part of a LLaMA model)"),
                    ))
                }
            };
            if let Some(prev) = hf_of.insert(name.clone(), hf.clone()) {
                return Err(Error::invalid(
                    &shard.path,
                    format!("tensor '{hf}' appears more than once (also as '{prev}')"),
                ));
            }
            out.insert(name, (s, hf.clone()));
        }
    }
    let expected = cfg.expected_tensors();
    for (name, _) in &expected {
        if !out.contains_key(name) {
            let hf = hf_name(name);
            return Err(Error::invalid(
                &shards[0].path,
                format!("tensor '{hf}' is missing from the checkpoint"),
            ));
        }
    }
    if cfg.tie_embeddings {
        // Tied checkpoints sometimes store lm_head anyway; the embedding is used.
        out.remove(names::OUTPUT);
    }
    if out.len() != expected.len() {
        let extra: Vec<&String> = out
            .keys()
            .filter(|k| !expected.iter().any(|(n, _)| n == *k))
            .collect();
        return Err(Error::invalid(
            &shards[0].path,
            format!(
                "unexpected tensors for a {}-layer model: {:?}",
                cfg.n_layers,
                extra.iter().map(|k| hf_name(k)).collect::<Vec<_>>()
            ),
        ));
    }
    Ok(out)
}
