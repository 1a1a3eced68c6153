//! A minimal GGUF v3 writer for tests that rewrite a fixture the way llama.cpp's
//! `convert_hf_to_gguf.py` writes one (tests/gguf_rope_freqs.rs, tests/lora.rs,
//! tests/qwen.rs).

use std::path::Path;

/// GGUF metadata value types.
pub const T_U32: u32 = 4;
pub const T_F32: u32 = 6;
pub const T_STRING: u32 = 8;
/// ggml's type id of f32 tensors (the only kind this writer stores).
const GGML_F32: u32 = 0;
/// GGUF's default data alignment.
const ALIGN: usize = 32;

/// A GGUF string: u64 length, then the bytes.
pub fn gstr(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

/// A minimal GGUF v3 writer: metadata, then f32 tensors (`dims` innermost first, as GGUF
/// stores them), data aligned to 32 bytes.
pub fn write_gguf<K: AsRef<str>>(
    path: &Path,
    kvs: &[(K, u32, Vec<u8>)],
    tensors: &[(String, Vec<u64>, Vec<f32>)],
) {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend((kvs.len() as u64).to_le_bytes());
    for (k, ty, payload) in kvs {
        b.extend(gstr(k.as_ref()));
        b.extend(ty.to_le_bytes());
        b.extend(payload);
    }
    let mut offset = 0usize;
    for (name, dims, data) in tensors {
        b.extend(gstr(name));
        b.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(GGML_F32.to_le_bytes());
        b.extend((offset as u64).to_le_bytes());
        offset = (offset + 4 * data.len()).next_multiple_of(ALIGN);
    }
    b.resize(b.len().next_multiple_of(ALIGN), 0);
    for (_, _, data) in tensors {
        b.extend(data.iter().flat_map(|v| v.to_le_bytes()));
        b.resize(b.len().next_multiple_of(ALIGN), 0);
    }
    std::fs::write(path, b).unwrap();
}

/// llama.cpp's permutation of Q/K rows for interleaved RoPE: within each head, row
/// `s · hd/2 + j` (HF's rotate-half order) moves to row `2j + s`.
pub fn permute(w: &[f32], n_heads: usize, cols: usize) -> Vec<f32> {
    let hd = w.len() / cols / n_heads;
    let mut out = vec![0.0; w.len()];
    for h in 0..n_heads {
        for s in 0..2 {
            for j in 0..hd / 2 {
                let (from, to) = (h * hd + s * hd / 2 + j, h * hd + 2 * j + s);
                out[to * cols..(to + 1) * cols].copy_from_slice(&w[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}

/// Metadata entries of a GGUF: key, value type, value bytes.
pub type Kvs = Vec<(&'static str, u32, Vec<u8>)>;
/// f32 tensors of a GGUF: name, dimensions (innermost first), values.
pub type F32Tensors = Vec<(String, Vec<u64>, Vec<f32>)>;

/// A fixture checkpoint of `arch` (`llama`, `qwen2` or `qwen3`: a `config.json` and an f32
/// `model.safetensors` in `dir`) the way llama.cpp's `convert_hf_to_gguf.py` writes it: the
/// `<arch>.*` metadata keys (no rope-scaling keys), `tokenizer.ggml.model = none` (no
/// vocabulary), and every tensor under its GGUF name. Llama's Q/K rows are permuted for
/// interleaved RoPE; Qwen keeps Hugging Face's order (llama.cpp rotates it as NeoX).
pub fn hf_fixture_as_gguf(dir: &Path, arch: &str) -> (Vec<(String, u32, Vec<u8>)>, F32Tensors) {
    let cfg = super::read_json(&dir.join("config.json"));
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let u = |k: &str| (cfg[k].as_u64().unwrap() as u32).to_le_bytes().to_vec();
    let f = |v: f64| (v as f32).to_le_bytes().to_vec();
    let key = |k: &str| format!("{arch}.{k}");
    let mut kvs = vec![
        ("general.architecture".into(), T_STRING, gstr(arch)),
        (key("context_length"), T_U32, u("max_position_embeddings")),
        (key("embedding_length"), T_U32, u("hidden_size")),
        (key("block_count"), T_U32, u("num_hidden_layers")),
        (key("feed_forward_length"), T_U32, u("intermediate_size")),
        (key("attention.head_count"), T_U32, u("num_attention_heads")),
        (
            key("attention.head_count_kv"),
            T_U32,
            u("num_key_value_heads"),
        ),
        (
            key("attention.layer_norm_rms_epsilon"),
            T_F32,
            f(cfg["rms_norm_eps"].as_f64().unwrap()),
        ),
        (
            key("rope.freq_base"),
            T_F32,
            f(cfg["rope_theta"].as_f64().unwrap_or(10000.0)),
        ),
        (key("vocab_size"), T_U32, u("vocab_size")),
        ("tokenizer.ggml.model".into(), T_STRING, gstr("none")),
    ];
    if cfg.get("head_dim").is_some() {
        kvs.push((key("attention.key_length"), T_U32, u("head_dim")));
        kvs.push((key("attention.value_length"), T_U32, u("head_dim")));
    }
    // Hugging Face's names within a layer, and GGUF's, written out here rather than taken
    // from llq's converter (src/convert/hf.rs has the same table): this file is the
    // reference the GGUF route is checked against, so a wrong name there must not reach it.
    const LAYER: [(&str, &str); 14] = [
        ("input_layernorm.weight", "attn_norm.weight"),
        ("self_attn.q_proj.weight", "attn_q.weight"),
        ("self_attn.k_proj.weight", "attn_k.weight"),
        ("self_attn.v_proj.weight", "attn_v.weight"),
        ("self_attn.o_proj.weight", "attn_output.weight"),
        ("post_attention_layernorm.weight", "ffn_norm.weight"),
        ("mlp.gate_proj.weight", "ffn_gate.weight"),
        ("mlp.up_proj.weight", "ffn_up.weight"),
        ("mlp.down_proj.weight", "ffn_down.weight"),
        ("self_attn.q_proj.bias", "attn_q.bias"),
        ("self_attn.k_proj.bias", "attn_k.bias"),
        ("self_attn.v_proj.bias", "attn_v.bias"),
        ("self_attn.q_norm.weight", "attn_q_norm.weight"),
        ("self_attn.k_norm.weight", "attn_k_norm.weight"),
    ];
    let gguf_name = |hf: &str| match hf {
        "model.embed_tokens.weight" => "token_embd.weight".to_string(),
        "model.norm.weight" => "output_norm.weight".to_string(),
        "lm_head.weight" => "output.weight".to_string(),
        _ => {
            let (l, rest) = hf["model.layers.".len()..].split_once('.').unwrap();
            let (_, g) = LAYER.iter().find(|(h, _)| *h == rest).unwrap();
            format!("blk.{l}.{g}")
        }
    };
    let heads = |k: &str| cfg[k].as_u64().unwrap() as usize;
    let mut names: Vec<&str> = st.names();
    names.sort();
    let tensors = names
        .iter()
        .map(|&n| {
            let t = st.tensor(n).unwrap();
            assert_eq!(t.dtype(), safetensors::Dtype::F32, "{n}");
            let mut data: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let cols = t.shape()[t.shape().len() - 1];
            if arch == "llama" && n.ends_with("self_attn.q_proj.weight") {
                data = permute(&data, heads("num_attention_heads"), cols);
            } else if arch == "llama" && n.ends_with("self_attn.k_proj.weight") {
                data = permute(&data, heads("num_key_value_heads"), cols);
            }
            // GGUF lists dimensions innermost first.
            let dims = t.shape().iter().rev().map(|&d| d as u64).collect();
            (gguf_name(n), dims, data)
        })
        .collect();
    (kvs, tensors)
}
