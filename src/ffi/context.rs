//! Contexts: a session (KV cache, sampler) over a shared model; evaluate, logits, sample.

use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use super::handles::{self, Handled};
use super::marshal::{check_tokens, non_null, put, slice};
use super::model::model_ref;
use super::*;
use crate::generate::{SessionConfig, SessionOf, StopHandle};
use crate::kv::{CacheType, ContextPolicy, KvConfig, DEFAULT_KEEP};
use crate::model::Model;
use crate::sample::SamplerParams;

/// What an `llq_context` handle stands for: a session over a shared model. The stop
/// handle sits outside the lock so `llq_context_request_stop` works while a call runs.
pub(crate) struct ContextObj {
    pub(crate) model: Arc<Model>,
    pub(crate) stop: StopHandle,
    inner: Mutex<SessionOf<Arc<Model>>>,
}

impl Handled for ContextObj {
    type C = llq_context;
    const KIND: &'static str = "llq_context";

    /// A context is not freed while a call holds its session: the caller would lose the
    /// only way to stop that call (`llq_context_request_stop` takes the handle).
    fn can_free(&self) -> FfiResult<()> {
        match self.inner.try_lock() {
            Ok(_) | Err(TryLockError::Poisoned(_)) => Ok(()),
            Err(TryLockError::WouldBlock) => Err(err(
                LLQ_ERR_BUSY,
                "ctx is in use by a running call (another thread, or this one from a callback); \
                 nothing was freed: stop it with llq_context_request_stop, let the call return, \
                 then free",
            )),
        }
    }
}

/// A looked-up context and its handle number, so that claiming the session can check the
/// handle was not freed in between (see [`CtxRef::lock`]).
pub(crate) struct CtxRef {
    obj: Arc<ContextObj>,
    handle: usize,
}

impl std::ops::Deref for CtxRef {
    type Target = ContextObj;
    fn deref(&self) -> &ContextObj {
        &self.obj
    }
}

pub(crate) fn ctx_ref(p: *const llq_context) -> FfiResult<CtxRef> {
    Ok(CtxRef {
        obj: handles::get::<ContextObj>(p, "ctx")?,
        handle: p.addr(),
    })
}

impl CtxRef {
    /// Claim the session for this call: `LLQ_ERR_BUSY` if another call holds it.
    ///
    /// With `llq_context_free` this is linearizable: free checks the session under the
    /// registry lock (`can_free`), and this checks the handle after claiming the session.
    /// So either the handle is still live here, and a free from now until the call
    /// returns sees the session held and answers `LLQ_ERR_BUSY`; or a free got in between
    /// the look-up and the claim, and this call fails as if it came after the free.
    pub(crate) fn lock(&self) -> FfiResult<MutexGuard<'_, SessionOf<Arc<Model>>>> {
        let guard = match self.obj.inner.try_lock() {
            Ok(g) => g,
            // A panic inside a previous call: the session may be mid-update, but every
            // field is still a valid value; the caller can llq_context_reset.
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => {
                return Err(err(
                    LLQ_ERR_BUSY,
                    "context is in use (by another thread, or re-entrantly from a callback)",
                ))
            }
        };
        if !handles::is_live(self.handle) {
            return Err(err(
                LLQ_ERR_INVALID_HANDLE,
                "ctx was freed (by another thread, while this call started)",
            ));
        }
        Ok(guard)
    }
}

