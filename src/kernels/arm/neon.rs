//! Plain NEON (ARMv8.0 Advanced SIMD) kernels: `smull` + `sadalp` int8 dot products,
//! exact for every int8 value (a product fits i16, pairs are accumulated in i32).
//!
//! Every function is reachable only through [`KERNELS`] (or the tables of the higher
//! levels), which `arm::push_available` hands out only after
//! `is_aarch64_feature_detected!("neon")`.

use std::arch::aarch64::*;

use half::f16;

use super::activation::{silu_mul, softmax};
use super::coded::{coded_tile, codes_half, fma_slots, slot, NeonCoded};
use crate::kernels::simd;
use crate::kernels::Kernels;
use crate::quant::interleave::{ActQ8, BlockQ4_0x16, BlockQ8_0x16, GROUP};
use crate::quant::{BlockQ8_0, QK};

/// The neon table; the higher AArch64 levels start from it.
pub(super) const NEON: Kernels =
    crate::kernels::base_table!("neon", coded: crate::kernels::coded_table!(gemm_coded));

pub(crate) static KERNELS: Kernels = NEON;

/// Token of neon: 4-lane `q` vectors for the skeletons of `simd`.
#[derive(Clone, Copy)]
pub(super) struct Neon(());

impl Neon {
    /// # Safety
    /// The CPU must have neon.
    #[inline(always)]
    pub(super) unsafe fn new() -> Neon {
        Neon(())
    }
}

simd::impl_f32_simd!(Neon, float32x4_t, 4 {
    zero: || vdupq_n_f32(0.0),
    splat: vdupq_n_f32,
    fma: |a, b, acc| vfmaq_f32(acc, a, b),
    add: vaddq_f32,
    sub: vsubq_f32,
    mul: vmulq_f32,
    max: vmaxq_f32,
    exp: super::activation::exp4,
    reduce: vaddvq_f32,
    load: vld1q_f32,
    store: vst1q_f32,
    load_f16: |p: *const f16| h2f4(vld1_u16(p.cast())),
    h2f: h2f,
    load2_f16: |p: *const f16| {
        let (lo, hi) = h2f8(vld1q_u16(p.cast()));
        [lo, hi]
    },
});

/// `impl Q8Dot for $tok` with `$idot`, the level's exact int8 dot product of a block pair
/// (four partial int32 sums), scaled by `d_w · d_x` into four float lanes.
macro_rules! impl_q8_dot {
    ($tok:ty, $idot:path) => {
        const _: () = {
            use ::core::arch::aarch64::*;
            use $crate::kernels::arm::neon::{h2f, load_q8};
            use $crate::kernels::simd::Q8Dot;
            use $crate::quant::BlockQ8_0;

            // SAFETY (every block in this impl): a token exists only where its level's
            // features were detected (its unsafe `new`).
            impl Q8Dot for $tok {
                type Acc = float32x4_t;
                #[inline(always)]
                fn zero(self) -> float32x4_t {
                    // SAFETY: see the impl.
                    unsafe { vdupq_n_f32(0.0) }
                }
                #[inline(always)]
                fn step(self, acc: float32x4_t, w: &BlockQ8_0, x: &BlockQ8_0) -> float32x4_t {
                    // SAFETY: see the impl.
                    unsafe {
                        let s = vcvtq_f32_s32($idot(&load_q8(w), &load_q8(x)));
                        vfmaq_n_f32(acc, s, h2f(w.d) * h2f(x.d))
                    }
                }
                #[inline(always)]
                fn finish(self, a: float32x4_t, b: float32x4_t) -> f32 {
                    // SAFETY: see the impl.
                    unsafe { vaddvq_f32(vaddq_f32(a, b)) }
                }
            }
        };
    };
}
pub(super) use impl_q8_dot;

impl_q8_dot!(Neon, idot);

