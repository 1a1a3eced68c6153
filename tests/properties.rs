//! Property tests (proptest): laws that must hold for every input, not just the fixed
//! cases of the other tests.
//!
//! - `decode(encode(s)) == s` for the SmolLM2 byte-level BPE and the Llama 2
//!   SentencePiece tokenizer, for every `s` the tokenizer can represent;
//! - streamed decoding equals whole decoding, for any id sequence (out-of-range and
//!   special ids included);
//! - quantize → dequantize stays within each type's error bound (Q8_0, Q4_0);
//! - every SIMD kernel level equals the scalar one on random (odd) sizes, within the
//!   bounds tests/kernels.rs derives.
//!
//! Case counts are set so that the whole file runs in well under a minute; raise
//! `PROPTEST_CASES` to search longer (it overrides every count here).

mod common;

use std::sync::OnceLock;

use half::f16;
use llq::kernels::{available, Kernels};
use llq::quant::{
    dequantize_row_q4_0, dequantize_row_q8_0, quantize_row_q4_0, quantize_row_q8_0, BlockQ4_0,
    BlockQ8_0, QK,
};
use llq::tokenizer::Tokenizer;
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        // Failures are reported in the test output; no regression files in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// SmolLM2 (byte-level BPE, tokenizer.json) and Llama 2 (SentencePiece .model).
fn tokenizers() -> &'static (Tokenizer, Tokenizer) {
    static T: OnceLock<(Tokenizer, Tokenizer)> = OnceLock::new();
    T.get_or_init(|| {
        let dir = common::fixtures().join("tokenizers");
        let read = |p: &str| std::fs::read(dir.join(p)).unwrap();
        (
            Tokenizer::from_hf_json(
                &read("smollm2-bpe/tokenizer.json"),
                Some(&read("smollm2-bpe/tokenizer_config.json")),
            )
            .unwrap(),
            Tokenizer::from_sentencepiece_model(&read("llama2-spm/tokenizer.model")).unwrap(),
        )
    })
}

/// Text of every kind the tokenizers meet: ASCII words and punctuation, whitespace runs,
/// digits, accented and CJK letters, emoji (4-byte UTF-8), and arbitrary code points.
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-zA-Z]{1,8}",
        "[ \t\n]{1,4}",
        "[0-9]{1,6}",
        "[.,!?;:'\"()<>|/\\\\-]{1,3}",
        "[àéîõüßçñ]{1,3}",
        "[日本語中文한국어]{1,4}",
        "[😀🚀👍🏽]{1,2}",
        any::<char>().prop_map(String::from),
        Just("<|im_start|>".to_string()),
        Just("<s>".to_string()),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

/// GPT-2's byte-to-character map of byte-level BPE: printable Latin-1 bytes stand for
/// themselves, the other 68 bytes for U+0100 onwards in byte order.
fn byte_level(b: u8) -> String {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
    if printable(b) {
        return char::from(b).to_string();
    }
    let n = (0..b).filter(|&c| !printable(c)).count() as u32;
    char::from_u32(256 + n).unwrap().to_string()
}

/// Decode `ids` token by token and check it equals decoding them at once.
fn check_streamed(tok: &Tokenizer, ids: &[u32], skip: bool) -> Result<(), TestCaseError> {
    let whole = tok.decode(ids, skip);
    let mut dec = tok.stream_decoder(skip);
    let mut streamed: String = ids.iter().map(|&id| dec.push(id)).collect();
    streamed.push_str(&dec.flush());
    prop_assert_eq!(streamed, whole, "ids {:?} skip_special {}", ids, skip);
    Ok(())
}

proptest! {
    #![proptest_config(config(3000))]

    /// Byte-level BPE represents every string whose bytes all have a token: it must
    /// round-trip, including text that looks like a special token (not parsed as one
    /// here). SmolLM2's vocabulary has no token for 21 bytes (0x04, 0x06, 0x13, 0x14,
    /// 0x16, 0x1d, 0xc0, 0xc1, 0xf1, 0xf2, 0xf5..=0xff): text holding them (the lead
    /// byte 0xf1 of U+40000..U+7FFFF, say) loses them, as in Hugging Face's tokenizers.
    #[test]
    fn bpe_decode_encode_is_identity(s in text()) {
        let (bpe, _) = tokenizers();
        prop_assume!(s.bytes().all(|b| bpe.piece_to_id(byte_level(b).as_bytes()).is_some()));
        let ids = bpe.encode(&s, false);
        prop_assert_eq!(bpe.decode(&ids, false), s);
    }

    /// SentencePiece with byte fallback represents every string except those holding
    /// U+2581 ('▁', its stand-in for a space, which decodes as a space) and NUL.
    #[test]
    fn spm_decode_encode_is_identity(s in text()) {
        prop_assume!(!s.contains('\u{2581}') && !s.contains('\0'));
        let (_, spm) = tokenizers();
        let ids = spm.encode(&s, false);
        prop_assert_eq!(spm.decode(&ids, false), s);
    }

    /// Streaming (what generation prints) equals decoding the whole sequence, for text's
    /// own ids and for arbitrary ids (byte tokens that split characters, specials,
    /// out-of-range ids).
    #[test]
    fn streamed_decoding_equals_whole(
        s in text(),
        extra in proptest::collection::vec(0u32..70_000, 0..24),
        skip in any::<bool>(),
    ) {
        let (bpe, spm) = tokenizers();
        for tok in [bpe, spm] {
            check_streamed(tok, &tok.encode(&s, true), skip)?;
            check_streamed(tok, &extra, skip)?;
        }
    }
}

