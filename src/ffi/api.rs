//! The `extern "C"` functions. See `docs/C_API.md` for conventions.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use super::handles::{self, Handled, Obj};
use super::*;
use crate::chat::{ChatMessage, ChatTemplate};
use crate::format::keys;
use crate::generate::{piece_text, stop_ids, SessionOf};
use crate::kv::{CacheType, ContextPolicy, KvConfig};
use crate::model::Model;
use crate::sample::SamplerParams;
use crate::tokenizer::Tokenizer;

/// A loaded model (opaque handle). Shareable between threads and contexts.
pub struct llq_model {
    _opaque: [u8; 0],
}

/// A generation context (opaque handle): KV cache, sampler and stop flag over a model.
pub struct llq_context {
    _opaque: [u8; 0],
}

/// What an `llq_model` handle stands for.
pub(crate) struct ModelObj {
    model: Arc<Model>,
    arch: CString,
    chat_template: Option<CString>,
}

/// What an `llq_context` handle stands for.
pub(crate) struct ContextObj {
    model: Arc<Model>,
    stop: AtomicBool,
    inner: Mutex<Inner>,
}

impl Handled for ModelObj {
    type C = llq_model;
    const KIND: &'static str = "llq_model";
    fn wrap(a: Arc<Self>) -> Obj {
        Obj::Model(a)
    }
    fn unwrap(o: &Obj) -> Option<&Arc<Self>> {
        match o {
            Obj::Model(a) => Some(a),
            _ => None,
        }
    }
}

impl Handled for ContextObj {
    type C = llq_context;
    const KIND: &'static str = "llq_context";
    fn wrap(a: Arc<Self>) -> Obj {
        Obj::Context(a)
    }
    fn unwrap(o: &Obj) -> Option<&Arc<Self>> {
        match o {
            Obj::Context(a) => Some(a),
            _ => None,
        }
    }
}

struct Inner {
    session: SessionOf<Arc<Model>>,
    sampler: SamplerParams,
}

/// Options for `llq_model_open`. Get the defaults from `llq_model_default_params()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct llq_model_params {
    /// Threads of the process-wide compute pool (0 = one per physical core, or
    /// `RAYON_NUM_THREADS` if set). Only the first model opened in the process sizes the
    /// pool; later values are ignored.
    pub n_threads: i32,
    /// Map the file (true, the default: zero copy, pages loaded on demand) or read it into
    /// an anonymous allocation (false: for file systems without mmap).
    pub use_mmap: bool,
    /// Lock the mapped weights in RAM (`mlock`); fails if RLIMIT_MEMLOCK is too low.
    pub use_mlock: bool,
}

/// Options for `llq_context_new`. Get the defaults from `llq_context_default_params()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct llq_context_params {
    /// Context size in tokens (0 = the model's trained context, capped at 4096).
    pub n_ctx: u32,
    /// Random seed: the same seed, model and parameters give the same output.
    pub seed: u64,
    /// Temperature; 0 = greedy.
    pub temp: f32,
    /// Keep the k most likely tokens (0 = off).
    pub top_k: i32,
    /// Nucleus sampling threshold (1 = off).
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one (0 = off).
    pub min_p: f32,
    /// Divide the logits of recent tokens by this (1 = off).
    pub repeat_penalty: f32,
    /// How many recent tokens the repetition penalty looks at.
    pub repeat_last_n: i32,
    /// KV cache storage: `LLQ_CACHE_F32` (default, exact), `LLQ_CACHE_F16` (half the
    /// memory, mean KL ~1e-6 on SmolLM2) or `LLQ_CACHE_Q8_0` (a quarter; needs
    /// head_dim % 32 == 0).
    pub cache_type: i32,
    /// When the context is full: false (default) stops with `LLQ_STOP_CONTEXT_FULL`; true
    /// overwrites the oldest positions after the first `n_keep` and generation goes on.
    pub context_shift: bool,
    /// Positions never evicted when shifting (attention sinks; default 4).
    pub n_keep: u32,
}

/// KV cache stored as f32.
pub const LLQ_CACHE_F32: i32 = 0;
/// KV cache stored as f16 (half the memory of f32, no measurable accuracy cost).
pub const LLQ_CACHE_F16: i32 = 1;
/// KV cache stored as Q8_0 blocks (a quarter of f32).
pub const LLQ_CACHE_Q8_0: i32 = 2;