simd::float_kernels!("neon", Neon::new(), 2, 8);
// The converter's block encoders, compiled for 4-lane vectors.
simd::encode_kernels!("neon", Neon::new());
simd::kernel!("neon", Neon::new(), dot_q8_0,
    (w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32, |s| simd::dot_q8_0(s, w, x));

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
    super::reg_asm!(
        "dup {v:v}.4h, {h:w}",
        "fcvtl {v:v}.4s, {v:v}.4h",
        h = in(reg) h as u32,
        v = out(vreg) r
    );
    r
}

/// Four f16 → four f32.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn h2f4(h: uint16x4_t) -> float32x4_t {
    let r: float32x4_t;
    super::reg_asm!("fcvtl {r:v}.4s, {h:v}.4h", h = in(vreg) h, r = out(vreg) r);
    r
}

/// The upper four of eight f16 → four f32 (`fcvtl2`).
#[inline]
#[target_feature(enable = "neon")]
fn h2f4_high(h: uint16x8_t) -> float32x4_t {
    let r: float32x4_t;
    super::reg_asm!("fcvtl2 {r:v}.4s, {h:v}.8h", h = in(vreg) h, r = out(vreg) r);
    r
}

/// Eight f16 → two vectors of four f32 (`fcvtl`, `fcvtl2`: the low half is a register's
/// low 64 bits, no move).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn h2f8(h: uint16x8_t) -> (float32x4_t, float32x4_t) {
    (h2f4(vget_low_u16(h)), h2f4_high(h))
}

/// The 32 int8 values of a Q8_0 block (elements 0..16, 16..32).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn load_q8(b: &BlockQ8_0) -> [int8x16_t; 2] {
    // SAFETY: `b.qs` is 32 readable bytes; vld1q has no alignment requirement beyond 1.
    unsafe { [vld1q_s8(b.qs.as_ptr()), vld1q_s8(b.qs.as_ptr().add(16))] }
}

/// The 16 f16 scales of a superblock as f32, rows `4r..4r + 4` in vector `r`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn scales16(d: &[u16; GROUP]) -> [float32x4_t; 4] {
    // SAFETY: `d` is 16 readable u16.
    let (h0, h1) = unsafe { (vld1q_u16(d.as_ptr()), vld1q_u16(d.as_ptr().add(8))) };
    let ((a, b), (c, e)) = (h2f8(h0), h2f8(h1));
    [a, b, c, e]
}

/// 16 bytes of `q` from `off` (panics if out of range).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn ld_s8(q: &[i8], off: usize) -> int8x16_t {
    let s: &[i8; 16] = q[off..off + 16].try_into().unwrap();
    // SAFETY: `s` is 16 readable bytes.
    unsafe { vld1q_s8(s.as_ptr()) }
}

/// 16 bytes of `q` from `off` (panics if out of range).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn ld_u8(q: &[u8], off: usize) -> uint8x16_t {
    let s: &[u8; 16] = q[off..off + 16].try_into().unwrap();
    // SAFETY: `s` is 16 readable bytes.
    unsafe { vld1q_u8(s.as_ptr()) }
}

/// The 32 values of an activation block (elements 0..16, 16..32).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn load_act(a: &ActQ8) -> [int8x16_t; 2] {
    [ld_s8(&a.qs, 0), ld_s8(&a.qs, 16)]
}

/// `out[off..off + 4] = v` (panics if out of range).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn store4(out: &mut [f32], off: usize, v: float32x4_t) {
    let o: &mut [f32; 4] = (&mut out[off..off + 4]).try_into().unwrap();
    // SAFETY: `o` is 4 writable floats.
    unsafe { vst1q_f32(o.as_mut_ptr(), v) }
}

/// The activation rows of tokens `t0..t0 + T`, `nb` blocks each.
#[inline(always)]
pub(super) fn token_rows<const T: usize>(x: &[ActQ8], nb: usize, t0: usize) -> [&[ActQ8]; T] {
    std::array::from_fn(|t| &x[(t0 + t) * nb..][..nb])
}

