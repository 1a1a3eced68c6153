//! `out = x · Wᵀ` for a weight matrix stored in the mapped file, split across the rayon
//! pool by chunks of output rows.

use half::f16;
use rayon::prelude::*;

use super::Kernels;
use crate::format::{tensor_bytes, Layout};
use crate::quant::interleave::{
    q4_0_row_block, q8_0_row_block, ActQ8, BlockQ4_0x16, BlockQ8_0x16, GROUP,
};
use crate::quant::{
    blocks, dequantize_row, dequantize_row_q4_0, dequantize_row_q8_0, BlockQ8_0, DType, QK,
};

/// A `[rows, cols]` weight matrix, borrowed from the mapped file.
#[derive(Clone, Copy, Debug)]
pub struct WeightView<'a> {
    pub dtype: DType,
    pub layout: Layout,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> WeightView<'a> {
    pub fn row_bytes(&self) -> usize {
        self.dtype.row_bytes(self.cols).expect("validated at load")
    }

    /// Row `r` of a row-major matrix.
    pub fn row(&self, r: usize) -> &'a [u8] {
        assert_eq!(
            self.layout,
            Layout::RowMajor,
            "row() of an interleaved matrix"
        );
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }

    /// The bytes of 16-row group `g` of a `rows16` matrix.
    fn group(&self, g: usize) -> &'a [u8] {
        let gb = GROUP * self.row_bytes();
        &self.data[g * gb..(g + 1) * gb]
    }

    /// Decode row `r` into `out` (`cols` values), whatever the layout.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        match self.layout {
            Layout::RowMajor => dequantize_row(self.dtype, self.row(r), out),
            Layout::Rows16 => {
                assert!(r < self.rows, "row {r} of {}", self.rows);
                let (g, i) = (self.group(r / GROUP), r % GROUP);
                let outs = out.chunks_exact_mut(QK);
                match self.dtype {
                    DType::Q8_0 => {
                        for (sb, o) in blocks::<BlockQ8_0x16>(g).iter().zip(outs) {
                            dequantize_row_q8_0(&[q8_0_row_block(sb, i)], o);
                        }
                    }
                    DType::Q4_0 => {
                        for (sb, o) in blocks::<BlockQ4_0x16>(g).iter().zip(outs) {
                            dequantize_row_q4_0(&[q4_0_row_block(sb, i)], o);
                        }
                    }
                    DType::F32 | DType::F16 => unreachable!("rows16 is for quantized types"),
                }
            }
        }
    }
}

/// Reusable buffers for the activations of one matmul, kept by the caller so the token
/// loop does not allocate.
#[derive(Default)]
pub struct MatmulScratch {
    xq: Vec<BlockQ8_0>,
    xa: Vec<ActQ8>,
}

/// Raw output pointer shared by the tasks of one matmul; each task writes a disjoint set of
/// elements (its own rows, for every token).
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint elements (see `matmul`), and the pointer does not outlive
// the `&mut [f32]` it was made from because `matmul` joins all tasks before returning.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Tokens per call of a group kernel when `n > 1` (the results go through a small stack
/// buffer and are then scattered into `out`).
const TILE_TOKS: usize = 16;

/// 16-row groups per parallel task: about 8 tasks per thread for load balance, at most 16
/// groups (256 rows).
pub fn chunk_groups(groups: usize, threads: usize) -> usize {
    (groups / (threads.max(1) * 8)).clamp(1, 16)
}

/// Rows per parallel task for float matrices: about 8 tasks per thread, at least 8 rows
/// (the per-task overhead is ~1 µs), at most 256.
pub fn chunk_rows(rows: usize, threads: usize) -> usize {
    (rows / (threads.max(1) * 8)).clamp(8, 256)
}

/// `out[t * rows + r] = Σ_c W[r, c] · x[t * cols + c]` for `n` tokens.
///
/// Quantized matrices (`rows16` layout) go through the group kernels: the activations
/// are quantized once to [`ActQ8`], then each task takes a run of 16-row groups and every
/// token; one token (decode) streams each weight byte once, several tokens reuse each
/// unpacked weight register for a tile of tokens. Float matrices use the `dot_*` kernels
/// row by row. Work is split across the rayon pool by output rows; after the first call
/// with a given `n` nothing is allocated (`scratch` keeps its capacity).
pub fn matmul(
    k: &Kernels,
    w: &WeightView,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    scratch: &mut MatmulScratch,
) {
    assert_eq!(x.len(), n * w.cols);
    assert_eq!(out.len(), n * w.rows);
    assert_eq!(
        Some(w.data.len() as u64),
        tensor_bytes(w.dtype, w.layout, &[w.rows as u64, w.cols as u64])
    );
    if w.rows == 0 || n == 0 {
        return;
    }
    match w.layout {
        Layout::RowMajor => matmul_rows(k, w, x, n, out),
        Layout::Rows16 => matmul_groups(k, w, x, n, out, scratch),
    }
}

