//! Q4_1 and Q5_1 blocks (x̂ = d·q + m, q in 0..=nmax, d and m stored as f16) encoded
//! [`BATCH`] blocks at a time, one block per vector lane.
//!
//! The search is `kq_encode`'s scale-and-offset search (see that module's documentation):
//! a grid of inverse scales anchored at the block minimum, least-squares (d, m) for each
//! grid point's codes, rounds of "round the codes, re-fit (d, m)", then the nearest f16 of
//! d and m and their neighbours, each with its codes re-rounded, and one re-fit.
//!
//! Why lanes of blocks: most of that search is short sequential work per block (a 2×2
//! solve, an argmin, f16 rounding, the next round's codes), which one block at a time runs
//! on one scalar lane. Laid out transposed (element i of block j at `[i][j]`), every step
//! is the same operation on [`BATCH`] independent blocks: loops over `j` that the compiler
//! turns into one AVX-512 instruction, two AVX2 or four NEON ones, or sixteen scalar ones
//! for the reference level. Each lane performs the same IEEE operations in the same order
//! on every level (Rust contracts no multiply-add and LLVM reorders no float sum), so every
//! level writes the same bytes. Early exits become per-lane masks: a lane that stops
//! improving keeps its result while the others go on.

// Index loops over fixed-size blocks and lanes are the form the compiler vectorises here.
#![allow(clippy::needless_range_loop)]

use super::kq_encode::{fit_error, hsum, AFFINE_ROUNDS, GRID_LO, GRID_N, GRID_STEP, LANES};
use super::search::{code_byte, grid_code, round_even_small};

use super::lanes::{
    any, f16_bits_to_f32, f16_sat_bits, f16_step_bits, lane_step, mask, pick, safe_inv, Select,
    BATCH, D, F, M,
};

/// Elements per block.
const QK: usize = 32;

/// Encode rows of Q4_1 (`nmax` 15) or Q5_1 (`nmax` 31) blocks into `out` (ggml's block
/// bytes, row after row). `imp` is the importance of each column (`imp.len()` columns per
/// row, a multiple of 32) or `None`. Batches run across row ends, so that short rows
/// (SmolLM2's 576 columns are 18 blocks) fill every lane.
#[inline(always)]
pub(super) fn quantize_rows(src: &[f32], imp: Option<&[f32]>, nmax: u8, out: &mut [u8]) {
    let block_bytes = if nmax == 15 { 20 } else { 24 };
    assert!(src.len().is_multiple_of(QK) && out.len() / block_bytes * QK == src.len());
    if let Some(imp) = imp {
        assert!(
            !imp.is_empty() && imp.len().is_multiple_of(QK) && src.len().is_multiple_of(imp.len())
        );
    }
    for (b, (x, o)) in src
        .chunks(BATCH * QK)
        .zip(out.chunks_mut(BATCH * block_bytes))
        .enumerate()
    {
        let imp = imp.map(|v| (v, b * BATCH * QK % v.len()));
        encode_batch(x, imp, nmax, o);
    }
}

/// Up to [`BATCH`] blocks (`src.len() / 32` of them) into `out`; `imp`: the importance row
/// and the column of the first block.
#[inline(always)]
fn encode_batch(src: &[f32], imp: Option<(&[f32], usize)>, nmax: u8, out: &mut [u8]) {
    let n = src.len() / QK;
    let p = &prepare(src, imp, n);
    let nm = nmax as f32;
    let mom = Moments::of(&p.x, &p.w);
    let (d, m) = fit_affine(&p.x, &p.w, &mom, nm);
    let best = round_to_f16(p, &mom, d, m, nm);
    write_blocks(&best, &p.live, nmax, n, out);
}

/// A batch prepared for the search: values divided by their block's largest magnitude
/// `amax`, weights by their block's maximum (or the data-free weights), transposed.
/// Blocks that are all zero (or hold nothing finite), and lanes past the last block, are
/// not `live` and are written as all-zero bytes.
struct Prepared {
    x: [F; QK],
    w: [F; QK],
    amax: F,
    live: M,
}

