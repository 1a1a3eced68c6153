//! Dot-product kernels behind one table of function pointers, chosen once per process.
//!
//! Every kernel has a scalar reference in [`scalar`]; ISA-specific versions fill the same
//! table and are tested against it (`tests/kernels.rs`). A level is only listed by
//! [`available`] after run-time feature detection confirmed that this CPU can execute it,
//! which is what makes the safe table entries of the SIMD levels sound.
//! `LLQ_KERNEL=<name>` forces a level.

pub(crate) mod attn_block;
pub mod cpu;
pub mod matmul;
pub mod scalar;
mod simd;

#[cfg(target_arch = "aarch64")]
mod arm;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::OnceLock;

use half::f16;

pub use attn_block::AttnBlock;
pub use cpu::cpu_features;

use crate::quant::interleave::{ActQ8, BlockQ4_0x16, BlockQ8_0x16, GROUP};
use crate::quant::kx16::{
    BlockQ4_1x16, BlockQ4_Kx16, BlockQ5_0x16, BlockQ5_1x16, BlockQ5_Kx16, BlockQ6_Kx16,
};
use crate::quant::{BlockQ8_0, DType};

/// A complete [`Kernels`] table for a base level (one that starts from no other): every
/// entry is the function of the same name in scope where the macro is called, so a base
/// level's module names (or `use`s) one function per entry and the list of entries is
/// written once, here. Higher levels start from a base table with `..BASE`.
macro_rules! base_table {
    ($name:literal, coded: $coded:expr) => {
        $crate::kernels::Kernels {
            name: $name,
            dot_q8_0,
            dot_f16,
            dot_f32,
            axpy_f32,
            axpy_f16,
            attn_scores_f32,
            attn_scores_f16,
            attn_values_f32,
            attn_values_f16,
            attn_scores_group_f32,
            attn_scores_group_f16,
            attn_values_group_f32,
            attn_values_group_f16,
            attn_block_f32,
            attn_block_f16,
            attn_block_q8_0,
            softmax,
            silu_mul,
            quantize_q8_0,
            encode_rows,
            gemm_q8_0x16,
            gemm_q4_0x16,
            coded: $coded,
        }
    };
}
use base_table;

/// A [`CodedKernels`] table of `$f::<B>` for every coded type `B`.
macro_rules! coded_table {
    ($f:ident) => {
        $crate::kernels::CodedKernels {
            q4_1: $f::<$crate::quant::kx16::BlockQ4_1x16>,
            q5_0: $f::<$crate::quant::kx16::BlockQ5_0x16>,
            q5_1: $f::<$crate::quant::kx16::BlockQ5_1x16>,
            q4_k: $f::<$crate::quant::kx16::BlockQ4_Kx16>,
            q5_k: $f::<$crate::quant::kx16::BlockQ5_Kx16>,
            q6_k: $f::<$crate::quant::kx16::BlockQ6_Kx16>,
        }
    };
}
use coded_table;

