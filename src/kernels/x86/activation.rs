//! Softmax and SwiGLU's `silu(g) · u` with a vectorised `exp` (AVX2 + FMA), shared by
//! every x86 level: a libm `expf` per element was a tenth of a prompt's time (the
//! attention probabilities and the MLP's gate, n · ffn of them per layer).
//!
//! Reachable only through the kernel tables of levels that require avx2 and fma.

use std::arch::x86_64::*;

use crate::kernels::exp_poly as c;

pub(super) fn softmax(s: &mut [f32]) {
    // SAFETY: only installed in tables of levels that require avx2+fma.
    unsafe { softmax_avx2(s) }
}

pub(super) fn silu_mul(g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len());
    // SAFETY: as above.
    unsafe { silu_mul_avx2(g, u) }
}

/// `e^x` for 8 lanes (see [`crate::kernels::exp_poly`]). NaN stays NaN: the clamps take
/// the constant as their first operand, and `max`/`min` return the second when either
/// is NaN.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn exp8(x: __m256) -> __m256 {
    let x = _mm256_min_ps(
        _mm256_set1_ps(c::HI),
        _mm256_max_ps(_mm256_set1_ps(c::LO), x),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(c::LOG2E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(c::LN2_HI), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(c::LN2_LO), r);
    let mut p = _mm256_set1_ps(c::P[0]);
    for k in &c::P[1..] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*k));
    }
    let y = _mm256_fmadd_ps(
        p,
        _mm256_mul_ps(r, r),
        _mm256_add_ps(r, _mm256_set1_ps(1.0)),
    );
    let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(y, _mm256_castsi256_ps(bits))
}

/// [`exp8`] for 16 lanes, the same operations.
#[inline]
#[target_feature(enable = "avx2,fma,avx512f")]
pub(super) fn exp16(x: __m512) -> __m512 {
    let x = _mm512_min_ps(
        _mm512_set1_ps(c::HI),
        _mm512_max_ps(_mm512_set1_ps(c::LO), x),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(c::LOG2E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(c::LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(c::LN2_LO), r);
    let mut p = _mm512_set1_ps(c::P[0]);
    for k in &c::P[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*k));
    }
    let y = _mm512_fmadd_ps(
        p,
        _mm512_mul_ps(r, r),
        _mm512_add_ps(r, _mm512_set1_ps(1.0)),
    );
    let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvtps_epi32(n),
        _mm512_set1_epi32(127),
    ));
    _mm512_mul_ps(y, _mm512_castsi512_ps(bits))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum8(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

#[target_feature(enable = "avx2,fma")]
fn softmax_avx2(s: &mut [f32]) {
    let split = s.len() / 8 * 8;
    let (body, tail) = s.split_at_mut(split);
    let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
    for ch in body.chunks_exact(8) {
        // SAFETY: 8 readable floats.
        vmax = _mm256_max_ps(vmax, unsafe { _mm256_loadu_ps(ch.as_ptr()) });
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: `lanes` holds 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), vmax) };
    let max = lanes
        .iter()
        .chain(tail.iter())
        .fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let m = _mm256_set1_ps(max);
    let mut vsum = _mm256_setzero_ps();
    for ch in body.chunks_exact_mut(8) {
        // SAFETY: 8 readable and writable floats.
        unsafe {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(ch.as_ptr()), m));
            _mm256_storeu_ps(ch.as_mut_ptr(), e);
            vsum = _mm256_add_ps(vsum, e);
        }
    }
    let mut sum = hsum8(vsum);
    if !tail.is_empty() {
        // The last < 8 scores through the same polynomial, padded with the maximum.
        let mut pad = [max; 8];
        pad[..tail.len()].copy_from_slice(tail);
        // SAFETY: `pad` holds 8 floats.
        unsafe {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(pad.as_ptr()), m));
            _mm256_storeu_ps(pad.as_mut_ptr(), e);
        }
        tail.copy_from_slice(&pad[..tail.len()]);
        sum += tail.iter().sum::<f32>();
    }
    let inv = _mm256_set1_ps(1.0 / sum);
    for ch in body.chunks_exact_mut(8) {
        // SAFETY: 8 readable and writable floats.
        unsafe {
            _mm256_storeu_ps(
                ch.as_mut_ptr(),
                _mm256_mul_ps(_mm256_loadu_ps(ch.as_ptr()), inv),
            )
        };
    }
    let inv = 1.0 / sum;
    tail.iter_mut().for_each(|v| *v *= inv);
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn silu_mul8(g: __m256, u: __m256) -> __m256 {
    let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
    _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0), e)), u)
}

#[target_feature(enable = "avx2,fma")]
fn silu_mul_avx2(g: &mut [f32], u: &[f32]) {
    let split = g.len() / 8 * 8;
    let (gb, gt) = g.split_at_mut(split);
    let (ub, ut) = u.split_at(split);
    for (gc, uc) in gb.chunks_exact_mut(8).zip(ub.chunks_exact(8)) {
        // SAFETY: 8 readable floats in each, 8 writable in `gc`.
        unsafe {
            let r = silu_mul8(_mm256_loadu_ps(gc.as_ptr()), _mm256_loadu_ps(uc.as_ptr()));
            _mm256_storeu_ps(gc.as_mut_ptr(), r);
        }
    }
    if !gt.is_empty() {
        let (mut pg, mut pu) = ([0.0f32; 8], [0.0f32; 8]);
        pg[..gt.len()].copy_from_slice(gt);
        pu[..ut.len()].copy_from_slice(ut);
        // SAFETY: both pads hold 8 floats.
        unsafe {
            let r = silu_mul8(_mm256_loadu_ps(pg.as_ptr()), _mm256_loadu_ps(pu.as_ptr()));
            _mm256_storeu_ps(pg.as_mut_ptr(), r);
        }
        gt.copy_from_slice(&pg[..gt.len()]);
    }
}
