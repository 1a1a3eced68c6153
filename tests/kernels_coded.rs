//! The group kernels of the coded types (Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K in the
//! `rows16` layout of `quant::kx16`):
//! * the scalar reference against an f64 product of the weights as gguf's reference
//!   dequantizer decodes them (an independent definition of the values) with the
//!   activations as their int8 blocks decode;
//! * every level this CPU runs against the scalar reference, on random codes and scales,
//!   odd superblock counts and token counts that exercise every tile size;
//! * integer parts exact: with unit scales and zero offsets the result of every level is
//!   an integer below 2^24, so it must equal the scalar result to the bit.
//!
//! Tolerance: each output is a sum of exactly computed integer partial sums times scale
//! products, added in a tree of depth at most about `2 · subs · nsb + 40`; two summation
//! orders differ by at most `depth · ε · A` with `A = Σ |w · x|` (see tests/kernels.rs).

use llq::gguf::dequantize;
use llq::kernels::matmul::{matmul, MatmulScratch};
use llq::kernels::{available, Kernels};
use llq::quant::interleave::{ActQ8, GROUP};
use llq::quant::kx16::{
    BlockQ4_1x16, BlockQ4_Kx16, BlockQ5_0x16, BlockQ5_1x16, BlockQ5_Kx16, BlockQ6_Kx16, CodedX16,
};
use llq::quant::native::{
    BlockQ4_1, BlockQ4_K, BlockQ5_0, BlockQ5_1, BlockQ5_K, BlockQ6_K, NativeBlock,
};
use llq::quant::{block_bytes, quantize_row_q8_0, BlockQ8_0, QK};
use llq::quant::{WeightKind, WeightView};

mod common;
use common::Rng;

fn f16_bits(v: f32) -> u16 {
    half::f16::from_f32(v).to_bits()
}

/// How a test block's scale fields are set.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scales {
    /// Random codes, finite random scales of either sign.
    Random,
    /// Every scale 1 and every offset 0 (K-quants: d = 1, 6-bit scales 1, mins 0): the
    /// result is the exact integer Σ code·q_x for Q4_1, Q5_1, Q4_K, Q5_K, and
    /// Σ (code − off)·q_x for Q5_0 and Q6_K.
    Unit,
    /// As `Unit` with every code at its maximum (15, 31 or 63): the largest integer
    /// partial sums, where an i16 accumulation would overflow first.
    UnitMax,
}

/// A native block with random codes and the requested scales.
trait TestBlock: NativeBlock {
    fn make(rng: &mut Rng, s: Scales) -> Self {
        let mut b = Self::default();
        // SAFETY: native blocks are integer-only `repr(C)` structs: any bytes are valid.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut((&mut b as *mut Self).cast::<u8>(), size_of::<Self>())
        };
        rng.bytes(bytes);
        if s == Scales::UnitMax {
            bytes.fill(0xff);
        }
        b.set_scales(rng, s);
        b
    }
    fn set_scales(&mut self, rng: &mut Rng, s: Scales);
}

fn rand_scale(rng: &mut Rng) -> u16 {
    f16_bits(rng.f() * 0.05)
}

impl TestBlock for BlockQ4_1 {
    fn set_scales(&mut self, rng: &mut Rng, s: Scales) {
        (self.d, self.m) = match s {
            Scales::Random => (rand_scale(rng), rand_scale(rng)),
            Scales::Unit | Scales::UnitMax => (f16_bits(1.0), 0),
        };
    }
}
impl TestBlock for BlockQ5_0 {
    fn set_scales(&mut self, rng: &mut Rng, s: Scales) {
        self.d = match s {
            Scales::Random => rand_scale(rng),
            Scales::Unit | Scales::UnitMax => f16_bits(1.0),
        };
    }
}
impl TestBlock for BlockQ5_1 {
    fn set_scales(&mut self, rng: &mut Rng, s: Scales) {
        (self.d, self.m) = match s {
            Scales::Random => (rand_scale(rng), rand_scale(rng)),
            Scales::Unit | Scales::UnitMax => (f16_bits(1.0), 0),
        };
    }
}
/// 6-bit scale 1 and min 0 for every sub-block, in Q4_K's packing.
const UNIT_K_SCALES: [u8; 12] = [1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1];
impl TestBlock for BlockQ4_K {
    fn set_scales(&mut self, rng: &mut Rng, s: Scales) {
        match s {
            Scales::Random => (self.d, self.dmin) = (rand_scale(rng), rand_scale(rng)),
            Scales::Unit | Scales::UnitMax => {
                (self.d, self.dmin, self.scales) = (f16_bits(1.0), 0, UNIT_K_SCALES);
            }
        }
    }
}
impl TestBlock for BlockQ5_K {
    fn set_scales(&mut self, rng: &mut Rng, s: Scales) {
        match s {
            Scales::Random => (self.d, self.dmin) = (rand_scale(rng), rand_scale(rng)),
            Scales::Unit | Scales::UnitMax => {
                (self.d, self.dmin, self.scales) = (f16_bits(1.0), 0, UNIT_K_SCALES);
            }
        }
    }
}
impl TestBlock for BlockQ6_K {
    fn set_scales(&mut self, rng: &mut Rng, s: Scales) {
        match s {
            Scales::Random => self.d = rand_scale(rng),
            Scales::Unit | Scales::UnitMax => (self.d, self.scales) = (f16_bits(1.0), [1; 16]),
        }
    }
}

