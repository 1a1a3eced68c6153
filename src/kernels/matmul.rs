//! `out = x · Wᵀ` for a weight matrix stored in the mapped file, split across the rayon
//! pool by chunks of output rows.

use std::cell::RefCell;

use rayon::prelude::*;

use super::{GroupFn, Kernels};
use crate::quant::interleave::{ActQ8, BlockQ4_0x16, BlockQ8_0x16, GROUP};
use crate::quant::kx16::{
    BlockQ4_1x16, BlockQ4_Kx16, BlockQ5_0x16, BlockQ5_1x16, BlockQ5_Kx16, BlockQ6_Kx16,
};
use crate::quant::{blocks, BlockQ8_0, WeightKind, WeightView, QK};

/// How [`matmul`] multiplies a matrix of each kind: the one match on [`WeightKind`] in
/// the kernels (a new kind adds its arm here, and its variant to [`Gemm`]).
#[derive(Clone, Copy)]
enum Route {
    /// Row-major floats: one `dot_*` per row and token.
    RowsF32,
    RowsF16,
    /// Interleaved quantized rows: the group kernels.
    Groups(Gemm),
}

impl Route {
    fn of(k: &Kernels, kind: WeightKind) -> Route {
        match kind {
            WeightKind::F32 => Route::RowsF32,
            WeightKind::F16 => Route::RowsF16,
            WeightKind::Q8_0x16 => Route::Groups(Gemm::Q8_0(k.gemm_q8_0x16)),
            WeightKind::Q4_0x16 => Route::Groups(Gemm::Q4_0(k.gemm_q4_0x16)),
            WeightKind::Q4_1x16 => Route::Groups(Gemm::Q4_1(k.coded.q4_1)),
            WeightKind::Q5_0x16 => Route::Groups(Gemm::Q5_0(k.coded.q5_0)),
            WeightKind::Q5_1x16 => Route::Groups(Gemm::Q5_1(k.coded.q5_1)),
            WeightKind::Q4_Kx16 => Route::Groups(Gemm::Q4_K(k.coded.q4_k)),
            WeightKind::Q5_Kx16 => Route::Groups(Gemm::Q5_K(k.coded.q5_k)),
            WeightKind::Q6_Kx16 => Route::Groups(Gemm::Q6_K(k.coded.q6_k)),
        }
    }
}

/// The group kernel of an interleaved matrix, picked once per call.
#[derive(Clone, Copy)]
#[allow(non_camel_case_types)]
enum Gemm {
    Q8_0(GroupFn<BlockQ8_0x16>),
    Q4_0(GroupFn<BlockQ4_0x16>),
    Q4_1(GroupFn<BlockQ4_1x16>),
    Q5_0(GroupFn<BlockQ5_0x16>),
    Q5_1(GroupFn<BlockQ5_1x16>),
    Q4_K(GroupFn<BlockQ4_Kx16>),
    Q5_K(GroupFn<BlockQ5_Kx16>),
    Q6_K(GroupFn<BlockQ6_Kx16>),
}

