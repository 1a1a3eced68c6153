//! The LLaMA forward pass, read top to bottom:
//! embed → per layer { RMSNorm → attention (RoPE, GQA, KV cache) → residual →
//! RMSNorm → SwiGLU MLP → residual } → final RMSNorm → logits.

use std::cell::RefCell;

use rayon::prelude::*;

use super::{Model, Rope};
use crate::error::{Error, Result};
use crate::kernels::matmul::{matmul, matmul_many, MatmulScratch};
use crate::kernels::{kernels, Kernels};
use crate::kv::{axpy, KvCache, KvConfig, LayerView, StoreRef};
use crate::quant::{BlockQ8_0, QK};

/// Which logits a forward call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's, `n × vocab` (scoring, tests).
    All,
}

/// Everything that changes while a sequence is evaluated: the KV cache and the buffers
/// reused by every call.
pub struct State {
    cache: KvCache,
    buf: Buffers,
}

#[derive(Default)]
struct Buffers {
    x: Vec<f32>,
    xb: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    logits: Vec<f32>,
    /// Per batch token: cos and sin of its position's rotation.
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// Per batch token: cos and -sin of the sink shift (see `crate::kv`).
    sink_cos: Vec<f32>,
    sink_sin: Vec<f32>,
    mm: MatmulScratch,
}

impl State {
    /// An f32 cache that refuses to go past `n_ctx` (the behaviour llq always had).
    pub fn new(model: &Model, n_ctx: usize) -> State {
        State::with_config(model, n_ctx, KvConfig::default()).expect("f32 cache, stop policy")
    }

    /// A cache of the given type and full-window policy (errors: q8_0 with a head_dim
    /// that is not a multiple of 32, `keep >= n_ctx`, `n_ctx == 0`).
    pub fn with_config(model: &Model, n_ctx: usize, cfg: KvConfig) -> Result<State> {
        let c = &model.config;
        Ok(State {
            cache: KvCache::new(c.n_layers, c.n_kv_heads, c.head_dim, n_ctx, cfg)?,
            buf: Buffers::default(),
        })
    }

    /// Number of tokens evaluated since the last reset (the next token's position). Under
    /// the `shift` policy this grows past `n_ctx`.
    pub fn pos(&self) -> usize {
        self.cache.pos()
    }

    pub fn n_ctx(&self) -> usize {
        self.cache.n_ctx()
    }

    /// Forget the sequence (the cache is overwritten from position 0).
    pub fn reset(&mut self) {
        self.cache.reset();
    }

    /// Keep only the first `n` positions (later ones are overwritten by the next call).
    /// After the window wrapped there is no plain prefix to keep: this resets.
    pub fn truncate(&mut self, n: usize) {
        self.cache.truncate(n);
    }

    /// Bytes held by the KV cache's K and V storage.
    pub fn cache_bytes(&self) -> usize {
        self.cache.cache_bytes()
    }

    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    pub fn cache_mut(&mut self) -> &mut KvCache {
        &mut self.cache
    }
}

