//! `llq convert` at the K-quant types and mixtures: storage choices (llama.cpp's recipes
//! and fallbacks), the interleaved layout of the encoded rows, and whole conversions of
//! the tiny fixture (with and without an importance matrix) staying close to f32.

mod common;

use llq::convert::{
    convert, convert_with, encode_matrix, storage_type, use_more_bits, HfCheckpoint, Mix, Silent,
    Target,
};
use llq::gguf::dequantize;
use llq::imatrix::{compute, ImatrixParams};
use llq::model::Model;
use llq::quant::kq_encode::{quantize_row, KqType};
use llq::quant::{DType, WeightKind, WeightView};

#[test]
fn recipes_and_fallbacks() {
    // llama.cpp's use_more_bits for 30 layers (SmolLM2-135M).
    let more: Vec<usize> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
    assert_eq!(more, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
    let st = |t, name: &str, cols: u64| storage_type(t, name, false, &[64, cols]);
    assert_eq!(st(DType::Q4_K, "blk.0.attn_q.weight", 512), DType::Q4_K);
    assert_eq!(st(DType::Q4_K, "blk.0.attn_q.weight", 576), DType::Q5_0);
    assert_eq!(st(DType::Q5_K, "blk.0.attn_q.weight", 576), DType::Q5_1);
    assert_eq!(st(DType::Q6_K, "blk.0.attn_q.weight", 576), DType::Q8_0);
    assert_eq!(st(DType::Q4_K, "blk.0.ffn_down.weight", 172), DType::F16);
    assert_eq!(st(DType::Q4_K, "output.weight", 512), DType::Q6_K);
    assert_eq!(st(DType::Q4_K, "output.weight", 576), DType::Q8_0);
    assert_eq!(
        storage_type(DType::Q5_K, "token_embd.weight", true, &[64, 512]),
        DType::Q6_K
    );
    assert_eq!(Mix::from_name("Q4_K_M"), Some(Mix::Q4KM));
}

/// The converter's interleaved K-quant matrices decode, row by row, exactly like the
/// encoder's native rows decoded by the GGUF dequantizer (37 rows: a partial group).
#[test]
fn encoded_matrices_decode_like_native_rows() {
    let (rows, cols) = (37usize, 768usize);
    let data: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 2654435761usize % 1000) as f32 / 500.0 - 1.0) * 0.05)
        .collect();
    let imp: Vec<f32> = (0..cols).map(|j| 0.1 + (j % 11) as f32).collect();
    for (dtype, ty) in [
        (DType::Q4_1, KqType::Q4_1),
        (DType::Q5_0, KqType::Q5_0),
        (DType::Q5_1, KqType::Q5_1),
        (DType::Q4_K, KqType::Q4_K),
        (DType::Q5_K, KqType::Q5_K),
        (DType::Q6_K, KqType::Q6_K),
    ] {
        for w in [None, Some(&imp[..])] {
            let kind = WeightKind::for_dtype(dtype);
            let n = kind.tensor_bytes(&[rows as u64, cols as u64]).unwrap() as usize;
            let mut out = vec![0u8; n];
            encode_matrix(kind, &data, cols, w, &mut out);
            let view = WeightView {
                kind,
                rows,
                cols,
                data: &out,
            };
            let (mut got, mut want) = (vec![0.0f32; cols], vec![0.0f32; cols]);
            let mut native = vec![0u8; ty.row_bytes(cols).unwrap()];
            for r in 0..rows {
                view.dequantize_row(r, &mut got);
                quantize_row(ty, &data[r * cols..(r + 1) * cols], w, &mut native);
                dequantize(ty.ggml_type(), &native, &mut want).unwrap();
                assert_eq!(got, want, "{dtype:?} row {r}");
            }
        }
    }
}

fn kl_vs(reference: &Model, model: &Model, tokens: &[u32]) -> f64 {
    let (a, b) = (
        common::all_logits(reference, tokens),
        common::all_logits(model, tokens),
    );
    let v = reference.config.vocab_size;
    let n = tokens.len();
    (0..n)
        .map(|t| common::kl_divergence(&a[t * v..(t + 1) * v], &b[t * v..(t + 1) * v]))
        .sum::<f64>()
        / n as f64
}

#[test]
fn fixture_conversions_stay_close_to_f32() {
    let name = "tiny-llama-gqa";
    let (_d0, f32_model) = common::convert_fixture(name, DType::F32);
    let ck = HfCheckpoint::open(&common::fixtures().join(name)).unwrap();
    let tokens: Vec<u32> = (0..40u32).map(|i| (i * 37 + 5) % 512).collect();
    let dir = tempfile::tempdir().unwrap();
    let calib: Vec<u32> = (0..64u32).map(|i| (i * 101 + 7) % 512).collect();
    let im = compute(
        &f32_model,
        &calib,
        &ImatrixParams {
            n_ctx: 32,
            max_chunks: None,
            dataset: "synthetic".into(),
        },
        |_, _| {},
    )
    .unwrap();
    let targets = [
        Target::Type(DType::Q4_1),
        Target::Type(DType::Q5_0),
        Target::Type(DType::Q5_1),
        Target::Type(DType::Q4_K),
        Target::Type(DType::Q5_K),
        Target::Type(DType::Q6_K),
        Target::Mix(Mix::Q4KM),
        Target::Mix(Mix::Q5KM),
    ];
    for (i, t) in targets.into_iter().enumerate() {
        for with_im in [false, true] {
            let out = dir.path().join(format!("{i}-{with_im}.llq"));
            if with_im {
                convert_with(&ck, t, &out, &Silent, Some(&im)).unwrap();
            } else {
                convert(&ck, t, &out, &Silent).unwrap();
            }
            let m = Model::open(&out).unwrap();
            let kl = kl_vs(&f32_model, &m, &tokens);
            eprintln!("{t:?} imatrix={with_im}: mean KL {kl:.2e}");
            // Random fixture weights (no structure to exploit): bounds by bits per weight.
            let bound = match t {
                Target::Type(DType::Q4_1) => 3e-2,
                Target::Type(DType::Q6_K) => 1e-3,
                Target::Type(DType::Q5_1) | Target::Type(DType::Q5_K) => 6e-3,
                Target::Mix(Mix::Q5KM) => 6e-3,
                _ => 1.2e-2,
            };
            assert!(
                kl.is_finite() && kl < bound,
                "{t:?} imatrix={with_im}: KL {kl}"
            );
        }
    }
}
