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
        self.messages.push(ChatMessage::new("user", user));
        let prompt = match self.fit(session, max_answer) {
            Ok(p) => p,
            Err(e) => {
                self.messages.pop();
                return Err(e);
            }
        };
        session.set_prompt(&prompt)?;
        Ok(max_answer.min(session.n_ctx() - prompt.len()))
    }

    /// The conversation's prompt, after dropping the oldest exchanges until it leaves room
    /// for an answer of up to `max_answer` tokens (at most half the context). The system
    /// messages and the last message are never dropped: when they alone do not fit, an
    /// [`Error::ContextFull`].
    fn fit<M: Deref<Target = Model>>(
        &mut self,
        session: &SessionOf<M>,
        max_answer: usize,
    ) -> Result<Vec<u32>> {
        let n_ctx = session.n_ctx();
        let room = n_ctx - max_answer.min(n_ctx / 2);
        let mut prompt = session.encode_chat(self.template.as_ref(), &self.messages)?;
        while prompt.len() > room && self.messages.len() > self.base.len() + 1 {
            self.messages.remove(self.base.len());
            prompt = session.encode_chat(self.template.as_ref(), &self.messages)?;
        }
        if prompt.len() > room {
            return Err(Error::context_full(format!(
                "that message alone does not fit the context of {n_ctx} tokens with room \
                 for an answer (set a larger context)"
            )));
        }
        Ok(prompt)
    }

    /// Replace the conversation with `messages` (one saved earlier, say) and evaluate it,
    /// as [`Conversation::ask`] would, with room for an answer of up to `max_answer`
    /// tokens. Its leading system messages take the place of the system message: never
    /// dropped, kept by [`Conversation::reset`]. The oldest exchanges that do not fit are
    /// dropped; returns how many messages were. On an error (a template that refuses the
    /// messages, system messages and last message that alone do not fit) the conversation
    /// is left as it was.
    pub fn replace<M: Deref<Target = Model>>(
        &mut self,
        session: &mut SessionOf<M>,
        messages: Vec<ChatMessage>,
        max_answer: usize,
    ) -> Result<usize> {
        let n_system = messages.iter().take_while(|m| m.role == "system").count();
        let base = messages[..n_system].to_vec();
        let n = messages.len();
        let old_base = std::mem::replace(&mut self.base, base);
        let old_messages = std::mem::replace(&mut self.messages, messages);
        let result = if n == 0 {
            session.reset();
            Ok(())
        } else {
            self.fit(session, max_answer)
                .and_then(|prompt| session.set_prompt(&prompt))
        };
        match result {
            Ok(()) => Ok(n - self.messages.len()),
            Err(e) => {
                self.base = old_base;
                self.messages = old_messages;
                Err(e)
            }
        }
    }

    /// Take back the last message if it is the user's and has no answer yet (its answer
    /// was interrupted before it began). The context keeps its tokens until the next
    /// [`Conversation::ask`] sets it again.
    pub fn withdraw(&mut self) {
        if self.messages.len() > self.base.len()
            && self.messages.last().is_some_and(|m| m.role == "user")
        {
            self.messages.pop();
        }
    }

    /// Record the model's answer to the last message.
    pub fn answered(&mut self, text: &str) {
        self.messages.push(ChatMessage::new("assistant", text));
    }
}
