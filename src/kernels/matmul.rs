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

/// Rows × tokens computed per call of a tile kernel when `n > 1` (the results go through a
/// small stack buffer and are then scattered into `out`).
const TILE_ROWS: usize = 16;
const TILE_TOKS: usize = 16;

/// Rows per parallel task: about 8 tasks per thread for load balance, at least 8 rows
/// (the per-task overhead is ~1 µs), at most 256, and a multiple of [`TILE_ROWS`] when the
/// tile kernels are used.
pub fn chunk_rows(rows: usize, threads: usize, n: usize) -> usize {
    let chunk = (rows / (threads.max(1) * 8)).clamp(8, 256);
    if n > 1 {
        chunk.next_multiple_of(TILE_ROWS)
    } else {
        chunk
    }
}

/// `out[t * rows + r] = Σ_c W[r, c] · x[t * cols + c]` for `n` tokens.
///
/// One token (decode) streams every weight row once through the `dot_*` kernels; several
/// tokens of a quantized matrix go through the `gemm_*_tile` kernels, which keep a few rows
/// × a few tokens of accumulators in registers. Rows are split across the rayon pool; after
/// the first call with a given `n` nothing is allocated (`scratch` keeps its capacity).
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
    if rows == 0 || n == 0 {
        return;
    }

    let quantized = w.dtype.is_quantized();
    let nb = cols / QK;
    if quantized {
        scratch.xq.resize(n * nb, BlockQ8_0 { d: 0, qs: [0; QK] });
        for (xt, qt) in x.chunks_exact(cols).zip(scratch.xq.chunks_exact_mut(nb)) {
            (k.quantize_q8_0)(xt, qt);
        }
    }
    let xq = &scratch.xq[..];
    let tiled = quantized && n > 1 && nb > 0;

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
    let chunk = chunk_rows(rows, threads, n);
    let n_chunks = rows.div_ceil(chunk);
    let ptr = OutPtr(out.as_mut_ptr());
    let body = |c: usize| {
        let p = ptr;
        let (r0, r1) = (c * chunk, ((c + 1) * chunk).min(rows));
        if tiled {
            let mut buf = [0.0f32; TILE_ROWS * TILE_TOKS];
            for rs in (r0..r1).step_by(TILE_ROWS) {
                let re = (rs + TILE_ROWS).min(r1);
                let rb = re - rs;
                for ts in (0..n).step_by(TILE_TOKS) {
                    let te = (ts + TILE_TOKS).min(n);
                    let xs = &xq[ts * nb..te * nb];
                    let wb = &w.data[rs * w.row_bytes()..re * w.row_bytes()];
                    match w.dtype {
                        DType::Q8_0 => (k.gemm_q8_0_tile)(blocks(wb), xs, nb, &mut buf, rb),
                        DType::Q4_0 => (k.gemm_q4_0_tile)(blocks(wb), xs, nb, &mut buf, rb),
                        DType::F32 | DType::F16 => unreachable!("tiles are for quantized weights"),
                    }
                    for t in ts..te {
                        for r in rs..re {
                            let v = buf[(t - ts) * rb + (r - rs)];
                            // SAFETY: t < n and r < rows, so the index is inside `out`; row
                            // r belongs to chunk c only, so no other task writes it.
                            unsafe { *p.0.add(t * rows + r) = v };
                        }
                    }
                }
            }
        } else {
            for r in r0..r1 {
                for t in 0..n {
                    let v = dot_row(r, t);
                    // SAFETY: t < n and r < rows, so the index is inside `out`; row r belongs
                    // to chunk c only, so no other task writes this element.
                    unsafe { *p.0.add(t * rows + r) = v };
                }
            }
        }
    };
    if n_chunks == 1 || threads == 1 {
        (0..n_chunks).for_each(body);
    } else {
        (0..n_chunks).into_par_iter().for_each(body);
    }
}
