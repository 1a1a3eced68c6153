//! Weighted least-squares search of a block's scale and codes, shared by the Q4_0, Q8_0
//! and Q5_0 encoders (`kq_encode`), and the kernels' reference bodies for it. A block of
//! n ≤ 32 values x with importance weights w ≥ 0 is stored as a scale d (f16) and integer
//! codes q; the objective is Σ w (x − d·q)². Code arrays are `[i8; 32]`; a shorter block
//! uses the first n entries (the rest stay 0).
//!
//! Blocks are searched on a grid of inverse scales ([`grid_coarse`], [`grid_fine`]),
//! sixteen scored at a time ([`grid_scores`]), then stored with the best nearby f16 scale
//! (`refine`). Blocks with very uneven weights are searched exactly over every code
//! vector that rounding produces (`exact_search_scored`), which is also the tests'
//! yardstick for the grid. The converter runs the same search on sixteen blocks at a
//! time, one per vector lane (`sym_batch`); one block at a time it serves the exact
//! search's blocks, the passes only a few blocks of a batch need, and the tests. The
//! K-quants' scale-and-offset sums ([`affine_sums`], [`affine_errors`]) live here too.

use super::QK;

/// A block encoding and its weighted squared error (the tests' exact yardstick).
#[cfg(test)]
#[derive(Clone, Copy)]
pub(crate) struct Candidate {
    pub q: [i8; QK],
    pub d: f32,
    pub err: f64,
}

/// Weighted squared error of codes `q` at scale `d`, in f64.
#[cfg(test)]
pub(crate) fn werr(x: &[f32], w: &[f32], q: &[i8; QK], d: f32) -> f64 {
    // Four partial sums, one per lane of four elements: one chain of dependent f64
    // additions was most of the time.
    #[inline(always)]
    fn term(v: f32, wi: f32, c: i8, d: f32) -> f64 {
        let r = (v - c as f32 * d) as f64;
        wi as f64 * r * r
    }
    let n = x.len().min(w.len());
    let (x, w, q) = (&x[..n], &w[..n], &q[..n]);
    let mut e = [0.0f64; 4];
    let (xs, ws, qs) = (x.chunks_exact(4), w.chunks_exact(4), q.chunks_exact(4));
    let tail = xs.remainder().len();
    for ((x4, w4), q4) in xs.zip(ws).zip(qs) {
        for l in 0..4 {
            e[l] += term(x4[l], w4[l], q4[l], d);
        }
    }
    for i in n - tail..n {
        e[0] += term(x[i], w[i], q[i], d);
    }
    (e[0] + e[1]) + (e[2] + e[3])
}

/// The optimal codes for a fixed scale `d` ≠ 0: round to nearest, clamped to [lo, hi].
#[cfg(test)]
pub(crate) fn round_codes(x: &[f32], d: f32, lo: f32, hi: f32) -> [i8; QK] {
    const TWO23: f32 = 8_388_608.0;
    let id = 1.0 / d;
    let mut q = [0i8; QK];
    for (c, &v) in q.iter_mut().zip(x) {
        // t.round() (half away from zero) without the libm call it is on x86-64's
        // baseline: |t| + 2²³ − 2²³ is the nearest integer (ties to even) for |t| < 2²³,
        // moved up where that was a tie rounded down. Codes are clamped to a few hundred,
        // so larger |t| (or ±∞) clamps the same either way; NaN becomes 0.
        let t = v * id;
        let a = t.abs();
        let r = (a + TWO23) - TWO23;
        let r = if a - r == 0.5 { r + 1.0 } else { r };
        *c = r.copysign(t).clamp(lo, hi) as i8;
    }
    q
}

#[cfg(test)]
/// Codes in [−neg_max, pos_max] minimising min_d Σ w (y − d·q)² over every code vector
/// that rounding y·s produces for an inverse scale s in [s_lo, s_hi] (s_lo ≥ 0), exactly.
///
/// As s grows each code round(y_i·s) (clamped) moves one step at a time, at
/// s = (k − ½)/|y_i|; between two such events the codes are fixed and the best scale for
/// them is the least-squares one, whose error is Σ w y² − (Σ w y q)² / Σ w q². Walking
/// the sorted events while updating the two sums visits every such code vector in
/// O(m log m) for m events. Over s in [0, ∞) this finds the global optimum for d > 0
/// (for its own scale the optimal codes are the rounded ones); a narrower window is
/// exact within the window. `None` if no code vector in the window is non-zero.
/// `y.len()` ≤ 32, and the window must produce at most 512 events (e.g. 32 values with
/// at most 16 code steps each).
pub(crate) fn exact_search(
    y: &[f32],
    w: &[f32],
    s_lo: f32,
    s_hi: f32,
    neg_max: u32,
    pos_max: u32,
) -> Option<[i8; QK]> {
    exact_search_scored(y, w, s_lo, s_hi, neg_max, pos_max).map(|(q, _)| q)
}

/// Most events one search may generate (32 values with at most 16 code steps each).
const MAX_EVENTS: usize = QK * 16;

thread_local! {
    /// [`exact_search_scored`]'s event buffer, kept between calls (no 4 KiB memset per
    /// block).
    static EVENTS: std::cell::RefCell<[u64; MAX_EVENTS]> =
        const { std::cell::RefCell::new([0; MAX_EVENTS]) };
}