impl Gemm {
    /// One 16-row group (its bytes) times a tile of tokens (see [`Kernels::gemm_q8_0x16`]).
    #[inline(always)]
    fn run(self, group: &[u8], x: &[ActQ8], out: &mut [f32]) {
        match self {
            Gemm::Q8_0(f) => f(blocks(group), x, out),
            Gemm::Q4_0(f) => f(blocks(group), x, out),
            Gemm::Q4_1(f) => f(blocks(group), x, out),
            Gemm::Q5_0(f) => f(blocks(group), x, out),
            Gemm::Q5_1(f) => f(blocks(group), x, out),
            Gemm::Q4_K(f) => f(blocks(group), x, out),
            Gemm::Q5_K(f) => f(blocks(group), x, out),
            Gemm::Q6_K(f) => f(blocks(group), x, out),
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

/// Tokens per call of a group kernel (its results go through a buffer and are then
/// scattered into `out`): a whole batch of the forward pass, so that a kernel that
/// prepares a row group's weights once for all its token tiles (the 256-bit levels'
/// preformed codes, `x86::coded`) does so once per batch.
const TILE_TOKS: usize = 256;

/// Tokens whose results go through a buffer on the stack (decode, short batches); more go
/// through [`RESULTS`].
const STACK_TOKS: usize = 32;

thread_local! {
    /// The results buffer of a group kernel call over more than [`STACK_TOKS`] tokens: one
    /// per thread, grown once, so a prompt's matmuls allocate nothing in steady state.
    static RESULTS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

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
    matmul_many(k, &[*w], x, n, &mut [out], scratch);
}

/// [`matmul`] of several matrices with the same input (a layer's Q, K and V projections;
/// its gate and up projections): `outs[m] = x · ws[m]ᵀ`. When all are quantized the input
/// is quantized once and all their row groups go to the pool as one job, which halves
/// the number of fork-join barriers per layer.
pub fn matmul_many(
    k: &Kernels,
    ws: &[WeightView],
    x: &[f32],
    n: usize,
    outs: &mut [&mut [f32]],
    scratch: &mut MatmulScratch,
) {
    assert_eq!(ws.len(), outs.len());
    assert!(
        ws.len() <= MAX_FUSED,
        "at most {MAX_FUSED} matrices per call"
    );
    for (w, out) in ws.iter().zip(outs.iter()) {
        assert_eq!(
            w.cols, ws[0].cols,
            "matmul_many: matrices differ in columns"
        );
        assert_eq!(x.len(), n * w.cols);
        assert_eq!(out.len(), n * w.rows);
        assert_eq!(
            Some(w.data.len() as u64),
            w.kind.tensor_bytes(&[w.rows as u64, w.cols as u64])
        );
    }
    if n == 0 || ws.is_empty() {
        return;
    }
    if let Some(gemms) = group_kernels(k, ws) {
        matmul_groups(k, ws, &gemms, x, n, outs, scratch);
    } else {
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            match Route::of(k, w.kind) {
                Route::RowsF32 => matmul_rows(w, x, n, out, |r, xt| (k.dot_f32)(blocks(r), xt)),
                Route::RowsF16 => matmul_rows(w, x, n, out, |r, xt| (k.dot_f16)(blocks(r), xt)),
                Route::Groups(g) => matmul_groups(k, &[*w], &[g], x, n, &mut [out], scratch),
            }
        }
    }
}

/// The group kernel of each of `ws` when all are interleaved (then they go to the pool as
/// one job), else `None`.
fn group_kernels(k: &Kernels, ws: &[WeightView]) -> Option<[Gemm; MAX_FUSED]> {
    // Entries past `ws.len()` are never read.
    let mut gemms = [Gemm::Q8_0(k.gemm_q8_0x16); MAX_FUSED];
    for (g, w) in gemms.iter_mut().zip(ws) {
        match Route::of(k, w.kind) {
            Route::Groups(gemm) => *g = gemm,
            Route::RowsF32 | Route::RowsF16 => return None,
        }
    }
    Some(gemms)
}

/// Most matrices [`matmul_many`] takes at once.
pub const MAX_FUSED: usize = 4;

/// Interleaved matrices `ws` with their group kernels `gemms`: quantize the activations
/// once, then every 16-row group of every matrix for every token tile.
fn matmul_groups(
    k: &Kernels,
    ws: &[WeightView],
    gemms: &[Gemm],
    x: &[f32],
    n: usize,
    outs: &mut [&mut [f32]],
    scratch: &mut MatmulScratch,
) {
    let cols = ws[0].cols;
    let nb = cols / QK;
    scratch.xq.resize(n * nb, BlockQ8_0 { d: 0, qs: [0; QK] });
    scratch.xa.resize(n * nb, ActQ8::ZERO);
    let threads = rayon::current_num_threads().max(1);
    // Quantize each token's activations (in parallel for a prompt: it is serial work
    // otherwise, ~4% of a SmolLM2 prompt).
    let quantize = |(xt, (qt, at)): (&[f32], (&mut [BlockQ8_0], &mut [ActQ8]))| {
        (k.quantize_q8_0)(xt, qt);
        for (a, q) in at.iter_mut().zip(qt.iter()) {
            *a = ActQ8::from_q8_0(q);
        }
    };
    let (xq, xa) = (&mut scratch.xq, &mut scratch.xa);
    if n > 1 && threads > 1 {
        x.par_chunks_exact(cols)
            .zip(xq.par_chunks_exact_mut(nb).zip(xa.par_chunks_exact_mut(nb)))
            .for_each(quantize);
    } else {
        x.chunks_exact(cols)
            .zip(xq.chunks_exact_mut(nb).zip(xa.chunks_exact_mut(nb)))
            .for_each(quantize);
    }
    let xa = &scratch.xa[..];

    // The groups of all matrices, numbered one after another.
    let mut first = [0usize; MAX_FUSED + 1];
    let mut ptrs = [OutPtr(std::ptr::null_mut()); MAX_FUSED];
    for (m, (w, out)) in ws.iter().zip(outs.iter_mut()).enumerate() {
        first[m + 1] = first[m] + w.rows.div_ceil(GROUP);
        ptrs[m] = OutPtr(out.as_mut_ptr());
    }
    let groups = first[ws.len()];
    let chunk = chunk_groups(groups, threads);

    let tiles = |c: usize, buf: &mut [f32]| {
        let ptrs = &ptrs;
        let mut m = 0;
        for gg in c * chunk..((c + 1) * chunk).min(groups) {
            while gg >= first[m + 1] {
                m += 1;
            }
            let (w, gemm, g, p) = (&ws[m], gemms[m], gg - first[m], ptrs[m]);
            let (rows, live) = (w.rows, GROUP.min(w.rows - g * GROUP));
            for ts in (0..n).step_by(TILE_TOKS) {
                let te = (ts + TILE_TOKS).min(n);
                let (xs, o) = (&xa[ts * nb..te * nb], &mut buf[..(te - ts) * GROUP]);
                gemm.run(w.group(g), xs, o);
                for t in ts..te {
                    let src = &buf[(t - ts) * GROUP..][..GROUP];
                    let dst = p.0.wrapping_add(t * rows + g * GROUP);
                    // SAFETY: t < n and g·16 + live ≤ rows, so the `live` floats at `dst`
                    // lie inside `outs[m]` (n · rows long); group g of matrix m belongs to
                    // chunk c only, so no other task writes them, and `outs` outlives the
                    // join below. A whole group is copied as one fixed-size value (a
                    // runtime-length copy was a memmove call per 16 floats: 7% of a
                    // SmolLM2 prompt).
                    unsafe {
                        if live == GROUP {
                            dst.cast::<[f32; GROUP]>()
                                .write_unaligned(src.try_into().expect("16 floats"));
                        } else {
                            std::ptr::copy_nonoverlapping(src.as_ptr(), dst, live);
                        }
                    }
                }
            }
        }
    };
    let body = |c: usize| {
        if n <= STACK_TOKS {
            tiles(c, &mut [0.0; GROUP * STACK_TOKS]);
        } else {
            RESULTS.with_borrow_mut(|buf| {
                buf.resize(GROUP * n.min(TILE_TOKS), 0.0);
                tiles(c, buf)
            });
        }
    };
    let n_chunks = groups.div_ceil(chunk);
    if n_chunks == 1 || threads == 1 {
        (0..n_chunks).for_each(body);
    } else {
        (0..n_chunks).into_par_iter().for_each(body);
    }
}

/// Row-major float matrices: `dot(row, x_t)` (the row's bytes) per row and token.
fn matmul_rows(
    w: &WeightView,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    dot: impl Fn(&[u8], &[f32]) -> f32 + Sync,
) {
    let (rows, cols) = (w.rows, w.cols);
    let dot_row = |r: usize, t: usize| -> f32 { dot(w.row(r), &x[t * cols..(t + 1) * cols]) };
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
