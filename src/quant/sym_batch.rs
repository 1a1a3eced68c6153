//! [`encode_symmetric`]'s search (x̂ = d·q, d stored as f16) on [`BATCH`] blocks at a
//! time, one block per vector lane: the same candidates, the same arithmetic in the same
//! order per block, so the same bytes (see `affine_batch` for why lanes of blocks).
//!
//! One block at a time, the kernels score sixteen inverse scales side by side and the
//! rest of the search (the running best per sign, the fine grid's placement, the f16
//! ladder, the choice of the winner) runs on one scalar lane. Here every step works on
//! sixteen blocks, and per-block choices (which sign leads) become masks. The passes that
//! only a few blocks of a batch need run one block at a time with `search`'s own
//! functions: the second sign's fine grid and f16 scales where both signs tie (a pass for
//! the whole batch there made Q5_0 1.4× slower than one block at a time), a block without
//! any grid candidate, and blocks outside the grid's weight ratio (the exact search).

// Index loops over fixed-size blocks and lanes are the form the compiler vectorises here.
#![allow(clippy::needless_range_loop)]

use super::lanes::{
    any, f16_bits, f16_bits_to_f32, f16_step_bits, lane_step, mask, pick, Select, BATCH, F, M,
};
use super::search::{
    self, code_byte, data_free_weights, encode_symmetric, grid_code, grid_fine, GridBlock, GridHit,
    Pick, Symmetric, COARSE_PER_SIGN, F16_BELOW, FINE_POINTS, GRID_LANES, REFERENCE_LANE,
    SCORE_TIE,
};

/// Elements per block.
const QK: usize = 32;

/// A block's codes and f16 scale (as f32), or `None` (see [`encode_symmetric`]).
pub(super) type Encoded = Option<([i8; QK], f32)>;

/// [`encode_symmetric`]`(x[j], w[j], t)` for each of the first `n` blocks.
#[inline(always)]
pub(super) fn encode_symmetric_batch(
    x: &[[f32; QK]; BATCH],
    w: &[[f32; QK]; BATCH],
    n: usize,
    t: &Symmetric,
) -> [Encoded; BATCH] {
    let b = &prepare(x, w, t);
    let best = search(b, x, w, t);
    let mut out = [None; BATCH];
    for j in 0..n {
        if b.exact[j] != 0 {
            out[j] = encode_symmetric(&x[j], &w[j], t);
        }
    }
    if any(&best.found) {
        let codes = codes(b, &best.inv);
        for j in 0..n {
            if b.exact[j] == 0 && best.found[j] != 0 {
                let mut q = [0i8; QK];
                for i in 0..QK {
                    q[i] = code_byte(codes[i][j]) as i8;
                }
                out[j] = Some((q, best.d[j]));
            }
        }
    }
    out
}

/// Rows laid end to end in `src` (`weights`: one per column, its length the row length;
/// `None`: each block's [`data_free_weights`]) searched with `t`, sixteen blocks at a
/// time; `block` makes each output block from a block's search result and its values.
/// (A function item, not a closure: closures were left out of line, compiled for the
/// baseline instead of the level.)
#[inline(always)]
pub(super) fn encode_rows<B>(
    src: &[f32],
    weights: Option<&[f32]>,
    t: &Symmetric,
    out: &mut [B],
    block: impl Fn(Encoded, &[f32]) -> B,
) {
    assert_eq!(src.len(), out.len() * QK);
    for (b, out) in out.chunks_mut(BATCH).enumerate() {
        let (x, w, n) = batch_inputs(src, weights, b);
        let enc = encode_symmetric_batch(&x, &w, n, t);
        for j in 0..n {
            out[j] = block(enc[j], &x[j]);
        }
    }
}

/// Batch `b` (of [`BATCH`] blocks) of rows laid end to end in `src`, as
/// [`encode_symmetric_batch`] takes it: the blocks, their weights (`weights` holds one per
/// column and its length is the row length; `None`: each block's [`data_free_weights`])
/// and how many there are.
#[inline(always)]
fn batch_inputs(
    src: &[f32],
    weights: Option<&[f32]>,
    b: usize,
) -> ([[f32; QK]; BATCH], [[f32; QK]; BATCH], usize) {
    let src = &src[b * BATCH * QK..];
    let n = (src.len() / QK).min(BATCH);
    let (mut x, mut w) = ([[0.0f32; QK]; BATCH], [[1.0f32; QK]; BATCH]);
    for j in 0..n {
        x[j] = src[j * QK..][..QK].try_into().expect("one block");
        w[j] = match weights {
            Some(wt) => wt[(b * BATCH + j) * QK % wt.len()..][..QK]
                .try_into()
                .expect("one block"),
            None => data_free_weights(&x[j]),
        };
    }
    (x, w, n)
}

