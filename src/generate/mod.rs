//! Text generation: a [`SessionOf`] owns everything between "here is a prompt" and "here
//! are the tokens": prompt encoding, the context-full policy (`stop`, or `shift` with
//! attention sinks, see [`crate::kv`]), sampling, end-of-generation tokens and
//! [`StopReason`]s, UTF-8-complete streaming pieces, and cancellation ([`StopHandle`]).
//! The CLI (`run`, `chat`, `perplexity --streaming`) and the C API are thin shells over it,
//! so a policy is decided once, here.
//!
//! Defaults live in [`SessionConfig`] (context size, cache, sampler) and
//! [`crate::threads`] (thread count).

mod config;
mod conversation;
mod stop;
mod window;

pub use config::{LongPrompt, SessionConfig, DEFAULT_MAX_CTX, MAX_CTX};
pub use conversation::Conversation;
pub use stop::{GenerateParams, Generated, Piece, StopHandle, StopReason};
use window::Window;

use std::ops::Deref;
use std::path::Path;

use crate::chat::{encode_messages, ChatMessage, ChatTemplate};
use crate::error::{Error, Result};
use crate::kv::{prompt_cache, KvConfig};
use crate::lora::AdapterSet;
use crate::model::{Model, State};
use crate::sample::{Sampler, SamplerParams};

/// Prompt tokens evaluated per forward call by default: bounds the activation buffers.
pub const BATCH: usize = 256;

/// A generation session over a model held by `M`: `&Model` ([`Session`]) or an owning
/// handle such as `Arc<Model>` (for sessions that must not borrow, e.g. across the C ABI).
pub struct SessionOf<M: Deref<Target = Model>> {
    model: M,
    window: Window,
    sampler: Sampler,
    sampler_params: SamplerParams,
    /// Tokens that end generation (see [`stop_ids`]).
    stops: Vec<u32>,
    stop: StopHandle,
}

/// A session borrowing its model.
pub type Session<'m> = SessionOf<&'m Model>;

