//! Plain NEON (ARMv8.0 Advanced SIMD) kernels: `smull` + `sadalp` int8 dot products,
//! exact for every int8 value (a product fits i16, pairs are accumulated in i32).
//!
//! Every function is reachable only through [`KERNELS`] (or the tables of the higher
//! levels), which `arm::push_available` hands out only after
//! `is_aarch64_feature_detected!("neon")`.

use std::arch::aarch64::*;
use std::arch::asm;

use half::f16;

use crate::kernels::Kernels;
use crate::quant::{BlockQ8_0, QK};

pub(crate) static KERNELS: Kernels = Kernels {
    name: "neon",
    dot_q8_0,
    dot_f16,
    dot_f32,
    quantize_q8_0,
    gemm_q8_0x16: crate::kernels::scalar::gemm_q8_0x16,
    gemm_q4_0x16: crate::kernels::scalar::gemm_q4_0x16,
};

fn dot_q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), x.len());
    // SAFETY: only reachable through KERNELS, installed after detecting neon.
    unsafe { dot_q8_neon(w, x) }
}

pub(super) fn dot_f16(w: &[f16], x: &[f32]) -> f32 {
    assert_eq!(w.len(), x.len());
    // SAFETY: only reachable through the NEON-based tables, installed after detecting neon.
    unsafe { dot_f16_neon(w, x) }
}

pub(super) fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    assert_eq!(w.len(), x.len());
    // SAFETY: only reachable through the NEON-based tables, installed after detecting neon.
    unsafe { dot_f32_neon(w, x) }
}

pub(super) fn quantize_q8_0(src: &[f32], out: &mut [BlockQ8_0]) {
    assert_eq!(src.len(), out.len() * QK);
    // SAFETY: only reachable through the NEON-based tables, installed after detecting neon.
    unsafe { quantize_q8_neon(src, out) }
}

// ---------------------------------------------------------------------------------------
// Helpers (shared with the dotprod and i8mm levels).

