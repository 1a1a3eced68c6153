//! AVX-512 kernels: level `avx512` (F/BW/VL) and level `avx512vnni` (+ VNNI `vpdpbusd`).
//!
//! * `avx512`: a whole Q8_0 block is sign-extended into one zmm of 32 × i16 and multiplied
//!   with `vpmaddwd` (exact for every int8 value, including -128 × -128).
//! * `avx512vnni`: two blocks per zmm, `vpdpbusd` (u8 × s8). Q8_0 weights are made unsigned
//!   by flipping the top bit (w + 128), and the accumulator starts at -128·Σx, so the sum is
//!   exactly Σ w·x; Q4_0 nibbles are already unsigned and the accumulator starts at -8·Σx.
//!
//! Both levels reuse the AVX2 activation quantizer (it is a tiny share of the work).
//! Every function is reachable only through [`KERNELS`] / [`KERNELS_VNNI`], which
//! `x86::push_available` hands out only after `is_x86_feature_detected!` confirmed avx2,
//! fma, f16c, avx512f, avx512bw, avx512vl (and avx512vnni for the VNNI table).

use std::arch::x86_64::*;

use half::f16;

use super::avx2::{h2f, load_q8, scale2, AVX2};
use crate::kernels::simd::{self, Q8Dot};
use crate::kernels::Kernels;
use crate::quant::BlockQ8_0;

/// avx2 with 512-bit dots, `axpy`, attention value loops and blocked prompt attention. The group kernels stay
/// AVX2's: AVX-512BW has no `vpsignb` for the Q8_0 sign trick, and CPUs with AVX-512 but
/// without VNNI (Skylake-SP) are rare by now. The activation quantizer is AVX2's too (a
/// tiny share of the work). So are the attention scores: their one horizontal reduction
/// per query and key costs more at 16 lanes than it saves (measured on SmolLM2 q8_0 at
/// depth 4096, f16 cache, AMD EPYC: 512-bit scores and values made decode 45% slower,
/// 512-bit values alone made prompts 14-30% and decode 7-10% faster).
pub(crate) static KERNELS: Kernels = Kernels {
    name: "avx512",
    dot_q8_0,
    dot_f16,
    dot_f32,
    axpy_f32,
    axpy_f16,
    attn_values_f32,
    attn_values_f16,
    attn_values_group_f32,
    attn_values_group_f16,
    attn_block_f32,
    attn_block_f16,
    attn_block_q8_0,
    encode_rows,
    ..AVX2
};

/// avx512 with the VNNI dot and group kernels.
pub(crate) static KERNELS_VNNI: Kernels = Kernels {
    name: "avx512vnni",
    dot_q8_0: dot_q8_0_vnni,
    gemm_q8_0x16: super::rows16::gemm_q8_0x16_vnni,
    gemm_q4_0x16: super::rows16::gemm_q4_0x16_vnni,
    coded: super::coded::VNNI,
    ..KERNELS
};

/// Token of avx2 + fma + f16c + avx512f/bw/vl: 16-lane `zmm` vectors.
#[derive(Clone, Copy)]
struct Avx512(());

impl Avx512 {
    /// # Safety
    /// The CPU must have avx2, fma, f16c, avx512f, avx512bw and avx512vl.
    #[inline(always)]
    unsafe fn new() -> Avx512 {
        Avx512(())
    }
}

simd::impl_f32_simd!(Avx512, __m512, 16 {
    zero: _mm512_setzero_ps,
    splat: _mm512_set1_ps,
    fma: _mm512_fmadd_ps,
    add: _mm512_add_ps,
    sub: _mm512_sub_ps,
    mul: _mm512_mul_ps,
    max: _mm512_max_ps,
    exp: super::activation::exp16,
    reduce: _mm512_reduce_add_ps,
    load: _mm512_loadu_ps,
    store: _mm512_storeu_ps,
    load_f16: |p: *const f16| _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())),
    h2f: h2f,
});

