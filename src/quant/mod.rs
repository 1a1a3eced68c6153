//! Tensor storage types and their reference (scalar) block math.
//!
//! The block layouts are llama.cpp's so numbers can be compared 1:1:
//! Q8_0 = 32 weights, one f16 scale, 32 × i8 (34 bytes);
//! Q4_0 = 32 weights, one f16 scale, 16 bytes of nibbles offset by 8 (18 bytes).
//! Functions here are the *reference*: SIMD kernels are tested against them.

mod affine_batch;
pub mod interleave;
pub mod kq_encode;
pub mod kx16;
mod lanes;
pub mod native;
mod q4_0;
mod q8_0;
pub mod search;
mod sym_batch;
mod weight;

pub use q4_0::{
    block_q4_0_weighted, dequantize_row_q4_0, quantize_row_q4_0, quantize_row_q4_0_search,
    quantize_row_q4_0_weighted, BlockQ4_0,
};
pub use q8_0::{
    block_q8_0_weighted, dequantize_row_q8_0, quantize_act_q8_0, quantize_row_q8_0,
    quantize_row_q8_0_weighted, BlockQ8_0,
};

pub use weight::{WeightKind, WeightView};

use half::f16;

use crate::gguf::GgmlType;

/// Elements per quantization block (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1).
pub const QK: usize = 32;
/// Elements per K-quant super-block (Q4_K, Q5_K, Q6_K).
pub const QK_K: usize = 256;

/// How a tensor's elements are stored in a `.llq` file. The numeric values are part of
/// the file format (docs/FORMAT.md) and never change meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)] // ggml's names, as users know them
#[repr(u32)]
pub enum DType {
    F32 = 0,
    F16 = 1,
    Q8_0 = 2,
    Q4_0 = 3,
    Q4_1 = 4,
    Q5_0 = 5,
    Q5_1 = 6,
    Q4_K = 7,
    Q5_K = 8,
    Q6_K = 9,
}

impl DType {
    pub const ALL: [DType; 10] = [
        DType::F32,
        DType::F16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
    ];

    /// The ggml type with the same block layout (every llq dtype has one).
    pub fn ggml(self) -> GgmlType {
        match self {
            DType::F32 => GgmlType::F32,
            DType::F16 => GgmlType::F16,
            DType::Q8_0 => GgmlType::Q8_0,
            DType::Q4_0 => GgmlType::Q4_0,
            DType::Q4_1 => GgmlType::Q4_1,
            DType::Q5_0 => GgmlType::Q5_0,
            DType::Q5_1 => GgmlType::Q5_1,
            DType::Q4_K => GgmlType::Q4_K,
            DType::Q5_K => GgmlType::Q5_K,
            DType::Q6_K => GgmlType::Q6_K,
        }
    }

    /// The llq dtype storing ggml type `t` as it is, if there is one (what a GGUF import
    /// keeps without a second rounding).
    pub fn from_ggml(t: GgmlType) -> Option<DType> {
        Self::ALL.into_iter().find(|d| d.ggml() == t)
    }

    pub fn from_u32(v: u32) -> Option<DType> {
        Self::ALL.into_iter().find(|d| *d as u32 == v)
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Q8_0 => "q8_0",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
            DType::Q5_0 => "q5_0",
            DType::Q5_1 => "q5_1",
            DType::Q4_K => "q4_k",
            DType::Q5_K => "q5_k",
            DType::Q6_K => "q6_k",
        }
    }

    pub fn from_name(s: &str) -> Option<DType> {
        Self::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(s))
    }

    /// Elements per block (1 for plain floats).
    pub fn block_elems(self) -> usize {
        match self {
            DType::F32 | DType::F16 => 1,
            DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 => QK,
            DType::Q4_K | DType::Q5_K | DType::Q6_K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
            DType::Q8_0 => std::mem::size_of::<BlockQ8_0>(),
            DType::Q4_0 => std::mem::size_of::<BlockQ4_0>(),
            DType::Q4_1 => std::mem::size_of::<native::BlockQ4_1>(),
            DType::Q5_0 => std::mem::size_of::<native::BlockQ5_0>(),
            DType::Q5_1 => std::mem::size_of::<native::BlockQ5_1>(),
            DType::Q4_K => std::mem::size_of::<native::BlockQ4_K>(),
            DType::Q5_K => std::mem::size_of::<native::BlockQ5_K>(),
            DType::Q6_K => std::mem::size_of::<native::BlockQ6_K>(),
        }
    }

    pub fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// Bytes needed for a row of `n` elements, or `None` if `n` is not a whole number
    /// of blocks or the size overflows.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_elems()) {
            return None;
        }
        (n / self.block_elems()).checked_mul(self.block_bytes())
    }

    /// Bits per weight, scales included.
    pub fn bits_per_weight(self) -> f64 {
        self.block_bytes() as f64 * 8.0 / self.block_elems() as f64
    }
}

