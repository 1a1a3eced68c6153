//! Causal attention of a batch's queries against the KV cache: per query and head,
//! [`attend`] (scores, softmax, weighted values), and beside it the ring bookkeeping that
//! says which rows a query reads ([`Slots`]) and how it reads the sinks ([`Queries`]).

use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;

use super::{ModelConfig, Rope};
use crate::kernels::attn_block::CacheElem;
use crate::kernels::{AttnBlock, AttnBlockFn, AttnGroup, Kernels};
use crate::kv::{axpy, LayerView, StoreRef};
use crate::quant::{BlockQ8_0, QK};

/// Per batch token, cos and -sin of the rotation that moves the sinks next to the window
/// (see "RoPE with a ring" in `crate::kv`); rows of `head_dim / 2`, read only for the
/// tokens whose [`LayerView::sink_delta`] is non-zero.
pub(super) struct SinkRotation<'a> {
    pub cos: &'a [f32],
    pub sin: &'a [f32],
}

/// `out = softmax(q·Kᵀ · scale) · V` (`ModelConfig::attn_scale`: 1/√head_dim but for
/// Gemma) for every query head of every batch token, against the cache (which already
/// holds the batch's keys and values). A batch of several tokens that does not wrap the
/// cache goes by blocks of tokens per kv head through the blocked kernels
/// ([`attention_blocked`]: tiles of keys, online softmax). Otherwise the query heads that
/// share a kv head go together (split across threads by token and kv head): with a float
/// cache and no slot overwritten by a later token of the batch, each key and value row is
/// read once for the whole group ([`attend_group`]); otherwise head by head ([`attend`]).
/// Slot order is position order until the window wraps.
///
/// A layer with a sliding `window` (Gemma 3) hides from each query the keys `window` or
/// more positions back (see [`distance`] once the ring has wrapped).
pub(super) fn attention(
    k: &Kernels,
    cfg: &ModelConfig,
    q: &[f32],
    view: &LayerView<'_>,
    sink: &SinkRotation<'_>,
    window: Option<usize>,
    out: &mut [f32],
) {
    if attention_blocked(k, cfg, q, view, window, out) {
        return;
    }
    thread_local! {
        static SCRATCH: RefCell<HeadScratch> = RefCell::new(HeadScratch::default());
    }
    let (hd, n_kv, kv_dim) = (cfg.head_dim, cfg.n_kv_heads, cfg.kv_dim());
    let group = cfg.n_heads / cfg.n_kv_heads;
    let scale = cfg.attn_scale();
    let half = hd / 2;
    // Heads are laid out token by token, the `group` heads of a kv head next to each
    // other, so chunk `i` is kv head `i % n_kv` of token `i / n_kv`.
    out.par_chunks_mut(group * hd)
        .enumerate()
        .for_each(|(i, o)| {
            let (t, kvh) = (i / n_kv, i % n_kv);
            let slots = Slots::new(view, t, kvh * hd, hd, kv_dim, window);
            let rot = (
                &sink.cos[t * half..(t + 1) * half],
                &sink.sin[t * half..(t + 1) * half],
            );
            let qg = &q[i * group * hd..(i + 1) * group * hd];
            SCRATCH.with_borrow_mut(|sc| {
                if !attend_group(k, qg, &slots, rot, scale, sc, o) {
                    for (qh, oh) in qg.chunks_exact(hd).zip(o.chunks_exact_mut(hd)) {
                        let q = sc.q.prepare(k, qh, &slots, rot);
                        attend(k, &q, &slots, scale, &mut sc.scores, oh);
                    }
                }
            });
        });
}

/// Queries per call of the blocked kernels: enough that converting a tile of keys and
/// values to f32 once pays (each is then read by every query of the block), few enough
/// that a prompt still splits into many pieces of work.
const BLOCK_QUERIES: usize = 64;

