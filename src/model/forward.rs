//! The LLaMA forward pass, read top to bottom in [`Model::forward`]:
//! embed → per layer { `attention_block`: RMSNorm → Q/K/V →
//! RoPE → KV cache → attention → output projection → residual;
//! `mlp_block`: RMSNorm → SwiGLU MLP → residual } → final RMSNorm →
//! logits. Attention itself lives in `attention.rs`.
//!
//! Qwen2 adds biases to Q, K and V; Qwen3 RMS-norms each query and key head before RoPE.
//! Gemma 3 ([`crate::model::Gemma3`]) changes a few steps in place: the embeddings are
//! scaled by `√dim`, each query and key head is RMS-normed before RoPE, sliding-window
//! layers rotate with their own base and see only the last positions, both blocks' outputs
//! are RMS-normed before the residual add, and the MLP is GeGLU.

use rayon::prelude::*;

use super::attention::{attention, SinkRotation};
use super::{LayerWeights, Model, ModelConfig, Rope, TensorRef};
use crate::error::{Error, Result};
use crate::kernels::matmul::{matmul, matmul_many, MatmulScratch};
use crate::kernels::{kernels, Kernels};
use crate::kv::{KvCache, KvConfig, LayerView};
use crate::lora::{AdapterSet, LoraScratch, Proj};

/// Which logits a forward call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's, `n × vocab` (scoring, tests).
    All,
}

/// The input of one group of matrix multiplications in a layer, as an [`Observer`] sees
/// it: Q, K and V read the attention norm's output; the attention output matrix reads the
/// attention; gate and up read the FFN norm's output; down reads the SwiGLU product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulInput {
    /// Input of `attn_q`, `attn_k`, `attn_v` (`dim` values per token).
    AttnNorm,
    /// Input of `attn_output` (`n_heads · head_dim` per token).
    Attention,
    /// Input of `ffn_gate`, `ffn_up` (`dim` per token).
    FfnNorm,
    /// Input of `ffn_down` (`ffn_dim` per token).
    FfnAct,
}

impl MatmulInput {
    /// The layer parts (`names::LAYER_PARTS`) whose matrices read this input.
    pub fn parts(self) -> &'static [&'static str] {
        match self {
            MatmulInput::AttnNorm => &["attn_q", "attn_k", "attn_v"],
            MatmulInput::Attention => &["attn_output"],
            MatmulInput::FfnNorm => &["ffn_gate", "ffn_up"],
            MatmulInput::FfnAct => &["ffn_down"],
        }
    }
}

/// Sees the input of every matrix multiplication of the layers (e.g. to build an
/// importance matrix): `(layer, which input, the batch's rows: n × width values)`.
pub type Observer = Box<dyn FnMut(usize, MatmulInput, &[f32]) + Send>;

/// Everything that changes while a sequence is evaluated: the KV cache, the buffers
/// reused by every call, the LoRA adapters this sequence applies (per state, so
/// contexts sharing one model may use different adapters), and an optional observer of
/// the matrix inputs (none in normal use: one branch per matrix group).
pub struct State {
    cache: KvCache,
    buf: Buffers,
    adapters: AdapterSet,
    observer: Option<Observer>,
}

/// One RoPE base's rotations for a batch.
#[derive(Default)]
struct RopeTables {
    /// Per batch token: cos and sin of its position's rotation.
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// Per batch token: cos and -sin of the sink shift (see `crate::kv`).
    sink_cos: Vec<f32>,
    sink_sin: Vec<f32>,
}

impl RopeTables {
    /// Room for `n` tokens of `half` angles each.
    fn ensure(&mut self, n: usize, half: usize) {
        for v in [
            &mut self.cos,
            &mut self.sin,
            &mut self.sink_cos,
            &mut self.sink_sin,
        ] {
            v.resize(n * half, 0.0);
        }
    }

