//! Scalar reference kernels: the definition every SIMD kernel is tested against.

use half::f16;

use super::{tile_dims, Kernels};
use crate::quant::{quantize_row_q8_0, BlockQ4_0, BlockQ8_0, QK};

pub static KERNELS: Kernels = Kernels {
    name: "scalar",
    dot_q8_0,
    dot_q4_0,
    dot_f16,
    dot_f32,
    quantize_q8_0: quantize_row_q8_0,
    gemm_q8_0_tile,
    gemm_q4_0_tile,
};

/// Per block: integer dot product of the int8 values, then one float multiply by both
/// scales (llama.cpp's order of operations).
pub fn dot_q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    let mut sum = 0.0f32;
    for (a, b) in w.iter().zip(x) {
        let mut isum = 0i32;
        for i in 0..QK {
            isum += a.qs[i] as i32 * b.qs[i] as i32;
        }
        sum += isum as f32 * (a.scale() * b.scale());
    }
    sum
}

pub fn dot_q4_0(w: &[BlockQ4_0], x: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    let mut sum = 0.0f32;
    for (a, b) in w.iter().zip(x) {
        let mut isum = 0i32;
        for j in 0..QK / 2 {
            let lo = (a.qs[j] & 0x0f) as i32 - 8;
            let hi = (a.qs[j] >> 4) as i32 - 8;
            isum += lo * b.qs[j] as i32 + hi * b.qs[j + QK / 2] as i32;
        }
        sum += isum as f32 * (a.scale() * b.scale());
    }
    sum
}

/// Float dots keep 8 independent partial sums (lane i takes elements ≡ i mod 8), added
/// pairwise at the end: more accurate than one running sum, and plain portable code that
/// compilers can keep in vector registers, so the reference stays fast enough to run the
/// whole test suite with `LLQ_KERNEL=scalar`.
fn dot8(n: usize, f: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let full = n / 8 * 8;
    for i in (0..full).step_by(8) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(i + l);
        }
    }
    for i in full..n {
        acc[i - full] += f(i);
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

pub fn dot_f16(w: &[f16], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    dot8(w.len(), |i| w[i].to_f32() * x[i])
}

pub fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    dot8(w.len(), |i| w[i] * x[i])
}

/// Reference tile: one [`dot_q8_0`] per output (see `Kernels::gemm_q8_0_tile`).
pub fn gemm_q8_0_tile(w: &[BlockQ8_0], x: &[BlockQ8_0], nb: usize, out: &mut [f32], ldo: usize) {
    let (rows, toks) = tile_dims(w.len(), x.len(), nb, out.len(), ldo);
    for t in 0..toks {
        for r in 0..rows {
            out[t * ldo + r] = dot_q8_0(&w[r * nb..(r + 1) * nb], &x[t * nb..(t + 1) * nb]);
        }
    }
}

/// Reference tile: one [`dot_q4_0`] per output (see `Kernels::gemm_q4_0_tile`).
pub fn gemm_q4_0_tile(w: &[BlockQ4_0], x: &[BlockQ8_0], nb: usize, out: &mut [f32], ldo: usize) {
    let (rows, toks) = tile_dims(w.len(), x.len(), nb, out.len(), ldo);
    for t in 0..toks {
        for r in 0..rows {
            out[t * ldo + r] = dot_q4_0(&w[r * nb..(r + 1) * nb], &x[t * nb..(t + 1) * nb]);
        }
    }
}
