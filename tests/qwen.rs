//! Qwen2 and Qwen3 against llama.cpp, on tiny random checkpoints
//! (`tools/gen_tiny_qwen_refs.py`: `tests/data/tiny-{qwen2,qwen3}/`, f32 weights, with
//! llama.cpp's logits for a 24-token prompt, computed on the same weights written as a GGUF
//! by gguf-py). Qwen2 has Q/K/V biases and tied embeddings; Qwen3 has per-head Q/K norms,
//! a head size that is not hidden / heads, and an output matrix of its own.
//!
//! Both of llq's routes are checked: the Hugging Face checkpoint, and the GGUF llama.cpp's
//! converter would write for it (written here again from the checkpoint: `<arch>.*`
//! keys, llama.cpp's tensor names, no vocabulary). At f32 every logit is within 1e-4 of
//! llama.cpp's; at q8_0 the distributions stay within a KL bound.

mod common;

use std::path::{Path, PathBuf};

use common::gguf::{gstr, write_gguf, T_F32, T_STRING, T_U32};
use llq::convert::{convert, Checkpoint, GgufCheckpoint, HfCheckpoint, Silent};
use llq::model::{Arch, Logits, Model, State};
use llq::quant::DType;

fn data(arch: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/tiny-{arch}"))
}

/// llama.cpp's prompt and its logits, `prompt.len() × vocab`.
fn reference(arch: &str) -> (Vec<u32>, Vec<f32>) {
    let j = common::read_json(&data(arch).join("llamacpp_logits.json"));
    let rows = j["logits"].as_array().unwrap();
    let logits = rows.iter().flat_map(common::floats).collect();
    (common::ids(&j["prompt"]), logits)
}

/// The checkpoint as llama.cpp's converter writes it: `<arch>.*` keys, GGUF names, rows in
/// Hugging Face's order (llama.cpp rotates Qwen as NeoX), `tokenizer.ggml.model = none`.
fn as_gguf(arch: &str, out: &Path) {
    let dir = data(arch);
    let cfg = common::read_json(&dir.join("config.json"));
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let u = |k: &str| (cfg[k].as_u64().unwrap() as u32).to_le_bytes().to_vec();
    let f = |k: &str| (cfg[k].as_f64().unwrap() as f32).to_le_bytes().to_vec();
    let key = |k: &str| format!("{arch}.{k}");
    let mut kvs: Vec<(String, u32, Vec<u8>)> = vec![
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
            f("rms_norm_eps"),
        ),
        (key("rope.freq_base"), T_F32, f("rope_theta")),
        (key("vocab_size"), T_U32, u("vocab_size")),
        ("tokenizer.ggml.model".into(), T_STRING, gstr("none")),
    ];
    if cfg.get("head_dim").is_some() {
        kvs.push((key("attention.key_length"), T_U32, u("head_dim")));
        kvs.push((key("attention.value_length"), T_U32, u("head_dim")));
    }
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
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let tensors: Vec<(String, Vec<u64>, Vec<f32>)> = names
        .iter()
        .map(|n| {
            let t = st.tensor(n).unwrap();
            let v = t.data().chunks_exact(4);
            let v = v
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (
                gguf_name(n),
                t.shape().iter().rev().map(|&d| d as u64).collect(),
                v,
            )
        })
        .collect();
    let kvs: Vec<(&str, u32, Vec<u8>)> = kvs
        .iter()
        .map(|(k, t, v)| (k.as_str(), *t, v.clone()))
        .collect();
    write_gguf(out, &kvs, &tensors);
}

/// llq's logits for the reference prompt, from `ck` converted to `dtype`: one batch, then
/// again token by token (the decode path).
fn llq_logits(ck: &dyn Checkpoint, dtype: DType, dir: &Path) -> (Vec<f32>, Vec<f32>) {
    let out = dir.join(format!("m.{}.llq", dtype.name()));
    convert(ck, dtype, &out, &Silent).unwrap();
    let m = Model::open(&out).unwrap();
    let (prompt, _) = reference(m.config.arch_name());
    let batch = common::all_logits(&m, &prompt);
    let mut st = State::new(&m, prompt.len());
    let mut steps = Vec::new();
    for &t in &prompt {
        steps.extend_from_slice(m.forward(&mut st, &[t], Logits::Last).unwrap());
    }
    (batch, steps)
}

fn check(arch: &str, want: Arch) {
    let (_, reference) = reference(arch);
    let vocab = 128;
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("m.gguf");
    as_gguf(arch, &gguf);
    let hf = HfCheckpoint::open(&data(arch)).unwrap();
    let gg = GgufCheckpoint::open(&gguf).unwrap();
    assert_eq!(hf.config().arch, want);
    assert_eq!(
        hf.config(),
        gg.config(),
        "the two routes read the same model"
    );
    for (route, ck) in [("hf", &hf as &dyn Checkpoint), ("gguf", &gg)] {
        let (batch, steps) = llq_logits(ck, DType::F32, dir.path());
        for (what, got) in [("batch", &batch), ("token by token", &steps)] {
            let d = common::max_abs_diff(got, &reference);
            eprintln!("{arch} {route} f32 {what}: max |llq - llama.cpp| {d:.2e}");
            // Measured: 7e-6 (the same f32 weights and an f32 cache in both engines).
            assert!(d < 1e-4, "{arch} {route} f32 {what}: {d}");
        }
        let (batch, _) = llq_logits(ck, DType::Q8_0, dir.path());
        let pairs = batch.chunks_exact(vocab).zip(reference.chunks_exact(vocab));
        let kl: f64 = pairs.map(|(q, p)| common::kl_divergence(p, q)).sum::<f64>() / 24.0;
        eprintln!("{arch} {route} q8_0: mean KL {kl:.2e}");
        assert!(kl < 2e-3, "{arch} {route} q8_0: mean KL {kl}");
    }
}

#[test]
fn qwen2_matches_llamacpp() {
    check("qwen2", Arch::Qwen2);
}

#[test]
fn qwen3_matches_llamacpp() {
    check("qwen3", Arch::Qwen3);
}