// SAFETY (every block in this impl): as for `F32Simd`.
impl Q8Dot for Avx512 {
    type Acc = __m512;
    #[inline(always)]
    fn zero(self) -> __m512 {
        // SAFETY: see the impl.
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    fn step(self, acc: __m512, w: &BlockQ8_0, x: &BlockQ8_0) -> __m512 {
        // SAFETY: see the impl.
        unsafe { step_q8(acc, w, x) }
    }
    #[inline(always)]
    fn finish(self, a: __m512, b: __m512) -> f32 {
        // SAFETY: see the impl.
        unsafe { _mm512_reduce_add_ps(_mm512_add_ps(a, b)) }
    }
}

simd::kernel!("avx2,fma,f16c,avx512f,avx512bw,avx512vl", Avx512::new(), dot_q8_0,
    (w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32, |s| simd::dot_q8_0(s, w, x));
// The float dots, `axpy` and the attention value loops, compiled for 16-lane vectors.
simd::float_value_kernels!(
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl",
    Avx512::new(),
    1,
    8
);

// The converter's block encoders, compiled for 16-lane vectors.
simd::encode_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl", Avx512::new());

fn dot_q8_0_vnni(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), x.len());
    // SAFETY: only reachable through KERNELS_VNNI, installed after detecting avx512vnni etc.
    unsafe { dot_q8_vnni(w, x) }
}

// ---------------------------------------------------------------------------------------
// avx512 (no VNNI): one block per zmm as 32 × i16.

/// Q8_0 block → 32 × i16.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
fn w16_q8(b: &BlockQ8_0) -> __m512i {
    _mm512_cvtepi8_epi16(load_q8(b))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
fn fma_scaled(acc: __m512, s: __m512i, a: u16, b: u16) -> __m512 {
    let d = _mm512_broadcastss_ps(_mm256_castps256_ps128(scale2(a, b)));
    _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), d, acc)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
fn step_q8(acc: __m512, a: &BlockQ8_0, b: &BlockQ8_0) -> __m512 {
    fma_scaled(acc, _mm512_madd_epi16(w16_q8(a), w16_q8(b)), a.d, b.d)
}

// ---------------------------------------------------------------------------------------
// avx512vnni: two blocks per zmm (the second may be a zero block at an odd tail).

/// `[a; 8] ++ [b; 8]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn pair_ps(a: f32, b: f32) -> __m512 {
    let lo = _mm512_castps_pd(_mm512_castps256_ps512(_mm256_set1_ps(a)));
    _mm512_castpd_ps(_mm512_insertf64x4::<1>(
        lo,
        _mm256_castps_pd(_mm256_set1_ps(b)),
    ))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_zextsi256_si512(lo), hi)
}

/// Blocks `b` and `b + 1` of a row (the second is all zero past the end): values and
/// the pair of scales.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn pair_q8(row: &[BlockQ8_0], b: usize) -> (__m512i, __m512) {
    let a = &row[b];
    match row.get(b + 1) {
        Some(c) => (join(load_q8(a), load_q8(c)), pair_ps(h2f(a.d), h2f(c.d))),
        None => (
            join(load_q8(a), _mm256_setzero_si256()),
            pair_ps(h2f(a.d), 0.0),
        ),
    }
}

/// Q8_0 weights → unsigned w + 128 (`vpdpbusd` wants u8 × s8).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn unsigned_q8(v: __m512i) -> __m512i {
    _mm512_xor_si512(v, _mm512_set1_epi8(-128))
}

/// Accumulator start that cancels the weight offset `off` (128 for Q8_0, 8 for Q4_0):
/// per int32 lane, -off · (sum of its four x values).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn neg_offset(x: __m512i, off: i8) -> __m512i {
    let c = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(off), x);
    _mm512_sub_epi32(_mm512_setzero_si512(), c)
}

/// One step of the VNNI matrix × vector loop: blocks `b`, `b + 1` of `w` and `x`.
macro_rules! vnni_dot {
    ($name:ident, $W:ty, $pair:ident, $unsigned:expr, $off:expr) => {
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        fn $name(w: &[$W], x: &[BlockQ8_0]) -> f32 {
            #[inline]
            #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
            fn step(acc: __m512, w: &[$W], x: &[BlockQ8_0], b: usize) -> __m512 {
                let (wv, dw) = $pair(w, b);
                let (xv, dx) = pair_q8(x, b);
                let s = _mm512_dpbusd_epi32(neg_offset(xv, $off), $unsigned(wv), xv);
                _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, dx), acc)
            }
            let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            let mut b = 0;
            while b + 4 <= w.len() {
                acc0 = step(acc0, w, x, b);
                acc1 = step(acc1, w, x, b + 2);
                b += 4;
            }
            while b < w.len() {
                acc0 = step(acc0, w, x, b);
                b += 2;
            }
            _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
        }
    };
}

vnni_dot!(dot_q8_vnni, BlockQ8_0, pair_q8, unsigned_q8, -128);