/// Activation blocks of random values (some blocks all-maximal, to reach the extremes).
fn acts(rng: &mut Rng, n_blocks: usize) -> Vec<ActQ8> {
    let x: Vec<f32> = (0..n_blocks * QK)
        .map(|i| {
            if (i / QK) % 5 == 4 {
                1.0
            } else {
                rng.f() * 3.0
            }
        })
        .collect();
    let mut q = vec![BlockQ8_0 { d: 0, qs: [0; QK] }; n_blocks];
    quantize_row_q8_0(&x, &mut q);
    q.iter().map(ActQ8::from_q8_0).collect()
}

struct Case<B: CodedX16> {
    w: Vec<B>,
    /// Rows' weights as the reference dequantizer decodes them (16 rows × cols).
    deq: Vec<f32>,
    cols: usize,
}

fn case<B>(rng: &mut Rng, nsb: usize, s: Scales, zero: B) -> Case<B>
where
    B: CodedX16,
    B::Plain: TestBlock,
{
    let rows: Vec<B::Plain> = (0..GROUP * nsb)
        .map(|_| <B::Plain as TestBlock>::make(rng, s))
        .collect();
    let mut w = vec![zero; nsb];
    B::interleave(&rows, &mut w);
    let cols = nsb * B::COLS;
    let mut deq = vec![0.0f32; GROUP * cols];
    dequantize(B::Plain::GGML, block_bytes(&rows), &mut deq).unwrap();
    Case { w, deq, cols }
}

/// f64 `Σ w · x` and `Σ |w · x|` of every row and token.
fn reference(c: &Case<impl CodedX16>, x: &[ActQ8], toks: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for t in 0..toks {
        for i in 0..GROUP {
            let (mut s, mut a) = (0.0f64, 0.0f64);
            for k in 0..c.cols {
                let xb = &x[t * c.cols / QK + k / QK];
                let p = c.deq[i * c.cols + k] as f64 * xb.d as f64 * xb.qs[k % QK] as f64;
                s += p;
                a += p.abs();
            }
            out.push((s, a));
        }
    }
    out
}

const TOKS: &[usize] = &[1, 2, 3, 5, 8, 17, 31, 51];

/// The kernel of `B` in a level's table.
trait Pick: CodedX16 + Sized {
    fn pick(k: &Kernels) -> fn(&[Self], &[ActQ8], &mut [f32]);
}
impl Pick for BlockQ4_1x16 {
    fn pick(k: &Kernels) -> fn(&[Self], &[ActQ8], &mut [f32]) {
        k.coded.q4_1
    }
}
impl Pick for BlockQ5_0x16 {
    fn pick(k: &Kernels) -> fn(&[Self], &[ActQ8], &mut [f32]) {
        k.coded.q5_0
    }
}
impl Pick for BlockQ5_1x16 {
    fn pick(k: &Kernels) -> fn(&[Self], &[ActQ8], &mut [f32]) {
        k.coded.q5_1
    }
}
impl Pick for BlockQ4_Kx16 {
    fn pick(k: &Kernels) -> fn(&[Self], &[ActQ8], &mut [f32]) {
        k.coded.q4_k
    }
}
impl Pick for BlockQ5_Kx16 {
    fn pick(k: &Kernels) -> fn(&[Self], &[ActQ8], &mut [f32]) {
        k.coded.q5_k
    }
}
impl Pick for BlockQ6_Kx16 {
    fn pick(k: &Kernels) -> fn(&[Self], &[ActQ8], &mut [f32]) {
        k.coded.q6_k
    }
}

