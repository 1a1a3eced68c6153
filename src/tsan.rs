//! Synchronization that ThreadSanitizer can see (`tools/tsan-c-stress.sh`, built with
//! `--cfg llq_tsan`). In every other build these are the plain operations, nothing more.
//!
//! Rust's std is precompiled without the sanitizer, so TSan misses the ordering of std's
//! futex-based primitives whenever they complete without sleeping (a sleep is made
//! visible by `tests/c/tsan_futex.c`):
//! - a contended `std::sync::Mutex::lock()` that wins the lock while spinning inside
//!   std's `lock_contended`: two threads taking the lock in turn look like a data race.
//!   [`lock`] tells TSan that taking the lock acquires, and dropping the guard releases,
//!   the mutex's address.
//! - rayon's LockLatch (a Mutex and a Condvar), which hands a parallel job's results back
//!   to a thread outside the pool (every C API call): the same spinning lock, and a
//!   Condvar wake-up that raced with the wait. [`in_pool`] runs a forward pass as one
//!   job inside the pool and tells TSan that its end happens before the caller goes on;
//!   the work inside it is split by rayon's own atomics, which TSan sees. (Other builds
//!   enter the pool once per parallel loop instead; the kernels and how each loop is
//!   split are the same.)

use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard};

#[cfg(llq_tsan)]
extern "C" {
    fn __tsan_acquire(addr: *mut std::ffi::c_void);
    fn __tsan_release(addr: *mut std::ffi::c_void);
}

/// `f()`; under `llq_tsan`, run as one job in the compute pool with its completion
/// ordered before the return as far as TSan is concerned.
#[cfg(not(llq_tsan))]
#[inline(always)]
pub(crate) fn in_pool<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(llq_tsan)]
pub(crate) fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    // A per-call address: orders this call's job with this call's return only.
    let token = 0u8;
    let addr = &token as *const u8 as usize;
    let out = rayon::scope(|_| {
        let r = f();
        // SAFETY: bookkeeping in the TSan runtime only (nothing is read or written).
        unsafe { __tsan_release(addr as *mut std::ffi::c_void) };
        r
    });
    // SAFETY: as above.
    unsafe { __tsan_acquire(addr as *mut std::ffi::c_void) };
    out
}

/// A held lock; releases for TSan before the `MutexGuard` unlocks.
pub(crate) struct Locked<'a, T> {
    guard: MutexGuard<'a, T>,
    #[cfg_attr(not(llq_tsan), allow(dead_code))]
    mutex: &'a Mutex<T>,
}

/// `m.lock()`, ignoring poisoning (the caller's data stays usable), visible to TSan.
pub(crate) fn lock<T>(m: &Mutex<T>) -> Locked<'_, T> {
    let guard = m.lock().unwrap_or_else(|e| e.into_inner());
    #[cfg(llq_tsan)]
    // SAFETY: __tsan_acquire only records a synchronization event for the address in
    // the TSan runtime (linked in when llq_tsan is set); nothing is read or written.
    unsafe {
        __tsan_acquire(m as *const Mutex<T> as *mut std::ffi::c_void)
    };
    Locked { guard, mutex: m }
}

impl<T> Drop for Locked<'_, T> {
    fn drop(&mut self) {
        #[cfg(llq_tsan)]
        // SAFETY: as in `lock`: bookkeeping in the TSan runtime only.
        unsafe {
            __tsan_release(self.mutex as *const Mutex<T> as *mut std::ffi::c_void)
        };
    }
}

impl<T> Deref for Locked<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for Locked<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}
