//! `rows16` superblocks of the coded types: Q4_1, Q5_0, Q5_1 (one 32-column sub-block
//! per superblock) and the K-quants Q4_K, Q5_K, Q6_K (eight). 16 rows are interleaved as
//! in `quant::interleave`, so one SIMD register holds 4 consecutive codes of 4, 8 or 16
//! rows and a dot-product instruction leaves one row's partial sum per 32-bit lane.
//!
//! Every weight is `S · code + B` (see [`crate::quant::native`]). A superblock holds the
//! rows' scale fields, then per 32-column sub-block `s` one contiguous run of
//! [`CodedX16::SUB_BYTES`] bytes (sub-block after sub-block, so that a kernel reads the
//! superblock front to back in one stream, which the hardware prefetchers follow):
//! * for 5-bit codes, 64 bytes of fifth bits: bit `c` (`c < 8`) of byte `4i + b` is bit
//!   4 of row `i`'s code `4c + b`; for 6-bit codes, 128 bytes: bits `2(c % 4)`,
//!   `2(c % 4) + 1` of byte `64 (c / 4) + 4i + b` are bits 4–5 of row `i`'s code
//!   `4c + b` ([`CodedX16::sub_high`]);
//! * then 256 bytes of nibbles, arranged exactly like a `BlockQ4_0x16`: byte
//!   `64c + 4i + b` (`c < 4`) holds the low 4 bits of row `i`'s code `4c + b` in its low
//!   nibble and of code `16 + 4c + b` in its high nibble ([`CodedX16::sub_nibbles`]);
//!
//! The rows' scale fields are those ggml stores, transposed so that field `k` of the
//! 16 rows is 16 consecutive values (one vector load): f16 `d` (and `m`/`dmin`), Q4_K's
//! and Q5_K's 12 packed scale bytes at `16k + i`, Q6_K's 16 i8 scales at `16k + i`.
//! Each superblock has exactly the bytes of its 16 native blocks, so a `rows16` tensor
//! is as large as the GGUF one, and [`CodedX16::row_native`] gives back each native block
//! byte for byte: import is lossless.

use half::f16;

use super::interleave::{q4_index, Interleaved, GROUP};
use super::native::{
    k_scale_min, BlockQ4_1, BlockQ4_K, BlockQ5_0, BlockQ5_1, BlockQ5_K, BlockQ6_K, NativeBlock,
};
use super::{block_bytes, Block, DType, QK};

/// Columns per sub-block: one activation block (`ActQ8`).
pub const SUB: usize = QK;
/// Nibble bytes per sub-block.
const NIB: usize = GROUP * SUB / 2;
/// Bytes per sub-block of one plane of high bits.
const PLANE: usize = GROUP * SUB / 8;
/// Most (sub-block, half) scale slots of a superblock (8 sub-blocks × 2 halves).
pub const MAX_SLOTS: usize = 16;

/// Per-row scale `S` and offset `B` of each 16-column half of each sub-block of one
/// superblock: slot `2s + h`, row `i`. For every type but Q6_K both halves are equal.
#[derive(Clone, Copy)]
pub struct SubScales {
    pub s: [[f32; GROUP]; MAX_SLOTS],
    pub b: [[f32; GROUP]; MAX_SLOTS],
}

impl SubScales {
    pub const ZERO: SubScales = SubScales {
        s: [[0.0; GROUP]; MAX_SLOTS],
        b: [[0.0; GROUP]; MAX_SLOTS],
    };
}