/// A batch of several tokens against a cache that none of them wrapped (so token `t`
/// reads the first `visible(t)` slots, no sinks and no overwritten rows): blocks of
/// consecutive tokens per kv head go to `Kernels::attn_block_*`, split across threads by
/// block and kv head. Returns false, doing nothing, for any other batch.
fn attention_blocked(
    k: &Kernels,
    cfg: &ModelConfig,
    q: &[f32],
    view: &LayerView<'_>,
    window: Option<usize>,
    out: &mut [f32],
) -> bool {
    if view.n < 2 || view.pos + view.n > view.n_ctx {
        return false;
    }
    match (view.k, view.v) {
        (StoreRef::F32(kc), StoreRef::F32(vc)) => {
            blocks_in(k.attn_block_f32, cfg, q, kc, vc, view, window, out)
        }
        (StoreRef::F16(kc), StoreRef::F16(vc)) => {
            blocks_in(k.attn_block_f16, cfg, q, kc, vc, view, window, out)
        }
        (StoreRef::Q8_0(kc), StoreRef::Q8_0(vc)) => {
            blocks_in(k.attn_block_q8_0, cfg, q, kc, vc, view, window, out)
        }
        _ => return false,
    }
    true
}

/// [`attention_blocked`] for one cache element type.
#[allow(clippy::too_many_arguments)]
fn blocks_in<E: CacheElem + Sync>(
    kernel: AttnBlockFn<E>,
    cfg: &ModelConfig,
    q: &[f32],
    kc: &[E],
    vc: &[E],
    view: &LayerView<'_>,
    window: Option<usize>,
    out: &mut [f32],
) {
    #[derive(Default)]
    struct BlockScratch {
        q: Vec<f32>,
        out: Vec<f32>,
        lens: Vec<usize>,
        starts: Vec<usize>,
        work: Vec<f32>,
    }
    thread_local! {
        static SCRATCH: RefCell<BlockScratch> = RefCell::new(BlockScratch::default());
    }
    let (hd, n_kv) = (cfg.head_dim, cfg.n_kv_heads);
    let group = cfg.n_heads / n_kv;
    let width = group * hd;
    let tokens = (BLOCK_QUERIES / group).max(1);
    let n_blocks = view.n.div_ceil(tokens);
    // Chunk `i` of `out` (and of `q`) is kv head `i % n_kv` of token `i / n_kv`; piece
    // `b · n_kv + h` collects kv head h's chunks of the tokens of block b.
    let mut pieces: Vec<Vec<&mut [f32]>> = (0..n_blocks * n_kv)
        .map(|_| Vec::with_capacity(tokens))
        .collect();
    for (i, chunk) in out.chunks_exact_mut(width).enumerate() {
        let (t, h) = (i / n_kv, i % n_kv);
        pieces[t / tokens * n_kv + h].push(chunk);
    }
    let scale = cfg.attn_scale();
    pieces.into_par_iter().enumerate().for_each(|(p, chunks)| {
        let (b, h) = (p / n_kv, p % n_kv);
        let t0 = b * tokens;
        SCRATCH.with_borrow_mut(|sc| {
            sc.q.clear();
            sc.lens.clear();
            sc.starts.clear();
            for t in t0..t0 + chunks.len() {
                let i = t * n_kv + h;
                sc.q.extend_from_slice(&q[i * width..(i + 1) * width]);
                let len = view.visible(t);
                sc.lens.push(len);
                // Unwrapped, slot j holds position j: the window is the last w slots.
                if let Some(w) = window {
                    sc.starts.push(len.saturating_sub(w));
                }
            }
            sc.out.resize(sc.q.len(), 0.0);
            let shape = AttnBlock {
                hd,
                heads: group,
                stride: cfg.kv_dim(),
                lens: &sc.lens,
                starts: &sc.starts,
                scale,
            };
            let off = h * hd / E::PER;
            kernel(
                &shape,
                &sc.q,
                &kc[off..],
                &vc[off..],
                &mut sc.work,
                &mut sc.out,
            );
            for (chunk, o) in chunks.into_iter().zip(sc.out.chunks_exact(width)) {
                chunk.copy_from_slice(o);
            }
        });
    });
}

/// The query heads `qg` of one token that share a kv head, with a float cache read in
/// place (see [`attend_group_in`]). Returns false, doing nothing, when the slots need the
/// head-by-head path (a q8_0 cache, or rows that a later token of the batch overwrote).
fn attend_group(
    k: &Kernels,
    qg: &[f32],
    s: &Slots,
    rot: (&[f32], &[f32]),
    scale: f32,
    sc: &mut HeadScratch,
    o: &mut [f32],
) -> bool {
    if s.future || s.len == 0 {
        return false;
    }
    match (s.view.k, s.view.v) {
        (StoreRef::F32(kc), StoreRef::F32(vc)) => {
            let g = GroupKernels {
                scores: k.attn_scores_group_f32,
                values: k.attn_values_group_f32,
            };
            attend_group_in(k, &g, kc, vc, qg, s, rot, scale, sc, o);
        }
        (StoreRef::F16(kc), StoreRef::F16(vc)) => {
            let g = GroupKernels {
                scores: k.attn_scores_group_f16,
                values: k.attn_values_group_f16,
            };
            attend_group_in(k, &g, kc, vc, qg, s, rot, scale, sc, o);
        }
        _ => return false,
    }
    true
}