/// [`exact_search`] and the score (Σ w y q)² / Σ w q² of the codes it returns: their
/// least-squares error is Σ w y² minus the score.
pub(crate) fn exact_search_scored(
    y: &[f32],
    w: &[f32],
    s_lo: f32,
    s_hi: f32,
    neg_max: u32,
    pos_max: u32,
) -> Option<([i8; QK], f64)> {
    assert!(y.len() <= QK && w.len() >= y.len());
    EVENTS.with_borrow_mut(|buf| {
        let mut n = 0;
        let (mut s_min, mut s_max) = (f32::INFINITY, 0.0f32);
        let mut mag = [0u32; QK];
        let (mut sumlx, mut suml2) = (0.0f64, 0.0f64);
        for (i, &v) in y.iter().enumerate() {
            let a = v.abs();
            if a == 0.0 || !a.is_finite() {
                continue;
            }
            let kmax = if v > 0.0 { pos_max } else { neg_max };
            let k0 = ((a * s_lo).round() as u32).min(kmax);
            mag[i] = k0;
            sumlx += w[i] as f64 * a as f64 * k0 as f64;
            suml2 += w[i] as f64 * (k0 * k0) as f64;
            for k in k0 + 1..=kmax {
                let s = (k as f32 - 0.5) / a;
                if s > s_hi {
                    break;
                }
                s_min = s_min.min(s);
                s_max = s_max.max(s);
                assert!(n < MAX_EVENTS, "search window too wide");
                // Positive floats order like their bits; the low byte carries the element.
                buf[n] = ((s.to_bits() as u64) << 8) | i as u64;
                n += 1;
            }
        }
        let keys = &mut buf[..n];
        let start = mag;
        sort_events(keys, s_min, s_max);
        let (mut best, mut best_at) = (0.0f64, None);
        if suml2 > 0.0 {
            best = sumlx * sumlx / suml2;
            best_at = Some(0);
        }
        for (e, &key) in keys.iter().enumerate() {
            let i = (key & 0xff) as usize;
            let wi = w[i] as f64;
            sumlx += wi * y[i].abs() as f64;
            suml2 += wi * (2 * mag[i] + 1) as f64;
            mag[i] += 1;
            // Evaluate only once every event at this s has been applied.
            if keys.get(e + 1).is_some_and(|k| k >> 8 == key >> 8) {
                continue;
            }
            // (A division per evaluation: a cross-multiplied comparison is cheaper but
            // rounds differently, and the SmolLM2 weights, dequantized from Q4_1, lie on
            // lattices where scores tie exactly: the choice among equals would change.)
            if suml2 > 0.0 {
                let score = sumlx * sumlx / suml2;
                if score > best {
                    best = score;
                    best_at = Some(e + 1);
                }
            }
        }
        let applied = best_at?;
        let mut mag = start;
        for &key in &keys[..applied] {
            mag[(key & 0xff) as usize] += 1;
        }
        let mut q = [0i8; QK];
        for ((c, &m), &v) in q.iter_mut().zip(&mag).zip(y) {
            *c = if v > 0.0 { m as i8 } else { -(m as i8) };
        }
        if q.iter().all(|&c| c == 0) {
            return None;
        }
        Some((q, best))
    })
}

/// Sort event keys (f32 bits of s, positive, in the high bits) ascending, as
/// `sort_unstable` would (keys are distinct: the low byte is the element): a counting sort
/// into buckets linear in s over [s_min, s_max], then insertion sort inside the buckets,
/// which hold one or two keys on average. Several times faster than a comparison sort
/// for the few hundred keys of a block.
fn sort_events(keys: &mut [u64], s_min: f32, s_max: f32) {
    const MAX_BUCKETS: usize = 256;
    let n = keys.len();
    if n < 24 || s_max.partial_cmp(&s_min) != Some(std::cmp::Ordering::Greater) {
        keys.sort_unstable();
        return;
    }
    let nb = n.next_power_of_two().min(MAX_BUCKETS);
    // Monotone in s (a product and a conversion, both non-decreasing), so bucket order
    // agrees with key order.
    let scale = (nb as f32 - 0.5) / (s_max - s_min);
    let bucket = |k: u64| {
        let s = f32::from_bits((k >> 8) as u32);
        (((s - s_min) * scale) as usize).min(nb - 1)
    };
    let mut start = [0u16; MAX_BUCKETS + 1];
    for &k in keys.iter() {
        start[bucket(k) + 1] += 1;
    }
    for b in 0..nb {
        start[b + 1] += start[b];
    }
    let mut sorted = [0u64; QK * 16];
    let sorted = &mut sorted[..n];
    for &k in keys.iter() {
        let b = bucket(k);
        sorted[start[b] as usize] = k;
        start[b] += 1;
    }
    // Insertion sort: runs between bucket boundaries are short; across them it never moves.
    for i in 1..n {
        let k = sorted[i];
        let mut j = i;
        while j > 0 && sorted[j - 1] > k {
            sorted[j] = sorted[j - 1];
            j -= 1;
        }
        sorted[j] = k;
    }
    keys.copy_from_slice(sorted);
}

/// Σ w x q and Σ w q² of codes `q`: with Σ w x², the error of `q` at any scale d is
/// Σ w x² − 2 d Σ w x q + d² Σ w q², so trying several scales for one code vector costs
/// one pass.
fn code_sums(x: &[f32], w: &[f32], q: &[i8; QK]) -> (f64, f64) {
    let (mut xq, mut qq) = ([0.0f64; 2], [0.0f64; 2]);
    for (i, ((&v, &wi), &c)) in x.iter().zip(w).zip(q).enumerate() {
        let wc = wi as f64 * c as f64;
        xq[i % 2] += wc * v as f64;
        qq[i % 2] += wc * c as f64;
    }
    (xq[0] + xq[1], qq[0] + qq[1])
}

#[cfg(test)]
/// Store codes `q` (found for x at an unrounded scale) with an f16 scale: the f16 nearest
/// the least-squares scale and its two neighbours are tried, each with the codes kept and
/// re-rounded for that scale; then the scale is re-fitted to the re-rounded codes and the
/// process repeated once. The best of these (ranked by the closed-form error of
/// [`code_sums`]) replaces `best` if its error, computed directly, is lower.
pub(crate) fn refine_f16(
    x: &[f32],
    w: &[f32],
    q: [i8; QK],
    lo: f32,
    hi: f32,
    best: &mut Candidate,
) {
    let sxx: f64 = x
        .iter()
        .zip(w)
        .map(|(&v, &wi)| wi as f64 * v as f64 * v as f64)
        .sum();
    let mut top: Option<Candidate> = None;
    let mut consider = |(xq, qq): (f64, f64), q: &[i8; QK], d: f32| {
        let d64 = d as f64;
        let err = sxx - 2.0 * d64 * xq + d64 * d64 * qq;
        if top.is_none_or(|t| err < t.err) {
            top = Some(Candidate { q: *q, d, err });
        }
    };
    let ls = |(xq, qq): (f64, f64)| if qq > 0.0 { (xq / qq) as f32 } else { 0.0 };
    let n = x.len();
    let mut q = q;
    let mut sums = code_sums(x, w, &q);
    let mut h = half::f16::from_f32(ls(sums));
    for _ in 0..2 {
        for d16 in [h, f16_step(h, -1), f16_step(h, 1)] {
            let d16 = d16.to_f32();
            if d16 == 0.0 || !d16.is_finite() {
                continue;
            }
            consider(sums, &q, d16);
            let r = round_codes(x, d16, lo, hi);
            // Re-rounding often gives the same codes: evaluated already.
            if r[..n] != q[..n] {
                consider(code_sums(x, w, &r), &r, d16);
            }
        }
        let d = h.to_f32();
        if d == 0.0 || !d.is_finite() {
            break;
        }
        q = round_codes(x, d, lo, hi);
        sums = code_sums(x, w, &q);
        let nh = half::f16::from_f32(ls(sums));
        if nh == h {
            break;
        }
        h = nh;
    }
    if let Some(t) = top {
        let err = werr(x, w, &t.q, t.d);
        if err < best.err {
            *best = Candidate { err, ..t };
        }
    }
}

