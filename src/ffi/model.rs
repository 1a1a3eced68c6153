//! Models: open, free, and what a model tells about itself.

use std::ffi::{c_char, CStr, CString};
use std::sync::Arc;

use super::handles::{self, Handled};
use super::marshal::{non_null, opt_token, path_from, put};
use super::*;
use crate::generate::stop_ids;
use crate::model::Model;

/// What an `llq_model` handle stands for.
pub(crate) struct ModelObj {
    pub(crate) model: Arc<Model>,
    arch: CString,
    chat_template: Option<CString>,
}

impl Handled for ModelObj {
    type C = llq_model;
    const KIND: &'static str = "llq_model";
}

pub(crate) fn model_ref(p: *const llq_model) -> FfiResult<Arc<ModelObj>> {
    handles::get::<ModelObj>(p, "model")
}

/// Default model options: all cores, mmap on, mlock off.
#[no_mangle]
pub extern "C" fn llq_model_default_params() -> llq_model_params {
    llq_model_params {
        n_threads: 0,
        use_mmap: true,
        use_mlock: false,
    }
}

/// The process-wide pool, sized by the library's one rule (`crate::threads`).
fn init_threads(n: i32) -> FfiResult<()> {
    let n =
        usize::try_from(n).map_err(|_| err(LLQ_ERR_INVALID_ARG, format!("n_threads {n} < 0")))?;
    // A count out of range is the caller's mistake; past that check the only failure is
    // the operating system refusing to start threads, which is no argument error.
    crate::threads::check_c_api(n)?;
    crate::threads::init(n)
        .map(drop)
        .map_err(|e| err(LLQ_ERR_IO, e.to_string()))
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
/// A path that is not a regular file (a directory, FIFO, device...) is `LLQ_ERR_IO` with a
/// message saying what it is; opening never blocks. A file whose BOS, EOS or
/// end-of-generation ids are outside its vocabulary is `LLQ_ERR_MODEL`. If the compute
/// pool (started by the first open) cannot start its threads, the result is `LLQ_ERR_IO`
/// with a message about the pool, not the file.
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
        let arch = CString::new(model.config.arch_name()).unwrap_or_default();
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
/// the model alive), and so do calls running on it on other threads. A second free of the
/// same handle returns `LLQ_ERR_INVALID_HANDLE` (handles are never reused, so this is
/// always detected).
#[no_mangle]
pub extern "C" fn llq_model_free(model: *mut llq_model) -> llq_status {
    guard(|| handles::free::<ModelObj>(model, "model"))
}

/// The architecture name ("llama", "qwen2", "qwen3" or "gemma3"); NULL for an invalid handle. Valid while the model is.
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
