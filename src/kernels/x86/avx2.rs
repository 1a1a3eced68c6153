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

use super::activation::{silu_mul, softmax};
use super::rows16::{gemm_q4_0x16_avx2 as gemm_q4_0x16, gemm_q8_0x16_avx2 as gemm_q8_0x16};
use crate::kernels::simd::{self, Q8Dot};
use crate::kernels::Kernels;
use crate::quant::{BlockQ8_0, QK};

/// The avx2 table; the higher x86 levels start from it.
pub(super) const AVX2: Kernels = crate::kernels::base_table!("avx2", coded: super::coded::AVX2);

pub(crate) static KERNELS: Kernels = AVX2;

/// avx2 with 256-bit `vpdpbusd` (AVX-VNNI: Intel since Alder Lake, AMD since Zen 5) for the
/// group kernels of every integer type, which `vpmaddubsw` holds to about a third of
/// VNNI's rate (Q8_0 needs the sign trick per token and chunk; the coded types an i16
/// widening every few chunks).
pub(crate) static KERNELS_AVXVNNI: Kernels = Kernels {
    name: "avxvnni",
    gemm_q8_0x16: super::rows16::gemm_q8_0x16_avxvnni,
    gemm_q4_0x16: super::rows16::gemm_q4_0x16_avxvnni,
    coded: super::coded::AVXVNNI,
    ..AVX2
};

/// Token of avx2 + fma + f16c: 8-lane `ymm` vectors for the skeletons of `simd`.
#[derive(Clone, Copy)]
pub(super) struct Avx2(());

impl Avx2 {
    /// # Safety
    /// The CPU must have avx2, fma and f16c.
    #[inline(always)]
    pub(super) unsafe fn new() -> Avx2 {
        Avx2(())
    }
}

simd::impl_f32_simd!(Avx2, __m256, 8 {
    zero: _mm256_setzero_ps,
    splat: _mm256_set1_ps,
    fma: _mm256_fmadd_ps,
    add: _mm256_add_ps,
    sub: _mm256_sub_ps,
    mul: _mm256_mul_ps,
    max: _mm256_max_ps,
    exp: super::activation::exp8,
    reduce: hsum,
    load: _mm256_loadu_ps,
    store: _mm256_storeu_ps,
    load_f16: |p: *const f16| _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
    h2f: h2f,
});

// SAFETY (every block in this impl): as for `F32Simd`.
impl Q8Dot for Avx2 {
    type Acc = __m256;
    #[inline(always)]
    fn zero(self) -> __m256 {
        // SAFETY: see the impl.
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    fn step(self, acc: __m256, w: &BlockQ8_0, x: &BlockQ8_0) -> __m256 {
        // SAFETY: see the impl.
        unsafe { step_q8(acc, w, x) }
    }
    #[inline(always)]
    fn finish(self, a: __m256, b: __m256) -> f32 {
        // SAFETY: see the impl.
        unsafe { hsum(_mm256_add_ps(a, b)) }
    }
}

simd::float_kernels!("avx2,fma,f16c", Avx2::new(), 1, 4);

simd::kernel!("avx2,fma,f16c", Avx2::new(), dot_q8_0,
    (w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32, |s| simd::dot_q8_0(s, w, x));

// The converter's block encoders, compiled for 8-lane vectors.
simd::encode_kernels!("avx2,fma,f16c", Avx2::new());

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

// ---------------------------------------------------------------------------------------
// Activation quantization, bit-identical to `quant::quantize_act_q8_0` (ggml's):
// d = max|x| / 127 (stored as f16, round to nearest even), id = 127 / max|x| (0 if max is 0),
// q = x·id rounded half to even, saturating, NaN → 0.

/// Round half to even and saturate to [-128, 127] like `f32::round_ties_even() as i8`,
/// returning integral floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn round_even_sat_i8(y: __m256) -> __m256 {
    // NaN → 0 (x·id is NaN when x = ±inf and id = 0).
    let y = _mm256_and_ps(y, _mm256_cmp_ps::<_CMP_ORD_Q>(y, y));
    let y = _mm256_min_ps(
        _mm256_max_ps(y, _mm256_set1_ps(-128.0)),
        _mm256_set1_ps(127.0),
    );
    _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y)
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
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        b.d = f2h(amax / 127.0);
        let idv = _mm256_set1_ps(id);
        let q: [__m256i; 4] = std::array::from_fn(|k| {
            _mm256_cvttps_epi32(round_even_sat_i8(_mm256_mul_ps(v[k], idv)))
        });
        let p = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: `b.qs` is 32 writable bytes; unaligned store.
        unsafe { _mm256_storeu_si256(b.qs.as_mut_ptr().cast(), p) };
    }
}
