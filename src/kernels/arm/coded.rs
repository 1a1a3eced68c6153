//! What the AArch64 group kernels of the coded types (`quant::kx16`) share: the codes of
//! a row quad as int8 vectors, the scales of a superblock as f32 vectors, and the float
//! update of one slot. Each level has one tile function generic over the type
//! (`tile_coded` in neon.rs, dotprod.rs, i8mm.rs).
//!
//! Codes are unsigned and at most 63, so they are valid int8 operands for `smull`, `sdot`
//! and `smmla` against the signed activations. Every weight is `S · code + B`, so each
//! 16-column half `h` of a sub-block adds `S·d_x·I_h + B·d_x·sum_h`, `I_h = Σ code·q_x`;
//! types whose halves share their scales (all but Q6_K) add the halves' integers first.

use std::arch::aarch64::*;

use super::neon::{fma_scaled, ld_s8, ld_u8, scales16};
use crate::quant::interleave::ActQ8;
use crate::quant::kx16::{
    BlockQ4_1x16, BlockQ4_Kx16, BlockQ5_0x16, BlockQ5_1x16, BlockQ5_Kx16, BlockQ6_Kx16, CodedX16,
    MAX_SLOTS,
};

/// `S` and `B` of a superblock's slots, rows `4r..4r + 4` in vector `r`. Slot `j` is
/// sub-block `j` (the halves share scales) or, for `SPLIT` types, half `j` (sub-block
/// `j / 2`), see [`slot`].
pub(super) struct Sc {
    pub s: [[float32x4_t; 4]; MAX_SLOTS],
    pub b: [[float32x4_t; 4]; MAX_SLOTS],
}

impl Sc {
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) fn new() -> Sc {
        let z = [[vdupq_n_f32(0.0); 4]; MAX_SLOTS];
        Sc { s: z, b: z }
    }
}

/// The slot of half `h` of sub-block `s` in [`Sc`].
#[inline(always)]
pub(super) fn slot<B: CodedX16>(s: usize, h: usize) -> usize {
    if B::SPLIT {
        2 * s + h
    } else {
        s
    }
}

/// A coded type with a vectorized scale decoder.
///
/// `CodedX16::scales` decodes one row and slot at a time in plain Rust: for a K-quant
/// superblock (4096 weights) that is about as much work as the integer dot products of a
/// single token, so the kernels decode the transposed fields 16 rows per vector instead.
/// The values are those of `CodedX16::scales` bit for bit (the same f32 operations).
pub(super) trait NeonCoded: CodedX16 {
    /// Fill the slots `0..SUBS` (`0..2·SUBS` for `SPLIT` types) of `sc`.
    ///
    /// # Safety
    /// The CPU must have neon.
    unsafe fn decode(&self, sc: &mut Sc);
}

/// 16 signed bytes → 16 f32, rows `4r..4r + 4` in vector `r`.
#[inline]
#[target_feature(enable = "neon")]
fn s8_f32(v: int8x16_t) -> [float32x4_t; 4] {
    let (lo, hi) = (vmovl_s8(vget_low_s8(v)), vmovl_high_s8(v));
    [
        vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))),
        vcvtq_f32_s32(vmovl_high_s16(lo)),
        vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))),
        vcvtq_f32_s32(vmovl_high_s16(hi)),
    ]
}

/// Q4_1, Q5_1: `S = d`, `B = m`.
#[inline]
#[target_feature(enable = "neon")]
fn decode_dm(d: &[u16; 16], m: &[u16; 16], sc: &mut Sc) {
    sc.s[0] = scales16(d);
    sc.b[0] = scales16(m);
}

impl NeonCoded for BlockQ4_1x16 {
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn decode(&self, sc: &mut Sc) {
        decode_dm(&self.d, &self.m, sc)
    }
}

impl NeonCoded for BlockQ5_1x16 {
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn decode(&self, sc: &mut Sc) {
        decode_dm(&self.d, &self.m, sc)
    }
}

impl NeonCoded for BlockQ5_0x16 {
    /// `S = d`, `B = −16·d`.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn decode(&self, sc: &mut Sc) {
        sc.s[0] = scales16(&self.d);
        sc.b[0] = sc.s[0].map(|s| vmulq_n_f32(s, -16.0));
    }
}

