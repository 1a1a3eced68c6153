//! AArch64 kernel levels: plain NEON (Cortex-A72 class), `dotprod` (SDOT) and `i8mm`
//! (SMMLA tiles for matrix × matrix; SDOT for matrix × vector).

/// Generates a level's group kernels `gemm_q8_0x16`, `gemm_q4_0x16` and
/// `gemm_coded::<B: NeonCoded>` (see [`group_kernel`]) from its register tiles: for each,
/// the tiles for 4, 2 and 1 tokens. The coded tiles are expressions in `B`.
macro_rules! group_kernels {
    (
        $feat:literal,
        q8_0: [$($q8:expr),+ $(,)?],
        q4_0: [$($q4:expr),+ $(,)?],
        coded: [$($coded:expr),+ $(,)?] $(,)?
    ) => {
        $crate::kernels::arm::group_kernel!(
            gemm_q8_0x16, $feat, $crate::quant::interleave::BlockQ8_0x16, 1, [$($q8),+]
        );
        $crate::kernels::arm::group_kernel!(
            gemm_q4_0x16, $feat, $crate::quant::interleave::BlockQ4_0x16, 1, [$($q4),+]
        );
        $crate::kernels::arm::group_kernel!(gemm_coded<B>, $feat, B, B::SUBS, [$($coded),+]);
    };
}
use group_kernels;

/// Generates the table entry `fn $name(w: &[$W], x, out)` (generic over `$B: NeonCoded`
/// if given) around a function compiled with the target features `$feat` that checks the
/// arguments of a group call (`group_dims_sub`, superblocks of `$subs` activation blocks)
/// and covers the tokens with register tiles: `$four` (4 tokens) while at least 4 are
/// left, then `$two` (2) and `$one` (1). Each tile is a `#[target_feature]` function
/// `(w, x, nb, t0, out)` writing `out[(t0 + t) * 16 + i]` for its tokens `t`.
///
/// Soundness rests on the caller: the entry may only be installed in tables that
/// `push_available` hands out after detecting `$feat`.
macro_rules! group_kernel {
    (
        $name:ident $(<$B:ident>)?,
        $feat:literal,
        $W:ty,
        $subs:expr,
        [$four:expr, $two:expr, $one:expr]
    ) => {
        fn $name$(<$B: $crate::kernels::arm::coded::NeonCoded>)?(
            w: &[$W],
            x: &[$crate::quant::interleave::ActQ8],
            out: &mut [f32],
        ) {
            #[target_feature(enable = $feat)]
            fn imp$(<$B: $crate::kernels::arm::coded::NeonCoded>)?(
                w: &[$W],
                x: &[$crate::quant::interleave::ActQ8],
                out: &mut [f32],
            ) {
                let (nb, toks) =
                    $crate::kernels::group_dims_sub(w.len(), $subs, x.len(), out.len());
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
            // SAFETY: only reachable through kernel tables that `push_available` hands out
            // after detecting `$feat`.
            unsafe { imp$(::<$B>)?(w, x, out) }
        }
    };
}
use group_kernel;

/// `asm!` of register-only instructions: they read and write only the named registers
/// (no memory, stack or flags). Use it only in a function compiled with the target
/// features the instructions need (its table's level detected them).
macro_rules! reg_asm {
    ($($args:tt)*) => {
        // SAFETY: the instructions touch only the named registers, and the enclosing
        // function is compiled for their features, which were detected at run time
        // before its kernel table was handed out.
        unsafe {
            ::std::arch::asm!($($args)*, options(pure, nomem, nostack, preserves_flags))
        }
    };
}
use reg_asm;

/// Generates `fn $name(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t`,
/// compiled with `$feat`: the one accumulating instruction `$insn` (operands `{acc}`,
/// `{a}`, `{b}`, and `{l}` for the const lane `$L` if given), written as `asm!` because
/// its intrinsic is not stable Rust.
macro_rules! acc_insn {
    ($(#[$doc:meta])* fn $name:ident $(<$L:ident>)?, $feat:literal, $insn:literal) => {
        $(#[$doc])*
        #[inline]
        #[target_feature(enable = $feat)]
        fn $name$(<const $L: i32>)?(
            acc: ::core::arch::aarch64::int32x4_t,
            a: ::core::arch::aarch64::int8x16_t,
            b: ::core::arch::aarch64::int8x16_t,
        ) -> ::core::arch::aarch64::int32x4_t {
            let mut acc = acc;
            $crate::kernels::arm::reg_asm!(
                $insn,
                acc = inout(vreg) acc,
                a = in(vreg) a,
                b = in(vreg) b
                $(, l = const $L)?
            );
            acc
        }
    };
}
use acc_insn;

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