/// `acc + float(isum) · (dw · d)`: the integer sums of 4 rows times their weight scales
/// `dw` and the activation scale `d`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn fma_scaled(
    acc: float32x4_t,
    isum: int32x4_t,
    dw: float32x4_t,
    d: f32,
) -> float32x4_t {
    vfmaq_f32(acc, vcvtq_f32_s32(isum), vmulq_n_f32(dw, d))
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

/// Bit-identical to `quant::quantize_act_q8_0`: `fcvtns` rounds half to even and
/// saturates (NaN → 0) exactly like `f32::round_ties_even() as i32`, and the saturating
/// narrows then clamp to i8 like `as i8`; the max uses `fmaxnm` which, like `f32::max`,
/// ignores NaN; the f16 scale goes through the same `half` conversion as the reference.
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
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        b.d = f16::from_f32(amax / 127.0).to_bits();
        let q: [int32x4_t; 8] = std::array::from_fn(|k| vcvtnq_s32_f32(vmulq_n_f32(v[k], id)));
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

// ---------------------------------------------------------------------------------------
// rows16 group kernels (matrix × vector and matrix × matrix).
//
// A q-register of one chunk holds 4 rows × 4 consecutive values; the 4 matching activation
// bytes are replicated to all four 32-bit lanes, so `smull` (low half: rows 4r, 4r + 1;
// high half: rows 4r + 2, 4r + 3) gives 8 products per half whose pairs `sadalp` folds into
// i32 lanes, two lanes per row. One `addp` at the end of a block leaves one i32 per row.
// Loops run over row quads `r` outermost within a block, so only the `T` tokens' integer
// sums of one quad are live next to the `4·T` float accumulators.

/// The 4 activation values `4c..4c + 4` of `a` in every 32-bit lane.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn dup4(a: &ActQ8, c: usize) -> int8x16_t {
    let b: [i8; 4] = a.qs[4 * c..4 * c + 4].try_into().unwrap();
    vreinterpretq_s8_s32(vdupq_n_s32(i32::from_ne_bytes(b.map(|v| v as u8))))
}

/// One i32 sum per row of a quad from its i16 partial sums: `lo` holds rows `4r, 4r + 1`
/// (four lanes each), `hi` rows `4r + 2, 4r + 3`.
#[inline]
#[target_feature(enable = "neon")]
fn row_sums16(lo: int16x8_t, hi: int16x8_t) -> int32x4_t {
    vpaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi))
}

/// The frame of the Q8_0 and Q4_0 tiles of the neon and dotprod levels, expanded in a
/// tile `fn(w, x, nb, t0, out)` for tokens `t0..t0 + T` (`T` its const parameter): per
/// block, `$prep` readies the tokens' activation blocks `$pa` for the row quads; per row
/// quad `$r` of block `$sb`, `$quad` gives each token's integer sums of rows `4r..4r + 4`
/// from the blocks `$a` and the prepared `$xv`; they are scaled by the rows' and the
/// token's scales into the float accumulators, and each token's 16 results stored at the
/// end. The arguments read as closures, but are expanded in place: a macro rather than a
/// generic function, so that each level's inner loop is compiled in its
/// `#[target_feature]` tile and is sure to be inlined there.
macro_rules! rows16_tile {
    (
        ($w:expr, $x:expr, $nb:expr, $t0:expr, $out:expr),
        |$pa:ident| $prep:expr,
        |$sb:ident, $r:ident, $a:pat_param, $xv:pat_param| $quad:expr $(,)?
    ) => {{
        use $crate::kernels::arm::neon::{fma_scaled, scales16, store4, token_rows};
        use $crate::quant::interleave::{ActQ8, GROUP};
        let (w, x, nb, t0, out) = ($w, $x, $nb, $t0, $out);
        let xs: [&[ActQ8]; T] = token_rows(x, nb, t0);
        let mut acc = [[::core::arch::aarch64::vdupq_n_f32(0.0); T]; 4];
        for (b, sb) in w.iter().enumerate() {
            let blocks: [&ActQ8; T] = std::array::from_fn(|t| &xs[t][b]);
            let xv = {
                let $pa = &blocks;
                $prep
            };
            let dw = scales16(&sb.d);
            for r in 0..4 {
                let isum: [::core::arch::aarch64::int32x4_t; T] = {
                    let ($sb, $r, $a, $xv) = (sb, r, &blocks, &xv);
                    $quad
                };
                for t in 0..T {
                    acc[r][t] = fma_scaled(acc[r][t], isum[t], dw[r], blocks[t].d);
                }
            }
        }
        // Written out: in release builds a shared store function was not inlined.
        for t in 0..T {
            for (r, a) in acc.iter().enumerate() {
                store4(out, (t0 + t) * GROUP + 4 * r, a[t]);
            }
        }
    }};
}
pub(super) use rows16_tile;