/// Q4_K, Q5_K: sub-block `j` has `S = d·sc_j`, `B = −dmin·m_j` with the 6-bit `sc_j`,
/// `m_j` unpacked as `native::k_scale_min` does, 16 rows per byte vector.
#[inline]
#[target_feature(enable = "neon")]
fn decode_k4(d: &[u16; 16], dmin: &[u16; 16], packed: &[u8; 192], sc: &mut Sc) {
    let d = scales16(d);
    let nm = scales16(dmin).map(|v| vnegq_f32(v));
    let q: [uint8x16_t; 12] = std::array::from_fn(|k| ld_u8(packed, 16 * k));
    let m63 = vdupq_n_u8(63);
    for j in 0..8 {
        let (s, m) = if j < 4 {
            (vandq_u8(q[j], m63), vandq_u8(q[j + 4], m63))
        } else {
            // Low nibble of q[j + 4], bits 4–5 from the top bits of q[j − 4] (q[j] for m).
            (
                vsliq_n_u8::<4>(q[j + 4], vshrq_n_u8::<6>(q[j - 4])),
                vsliq_n_u8::<4>(vshrq_n_u8::<4>(q[j + 4]), vshrq_n_u8::<6>(q[j])),
            )
        };
        // At most 63: as signed bytes they convert alike.
        let (s, m) = (
            s8_f32(vreinterpretq_s8_u8(s)),
            s8_f32(vreinterpretq_s8_u8(m)),
        );
        for r in 0..4 {
            sc.s[j][r] = vmulq_f32(d[r], s[r]);
            // −(dmin·m), as the reference rounds it: negation is exact.
            sc.b[j][r] = vmulq_f32(nm[r], m[r]);
        }
    }
}

impl NeonCoded for BlockQ4_Kx16 {
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn decode(&self, sc: &mut Sc) {
        decode_k4(&self.d, &self.dmin, &self.scales, sc)
    }
}

impl NeonCoded for BlockQ5_Kx16 {
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn decode(&self, sc: &mut Sc) {
        decode_k4(&self.d, &self.dmin, &self.scales, sc)
    }
}

impl NeonCoded for BlockQ6_Kx16 {
    /// Half `k` (16 values): `S = d·scales[k]`, `B = −32·S`.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn decode(&self, sc: &mut Sc) {
        let d = scales16(&self.d);
        for k in 0..16 {
            let f = s8_f32(ld_s8(&self.scales, 16 * k));
            for r in 0..4 {
                sc.s[k][r] = vmulq_f32(d[r], f[r]);
                sc.b[k][r] = vmulq_n_f32(sc.s[k][r], -32.0);
            }
        }
    }
}

/// Codes of row quad `r` (rows `4r..4r + 4`), sub-block `s`, half `h`: vector `c` is
/// chunk `4h + c`, i.e. 4 rows × codes `16h + 4c..16h + 4c + 4`, the operand layout of the
/// Q4_0 kernels. `code = nibble | high << 4`: the nibbles are those of the stored chunk
/// register `c` (low for `h = 0`, high for `h = 1`); the high bits of chunk `k = 4h + c`
/// are bit `k` of the quad's 16 bytes of the fifth-bit plane (5-bit codes) or bits
/// `2c, 2c + 1` of plane `h` (6-bit codes). Shift-and-insert puts them in place:
/// 2–3 instructions per vector (1 for 4-bit codes).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn codes_half<B: CodedX16>(sb: &B, s: usize, r: usize, h: usize) -> [int8x16_t; 4] {
    let v: [uint8x16_t; 4] = std::array::from_fn(|c| ld_u8(sb.sub_nibbles(s), 64 * c + 16 * r));
    let hb = B::HIGH_BITS as i8;
    let plane = match B::HIGH_BITS {
        0 => vdupq_n_u8(0),
        1 => ld_u8(sb.sub_high(s), 16 * r),
        _ => ld_u8(sb.sub_high(s), 64 * h + 16 * r),
    };
    // Shift counts are constants once the callers' loops are unrolled: `ushl` by a
    // constant vector becomes an immediate shift (a count of 0 disappears).
    let shl = |p: uint8x16_t, n: i8| vshlq_u8(p, vdupq_n_s8(n));
    let low = vdupq_n_u8((1 << B::HIGH_BITS) - 1);
    std::array::from_fn(|c| {
        let ci = c as i8;
        let code = match (B::HIGH_BITS, h) {
            (0, 0) => vandq_u8(v[c], vdupq_n_u8(0x0f)),
            (0, _) => vshrq_n_u8::<4>(v[c]),
            // Low nibble kept, the high bits of chunk c (at bit hb·c) inserted at bit 4.
            (_, 0) => vsliq_n_u8::<4>(v[c], vandq_u8(shl(plane, -hb * ci), low)),
            // High nibble shifted down, bits 4.. kept from the high bits moved to bit 4:
            // chunk 4 + c's are at bit 4 + c (5-bit) or 2c (6-bit, plane 1).
            _ => {
                let at = if B::HIGH_BITS == 1 { 4 + ci } else { 2 * ci };
                let hi = vandq_u8(shl(plane, 4 - at), vshlq_n_u8::<4>(low));
                vsriq_n_u8::<4>(hi, v[c])
            }
        };
        vreinterpretq_s8_u8(code)
    })
}