/// The grouped kernels of one cache element type.
struct GroupKernels<E> {
    scores: fn(&AttnGroup, &[f32], &[E], &mut [f32]),
    values: fn(&AttnGroup, &mut [f32], &[f32], &[E]),
}

/// Scores of all heads of the group (the sinks with the rotated queries), softmax per
/// head, weighted values: each cache row of `kc` / `vc` loaded once per group.
#[allow(clippy::too_many_arguments)]
fn attend_group_in<E>(
    k: &Kernels,
    g: &GroupKernels<E>,
    kc: &[E],
    vc: &[E],
    qg: &[f32],
    s: &Slots,
    (cos, sin): (&[f32], &[f32]),
    scale: f32,
    sc: &mut HeadScratch,
    o: &mut [f32],
) {
    let (len, ns, off, kv_dim, hd) = (s.len, s.n_sinks, s.off, s.kv_dim, s.hd);
    let nq = qg.len() / hd;
    let scores = &mut sc.scores;
    scores.clear();
    scores.resize(nq * len, 0.0);
    let shape = |n| AttnGroup {
        hd,
        n,
        stride: kv_dim,
        row_stride: len,
    };
    if ns > 0 {
        let rotated = &mut sc.q.sink;
        rotated.clear();
        rotated.extend_from_slice(qg);
        for h in rotated.chunks_exact_mut(hd) {
            Rope::apply(h, cos, sin);
        }
        (g.scores)(&shape(ns), rotated, &kc[off..], scores);
    }
    let rest = ns * kv_dim + off;
    (g.scores)(&shape(len - ns), qg, &kc[rest..], &mut scores[ns..]);
    for row in scores.chunks_exact_mut(len) {
        row.iter_mut().for_each(|x| *x *= scale);
        s.hide_outside_window(row, f32::NEG_INFINITY);
        (k.softmax)(row);
        s.hide_outside_window(row, 0.0);
    }
    o.fill(0.0);
    (g.values)(&shape(len), o, scores, &vc[off..]);
}

/// One query head: scores against the visible slots, softmax, weighted sum of values.
fn attend(k: &Kernels, q: &Queries, s: &Slots, scale: f32, scores: &mut Vec<f32>, o: &mut [f32]) {
    key_scores(k, q, s, scale, scores);
    s.hide_outside_window(scores, f32::NEG_INFINITY);
    (k.softmax)(scores);
    // The SIMD softmax's e^−∞ is a tiny positive, not 0.
    s.hide_outside_window(scores, 0.0);
    o.fill(0.0);
    weighted_values(k, scores, s, o);
}

/// `scores[j] = q · K[j] · scale` for the visible slots, the sinks with the shifted query.
fn key_scores(k: &Kernels, q: &Queries, s: &Slots, scale: f32, scores: &mut Vec<f32>) {
    let (len, ns, off, kv_dim) = (s.len, s.n_sinks, s.off, s.kv_dim);
    scores.clear();
    match (s.view.k, s.future) {
        // The common case, one loop per type: no slot of this query was overwritten by a
        // later token of its batch. Float caches: one kernel call for the sinks, one for
        // the rest.
        (StoreRef::F32(kc), false) => {
            scores.resize(len, 0.0);
            let (s0, s1) = scores.split_at_mut(ns);
            (k.attn_scores_f32)(q.sink, &kc[off..], kv_dim, s0);
            (k.attn_scores_f32)(q.plain, &kc[ns * kv_dim + off..], kv_dim, s1);
            scores.iter_mut().for_each(|s| *s *= scale);
        }
        (StoreRef::F16(kc), false) => {
            scores.resize(len, 0.0);
            let (s0, s1) = scores.split_at_mut(ns);
            (k.attn_scores_f16)(q.sink, &kc[off..], kv_dim, s0);
            (k.attn_scores_f16)(q.plain, &kc[ns * kv_dim + off..], kv_dim, s1);
            scores.iter_mut().for_each(|s| *s *= scale);
        }
        (StoreRef::Q8_0(kc), false) => scores
            .extend((0..len).map(|j| (k.dot_q8_0)(&kc[s.blocks(j)], q.q8_for(j < ns)) * scale)),
        // Some rows come from the saved old contents: slot by slot.
        _ => scores.extend((0..len).map(|j| {
            let sink = j < ns;
            let d = match s.row(s.view.k, s.view.old_k, j) {
                StoreRef::F32(kj) => (k.dot_f32)(q.f32_for(sink), kj),
                StoreRef::F16(kj) => (k.dot_f16)(kj, q.f32_for(sink)),
                StoreRef::Q8_0(kj) => (k.dot_q8_0)(kj, q.q8_for(sink)),
            };
            d * scale
        })),
    }
}