/// Tokens `t0..t0 + T` of a Q8_0 group: `out[(t0 + t) * 16 + i]`.
#[inline]
#[target_feature(enable = "neon")]
fn tile_q8<const T: usize>(w: &[BlockQ8_0x16], x: &[ActQ8], nb: usize, t0: usize, out: &mut [f32]) {
    rows16_tile!((w, x, nb, t0, out), |_a| (), |sb, r, a, _| {
        let (mut lo, mut hi) = ([vdupq_n_s32(0); T], [vdupq_n_s32(0); T]);
        for cp in 0..4 {
            let c = 2 * cp;
            let w0 = ld_s8(&sb.qs, 64 * c + 16 * r);
            let w1 = ld_s8(&sb.qs, 64 * (c + 1) + 16 * r);
            for t in 0..T {
                let (x0, x1) = (dup4(a[t], c), dup4(a[t], c + 1));
                // |w·x| ≤ 128·127 = 16256 (activations are never −128): two products
                // fit an i16 lane, then `sadalp` widens the pairs.
                let p = vmull_s8(vget_low_s8(w0), vget_low_s8(x0));
                let p = vmlal_s8(p, vget_low_s8(w1), vget_low_s8(x1));
                let q = vmlal_high_s8(vmull_high_s8(w0, x0), w1, x1);
                lo[t] = vpadalq_s16(lo[t], p);
                hi[t] = vpadalq_s16(hi[t], q);
            }
        }
        std::array::from_fn(|t| vpaddq_s32(lo[t], hi[t]))
    });
}

/// As [`tile_q8`] for Q4_0: the unsigned nibbles (0..=15) times the activations, plus
/// `−8·Σx`. A chunk register's low nibbles are chunk `c`, its high nibbles chunk `c + 4`.
#[inline]
#[target_feature(enable = "neon")]
fn tile_q4<const T: usize>(w: &[BlockQ4_0x16], x: &[ActQ8], nb: usize, t0: usize, out: &mut [f32]) {
    let m4 = vdupq_n_u8(0x0f);
    rows16_tile!((w, x, nb, t0, out), |_a| (), |sb, r, a, _| {
        // Each i16 lane gets 8 products of at most 15·128: ≤ 15360, no overflow.
        let (mut lo, mut hi) = ([vdupq_n_s16(0); T], [vdupq_n_s16(0); T]);
        for c in 0..4 {
            let v = ld_u8(&sb.qs, 64 * c + 16 * r);
            let wl = vreinterpretq_s8_u8(vandq_u8(v, m4));
            let wh = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v));
            for t in 0..T {
                let (xl, xh) = (dup4(a[t], c), dup4(a[t], c + 4));
                lo[t] = vmlal_s8(lo[t], vget_low_s8(wl), vget_low_s8(xl));
                lo[t] = vmlal_s8(lo[t], vget_low_s8(wh), vget_low_s8(xh));
                hi[t] = vmlal_high_s8(hi[t], wl, xl);
                hi[t] = vmlal_high_s8(hi[t], wh, xh);
            }
        }
        std::array::from_fn(|t| vaddq_s32(row_sums16(lo[t], hi[t]), vdupq_n_s32(-8 * a[t].sum())))
    });
}

