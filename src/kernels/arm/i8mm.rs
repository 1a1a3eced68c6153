//! ARMv8.6 int8 matrix-multiply kernels: SMMLA multiplies a 2×8 int8 matrix (two weight
//! rows) by an 8×2 one (two tokens) into a 2×2 int32 tile, 32 multiply-adds per
//! instruction against SDOT's 16. Used for prompts (pairs of tokens); a single token has
//! nothing to pair with and goes to the dotprod kernel.
//! SMMLA is emitted with `asm!` (the intrinsic is not stable Rust) inside functions
//! compiled with `neon,dotprod,i8mm`.
//!
//! In the rows16 layout, zipping the 32-bit lanes of chunks `c` and `c + 1` (c even) of
//! one row quad gives two rows × 8 consecutive values per register: exactly SMMLA's 2×8
//! operand. The tokens' matching 8-value runs are paired the same way.
//!
//! Every function is reachable only through [`KERNELS`], which `arm::push_available`
//! hands out only after `is_aarch64_feature_detected!` confirmed dotprod and i8mm.

use std::arch::aarch64::*;

use super::coded::{codes_half, slot, NeonCoded, Sc};
use super::dotprod::{self, DOTPROD};
use super::neon::{ld_s8, ld_u8, load_act, scales16, store4};
use crate::kernels::Kernels;
use crate::quant::interleave::{ActQ8, BlockQ4_0x16, BlockQ8_0x16, GROUP};

/// dotprod with the SMMLA group kernels (matrix × vector stays SDOT).
pub(crate) static KERNELS: Kernels = Kernels {
    name: "i8mm",
    gemm_q8_0x16,
    gemm_q4_0x16,
    coded: crate::kernels::coded_table!(gemm_coded),
    ..DOTPROD
};

super::acc_insn!(
    /// `acc[2i + j] += Σ_k a[8i + k] · b[8j + k]` for i, j in 0..2.
    fn smmla,
    "neon,dotprod,i8mm",
    "smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b"
);

/// Interleave two 32-value blocks 8 bytes at a time: register k holds bytes 8k..8k+8 of
/// `p` then of `q`, the 2×8 operand layout of SMMLA.
#[inline]
#[target_feature(enable = "neon,dotprod,i8mm")]
fn interleave(p: [int8x16_t; 2], q: [int8x16_t; 2]) -> [int8x16_t; 4] {
    let (p0, p1) = (vreinterpretq_s64_s8(p[0]), vreinterpretq_s64_s8(p[1]));
    let (q0, q1) = (vreinterpretq_s64_s8(q[0]), vreinterpretq_s64_s8(q[1]));
    [
        vreinterpretq_s8_s64(vzip1q_s64(p0, q0)),
        vreinterpretq_s8_s64(vzip2q_s64(p0, q0)),
        vreinterpretq_s8_s64(vzip1q_s64(p1, q1)),
        vreinterpretq_s8_s64(vzip2q_s64(p1, q1)),
    ]
}

/// Two chunk registers (4 rows × 4 values each, values `v..v + 4` and `v + 4..v + 8`) as
/// two SMMLA operands: rows `4r, 4r + 1` and rows `4r + 2, 4r + 3`, 8 values each.
#[inline]
#[target_feature(enable = "neon,dotprod,i8mm")]
fn zip_rows(c0: int8x16_t, c1: int8x16_t) -> [int8x16_t; 2] {
    let (c0, c1) = (vreinterpretq_s32_s8(c0), vreinterpretq_s32_s8(c1));
    [
        vreinterpretq_s8_s32(vzip1q_s32(c0, c1)),
        vreinterpretq_s8_s32(vzip2q_s32(c0, c1)),
    ]
}

/// Per token pair `q` of a tile at block `b`: the four SMMLA activation operands
/// (register `p` = values `8p..8p + 8` of both tokens) and the scales `[d0, d1, d0, d1]`.
#[inline]
#[target_feature(enable = "neon,dotprod,i8mm")]
fn act_pairs<const P: usize>(
    xs: &[[&[ActQ8]; 2]; P],
    b: usize,
) -> [([int8x16_t; 4], float32x4_t); P] {
    std::array::from_fn(|q| {
        let (a0, a1) = (&xs[q][0][b], &xs[q][1][b]);
        let d = vzip1q_f32(vdupq_n_f32(a0.d), vdupq_n_f32(a1.d));
        (interleave(load_act(a0), load_act(a1)), d)
    })
}

/// Scale a row quad's 2×2 integer tiles and accumulate: `s[h][q]` holds rows
/// `4r + 2h, 4r + 2h + 1` × tokens `2q, 2q + 1` as `[r0t0, r0t1, r1t0, r1t1]`.
#[inline]
#[target_feature(enable = "neon,dotprod,i8mm")]
fn accumulate<const P: usize>(
    acc: &mut [[float32x4_t; P]; 2],
    s: &[[int32x4_t; P]; 2],
    dw: float32x4_t,
    dx: &[float32x4_t; P],
) {
    // [w0, w0, w1, w1] and [w2, w2, w3, w3] to match the tiles' lanes.
    let dwh = [vzip1q_f32(dw, dw), vzip2q_f32(dw, dw)];
    for h in 0..2 {
        for q in 0..P {
            let d = vmulq_f32(dwh[h], dx[q]);
            acc[h][q] = vfmaq_f32(acc[h][q], vcvtq_f32_s32(s[h][q]), d);
        }
    }
}