/// Encode a row of f32 into `dtype` with llama.cpp's reference math (used for
/// activations-style quantization and tests). `out` must be exactly
/// `dtype.row_bytes(src.len())` long. The converter uses [`quantize_row_best`].
pub fn quantize_row(dtype: DType, src: &[f32], out: &mut [u8]) {
    assert_eq!(Some(out.len()), dtype.row_bytes(src.len()));
    match dtype {
        DType::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(src) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        DType::F16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(src) {
                o.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
            }
        }
        DType::Q8_0 => quantize_row_q8_0(src, blocks_mut(out)),
        DType::Q4_0 => quantize_row_q4_0(src, blocks_mut(out)),
        // The coded types have no simpler reference rounding in llq: their encoder.
        _ => quantize_row_weighted(dtype, src, None, out),
    }
}

/// Encode weights as well as the format allows, with no importance known:
/// [`quantize_row_weighted`] without weights.
pub fn quantize_row_best(dtype: DType, src: &[f32], out: &mut [u8]) {
    quantize_row_weighted(dtype, src, None, out)
}

/// Encode a row of weights minimising the weighted squared error Σ w_j (x_j − x̂_j)²,
/// where `weights` (one per element, non-negative) says how much each element's error
/// matters: for a matrix row, how large the input feeding column j tends to be. `None`:
/// each block's data-free weights (`search::data_free_weights` for the symmetric types,
/// their own for the K-quants and Q4_1/Q5_1). Q4_0 and Q8_0 search each block's scale and codes
/// ([`quantize_row_q4_0_weighted`], [`quantize_row_q8_0_weighted`]); F32/F16 are exact
/// up to rounding and ignore the weights.
pub fn quantize_row_weighted(dtype: DType, src: &[f32], weights: Option<&[f32]>, out: &mut [u8]) {
    if let Some(w) = weights {
        assert_eq!(w.len(), src.len(), "one weight per element");
    }
    quantize_rows_weighted(dtype, src, weights, out)
}

/// [`quantize_row_weighted`] for rows laid end to end in `src` (a matrix, or part of one):
/// `weights`, if given, holds one weight per column and its length is the row length;
/// without weights the rows are one long row (blocks are independent). Encoders that
/// work on several blocks at a time fill their lanes across row ends.
pub fn quantize_rows_weighted(dtype: DType, src: &[f32], weights: Option<&[f32]>, out: &mut [u8]) {
    assert_eq!(Some(out.len()), dtype.row_bytes(src.len()));
    if let Some(w) = weights {
        assert!(
            dtype.row_bytes(w.len()).is_some_and(|b| b > 0) && src.len().is_multiple_of(w.len()),
            "one weight per column of whole-block rows"
        );
    }
    (crate::kernels::kernels().encode_rows)(dtype, src, weights, out)
}

/// The reference of [`crate::kernels::Kernels::encode_rows`]: [`quantize_rows_weighted`]'s
/// work, inlined into each level's table entry with the search below it (so the scalar
/// glue of the search is vectorised for that level too). Lengths as
/// [`quantize_rows_weighted`] checks them.
#[inline(always)]
pub fn encode_rows(dtype: DType, src: &[f32], weights: Option<&[f32]>, out: &mut [u8]) {
    match dtype {
        _ if src.is_empty() => {}
        // Sixteen blocks at a time, one per vector lane, across row ends.
        DType::Q8_0 => q8_0::quantize_rows_q8_0_weighted(src, weights, blocks_mut(out)),
        DType::Q4_0 => q4_0::quantize_rows_q4_0_weighted(src, weights, blocks_mut(out)),
        DType::Q5_0 => kq_encode::quantize_rows_q5_0(src, weights, out),
        DType::Q4_1 => affine_batch::quantize_rows(src, weights, 15, out),
        DType::Q5_1 => affine_batch::quantize_rows(src, weights, 31, out),
        DType::F32 | DType::F16 => quantize_row(dtype, src, out),
        DType::Q4_K => kq_rows(kq_encode::KqType::Q4_K, src, weights, out),
        DType::Q5_K => kq_rows(kq_encode::KqType::Q5_K, src, weights, out),
        DType::Q6_K => kq_rows(kq_encode::KqType::Q6_K, src, weights, out),
    }
}