/// The batch as `search::GridBlock`s, transposed: y = x / max|x|, weights divided by their
/// maximum, w·y; llama.cpp's block (`ref_inv`, `ref_d`); the blocks to search here
/// (`grid`) and those for the exact search (`exact`).
struct Batch {
    y: [F; QK],
    w: [F; QK],
    wy: [F; QK],
    unit: F,
    lo: f32,
    hi: f32,
    ref_inv: F,
    ref_d: F,
    /// llama.cpp's scale (before f16 rounding) in normalised units.
    ref_scale: F,
    /// 1 / the largest weight, and whether the weights were all zero (then uniform).
    iw: F,
    uniform: M,
    grid: M,
    exact: M,
}

impl Batch {
    /// llama.cpp's block for block `j` (`search::encode_symmetric`'s reference).
    fn reference(&self, j: usize) -> Pick {
        Pick {
            inv: self.ref_inv[j],
            d: self.ref_d[j],
            err: f32::INFINITY,
        }
    }
}

#[inline(always)]
fn prepare(x: &[[f32; QK]; BATCH], w: &[[f32; QK]; BATCH], t: &Symmetric) -> Batch {
    let mut xt = [[0.0f32; BATCH]; QK];
    let mut wt = [[0.0f32; BATCH]; QK];
    for j in 0..BATCH {
        lane_step();
        for i in 0..QK {
            xt[i][j] = x[j][i];
            wt[i][j] = w[j][i];
        }
    }
    // The largest magnitude, the weight range and a finiteness check (NaN·0 and ±∞·0 are
    // NaN), as `encode_symmetric` takes them.
    let (mut amax, mut wmin, mut wmax, mut nan) = (
        [0.0f32; BATCH],
        [f32::INFINITY; BATCH],
        [0.0f32; BATCH],
        [0.0f32; BATCH],
    );
    for i in 0..QK {
        lane_step();
        for j in 0..BATCH {
            let a = xt[i][j].abs();
            amax[j] = if a > amax[j] { a } else { amax[j] };
            wmin[j] = if wt[i][j] < wmin[j] {
                wt[i][j]
            } else {
                wmin[j]
            };
            wmax[j] = if wt[i][j] > wmax[j] {
                wt[i][j]
            } else {
                wmax[j]
            };
            nan[j] += xt[i][j] * 0.0 + wt[i][j] * 0.0;
        }
    }
    let (neg, pos) = (t.neg_max as f32, t.pos_max as f32);
    let (mut grid, mut exact) = ([0u32; BATCH], [0u32; BATCH]);
    let (mut ia, mut iw, mut uniform) = ([0.0f32; BATCH], [0.0f32; BATCH], [0u32; BATCH]);
    for j in 0..BATCH {
        let some = mask(amax[j] != 0.0 && nan[j] == 0.0);
        // All-zero weights count as uniform.
        uniform[j] = mask(wmax[j] <= 0.0);
        wmin[j] = 1.0.select(wmin[j], uniform[j]);
        wmax[j] = 1.0.select(wmax[j], uniform[j]);
        let windowed = mask(t.weight_ratio.is_none_or(|r| wmin[j] * r >= wmax[j]));
        grid[j] = some & windowed;
        exact[j] = some & !windowed;
        ia[j] = 1.0 / amax[j];
        iw[j] = 1.0 / wmax[j];
    }
    let (mut y, mut wn, mut wy) = (
        [[0.0f32; BATCH]; QK],
        [[0.0f32; BATCH]; QK],
        [[0.0f32; BATCH]; QK],
    );
    for i in 0..QK {
        lane_step();
        for j in 0..BATCH {
            y[i][j] = xt[i][j] * ia[j];
            wn[i][j] = 1.0.select(wt[i][j], uniform[j]) * iw[j];
            wy[i][j] = wn[i][j] * y[i][j];
        }
    }
    // llama.cpp's scale: the first value of largest magnitude maps to −neg_max (to
    // +pos_max, as amax / pos_max, when the range is symmetric).
    let (mut first, mut seen) = ([0.0f32; BATCH], [0u32; BATCH]);
    for i in 0..QK {
        lane_step();
        for j in 0..BATCH {
            let hit = mask(xt[i][j].abs() == amax[j]) & !seen[j];
            first[j] = xt[i][j].select(first[j], hit);
            seen[j] |= hit;
        }
    }
    let (mut ref_inv, mut ref_d, mut ref_scale) =
        ([0.0f32; BATCH], [0.0f32; BATCH], [0.0f32; BATCH]);
    for j in 0..BATCH {
        let d_ref = if t.neg_max == t.pos_max {
            amax[j] / pos
        } else {
            first[j] / -neg
        };
        // Its codes round x / d_ref (ggml multiplies by 1/d_ref), its stored scale is f16.
        ref_inv[j] = (1.0 / d_ref) * amax[j];
        ref_d[j] = f16_bits_to_f32(f16_bits(d_ref));
        ref_scale[j] = d_ref / amax[j];
    }
    Batch {
        y,
        w: wn,
        wy,
        unit: amax,
        lo: -neg,
        hi: pos,
        ref_inv,
        ref_d,
        ref_scale,
        iw,
        uniform,
        grid,
        exact,
    }
}