/// Write the float tiles of a tile of `2·P` tokens from `t0`: un-zipping the two 2×2
/// tiles of a row quad gives each token's 4 rows.
#[inline]
#[target_feature(enable = "neon,dotprod,i8mm")]
fn store_tiles<const P: usize>(acc: &[[[float32x4_t; P]; 2]; 4], t0: usize, out: &mut [f32]) {
    for (r, a) in acc.iter().enumerate() {
        for (q, (&lo, &hi)) in a[0].iter().zip(&a[1]).enumerate() {
            store4(out, (t0 + 2 * q) * GROUP + 4 * r, vuzp1q_f32(lo, hi));
            store4(out, (t0 + 2 * q + 1) * GROUP + 4 * r, vuzp2q_f32(lo, hi));
        }
    }
}

// Tiles of `P` token pairs. Within a block the loop runs over row quads `r` outermost:
// `2·P` integer tiles live next to the `8·P` float accumulators and `4·P` activation
// operands (P = 2: 28 registers plus the weights).

/// Tokens `t0..t0 + 2P` of a Q8_0 group: `out[(t0 + t) * 16 + i]`.
#[inline]
#[target_feature(enable = "neon,dotprod,i8mm")]
fn tile_q8<const P: usize>(w: &[BlockQ8_0x16], x: &[ActQ8], nb: usize, t0: usize, out: &mut [f32]) {
    let xs: [[&[ActQ8]; 2]; P] =
        std::array::from_fn(|q| std::array::from_fn(|j| &x[(t0 + 2 * q + j) * nb..][..nb]));
    let mut acc = [[[vdupq_n_f32(0.0); P]; 2]; 4];
    for (b, sb) in w.iter().enumerate() {
        let xp = act_pairs(&xs, b);
        let dx: [float32x4_t; P] = std::array::from_fn(|q| xp[q].1);
        let dw = scales16(&sb.d);
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let mut s = [[vdupq_n_s32(0); P]; 2];
            for p in 0..4 {
                // Chunks 2p and 2p + 1: values 8p..8p + 8.
                let wz = zip_rows(
                    ld_s8(&sb.qs, 128 * p + 16 * r),
                    ld_s8(&sb.qs, 128 * p + 64 + 16 * r),
                );
                for q in 0..P {
                    s[0][q] = smmla(s[0][q], wz[0], xp[q].0[p]);
                    s[1][q] = smmla(s[1][q], wz[1], xp[q].0[p]);
                }
            }
            accumulate(acc_r, &s, dw[r], &dx);
        }
    }
    store_tiles(&acc, t0, out);
}

/// As [`tile_q8`] for Q4_0: unsigned nibbles (0..=15) times the activations, the integer
/// tiles starting at `−8·Σx`. Zipping stored chunks `c, c + 1` (c = 0, 2) before splitting
/// the nibbles gives the operands of values `4c..4c + 8` (low) and `16 + 4c..` (high).
#[inline]
#[target_feature(enable = "neon,dotprod,i8mm")]
fn tile_q4<const P: usize>(w: &[BlockQ4_0x16], x: &[ActQ8], nb: usize, t0: usize, out: &mut [f32]) {
    let xs: [[&[ActQ8]; 2]; P] =
        std::array::from_fn(|q| std::array::from_fn(|j| &x[(t0 + 2 * q + j) * nb..][..nb]));
    let mut acc = [[[vdupq_n_f32(0.0); P]; 2]; 4];
    let m4 = vdupq_n_u8(0x0f);
    for (b, sb) in w.iter().enumerate() {
        let xp = act_pairs(&xs, b);
        let dx: [float32x4_t; P] = std::array::from_fn(|q| xp[q].1);
        let corr: [int32x4_t; P] = std::array::from_fn(|q| {
            let (s0, s1) = (xs[q][0][b].sum(), xs[q][1][b].sum());
            // [s0, s1, s0, s1], times −8.
            vzip1q_s32(vdupq_n_s32(-8 * s0), vdupq_n_s32(-8 * s1))
        });
        let dw = scales16(&sb.d);
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let mut s = [corr; 2];
            for pp in 0..2 {
                let c = 2 * pp;
                let v0 = vreinterpretq_s8_u8(ld_u8(&sb.qs, 64 * c + 16 * r));
                let v1 = vreinterpretq_s8_u8(ld_u8(&sb.qs, 64 * (c + 1) + 16 * r));
                let z = zip_rows(v0, v1);
                for h in 0..2 {
                    let zh = vreinterpretq_u8_s8(z[h]);
                    let lo = vreinterpretq_s8_u8(vandq_u8(zh, m4));
                    let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(zh));
                    for q in 0..P {
                        s[h][q] = smmla(s[h][q], lo, xp[q].0[pp]);
                        s[h][q] = smmla(s[h][q], hi, xp[q].0[2 + pp]);
                    }
                }
            }
            accumulate(acc_r, &s, dw[r], &dx);
        }
    }
    store_tiles(&acc, t0, out);
}

