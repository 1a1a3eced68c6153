//! ggml's row-major blocks of the types llq imports from GGUF files without a second
//! rounding: Q4_1, Q5_0, Q5_1 (32 weights) and the K-quants Q4_K, Q5_K, Q6_K (256-weight
//! super-blocks). Byte layouts are exactly ggml's (`ggml-common.h`), so a GGUF tensor's
//! bytes are viewed as these structs in place.
//!
//! What llq needs of them is the *codes*: every weight of these types is `S · code + B`
//! with an unsigned integer code (4, 5 or 6 bits) and a per-(sub-)block scale `S` and
//! offset `B`. [`NativeBlock::codes`] takes the codes out, [`NativeBlock::set_codes`] puts
//! them back; the `rows16` superblocks of `quant::kx16` store the same codes interleaved
//! and the scale fields as they are, so import and export are exact byte for byte.

use super::Block;
use crate::gguf::GgmlType;

/// A ggml block type whose values are unsigned codes plus scale fields.
pub trait NativeBlock: Block + Default {
    /// Weights per block.
    const N: usize;
    /// Bits of each code above its low nibble (0, 1 or 2).
    const HIGH_BITS: u32;
    /// The GGUF type id, whose reference dequantizer (`gguf::dequant`) decodes the block.
    const GGML: GgmlType;
    /// The `N` codes, in weight order.
    fn codes(&self, out: &mut [u8]);
    /// Store `N` codes (each below `1 << (4 + HIGH_BITS)`), leaving the scale fields.
    fn set_codes(&mut self, codes: &[u8]);
}

/// block_q4_1 { f16 d; f16 m; u8 qs[16] }: `y = d · q + m`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: u16,
    pub m: u16,
    pub qs: [u8; 16],
}

/// block_q5_0 { f16 d; u8 qh[4]; u8 qs[16] }: `y = d · (q − 16)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: u16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

/// block_q5_1 { f16 d; f16 m; u8 qh[4]; u8 qs[16] }: `y = d · q + m`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct BlockQ5_1 {
    pub d: u16,
    pub m: u16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

/// block_q4_K { f16 d; f16 dmin; u8 scales[12]; u8 qs[128] }: 8 sub-blocks of 32 with
/// 6-bit scale and min each (packed, see [`k_scale_min`]): `y = d·sc · q − dmin·m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct BlockQ4_K {
    pub d: u16,
    pub dmin: u16,
    pub scales: [u8; 12],
    pub qs: [u8; 128],
}

/// block_q5_K: Q4_K with a fifth bit per weight in `qh`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct BlockQ5_K {
    pub d: u16,
    pub dmin: u16,
    pub scales: [u8; 12],
    pub qh: [u8; 32],
    pub qs: [u8; 128],
}

/// block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d }: 16 sub-blocks of 16,
/// `y = d·scales[k] · (q − 32)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct BlockQ6_K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    pub d: u16,
}

const _: () = {
    assert!(std::mem::size_of::<BlockQ4_1>() == 20);
    assert!(std::mem::size_of::<BlockQ5_0>() == 22);
    assert!(std::mem::size_of::<BlockQ5_1>() == 24);
    assert!(std::mem::size_of::<BlockQ4_K>() == 144);
    assert!(std::mem::size_of::<BlockQ5_K>() == 176);
    assert!(std::mem::size_of::<BlockQ6_K>() == 210);
};

// SAFETY (all six): repr(C), integer fields only, no padding (sizes asserted above equal
// the sums of the fields).
unsafe impl Block for BlockQ4_1 {}
// SAFETY: as above.
unsafe impl Block for BlockQ5_0 {}
// SAFETY: as above.
unsafe impl Block for BlockQ5_1 {}
// SAFETY: as above.
unsafe impl Block for BlockQ4_K {}
// SAFETY: as above.
unsafe impl Block for BlockQ5_K {}
// SAFETY: as above.
unsafe impl Block for BlockQ6_K {}

impl Default for BlockQ4_K {
    fn default() -> Self {
        BlockQ4_K {
            d: 0,
            dmin: 0,
            scales: [0; 12],
            qs: [0; 128],
        }
    }
}

