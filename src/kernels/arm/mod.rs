//! AArch64 kernel levels: plain NEON (Cortex-A72 class), `dotprod` (SDOT) and `i8mm`
//! (SMMLA tiles for matrix × matrix; SDOT for matrix × vector).

mod dotprod;
mod i8mm;
mod neon;

use super::Kernels;

/// Append the levels this CPU can run, in increasing order of preference.
pub(super) fn push_available(v: &mut Vec<&'static Kernels>) {
    use std::arch::is_aarch64_feature_detected as d;
    if !d!("neon") {
        return;
    }
    v.push(&neon::KERNELS);
    if !d!("dotprod") {
        return;
    }
    v.push(&dotprod::KERNELS);
    if d!("i8mm") {
        v.push(&i8mm::KERNELS);
    }
}
