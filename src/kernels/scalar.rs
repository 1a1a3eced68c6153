//! Scalar reference kernels: the definition every SIMD kernel is tested against.

use half::f16;

use super::Kernels;
use crate::quant::{quantize_row_q8_0, BlockQ4_0, BlockQ8_0, QK};

pub static KERNELS: Kernels = Kernels {
    name: "scalar",
    dot_q8_0,
    dot_q4_0,
    dot_f16,
    dot_f32,
    quantize_q8_0: quantize_row_q8_0,
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

pub fn dot_f16(w: &[f16], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    w.iter().zip(x).map(|(a, b)| a.to_f32() * b).sum()
}

pub fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    w.iter().zip(x).map(|(a, b)| a * b).sum()
}
