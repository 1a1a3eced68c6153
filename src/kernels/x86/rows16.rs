//! `rows16` group kernels for x86-64 (see `quant::interleave` for the layout).
//!
//! A weight register holds 4 consecutive values of each of 16 rows (zmm) or 8 rows (ymm);
//! the 4 activation bytes of the same columns are broadcast to every 32-bit lane, so each
//! lane accumulates its own row's dot product: after the 8 chunks of a block, lane i *is*
//! row i's integer sum. It is converted to float once per block and scaled by
//! `d_w[i] · d_x` (the 16 weight scales are one `vcvtph2ps`). A tile of `T` tokens reuses
//! every loaded (and unpacked) weight register `T` times.
//!
//! * `avx512vnni`: `vpdpbusd` (u8 × s8, four products per lane). Q8_0 weights are made
//!   unsigned by flipping the top bit (w + 128) and the accumulator starts at −128·Σx; Q4_0
//!   nibbles are unsigned already and the accumulator starts at −8·Σx.
//! * `avxvnni`: the same with 256-bit `vpdpbusd` (AVX-VNNI, no AVX-512 needed), 8 rows per
//!   register.
//!
//! The 256-bit tiles (`avxvnni`, `avx2`) hold a superblock's 16 rows in two halves of 8 and
//! take both halves in one pass, so each activation broadcast serves two products and
//! 2·`T` accumulator chains interleave. Half by half, every activation was broadcast
//! twice and each token's chain ran alone: the one-pass tiles measured 1.4× (avxvnni
//! Q8_0 and Q4_0) and 1.1–1.2× (avx2) the prompt speed on SmolLM2.
//! * `avx2` (also used by the `avx512` level, see `avx512.rs`): `vpmaddubsw` (u8 × s8 →
//!   pairs summed in i16) + `vpmaddwd` by ones. Q8_0 uses the sign trick (|w| × sign(x, w),
//!   exact because activations are never −128, so no pair exceeds 2·128·127 < 2^15);
//!   Q4_0 sums the eight chunks' pairs in i16 first (≤ 8·2·15·127 = 30480 < 2^15) and
//!   widens once per block.
//!
//! Every function here is reachable only through the kernel tables of `x86`, installed
//! after `is_x86_feature_detected!` confirmed the features each function enables.

use std::arch::x86_64::*;

use super::prefetch_ahead;
use crate::kernels::group_dims;
use crate::quant::interleave::{ActQ8, BlockQ4_0x16, BlockQ8_0x16, GROUP};

/// The 4 activation bytes of chunk `c` (columns `4c..4c+4`) as one i32.
#[inline(always)]
fn x4(a: &ActQ8, c: usize) -> i32 {
    let q = &a.qs[4 * c..4 * c + 4];
    i32::from_le_bytes([q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8])
}

/// `pub(super) fn $name(w, x, out)`: a level's table entry for one `rows16` type, covering
/// the tokens with `$tile` in tiles of up to `$max` (see `drive_tokens!`).
macro_rules! rows16_entry {
    ($name:ident, $W:ty, $max:literal, $tile:ident) => {
        pub(super) fn $name(w: &[$W], x: &[ActQ8], out: &mut [f32]) {
            // SAFETY: the entry sits only in the tables of the level `$tile` is compiled
            // for, which `x86::push_available` hands out after detecting its features.
            unsafe {
                drive_tokens!(
                    group_dims(w.len(), x.len(), out.len()),
                    $max,
                    $tile(w, x, out)
                )
            }
        }
    };
}

// ---------------------------------------------------------------------------------------
// AVX-512 VNNI.

