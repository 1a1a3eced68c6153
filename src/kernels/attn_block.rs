//! Blocked attention of a batch of queries that share a kv head (see
//! [`super::Kernels::attn_block_f32`]): the prompt path at depth, where attention, not the
//! matrices, is most of the time.
//!
//! Per block of queries (the query heads of several consecutive tokens), the keys go by
//! in tiles of [`TILE`] rows, converted to f32 once for the whole block. The scores of a
//! tile are a small matrix product laid out key by query (`st[j][i]`), so a vector holds
//! one key's scores for `LANES` queries: no horizontal reduction anywhere, and the softmax
//! runs across queries as plain vector code. The softmax is online (each query keeps its
//! running maximum and sum, and its output is rescaled when the maximum grows), so nothing
//! the size of queries × context is ever held.
//!
//! Unlike the other skeletons this one is not bit-identical to its scalar reference (one
//! query at a time, two-pass softmax with `f32::exp`): the sums run in another order and
//! `exp` is the polynomial. tests/kernels.rs bounds the difference at every level.

use half::f16;

use super::simd::{Elem, F32Simd};
use crate::quant::{BlockQ8_0, QK};

/// Keys per tile: the converted keys and values (`TILE · hd` floats each) and the tile's
/// scores stay in L1/L2 while every query of the block reads them.
pub(crate) const TILE: usize = 64;
/// Register tile of the two products: `ROWS` keys (scores) or queries (values) by `VECS`
/// vectors of queries (scores) or head values (values). `ROWS` is the level's: 4 where
/// there are 16 vector registers (AVX2; 8 spilled and ran 30% slower), 8 where there are
/// 32 (AVX-512, NEON).
const VECS: usize = 2;

/// The shape of a blocked attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnBlock<'a> {
    /// Values per query, key, value and output row.
    pub hd: usize,
    /// Queries per token: the query heads that share this kv head. Query `i` belongs to
    /// token `i / heads`.
    pub heads: usize,
    /// Distance between consecutive cache rows, in elements.
    pub stride: usize,
    /// Per token, how many cache rows (from the first) it attends to; each at least 1.
    pub lens: &'a [usize],
    /// Per token, the first of those rows it sees (a sliding window hides the earlier
    /// ones): `starts[t] < lens[t]`. Empty: every token sees its rows from the first.
    pub starts: &'a [usize],
    /// Factor applied to every score before the softmax (`1/√hd`).
    pub scale: f32,
}

impl AttnBlock<'_> {
    /// Check a call's slice lengths and return `(queries, rows read)`; panics when they
    /// do not fit (a caller's bug, as for the other attention kernels). `keys` and `vals`
    /// count values, `per` values per cache element (rows start and end on elements).
    pub(crate) fn check(
        &self,
        qlen: usize,
        keys: usize,
        vals: usize,
        out: usize,
        per: usize,
    ) -> (usize, usize) {
        assert!(
            self.hd > 0
                && self.heads > 0
                && self.stride >= self.hd
                && self.hd.is_multiple_of(per)
                && self.stride.is_multiple_of(per),
            "attention block: head size {}, {} heads, stride {}, {per} values per element",
            self.hd,
            self.heads,
            self.stride
        );
        assert!(
            self.lens.iter().all(|&l| l > 0),
            "attention block: a token attends to no key"
        );
        assert!(
            self.starts.is_empty()
                || (self.starts.len() == self.lens.len()
                    && self.starts.iter().zip(self.lens).all(|(s, l)| s < l)),
            "attention block: a window starts past its token's last key"
        );
        let nq = self
            .lens
            .len()
            .checked_mul(self.heads)
            .expect("attention block: size overflow");
        let width = nq.checked_mul(self.hd);
        assert!(
            width == Some(qlen) && qlen == out,
            "attention block: {qlen} query and {out} output values for {nq} queries of {}",
            self.hd
        );
        let rows = self.lens.iter().copied().max().unwrap_or(0);
        super::attn_dims(rows, self.hd, self.stride, keys);
        super::attn_dims(rows, self.hd, self.stride, vals);
        (nq, rows)
    }

    /// The first row token `t` sees.
    pub(crate) fn start(&self, t: usize) -> usize {
        self.starts.get(t).copied().unwrap_or(0)
    }
}

