//! How many worker threads to use when the user does not say.

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