/// A `rows16` superblock of unsigned codes and per-sub-block scales.
pub trait CodedX16: Interleaved<Plain: NativeBlock> {
    /// 32-column sub-blocks per superblock (`COLS / 32`).
    const SUBS: usize;
    /// Bits of each code above its nibble (0, 1 or 2).
    const HIGH_BITS: u32;
    /// Whether a sub-block's two 16-column halves have scales of their own (Q6_K).
    const SPLIT: bool;
    /// Bytes of high bits per sub-block (`64 · HIGH_BITS`).
    const HIGH_BYTES: usize = PLANE * Self::HIGH_BITS as usize;
    /// Bytes of one sub-block's codes: its high bits, then 256 bytes of nibbles.
    const SUB_BYTES: usize = Self::HIGH_BYTES + NIB;
    /// Every sub-block's codes, `SUBS · SUB_BYTES` bytes; sub-block `s` at `SUB_BYTES · s`.
    fn codes(&self) -> &[u8];
    fn codes_mut(&mut self) -> &mut [u8];
    /// The 256 bytes of nibbles of sub-block `s`.
    #[inline(always)]
    fn sub_nibbles(&self, s: usize) -> &[u8] {
        &self.codes()[Self::SUB_BYTES * s + Self::HIGH_BYTES..Self::SUB_BYTES * (s + 1)]
    }
    /// The high bits of sub-block `s` (empty for 4-bit codes).
    #[inline(always)]
    fn sub_high(&self, s: usize) -> &[u8] {
        &self.codes()[Self::SUB_BYTES * s..Self::SUB_BYTES * s + Self::HIGH_BYTES]
    }
    /// Copy row `i`'s scale fields from its native block.
    fn set_row_scales(&mut self, i: usize, b: &Self::Plain);
    /// Row `i`'s scale fields into a native block.
    fn row_scales(&self, i: usize, b: &mut Self::Plain);
    /// `S` and `B` of every slot and row (slots `0..2·SUBS` are written). `S · code` and
    /// `B` are computed as the reference dequantizer computes them, so a kernel's
    /// `S·Σcode·x + B·Σx` has the dequantized weights' exact products.
    fn scales(&self, out: &mut SubScales);

    /// Row `i`'s code `k` of sub-block `s` (`k < 32`).
    #[inline]
    fn code(&self, s: usize, i: usize, k: usize) -> u8 {
        let byte = self.sub_nibbles(s)[q4_index(i, k)];
        let lo = if k < 16 { byte & 0x0F } else { byte >> 4 };
        let (c, b) = (k / 4, k % 4);
        let hi = match Self::HIGH_BITS {
            0 => 0,
            1 => (self.sub_high(s)[4 * i + b] >> c) & 1,
            _ => (self.sub_high(s)[PLANE * (c / 4) + 4 * i + b] >> (2 * (c % 4))) & 3,
        };
        lo | (hi << 4)
    }

    /// Store row `i`'s 32 codes of sub-block `s`: whole bytes, each written once (the
    /// converter interleaves every code of a model through here).
    #[inline]
    fn put_row(&mut self, s: usize, i: usize, codes: &[u8]) {
        let codes: &[u8; SUB] = codes.try_into().expect("one sub-block of codes");
        let sub = &mut self.codes_mut()[Self::SUB_BYTES * s..Self::SUB_BYTES * (s + 1)];
        let (high, nib) = sub.split_at_mut(Self::HIGH_BYTES);
        for k in 0..16 {
            nib[q4_index(i, k)] = (codes[k] & 0x0F) | ((codes[k + 16] & 0x0F) << 4);
        }
        match Self::HIGH_BITS {
            0 => {}
            1 => {
                for b in 0..4 {
                    let mut byte = 0u8;
                    for c in 0..8 {
                        byte |= ((codes[4 * c + b] >> 4) & 1) << c;
                    }
                    high[4 * i + b] = byte;
                }
            }
            _ => {
                for half in 0..2 {
                    for b in 0..4 {
                        let mut byte = 0u8;
                        for c in 0..4 {
                            byte |= ((codes[4 * (4 * half + c) + b] >> 4) & 3) << (2 * c);
                        }
                        high[PLANE * half + 4 * i + b] = byte;
                    }
                }
            }
        }
    }

