//! A multi-turn chat kept in a session's context: the turns, rendered by the model's
//! template, and the rule for what to drop when the context cannot hold them all.

use std::ops::Deref;

use super::SessionOf;
use crate::chat::{ChatMessage, ChatTemplate};
use crate::error::{Error, Result};
use crate::model::Model;

/// The conversation so far. Each turn re-renders the whole conversation and hands it to
/// [`SessionOf::set_prompt`], which evaluates only what is new since the last turn.
pub struct Conversation {
    template: Option<ChatTemplate>,
    /// The system message, if any: never dropped.
    base: Vec<ChatMessage>,
    messages: Vec<ChatMessage>,
}

impl Conversation {
    /// Without a template, turns are plain text (see [`crate::chat::encode_messages`]).
    pub fn new(template: Option<ChatTemplate>, system: Option<&str>) -> Conversation {
        let base: Vec<ChatMessage> = system
            .map(|s| ChatMessage::new("system", s))
            .into_iter()
            .collect();
        Conversation {
            template,
            messages: base.clone(),
            base,
        }
    }

    /// Start over (the system message stays).
    pub fn reset(&mut self) {
        self.messages = self.base.clone();
    }

    pub fn messages(&self) -> &[ChatMessage] {
        &self.messages
    }

    /// Add the user's message and set the session's context to the conversation, with
    /// room left for an answer of up to `max_answer` tokens (at most half the context):
    /// the oldest exchanges are dropped until it fits. Returns the most tokens the answer
    /// may have before the context is full. A message that does not fit even alone is an
    /// [`Error::ContextFull`] and is not kept.
    pub fn ask<M: Deref<Target = Model>>(
        &mut self,
        session: &mut SessionOf<M>,
        user: &str,
        max_answer: usize,
    ) -> Result<usize> {
        let n_ctx = session.n_ctx();
        let room = n_ctx - max_answer.min(n_ctx / 2);
        self.messages.push(ChatMessage::new("user", user));
        let mut prompt = session.encode_chat(self.template.as_ref(), &self.messages)?;
        while prompt.len() > room && self.messages.len() > self.base.len() + 1 {
            self.messages.remove(self.base.len());
            prompt = session.encode_chat(self.template.as_ref(), &self.messages)?;
        }
        if prompt.len() > room {
            self.messages.pop();
            return Err(Error::context_full(format!(
                "that message alone does not fit the context of {n_ctx} tokens with room \
                 for an answer (set a larger context)"
            )));
        }
        session.set_prompt(&prompt)?;
        Ok(max_answer.min(n_ctx - prompt.len()))
    }

    /// Record the model's answer to the last message.
    pub fn answered(&mut self, text: &str) {
        self.messages.push(ChatMessage::new("assistant", text));
    }
}