#[inline(always)]
fn prepare(src: &[f32], imp: Option<(&[f32], usize)>, n: usize) -> Prepared {
    let mut x = [[0.0f32; BATCH]; QK];
    let mut w = [[0.0f32; BATCH]; QK];
    for j in 0..n {
        let s: &[f32; QK] = src[j * QK..][..QK].try_into().expect("one block");
        for i in 0..QK {
            lane_step();
            x[i][j] = s[i];
        }
        if let Some((imp, col)) = imp {
            let at = (col + j * QK) % imp.len();
            let s: &[f32; QK] = imp[at..][..QK].try_into().expect("one block");
            for i in 0..QK {
                lane_step();
                w[i][j] = s[i];
            }
        }
    }
    // Non-finite values as 0 (|v| < ∞ is false for ±∞ and NaN), the largest magnitude.
    let mut amax = [0.0f32; BATCH];
    for i in 0..QK {
        lane_step();
        for j in 0..BATCH {
            let v = x[i][j];
            x[i][j] = if v.abs() < f32::INFINITY { v } else { 0.0 };
            amax[j] = if x[i][j].abs() > amax[j] {
                x[i][j].abs()
            } else {
                amax[j]
            };
        }
    }
    let mut live = [0u32; BATCH];
    let mut div = [1.0f32; BATCH];
    for j in 0..BATCH {
        live[j] = mask(amax[j] != 0.0);
        div[j] = amax[j].select(1.0, live[j]);
    }
    for i in 0..QK {
        lane_step();
        for j in 0..BATCH {
            x[i][j] /= div[j];
        }
    }
    // Importance: negative, NaN and infinite entries as 0, divided by the block's
    // maximum; a block without positive importance gets the data-free weights.
    let mut wmax = [0.0f32; BATCH];
    for i in 0..QK {
        lane_step();
        for j in 0..BATCH {
            let v = if w[i][j] > 0.0 { w[i][j] } else { 0.0 };
            w[i][j] = if v <= f32::MAX { v } else { 0.0 };
            wmax[j] = if w[i][j] > wmax[j] { w[i][j] } else { wmax[j] };
        }
    }
    let mut sigma2 = [0.0f32; BATCH];
    for i in 0..QK {
        lane_step();
        for j in 0..BATCH {
            sigma2[j] += x[i][j] * x[i][j];
        }
    }
    for j in 0..BATCH {
        sigma2[j] /= QK as f32;
    }
    for i in 0..QK {
        lane_step();
        for j in 0..BATCH {
            let free = (sigma2[j] + x[i][j] * x[i][j]) / (sigma2[j] + 1.0);
            w[i][j] = (w[i][j] / wmax[j]).select(free, mask(wmax[j] > 0.0));
        }
    }
    Prepared { x, w, amax, live }
}

// ---------------------------------------------------------------------------------------
// Least squares

/// Each block's Σw, Σwx, Σwx².
struct Moments {
    sw: F,
    sx: F,
    sxx: F,
}

/// Weighted sums of each block's codes l: Σwl, Σwl², Σwxl.
#[derive(Clone, Copy)]
struct Sums {
    sl: F,
    sll: F,
    sxl: F,
}

impl Moments {
    /// The sums in [`LANES`] partial sums per block, added by [`hsum`] (the order
    /// `kq_encode`'s K-quant search uses too).
    #[inline(always)]
    fn of(x: &[F; QK], w: &[F; QK]) -> Moments {
        let mut sw = [[0.0f32; BATCH]; LANES];
        let mut sx = [[0.0f32; BATCH]; LANES];
        let mut sxx = [[0.0f32; BATCH]; LANES];
        for i in 0..QK {
            lane_step();
            let k = i % LANES;
            for j in 0..BATCH {
                sw[k][j] += w[i][j];
                sx[k][j] += w[i][j] * x[i][j];
                sxx[k][j] += w[i][j] * x[i][j] * x[i][j];
            }
        }
        Moments {
            sw: lane_hsum(&sw),
            sx: lane_hsum(&sx),
            sxx: lane_hsum(&sxx),
        }
    }

