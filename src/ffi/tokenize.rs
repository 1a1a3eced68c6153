//! Text to tokens and back.

use std::ffi::c_char;

use super::marshal::{check_tokens, non_null, slice, tokenizer, utf8, write_text};
use super::model::model_ref;
use super::*;

/// Tokenize `text_len` bytes of UTF-8 `text` (need not be NUL-terminated; NULL allowed
/// when `text_len` is 0). With `add_special`, BOS is prepended when the model's tokenizer
/// asks for it; with `parse_special`, special-token text becomes special tokens (turn it
/// off for untrusted text). `*out_n` receives the number of tokens. If `capacity` is too
/// small, nothing is written, `*out_n` is the needed capacity and the result is
/// `LLQ_ERR_BUFFER_TOO_SMALL` (call with `out_tokens = NULL, capacity = 0` to query).
///
/// # Safety
/// `text` readable for `text_len` bytes; `out_tokens` writable for `capacity` tokens;
/// `out_n` writable.
#[no_mangle]
pub unsafe extern "C" fn llq_tokenize(
    model: *const llq_model,
    text: *const c_char,
    text_len: usize,
    add_special: bool,
    parse_special: bool,
    out_tokens: *mut llq_token,
    capacity: usize,
    out_n: *mut usize,
) -> llq_status {
    guard(|| {
        let m = &model_ref(model)?.model;
        non_null(out_n, "out_n")?;
        // SAFETY: text readable for text_len bytes per the contract.
        let bytes = unsafe { slice(text.cast::<u8>(), text_len, "text")? };
        let text = utf8(bytes, "text")?;
        let ids = tokenizer(m)?.encode_prompt(text, add_special, parse_special);
        // SAFETY: out_n checked non-null, writable per the contract.
        unsafe { out_n.write(ids.len()) };
        if ids.len() > capacity {
            return Err(err(
                LLQ_ERR_BUFFER_TOO_SMALL,
                format!("{} tokens do not fit in capacity {capacity}", ids.len()),
            ));
        }
        if !ids.is_empty() {
            non_null(out_tokens, "out_tokens")?;
            for (i, &t) in ids.iter().enumerate() {
                // SAFETY: i < ids.len() <= capacity, writable per the contract.
                unsafe { out_tokens.add(i).write(t as llq_token) };
            }
        }
        Ok(())
    })
}

/// Decode `n` tokens to UTF-8 text (invalid sequences become U+FFFD), NUL-terminated in
/// `out_buf`. `skip_special` drops special tokens. `*out_len` receives the text length in
/// bytes without the NUL; if `capacity < *out_len + 1` the result is
/// `LLQ_ERR_BUFFER_TOO_SMALL` and nothing is written. Ids outside the vocabulary give
/// `LLQ_ERR_INVALID_TOKEN`.
///
/// # Safety
/// `tokens` readable for `n` tokens; `out_buf` writable for `capacity` bytes; `out_len`
/// writable.
#[no_mangle]
pub unsafe extern "C" fn llq_detokenize(
    model: *const llq_model,
    tokens: *const llq_token,
    n: usize,
    skip_special: bool,
    out_buf: *mut c_char,
    capacity: usize,
    out_len: *mut usize,
) -> llq_status {
    guard(|| {
        let m = &model_ref(model)?.model;
        non_null(out_len, "out_len")?;
        // SAFETY: tokens readable for n per the contract.
        let ids = check_tokens(m, unsafe { slice(tokens, n, "tokens")? })?;
        let text = tokenizer(m)?.decode(&ids, skip_special);
        // SAFETY: buffer contract forwarded.
        unsafe { write_text(text.as_bytes(), out_buf, capacity, out_len) }
    })
}

/// The bytes one token stands for (spaces included, e.g. " world"), NUL-terminated. A
/// byte-fallback token may be an incomplete UTF-8 sequence: use `llq_detokenize` or the
/// `llq_generate` callback for text. Sizes as in `llq_detokenize`.
///
/// # Safety
/// `out_buf` writable for `capacity` bytes; `out_len` writable.
#[no_mangle]
pub unsafe extern "C" fn llq_token_to_piece(
    model: *const llq_model,
    token: llq_token,
    skip_special: bool,
    out_buf: *mut c_char,
    capacity: usize,
    out_len: *mut usize,
) -> llq_status {
    guard(|| {
        let m = &model_ref(model)?.model;
        non_null(out_len, "out_len")?;
        let id = check_tokens(m, &[token])?[0];
        let tok = tokenizer(m)?;
        let bytes: &[u8] = if skip_special && tok.is_special(id) {
            &[]
        } else {
            tok.d.decoded.get(id as usize)
        };
        // SAFETY: buffer contract forwarded.
        unsafe { write_text(bytes, out_buf, capacity, out_len) }
    })
}
