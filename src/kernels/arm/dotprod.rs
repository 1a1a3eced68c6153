//! ARMv8.2 dot-product kernels: SDOT (four int8 products summed into each int32 lane,
//! exact). The SDOT intrinsics are not stable Rust, so it is emitted with `asm!` inside
//! functions compiled with `neon,dotprod`.
//!
//! The rows16 group kernels use SDOT by element: a weight register (4 rows × 4 values of
//! one chunk) against lane `c % 4` of a register of 16 activations, so one activation
//! load feeds four chunks and each instruction finishes 4 rows' partial sums.
//!
//! Every function is reachable only through [`KERNELS`] or the i8mm table, which
//! `arm::push_available` hands out only after `is_aarch64_feature_detected!("dotprod")`.

use std::arch::aarch64::*;

use super::coded::{coded_tile, codes_half, fma_slots, slot, NeonCoded};
use super::neon::{ld_s8, ld_u8, load_act, rows16_tile, NEON};
use crate::kernels::simd;
use crate::kernels::Kernels;
use crate::quant::interleave::{ActQ8, BlockQ4_0x16, BlockQ8_0x16};
use crate::quant::BlockQ8_0;

/// neon with the SDOT dot and group kernels; the i8mm level starts from it.
pub(super) const DOTPROD: Kernels = Kernels {
    name: "dotprod",
    dot_q8_0,
    gemm_q8_0x16,
    gemm_q4_0x16,
    coded: crate::kernels::coded_table!(gemm_coded),
    ..NEON
};

pub(crate) static KERNELS: Kernels = DOTPROD;

/// Token of neon + dotprod.
#[derive(Clone, Copy)]
struct Dotprod(());

impl Dotprod {
    /// # Safety
    /// The CPU must have neon and dotprod.
    #[inline(always)]
    unsafe fn new() -> Dotprod {
        Dotprod(())
    }
}

super::neon::impl_q8_dot!(Dotprod, idot);

simd::kernel!("neon,dotprod", Dotprod::new(), dot_q8_0,
    (w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32, |s| simd::dot_q8_0(s, w, x));

super::acc_insn!(
    /// `acc[i] += Σ_k a[4i + k] · b[4i + k]`.
    fn sdot,
    "neon,dotprod",
    "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b"
);

/// Exact Σ w·x of 32 int8 pairs, as four partial int32 sums.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn idot(w: &[int8x16_t; 2], x: &[int8x16_t; 2]) -> int32x4_t {
    sdot(sdot(vdupq_n_s32(0), w[0], x[0]), w[1], x[1])
}

super::acc_insn!(
    /// `acc[i] += Σ_k a[4i + k] · b[4L + k]`: SDOT by element (lane `L` of `b` against
    /// every 4-byte group of `a`).
    fn sdot_lane<L>,
    "neon,dotprod",
    "sdot {acc:v}.4s, {a:v}.16b, {b:v}.4b[{l}]"
);

// rows16 group kernels. Within a block the loop runs over row quads `r` (register `r` of
// every chunk: rows 4r..4r + 4) outermost, so only `T` integer accumulators are live next
// to the `4·T` float accumulators and the `2·T` activation registers (T = 4: 28, plus the
// weight chunks).
// A single token (decode) gets two integer chains per quad (even and odd chunks for Q8_0,
// low and high nibbles for Q4_0), eight in all, to cover SDOT's latency.

/// The 32 activation values of each token's block `a[t]` (elements 0..16, 16..32).
#[inline]
#[target_feature(enable = "neon")]
fn load_acts<const T: usize>(a: &[&ActQ8; T]) -> [[int8x16_t; 2]; T] {
    std::array::from_fn(|t| load_act(a[t]))
}

/// The integer sums of each token: a single token's two chains added, else the one chain.
#[inline]
#[target_feature(enable = "neon")]
fn chain_sums<const T: usize>(s: &[[int32x4_t; T]; 2]) -> [int32x4_t; T] {
    if T == 1 {
        std::array::from_fn(|t| vaddq_s32(s[0][t], s[1][t]))
    } else {
        s[0]
    }
}

/// Tokens `t0..t0 + T` of a Q8_0 group: `out[(t0 + t) * 16 + i]`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
pub(super) fn tile_q8<const T: usize>(
    w: &[BlockQ8_0x16],
    x: &[ActQ8],
    nb: usize,
    t0: usize,
    out: &mut [f32],
) {
    // Chain of the odd chunks: a second one only for a single token.
    let k = if T == 1 { 1 } else { 0 };
    // Prepared: activations 16h..16h + 16 of every token.
    let transposed = |xv: [[int8x16_t; 2]; T]| -> [[int8x16_t; T]; 2] {
        std::array::from_fn(|h| std::array::from_fn(|t| xv[t][h]))
    };
    rows16_tile!(
        (w, x, nb, t0, out),
        |a| transposed(load_acts(a)),
        |sb, r, _, xh| {
            let mut s = [[vdupq_n_s32(0); T]; 2];
            for (h, x) in xh.iter().enumerate() {
                // Chunks 4h..4h + 4 meet activations 16h..16h + 16, lane by lane.
                let wv: [int8x16_t; 4] =
                    std::array::from_fn(|l| ld_s8(&sb.qs, 64 * (4 * h + l) + 16 * r));
                for t in 0..T {
                    s[0][t] = sdot_lane::<0>(s[0][t], wv[0], x[t]);
                    s[k][t] = sdot_lane::<1>(s[k][t], wv[1], x[t]);
                    s[0][t] = sdot_lane::<2>(s[0][t], wv[2], x[t]);
                    s[k][t] = sdot_lane::<3>(s[k][t], wv[3], x[t]);
                }
            }
            chain_sums(&s)
        }
    );
}

