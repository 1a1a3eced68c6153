//! AVX2 + FMA + F16C kernels.
//!
//! Integer parts are exact for every int8 value, including -128 × -128: Q8_0 products are
//! formed by widening to i16 and `vpmaddwd` (no saturation possible), Q4_0 products by
//! `vpmaddubsw` on the unsigned nibbles (at most 2·15·128 per pair, far from saturation)
//! minus 8·Σx, which gives Σ(q-8)·x exactly.
//!
//! Every public function here is installed in [`KERNELS`], which `x86::push_available`
//! only hands out after `is_x86_feature_detected!` confirmed avx2, fma and f16c.

use std::arch::x86_64::*;

use half::f16;

use crate::kernels::{attn_dims, Kernels};
use crate::quant::{BlockQ8_0, QK};

pub(crate) static KERNELS: Kernels = Kernels {
    name: "avx2",
    dot_q8_0,
    dot_f16,
    dot_f32,
    axpy_f32,
    axpy_f16,
    attn_scores_f32,
    attn_scores_f16,
    attn_values_f32,
    attn_values_f16,
    softmax: super::activation::softmax,
    silu_mul: super::activation::silu_mul,
    quantize_q8_0,
    gemm_q8_0x16: super::rows16::gemm_q8_0x16_avx2,
    gemm_q4_0x16: super::rows16::gemm_q4_0x16_avx2,
};

fn dot_q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), x.len());
    // SAFETY: only reachable through KERNELS, installed after detecting avx2+fma+f16c.
    unsafe { dot_q8_0_avx2(w, x) }
}

pub(super) fn dot_f16(w: &[f16], x: &[f32]) -> f32 {
    assert_eq!(w.len(), x.len());
    // SAFETY: only reachable through KERNELS tables of levels that require avx2+fma+f16c.
    unsafe { dot_f16_avx2(w, x) }
}

pub(super) fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    assert_eq!(w.len(), x.len());
    // SAFETY: only reachable through KERNELS tables of levels that require avx2+fma+f16c.
    unsafe { dot_f32_avx2(w, x) }
}

pub(super) fn axpy_f32(out: &mut [f32], a: f32, x: &[f32]) {
    assert_eq!(out.len(), x.len());
    // SAFETY: only reachable through KERNELS tables of levels that require avx2+fma+f16c.
    unsafe { axpy_f32_avx2(out, a, x) }
}

pub(super) fn axpy_f16(out: &mut [f32], a: f32, x: &[f16]) {
    assert_eq!(out.len(), x.len());
    // SAFETY: only reachable through KERNELS tables of levels that require avx2+fma+f16c.
    unsafe { axpy_f16_avx2(out, a, x) }
}

pub(super) fn attn_scores_f32(q: &[f32], keys: &[f32], stride: usize, out: &mut [f32]) {
    attn_dims(out.len(), q.len(), stride, keys.len());
    // SAFETY: only reachable through KERNELS tables of levels that require avx2+fma+f16c.
    unsafe {
        for (j, s) in out.iter_mut().enumerate() {
            *s = dot_f32_avx2(&keys[j * stride..j * stride + q.len()], q);
        }
    }
}

pub(super) fn attn_scores_f16(q: &[f32], keys: &[f16], stride: usize, out: &mut [f32]) {
    attn_dims(out.len(), q.len(), stride, keys.len());
    // SAFETY: as above.
    unsafe {
        for (j, s) in out.iter_mut().enumerate() {
            *s = dot_f16_avx2(&keys[j * stride..j * stride + q.len()], q);
        }
    }
}

pub(super) fn attn_values_f32(o: &mut [f32], p: &[f32], vals: &[f32], stride: usize) {
    attn_dims(p.len(), o.len(), stride, vals.len());
    // SAFETY: as above; the bounds were checked by `attn_dims`.
    unsafe {
        attn_values_avx2(
            o,
            p,
            vals.as_ptr(),
            stride,
            |ptr| _mm256_loadu_ps(ptr),
            |v| *v,
        )
    }
}

pub(super) fn attn_values_f16(o: &mut [f32], p: &[f32], vals: &[f16], stride: usize) {
    attn_dims(p.len(), o.len(), stride, vals.len());
    // SAFETY: as above; the bounds were checked by `attn_dims`.
    unsafe {
        attn_values_avx2(
            o,
            p,
            vals.as_ptr(),
            stride,
            |ptr| _mm256_cvtph_ps(_mm_loadu_si128(ptr.cast())),
            |v| h2f(v.to_bits()),
        )
    }
}

