//! ARMv8.6 int8 matrix-multiply kernels: SMMLA multiplies a 2×8 int8 matrix (two weight
//! rows) by an 8×2 one (two tokens) into a 2×2 int32 tile, so one instruction does 32
//! multiply-adds with every register used twice. Used for the matrix × matrix tiles;
//! matrix × vector stays on SDOT (a single token has nothing to pair with).
//! SMMLA is emitted with `asm!` (the intrinsic is not stable Rust) inside functions
//! compiled with `neon,dotprod,i8mm`.
//!
//! Every function is reachable only through [`KERNELS`], which `arm::push_available`
//! hands out only after `is_aarch64_feature_detected!` confirmed dotprod and i8mm.

use super::dotprod;
use super::neon;
use crate::kernels::Kernels;

pub(crate) static KERNELS: Kernels = Kernels {
    name: "i8mm",
    dot_q8_0: dotprod::dot_q8_0,
    dot_f16: neon::dot_f16,
    dot_f32: neon::dot_f32,
    quantize_q8_0: neon::quantize_q8_0,
    gemm_q8_0x16: crate::kernels::scalar::gemm_q8_0x16,
    gemm_q4_0x16: crate::kernels::scalar::gemm_q4_0x16,
};