    /// The weighted error of [`Moments::solve`]'s fit for code sums `s`, without the fit
    /// itself (`+∞` where `solve` fails); equal to `solve`'s error up to rounding.
    #[inline(always)]
    fn error_of(&self, s: &Sums) -> D {
        let mut e = [0.0f64; BATCH];
        for j in 0..BATCH {
            let mom = [self.sw[j] as f64, self.sx[j] as f64, self.sxx[j] as f64];
            let sums = [s.sl[j] as f64, s.sll[j] as f64, s.sxl[j] as f64];
            e[j] = fit_error(mom, sums, false);
        }
        e
    }

    /// The least-squares (d, m) for codes with sums `s`, its weighted error, and whether
    /// the system had a solution (where it did not, the other values are meaningless).
    #[inline(always)]
    fn solve(&self, s: &Sums) -> (F, F, D, M) {
        let (mut d, mut m, mut e, mut ok) =
            ([0.0f32; BATCH], [0.0f32; BATCH], [0.0; BATCH], [0; BATCH]);
        for j in 0..BATCH {
            let (sw, sx, sxx) = (self.sw[j] as f64, self.sx[j] as f64, self.sxx[j] as f64);
            let (sl, sll, sxl) = (s.sl[j] as f64, s.sll[j] as f64, s.sxl[j] as f64);
            let det = sw * sll - sl * sl;
            let full = det > 1e-12 * sw * sll;
            // Every weighted code equal: the scale alone (m = 0) fits them.
            let dj = if full {
                (sw * sxl - sx * sl) / det
            } else {
                sxl / sll
            };
            let mj = if full {
                (sll * sx - sl * sxl) / det
            } else {
                0.0
            };
            let err = sxx - 2.0 * (dj * sxl + mj * sx)
                + dj * dj * sll
                + 2.0 * dj * mj * sl
                + mj * mj * sw;
            d[j] = dj as f32;
            m[j] = mj as f32;
            e[j] = if err > 0.0 { err } else { 0.0 };
            ok[j] = mask(full || sll > 0.0);
        }
        (d, m, e, ok)
    }
}

/// Per block, the sum of its [`LANES`] partial sums in [`hsum`]'s order.
#[inline(always)]
fn lane_hsum(p: &[F; LANES]) -> F {
    let mut s = [0.0f32; BATCH];
    for j in 0..BATCH {
        let mut a = [0.0f32; LANES];
        for k in 0..LANES {
            a[k] = p[k][j];
        }
        s[j] = hsum(a);
    }
    s
}

/// [`Sums`] of the codes `q` (as floats).
#[inline(always)]
fn code_sums(x: &[F; QK], w: &[F; QK], q: &[F; QK]) -> Sums {
    let mut sl = [[0.0f32; BATCH]; LANES];
    let mut sll = [[0.0f32; BATCH]; LANES];
    let mut sxl = [[0.0f32; BATCH]; LANES];
    for i in 0..QK {
        lane_step();
        let k = i % LANES;
        for j in 0..BATCH {
            let wl = w[i][j] * q[i][j];
            sl[k][j] += wl;
            sll[k][j] += wl * q[i][j];
            sxl[k][j] += wl * x[i][j];
        }
    }
    Sums {
        sl: lane_hsum(&sl),
        sll: lane_hsum(&sll),
        sxl: lane_hsum(&sxl),
    }
}

// ---------------------------------------------------------------------------------------
// The real-valued search