/// `o[d] += Σ_j p[j] · row_j[d]` with row j at `vals + j · stride`: 8 output values at a
/// time stay in a register across all keys.
///
/// # Safety
/// avx2, fma and f16c must be available, and `p.len()` rows of `o.len()` values at
/// `stride` must be readable from `vals`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attn_values_avx2<T>(
    o: &mut [f32],
    p: &[f32],
    vals: *const T,
    stride: usize,
    load8: impl Fn(*const T) -> __m256,
    one: impl Fn(&T) -> f32,
) {
    let n = o.len() / 8 * 8;
    for c in (0..n).step_by(8) {
        // SAFETY: c + 8 <= o.len(); rows j < p.len() are readable (caller).
        unsafe {
            let mut acc = _mm256_loadu_ps(o.as_ptr().add(c));
            for (j, &pj) in p.iter().enumerate() {
                acc = _mm256_fmadd_ps(_mm256_set1_ps(pj), load8(vals.add(j * stride + c)), acc);
            }
            _mm256_storeu_ps(o.as_mut_ptr().add(c), acc);
        }
    }
    for (d, od) in o.iter_mut().enumerate().skip(n) {
        for (j, &pj) in p.iter().enumerate() {
            // SAFETY: d < o.len(); rows j < p.len() are readable (caller).
            *od += pj * one(unsafe { &*vals.add(j * stride + d) });
        }
    }
}

pub(super) fn quantize_q8_0(src: &[f32], out: &mut [BlockQ8_0]) {
    assert_eq!(src.len(), out.len() * QK);
    // SAFETY: only reachable through KERNELS tables of levels that require avx2+fma+f16c.
    unsafe { quantize_q8_0_avx2(src, out) }
}

// ---------------------------------------------------------------------------------------
// Helpers.

/// f16 bits → f32 (F16C).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn h2f(h: u16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// The 32 int8 values of a Q8_0 block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load_q8(b: &BlockQ8_0) -> __m256i {
    // SAFETY: `b.qs` is 32 readable bytes; loadu has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.qs.as_ptr().cast()) }
}

/// Sign-extend 32 int8 to two vectors of 16 int16 (elements 0..16, 16..32).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn widen(v: __m256i) -> [__m256i; 2] {
    [
        _mm256_cvtepi8_epi16(_mm256_castsi256_si128(v)),
        _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(v)),
    ]
}

/// Exact Σ w·x of two widened Q8_0 blocks, as 8 partial int32 sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn idot16(w: &[__m256i; 2], x: &[__m256i; 2]) -> __m256i {
    _mm256_add_epi32(_mm256_madd_epi16(w[0], x[0]), _mm256_madd_epi16(w[1], x[1]))
}

// ---------------------------------------------------------------------------------------
// Matrix × vector.

