//! ARMv8.2 dot-product kernels: SDOT (four int8 products summed into each int32 lane,
//! exact). The SDOT intrinsics are not stable Rust, so it is emitted with `asm!` inside
//! functions compiled with `neon,dotprod`.
//!
//! Every function is reachable only through [`KERNELS`] or the i8mm table, which
//! `arm::push_available` hands out only after `is_aarch64_feature_detected!("dotprod")`.

use std::arch::aarch64::*;
use std::arch::asm;

use super::neon::{self, h2f, load_q4, load_q8};
use crate::kernels::{gemm_driver, Kernels};
use crate::quant::{BlockQ4_0, BlockQ8_0};

pub(crate) static KERNELS: Kernels = Kernels {
    name: "dotprod",
    dot_q8_0,
    dot_f16: neon::dot_f16,
    dot_f32: neon::dot_f32,
    quantize_q8_0: neon::quantize_q8_0,
    gemm_q8_0x16: crate::kernels::scalar::gemm_q8_0x16,
    gemm_q4_0x16: crate::kernels::scalar::gemm_q4_0x16,
};

pub(super) fn dot_q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), x.len());
    // SAFETY: only reachable through tables installed after detecting neon + dotprod.
    unsafe { dot_q8_sdot(w, x) }
}

pub(super) fn dot_q4_0(w: &[BlockQ4_0], x: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), x.len());
    // SAFETY: only reachable through tables installed after detecting neon + dotprod.
    unsafe { dot_q4_sdot(w, x) }
}

fn gemm_q8_0_tile(w: &[BlockQ8_0], x: &[BlockQ8_0], nb: usize, out: &mut [f32], ldo: usize) {
    // SAFETY: only reachable through KERNELS, installed after detecting neon + dotprod.
    unsafe { gemm_q8_sdot(w, x, nb, out, ldo) }
}

fn gemm_q4_0_tile(w: &[BlockQ4_0], x: &[BlockQ8_0], nb: usize, out: &mut [f32], ldo: usize) {
    // SAFETY: only reachable through KERNELS, installed after detecting neon + dotprod.
    unsafe { gemm_q4_sdot(w, x, nb, out, ldo) }
}

/// `acc[i] += Σ_k a[4i + k] · b[4i + k]`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: SDOT only touches the named registers; dotprod was detected at run time.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Exact Σ w·x of 32 int8 pairs, as four partial int32 sums.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn idot(w: &[int8x16_t; 2], x: &[int8x16_t; 2]) -> int32x4_t {
    sdot(sdot(vdupq_n_s32(0), w[0], x[0]), w[1], x[1])
}

#[target_feature(enable = "neon,dotprod")]
fn dot_q8_sdot(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    let step = |acc, a: &BlockQ8_0, b: &BlockQ8_0| {
        let s = vcvtq_f32_s32(idot(&load_q8(a), &load_q8(b)));
        vfmaq_n_f32(acc, s, h2f(a.d) * h2f(b.d))
    };
    // Two named accumulators (an indexed array would live in memory).
    let (mut acc0, mut acc1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let (wc, xc) = (w.chunks_exact(2), x.chunks_exact(2));
    let (wt, xt) = (wc.remainder(), xc.remainder());
    for (a, b) in wc.zip(xc) {
        acc0 = step(acc0, &a[0], &b[0]);
        acc1 = step(acc1, &a[1], &b[1]);
    }
    for (a, b) in wt.iter().zip(xt) {
        acc0 = step(acc0, a, b);
    }
    vaddvq_f32(vaddq_f32(acc0, acc1))
}

#[target_feature(enable = "neon,dotprod")]
fn dot_q4_sdot(w: &[BlockQ4_0], x: &[BlockQ8_0]) -> f32 {
    let step = |acc, a: &BlockQ4_0, b: &BlockQ8_0| {
        let s = vcvtq_f32_s32(idot(&load_q4(a), &load_q8(b)));
        vfmaq_n_f32(acc, s, h2f(a.d) * h2f(b.d))
    };
    // Two named accumulators (an indexed array would live in memory).
    let (mut acc0, mut acc1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let (wc, xc) = (w.chunks_exact(2), x.chunks_exact(2));
    let (wt, xt) = (wc.remainder(), xc.remainder());
    for (a, b) in wc.zip(xc) {
        acc0 = step(acc0, &a[0], &b[0]);
        acc1 = step(acc1, &a[1], &b[1]);
    }
    for (a, b) in wt.iter().zip(xt) {
        acc0 = step(acc0, a, b);
    }
    vaddvq_f32(vaddq_f32(acc0, acc1))
}

macro_rules! tile_sdot {
    ($name:ident, $W:ty, $load:ident) => {
        #[inline]
        #[target_feature(enable = "neon,dotprod")]
        fn $name<const R: usize, const C: usize>(
            w: &[$W],
            x: &[BlockQ8_0],
            nb: usize,
            r0: usize,
            t0: usize,
            out: &mut [f32],
            ldo: usize,
        ) {
            let wr: [&[$W]; R] = std::array::from_fn(|i| &w[(r0 + i) * nb..(r0 + i + 1) * nb]);
            let xr: [&[BlockQ8_0]; C] =
                std::array::from_fn(|j| &x[(t0 + j) * nb..(t0 + j + 1) * nb]);
            let mut acc = [[vdupq_n_f32(0.0); C]; R];
            for b in 0..nb {
                let wv: [[int8x16_t; 2]; R] = std::array::from_fn(|i| $load(&wr[i][b]));
                let dw: [f32; R] = std::array::from_fn(|i| h2f(wr[i][b].d));
                for j in 0..C {
                    let xv = load_q8(&xr[j][b]);
                    let dx = h2f(xr[j][b].d);
                    for i in 0..R {
                        let s = vcvtq_f32_s32(idot(&wv[i], &xv));
                        acc[i][j] = vfmaq_n_f32(acc[i][j], s, dw[i] * dx);
                    }
                }
            }
            for (i, a) in acc.iter().enumerate() {
                for (j, v) in a.iter().enumerate() {
                    out[(t0 + j) * ldo + r0 + i] = vaddvq_f32(*v);
                }
            }
        }
    };
}

tile_sdot!(tile_q8_sdot, BlockQ8_0, load_q8);
tile_sdot!(tile_q4_sdot, BlockQ4_0, load_q4);
gemm_driver!(gemm_q8_sdot, "neon,dotprod", BlockQ8_0, tile_q8_sdot, 4, 4);
gemm_driver!(gemm_q4_sdot, "neon,dotprod", BlockQ4_0, tile_q4_sdot, 4, 4);
