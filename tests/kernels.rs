//! Every kernel of every level this CPU can run, against its scalar twin.
//!
//! Integer parts must be bit-exact; this is checked by running the kernels on blocks whose
//! scales are all 1.0 (and, in one test, 0.5/1/2) with few enough blocks that every partial
//! sum is an integer (or a quarter-integer) below 2^24: then *any* summation order is exact
//! in f32, so the SIMD and scalar results must be equal to the last bit, and a single
//! wrong integer product shows.
//!
//! With arbitrary scales the float summation order differs between levels. Each result is a
//! sum of (at most nb · 32) exactly-computed integer partial sums, each times a scale
//! product, added up in a tree of depth at most about nb + 40 (per-lane accumulation,
//! horizontal reduction, one rounding for the scale product and one for the multiply).
//! The classic bound for that is |computed − exact| ≤ γ_m · A with m the depth,
//! γ_m ≈ m·u (u = ε/2) and A = Σ_b |d_w·d_x| · Σ_i |w_i·x_i|; two such results differ by
//! at most 2γ_m · A ≈ m · ε · A, which is the tolerance used ([`tol`]).

use half::f16;
use llq::kernels::matmul::{matmul, MatmulScratch};
use llq::kernels::{available, select_from, AttnBlock, AttnGroup, Kernels};
use llq::quant::interleave::{interleave_q4_0, interleave_q8_0, ActQ8, BlockQ4_0x16, BlockQ8_0x16};
use llq::quant::{
    block_bytes, quantize_act_q8_0, quantize_row_q8_0, BlockQ4_0, BlockQ8_0, DType, WeightKind,
    WeightView, QK,
};

mod common;
use common::Rng;

const BLOCK_COUNTS: &[usize] = &[1, 3, 7, 33, 127, 513];

/// Which int8 values a block gets.
#[derive(Clone, Copy, Debug)]
enum Vals {
    Random,
    AllMin,
    AllMax,
    MinMax,
}

fn q_val(rng: &mut Rng, v: Vals, i: usize) -> i8 {
    match v {
        Vals::Random => rng.i8(),
        Vals::AllMin => -128,
        Vals::AllMax => 127,
        Vals::MinMax => {
            if (i + rng.below(2) as usize).is_multiple_of(2) {
                -128
            } else {
                127
            }
        }
    }
}

/// A random f16 scale: mostly ordinary, sometimes 0, f16::MAX, or the smallest subnormal.
fn scale(rng: &mut Rng) -> u16 {
    match rng.below(10) {
        0 => 0,
        1 => f16::MAX.to_bits(),
        2 => 0x0001,                         // 2^-24, smallest subnormal
        3 => f16::from_f32(-0.75).to_bits(), // negative scale
        _ => f16::from_f32(rng.f() * 0.1).to_bits(),
    }
}

fn q8_blocks(rng: &mut Rng, n: usize, v: Vals, unit: bool) -> Vec<BlockQ8_0> {
    (0..n)
        .map(|_| {
            let mut b = BlockQ8_0 {
                d: if unit { 0x3c00 } else { scale(rng) },
                qs: [0; QK],
            };
            for (i, q) in b.qs.iter_mut().enumerate() {
                *q = q_val(rng, v, i);
            }
            b
        })
        .collect()
}

fn q4_blocks(rng: &mut Rng, n: usize, unit: bool) -> Vec<BlockQ4_0> {
    (0..n)
        .map(|_| {
            let mut b = BlockQ4_0 {
                d: if unit { 0x3c00 } else { scale(rng) },
                qs: [0; QK / 2],
            };
            for q in b.qs.iter_mut() {
                *q = rng.next() as u8;
            }
            b
        })
        .collect()
}

/// Activation blocks as the matmul makes them: values in -127..=127 (the quantizer never
/// produces -128, and the AVX2 sign trick relies on it), f32 scale, sum.
fn acts(x: &[BlockQ8_0]) -> Vec<ActQ8> {
    x.iter()
        .map(|b| {
            let mut b = *b;
            b.qs.iter_mut().for_each(|q| *q = (*q).max(-127));
            ActQ8::from_q8_0(&b)
        })
        .collect()
}

/// An activation block as a Q8_0 block with the same numbers (for `abs_q8`).
fn act_as_q8(a: &ActQ8) -> BlockQ8_0 {
    BlockQ8_0 {
        d: f16::from_f32(a.d).to_bits(),
        qs: a.qs,
    }
}

/// 16 rows of `nb` blocks (`rows[i * nb + b]`) as one interleaved group.
fn group_q8(rows: &[BlockQ8_0], nb: usize) -> Vec<BlockQ8_0x16> {
    let mut g = vec![
        BlockQ8_0x16 {
            d: [0; 16],
            qs: [0; 512]
        };
        nb
    ];
    interleave_q8_0(rows, &mut g);
    g
}

fn group_q4(rows: &[BlockQ4_0], nb: usize) -> Vec<BlockQ4_0x16> {
    let mut g = vec![
        BlockQ4_0x16 {
            d: [0; 16],
            qs: [0; 256]
        };
        nb
    ];
    interleave_q4_0(rows, &mut g);
    g
}

fn scale_f(d: u16) -> f64 {
    f16::from_bits(d).to_f64()
}