    /// `rope`'s angles for each batch token's position and, once the window has wrapped,
    /// for the shift that moves its sinks next to the window (`view` gives the positions;
    /// they are the same in every layer).
    fn fill(&mut self, rope: &Rope, view: &LayerView<'_>, half: usize) {
        for t in 0..view.n {
            let r = t * half..(t + 1) * half;
            rope.angles(
                view.pos + t,
                &mut self.cos[r.clone()],
                &mut self.sin[r.clone()],
            );
            let delta = view.sink_delta(t);
            if delta > 0 {
                let (c, s) = (&mut self.sink_cos[r.clone()], &mut self.sink_sin[r]);
                rope.angles(delta, c, s);
                s.iter_mut().for_each(|v| *v = -*v);
            }
        }
    }
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
    /// The rotations of every layer, or of Gemma 3's global ones.
    rope: RopeTables,
    /// Gemma 3's sliding-window layers' rotations (their own RoPE base).
    local: RopeTables,
    mm: MatmulScratch,
    lora: LoraScratch,
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
            adapters: AdapterSet::default(),
            observer: None,
        })
    }

    /// Call `observer` with the input of every matrix multiplication of the layers from
    /// now on (`None`: stop); returns the previous observer.
    pub fn set_observer(&mut self, observer: Option<Observer>) -> Option<Observer> {
        std::mem::replace(&mut self.observer, observer)
    }

    /// Apply `adapters` from now on (an empty set: none). The cache is reset: the keys and
    /// values in it were computed with the previous adapters. The set must have been made
    /// for this state's model (`AdapterSet::new` checks the shapes; `forward` refuses a
    /// set made for another configuration).
    pub fn set_adapters(&mut self, adapters: AdapterSet) {
        self.adapters = adapters;
        self.cache.reset();
    }

    pub fn adapters(&self) -> &AdapterSet {
        &self.adapters
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
        self.check_batch(&state.cache, tokens)?;
        if !state.adapters.fits(&self.config) {
            return Err(Error::usage(
                "the context's LoRA adapters were checked against another model",
            ));
        }
        let (k, cfg, n) = (kernels(), &self.config, tokens.len());
        let n_logits = match want {
            Logits::Last => 1,
            Logits::All => n,
        };
        let State {
            cache,
            buf: b,
            adapters: ad,
            observer: obs,
        } = state;
        b.ensure(cfg, n, n_logits);
        // Every layer rotates by the same angles: computed once per call, not per layer.
        self.rope_tables(&cache.layer(0, n), b);

        // Token embeddings (Gemma scales them by √dim).
        let embd = self.weight(&self.token_embd);
        let embd_scale = cfg.arch.gemma3().map(|_| (cfg.dim as f32).sqrt());
        for (t, x) in tokens.iter().zip(b.x.chunks_exact_mut(cfg.dim)) {
            embd.dequantize_row(*t as usize, x);
            if let Some(c) = embd_scale {
                x.iter_mut().for_each(|v| *v *= c);
            }
        }
        for (l, lw) in self.layers.iter().enumerate() {
            self.attention_block(k, l, lw, cache, b, ad, obs, n);
            self.mlp_block(k, l, lw, b, ad, obs, n);
        }
        cache.advance(n);
        self.logits(k, b, n, n_logits);
        // A NaN or infinity in the residual stream means damaged weights (convert refuses
        // non-finite ones). The output matmul's activation quantization would turn it into
        // zeros and plausible-looking logits ("0 0 0 ..."), so make it visible: the logits
        // become NaN, which the session's check reports (crate::generate). One pass over
        // n × dim values: nothing next to the forward pass.
        if !b.x[..n * cfg.dim].iter().all(|v| v.is_finite()) {
            b.logits.fill(f32::NAN);
        }
        Ok(&b.logits)
    }

    /// Refuse an empty batch, one the cache has no room for, or an unknown token id.
    fn check_batch(&self, cache: &KvCache, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::usage("forward called with no tokens"));
        }
        cache.check_room(tokens.len())?;
        let vocab = self.config.vocab_size;
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::usage(format!(
                "token id {bad} is outside the vocabulary (size {vocab})"
            )));
        }
        Ok(())
    }

    /// The batch's rotations, once per call for every layer (see [`RopeTables::fill`]).
    fn rope_tables(&self, view: &LayerView<'_>, b: &mut Buffers) {
        let half = self.config.head_dim / 2;
        b.rope.fill(&self.rope, view, half);
        if let Some(rope) = &self.rope_local {
            b.local.fill(rope, view, half);
        }
    }

    /// `x += Wo · attention(RoPE(Wq · h), RoPE(Wk · h), Wv · h)` with `h = rmsnorm(x)`;
    /// the batch's keys and values go into layer `l` of the cache first. Each projection
    /// `W` is `W + ΔW` under the context's adapters (the low-rank `ΔW · h` is added to the
    /// product, before RoPE for Q and K).
    #[allow(clippy::too_many_arguments)]
    fn attention_block(
        &self,
        k: &Kernels,
        l: usize,
        lw: &LayerWeights,
        cache: &mut KvCache,
        b: &mut Buffers,
        ad: &AdapterSet,
        obs: &mut Option<Observer>,
        n: usize,
    ) {
        let cfg = &self.config;
        self.norm_input(&lw.attn_norm, b, l, MatmulInput::AttnNorm, obs, n);
        let qkv = [
            self.weight(&lw.wq),
            self.weight(&lw.wk),
            self.weight(&lw.wv),
        ];
        let outs = &mut [&mut b.q[..], &mut b.k[..], &mut b.v[..]];
        matmul_many(k, &qkv, &b.xb, n, outs, &mut b.mm);
        if !ad.is_empty() {
            ad.apply(k, l, Proj::Q, &b.xb, n, &mut b.q, &mut b.lora);
            ad.apply(k, l, Proj::K, &b.xb, n, &mut b.k, &mut b.lora);
            ad.apply(k, l, Proj::V, &b.xb, n, &mut b.v, &mut b.lora);
        }
        // Qwen2's biases, then Qwen3's and Gemma 3's per-head norms.
        let (e, hd) = (&lw.extra, cfg.head_dim);
        let (q, kv) = (n * cfg.q_dim(), n * cfg.kv_dim());
        let biased = [
            (&mut b.q[..q], &e.q_bias),
            (&mut b.k[..kv], &e.k_bias),
            (&mut b.v[..kv], &e.v_bias),
        ];
        for (x, bias) in biased {
            if let Some(bias) = bias {
                let bias = self.vector(bias);
                x.chunks_exact_mut(bias.len())
                    .for_each(|row| add(row, bias));
            }
        }
        for (x, norm) in [(&mut b.q[..q], &e.q_norm), (&mut b.k[..kv], &e.k_norm)] {
            if let Some(norm) = norm {
                rmsnorm_in_place(x, self.vector(norm), cfg.rms_eps, hd);
            }
        }
        let window = cfg.layer_window(l);
        let rt = match window {
            Some(_) => &b.local,
            None => &b.rope,
        };
        rotate_qk(cfg, &mut b.q, &mut b.k, &rt.cos, &rt.sin, n);
        cache.store(l, &b.k, &b.v);
        let sink = SinkRotation {
            cos: &rt.sink_cos,
            sin: &rt.sink_sin,
        };
        attention(k, cfg, &b.q, &cache.layer(l, n), &sink, window, &mut b.att);
        if let Some(o) = obs {
            o(l, MatmulInput::Attention, &b.att[..n * cfg.q_dim()]);
        }
        matmul(k, &self.weight(&lw.wo), &b.att, n, &mut b.xb, &mut b.mm);
        if !ad.is_empty() {
            ad.apply(k, l, Proj::O, &b.att, n, &mut b.xb, &mut b.lora);
        }
        if let Some(norm) = &lw.extra.post_attn_norm {
            let w = self.vector(norm);
            rmsnorm_in_place(&mut b.xb[..n * cfg.dim], w, cfg.rms_eps, cfg.dim);
        }
        add(&mut b.x, &b.xb);
    }

    /// `xb = rmsnorm(x) · norm` for the `n` tokens: a block's input to its first matmuls,
    /// shown to the observer as `input`.
    fn norm_input(
        &self,
        norm: &TensorRef,
        b: &mut Buffers,
        l: usize,
        input: MatmulInput,
        obs: &mut Option<Observer>,
        n: usize,
    ) {
        let cfg = &self.config;
        rmsnorm(&mut b.xb, &b.x, self.vector(norm), cfg.rms_eps, cfg.dim);
        if let Some(o) = obs {
            o(l, input, &b.xb[..n * cfg.dim]);
        }
    }

    /// `x += W_down · (silu(W_gate · h) ⊙ (W_up · h))` with `h = rmsnorm(x)` (SwiGLU), each
    /// `W` with the context's adapters' `ΔW` (see `attention_block`).
    #[allow(clippy::too_many_arguments)]
    fn mlp_block(
        &self,
        k: &Kernels,
        l: usize,
        lw: &LayerWeights,
        b: &mut Buffers,
        ad: &AdapterSet,
        obs: &mut Option<Observer>,
        n: usize,
    ) {
        let cfg = &self.config;
        self.norm_input(&lw.ffn_norm, b, l, MatmulInput::FfnNorm, obs, n);
        let gate_up = [self.weight(&lw.w_gate), self.weight(&lw.w_up)];
        let outs = &mut [&mut b.gate[..], &mut b.up[..]];
        matmul_many(k, &gate_up, &b.xb, n, outs, &mut b.mm);
        if !ad.is_empty() {
            ad.apply(k, l, Proj::Gate, &b.xb, n, &mut b.gate, &mut b.lora);
            ad.apply(k, l, Proj::Up, &b.xb, n, &mut b.up, &mut b.lora);
        }
        match cfg.arch.gemma3() {
            None => swiglu(k, &mut b.gate, &b.up, cfg.ffn_dim, n),
            Some(_) => geglu(k, &mut b.gate, &mut b.up, cfg.ffn_dim, n),
        }
        if let Some(o) = obs {
            o(l, MatmulInput::FfnAct, &b.gate[..n * cfg.ffn_dim]);
        }
        matmul(
            k,
            &self.weight(&lw.w_down),
            &b.gate,
            n,
            &mut b.xb,
            &mut b.mm,
        );
        if !ad.is_empty() {
            ad.apply(k, l, Proj::Down, &b.gate, n, &mut b.xb, &mut b.lora);
        }
        if let Some(norm) = &lw.extra.post_ffw_norm {
            let w = self.vector(norm);
            rmsnorm_in_place(&mut b.xb[..n * cfg.dim], w, cfg.rms_eps, cfg.dim);
        }
        add(&mut b.x, &b.xb);
    }

    /// Final RMSNorm and the output matrix for the last `m` tokens of the batch.
    fn logits(&self, k: &Kernels, b: &mut Buffers, n: usize, m: usize) {
        let dim = self.config.dim;
        let (xs, h) = (&b.x[(n - m) * dim..], &mut b.xb[..m * dim]);
        rmsnorm(
            h,
            xs,
            self.vector(&self.output_norm),
            self.config.rms_eps,
            dim,
        );
        matmul(
            k,
            &self.weight(&self.output),
            h,
            m,
            &mut b.logits,
            &mut b.mm,
        );
    }
}

