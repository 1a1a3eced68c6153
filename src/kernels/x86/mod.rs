//! x86-64 kernel levels: AVX2 (+FMA, F16C), AVX-512 (F/BW/VL) and AVX-512 VNNI.

mod activation;
mod avx2;
mod avx512;
mod rows16;

use super::Kernels;

/// Append the levels this CPU can run, in increasing order of preference.
pub(super) fn push_available(v: &mut Vec<&'static Kernels>) {
    use std::arch::is_x86_feature_detected as d;
    let avx2 = d!("avx2") && d!("fma") && d!("f16c");
    if !avx2 {
        return;
    }
    v.push(&avx2::KERNELS);
    let avx512 = d!("avx512f") && d!("avx512bw") && d!("avx512vl");
    if !avx512 {
        return;
    }
    v.push(&avx512::KERNELS);
    if d!("avx512vnni") {
        v.push(&avx512::KERNELS_VNNI);
    }
}
