//! Handles: the pointers given to C are not addresses of Rust objects but numbers that
//! index a registry of live objects (`Arc`s). A handle is never dereferenced, and numbers
//! are never reused, so NULL, freed (use-after-free, double free) and wrong-kind handles
//! are reliably reported as errors; and a call that is running keeps its object alive
//! even if another thread frees the handle meanwhile.
//!
//! An object type may refuse to be freed while it is in use ([`Handled::can_free`]): the
//! check runs under the registry lock, so between it and the handle's removal no call
//! can look the handle up. A call that looked the handle up *before* the free but has
//! not yet claimed the object must check again after claiming it ([`is_live`]); see
//! `ffi::context` for how contexts do that.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use super::{err, FfiResult, LLQ_ERR_INVALID_HANDLE, LLQ_ERR_NULL};

/// A live object behind a handle, with the name of its C type. The registry knows no
/// object type: each one says what it is through [`Handled`].
pub(crate) struct Obj {
    kind: &'static str,
    value: Arc<dyn Any + Send + Sync>,
}

impl Obj {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn downcast<T: Handled>(&self) -> Option<Arc<T>> {
        self.value.clone().downcast::<T>().ok()
    }
}

/// An object type that can sit behind a handle of C type `Self::C`.
pub(crate) trait Handled: Any + Send + Sync + Sized {
    /// The opaque C type (`llq_model`, `llq_context`).
    type C;
    /// Its name in messages.
    const KIND: &'static str;

    /// Whether the handle may be freed now; an error (e.g. `LLQ_ERR_BUSY`) keeps the
    /// handle live and untouched. Called with the registry locked: it must not block.
    fn can_free(&self) -> FfiResult<()> {
        Ok(())
    }
}

static LIVE: LazyLock<Mutex<HashMap<usize, Obj>>> = LazyLock::new(Default::default);
/// Handle numbers: multiples of 16 (they look like aligned pointers), never reused.
static NEXT: AtomicUsize = AtomicUsize::new(1);

fn live() -> crate::tsan::Locked<'static, HashMap<usize, Obj>> {
    // The map stays consistent even if a panic interrupted a holder: use it anyway.
    crate::tsan::lock(&LIVE)
}

/// Register `value` and return its new handle.
pub(crate) fn register<T: Handled>(value: T) -> *mut T::C {
    let id = NEXT.fetch_add(1, Ordering::Relaxed) << 4;
    let obj = Obj {
        kind: T::KIND,
        value: Arc::new(value),
    };
    live().insert(id, obj);
    std::ptr::without_provenance_mut(id)
}

fn lookup_error(what: &str, want: &str, found: Option<&Obj>) -> super::FfiError {
    match found {
        Some(o) => err(
            LLQ_ERR_INVALID_HANDLE,
            format!("{what} is a {}, not a {want}", o.kind()),
        ),
        None => err(
            LLQ_ERR_INVALID_HANDLE,
            format!("{what} is not a live {want} (freed already, or not a handle)"),
        ),
    }
}

/// The object behind handle `p`, which must be a live handle of `T`'s kind.
pub(crate) fn get<T: Handled>(p: *const T::C, what: &str) -> FfiResult<Arc<T>> {
    if p.is_null() {
        return Err(err(LLQ_ERR_NULL, format!("{what} is NULL")));
    }
    let map = live();
    let found = map.get(&p.addr());
    match found.and_then(Obj::downcast::<T>) {
        Some(a) => Ok(a),
        None => Err(lookup_error(what, T::KIND, found)),
    }
}

/// Whether handle `p` is still registered. Numbers are never reused, so a live `p` is
/// the same object it was when looked up.
pub(crate) fn is_live(p: usize) -> bool {
    live().contains_key(&p)
}

/// Unregister handle `p`; the object is dropped once no running call uses it. NULL is a
/// no-op; a handle that is not live (double free), or whose object refuses
/// ([`Handled::can_free`]), is an error and nothing happens.
pub(crate) fn free<T: Handled>(p: *mut T::C, what: &str) -> FfiResult<()> {
    if p.is_null() {
        return Ok(());
    }
    let obj = {
        let mut map = live();
        let found = map.get(&p.addr());
        let Some(value) = found.and_then(Obj::downcast::<T>) else {
            let e = lookup_error(what, T::KIND, found);
            return Err(if found.is_none() {
                err(
                    e.code,
                    format!("{} (double free?); nothing was freed", e.msg),
                )
            } else {
                e
            });
        };
        // Still under the registry lock: no call can look the handle up between this
        // check and the removal.
        value.can_free()?;
        map.remove(&p.addr())
    };
    // Dropped outside the registry lock: freeing a model can take a while (munmap).
    drop(obj);
    Ok(())
}