/// `search::grid_scores` for one inverse scale per block: the score (Σ w y q)² / Σ w q²
/// of the codes (0 if every weighted code is 0) and the least-squares scale Σ w y q / Σ w q².
#[inline(always)]
fn score(b: &Batch, s: &F) -> (F, F) {
    let (mut lx, mut l2) = ([0.0f32; BATCH], [0.0f32; BATCH]);
    for i in 0..QK {
        lane_step();
        for j in 0..BATCH {
            let q = grid_code(b.y[i][j], s[j], b.lo, b.hi);
            lx[j] += b.wy[i][j] * q;
            l2[j] += b.w[i][j] * (q * q);
        }
    }
    let (mut score, mut scale) = ([0.0f32; BATCH], [0.0f32; BATCH]);
    for j in 0..BATCH {
        let ok = mask(l2[j] > 0.0);
        scale[j] = (lx[j] / l2[j]).select(0.0, ok);
        score[j] = (lx[j] * scale[j]).select(0.0, ok);
    }
    (score, scale)
}

/// A grid winner per block (`search::GridHit`): inverse scale, score, least-squares scale;
/// `found` where the grid had one (a score above 0).
#[derive(Clone, Copy)]
struct Hit {
    s: F,
    score: F,
    scale: F,
    found: M,
}

impl Hit {
    const NONE: Hit = Hit {
        s: [0.0; BATCH],
        score: [0.0; BATCH],
        scale: [0.0; BATCH],
        found: [0; BATCH],
    };

    /// Take candidate `s` where its score beats this hit's (the first best stays on ties;
    /// the running best starts at 0, as `search::grid_best`'s).
    #[inline(always)]
    fn offer(&mut self, s: &F, b: &Batch, live: &M) {
        let (score, scale) = self::score(b, s);
        let mut better = [0u32; BATCH];
        for j in 0..BATCH {
            better[j] = live[j] & mask(score[j] > self.score[j]);
        }
        self.s = pick(&better, s, &self.s);
        self.score = pick(&better, &score, &self.score);
        self.scale = pick(&better, &scale, &self.scale);
        for j in 0..BATCH {
            self.found[j] |= better[j];
        }
    }

    /// `m ? a : b`, lane by lane.
    #[inline(always)]
    fn pick(m: &M, a: &Hit, b: &Hit) -> Hit {
        Hit {
            s: pick(m, &a.s, &b.s),
            score: pick(m, &a.score, &b.score),
            scale: pick(m, &a.scale, &b.scale),
            found: pick(m, &a.found, &b.found),
        }
    }
}

/// Each block's best block so far (`search::Pick`): inverse scale, f16 scale, error.
struct Best {
    inv: F,
    d: F,
    err: F,
    found: M,
}