/// One implementation level of every kernel the forward pass calls.
pub struct Kernels {
    pub name: &'static str,
    /// Σ w·x over two rows of Q8_0 blocks (the Q8_0 KV cache's keys against the query).
    pub dot_q8_0: fn(&[BlockQ8_0], &[BlockQ8_0]) -> f32,
    pub dot_f16: fn(&[f16], &[f32]) -> f32,
    pub dot_f32: fn(&[f32], &[f32]) -> f32,
    /// `out += a · x` (attention's weighted sum of value rows).
    pub axpy_f32: fn(&mut [f32], f32, &[f32]),
    /// `out += a · x` with `x` in f16 (the f16 KV cache's values).
    pub axpy_f16: fn(&mut [f32], f32, &[f16]),
    /// Attention scores of one query against consecutive cache slots:
    /// `out[j] = Σ_d q[d] · keys[j · stride + d]` for `j < out.len()`, `d < q.len()`.
    /// One call per query and head instead of one per key (the per-call overhead of the
    /// `dot_*` kernels was most of a prompt's attention time).
    pub attn_scores_f32: fn(&[f32], &[f32], usize, &mut [f32]),
    /// As [`Kernels::attn_scores_f32`] with f16 keys.
    pub attn_scores_f16: fn(&[f32], &[f16], usize, &mut [f32]),
    /// Attention output of one query and head: `o[d] += Σ_j p[j] · vals[j · stride + d]`,
    /// keys in order (each output element keeps its accumulator in a register).
    pub attn_values_f32: fn(&mut [f32], &[f32], &[f32], usize),
    /// As [`Kernels::attn_values_f32`] with f16 values.
    pub attn_values_f16: fn(&mut [f32], &[f32], &[f16], usize),
    /// Attention scores of a group of queries (the query heads of one token that share a
    /// kv head) against consecutive cache slots, each key row loaded and converted once
    /// for the whole group: `out[i · row_stride + j] = Σ_d q[i · hd + d] · keys[j · stride
    /// + d]` for the `q.len() / hd` queries and `j < n` (see [`AttnGroup`]).
    pub attn_scores_group_f32: fn(&AttnGroup, &[f32], &[f32], &mut [f32]),
    /// As [`Kernels::attn_scores_group_f32`] with f16 keys.
    pub attn_scores_group_f16: fn(&AttnGroup, &[f32], &[f16], &mut [f32]),
    /// Attention output of a group of queries, each value row loaded once for the group:
    /// `o[i · hd + d] += Σ_{j<n} p[i · row_stride + j] · vals[j · stride + d]` for the
    /// `o.len() / hd` queries, keys in order.
    pub attn_values_group_f32: fn(&AttnGroup, &mut [f32], &[f32], &[f32]),
    /// As [`Kernels::attn_values_group_f32`] with f16 values.
    pub attn_values_group_f16: fn(&AttnGroup, &mut [f32], &[f32], &[f16]),
    /// Attention of a block of queries (the query heads of consecutive tokens that share
    /// a kv head) against the cache rows `keys` / `vals` (rows at `stride`, row 0 at the
    /// head's offset): `out[i] = Σ_j softmax_j(scale · q[i]·k[j]) · v[j]` over
    /// `j < lens[i / heads]` (see [`AttnBlock`]). SIMD levels go through the keys in tiles
    /// with an online softmax (`attn_block`); `scratch` is reused between calls.
    pub attn_block_f32: AttnBlockFn<f32>,
    /// As [`Kernels::attn_block_f32`] with an f16 cache.
    pub attn_block_f16: AttnBlockFn<f16>,
    /// As [`Kernels::attn_block_f32`] with a Q8_0 cache (head size and row stride whole
    /// blocks; each tile's rows are dequantized once, the queries stay f32).
    pub attn_block_q8_0: AttnBlockFn<BlockQ8_0>,
    /// `s = softmax(s)` in place (attention's probabilities). SIMD levels compute `exp`
    /// with a polynomial (see [`exp_poly`]) instead of a libm call per score.
    pub softmax: fn(&mut [f32]),
    /// SwiGLU's gate: `g[i] = silu(g[i]) · u[i]` with `silu(x) = x / (1 + e^-x)`.
    pub silu_mul: fn(&mut [f32], &[f32]),
    /// Quantize activations to Q8_0 (bit-identical to the reference quantizer).
    pub quantize_q8_0: fn(&[f32], &mut [BlockQ8_0]),
    /// The converter's block encoders: rows of f32 into `dtype`'s blocks, each block's
    /// scales and codes searched for the least weighted error (see
    /// [`crate::quant::encode_rows`], the reference, which every level compiles for its own
    /// vector width: bit-identical results, so a file does not depend on the machine that
    /// wrote it). Lengths as [`crate::quant::quantize_rows_weighted`] checks them.
    pub encode_rows: EncodeRowsFn,
    /// One 16-row group of a `rows16` Q8_0 matrix times `toks` tokens: `w` is the group's
    /// `nb` superblocks, `x` holds `toks` rows of `nb` activation blocks, and
    /// `out[t * 16 + i] = Σ_b d_w[b][i] · d_x[t][b] · Σ_k q_w · q_x` (see
    /// [`scalar::gemm_q8_0x16`]). Panics unless `nb > 0`, `x.len()` is a multiple of `nb`
    /// and `out` holds `16 · toks` values.
    pub gemm_q8_0x16: GroupFn<BlockQ8_0x16>,
    /// As [`Kernels::gemm_q8_0x16`] for Q4_0 (values `q − 8`).
    pub gemm_q4_0x16: GroupFn<BlockQ4_0x16>,
    /// The group kernels of the coded types (ggml's Q4_1, Q5_0, Q5_1 and K-quants).
    pub coded: CodedKernels,
}

