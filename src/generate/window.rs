//! What a session's context holds, and the one rule for a full context.

use crate::error::{Error, Result};
use crate::kv::ContextPolicy;
use crate::model::{Logits, Model, State};

/// Receives `(index in the fed tokens, logits row)` for every fed token.
type RowSink<'a> = dyn FnMut(usize, &[f32]) + 'a;

/// What the context holds: the cache (inside `state`), its tokens and the logits after the
/// last one. Kept apart from the model and sampler so that generation can feed tokens
/// while it borrows the model's tokenizer.
pub(super) struct Window {
    pub(super) state: State,
    /// Tokens whose keys/values are in the cache, in order (after a wrap: the sinks, then
    /// the window, oldest first).
    pub(super) tokens: Vec<u32>,
    pub(super) logits: Vec<f32>,
    /// Prompt tokens evaluated so far (not counting reused prefixes).
    pub(super) evaluated: usize,
    /// Most tokens per forward call.
    pub(super) batch: usize,
    /// Whether a prompt longer than the context may stream through the ring.
    pub(super) long_prompt: super::LongPrompt,
}

impl Window {
    pub(super) fn shift(&self) -> bool {
        self.state.cache().config().policy == ContextPolicy::Shift
    }

    pub(super) fn n_ctx(&self) -> usize {
        self.state.n_ctx()
    }

    /// Whether a prompt of `len` tokens may be set (see [`super::LongPrompt`]).
    pub(super) fn prompt_fits(&self, len: usize) -> Result<()> {
        let policy = self.state.cache().config().policy;
        self.long_prompt.check(len, self.n_ctx(), policy)
    }

    /// Whether the `stop` policy forbids evaluating another token.
    pub(super) fn full(&self) -> bool {
        !self.shift() && self.tokens.len() >= self.n_ctx()
    }

    /// The context-full policy, in one place: under `stop` the tokens must fit (else
    /// nothing is evaluated and the context is unchanged); under `shift` the oldest
    /// non-sink positions are overwritten. Every id is checked before anything is
    /// evaluated. `each(i, row)` receives every token's logits when given (scoring);
    /// otherwise only the last token's are computed.
    pub(super) fn feed(
        &mut self,
        model: &Model,
        tokens: &[u32],
        mut each: Option<&mut RowSink<'_>>,
    ) -> Result<()> {
        let vocab = model.config.vocab_size;
        if let Some((i, t)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= vocab)
        {
            return Err(Error::usage(format!(
                "token {t} at index {i} is outside the vocabulary (size {vocab})"
            )));
        }
        let shift = self.shift();
        if !shift && self.tokens.len() + tokens.len() > self.n_ctx() {
            return Err(Error::context_full(format!(
                "context full: {} + {} tokens > n_ctx {} (set a larger context, or the \
                 shift policy)",
                self.tokens.len(),
                tokens.len(),
                self.n_ctx()
            )));
        }
        let batch = if shift {
            self.batch.min(self.state.cache().max_batch())
        } else {
            self.batch
        };
        let (n_ctx, keep) = (self.n_ctx(), self.state.cache().config().keep);
        let want = if each.is_some() {
            Logits::All
        } else {
            Logits::Last
        };
        let mut done = 0;
        for chunk in tokens.chunks(batch) {
            let state = &mut self.state;
            let l = crate::tsan::in_pool(|| model.forward(state, chunk, want))?;
            if let Some(f) = each.as_mut() {
                for (i, row) in l.chunks_exact(vocab).enumerate() {
                    f(done + i, row);
                }
            }
            self.logits.clear();
            self.logits.extend_from_slice(&l[l.len() - vocab..]);
            for &t in chunk {
                if self.tokens.len() == n_ctx {
                    // The ring overwrote the oldest window position.
                    self.tokens.copy_within(keep + 1.., keep);
                    self.tokens.pop();
                }
                self.tokens.push(t);
            }
            self.evaluated += chunk.len();
            done += chunk.len();
            non_finite_check(model, &mut self.logits, self.tokens.len())?;
        }
        Ok(())
    }

    pub(super) fn reset(&mut self) {
        self.state.reset();
        self.tokens.clear();
        self.logits.clear();
    }
}

/// Logits with a NaN or an infinity mean the weights are not what `convert` wrote (it
/// refuses non-finite weights): the file was altered or damaged afterwards. The header's
/// CRC is checked at open, the data's only by `llq info` (it reads the whole file); the
/// forward pass turns a non-finite hidden state into NaN logits (model/forward.rs), so this
/// scan of one vocabulary-sized row per evaluation (tens of microseconds against
/// milliseconds of forward pass) is what stops a damaged model from printing garbage.
/// The logits are dropped so that nothing samples from them.
fn non_finite_check(model: &Model, logits: &mut Vec<f32>, position: usize) -> Result<()> {
    if logits.iter().all(|x| x.is_finite()) {
        return Ok(());
    }
    logits.clear();
    let path = model.file.path();
    Err(Error::invalid(
        path,
        format!(
            "the model computed non-finite values (NaN or infinity) up to context position \
             {position}: its weight data is probably corrupted (changed after conversion); \
             `llq info {}` checks the data checksum",
            path.display()
        ),
    ))
}