impl Buffers {
    /// Size every activation buffer for a batch of `n` tokens and `n_logits` rows of
    /// logits (allocates only when a call is larger than every one before).
    fn ensure(&mut self, cfg: &ModelConfig, n: usize, n_logits: usize) {
        let half = cfg.head_dim / 2;
        let (dim, q_dim, kv_dim, ffn) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.ffn_dim);
        for (v, len) in [
            (&mut self.x, n * dim),
            (&mut self.xb, n * dim),
            (&mut self.q, n * q_dim),
            (&mut self.k, n * kv_dim),
            (&mut self.v, n * kv_dim),
            (&mut self.att, n * q_dim),
            (&mut self.gate, n * ffn),
            (&mut self.up, n * ffn),
            (&mut self.logits, n_logits * cfg.vocab_size),
        ] {
            v.resize(len, 0.0);
        }
        self.rope.ensure(n, half);
        if cfg.arch.gemma3().is_some() {
            self.local.ensure(n, half);
        }
    }
}

/// Rotate each token's query and key heads by its position's angles (a prompt's tokens on
/// the pool).
fn rotate_qk(cfg: &ModelConfig, q: &mut [f32], k: &mut [f32], cos: &[f32], sin: &[f32], n: usize) {
    let rotate = |q: &mut [f32], k: &mut [f32], c: &[f32], s: &[f32]| {
        Rope::apply(q, c, s);
        Rope::apply(k, c, s);
    };
    if n > 1 {
        let half = cfg.head_dim / 2;
        q.par_chunks_mut(cfg.q_dim())
            .zip(k.par_chunks_mut(cfg.kv_dim()))
            .zip(cos.par_chunks(half).zip(sin.par_chunks(half)))
            .for_each(|((q, k), (c, s))| rotate(q, k, c, s));
    } else {
        rotate(q, k, cos, sin);
    }
}

