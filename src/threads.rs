//! The compute pool: how many worker threads, decided once for the CLI and the C API.

use crate::error::{Error, Result};

/// Most threads accepted per logical CPU this process may use: more only adds contention,
/// and a wild value (`-t 1000000`, `n_threads = 1 << 30` from an embedding app) must not
/// start a thread storm.
pub const MAX_THREADS_PER_CPU: usize = 4;

/// The number of pool threads for a request of `n` (0 = [`default_threads`]); too many is
/// an error that says the limit.
pub fn resolve(n: usize) -> Result<usize> {
    let allowed = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max = MAX_THREADS_PER_CPU * allowed;
    match n {
        0 => Ok(default_threads()),
        n if n > max => Err(Error::usage(format!(
            "{n} threads requested, but this process may use {allowed} CPUs (at most {max} threads)"
        ))),
        n => Ok(n),
    }
}

/// Start the process-wide compute pool with `n` threads (0 = the default). Only the first
/// call sizes it; later calls, and a pool the host process already started, keep the
/// existing pool. A failure to start threads is reported as itself.
pub fn init(n: usize) -> Result<()> {
    use std::sync::Mutex;
    static STARTED: Mutex<bool> = Mutex::new(false);
    let requested = n;
    let n = resolve(n)?;
    let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    if *started {
        return Ok(());
    }
    // RAYON_NUM_THREADS, when set, is the user's word for the default.
    let n = if requested == 0 && std::env::var_os("RAYON_NUM_THREADS").is_some() {
        0
    } else {
        n
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
    Ok(())
}

/// One thread per *physical* core this process may run on: the matmul kernels saturate a
/// core's vector units (and decoding its memory bandwidth), so a second hyper-thread on
/// the same core only adds contention (llama.cpp defaults the same way). The count is
/// capped by [`std::thread::available_parallelism`], which honours the CPU affinity
/// mask and cgroup quotas that the physical-core count does not see.
pub fn default_threads() -> usize {
    let allowed = std::thread::available_parallelism().map_or(1, |n| n.get());
    num_cpus::get_physical().clamp(1, allowed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_threads_is_within_the_allowed_cpus() {
        let n = super::default_threads();
        assert!(n >= 1);
        assert!(n <= std::thread::available_parallelism().unwrap().get());
    }
}
