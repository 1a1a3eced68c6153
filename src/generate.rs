//! Text generation on top of the forward pass: a session that keeps the tokens in its KV
//! cache, reuses the longest common prefix when a new prompt arrives (chat turns, edited
//! prompts), and samples tokens one by one.

use std::ops::Deref;

use crate::error::{Error, Result};
use crate::model::{Logits, Model, State};
use crate::sample::{Sampler, SamplerParams};
use crate::tokenizer::Tokenizer;

/// Prompt tokens evaluated per forward call: bounds the activation buffers.
pub const BATCH: usize = 256;

/// A generation session over a model held by `M`: `&Model` ([`Session`]) or an owning
/// handle such as `Arc<Model>` (for sessions that must not borrow, e.g. across the C ABI).
pub struct SessionOf<M: Deref<Target = Model>> {
    model: M,
    state: State,
    sampler: Sampler,
    /// Tokens whose keys/values are in the cache, in order.
    tokens: Vec<u32>,
    logits: Vec<f32>,
    /// Prompt tokens evaluated so far (not counting reused prefixes).
    evaluated: usize,
}

/// A session borrowing its model.
pub type Session<'m> = SessionOf<&'m Model>;

impl<M: Deref<Target = Model>> SessionOf<M> {
    pub fn new(model: M, n_ctx: usize, params: SamplerParams) -> SessionOf<M> {
        SessionOf {
            state: State::new(&model, n_ctx),
            model,
            sampler: Sampler::new(params),
            tokens: Vec::new(),
            logits: Vec::new(),
            evaluated: 0,
        }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn n_ctx(&self) -> usize {
        self.state.n_ctx()
    }

    /// Tokens currently in the context.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Number of tokens run through the model so far (prefix reuse saves the rest).
    pub fn evaluated(&self) -> usize {
        self.evaluated
    }

    pub fn kv_cache_bytes(&self) -> usize {
        self.state.cache_bytes()
    }

    /// Forget everything in the context.
    pub fn reset(&mut self) {
        self.state.reset();
        self.tokens.clear();
        self.logits.clear();
    }

    /// Replace the sampler (fresh random state and repetition history).
    pub fn set_sampler(&mut self, params: SamplerParams) {
        self.sampler = Sampler::new(params);
    }

    /// Make the context hold exactly `prompt`: keep the longest common prefix already in the
    /// cache and evaluate the rest. At least the last token is always evaluated so that
    /// fresh logits are available.
    pub fn set_prompt(&mut self, prompt: &[u32]) -> Result<()> {
        if prompt.is_empty() {
            return Err(Error::usage("empty prompt"));
        }
        if prompt.len() > self.n_ctx() {
            return Err(Error::usage(format!(
                "prompt of {} tokens does not fit the context of {} (set -c)",
                prompt.len(),
                self.n_ctx()
            )));
        }
        let common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        self.state.truncate(common);
        self.tokens.truncate(common);
        prompt.iter().for_each(|&t| self.sampler.accept(t));
        self.feed(&prompt[common..])
    }

    /// Append tokens to the context and evaluate them.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<()> {
        if self.tokens.len() + tokens.len() > self.n_ctx() {
            return Err(Error::usage(format!(
                "context full: {} + {} tokens > {}",
                self.tokens.len(),
                tokens.len(),
                self.n_ctx()
            )));
        }
        for chunk in tokens.chunks(BATCH) {
            let l = self.model.forward(&mut self.state, chunk, Logits::Last)?;
            self.logits.clear();
            self.logits.extend_from_slice(l);
            self.tokens.extend_from_slice(chunk);
            self.evaluated += chunk.len();
        }
        Ok(())
    }

    /// Logits after the last evaluated token.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Sample the next token from the current logits (does not evaluate it).
    pub fn sample(&mut self) -> u32 {
        let t = self.sampler.sample(&self.logits);
        self.sampler.accept(t);
        t
    }

    /// Generate up to `max` tokens: sample, report, evaluate, until `on_token` returns
    /// false, a stop token is sampled (it is reported but not evaluated) or the context is
    /// full. Returns the number of tokens produced.
    pub fn generate(
        &mut self,
        max: usize,
        stop: &dyn Fn(u32) -> bool,
        mut on_token: impl FnMut(u32) -> bool,
    ) -> Result<usize> {
        let mut n = 0;
        while n < max {
            let t = self.sample();
            n += 1;
            let go_on = on_token(t);
            if stop(t) || !go_on || n == max || self.tokens.len() >= self.n_ctx() {
                break;
            }
            self.feed(&[t])?;
        }
        Ok(n)
    }
}

/// The tokens that end generation: the tokenizer's end-of-generation ids plus the
/// config's eos ids.
pub fn stop_ids(model: &Model) -> Vec<u32> {
    let mut ids = model.config.eos_ids.clone();
    if let Some(t) = &model.tokenizer {
        for &id in t.eog_ids() {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids
}

/// A token's text as a template variable (`bos_token`, `eos_token`).
pub fn piece_text(tok: &Tokenizer, id: Option<u32>) -> String {
    id.map(|i| String::from_utf8_lossy(tok.token_piece(i)).into_owned())
        .unwrap_or_default()
}
