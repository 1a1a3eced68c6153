//! The `rows16` layout: quantized matrices stored as groups of 16 rows interleaved in
//! 4-byte chunks, and the activation blocks the kernels multiply them with.
//!
//! Why: with rows interleaved, one SIMD register holds 4 consecutive weights of 16 (x86
//! zmm), 8 (ymm) or 4 (NEON q) different rows, so a dot-product instruction that sums
//! groups of 4 bytes per 32-bit lane (`vpdpbusd`, `sdot`) against 4 activation bytes
//! broadcast to every lane yields one finished partial sum per *row*. No horizontal
//! reductions, no shuffles, every multiply useful; the same weights serve every token of a
//! prompt tile. llama.cpp gets there by repacking Q4_0 at load time (a second copy in
//! RAM); llq's converter writes the file in this order and the runtime maps it as is.
//!
//! A *superblock* covers 16 rows × 32 columns (one Q8_0/Q4_0 block of each row):
//! * [`BlockQ8_0x16`]: the 16 f16 scales, then 8 chunks of 64 bytes; chunk `c` holds
//!   row `i`'s values `4c..4c+4` at bytes `64c + 4i ..`.
//! * [`BlockQ4_0x16`]: the 16 f16 scales, then 4 chunks of 64 bytes; byte `64c + 4i + b`
//!   is byte `4c + b` of row `i`'s Q4_0 block, so its low nibble is value `4c + b` and
//!   its high nibble value `16 + 4c + b`: masking a 64-byte chunk gives chunk `c`, shifting
//!   it gives chunk `c + 4`.
//!
//! Superblocks are the same size as 16 blocks (544 and 288 bytes, both multiples of 32),
//! so a `rows16` tensor has exactly the byte size of its row-major twin. Group `g` (rows
//! `16g..16g+16`) is `nb = cols / 32` consecutive superblocks.

use super::{dequantize_row_q4_0, dequantize_row_q8_0, Block, BlockQ4_0, BlockQ8_0, DType, QK};