/// A = Σ_b |d_w·d_x| · Σ_i |w_i·x_i| for Q8_0 weights.
fn abs_q8(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f64 {
    w.iter()
        .zip(x)
        .map(|(a, b)| {
            let s: f64 =
                a.qs.iter()
                    .zip(&b.qs)
                    .map(|(p, q)| (*p as f64 * *q as f64).abs())
                    .sum();
            (scale_f(a.d) * scale_f(b.d)).abs() * s
        })
        .sum()
}

fn abs_q4(w: &[BlockQ4_0], x: &[BlockQ8_0]) -> f64 {
    w.iter()
        .zip(x)
        .map(|(a, b)| {
            let mut s = 0.0f64;
            for j in 0..QK / 2 {
                let lo = (a.qs[j] & 15) as f64 - 8.0;
                let hi = (a.qs[j] >> 4) as f64 - 8.0;
                s += (lo * b.qs[j] as f64).abs() + (hi * b.qs[j + 16] as f64).abs();
            }
            (scale_f(a.d) * scale_f(b.d)).abs() * s
        })
        .sum()
}

/// Allowed difference between two evaluations of a sum of depth ≤ `depth` (see the module
/// comment).
fn tol(depth: usize, a: f64) -> f64 {
    (depth + 40) as f64 * f32::EPSILON as f64 * a
}

fn check(level: &str, what: &str, got: f32, want: f32, tol: f64) {
    assert!(
        ((got as f64) - (want as f64)).abs() <= tol,
        "{level}: {what}: got {got}, scalar {want}, |diff| {} > tol {tol}",
        ((got as f64) - (want as f64)).abs()
    );
}

fn simd_levels() -> Vec<&'static Kernels> {
    available()
}

fn scalar() -> &'static Kernels {
    available()[0]
}

#[test]
fn scalar_is_first_and_names_are_unique() {
    let all = available();
    assert_eq!(all[0].name, "scalar");
    let mut names: Vec<_> = all.iter().map(|k| k.name).collect();
    names.dedup();
    assert_eq!(names.len(), all.len());
    eprintln!("available kernel levels: {names:?}");
    eprintln!("cpu features: {:?}", llq::kernels::cpu_features());
}

#[test]
fn llq_kernel_rejects_unknown_level() {
    let e = select_from(Some("sse9000"))
        .err()
        .expect("unknown level must be rejected");
    assert!(e.contains("unknown") && e.contains("available"), "{e}");
    assert!(
        e.contains("scalar"),
        "message should list available levels: {e}"
    );
    // A level this binary knows but this CPU lacks.
    let lacking = [
        "avx2",
        "avxvnni",
        "avx512",
        "avx512vnni",
        "neon",
        "dotprod",
        "i8mm",
    ]
    .into_iter()
    .find(|n| available().iter().all(|k| k.name != *n))
    .unwrap();
    let e = select_from(Some(lacking))
        .err()
        .expect("missing level must be rejected");
    assert!(e.contains("cannot run") && e.contains("available"), "{e}");
    for k in available() {
        assert_eq!(select_from(Some(k.name)).unwrap().name, k.name);
    }
    assert_eq!(
        select_from(None).unwrap().name,
        available().last().unwrap().name
    );
    assert_eq!(
        select_from(Some("")).unwrap().name,
        available().last().unwrap().name
    );
}

/// CI sets `LLQ_EXPECT_KERNEL` (e.g. under qemu with a given `-cpu`) to prove the right
/// level is picked by default.
#[test]
fn expected_kernel_is_selected() {
    let best = select_from(None).unwrap().name;
    eprintln!("selected kernel level: {best}");
    if let Ok(want) = std::env::var("LLQ_EXPECT_KERNEL") {
        assert_eq!(best, want, "LLQ_EXPECT_KERNEL");
    }
}

#[test]
fn dot_q8_0_matches_scalar() {
    let mut rng = Rng(1);
    for k in simd_levels() {
        for &nb in BLOCK_COUNTS {
            for v in [Vals::Random, Vals::AllMin, Vals::MinMax] {
                let w = q8_blocks(&mut rng, nb, v, false);
                let x = q8_blocks(&mut rng, nb, Vals::Random, false);
                let want = (scalar().dot_q8_0)(&w, &x);
                let got = (k.dot_q8_0)(&w, &x);
                check(
                    k.name,
                    &format!("dot_q8_0 nb={nb} {v:?}"),
                    got,
                    want,
                    tol(nb, abs_q8(&w, &x)),
                );
            }
        }
    }
}

/// Unit scales and ≤ 32 blocks: every partial sum is an integer of magnitude ≤ 32·32·128²
/// = 2^24, exact in f32 in any order, so the results must be bit-identical.
/// (Activations never hold -128, see `acts`; weights may.)
#[test]
fn integer_parts_are_exact() {
    let mut rng = Rng(3);
    let combos = [
        (Vals::AllMin, Vals::AllMin),
        (Vals::AllMax, Vals::AllMin),
        (Vals::AllMax, Vals::AllMax),
        (Vals::MinMax, Vals::MinMax),
        (Vals::Random, Vals::Random),
        (Vals::Random, Vals::AllMin),
        (Vals::AllMin, Vals::Random),
    ];
    for k in simd_levels() {
        for nb in [1, 2, 3, 7, 31, 32] {
            for (vw, vx) in combos {
                let w = q8_blocks(&mut rng, nb, vw, true);
                let x = q8_blocks(&mut rng, nb, vx, true);
                let want = (scalar().dot_q8_0)(&w, &x);
                assert_eq!(
                    (k.dot_q8_0)(&w, &x),
                    want,
                    "{}: dot_q8_0 nb={nb} {vw:?}×{vx:?}",
                    k.name
                );
                // A 16-row group × 3 tokens, Q8_0 and Q4_0.
                let g8 = q8_blocks(&mut rng, 16 * nb, vw, true);
                let g4 = q4_blocks(&mut rng, 16 * nb, true);
                let xa = acts(&q8_blocks(&mut rng, 3 * nb, vx, true));
                let (mut a, mut b) = ([0.0; 48], [0.0; 48]);
                (scalar().gemm_q8_0x16)(&group_q8(&g8, nb), &xa, &mut a);
                (k.gemm_q8_0x16)(&group_q8(&g8, nb), &xa, &mut b);
                assert_eq!(a, b, "{}: gemm_q8_0x16 nb={nb} {vw:?}×{vx:?}", k.name);
                (scalar().gemm_q4_0x16)(&group_q4(&g4, nb), &xa, &mut a);
                (k.gemm_q4_0x16)(&group_q4(&g4, nb), &xa, &mut b);
                assert_eq!(a, b, "{}: gemm_q4_0x16 nb={nb} {vx:?}", k.name);
            }
        }
        // Scales 0, 0.5, 1, 2 with ≤ 2 blocks: quarter-integers below 2^22, still exact.
        for nb in [1, 2] {
            for _ in 0..50 {
                let pick = |r: &mut Rng| [0u16, 0x3800, 0x3c00, 0x4000][r.below(4) as usize];
                let mut w = q8_blocks(&mut rng, nb, Vals::MinMax, true);
                let mut x = q8_blocks(&mut rng, nb, Vals::Random, true);
                w.iter_mut().for_each(|b| b.d = pick(&mut rng));
                x.iter_mut().for_each(|b| b.d = pick(&mut rng));
                assert_eq!(
                    (k.dot_q8_0)(&w, &x),
                    (scalar().dot_q8_0)(&w, &x),
                    "{}",
                    k.name
                );
            }
        }
    }
}

