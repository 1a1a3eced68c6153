//! Q4_0: 32 weights per block, one f16 scale, 4-bit values offset by 8.
//! Byte j holds element j in its low nibble and element j + 16 in its high nibble.

use super::{Block, QK};

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ4_0 {
    /// Scale, f16 bits.
    pub d: u16,
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

// SAFETY: repr(C), integer fields only, no padding (size asserted to 2 + 16).
unsafe impl Block for BlockQ4_0 {}

impl BlockQ4_0 {
    pub fn scale(&self) -> f32 {
        half::f16::from_bits(self.d).to_f32()
    }
}

/// llama.cpp's reference Q4_0 quantization: the signed value of largest magnitude maps
/// to -8, so d = max / -8 and q = clamp(trunc(x / d + 8.5), 0, 15).
pub fn quantize_row_q4_0(src: &[f32], out: &mut [BlockQ4_0]) {
    assert_eq!(src.len(), out.len() * QK);
    for (x, b) in src.chunks_exact(QK).zip(out.iter_mut()) {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = half::f16::from_f32(d).to_bits();
        for j in 0..QK / 2 {
            let lo = ((x[j] * id + 8.5) as i32).clamp(0, 15) as u8;
            let hi = ((x[j + QK / 2] * id + 8.5) as i32).clamp(0, 15) as u8;
            b.qs[j] = lo | (hi << 4);
        }
    }
}

pub fn dequantize_row_q4_0(src: &[BlockQ4_0], out: &mut [f32]) {
    assert_eq!(out.len(), src.len() * QK);
    for (b, o) in src.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.scale();
        for j in 0..QK / 2 {
            o[j] = ((b.qs[j] & 0x0f) as i32 - 8) as f32 * d;
            o[j + QK / 2] = ((b.qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}