fn gemm<B: Pick>(k: &Kernels, w: &[B], x: &[ActQ8], toks: usize) -> Vec<f32> {
    // NaN-filled: a kernel must write every output it owns.
    let mut out = vec![f32::NAN; toks * GROUP];
    B::pick(k)(w, x, &mut out);
    out
}

fn check_type<B>(zero: B, seed: u64)
where
    B: Pick + std::fmt::Debug,
    B::Plain: TestBlock,
{
    let mut rng = Rng(seed);
    let scalar = available()[0];
    for nsb in [1, 3, 7] {
        let c = case(&mut rng, nsb, Scales::Random, zero);
        let depth = 2 * B::SUBS * nsb;
        for &toks in TOKS {
            let x = acts(&mut rng, toks * c.cols / QK);
            let want = reference(&c, &x, toks);
            let base = gemm(scalar, &c.w, &x, toks);
            for (j, (&g, &(s, a))) in base.iter().zip(&want).enumerate() {
                let tol = (depth + 40) as f64 * f32::EPSILON as f64 * a + 1e-30;
                assert!(
                    (g as f64 - s).abs() <= tol,
                    "scalar {:?} nsb={nsb} toks={toks} out {j}: {g} vs f64 {s} (tol {tol})",
                    B::DTYPE
                );
            }
            for k in &available()[1..] {
                let got = gemm(k, &c.w, &x, toks);
                for (j, ((&g, &b), &(_, a))) in got.iter().zip(&base).zip(&want).enumerate() {
                    let tol = 2.0 * (depth + 40) as f64 * f32::EPSILON as f64 * a + 1e-30;
                    assert!(
                        (g as f64 - b as f64).abs() <= tol,
                        "{}: {:?} nsb={nsb} toks={toks} out {j}: {g} vs scalar {b} (tol {tol})",
                        k.name,
                        B::DTYPE
                    );
                }
            }
        }
        // Integer parts: unit scales, few enough superblocks that every sum is exact.
        let c = case(&mut rng, nsb.min(3), Scales::Unit, zero);
        for &toks in TOKS {
            let mut x = acts(&mut rng, toks * c.cols / QK);
            x.iter_mut().for_each(|a| a.d = 1.0);
            let base = gemm(scalar, &c.w, &x, toks);
            for (j, (&g, &(s, _))) in base.iter().zip(&reference(&c, &x, toks)).enumerate() {
                assert_eq!(g as f64, s, "scalar {:?} unit scales out {j}", B::DTYPE);
            }
            for k in &available()[1..] {
                assert_eq!(
                    gemm(k, &c.w, &x, toks),
                    base,
                    "{}: {:?} integer parts (unit scales) nsb={} toks={toks}",
                    k.name,
                    B::DTYPE,
                    nsb.min(3)
                );
            }
        }
    }
}

/// Integer parts at the extremes: every code at its maximum against blocks of +127, of
/// −127 and of alternating signs, 16 sub-blocks and every tile size (tokens 1..=13).
fn check_extremes<B>(zero: B, seed: u64)
where
    B: Pick + std::fmt::Debug,
    B::Plain: TestBlock,
{
    let mut rng = Rng(seed);
    let scalar = available()[0];
    let c = case(&mut rng, 16usize.div_ceil(B::SUBS), Scales::UnitMax, zero);
    let nb = c.cols / QK;
    for toks in 1..=13 {
        let x: Vec<ActQ8> = (0..toks * nb)
            .map(|j| {
                let mut b = BlockQ8_0 {
                    d: f16_bits(1.0),
                    qs: [0; QK],
                };
                for (k, q) in b.qs.iter_mut().enumerate() {
                    *q = match (j + toks) % 3 {
                        0 => 127,
                        1 => -127,
                        _ if k % 2 == 0 => 127,
                        _ => -127,
                    };
                }
                ActQ8::from_q8_0(&b)
            })
            .collect();
        let base = gemm(scalar, &c.w, &x, toks);
        for (j, (&g, &(s, _))) in base.iter().zip(&reference(&c, &x, toks)).enumerate() {
            assert_eq!(g as f64, s, "scalar {:?} extremes out {j}", B::DTYPE);
        }
        for k in &available()[1..] {
            assert_eq!(
                gemm(k, &c.w, &x, toks),
                base,
                "{}: {:?} extremes toks={toks}",
                k.name,
                B::DTYPE
            );
        }
    }
}