/// Every output of a 16-row group × `toks` tokens, for both weight types, against the
/// scalar reference: block counts from 1 to 513 (32 to 16416 columns), token counts that
/// exercise every register-tile width and remainder, random/extreme values and scales.
#[test]
fn group_kernels_match_scalar() {
    let mut rng = Rng(4);
    for k in simd_levels() {
        for &nb in BLOCK_COUNTS {
            let toks_list: &[usize] = if nb > 100 {
                &[1, 5]
            } else {
                &[1, 2, 3, 4, 5, 7, 8, 9, 17]
            };
            for &toks in toks_list {
                for (vw, vx) in [
                    (Vals::Random, Vals::Random),
                    (Vals::MinMax, Vals::AllMin),
                    (Vals::AllMin, Vals::AllMax),
                ] {
                    let w8 = q8_blocks(&mut rng, 16 * nb, vw, false);
                    let w4 = q4_blocks(&mut rng, 16 * nb, false);
                    let xq = q8_blocks(&mut rng, toks * nb, vx, false);
                    let xa = acts(&xq);
                    let xq: Vec<BlockQ8_0> = xa.iter().map(act_as_q8).collect();
                    let n = 16 * toks;
                    let (mut want, mut got) = (vec![f32::NAN; n + 3], vec![f32::NAN; n + 3]);
                    let (mut want4, mut got4) = (want.clone(), got.clone());
                    (scalar().gemm_q8_0x16)(&group_q8(&w8, nb), &xa, &mut want);
                    (k.gemm_q8_0x16)(&group_q8(&w8, nb), &xa, &mut got);
                    (scalar().gemm_q4_0x16)(&group_q4(&w4, nb), &xa, &mut want4);
                    (k.gemm_q4_0x16)(&group_q4(&w4, nb), &xa, &mut got4);
                    for t in 0..toks {
                        let xt = &xq[t * nb..(t + 1) * nb];
                        for i in 0..16 {
                            let o = t * 16 + i;
                            let what = format!("nb={nb} toks={toks} row={i} tok={t} {vw:?}×{vx:?}");
                            let wr = &w8[i * nb..(i + 1) * nb];
                            check(
                                k.name,
                                &format!("gemm_q8_0x16 {what}"),
                                got[o],
                                want[o],
                                tol(nb, abs_q8(wr, xt)),
                            );
                            let wr4 = &w4[i * nb..(i + 1) * nb];
                            check(
                                k.name,
                                &format!("gemm_q4_0x16 {what}"),
                                got4[o],
                                want4[o],
                                tol(nb, abs_q4(wr4, xt)),
                            );
                        }
                    }
                    assert!(
                        got[n..].iter().chain(&got4[n..]).all(|v| v.is_nan()),
                        "{}: wrote past 16·toks",
                        k.name
                    );
                }
            }
        }
    }
}

#[test]
fn float_dots_match_scalar() {
    let mut rng = Rng(5);
    let lens = [1, 7, 15, 16, 31, 32, 33, 63, 64, 65, 100, 1000, 4096, 16385];
    for k in simd_levels() {
        for &n in &lens {
            let w: Vec<f32> = (0..n).map(|_| rng.f() * 4.0).collect();
            let x: Vec<f32> = (0..n).map(|_| rng.f() * 4.0).collect();
            let wh: Vec<f16> = w.iter().map(|v| f16::from_f32(*v)).collect();
            let a: f64 = w
                .iter()
                .zip(&x)
                .map(|(p, q)| (*p as f64 * *q as f64).abs())
                .sum();
            // Depth of a sequential sum of n terms.
            let t = n as f64 * f32::EPSILON as f64 * a + 1e-30;
            check(
                k.name,
                &format!("dot_f32 n={n}"),
                (k.dot_f32)(&w, &x),
                (scalar().dot_f32)(&w, &x),
                t,
            );
            let ah: f64 = wh
                .iter()
                .zip(&x)
                .map(|(p, q)| (p.to_f64() * *q as f64).abs())
                .sum();
            let t = n as f64 * f32::EPSILON as f64 * ah + 1e-30;
            check(
                k.name,
                &format!("dot_f16 n={n}"),
                (k.dot_f16)(&wh, &x),
                (scalar().dot_f16)(&wh, &x),
                t,
            );
        }
    }
}