/// `o += Σ_j p[j] · V[j]` over the visible slots, in slot order.
fn weighted_values(k: &Kernels, p: &[f32], s: &Slots, o: &mut [f32]) {
    let (off, kv_dim) = (s.off, s.kv_dim);
    match (s.view.v, s.future) {
        (StoreRef::F32(vc), false) => (k.attn_values_f32)(o, p, &vc[off..], kv_dim),
        (StoreRef::F16(vc), false) => (k.attn_values_f16)(o, p, &vc[off..], kv_dim),
        (StoreRef::Q8_0(vc), false) => {
            for (j, &pj) in p.iter().enumerate() {
                axpy(k, o, pj, StoreRef::Q8_0(&vc[s.blocks(j)]));
            }
        }
        _ => {
            for (j, &pj) in p.iter().enumerate() {
                axpy(k, o, pj, s.row(s.view.v, s.view.old_v, j));
            }
        }
    }
}

/// The ring bookkeeping for one query (batch token `t`) and one kv head: how many slots
/// it sees, which of them are sinks read with the shifted query, and where each slot's
/// row is when a later token of the same batch has already overwritten it.
struct Slots<'a, 'v> {
    view: &'a LayerView<'v>,
    t: usize,
    /// Offset of the kv head inside a slot's `kv_dim` values.
    off: usize,
    hd: usize,
    kv_dim: usize,
    /// Slots visible to this query.
    len: usize,
    /// Slots `0..n_sinks` are sinks scored with the shifted query (none until the window
    /// has wrapped).
    n_sinks: usize,
    /// Whether a later token of the batch overwrote a slot this query reads; then rows
    /// are looked up one by one through [`Slots::row`].
    future: bool,
    /// A sliding window whose hidden slots are masked in the scores (once the ring has
    /// wrapped, or when rows come from the saved old contents). Otherwise a window just
    /// moves `off` and `len` to the slots it shows.
    mask_window: Option<usize>,
}

impl<'a, 'v> Slots<'a, 'v> {
    fn new(
        view: &'a LayerView<'v>,
        t: usize,
        off: usize,
        hd: usize,
        kv_dim: usize,
        window: Option<usize>,
    ) -> Self {
        let len = view.visible(t);
        let wrapped = view.sink_delta(t) > 0;
        let n_sinks = if wrapped { view.keep.min(len) } else { 0 };
        let future = view.has_future_evictions(t);
        let mut s = Slots {
            view,
            t,
            off,
            hd,
            kv_dim,
            len,
            n_sinks,
            future,
            mask_window: None,
        };
        match window {
            // Slot j holds position j: the window is the last `w` slots, read in place.
            Some(w) if !wrapped && !future => {
                let first = len.saturating_sub(w);
                s.off += first * kv_dim;
                s.len -= first;
            }
            w => s.mask_window = w,
        }
        s
    }

    /// Set the scores (or probabilities) of the slots outside the window to `fill`.
    fn hide_outside_window(&self, scores: &mut [f32], fill: f32) {
        if let Some(w) = self.mask_window {
            for (j, v) in scores.iter_mut().enumerate() {
                if distance(self.view, self.t, j) >= w {
                    *v = fill;
                }
            }
        }
    }

    /// Whether the sinks are read with a rotated query (the window has wrapped).
    fn shifted(&self) -> bool {
        self.view.sink_delta(self.t) > 0
    }