/// A cache element type the blocked kernel reads: f32 and f16 values, or Q8_0 blocks of
/// [`QK`] values (rows then start and end on block boundaries).
pub(crate) trait CacheElem: Copy {
    /// Values per element.
    const PER: usize;
    /// `dst = src` in f32; `src` holds `dst.len() / PER` elements.
    fn to_f32<S: F32Simd>(s: S, src: &[Self], dst: &mut [f32]);
}

impl<E: Elem> CacheElem for E {
    const PER: usize = 1;
    #[inline(always)]
    fn to_f32<S: F32Simd>(s: S, src: &[E], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len());
        let l = S::LANES;
        let n = src.len() / l * l;
        for d in (0..n).step_by(l) {
            // SAFETY: d + LANES <= n <= src.len() == dst.len().
            unsafe {
                s.store(
                    dst.as_mut_ptr().add(d),
                    E::load_n::<S, 1>(s, src.as_ptr().add(d))[0],
                )
            };
        }
        for d in n..src.len() {
            dst[d] = E::to_f32(s, src[d]);
        }
    }
}

impl CacheElem for BlockQ8_0 {
    const PER: usize = QK;
    #[inline(always)]
    fn to_f32<S: F32Simd>(s: S, src: &[BlockQ8_0], dst: &mut [f32]) {
        assert_eq!(src.len() * QK, dst.len());
        for (b, out) in src.iter().zip(dst.chunks_exact_mut(QK)) {
            let d = s.h2f(f16::from_bits(b.d));
            // A plain loop: LLVM widens it to the level's vectors.
            for (o, &q) in out.iter_mut().zip(&b.qs) {
                *o = q as f32 * d;
            }
        }
    }
}

/// Scratch of one call: `floats` values, carved into the pieces below.
struct Layout {
    /// Queries padded to whole vectors.
    nqp: usize,
    floats: usize,
}

impl Layout {
    fn new(nq: usize, hd: usize, lanes: usize) -> Layout {
        let nqp = nq.div_ceil(lanes) * lanes;
        // qt: hd × nqp; keys and values: TILE × hd each; st: TILE × nqp; max, sum and
        // rescale factor per query; acc: nqp × hd.
        let floats = hd * nqp + 2 * TILE * hd + TILE * nqp + 3 * nqp + nqp * hd;
        Layout { nqp, floats }
    }
}

/// The shape of one pass over a tile of keys: values per row, queries (and queries padded
/// to whole vectors), keys in the tile.
#[derive(Clone, Copy)]
struct Tile {
    hd: usize,
    nq: usize,
    nqp: usize,
    nk: usize,
}

