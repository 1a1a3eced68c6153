//! Generation: a thin shell over `Session::generate`.

use std::ffi::{c_char, c_void};

use super::context::ctx_ref;
use super::marshal::{c_str, tokenizer};
use super::*;
use crate::generate::{GenerateParams, Piece, StopReason};

/// Default generation options: max_tokens 256, stop at end-of-generation tokens, add BOS
/// when the model wants it, parse special tokens in the prompt, skip special tokens in the
/// output text.
#[no_mangle]
pub extern "C" fn llq_generate_default_params() -> llq_generate_params {
    llq_generate_params {
        max_tokens: 256,
        stop_at_eog: true,
        add_special: true,
        parse_special: true,
        skip_special: true,
    }
}

/// Generate text, streaming it to `on_token` (may be NULL).
///
/// If `prompt` (NUL-terminated UTF-8) is non-NULL it is tokenized and the context is made
/// to hold exactly it, reusing the longest common prefix already cached (so re-sending a
/// growing chat transcript only evaluates the new part). If `prompt` is NULL, generation
/// continues from the tokens already in the context (e.g. after `llq_eval`); this works
/// without a tokenizer (pieces are then empty, ids are still reported).
///
/// Each generated token is reported, then appended to the context. Generation ends after
/// `max_tokens`, at an end-of-generation token (if `stop_at_eog`; it is neither reported
/// nor kept), when the callback returns false, on `llq_context_request_stop`, or when the
/// context is full; `*out_result` (may be NULL) says which and how many tokens.
///
/// # Safety
/// `prompt` NULL or NUL-terminated; `out_result` NULL or writable; `on_token` safe to call
/// with `user_data`.
#[no_mangle]
pub unsafe extern "C" fn llq_generate(
    ctx: *mut llq_context,
    prompt: *const c_char,
    params: llq_generate_params,
    on_token: llq_token_callback,
    user_data: *mut c_void,
    out_result: *mut llq_generate_result,
) -> llq_status {
    guard(|| {
        let c = ctx_ref(ctx)?;
        let max_tokens = usize::try_from(params.max_tokens)
            .map_err(|_| err(LLQ_ERR_INVALID_ARG, "max_tokens < 0"))?;
        let mut session = c.lock()?;
        if !prompt.is_null() {
            // SAFETY: non-null, NUL-terminated per the contract.
            let text = unsafe { c_str(prompt, "prompt")? };
            tokenizer(&c.model)?;
            let ids = session.encode(text, params.add_special, params.parse_special)?;
            session.set_prompt(&ids)?;
        } else if session.logits().is_empty() {
            return Err(err(
                LLQ_ERR_INVALID_ARG,
                "no prompt and an empty context: give a prompt or llq_eval tokens first",
            ));
        }
        let gp = GenerateParams {
            max_tokens,
            stop_at_eog: params.stop_at_eog,
            skip_special: params.skip_special,
        };
        let mut buf = Vec::new();
        let done = session.generate(&gp, |p: Piece<'_>| {
            let Some(cb) = on_token else { return true };
            buf.clear();
            buf.extend_from_slice(p.text.as_bytes());
            buf.push(0);
            let id = p.token.map_or(LLQ_TOKEN_NULL, |t| t as llq_token);
            // SAFETY: the caller vouches that the callback is safe to call with user_data;
            // `buf` is NUL-terminated and outlives the call.
            unsafe { cb(buf.as_ptr().cast(), p.text.len(), id, user_data) }
        })?;
        if !out_result.is_null() {
            // SAFETY: non-null, writable per the contract.
            unsafe {
                out_result.write(llq_generate_result {
                    n_tokens: done.n_tokens as i32,
                    stop_reason: stop_code(done.stop),
                })
            };
        }
        Ok(())
    })
}

/// The C code of a stop reason.
fn stop_code(r: StopReason) -> i32 {
    match r {
        StopReason::MaxTokens => LLQ_STOP_MAX_TOKENS,
        StopReason::EndOfGeneration => LLQ_STOP_EOG,
        StopReason::Callback => LLQ_STOP_CALLBACK,
        StopReason::Requested => LLQ_STOP_REQUESTED,
        StopReason::ContextFull => LLQ_STOP_CONTEXT_FULL,
    }
}
