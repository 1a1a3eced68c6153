//! Q8_0: 32 weights per block, one f16 scale, int8 values. Also the block type that
//! activations are quantized to on the fly for the integer dot products.

use super::{Block, QK};

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale, f16 bits.
    pub d: u16,
    pub qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

// SAFETY: repr(C), integer fields only, no padding (size asserted to 2 + 32).
unsafe impl Block for BlockQ8_0 {}

impl BlockQ8_0 {
    pub fn scale(&self) -> f32 {
        half::f16::from_bits(self.d).to_f32()
    }
}

/// llama.cpp's reference Q8_0 quantization: d = max|x| / 127, q = round(x / d).
pub fn quantize_row_q8_0(src: &[f32], out: &mut [BlockQ8_0]) {
    assert_eq!(src.len(), out.len() * QK);
    for (x, b) in src.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = half::f16::from_f32(d).to_bits();
        for (q, v) in b.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
        }
    }
}

pub fn dequantize_row_q8_0(src: &[BlockQ8_0], out: &mut [f32]) {
    assert_eq!(out.len(), src.len() * QK);
    for (b, o) in src.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.scale();
        for (y, q) in o.iter_mut().zip(b.qs) {
            *y = q as f32 * d;
        }
    }
}
