//! The C ABI (`include/llq.h`, generated from this module by cbindgen).
//!
//! Design rules:
//! - Handles (`llq_model *`, `llq_context *`) are opaque: never-reused numbers looked up in
//!   a registry of live objects, never dereferenced. A null, freed (double free,
//!   use after free) or wrong-kind handle is reported as an error. A model stays alive
//!   until the calls and contexts using it are done even if its handle is freed; a
//!   context that a call is running on refuses to be freed (`LLQ_ERR_BUSY`), so it can
//!   still be stopped.
//! - Every entry point runs inside `catch_unwind`: a Rust panic becomes `LLQ_ERR_PANIC`.
//! - Errors are negative `llq_status` codes; `llq_last_error()` gives this thread's message.
//! - A model is shared (internally an `Arc`): any number of contexts, on any threads, may
//!   use one model; freeing the model handle while contexts exist is allowed (they keep it
//!   alive). A context is used by one call at a time; a concurrent or re-entrant call (e.g.
//!   from inside a generation callback) gets `LLQ_ERR_BUSY` rather than a data race. Only
//!   `llq_context_request_stop` may be called while the context is busy.
#![allow(non_camel_case_types)]

mod adapter;
mod chat;
mod context;
mod generate;
mod handles;
mod library;
mod marshal;
mod model;
mod tokenize;
mod types;

pub use adapter::*;
pub use chat::*;
pub use context::*;
pub use generate::*;
pub use library::*;
pub use model::*;
pub use tokenize::*;
pub use types::*;

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Result code of every fallible call: `LLQ_OK` (0) or a negative `LLQ_ERR_*`.
pub type llq_status = i32;
/// A token id. `LLQ_TOKEN_NULL` (-1) means "no token".
pub type llq_token = i32;

/// Version of this C API; bumped on any incompatible change. Compare with
/// `llq_api_version()` at run time to detect a header/library mismatch. It is also the
/// shared library's SONAME number on Linux (`libllq.so.1`; build.rs reads it from here).
pub const LLQ_API_VERSION: i32 = 1;

/// Additions to this major version, counted (compatible: old programs keep working).
/// 1: LoRA adapters (`llq_adapter_open`, `llq_adapter_free`, `llq_context_set_adapters`).
pub const LLQ_API_VERSION_MINOR: i32 = 1;

/// No token (returned for a missing BOS/EOS, passed to callbacks for trailing text).
pub const LLQ_TOKEN_NULL: llq_token = -1;

/// Success.
pub const LLQ_OK: llq_status = 0;
/// A required pointer argument was NULL.
pub const LLQ_ERR_NULL: llq_status = -1;
/// An argument had an invalid value (negative count, NaN temperature, empty prompt...).
pub const LLQ_ERR_INVALID_ARG: llq_status = -2;
/// The handle is not a live handle of the expected kind (freed, double-freed, or wrong type).
pub const LLQ_ERR_INVALID_HANDLE: llq_status = -3;
/// Text was not valid UTF-8.
pub const LLQ_ERR_UTF8: llq_status = -4;
/// The output buffer is too small; the needed size was stored in the size out-parameter.
pub const LLQ_ERR_BUFFER_TOO_SMALL: llq_status = -5;
/// A token id is outside the model's vocabulary.
pub const LLQ_ERR_INVALID_TOKEN: llq_status = -6;
/// An operating-system error (file not found, permission, mlock limit...).
pub const LLQ_ERR_IO: llq_status = -7;
/// The model file is invalid or unsupported.
pub const LLQ_ERR_MODEL: llq_status = -8;
/// The model has no tokenizer (its checkpoint had none): use token ids.
pub const LLQ_ERR_NO_TOKENIZER: llq_status = -9;
/// The model has no chat template and none was given.
pub const LLQ_ERR_NO_CHAT_TEMPLATE: llq_status = -10;
/// The chat template failed to compile or render.
pub const LLQ_ERR_TEMPLATE: llq_status = -11;
/// The tokens do not fit in the context (`n_ctx`).
pub const LLQ_ERR_CONTEXT_FULL: llq_status = -12;
/// The request is valid but not supported here: e.g. `use_mlock` on a platform without
/// mlock, or an `LLQ_KERNEL` level this CPU cannot run.
pub const LLQ_ERR_UNSUPPORTED: llq_status = -13;
/// The context is in use by another call (another thread, or re-entrantly from a callback).
pub const LLQ_ERR_BUSY: llq_status = -14;
/// An internal error (a Rust panic was caught at the boundary). Please report it.
pub const LLQ_ERR_PANIC: llq_status = -15;

/// `llq_generate` stopped after `max_tokens` tokens.
pub const LLQ_STOP_MAX_TOKENS: i32 = 0;
/// `llq_generate` sampled an end-of-generation token (not reported, not kept).
pub const LLQ_STOP_EOG: i32 = 1;
/// The token callback returned false.
pub const LLQ_STOP_CALLBACK: i32 = 2;
/// `llq_context_request_stop` was called.
pub const LLQ_STOP_REQUESTED: i32 = 3;
/// The context is full.
pub const LLQ_STOP_CONTEXT_FULL: i32 = 4;

/// An error on its way to the C caller: a status code and a message.
pub(crate) struct FfiError {
    code: llq_status,
    msg: String,
}

pub(crate) type FfiResult<T> = Result<T, FfiError>;

pub(crate) fn err(code: llq_status, msg: impl Into<String>) -> FfiError {
    FfiError {
        code,
        msg: msg.into(),
    }
}

impl From<crate::Error> for FfiError {
    fn from(e: crate::Error) -> FfiError {
        let code = match &e {
            crate::Error::Io { .. } => LLQ_ERR_IO,
            crate::Error::Invalid { .. } => LLQ_ERR_MODEL,
            crate::Error::Usage(_) => LLQ_ERR_INVALID_ARG,
            crate::Error::ContextFull(_) => LLQ_ERR_CONTEXT_FULL,
        };
        err(code, e.to_string())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Pointer to this thread's last error message (valid until the next failing llq call on
/// this thread).
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Run an entry point: errors become status codes plus the thread's last error, panics
/// become `LLQ_ERR_PANIC`.
pub(crate) fn guard(f: impl FnOnce() -> FfiResult<()>) -> llq_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => LLQ_OK,
        Ok(Err(e)) => {
            set_last_error(&e.msg);
            e.code
        }
        Err(p) => {
            set_last_error(&format!("internal error (panic): {}", panic_message(&*p)));
            LLQ_ERR_PANIC
        }
    }
}

/// [`guard`] for getters that return a value: `fallback` on error or panic.
pub(crate) fn guard_value<T>(fallback: T, f: impl FnOnce() -> FfiResult<T>) -> T {
    let mut out = None;
    let status = guard(|| {
        out = Some(f()?);
        Ok(())
    });
    match out {
        Some(v) if status == LLQ_OK => v,
        _ => fallback,
    }
}