/// `acc += (S·d)·I + B·ds` for one slot of one token: `I` the integer sums of rows
/// `4r..4r + 4`, `d` the activation scale and `ds = d·Σq_x` over the slot's columns.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn fma_slot(
    acc: float32x4_t,
    isum: int32x4_t,
    s: float32x4_t,
    b: float32x4_t,
    d: f32,
    ds: f32,
) -> float32x4_t {
    vfmaq_n_f32(fma_scaled(acc, isum, s, d), b, ds)
}

/// [`fma_slot`] for the tokens of a tile: `acc[t] += (S·d_t)·isum[t] + B·d_t·Σx_t` with
/// slot `j`'s scales of row quad `r` and `Σx` over half `h` of `a[t]` (see [`dsum`]).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn fma_slots<B: CodedX16, const T: usize>(
    acc: &mut [float32x4_t; T],
    isum: &[int32x4_t; T],
    sc: &Sc,
    j: usize,
    r: usize,
    a: &[&ActQ8; T],
    h: usize,
) {
    for t in 0..T {
        let ds = dsum::<B>(a[t], h);
        acc[t] = fma_slot(acc[t], isum[t], sc.s[j][r], sc.b[j][r], a[t].d, ds);
    }
}

/// `d·Σq_x` over half `h` of `a` (`SPLIT` types) or over all of it (`h` ignored).
#[inline(always)]
pub(super) fn dsum<B: CodedX16>(a: &ActQ8, h: usize) -> f32 {
    let sum = if B::SPLIT { a.sums[h] as i32 } else { a.sum() };
    a.d * sum as f32
}

/// The frame of the coded tiles of the neon and dotprod levels, expanded in a tile
/// `fn<B: NeonCoded, const T: usize>(w, x, nb, t0, out)` for tokens `t0..t0 + T`: per
/// superblock `$sb` the scales are decoded into `$sc` (an [`Sc`]); per sub-block `$s`,
/// `$prep` readies the tokens' activation blocks `$pa`; per row quad `$r`, `$quad` adds the
/// quad's products with the blocks `$a` (and the prepared `$xv`) to the tokens' float
/// accumulators `$acc_r`; each token's 16 results are stored at the end. A macro for the
/// reason given at `neon::rows16_tile`.
macro_rules! coded_tile {
    (
        ($w:expr, $x:expr, $nb:expr, $t0:expr, $out:expr),
        |$pa:ident| $prep:expr,
        |$sb:ident, $s:ident, $r:ident, $a:pat, $xv:pat, $sc:ident, $acc_r:ident| $quad:expr $(,)?
    ) => {{
        use $crate::kernels::arm::coded::Sc;
        use $crate::kernels::arm::neon::{store4, token_rows};
        use $crate::quant::interleave::{ActQ8, GROUP};
        let (w, x, nb, t0, out) = ($w, $x, $nb, $t0, $out);
        let xs: [&[ActQ8]; T] = token_rows(x, nb, t0);
        let mut acc = [[::core::arch::aarch64::vdupq_n_f32(0.0); T]; 4];
        let mut sc = Sc::new();
        for (b, sb) in w.iter().enumerate() {
            // SAFETY: neon (the target features of the tile this expands in).
            unsafe { sb.decode(&mut sc) };
            for s in 0..B::SUBS {
                let blocks: [&ActQ8; T] = std::array::from_fn(|t| &xs[t][b * B::SUBS + s]);
                let xv = {
                    let $pa = &blocks;
                    $prep
                };
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let ($sb, $s, $r, $a, $xv, $sc, $acc_r) = (sb, s, r, &blocks, &xv, &sc, acc_r);
                    $quad
                }
            }
        }
        for t in 0..T {
            for (r, a) in acc.iter().enumerate() {
                store4(out, (t0 + t) * GROUP + 4 * r, a[t]);
            }
        }
    }};
}
pub(super) use coded_tile;
