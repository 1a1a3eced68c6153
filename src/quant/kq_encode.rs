//! Encoders for ggml's K-quants (Q4_K, Q5_K, Q6_K: 256-weight super-blocks) and the
//! 32-weight Q4_1, Q5_0, Q5_1 blocks, writing ggml's *native* GGUF block bytes (so
//! `gguf::dequantize`, llama.cpp and the interleaving in `quant::interleave` can read
//! them).
//!
//! # Objective
//! Every block minimises the weighted squared error Σ_j w_j (x_j − x̂_j)² of the decoded
//! values x̂, where w is
//! - the caller's importance (one non-negative value per column, e.g. an importance
//!   matrix's mean squared activation: then the objective is the expected squared error
//!   of the product W·a for inputs a with those second moments, cross terms ignored);
//! - without importance (or where a block's importance is all zero): w_j = σ² + x_j²,
//!   with σ² the block's mean x² — plain squared error plus a preference for the large
//!   weights, which carry most of a product (ggml uses the similar x², σ + |x| or
//!   importance·√(σ² + x²) in its various encoders).
//!
//! A block's weights are divided by their maximum (the optimum does not change) and its
//! values by their largest magnitude before the search, so tiny or huge blocks are
//! searched with the same precision; f16 fields are rounded from the real values and
//! saturate at ±65504 instead of becoming infinite. Non-finite inputs are read as 0.
//!
//! # Search
//! - Scale + offset blocks (Q4_1, Q5_1 and the 32-weight sub-blocks of Q4_K/Q5_K),
//!   x̂ = d·q + m with q in 0..=nmax: a grid of candidate inverse scales anchored at the
//!   block minimum gives codes by rounding; each code vector gets its weighted
//!   least-squares (d, m) (closed form from five sums; m ≤ 0 for the K-quants, whose
//!   offsets are subtracted); the best is then improved by alternating "round the codes
//!   for (d, m)" and "re-fit (d, m) to the codes" until it stops improving
//!   ([`fit_affine`]; Q4_1 and Q5_1 run the same search sixteen blocks at a time in
//!   `affine_batch`, then round d and m to f16 as described there).
//! - Symmetric Q5_0 blocks, x̂ = d·q: `search::encode_symmetric` (a grid of inverse
//!   scales around nmax/max|x|, then the f16 scale, beside llama.cpp's block), sixteen
//!   blocks at a time (`sym_batch`). Q6_K's 16-weight sub-blocks start
//!   from llama.cpp's rounding and are searched at level two, below.
//! - The K-quants' second level: sub-block scales (and mins) are stored as 6-bit (Q4_K,
//!   Q5_K) or i8 (Q6_K) multiples of f16 super-block scales. Starting from
//!   super-scale = largest sub-scale / 63 (127), the encoder alternates: round the
//!   super-scales to f16; for every sub-block choose its integer scale (and min) among
//!   the two neighbours of the ideal value *with the codes re-rounded for each choice*, by
//!   the sub-block's actual error; then re-fit the super-scales by least squares to the
//!   chosen integers and codes. The best encoding seen is kept, so the codes are always
//!   the optimal rounding for the final, quantized scales.
//!
//! Everything is deterministic (no randomness, fixed iteration counts).

// Index loops over fixed-size blocks and lanes are the form the compiler vectorises here.
#![allow(clippy::needless_range_loop)]

use half::f16;

use super::lanes::BATCH;
use super::search::{
    affine_sums, code_byte, data_free_weights, round_even_small, AffineSums, GridBlock, Symmetric,
    Window, GRID_LANES,
};
use super::sym_batch::encode_symmetric_batch;
use crate::gguf::GgmlType;

/// Weights per K-quant super-block.
pub const QK_K: usize = 256;
/// Weights per legacy block (Q4_1, Q5_0, Q5_1) and per Q4_K/Q5_K sub-block.
const QK: usize = 32;

/// A block type this module encodes.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KqType {
    Q4_1,
    Q5_0,
    Q5_1,
    Q4_K,
    Q5_K,
    Q6_K,
}

impl KqType {
    pub const ALL: [KqType; 6] = [
        KqType::Q4_1,
        KqType::Q5_0,
        KqType::Q5_1,
        KqType::Q4_K,
        KqType::Q5_K,
        KqType::Q6_K,
    ];

    /// Weights per block.
    pub fn block_elems(self) -> usize {
        match self {
            KqType::Q4_1 | KqType::Q5_0 | KqType::Q5_1 => QK,
            KqType::Q4_K | KqType::Q5_K | KqType::Q6_K => QK_K,
        }
    }

    /// Bytes per block (ggml's `sizeof(block_*)`).
    pub fn block_bytes(self) -> usize {
        match self {
            KqType::Q4_1 => 20,
            KqType::Q5_0 => 22,
            KqType::Q5_1 => 24,
            KqType::Q4_K => 144,
            KqType::Q5_K => 176,
            KqType::Q6_K => 210,
        }
    }

