//! Perplexity and KL divergence, with llama.cpp-compatible bookkeeping.
//!
//! Protocol (as `smollm2/perplexity.json` defines it): the token stream is cut into
//! consecutive non-overlapping windows of `window` tokens from token 0, the trailing partial
//! window is dropped, each window is evaluated from an empty cache at positions
//! 0..window, and every token but the first of each window is scored with
//! `-log_softmax` computed in f64 from the f32 logits.

use crate::error::{Error, Result};
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
    let mut state = State::new(model, window);
    let vocab = model.config.vocab_size;
    for w in 0..n_windows {
        let toks = &tokens[w * window..(w + 1) * window];
        state.reset();
        let logits = model.forward(&mut state, toks, Logits::All)?;
        each(w, toks, &logits[..(window - 1) * vocab])?;
    }
    Ok(n_windows)
}

/// Perplexity of `tokens`; `progress(done, total)` is called after each window.
pub fn perplexity(
    model: &Model,
    tokens: &[u32],
    window: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Perplexity> {
    let vocab = model.config.vocab_size;
    let total = tokens.len() / window.max(1);
    let mut per_window = Vec::new();
    let mut sum = 0.0;
    let n_windows = for_each_window(model, tokens, window, |w, toks, logits| {
        let mut nll = 0.0;
        for (i, row) in logits.chunks_exact(vocab).enumerate() {
            let target = toks[i + 1] as usize;
            nll += log_sum_exp(row) - row[target] as f64;
        }
        sum += nll;
        per_window.push(nll / (window - 1) as f64);
        progress(w + 1, total);
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