fn matmul_groups(
    k: &Kernels,
    w: &WeightView,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    scratch: &mut MatmulScratch,
) {
    let (rows, cols) = (w.rows, w.cols);
    let nb = cols / QK;
    scratch.xq.resize(n * nb, BlockQ8_0 { d: 0, qs: [0; QK] });
    scratch.xa.resize(n * nb, ActQ8::ZERO);
    for (xt, qt) in x.chunks_exact(cols).zip(scratch.xq.chunks_exact_mut(nb)) {
        (k.quantize_q8_0)(xt, qt);
    }
    for (a, q) in scratch.xa.iter_mut().zip(&scratch.xq) {
        *a = ActQ8::from_q8_0(q);
    }
    let xa = &scratch.xa[..];
    // One group × a run of tokens into `buf` (`toks × 16`).
    let group = |g: usize, xs: &[ActQ8], buf: &mut [f32]| match w.dtype {
        DType::Q8_0 => (k.gemm_q8_0x16)(blocks(w.group(g)), xs, buf),
        DType::Q4_0 => (k.gemm_q4_0x16)(blocks(w.group(g)), xs, buf),
        DType::F32 | DType::F16 => unreachable!("rows16 is for quantized types"),
    };
    let groups = rows.div_ceil(GROUP);
    let threads = rayon::current_num_threads().max(1);
    let chunk = chunk_groups(groups, threads);

    if n == 1 {
        // Decode: each task owns a contiguous run of `out`.
        let body = |(c, o): (usize, &mut [f32])| {
            for (gi, og) in o.chunks_mut(GROUP).enumerate() {
                if og.len() == GROUP {
                    group(c * chunk + gi, xa, og);
                } else {
                    // The last group of a matrix whose rows are not a multiple of 16.
                    let mut buf = [0.0f32; GROUP];
                    group(c * chunk + gi, xa, &mut buf);
                    og.copy_from_slice(&buf[..og.len()]);
                }
            }
        };
        if threads == 1 || groups <= chunk {
            out.chunks_mut(chunk * GROUP).enumerate().for_each(body);
        } else {
            out.par_chunks_mut(chunk * GROUP).enumerate().for_each(body);
        }
        return;
    }

    let ptr = OutPtr(out.as_mut_ptr());
    let body = |c: usize| {
        let p = ptr;
        let mut buf = [0.0f32; GROUP * TILE_TOKS];
        for g in c * chunk..((c + 1) * chunk).min(groups) {
            let live = GROUP.min(rows - g * GROUP);
            for ts in (0..n).step_by(TILE_TOKS) {
                let te = (ts + TILE_TOKS).min(n);
                group(g, &xa[ts * nb..te * nb], &mut buf[..(te - ts) * GROUP]);
                for t in ts..te {
                    for i in 0..live {
                        let v = buf[(t - ts) * GROUP + i];
                        // SAFETY: t < n and g * 16 + i < rows, so the index is inside
                        // `out`; group g belongs to chunk c only, so no other task writes it.
                        unsafe { *p.0.add(t * rows + g * GROUP + i) = v };
                    }
                }
            }
        }
    };
    let n_chunks = groups.div_ceil(chunk);
    if n_chunks == 1 || threads == 1 {
        (0..n_chunks).for_each(body);
    } else {
        (0..n_chunks).into_par_iter().for_each(body);
    }
}

/// Float (f32/f16) row-major matrices: one `dot_*` per row and token.
fn matmul_rows(k: &Kernels, w: &WeightView, x: &[f32], n: usize, out: &mut [f32]) {
    let (rows, cols) = (w.rows, w.cols);
    let dot_row = |r: usize, t: usize| -> f32 {
        let row = w.row(r);
        let xt = &x[t * cols..(t + 1) * cols];
        match w.dtype {
            DType::F32 => (k.dot_f32)(blocks::<f32>(row), xt),
            DType::F16 => (k.dot_f16)(blocks::<f16>(row), xt),
            DType::Q8_0 | DType::Q4_0 => {
                unreachable!("quantized matrices are rows16 (checked at load)")
            }
        }
    };
    let threads = rayon::current_num_threads().max(1);
    let chunk = chunk_rows(rows, threads);
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