    /// Bytes for a row of `n` weights, or `None` if `n` is not a whole number of blocks.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_elems()) {
            return None;
        }
        (n / self.block_elems()).checked_mul(self.block_bytes())
    }

    /// The ggml type whose blocks these are.
    pub fn ggml_type(self) -> GgmlType {
        match self {
            KqType::Q4_1 => GgmlType::Q4_1,
            KqType::Q5_0 => GgmlType::Q5_0,
            KqType::Q5_1 => GgmlType::Q5_1,
            KqType::Q4_K => GgmlType::Q4_K,
            KqType::Q5_K => GgmlType::Q5_K,
            KqType::Q6_K => GgmlType::Q6_K,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KqType::Q4_1 => "q4_1",
            KqType::Q5_0 => "q5_0",
            KqType::Q5_1 => "q5_1",
            KqType::Q4_K => "q4_k",
            KqType::Q5_K => "q5_k",
            KqType::Q6_K => "q6_k",
        }
    }
}

/// Encode a row of f32 into `ty`'s native ggml blocks, minimising the weighted squared
/// error (see the module documentation). `importance` has one entry per element of `src`
/// (negative or NaN entries count as 0); `out` must be exactly `ty.row_bytes(src.len())`
/// bytes. Panics on a length mismatch.
#[inline(always)]
pub fn quantize_row(ty: KqType, src: &[f32], importance: Option<&[f32]>, out: &mut [u8]) {
    assert_eq!(
        Some(out.len()),
        ty.row_bytes(src.len()),
        "{}: {} values need a whole number of {}-value blocks and a matching output",
        ty.name(),
        src.len(),
        ty.block_elems()
    );
    if let Some(imp) = importance {
        assert_eq!(imp.len(), src.len(), "one importance value per element");
    }
    match ty {
        KqType::Q4_1 => return super::affine_batch::quantize_rows(src, importance, 15, out),
        KqType::Q5_1 => return super::affine_batch::quantize_rows(src, importance, 31, out),
        KqType::Q5_0 => return quantize_rows_q5_0(src, importance, out),
        _ => {}
    }
    let (n, nb) = (ty.block_elems(), ty.block_bytes());
    for (i, (x, o)) in src
        .chunks_exact(n)
        .zip(out.chunks_exact_mut(nb))
        .enumerate()
    {
        let imp = importance.map(|v| &v[i * n..(i + 1) * n]);
        match ty {
            KqType::Q4_1 | KqType::Q5_1 | KqType::Q5_0 => unreachable!("encoded above"),
            KqType::Q4_K => block_q4k_q5k(x, imp, 15, o),
            KqType::Q5_K => block_q4k_q5k(x, imp, 31, o),
            KqType::Q6_K => block_q6_k(x, imp, o),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Shared helpers

/// A block prepared for the search: values divided by their largest magnitude `amax`
/// (> 0, finite) and weights divided by their maximum.
struct Prepared<const N: usize> {
    x: [f32; N],
    w: [f32; N],
    amax: f32,
}

/// Normalise a block (see [`Prepared`]); `None` for a block that is all zero (or holds
/// nothing finite), which every type stores as all-zero bytes.
#[inline(always)]
fn prepare<const N: usize>(src: &[f32], imp: Option<&[f32]>) -> Option<Prepared<N>> {
    // Fixed-length views: loops over them vectorise (a slice's length is not known).
    let src: &[f32; N] = src.try_into().expect("one block of values");
    let mut x = [0.0f32; N];
    let mut amax = 0.0f32;
    for i in 0..N {
        let v = src[i];
        // |v| < ∞ is false for ±∞ and NaN; comparisons, not `is_finite` or f32::max,
        // whose branches and NaN rules keep the loop scalar.
        x[i] = if v.abs() < f32::INFINITY { v } else { 0.0 };
        amax = if x[i].abs() > amax { x[i].abs() } else { amax };
    }
    if amax == 0.0 {
        return None;
    }
    for v in x.iter_mut() {
        *v /= amax;
    }
    let (mut w, wmax) = imp.map_or(([0.0; N], 0.0), sanitized_weights);
    if wmax > 0.0 {
        for v in w.iter_mut() {
            *v /= wmax;
        }
    } else {
        // The K-quants' data-free weights, (σ² + x²) / (σ² + 1). The symmetric types'
        // σ + |x| (`search::data_free_weights`) measured no better here: q4_k_m of the
        // dithered SmolLM2, mean KL 0.0584 against 0.0580.
        let sigma2 = x.iter().map(|v| v * v).sum::<f32>() / N as f32;
        for (o, v) in w.iter_mut().zip(&x) {
            *o = (sigma2 + v * v) / (sigma2 + 1.0);
        }
    }
    Some(Prepared { x, w, amax })
}

/// A block's importance with negative, NaN and infinite entries as 0, and its maximum.
#[inline(always)]
fn sanitized_weights<const N: usize>(imp: &[f32]) -> ([f32; N], f32) {
    let imp: &[f32; N] = imp.try_into().expect("one block of weights");
    let (mut w, mut wmax) = ([0.0f32; N], 0.0f32);
    for i in 0..N {
        // Both comparisons are false for NaN. (Two selects: `v > 0 && v < ∞` in one
        // became a scalar class test of the bits.)
        let v = if imp[i] > 0.0 { imp[i] } else { 0.0 };
        w[i] = if v <= f32::MAX { v } else { 0.0 };
        wmax = if w[i] > wmax { w[i] } else { wmax };
    }
    (w, wmax)
}

/// 1/v for v > 0 when that is finite, else 0 (codes then all round to the bottom).
#[inline(always)]
fn safe_inv(v: f32) -> f32 {
    let r = 1.0 / v;
    if v > 0.0 && r.is_finite() {
        r
    } else {
        0.0
    }
}

/// A real value as f16, saturating at the largest finite f16 instead of becoming ±inf.
#[inline(always)]
fn f16_sat(v: f32) -> f16 {
    f16::from_f32(v.clamp(-65504.0, 65504.0))
}

/// The normalised value a normalised `v` takes once `v·amax` is stored as `h` (f16).
/// (The software conversion inlines; `to_f32` is a call that checks the CPU each time.)
#[inline(always)]
fn through_f16(h: f16, amax: f32) -> f32 {
    h.to_f32_const() / amax
}

#[inline(always)]
fn put_f16(out: &mut [u8], at: usize, h: f16) {
    out[at..at + 2].copy_from_slice(&h.to_le_bytes());
}

// ---------------------------------------------------------------------------------------
// Scale + offset blocks

/// Grid of candidate inverse scales for [`fit_affine`]: (nmax + r)/range for r in
/// GRID_LO, GRID_LO + GRID_STEP, … (GRID_N values).
pub(super) const GRID_LO: f32 = -1.0;
pub(super) const GRID_STEP: f32 = 0.15;
pub(super) const GRID_N: usize = 12;
// The plain min/max candidate and the grid share one kernel call.
const _: () = assert!(GRID_N < GRID_LANES);
/// Rounds of "codes for (d, m), then (d, m) for the codes" after the grid.
pub(super) const AFFINE_ROUNDS: usize = 3;

/// Weighted sums of a code vector against the block.
#[derive(Clone, Copy, Default)]
struct Sums {
    sl: f32,
    sll: f32,
    sxl: f32,
}

/// The block's own sums Σw, Σwx, Σwx².
#[derive(Clone, Copy)]
struct Moments {
    sw: f32,
    sx: f32,
    sxx: f32,
}

impl Moments {
    #[inline(always)]
    fn of<const N: usize>(x: &[f32; N], w: &[f32; N]) -> Moments {
        const { assert!(N.is_multiple_of(LANES), "blocks are whole lanes") };
        // One accumulator per lane (a single running sum is a chain of dependent adds).
        let (mut sw, mut sx, mut sxx) = ([0.0f32; LANES], [0.0f32; LANES], [0.0f32; LANES]);
        for c in 0..N / LANES {
            for k in 0..LANES {
                let i = c * LANES + k;
                sw[k] += w[i];
                sx[k] += w[i] * x[i];
                sxx[k] += w[i] * x[i] * x[i];
            }
        }
        Moments {
            sw: hsum(sw),
            sx: hsum(sx),
            sxx: hsum(sxx),
        }
    }

    /// The weighted error of [`Moments::solve`]'s fit for each lane's code sums, without
    /// the fit itself: one division per lane, in a loop the compiler vectorises
    /// (`+∞` where `solve` gives `None`). Equal to `solve`'s error up to rounding.
    #[inline(always)]
    fn lane_errors(&self, s: &AffineSums, nonpos_min: bool) -> [f64; GRID_LANES] {
        let (sw, sx, sxx) = (self.sw as f64, self.sx as f64, self.sxx as f64);
        let mut e = [0.0f64; GRID_LANES];
        for c in 0..GRID_LANES {
            let (sl, sll, sxl) = (s.sl[c] as f64, s.sll[c] as f64, s.syl[c] as f64);
            e[c] = fit_error([sw, sx, sxx], [sl, sll, sxl], nonpos_min);
        }
        e
    }

    /// The least-squares (d, m) for codes with sums `s` (m forced ≤ 0 when `nonpos_min`),
    /// and its weighted error; `None` when the system is degenerate.
    #[inline(always)]
    fn solve(&self, s: Sums, nonpos_min: bool) -> Option<(f32, f32, f64)> {
        let (sw, sx, sxx) = (self.sw as f64, self.sx as f64, self.sxx as f64);
        let (sl, sll, sxl) = (s.sl as f64, s.sll as f64, s.sxl as f64);
        let det = sw * sll - sl * sl;
        let (mut d, mut m) = if det > 1e-12 * sw * sll {
            ((sw * sxl - sx * sl) / det, (sll * sx - sl * sxl) / det)
        } else if sll > 0.0 {
            // Every weighted code equal: the scale alone (m = 0) fits them.
            (sxl / sll, 0.0)
        } else {
            return None;
        };
        if nonpos_min && m > 0.0 {
            m = 0.0;
            d = sxl / sll;
        }
        let err = sxx - 2.0 * (d * sxl + m * sx) + d * d * sll + 2.0 * d * m * sl + m * m * sw;
        Some((d as f32, m as f32, err.max(0.0)))
    }
}

/// The weighted error of the least-squares (d, m) for codes with sums `[sl, sll, sxl]`
/// against a block with moments `[sw, sx, sxx]` ([`Moments::solve`]'s error, up to
/// rounding, without the fit itself: one division), `+∞` where `solve` fails. Selects,
/// not branches, so that loops over lanes of it vectorise.
#[inline(always)]
pub(super) fn fit_error(
    [sw, sx, sxx]: [f64; 3],
    [sl, sll, sxl]: [f64; 3],
    nonpos_min: bool,
) -> f64 {
    let det = sw * sll - sl * sl;
    // With det > 0 the fitted m has the sign of its numerator; m > 0 under `nonpos_min`,
    // or a singular system, leaves the scale alone (m = 0).
    let full = det > 1e-12 * sw * sll && !(nonpos_min && sll * sx - sl * sxl > 0.0);
    let (num, den) = if full {
        (sll * sx * sx - 2.0 * sl * sx * sxl + sw * sxl * sxl, det)
    } else {
        (sxl * sxl, sll)
    };
    let err = sxx - num / den;
    let err = if err > 0.0 { err } else { 0.0 };
    if den > 0.0 {
        err
    } else {
        f64::INFINITY
    }
}

/// Lanes of the partial sums: independent accumulators the compiler can keep in SIMD
/// registers (a single running sum would be one long dependency chain).
pub(super) const LANES: usize = 8;

/// Σ of the lanes, in a fixed order (deterministic).
#[inline(always)]
pub(super) fn hsum(a: [f32; LANES]) -> f32 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

/// Codes for x̂ = d·q + m (q in 0..=nmax) and their sums, as floats.
#[inline(always)]
fn affine_codes<const N: usize>(
    x: &[f32; N],
    w: &[f32; N],
    inv_d: f32,
    m: f32,
    nmax: f32,
    q: &mut [f32; N],
) -> Sums {
    for i in 0..N {
        q[i] = round_even_small(((x[i] - m) * inv_d).clamp(0.0, nmax));
    }
    code_sums(x, w, q)
}

/// [`Sums`] of the codes `q` (as floats).
#[inline(always)]
fn code_sums<const N: usize>(x: &[f32; N], w: &[f32; N], q: &[f32; N]) -> Sums {
    const { assert!(N.is_multiple_of(LANES), "blocks are whole lanes") };
    let (mut sl, mut sll, mut sxl) = ([0.0f32; LANES], [0.0f32; LANES], [0.0f32; LANES]);
    for c in 0..N / LANES {
        for k in 0..LANES {
            let i = c * LANES + k;
            let wl = w[i] * q[i];
            sl[k] += wl;
            sll[k] += wl * q[i];
            sxl[k] += wl * x[i];
        }
    }
    Sums {
        sl: hsum(sl),
        sll: hsum(sll),
        sxl: hsum(sxl),
    }
}

/// The best (d, m) for x̂ = d·q + m, q in 0..=nmax, under weights w (see the module
/// documentation): `m ≤ 0` when `nonpos_min`. Returns (d, m); d ≥ 0 unless the block is
/// degenerate, where (0, best constant) is returned.
#[inline(always)]
fn fit_affine<const N: usize>(
    x: &[f32; N],
    w: &[f32; N],
    mom: &Moments,
    nmax: f32,
    nonpos_min: bool,
) -> (f32, f32) {
    let (mut lo, mut hi) = (x[0], x[0]);
    for &v in x.iter() {
        // Comparisons vectorise (the values are finite: see `prepare`).
        lo = if v < lo { v } else { lo };
        hi = if v > hi { v } else { hi };
    }
    if nonpos_min {
        lo = lo.min(0.0);
    }
    // The best constant (what a degenerate block falls back to).
    let constant = if mom.sw > 0.0 { mom.sx / mom.sw } else { lo };
    let constant = if nonpos_min {
        constant.min(0.0)
    } else {
        constant
    };
    if hi <= lo {
        return (0.0, constant);
    }
    let range = hi - lo;
    let mut q = [0.0f32; N];
    // Plain min/max first, then the grid: one kernel call scores them all.
    let ir = safe_inv(range);
    let mut inv = [nmax * ir; GRID_LANES];
    for (k, s) in inv[1..=GRID_N].iter_mut().enumerate() {
        *s = (nmax + GRID_LO + GRID_STEP * k as f32) * ir;
    }
    let b = GridBlock::normalised(x, w, 0.0, nmax);
    let mut sums = AffineSums::default();
    affine_sums(&b, &inv, &[lo; GRID_LANES], &mut sums);
    let lane = |c: usize| Sums {
        sl: sums.sl[c],
        sll: sums.sll[c],
        sxl: sums.syl[c],
    };
    // Rank the candidates by error alone, then fit the winner. A candidate must beat the
    // best by more than rounding noise, so that ties (e.g. a constant block, fitted
    // exactly by many code levels) keep the earliest, full-range encoding and equal
    // blocks get equal scales.
    let errs = mom.lane_errors(&sums, nonpos_min);
    let noise = 1e-6 * mom.sxx.max(0.0) as f64;
    let mut at = 0;
    for c in 1..=GRID_N {
        if errs[c] < errs[at] - noise {
            at = c;
        }
    }
    let best = if errs[at].is_finite() {
        mom.solve(lane(at), nonpos_min)
    } else {
        None
    };
    let Some(mut b) = best else {
        return (0.0, constant);
    };
    for _ in 0..AFFINE_ROUNDS {
        if b.0 <= 0.0 {
            break;
        }
        let s = affine_codes(x, w, safe_inv(b.0), b.1, nmax, &mut q);
        match mom.solve(s, nonpos_min) {
            Some(c) if c.2 < b.2 - noise => b = c,
            _ => break,
        }
    }
    if b.0 <= 0.0 {
        return (0.0, constant);
    }
    (b.0, b.1)
}

/// Weighted error of x̂ = d·q + m with the codes rounded for (d, m); the codes go to `q`.
#[inline(always)]
fn affine_error<const N: usize>(
    x: &[f32; N],
    w: &[f32; N],
    d: f32,
    m: f32,
    nmax: f32,
    q: &mut [f32; N],
) -> f32 {
    let inv = safe_inv(d);
    let mut e = [0.0f32; LANES];
    for c in 0..N / LANES {
        for k in 0..LANES {
            let i = c * LANES + k;
            let l = round_even_small(((x[i] - m) * inv).clamp(0.0, nmax));
            q[i] = l;
            let r = x[i] - (d * l + m);
            e[k] += w[i] * r * r;
        }
    }
    hsum(e)
}

/// Byte j = code j (low nibble) | code j + 16 (high nibble), for a 32-code block.
#[inline(always)]
fn pack_nibbles_32(codes: &[u8; QK], out: &mut [u8]) {
    for j in 0..16 {
        out[j] = (codes[j] & 0x0f) | ((codes[j + 16] & 0x0f) << 4);
    }
}

/// Bit j = bit 4 of code j (Q5_0/Q5_1's `qh`).
#[inline(always)]
fn high_bits_32(codes: &[u8; QK]) -> u32 {
    let mut qh = 0u32;
    for (j, &c) in codes.iter().enumerate() {
        qh |= (((c >> 4) & 1) as u32) << j;
    }
    qh
}

// ---------------------------------------------------------------------------------------
// Q5_0

/// How Q5_0 blocks are searched: codes in [−16, 15], inverse scales s·max|x| in [12, 17]
/// (the optimum of a 5-bit block lies there in practice; wider windows cost time and
/// found nothing better on Gaussian rows).
pub(super) const Q5_0_SEARCH: Symmetric = Symmetric {
    neg_max: 16,
    pos_max: 15,
    window: Window { lo: 12.0, hi: 17.0 },
    both_signs: true,
    weight_ratio: None,
};

/// Q5_0 rows (`imp`: one value per column, its length the row length): d (f16), qh,
/// codes offset by 16 per block, searched like Q4_0
/// (`search::encode_symmetric`, never worse than llama.cpp's block), sixteen blocks at a
/// time (`sym_batch`).
#[inline(always)]
pub(super) fn quantize_rows_q5_0(src: &[f32], imp: Option<&[f32]>, out: &mut [u8]) {
    const NB: usize = 22;
    for (b, (src, out)) in src
        .chunks(BATCH * QK)
        .zip(out.chunks_mut(BATCH * NB))
        .enumerate()
    {
        let n = src.len() / QK;
        let (mut x, mut w) = ([[0.0f32; QK]; BATCH], [[0.0f32; QK]; BATCH]);
        for j in 0..n {
            // Importance is per column: batches run across row ends.
            let imp = imp.map(|v| &v[(b * BATCH + j) * QK % v.len()..][..QK]);
            // A block without inputs stays all zero, as an all-zero block encodes.
            if let Some((xj, wj)) = q5_0_inputs(&src[j * QK..][..QK], imp) {
                (x[j], w[j]) = (xj, wj);
            }
        }
        let enc = encode_symmetric_batch(&x, &w, n, &Q5_0_SEARCH);
        for (e, o) in enc.iter().zip(out.chunks_exact_mut(NB)) {
            o.fill(0);
            // An all-zero block (None) stays all-zero bytes.
            let Some((q, d)) = e else {
                continue;
            };
            put_f16(o, 0, f16_sat(*d));
            let mut codes = [0u8; QK];
            for (c, &v) in codes.iter_mut().zip(q) {
                *c = (v + 16) as u8;
            }
            o[2..6].copy_from_slice(&high_bits_32(&codes).to_le_bytes());
            pack_nibbles_32(&codes, &mut o[6..22]);
        }
    }
}

/// What a Q5_0 block is searched with: its values (non-finite ones as 0) and weights;
/// `None` for a block without a finite non-zero value.
#[inline(always)]
fn q5_0_inputs(src: &[f32], imp: Option<&[f32]>) -> Option<([f32; QK], [f32; QK])> {
    // The search takes real values (the stored scale is in their units) and weights of
    // any scale; without importance the block gets the symmetric types' data-free
    // weights, as Q4_0 and Q8_0 do.
    let src: &[f32; QK] = src.try_into().expect("one block of values");
    let mut x = [0.0f32; QK];
    for i in 0..QK {
        // Non-finite values as 0, as `prepare` takes them.
        x[i] = if src[i].abs() < f32::INFINITY {
            src[i]
        } else {
            0.0
        };
    }
    if x.iter().all(|v| *v == 0.0) {
        return None;
    }
    let w = match imp.map(sanitized_weights::<QK>) {
        Some((w, wmax)) if wmax > 0.0 => w,
        _ => data_free_weights(&x),
    };
    Some((x, w))
}

// ---------------------------------------------------------------------------------------
// Q4_K / Q5_K

/// Rounds of the second-level alternation (super-scales ↔ sub-block integers).
const K_ROUNDS: usize = 4;

/// Q4_K (nmax 15) or Q5_K (nmax 31): d, dmin (f16), 8 × (6-bit scale, 6-bit min),
/// [qh,] codes; sub-block j decodes as d·sc_j·q − dmin·m_j.
#[inline(always)]
fn block_q4k_q5k(src: &[f32], imp: Option<&[f32]>, nmax: u8, out: &mut [u8]) {
    out.fill(0);
    let Some(p) = prepare::<QK_K>(src, imp) else {
        return;
    };
    let nm = nmax as f32;
    let sub =
        |a: &[f32; QK_K], j: usize| -> [f32; QK] { a[QK * j..QK * (j + 1)].try_into().unwrap() };

    // Level one: every sub-block's own (scale ≥ 0, min ≥ 0) with x̂ = s·q − mn.
    let mut scale = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    for j in 0..8 {
        let (xs, ws) = (sub(&p.x, j), sub(&p.w, j));
        let (s, m) = fit_affine(&xs, &ws, &Moments::of(&xs, &ws), nm, true);
        scale[j] = s.max(0.0);
        mins[j] = (-m).max(0.0);
    }

    // Level two.
    let mut d = scale.iter().fold(0.0f32, |a, &b| a.max(b)) / 63.0;
    let mut dmin = mins.iter().fold(0.0f32, |a, &b| a.max(b)) / 63.0;
    #[derive(Clone, Copy)]
    struct Enc {
        err: f32,
        d: f16,
        dmin: f16,
        ls: [u8; 8],
        lm: [u8; 8],
        q: [f32; QK_K],
    }
    let mut best: Option<Enc> = None;
    let mut cur = Enc {
        err: 0.0,
        d: f16::ZERO,
        dmin: f16::ZERO,
        ls: [0; 8],
        lm: [0; 8],
        q: [0.0; QK_K],
    };
    for _ in 0..K_ROUNDS {
        cur.d = f16_sat(d * p.amax);
        cur.dmin = f16_sat(dmin * p.amax);
        let (dn, mn) = (through_f16(cur.d, p.amax), through_f16(cur.dmin, p.amax));
        cur.err = 0.0;
        for j in 0..8 {
            let (x, w) = (sub(&p.x, j), sub(&p.w, j));
            let ls_c = neighbours(scale[j], dn, 63.0);
            let lm_c = neighbours(mins[j], mn, 63.0);
            let mut q = [0.0f32; QK];
            let mut pick = (f32::INFINITY, 0u8, 0u8, [0.0f32; QK]);
            for &ls in ls_c.iter() {
                for &lm in lm_c.iter() {
                    let e = affine_error(&x, &w, dn * ls, -(mn * lm), nm, &mut q);
                    if e < pick.0 {
                        pick = (e, ls as u8, lm as u8, q);
                    }
                }
            }
            cur.err += pick.0;
            cur.ls[j] = pick.1;
            cur.lm[j] = pick.2;
            cur.q[QK * j..QK * (j + 1)].copy_from_slice(&pick.3);
        }
        if best.as_ref().is_none_or(|b| cur.err < b.err) {
            best = Some(cur);
        }
        // Re-fit (d, dmin) to the integers: x̂ = d·a − dmin·b with a = ls·q, b = lm.
        let (mut saa, mut sab, mut sbb, mut sxa, mut sxb) = (0.0f64, 0.0f64, 0.0f64, 0.0, 0.0);
        for j in 0..8 {
            let (ls, lm) = (cur.ls[j] as f32, cur.lm[j] as f32);
            let (mut sw, mut sq, mut sqq, mut swx, mut sxq) = (0.0f32, 0.0, 0.0, 0.0, 0.0);
            for i in QK * j..QK * (j + 1) {
                let (wi, qi, xi) = (p.w[i], cur.q[i], p.x[i]);
                sw += wi;
                sq += wi * qi;
                sqq += wi * qi * qi;
                swx += wi * xi;
                sxq += wi * xi * qi;
            }
            let (ls, lm) = (ls as f64, lm as f64);
            saa += ls * ls * sqq as f64;
            sab += ls * lm * sq as f64;
            sbb += lm * lm * sw as f64;
            sxa += ls * sxq as f64;
            sxb += lm * swx as f64;
        }
        // Minimise Σw(x − d·a + e·b)²: [saa −sab; −sab sbb]·[d; e] = [sxa; −sxb].
        let det = saa * sbb - sab * sab;
        let (nd, ne) = if sbb > 0.0 && det > 1e-12 * saa * sbb {
            ((sxa * sbb - sab * sxb) / det, (sab * sxa - saa * sxb) / det)
        } else if saa > 0.0 {
            (sxa / saa, 0.0)
        } else {
            break;
        };
        let (nd, ne) = if ne < 0.0 && saa > 0.0 {
            (sxa / saa, 0.0)
        } else {
            (nd, ne)
        };
        if nd.is_nan() || nd < 0.0 || !nd.is_finite() || !ne.is_finite() {
            break;
        }
        // The next round depends on (d, dmin) only through their f16 values: the same
        // f16s would repeat this round exactly.
        if (nd as f32 == d && ne as f32 == dmin)
            || (f16_sat(nd as f32 * p.amax) == cur.d && f16_sat(ne as f32 * p.amax) == cur.dmin)
        {
            break;
        }
        d = nd as f32;
        dmin = ne as f32;
    }
    let b = best.expect("at least one round");
    put_f16(out, 0, b.d);
    put_f16(out, 2, b.dmin);
    pack_k4_scales(&b.ls, &b.lm, &mut out[4..16]);
    let mut codes = [0u8; QK_K];
    for (c, &v) in codes.iter_mut().zip(&b.q) {
        *c = code_byte(v);
    }
    let qs = if nmax == 15 {
        &mut out[16..144]
    } else {
        let qh = &mut out[16..48];
        for c in 0..4 {
            for l in 0..32 {
                qh[l] |= ((codes[64 * c + l] >> 4) & 1) << (2 * c);
                qh[l] |= ((codes[64 * c + l + 32] >> 4) & 1) << (2 * c + 1);
            }
        }
        &mut out[48..176]
    };
    for c in 0..4 {
        for l in 0..32 {
            qs[32 * c + l] = (codes[64 * c + l] & 0x0f) | ((codes[64 * c + l + 32] & 0x0f) << 4);
        }
    }
}

/// The two integers in 0..=max around `v / unit` (one if they coincide at a bound; just
/// 0 when `unit` is 0).
#[inline(always)]
fn neighbours(v: f32, unit: f32, max: f32) -> Vec2 {
    if unit <= 0.0 {
        return Vec2::one(0.0);
    }
    let t = (v / unit).clamp(0.0, max);
    let f = t.floor();
    let c = (f + 1.0).min(max);
    if c == f {
        Vec2::one(f)
    } else {
        Vec2::two(f, c)
    }
}

/// One or two candidate integers (no allocation).
struct Vec2 {
    v: [f32; 2],
    n: usize,
}

impl Vec2 {
    fn one(a: f32) -> Vec2 {
        Vec2 { v: [a, a], n: 1 }
    }
    fn two(a: f32, b: f32) -> Vec2 {
        Vec2 { v: [a, b], n: 2 }
    }
}

impl std::ops::Deref for Vec2 {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.v[..self.n]
    }
}

/// ggml's 12-byte packing of eight 6-bit (scale, min) pairs (inverse of
/// `get_scale_min_k4`).
#[inline(always)]
fn pack_k4_scales(ls: &[u8; 8], lm: &[u8; 8], out: &mut [u8]) {
    out.fill(0);
    for j in 0..8 {
        let (s, m) = (ls[j] & 63, lm[j] & 63);
        if j < 4 {
            out[j] |= s;
            out[j + 4] |= m;
        } else {
            out[j + 4] = (s & 0x0f) | ((m & 0x0f) << 4);
            out[j - 4] |= (s >> 4) << 6;
            out[j] |= (m >> 4) << 6;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Q6_K

/// Sub-blocks of Q6_K and their size.
const Q6_SUBS: usize = 16;
const Q6_SUB: usize = 16;

/// Q6_K: 16 sub-blocks of 16, codes in −32..=31, i8 sub-scales, f16 d; sub-block j
/// decodes as d·sc_j·q.
#[inline(always)]
fn block_q6_k(src: &[f32], imp: Option<&[f32]>, out: &mut [u8]) {
    out.fill(0);
    let Some(p) = prepare::<QK_K>(src, imp) else {
        return;
    };
    // Level one: each sub-block's least-squares scale for llama.cpp's rounding (largest
    // magnitude ↦ −32). Only a starting point: level two searches the quantized scales
    // around it with the codes re-rounded.
    let mut scale = [0.0f32; Q6_SUBS];
    for j in 0..Q6_SUBS {
        let r = Q6_SUB * j..Q6_SUB * (j + 1);
        scale[j] = q6_sub_scale(&p.x[r.clone()], &p.w[r]);
    }
    let amax_s = scale.iter().fold(0.0f32, |a, &b| a.max(b.abs()));
    if amax_s == 0.0 {
        return;
    }
    let mut d = amax_s / 127.0;
    let mut best: Option<(f32, f16, [i8; Q6_SUBS], [f32; QK_K])> = None;
    let mut q = [0.0f32; QK_K];
    let mut sc = [0i8; Q6_SUBS];
    for _ in 0..K_ROUNDS {
        let h = f16_sat(d * p.amax);
        let dn = through_f16(h, p.amax);
        let mut err = 0.0f32;
        for j in 0..Q6_SUBS {
            let r = Q6_SUB * j..Q6_SUB * (j + 1);
            let (x, w) = (&p.x[r.clone()], &p.w[r.clone()]);
            let mut pick = (f32::INFINITY, 0i8, [0.0f32; Q6_SUB]);
            // Sub-scales within ±2 of the ideal one (each evaluated with its own codes).
            let t = if dn > 0.0 {
                round_even_small(scale[j] / dn)
            } else {
                0.0
            };
            for k in [t - 2.0, t - 1.0, t, t + 1.0, t + 2.0] {
                if !(-128.0..=127.0).contains(&k) || (dn == 0.0 && k != 0.0) {
                    continue;
                }
                let dk = dn * k;
                // Negative scales are fine: the codes' range is signed.
                let inv = safe_inv(dk.abs()).copysign(dk);
                let mut e = 0.0f32;
                let mut qq = [0.0f32; Q6_SUB];
                for i in 0..Q6_SUB {
                    let l = round_even_small((x[i] * inv).clamp(-32.0, 31.0));
                    qq[i] = l;
                    let rr = x[i] - dk * l;
                    e += w[i] * rr * rr;
                }
                if e < pick.0 {
                    pick = (e, k as i8, qq);
                }
            }
            err += pick.0;
            sc[j] = pick.1;
            q[r].copy_from_slice(&pick.2);
        }
        if best.as_ref().is_none_or(|b| err < b.0) {
            best = Some((err, h, sc, q));
        }
        // Re-fit d: x̂ = d·(sc·q).
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for j in 0..Q6_SUBS {
            let k = sc[j] as f32;
            let (mut a, mut b) = (0.0f32, 0.0f32);
            for i in Q6_SUB * j..Q6_SUB * (j + 1) {
                a += p.w[i] * p.x[i] * q[i];
                b += p.w[i] * q[i] * q[i];
            }
            num += (k * a) as f64;
            den += (k * k * b) as f64;
        }
        if den.is_nan() || den <= 0.0 {
            break;
        }
        let nd = (num / den) as f32;
        // The next round depends on d only through its f16 value.
        if nd.is_nan() || nd <= 0.0 || nd == d || f16_sat(nd * p.amax) == h {
            break;
        }
        d = nd;
    }
    let (_, h, sc, q) = best.expect("at least one round");
    let mut codes = [0u8; QK_K];
    for (c, &v) in codes.iter_mut().zip(&q) {
        *c = code_byte(v + 32.0);
    }
    let (ql, rest) = out.split_at_mut(128);
    let (qh, rest) = rest.split_at_mut(64);
    for half in 0..2 {
        let (l0, ql, qh) = (128 * half, &mut ql[64 * half..], &mut qh[32 * half..]);
        for l in 0..32 {
            let c = |k: usize| codes[l0 + l + 32 * k];
            ql[l] = (c(0) & 0x0f) | ((c(2) & 0x0f) << 4);
            ql[l + 32] = (c(1) & 0x0f) | ((c(3) & 0x0f) << 4);
            qh[l] = (c(0) >> 4) | ((c(1) >> 4) << 2) | ((c(2) >> 4) << 4) | ((c(3) >> 4) << 6);
        }
    }
    for (o, &s) in rest[..16].iter_mut().zip(&sc) {
        *o = s as u8;
    }
    put_f16(rest, 16, h);
}

/// A starting scale s for x̂ = s·q, q in −32..=31, of one Q6_K sub-block (normalised
/// values): the best least-squares scale over codes rounded with the largest magnitude
/// mapped near −32 or near +31 (eight inverse scales), or llama.cpp's rule (largest ↦ −32)
/// if the weights are all 0.
#[inline(always)]
fn q6_sub_scale(x: &[f32], w: &[f32]) -> f32 {
    let mut max = 0.0f32;
    for &v in x {
        if v.abs() > max.abs() {
            max = v;
        }
    }
    if max == 0.0 {
        return 0.0;
    }
    let mut best = (0.0f32, -max / 32.0);
    for target in [-32.0f32, 31.0] {
        for r in [-1.5f32, -1.0, -0.5, 0.0] {
            let is = (target - r.copysign(target)) / max;
            let (mut num, mut den) = ([0.0f32; LANES], [0.0f32; LANES]);
            for c in 0..Q6_SUB / LANES {
                for k in 0..LANES {
                    let i = c * LANES + k;
                    let l = round_even_small((x[i] * is).clamp(-32.0, 31.0));
                    num[k] += w[i] * x[i] * l;
                    den[k] += w[i] * l * l;
                }
            }
            let (num, den) = (hsum(num), hsum(den));
            // Error Σwx² − num²/den: the larger num²/den, the better.
            if den > 0.0 && num * num / den > best.0 {
                best = (num * num / den, num / den);
            }
        }
    }
    best.1
}