/// Group kernels of the coded `rows16` types (`quant::kx16`): one 16-row group of `nsb`
/// superblocks times `toks` tokens of `nsb · SUBS` activation blocks each, where every
/// weight is `S · code + B`, so each 16-column half contributes
/// `S · d_x · Σ code·q_x + B · d_x · Σ q_x` (see [`scalar::gemm_coded`], the reference).
/// Same argument rules as [`Kernels::gemm_q8_0x16`], with `x.len()` a multiple of
/// `w.len() · SUBS`.
#[derive(Clone, Copy)]
pub struct CodedKernels {
    pub q4_1: GroupFn<BlockQ4_1x16>,
    pub q5_0: GroupFn<BlockQ5_0x16>,
    pub q5_1: GroupFn<BlockQ5_1x16>,
    pub q4_k: GroupFn<BlockQ4_Kx16>,
    pub q5_k: GroupFn<BlockQ5_Kx16>,
    pub q6_k: GroupFn<BlockQ6_Kx16>,
}

/// Constants of the SIMD levels' `e^x` (Cephes' `expf`): `x = n·ln2 + r` with
/// `n = round(x·log2 e)` and `ln2` split in two so `r` is exact, `e^r` by a degree-7
/// polynomial on `|r| ≤ ln2/2`, and `2^n` put straight into the exponent bits. Inputs are
/// clamped to `[LO, HI]`, where `n` stays a normal exponent: relative error ≈ 2 ε there
/// (tests/kernels.rs measures it against `f32::exp`); below `LO` the result is
/// `e^LO ≈ 1.2e-38` instead of a subnormal or 0.
pub mod exp_poly {
    pub const LOG2E: f32 = std::f32::consts::LOG2_E;
    pub const LN2_HI: f32 = 0.693_359_4;
    pub const LN2_LO: f32 = -2.121_944_4e-4;
    pub const HI: f32 = 88.376_26;
    pub const LO: f32 = -87.336_55;
    /// Coefficients of r^7 … r^2, highest first (`e^r ≈ 1 + r + r²·P(r)`).
    pub const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_2e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];
}

/// `fn(w, x, out)`: see [`Kernels::gemm_q8_0x16`].
/// [`Kernels::encode_rows`]: `fn(dtype, src, weights, out)`.
pub type EncodeRowsFn = fn(DType, &[f32], Option<&[f32]>, &mut [u8]);

/// [`Kernels::attn_block_f32`]: `fn(shape, queries, keys, values, scratch, out)`.
pub type AttnBlockFn<E> = fn(&AttnBlock, &[f32], &[E], &[E], &mut Vec<f32>, &mut [f32]);

pub type GroupFn<W> = fn(&[W], &[ActQ8], &mut [f32]);

/// Check the arguments of an attention call: `rows` rows of `width` values at `stride`
/// must fit in `len`.
pub(crate) fn attn_dims(rows: usize, width: usize, stride: usize, len: usize) {
    if rows > 0 {
        let need = (rows - 1)
            .checked_mul(stride)
            .and_then(|v| v.checked_add(width));
        assert!(
            need.is_some_and(|n| n <= len),
            "attention kernel: {rows} rows of {width} at stride {stride} exceed {len} values"
        );
    }
}

/// The shape of a grouped attention call ([`Kernels::attn_scores_group_f32`],
/// [`Kernels::attn_values_group_f32`]).
#[derive(Clone, Copy, Debug)]
pub struct AttnGroup {
    /// Values per query (and per output row): the head size.
    pub hd: usize,
    /// Keys (cache slots) to read.
    pub n: usize,
    /// Distance between consecutive cache rows, in elements.
    pub stride: usize,
    /// Distance between consecutive queries' rows of scores (probabilities), `>= n`.
    pub row_stride: usize,
}