/// Each block's best (d, m) for x̂ = d·q + m before f16 rounding (normalised units):
/// the grid, then [`AFFINE_ROUNDS`] rounds of re-rounding and re-fitting. A degenerate
/// block (constant, or no solvable candidate) gets d = 0 and its best constant.
#[inline(always)]
fn fit_affine(x: &[F; QK], w: &[F; QK], mom: &Moments, nm: f32) -> (F, F) {
    let (mut lo, mut hi) = (x[0], x[0]);
    for i in 0..QK {
        lane_step();
        for j in 0..BATCH {
            lo[j] = if x[i][j] < lo[j] { x[i][j] } else { lo[j] };
            hi[j] = if x[i][j] > hi[j] { x[i][j] } else { hi[j] };
        }
    }
    let (mut constant, mut ir, mut noise) = ([0.0f32; BATCH], [0.0f32; BATCH], [0.0f64; BATCH]);
    let mut flat = [0u32; BATCH];
    for j in 0..BATCH {
        constant[j] = if mom.sw[j] > 0.0 {
            mom.sx[j] / mom.sw[j]
        } else {
            lo[j]
        };
        flat[j] = mask(hi[j] <= lo[j]);
        ir[j] = safe_inv(hi[j] - lo[j]);
        // A candidate must beat the best by more than rounding noise, so that ties (e.g.
        // a constant block, fitted exactly by many code levels) keep the earliest,
        // full-range encoding and equal blocks get equal scales.
        let sxx = if mom.sxx[j] > 0.0 { mom.sxx[j] } else { 0.0 };
        noise[j] = 1e-6 * sxx as f64;
    }
    // The grid: plain min/max first, then (nm + GRID_LO + GRID_STEP·k) / range. Each
    // candidate's codes are ranked by their least-squares error alone; the winner is fitted.
    let mut best_sums = Sums {
        sl: [0.0; BATCH],
        sll: [0.0; BATCH],
        sxl: [0.0; BATCH],
    };
    let mut best_err = [0.0f64; BATCH];
    for c in 0..=GRID_N {
        let mut inv = [0.0f32; BATCH];
        for j in 0..BATCH {
            inv[j] = if c == 0 {
                nm * ir[j]
            } else {
                (nm + GRID_LO + GRID_STEP * (c - 1) as f32) * ir[j]
            };
        }
        let s = grid_sums(x, w, &inv, &lo, nm);
        let e = mom.error_of(&s);
        let mut better = [mask(c == 0); BATCH];
        for j in 0..BATCH {
            better[j] |= mask(e[j] < best_err[j] - noise[j]);
        }
        best_err = pick(&better, &e, &best_err);
        best_sums = Sums {
            sl: pick(&better, &s.sl, &best_sums.sl),
            sll: pick(&better, &s.sll, &best_sums.sll),
            sxl: pick(&better, &s.sxl, &best_sums.sxl),
        };
    }
    let (mut d, mut m, mut err, solved) = mom.solve(&best_sums);
    let mut found = [0u32; BATCH];
    for j in 0..BATCH {
        found[j] = !flat[j] & mask(best_err[j] < f64::INFINITY) & solved[j];
    }
    // Rounds: codes for (d, m), then (d, m) for those codes, while the error drops.
    let mut active = found;
    let mut q = [[0.0f32; BATCH]; QK];
    for _ in 0..AFFINE_ROUNDS {
        for j in 0..BATCH {
            active[j] &= mask(d[j] > 0.0);
        }
        if !any(&active) {
            break;
        }
        let mut inv = [0.0f32; BATCH];
        for j in 0..BATCH {
            inv[j] = safe_inv(d[j]);
        }
        for i in 0..QK {
            lane_step();
            for j in 0..BATCH {
                let v = (x[i][j] - m[j]) * inv[j];
                let v = if v < 0.0 { 0.0 } else { v };
                q[i][j] = round_even_small(if v > nm { nm } else { v });
            }
        }
        let (nd, nm2, ne, ok) = mom.solve(&code_sums(x, w, &q));
        for j in 0..BATCH {
            active[j] &= ok[j] & mask(ne[j] < err[j] - noise[j]);
        }
        d = pick(&active, &nd, &d);
        m = pick(&active, &nm2, &m);
        err = pick(&active, &ne, &err);
    }
    for j in 0..BATCH {
        let keep = found[j] & mask(d[j] > 0.0);
        d[j] = d[j].select(0.0, keep);
        m[j] = m[j].select(constant[j], keep);
    }
    (d, m)
}

