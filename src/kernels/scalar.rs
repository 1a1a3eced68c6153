//! Scalar reference kernels: the definition every SIMD kernel is tested against.

use half::f16;

use super::{attn_dims, group_dims, group_dims_sub, AttnBlock, AttnGroup, CodedKernels, Kernels};
use crate::quant::interleave::{ActQ8, BlockQ4_0x16, BlockQ8_0x16, GROUP};
use crate::quant::kx16::{CodedX16, SubScales, SUB};
use crate::quant::{encode_rows, quantize_act_q8_0 as quantize_q8_0, BlockQ8_0, QK};

pub static KERNELS: Kernels = super::base_table!("scalar", coded: CODED);

/// The reference kernels of the coded types (every level starts from these).
pub const CODED: CodedKernels = super::coded_table!(gemm_coded);

/// Per block: integer dot product of the int8 values, then one float multiply by both
/// scales (llama.cpp's order of operations).
pub fn dot_q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    let mut sum = 0.0f32;
    for (a, b) in w.iter().zip(x) {
        let mut isum = 0i32;
        for i in 0..QK {
            isum += a.qs[i] as i32 * b.qs[i] as i32;
        }
        sum += isum as f32 * (a.scale() * b.scale());
    }
    sum
}

/// Float dots keep 8 independent partial sums (lane i takes elements ≡ i mod 8), added
/// pairwise at the end: more accurate than one running sum, and plain portable code that
/// compilers can keep in vector registers, so the reference stays fast enough to run the
/// whole test suite with `LLQ_KERNEL=scalar`.
fn dot8(n: usize, f: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let full = n / 8 * 8;
    for i in (0..full).step_by(8) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(i + l);
        }
    }
    for i in full..n {
        acc[i - full] += f(i);
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

/// A KV-cache element of the float references: f32, or f16 widened exactly.
trait CacheElem: Copy {
    fn widen(self) -> f32;
}

impl CacheElem for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl CacheElem for f16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

pub fn dot_f16(w: &[f16], x: &[f32]) -> f32 {
    dot(w, x)
}

pub fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    dot(w, x)
}

fn dot<E: CacheElem>(w: &[E], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    dot8(w.len(), |i| w[i].widen() * x[i])
}

/// `out += a · x`, one rounding for the product and one for the sum.
pub fn axpy_f32(out: &mut [f32], a: f32, x: &[f32]) {
    axpy(out, a, x)
}

pub fn axpy_f16(out: &mut [f32], a: f32, x: &[f16]) {
    axpy(out, a, x)
}

fn axpy<E: CacheElem>(out: &mut [f32], a: f32, x: &[E]) {
    assert_eq!(out.len(), x.len());
    for (o, v) in out.iter_mut().zip(x) {
        *o += a * v.widen();
    }
}

/// Reference: one [`dot_f32`] per key.
pub fn attn_scores_f32(q: &[f32], keys: &[f32], stride: usize, out: &mut [f32]) {
    attn_scores(q, keys, stride, out)
}

pub fn attn_scores_f16(q: &[f32], keys: &[f16], stride: usize, out: &mut [f32]) {
    attn_scores(q, keys, stride, out)
}

fn attn_scores<E: CacheElem>(q: &[f32], keys: &[E], stride: usize, out: &mut [f32]) {
    attn_dims(out.len(), q.len(), stride, keys.len());
    for (j, s) in out.iter_mut().enumerate() {
        *s = dot(&keys[j * stride..j * stride + q.len()], q);
    }
}

/// Reference: one [`axpy_f32`] per key, in key order.
pub fn attn_values_f32(o: &mut [f32], p: &[f32], vals: &[f32], stride: usize) {
    attn_values(o, p, vals, stride)
}

pub fn attn_values_f16(o: &mut [f32], p: &[f32], vals: &[f16], stride: usize) {
    attn_values(o, p, vals, stride)
}

fn attn_values<E: CacheElem>(o: &mut [f32], p: &[f32], vals: &[E], stride: usize) {
    attn_dims(p.len(), o.len(), stride, vals.len());
    for (j, &pj) in p.iter().enumerate() {
        axpy(o, pj, &vals[j * stride..j * stride + o.len()]);
    }
}

/// Reference: one [`attn_scores_f32`] per query.
pub fn attn_scores_group_f32(g: &AttnGroup, q: &[f32], keys: &[f32], out: &mut [f32]) {
    scores_per_query(g, q, keys, out)
}

pub fn attn_scores_group_f16(g: &AttnGroup, q: &[f32], keys: &[f16], out: &mut [f32]) {
    scores_per_query(g, q, keys, out)
}

