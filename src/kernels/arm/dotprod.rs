//! ARMv8.2 dot-product kernels: SDOT (four int8 products summed into each int32 lane,
//! exact). The SDOT intrinsics are not stable Rust, so it is emitted with `asm!` inside
//! functions compiled with `neon,dotprod`.
//!
//! Every function is reachable only through [`KERNELS`] or the i8mm table, which
//! `arm::push_available` hands out only after `is_aarch64_feature_detected!("dotprod")`.

use std::arch::aarch64::*;
use std::arch::asm;

use super::neon::{self, h2f, load_q8};
use crate::kernels::Kernels;
use crate::quant::BlockQ8_0;

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
