//! `out = x · Wᵀ` for a weight matrix stored in the mapped file, split across the rayon
//! pool by chunks of output rows.

use half::f16;
use rayon::prelude::*;

use super::Kernels;
use crate::quant::{blocks, BlockQ4_0, BlockQ8_0, DType, QK};

/// A `[rows, cols]` weight matrix, borrowed from the mapped file.
#[derive(Clone, Copy, Debug)]
pub struct WeightView<'a> {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> WeightView<'a> {
    pub fn row_bytes(&self) -> usize {
        self.dtype.row_bytes(self.cols).expect("validated at load")
    }

    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }
}

/// Reusable buffers for the activations of one matmul, kept by the caller so the token
/// loop does not allocate.
#[derive(Default)]
pub struct MatmulScratch {
    xq: Vec<BlockQ8_0>,
}

/// Raw output pointer shared by the tasks of one matmul; each task writes a disjoint set of
/// elements (its own rows, for every token).
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint elements (see `matmul`), and the pointer does not outlive
// the `&mut [f32]` it was made from because `matmul` joins all tasks before returning.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `out[t * rows + r] = Σ_c W[r, c] · x[t * cols + c]` for `n` tokens.
pub fn matmul(
    k: &Kernels,
    w: &WeightView,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    scratch: &mut MatmulScratch,
) {
    let (rows, cols) = (w.rows, w.cols);
    assert_eq!(x.len(), n * cols);
    assert_eq!(out.len(), n * rows);
    assert_eq!(w.data.len(), rows * w.row_bytes());

    let quantized = w.dtype.is_quantized();
    if quantized {
        let nb = cols / QK;
        scratch.xq.resize(n * nb, BlockQ8_0 { d: 0, qs: [0; QK] });
        for (xt, qt) in x.chunks_exact(cols).zip(scratch.xq.chunks_exact_mut(nb)) {
            (k.quantize_q8_0)(xt, qt);
        }
    }
    let xq = &scratch.xq[..];
    let nb = cols / QK;

    let dot_row = |r: usize, t: usize| -> f32 {
        let row = w.row(r);
        match w.dtype {
            DType::F32 => (k.dot_f32)(blocks::<f32>(row), &x[t * cols..(t + 1) * cols]),
            DType::F16 => (k.dot_f16)(blocks::<f16>(row), &x[t * cols..(t + 1) * cols]),
            DType::Q8_0 => (k.dot_q8_0)(blocks::<BlockQ8_0>(row), &xq[t * nb..(t + 1) * nb]),
            DType::Q4_0 => (k.dot_q4_0)(blocks::<BlockQ4_0>(row), &xq[t * nb..(t + 1) * nb]),
        }
    };

    let threads = rayon::current_num_threads().max(1);
    let chunk = (rows / (threads * 8)).clamp(8, 256);
    let n_chunks = rows.div_ceil(chunk);
    let ptr = OutPtr(out.as_mut_ptr());
    let body = |c: usize| {
        let p = ptr;
        for r in c * chunk..((c + 1) * chunk).min(rows) {
            for t in 0..n {
                let v = dot_row(r, t);
                // SAFETY: t < n and r < rows, so the index is inside `out`; row r belongs
                // to chunk c only, so no other task writes this element.
                unsafe { *p.0.add(t * rows + r) = v };
            }
        }
    };
    if n_chunks == 1 || threads == 1 {
        (0..n_chunks).for_each(body);
    } else {
        (0..n_chunks).into_par_iter().for_each(body);
    }
}