/// SwiGLU's gate, `g = silu(g) ⊙ u`, row by row (rows of `ffn`).
fn swiglu(k: &Kernels, gate: &mut [f32], up: &[f32], ffn: usize, n: usize) {
    let row = |(g, u): (&mut [f32], &[f32])| (k.silu_mul)(g, u);
    if n > 1 {
        // A prompt's n × ffn exponentials are worth the pool (serial they were ~5% of a
        // SmolLM2 prompt at 1 thread and capped its 2-thread speed-up).
        gate.par_chunks_mut(ffn)
            .zip(up.par_chunks(ffn))
            .for_each(row);
    } else {
        row((gate, up));
    }
}

/// GeGLU's gate, `g = gelu_tanh(g) ⊙ u` (Gemma), row by row (rows of `ffn`), through the
/// vectorized `silu_mul`: with `a = √(8/π)·(x + 0.044715·x³)`,
/// `gelu_tanh(x) = x·σ(a) = silu(a) · x / a`, and `x / a = 1 / (√(8/π)·(1 + 0.044715·x²))`
/// has no pole, so `g ← a`, `u ← u · x / a`, then `g = silu(g) · u`. `u` is overwritten.
fn geglu(k: &Kernels, gate: &mut [f32], up: &mut [f32], ffn: usize, n: usize) {
    const C: f32 = 1.595_769; // √(8/π)
    const A: f32 = 0.044_715;
    let row = |(g, u): (&mut [f32], &mut [f32])| {
        for (g, u) in g.iter_mut().zip(u.iter_mut()) {
            let (x, x2) = (*g, *g * *g);
            *g = C * (x + A * x2 * x);
            *u /= C * (1.0 + A * x2);
        }
        (k.silu_mul)(g, u)
    };
    if n > 1 {
        gate.par_chunks_mut(ffn)
            .zip(up.par_chunks_mut(ffn))
            .for_each(row);
    } else {
        row((gate, up));
    }
}