    /// Row of slot `j` for this head: the cache (`store`), or the saved old contents
    /// (`old`) when a later token of this batch overwrote the slot.
    fn row(&self, store: StoreRef<'v>, old: StoreRef<'v>, j: usize) -> StoreRef<'v> {
        match self
            .future
            .then(|| self.view.evicted_by_later(j, self.t))
            .flatten()
        {
            Some(u) => sub(old, u * self.kv_dim + self.off, self.hd),
            None => sub(store, j * self.kv_dim + self.off, self.hd),
        }
    }

    /// The q8_0 blocks of slot `j`'s row for this head, in a q8_0 cache.
    fn blocks(&self, j: usize) -> Range<usize> {
        let at = j * self.kv_dim + self.off;
        at / QK..(at + self.hd) / QK
    }
}

/// How many positions back from batch token `t` the row that `t` reads in slot `j` is
/// (0: its own). Before the ring wraps, slot j holds position j (or held it, for a row a
/// later token of the batch overwrote). After, a window slot holds the latest position
/// that maps to it, at most `t`'s; a sink counts at the place the sink rotation gives it,
/// just before the oldest window row (the layout `[sinks][window]`, see `crate::kv`).
fn distance(view: &LayerView<'_>, t: usize, j: usize) -> usize {
    let p = view.pos + t;
    if p < view.n_ctx {
        p - j
    } else if j < view.keep {
        view.n_ctx - 1 - j
    } else {
        let ring = view.n_ctx - view.keep;
        let own = view.keep + (p - view.keep) % ring;
        (own + ring - j) % ring
    }
}

/// The query as each key type reads it: as is, and (once the window has wrapped) rotated
/// by `-delta` for the sinks; for a q8_0 cache both also quantized to Q8_0, as llama.cpp
/// does. Slices that the cache type or position does not need are empty.
struct Queries<'a> {
    plain: &'a [f32],
    sink: &'a [f32],
    q8: &'a [BlockQ8_0],
    q8_sink: &'a [BlockQ8_0],
}

impl Queries<'_> {
    fn f32_for(&self, sink: bool) -> &[f32] {
        if sink {
            self.sink
        } else {
            self.plain
        }
    }

    fn q8_for(&self, sink: bool) -> &[BlockQ8_0] {
        if sink {
            self.q8_sink
        } else {
            self.q8
        }
    }
}

const ZERO_BLOCK: BlockQ8_0 = BlockQ8_0 { d: 0, qs: [0; QK] };

/// Per-thread buffers of one head's attention, reused across calls.
#[derive(Default)]
struct HeadScratch {
    scores: Vec<f32>,
    q: QueryScratch,
}

#[derive(Default)]
struct QueryScratch {
    sink: Vec<f32>,
    q8: Vec<BlockQ8_0>,
    q8_sink: Vec<BlockQ8_0>,
}

impl QueryScratch {
    /// The forms of query head `qh` that the slots `s` are read with; `(cos, sin)` is the
    /// sink rotation of its token.
    fn prepare<'a>(
        &'a mut self,
        k: &Kernels,
        qh: &'a [f32],
        s: &Slots,
        (cos, sin): (&[f32], &[f32]),
    ) -> Queries<'a> {
        let shifted = s.shifted();
        self.sink.clear();
        if shifted {
            self.sink.extend_from_slice(qh);
            Rope::apply(&mut self.sink, cos, sin);
        }
        let q8 = matches!(s.view.k, StoreRef::Q8_0(_));
        if q8 {
            let nb = qh.len() / QK;
            self.q8.resize(nb, ZERO_BLOCK);
            (k.quantize_q8_0)(qh, &mut self.q8);
            if shifted {
                self.q8_sink.resize(nb, ZERO_BLOCK);
                (k.quantize_q8_0)(&self.sink, &mut self.q8_sink);
            }
        }
        Queries {
            plain: qh,
            sink: &self.sink,
            q8: if q8 { &self.q8 } else { &[] },
            q8_sink: if q8 && shifted { &self.q8_sink } else { &[] },
        }
    }
}

/// Elements `at..at + len` of a store view (element offsets; q8_0 in whole blocks).
fn sub(s: StoreRef<'_>, at: usize, len: usize) -> StoreRef<'_> {
    match s {
        StoreRef::F32(v) => StoreRef::F32(&v[at..at + len]),
        StoreRef::F16(v) => StoreRef::F16(&v[at..at + len]),
        StoreRef::Q8_0(v) => StoreRef::Q8_0(&v[at / QK..(at + len) / QK]),
    }
}