/// The importance of a symmetric block's values when nothing measured is known (no
/// importance matrix, no column proxy): σ + |x| over the block normalised to max |x| = 1,
/// σ its root mean square — llama.cpp's weighting for its K-quants without an imatrix.
/// Plain least squares (every weight 1) buys a smaller mean error by clipping or
/// coarsening the largest values, which matter more to a matrix product than their share
/// of the squared error says. Measured over english.txt (BENCHMARKS.md): SmolLM2-135M
/// q4_0's mean KL 0.241 → 0.234, and 0.328 → 0.304 on its dithered copy (whose weights lie
/// on no grid), where llama.cpp's Q4_0 has 0.307. q4_k_m (whose 576-wide rows are Q5_0)
/// stays at 0.0377 / 0.0581; q8_0 goes 0.00360 → 0.00364 and 0.00477 → 0.00461. (σ² + x²
/// weights, and multiplying the column proxy or an importance matrix by σ + |x|, were
/// worse.) Non-finite values count as 0, as the encoders store them; an
/// all-zero block gets all-zero weights, which count as uniform.
#[inline(always)]
pub(crate) fn data_free_weights(x: &[f32; QK]) -> [f32; QK] {
    let mut a = [0.0f32; QK];
    let mut amax = 0.0f32;
    for i in 0..QK {
        // |v| < ∞ is false for ±∞ and NaN (a select, not `is_finite`'s branch).
        a[i] = if x[i].abs() < f32::INFINITY {
            x[i].abs()
        } else {
            0.0
        };
        amax = if a[i] > amax { a[i] } else { amax };
    }
    if amax == 0.0 {
        return [0.0; QK];
    }
    let mut s2 = 0.0f32;
    for v in a.iter_mut() {
        *v /= amax;
        s2 += *v * *v;
    }
    let sigma = (s2 / QK as f32).sqrt();
    a.map(|v| sigma + v)
}

/// A symmetric block type (x̂ = d·q, q in [−neg_max, pos_max], d stored as f16) as
/// [`encode_symmetric`] searches it.
pub(crate) struct Symmetric {
    pub neg_max: u32,
    pub pos_max: u32,
    /// Inverse scales, times max|x|, the grid covers (for the sign of d that maps the
    /// largest magnitude to −neg_max the window holds llama.cpp's own scale).
    pub window: Window,
    /// Whether both signs of d are searched (they give different blocks only when the
    /// code range is not symmetric).
    pub both_signs: bool,
    /// The window is used only while the block's weights are within this factor of each
    /// other; past it (uneven importance, where clipping the largest value or a coarse
    /// scale may pay) every scale is searched exactly. `None`: always the window.
    pub weight_ratio: Option<f32>,
}

/// One block's encoding in the normalised frame of its [`GridBlock`]: codes
/// `grid_code(y, inv)`, the stored scale `d` (an f16 value, real units) and its weighted
/// error (f32, normalised block).
#[derive(Clone, Copy)]
pub(super) struct Pick {
    pub(super) inv: f32,
    pub(super) d: f32,
    pub(super) err: f32,
}