/// Rows of 1 to 9 blocks with values spread over many magnitudes (not so small that the
/// f16 scale is subnormal in a way the bounds below ignore: those get an absolute slack).
fn rows() -> impl Strategy<Value = Vec<f32>> {
    (
        1usize..10,
        prop_oneof![Just(1e-3f32), Just(1.0), Just(100.0), Just(3e4)],
    )
        .prop_flat_map(|(nb, mag)| proptest::collection::vec(-mag..=mag, nb * QK))
}

/// Largest |x| of each block.
fn amaxes(x: &[f32]) -> Vec<f32> {
    x.chunks(QK)
        .map(|b| b.iter().fold(0.0f32, |m, v| m.max(v.abs())))
        .collect()
}

/// The f16 scale adds a relative error of at most 2^-11 (normal range) or an absolute one
/// of 2^-25 (subnormal), times the largest code.
fn scale_slack(d: f64, max_code: f64) -> f64 {
    max_code * (d * 2f64.powi(-11) + 2f64.powi(-25))
}

proptest! {
    #![proptest_config(config(3000))]

    /// Q8_0: d = amax / 127, q = round(x / d): error ≤ d/2, plus the scale's rounding.
    #[test]
    fn q8_0_round_trip_error_is_bounded(x in rows()) {
        let mut q = vec![BlockQ8_0 { d: 0, qs: [0; QK] }; x.len() / QK];
        quantize_row_q8_0(&x, &mut q);
        let mut y = vec![0f32; x.len()];
        dequantize_row_q8_0(&q, &mut y);
        for (b, amax) in amaxes(&x).into_iter().enumerate() {
            let d = amax as f64 / 127.0;
            let bound = d / 2.0 + scale_slack(d, 127.0) + 1e-6 * d;
            for i in b * QK..(b + 1) * QK {
                let e = (x[i] as f64 - y[i] as f64).abs();
                prop_assert!(e <= bound, "block {} x {} y {} err {} > {}", b, x[i], y[i], e, bound);
            }
        }
    }

    /// Q4_0: d = max / -8 (the signed extreme maps to code 0, i.e. -8), codes 0..15: every
    /// value is within d/2 of a code except -max itself, which would need code 16 and is
    /// clamped to 15 (error up to d).
    #[test]
    fn q4_0_round_trip_error_is_bounded(x in rows()) {
        let mut q = vec![BlockQ4_0 { d: 0, qs: [0; QK / 2] }; x.len() / QK];
        quantize_row_q4_0(&x, &mut q);
        let mut y = vec![0f32; x.len()];
        dequantize_row_q4_0(&q, &mut y);
        for (b, amax) in amaxes(&x).into_iter().enumerate() {
            let d = amax as f64 / 8.0;
            let bound = d + scale_slack(d, 8.0) + 1e-6 * d;
            for i in b * QK..(b + 1) * QK {
                let e = (x[i] as f64 - y[i] as f64).abs();
                prop_assert!(e <= bound, "block {} x {} y {} err {} > {}", b, x[i], y[i], e, bound);
            }
        }
    }
}

fn scalar() -> &'static Kernels {
    available()[0]
}

/// |got − want| in units of want's ulp-ish (f32 ε · |want|), 0 within `floor`.
fn rel_eps(got: f32, want: f32, floor: f64) -> f64 {
    let (g, w) = (got as f64, want as f64);
    if (g - w).abs() <= floor {
        return 0.0;
    }
    (g - w).abs() / (w.abs() * f32::EPSILON as f64)
}

fn vec_f32(n: usize, mag: f32) -> impl Strategy<Value = Vec<f32>> {
    proptest::collection::vec(-mag..=mag, n)
}

/// Random lengths, odd ones included: every SIMD loop's tail and every remainder path.
fn len() -> impl Strategy<Value = usize> {
    prop_oneof![0usize..70, 70usize..2100]
}

