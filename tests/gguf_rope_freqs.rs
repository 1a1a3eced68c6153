//! GGUF's `rope_freqs` tensor (how llama.cpp's converter encodes Llama 3.1's RoPE scaling):
//! the `tiny-llama3-rope` fixture (HF safetensors, llama3 rope scaling) is rewritten here as
//! a GGUF the way llama.cpp's `convert_hf_to_gguf.py` writes one — Q/K rows permuted for
//! interleaved RoPE, no rope-scaling keys, a `rope_freqs.weight` tensor of per-frequency
//! divisors — and `llq convert` of that GGUF must reproduce transformers' logits from
//! the fixture. The same GGUF without `rope_freqs` must not (so the test sees the tensor).

mod common;

use std::path::Path;

use common::gguf::{hf_fixture_as_gguf, write_gguf};
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
    let (kvs, mut tensors) = hf_fixture_as_gguf(&dir, "llama");
    if with_freqs {
        let cfg = read_json(&dir.join("config.json"));
        let theta = cfg["rope_theta"].as_f64().unwrap();
        let head_dim = cfg["head_dim"].as_u64().unwrap() as usize;
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
