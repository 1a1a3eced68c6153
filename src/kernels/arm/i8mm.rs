//! ARMv8.6 int8 matrix-multiply kernels: SMMLA multiplies a 2×8 int8 matrix (two weight
//! rows) by an 8×2 one (two tokens) into a 2×2 int32 tile, so one instruction does 32
//! multiply-adds with every register used twice. Used for the matrix × matrix tiles;
//! matrix × vector stays on SDOT (a single token has nothing to pair with).
//! SMMLA is emitted with `asm!` (the intrinsic is not stable Rust) inside functions
//! compiled with `neon,dotprod,i8mm`.
//!
//! Every function is reachable only through [`KERNELS`], which `arm::push_available`
//! hands out only after `is_aarch64_feature_detected!` confirmed dotprod and i8mm.

use std::arch::aarch64::*;
use std::arch::asm;

use super::dotprod;
use super::neon::{self, h2f, load_q4, load_q8};
use crate::kernels::{gemm_driver, Kernels};
use crate::quant::{BlockQ4_0, BlockQ8_0};

pub(crate) static KERNELS: Kernels = Kernels {
    name: "i8mm",
    dot_q8_0: dotprod::dot_q8_0,
    dot_f16: neon::dot_f16,
    dot_f32: neon::dot_f32,
    quantize_q8_0: neon::quantize_q8_0,
    gemm_q8_0x16: crate::kernels::scalar::gemm_q8_0x16,
    gemm_q4_0x16: crate::kernels::scalar::gemm_q4_0x16,
};

fn gemm_q8_0_tile(w: &[BlockQ8_0], x: &[BlockQ8_0], nb: usize, out: &mut [f32], ldo: usize) {
    // SAFETY: only reachable through KERNELS, installed after detecting dotprod + i8mm.
    unsafe { gemm_q8_mmla(w, x, nb, out, ldo) }
}

fn gemm_q4_0_tile(w: &[BlockQ4_0], x: &[BlockQ8_0], nb: usize, out: &mut [f32], ldo: usize) {
    // SAFETY: only reachable through KERNELS, installed after detecting dotprod + i8mm.
    unsafe { gemm_q4_mmla(w, x, nb, out, ldo) }
}

/// `acc[2i + j] += Σ_k a[8i + k] · b[8j + k]` for i, j in 0..2.
#[inline]
#[target_feature(enable = "neon,dotprod,i8mm")]
fn smmla(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: SMMLA only touches the named registers; i8mm was detected at run time.
    unsafe {
        asm!(
            "smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Interleave two 32-value blocks 8 bytes at a time: register k holds bytes 8k..8k+8 of
/// `p` then of `q`, the 2×8 operand layout of SMMLA.
#[inline]
#[target_feature(enable = "neon,dotprod,i8mm")]
fn interleave(p: [int8x16_t; 2], q: [int8x16_t; 2]) -> [int8x16_t; 4] {
    let (p0, p1) = (vreinterpretq_s64_s8(p[0]), vreinterpretq_s64_s8(p[1]));
    let (q0, q1) = (vreinterpretq_s64_s8(q[0]), vreinterpretq_s64_s8(q[1]));
    [
        vreinterpretq_s8_s64(vzip1q_s64(p0, q0)),
        vreinterpretq_s8_s64(vzip2q_s64(p0, q0)),
        vreinterpretq_s8_s64(vzip1q_s64(p1, q1)),
        vreinterpretq_s8_s64(vzip2q_s64(p1, q1)),
    ]
}

/// Pairs of rows × pairs of tokens. `R` rows (`C` tokens) make `R.div_ceil(2)` pairs (at
/// most 2); an odd last row (token) is paired with itself and its duplicate output dropped.
macro_rules! tile_mmla {
    ($name:ident, $W:ty, $load:ident) => {
        #[inline]
        #[target_feature(enable = "neon,dotprod,i8mm")]
        fn $name<const R: usize, const C: usize>(
            w: &[$W],
            x: &[BlockQ8_0],
            nb: usize,
            r0: usize,
            t0: usize,
            out: &mut [f32],
            ldo: usize,
        ) {
            const { assert!(R <= 4 && C <= 4) };
            let (rp, cp) = (R.div_ceil(2), C.div_ceil(2));
            // Row/token index of the second member of each pair (itself if odd).
            let r2 = |p: usize| (2 * p + 1).min(R - 1);
            let c2 = |p: usize| (2 * p + 1).min(C - 1);
            let wr = |i: usize| &w[(r0 + i) * nb..(r0 + i + 1) * nb];
            let xr = |j: usize| &x[(t0 + j) * nb..(t0 + j + 1) * nb];
            let wrows: [[&[$W]; 2]; 2] = std::array::from_fn(|p| {
                let a = (2 * p).min(R - 1);
                [wr(a), wr(r2(p))]
            });
            let xrows: [[&[BlockQ8_0]; 2]; 2] = std::array::from_fn(|p| {
                let a = (2 * p).min(C - 1);
                [xr(a), xr(c2(p))]
            });
            let mut acc = [[vdupq_n_f32(0.0); 2]; 2];
            for b in 0..nb {
                let mut wv = [[vdupq_n_s8(0); 4]; 2];
                let mut dw = [vdupq_n_f32(0.0); 2];
                for p in 0..rp {
                    let (a, c) = (&wrows[p][0][b], &wrows[p][1][b]);
                    wv[p] = interleave($load(a), $load(c));
                    dw[p] = vcombine_f32(vdup_n_f32(h2f(a.d)), vdup_n_f32(h2f(c.d)));
                }
                for q in 0..cp {
                    let (a, c) = (&xrows[q][0][b], &xrows[q][1][b]);
                    let xv = interleave(load_q8(a), load_q8(c));
                    let dx2 = vset_lane_f32::<1>(h2f(c.d), vdup_n_f32(h2f(a.d)));
                    let dx = vcombine_f32(dx2, dx2);
                    for p in 0..rp {
                        let mut s = vdupq_n_s32(0);
                        for k in 0..4 {
                            s = smmla(s, wv[p][k], xv[k]);
                        }
                        let d = vmulq_f32(dw[p], dx);
                        acc[p][q] = vfmaq_f32(acc[p][q], vcvtq_f32_s32(s), d);
                    }
                }
            }
            for p in 0..rp {
                for q in 0..cp {
                    let mut v = [0.0f32; 4];
                    // SAFETY: `v` is 4 writable floats.
                    unsafe { vst1q_f32(v.as_mut_ptr(), acc[p][q]) };
                    // Lane 2i + j holds (row 2p + i, token 2q + j).
                    for i in 0..2 {
                        for j in 0..2 {
                            let (r, t) = (2 * p + i, 2 * q + j);
                            if r < R && t < C {
                                out[(t0 + t) * ldo + r0 + r] = v[2 * i + j];
                            }
                        }
                    }
                }
            }
        }
    };
}

tile_mmla!(tile_q8_mmla, BlockQ8_0, load_q8);
tile_mmla!(tile_q4_mmla, BlockQ4_0, load_q4);
gemm_driver!(
    gemm_q8_mmla,
    "neon,dotprod,i8mm",
    BlockQ8_0,
    tile_q8_mmla,
    4,
    4
);
gemm_driver!(
    gemm_q4_mmla,
    "neon,dotprod,i8mm",
    BlockQ4_0,
    tile_q4_mmla,
    4,
    4
);
