//! GGUF's `rope_freqs` tensor (how llama.cpp's converter encodes Llama 3.1's RoPE scaling):
//! the `tiny-llama3-rope` fixture (HF safetensors, llama3 rope scaling) is rewritten here as
//! a GGUF the way llama.cpp's `convert_hf_to_gguf.py` writes one — Q/K rows permuted for
//! interleaved RoPE, no rope-scaling keys, a `rope_freqs.weight` tensor of per-frequency
//! divisors — and `llq convert` of that GGUF must reproduce transformers' logits from
//! the fixture. The same GGUF without `rope_freqs` must not (so the test sees the tensor).

mod common;

use std::path::Path;

use common::gguf::{gstr, permute, write_gguf, T_F32, T_STRING, T_U32};
use common::*;
use llq::convert::{convert, open_checkpoint, Silent};
use llq::model::Model;
use llq::quant::DType;

/// The divisors llama.cpp's converter writes for Llama 3 RoPE scaling: 1 for short
/// wavelengths, `factor` for long ones, a smooth blend in between.
fn llama3_rope_factors(theta: f64, head_dim: usize, r: &serde_json::Value) -> Vec<f32> {
    let factor = r["factor"].as_f64().unwrap();
    let low = r["low_freq_factor"].as_f64().unwrap();
    let high = r["high_freq_factor"].as_f64().unwrap();
    let old_ctx = r["original_max_position_embeddings"].as_f64().unwrap();
    let (low_wavelen, high_wavelen) = (old_ctx / low, old_ctx / high);
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let f = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            f as f32
        })
        .collect()
}

/// Build the GGUF twin of the fixture; `with_freqs` adds the `rope_freqs` tensor.
fn fixture_as_gguf(path: &Path, with_freqs: bool) {
    let dir = fixtures().join("tiny-llama3-rope");
    let cfg = read_json(&dir.join("config.json"));
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
    let theta = cfg["rope_theta"].as_f64().unwrap();
    let head_dim = u("head_dim") as usize;
    let kvs = vec![
        ("general.architecture", T_STRING, gstr("llama")),
        (
            "llama.context_length",
            T_U32,
            u("max_position_embeddings").to_le_bytes().to_vec(),
        ),
        (
            "llama.embedding_length",
            T_U32,
            u("hidden_size").to_le_bytes().to_vec(),
        ),
        (
            "llama.feed_forward_length",
            T_U32,
            u("intermediate_size").to_le_bytes().to_vec(),
        ),
        (
            "llama.block_count",
            T_U32,
            u("num_hidden_layers").to_le_bytes().to_vec(),
        ),
        (
            "llama.attention.head_count",
            T_U32,
            (n_heads as u32).to_le_bytes().to_vec(),
        ),
        (
            "llama.attention.head_count_kv",
            T_U32,
            (n_kv as u32).to_le_bytes().to_vec(),
        ),
        (
            "llama.rope.freq_base",
            T_F32,
            (theta as f32).to_le_bytes().to_vec(),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon",
            T_F32,
            (cfg["rms_norm_eps"].as_f64().unwrap() as f32)
                .to_le_bytes()
                .to_vec(),
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
    if with_freqs {
        let f = llama3_rope_factors(theta, head_dim, &cfg["rope_scaling"]);
        tensors.push(("rope_freqs.weight".into(), vec![f.len() as u64], f));
    }
    write_gguf(path, &kvs, &tensors);
}

/// Worst last-position |Δlogit| over the fixture's cases, and whether every greedy
/// continuation matched.
fn compare(model: &Model) -> (f32, bool) {
    let exp = read_json(&fixtures().join("tiny-llama3-rope/expected.json"));
    let (mut worst, mut greedy_ok) = (0.0f32, true);
    for case in exp["cases"].as_array().unwrap() {
        let prompt = ids(&case["prompt_ids"]);
        let vocab = model.config.vocab_size;
        let logits = all_logits(model, &prompt);
        let last = &logits[(prompt.len() - 1) * vocab..];
        worst = worst.max(max_abs_diff(last, &floats(&case["last_logits"])));
        greedy_ok &= greedy(model, &prompt, 16) == ids(&case["greedy_new_ids"]);
    }
    (worst, greedy_ok)
}

#[test]
fn rope_freqs_tensor_reproduces_llama3_rope_scaling() {
    let dir = tempfile::tempdir().unwrap();
    for with_freqs in [true, false] {
        let gguf = dir.path().join(format!("m{with_freqs}.gguf"));
        fixture_as_gguf(&gguf, with_freqs);
        let out = dir.path().join(format!("m{with_freqs}.llq"));
        convert(&*open_checkpoint(&gguf).unwrap(), DType::F32, &out, &Silent).unwrap();
        let model = Model::open(&out).unwrap();
        let (diff, greedy_ok) = compare(&model);
        eprintln!("rope_freqs {with_freqs}: max |Δlogit| {diff:.2e}, greedy equal: {greedy_ok}");
        if with_freqs {
            // The same tolerance as the HF path (tests/hf_fixtures.rs).
            assert!(diff <= 1e-4, "with rope_freqs: max |Δlogit| {diff}");
            assert!(greedy_ok, "with rope_freqs: greedy ids differ");
        } else {
            assert!(
                diff > 1e-2,
                "without rope_freqs the logits should be off, got {diff}"
            );
        }
    }
}