pub(super) fn gemm_q8_0x16_vnni(w: &[BlockQ8_0x16], x: &[ActQ8], out: &mut [f32]) {
    if x.len() == w.len() {
        group_dims(w.len(), x.len(), out.len());
        // SAFETY: as below.
        unsafe { matvec_q8_vnni256(w, x, out) };
        return;
    }
    // SAFETY: only reachable through the avx512vnni table, installed after detecting
    // avx2, fma, f16c, avx512f/bw/vl and avx512vnni.
    unsafe {
        drive_tokens!(
            group_dims(w.len(), x.len(), out.len()),
            8,
            tile_q8_vnni(w, x, out)
        )
    }
}

/// One token of Q8_0 with 256-bit `vpdpbusd` (AVX-512VL), 8 rows at a time. Measured on
/// Zen 4 against matrices larger than the caches: 2–2.5× the throughput of the 512-bit
/// tile (which is memory-bound well below the read bandwidth for Q8_0 only; the 512-bit
/// Q4_0 tile is not, and several tokens are compute-bound, where 512 bits win).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn matvec_q8_vnni256(w: &[BlockQ8_0x16], x: &[ActQ8], out: &mut [f32]) {
    let flip = _mm256_set1_epi8(-128);
    let mut facc = [_mm256_setzero_ps(); 2];
    for (sb, a) in w.iter().zip(x) {
        prefetch_ahead(sb, 0, 1, 1);
        let start = _mm256_set1_epi32(-128 * a.sum());
        for (h, f) in facc.iter_mut().enumerate() {
            let (mut p, mut q) = (start, _mm256_setzero_si256());
            for c in (0..8).step_by(2) {
                // SAFETY: bytes 64c + 32h .. +32 (and 64 further) of the 512-byte `qs`.
                let (w0, w1) = unsafe {
                    (
                        _mm256_loadu_si256(sb.qs.as_ptr().add(64 * c + 32 * h).cast()),
                        _mm256_loadu_si256(sb.qs.as_ptr().add(64 * c + 64 + 32 * h).cast()),
                    )
                };
                p = _mm256_dpbusd_epi32(p, _mm256_xor_si256(w0, flip), _mm256_set1_epi32(x4(a, c)));
                q = _mm256_dpbusd_epi32(
                    q,
                    _mm256_xor_si256(w1, flip),
                    _mm256_set1_epi32(x4(a, c + 1)),
                );
            }
            let d = _mm256_mul_ps(scales8v(&sb.d, h), _mm256_set1_ps(a.d));
            *f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(p, q)), d, *f);
        }
    }
    // SAFETY: `out` holds at least 16 floats (group_dims).
    unsafe {
        _mm256_storeu_ps(out.as_mut_ptr(), facc[0]);
        _mm256_storeu_ps(out.as_mut_ptr().add(8), facc[1]);
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn scales8v(d: &[u16; GROUP], h: usize) -> __m256 {
    // SAFETY: `d[8h..8h+8]` is 16 readable bytes (h < 2); unaligned load.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(d.as_ptr().add(8 * h).cast()) })
}

rows16_entry!(gemm_q4_0x16_vnni, BlockQ4_0x16, 8, tile_q4_vnni);

/// `T` tokens × 16 rows: `facc[t] += cvt(Σ_c dpbusd(w[c], x[t][c]) + start) · d_w · d_x[t]`.
/// With one or two tokens the eight chunks go to two independent accumulator chains
/// (hiding `vpdpbusd`'s latency); with more, the tokens' chains interleave.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn vnni_block<const T: usize>(
    wv: &[__m512i; 8],
    dw: __m512,
    xs: [&ActQ8; T],
    off: i32,
    facc: &mut [__m512; T],
) {
    for (f, a) in facc.iter_mut().zip(xs) {
        let start = _mm512_set1_epi32(-off * a.sum());
        let acc = if T <= 2 {
            let (mut p, mut q) = (start, _mm512_setzero_si512());
            for c in (0..8).step_by(2) {
                p = _mm512_dpbusd_epi32(p, wv[c], _mm512_set1_epi32(x4(a, c)));
                q = _mm512_dpbusd_epi32(q, wv[c + 1], _mm512_set1_epi32(x4(a, c + 1)));
            }
            _mm512_add_epi32(p, q)
        } else {
            let mut p = start;
            for (c, wc) in wv.iter().enumerate() {
                p = _mm512_dpbusd_epi32(p, *wc, _mm512_set1_epi32(x4(a, c)));
            }
            p
        };
        let d = _mm512_mul_ps(dw, _mm512_set1_ps(a.d));
        *f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), d, *f);
    }
}