/// Options for `llq_generate`. Get the defaults from `llq_generate_default_params()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct llq_generate_params {
    /// Most tokens to generate (0 = only evaluate the prompt).
    pub max_tokens: i32,
    /// Stop at an end-of-generation token (EOS, `<|im_end|>`, ...), which is not reported.
    pub stop_at_eog: bool,
    /// Prepend BOS to the prompt when the model's tokenizer asks for it.
    pub add_special: bool,
    /// Turn special-token text in the prompt (e.g. `<|im_start|>`) into special tokens.
    pub parse_special: bool,
    /// Leave special tokens out of the text passed to the callback.
    pub skip_special: bool,
}

/// What `llq_generate` did.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct llq_generate_result {
    /// Tokens reported to the callback (and kept in the context).
    pub n_tokens: i32,
    /// Why generation ended: one of `LLQ_STOP_*`.
    pub stop_reason: i32,
}

/// One chat message: NUL-terminated UTF-8 role ("system", "user", "assistant") and content.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct llq_chat_message {
    pub role: *const c_char,
    pub content: *const c_char,
}

/// Called for each generated token with its newly completed UTF-8 text (`piece`, `len`
/// bytes, NUL-terminated, possibly empty when a character spans several tokens) and its
/// id; a final call with `token == LLQ_TOKEN_NULL` may deliver trailing text. `piece` is
/// only valid during the call. Return true to continue, false to stop. The callback must
/// not call other llq functions on the same context (they return `LLQ_ERR_BUSY`);
/// `llq_context_request_stop` is allowed.
// The pointer type is `unsafe` because llq calls foreign code through it; llq upholds its
// side by passing a valid NUL-terminated `piece` for the duration of the call.
pub type llq_token_callback = Option<
    unsafe extern "C" fn(
        piece: *const c_char,
        len: usize,
        token: llq_token,
        user_data: *mut c_void,
    ) -> bool,
>;

// ---------------------------------------------------------------------------------------
// Helpers

fn model_ref(p: *const llq_model) -> FfiResult<Arc<ModelObj>> {
    handles::get::<ModelObj>(p, "model")
}

fn ctx_ref(p: *const llq_context) -> FfiResult<Arc<ContextObj>> {
    handles::get::<ContextObj>(p, "ctx")
}

impl ContextObj {
    fn lock(&self) -> FfiResult<MutexGuard<'_, Inner>> {
        match self.inner.try_lock() {
            Ok(g) => Ok(g),
            // A panic inside a previous call: the session may be mid-update, but every
            // field is still a valid value; the caller can llq_context_reset.
            Err(TryLockError::Poisoned(e)) => Ok(e.into_inner()),
            Err(TryLockError::WouldBlock) => Err(err(
                LLQ_ERR_BUSY,
                "context is in use (by another thread, or re-entrantly from a callback)",
            )),
        }
    }
}

fn tokenizer(m: &Model) -> FfiResult<&Tokenizer> {
    m.tokenizer.as_ref().ok_or_else(|| {
        err(
            LLQ_ERR_NO_TOKENIZER,
            "the model has no tokenizer (its checkpoint had none); use token ids",
        )
    })
}