/// The blocked attention skeleton: `out[i] = Σ_j softmax_j(scale · q[i]·k[j]) · v[j]`
/// over `j < lens[i / heads]`, for every query `i` (see the module comment).
#[inline(always)]
pub(crate) fn attn_block<S: F32Simd, E: CacheElem, const ROWS: usize>(
    s: S,
    b: &AttnBlock,
    q: &[f32],
    keys: &[E],
    vals: &[E],
    scratch: &mut Vec<f32>,
    out: &mut [f32],
) {
    const { assert!(TILE.is_multiple_of(ROWS) && ROWS >= 4) };
    let values = |n: usize| {
        n.checked_mul(E::PER)
            .expect("attention block: size overflow")
    };
    let (nq, rows) = b.check(
        q.len(),
        values(keys.len()),
        values(vals.len()),
        out.len(),
        E::PER,
    );
    let (hd, lanes) = (b.hd, S::LANES);
    let lay = Layout::new(nq, hd, lanes);
    let nqp = lay.nqp;
    scratch.clear();
    scratch.resize(lay.floats, 0.0);
    let (qt, rest) = scratch.split_at_mut(hd * nqp);
    let (kf, rest) = rest.split_at_mut(TILE * hd);
    let (vf, rest) = rest.split_at_mut(TILE * hd);
    let (st, rest) = rest.split_at_mut(TILE * nqp);
    let (max, rest) = rest.split_at_mut(nqp);
    let (sum, rest) = rest.split_at_mut(nqp);
    let (rescale, acc) = rest.split_at_mut(nqp);
    // The queries transposed (a vector is one dimension of `LANES` queries) and scaled;
    // the padding queries stay zero and see every key.
    for (i, qi) in q.chunks_exact(hd).enumerate() {
        for (d, &v) in qi.iter().enumerate() {
            qt[d * nqp + i] = v * b.scale;
        }
    }
    // The running maxima start at the lowest finite value, not −∞: under a sliding
    // window a query may see no key of a whole tile, and e^(−∞ − (−∞)) would be NaN.
    max.fill(f32::MIN);
    let first = (0..b.lens.len()).map(|t| b.start(t)).min().unwrap_or(0);
    for j0 in (first..rows).step_by(TILE) {
        let nk = TILE.min(rows - j0);
        for j in 0..nk {
            let at = (j0 + j) * b.stride / E::PER;
            let end = at + hd / E::PER;
            E::to_f32(s, &keys[at..end], &mut kf[j * hd..(j + 1) * hd]);
            E::to_f32(s, &vals[at..end], &mut vf[j * hd..(j + 1) * hd]);
        }
        let sh = Tile { hd, nq, nqp, nk };
        tile_scores::<S, ROWS>(s, sh, qt, kf, st);
        mask(b, sh, j0, st, f32::NEG_INFINITY);
        softmax_step(s, sh, st, max, sum, rescale);
        // e^-∞ is a tiny positive with the polynomial, not 0: masked keys get exactly 0.
        mask(b, sh, j0, st, 0.0);
        for (a, &c) in acc.chunks_exact_mut(hd).zip(rescale.iter()) {
            if c != 1.0 {
                scale_row(s, a, c);
            }
        }
        tile_values::<S, ROWS>(s, sh, st, vf, acc);
    }
    for ((o, a), &l) in out
        .chunks_exact_mut(hd)
        .zip(acc.chunks_exact(hd))
        .zip(sum.iter())
    {
        o.copy_from_slice(a);
        scale_row(s, o, 1.0 / l);
    }
}

/// `row *= c`.
#[inline(always)]
fn scale_row<S: F32Simd>(s: S, row: &mut [f32], c: f32) {
    let l = S::LANES;
    let n = row.len() / l * l;
    let cv = s.splat(c);
    for d in (0..n).step_by(l) {
        // SAFETY: d + LANES <= row.len().
        unsafe {
            let p = row.as_mut_ptr().add(d);
            s.store(p, s.mul(s.load(p), cv));
        }
    }
    row[n..].iter_mut().for_each(|v| *v *= c);
}

/// `st[j][i] = Σ_d kf[j][d] · qt[d][i]` for the keys `j < nk` rounded up to `ROWS` (the
/// extra rows read stale tile rows and are never used) and every query vector.
#[inline(always)]
fn tile_scores<S: F32Simd, const ROWS: usize>(
    s: S,
    sh: Tile,
    qt: &[f32],
    kf: &[f32],
    st: &mut [f32],
) {
    let l = S::LANES;
    let full = sh.nqp / (VECS * l) * (VECS * l);
    for j in (0..sh.nk).step_by(ROWS) {
        for i in (0..full).step_by(VECS * l) {
            scores_tile::<S, ROWS, VECS>(s, sh, qt, kf, j, i, st);
        }
        for i in (full..sh.nqp).step_by(l) {
            scores_tile::<S, ROWS, 1>(s, sh, qt, kf, j, i, st);
        }
    }
}