impl AttnGroup {
    /// Check a call's slice lengths against the shape and return the number of queries:
    /// `qlen` query (or output) values, `n` keys of `hd` values at `stride` in `cache`
    /// values, and one row of `n` scores per query at `row_stride` in `scores` values.
    /// Panics when they do not fit.
    pub(crate) fn queries(&self, qlen: usize, cache: usize, scores: usize) -> usize {
        assert!(
            self.hd > 0 && qlen.is_multiple_of(self.hd) && self.n <= self.row_stride,
            "attention group: {qlen} query values for head size {}, {} keys in rows of {}",
            self.hd,
            self.n,
            self.row_stride
        );
        let nq = qlen / self.hd;
        attn_dims(self.n, self.hd, self.stride, cache);
        attn_dims(nq, self.n, self.row_stride, scores);
        nq
    }
}

/// Check the arguments of a group call and return `(nb, toks)`.
pub(crate) fn group_dims(wlen: usize, xlen: usize, olen: usize) -> (usize, usize) {
    group_dims_sub(wlen, 1, xlen, olen)
}

/// [`group_dims`] for superblocks of `subs` activation blocks each: returns
/// `(activation blocks per token, toks)`.
pub(crate) fn group_dims_sub(wlen: usize, subs: usize, xlen: usize, olen: usize) -> (usize, usize) {
    assert!(wlen > 0, "group kernel: no blocks");
    let nb = wlen.checked_mul(subs).expect("group kernel: size overflow");
    assert!(
        xlen.is_multiple_of(nb),
        "group kernel: activations are not whole rows of {nb} blocks"
    );
    let toks = xlen / nb;
    assert!(olen >= GROUP * toks, "group kernel: output too short");
    (nb, toks)
}

/// Every level this binary can run on this CPU, scalar first, best last.
pub fn available() -> Vec<&'static Kernels> {
    #[allow(unused_mut)]
    let mut v = vec![&scalar::KERNELS];
    #[cfg(target_arch = "x86_64")]
    x86::push_available(&mut v);
    #[cfg(target_arch = "aarch64")]
    arm::push_available(&mut v);
    v
}

/// Every level name this binary knows about (whether or not this CPU can run it).
pub const ALL_LEVELS: &[&str] = &[
    "scalar",
    "avx2",
    "avxvnni",
    "avx512",
    "avx512vnni",
    "neon",
    "dotprod",
    "i8mm",
];

static SELECTED: OnceLock<&'static Kernels> = OnceLock::new();

/// The kernels for this process: `LLQ_KERNEL` if set, else the best the CPU supports.
/// Panics with a clear message if `LLQ_KERNEL` names a level this CPU cannot run; the CLI
/// calls [`select`] first to turn that into an error.
pub fn kernels() -> &'static Kernels {
    SELECTED.get_or_init(|| select().unwrap_or_else(|e| panic!("{e}")))
}

/// Choose the kernel level from `LLQ_KERNEL` or the CPU's features.
pub fn select() -> Result<&'static Kernels, String> {
    select_from(std::env::var("LLQ_KERNEL").ok().as_deref())
}

/// [`select`] with the value of `LLQ_KERNEL` given explicitly (`None` or empty: best).
pub fn select_from(want: Option<&str>) -> Result<&'static Kernels, String> {
    let all = available();
    let names = || all.iter().map(|k| k.name).collect::<Vec<_>>().join(", ");
    match want.map(str::trim) {
        Some(want) if !want.is_empty() => {
            let want = want.to_ascii_lowercase();
            if let Some(k) = all.iter().copied().find(|k| k.name == want) {
                Ok(k)
            } else if ALL_LEVELS.contains(&want.as_str()) {
                Err(format!(
                    "LLQ_KERNEL={want}: this CPU cannot run that level (available here: {})",
                    names()
                ))
            } else {
                Err(format!(
                    "LLQ_KERNEL={want}: unknown kernel level (known: {}; available here: {})",
                    ALL_LEVELS.join(", "),
                    names()
                ))
            }
        }
        _ => Ok(*all.last().expect("scalar is always available")),
    }
}
