//! The compute pool: how many worker threads, decided once for the CLI and the C API.

use crate::error::{Error, Result};

/// Most threads the C API accepts per logical CPU before calling the request a mistake
/// (`n_threads = 1 << 30` from an embedding app is a bug worth reporting, see
/// [`check_c_api`]). Whatever is accepted, [`resolve`] never starts more threads than
/// there are logical CPUs.
pub const MAX_THREADS_PER_CPU: usize = 4;

/// The logical CPUs this process may run on: [`std::thread::available_parallelism`]
/// honours the CPU affinity mask and cgroup quotas.
pub fn logical_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A thread count as [`resolve`] settled it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadCount {
    /// Threads to start.
    pub n: usize,
    /// What was asked for (0 = the default).
    pub requested: usize,
}

impl ThreadCount {
    /// Whether the request was above the logical CPUs and cut to their number (worth a
    /// warning: the user asked for something else).
    pub fn capped(&self) -> bool {
        self.requested > self.n
    }
}

/// The one rule for a thread-count request `n`: 0 = [`default_threads`]; more than the
/// logical CPUs is capped at their number, because the kernels keep every thread busy and
/// extra threads only take turns on the same cores (and a wild `-t 1000000` must not
/// start a thread storm).
pub fn resolve(n: usize) -> ThreadCount {
    let cpus = logical_cpus();
    ThreadCount {
        n: match n {
            0 => default_threads(),
            n => n.min(cpus),
        },
        requested: n,
    }
}

/// The C API's documented rule on top of [`resolve`]: a request above
/// [`MAX_THREADS_PER_CPU`] per logical CPU is an error (an embedding application's absurd
/// value is more likely a bug than a wish); in range, it is resolved (and capped) as
/// everywhere else.
pub fn check_c_api(n: usize) -> Result<ThreadCount> {
    let cpus = logical_cpus();
    let max = MAX_THREADS_PER_CPU * cpus;
    if n > max {
        return Err(Error::usage(format!(
            "{n} threads requested, but this process may use {cpus} CPUs (at most {max} threads)"
        )));
    }
    Ok(resolve(n))
}

/// Start the process-wide compute pool for a request of `n` threads (see [`resolve`]).
/// Only the first call sizes it; later calls, and a pool the host process already
/// started, keep the existing pool. A failure to start threads is reported as itself.
/// Returns how the request was settled, so that a shell can say when it was capped.
pub fn init(n: usize) -> Result<ThreadCount> {
    use std::sync::Mutex;
    static STARTED: Mutex<bool> = Mutex::new(false);
    let count = resolve(n);
    let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    if *started {
        return Ok(count);
    }
    // RAYON_NUM_THREADS, when set, is the user's word for the default.
    let n = if n == 0 && std::env::var_os("RAYON_NUM_THREADS").is_some() {
        0
    } else {
        count.n
    };
    match rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
    {
        Ok(()) => {}
        // The host (or an earlier caller) already built rayon's global pool: use it. Only
        // the thread-start failure carries an OS error as its source.
        Err(e) if std::error::Error::source(&e).is_none() => {}
        Err(e) => {
            return Err(Error::usage(format!(
                "cannot start the compute pool of {n} threads: {e}"
            )))
        }
    }
    *started = true;
    Ok(count)
}

/// One thread per *physical* core this process may run on: the matmul kernels saturate a
/// core's vector units (and decoding its memory bandwidth), so a second hyper-thread on
/// the same core only adds contention (llama.cpp defaults the same way). The count is
/// capped by [`logical_cpus`], which sees the CPU affinity mask and cgroup quotas that
/// the physical-core count does not.
pub fn default_threads() -> usize {
    num_cpus::get_physical().clamp(1, logical_cpus())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_threads_is_within_the_allowed_cpus() {
        let n = default_threads();
        assert!(n >= 1);
        assert!(n <= logical_cpus());
    }

    #[test]
    fn requests_above_the_cpus_are_capped_not_refused() {
        let cpus = logical_cpus();
        let t = resolve(1_000_000);
        assert_eq!((t.n, t.requested, t.capped()), (cpus, 1_000_000, true));
        let t = resolve(cpus);
        assert_eq!((t.n, t.capped()), (cpus, false));
        assert!(!resolve(0).capped());
        assert!(check_c_api(MAX_THREADS_PER_CPU * cpus + 1).is_err());
        assert_eq!(check_c_api(cpus + 1).unwrap().n, cpus);
    }
}