/// The codes and f16 scale (as f32) of the block of type `t` with the least weighted
/// squared error Σ w (x − d·q)² that the search finds, or `None` for a block without a
/// finite non-zero value or with a non-finite weight (the caller stores llama.cpp's
/// block). All-zero weights count as uniform ones.
///
/// Candidates, one [`GRID_LANES`]-wide kernel call each:
/// 1. a coarse grid of inverse scales over `t.window` for both signs ([`grid_coarse`]),
///    then a fine grid around the leading sign's best ([`grid_fine`]); or, past
///    `t.weight_ratio`, the exact optimum of every scale ([`exact_search_scored`]);
/// 2. the f16 scales around the winner's least-squares scale, codes re-rounded for each,
///    with llama.cpp's block (its scale and codes, `refine`) in the same call, so the
///    result is never worse than llama.cpp's under the same weights (up to the f32
///    rounding of the errors, and llama.cpp's tie rule: it rounds exact halves up).
#[inline(always)]
pub(crate) fn encode_symmetric(x: &[f32], w: &[f32], t: &Symmetric) -> Option<([i8; QK], f32)> {
    const ONES: [f32; QK] = [1.0; QK];
    let n = x.len();
    assert!(n <= QK && w.len() >= n);
    // One pass for the largest magnitude, the weight range and a finiteness check.
    // Comparisons, not f32::max/min: their NaN rules keep the loop from vectorising (a NaN
    // fails every comparison and shows in `nan`: NaN·0 and ±∞·0 are NaN, not 0).
    let (mut amax, mut wmin, mut wmax, mut nan) = (0.0f32, f32::INFINITY, 0.0f32, 0.0f32);
    for (&v, &wi) in x.iter().zip(&w[..n]) {
        let a = v.abs();
        amax = if a > amax { a } else { amax };
        wmin = if wi < wmin { wi } else { wmin };
        wmax = if wi > wmax { wi } else { wmax };
        nan += v * 0.0 + wi * 0.0;
    }
    if amax == 0.0 || nan != 0.0 {
        return None;
    }
    let w = if wmax > 0.0 {
        &w[..n]
    } else {
        (wmin, wmax) = (1.0, 1.0);
        &ONES[..n]
    };
    let (neg, pos) = (t.neg_max as f32, t.pos_max as f32);
    let b = GridBlock::scaled(x, w, amax, 1.0 / wmax, -neg, pos);
    // llama.cpp's scale: the first value of largest magnitude maps to −neg_max (to
    // +pos_max, as amax / pos_max, when the range is symmetric).
    let at = x.iter().position(|v| v.abs() == amax).unwrap_or(0);
    let d_ref = if t.neg_max == t.pos_max {
        amax / pos
    } else {
        x[at] / -neg
    };
    // Its codes round x / d_ref (ggml multiplies by 1/d_ref), its stored scale is f16.
    let reference = Pick {
        inv: (1.0 / d_ref) * amax,
        d: half::f16::from_f32(d_ref).to_f32(),
        err: f32::INFINITY,
    };
    let mut best: Option<Pick> = None;
    let windowed = t.weight_ratio.is_none_or(|r| wmin * r >= wmax);
    if windowed {
        let mut hits = grid_coarse(&b, t.window, t.both_signs);
        // Only the sign whose coarse best leads is searched finely (on real and Gaussian
        // rows the two signs are within 0.2% of each other in most blocks, so searching
        // both costs almost a kernel call per block, for 0.004% of the weighted error on
        // Gaussian rows); the fine scores are f32 sums, so a sign within `SCORE_TIE` of
        // the other after the fine grid is stored too, and the stored errors decide.
        let top =
            |hits: &[Option<GridHit>; 2]| hits.iter().flatten().fold(0.0f32, |m, h| m.max(h.score));
        let coarse_top = top(&hits);
        for hit in hits.iter_mut().flatten() {
            if hit.score >= coarse_top {
                *hit = grid_fine(&b, *hit);
            }
        }
        let fine_top = top(&hits);
        for hit in hits.iter().flatten() {
            if hit.score >= fine_top * (1.0 - SCORE_TIE) {
                refine(&b, hit.scale, reference, &mut best);
            }
        }
    } else {
        for scale in exact_symmetric(x, w, t.neg_max, t.pos_max)
            .into_iter()
            .flatten()
        {
            refine(&b, scale / amax, reference, &mut best);
        }
    }
    if best.is_none() {
        // No grid candidate (every code rounds to 0): llama.cpp's block and the f16
        // scales around it.
        refine(&b, d_ref / amax, reference, &mut best);
    }
    let best = best?;
    Some((grid_codes(&b, best.inv), best.d))
}

/// The least-squares scales (real units) of the exact optimum of [`exact_search_scored`]
/// over every scale, for each sign whose optimum is within 1e-3 of the better one
/// (blocks with very uneven weights, such as an importance matrix gives, may gain from
/// clipping large values or from coarse scales, where a grid would have to be wide and
/// fine).
fn exact_symmetric(x: &[f32], w: &[f32], neg_max: u32, pos_max: u32) -> [Option<f32>; 2] {
    let mut y = [0.0f32; QK];
    let y = &mut y[..x.len()];
    let mut found: [Option<([i8; QK], f64)>; 2] = [None, None];
    for (f, sign) in found.iter_mut().zip([1.0f32, -1.0]) {
        for (yi, &v) in y.iter_mut().zip(x) {
            *yi = sign * v;
        }
        // Codes for y = sign·x at scale d are codes for x at scale sign·d.
        *f = exact_search_scored(y, w, 0.0, f32::INFINITY, neg_max, pos_max);
    }
    let top = found.iter().flatten().fold(0.0f64, |m, f| m.max(f.1));
    found.map(|f| {
        let (q, score) = f?;
        let (xq, qq) = code_sums(x, w, &q);
        (score >= top * (1.0 - 1e-3) && qq > 0.0).then(|| (xq / qq) as f32)
    })
}

/// Relative difference below which two grid scores (f32 sums of 32 terms, accurate to a
/// few parts in 10⁷) are treated as a tie and both candidates are stored and compared.
pub(super) const SCORE_TIE: f32 = 1e-4;

/// The f16 values from [`F16_BELOW`] steps below `h` in magnitude to the rest above it,
/// as f32 (a value past the finite range repeats `h`, as [`f16_step`] does). For normal
/// values the conversion is a shift and an exponent rebias, done inline.
#[inline(always)]
fn f16_ladder(h: half::f16) -> [f32; GRID_LANES] {
    let bits = h.to_bits();
    let (sign, mag) = ((bits & 0x8000) as u32, (bits & 0x7fff) as i32);
    // Loops, not `array::from_fn` or `map`, here and below: those closures were left
    // out of line, compiled for the baseline instead of the kernel table's level.
    let mut out = [0.0f32; GRID_LANES];
    for (c, o) in out.iter_mut().enumerate() {
        let m = mag + c as i32 - F16_BELOW;
        *o = if (0x0400..0x7c00).contains(&m) {
            // Normal f16: exponent bias 15 → 127, mantissa 10 → 23 bits.
            f32::from_bits((sign << 16) | ((m as u32 + ((127 - 15) << 10)) << 13))
        } else {
            f16_step(h, c as i32 - F16_BELOW).to_f32()
        };
    }
    out
}

/// F16 scales [`refine`] tries around the least-squares one: this many below it, the
/// rest of the first 15 lanes above (8; the upper ones win more often: with 7 and 7,
/// Q8_0 lost 0.1% of weighted error on Gaussian rows). The last of the [`GRID_LANES`]
/// lanes holds llama.cpp's block.
pub(super) const F16_BELOW: i32 = 6;
pub(super) const REFERENCE_LANE: usize = GRID_LANES - 1;