/// `x = x / rms(x) * w` in place, row by row (rows of `dim`: the per-head norms of Qwen3
/// and Gemma 3, Gemma's output norms).
fn rmsnorm_in_place(x: &mut [f32], w: &[f32], eps: f32, dim: usize) {
    let row = |xr: &mut [f32]| {
        let inv = inv_rms(xr, eps);
        for (x, w) in xr.iter_mut().zip(w) {
            *x = w * (*x * inv);
        }
    };
    // Per head, one token's rows are a few hundred values: not worth the pool.
    if x.len() >= 16 * 1024 {
        x.par_chunks_mut(dim).for_each(row);
    } else {
        x.chunks_mut(dim).for_each(row);
    }
}

/// `out = x / rms(x) * w`, row by row (rows of `dim`); a prompt's rows on the pool (serial,
/// they were a few percent of a 2-thread prompt).
fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32, dim: usize) {
    let row = |(o, xr): (&mut [f32], &[f32])| {
        let inv = inv_rms(xr, eps);
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

/// `1 / √(mean(x²) + eps)`, the sum of squares in f64.
fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let ss: f64 = x.iter().map(|v| (*v as f64) * (*v as f64)).sum();
    1.0 / ((ss / x.len() as f64) as f32 + eps).sqrt()
}

fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}
