//! CPU feature report for `llq info --system`.

/// The CPU features the kernels care about, in a fixed order, with whether this CPU
/// (as seen by the OS) has them.
pub fn cpu_features() -> Vec<(&'static str, bool)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, bool)> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as d;
        v.extend([
            ("sse4.2", d!("sse4.2")),
            ("avx", d!("avx")),
            ("avx2", d!("avx2")),
            ("fma", d!("fma")),
            ("f16c", d!("f16c")),
            ("avx512f", d!("avx512f")),
            ("avx512bw", d!("avx512bw")),
            ("avx512vl", d!("avx512vl")),
            ("avx512vnni", d!("avx512vnni")),
            ("avx512bf16", d!("avx512bf16")),
            ("avxvnni", d!("avxvnni")),
        ]);
    }
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::is_aarch64_feature_detected as d;
        v.extend([
            ("neon", d!("neon")),
            ("fp16", d!("fp16")),
            ("dotprod", d!("dotprod")),
            ("i8mm", d!("i8mm")),
            ("bf16", d!("bf16")),
            ("sve", d!("sve")),
            ("sve2", d!("sve2")),
        ]);
    }
    v
}