impl<M: Deref<Target = Model>> SessionOf<M> {
    /// A session with an exact f32 cache that stops when the context is full.
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
        SessionOf::open(
            model,
            &SessionConfig {
                n_ctx,
                kv,
                sampler: params,
                ..SessionConfig::default()
            },
        )
    }

    /// A session as `cfg` describes it (`n_ctx = 0`: the model's trained context, capped
    /// at [`DEFAULT_MAX_CTX`]); every parameter is validated here, for every shell.
    pub fn open(model: M, cfg: &SessionConfig) -> Result<SessionOf<M>> {
        cfg.sampler.validate()?;
        let n_ctx = cfg.n_ctx_for(&model)?;
        let state = State::with_config(&model, n_ctx, cfg.kv)?;
        Ok(SessionOf {
            window: Window {
                state,
                tokens: Vec::with_capacity(n_ctx.min(1 << 16)),
                logits: Vec::with_capacity(model.config.vocab_size),
                evaluated: 0,
                batch: cfg.batch.max(1),
                long_prompt: cfg.long_prompt,
            },
            sampler: Sampler::new(cfg.sampler.clone()),
            sampler_params: cfg.sampler.clone(),
            stops: stop_ids(&model),
            stop: StopHandle::default(),
            model,
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn n_ctx(&self) -> usize {
        self.window.n_ctx()
    }

    /// Tokens currently in the context.
    pub fn tokens(&self) -> &[u32] {
        &self.window.tokens
    }

    /// Number of tokens run through the model so far (prefix reuse saves the rest).
    pub fn evaluated(&self) -> usize {
        self.window.evaluated
    }

    /// Bytes the KV cache holds (its storage plus the eviction side buffer of `shift`);
    /// allocated once, constant for the session's lifetime.
    pub fn kv_cache_bytes(&self) -> usize {
        self.window.state.cache().allocated_bytes()
    }

    /// The forward state (its cache's accounting, for tests and reports).
    pub fn state(&self) -> &State {
        &self.window.state
    }

    /// The tokens that end generation.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stops
    }

    /// A handle that asks a running [`SessionOf::generate`] to stop after its current
    /// token, from any thread (or a signal handler: it only stores an atomic).
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Forget everything in the context and restart the sampler from its seed: the
    /// session behaves as if newly opened.
    pub fn reset(&mut self) {
        self.window.reset();
        self.sampler = Sampler::new(self.sampler_params.clone());
    }

    /// Apply `adapters` (LoRA, checked against this session's model) from now on; an empty
    /// set removes them. The context is reset, as by [`SessionOf::reset`]: what it holds
    /// was computed with the previous adapters.
    pub fn set_adapters(&mut self, adapters: AdapterSet) -> Result<()> {
        if !adapters.fits(&self.model.config) {
            return Err(Error::usage(
                "LoRA adapters checked against another model's configuration",
            ));
        }
        self.reset();
        self.window.state.set_adapters(adapters);
        Ok(())
    }

    /// A prompt cache records the model, not adapters: refuse it while adapters apply.
    fn no_adapters_for_prompt_cache(&self, path: &Path) -> Result<()> {
        if self.window.state.adapters().is_empty() {
            Ok(())
        } else {
            Err(Error::invalid(
                path,
                "prompt caches do not record LoRA adapters: not used while adapters apply",
            ))
        }
    }

    /// The sampling parameters in use.
    pub fn sampler_params(&self) -> &SamplerParams {
        &self.sampler_params
    }

    /// Replace the sampler (fresh random state and repetition history).
    pub fn set_sampler(&mut self, params: SamplerParams) -> Result<()> {
        params.validate()?;
        self.sampler = Sampler::new(params.clone());
        self.sampler_params = params;
        Ok(())
    }

    /// Text to prompt tokens with the model's tokenizer: BOS first when `add_special` and
    /// the tokenizer asks for it; special-token text becomes special tokens when
    /// `parse_special` (turn it off for untrusted text).
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        Ok(self
            .model
            .tokenizer()?
            .encode_prompt(text, add_special, parse_special))
    }

    /// A conversation to prompt tokens (see [`crate::chat::encode_messages`]).
    pub fn encode_chat(
        &self,
        template: Option<&ChatTemplate>,
        messages: &[ChatMessage],
    ) -> Result<Vec<u32>> {
        encode_messages(self.model.tokenizer()?, template, messages).map_err(|e| {
            match template.and_then(ChatTemplate::origin) {
                Some(origin) => Error::usage(format!("{origin}: {e}")),
                None => Error::usage(e.to_string()),
            }
        })
    }

    /// Make the context hold exactly `prompt`: keep the longest common prefix already in the
    /// cache and evaluate the rest. The last token is evaluated again unless the context
    /// already ends with the whole prompt and its logits. After the window wrapped the
    /// cache holds no plain prefix, so everything is evaluated again. A prompt longer
    /// than the context is an [`Error::ContextFull`] under `stop` or with
    /// [`LongPrompt::Refuse`]; otherwise it streams through the ring (its oldest tokens
    /// after the sinks are dropped: `prompt.len() - n_ctx` of them).
    pub fn set_prompt(&mut self, prompt: &[u32]) -> Result<()> {
        if prompt.is_empty() {
            return Err(Error::usage("empty prompt: it has no tokens"));
        }
        let w = &mut self.window;
        w.prompt_fits(prompt.len())?;
        let mut common = w
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        let fresh = common == prompt.len() && common == w.tokens.len();
        if !fresh || w.logits.is_empty() {
            common = common.min(prompt.len() - 1);
        }
        if w.state.cache().wrapped() {
            common = 0;
        }
        w.state.truncate(common);
        w.tokens.truncate(common);
        prompt.iter().for_each(|&t| self.sampler.accept(t));
        if common == prompt.len() {
            return Ok(());
        }
        w.feed(&self.model, &prompt[common..], None)
    }

    /// Append tokens to the context and evaluate them, under the context's policy: `stop`
    /// refuses tokens that do not fit ([`Error::ContextFull`], context unchanged), `shift`
    /// overwrites the oldest non-sink positions. Fed tokens do not enter the repetition
    /// penalty's history (prompts given to [`SessionOf::set_prompt`] and generated tokens
    /// do).
    pub fn feed(&mut self, tokens: &[u32]) -> Result<()> {
        self.window.feed(&self.model, tokens, None)
    }

    /// [`SessionOf::feed`] that hands every token's logits to `each(i, row)` (scoring a
    /// stream, e.g. `perplexity --streaming`).
    pub fn feed_scored(
        &mut self,
        tokens: &[u32],
        mut each: impl FnMut(usize, &[f32]),
    ) -> Result<()> {
        self.window.feed(&self.model, tokens, Some(&mut each))
    }

    /// Use a saved prompt (`llq run --prompt-cache`): if `path` holds a cache for this
    /// model and cache type whose tokens share a prefix with `prompt`, load it so that
    /// [`SessionOf::set_prompt`] evaluates only the rest. Returns the number of reused
    /// tokens; an error says why the file was not usable (the context is then empty).
    pub fn load_prompt_cache(&mut self, path: &Path, prompt: &[u32]) -> Result<usize> {
        self.no_adapters_for_prompt_cache(path)?;
        let w = &mut self.window;
        let saved = prompt_cache::load(path, &self.model.identity(), w.state.cache())?;
        let common = saved
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        if common == 0 {
            return Err(Error::invalid(path, "its tokens do not start the prompt"));
        }
        w.reset();
        saved.restore(w.state.cache_mut());
        w.tokens.extend_from_slice(&saved.tokens);
        w.logits.extend_from_slice(&saved.logits);
        if common < saved.tokens.len() {
            w.state.truncate(common);
            w.tokens.truncate(common);
            w.logits.clear();
        }
        Ok(common)
    }

    /// Save the context (which must be exactly the evaluated prompt, not wrapped) as a
    /// prompt cache, atomically. Only a missing file or an existing prompt cache is
    /// replaced: any other file at `path` is an error, never overwritten.
    pub fn save_prompt_cache(&self, path: &Path) -> Result<()> {
        self.no_adapters_for_prompt_cache(path)?;
        let w = &self.window;
        prompt_cache::save(
            path,
            &self.model.identity(),
            w.state.cache(),
            &w.tokens,
            &w.logits,
        )
    }

    /// Logits after the last evaluated token (empty before anything was evaluated).
    pub fn logits(&self) -> &[f32] {
        &self.window.logits
    }

    /// Sample the next token from the current logits (does not evaluate it).
    pub fn sample(&mut self) -> Result<u32> {
        if self.window.logits.is_empty() {
            return Err(Error::usage("no logits yet: evaluate a prompt first"));
        }
        let t = self.sampler.sample(&self.window.logits);
        self.sampler.accept(t);
        Ok(t)
    }

    /// The generation loop, the only one in llq. From the logits of what the context
    /// holds (a prompt set with [`SessionOf::set_prompt`] or tokens fed), until a
    /// [`StopReason`]:
    /// 1. `max_tokens` reached → `MaxTokens`; a stop request → `Requested`; the context
    ///    full under `stop` → `ContextFull` (under `shift` it never is);
    /// 2. sample; an end-of-generation token (with `stop_at_eog`) → `EndOfGeneration`: it
    ///    is neither reported nor kept;
    /// 3. report the token with its newly completed UTF-8 text (`on_piece`), then append
    ///    it to the context; if `on_piece` returned false → `Callback`.
    ///
    /// Unless stopped by the callback, text held back for an incomplete character is
    /// reported last as a piece without a token. A stop request made before this call
    /// is forgotten.
    pub fn generate(
        &mut self,
        params: &GenerateParams,
        mut on_piece: impl FnMut(Piece<'_>) -> bool,
    ) -> Result<Generated> {
        self.stop.clear();
        if self.window.logits.is_empty() {
            return Err(Error::usage(
                "nothing to generate from: give a prompt or evaluate tokens first",
            ));
        }
        let model: &Model = &self.model;
        let mut decoder = model
            .tokenizer
            .as_ref()
            .map(|t| t.stream_decoder(params.skip_special));
        let mut n = 0;
        let stop = loop {
            if n >= params.max_tokens {
                break StopReason::MaxTokens;
            }
            if self.stop.is_requested() {
                break StopReason::Requested;
            }
            if self.window.full() {
                break StopReason::ContextFull;
            }
            let t = self.sampler.sample(&self.window.logits);
            self.sampler.accept(t);
            if params.stop_at_eog && self.stops.contains(&t) {
                break StopReason::EndOfGeneration;
            }
            n += 1;
            let text = decoder.as_mut().map(|d| d.push(t)).unwrap_or_default();
            let go_on = on_piece(Piece {
                token: Some(t),
                text: &text,
            });
            self.window.feed(model, &[t], None)?;
            if !go_on {
                break StopReason::Callback;
            }
        };
        if stop != StopReason::Callback {
            let tail = decoder.as_mut().map(|d| d.flush()).unwrap_or_default();
            if !tail.is_empty() {
                on_piece(Piece {
                    token: None,
                    text: &tail,
                });
            }
        }
        Ok(Generated { n_tokens: n, stop })
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