fn quant_inputs(rng: &mut Rng, n: usize, kind: usize) -> Vec<f32> {
    (0..n)
        .map(|i| match kind {
            0 => rng.f() * 3.0,
            1 => rng.f() * 1e-40, // subnormal: d may be 0 or id infinite
            2 => rng.f() * 3e38,  // near f32::MAX
            3 => 0.0,
            // Exact ties: amax = 127 → d = 1, id = 1, values k + 0.5.
            4 => {
                if i % 32 == 0 {
                    127.0
                } else {
                    (rng.below(254) as f32 - 127.0) + 0.5
                }
            }
            5 => {
                if i % 3 == 0 {
                    -0.0
                } else {
                    rng.f() * 1e-3
                }
            }
            6 => {
                if i % 32 == 5 {
                    -65504.0 * 127.0
                } else {
                    rng.f() * 1e6
                }
            } // d ≈ f16 max
            _ => (rng.f() * 40.0).exp() * 1e-12,
        })
        .collect()
}

#[test]
fn quantize_q8_0_is_bit_identical() {
    let mut rng = Rng(6);
    for k in simd_levels() {
        for &nb in BLOCK_COUNTS {
            for kind in 0..8 {
                let x = quant_inputs(&mut rng, nb * QK, kind);
                let mut want = vec![BlockQ8_0 { d: 0, qs: [0; QK] }; nb];
                let mut got = want.clone();
                quantize_act_q8_0(&x, &mut want);
                (k.quantize_q8_0)(&x, &mut got);
                for (b, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(
                        g, w,
                        "{}: quantize_q8_0 nb={nb} kind={kind} block {b}",
                        k.name
                    );
                }
            }
        }
    }
}

/// The converter's block encoders write the same bytes on every level (so a file does
/// not depend on the machine that wrote it, and the tests' model cache may be converted at
/// any level): every searched type, rows of odd block counts (the 32-value types encode
/// sixteen blocks at a time, so 17 and 40 blocks leave partial batches), the value shapes
/// of `quant_inputs` (ties, subnormals, huge values, zeros), and weights that are absent,
/// even, zero in places, all zero, or so uneven that the exact search runs instead of the
/// grid. Two rows in one call (weights per column, batches across the row end) give the
/// bytes of the rows one at a time. The reference is `quant::encode_rows`, compiled here
/// at the baseline.
#[test]
fn encoders_are_bit_identical() {
    use llq::quant::{encode_rows, DType};
    let mut rng = Rng(17);
    // Every searched type: the quantized ones.
    for dtype in DType::ALL.into_iter().filter(|d| d.is_quantized()) {
        let block = dtype.block_elems();
        let counts: &[usize] = if block == 32 {
            &[1, 3, 17, 40]
        } else {
            &[1, 3]
        };
        for &blocks in counts {
            let n = blocks * block;
            for kind in 0..9 {
                let row = |rng: &mut Rng| -> Vec<f32> {
                    if kind == 8 {
                        // Gaussian-like rows, the shape of real weights.
                        (0..n).map(|_| rng.f() + rng.f() + rng.f()).collect()
                    } else {
                        quant_inputs(rng, n, kind)
                    }
                };
                let x = [row(&mut rng), row(&mut rng)].concat();
                for weights in 0..5 {
                    let w: Option<Vec<f32>> = match weights {
                        0 => None,
                        1 => Some((0..n).map(|_| 0.2 + rng.f().abs()).collect()),
                        2 => Some(
                            (0..n)
                                .map(|i| if i % 5 == 0 { 0.0 } else { rng.f().abs() * 3.0 })
                                .collect(),
                        ),
                        3 => Some(vec![0.0; n]),
                        // Past the grid's weight ratio: the exact search.
                        _ => Some(
                            (0..n)
                                .map(|i| if i % 7 == 0 { 500.0 } else { rng.f().abs() })
                                .collect(),
                        ),
                    };
                    let what =
                        format!("{dtype:?}: {blocks} blocks, values {kind}, weights {weights}");
                    let bytes = dtype.row_bytes(n).unwrap();
                    let mut want = vec![0u8; 2 * bytes];
                    encode_rows(dtype, &x, w.as_deref(), &mut want);
                    for r in 0..2 {
                        let mut one = vec![0u8; bytes];
                        encode_rows(dtype, &x[r * n..][..n], w.as_deref(), &mut one);
                        assert!(one == want[r * bytes..][..bytes], "{what}: row {r} alone");
                    }
                    for k in simd_levels() {
                        let mut got = vec![0xa5u8; 2 * bytes];
                        (k.encode_rows)(dtype, &x, w.as_deref(), &mut got);
                        assert!(got == want, "{} {what}", k.name);
                    }
                }
            }
        }
    }
}

/// The activation quantizer is ggml's, bit for bit: `tools/gen_ggml_act_q8_0_vectors.py`
/// ran ggml-cpu's own Q8_0 `from_float` (the function llama.cpp quantizes a matrix
/// product's activations and a q8_0 KV cache with) on rows that include exact ties and
/// values an ulp from a rounding boundary, where the reference weight quantizer
/// (`quantize_row_q8_0`: 1/d, half away from zero) gives ~1,300 different codes.
#[test]
fn activation_quantizer_matches_ggml_cpu() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/ggml_act_q8_0.bin"
    ))
    .expect("tests/data/ggml_act_q8_0.bin");
    assert_eq!(&bytes[..8], b"LLQAQ801");
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) as usize;
    let (n_rows, cols) = (u32_at(8), u32_at(12));
    let nb = cols / QK;
    let input: Vec<f32> = bytes[16..16 + 4 * n_rows * cols]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let want: Vec<BlockQ8_0> = bytes[16 + 4 * n_rows * cols..]
        .chunks_exact(34)
        .map(|c| BlockQ8_0 {
            d: u16::from_le_bytes([c[0], c[1]]),
            qs: std::array::from_fn(|i| c[2 + i] as i8),
        })
        .collect();
    assert_eq!(want.len(), n_rows * nb);
    type Quantize = fn(&[f32], &mut [BlockQ8_0]);
    let levels: Vec<(&str, Quantize)> =
        std::iter::once(("quant::quantize_act_q8_0", quantize_act_q8_0 as Quantize))
            .chain(simd_levels().into_iter().map(|k| (k.name, k.quantize_q8_0)))
            .collect();
    for (name, quantize) in levels {
        for (r, (x, w)) in input
            .chunks_exact(cols)
            .zip(want.chunks_exact(nb))
            .enumerate()
        {
            let mut got = vec![BlockQ8_0 { d: 0, qs: [0; QK] }; nb];
            quantize(x, &mut got);
            for (b, (g, w)) in got.iter().zip(w).enumerate() {
                assert_eq!(g, w, "{name}: row {r} block {b} differs from ggml's");
            }
        }
    }
}