/// [`Sums`] of the grid codes l = round((x − lo)·inv) clamped to [0, nm] (rounded, then
/// clamped, as `search::grid_code` does).
#[inline(always)]
fn grid_sums(x: &[F; QK], w: &[F; QK], inv: &F, lo: &F, nm: f32) -> Sums {
    let (mut sl, mut sll, mut sxl) = ([0.0f32; BATCH], [0.0f32; BATCH], [0.0f32; BATCH]);
    for i in 0..QK {
        lane_step();
        for j in 0..BATCH {
            let l = grid_code(x[i][j] - lo[j], inv[j], 0.0, nm);
            let wl = w[i][j] * l;
            sl[j] += wl;
            sll[j] += wl * l;
            sxl[j] += (w[i][j] * x[i][j]) * l;
        }
    }
    Sums { sl, sll, sxl }
}

// ---------------------------------------------------------------------------------------
// f16 storage

/// The stored form of each block: f16 bits of d and m, and the codes.
struct Stored {
    d: [u32; BATCH],
    m: [u32; BATCH],
    q: [F; QK],
}

/// Store d and m as f16: the nearest f16 of each and their neighbours (nine pairs), codes
/// re-rounded for each pair; then (d, m) re-fitted to the best pair's codes and, if that
/// rounds to other pairs, their nine pairs too. The lowest error wins (first pair on
/// ties; a second-round pair must beat the first round's best).
#[inline(always)]
fn round_to_f16(p: &Prepared, mom: &Moments, mut d: F, mut m: F, nm: f32) -> Stored {
    let (x, w) = (&p.x, &p.w);
    let mut best = Stored {
        d: [0; BATCH],
        m: [0; BATCH],
        q: [[0.0; BATCH]; QK],
    };
    let mut best_err = [f32::INFINITY; BATCH];
    let mut active = p.live;
    let (mut centre_d, mut centre_m) = ([0u32; BATCH], [0u32; BATCH]);
    for round in 0..2 {
        let (mut hd, mut hm) = ([0u32; BATCH], [0u32; BATCH]);
        for j in 0..BATCH {
            hd[j] = f16_sat_bits(d[j] * p.amax[j]);
            hm[j] = f16_sat_bits(m[j] * p.amax[j]);
            if round > 0 {
                // The re-fit rounds to the same pairs: scored already.
                active[j] &= !mask(f16_eq(hd[j], centre_d[j]) && f16_eq(hm[j], centre_m[j]));
            }
        }
        if !any(&active) {
            break;
        }
        (centre_d, centre_m) = (hd, hm);
        // The three f16 values of d and of m as (bits, normalised value).
        let (mut ad, mut am) = ([[0u32; BATCH]; 3], [[0u32; BATCH]; 3]);
        let (mut nd, mut nmv) = ([[0.0f32; BATCH]; 3], [[0.0f32; BATCH]; 3]);
        for (k, step) in [0, -1, 1].into_iter().enumerate() {
            for j in 0..BATCH {
                ad[k][j] = f16_step_bits(hd[j], step);
                am[k][j] = f16_step_bits(hm[j], step);
                nd[k][j] = f16_bits_to_f32(ad[k][j]) / p.amax[j];
                nmv[k][j] = f16_bits_to_f32(am[k][j]) / p.amax[j];
            }
        }
        // The lowest-error pair (first in pair order on ties or NaN).
        let mut low = [0.0f32; BATCH];
        let (mut at_d, mut at_m) = ([0u32; BATCH], [0u32; BATCH]);
        let (mut at_inv, mut at_mv) = ([0.0f32; BATCH], [0.0f32; BATCH]);
        for c in 0..9 {
            let (dn, mn) = (&nd[c / 3], &nmv[c % 3]);
            let mut inv = [0.0f32; BATCH];
            for j in 0..BATCH {
                inv[j] = safe_inv(dn[j]);
            }
            let e = pair_error(x, w, &inv, dn, mn, nm);
            let mut better = [mask(c == 0); BATCH];
            for j in 0..BATCH {
                better[j] |= mask(e[j] < low[j] || low[j].is_nan());
            }
            low = pick(&better, &e, &low);
            at_d = pick(&better, &ad[c / 3], &at_d);
            at_m = pick(&better, &am[c % 3], &at_m);
            at_inv = pick(&better, &inv, &at_inv);
            at_mv = pick(&better, mn, &at_mv);
        }
        let mut take = [0u32; BATCH];
        for j in 0..BATCH {
            take[j] = active[j] & mask(low[j] < best_err[j]);
        }
        if any(&take) {
            for i in 0..QK {
                lane_step();
                for j in 0..BATCH {
                    let l = grid_code(x[i][j] - at_mv[j], at_inv[j], 0.0, nm);
                    best.q[i][j] = l.select(best.q[i][j], take[j]);
                }
            }
            best_err = pick(&take, &low, &best_err);
            best.d = pick(&take, &at_d, &best.d);
            best.m = pick(&take, &at_m, &best.m);
        }
        if round == 1 {
            break;
        }
        let (d2, m2, _, ok) = mom.solve(&code_sums(x, w, &best.q));
        for j in 0..BATCH {
            active[j] &= ok[j] & mask(d2[j] > 0.0);
        }
        d = pick(&active, &d2, &d);
        m = pick(&active, &m2, &m);
    }
    best
}