impl Best {
    /// Block `j`'s as a `search::Pick`.
    fn lane(&self, j: usize) -> Option<Pick> {
        (self.found[j] != 0).then(|| Pick {
            inv: self.inv[j],
            d: self.d[j],
            err: self.err[j],
        })
    }

    fn set(&mut self, j: usize, p: Option<Pick>) {
        if let Some(p) = p {
            (self.inv[j], self.d[j], self.err[j], self.found[j]) = (p.inv, p.d, p.err, !0);
        }
    }
}

/// `search::encode_symmetric`'s windowed search for the `grid` blocks.
#[inline(always)]
fn search(b: &Batch, x: &[[f32; QK]; BATCH], w: &[[f32; QK]; BATCH], t: &Symmetric) -> Best {
    let mut best = Best {
        inv: [0.0; BATCH],
        d: [0.0; BATCH],
        err: [f32::INFINITY; BATCH],
        found: [0; BATCH],
    };
    if !any(&b.grid) {
        return best;
    }
    // The coarse grid, per sign of the scale, in `search::grid_coarse`'s order.
    let win = t.window;
    let step = (win.hi - win.lo) / (COARSE_PER_SIGN as f32 - 1.0);
    let mut hits = [Hit::NONE; 2];
    for k in 0..COARSE_PER_SIGN {
        let p = win.lo + step * k as f32;
        hits[0].offer(&[p; BATCH], b, &b.grid);
        if t.both_signs {
            hits[1].offer(&[-p; BATCH], b, &b.grid);
        }
    }
    // The fine grid around each sign whose coarse best leads (both on a tie).
    let lead = |hits: &[Hit; 2], tie: f32| {
        let mut lead = [[0u32; BATCH]; 2];
        for j in 0..BATCH {
            let top0 = if hits[0].found[j] != 0 {
                hits[0].score[j]
            } else {
                0.0
            };
            let top1 = if hits[1].found[j] != 0 {
                hits[1].score[j]
            } else {
                0.0
            };
            // f32::max of non-negative scores, from 0.
            let top = if top1 > top0 { top1 } else { top0 };
            for h in 0..2 {
                lead[h][j] = hits[h].found[j] & mask(hits[h].score[j] >= top * tie);
            }
        }
        lead
    };
    let coarse = lead(&hits, 1.0);
    let (mut hit, first) = first_lead(&coarse, &hits);
    if any(&first) {
        fine(b, &mut hit, &first, step);
        put_first(&coarse, &hit, &mut hits);
    }
    // Where both signs lead (their codes mirror each other while no code clamps, so
    // this is common, but in few blocks of a batch), the negative sign's fine grid one
    // block at a time.
    for j in lanes(&both(&coarse)) {
        let gb = grid_block(x, w, b, j);
        let h = hits[1];
        let h = grid_fine(&gb, GridHit::coarse(h.s[j], h.score[j], h.scale[j], step));
        (hits[1].s[j], hits[1].score[j], hits[1].scale[j]) = (h.s, h.score, h.scale);
    }
    // The f16 scales around each sign within SCORE_TIE of the best after the fine grid,
    // positive first.
    let fine_lead = lead(&hits, 1.0 - SCORE_TIE);
    let (hit, first) = first_lead(&fine_lead, &hits);
    if any(&first) {
        refine(b, &hit.scale, &first, &mut best);
    }
    for j in lanes(&both(&fine_lead)) {
        let mut p = best.lane(j);
        search::refine(
            &grid_block(x, w, b, j),
            hits[1].scale[j],
            b.reference(j),
            &mut p,
        );
        best.set(j, p);
    }
    // No grid candidate (every code rounds to 0): llama.cpp's block and the f16 scales
    // around it.
    for j in 0..BATCH {
        if b.grid[j] != 0 && best.found[j] == 0 {
            let mut p = None;
            search::refine(
                &grid_block(x, w, b, j),
                b.ref_scale[j],
                b.reference(j),
                &mut p,
            );
            best.set(j, p);
        }
    }
    best
}

/// Lanes set in both masks.
#[inline(always)]
fn both(m: &[M; 2]) -> M {
    let mut o = [0u32; BATCH];
    for j in 0..BATCH {
        o[j] = m[0][j] & m[1][j];
    }
    o
}

