//! Softmax and SwiGLU's `silu(g) · u` with a vectorised `exp` (NEON), shared by every
//! AArch64 level (see `x86/activation.rs` for why).
//!
//! Reachable only through the kernel tables, handed out after detecting neon.

use std::arch::aarch64::*;

use crate::kernels::exp_poly as c;

pub(super) fn softmax(s: &mut [f32]) {
    // SAFETY: only installed in tables of levels that require neon.
    unsafe { softmax_neon(s) }
}

pub(super) fn silu_mul(g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len());
    // SAFETY: as above.
    unsafe { silu_mul_neon(g, u) }
}

/// `e^x` for 4 lanes (see [`crate::kernels::exp_poly`]); `fmax`/`fmin` keep NaN.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn exp4(x: float32x4_t) -> float32x4_t {
    let x = vminq_f32(vdupq_n_f32(c::HI), vmaxq_f32(vdupq_n_f32(c::LO), x));
    // Round to nearest, ties to even, as the x86 version.
    let n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(c::LOG2E)));
    let r = vfmsq_f32(x, n, vdupq_n_f32(c::LN2_HI));
    let r = vfmsq_f32(r, n, vdupq_n_f32(c::LN2_LO));
    let mut p = vdupq_n_f32(c::P[0]);
    for k in &c::P[1..] {
        p = vfmaq_f32(vdupq_n_f32(*k), p, r);
    }
    let y = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0)), p, vmulq_f32(r, r));
    let bits = vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)));
    vmulq_f32(y, vreinterpretq_f32_s32(bits))
}

#[target_feature(enable = "neon")]
fn softmax_neon(s: &mut [f32]) {
    let split = s.len() / 4 * 4;
    let (body, tail) = s.split_at_mut(split);
    let mut vmax = vdupq_n_f32(f32::NEG_INFINITY);
    for ch in body.chunks_exact(4) {
        // SAFETY: 4 readable floats.
        vmax = vmaxq_f32(vmax, unsafe { vld1q_f32(ch.as_ptr()) });
    }
    let max = tail.iter().fold(vmaxvq_f32(vmax), |m, v| m.max(*v));
    let m = vdupq_n_f32(max);
    let mut vsum = vdupq_n_f32(0.0);
    for ch in body.chunks_exact_mut(4) {
        // SAFETY: 4 readable and writable floats.
        unsafe {
            let e = exp4(vsubq_f32(vld1q_f32(ch.as_ptr()), m));
            vst1q_f32(ch.as_mut_ptr(), e);
            vsum = vaddq_f32(vsum, e);
        }
    }
    let mut sum = vaddvq_f32(vsum);
    if !tail.is_empty() {
        let mut pad = [max; 4];
        pad[..tail.len()].copy_from_slice(tail);
        // SAFETY: `pad` holds 4 floats.
        unsafe {
            vst1q_f32(
                pad.as_mut_ptr(),
                exp4(vsubq_f32(vld1q_f32(pad.as_ptr()), m)),
            )
        };
        tail.copy_from_slice(&pad[..tail.len()]);
        sum += tail.iter().sum::<f32>();
    }
    let inv = 1.0 / sum;
    let vinv = vdupq_n_f32(inv);
    for ch in body.chunks_exact_mut(4) {
        // SAFETY: 4 readable and writable floats.
        unsafe { vst1q_f32(ch.as_mut_ptr(), vmulq_f32(vld1q_f32(ch.as_ptr()), vinv)) };
    }
    tail.iter_mut().for_each(|v| *v *= inv);
}

#[inline]
#[target_feature(enable = "neon")]
fn silu_mul4(g: float32x4_t, u: float32x4_t) -> float32x4_t {
    let e = exp4(vnegq_f32(g));
    vmulq_f32(vdivq_f32(g, vaddq_f32(vdupq_n_f32(1.0), e)), u)
}

#[target_feature(enable = "neon")]
fn silu_mul_neon(g: &mut [f32], u: &[f32]) {
    let split = g.len() / 4 * 4;
    let (gb, gt) = g.split_at_mut(split);
    let (ub, ut) = u.split_at(split);
    for (gc, uc) in gb.chunks_exact_mut(4).zip(ub.chunks_exact(4)) {
        // SAFETY: 4 readable floats in each, 4 writable in `gc`.
        unsafe {
            let r = silu_mul4(vld1q_f32(gc.as_ptr()), vld1q_f32(uc.as_ptr()));
            vst1q_f32(gc.as_mut_ptr(), r);
        }
    }
    if !gt.is_empty() {
        let (mut pg, mut pu) = ([0.0f32; 4], [0.0f32; 4]);
        pg[..gt.len()].copy_from_slice(gt);
        pu[..ut.len()].copy_from_slice(ut);
        // SAFETY: both pads hold 4 floats.
        unsafe {
            vst1q_f32(
                pg.as_mut_ptr(),
                silu_mul4(vld1q_f32(pg.as_ptr()), vld1q_f32(pu.as_ptr())),
            )
        };
        gt.copy_from_slice(&pg[..gt.len()]);
    }
}