    /// Row `i` of this superblock as its native block, byte for byte what was imported.
    fn row_native(&self, i: usize) -> Self::Plain {
        let mut b = Self::Plain::default();
        self.row_scales(i, &mut b);
        let mut codes = [0u8; 256];
        for s in 0..Self::SUBS {
            for k in 0..SUB {
                codes[SUB * s + k] = self.code(s, i, k);
            }
        }
        b.set_codes(&codes[..Self::Plain::N]);
        b
    }
}

/// Interleave groups of 16 rows of `nb` native blocks (row by row) into `nb`
/// superblocks per group (every byte of `out` is written).
fn interleave_coded<B: CodedX16>(rows: &[B::Plain], out: &mut [B]) {
    let nb = out.len();
    assert_eq!(
        rows.len(),
        GROUP * nb,
        "interleave: need 16 rows of nb blocks"
    );
    let mut codes = [0u8; 256];
    for (b, sb) in out.iter_mut().enumerate() {
        for i in 0..GROUP {
            let blk = &rows[i * nb + b];
            blk.codes(&mut codes[..B::Plain::N]);
            for s in 0..B::SUBS {
                sb.put_row(s, i, &codes[SUB * s..SUB * (s + 1)]);
            }
            sb.set_row_scales(i, blk);
        }
    }
}

/// Row `i` of superblock `sb`, decoded by the reference dequantizer of its native type.
fn dequantize_coded<B: CodedX16>(sb: &B, i: usize, out: &mut [f32]) {
    let native = sb.row_native(i);
    crate::gguf::dequantize(B::Plain::GGML, block_bytes(&[native]), out).expect("one whole block");
}

