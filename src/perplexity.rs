//! Perplexity and KL divergence, with llama.cpp-compatible bookkeeping.
//!
//! Protocol (as `smollm2/perplexity.json` defines it): the token stream is cut into
//! consecutive non-overlapping windows of `window` tokens from token 0, the trailing partial
//! window is dropped, each window is evaluated from an empty cache at positions
//! 0..window, and every token but the first of each window is scored with
//! `-log_softmax` computed in f64 from the f32 logits.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::generate::{Session, SessionConfig};
use crate::kv::{CacheType, ContextPolicy, KvConfig};
use crate::model::{Logits, Model, State};

#[derive(Clone, Debug, Default)]
pub struct Perplexity {
    pub n_windows: usize,
    pub n_scored: usize,
    pub n_dropped_tail: usize,
    pub mean_nll: f64,
    pub ppl: f64,
    pub per_window_mean_nll: Vec<f64>,
}

/// log-sum-exp of a row of logits, in f64.
pub fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)) as f64;
    row.iter()
        .map(|v| (*v as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max
}

/// Evaluate each window and hand its logits (`(window - 1) × vocab`, the rows that predict
/// tokens 1..window) to `each`, together with the window's tokens.
pub fn for_each_window(
    model: &Model,
    tokens: &[u32],
    window: usize,
    each: impl FnMut(usize, &[u32], &[f32]) -> Result<()>,
) -> Result<usize> {
    for_each_window_with(model, tokens, window, CacheType::F32, each)
}

/// [`for_each_window`] with a KV cache of the given storage type.
pub fn for_each_window_with(
    model: &Model,
    tokens: &[u32],
    window: usize,
    cache: CacheType,
    mut each: impl FnMut(usize, &[u32], &[f32]) -> Result<()>,
) -> Result<usize> {
    if window < 2 {
        return Err(Error::usage(format!(
            "window {window} is too small (at least 2)"
        )));
    }
    let n_windows = tokens.len() / window;
    if n_windows == 0 {
        return Err(Error::usage(format!(
            "{} tokens are fewer than one window of {window}",
            tokens.len()
        )));
    }
    let cfg = KvConfig {
        cache_type: cache,
        ..KvConfig::default()
    };
    let mut state = State::with_config(model, window, cfg)?;
    let vocab = model.config.vocab_size;
    for w in 0..n_windows {
        let toks = &tokens[w * window..(w + 1) * window];
        state.reset();
        let logits = model.forward(&mut state, toks, Logits::All)?;
        each(w, toks, &logits[..(window - 1) * vocab])?;
    }
    Ok(n_windows)
}

/// Perplexity of `tokens`; `progress(done, total, running_ppl)` is called after each window.
pub fn perplexity(
    model: &Model,
    tokens: &[u32],
    window: usize,
    progress: impl FnMut(usize, usize, f64),
) -> Result<Perplexity> {
    perplexity_with(model, tokens, window, CacheType::F32, progress)
}

/// Streaming perplexity: the whole token stream goes through one context of `kv_cfg`'s
/// cache with the `shift` policy (a ring of `n_ctx` positions, the first `keep` kept as
/// attention sinks), `batch` tokens per forward call; every token but the first is scored
/// once, as it streams through. Each token sees at most the `n_ctx - keep` previous
/// tokens plus the sinks. `progress(done, total, running_ppl)` after each batch.
pub fn perplexity_streaming(
    model: &Model,
    tokens: &[u32],
    n_ctx: usize,
    kv_cfg: KvConfig,
    batch: usize,
    mut progress: impl FnMut(usize, usize, f64),
) -> Result<Perplexity> {
    if tokens.len() < 2 {
        return Err(Error::usage("at least 2 tokens are needed"));
    }
    // The stream goes through a generation session, so the ring's policy (batches that
    // evict at most the side buffer's worth of slots, sinks) is the one every shell uses.
    let cfg = SessionConfig {
        n_ctx,
        kv: KvConfig {
            policy: ContextPolicy::Shift,
            ..kv_cfg
        },
        batch: batch.max(1),
        ..SessionConfig::default()
    };
    let mut session = Session::open(model, &cfg)?;
    let batch = cfg.batch.min(session.state().cache().max_batch());
    let total = tokens.len().div_ceil(batch);
    let (mut sum, mut n_scored) = (0.0, 0usize);
    for (bi, chunk) in tokens.chunks(batch).enumerate() {
        let start = bi * batch;
        session.feed_scored(chunk, |i, row| {
            if let Some(&target) = tokens.get(start + i + 1) {
                sum += log_sum_exp(row) - row[target as usize] as f64;
                n_scored += 1;
            }
        })?;
        progress(bi + 1, total, (sum / n_scored.max(1) as f64).exp());
    }
    let mean_nll = sum / n_scored as f64;
    Ok(Perplexity {
        n_windows: 1,
        n_scored,
        n_dropped_tail: 0,
        mean_nll,
        ppl: mean_nll.exp(),
        per_window_mean_nll: Vec::new(),
    })
}

/// [`perplexity`] with a KV cache of the given storage type.
pub fn perplexity_with(
    model: &Model,
    tokens: &[u32],
    window: usize,
    cache: CacheType,
    mut progress: impl FnMut(usize, usize, f64),
) -> Result<Perplexity> {
    let vocab = model.config.vocab_size;
    let total = tokens.len() / window.max(1);
    let mut per_window = Vec::new();
    let mut sum = 0.0;
    let n_windows = for_each_window_with(model, tokens, window, cache, |w, toks, logits| {
        let mut nll = 0.0;
        for (i, row) in logits.chunks_exact(vocab).enumerate() {
            let target = toks[i + 1] as usize;
            nll += log_sum_exp(row) - row[target] as f64;
        }
        sum += nll;
        per_window.push(nll / (window - 1) as f64);
        progress(w + 1, total, (sum / ((w + 1) * (window - 1)) as f64).exp());
        Ok(())
    })?;
    let n_scored = n_windows * (window - 1);
    let mean_nll = sum / n_scored as f64;
    Ok(Perplexity {
        n_windows,
        n_scored,
        n_dropped_tail: tokens.len() - n_windows * window,
        mean_nll,
        ppl: mean_nll.exp(),
        per_window_mean_nll: per_window,
    })
}

/// KL divergence of a model against saved base log-probabilities.
#[derive(Clone, Debug, Default)]
pub struct KlDivergence {
    pub n_scored: usize,
    pub ppl: f64,
    pub base_ppl: f64,
    pub mean_kl: f64,
    pub median_kl: f64,
    pub p99_kl: f64,
    pub max_kl: f64,
    /// Fraction of positions where both models' most likely token is the same.
    pub top1_agreement: f64,
}

const KLD_MAGIC: &[u8; 8] = b"LLQKLD\x01\0";

/// Base log-probability file: magic, u32 vocab, u32 window, u64 token count, the tokens
/// (u32 each), then per scored position `f32 min, f32 step, u16 × vocab` — log-probs
/// quantized to 16 bits per row (error ≤ step/2 ≈ range/131070, far below what KL can
/// resolve), as llama.cpp does, so the file is half the size of f32 logits.
pub fn save_base_logits(
    model: &Model,
    tokens: &[u32],
    window: usize,
    path: &Path,
    mut progress: impl FnMut(usize, usize, f64),
) -> Result<Perplexity> {
    let io = |e| Error::io(path, e);
    let vocab = model.config.vocab_size;
    let total = tokens.len() / window.max(1);
    let tmp = path.with_extension("tmp");
    let mut w = BufWriter::new(File::create(&tmp).map_err(io)?);
    w.write_all(KLD_MAGIC).map_err(io)?;
    w.write_all(&(vocab as u32).to_le_bytes()).map_err(io)?;
    w.write_all(&(window as u32).to_le_bytes()).map_err(io)?;
    w.write_all(&(tokens.len() as u64).to_le_bytes())
        .map_err(io)?;
    for t in tokens {
        w.write_all(&t.to_le_bytes()).map_err(io)?;
    }
    let (mut sum, mut row_buf) = (0.0, Vec::with_capacity(vocab * 2 + 8));
    let n_windows = for_each_window(model, tokens, window, |wi, toks, logits| {
        for (i, row) in logits.chunks_exact(vocab).enumerate() {
            let lse = log_sum_exp(row);
            sum += lse - row[toks[i + 1] as usize] as f64;
            let (min, step) = quantize_log_probs(row, lse, &mut row_buf);
            w.write_all(&min.to_le_bytes()).map_err(io)?;
            w.write_all(&step.to_le_bytes()).map_err(io)?;
            w.write_all(&row_buf).map_err(io)?;
        }
        progress(
            wi + 1,
            total,
            (sum / ((wi + 1) * (window - 1)) as f64).exp(),
        );
        Ok(())
    })?;
    w.flush().map_err(io)?;
    drop(w);
    std::fs::rename(&tmp, path).map_err(io)?;
    let n_scored = n_windows * (window - 1);
    Ok(Perplexity {
        n_windows,
        n_scored,
        n_dropped_tail: tokens.len() - n_windows * window,
        mean_nll: sum / n_scored as f64,
        ppl: (sum / n_scored as f64).exp(),
        per_window_mean_nll: Vec::new(),
    })
}

/// Log-probs of a row as u16 codes into `out`; returns (min, step).
fn quantize_log_probs(row: &[f32], lse: f64, out: &mut Vec<u8>) -> (f32, f32) {
    let lp = |v: f32| (v as f64 - lse) as f32;
    let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in row {
        min = min.min(lp(v));
        max = max.max(lp(v));
    }
    let step = ((max - min) / 65535.0).max(f32::MIN_POSITIVE);
    out.clear();
    for &v in row {
        let q = ((lp(v) - min) / step).round().clamp(0.0, 65535.0) as u16;
        out.extend_from_slice(&q.to_le_bytes());
    }
    (min, step)
}

pub fn kl_divergence_vs_base(
    model: &Model,
    tokens: &[u32],
    window: usize,
    path: &Path,
    mut progress: impl FnMut(usize, usize, f64),
) -> Result<KlDivergence> {
    let bad = |m: String| Error::invalid(path, m);
    let io = |e| Error::io(path, e);
    let vocab = model.config.vocab_size;
    let mut r = BufReader::new(File::open(path).map_err(io)?);
    let mut head = [0u8; 24];
    r.read_exact(&mut head).map_err(io)?;
    if &head[..8] != KLD_MAGIC {
        return Err(bad("not an llq KL-divergence base file".into()));
    }
    let u32_at = |o: usize| u32::from_le_bytes(head[o..o + 4].try_into().unwrap()) as usize;
    let n_tok = u64::from_le_bytes(head[16..24].try_into().unwrap());
    if u32_at(8) != vocab || u32_at(12) != window || n_tok != tokens.len() as u64 {
        return Err(bad(format!(
            "made with vocab {}, window {}, {} tokens; this run has vocab {vocab}, window {window}, {} tokens",
            u32_at(8),
            u32_at(12),
            n_tok,
            tokens.len()
        )));
    }
    let mut tb = vec![0u8; tokens.len() * 4];
    r.read_exact(&mut tb).map_err(io)?;
    if tb
        .chunks_exact(4)
        .zip(tokens)
        .any(|(b, t)| u32::from_le_bytes(b.try_into().unwrap()) != *t)
    {
        return Err(bad("made from a different text or tokenizer".into()));
    }
    let total = tokens.len() / window.max(1);
    let mut kls = Vec::new();
    let (mut nll, mut base_nll, mut agree) = (0.0, 0.0, 0usize);
    let mut row_buf = vec![0u8; 8 + vocab * 2];
    let mut base = vec![0f64; vocab];
    for_each_window(model, tokens, window, |wi, toks, logits| {
        for (i, row) in logits.chunks_exact(vocab).enumerate() {
            r.read_exact(&mut row_buf)
                .map_err(|e| bad(format!("truncated: {e}")))?;
            let min = f32::from_le_bytes(row_buf[0..4].try_into().unwrap()) as f64;
            let step = f32::from_le_bytes(row_buf[4..8].try_into().unwrap()) as f64;
            for (b, q) in base.iter_mut().zip(row_buf[8..].chunks_exact(2)) {
                *b = min + step * u16::from_le_bytes([q[0], q[1]]) as f64;
            }
            let lse = log_sum_exp(row);
            let target = toks[i + 1] as usize;
            nll += lse - row[target] as f64;
            base_nll -= base[target];
            let mut kl = 0.0;
            for (lp, &v) in base.iter().zip(row) {
                kl += lp.exp() * (lp - (v as f64 - lse));
            }
            kls.push(kl.max(0.0));
            let base_top = base
                .iter()
                .enumerate()
                .fold(
                    (0, f64::NEG_INFINITY),
                    |m, (j, &v)| if v > m.1 { (j, v) } else { m },
                )
                .0;
            agree += (crate::sample::argmax(row) as usize == base_top) as usize;
        }
        progress(wi + 1, total, (nll / kls.len() as f64).exp());
        Ok(())
    })?;
    let n = kls.len();
    let mean_kl = kls.iter().sum::<f64>() / n as f64;
    kls.sort_by(f64::total_cmp);
    Ok(KlDivergence {
        n_scored: n,
        ppl: (nll / n as f64).exp(),
        base_ppl: (base_nll / n as f64).exp(),
        mean_kl,
        median_kl: kls[n / 2],
        p99_kl: kls[((n as f64 * 0.99) as usize).min(n - 1)],
        max_kl: kls[n - 1],
        top1_agreement: agree as f64 / n as f64,
    })
}