/// Keys `j..j + ROWS` against queries `i..i + V · LANES`.
#[inline(always)]
fn scores_tile<S: F32Simd, const ROWS: usize, const V: usize>(
    s: S,
    sh: Tile,
    qt: &[f32],
    kf: &[f32],
    j: usize,
    i: usize,
    st: &mut [f32],
) {
    let (l, hd, nqp) = (S::LANES, sh.hd, sh.nqp);
    assert!((j + ROWS) * hd <= kf.len() && (j + ROWS) * nqp <= st.len());
    assert!(i + V * l <= nqp && hd * nqp <= qt.len());
    let mut a = [[s.zero(); V]; ROWS];
    for d in 0..hd {
        // SAFETY: d < hd and i + V · LANES <= nqp, so every query vector is inside `qt`
        // (asserted above); keys j + r < j + ROWS rows of `hd` are inside `kf`.
        unsafe {
            let qp = qt.as_ptr().add(d * nqp + i);
            let qv: [S::V; V] = std::array::from_fn(|u| s.load(qp.add(u * l)));
            for (r, ar) in a.iter_mut().enumerate() {
                let kb = s.splat(*kf.get_unchecked((j + r) * hd + d));
                for u in 0..V {
                    ar[u] = s.fma(kb, qv[u], ar[u]);
                }
            }
        }
    }
    for (r, ar) in a.iter().enumerate() {
        for (u, v) in ar.iter().enumerate() {
            // SAFETY: row j + r < j + ROWS of `st` holds nqp >= i + V · LANES values.
            unsafe { s.store(st.as_mut_ptr().add((j + r) * nqp + i + u * l), *v) };
        }
    }
}

/// Sets the scores of keys a query must not see (tile rows `j0 + j >= lens[token]`, or
/// `< starts[token]`) to `fill`. Only the last tiles of a block have any, and under a
/// sliding window the first ones.
fn mask(b: &AttnBlock, sh: Tile, j0: usize, st: &mut [f32], fill: f32) {
    for i in 0..sh.nq {
        let t = i / b.heads;
        let (start, len) = (b.start(t), b.lens[t]);
        for j in (0..start.saturating_sub(j0).min(sh.nk)).chain(len.saturating_sub(j0)..sh.nk) {
            st[j * sh.nqp + i] = fill;
        }
    }
}

/// One tile of the online softmax, `LANES` queries at a time: the running maximum grows
/// to the tile's, `rescale` gets `e^(old − new)` for the sums and outputs so far, the
/// scores become `e^(score − max)` and are added to the running sums.
#[inline(always)]
fn softmax_step<S: F32Simd>(
    s: S,
    sh: Tile,
    st: &mut [f32],
    max: &mut [f32],
    sum: &mut [f32],
    rescale: &mut [f32],
) {
    let (l, nqp, nk) = (S::LANES, sh.nqp, sh.nk);
    assert!(nk * nqp <= st.len() && max.len() == nqp && sum.len() == nqp && rescale.len() == nqp);
    for i in (0..nqp).step_by(l) {
        // SAFETY: i + LANES <= nqp (a multiple of LANES), so every access below is inside
        // the per-query slices and inside row j < nk of `st` (asserted above).
        unsafe {
            let col = st.as_mut_ptr().add(i);
            let mut m = s.load(max.as_ptr().add(i));
            let old = m;
            for j in 0..nk {
                m = s.max(m, s.load(col.add(j * nqp)));
            }
            s.store(max.as_mut_ptr().add(i), m);
            let c = s.exp(s.sub(old, m));
            s.store(rescale.as_mut_ptr().add(i), c);
            let mut total = s.zero();
            for j in 0..nk {
                let p = s.exp(s.sub(s.load(col.add(j * nqp)), m));
                s.store(col.add(j * nqp), p);
                total = s.add(total, p);
            }
            let sp = sum.as_mut_ptr().add(i);
            s.store(sp, s.fma(s.load(sp), c, total));
        }
    }
}