impl Model {
    /// Evaluate `tokens` at positions `state.pos()..`, append them to the cache and return
    /// the requested logits (`vocab` floats per returned token).
    pub fn forward<'s>(
        &self,
        state: &'s mut State,
        tokens: &[u32],
        want: Logits,
    ) -> Result<&'s [f32]> {
        let k = kernels();
        let cfg = &self.config;
        let n = tokens.len();
        if n == 0 {
            return Err(Error::usage("forward called with no tokens"));
        }
        state.cache.check_room(n)?;
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(Error::usage(format!(
                "token id {bad} is outside the vocabulary (size {})",
                cfg.vocab_size
            )));
        }
        let (dim, q_dim, kv_dim, ffn) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.ffn_dim);
        let b = &mut state.buf;
        resize(&mut b.x, n * dim);
        resize(&mut b.xb, n * dim);
        resize(&mut b.q, n * q_dim);
        resize(&mut b.k, n * kv_dim);
        resize(&mut b.v, n * kv_dim);
        resize(&mut b.att, n * q_dim);
        resize(&mut b.gate, n * ffn);
        resize(&mut b.up, n * ffn);
        resize(&mut b.cos, n * cfg.head_dim / 2);
        resize(&mut b.sin, n * cfg.head_dim / 2);
        resize(&mut b.sink_cos, n * cfg.head_dim / 2);
        resize(&mut b.sink_sin, n * cfg.head_dim / 2);
        let pos = state.cache.pos();
        let half = cfg.head_dim / 2;
        for t in 0..n {
            let delta = (pos + t + 1).saturating_sub(state.cache.n_ctx());
            let (c, s) = (
                &mut b.sink_cos[t * half..(t + 1) * half],
                &mut b.sink_sin[t * half..(t + 1) * half],
            );
            // Every layer rotates by the same angles: computed once per call, not per layer.
            self.rope.angles(
                pos + t,
                &mut b.cos[t * half..(t + 1) * half],
                &mut b.sin[t * half..(t + 1) * half],
            );
            if delta > 0 {
                self.rope.angles(delta, c, s);
                s.iter_mut().for_each(|v| *v = -*v);
            }
        }

        let embd = self.weight(&self.token_embd);
        for (t, x) in tokens.iter().zip(b.x.chunks_exact_mut(dim)) {
            embd.dequantize_row(*t as usize, x);
        }

        for (l, lw) in self.layers.iter().enumerate() {
            // Attention block.
            rmsnorm(
                &mut b.xb,
                &b.x,
                self.vector(&lw.attn_norm),
                cfg.rms_eps,
                dim,
            );
            matmul_many(
                k,
                &[
                    self.weight(&lw.wq),
                    self.weight(&lw.wk),
                    self.weight(&lw.wv),
                ],
                &b.xb,
                n,
                &mut [&mut b.q, &mut b.k, &mut b.v],
                &mut b.mm,
            );
            let rotate = |q: &mut [f32], k: &mut [f32], c: &[f32], s: &[f32]| {
                Rope::apply(q, c, s);
                Rope::apply(k, c, s);
            };
            if n > 1 {
                b.q.par_chunks_mut(q_dim)
                    .zip(b.k.par_chunks_mut(kv_dim))
                    .zip(b.cos.par_chunks(half).zip(b.sin.par_chunks(half)))
                    .for_each(|((q, k), (c, s))| rotate(q, k, c, s));
            } else {
                rotate(&mut b.q, &mut b.k, &b.cos, &b.sin);
            }
            state.cache.store(l, &b.k, &b.v);
            let sink = (&b.sink_cos[..], &b.sink_sin[..]);
            attention(k, self, &b.q, &state.cache.layer(l, n), sink, &mut b.att);
            matmul(k, &self.weight(&lw.wo), &b.att, n, &mut b.xb, &mut b.mm);
            add(&mut b.x, &b.xb);

            // MLP block.
            rmsnorm(&mut b.xb, &b.x, self.vector(&lw.ffn_norm), cfg.rms_eps, dim);
            matmul_many(
                k,
                &[self.weight(&lw.w_gate), self.weight(&lw.w_up)],
                &b.xb,
                n,
                &mut [&mut b.gate, &mut b.up],
                &mut b.mm,
            );
            let swiglu = |(g, u): (&mut [f32], &[f32])| (k.silu_mul)(g, u);
            if n > 1 {
                // A prompt's n × ffn exponentials are worth the pool (serial they were
                // ~5% of a SmolLM2 prompt at 1 thread and capped its 2-thread speed-up).
                let f = cfg.ffn_dim;
                b.gate
                    .par_chunks_mut(f)
                    .zip(b.up.par_chunks(f))
                    .for_each(swiglu);
            } else {
                swiglu((&mut b.gate, &b.up));
            }
            matmul(
                k,
                &self.weight(&lw.w_down),
                &b.gate,
                n,
                &mut b.xb,
                &mut b.mm,
            );
            add(&mut b.x, &b.xb);
        }
        state.cache.advance(n);

        let first = match want {
            Logits::Last => n - 1,
            Logits::All => 0,
        };
        let m = n - first;
        let xs = &b.x[first * dim..];
        rmsnorm(
            &mut b.xb[..m * dim],
            xs,
            self.vector(&self.output_norm),
            cfg.rms_eps,
            dim,
        );
        resize(&mut b.logits, m * cfg.vocab_size);
        matmul(
            k,
            &self.weight(&self.output),
            &b.xb[..m * dim],
            m,
            &mut b.logits,
            &mut b.mm,
        );
        Ok(&state.buf.logits)
    }
}