/// Store a block found at least-squares scale `scale` (normalised units) with an f16
/// scale: that scale rounded to f16 and the f16 values around it are each tried with the
/// codes re-rounded for that scale (for a fixed scale, rounding each value to its nearest
/// code is optimal, so keeping the grid's codes can not do better), beside llama.cpp's
/// block `reference`, all in one kernel call. The lowest error (first lane on ties)
/// replaces `best` if lower.
#[inline(always)]
pub(super) fn refine(b: &GridBlock, scale: f32, reference: Pick, best: &mut Option<Pick>) {
    let mut ds = f16_ladder(half::f16::from_f32(scale * b.unit));
    ds[REFERENCE_LANE] = reference.d;
    // The same scales for the normalised block (y = x / unit), and their inverses.
    let iu = 1.0 / b.unit;
    let mut dy = [0.0f32; GRID_LANES];
    let mut inv = [0.0f32; GRID_LANES];
    for c in 0..GRID_LANES {
        dy[c] = ds[c] * iu;
        inv[c] = 1.0 / dy[c];
    }
    inv[REFERENCE_LANE] = reference.inv;
    let mut errs = [0.0f32; GRID_LANES];
    // The symmetric error is the affine one with offset 0: y − (d·q + 0) = y − d·q.
    affine_errors(b, &inv, &dy, &[0.0; GRID_LANES], &mut errs);
    // Lanes whose scale is 0 or not finite (the ladder ran past f16's range) are skipped.
    let mut at = usize::MAX;
    let mut low = best.map_or(f32::INFINITY, |p| p.err);
    for c in 0..GRID_LANES {
        let better = errs[c] < low && dy[c] != 0.0 && ds[c].is_finite() && inv[c].is_finite();
        low = if better { errs[c] } else { low };
        at = if better { c } else { at };
    }
    if at != usize::MAX {
        *best = Some(Pick {
            inv: inv[at],
            d: ds[at],
            err: low,
        });
    }
}

// ---------------------------------------------------------------------------------------
// Grid search: many inverse scales of one block side by side.

/// Inverse scales a grid step evaluates side by side, one per SIMD lane (one AVX-512
/// register of f32, two AVX2 or four NEON ones).
pub const GRID_LANES: usize = 16;

/// One block prepared for [`grid_scores`]: values `y` (scaled so max |y| = 1), weights `w`
/// (scaled so max w = 1), `wy = w·y`, and the code range. Entries past `n` are 0. An
/// inverse scale s < 0 codes the block for a negative scale (x ≈ d·q with d < 0), which
/// matters when the code range is not symmetric.
#[derive(Clone, Copy)]
pub struct GridBlock {
    /// The real value of y = 1: x = unit · y (max|x|).
    pub unit: f32,
    pub y: [f32; QK],
    pub w: [f32; QK],
    pub wy: [f32; QK],
    pub n: usize,
    pub lo: f32,
    pub hi: f32,
}

/// Round half to even without a libm call or SSE4.1, identically on every level: adding
/// and subtracting 1.5·2²³ leaves the nearest integer (ties to even) for |v| < 2²².
/// Callers keep |v| below that (normalised values times inverse scales ≤ a few hundred).
#[inline(always)]
pub(crate) fn round_even_small(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³
    (v + MAGIC) - MAGIC
}

/// The low byte of a whole number `v` with |v| < 2²² (a code: `as u8` for 0..=255,
/// `as i8` for −128..=127) without a saturating float-to-integer conversion, which is
/// scalar and several instructions: 1.5·2²³ + v is exact and holds 2²² + v in its
/// mantissa.
#[inline(always)]
pub(crate) fn code_byte(v: f32) -> u8 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³
    (v + MAGIC).to_bits() as u8
}

/// The codes [`grid_scores`] gives value `v` at inverse scale `s`: round(v·s), ties to
/// even, clamped to [lo, hi].
#[inline(always)]
pub fn grid_code(v: f32, s: f32, lo: f32, hi: f32) -> f32 {
    let q = round_even_small(v * s);
    let q = if q < lo { lo } else { q };
    if q > hi {
        hi
    } else {
        q
    }
}

/// What [`grid_scores`] gives per inverse scale: the score (Σ w y q)² / Σ w q² of its
/// codes (0 if every weighted code is 0; the error at the best scale for those codes is
/// Σ w y² minus it) and that best scale Σ w y q / Σ w q².
#[derive(Clone, Copy, Default)]
pub struct GridScores {
    pub score: [f32; GRID_LANES],
    pub scale: [f32; GRID_LANES],
}

/// The scalar reference of [`crate::kernels::Kernels::grid_scores`] and the body every
/// level compiles for its own vector width: [`GridScores`] of the codes
/// q = [`grid_code`]`(y, inv[c])` for each inverse scale `inv[c]`. The sums run over the
/// elements in order, one lane per scale, so every level gives bit-identical results (no
/// reassociation, no fused multiply-add).
#[inline(always)]
pub fn grid_scores(b: &GridBlock, inv: &[f32; GRID_LANES], out: &mut GridScores) {
    let mut lx = [0.0f32; GRID_LANES];
    let mut l2 = [0.0f32; GRID_LANES];
    let n = b.n.min(QK);
    for i in 0..n {
        let (v, wi, wv) = (b.y[i], b.w[i], b.wy[i]);
        for c in 0..GRID_LANES {
            let q = grid_code(v, inv[c], b.lo, b.hi);
            lx[c] += wv * q;
            l2[c] += wi * (q * q);
        }
    }
    for c in 0..GRID_LANES {
        let ok = l2[c] > 0.0;
        let scale = if ok { lx[c] / l2[c] } else { 0.0 };
        out.scale[c] = scale;
        out.score[c] = if ok { lx[c] * scale } else { 0.0 };
    }
}

/// A grid's winner: its inverse scale s (times max|x|), its score and least-squares
/// scale (for the normalised block, see [`GridScores`]), and the interval around it that
/// the fine grid searches (± one coarse step).
#[derive(Clone, Copy)]
pub struct GridHit {
    pub s: f32,
    pub score: f32,
    pub scale: f32,
    below: f32,
    above: f32,
}

impl GridHit {
    /// A coarse-grid winner at inverse scale `s`, its fine grid spanning ± `step`.
    pub(super) fn coarse(s: f32, score: f32, scale: f32, step: f32) -> GridHit {
        GridHit {
            s,
            score,
            scale,
            below: s - step,
            above: s + step,
        }
    }
}

/// What [`affine_sums`] gives per lane: Σ w l, Σ w l² and Σ w y l of the lane's codes l
/// (with the block's own Σ w, Σ w y and Σ w y², the least-squares (d, m) of
/// y ≈ d·l + m and its error follow in closed form).
#[derive(Clone, Copy, Default)]
pub struct AffineSums {
    pub sl: [f32; GRID_LANES],
    pub sll: [f32; GRID_LANES],
    pub syl: [f32; GRID_LANES],
}