/// Default context options, the library's (`SessionConfig::default()`): n_ctx 0 (the
/// model's, capped at 4096), an exact f32 cache that stops when full (n_keep 4 if shift
/// is turned on), seed 0x5eed, temp 0.8, top_k 40, top_p 0.95, min_p 0.05,
/// repeat_penalty 1 (off), repeat_last_n 64.
#[no_mangle]
pub extern "C" fn llq_context_default_params() -> llq_context_params {
    let SessionConfig {
        n_ctx,
        kv,
        sampler: d,
        ..
    } = SessionConfig::default();
    llq_context_params {
        n_ctx: n_ctx as u32,
        seed: d.seed,
        temp: d.temp,
        top_k: d.top_k as i32,
        top_p: d.top_p,
        min_p: d.min_p,
        repeat_penalty: d.repeat_penalty,
        repeat_last_n: d.repeat_last_n as i32,
        cache_type: match kv.cache_type {
            CacheType::F32 => LLQ_CACHE_F32,
            CacheType::F16 => LLQ_CACHE_F16,
            CacheType::Q8_0 => LLQ_CACHE_Q8_0,
        },
        context_shift: kv.policy == ContextPolicy::Shift,
        n_keep: DEFAULT_KEEP as u32,
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

/// The C parameters as the library's session configuration; the values are checked by
/// the library (`Session::open`), the same checks as the CLI's flags get.
fn session_config(p: &llq_context_params) -> FfiResult<SessionConfig> {
    let count = |v: i32, what: &str| {
        usize::try_from(v).map_err(|_| {
            err(
                LLQ_ERR_INVALID_ARG,
                format!("context params: {what} {v} < 0"),
            )
        })
    };
    Ok(SessionConfig {
        n_ctx: p.n_ctx as usize,
        kv: kv_config(p)?,
        sampler: SamplerParams {
            temp: p.temp,
            top_k: count(p.top_k, "top_k")?,
            top_p: p.top_p,
            min_p: p.min_p,
            repeat_penalty: p.repeat_penalty,
            repeat_last_n: count(p.repeat_last_n, "repeat_last_n")?,
            seed: p.seed,
        },
        ..SessionConfig::default()
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
        let cfg = session_config(&params)?;
        let session = SessionOf::open(m.clone(), &cfg).map_err(|e| match e {
            crate::Error::Usage(m) => err(LLQ_ERR_INVALID_ARG, format!("context params: {m}")),
            e => e.into(),
        })?;
        let h = handles::register(ContextObj {
            model: m,
            stop: session.stop_handle(),
            inner: Mutex::new(session),
        });
        // SAFETY: checked writable above.
        unsafe { out_ctx.write(h) };
        Ok(())
    })
}

/// Free a context. NULL is a no-op; a second free returns `LLQ_ERR_INVALID_HANDLE`
/// (handles are never reused, so this is always detected).
///
/// A context that a call is running on (e.g. `llq_generate` on another thread, or this
/// thread from inside its callback) is not freed: the result is `LLQ_ERR_BUSY` and the
/// context is untouched and still valid, so `llq_context_request_stop` still works. Stop
/// the call, wait for it to return, then free. A call that starts on another thread while
/// the free is under way either runs with the context still live (the free then returns
/// `LLQ_ERR_BUSY`; the call itself may get `LLQ_ERR_BUSY` if it meets the free's check)
/// or returns `LLQ_ERR_INVALID_HANDLE` (the context was freed first).
#[no_mangle]
pub extern "C" fn llq_context_free(ctx: *mut llq_context) -> llq_status {
    guard(|| handles::free::<ContextObj>(ctx, "ctx"))
}

/// Forget all tokens and restart the sampler from its seed: the context behaves as if
/// newly created.
#[no_mangle]
pub extern "C" fn llq_context_reset(ctx: *mut llq_context) -> llq_status {
    guard(|| {
        ctx_ref(ctx)?.lock()?.reset();
        Ok(())
    })
}

/// Ask a running `llq_generate` on `ctx` to stop after the current token. Safe to call
/// from any thread (and from the callback) while the context is generating; a request
/// made when no generation runs is cleared by the next `llq_generate`.
#[no_mangle]
pub extern "C" fn llq_context_request_stop(ctx: *const llq_context) -> llq_status {
    guard(|| {
        ctx_ref(ctx)?.stop.request();
        Ok(())
    })
}

/// The context size in tokens; -1 for an invalid handle or a busy context.
#[no_mangle]
pub extern "C" fn llq_context_n_ctx(ctx: *const llq_context) -> i32 {
    guard_value(-1, || {
        let c = ctx_ref(ctx)?;
        let n = c.lock()?.n_ctx();
        Ok(n as i32)
    })
}

/// Tokens currently in the context; -1 for an invalid handle or a busy context.
#[no_mangle]
pub extern "C" fn llq_context_n_tokens(ctx: *const llq_context) -> i32 {
    guard_value(-1, || {
        let c = ctx_ref(ctx)?;
        let n = c.lock()?.tokens().len();
        Ok(n as i32)
    })
}

// ---------------------------------------------------------------------------------------
// Low level: evaluate, logits, sample

/// Append `n` tokens to the context and evaluate them (the logits of the last one become
/// available), under the context's policy: without `context_shift`,
/// `LLQ_ERR_CONTEXT_FULL` if they do not fit; with it, the oldest positions after the
/// first `n_keep` are overwritten. `LLQ_ERR_INVALID_TOKEN` for an id outside the
/// vocabulary; on error the context is unchanged. Tokens evaluated here do
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
        c.lock()?.feed(&ids)?;
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
        let l = g.logits();
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
        let t = c.lock()?.sample()?;
        // SAFETY: checked non-null, writable per the contract.
        unsafe { out_token.write(t as llq_token) };
        Ok(())
    })
}