fn non_null<T>(p: *const T, what: &str) -> FfiResult<()> {
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
unsafe fn slice<'a, T>(p: *const T, n: usize, what: &str) -> FfiResult<&'a [T]> {
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

fn utf8<'a>(bytes: &'a [u8], what: &str) -> FfiResult<&'a str> {
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
unsafe fn c_str<'a>(p: *const c_char, what: &str) -> FfiResult<&'a str> {
    non_null(p, what)?;
    // SAFETY: non-null and NUL-terminated per the caller's contract.
    let c = unsafe { CStr::from_ptr(p) };
    utf8(c.to_bytes(), what)
}

/// Store `v` through an out-pointer.
///
/// # Safety
/// `p` must be NULL (an error) or valid for a write of `T`.
unsafe fn put<T>(p: *mut T, v: T, what: &str) -> FfiResult<()> {
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
unsafe fn write_text(
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

fn check_tokens(model: &Model, tokens: &[llq_token]) -> FfiResult<Vec<u32>> {
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

fn opt_token(t: Option<u32>) -> llq_token {
    t.map_or(LLQ_TOKEN_NULL, |t| t as llq_token)
}

// ---------------------------------------------------------------------------------------
// Library

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

// ---------------------------------------------------------------------------------------
// Model

/// Default model options: all cores, mmap on, mlock off.
#[no_mangle]
pub extern "C" fn llq_model_default_params() -> llq_model_params {
    llq_model_params {
        n_threads: 0,
        use_mmap: true,
        use_mlock: false,
    }
}

fn init_threads(n: i32) -> FfiResult<()> {
    if n < 0 {
        return Err(err(LLQ_ERR_INVALID_ARG, format!("n_threads {n} < 0")));
    }
    static POOL: std::sync::Once = std::sync::Once::new();
    POOL.call_once(|| {
        let n = if n > 0 {
            n as usize
        } else if std::env::var_os("RAYON_NUM_THREADS").is_some() {
            0 // rayon reads the variable itself
        } else {
            crate::threads::default_threads()
        };
        // Fails only if the pool already exists (e.g. the host also uses rayon): then
        // that pool is used as is.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    });
    Ok(())
}

#[cfg(unix)]
fn path_from(p: &CStr) -> FfiResult<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(p.to_bytes())))
}

#[cfg(not(unix))]
fn path_from(p: &CStr) -> FfiResult<PathBuf> {
    Ok(PathBuf::from(utf8(p.to_bytes(), "path")?))
}

#[cfg(unix)]
fn mlock(m: &Model) -> FfiResult<()> {
    let bytes = m.file.bytes_at(0..m.file.file_size());
    // SAFETY: the range is the live mapping of the model file, owned by `m`.
    let r = unsafe { libc::mlock(bytes.as_ptr().cast(), bytes.len()) };
    if r != 0 {
        return Err(err(
            LLQ_ERR_IO,
            format!(
                "mlock of {} bytes failed: {} (raise RLIMIT_MEMLOCK / ulimit -l)",
                bytes.len(),
                std::io::Error::last_os_error()
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn mlock(_: &Model) -> FfiResult<()> {
    Err(err(
        LLQ_ERR_UNSUPPORTED,
        "use_mlock is not supported on this platform",
    ))
}

/// Open a `.llq` model file. On success `*out_model` receives a handle to free with
/// `llq_model_free`; on failure it is set to NULL.
///
/// # Safety
/// `path` is a NUL-terminated path; `out_model` is writable.
#[no_mangle]
pub unsafe extern "C" fn llq_model_open(
    path: *const c_char,
    params: llq_model_params,
    out_model: *mut *mut llq_model,
) -> llq_status {
    guard(|| {
        // SAFETY: out_model is writable per the contract.
        unsafe { put(out_model, std::ptr::null_mut(), "out_model")? };
        non_null(path, "path")?;
        // SAFETY: non-null and NUL-terminated per the contract.
        let path = path_from(unsafe { CStr::from_ptr(path) })?;
        init_threads(params.n_threads)?;
        crate::kernels::select().map_err(|e| err(LLQ_ERR_UNSUPPORTED, e))?;
        let model = Model::open_with(&path, !params.use_mmap)?;
        if params.use_mlock {
            mlock(&model)?;
        }
        let arch = model
            .file
            .get(keys::ARCHITECTURE)
            .and_then(|v| v.as_str())
            .unwrap_or("llama");
        let arch = CString::new(arch).unwrap_or_default();
        let chat_template = model
            .chat_template
            .as_deref()
            .and_then(|t| CString::new(t).ok());
        let h = handles::register(ModelObj {
            model: Arc::new(model),
            arch,
            chat_template,
        });
        // SAFETY: checked writable above.
        unsafe { out_model.write(h) };
        Ok(())
    })
}

/// Free a model handle. NULL is a no-op. Contexts created from it stay valid (they keep
/// the model alive). A second free of the same handle returns `LLQ_ERR_INVALID_HANDLE`
/// (best effort: the address must not have been reused by a new model meanwhile).
#[no_mangle]
pub extern "C" fn llq_model_free(model: *mut llq_model) -> llq_status {
    guard(|| handles::free::<ModelObj>(model, "model"))
}

/// The architecture name ("llama"); NULL for an invalid handle. Valid while the model is.
#[no_mangle]
pub extern "C" fn llq_model_architecture(model: *const llq_model) -> *const c_char {
    guard_value(std::ptr::null(), || Ok(model_ref(model)?.arch.as_ptr()))
}

/// The trained context length in tokens; -1 for an invalid handle.
#[no_mangle]
pub extern "C" fn llq_model_n_ctx_train(model: *const llq_model) -> i32 {
    guard_value(-1, || {
        let m = model_ref(model)?;
        Ok(m.model.config.context_length.min(i32::MAX as usize) as i32)
    })
}

/// The vocabulary size (number of logits); -1 for an invalid handle.
#[no_mangle]
pub extern "C" fn llq_model_n_vocab(model: *const llq_model) -> i32 {
    guard_value(-1, || {
        let m = model_ref(model)?;
        Ok(m.model.config.vocab_size as i32)
    })
}

/// The BOS token, or `LLQ_TOKEN_NULL` if none (or an invalid handle).
#[no_mangle]
pub extern "C" fn llq_model_bos(model: *const llq_model) -> llq_token {
    guard_value(LLQ_TOKEN_NULL, || {
        let m = &model_ref(model)?.model;
        Ok(opt_token(
            m.tokenizer
                .as_ref()
                .and_then(|t| t.bos_id())
                .or(m.config.bos_id),
        ))
    })
}

/// The EOS token, or `LLQ_TOKEN_NULL` if none (or an invalid handle).
#[no_mangle]
pub extern "C" fn llq_model_eos(model: *const llq_model) -> llq_token {
    guard_value(LLQ_TOKEN_NULL, || {
        let m = &model_ref(model)?.model;
        Ok(opt_token(
            m.tokenizer
                .as_ref()
                .and_then(|t| t.eos_id())
                .or(m.config.eos_ids.first().copied()),
        ))
    })
}

/// Whether `token` ends generation (EOS, end-of-turn tokens). False for an invalid handle.
#[no_mangle]
pub extern "C" fn llq_model_is_eog(model: *const llq_model, token: llq_token) -> bool {
    guard_value(false, || {
        let m = &model_ref(model)?.model;
        Ok(token >= 0 && stop_ids(m).contains(&(token as u32)))
    })
}

/// Whether the model has a tokenizer (text functions need one). False for an invalid handle.
#[no_mangle]
pub extern "C" fn llq_model_has_tokenizer(model: *const llq_model) -> bool {
    guard_value(false, || Ok(model_ref(model)?.model.tokenizer.is_some()))
}

/// The model's Jinja chat template, or NULL if it has none (or an invalid handle). Valid
/// while the model is.
#[no_mangle]
pub extern "C" fn llq_model_chat_template(model: *const llq_model) -> *const c_char {
    guard_value(std::ptr::null(), || {
        let m = model_ref(model)?;
        Ok(m.chat_template
            .as_ref()
            .map_or(std::ptr::null(), |c| c.as_ptr()))
    })
}

// ---------------------------------------------------------------------------------------
// Tokenizer

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
        let tok = tokenizer(m)?;
        let mut ids = Vec::new();
        if add_special && tok.add_bos() {
            ids.extend(tok.bos_id());
        }
        ids.extend(tok.encode(text, parse_special));
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
        let (bos, eos) = match &h.model.tokenizer {
            Some(t) => (piece_text(t, t.bos_id()), piece_text(t, t.eos_id())),
            None => (String::new(), String::new()),
        };
        let text = tpl
            .render(&msgs, add_generation_prompt, &bos, &eos)
            .map_err(|e| err(LLQ_ERR_TEMPLATE, format!("chat template: {e}")))?;
        // SAFETY: buffer contract forwarded.
        unsafe { write_text(text.as_bytes(), out_buf, capacity, out_len) }
    })
}

// ---------------------------------------------------------------------------------------
// Context

/// Default context options: n_ctx 0 (model's, capped at 4096), seed 0x5eed, temp 0.8,
/// top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1 (off), repeat_last_n 64.
#[no_mangle]
pub extern "C" fn llq_context_default_params() -> llq_context_params {
    let d = SamplerParams::default();
    llq_context_params {
        n_ctx: 0,
        seed: d.seed,
        temp: d.temp,
        top_k: d.top_k as i32,
        top_p: d.top_p,
        min_p: d.min_p,
        repeat_penalty: d.repeat_penalty,
        repeat_last_n: d.repeat_last_n as i32,
        cache_type: LLQ_CACHE_F32,
        context_shift: false,
        n_keep: 4,
    }
}

fn kv_config(p: &llq_context_params) -> FfiResult<KvConfig> {
    let cache_type = match p.cache_type {
        LLQ_CACHE_F32 => CacheType::F32,
        LLQ_CACHE_F16 => CacheType::F16,
        LLQ_CACHE_Q8_0 => CacheType::Q8_0,
        other => {
            return Err(err(
                LLQ_ERR_INVALID_ARG,
                format!("context params: cache_type {other} is not one of LLQ_CACHE_*"),
            ))
        }
    };
    Ok(KvConfig {
        cache_type,
        policy: if p.context_shift {
            ContextPolicy::Shift
        } else {
            ContextPolicy::Stop
        },
        keep: p.n_keep as usize,
    })
}

/// Largest accepted `n_ctx`.
const MAX_CTX: u32 = 1 << 20;

fn sampler_params(p: &llq_context_params) -> FfiResult<SamplerParams> {
    let bad = |what: &str| err(LLQ_ERR_INVALID_ARG, format!("context params: {what}"));
    if p.temp.is_nan() {
        return Err(bad("temp is NaN"));
    }
    if p.top_k < 0 {
        return Err(bad("top_k < 0"));
    }
    if !(p.top_p > 0.0 && p.top_p <= 1.0) {
        return Err(bad("top_p must be in (0, 1]"));
    }
    if !(0.0..=1.0).contains(&p.min_p) {
        return Err(bad("min_p must be in [0, 1]"));
    }
    if !(p.repeat_penalty > 0.0 && p.repeat_penalty.is_finite()) {
        return Err(bad("repeat_penalty must be > 0"));
    }
    if p.repeat_last_n < 0 {
        return Err(bad("repeat_last_n < 0"));
    }
    if p.n_ctx > MAX_CTX {
        return Err(bad(&format!("n_ctx {} > {MAX_CTX}", p.n_ctx)));
    }
    Ok(SamplerParams {
        temp: p.temp,
        top_k: p.top_k as usize,
        top_p: p.top_p,
        min_p: p.min_p,
        repeat_penalty: p.repeat_penalty,
        repeat_last_n: p.repeat_last_n as usize,
        seed: p.seed,
    })
}

/// Create a context (KV cache + sampler) on a model. On success `*out_ctx` receives a
/// handle to free with `llq_context_free`; on failure it is set to NULL. Any number of
/// contexts may share a model and run on different threads.
///
/// # Safety
/// `out_ctx` writable (NULL is an error).
#[no_mangle]
pub unsafe extern "C" fn llq_context_new(
    model: *const llq_model,
    params: llq_context_params,
    out_ctx: *mut *mut llq_context,
) -> llq_status {
    guard(|| {
        // SAFETY: out_ctx writable per the contract.
        unsafe { put(out_ctx, std::ptr::null_mut(), "out_ctx")? };
        let m = model_ref(model)?.model.clone();
        let sampler = sampler_params(&params)?;
        let n_ctx = if params.n_ctx == 0 {
            m.config.context_length.clamp(1, 4096)
        } else {
            params.n_ctx as usize
        };
        let session =
            SessionOf::with_config(m.clone(), n_ctx, sampler.clone(), kv_config(&params)?)
                .map_err(|e| err(LLQ_ERR_INVALID_ARG, e.to_string()))?;
        let h = handles::register(ContextObj {
            model: m,
            stop: AtomicBool::new(false),
            inner: Mutex::new(Inner { session, sampler }),
        });
        // SAFETY: checked writable above.
        unsafe { out_ctx.write(h) };
        Ok(())
    })
}

/// Free a context. NULL is a no-op; a second free returns `LLQ_ERR_INVALID_HANDLE`.
#[no_mangle]
pub extern "C" fn llq_context_free(ctx: *mut llq_context) -> llq_status {
    guard(|| handles::free::<ContextObj>(ctx, "ctx"))
}

/// Forget all tokens and restart the sampler from its seed: the context behaves as if
/// newly created.
#[no_mangle]
pub extern "C" fn llq_context_reset(ctx: *mut llq_context) -> llq_status {
    guard(|| {
        let c = ctx_ref(ctx)?;
        let mut g = c.lock()?;
        let params = g.sampler.clone();
        g.session.reset();
        g.session.set_sampler(params);
        c.stop.store(false, Ordering::SeqCst);
        Ok(())
    })
}

/// Ask a running `llq_generate` on `ctx` to stop after the current token. Safe to call
/// from any thread (and from the callback) while the context is generating; a request
/// made when no generation runs is cleared by the next `llq_generate`.
#[no_mangle]
pub extern "C" fn llq_context_request_stop(ctx: *const llq_context) -> llq_status {
    guard(|| {
        let c = ctx_ref(ctx)?;
        c.stop.store(true, Ordering::SeqCst);
        Ok(())
    })
}

/// The context size in tokens; -1 for an invalid handle or a busy context.
#[no_mangle]
pub extern "C" fn llq_context_n_ctx(ctx: *const llq_context) -> i32 {
    guard_value(-1, || {
        let c = ctx_ref(ctx)?;
        let n = c.lock()?.session.n_ctx();
        Ok(n as i32)
    })
}

/// Tokens currently in the context; -1 for an invalid handle or a busy context.
#[no_mangle]
pub extern "C" fn llq_context_n_tokens(ctx: *const llq_context) -> i32 {
    guard_value(-1, || {
        let c = ctx_ref(ctx)?;
        let n = c.lock()?.session.tokens().len();
        Ok(n as i32)
    })
}

// ---------------------------------------------------------------------------------------
// Low level: evaluate, logits, sample

/// Append `n` tokens to the context and evaluate them (the logits of the last one become
/// available). `LLQ_ERR_CONTEXT_FULL` if they do not fit, `LLQ_ERR_INVALID_TOKEN` for an
/// id outside the vocabulary; on error the context is unchanged. Tokens evaluated here do
/// not enter the repetition-penalty history (`llq_generate`'s prompt and output do).
///
/// # Safety
/// `tokens` readable for `n` tokens.
#[no_mangle]
pub unsafe extern "C" fn llq_eval(
    ctx: *mut llq_context,
    tokens: *const llq_token,
    n: usize,
) -> llq_status {
    guard(|| {
        let c = ctx_ref(ctx)?;
        // SAFETY: tokens readable for n per the contract.
        let raw = unsafe { slice(tokens, n, "tokens")? };
        if raw.is_empty() {
            return Err(err(LLQ_ERR_INVALID_ARG, "no tokens to evaluate (n = 0)"));
        }
        let ids = check_tokens(&c.model, raw)?;
        let mut g = c.lock()?;
        let (used, n_ctx) = (g.session.tokens().len(), g.session.n_ctx());
        if used + ids.len() > n_ctx {
            return Err(err(
                LLQ_ERR_CONTEXT_FULL,
                format!(
                    "context full: {used} + {} tokens > n_ctx {n_ctx}",
                    ids.len()
                ),
            ));
        }
        g.session.feed(&ids)?;
        Ok(())
    })
}

/// The logits after the last evaluated token: `*out_n` (= vocab size) floats at
/// `*out_logits`, valid until the next call that changes the context (eval, generate,
/// reset, free). `LLQ_ERR_INVALID_ARG` if nothing has been evaluated yet.
///
/// # Safety
/// `out_logits` and `out_n` writable.
#[no_mangle]
pub unsafe extern "C" fn llq_get_logits(
    ctx: *const llq_context,
    out_logits: *mut *const f32,
    out_n: *mut usize,
) -> llq_status {
    guard(|| {
        let c = ctx_ref(ctx)?;
        non_null(out_logits, "out_logits")?;
        non_null(out_n, "out_n")?;
        let g = c.lock()?;
        let l = g.session.logits();
        if l.is_empty() {
            return Err(err(
                LLQ_ERR_INVALID_ARG,
                "no logits yet: evaluate tokens first",
            ));
        }
        // SAFETY: both checked non-null and writable per the contract. The pointer stays
        // valid after the lock is released until the session's logits change, as documented.
        unsafe {
            out_logits.write(l.as_ptr());
            out_n.write(l.len());
        }
        Ok(())
    })
}

/// Sample the next token from the current logits with the context's sampler (it is not
/// evaluated: pass it to `llq_eval` to continue). `LLQ_ERR_INVALID_ARG` if nothing has
/// been evaluated yet.
///
/// # Safety
/// `out_token` writable.
#[no_mangle]
pub unsafe extern "C" fn llq_sample(
    ctx: *mut llq_context,
    out_token: *mut llq_token,
) -> llq_status {
    guard(|| {
        let c = ctx_ref(ctx)?;
        non_null(out_token, "out_token")?;
        let mut g = c.lock()?;
        if g.session.logits().is_empty() {
            return Err(err(
                LLQ_ERR_INVALID_ARG,
                "no logits yet: evaluate tokens first",
            ));
        }
        let t = g.session.sample();
        // SAFETY: checked non-null, writable per the contract.
        unsafe { out_token.write(t as llq_token) };
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// High level: generate

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
        if params.max_tokens < 0 {
            return Err(err(LLQ_ERR_INVALID_ARG, "max_tokens < 0"));
        }
        let mut g = c.lock()?;
        c.stop.store(false, Ordering::SeqCst);
        let model = c.model.clone();
        if !prompt.is_null() {
            // SAFETY: non-null, NUL-terminated per the contract.
            let text = unsafe { c_str(prompt, "prompt")? };
            let tok = tokenizer(&model)?;
            let mut ids = Vec::new();
            if params.add_special && tok.add_bos() {
                ids.extend(tok.bos_id());
            }
            ids.extend(tok.encode(text, params.parse_special));
            if ids.is_empty() {
                return Err(err(LLQ_ERR_INVALID_ARG, "the prompt has no tokens"));
            }
            let n_ctx = g.session.n_ctx();
            if ids.len() > n_ctx {
                return Err(err(
                    LLQ_ERR_CONTEXT_FULL,
                    format!("prompt of {} tokens > n_ctx {n_ctx}", ids.len()),
                ));
            }
            g.session.set_prompt(&ids)?;
        } else if g.session.logits().is_empty() {
            return Err(err(
                LLQ_ERR_INVALID_ARG,
                "no prompt and an empty context: give a prompt or llq_eval tokens first",
            ));
        }

        let stops = if params.stop_at_eog {
            stop_ids(&model)
        } else {
            Vec::new()
        };
        let mut decoder = model
            .tokenizer
            .as_ref()
            .map(|t| t.stream_decoder(params.skip_special));
        let mut piece = Vec::new();
        let mut report = |text: &str, t: llq_token| -> bool {
            let Some(cb) = on_token else { return true };
            piece.clear();
            piece.extend_from_slice(text.as_bytes());
            piece.push(0);
            // SAFETY: the caller vouches that the callback is safe to call with user_data;
            // `piece` is NUL-terminated and outlives the call.
            unsafe { cb(piece.as_ptr().cast(), text.len(), t, user_data) }
        };

        let max = params.max_tokens as usize;
        let mut n = 0usize;
        let reason = loop {
            if n >= max {
                break LLQ_STOP_MAX_TOKENS;
            }
            if c.stop.load(Ordering::SeqCst) {
                break LLQ_STOP_REQUESTED;
            }
            if g.session.tokens().len() >= g.session.n_ctx() {
                break LLQ_STOP_CONTEXT_FULL;
            }
            let t = g.session.sample();
            if stops.contains(&t) {
                break LLQ_STOP_EOG;
            }
            n += 1;
            let text = decoder.as_mut().map(|d| d.push(t)).unwrap_or_default();
            let go_on = report(&text, t as llq_token);
            g.session.feed(&[t])?;
            if !go_on {
                break LLQ_STOP_CALLBACK;
            }
        };
        if reason != LLQ_STOP_CALLBACK {
            if let Some(d) = decoder.as_mut() {
                let tail = d.flush();
                if !tail.is_empty() {
                    report(&tail, LLQ_TOKEN_NULL);
                }
            }
        }
        if !out_result.is_null() {
            // SAFETY: non-null, writable per the contract.
            unsafe {
                out_result.write(llq_generate_result {
                    n_tokens: n as i32,
                    stop_reason: reason,
                })
            };
        }
        Ok(())
    })
}