/// The reference of [`crate::kernels::Kernels::affine_sums`], compiled per level like
/// [`grid_scores`]: [`AffineSums`] of the codes l = [`grid_code`]`(y − m[c], inv[c])`
/// (codes in [lo, hi] = [0, nmax] for the scale-and-offset types) for each lane c.
#[inline(always)]
pub fn affine_sums(
    b: &GridBlock,
    inv: &[f32; GRID_LANES],
    m: &[f32; GRID_LANES],
    out: &mut AffineSums,
) {
    let mut s = AffineSums::default();
    let n = b.n.min(QK);
    for i in 0..n {
        let (v, wi, wv) = (b.y[i], b.w[i], b.wy[i]);
        for c in 0..GRID_LANES {
            let l = grid_code(v - m[c], inv[c], b.lo, b.hi);
            let wl = wi * l;
            s.sl[c] += wl;
            s.sll[c] += wl * l;
            s.syl[c] += wv * l;
        }
    }
    *out = s;
}

/// The reference of [`crate::kernels::Kernels::affine_errors`], compiled per level like
/// [`grid_scores`]: for each lane c, `Σ w (y − (d[c]·l + m[c]))²` with the codes
/// `l = grid_code(y − m[c], inv[c])` (the caller passes `inv[c] = 1 / d[c]`, or 0).
#[inline(always)]
pub fn affine_errors(
    b: &GridBlock,
    inv: &[f32; GRID_LANES],
    d: &[f32; GRID_LANES],
    m: &[f32; GRID_LANES],
    out: &mut [f32; GRID_LANES],
) {
    let mut e = [0.0f32; GRID_LANES];
    let n = b.n.min(QK);
    for i in 0..n {
        let (v, wi) = (b.y[i], b.w[i]);
        for c in 0..GRID_LANES {
            let l = grid_code(v - m[c], inv[c], b.lo, b.hi);
            let r = v - (d[c] * l + m[c]);
            e[c] += wi * (r * r);
        }
    }
    *out = e;
}

/// The codes [`affine_sums`] and [`affine_errors`] give `b` for offset `m` and inverse
/// scale `inv` (0 past `b.n`).
#[inline(always)]
pub fn affine_codes_of(b: &GridBlock, inv: f32, m: f32) -> [f32; QK] {
    let mut q = [0.0f32; QK];
    for (c, &v) in q.iter_mut().zip(&b.y[..b.n]) {
        *c = grid_code(v - m, inv, b.lo, b.hi);
    }
    q
}

/// The best inverse scale of `inv` (first on ties) for `b`, one kernel call per
/// [`GRID_LANES`] scales, separately for lanes below `split` (index 0) and from it on
/// (index 1); `below`/`above` are left for the caller.
#[inline(always)]
fn grid_best(b: &GridBlock, inv: &[[f32; GRID_LANES]], split: usize) -> [Option<GridHit>; 2] {
    let mut best: [Option<GridHit>; 2] = [None, None];
    let mut top = [0.0f32; 2];
    for lanes in inv {
        let mut out = GridScores::default();
        grid_scores(b, lanes, &mut out);
        for (half, range) in [(0, 0..split), (1, split..GRID_LANES)] {
            // Branch-free running maximum (the comparisons are unpredictable).
            let (mut at, mut here) = (usize::MAX, top[half]);
            for c in range {
                let better = out.score[c] > here;
                here = if better { out.score[c] } else { here };
                at = if better { c } else { at };
            }
            if at != usize::MAX {
                top[half] = here;
                best[half] = Some(GridHit {
                    s: lanes[at],
                    score: here,
                    scale: out.scale[at],
                    below: 0.0,
                    above: 0.0,
                });
            }
        }
    }
    best
}

/// Coarse-grid scales per sign of the scale over an inverse-scale window, and fine-grid
/// scales placed around a coarse winner (± one coarse step); multiples of [`GRID_LANES`].
pub(super) const COARSE_PER_SIGN: usize = GRID_LANES;
pub(super) const FINE_POINTS: usize = GRID_LANES;

/// Inverse scales, times max|x|, that a block is searched over, evenly spaced over
/// [lo, hi].
#[derive(Clone, Copy)]
pub struct Window {
    pub lo: f32,
    pub hi: f32,
}

/// The best of a coarse grid of [`COARSE_PER_SIGN`] scales evenly spaced over `win` for a
/// positive scale (index 0) and, when `both_signs`, a negative one (index 1; each kernel
/// call then scores half its lanes per sign). (Eight per sign instead of sixteen, one
/// call fewer, cost 0.2% of weighted error on the Gaussian rows of
/// `grid_search_is_within_a_hair_of_exact`.)
#[inline(always)]
pub fn grid_coarse(b: &GridBlock, win: Window, both_signs: bool) -> [Option<GridHit>; 2] {
    const HALF: usize = GRID_LANES / 2;
    const CALLS: usize = 2 * COARSE_PER_SIGN / GRID_LANES;
    let step = (win.hi - win.lo) / (COARSE_PER_SIGN as f32 - 1.0);
    let mut lanes = [[0.0f32; GRID_LANES]; CALLS];
    let (calls, split) = if both_signs {
        // Per call: half the positive scales, then the same magnitudes negated.
        for (j, call) in lanes.iter_mut().enumerate() {
            for c in 0..HALF {
                let p = win.lo + step * (j * HALF + c) as f32;
                call[c] = p;
                call[HALF + c] = -p;
            }
        }
        (CALLS, HALF)
    } else {
        for (j, call) in lanes
            .iter_mut()
            .take(COARSE_PER_SIGN / GRID_LANES)
            .enumerate()
        {
            for (c, l) in call.iter_mut().enumerate() {
                *l = win.lo + step * (j * GRID_LANES + c) as f32;
            }
        }
        (COARSE_PER_SIGN / GRID_LANES, GRID_LANES)
    };
    let calls = &lanes[..calls];
    grid_best(b, calls, split).map(|hit| {
        hit.map(|hit| GridHit {
            below: hit.s - step,
            above: hit.s + step,
            ..hit
        })
    })
}