/// `acc[i][d] += Σ_{j<nk} st[j][i] · vf[j][d]` for the queries `i < nq`.
#[inline(always)]
fn tile_values<S: F32Simd, const ROWS: usize>(
    s: S,
    sh: Tile,
    st: &[f32],
    vf: &[f32],
    acc: &mut [f32],
) {
    let mut i = 0;
    // Whole register tiles, then the rest in tiles of 4, 3, 2 or 1 queries.
    while i < sh.nq {
        let r = match sh.nq - i {
            r if r >= ROWS => ROWS,
            r => r.min(4),
        };
        match r {
            1 => values_rows::<S, 1>(s, sh, st, vf, i, acc),
            2 => values_rows::<S, 2>(s, sh, st, vf, i, acc),
            3 => values_rows::<S, 3>(s, sh, st, vf, i, acc),
            4 => values_rows::<S, 4>(s, sh, st, vf, i, acc),
            _ => values_rows::<S, ROWS>(s, sh, st, vf, i, acc),
        }
        i += r;
    }
}

/// Queries `i..i + R`: whole `VECS`-vector column strips, single vectors, then the
/// scalar tail of the head.
#[inline(always)]
fn values_rows<S: F32Simd, const R: usize>(
    s: S,
    sh: Tile,
    st: &[f32],
    vf: &[f32],
    i: usize,
    acc: &mut [f32],
) {
    let (l, hd) = (S::LANES, sh.hd);
    let full = hd / (VECS * l) * (VECS * l);
    let vecs = hd / l * l;
    for d in (0..full).step_by(VECS * l) {
        values_tile::<S, R, VECS>(s, sh, st, vf, i, d, acc);
    }
    for d in (full..vecs).step_by(l) {
        values_tile::<S, R, 1>(s, sh, st, vf, i, d, acc);
    }
    for r in 0..R {
        for d in vecs..hd {
            let mut a = acc[(i + r) * hd + d];
            for j in 0..sh.nk {
                a += st[j * sh.nqp + i + r] * vf[j * hd + d];
            }
            acc[(i + r) * hd + d] = a;
        }
    }
}

/// Queries `i..i + R`, head values `d..d + V · LANES`, over the tile's keys.
#[inline(always)]
fn values_tile<S: F32Simd, const R: usize, const V: usize>(
    s: S,
    sh: Tile,
    st: &[f32],
    vf: &[f32],
    i: usize,
    d: usize,
    acc: &mut [f32],
) {
    let (l, hd, nqp, nk) = (S::LANES, sh.hd, sh.nqp, sh.nk);
    assert!(d + V * l <= hd && (i + R) * hd <= acc.len());
    assert!(nk * hd <= vf.len() && nk * nqp <= st.len() && i + R <= nqp);
    // SAFETY: rows i + r < i + R of `acc` hold hd >= d + V · LANES values; rows j < nk of
    // `vf` (hd values) and of `st` (nqp > i + r values) are inside them (asserted above).
    unsafe {
        let ap = acc.as_mut_ptr();
        let mut a: [[S::V; V]; R] = std::array::from_fn(|r| {
            std::array::from_fn(|u| s.load(ap.add((i + r) * hd + d + u * l)))
        });
        for j in 0..nk {
            let vp = vf.as_ptr().add(j * hd + d);
            let vv: [S::V; V] = std::array::from_fn(|u| s.load(vp.add(u * l)));
            let pp = st.as_ptr().add(j * nqp + i);
            for (r, ar) in a.iter_mut().enumerate() {
                let pb = s.splat(*pp.add(r));
                for u in 0..V {
                    ar[u] = s.fma(pb, vv[u], ar[u]);
                }
            }
        }
        for (r, ar) in a.iter().enumerate() {
            for (u, v) in ar.iter().enumerate() {
                s.store(ap.add((i + r) * hd + d + u * l), *v);
            }
        }
    }
}