/// The indices of the lanes set in `m`.
#[inline(always)]
fn lanes(m: &M) -> impl Iterator<Item = usize> + '_ {
    (0..BATCH).filter(|&j| m[j] != 0)
}

/// Block `j` of the batch as a `search::GridBlock` (the same values as the batch's).
#[inline(always)]
fn grid_block(x: &[[f32; QK]; BATCH], w: &[[f32; QK]; BATCH], b: &Batch, j: usize) -> GridBlock {
    const ONES: [f32; QK] = [1.0; QK];
    let w = if b.uniform[j] != 0 { &ONES } else { &w[j] };
    GridBlock::scaled(&x[j], w, b.unit[j], b.iw[j], b.lo, b.hi)
}

/// Each block's first hit that `lead` marks (the positive sign's where it leads, else
/// the negative one's), so that one pass serves every block, and the blocks that have
/// one. (Not a closure run here: closures were left out of line, compiled for the
/// baseline instead of the kernel table's level.)
#[inline(always)]
fn first_lead(lead: &[M; 2], hits: &[Hit; 2]) -> (Hit, M) {
    let mut first = [0u32; BATCH];
    for j in 0..BATCH {
        first[j] = lead[0][j] | lead[1][j];
    }
    (Hit::pick(&lead[0], &hits[0], &hits[1]), first)
}

/// Store what a pass made of [`first_lead`]'s hits back to their signs.
#[inline(always)]
fn put_first(lead: &[M; 2], hit: &Hit, hits: &mut [Hit; 2]) {
    let mut neg_first = [0u32; BATCH];
    for j in 0..BATCH {
        neg_first[j] = lead[1][j] & !lead[0][j];
    }
    hits[0] = Hit::pick(&lead[0], hit, &hits[0]);
    hits[1] = Hit::pick(&neg_first, hit, &hits[1]);
}

/// `search::grid_fine`: [`FINE_POINTS`] scales evenly inside ± one coarse step around
/// the hit; the best replaces the hit if it scores higher. Only the `m` blocks change.
#[inline(always)]
fn fine(b: &Batch, hit: &mut Hit, m: &M, step: f32) {
    let (mut below, mut fine_step) = ([0.0f32; BATCH], [0.0f32; BATCH]);
    for j in 0..BATCH {
        below[j] = hit.s[j] - step;
        let above = hit.s[j] + step;
        fine_step[j] = (above - below[j]) / (FINE_POINTS as f32 + 1.0);
    }
    let mut f = Hit::NONE;
    for k in 0..FINE_POINTS {
        let mut s = [0.0f32; BATCH];
        for j in 0..BATCH {
            s[j] = below[j] + fine_step[j] * (k as f32 + 1.0);
        }
        f.offer(&s, b, m);
    }
    let mut better = [0u32; BATCH];
    for j in 0..BATCH {
        better[j] = m[j] & f.found[j] & mask(f.score[j] > hit.score[j]);
    }
    *hit = Hit::pick(&better, &f, hit);
}