/// Rows per interleaved group.
pub const GROUP: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8_0x16 {
    /// Scales of the 16 rows, f16 bits.
    pub d: [u16; GROUP],
    pub qs: [i8; GROUP * QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0x16>() == 16 * 34);

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ4_0x16 {
    /// Scales of the 16 rows, f16 bits.
    pub d: [u16; GROUP],
    pub qs: [u8; GROUP * QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0x16>() == 16 * 18);

// SAFETY: repr(C), integer fields only, no padding (sizes asserted above).
unsafe impl Block for BlockQ8_0x16 {}
// SAFETY: as above.
unsafe impl Block for BlockQ4_0x16 {}

/// One block of 32 activations quantized to int8 for the `rows16` kernels: Q8_0's values
/// with the scale as f32 (what the kernels multiply with) and the sums of the values
/// `0..16` and `16..32`, which turn a product with *unsigned* weights `u = w + off` back
/// into the signed one: `Σ w·x = Σ u·x − off·sum` (halves for Q6_K, whose halves have
/// scales of their own). Values are in −127..=127 (never −128), so a half sums to at most
/// 16 · 127 in magnitude.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct ActQ8 {
    pub d: f32,
    pub sums: [i16; 2],
    pub qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<ActQ8>() == 40);
// SAFETY: repr(C), integer and float fields only, no padding (size asserted).
unsafe impl Block for ActQ8 {}

impl ActQ8 {
    pub const ZERO: ActQ8 = ActQ8 {
        d: 0.0,
        sums: [0; 2],
        qs: [0; QK],
    };

    /// Sum of all 32 values.
    #[inline(always)]
    pub fn sum(&self) -> i32 {
        self.sums[0] as i32 + self.sums[1] as i32
    }

    /// The two 16-column sums `(Σx₀, Σx₁)` as the i16 pair of one 32-bit lane (low half
    /// first), the operand of a `vpmaddwd` against per-half factors.
    #[inline(always)]
    pub fn sum_pair(&self) -> i32 {
        (self.sums[0] as u16 as u32 | (self.sums[1] as u16 as u32) << 16) as i32
    }

    /// The same numbers as a Q8_0 block (the scale rounded to f16 as Q8_0 stores it, so
    /// every kernel level agrees with the reference quantizer bit for bit).
    pub fn from_q8_0(b: &BlockQ8_0) -> ActQ8 {
        ActQ8 {
            d: b.scale(),
            sums: [0, 1].map(|h| b.qs[16 * h..16 * h + 16].iter().map(|&q| q as i16).sum()),
            qs: b.qs,
        }
    }
}

/// Offset in a superblock's value bytes of row `i`, column `k` (`k < 32`) for Q8_0.
#[inline]
pub fn q8_index(i: usize, k: usize) -> usize {
    (k / 4) * 64 + i * 4 + k % 4
}

/// Byte of row `i` holding Q4_0 value `k` (low nibble if `k < 16`, else high nibble).
#[inline]
pub fn q4_index(i: usize, k: usize) -> usize {
    let k = k % 16;
    (k / 4) * 64 + i * 4 + k % 4
}

/// Interleave 16 rows of `nb` Q8_0 blocks each (`rows[i * nb + b]`) into `nb` superblocks.
pub fn interleave_q8_0(rows: &[BlockQ8_0], out: &mut [BlockQ8_0x16]) {
    let nb = out.len();
    assert_eq!(
        rows.len(),
        GROUP * nb,
        "interleave_q8_0: need 16 rows of nb blocks"
    );
    for (b, sb) in out.iter_mut().enumerate() {
        for i in 0..GROUP {
            let blk = &rows[i * nb + b];
            sb.d[i] = blk.d;
            for k in 0..QK {
                sb.qs[q8_index(i, k)] = blk.qs[k];
            }
        }
    }
}

/// Interleave 16 rows of `nb` Q4_0 blocks each (`rows[i * nb + b]`) into `nb` superblocks.
pub fn interleave_q4_0(rows: &[BlockQ4_0], out: &mut [BlockQ4_0x16]) {
    let nb = out.len();
    assert_eq!(
        rows.len(),
        GROUP * nb,
        "interleave_q4_0: need 16 rows of nb blocks"
    );
    for (b, sb) in out.iter_mut().enumerate() {
        for i in 0..GROUP {
            let blk = &rows[i * nb + b];
            sb.d[i] = blk.d;
            for j in 0..QK / 2 {
                sb.qs[q4_index(i, j)] = blk.qs[j];
            }
        }
    }
}

/// Row `i` (< 16) of a group's superblock `sb` as a plain Q8_0 block.
pub fn q8_0_row_block(sb: &BlockQ8_0x16, i: usize) -> BlockQ8_0 {
    BlockQ8_0 {
        d: sb.d[i],
        qs: std::array::from_fn(|k| sb.qs[q8_index(i, k)]),
    }
}

/// Row `i` (< 16) of a group's superblock `sb` as a plain Q4_0 block.
pub fn q4_0_row_block(sb: &BlockQ4_0x16, i: usize) -> BlockQ4_0 {
    BlockQ4_0 {
        d: sb.d[i],
        qs: std::array::from_fn(|j| sb.qs[q4_index(i, j)]),
    }
}

/// A superblock type of the `rows16` layout: what code generic over the interleaved
/// weight kinds (decoding a row, encoding a matrix) needs to know about it.
pub trait Interleaved: Block {
    /// The row-major block type a superblock holds 16 of (one per row).
    type Plain: Block;
    /// How each row is encoded.
    const DTYPE: DType;
    /// Columns of each row a superblock covers.
    const COLS: usize = QK;
    /// Interleave groups of 16 rows of `nb` plain blocks each (row by row) into `nb`
    /// superblocks per group.
    fn interleave(rows: &[Self::Plain], out: &mut [Self]);
    /// Decode row `i`'s [`Interleaved::COLS`] values of this superblock into `out`.
    fn dequantize_row(&self, i: usize, out: &mut [f32]);
}

impl Interleaved for BlockQ8_0x16 {
    type Plain = BlockQ8_0;
    const DTYPE: DType = DType::Q8_0;
    fn interleave(rows: &[BlockQ8_0], out: &mut [Self]) {
        interleave_q8_0(rows, out)
    }
    fn dequantize_row(&self, i: usize, out: &mut [f32]) {
        dequantize_row_q8_0(&[q8_0_row_block(self, i)], out)
    }
}

impl Interleaved for BlockQ4_0x16 {
    type Plain = BlockQ4_0;
    const DTYPE: DType = DType::Q4_0;
    fn interleave(rows: &[BlockQ4_0], out: &mut [Self]) {
        interleave_q4_0(rows, out)
    }
    fn dequantize_row(&self, i: usize, out: &mut [f32]) {
        dequantize_row_q4_0(&[q4_0_row_block(self, i)], out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleave_round_trips_and_matches_the_documented_offsets() {
        let nb = 3;
        let q8: Vec<BlockQ8_0> = (0..GROUP * nb)
            .map(|r| BlockQ8_0 {
                d: r as u16,
                qs: std::array::from_fn(|k| (r * 7 + k * 3) as i8),
            })
            .collect();
        let mut sb = vec![
            BlockQ8_0x16 {
                d: [0; GROUP],
                qs: [0; GROUP * QK]
            };
            nb
        ];
        interleave_q8_0(&q8, &mut sb);
        for i in 0..GROUP {
            for b in 0..nb {
                assert_eq!(q8_0_row_block(&sb[b], i), q8[i * nb + b]);
            }
        }
        // Chunk 1 of row 2 starts at byte 64 + 8.
        assert_eq!(sb[0].qs[72], q8[2 * nb].qs[4]);

        let q4: Vec<BlockQ4_0> = (0..GROUP * nb)
            .map(|r| BlockQ4_0 {
                d: r as u16,
                qs: std::array::from_fn(|k| (r * 5 + k * 11) as u8),
            })
            .collect();
        let mut sb4 = vec![
            BlockQ4_0x16 {
                d: [0; GROUP],
                qs: [0; GROUP * QK / 2]
            };
            nb
        ];
        interleave_q4_0(&q4, &mut sb4);
        for i in 0..GROUP {
            for b in 0..nb {
                assert_eq!(q4_0_row_block(&sb4[b], i), q4[i * nb + b]);
            }
        }
        assert_eq!(sb4[1].qs[64 * 3 + 4 * 15 + 3], q4[15 * nb + 1].qs[15]);
    }

    #[test]
    fn activation_block_sums_its_values() {
        let b = BlockQ8_0 {
            d: half::f16::from_f32(0.5).to_bits(),
            qs: std::array::from_fn(|k| k as i8 - 16),
        };
        let a = ActQ8::from_q8_0(&b);
        assert_eq!(a.d, 0.5);
        assert_eq!(a.sum(), (0..32).map(|k| k - 16).sum::<i32>());
        assert_eq!(a.qs, b.qs);
    }
}