/// As [`accumulate`] for one slot of the coded types: `acc += (S·d)·I + B·ds` with
/// `ds[q] = [d0·Σx0, d1·Σx1, d0·Σx0, d1·Σx1]` over the slot's columns.
#[inline]
#[target_feature(enable = "neon,dotprod,i8mm")]
fn accumulate_coded<const P: usize>(
    acc: &mut [[float32x4_t; P]; 2],
    s: &[[int32x4_t; P]; 2],
    (sw, bw): (float32x4_t, float32x4_t),
    dx: &[float32x4_t; P],
    ds: &[float32x4_t; P],
) {
    let swh = [vzip1q_f32(sw, sw), vzip2q_f32(sw, sw)];
    let bwh = [vzip1q_f32(bw, bw), vzip2q_f32(bw, bw)];
    for h in 0..2 {
        for q in 0..P {
            let d = vmulq_f32(swh[h], dx[q]);
            let a = vfmaq_f32(acc[h][q], vcvtq_f32_s32(s[h][q]), d);
            acc[h][q] = vfmaq_f32(a, bwh[h], ds[q]);
        }
    }
}

/// Tokens `t0..t0 + 2P` of a group of coded superblocks (`quant::kx16`): as [`tile_q4`]
/// with the codes of `coded::codes_half` (0..=63). Zipping code vectors `c, c + 1` of
/// half `h` gives the operands of values `16h + 4c..16h + 4c + 8` (activation operand
/// `2h + c / 2`). `SPLIT` types (halves with scales of their own) accumulate each half.
#[inline]
#[target_feature(enable = "neon,dotprod,i8mm")]
fn tile_coded<B: NeonCoded, const P: usize>(
    w: &[B],
    x: &[ActQ8],
    nb: usize,
    t0: usize,
    out: &mut [f32],
) {
    let xs: [[&[ActQ8]; 2]; P] =
        std::array::from_fn(|q| std::array::from_fn(|j| &x[(t0 + 2 * q + j) * nb..][..nb]));
    let mut acc = [[[vdupq_n_f32(0.0); P]; 2]; 4];
    let mut sc = Sc::new();
    for (b, sb) in w.iter().enumerate() {
        // SAFETY: neon (this function's target features).
        unsafe { sb.decode(&mut sc) };
        for s in 0..B::SUBS {
            let i = b * B::SUBS + s;
            let xp = act_pairs(&xs, i);
            let dx: [float32x4_t; P] = std::array::from_fn(|q| xp[q].1);
            // [d0·Σx0, d1·Σx1, d0·Σx0, d1·Σx1] of each half (SPLIT) or of the block.
            let ds: [[float32x4_t; P]; 2] = std::array::from_fn(|h| {
                std::array::from_fn(|q| {
                    let f =
                        |a: &ActQ8| a.d * if B::SPLIT { a.sums[h] as i32 } else { a.sum() } as f32;
                    let (a0, a1) = (&xs[q][0][i], &xs[q][1][i]);
                    vzip1q_f32(vdupq_n_f32(f(a0)), vdupq_n_f32(f(a1)))
                })
            });
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let mut st = [[vdupq_n_s32(0); P]; 2];
                for (h, ds_h) in ds.iter().enumerate() {
                    let code = codes_half(sb, s, r, h);
                    for p in 0..2 {
                        let wz = zip_rows(code[2 * p], code[2 * p + 1]);
                        for q in 0..P {
                            st[0][q] = smmla(st[0][q], wz[0], xp[q].0[2 * h + p]);
                            st[1][q] = smmla(st[1][q], wz[1], xp[q].0[2 * h + p]);
                        }
                    }
                    if B::SPLIT {
                        let j = slot::<B>(s, h);
                        accumulate_coded(acc_r, &st, (sc.s[j][r], sc.b[j][r]), &dx, ds_h);
                        st = [[vdupq_n_s32(0); P]; 2];
                    }
                }
                if !B::SPLIT {
                    accumulate_coded(acc_r, &st, (sc.s[s][r], sc.b[s][r]), &dx, &ds[0]);
                }
            }
        }
    }
    store_tiles(&acc, t0, out);
}

// Tiles of 2 and 1 token pairs; a single token has no partner and takes the dotprod tile.
super::group_kernels!(
    "neon,dotprod,i8mm",
    q8_0: [tile_q8::<2>, tile_q8::<1>, dotprod::tile_q8::<1>],
    q4_0: [tile_q4::<2>, tile_q4::<1>, dotprod::tile_q4::<1>],
    coded: [tile_coded::<B, 2>, tile_coded::<B, 1>, dotprod::tile_coded::<B, 1>],
);