/// As [`tile_q8`] for Q4_0: unsigned nibbles (0..=15) times the activations, the integer
/// sums starting at `−8·Σx`. Chunk register `c` gives chunk `c` (low nibbles, against
/// activations 0..16) and chunk `c + 4` (high nibbles, activations 16..32), both lane `c`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
pub(super) fn tile_q4<const T: usize>(
    w: &[BlockQ4_0x16],
    x: &[ActQ8],
    nb: usize,
    t0: usize,
    out: &mut [f32],
) {
    let m4 = vdupq_n_u8(0x0f);
    // Chain of the high nibbles: a second one only for a single token.
    let k = if T == 1 { 1 } else { 0 };
    rows16_tile!((w, x, nb, t0, out), |a| load_acts(a), |sb, r, a, xv| {
        let mut s = [[vdupq_n_s32(0); T]; 2];
        for t in 0..T {
            s[0][t] = vdupq_n_s32(-8 * a[t].sum());
        }
        let v: [uint8x16_t; 4] = std::array::from_fn(|c| ld_u8(&sb.qs, 64 * c + 16 * r));
        let lo: [int8x16_t; 4] = std::array::from_fn(|c| vreinterpretq_s8_u8(vandq_u8(v[c], m4)));
        let hi: [int8x16_t; 4] =
            std::array::from_fn(|c| vreinterpretq_s8_u8(vshrq_n_u8::<4>(v[c])));
        for t in 0..T {
            let [x0, x1] = xv[t];
            s[0][t] = sdot_lane::<0>(s[0][t], lo[0], x0);
            s[k][t] = sdot_lane::<0>(s[k][t], hi[0], x1);
            s[0][t] = sdot_lane::<1>(s[0][t], lo[1], x0);
            s[k][t] = sdot_lane::<1>(s[k][t], hi[1], x1);
            s[0][t] = sdot_lane::<2>(s[0][t], lo[2], x0);
            s[k][t] = sdot_lane::<2>(s[k][t], hi[2], x1);
            s[0][t] = sdot_lane::<3>(s[0][t], lo[3], x0);
            s[k][t] = sdot_lane::<3>(s[k][t], hi[3], x1);
        }
        chain_sums(&s)
    });
}

/// Tokens `t0..t0 + T` of a group of coded superblocks (`quant::kx16`): as [`tile_q4`]
/// with the codes of `coded::codes_half` (0..=63), half `h` (chunks `4h..4h + 4`) against
/// lanes 0..4 of activations `16h..16h + 16`, and per slot `(S·d)·I + B·d·Σx`. Each half
/// has its own chain for `SPLIT` types (whose halves have scales of their own) and for a
/// single token (latency); otherwise the halves share one.
#[inline]
#[target_feature(enable = "neon,dotprod")]
pub(super) fn tile_coded<B: NeonCoded, const T: usize>(
    w: &[B],
    x: &[ActQ8],
    nb: usize,
    t0: usize,
    out: &mut [f32],
) {
    let two = B::SPLIT || T == 1;
    coded_tile!(
        (w, x, nb, t0, out),
        |a| load_acts(a),
        |sb, s, r, a, xv, sc, acc_r| {
            let mut sums = [[vdupq_n_s32(0); T]; 2];
            for h in 0..2 {
                let k = if two { h } else { 0 };
                let wv = codes_half(sb, s, r, h);
                for t in 0..T {
                    let x = xv[t][h];
                    sums[k][t] = sdot_lane::<0>(sums[k][t], wv[0], x);
                    sums[k][t] = sdot_lane::<1>(sums[k][t], wv[1], x);
                    sums[k][t] = sdot_lane::<2>(sums[k][t], wv[2], x);
                    sums[k][t] = sdot_lane::<3>(sums[k][t], wv[3], x);
                }
                if B::SPLIT {
                    fma_slots::<B, T>(acc_r, &sums[h], sc, slot::<B>(s, h), r, a, h);
                }
            }
            if !B::SPLIT {
                // Not SPLIT, so `two` is `T == 1`, as `chain_sums` assumes.
                fma_slots::<B, T>(acc_r, &chain_sums(&sums), sc, s, r, a, 0);
            }
        }
    );
}

super::group_kernels!(
    "neon,dotprod",
    q8_0: [tile_q8::<4>, tile_q8::<2>, tile_q8::<1>],
    q4_0: [tile_q4::<4>, tile_q4::<2>, tile_q4::<1>],
    coded: [tile_coded::<B, 4>, tile_coded::<B, 2>, tile_coded::<B, 1>],
);
