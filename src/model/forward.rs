//! The LLaMA forward pass, read top to bottom:
//! embed → per layer { RMSNorm → attention (RoPE, GQA, KV cache) → residual →
//! RMSNorm → SwiGLU MLP → residual } → final RMSNorm → logits.

use std::cell::RefCell;

use rayon::prelude::*;

use super::{Model, Rope};
use crate::error::{Error, Result};
use crate::kernels::matmul::{matmul, MatmulScratch};
use crate::kernels::{kernels, Kernels};
use crate::quant::dequantize_row;

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
    n_ctx: usize,
    pos: usize,
    /// `[layer][position][kv_dim]`
    k_cache: Vec<f32>,
    v_cache: Vec<f32>,
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
    cos: Vec<f32>,
    sin: Vec<f32>,
    mm: MatmulScratch,
}

impl State {
    pub fn new(model: &Model, n_ctx: usize) -> State {
        let cfg = &model.config;
        let kv_dim = cfg.kv_dim();
        let cache = cfg.n_layers * n_ctx * kv_dim;
        State {
            n_ctx,
            pos: 0,
            k_cache: vec![0.0; cache],
            v_cache: vec![0.0; cache],
            buf: Buffers::default(),
        }
    }

    /// Number of positions already in the cache.
    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Forget the sequence (the cache is overwritten from position 0).
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Keep only the first `n` positions (later ones are overwritten by the next call).
    pub fn truncate(&mut self, n: usize) {
        self.pos = self.pos.min(n);
    }

    /// Bytes held by the KV cache.
    pub fn cache_bytes(&self) -> usize {
        (self.k_cache.len() + self.v_cache.len()) * 4
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
        if state.pos + n > state.n_ctx {
            return Err(Error::usage(format!(
                "context full: {} positions used + {n} new > context size {}",
                state.pos, state.n_ctx
            )));
        }
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
        resize(&mut b.cos, cfg.head_dim / 2);
        resize(&mut b.sin, cfg.head_dim / 2);

        let embd = self.weight(&self.token_embd);
        for (t, x) in tokens.iter().zip(b.x.chunks_exact_mut(dim)) {
            dequantize_row(embd.dtype, embd.row(*t as usize), x);
        }

        let layer_cache = state.n_ctx * kv_dim;
        for (l, lw) in self.layers.iter().enumerate() {
            // Attention block.
            rmsnorm(
                &mut b.xb,
                &b.x,
                self.vector(&lw.attn_norm),
                cfg.rms_eps,
                dim,
            );
            matmul(k, &self.weight(&lw.wq), &b.xb, n, &mut b.q, &mut b.mm);
            matmul(k, &self.weight(&lw.wk), &b.xb, n, &mut b.k, &mut b.mm);
            matmul(k, &self.weight(&lw.wv), &b.xb, n, &mut b.v, &mut b.mm);
            for t in 0..n {
                self.rope.angles(state.pos + t, &mut b.cos, &mut b.sin);
                Rope::apply(&mut b.q[t * q_dim..(t + 1) * q_dim], &b.cos, &b.sin);
                Rope::apply(&mut b.k[t * kv_dim..(t + 1) * kv_dim], &b.cos, &b.sin);
            }
            let kc = &mut state.k_cache[l * layer_cache..(l + 1) * layer_cache];
            let vc = &mut state.v_cache[l * layer_cache..(l + 1) * layer_cache];
            kc[state.pos * kv_dim..(state.pos + n) * kv_dim].copy_from_slice(&b.k);
            vc[state.pos * kv_dim..(state.pos + n) * kv_dim].copy_from_slice(&b.v);
            attention(k, self, &b.q, kc, vc, state.pos, &mut b.att);
            matmul(k, &self.weight(&lw.wo), &b.att, n, &mut b.xb, &mut b.mm);
            add(&mut b.x, &b.xb);

            // MLP block.
            rmsnorm(&mut b.xb, &b.x, self.vector(&lw.ffn_norm), cfg.rms_eps, dim);
            matmul(
                k,
                &self.weight(&lw.w_gate),
                &b.xb,
                n,
                &mut b.gate,
                &mut b.mm,
            );
            matmul(k, &self.weight(&lw.w_up), &b.xb, n, &mut b.up, &mut b.mm);
            for (g, u) in b.gate.iter_mut().zip(&b.up) {
                *g = silu(*g) * u;
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
        state.pos += n;

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

/// Causal attention for tokens at positions `pos..pos + n` against the cache (which
/// already holds their keys and values). Heads are split across threads.
fn attention(
    k: &Kernels,
    model: &Model,
    q: &[f32],
    kc: &[f32],
    vc: &[f32],
    pos: usize,
    out: &mut [f32],
) {
    thread_local! {
        static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }
    let cfg = &model.config;
    let (hd, n_heads, kv_dim) = (cfg.head_dim, cfg.n_heads, cfg.kv_dim());
    let group = cfg.n_heads / cfg.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    out.par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
        let (t, h) = (i / n_heads, i % n_heads);
        let qh = &q[i * hd..(i + 1) * hd];
        let kv_off = (h / group) * hd;
        let len = pos + t + 1;
        SCORES.with_borrow_mut(|s| {
            s.clear();
            s.extend((0..len).map(|j| {
                let kj = &kc[j * kv_dim + kv_off..j * kv_dim + kv_off + hd];
                (k.dot_f32)(qh, kj) * scale
            }));
            softmax(s);
            o.fill(0.0);
            for (j, &p) in s.iter().enumerate() {
                let vj = &vc[j * kv_dim + kv_off..j * kv_dim + kv_off + hd];
                for (a, v) in o.iter_mut().zip(vj) {
                    *a += p * v;
                }
            }
        });
    });
}

fn resize(v: &mut Vec<f32>, n: usize) {
    v.resize(n, 0.0);
}

/// `out = x / rms(x) * w`, row by row (rows of `dim`).
fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32, dim: usize) {
    for (o, xr) in out.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
        let ss: f64 = xr.iter().map(|v| (*v as f64) * (*v as f64)).sum();
        let inv = 1.0 / ((ss / dim as f64) as f32 + eps).sqrt();
        for ((o, x), w) in o.iter_mut().zip(xr).zip(w) {
            *o = w * (x * inv);
        }
    }
}

fn softmax(s: &mut [f32]) {
    let max = s.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let mut sum = 0.0f32;
    for v in s.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    s.iter_mut().for_each(|v| *v *= inv);
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}