fn h(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

macro_rules! coded_x16 {
    ($name:ident, $native:ty, $dtype:expr, subs: $subs:expr, high: $hb:expr, split: $split:expr,
     { $($field:ident : $fty:ty),* $(,)? }) => {
        #[derive(Clone, Copy, Debug, PartialEq)]
        #[repr(C)]
        pub struct $name {
            $(pub $field: $fty,)*
            /// The codes, sub-block after sub-block: high bits, then nibbles (see the
            /// module comment).
            pub q: [u8; (PLANE * $hb + NIB) * $subs],
        }
        const _: () = assert!(
            std::mem::size_of::<$name>() == GROUP * std::mem::size_of::<$native>()
        );
        // SAFETY: repr(C), integer fields only, no padding (the size is asserted to be that
        // of 16 native blocks, which is the sum of the fields).
        unsafe impl Block for $name {}

        impl $name {
            // SAFETY: `Block` types are integers only: all-zero bytes are a valid value.
            pub const ZERO: $name = unsafe { std::mem::zeroed() };
        }

        impl Interleaved for $name {
            type Plain = $native;
            const DTYPE: DType = $dtype;
            const COLS: usize = SUB * $subs;
            fn interleave(rows: &[$native], out: &mut [Self]) {
                interleave_coded(rows, out)
            }
            fn dequantize_row(&self, i: usize, out: &mut [f32]) {
                dequantize_coded(self, i, out)
            }
        }
    };
}

coded_x16!(BlockQ4_1x16, BlockQ4_1, DType::Q4_1, subs: 1, high: 0, split: false,
    { d: [u16; GROUP], m: [u16; GROUP] });
coded_x16!(BlockQ5_0x16, BlockQ5_0, DType::Q5_0, subs: 1, high: 1, split: false,
    { d: [u16; GROUP] });
coded_x16!(BlockQ5_1x16, BlockQ5_1, DType::Q5_1, subs: 1, high: 1, split: false,
    { d: [u16; GROUP], m: [u16; GROUP] });
coded_x16!(BlockQ4_Kx16, BlockQ4_K, DType::Q4_K, subs: 8, high: 0, split: false,
    { d: [u16; GROUP], dmin: [u16; GROUP], scales: [u8; 12 * GROUP] });
coded_x16!(BlockQ5_Kx16, BlockQ5_K, DType::Q5_K, subs: 8, high: 1, split: false,
    { d: [u16; GROUP], dmin: [u16; GROUP], scales: [u8; 12 * GROUP] });
coded_x16!(BlockQ6_Kx16, BlockQ6_K, DType::Q6_K, subs: 8, high: 2, split: true,
    { d: [u16; GROUP], scales: [i8; 16 * GROUP] });

/// The accessors every coded type shares.
macro_rules! coded_access {
    ($subs:expr, $hb:expr, $split:expr) => {
        const SUBS: usize = $subs;
        const HIGH_BITS: u32 = $hb;
        const SPLIT: bool = $split;
        fn codes(&self) -> &[u8] {
            &self.q
        }
        fn codes_mut(&mut self) -> &mut [u8] {
            &mut self.q
        }
    };
}

/// Both halves of sub-block `s` get `S = d` and `B = off(d, m)` per row.
fn legacy_scales(
    d: &[u16; GROUP],
    m: Option<&[u16; GROUP]>,
    off: impl Fn(f32, f32) -> f32,
    out: &mut SubScales,
) {
    for i in 0..GROUP {
        let (dv, mv) = (h(d[i]), m.map_or(0.0, |m| h(m[i])));
        for slot in 0..2 {
            out.s[slot][i] = dv;
            out.b[slot][i] = off(dv, mv);
        }
    }
}

impl CodedX16 for BlockQ4_1x16 {
    coded_access!(1, 0, false);
    fn set_row_scales(&mut self, i: usize, b: &BlockQ4_1) {
        (self.d[i], self.m[i]) = (b.d, b.m);
    }
    fn row_scales(&self, i: usize, b: &mut BlockQ4_1) {
        (b.d, b.m) = (self.d[i], self.m[i]);
    }
    fn scales(&self, out: &mut SubScales) {
        legacy_scales(&self.d, Some(&self.m), |_, m| m, out)
    }
}

impl CodedX16 for BlockQ5_0x16 {
    coded_access!(1, 1, false);
    fn set_row_scales(&mut self, i: usize, b: &BlockQ5_0) {
        self.d[i] = b.d;
    }
    fn row_scales(&self, i: usize, b: &mut BlockQ5_0) {
        b.d = self.d[i];
    }
    fn scales(&self, out: &mut SubScales) {
        legacy_scales(&self.d, None, |d, _| -16.0 * d, out)
    }
}

impl CodedX16 for BlockQ5_1x16 {
    coded_access!(1, 1, false);
    fn set_row_scales(&mut self, i: usize, b: &BlockQ5_1) {
        (self.d[i], self.m[i]) = (b.d, b.m);
    }
    fn row_scales(&self, i: usize, b: &mut BlockQ5_1) {
        (b.d, b.m) = (self.d[i], self.m[i]);
    }
    fn scales(&self, out: &mut SubScales) {
        legacy_scales(&self.d, Some(&self.m), |_, m| m, out)
    }
}

/// Q4_K/Q5_K: sub-block `j` of row `i` has `S = d·sc` and `B = −dmin·m`.
fn k4_scales(
    d: &[u16; GROUP],
    dmin: &[u16; GROUP],
    packed: &[u8; 12 * GROUP],
    out: &mut SubScales,
) {
    for i in 0..GROUP {
        let row: [u8; 12] = std::array::from_fn(|k| packed[GROUP * k + i]);
        let (dv, mv) = (h(d[i]), h(dmin[i]));
        for j in 0..8 {
            let (sc, m) = k_scale_min(j, &row);
            for slot in [2 * j, 2 * j + 1] {
                out.s[slot][i] = dv * sc as f32;
                out.b[slot][i] = -(mv * m as f32);
            }
        }
    }
}

macro_rules! k4_row_scales {
    ($native:ty) => {
        fn set_row_scales(&mut self, i: usize, b: &$native) {
            (self.d[i], self.dmin[i]) = (b.d, b.dmin);
            for k in 0..12 {
                self.scales[GROUP * k + i] = b.scales[k];
            }
        }
        fn row_scales(&self, i: usize, b: &mut $native) {
            (b.d, b.dmin) = (self.d[i], self.dmin[i]);
            for k in 0..12 {
                b.scales[k] = self.scales[GROUP * k + i];
            }
        }
        fn scales(&self, out: &mut SubScales) {
            k4_scales(&self.d, &self.dmin, &self.scales, out)
        }
    };
}

impl CodedX16 for BlockQ4_Kx16 {
    coded_access!(8, 0, false);
    k4_row_scales!(BlockQ4_K);
}

impl CodedX16 for BlockQ5_Kx16 {
    coded_access!(8, 1, false);
    k4_row_scales!(BlockQ5_K);
}

impl CodedX16 for BlockQ6_Kx16 {
    coded_access!(8, 2, true);
    fn set_row_scales(&mut self, i: usize, b: &BlockQ6_K) {
        self.d[i] = b.d;
        for k in 0..16 {
            self.scales[GROUP * k + i] = b.scales[k];
        }
    }
    fn row_scales(&self, i: usize, b: &mut BlockQ6_K) {
        b.d = self.d[i];
        for k in 0..16 {
            b.scales[k] = self.scales[GROUP * k + i];
        }
    }
    /// Slot `k` is Q6_K's 16-value sub-block `k`: `S = d·scales[k]`, `B = −32·S`.
    fn scales(&self, out: &mut SubScales) {
        for i in 0..GROUP {
            let dv = h(self.d[i]);
            for k in 0..16 {
                let s = dv * self.scales[GROUP * k + i] as f32;
                out.s[k][i] = s;
                out.b[k][i] = -32.0 * s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::native::tests::random_block;

    fn check<B: CodedX16 + std::fmt::Debug>(nb: usize, zero: B) {
        let rows: Vec<B::Plain> = (0..GROUP * nb)
            .map(|r| random_block::<B::Plain>(r as u64 * 31 + nb as u64))
            .collect();
        let mut sbs = vec![zero; nb];
        B::interleave(&rows, &mut sbs);
        let n = B::Plain::N;
        let mut sc = SubScales::ZERO;
        for (b, sb) in sbs.iter().enumerate() {
            sb.scales(&mut sc);
            for i in 0..GROUP {
                let native = &rows[i * nb + b];
                // Byte for byte what was imported.
                assert_eq!(block_bytes(&[sb.row_native(i)]), block_bytes(&[*native]));
                // S·code + B equals the reference dequantizer's value (where finite: the
                // random f16 scales include NaN and inf patterns).
                let mut want = vec![0.0f32; n];
                crate::gguf::dequantize(B::Plain::GGML, block_bytes(&[*native]), &mut want)
                    .unwrap();
                let mut codes = vec![0u8; n];
                native.codes(&mut codes);
                for (k, (&w, &c)) in want.iter().zip(&codes).enumerate() {
                    let slot = k / 16;
                    let got = sc.s[slot][i] * c as f32 + sc.b[slot][i];
                    if w.is_finite() && got.is_finite() {
                        let tol = 1e-6 * (sc.s[slot][i].abs() * 64.0 + sc.b[slot][i].abs());
                        assert!((got - w).abs() <= tol, "{:?} row {i} value {k}", B::DTYPE);
                    }
                }
            }
        }
    }

    #[test]
    fn coded_superblocks_are_lossless_and_scales_match_the_reference() {
        check(3, BlockQ4_1x16::ZERO);
        check(3, BlockQ5_0x16::ZERO);
        check(2, BlockQ5_1x16::ZERO);
        check(2, BlockQ4_Kx16::ZERO);
        check(1, BlockQ5_Kx16::ZERO);
        check(2, BlockQ6_Kx16::ZERO);
    }
}
