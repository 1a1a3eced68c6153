//! A minimal GGUF v3 writer for tests that rewrite a fixture the way llama.cpp's
//! `convert_hf_to_gguf.py` writes one (tests/gguf_rope_freqs.rs, tests/lora.rs).

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
pub fn write_gguf(
    path: &Path,
    kvs: &[(&str, u32, Vec<u8>)],
    tensors: &[(String, Vec<u64>, Vec<f32>)],
) {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend((kvs.len() as u64).to_le_bytes());
    for (k, ty, payload) in kvs {
        b.extend(gstr(k));
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

/// A Llama fixture (`config.json` and an f32 `model.safetensors` in `dir`) the way
/// llama.cpp's `convert_hf_to_gguf.py` writes it: the llama metadata keys (no rope-scaling
/// keys) and every tensor under its GGUF name, Q/K rows permuted for interleaved RoPE.
pub fn llama_fixture_as_gguf(dir: &Path) -> (Kvs, F32Tensors) {
    let cfg = super::read_json(&dir.join("config.json"));
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let get = |name: &str| -> (Vec<u64>, Vec<f32>) {
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F32);
        let data = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        // GGUF lists dimensions innermost first.
        (t.shape().iter().rev().map(|&d| d as u64).collect(), data)
    };
    let u = |k: &str| cfg[k].as_u64().unwrap() as u32;
    let (n_heads, n_kv) = (
        u("num_attention_heads") as usize,
        u("num_key_value_heads") as usize,
    );
    // One metadata entry of each value type.
    let u32_kv = |k, v: u32| (k, T_U32, v.to_le_bytes().to_vec());
    let f32_kv = |k, v: f64| (k, T_F32, (v as f32).to_le_bytes().to_vec());
    let kvs = vec![
        ("general.architecture", T_STRING, gstr("llama")),
        u32_kv("llama.context_length", u("max_position_embeddings")),
        u32_kv("llama.embedding_length", u("hidden_size")),
        u32_kv("llama.feed_forward_length", u("intermediate_size")),
        u32_kv("llama.block_count", u("num_hidden_layers")),
        u32_kv("llama.attention.head_count", n_heads as u32),
        u32_kv("llama.attention.head_count_kv", n_kv as u32),
        f32_kv(
            "llama.rope.freq_base",
            cfg["rope_theta"].as_f64().unwrap_or(10000.0),
        ),
        f32_kv(
            "llama.attention.layer_norm_rms_epsilon",
            cfg["rms_norm_eps"].as_f64().unwrap(),
        ),
    ];
    let mut tensors = Vec::new();
    let mut add = |gguf: String, hf: &str, heads: Option<usize>| {
        let (dims, mut data) = get(hf);
        if let Some(h) = heads {
            data = permute(&data, h, dims[0] as usize);
        }
        tensors.push((gguf, dims, data));
    };
    add(
        "token_embd.weight".into(),
        "model.embed_tokens.weight",
        None,
    );
    for i in 0..u("num_hidden_layers") {
        let hf = |p: &str| format!("model.layers.{i}.{p}.weight");
        let gg = |p: &str| format!("blk.{i}.{p}.weight");
        add(gg("attn_norm"), &hf("input_layernorm"), None);
        add(gg("attn_q"), &hf("self_attn.q_proj"), Some(n_heads));
        add(gg("attn_k"), &hf("self_attn.k_proj"), Some(n_kv));
        add(gg("attn_v"), &hf("self_attn.v_proj"), None);
        add(gg("attn_output"), &hf("self_attn.o_proj"), None);
        add(gg("ffn_norm"), &hf("post_attention_layernorm"), None);
        add(gg("ffn_gate"), &hf("mlp.gate_proj"), None);
        add(gg("ffn_up"), &hf("mlp.up_proj"), None);
        add(gg("ffn_down"), &hf("mlp.down_proj"), None);
    }
    add("output_norm.weight".into(), "model.norm.weight", None);
    add("output.weight".into(), "lm_head.weight", None);
    (kvs, tensors)
}
