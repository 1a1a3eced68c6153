//! Text generation on top of the forward pass: a session that keeps the tokens in its KV
//! cache, reuses the longest common prefix when a new prompt arrives (chat turns, edited
//! prompts), and samples tokens one by one. Under the `shift` context policy (see
//! [`crate::kv`]) it keeps generating past the context size.

use std::ops::Deref;
use std::path::Path;

use crate::error::{Error, Result};
use crate::kv::{prompt_cache, ContextPolicy, KvConfig};
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
    /// Tokens whose keys/values are in the cache, in order (after a wrap: the sinks, then
    /// the window, oldest first).
    tokens: Vec<u32>,
    logits: Vec<f32>,
    /// Prompt tokens evaluated so far (not counting reused prefixes).
    evaluated: usize,
}

/// A session borrowing its model.
pub type Session<'m> = SessionOf<&'m Model>;

impl<M: Deref<Target = Model>> SessionOf<M> {
    /// A session with an f32 cache that stops when the context is full.
    pub fn new(model: M, n_ctx: usize, params: SamplerParams) -> SessionOf<M> {
        SessionOf::with_config(model, n_ctx, params, KvConfig::default())
            .expect("the default cache fits any model")
    }

    /// A session with the given cache type and full-window policy.
    pub fn with_config(
        model: M,
        n_ctx: usize,
        params: SamplerParams,
        kv: KvConfig,
    ) -> Result<SessionOf<M>> {
        Ok(SessionOf {
            state: State::with_config(&model, n_ctx, kv)?,
            sampler: Sampler::new(params),
            tokens: Vec::with_capacity(n_ctx),
            logits: Vec::with_capacity(model.config.vocab_size),
            evaluated: 0,
            model,
        })
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

    /// Bytes the KV cache holds (its storage plus the eviction side buffer of `shift`);
    /// allocated once, constant for the session's lifetime.
    pub fn kv_cache_bytes(&self) -> usize {
        self.state.cache().allocated_bytes()
    }

    /// The forward state (its cache's accounting, for tests and reports).
    pub fn state(&self) -> &State {
        &self.state
    }

    fn shift(&self) -> bool {
        self.state.cache().config().policy == ContextPolicy::Shift
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
    /// cache and evaluate the rest. The last token is evaluated again unless the context
    /// already ends with the whole prompt and its logits. After the window wrapped the
    /// cache holds no plain prefix, so everything is evaluated again.
    pub fn set_prompt(&mut self, prompt: &[u32]) -> Result<()> {
        if prompt.is_empty() {
            return Err(Error::usage("empty prompt"));
        }
        if prompt.len() > self.n_ctx() && !self.shift() {
            return Err(Error::usage(format!(
                "prompt of {} tokens does not fit the context of {} (set -c)",
                prompt.len(),
                self.n_ctx()
            )));
        }
        let mut common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        let fresh = common == prompt.len() && common == self.tokens.len();
        if !fresh || self.logits.is_empty() {
            common = common.min(prompt.len() - 1);
        }
        if self.state.cache().wrapped() {
            common = 0;
        }
        self.state.truncate(common);
        self.tokens.truncate(common);
        prompt.iter().for_each(|&t| self.sampler.accept(t));
        if common == prompt.len() {
            return Ok(());
        }
        self.feed(&prompt[common..])
    }

    /// Append tokens to the context and evaluate them. Under `stop` the context must have
    /// room; under `shift` the oldest non-sink positions are overwritten.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<()> {
        let shift = self.shift();
        if !shift && self.tokens.len() + tokens.len() > self.n_ctx() {
            return Err(Error::usage(format!(
                "context full: {} + {} tokens > {}",
                self.tokens.len(),
                tokens.len(),
                self.n_ctx()
            )));
        }
        let batch = if shift {
            BATCH.min(self.state.cache().max_batch())
        } else {
            BATCH
        };
        let (n_ctx, keep) = (self.n_ctx(), self.state.cache().config().keep);
        for chunk in tokens.chunks(batch) {
            let l = self.model.forward(&mut self.state, chunk, Logits::Last)?;
            self.logits.clear();
            self.logits.extend_from_slice(l);
            for &t in chunk {
                if self.tokens.len() == n_ctx {
                    // The ring overwrote the oldest window position.
                    self.tokens.copy_within(keep + 1.., keep);
                    self.tokens.pop();
                }
                self.tokens.push(t);
            }
            self.evaluated += chunk.len();
        }
        Ok(())
    }

    /// Use a saved prompt (`llq run --prompt-cache`): if `path` holds a cache for this
    /// model and cache type whose tokens share a prefix with `prompt`, load it so that
    /// [`Session::set_prompt`] evaluates only the rest. Returns the number of reused
    /// tokens; an error says why the file was not usable (the context is then empty).
    pub fn load_prompt_cache(&mut self, path: &Path, prompt: &[u32]) -> Result<usize> {
        let saved = prompt_cache::load(path, &self.model, self.state.cache())?;
        let common = saved
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        if common == 0 {
            return Err(Error::invalid(path, "its tokens do not start the prompt"));
        }
        self.reset();
        saved.restore(self.state.cache_mut());
        self.tokens.extend_from_slice(&saved.tokens);
        self.logits.extend_from_slice(&saved.logits);
        if common < saved.tokens.len() {
            self.state.truncate(common);
            self.tokens.truncate(common);
            self.logits.clear();
        }
        Ok(common)
    }

    /// Save the context (which must be exactly the evaluated prompt, not wrapped) as a
    /// prompt cache, atomically.
    pub fn save_prompt_cache(&self, path: &Path) -> Result<()> {
        prompt_cache::save(
            path,
            &self.model,
            self.state.cache(),
            &self.tokens,
            &self.logits,
        )
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
    /// full (`stop` policy; `shift` goes on). Returns the number of tokens produced.
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
            let full = !self.shift() && self.tokens.len() >= self.n_ctx();
            if stop(t) || !go_on || n == max || full {
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