/// Causal attention for the batch's tokens against the cache (which already holds their
/// keys and values). Heads are split across threads. Slot order is position order until
/// the window wraps, so the f32 cache sums exactly as the flat cache always did.
fn attention<'v>(
    k: &Kernels,
    model: &Model,
    q: &[f32],
    view: &LayerView<'v>,
    (sink_cos, sink_sin): (&[f32], &[f32]),
    out: &mut [f32],
) {
    thread_local! {
        static SCRATCH: RefCell<HeadScratch> = RefCell::new(HeadScratch::default());
    }
    let cfg = &model.config;
    let (hd, n_heads, kv_dim) = (cfg.head_dim, cfg.n_heads, cfg.kv_dim());
    let group = cfg.n_heads / cfg.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let half = hd / 2;
    out.par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
        let (t, h) = (i / n_heads, i % n_heads);
        let qh = &q[i * hd..(i + 1) * hd];
        let kv_off = (h / group) * hd;
        let len = view.visible(t);
        let shifted = view.sink_delta(t) > 0;
        let n_sinks = if shifted { view.keep.min(len) } else { 0 };
        let future = view.has_future_evictions(t);
        SCRATCH.with_borrow_mut(|sc| {
            // The query as each key type reads it; a second copy rotated by -delta for
            // the sinks once the window has wrapped.
            sc.q_sink.clear();
            if shifted {
                sc.q_sink.extend_from_slice(qh);
                Rope::apply(
                    &mut sc.q_sink,
                    &sink_cos[t * half..(t + 1) * half],
                    &sink_sin[t * half..(t + 1) * half],
                );
            }
            if let StoreRef::Q8_0(_) = view.k {
                sc.q8.resize(hd / QK, ZERO_BLOCK);
                (k.quantize_q8_0)(qh, &mut sc.q8);
                if shifted {
                    sc.q8_sink.resize(hd / QK, ZERO_BLOCK);
                    (k.quantize_q8_0)(&sc.q_sink, &mut sc.q8_sink);
                }
            }
            let HeadScratch {
                scores,
                q_sink,
                q8,
                q8_sink,
            } = sc;
            // Row of slot j for this head: the cache, or the saved old contents when a
            // later token of this batch overwrote the slot.
            let row = |store: StoreRef<'v>, old: StoreRef<'v>, j: usize| -> StoreRef<'v> {
                match future.then(|| view.evicted_by_later(j, t)).flatten() {
                    Some(u) => sub(old, u * kv_dim + kv_off, hd),
                    None => sub(store, j * kv_dim + kv_off, hd),
                }
            };
            scores.clear();
            let blocks = |j: usize| (j * kv_dim + kv_off) / QK..(j * kv_dim + kv_off + hd) / QK;
            match (view.k, future) {
                // The common case, one loop per type: no slot of this query was
                // overwritten by a later token of its batch.
                // Float caches: one kernel call for the sinks, one for the rest.
                (StoreRef::F32(kc), false) => {
                    scores.resize(len, 0.0);
                    let (s0, s1) = scores.split_at_mut(n_sinks);
                    (k.attn_scores_f32)(q_sink, &kc[kv_off..], kv_dim, s0);
                    (k.attn_scores_f32)(qh, &kc[n_sinks * kv_dim + kv_off..], kv_dim, s1);
                    scores.iter_mut().for_each(|s| *s *= scale);
                }
                (StoreRef::F16(kc), false) => {
                    scores.resize(len, 0.0);
                    let (s0, s1) = scores.split_at_mut(n_sinks);
                    (k.attn_scores_f16)(q_sink, &kc[kv_off..], kv_dim, s0);
                    (k.attn_scores_f16)(qh, &kc[n_sinks * kv_dim + kv_off..], kv_dim, s1);
                    scores.iter_mut().for_each(|s| *s *= scale);
                }
                (StoreRef::Q8_0(kc), false) => scores.extend((0..len).map(|j| {
                    (k.dot_q8_0)(&kc[blocks(j)], if j < n_sinks { q8_sink } else { q8 }) * scale
                })),
                _ => scores.extend((0..len).map(|j| {
                    let sink = j < n_sinks;
                    let d = match row(view.k, view.old_k, j) {
                        StoreRef::F32(kj) => (k.dot_f32)(if sink { q_sink } else { qh }, kj),
                        StoreRef::F16(kj) => (k.dot_f16)(kj, if sink { q_sink } else { qh }),
                        StoreRef::Q8_0(kj) => (k.dot_q8_0)(kj, if sink { q8_sink } else { q8 }),
                    };
                    d * scale
                })),
            }
            (k.softmax)(scores);
            o.fill(0.0);
            match (view.v, future) {
                (StoreRef::F32(vc), false) => (k.attn_values_f32)(o, scores, &vc[kv_off..], kv_dim),
                (StoreRef::F16(vc), false) => (k.attn_values_f16)(o, scores, &vc[kv_off..], kv_dim),
                (StoreRef::Q8_0(vc), false) => {
                    for (j, &p) in scores.iter().enumerate() {
                        axpy(k, o, p, StoreRef::Q8_0(&vc[blocks(j)]));
                    }
                }
                _ => {
                    for (j, &p) in scores.iter().enumerate() {
                        axpy(k, o, p, row(view.v, view.old_v, j));
                    }
                }
            }
        });
    });
}