/// 64 bytes as two 32-byte loads: superblocks are 544 or 288 bytes (Q6_K's 3,360), so the
/// values of every other one start 32 bytes off a cache line, where a single 64-byte load
/// would be split across two lines (measured ~20% faster for Q8_0 with one token; the coded
/// tile's Q4_K_M decode +16%).
///
/// # Safety
/// 64 bytes at `p` must be readable, and the CPU must have the enabled features.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn load64(p: *const __m256i) -> __m512i {
    // SAFETY: the caller guarantees 64 readable bytes at `p`.
    unsafe {
        _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_loadu_si256(p)),
            _mm256_loadu_si256(p.add(1)),
        )
    }
}

/// The 16 scales of a superblock as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn scales16(d: &[u16; GROUP]) -> __m512 {
    // SAFETY: `d` is 32 readable bytes; unaligned load.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(d.as_ptr().cast()) })
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn store_tile<const T: usize>(facc: &[__m512; T], t0: usize, out: &mut [f32]) {
    for (t, f) in facc.iter().enumerate() {
        let o = &mut out[(t0 + t) * GROUP..(t0 + t + 1) * GROUP];
        // SAFETY: `o` is 16 writable floats; unaligned store.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), *f) };
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn tile_q8_vnni<const T: usize>(
    w: &[BlockQ8_0x16],
    x: &[ActQ8],
    nb: usize,
    t0: usize,
    out: &mut [f32],
) {
    let flip = _mm512_set1_epi8(-128);
    let mut facc = [_mm512_setzero_ps(); T];
    for (b, sb) in w.iter().enumerate() {
        prefetch_ahead(sb, 0, 1, T);
        // SAFETY: `sb.qs` is 512 readable bytes, chunk c at 64c; unaligned loads.
        let wv: [__m512i; 8] = std::array::from_fn(|c| unsafe {
            _mm512_xor_si512(load64(sb.qs.as_ptr().add(64 * c).cast()), flip)
        });
        let xs = std::array::from_fn(|t| &x[(t0 + t) * nb + b]);
        vnni_block::<T>(&wv, scales16(&sb.d), xs, 128, &mut facc);
    }
    store_tile::<T>(&facc, t0, out);
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn tile_q4_vnni<const T: usize>(
    w: &[BlockQ4_0x16],
    x: &[ActQ8],
    nb: usize,
    t0: usize,
    out: &mut [f32],
) {
    let m = _mm512_set1_epi8(0x0f);
    let mut facc = [_mm512_setzero_ps(); T];
    for (b, sb) in w.iter().enumerate() {
        prefetch_ahead(sb, 0, 1, T);
        // SAFETY: `sb.qs` is 256 readable bytes, chunk c at 64c; unaligned loads.
        let v: [__m512i; 4] = std::array::from_fn(|c| unsafe {
            _mm512_loadu_si512(sb.qs.as_ptr().add(64 * c).cast())
        });
        // Low nibbles are chunks 0..4, high nibbles chunks 4..8.
        let wv: [__m512i; 8] = std::array::from_fn(|c| {
            if c < 4 {
                _mm512_and_si512(v[c], m)
            } else {
                _mm512_and_si512(_mm512_srli_epi16::<4>(v[c - 4]), m)
            }
        });
        let xs = std::array::from_fn(|t| &x[(t0 + t) * nb + b]);
        vnni_block::<T>(&wv, scales16(&sb.d), xs, 8, &mut facc);
    }
    store_tile::<T>(&facc, t0, out);
}

// ---------------------------------------------------------------------------------------
// AVX-VNNI: 256-bit `vpdpbusd` without AVX-512 (Intel since Alder Lake, AMD since Zen 5),
// two halves of 8 rows per superblock as for AVX2, with the VNNI levels' arithmetic.

rows16_entry!(gemm_q8_0x16_avxvnni, BlockQ8_0x16, 4, tile_q8_avxvnni);

rows16_entry!(gemm_q4_0x16_avxvnni, BlockQ4_0x16, 4, tile_q4_avxvnni);

/// One superblock's integer sums of `T` tokens × 16 rows (two halves of 8) into the
/// float accumulators: `facc[t][h] += cvt(acc[t][h]) · d_w[8h..8h+8] · d_x[t]`.
#[inline(always)]
fn add_block<const T: usize>(
    acc: &[[__m256i; 2]; T],
    xs: &[&ActQ8; T],
    d: &[u16; GROUP],
    facc: &mut [[__m256; 2]; T],
) {
    // SAFETY: avx2, fma and f16c intrinsics; this function is only inlined into functions
    // compiled with them (the avx2 and avxvnni tiles).
    unsafe {
        let dw = [scales8(d, 0), scales8(d, 1)];
        for t in 0..T {
            let dx = _mm256_set1_ps(xs[t].d);
            for h in 0..2 {
                let s = _mm256_mul_ps(dw[h], dx);
                facc[t][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[t][h]), s, facc[t][h]);
            }
        }
    }
}

/// Q8_0 with both halves of a superblock in one pass: each activation broadcast feeds
/// the two halves' `vpdpbusd`, and the 2·`T` accumulator chains interleave.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
fn tile_q8_avxvnni<const T: usize>(
    w: &[BlockQ8_0x16],
    x: &[ActQ8],
    nb: usize,
    t0: usize,
    out: &mut [f32],
) {
    let flip = _mm256_set1_epi8(-128);
    let mut facc = [[_mm256_setzero_ps(); 2]; T];
    for (b, sb) in w.iter().enumerate() {
        prefetch_ahead(sb, 0, 1, T);
        let xs: [&ActQ8; T] = std::array::from_fn(|t| &x[(t0 + t) * nb + b]);
        let mut acc: [[__m256i; 2]; T] = std::array::from_fn(|t| {
            let s = _mm256_set1_epi32(-128 * xs[t].sum());
            [s, s]
        });
        for c in 0..8 {
            // Weights made unsigned by flipping the top bit (w + 128), as for avx512vnni:
            // chunk c of rows 0..8 (h = 0) and 8..16 (h = 1).
            // SAFETY: bytes 64c .. 64c + 64 of the 512-byte `qs` (c < 8); unaligned loads.
            let wv = unsafe {
                let p = sb.qs.as_ptr().add(64 * c);
                [
                    _mm256_xor_si256(_mm256_loadu_si256(p.cast()), flip),
                    _mm256_xor_si256(_mm256_loadu_si256(p.add(32).cast()), flip),
                ]
            };
            for (a, xt) in acc.iter_mut().zip(xs) {
                let bx = _mm256_set1_epi32(x4(xt, c));
                for h in 0..2 {
                    a[h] = _mm256_dpbusd_avx_epi32(a[h], wv[h], bx);
                }
            }
        }
        add_block::<T>(&acc, &xs, &sb.d, &mut facc);
    }
    store_half::<T>(&facc, t0, out);
}

/// Q4_0 with both halves of a superblock in one pass, as Q8_0 (each byte load holds
/// chunk c in its low nibbles and chunk c + 4 in its high ones).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
fn tile_q4_avxvnni<const T: usize>(
    w: &[BlockQ4_0x16],
    x: &[ActQ8],
    nb: usize,
    t0: usize,
    out: &mut [f32],
) {
    let m = _mm256_set1_epi8(0x0f);
    let mut facc = [[_mm256_setzero_ps(); 2]; T];
    for (b, sb) in w.iter().enumerate() {
        prefetch_ahead(sb, 0, 1, T);
        let xs: [&ActQ8; T] = std::array::from_fn(|t| &x[(t0 + t) * nb + b]);
        let mut acc: [[__m256i; 2]; T] = std::array::from_fn(|t| {
            let s = _mm256_set1_epi32(-8 * xs[t].sum());
            [s, s]
        });
        for c in 0..4 {
            // Low nibbles are chunk c, high nibbles chunk c + 4, of rows 0..8 (h = 0)
            // and 8..16 (h = 1).
            // SAFETY: bytes 64c .. 64c + 64 of the 256-byte `qs` (c < 4); unaligned loads.
            let (v0, v1) = unsafe {
                let p = sb.qs.as_ptr().add(64 * c);
                (
                    _mm256_loadu_si256(p.cast()),
                    _mm256_loadu_si256(p.add(32).cast()),
                )
            };
            let lo = [_mm256_and_si256(v0, m), _mm256_and_si256(v1, m)];
            let hi = [
                _mm256_and_si256(_mm256_srli_epi16::<4>(v0), m),
                _mm256_and_si256(_mm256_srli_epi16::<4>(v1), m),
            ];
            for (a, xt) in acc.iter_mut().zip(xs) {
                let (bl, bh) = (
                    _mm256_set1_epi32(x4(xt, c)),
                    _mm256_set1_epi32(x4(xt, c + 4)),
                );
                for h in 0..2 {
                    a[h] = _mm256_dpbusd_avx_epi32(a[h], lo[h], bl);
                    a[h] = _mm256_dpbusd_avx_epi32(a[h], hi[h], bh);
                }
            }
        }
        add_block::<T>(&acc, &xs, &sb.d, &mut facc);
    }
    store_half::<T>(&facc, t0, out);
}

// ---------------------------------------------------------------------------------------
// AVX2: two halves of 8 rows per superblock.

rows16_entry!(gemm_q8_0x16_avx2, BlockQ8_0x16, 4, tile_q8_avx2);

rows16_entry!(gemm_q4_0x16_avx2, BlockQ4_0x16, 4, tile_q4_avx2);

/// Scales of rows `8h..8h+8`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scales8(d: &[u16; GROUP], h: usize) -> __m256 {
    // SAFETY: `d[8h..8h+8]` is 16 readable bytes (h < 2); unaligned load.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(d.as_ptr().add(8 * h).cast()) })
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn store_half<const T: usize>(facc: &[[__m256; 2]; T], t0: usize, out: &mut [f32]) {
    for (t, f) in facc.iter().enumerate() {
        let o = &mut out[(t0 + t) * GROUP..(t0 + t + 1) * GROUP];
        // SAFETY: `o` is 16 writable floats; unaligned stores of 8 + 8.
        unsafe {
            _mm256_storeu_ps(o.as_mut_ptr(), f[0]);
            _mm256_storeu_ps(o.as_mut_ptr().add(8), f[1]);
        }
    }
}

// `h` picks both the rows' byte offset and the accumulator column.
#[allow(clippy::needless_range_loop)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_q8_avx2<const T: usize>(
    w: &[BlockQ8_0x16],
    x: &[ActQ8],
    nb: usize,
    t0: usize,
    out: &mut [f32],
) {
    let ones = _mm256_set1_epi16(1);
    let mut facc = [[_mm256_setzero_ps(); 2]; T];
    for (b, sb) in w.iter().enumerate() {
        prefetch_ahead(sb, 0, 1, T);
        let xs: [&ActQ8; T] = std::array::from_fn(|t| &x[(t0 + t) * nb + b]);
        // Both halves in one pass: each activation broadcast serves rows 0..8 and 8..16.
        let mut acc = [[_mm256_setzero_si256(); 2]; T];
        for c in 0..8 {
            // SAFETY: bytes 64c .. 64c + 64 of the 512-byte `qs`; unaligned loads.
            let wc = unsafe {
                let p = sb.qs.as_ptr().add(64 * c);
                [
                    _mm256_loadu_si256(p.cast()),
                    _mm256_loadu_si256(p.add(32).cast()),
                ]
            };
            let aw = [_mm256_abs_epi8(wc[0]), _mm256_abs_epi8(wc[1])];
            for (t, a) in acc.iter_mut().enumerate() {
                let bx = _mm256_set1_epi32(x4(xs[t], c));
                for h in 0..2 {
                    let sx = _mm256_sign_epi8(bx, wc[h]);
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw[h], sx), ones);
                    a[h] = _mm256_add_epi32(a[h], p);
                }
            }
        }
        add_block::<T>(&acc, &xs, &sb.d, &mut facc);
    }
    store_half::<T>(&facc, t0, out);
}