/// Both scales of a block pair converted with one `vcvtph2ps`, multiplied, broadcast.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn scale2(a: u16, b: u16) -> __m256 {
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128((a as u32 | (b as u32) << 16) as i32));
    _mm256_broadcastss_ps(_mm_mul_ss(v, _mm_movehdup_ps(v)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn step_q8(acc: __m256, a: &BlockQ8_0, b: &BlockQ8_0) -> __m256 {
    let s = idot16(&widen(load_q8(a)), &widen(load_q8(b)));
    _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale2(a.d, b.d), acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q8_0_avx2(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    // Two named accumulators (not an indexed array, which would live in memory).
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let (wc, xc) = (w.chunks_exact(2), x.chunks_exact(2));
    let (wt, xt) = (wc.remainder(), xc.remainder());
    for (a, b) in wc.zip(xc) {
        acc0 = step_q8(acc0, &a[0], &b[0]);
        acc1 = step_q8(acc1, &a[1], &b[1]);
    }
    for (a, b) in wt.iter().zip(xt) {
        acc0 = step_q8(acc0, a, b);
    }
    hsum(_mm256_add_ps(acc0, acc1))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_f16_avx2(w: &[f16], x: &[f32]) -> f32 {
    let n = w.len() / 32 * 32;
    let mut acc = [_mm256_setzero_ps(); 4];
    for i in (0..n).step_by(32) {
        for (k, a) in acc.iter_mut().enumerate() {
            let o = i + 8 * k;
            // SAFETY: o + 8 <= n <= len of both slices; unaligned loads.
            let (wv, xv) = unsafe {
                (
                    _mm256_cvtph_ps(_mm_loadu_si128(w.as_ptr().add(o).cast())),
                    _mm256_loadu_ps(x.as_ptr().add(o)),
                )
            };
            *a = _mm256_fmadd_ps(wv, xv, *a);
        }
    }
    let mut s = hsum(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    for i in n..w.len() {
        s += h2f(w[i].to_bits()) * x[i];
    }
    s
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_f32_avx2(w: &[f32], x: &[f32]) -> f32 {
    let n = w.len() / 32 * 32;
    let mut acc = [_mm256_setzero_ps(); 4];
    for i in (0..n).step_by(32) {
        for (k, a) in acc.iter_mut().enumerate() {
            let o = i + 8 * k;
            // SAFETY: o + 8 <= n <= len of both slices; unaligned loads.
            let (wv, xv) = unsafe {
                (
                    _mm256_loadu_ps(w.as_ptr().add(o)),
                    _mm256_loadu_ps(x.as_ptr().add(o)),
                )
            };
            *a = _mm256_fmadd_ps(wv, xv, *a);
        }
    }
    let mut s = hsum(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    for i in n..w.len() {
        s += w[i] * x[i];
    }
    s
}

#[target_feature(enable = "avx2,fma,f16c")]
fn axpy_f32_avx2(out: &mut [f32], a: f32, x: &[f32]) {
    let n = out.len() / 8 * 8;
    let av = _mm256_set1_ps(a);
    for i in (0..n).step_by(8) {
        // SAFETY: i + 8 <= n <= len of both slices; unaligned loads and store.
        unsafe {
            let o = out.as_mut_ptr().add(i);
            _mm256_storeu_ps(
                o,
                _mm256_fmadd_ps(av, _mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(o)),
            );
        }
    }
    for i in n..out.len() {
        out[i] += a * x[i];
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn axpy_f16_avx2(out: &mut [f32], a: f32, x: &[f16]) {
    let n = out.len() / 8 * 8;
    let av = _mm256_set1_ps(a);
    for i in (0..n).step_by(8) {
        // SAFETY: i + 8 <= n <= len of both slices; unaligned loads and store.
        unsafe {
            let o = out.as_mut_ptr().add(i);
            let v = _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(i).cast()));
            _mm256_storeu_ps(o, _mm256_fmadd_ps(av, v, _mm256_loadu_ps(o)));
        }
    }
    for i in n..out.len() {
        out[i] += a * h2f(x[i].to_bits());
    }
}

// ---------------------------------------------------------------------------------------
// Activation quantization, bit-identical to `quant::quantize_row_q8_0`:
// d = max|x| / 127 (stored as f16, round to nearest even), id = 1/d (0 if d == 0),
// q = (x·id).round() as i8 — round half away from zero, saturating, NaN → 0.

/// Round half away from zero and saturate to [-128, 127] like `f32::round() as i8`,
/// returning integral floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn round_sat_i8(y: __m256) -> __m256 {
    // NaN → 0 (x·id is NaN when x = 0 and id = inf).
    let y = _mm256_and_ps(y, _mm256_cmp_ps::<_CMP_ORD_Q>(y, y));
    let y = _mm256_min_ps(
        _mm256_max_ps(y, _mm256_set1_ps(-128.0)),
        _mm256_set1_ps(127.0),
    );
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(y);
    let sign = _mm256_and_ps(y, _mm256_set1_ps(-0.0));
    // y - trunc(y) is exact, so this compares the true fraction with 1/2.
    let frac = _mm256_andnot_ps(_mm256_set1_ps(-0.0), _mm256_sub_ps(y, t));
    let up = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, _mm256_set1_ps(0.5));
    let one = _mm256_or_ps(_mm256_set1_ps(1.0), sign);
    _mm256_add_ps(t, _mm256_and_ps(up, one))
}

/// f32 → f16 bits, round to nearest even (as `half::f16::from_f32`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f2h(v: f32) -> u16 {
    _mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(v))) as u16
}

#[target_feature(enable = "avx2,fma,f16c")]
fn quantize_q8_0_avx2(src: &[f32], out: &mut [BlockQ8_0]) {
    let abs_mask = _mm256_set1_ps(-0.0);
    for (x, b) in src.chunks_exact(QK).zip(out.iter_mut()) {
        // SAFETY: `x` has exactly 32 floats; unaligned loads.
        let v: [__m256; 4] =
            std::array::from_fn(|k| unsafe { _mm256_loadu_ps(x.as_ptr().add(8 * k)) });
        let a: [__m256; 4] = std::array::from_fn(|k| _mm256_andnot_ps(abs_mask, v[k]));
        let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        let amax = _mm_cvtss_f32(m);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f2h(d);
        let idv = _mm256_set1_ps(id);
        let q: [__m256i; 4] =
            std::array::from_fn(|k| _mm256_cvttps_epi32(round_sat_i8(_mm256_mul_ps(v[k], idv))));
        let p = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: `b.qs` is 32 writable bytes; unaligned store.
        unsafe { _mm256_storeu_si256(b.qs.as_mut_ptr().cast(), p) };
    }
}