/// `hit` improved by a fine grid of [`FINE_POINTS`] scales around it.
#[inline(always)]
pub fn grid_fine(b: &GridBlock, hit: GridHit) -> GridHit {
    let fine_step = (hit.above - hit.below) / (FINE_POINTS as f32 + 1.0);
    let mut fine = [[0.0f32; GRID_LANES]; FINE_POINTS / GRID_LANES];
    for (j, lanes) in fine.iter_mut().enumerate() {
        for (c, l) in lanes.iter_mut().enumerate() {
            *l = hit.below + fine_step * ((j * GRID_LANES + c) as f32 + 1.0);
        }
    }
    match grid_best(b, &fine, GRID_LANES)[0] {
        Some(f) if f.score > hit.score => GridHit {
            below: hit.below,
            above: hit.above,
            ..f
        },
        _ => hit,
    }
}

/// [`GridBlock`] for `x` with weights `w`, codes in [lo, hi]; `None` if the block or its
/// weights are all zero or not finite.
#[inline(always)]
pub fn grid_block(x: &[f32], w: &[f32], lo: f32, hi: f32) -> Option<GridBlock> {
    let n = x.len();
    assert!(n <= QK && w.len() >= n);
    // Comparisons, not f32::max, whose NaN rule keeps the loops from vectorising; a NaN
    // fails the finiteness checks below either way (NaN·0 is not 0).
    let (mut amax, mut wmax, mut nan) = (0.0f32, 0.0f32, 0.0f32);
    for (&v, &wi) in x.iter().zip(&w[..n]) {
        let a = v.abs();
        amax = if a > amax { a } else { amax };
        wmax = if wi > wmax { wi } else { wmax };
        nan += v * 0.0 + wi * 0.0;
    }
    // (wmax starts at 0 and only grows, so "no positive weight" is wmax == 0.)
    if amax == 0.0 || !amax.is_finite() || wmax == 0.0 || !wmax.is_finite() || nan != 0.0 {
        return None;
    }
    Some(GridBlock::scaled(x, w, amax, 1.0 / wmax, lo, hi))
}

impl GridBlock {
    /// A block whose values and weights are already normalised (by the caller, the same
    /// way for every use of them): taken as they are, `unit` = 1. `y.len()` ≤ 32.
    #[inline(always)]
    pub fn normalised(y: &[f32], w: &[f32], lo: f32, hi: f32) -> GridBlock {
        // Multiplying by 1 is exact: the values are taken as they are.
        GridBlock::scaled(y, w, 1.0, 1.0, lo, hi)
    }

    /// y = x / unit (as x · (1 / unit)) and w · iw.
    #[inline(always)]
    pub(super) fn scaled(x: &[f32], w: &[f32], unit: f32, iw: f32, lo: f32, hi: f32) -> GridBlock {
        let n = x.len();
        assert!(n <= QK && w.len() >= n);
        let ia = 1.0 / unit;
        let mut b = GridBlock {
            unit,
            y: [0.0; QK],
            w: [0.0; QK],
            wy: [0.0; QK],
            n,
            lo,
            hi,
        };
        for i in 0..n {
            b.y[i] = x[i] * ia;
            b.w[i] = w[i] * iw;
            b.wy[i] = b.w[i] * b.y[i];
        }
        b
    }
}

/// The codes of `b` at inverse scale `s` (as [`grid_scores`] scored them).
#[inline(always)]
pub fn grid_codes(b: &GridBlock, s: f32) -> [i8; QK] {
    // The affine codes at offset 0 (y − 0 = y): whole numbers within [lo, hi] ⊂ i8.
    let codes = affine_codes_of(b, s, 0.0);
    let mut q = [0i8; QK];
    for (q, &c) in q.iter_mut().zip(&codes) {
        *q = code_byte(c) as i8;
    }
    q
}