const ZERO_BLOCK: BlockQ8_0 = BlockQ8_0 { d: 0, qs: [0; QK] };

#[derive(Default)]
struct HeadScratch {
    scores: Vec<f32>,
    q_sink: Vec<f32>,
    q8: Vec<BlockQ8_0>,
    q8_sink: Vec<BlockQ8_0>,
}

/// Elements `at..at + len` of a store view (element offsets; q8_0 in whole blocks).
fn sub(s: StoreRef<'_>, at: usize, len: usize) -> StoreRef<'_> {
    match s {
        StoreRef::F32(v) => StoreRef::F32(&v[at..at + len]),
        StoreRef::F16(v) => StoreRef::F16(&v[at..at + len]),
        StoreRef::Q8_0(v) => StoreRef::Q8_0(&v[at / QK..(at + len) / QK]),
    }
}

fn resize(v: &mut Vec<f32>, n: usize) {
    v.resize(n, 0.0);
}

/// `out = x / rms(x) * w`, row by row (rows of `dim`); a prompt's rows on the pool (serial,
/// they were a few percent of a 2-thread prompt).
fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32, dim: usize) {
    let row = |(o, xr): (&mut [f32], &[f32])| {
        let ss: f64 = xr.iter().map(|v| (*v as f64) * (*v as f64)).sum();
        let inv = 1.0 / ((ss / dim as f64) as f32 + eps).sqrt();
        for ((o, x), w) in o.iter_mut().zip(xr).zip(w) {
            *o = w * (x * inv);
        }
    };
    if out.len() > dim {
        out.par_chunks_mut(dim).zip(x.par_chunks(dim)).for_each(row);
    } else {
        out.chunks_mut(dim).zip(x.chunks(dim)).for_each(row);
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}