/// A `[rows, cols]` weight matrix in 4-byte aligned storage (the file gives 64).
/// `None` for the coded types (tests/kernels_coded.rs has their matmul test).
fn weight_bytes(rng: &mut Rng, dtype: DType, rows: usize, cols: usize) -> Option<Vec<u32>> {
    // Quantized matrices in the rows16 layout, rows padded to a multiple of 16.
    let nb = cols / QK;
    let padded = rows.next_multiple_of(16);
    let bytes: Vec<u8> = match dtype {
        DType::Q8_0 => {
            let plain = q8_blocks(rng, padded * nb, Vals::Random, false);
            let g: Vec<BlockQ8_0x16> = plain
                .chunks(16 * nb)
                .flat_map(|r| group_q8(r, nb))
                .collect();
            block_bytes(&g).to_vec()
        }
        DType::Q4_0 => {
            let plain = q4_blocks(rng, padded * nb, false);
            let g: Vec<BlockQ4_0x16> = plain
                .chunks(16 * nb)
                .flat_map(|r| group_q4(r, nb))
                .collect();
            block_bytes(&g).to_vec()
        }
        DType::F16 => (0..rows * cols)
            .flat_map(|_| f16::from_f32(rng.f()).to_le_bytes())
            .collect(),
        DType::F32 => (0..rows * cols)
            .flat_map(|_| rng.f().to_le_bytes())
            .collect(),
        _ => return None,
    };
    Some(
        bytes
            .chunks(4)
            .map(|c| {
                let mut b = [0u8; 4];
                b[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(b)
            })
            .collect(),
    )
}

#[test]
fn matmul_matches_scalar() {
    let mut rng = Rng(7);
    let cols = 96; // 3 blocks
    for k in simd_levels() {
        for dtype in DType::ALL {
            for rows in [1, 3, 17, 40] {
                let Some(store) = weight_bytes(&mut rng, dtype, rows, cols) else {
                    continue;
                };
                let kind = WeightKind::for_dtype(dtype);
                let len = kind.tensor_bytes(&[rows as u64, cols as u64]).unwrap() as usize;
                let data = &bytemuck_u32(&store)[..len];
                let w = WeightView {
                    kind,
                    rows,
                    cols,
                    data,
                };
                for n in [1, 2, 3, 5, 8, 20, 40, 300] {
                    let x: Vec<f32> = (0..n * cols).map(|_| rng.f()).collect();
                    let mut want = vec![0.0; n * rows];
                    let mut got = vec![0.0; n * rows];
                    matmul(
                        scalar(),
                        &w,
                        &x,
                        n,
                        &mut want,
                        &mut MatmulScratch::default(),
                    );
                    matmul(k, &w, &x, n, &mut got, &mut MatmulScratch::default());
                    // Generous bound: 3 blocks of 32, |w|,|x| ≤ 1 → A ≤ 96 (f32/f16); for
                    // the quantized types the integer sums are exact and only the order
                    // of a few scaled terms differs.
                    for i in 0..n * rows {
                        let t = 1e-5 * (1.0 + want[i].abs() as f64) * 96.0;
                        check(
                            k.name,
                            &format!("matmul {dtype:?} rows={rows} n={n} i={i}"),
                            got[i],
                            want[i],
                            t,
                        );
                    }
                }
            }
        }
    }
}

/// u32 storage viewed as its bytes.
fn bytemuck_u32(v: &[u32]) -> &[u8] {
    // SAFETY (test): any initialised u32 slice is valid as bytes; u8 has alignment 1.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), v.len() * 4) }
}

/// Several matrices in one call (fused Q/K/V, gate/up) give exactly what separate calls
/// give, for mixed types, row counts that are not multiples of 16, and a float matrix
/// (which takes the unfused path).
#[test]
fn matmul_many_equals_separate_calls() {
    use llq::kernels::matmul::matmul_many;
    let mut rng = Rng(8);
    let cols = 64;
    let specs = [
        (DType::Q4_0, 40),
        (DType::Q8_0, 16),
        (DType::Q4_0, 7),
        (DType::F16, 5),
    ];
    let stores: Vec<_> = specs
        .iter()
        .map(|&(d, r)| weight_bytes(&mut rng, d, r, cols).expect("a q8_0/q4_0/float type"))
        .collect();
    let views: Vec<WeightView> = specs
        .iter()
        .zip(&stores)
        .map(|(&(dtype, rows), st)| {
            let kind = WeightKind::for_dtype(dtype);
            let len = kind.tensor_bytes(&[rows as u64, cols as u64]).unwrap() as usize;
            WeightView {
                kind,
                rows,
                cols,
                data: &bytemuck_u32(st)[..len],
            }
        })
        .collect();
    for k in simd_levels() {
        for n in [1, 3, 17] {
            let x: Vec<f32> = (0..n * cols).map(|_| rng.f()).collect();
            for set in [&views[..3], &views[..]] {
                let mut fused: Vec<Vec<f32>> = set.iter().map(|w| vec![0.0; n * w.rows]).collect();
                let mut refs: Vec<&mut [f32]> = fused.iter_mut().map(|v| &mut v[..]).collect();
                matmul_many(k, set, &x, n, &mut refs, &mut MatmulScratch::default());
                for (w, f) in set.iter().zip(&fused) {
                    let mut one = vec![0.0; n * w.rows];
                    matmul(k, w, &x, n, &mut one, &mut MatmulScratch::default());
                    assert_eq!(&one, f, "{}: {:?} rows={} n={n}", k.name, w.kind, w.rows);
                }
            }
        }
    }
}

/// The grouped attention kernels (several queries against the same strided cache rows,
/// each row loaded once per pass of up to four queries) against the scalar reference, which
/// runs the one-query kernels per query: query counts around the pass size, head sizes
/// with and without a SIMD remainder, key counts from 0 up, score rows wider than the keys.
#[test]
fn grouped_attention_kernels_match_scalar() {
    let mut rng = Rng(19);
    for k in simd_levels() {
        for nq in [1usize, 2, 3, 4, 5, 7, 8, 9] {
            for hd in [4usize, 13, 64, 128] {
                for n in [0usize, 1, 7, 200] {
                    let g = AttnGroup {
                        hd,
                        n,
                        stride: hd * 3 + 5,
                        row_stride: n + 3,
                    };
                    let len = n.saturating_sub(1) * g.stride + hd;
                    let keys: Vec<f32> = (0..len).map(|_| rng.f() * 3.0).collect();
                    let keys16: Vec<f16> = keys.iter().map(|v| f16::from_f32(*v)).collect();
                    let q: Vec<f32> = (0..nq * hd).map(|_| rng.f()).collect();
                    let rows = nq * g.row_stride;
                    let p: Vec<f32> = (0..rows)
                        .map(|_| (rng.f() + 1.0) / n.max(1) as f32)
                        .collect();
                    let what = format!("nq={nq} hd={hd} n={n}");
                    let ts = hd as f64 * f32::EPSILON as f64 * hd as f64 * 12.0 + 1e-30;
                    let tv = (n + 2) as f64 * f32::EPSILON as f64 * 8.0 + 1e-30;
                    // Scores: untouched entries between rows keep their sentinel.
                    for f16_keys in [false, true] {
                        let (mut want, mut got) = (vec![7.0f32; rows], vec![7.0f32; rows]);
                        if f16_keys {
                            (scalar().attn_scores_group_f16)(&g, &q, &keys16, &mut want);
                            (k.attn_scores_group_f16)(&g, &q, &keys16, &mut got);
                        } else {
                            (scalar().attn_scores_group_f32)(&g, &q, &keys, &mut want);
                            (k.attn_scores_group_f32)(&g, &q, &keys, &mut got);
                        }
                        for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                            let t = if j % (n + 3) < n { ts } else { 0.0 };
                            check(
                                k.name,
                                &format!("scores f16={f16_keys} {what} [{j}]"),
                                *g,
                                *w,
                                t,
                            );
                        }
                        let init: Vec<f32> = (0..nq * hd).map(|_| rng.f()).collect();
                        let (mut want, mut got) = (init.clone(), init);
                        if f16_keys {
                            (scalar().attn_values_group_f16)(&g, &mut want, &p, &keys16);
                            (k.attn_values_group_f16)(&g, &mut got, &p, &keys16);
                        } else {
                            (scalar().attn_values_group_f32)(&g, &mut want, &p, &keys);
                            (k.attn_values_group_f32)(&g, &mut got, &p, &keys);
                        }
                        for (d, (g, w)) in got.iter().zip(&want).enumerate() {
                            check(
                                k.name,
                                &format!("values f16={f16_keys} {what} [{d}]"),
                                *g,
                                *w,
                                tv,
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The blocked prompt attention (tiles of keys, online softmax, scores laid out key by
/// query) against the scalar reference (per query: scores, softmax, values): token and
/// head counts around the vector widths, head sizes with and without a SIMD remainder,
/// contexts within one tile and over several (so the running maximum grows and the
/// outputs are rescaled), lengths that grow by one per token (a prompt) and arbitrary
/// ones, scores spread wide enough that the softmax is far from uniform; f32, f16 and
/// Q8_0 caches (the reference dequantizes the Q8_0 rows first).
#[test]
fn blocked_attention_matches_scalar() {
    let mut rng = Rng(23);
    for k in simd_levels() {
        for (tokens, heads) in [(1usize, 1usize), (2, 3), (5, 8), (22, 3), (3, 1)] {
            for hd in [4usize, 13, 64, 80] {
                for depth in [0usize, 63, 200] {
                    for (ragged, window) in
                        [(false, 0), (true, 0), (false, 1), (false, 70), (true, 9)]
                    {
                        let lens: Vec<usize> = (0..tokens)
                            .map(|t| {
                                if ragged {
                                    1 + rng.below((depth + tokens) as u64) as usize
                                } else {
                                    depth + t + 1
                                }
                            })
                            .collect();
                        // A sliding window of `window` rows (Gemma 3), or none.
                        let starts: Vec<usize> = match window {
                            0 => Vec::new(),
                            w => lens.iter().map(|l| l.saturating_sub(w)).collect(),
                        };
                        let rows = *lens.iter().max().unwrap();
                        let stride = hd * 2 + 3;
                        let len = (rows - 1) * stride + hd;
                        let keys: Vec<f32> = (0..len).map(|_| rng.f() * 2.0).collect();
                        let vals: Vec<f32> = (0..len).map(|_| rng.f() * 4.0).collect();
                        let keys16: Vec<f16> = keys.iter().map(|v| f16::from_f32(*v)).collect();
                        let vals16: Vec<f16> = vals.iter().map(|v| f16::from_f32(*v)).collect();
                        let nq = tokens * heads;
                        let q: Vec<f32> = (0..nq * hd).map(|_| rng.f() * 2.0).collect();
                        let b = AttnBlock {
                            hd,
                            heads,
                            stride,
                            lens: &lens,
                            starts: &starts,
                            scale: 1.0 / (hd as f32).sqrt(),
                        };
                        // A score's rounding error is at most ~hd·ε of Σ|q·k|·scale (here
                        // at most 4·√hd), and moves its weight by that factor; the
                        // weighted sum adds ~len·ε; outputs are within max|v| = 4.
                        let eps = f32::EPSILON as f64;
                        let tol = 4.0
                            * (4.0 * eps * hd as f64 * 4.0 * (hd as f64).sqrt()
                                + 4.0 * eps * (rows + hd) as f64);
                        let what = format!(
                            "tokens={tokens} heads={heads} hd={hd} lens={lens:?} starts={starts:?}"
                        );
                        for f16_cache in [false, true] {
                            let (mut want, mut got) =
                                (vec![0.0f32; nq * hd], vec![9.0f32; nq * hd]);
                            let mut scratch = vec![f32::NAN; 5];
                            if f16_cache {
                                let (s, k16, v16) = (scalar(), &keys16, &vals16);
                                (s.attn_block_f16)(&b, &q, k16, v16, &mut scratch, &mut want);
                                (k.attn_block_f16)(&b, &q, k16, v16, &mut scratch, &mut got);
                            } else {
                                let s = scalar();
                                (s.attn_block_f32)(&b, &q, &keys, &vals, &mut scratch, &mut want);
                                (k.attn_block_f32)(&b, &q, &keys, &vals, &mut scratch, &mut got);
                            }
                            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                                let what = format!("f16={f16_cache} {what} [{i}]");
                                check(k.name, &what, *g, *w, tol);
                            }
                        }
                        // A Q8_0 cache: rows of whole blocks at a stride of whole blocks.
                        if hd % QK == 0 {
                            let b = AttnBlock {
                                stride: hd + QK,
                                ..b
                            };
                            let n = rows * b.stride;
                            let quant = |scale: f32, rng: &mut Rng| {
                                let f: Vec<f32> = (0..n).map(|_| rng.f() * scale).collect();
                                let mut out = vec![BlockQ8_0 { d: 0, qs: [0; QK] }; n / QK];
                                quantize_row_q8_0(&f, &mut out);
                                out
                            };
                            let (kq, vq) = (quant(2.0, &mut rng), quant(4.0, &mut rng));
                            let (mut want, mut got) =
                                (vec![0.0f32; nq * hd], vec![9.0f32; nq * hd]);
                            let mut scratch = Vec::new();
                            (scalar().attn_block_q8_0)(&b, &q, &kq, &vq, &mut scratch, &mut want);
                            (k.attn_block_q8_0)(&b, &q, &kq, &vq, &mut scratch, &mut got);
                            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                                check(k.name, &format!("q8_0 {what} [{i}]"), *g, *w, tol);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The blocked kernel refuses a token that would attend to nothing (no keys, or a window
/// that starts past them) and caches too short for the longest token.
#[test]
fn blocked_attention_checks_its_shape() {
    let run = |lens: &[usize], starts: &[usize], cache: usize| {
        let b = AttnBlock {
            hd: 4,
            heads: 2,
            stride: 4,
            lens,
            starts,
            scale: 0.5,
        };
        let nq = lens.len() * 2;
        let (q, kv) = (vec![0.0f32; nq * 4], vec![0.0f32; cache]);
        let mut out = vec![0.0f32; nq * 4];
        std::panic::catch_unwind(move || {
            for k in simd_levels() {
                (k.attn_block_f32)(&b, &q, &kv, &kv, &mut Vec::new(), &mut out);
            }
        })
        .is_ok()
    };
    assert!(run(&[1, 3], &[], 12));
    assert!(run(&[1, 3], &[0, 2], 12));
    assert!(!run(&[0, 3], &[], 12), "a token without keys");
    assert!(!run(&[1, 4], &[], 12), "4 rows of 4 in 12 values");
    assert!(
        !run(&[1, 3], &[0, 3], 12),
        "a window past its token's last key"
    );
    assert!(!run(&[1, 3], &[0], 12), "one start for two tokens");
}

/// The grouped kernels refuse shapes their slices cannot hold.
#[test]
#[should_panic(expected = "attention")]
fn grouped_attention_checks_its_shape() {
    let g = AttnGroup {
        hd: 4,
        n: 3,
        stride: 4,
        row_stride: 3,
    };
    // Two queries need 2 rows of 3 scores; 5 values are one short.
    let mut out = vec![0.0; 5];
    (scalar().attn_scores_group_f32)(&g, &[0.0; 8], &[0.0; 12], &mut out);
}

/// The attention kernels (scores of one query against strided cache rows; weighted sum of
/// value rows) against the scalar reference, for head sizes with and without a SIMD
/// remainder and key counts from 0 up.
#[test]
fn attention_kernels_match_scalar() {
    let mut rng = Rng(9);
    for k in simd_levels() {
        for hd in [4, 8, 13, 32, 64, 128] {
            for rows in [0usize, 1, 2, 7, 64, 200] {
                let stride = hd * 3 + 5;
                let len = rows.saturating_sub(1) * stride + hd;
                let keys: Vec<f32> = (0..len).map(|_| rng.f() * 3.0).collect();
                let keys16: Vec<f16> = keys.iter().map(|v| f16::from_f32(*v)).collect();
                let q: Vec<f32> = (0..hd).map(|_| rng.f()).collect();
                let p: Vec<f32> = (0..rows).map(|_| (rng.f() + 1.0) / rows as f32).collect();
                let what = format!("hd={hd} rows={rows}");
                // Each score is a dot of hd terms: bound as for dot_f32.
                let t = |a: f64| hd as f64 * f32::EPSILON as f64 * a * 4.0 + 1e-30;
                let (mut want, mut got) = (vec![0.0; rows], vec![0.0; rows]);
                (scalar().attn_scores_f32)(&q, &keys, stride, &mut want);
                (k.attn_scores_f32)(&q, &keys, stride, &mut got);
                for j in 0..rows {
                    check(
                        k.name,
                        &format!("scores f32 {what} j={j}"),
                        got[j],
                        want[j],
                        t(hd as f64 * 3.0),
                    );
                }
                (scalar().attn_scores_f16)(&q, &keys16, stride, &mut want);
                (k.attn_scores_f16)(&q, &keys16, stride, &mut got);
                for j in 0..rows {
                    check(
                        k.name,
                        &format!("scores f16 {what} j={j}"),
                        got[j],
                        want[j],
                        t(hd as f64 * 3.0),
                    );
                }
                // Values: rows terms per output, each |p·v| ≤ 3/rows·2.
                let tv = (rows + 2) as f64 * f32::EPSILON as f64 * 8.0 + 1e-30;
                let init: Vec<f32> = (0..hd).map(|_| rng.f()).collect();
                let (mut want, mut got) = (init.clone(), init.clone());
                (scalar().attn_values_f32)(&mut want, &p, &keys, stride);
                (k.attn_values_f32)(&mut got, &p, &keys, stride);
                for d in 0..hd {
                    check(
                        k.name,
                        &format!("values f32 {what} d={d}"),
                        got[d],
                        want[d],
                        tv,
                    );
                }
                let (mut want, mut got) = (init.clone(), init);
                (scalar().attn_values_f16)(&mut want, &p, &keys16, stride);
                (k.attn_values_f16)(&mut got, &p, &keys16, stride);
                for d in 0..hd {
                    check(
                        k.name,
                        &format!("values f16 {what} d={d}"),
                        got[d],
                        want[d],
                        tv,
                    );
                }
            }
        }
    }
}

/// Relative error of `got` against `want` in units of f32's epsilon (0 when both are
/// below `floor`, where the clamped `exp` may differ from libm's subnormals).
fn rel_eps(got: f32, want: f32, floor: f64) -> f64 {
    let (g, w) = (got as f64, want as f64);
    if (g - w).abs() <= floor {
        return 0.0;
    }
    (g - w).abs() / (w.abs() * f32::EPSILON as f64)
}

/// SwiGLU's gate against `f32::exp`, over the whole range where `e^-g` is a normal float
/// and beyond it (the clamp): `g/(1+e^-g)` has the relative error of `e^-g` for g ≪ 0, so
/// this bounds the polynomial's error too.
#[test]
fn silu_mul_matches_scalar() {
    let mut rng = Rng(11);
    for k in simd_levels() {
        let mut worst = 0.0f64;
        for n in [0usize, 1, 3, 7, 8, 9, 15, 16, 17, 33, 1000, 4099] {
            let mut g: Vec<f32> = (0..n).map(|_| rng.f() * 100.0).collect();
            // A dense sweep of the range too: every 1/64 from -96 to 96.
            if n == 4099 {
                g.iter_mut()
                    .enumerate()
                    .for_each(|(i, v)| *v = (i as f32 - 2049.0) * 96.0 / 2048.0);
            }
            let u: Vec<f32> = (0..n).map(|_| rng.f() * 2.0).collect();
            let (mut want, mut got) = (g.clone(), g);
            (scalar().silu_mul)(&mut want, &u);
            (k.silu_mul)(&mut got, &u);
            for i in 0..n {
                let e = rel_eps(got[i], want[i], 1e-35);
                worst = worst.max(e);
                assert!(
                    e <= 4.0,
                    "{}: silu_mul n={n} i={i}: {} vs {} ({e:.1} eps)",
                    k.name,
                    got[i],
                    want[i]
                );
            }
        }
        eprintln!("{}: silu_mul worst {worst:.2} eps", k.name);
    }
}

/// Softmax against `f32::exp` on scores like attention's (and far below the maximum,
/// where the polynomial's clamp gives 1e-38 instead of 0). The bound is that of the sum:
/// n positive terms, then one division.
#[test]
fn softmax_matches_scalar() {
    let mut rng = Rng(12);
    for k in simd_levels() {
        for n in [0usize, 1, 2, 5, 7, 8, 9, 16, 17, 31, 100, 129, 1000, 4096] {
            for spread in [1.0f32, 20.0, 200.0] {
                let s: Vec<f32> = (0..n).map(|_| rng.f() * spread).collect();
                let (mut want, mut got) = (s.clone(), s);
                (scalar().softmax)(&mut want);
                (k.softmax)(&mut got);
                let bound = n as f64 + 4.0;
                for i in 0..n {
                    let e = rel_eps(got[i], want[i], 1e-37);
                    assert!(
                        e <= bound,
                        "{}: softmax n={n} spread={spread} i={i}: {} vs {} ({e:.1} eps)",
                        k.name,
                        got[i],
                        want[i]
                    );
                }
                if n > 0 {
                    let total: f64 = got.iter().map(|v| *v as f64).sum();
                    assert!((total - 1.0).abs() < 1e-5, "{}: sum {total}", k.name);
                }
            }
        }
    }
}
