//! Chat templates.

use std::ffi::c_char;

use super::marshal::{c_str, non_null, slice, write_text};
use super::model::model_ref;
use super::*;
use crate::chat::{ChatMessage, ChatTemplate};

/// Render `n` chat messages with a Jinja chat template: `tmpl` if non-NULL, else the
/// model's (`LLQ_ERR_NO_CHAT_TEMPLATE` if it has none). `add_generation_prompt` appends
/// the assistant header. Output and sizes as in `llq_detokenize`. Tokenize the result with
/// `add_special = false, parse_special = true` (templates write BOS themselves).
///
/// # Safety
/// `messages` readable for `n` entries whose strings are NUL-terminated; `tmpl` NULL or
/// NUL-terminated; `out_buf` writable for `capacity` bytes; `out_len` writable.
#[no_mangle]
pub unsafe extern "C" fn llq_chat_apply_template(
    model: *const llq_model,
    tmpl: *const c_char,
    messages: *const llq_chat_message,
    n: usize,
    add_generation_prompt: bool,
    out_buf: *mut c_char,
    capacity: usize,
    out_len: *mut usize,
) -> llq_status {
    guard(|| {
        let h = model_ref(model)?;
        non_null(out_len, "out_len")?;
        let src = if tmpl.is_null() {
            h.model.chat_template.as_deref().ok_or_else(|| {
                err(
                    LLQ_ERR_NO_CHAT_TEMPLATE,
                    "the model has no chat template (pass one as tmpl)",
                )
            })?
        } else {
            // SAFETY: non-null, NUL-terminated per the contract.
            unsafe { c_str(tmpl, "tmpl")? }
        };
        // SAFETY: messages readable for n per the contract.
        let raw = unsafe { slice(messages, n, "messages")? };
        let mut msgs = Vec::with_capacity(n);
        for (i, msg) in raw.iter().enumerate() {
            // SAFETY: strings NUL-terminated per the contract.
            let role = unsafe { c_str(msg.role, &format!("messages[{i}].role"))? };
            // SAFETY: as above.
            let content = unsafe { c_str(msg.content, &format!("messages[{i}].content"))? };
            msgs.push(ChatMessage::new(role, content));
        }
        let tpl = ChatTemplate::new(src)
            .map_err(|e| err(LLQ_ERR_TEMPLATE, format!("chat template: {e}")))?;
        let text = match &h.model.tokenizer {
            Some(t) => tpl.render_for(t, &msgs, add_generation_prompt),
            None => tpl.render(&msgs, add_generation_prompt, "", ""),
        }
        .map_err(|e| err(LLQ_ERR_TEMPLATE, format!("chat template: {e}")))?;
        // SAFETY: buffer contract forwarded.
        unsafe { write_text(text.as_bytes(), out_buf, capacity, out_len) }
    })
}