/// `search::refine` for the `m` blocks: the f16 scales around least-squares scale `scale`
/// (normalised units) and llama.cpp's block, each with its codes re-rounded; the lowest
/// error (first on ties) replaces the best if lower.
#[inline(always)]
fn refine(b: &Batch, scale: &F, m: &M, best: &mut Best) {
    let mut h = [0u32; BATCH];
    let mut low = [0.0f32; BATCH];
    for j in 0..BATCH {
        h[j] = f16_bits(scale[j] * b.unit[j]);
        low[j] = best.err[j].select(f32::INFINITY, best.found[j]);
    }
    let (mut at_inv, mut at_d, mut took) = ([0.0f32; BATCH], [0.0f32; BATCH], [0u32; BATCH]);
    for c in 0..GRID_LANES {
        let (mut ds, mut dy, mut inv) = ([0.0f32; BATCH], [0.0f32; BATCH], [0.0f32; BATCH]);
        for j in 0..BATCH {
            let iu = 1.0 / b.unit[j];
            if c == REFERENCE_LANE {
                ds[j] = b.ref_d[j];
                dy[j] = ds[j] * iu;
                inv[j] = b.ref_inv[j];
            } else {
                ds[j] = f16_bits_to_f32(f16_step_bits(h[j], c as i32 - F16_BELOW));
                dy[j] = ds[j] * iu;
                inv[j] = 1.0 / dy[j];
            }
        }
        // The symmetric error is the affine one with offset 0: y − (d·q + 0).
        let mut e = [0.0f32; BATCH];
        for i in 0..QK {
            lane_step();
            for j in 0..BATCH {
                let l = grid_code(b.y[i][j] - 0.0, inv[j], b.lo, b.hi);
                let r = b.y[i][j] - (dy[j] * l + 0.0);
                e[j] += b.w[i][j] * (r * r);
            }
        }
        // Scales that are 0 or not finite (past f16's range) are skipped.
        let mut better = [0u32; BATCH];
        for j in 0..BATCH {
            better[j] = m[j]
                & mask(
                    e[j] < low[j]
                        && dy[j] != 0.0
                        && ds[j].abs() < f32::INFINITY
                        && inv[j].abs() < f32::INFINITY,
                );
        }
        low = pick(&better, &e, &low);
        at_inv = pick(&better, &inv, &at_inv);
        at_d = pick(&better, &ds, &at_d);
        for j in 0..BATCH {
            took[j] |= better[j];
        }
    }
    best.inv = pick(&took, &at_inv, &best.inv);
    best.d = pick(&took, &at_d, &best.d);
    best.err = pick(&took, &low, &best.err);
    for j in 0..BATCH {
        best.found[j] |= took[j];
    }
}

/// The codes of each block at inverse scale `inv` (`search::grid_codes`).
#[inline(always)]
fn codes(b: &Batch, inv: &F) -> [F; QK] {
    let mut q = [[0.0f32; BATCH]; QK];
    for i in 0..QK {
        lane_step();
        for j in 0..BATCH {
            q[i][j] = grid_code(b.y[i][j] - 0.0, inv[j], b.lo, b.hi);
        }
    }
    q
}

#[cfg(test)]
mod tests {
    use super::super::search::tests::{test_blocks, test_weights};
    use super::*;

    /// The batch gives every block what `encode_symmetric` gives it alone, for each
    /// type's search: odd blocks (`test_blocks`: an outlier, all equal, a single non-zero,
    /// tiny and huge values, zeros, NaN and ±∞), weights that are uniform, random, zero
    /// in places, all zero or so uneven that the exact search runs, and partial batches.
    #[test]
    fn batch_equals_one_block_at_a_time() {
        let searches = [
            ("q4_0", super::super::q4_0::Q4_0_SEARCH),
            ("q5_0", super::super::kq_encode::Q5_0_SEARCH),
            ("q8_0", super::super::q8_0::Q8_0_SEARCH),
        ];
        let mut blocks = test_blocks(700, 5);
        blocks[3][7] = f32::NAN;
        blocks[20][0] = f32::INFINITY;
        blocks[40] = [0.0; QK];
        for (name, t) in &searches {
            for (c, chunk) in blocks.chunks(BATCH).enumerate() {
                let n = chunk.len();
                let (mut x, mut w) = ([[0.0f32; QK]; BATCH], [[0.0f32; QK]; BATCH]);
                for j in 0..n {
                    x[j] = chunk[j];
                    w[j] = match (c + j) % 5 {
                        0 => [1.0; QK],
                        1 => test_weights((c * BATCH + j) as u64),
                        2 => {
                            let mut v = test_weights(j as u64 + 99);
                            v[j % QK] = 0.0;
                            v
                        }
                        3 => [0.0; QK],
                        // Past Q4_0's weight ratio: the exact search.
                        _ => std::array::from_fn(|i| if i % 7 == 0 { 500.0 } else { 1.0 }),
                    };
                }
                let got = encode_symmetric_batch(&x, &w, n, t);
                for j in 0..n {
                    let want = encode_symmetric(&x[j], &w[j], t);
                    let same = match (got[j], want) {
                        (None, None) => true,
                        (Some((qa, da)), Some((qb, db))) => {
                            qa == qb && da.to_bits() == db.to_bits()
                        }
                        _ => false,
                    };
                    assert!(
                        same,
                        "{name}: block {}: {:?} != {:?}",
                        c * BATCH + j,
                        got[j],
                        want
                    );
                }
            }
        }
    }
}