// `h` picks both the rows' byte offset and the accumulator column.
#[allow(clippy::needless_range_loop)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_q4_avx2<const T: usize>(
    w: &[BlockQ4_0x16],
    x: &[ActQ8],
    nb: usize,
    t0: usize,
    out: &mut [f32],
) {
    let ones = _mm256_set1_epi16(1);
    let m = _mm256_set1_epi8(0x0f);
    let mut facc = [[_mm256_setzero_ps(); 2]; T];
    for (b, sb) in w.iter().enumerate() {
        prefetch_ahead(sb, 0, 1, T);
        let xs: [&ActQ8; T] = std::array::from_fn(|t| &x[(t0 + t) * nb + b]);
        // Both halves in one pass: each activation broadcast serves rows 0..8 and 8..16.
        // Pair sums of all eight chunks stay in i16 (≤ 30480, see the module comment).
        let mut acc = [[_mm256_setzero_si256(); 2]; T];
        for c in 0..4 {
            // SAFETY: bytes 64c .. 64c + 64 of the 256-byte `qs`; unaligned loads.
            let v = unsafe {
                let p = sb.qs.as_ptr().add(64 * c);
                [
                    _mm256_loadu_si256(p.cast()),
                    _mm256_loadu_si256(p.add(32).cast()),
                ]
            };
            let lo = [_mm256_and_si256(v[0], m), _mm256_and_si256(v[1], m)];
            let hi = [
                _mm256_and_si256(_mm256_srli_epi16::<4>(v[0]), m),
                _mm256_and_si256(_mm256_srli_epi16::<4>(v[1]), m),
            ];
            for (t, a) in acc.iter_mut().enumerate() {
                let (bl, bh) = (
                    _mm256_set1_epi32(x4(xs[t], c)),
                    _mm256_set1_epi32(x4(xs[t], c + 4)),
                );
                for h in 0..2 {
                    let pl = _mm256_maddubs_epi16(lo[h], bl);
                    let ph = _mm256_maddubs_epi16(hi[h], bh);
                    a[h] = _mm256_add_epi16(a[h], _mm256_add_epi16(pl, ph));
                }
            }
        }
        // Widen the pair sums and take off the nibbles' offset of 8.
        let wide: [[__m256i; 2]; T] = std::array::from_fn(|t| {
            let off = _mm256_set1_epi32(8 * xs[t].sum());
            [0, 1].map(|h| _mm256_sub_epi32(_mm256_madd_epi16(acc[t][h], ones), off))
        });
        add_block::<T>(&wide, &xs, &sb.d, &mut facc);
        // The float accumulators go to memory between superblocks (8 loads and stores per
        // 64 `vpmaddubsw`). Left to itself, LLVM keeps all 2·T of them in registers and
        // spills the integer accumulators inside the chunk loop instead: on a Zen 4 with
        // AVX2 this tile ran 20–28% slower (1.1B shape, pp128). `black_box` only hides the
        // array from the optimizer; the arithmetic is unchanged.
        std::hint::black_box(&mut facc);
    }
    store_half::<T>(&facc, t0, out);
}
