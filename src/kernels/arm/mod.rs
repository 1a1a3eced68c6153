//! AArch64 kernel levels: plain NEON (Cortex-A72 class), `dotprod` (SDOT) and `i8mm`
//! (SMMLA tiles for matrix × matrix; SDOT for matrix × vector).

/// Generates `fn $name(w, x, out)`, compiled with the target features `$feat`: checks the
/// arguments of a group call (`group_dims`) and covers the tokens with register tiles,
/// `$four` (4 tokens) while at least 4 are left, then `$two` (2) and `$one` (1). Each
/// tile is a `#[target_feature]` function `(w, x, nb, t0, out)` writing
/// `out[(t0 + t) * 16 + i]` for its tokens `t`.
macro_rules! group_driver {
    ($name:ident, $feat:literal, $W:ty, $four:expr, $two:expr, $one:expr) => {
        #[target_feature(enable = $feat)]
        fn $name(w: &[$W], x: &[ActQ8], out: &mut [f32]) {
            let (nb, toks) = $crate::kernels::group_dims(w.len(), x.len(), out.len());
            let mut t = 0;
            while t + 4 <= toks {
                $four(w, x, nb, t, out);
                t += 4;
            }
            if t + 2 <= toks {
                $two(w, x, nb, t, out);
                t += 2;
            }
            if t < toks {
                $one(w, x, nb, t, out);
            }
        }
    };
}
use group_driver;

mod activation;
mod coded;
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
