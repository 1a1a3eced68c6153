//! Temporary files of unfinished `.llq` writes. A writer works in `.llq-<pid>-XXXXXX.tmp`
//! beside its destination and renames it into place when done, so a destination is never
//! half written. What this module adds:
//! - the pid in the name lets a later write into the same folder tell the leftovers of a
//!   killed run (SIGKILL, power loss) from a live run's file, and remove them;
//! - files in progress are registered so that a SIGINT/SIGTERM handler can remove them
//!   (with async-signal-safe calls only) before the process exits.

use std::ffi::{c_char, CString};
use std::path::Path;
use std::sync::atomic::{AtomicPtr, Ordering};

/// Most temporary files registered at once (one per writer; `convert` has one).
const SLOTS: usize = 8;

static IN_PROGRESS: [AtomicPtr<c_char>; SLOTS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS];

/// The file-name prefix of this process's temporary files.
pub fn prefix() -> String {
    format!(".llq-{}-", std::process::id())
}

/// Remove `.llq-<pid>-*.tmp` files in `dir` whose process is gone (on this machine).
/// Files of live processes, and names that do not follow the pattern, are left alone.
pub fn remove_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = name
            .strip_prefix(".llq-")
            .and_then(|r| r.strip_suffix(".tmp"))
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid > 0 && !process_alive(pid) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(unix)]
fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks whether the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(not(unix))]
fn process_alive(_pid: i32) -> bool {
    true
}

/// A registered temporary file; dropping it unregisters the path.
pub struct Registration(Option<usize>);

/// Register `path` for removal by [`install_signal_cleanup`]'s handler.
pub fn register(path: &Path) -> Registration {
    let Some(c) = path.to_str().and_then(|s| CString::new(s).ok()) else {
        return Registration(None);
    };
    let raw = c.into_raw();
    for (i, slot) in IN_PROGRESS.iter().enumerate() {
        if slot
            .compare_exchange(
                std::ptr::null_mut(),
                raw,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
        {
            return Registration(Some(i));
        }
    }
    // SAFETY: `raw` came from CString::into_raw above and was not stored anywhere.
    drop(unsafe { CString::from_raw(raw) });
    Registration(None)
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(i) = self.0 {
            let raw = IN_PROGRESS[i].swap(std::ptr::null_mut(), Ordering::SeqCst);
            if !raw.is_null() {
                // SAFETY: only `register` stores pointers, each from CString::into_raw, and
                // the swap made this the only owner.
                drop(unsafe { CString::from_raw(raw) });
            }
        }
    }
}

/// Remove every registered file: only atomic loads and `unlink`, so a signal handler may
/// call it.
fn remove_registered() {
    for slot in &IN_PROGRESS {
        let p = slot.load(Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: a registered pointer is a live NUL-terminated string until its
            // Registration is dropped, which swaps it out first.
            #[cfg(unix)]
            unsafe {
                libc::unlink(p);
            }
        }
    }
}

#[cfg(unix)]
extern "C" fn on_signal(sig: libc::c_int) {
    remove_registered();
    // SAFETY: _exit is async-signal-safe; 128 + signal is the shell's convention.
    unsafe { libc::_exit(128 + sig) };
}

/// Make SIGINT and SIGTERM remove the files in progress before the process exits (for
/// commands that write a model: `llq convert`).
pub fn install_signal_cleanup() {
    #[cfg(unix)]
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only makes async-signal-safe calls (atomic loads, unlink,
        // _exit).
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}