impl Default for BlockQ5_K {
    fn default() -> Self {
        BlockQ5_K {
            d: 0,
            dmin: 0,
            scales: [0; 12],
            qh: [0; 32],
            qs: [0; 128],
        }
    }
}

impl Default for BlockQ6_K {
    fn default() -> Self {
        BlockQ6_K {
            ql: [0; 128],
            qh: [0; 64],
            scales: [0; 16],
            d: 0,
        }
    }
}

/// Scale and min (6 bits each) of sub-block `j` (< 8) of a Q4_K/Q5_K block from its 12
/// packed bytes: sub-blocks 0–3 in the low 6 bits of bytes `j` and `j + 4`; 4–7 in the
/// nibbles of byte `j + 4` with their top 2 bits in the spare bits of bytes `j − 4`, `j`.
pub fn k_scale_min(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// 32 codes stored as 16 bytes of nibbles (value `j` low, `j + 16` high) and 32 fifth
/// bits in a little-endian u32 (bit `j` for value `j`): Q4_1 (no `qh`), Q5_0, Q5_1.
fn codes32(qs: &[u8; 16], qh: Option<u32>, out: &mut [u8]) {
    for j in 0..16 {
        out[j] = qs[j] & 0x0F;
        out[j + 16] = qs[j] >> 4;
    }
    if let Some(qh) = qh {
        for (j, o) in out[..32].iter_mut().enumerate() {
            *o |= (((qh >> j) & 1) as u8) << 4;
        }
    }
}

fn set_codes32(codes: &[u8], qs: &mut [u8; 16]) -> u32 {
    let mut qh = 0u32;
    for j in 0..16 {
        qs[j] = (codes[j] & 0x0F) | ((codes[j + 16] & 0x0F) << 4);
    }
    for (j, &c) in codes[..32].iter().enumerate() {
        qh |= (((c >> 4) & 1) as u32) << j;
    }
    qh
}

impl NativeBlock for BlockQ4_1 {
    const N: usize = 32;
    const HIGH_BITS: u32 = 0;
    const GGML: GgmlType = GgmlType::Q4_1;
    fn codes(&self, out: &mut [u8]) {
        codes32(&self.qs, None, out)
    }
    fn set_codes(&mut self, codes: &[u8]) {
        set_codes32(codes, &mut self.qs);
    }
}

impl NativeBlock for BlockQ5_0 {
    const N: usize = 32;
    const HIGH_BITS: u32 = 1;
    const GGML: GgmlType = GgmlType::Q5_0;
    fn codes(&self, out: &mut [u8]) {
        codes32(&self.qs, Some(u32::from_le_bytes(self.qh)), out)
    }
    fn set_codes(&mut self, codes: &[u8]) {
        self.qh = set_codes32(codes, &mut self.qs).to_le_bytes();
    }
}

impl NativeBlock for BlockQ5_1 {
    const N: usize = 32;
    const HIGH_BITS: u32 = 1;
    const GGML: GgmlType = GgmlType::Q5_1;
    fn codes(&self, out: &mut [u8]) {
        codes32(&self.qs, Some(u32::from_le_bytes(self.qh)), out)
    }
    fn set_codes(&mut self, codes: &[u8]) {
        self.qh = set_codes32(codes, &mut self.qs).to_le_bytes();
    }
}

/// Q4_K/Q5_K nibbles: sub-block `j`'s value `l` is nibble `j % 2` of `qs[32·(j/2) + l]`.
fn k4_codes(qs: &[u8; 128], out: &mut [u8]) {
    for j in 0..8 {
        let (q, shift) = (&qs[32 * (j / 2)..][..32], 4 * (j % 2));
        for l in 0..32 {
            out[32 * j + l] = (q[l] >> shift) & 0x0F;
        }
    }
}

fn set_k4_codes(codes: &[u8], qs: &mut [u8; 128]) {
    for p in 0..4 {
        for l in 0..32 {
            qs[32 * p + l] = (codes[64 * p + l] & 0x0F) | ((codes[64 * p + 32 + l] & 0x0F) << 4);
        }
    }
}

impl NativeBlock for BlockQ4_K {
    const N: usize = 256;
    const HIGH_BITS: u32 = 0;
    const GGML: GgmlType = GgmlType::Q4_K;
    fn codes(&self, out: &mut [u8]) {
        k4_codes(&self.qs, out)
    }
    fn set_codes(&mut self, codes: &[u8]) {
        set_k4_codes(codes, &mut self.qs)
    }
}

/// Q5_K's fifth bits: bit `j` of `qh[l]` for value `l` of sub-block `j`.
impl NativeBlock for BlockQ5_K {
    const N: usize = 256;
    const HIGH_BITS: u32 = 1;
    const GGML: GgmlType = GgmlType::Q5_K;
    fn codes(&self, out: &mut [u8]) {
        k4_codes(&self.qs, out);
        for j in 0..8 {
            for l in 0..32 {
                out[32 * j + l] |= ((self.qh[l] >> j) & 1) << 4;
            }
        }
    }
    fn set_codes(&mut self, codes: &[u8]) {
        set_k4_codes(codes, &mut self.qs);
        self.qh = [0; 32];
        for j in 0..8 {
            for l in 0..32 {
                self.qh[l] |= ((codes[32 * j + l] >> 4) & 1) << j;
            }
        }
    }
}

/// Q6_K: value `i = 128h + 32p + l` (`p < 4`, `l < 32`) has its low 4 bits in nibble
/// `p / 2` of `ql[64h + 32·(p % 2) + l]` and its top 2 bits at bit `2p` of `qh[32h + l]`.
impl NativeBlock for BlockQ6_K {
    const N: usize = 256;
    const HIGH_BITS: u32 = 2;
    const GGML: GgmlType = GgmlType::Q6_K;
    fn codes(&self, out: &mut [u8]) {
        for (i, o) in out[..256].iter_mut().enumerate() {
            let (h, p, l) = (i / 128, (i % 128) / 32, i % 32);
            let lo = (self.ql[64 * h + 32 * (p % 2) + l] >> (4 * (p / 2))) & 0x0F;
            let hi = (self.qh[32 * h + l] >> (2 * p)) & 3;
            *o = lo | (hi << 4);
        }
    }
    fn set_codes(&mut self, codes: &[u8]) {
        self.ql = [0; 128];
        self.qh = [0; 64];
        for (i, &c) in codes[..256].iter().enumerate() {
            let (h, p, l) = (i / 128, (i % 128) / 32, i % 32);
            self.ql[64 * h + 32 * (p % 2) + l] |= (c & 0x0F) << (4 * (p / 2));
            self.qh[32 * h + l] |= ((c >> 4) & 3) << (2 * p);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::quant::block_bytes;

    /// Random bytes for a block (any bit pattern is a valid block).
    pub(crate) fn random_block<B: NativeBlock>(seed: u64) -> B {
        let mut b = B::default();
        let bytes = unsafe_bytes_mut(&mut b);
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for x in bytes.iter_mut() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            *x = s as u8;
        }
        b
    }

    fn unsafe_bytes_mut<B: Block>(b: &mut B) -> &mut [u8] {
        // SAFETY: `Block` types have no padding and accept every bit pattern.
        unsafe {
            std::slice::from_raw_parts_mut((b as *mut B).cast::<u8>(), std::mem::size_of::<B>())
        }
    }

    fn round_trip<B: NativeBlock + std::fmt::Debug + PartialEq>() {
        for seed in 0..50 {
            let b: B = random_block(seed);
            let mut codes = vec![0u8; B::N];
            b.codes(&mut codes);
            assert!(codes.iter().all(|&c| c < 1 << (4 + B::HIGH_BITS)));
            let mut c = b;
            c.set_codes(&vec![0u8; B::N]);
            c.set_codes(&codes);
            assert_eq!(block_bytes(&[c]), block_bytes(&[b]), "{:?}", B::GGML);
        }
    }

    #[test]
    fn codes_round_trip_byte_for_byte() {
        round_trip::<BlockQ4_1>();
        round_trip::<BlockQ5_0>();
        round_trip::<BlockQ5_1>();
        round_trip::<BlockQ4_K>();
        round_trip::<BlockQ5_K>();
        round_trip::<BlockQ6_K>();
    }
}