/// `lo += w[0..8] · x[0..8]`, `hi += w[8..16] · x[8..16]` (int8 → i16 lanes) with
/// `smlal` and `smlal2`, written as `asm!`: with the intrinsics LLVM saw that 4-bit codes
/// are non-negative and rewrote each pair as `uxtl`, `uxtl2`, `sxtl` and two 16-bit `mla`.
#[inline]
#[target_feature(enable = "neon")]
fn smlal_pair(lo: int16x8_t, hi: int16x8_t, w: int8x16_t, x: int8x16_t) -> (int16x8_t, int16x8_t) {
    let (mut lo, mut hi) = (lo, hi);
    super::reg_asm!(
        "smlal {lo:v}.8h, {w:v}.8b, {x:v}.8b",
        "smlal2 {hi:v}.8h, {w:v}.16b, {x:v}.16b",
        lo = inout(vreg) lo,
        hi = inout(vreg) hi,
        w = in(vreg) w,
        x = in(vreg) x
    );
    (lo, hi)
}

/// Tokens `t0..t0 + T` of a group of coded superblocks (`quant::kx16`): as [`tile_q4`]
/// with the codes of `coded::codes_half` (0..=63) and per slot `(S·d)·I + B·d·Σx`.
/// Each i16 lane gets one product of at most 63·127 per chunk: 8 chunks fit for 4- and
/// 5-bit codes (≤ 31·127·8 = 31496), 6-bit codes widen after each half's 4 chunks
/// (≤ 32004), as do the `SPLIT` types, whose halves have scales of their own.
#[inline]
#[target_feature(enable = "neon")]
fn tile_coded<B: NeonCoded, const T: usize>(
    w: &[B],
    x: &[ActQ8],
    nb: usize,
    t0: usize,
    out: &mut [f32],
) {
    // Widen after each half.
    let sep = B::SPLIT || B::HIGH_BITS == 2;
    coded_tile!((w, x, nb, t0, out), |_a| (), |sb, s, r, a, _, sc, acc_r| {
        let mut isum = [vdupq_n_s32(0); T];
        let (mut lo, mut hi) = ([vdupq_n_s16(0); T], [vdupq_n_s16(0); T]);
        for h in 0..2 {
            let code = codes_half(sb, s, r, h);
            for (c, &wc) in code.iter().enumerate() {
                for t in 0..T {
                    let xc = dup4(a[t], 4 * h + c);
                    (lo[t], hi[t]) = smlal_pair(lo[t], hi[t], wc, xc);
                }
            }
            if !sep {
                continue;
            }
            let part: [int32x4_t; T] = std::array::from_fn(|t| row_sums16(lo[t], hi[t]));
            (lo, hi) = ([vdupq_n_s16(0); T], [vdupq_n_s16(0); T]);
            if B::SPLIT {
                fma_slots::<B, T>(acc_r, &part, sc, slot::<B>(s, h), r, a, h);
            } else {
                isum = std::array::from_fn(|t| vaddq_s32(isum[t], part[t]));
            }
        }
        if !B::SPLIT {
            if !sep {
                isum = std::array::from_fn(|t| row_sums16(lo[t], hi[t]));
            }
            fma_slots::<B, T>(acc_r, &isum, sc, s, r, a, 0);
        }
    });
}

super::group_kernels!(
    "neon",
    q8_0: [tile_q8::<4>, tile_q8::<2>, tile_q8::<1>],
    q4_0: [tile_q4::<4>, tile_q4::<2>, tile_q4::<1>],
    coded: [tile_coded::<B, 4>, tile_coded::<B, 2>, tile_coded::<B, 1>],
);