proptest! {
    #![proptest_config(config(1000))]

    /// Float dot products: a sum of n terms in any order differs from another by at most
    /// n · ε · Σ|w·x| (tests/kernels.rs).
    #[test]
    fn dot_f32_f16_every_level_equals_scalar((w, x) in len().prop_flat_map(|n| (vec_f32(n, 4.0), vec_f32(n, 4.0)))) {
        let n = w.len();
        let wh: Vec<f16> = w.iter().map(|v| f16::from_f32(*v)).collect();
        let a: f64 = w.iter().zip(&x).map(|(p, q)| (*p as f64 * *q as f64).abs()).sum();
        let ah: f64 = wh.iter().zip(&x).map(|(p, q)| (p.to_f64() * *q as f64).abs()).sum();
        for k in &available()[1..] {
            let (got, want) = ((k.dot_f32)(&w, &x) as f64, (scalar().dot_f32)(&w, &x) as f64);
            prop_assert!((got - want).abs() <= n as f64 * f32::EPSILON as f64 * a + 1e-30,
                "{}: dot_f32 n={} {} vs {}", k.name, n, got, want);
            let (got, want) = ((k.dot_f16)(&wh, &x) as f64, (scalar().dot_f16)(&wh, &x) as f64);
            prop_assert!((got - want).abs() <= n as f64 * f32::EPSILON as f64 * ah + 1e-30,
                "{}: dot_f16 n={} {} vs {}", k.name, n, got, want);
        }
    }

    /// Activation quantization is bit-identical at every level; the Q8_0 dot product of
    /// the result is within the bound of tests/kernels.rs (depth nb + 40).
    #[test]
    fn q8_0_kernels_every_level_equal_scalar(
        (x, w) in (1usize..40).prop_flat_map(|nb| (vec_f32(nb * QK, 10.0), vec_f32(nb * QK, 10.0)))
    ) {
        let nb = x.len() / QK;
        let mut want = vec![BlockQ8_0 { d: 0, qs: [0; QK] }; nb];
        (scalar().quantize_q8_0)(&x, &mut want);
        let mut wq = vec![BlockQ8_0 { d: 0, qs: [0; QK] }; nb];
        quantize_row_q8_0(&w, &mut wq);
        let a: f64 = wq.iter().zip(&want).map(|(bw, bx)| {
            let s = (bw.scale() as f64 * bx.scale() as f64).abs();
            s * bw.qs.iter().zip(&bx.qs).map(|(p, q)| (*p as f64 * *q as f64).abs()).sum::<f64>()
        }).sum();
        let tol = (nb + 40) as f64 * f32::EPSILON as f64 * a;
        let dot_want = (scalar().dot_q8_0)(&wq, &want) as f64;
        for k in &available()[1..] {
            let mut got = vec![BlockQ8_0 { d: 0, qs: [0; QK] }; nb];
            (k.quantize_q8_0)(&x, &mut got);
            for (g, w) in got.iter().zip(&want) {
                prop_assert_eq!((g.d, g.qs), (w.d, w.qs), "{}: quantize_q8_0 nb={}", k.name, nb);
            }
            let dot = (k.dot_q8_0)(&wq, &got) as f64;
            prop_assert!((dot - dot_want).abs() <= tol, "{}: dot_q8_0 nb={} {} vs {}", k.name, nb, dot, dot_want);
        }
    }

    /// Element-wise kernels: axpy is one multiply-add per element (≤ 2 roundings apart),
    /// silu_mul within 4 ε, softmax within (n + 4) ε (tests/kernels.rs).
    #[test]
    fn elementwise_kernels_every_level_equal_scalar(
        (g, u, s) in len().prop_flat_map(|n| (vec_f32(n, 90.0), vec_f32(n, 2.0), vec_f32(n, 50.0))),
        a in -3.0f32..3.0,
    ) {
        let n = g.len();
        for k in &available()[1..] {
            let (mut want, mut got) = (u.clone(), u.clone());
            (scalar().axpy_f32)(&mut want, a, &g);
            (k.axpy_f32)(&mut got, a, &g);
            for i in 0..n {
                let scale = (a as f64 * g[i] as f64).abs() + (u[i] as f64).abs();
                prop_assert!((got[i] as f64 - want[i] as f64).abs() <= 2.0 * f32::EPSILON as f64 * scale,
                    "{}: axpy_f32 n={} i={}", k.name, n, i);
            }
            let (mut want, mut got) = (g.clone(), g.clone());
            (scalar().silu_mul)(&mut want, &u);
            (k.silu_mul)(&mut got, &u);
            for i in 0..n {
                let e = rel_eps(got[i], want[i], 1e-35);
                prop_assert!(e <= 4.0, "{}: silu_mul n={} i={}: {} vs {}", k.name, n, i, got[i], want[i]);
            }
            let (mut want, mut got) = (s.clone(), s.clone());
            (scalar().softmax)(&mut want);
            (k.softmax)(&mut got);
            for i in 0..n {
                let e = rel_eps(got[i], want[i], 1e-37);
                prop_assert!(e <= n as f64 + 4.0, "{}: softmax n={} i={}: {} vs {}", k.name, n, i, got[i], want[i]);
            }
        }
    }
}