#[test]
fn extremes() {
    check_extremes(BlockQ4_1x16::ZERO, 21);
    check_extremes(BlockQ5_0x16::ZERO, 22);
    check_extremes(BlockQ5_1x16::ZERO, 23);
    check_extremes(BlockQ4_Kx16::ZERO, 24);
    check_extremes(BlockQ5_Kx16::ZERO, 25);
    check_extremes(BlockQ6_Kx16::ZERO, 26);
}

#[test]
fn q4_1() {
    check_type(BlockQ4_1x16::ZERO, 1);
}
#[test]
fn q5_0() {
    check_type(BlockQ5_0x16::ZERO, 2);
}
#[test]
fn q5_1() {
    check_type(BlockQ5_1x16::ZERO, 3);
}
#[test]
fn q4_k() {
    check_type(BlockQ4_Kx16::ZERO, 4);
}
#[test]
fn q5_k() {
    check_type(BlockQ5_Kx16::ZERO, 5);
}
#[test]
fn q6_k() {
    check_type(BlockQ6_Kx16::ZERO, 6);
}

/// `matmul` routes every coded kind to its group kernel, pads the last group and splits
/// the work: a Q4_K and a Q6_K matrix of 40 rows (3 groups, the last one partial) against
/// the f64 product of dequantized weights and the activations as `matmul` quantizes them,
/// for one token, a short batch, a batch whose results take the heap buffer (over 32
/// tokens, with Q6_K's codes preformed on the 256-bit levels) and one of two kernel calls
/// per group (over 256).
#[test]
fn matmul_of_coded_matrices() {
    fn one<B>(zero: B, kind: WeightKind, seed: u64)
    where
        B: Pick,
        B::Plain: TestBlock,
    {
        let mut rng = Rng(seed);
        let (rows, nsb) = (40usize, 2usize);
        let cols = nsb * B::COLS;
        let padded = rows.next_multiple_of(GROUP);
        let native: Vec<B::Plain> = (0..padded * nsb)
            .map(|r| {
                if r < rows * nsb {
                    <B::Plain as TestBlock>::make(&mut rng, Scales::Random)
                } else {
                    B::Plain::default()
                }
            })
            .collect();
        let mut groups = vec![zero; padded / GROUP * nsb];
        for (g, out) in native.chunks(GROUP * nsb).zip(groups.chunks_mut(nsb)) {
            B::interleave(g, out);
        }
        // 64-byte aligned copy, as the mapped file gives.
        let bytes = block_bytes(&groups);
        let mut store = vec![0u64; bytes.len().div_ceil(8)];
        // SAFETY: `store` holds at least `bytes.len()` bytes.
        let data =
            unsafe { std::slice::from_raw_parts_mut(store.as_mut_ptr().cast::<u8>(), bytes.len()) };
        data.copy_from_slice(bytes);
        let w = WeightView {
            kind,
            rows,
            cols,
            data,
        };
        let mut deq = vec![0.0f32; rows * cols];
        dequantize(B::Plain::GGML, block_bytes(&native[..rows * nsb]), &mut deq).unwrap();
        for n in [1, 5, 40, 300] {
            let x: Vec<f32> = (0..n * cols).map(|_| rng.f()).collect();
            let mut xq = vec![BlockQ8_0 { d: 0, qs: [0; QK] }; n * cols / QK];
            quantize_row_q8_0(&x, &mut xq);
            for k in available() {
                let mut out = vec![f32::NAN; n * rows];
                matmul(k, &w, &x, n, &mut out, &mut MatmulScratch::default());
                for t in 0..n {
                    for r in 0..rows {
                        let (mut s, mut a) = (0.0f64, 0.0f64);
                        for c in 0..cols {
                            let xb = &xq[(t * cols + c) / QK];
                            let xv =
                                half::f16::from_bits(xb.d).to_f32() as f64 * xb.qs[c % QK] as f64;
                            let p = deq[r * cols + c] as f64 * xv;
                            s += p;
                            a += p.abs();
                        }
                        let g = out[t * rows + r] as f64;
                        assert!(
                            (g - s).abs() <= 100.0 * f32::EPSILON as f64 * a + 1e-30,
                            "{}: {kind:?} token {t} row {r}: {g} vs {s}",
                            k.name
                        );
                    }
                }
            }
        }
    }
    one(BlockQ4_Kx16::ZERO, WeightKind::Q4_Kx16, 11);
    one(BlockQ6_Kx16::ZERO, WeightKind::Q6_Kx16, 12);
    one(BlockQ5_0x16::ZERO, WeightKind::Q5_0x16, 13);
}
