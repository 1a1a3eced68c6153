//! Crossing the boundary: checked reads of C pointers, strings and arrays, and writes
//! through out-parameters and caller buffers.

use std::ffi::{c_char, CStr};
use std::path::PathBuf;

use super::*;
use crate::model::Model;
use crate::tokenizer::Tokenizer;

pub(crate) fn tokenizer(m: &Model) -> FfiResult<&Tokenizer> {
    m.tokenizer.as_ref().ok_or_else(|| {
        err(
            LLQ_ERR_NO_TOKENIZER,
            "the model has no tokenizer (its checkpoint had none); use token ids",
        )
    })
}

pub(crate) fn non_null<T>(p: *const T, what: &str) -> FfiResult<()> {
    if p.is_null() {
        Err(err(LLQ_ERR_NULL, format!("{what} is NULL")))
    } else {
        Ok(())
    }
}

/// Borrow `n` elements at `p` (NULL allowed when `n == 0`).
///
/// # Safety
/// If `n > 0`, `p` must point to `n` readable, initialized elements.
pub(crate) unsafe fn slice<'a, T>(p: *const T, n: usize, what: &str) -> FfiResult<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    non_null(p, what)?;
    if n > isize::MAX as usize / std::mem::size_of::<T>().max(1) {
        return Err(err(
            LLQ_ERR_INVALID_ARG,
            format!("{what}: length {n} too large"),
        ));
    }
    // SAFETY: non-null, length bounded, and the caller guarantees n readable elements.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

pub(crate) fn utf8<'a>(bytes: &'a [u8], what: &str) -> FfiResult<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| {
        err(
            LLQ_ERR_UTF8,
            format!(
                "{what} is not valid UTF-8 (byte offset {})",
                e.valid_up_to()
            ),
        )
    })
}

/// A NUL-terminated UTF-8 C string.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string.
pub(crate) unsafe fn c_str<'a>(p: *const c_char, what: &str) -> FfiResult<&'a str> {
    non_null(p, what)?;
    // SAFETY: non-null and NUL-terminated per the caller's contract.
    let c = unsafe { CStr::from_ptr(p) };
    utf8(c.to_bytes(), what)
}

/// Store `v` through an out-pointer.
///
/// # Safety
/// `p` must be NULL (an error) or valid for a write of `T`.
pub(crate) unsafe fn put<T>(p: *mut T, v: T, what: &str) -> FfiResult<()> {
    non_null(p, what)?;
    // SAFETY: non-null and writable per the caller's contract.
    unsafe { p.write(v) };
    Ok(())
}

/// Copy `text` plus a NUL into `buf` (capacity bytes); `*out_len` = text length without
/// the NUL, also when the buffer is too small (then nothing is written).
///
/// # Safety
/// `buf` must be valid for `capacity` byte writes (or NULL with capacity 0); `out_len`
/// NULL or writable.
pub(crate) unsafe fn write_text(
    text: &[u8],
    buf: *mut c_char,
    capacity: usize,
    out_len: *mut usize,
) -> FfiResult<()> {
    // SAFETY: out_len writable per the caller's contract.
    unsafe { put(out_len, text.len(), "out_len")? };
    if capacity < text.len() + 1 {
        return Err(err(
            LLQ_ERR_BUFFER_TOO_SMALL,
            format!(
                "buffer of {capacity} bytes is too small: {} needed (text + NUL)",
                text.len() + 1
            ),
        ));
    }
    non_null(buf, "out_buf")?;
    // SAFETY: buf holds at least capacity >= text.len() + 1 bytes; source and destination
    // cannot overlap (text is Rust-owned).
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
        *buf.add(text.len()) = 0;
    }
    Ok(())
}

pub(crate) fn check_tokens(model: &Model, tokens: &[llq_token]) -> FfiResult<Vec<u32>> {
    let vocab = model.config.vocab_size;
    tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            if t < 0 || t as usize >= vocab {
                Err(err(
                    LLQ_ERR_INVALID_TOKEN,
                    format!("token {t} at index {i} is outside the vocabulary (size {vocab})"),
                ))
            } else {
                Ok(t as u32)
            }
        })
        .collect()
}

pub(crate) fn opt_token(t: Option<u32>) -> llq_token {
    t.map_or(LLQ_TOKEN_NULL, |t| t as llq_token)
}

#[cfg(unix)]
pub(crate) fn path_from(p: &CStr) -> FfiResult<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(p.to_bytes())))
}

#[cfg(not(unix))]
pub(crate) fn path_from(p: &CStr) -> FfiResult<PathBuf> {
    Ok(PathBuf::from(utf8(p.to_bytes(), "path")?))
}
