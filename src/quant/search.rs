//! Weighted least-squares search of a block's scale and codes, shared by the Q4_0, Q8_0
//! and Q5_0 encoders and the Q6_K sub-blocks (`kq_encode`). A block of n ≤ 32 values x
//! with importance weights w ≥ 0 is stored as a scale d (f16) and integer codes q; the
//! objective is Σ w (x − d·q)². Code arrays are `[i8; 32]`; a shorter block uses the
//! first n entries (the rest stay 0).

use super::QK;

/// A block encoding and its weighted squared error.
#[derive(Clone, Copy)]
pub(crate) struct Candidate {
    pub q: [i8; QK],
    pub d: f32,
    pub err: f64,
}

/// Weighted squared error of codes `q` at scale `d`.
pub(crate) fn werr(x: &[f32], w: &[f32], q: &[i8; QK], d: f32) -> f64 {
    let mut e = 0.0f64;
    for ((&v, &wi), &c) in x.iter().zip(w).zip(q) {
        let r = (v - c as f32 * d) as f64;
        e += wi as f64 * r * r;
    }
    e
}

/// Least-squares scale Σ w x q / Σ w q² for fixed codes (0 if every weighted code is 0).
pub(crate) fn ls_scale(x: &[f32], w: &[f32], q: &[i8; QK]) -> f32 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for ((&v, &wi), &c) in x.iter().zip(w).zip(q) {
        num += wi as f64 * v as f64 * c as f64;
        den += wi as f64 * (c as f64) * (c as f64);
    }
    if den > 0.0 {
        (num / den) as f32
    } else {
        0.0
    }
}

/// The optimal codes for a fixed scale `d` ≠ 0: round to nearest, clamped to [lo, hi].
pub(crate) fn round_codes(x: &[f32], d: f32, lo: f32, hi: f32) -> [i8; QK] {
    let id = 1.0 / d;
    let mut q = [0i8; QK];
    for (c, &v) in q.iter_mut().zip(x) {
        *c = (v * id).round().clamp(lo, hi) as i8;
    }
    q
}

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

/// Store codes `q` (found for x at an unrounded scale) with an f16 scale: the f16 nearest
/// the least-squares scale and its two neighbours are tried, each with the codes kept and
/// re-rounded for that scale; then the scale is re-fitted to the re-rounded codes and the
/// process repeated once. Every evaluated encoding replaces `best` if its error is lower.
pub(crate) fn refine_f16(
    x: &[f32],
    w: &[f32],
    q: [i8; QK],
    lo: f32,
    hi: f32,
    best: &mut Candidate,
) {
    let mut consider = |q: &[i8; QK], d: f32| {
        if d == 0.0 || !d.is_finite() {
            return;
        }
        let err = werr(x, w, q, d);
        if err < best.err {
            *best = Candidate { q: *q, d, err };
        }
    };
    let n = x.len();
    let mut q = q;
    let mut h = half::f16::from_f32(ls_scale(x, w, &q));
    for _ in 0..2 {
        for d16 in [h, f16_step(h, -1), f16_step(h, 1)] {
            let d16 = d16.to_f32();
            if d16 == 0.0 || !d16.is_finite() {
                continue;
            }
            consider(&q, d16);
            let r = round_codes(x, d16, lo, hi);
            // Re-rounding often gives the same codes: evaluated already.
            if r[..n] != q[..n] {
                consider(&r, d16);
            }
        }
        let d = h.to_f32();
        if d == 0.0 || !d.is_finite() {
            break;
        }
        q = round_codes(x, d, lo, hi);
        let nh = half::f16::from_f32(ls_scale(x, w, &q));
        if nh == h {
            break;
        }
        h = nh;
    }
}

/// For each sign of the scale, the exact optimum of [`exact_search`] over codes in
/// [−neg_max, pos_max], stored with an f16 scale by [`refine_f16`]; `best` (the caller's
/// starting candidate, e.g. llama.cpp's reference block) is replaced by any encoding with
/// a lower weighted error. `window` = (lo, hi) limits the inverse scales searched to
/// [lo, hi] / max|x| (faster: fewer events); `None` searches them all.
pub(crate) fn best_symmetric(
    x: &[f32],
    w: &[f32],
    neg_max: u32,
    pos_max: u32,
    window: Option<(f32, f32)>,
    best: &mut Candidate,
) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let (s_lo, s_hi) = match window {
        Some((lo, hi)) if amax > 0.0 => (lo / amax, hi / amax),
        _ => (0.0, f32::INFINITY),
    };
    let mut y = [0.0f32; QK];
    let y = &mut y[..x.len()];
    let mut found: [Option<([i8; QK], f64)>; 2] = [None, None];
    for (f, sign) in found.iter_mut().zip([1.0f32, -1.0]) {
        for (yi, &v) in y.iter_mut().zip(x) {
            *yi = sign * v;
        }
        // Codes for x at scale sign·d: y ≈ d·q ⇔ x ≈ (sign·d)·q.
        *f = exact_search_scored(y, w, s_lo, s_hi, neg_max, pos_max);
    }
    // Each sign's least-squares error is Σwx² − score, and no f16 scale does better than
    // the unrounded one. Storing the scale as the nearest f16 (codes kept) costs at most
    // Σwq²·(d·2⁻¹¹)² = score·2⁻²² for a normal f16, so a sign whose score trails the other's
    // by more than that can not win after rounding: only the other is refined. (Scales
    // near the f16 subnormals round coarser: both are refined there.)
    let top = found.iter().flatten().fold(0.0f64, |m, f| m.max(f.1));
    let subnormal = amax < 2.0 * 6.2e-5 * neg_max.max(pos_max) as f32;
    for (q, score) in found.into_iter().flatten() {
        if subnormal || score >= top * (1.0 - 1e-6) {
            refine_f16(x, w, q, -(neg_max as f32), pos_max as f32, best);
        }
    }
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
}