/// [`encode_rows`] for the K-quants: block by block, row by row (their encoder takes one
/// weight per element). A function, not a closure: closures were left out of line,
/// compiled for the baseline instead of the kernel table's level.
#[inline(always)]
fn kq_rows(ty: kq_encode::KqType, src: &[f32], weights: Option<&[f32]>, out: &mut [u8]) {
    let cols = weights.map_or(src.len(), <[f32]>::len);
    let row_bytes = ty.row_bytes(cols).expect("whole-block rows");
    for (x, o) in src.chunks_exact(cols).zip(out.chunks_exact_mut(row_bytes)) {
        kq_encode::quantize_row(ty, x, weights, o);
    }
}

/// Decode a row stored as `dtype` into f32. `out.len()` gives the element count.
pub fn dequantize_row(dtype: DType, src: &[u8], out: &mut [f32]) {
    assert_eq!(Some(src.len()), dtype.row_bytes(out.len()));
    match dtype {
        DType::F32 => {
            for (o, b) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        DType::F16 => {
            for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        DType::Q8_0 => dequantize_row_q8_0(blocks(src), out),
        DType::Q4_0 => dequantize_row_q4_0(blocks(src), out),
        _ => crate::gguf::dequantize(dtype.ggml(), src, out).expect("lengths checked above"),
    }
}

/// A plain-old-data block type that may be viewed in place over bytes.
///
/// # Safety
/// Implementors must be `#[repr(C)]`, contain only integer fields (every bit pattern
/// valid), and have no padding.
pub unsafe trait Block: Copy + 'static {}

/// How many `T` blocks `len` bytes at `ptr` hold. Panics if `len` is not a whole number
/// of blocks or `ptr` is not aligned for `T`.
fn block_count<T: Block>(ptr: *const u8, len: usize) -> usize {
    let size = std::mem::size_of::<T>();
    assert_eq!(len % size, 0, "byte length is not a whole number of blocks");
    assert_eq!(
        ptr.align_offset(std::mem::align_of::<T>()),
        0,
        "misaligned block data"
    );
    len / size
}

/// View bytes as blocks. Panics if the length is not a whole number of blocks or the
/// slice is not aligned for `T` (the `.llq` reader guarantees 64-byte aligned tensors).
pub fn blocks<T: Block>(bytes: &[u8]) -> &[T] {
    let n = block_count::<T>(bytes.as_ptr(), bytes.len());
    // SAFETY: `block_count` checked length and alignment, and `Block` guarantees that
    // every bit pattern is a valid `T` with no padding.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), n) }
}

/// Mutable twin of [`blocks`].
pub fn blocks_mut<T: Block>(bytes: &mut [u8]) -> &mut [T] {
    let n = block_count::<T>(bytes.as_ptr(), bytes.len());
    // SAFETY: as in `blocks`; the exclusive borrow of `bytes` is carried over.
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<T>(), n) }
}

/// View blocks as their bytes (for writing them to a file).
pub fn block_bytes<T: Block>(blocks: &[T]) -> &[u8] {
    // SAFETY: `Block` types have no padding, so every byte is initialised.
    unsafe {
        std::slice::from_raw_parts(blocks.as_ptr().cast::<u8>(), std::mem::size_of_val(blocks))
    }
}

// SAFETY: plain IEEE floats: no padding, every bit pattern is a valid value.
unsafe impl Block for f32 {}
// SAFETY: `half::f16` is a transparent u16: no padding, every bit pattern valid.
unsafe impl Block for half::f16 {}

#[cfg(target_endian = "big")]
compile_error!(
    "llq files are little-endian and are mapped in place: big-endian targets are not supported"
);