fn scores_per_query<E: CacheElem>(g: &AttnGroup, q: &[f32], keys: &[E], out: &mut [f32]) {
    let nq = g.queries(q.len(), keys.len(), out.len());
    for i in 0..nq {
        let row = &mut out[i * g.row_stride..i * g.row_stride + g.n];
        attn_scores(&q[i * g.hd..(i + 1) * g.hd], keys, g.stride, row);
    }
}

/// Reference: one [`attn_values_f32`] per query.
pub fn attn_values_group_f32(g: &AttnGroup, o: &mut [f32], p: &[f32], vals: &[f32]) {
    values_per_query(g, o, p, vals)
}

pub fn attn_values_group_f16(g: &AttnGroup, o: &mut [f32], p: &[f32], vals: &[f16]) {
    values_per_query(g, o, p, vals)
}

fn values_per_query<E: CacheElem>(g: &AttnGroup, o: &mut [f32], p: &[f32], vals: &[E]) {
    let nq = g.queries(o.len(), vals.len(), p.len());
    for i in 0..nq {
        let pi = &p[i * g.row_stride..i * g.row_stride + g.n];
        attn_values(&mut o[i * g.hd..(i + 1) * g.hd], pi, vals, g.stride);
    }
}

/// Reference: per query, [`attn_scores_f32`], scaled, [`softmax`] and [`attn_values_f32`]
/// over rows `starts[token]..lens[token]` (no tiles, no online softmax).
pub fn attn_block_f32(
    b: &AttnBlock,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: &mut Vec<f32>,
    out: &mut [f32],
) {
    block_per_query(b, q, k, v, s, out)
}

pub fn attn_block_f16(
    b: &AttnBlock,
    q: &[f32],
    k: &[f16],
    v: &[f16],
    s: &mut Vec<f32>,
    out: &mut [f32],
) {
    block_per_query(b, q, k, v, s, out)
}

/// Reference: this head's values of the rows the block reads, dequantized
/// ([`crate::quant::dequantize_row_q8_0`]) into a compact f32 cache, then
/// [`attn_block_f32`].
pub fn attn_block_q8_0(
    b: &AttnBlock,
    q: &[f32],
    keys: &[BlockQ8_0],
    vals: &[BlockQ8_0],
    scratch: &mut Vec<f32>,
    out: &mut [f32],
) {
    let values = |n: usize| n.checked_mul(QK).expect("attention block: size overflow");
    let (_, rows) = b.check(
        q.len(),
        values(keys.len()),
        values(vals.len()),
        out.len(),
        QK,
    );
    let deq = |blocks: &[BlockQ8_0]| {
        let mut v = vec![0.0f32; rows * b.hd];
        for (j, row) in v.chunks_exact_mut(b.hd).enumerate() {
            let at = j * b.stride / QK;
            crate::quant::dequantize_row_q8_0(&blocks[at..at + b.hd / QK], row);
        }
        v
    };
    let compact = AttnBlock { stride: b.hd, ..*b };
    attn_block_f32(&compact, q, &deq(keys), &deq(vals), scratch, out);
}

fn block_per_query<E: CacheElem>(
    b: &AttnBlock,
    q: &[f32],
    keys: &[E],
    vals: &[E],
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    b.check(q.len(), keys.len(), vals.len(), out.len(), 1);
    for (i, (qi, oi)) in q
        .chunks_exact(b.hd)
        .zip(out.chunks_exact_mut(b.hd))
        .enumerate()
    {
        let (start, len) = (b.start(i / b.heads), b.lens[i / b.heads]);
        scores.clear();
        scores.resize(len - start, 0.0);
        let at = start * b.stride;
        attn_scores(qi, &keys[at..], b.stride, scores);
        scores.iter_mut().for_each(|v| *v *= b.scale);
        softmax(scores);
        oi.fill(0.0);
        attn_values(oi, scores, &vals[at..], b.stride);
    }
}

/// Softmax with `f32::exp`; the maximum is subtracted first, so no score overflows.
pub fn softmax(s: &mut [f32]) {
    let max = s.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let mut sum = 0.0f32;
    for v in s.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    s.iter_mut().for_each(|v| *v *= inv);
}

pub fn silu_mul(g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len());
    for (g, u) in g.iter_mut().zip(u) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// Reference `rows16` Q8_0 kernel (see `Kernels::gemm_q8_0x16`): per row and block the