/// Σ w (x − (d·l + m))² with the codes l = round((x − m)·inv) clamped to [0, nm].
#[inline(always)]
fn pair_error(x: &[F; QK], w: &[F; QK], inv: &F, d: &F, m: &F, nm: f32) -> F {
    let mut e = [0.0f32; BATCH];
    for i in 0..QK {
        lane_step();
        for j in 0..BATCH {
            let l = grid_code(x[i][j] - m[j], inv[j], 0.0, nm);
            let r = x[i][j] - (d[j] * l + m[j]);
            e[j] += w[i][j] * (r * r);
        }
    }
    e
}

/// f16 equality as `half::f16`'s `==` (±0 equal; the search makes no NaN).
#[inline(always)]
fn f16_eq(a: u32, b: u32) -> bool {
    a == b || (a | b) & 0x7fff == 0
}

// ---------------------------------------------------------------------------------------
// Output

/// ggml's Q4_1 (d, m, 16 nibble bytes) or Q5_1 (d, m, qh, 16 nibble bytes) blocks for the
/// first `n` lanes; a lane that is not live is all-zero bytes.
#[inline(always)]
fn write_blocks(s: &Stored, live: &M, nmax: u8, n: usize, out: &mut [u8]) {
    let mut codes = [[0u32; BATCH]; QK];
    for i in 0..QK {
        lane_step();
        for j in 0..BATCH {
            codes[i][j] = code_byte(s.q[i][j]) as u32;
        }
    }
    // Byte k: code k in the low nibble, code k + 16 in the high one.
    let mut nibbles = [[0u32; BATCH]; QK / 2];
    for k in 0..QK / 2 {
        lane_step();
        for j in 0..BATCH {
            nibbles[k][j] = (codes[k][j] & 0x0f) | ((codes[k + 16][j] & 0x0f) << 4);
        }
    }
    let mut qh = [0u32; BATCH];
    for i in 0..QK {
        lane_step();
        for j in 0..BATCH {
            qh[j] |= ((codes[i][j] >> 4) & 1) << i;
        }
    }
    let block_bytes = if nmax == 15 { 20 } else { 24 };
    for (j, o) in out.chunks_exact_mut(block_bytes).take(n).enumerate() {
        if live[j] == 0 {
            o.fill(0);
            continue;
        }
        o[0..2].copy_from_slice(&(s.d[j] as u16).to_le_bytes());
        o[2..4].copy_from_slice(&(s.m[j] as u16).to_le_bytes());
        let at = if nmax == 15 {
            4
        } else {
            o[4..8].copy_from_slice(&qh[j].to_le_bytes());
            8
        };
        for k in 0..QK / 2 {
            o[at + k] = nibbles[k][j] as u8;
        }
    }
}
