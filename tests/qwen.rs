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

use common::gguf::{hf_fixture_as_gguf, write_gguf};
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
    let (kvs, tensors) = hf_fixture_as_gguf(&data(arch), arch);
    write_gguf(&gguf, &kvs, &tensors);
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