/// exact integer dot product, then `sum += isum · (d_w · d_x)` in block order.
pub fn gemm_q8_0x16(w: &[BlockQ8_0x16], x: &[ActQ8], out: &mut [f32]) {
    let (nb, toks) = group_dims(w.len(), x.len(), out.len());
    for t in 0..toks {
        let mut sum = [0.0f32; GROUP];
        for (sb, a) in w.iter().zip(&x[t * nb..(t + 1) * nb]) {
            // Chunk by chunk, in the order the bytes are stored (keeps this loop fast
            // enough to run the whole test suite with LLQ_KERNEL=scalar).
            let mut isum = [0i32; GROUP];
            for (c, chunk) in sb.qs.chunks_exact(4 * GROUP).enumerate() {
                let xs = &a.qs[4 * c..4 * c + 4];
                for (acc, q) in isum.iter_mut().zip(chunk.chunks_exact(4)) {
                    *acc += (0..4).map(|b| q[b] as i32 * xs[b] as i32).sum::<i32>();
                }
            }
            for i in 0..GROUP {
                sum[i] += isum[i] as f32 * (f16::from_bits(sb.d[i]).to_f32() * a.d);
            }
        }
        out[t * GROUP..(t + 1) * GROUP].copy_from_slice(&sum);
    }
}

/// Reference `rows16` Q4_0 kernel: as [`gemm_q8_0x16`] with values `nibble − 8`, computed
/// as `Σ nibble·x − 8·Σx` (the same integers).
pub fn gemm_q4_0x16(w: &[BlockQ4_0x16], x: &[ActQ8], out: &mut [f32]) {
    let (nb, toks) = group_dims(w.len(), x.len(), out.len());
    for t in 0..toks {
        let mut sum = [0.0f32; GROUP];
        for (sb, a) in w.iter().zip(&x[t * nb..(t + 1) * nb]) {
            let mut isum = [-8 * a.sum(); GROUP];
            for (c, chunk) in sb.qs.chunks_exact(4 * GROUP).enumerate() {
                let (lo, hi) = (&a.qs[4 * c..4 * c + 4], &a.qs[16 + 4 * c..16 + 4 * c + 4]);
                for (acc, q) in isum.iter_mut().zip(chunk.chunks_exact(4)) {
                    *acc += (0..4)
                        .map(|b| {
                            (q[b] & 0x0f) as i32 * lo[b] as i32 + (q[b] >> 4) as i32 * hi[b] as i32
                        })
                        .sum::<i32>();
                }
            }
            for i in 0..GROUP {
                sum[i] += isum[i] as f32 * (f16::from_bits(sb.d[i]).to_f32() * a.d);
            }
        }
        out[t * GROUP..(t + 1) * GROUP].copy_from_slice(&sum);
    }
}

/// Reference kernel of the coded types (see [`CodedKernels`]): per superblock the slots'
/// `S`/`B`, per sub-block the codes, then per token and row
/// `out += (S·d_x)·Σcode·q_x + B·(d_x·Σq_x)` for each half (Q6_K, whose halves have their
/// own scales) or for the whole 32-column sub-block (every other type), in order.
pub fn gemm_coded<B: CodedX16>(w: &[B], x: &[ActQ8], out: &mut [f32]) {
    let (nb, toks) = group_dims_sub(w.len(), B::SUBS, x.len(), out.len());
    out[..toks * GROUP].fill(0.0);
    let mut sc = SubScales::ZERO;
    let mut codes = [[0u8; SUB]; GROUP];
    for (b, sb) in w.iter().enumerate() {
        sb.scales(&mut sc);
        for s in 0..B::SUBS {
            for (i, row) in codes.iter_mut().enumerate() {
                for (k, c) in row.iter_mut().enumerate() {
                    *c = sb.code(s, i, k);
                }
            }
            for t in 0..toks {
                let a = &x[t * nb + b * B::SUBS + s];
                let o = &mut out[t * GROUP..(t + 1) * GROUP];
                for (i, (o, row)) in o.iter_mut().zip(&codes).enumerate() {
                    let dot = |h: usize| -> i32 {
                        (16 * h..16 * h + 16)
                            .map(|k| row[k] as i32 * a.qs[k] as i32)
                            .sum()
                    };
                    if B::SPLIT {
                        for h in 0..2 {
                            let slot = 2 * s + h;
                            *o += sc.s[slot][i] * a.d * dot(h) as f32
                                + sc.b[slot][i] * (a.d * a.sums[h] as f32);
                        }
                    } else {
                        *o += sc.s[2 * s][i] * a.d * (dot(0) + dot(1)) as f32
                            + sc.b[2 * s][i] * (a.d * a.sum() as f32);
                    }
                }
            }
        }
    }
}
