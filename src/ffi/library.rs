//! Library-wide calls: versions, the last error, status names.

use std::ffi::c_char;

use super::*;

/// The library version as a static NUL-terminated string (e.g. "0.1.0").
#[no_mangle]
pub extern "C" fn llq_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The API version the library was built with (`LLQ_API_VERSION` of its header).
#[no_mangle]
pub extern "C" fn llq_api_version() -> i32 {
    LLQ_API_VERSION
}

/// This thread's message for the last failed llq call ("" if none). The pointer stays
/// valid until the next failing llq call on this thread; never NULL.
#[no_mangle]
pub extern "C" fn llq_last_error() -> *const c_char {
    last_error_ptr()
}

/// A static name for a status code (e.g. "LLQ_ERR_NULL"); never NULL.
#[no_mangle]
pub extern "C" fn llq_status_name(status: llq_status) -> *const c_char {
    let s: &'static str = match status {
        LLQ_OK => "LLQ_OK\0",
        LLQ_ERR_NULL => "LLQ_ERR_NULL\0",
        LLQ_ERR_INVALID_ARG => "LLQ_ERR_INVALID_ARG\0",
        LLQ_ERR_INVALID_HANDLE => "LLQ_ERR_INVALID_HANDLE\0",
        LLQ_ERR_UTF8 => "LLQ_ERR_UTF8\0",
        LLQ_ERR_BUFFER_TOO_SMALL => "LLQ_ERR_BUFFER_TOO_SMALL\0",
        LLQ_ERR_INVALID_TOKEN => "LLQ_ERR_INVALID_TOKEN\0",
        LLQ_ERR_IO => "LLQ_ERR_IO\0",
        LLQ_ERR_MODEL => "LLQ_ERR_MODEL\0",
        LLQ_ERR_NO_TOKENIZER => "LLQ_ERR_NO_TOKENIZER\0",
        LLQ_ERR_NO_CHAT_TEMPLATE => "LLQ_ERR_NO_CHAT_TEMPLATE\0",
        LLQ_ERR_TEMPLATE => "LLQ_ERR_TEMPLATE\0",
        LLQ_ERR_CONTEXT_FULL => "LLQ_ERR_CONTEXT_FULL\0",
        LLQ_ERR_UNSUPPORTED => "LLQ_ERR_UNSUPPORTED\0",
        LLQ_ERR_BUSY => "LLQ_ERR_BUSY\0",
        LLQ_ERR_PANIC => "LLQ_ERR_PANIC\0",
        _ => "LLQ_ERR_UNKNOWN\0",
    };
    s.as_ptr().cast()
}
