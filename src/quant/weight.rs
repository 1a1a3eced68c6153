//! The weight kinds llq computes with, and [`WeightView`], one weight matrix borrowed from
//! the mapped file. The kernels see weights only through these types, never the file
//! format; `crate::format` maps each kind to and from the (dtype, layout) codes it stores.

use super::interleave::{BlockQ4_0x16, BlockQ8_0x16, Interleaved, GROUP};
use super::kx16::{
    BlockQ4_1x16, BlockQ4_Kx16, BlockQ5_0x16, BlockQ5_1x16, BlockQ5_Kx16, BlockQ6_Kx16,
};
use super::{blocks, dequantize_row, DType};

/// How a weight tensor is stored: element encoding and row order together, one variant
/// per combination that exists (floats row-major, quantized types interleaved by 16 rows
/// for the group kernels), so code that handles weights matches on the kinds it can meet
/// and nothing else.
///
/// Adding a kind (e.g. Q4_K in groups of 16): a variant here and its arms in
/// [`WeightKind::dtype`], [`WeightKind::interleaved`] and [`WeightView::dequantize_row`];
/// its superblock type with [`Interleaved`]; its group kernel in `kernels::Kernels` and
/// `kernels::matmul`; its arm in `convert::encode_matrix`. Every match on the kind is
/// exhaustive, so the compiler lists them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)] // ggml's names, as users know them
pub enum WeightKind {
    /// Row-major f32 (norm vectors; the matrices of an f32 model).
    F32,
    /// Row-major f16.
    F16,
    /// Q8_0 in 16-row groups of [`BlockQ8_0x16`] (the `rows16` layout).
    Q8_0x16,
    /// Q4_0 in 16-row groups of [`BlockQ4_0x16`] (the `rows16` layout).
    Q4_0x16,
    /// The coded types in 16-row groups (`quant::kx16`): ggml's Q4_1, Q5_0, Q5_1 and the
    /// K-quants Q4_K, Q5_K, Q6_K, imported from GGUF files without a second rounding.
    Q4_1x16,
    Q5_0x16,
    Q5_1x16,
    Q4_Kx16,
    Q5_Kx16,
    Q6_Kx16,
}

impl WeightKind {
    pub const ALL: [WeightKind; 10] = [
        WeightKind::F32,
        WeightKind::F16,
        WeightKind::Q8_0x16,
        WeightKind::Q4_0x16,
        WeightKind::Q4_1x16,
        WeightKind::Q5_0x16,
        WeightKind::Q5_1x16,
        WeightKind::Q4_Kx16,
        WeightKind::Q5_Kx16,
        WeightKind::Q6_Kx16,
    ];

    /// How each row's elements are encoded.
    pub const fn dtype(self) -> DType {
        match self {
            WeightKind::F32 => DType::F32,
            WeightKind::F16 => DType::F16,
            WeightKind::Q8_0x16 => <BlockQ8_0x16 as Interleaved>::DTYPE,
            WeightKind::Q4_0x16 => <BlockQ4_0x16 as Interleaved>::DTYPE,
            WeightKind::Q4_1x16 => <BlockQ4_1x16 as Interleaved>::DTYPE,
            WeightKind::Q5_0x16 => <BlockQ5_0x16 as Interleaved>::DTYPE,
            WeightKind::Q5_1x16 => <BlockQ5_1x16 as Interleaved>::DTYPE,
            WeightKind::Q4_Kx16 => <BlockQ4_Kx16 as Interleaved>::DTYPE,
            WeightKind::Q5_Kx16 => <BlockQ5_Kx16 as Interleaved>::DTYPE,
            WeightKind::Q6_Kx16 => <BlockQ6_Kx16 as Interleaved>::DTYPE,
        }
    }

    /// Whether rows are interleaved in groups of 16 (`quant::interleave`); otherwise they
    /// are stored one after another.
    pub const fn interleaved(self) -> bool {
        !matches!(self, WeightKind::F32 | WeightKind::F16)
    }

    /// The kind llq stores a tensor of `dtype` as (what `llq convert` writes).
    pub fn for_dtype(dtype: DType) -> WeightKind {
        Self::ALL
            .into_iter()
            .find(|k| k.dtype() == dtype)
            .expect("every dtype has a weight kind")
    }

    /// Bytes of one row of `cols` elements (a 16th of a group when interleaved), or
    /// `None` if `cols` is not a whole number of blocks.
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        self.dtype().row_bytes(cols)
    }

    /// Byte length of a tensor of this kind and `shape` (outermost first), or `None` if
    /// the shape does not fit the kind or the size overflows. Interleaved kinds are 2-D
    /// only, their row count padded to a multiple of 16 (the padding rows are zero
    /// blocks), so every group is complete.
    pub fn tensor_bytes(self, shape: &[u64]) -> Option<u64> {
        let cols = usize::try_from(*shape.last()?).ok()?;
        let row_bytes = self.row_bytes(cols)? as u64;
        let mut rows = shape[..shape.len() - 1]
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))?;
        if self.interleaved() {
            if shape.len() != 2 {
                return None;
            }
            rows = rows.checked_next_multiple_of(GROUP as u64)?;
        }
        row_bytes.checked_mul(rows)
    }
}

/// A `[rows, cols]` weight matrix, borrowed from the mapped file.
#[derive(Clone, Copy, Debug)]
pub struct WeightView<'a> {
    pub kind: WeightKind,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> WeightView<'a> {
    pub fn row_bytes(&self) -> usize {
        self.kind.row_bytes(self.cols).expect("validated at load")
    }

    /// Row `r` of a row-major matrix.
    pub fn row(&self, r: usize) -> &'a [u8] {
        assert!(!self.kind.interleaved(), "row() of an interleaved matrix");
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }

    /// The bytes of 16-row group `g` of an interleaved matrix.
    pub fn group(&self, g: usize) -> &'a [u8] {
        let gb = GROUP * self.row_bytes();
        &self.data[g * gb..(g + 1) * gb]
    }

    /// Decode row `r` into `out` (`cols` values), whatever the kind.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        match self.kind {
            WeightKind::F32 | WeightKind::F16 => {
                dequantize_row(self.kind.dtype(), self.row(r), out)
            }
            WeightKind::Q8_0x16 => self.dequantize_group_row::<BlockQ8_0x16>(r, out),
            WeightKind::Q4_0x16 => self.dequantize_group_row::<BlockQ4_0x16>(r, out),
            WeightKind::Q4_1x16 => self.dequantize_group_row::<BlockQ4_1x16>(r, out),
            WeightKind::Q5_0x16 => self.dequantize_group_row::<BlockQ5_0x16>(r, out),
            WeightKind::Q5_1x16 => self.dequantize_group_row::<BlockQ5_1x16>(r, out),
            WeightKind::Q4_Kx16 => self.dequantize_group_row::<BlockQ4_Kx16>(r, out),
            WeightKind::Q5_Kx16 => self.dequantize_group_row::<BlockQ5_Kx16>(r, out),
            WeightKind::Q6_Kx16 => self.dequantize_group_row::<BlockQ6_Kx16>(r, out),
        }
    }

    fn dequantize_group_row<B: Interleaved>(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.rows, "row {r} of {}", self.rows);
        let (g, i) = (self.group(r / GROUP), r % GROUP);
        for (sb, o) in blocks::<B>(g).iter().zip(out.chunks_exact_mut(B::COLS)) {
            sb.dequantize_row(i, o);
        }
    }
}