/// The f16 `steps` representable values away from `h` in magnitude (same sign); `h`
/// itself if that leaves the finite range.
pub(crate) fn f16_step(h: half::f16, steps: i32) -> half::f16 {
    let bits = h.to_bits();
    let mag = (bits & 0x7fff) as i32 + steps;
    if !(0..=0x7bff).contains(&mag) {
        return h;
    }
    half::f16::from_bits((bits & 0x8000) | mag as u16)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Σ w_j (x_j − y_j)² in f64: the objective the weighted searches minimise.
    pub(crate) fn weighted_error(x: &[f32], y: &[f32], w: &[f32]) -> f64 {
        x.iter()
            .zip(y)
            .zip(w)
            .map(|((a, b), w)| *w as f64 * ((a - b) as f64).powi(2))
            .sum()
    }

    /// Deterministic test blocks: random, with odd shapes (one outlier, all equal, a
    /// single non-zero, tiny and huge magnitudes, exact zeros, alternating signs).
    pub(crate) fn test_blocks(n: usize, seed: u64) -> Vec<[f32; 32]> {
        let mut s = seed;
        let mut rnd = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32
        };
        let mut out = Vec::new();
        for b in 0..n {
            let mut x = [0.0f32; 32];
            for v in x.iter_mut() {
                *v = (rnd() - 0.5) * 3.0;
            }
            match b % 8 {
                1 => x[(rnd() * 32.0) as usize % 32] = 40.0 * (rnd() - 0.5),
                2 => x = [0.37; 32],
                3 => {
                    x = [0.0; 32];
                    x[(rnd() * 32.0) as usize % 32] = -1.25;
                }
                4 => x.iter_mut().for_each(|v| *v *= 1e-6),
                5 => x.iter_mut().for_each(|v| *v *= 1e3),
                6 => x.iter_mut().step_by(3).for_each(|v| *v = 0.0),
                7 => x
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, v)| *v = if i % 2 == 0 { 1.0 } else { -0.5 }),
                _ => {}
            }
            out.push(x);
        }
        out
    }

    /// Test weights: random positive, some zero, a few large.
    pub(crate) fn test_weights(seed: u64) -> [f32; 32] {
        let mut s = seed;
        let mut w = [0.0f32; 32];
        for (i, v) in w.iter_mut().enumerate() {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = (s >> 40) as f32 / (1u64 << 24) as f32;
            *v = match i % 7 {
                0 => 0.0,
                1 => 30.0 * r,
                _ => r * r,
            };
        }
        w
    }

    /// Gaussian blocks (Box–Muller from a fixed LCG) and weights in [0.2, 1]: the shape of
    /// real weight rows under data-free importance.
    fn gaussian_blocks(n: usize, seed: u64) -> Vec<([f32; 32], [f32; 32])> {
        let mut s = seed;
        let mut u = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f64 + 0.5) / (1u64 << 24) as f64
        };
        (0..n)
            .map(|_| {
                let x = std::array::from_fn(|_| {
                    let (a, b) = (u(), u());
                    ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()) as f32 * 0.02
                });
                let w = std::array::from_fn(|_| 0.2 + 0.8 * u() as f32);
                (x, w)
            })
            .collect()
    }

    /// The exact search with the same f16 refinement: the grid's yardstick.
    fn exact_symmetric(x: &[f32], w: &[f32], nm: u32, pm: u32, win: (f32, f32)) -> f64 {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let mut best = Candidate {
            q: [0; QK],
            d: 0.0,
            err: werr(x, w, &[0; QK], 0.0),
        };
        for sign in [1.0f32, -1.0] {
            let y: Vec<f32> = x.iter().map(|v| sign * v).collect();
            if let Some(q) = exact_search(&y, w, win.0 / amax, win.1 / amax, nm, pm) {
                refine_f16(x, w, q, -(nm as f32), pm as f32, &mut best);
            }
        }
        best.err
    }

    /// On Gaussian rows the grid's total weighted error is within 0.1% of the exact
    /// search's (Q4_0, Q5_0 and Q8_0 settings), and the grid scores agree with a plain
    /// per-scale evaluation.
    #[test]
    fn grid_search_is_within_a_hair_of_exact() {
        let blocks = gaussian_blocks(3000, 42);
        for (nm, pm, win, signs) in [
            (8u32, 7u32, (4.0f32, 11.0f32), 2),
            (16, 15, (12.0, 17.0), 2),
            (127, 127, (124.5, 129.5), 1),
        ] {
            let (mut grid, mut exact) = (0.0f64, 0.0f64);
            let t = Symmetric {
                neg_max: nm,
                pos_max: pm,
                window: Window {
                    lo: win.0,
                    hi: win.1,
                },
                both_signs: signs == 2,
                weight_ratio: None,
            };
            for (x, w) in &blocks {
                let (q, d) = encode_symmetric(x, w, &t).unwrap();
                grid += werr(x, w, &q, d);
                exact += exact_symmetric(x, w, nm, pm, win);
            }
            eprintln!(
                "nmax {nm}: grid / exact = {:.6} ({grid:e} / {exact:e})",
                grid / exact
            );
            assert!(
                grid <= exact * 1.001,
                "nmax {nm}: grid {grid} vs exact {exact}"
            );
        }
    }

    /// The Q4_0 and Q5_0 search windows (tuned on SmolLM2 blocks under uniform weights)
    /// still hold the optimum under [`data_free_weights`], which lean towards the largest
    /// values: on Gaussian blocks and on heavy-tailed ones (cubed Gaussians: a few large
    /// values), the exact search over windows three to four times as wide finds blocks
    /// better than the grid's by no more than 0.1% in total. (Q8_0's window does not hold
    /// its optimum under any weights: over [119.5, 135.5] the exact search finds 3–6%
    /// less weighted error on these blocks, uniform or data-free, which the narrow window
    /// gives up for speed; `grid_search_is_within_a_hair_of_exact` checks the grid inside
    /// it.)
    #[test]
    fn windows_hold_the_optimum_under_data_free_weights() {
        use super::super::kq_encode::Q5_0_SEARCH;
        use super::super::q4_0::Q4_0_SEARCH;
        let mut blocks: Vec<[f32; QK]> = gaussian_blocks(1500, 7).iter().map(|b| b.0).collect();
        blocks.extend(
            gaussian_blocks(1500, 8)
                .iter()
                .map(|b| b.0.map(|v| v * v * v * 2500.0)),
        );
        for (t, wide) in [
            (&Q4_0_SEARCH, (1.0f32, 16.0f32)),
            (&Q5_0_SEARCH, (6.0, 24.0)),
        ] {
            let (mut grid, mut exact) = (0.0f64, 0.0f64);
            for x in &blocks {
                let w = data_free_weights(x);
                let (q, d) = encode_symmetric(x, &w, t).unwrap();
                grid += werr(x, &w, &q, d);
                exact += exact_symmetric(x, &w, t.neg_max, t.pos_max, wide);
            }
            eprintln!(
                "nmax {}: grid / wide exact = {:.6}",
                t.neg_max,
                grid / exact
            );
            assert!(
                grid <= exact * 1.001,
                "nmax {}: grid {grid} vs exact {exact}",
                t.neg_max
            );
        }
    }

    /// Data-free weights: σ + |x| of the normalised block, whatever its scale; non-finite
    /// values as 0; an all-zero block all zero.
    #[test]
    fn data_free_weights_lean_on_large_values() {
        let mut x = [0.0f32; QK];
        x[0] = -4.0;
        x[1] = 2.0;
        let w = data_free_weights(&x);
        let sigma = ((1.0f32 + 0.25) / QK as f32).sqrt();
        assert!((w[0] - (sigma + 1.0)).abs() < 1e-6 && (w[1] - (sigma + 0.5)).abs() < 1e-6);
        assert!(w[2..].iter().all(|v| (v - sigma).abs() < 1e-6));
        assert_eq!(data_free_weights(&x.map(|v| v * 1e-30)), w);
        x[5] = f32::NAN;
        x[6] = f32::INFINITY;
        assert_eq!(data_free_weights(&x), w);
        assert_eq!(data_free_weights(&[0.0; QK]), [0.0; QK]);
    }

    /// The inline f16 ladder equals stepping the f16 bits one by one, for every f16.
    #[test]
    fn f16_ladder_matches_f16_step() {
        for bits in 0..=u16::MAX {
            let h = half::f16::from_bits(bits);
            if !h.is_finite() {
                continue;
            }
            let got = f16_ladder(h);
            for (c, g) in got.iter().enumerate() {
                let want = f16_step(h, c as i32 - F16_BELOW).to_f32();
                assert_eq!(g.to_bits(), want.to_bits(), "h {bits:#06x} step {c}");
            }
        }
    }
}