/// f16 bits → f32 with `fcvtl` (base ARMv8 Advanced SIMD; the f16 intrinsics are not
/// stable Rust).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn h2f(h: u16) -> f32 {
    let r: f32;
    // SAFETY: register-only instructions of base Advanced SIMD (neon was detected).
    unsafe {
        asm!(
            "dup {v:v}.4h, {h:w}",
            "fcvtl {v:v}.4s, {v:v}.4h",
            h = in(reg) h as u32,
            v = out(vreg) r,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    r
}

/// Eight f16 → two vectors of four f32.
#[inline]
#[target_feature(enable = "neon")]
fn h2f8(h: uint16x8_t) -> (float32x4_t, float32x4_t) {
    let (lo, hi): (float32x4_t, float32x4_t);
    // SAFETY: register-only instructions of base Advanced SIMD (neon was detected).
    unsafe {
        asm!(
            "fcvtl {lo:v}.4s, {h:v}.4h",
            "fcvtl2 {hi:v}.4s, {h:v}.8h",
            h = in(vreg) h,
            lo = out(vreg) lo,
            hi = out(vreg) hi,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    (lo, hi)
}

/// The 32 int8 values of a Q8_0 block (elements 0..16, 16..32).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn load_q8(b: &BlockQ8_0) -> [int8x16_t; 2] {
    // SAFETY: `b.qs` is 32 readable bytes; vld1q has no alignment requirement beyond 1.
    unsafe { [vld1q_s8(b.qs.as_ptr()), vld1q_s8(b.qs.as_ptr().add(16))] }
}

/// Exact Σ w·x of 32 int8 pairs, as four partial int32 sums.
#[inline]
#[target_feature(enable = "neon")]
fn idot(w: &[int8x16_t; 2], x: &[int8x16_t; 2]) -> int32x4_t {
    let a = vpaddlq_s16(vmull_s8(vget_low_s8(w[0]), vget_low_s8(x[0])));
    let a = vpadalq_s16(a, vmull_high_s8(w[0], x[0]));
    let a = vpadalq_s16(a, vmull_s8(vget_low_s8(w[1]), vget_low_s8(x[1])));
    vpadalq_s16(a, vmull_high_s8(w[1], x[1]))
}

// ---------------------------------------------------------------------------------------
// Matrix × vector.

#[target_feature(enable = "neon")]
fn dot_q8_neon(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
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

#[target_feature(enable = "neon")]
fn dot_f16_neon(w: &[f16], x: &[f32]) -> f32 {
    let n = w.len() / 16 * 16;
    let mut acc = [vdupq_n_f32(0.0); 4];
    for i in (0..n).step_by(16) {
        for k in 0..2 {
            let o = i + 8 * k;
            // SAFETY: o + 8 <= n <= len of both slices.
            let (h, x0, x1) = unsafe {
                (
                    vld1q_u16(w.as_ptr().add(o).cast()),
                    vld1q_f32(x.as_ptr().add(o)),
                    vld1q_f32(x.as_ptr().add(o + 4)),
                )
            };
            let (w0, w1) = h2f8(h);
            acc[2 * k] = vfmaq_f32(acc[2 * k], w0, x0);
            acc[2 * k + 1] = vfmaq_f32(acc[2 * k + 1], w1, x1);
        }
    }
    let mut s = vaddvq_f32(vaddq_f32(
        vaddq_f32(acc[0], acc[1]),
        vaddq_f32(acc[2], acc[3]),
    ));
    for i in n..w.len() {
        s += h2f(w[i].to_bits()) * x[i];
    }
    s
}

#[target_feature(enable = "neon")]
fn dot_f32_neon(w: &[f32], x: &[f32]) -> f32 {
    let n = w.len() / 16 * 16;
    let mut acc = [vdupq_n_f32(0.0); 4];
    for i in (0..n).step_by(16) {
        for (k, a) in acc.iter_mut().enumerate() {
            let o = i + 4 * k;
            // SAFETY: o + 4 <= n <= len of both slices.
            let (wv, xv) = unsafe { (vld1q_f32(w.as_ptr().add(o)), vld1q_f32(x.as_ptr().add(o))) };
            *a = vfmaq_f32(*a, wv, xv);
        }
    }
    let mut s = vaddvq_f32(vaddq_f32(
        vaddq_f32(acc[0], acc[1]),
        vaddq_f32(acc[2], acc[3]),
    ));
    for i in n..w.len() {
        s += w[i] * x[i];
    }
    s
}

/// Bit-identical to `quant::quantize_row_q8_0`: `fcvtas` rounds half away from zero and
/// saturates (NaN → 0) exactly like `f32::round() as i32`, and the saturating narrows
/// then clamp to i8 like `as i8`; the max uses `fmaxnm` which, like `f32::max`, ignores
/// NaN; the f16 scale goes through the same `half` conversion as the reference.
#[target_feature(enable = "neon")]
fn quantize_q8_neon(src: &[f32], out: &mut [BlockQ8_0]) {
    for (x, b) in src.chunks_exact(QK).zip(out.iter_mut()) {
        // SAFETY: `x` has exactly 32 floats.
        let v: [float32x4_t; 8] =
            std::array::from_fn(|k| unsafe { vld1q_f32(x.as_ptr().add(4 * k)) });
        let mut m = vabsq_f32(v[0]);
        for vk in &v[1..] {
            m = vmaxnmq_f32(m, vabsq_f32(*vk));
        }
        let amax = vmaxnmvq_f32(m).max(0.0);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d).to_bits();
        let q: [int32x4_t; 8] = std::array::from_fn(|k| vcvtaq_s32_f32(vmulq_n_f32(v[k], id)));
        let h: [int16x8_t; 4] =
            std::array::from_fn(|k| vcombine_s16(vqmovn_s32(q[2 * k]), vqmovn_s32(q[2 * k + 1])));
        let lo = vcombine_s8(vqmovn_s16(h[0]), vqmovn_s16(h[1]));
        let hi = vcombine_s8(vqmovn_s16(h[2]), vqmovn_s16(h[3]));
        // SAFETY: `b.qs` is 32 writable bytes.
        unsafe {
            vst1q_s8(b.qs.as_mut_ptr(), lo);
            vst1q_s8(b.qs.as_mut_ptr().add(16), hi);
        }
    }
}
