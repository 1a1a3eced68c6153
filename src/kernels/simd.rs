//! Loop skeletons written once over small SIMD traits; each ISA supplies only its
//! vector type and a handful of `#[inline(always)]` primitives.
//!
//! * [`F32Simd`]: an f32 vector (width, load, store, f16 load, fma, add, sub, mul, max,
//!   `exp`, reduce). The float dots, `axpy`, the attention loops below and the blocked
//!   attention (`super::attn_block`) are generic over it.
//! * [`Q8Dot`]: one Q8_0 block pair's contribution to a float accumulator (`smull` +
//!   `sadalp` on NEON, SDOT on dotprod, `vpmaddwd` on AVX2 and AVX-512); [`dot_q8_0`] is
//!   the two-accumulator loop over a row around it.
//!
//! A value of an implementing type is a *token*: it can only be made (unsafely) where the
//! ISA's features are known to be present, so its methods are safe to call. The skeletons
//! are `#[inline(always)]` and meant to be called from a `#[target_feature]` function of
//! the same ISA (see [`float_kernels!`]), into which they and the primitives inline.
//!
//! Every skeleton keeps the exact operation order of the per-ISA loops it replaced, so the
//! results are bit-identical to them (tests/kernels.rs checks every level against scalar).

use half::f16;

use crate::quant::BlockQ8_0;

/// An f32 SIMD vector type and its primitives (see the module comment for the token rule).
pub(crate) trait F32Simd: Copy {
    type V: Copy;
    /// f32 lanes per vector.
    const LANES: usize;
    fn zero(self) -> Self::V;
    fn splat(self, a: f32) -> Self::V;
    /// `acc + a · b`, one rounding.
    fn fma(self, a: Self::V, b: Self::V, acc: Self::V) -> Self::V;
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise maximum (NaN handling is the ISA's).
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// `e^x` per lane with [`super::exp_poly`]'s polynomial.
    fn exp(self, x: Self::V) -> Self::V;
    /// Sum of the lanes (in the ISA's own, fixed order).
    fn reduce(self, v: Self::V) -> f32;
    /// # Safety
    /// `LANES` floats must be readable at `p`.
    unsafe fn load(self, p: *const f32) -> Self::V;
    /// # Safety
    /// `LANES` floats must be writable at `p`.
    unsafe fn store(self, p: *mut f32, v: Self::V);
    /// `LANES` f16 values converted to f32.
    ///
    /// # Safety
    /// `LANES` f16 must be readable at `p`.
    unsafe fn load_f16(self, p: *const f16) -> Self::V;
    /// `2 · LANES` f16 values as two vectors (NEON converts one 128-bit load with
    /// `fcvtl` + `fcvtl2`).
    ///
    /// # Safety
    /// `2 · LANES` f16 must be readable at `p`.
    #[inline(always)]
    unsafe fn load2_f16(self, p: *const f16) -> [Self::V; 2] {
        // SAFETY: 2 · LANES readable f16 at `p` (caller).
        unsafe { [self.load_f16(p), self.load_f16(p.add(Self::LANES))] }
    }
    /// One f16 to f32 (the scalar tails).
    fn h2f(self, h: f16) -> f32;
}

/// An element type the float skeletons read: f32 or f16.
pub(crate) trait Elem: Copy {
    /// `U` consecutive vectors (`U` is 1 or 2).
    ///
    /// # Safety
    /// `U · LANES` values must be readable at `p`.
    unsafe fn load_n<S: F32Simd, const U: usize>(s: S, p: *const Self) -> [S::V; U];
    fn to_f32<S: F32Simd>(s: S, v: Self) -> f32;
}

impl Elem for f32 {
    #[inline(always)]
    unsafe fn load_n<S: F32Simd, const U: usize>(s: S, p: *const f32) -> [S::V; U] {
        // SAFETY: U · LANES readable floats at `p` (caller).
        std::array::from_fn(|k| unsafe { s.load(p.add(k * S::LANES)) })
    }
    #[inline(always)]
    fn to_f32<S: F32Simd>(_: S, v: f32) -> f32 {
        v
    }
}

impl Elem for f16 {
    #[inline(always)]
    unsafe fn load_n<S: F32Simd, const U: usize>(s: S, p: *const f16) -> [S::V; U] {
        if U == 2 {
            // SAFETY: 2 · LANES readable f16 at `p` (caller, U = 2).
            let v = unsafe { s.load2_f16(p) };
            std::array::from_fn(|k| v[k])
        } else {
            // SAFETY: U · LANES readable f16 at `p` (caller).
            std::array::from_fn(|k| unsafe { s.load_f16(p.add(k * S::LANES)) })
        }
    }
    #[inline(always)]
    fn to_f32<S: F32Simd>(s: S, v: f16) -> f32 {
        s.h2f(v)
    }
}

/// `Σ w[i] · x[i]`: four accumulators over `4 · LANES` values per step (vectors `2k` and
/// `2k + 1` loaded as a pair), added `(a0 + a1) + (a2 + a3)` and reduced, then the tail
/// `s += w[i] · x[i]` in order. Panics unless the lengths are equal.
#[inline(always)]
pub(crate) fn dot<S: F32Simd, E: Elem>(s: S, w: &[E], x: &[f32]) -> f32 {
    assert_eq!(w.len(), x.len());
    let l = S::LANES;
    let n = w.len() / (4 * l) * (4 * l);
    let mut acc = [s.zero(); 4];
    for i in (0..n).step_by(4 * l) {
        for k in 0..2 {
            let o = i + 2 * l * k;
            // SAFETY: o + 2 · LANES <= n <= len of both slices.
            let (wv, xv) = unsafe {
                (
                    E::load_n::<S, 2>(s, w.as_ptr().add(o)),
                    f32::load_n::<S, 2>(s, x.as_ptr().add(o)),
                )
            };
            acc[2 * k] = s.fma(wv[0], xv[0], acc[2 * k]);
            acc[2 * k + 1] = s.fma(wv[1], xv[1], acc[2 * k + 1]);
        }
    }
    let mut r = s.reduce(s.add(s.add(acc[0], acc[1]), s.add(acc[2], acc[3])));
    for i in n..w.len() {
        r += E::to_f32(s, w[i]) * x[i];
    }
    r
}

/// `out += a · x`, `U · LANES` values per step, then the tail `out[i] += a · x[i]`.
/// Panics unless the lengths are equal.
#[inline(always)]
pub(crate) fn axpy<S: F32Simd, E: Elem, const U: usize>(s: S, out: &mut [f32], a: f32, x: &[E]) {
    assert_eq!(out.len(), x.len());
    let step = U * S::LANES;
    let n = out.len() / step * step;
    let av = s.splat(a);
    for i in (0..n).step_by(step) {
        // SAFETY: i + U · LANES <= n <= len of both slices.
        unsafe {
            let o = out.as_mut_ptr().add(i);
            let xv = E::load_n::<S, U>(s, x.as_ptr().add(i));
            let ov = f32::load_n::<S, U>(s, o);
            for k in 0..U {
                s.store(o.add(k * S::LANES), s.fma(av, xv[k], ov[k]));
            }
        }
    }
    for i in n..out.len() {
        out[i] += a * E::to_f32(s, x[i]);
    }
}

/// `out[j] = dot(keys[j · stride..][..q.len()], q)` (see `Kernels::attn_scores_f32`).
#[inline(always)]
pub(crate) fn attn_scores<S: F32Simd, E: Elem>(
    s: S,
    q: &[f32],
    keys: &[E],
    stride: usize,
    out: &mut [f32],
) {
    super::attn_dims(out.len(), q.len(), stride, keys.len());
    for (j, o) in out.iter_mut().enumerate() {
        *o = dot(s, &keys[j * stride..j * stride + q.len()], q);
    }
}

/// `o[d] += Σ_j p[j] · vals[j · stride + d]`: `U · LANES` output values at a time stay in
/// registers across all keys; the tail element by element, keys in order.
#[inline(always)]
pub(crate) fn attn_values<S: F32Simd, E: Elem, const U: usize>(
    s: S,
    o: &mut [f32],
    p: &[f32],
    vals: &[E],
    stride: usize,
) {
    super::attn_dims(p.len(), o.len(), stride, vals.len());
    let step = U * S::LANES;
    let n = o.len() / step * step;
    for c in (0..n).step_by(step) {
        // SAFETY: c + U · LANES <= o.len(); `attn_dims` checked that rows j < p.len() of
        // o.len() values at `stride` are inside `vals`.
        unsafe {
            let mut acc = f32::load_n::<S, U>(s, o.as_ptr().add(c));
            for (j, &pj) in p.iter().enumerate() {
                let v = E::load_n::<S, U>(s, vals.as_ptr().add(j * stride + c));
                for k in 0..U {
                    acc[k] = s.fma(s.splat(pj), v[k], acc[k]);
                }
            }
            for (k, a) in acc.iter().enumerate() {
                s.store(o.as_mut_ptr().add(c + k * S::LANES), *a);
            }
        }
    }
    for (d, od) in o.iter_mut().enumerate().skip(n) {
        for (j, &pj) in p.iter().enumerate() {
            *od += pj * E::to_f32(s, vals[j * stride + d]);
        }
    }
}

/// Queries per pass of the grouped attention loops: their accumulators stay in registers
/// (4 · `U` vectors for the values), and each key or value row is loaded once per pass.
const GROUP_CHUNK: usize = 4;

/// Grouped attention scores (see `Kernels::attn_scores_group_f32`): passes of up to
/// [`GROUP_CHUNK`] queries; per key, each `LANES`-wide slice of the row is loaded (and
/// converted) once and multiplied into one accumulator per query, which is then reduced,
/// plus the tail `Σ q[d] · k[d]` in order.
#[inline(always)]
pub(crate) fn attn_scores_group<S: F32Simd, E: Elem>(
    s: S,
    g: &super::AttnGroup,
    q: &[f32],
    keys: &[E],
    out: &mut [f32],
) {
    let nq = g.queries(q.len(), keys.len(), out.len());
    let mut i = 0;
    while i < nq {
        match nq - i {
            1 => scores_pass::<S, E, 1>(s, g, q, keys, out, i),
            2 => scores_pass::<S, E, 2>(s, g, q, keys, out, i),
            3 => scores_pass::<S, E, 3>(s, g, q, keys, out, i),
            _ => scores_pass::<S, E, GROUP_CHUNK>(s, g, q, keys, out, i),
        }
        i += (nq - i).min(GROUP_CHUNK);
    }
}

/// Scores of queries `i0..i0 + R` (checked by the caller through `AttnGroup::queries`).
#[inline(always)]
fn scores_pass<S: F32Simd, E: Elem, const R: usize>(
    s: S,
    g: &super::AttnGroup,
    q: &[f32],
    keys: &[E],
    out: &mut [f32],
    i0: usize,
) {
    let (hd, l) = (g.hd, S::LANES);
    let m = hd / l * l;
    let qs: [&[f32]; R] = std::array::from_fn(|r| &q[(i0 + r) * hd..(i0 + r + 1) * hd]);
    for j in 0..g.n {
        let key = &keys[j * g.stride..j * g.stride + hd];
        let mut acc = [s.zero(); R];
        for d in (0..m).step_by(l) {
            // SAFETY: d + LANES <= m <= hd, the length of `key` and of every `qs[r]`.
            unsafe {
                let kv = E::load_n::<S, 1>(s, key.as_ptr().add(d))[0];
                for r in 0..R {
                    acc[r] = s.fma(kv, s.load(qs[r].as_ptr().add(d)), acc[r]);
                }
            }
        }
        for r in 0..R {
            let mut v = s.reduce(acc[r]);
            for d in m..hd {
                v += E::to_f32(s, key[d]) * qs[r][d];
            }
            out[(i0 + r) * g.row_stride + j] = v;
        }
    }
}

/// Grouped attention output (see `Kernels::attn_values_group_f32`): passes of up to
/// [`GROUP_CHUNK`] queries; `U · LANES` output values of each query stay in registers
/// across all keys while each value row's slice is loaded (and converted) once per pass;
/// the tail element by element, keys in order.
#[inline(always)]
pub(crate) fn attn_values_group<S: F32Simd, E: Elem, const U: usize>(
    s: S,
    g: &super::AttnGroup,
    o: &mut [f32],
    p: &[f32],
    vals: &[E],
) {
    let nq = g.queries(o.len(), vals.len(), p.len());
    let mut i = 0;
    while i < nq {
        match nq - i {
            1 => values_pass::<S, E, U, 1>(s, g, o, p, vals, i),
            2 => values_pass::<S, E, U, 2>(s, g, o, p, vals, i),
            3 => values_pass::<S, E, U, 3>(s, g, o, p, vals, i),
            _ => values_pass::<S, E, U, GROUP_CHUNK>(s, g, o, p, vals, i),
        }
        i += (nq - i).min(GROUP_CHUNK);
    }
}

/// Output of queries `i0..i0 + R` (checked by the caller through `AttnGroup::queries`).
#[inline(always)]
fn values_pass<S: F32Simd, E: Elem, const U: usize, const R: usize>(
    s: S,
    g: &super::AttnGroup,
    o: &mut [f32],
    p: &[f32],
    vals: &[E],
    i0: usize,
) {
    let (hd, n) = (g.hd, g.n);
    let step = U * S::LANES;
    let m = hd / step * step;
    let ps: [&[f32]; R] = std::array::from_fn(|r| &p[(i0 + r) * g.row_stride..][..n]);
    let os = o[i0 * hd..(i0 + R) * hd].as_mut_ptr();
    for c in (0..m).step_by(step) {
        // SAFETY: c + U · LANES <= m <= hd, so each query's output slice `c..c + step` is
        // inside `o` (R rows of hd from i0); `AttnGroup::queries` checked that rows j < n
        // of hd values at `stride` are inside `vals`.
        unsafe {
            let mut acc: [[S::V; U]; R] =
                std::array::from_fn(|r| f32::load_n::<S, U>(s, os.add(r * hd + c)));
            // `j` indexes the value rows and every query's probabilities alike.
            #[allow(clippy::needless_range_loop)]
            for j in 0..n {
                let v = E::load_n::<S, U>(s, vals.as_ptr().add(j * g.stride + c));
                for r in 0..R {
                    let pj = s.splat(ps[r][j]);
                    for k in 0..U {
                        acc[r][k] = s.fma(pj, v[k], acc[r][k]);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                for (k, v) in a.iter().enumerate() {
                    s.store(os.add(r * hd + c + k * S::LANES), *v);
                }
            }
        }
    }
    for r in 0..R {
        let orow = &mut o[(i0 + r) * hd..(i0 + r + 1) * hd];
        for (d, od) in orow.iter_mut().enumerate().skip(m) {
            for (j, &pj) in ps[r].iter().enumerate() {
                *od += pj * E::to_f32(s, vals[j * g.stride + d]);
            }
        }
    }
}

/// One Q8_0 block pair's `Σ w·x · d_w · d_x` added to a float accumulator.
pub(crate) trait Q8Dot: Copy {
    type Acc: Copy;
    fn zero(self) -> Self::Acc;
    fn step(self, acc: Self::Acc, w: &BlockQ8_0, x: &BlockQ8_0) -> Self::Acc;
    /// `reduce(a + b)`.
    fn finish(self, a: Self::Acc, b: Self::Acc) -> f32;
}

/// `Σ_b d_w · d_x · Σ w·x` over a row pair of Q8_0 blocks: even and odd blocks in two
/// named accumulators (an indexed array would live in memory), an odd last block into the
/// first. Panics unless the lengths are equal.
#[inline(always)]
pub(crate) fn dot_q8_0<K: Q8Dot>(k: K, w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), x.len());
    let (mut acc0, mut acc1) = (k.zero(), k.zero());
    let (wc, xc) = (w.chunks_exact(2), x.chunks_exact(2));
    let (wt, xt) = (wc.remainder(), xc.remainder());
    for (a, b) in wc.zip(xc) {
        acc0 = k.step(acc0, &a[0], &b[0]);
        acc1 = k.step(acc1, &a[1], &b[1]);
    }
    for (a, b) in wt.iter().zip(xt) {
        acc0 = k.step(acc0, a, b);
    }
    k.finish(acc0, acc1)
}

/// Generates the safe table entry `fn $name(args) -> ret`: a `#[target_feature($feat)]`
/// function that makes the token `$tok` (an `unsafe` expression) and runs `$body` with it
/// as `$s`, behind a safe wrapper.
///
/// Soundness rests on the caller: the generated function may only be installed in tables
/// that `push_available` hands out after detecting `$feat`.
macro_rules! kernel {
    ($feat:literal, $tok:expr, $name:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty, |$s:ident| $body:expr) => {
        pub(super) fn $name($($arg: $ty),*) -> $ret {
            #[target_feature(enable = $feat)]
            fn imp($($arg: $ty),*) -> $ret {
                // SAFETY: this function is compiled for `$feat` and only called (below)
                // from table entries installed after detecting it, so the token is valid.
                let $s = unsafe { $tok };
                $body
            }
            // SAFETY: only reachable through kernel tables that `push_available` hands
            // out after detecting `$feat`.
            unsafe { imp($($arg),*) }
        }
    };
}
pub(crate) use kernel;

/// Generates the table entry `encode_rows` (the converter's block encoders) for one ISA
/// with [`kernel!`]: the reference [`crate::quant::encode_rows`] and the search under it,
/// inlined and compiled for `$feat`'s vector width. Bit-identical results on every level:
/// the same operations in the same order (Rust contracts no multiply-add and LLVM
/// reorders no float sum), only more lanes at a time.
macro_rules! encode_kernels {
    ($feat:literal, $tok:expr) => {
        $crate::kernels::simd::kernel!($feat, $tok, encode_rows,
            (dtype: $crate::quant::DType, src: &[f32], weights: Option<&[f32]>, out: &mut [u8]) -> (),
            |_s| $crate::quant::encode_rows(dtype, src, weights, out));
    };
}
pub(crate) use encode_kernels;

/// Generates the safe table entries `dot_f32`, `dot_f16`, `axpy_f32`, `axpy_f16`,
/// `attn_scores_f32`, `attn_scores_f16`, `attn_values_f32`, `attn_values_f16` and their
/// `_group_` forms of one ISA from the skeletons above with [`kernel!`]
/// ([`float_value_kernels!`] and [`attn_score_kernels!`]). `$u16`: vectors per step of
/// the f16 `axpy` / `attn_values` loops (1 or 2); `$rows`: rows of the blocked attention's
/// register tiles (4 with 16 vector registers, 8 with 32).
macro_rules! float_kernels {
    ($feat:literal, $tok:expr, $u16:literal, $rows:literal) => {
        $crate::kernels::simd::float_value_kernels!($feat, $tok, $u16, $rows);
        $crate::kernels::simd::attn_score_kernels!($feat, $tok);
    };
}
pub(crate) use float_kernels;

/// The entries of [`float_kernels!`] that stream rows into accumulators: `dot_f32`,
/// `dot_f16`, `axpy_f32`, `axpy_f16`, `attn_values_f32`, `attn_values_f16` and
/// `attn_values_group_f32`, `attn_values_group_f16`, and the blocked prompt attention
/// `attn_block_f32`, `attn_block_f16`, `attn_block_q8_0`.
macro_rules! float_value_kernels {
    ($feat:literal, $tok:expr, $u16:literal, $rows:literal) => {
        $crate::kernels::simd::kernel!($feat, $tok, dot_f32, (w: &[f32], x: &[f32]) -> f32,
            |s| $crate::kernels::simd::dot(s, w, x));
        $crate::kernels::simd::kernel!($feat, $tok, dot_f16, (w: &[half::f16], x: &[f32]) -> f32,
            |s| $crate::kernels::simd::dot(s, w, x));
        $crate::kernels::simd::kernel!($feat, $tok, axpy_f32, (out: &mut [f32], a: f32, x: &[f32]) -> (),
            |s| $crate::kernels::simd::axpy::<_, f32, 1>(s, out, a, x));
        $crate::kernels::simd::kernel!($feat, $tok, axpy_f16, (out: &mut [f32], a: f32, x: &[half::f16]) -> (),
            |s| $crate::kernels::simd::axpy::<_, half::f16, $u16>(s, out, a, x));
        $crate::kernels::simd::kernel!($feat, $tok, attn_values_f32,
            (o: &mut [f32], p: &[f32], vals: &[f32], stride: usize) -> (),
            |s| $crate::kernels::simd::attn_values::<_, f32, 1>(s, o, p, vals, stride));
        $crate::kernels::simd::kernel!($feat, $tok, attn_values_f16,
            (o: &mut [f32], p: &[f32], vals: &[half::f16], stride: usize) -> (),
            |s| $crate::kernels::simd::attn_values::<_, half::f16, $u16>(s, o, p, vals, stride));
        $crate::kernels::simd::kernel!($feat, $tok, attn_values_group_f32,
            (g: &$crate::kernels::AttnGroup, o: &mut [f32], p: &[f32], vals: &[f32]) -> (),
            |s| $crate::kernels::simd::attn_values_group::<_, f32, 1>(s, g, o, p, vals));
        $crate::kernels::simd::kernel!($feat, $tok, attn_values_group_f16,
            (g: &$crate::kernels::AttnGroup, o: &mut [f32], p: &[f32], vals: &[half::f16]) -> (),
            |s| $crate::kernels::simd::attn_values_group::<_, half::f16, $u16>(s, g, o, p, vals));
        $crate::kernels::simd::kernel!($feat, $tok, attn_block_f32,
            (b: &$crate::kernels::AttnBlock, q: &[f32], keys: &[f32], vals: &[f32],
             scratch: &mut Vec<f32>, out: &mut [f32]) -> (),
            |s| $crate::kernels::attn_block::attn_block::<_, _, $rows>(s, b, q, keys, vals, scratch, out));
        $crate::kernels::simd::kernel!($feat, $tok, attn_block_f16,
            (b: &$crate::kernels::AttnBlock, q: &[f32], keys: &[half::f16], vals: &[half::f16],
             scratch: &mut Vec<f32>, out: &mut [f32]) -> (),
            |s| $crate::kernels::attn_block::attn_block::<_, _, $rows>(s, b, q, keys, vals, scratch, out));
        $crate::kernels::simd::kernel!($feat, $tok, attn_block_q8_0,
            (b: &$crate::kernels::AttnBlock, q: &[f32], keys: &[$crate::quant::BlockQ8_0],
             vals: &[$crate::quant::BlockQ8_0], scratch: &mut Vec<f32>, out: &mut [f32]) -> (),
            |s| $crate::kernels::attn_block::attn_block::<_, _, $rows>(s, b, q, keys, vals, scratch, out));
    };
}
pub(crate) use float_value_kernels;

/// The attention-score entries of [`float_kernels!`]: `attn_scores_f32`,
/// `attn_scores_f16`, `attn_scores_group_f32`, `attn_scores_group_f16` (one horizontal
/// reduction per query and key).
macro_rules! attn_score_kernels {
    ($feat:literal, $tok:expr) => {
        $crate::kernels::simd::kernel!($feat, $tok, attn_scores_f32,
            (q: &[f32], keys: &[f32], stride: usize, out: &mut [f32]) -> (),
            |s| $crate::kernels::simd::attn_scores(s, q, keys, stride, out));
        $crate::kernels::simd::kernel!($feat, $tok, attn_scores_f16,
            (q: &[f32], keys: &[half::f16], stride: usize, out: &mut [f32]) -> (),
            |s| $crate::kernels::simd::attn_scores(s, q, keys, stride, out));
        $crate::kernels::simd::kernel!($feat, $tok, attn_scores_group_f32,
            (g: &$crate::kernels::AttnGroup, q: &[f32], keys: &[f32], out: &mut [f32]) -> (),
            |s| $crate::kernels::simd::attn_scores_group(s, g, q, keys, out));
        $crate::kernels::simd::kernel!($feat, $tok, attn_scores_group_f16,
            (g: &$crate::kernels::AttnGroup, q: &[f32], keys: &[half::f16], out: &mut [f32]) -> (),
            |s| $crate::kernels::simd::attn_scores_group(s, g, q, keys, out));
    };
}
pub(crate) use attn_score_kernels;

/// Implements [`F32Simd`] for a token type from a table of the ISA's intrinsics (in the
/// spirit of ggml's `simd-mappings.h`): each entry is a function or closure called inside
/// an `unsafe` block. The token type must only be constructible (unsafely) where the
/// features those intrinsics need were detected.
macro_rules! impl_f32_simd {
    ($tok:ty, $v:ty, $lanes:literal {
        zero: $zero:expr, splat: $splat:expr, fma: $fma:expr, add: $add:expr,
        sub: $sub:expr, mul: $mul:expr, max: $max:expr, exp: $exp:expr,
        reduce: $reduce:expr, load: $load:expr, store: $store:expr,
        load_f16: $lf16:expr, h2f: $h2f:expr $(, load2_f16: $l2:expr)? $(,)?
    }) => {
        // SAFETY (every block in this impl): a token exists only where the intrinsics'
        // features were detected; pointer arguments are the callers' (see `F32Simd`).
        impl $crate::kernels::simd::F32Simd for $tok {
            type V = $v;
            const LANES: usize = $lanes;
            #[inline(always)]
            fn zero(self) -> $v {
                // SAFETY: see the impl.
                unsafe { ($zero)() }
            }
            #[inline(always)]
            fn splat(self, a: f32) -> $v {
                // SAFETY: see the impl.
                unsafe { ($splat)(a) }
            }
            #[inline(always)]
            fn fma(self, a: $v, b: $v, acc: $v) -> $v {
                // SAFETY: see the impl.
                unsafe { ($fma)(a, b, acc) }
            }
            #[inline(always)]
            fn add(self, a: $v, b: $v) -> $v {
                // SAFETY: see the impl.
                unsafe { ($add)(a, b) }
            }
            #[inline(always)]
            fn sub(self, a: $v, b: $v) -> $v {
                // SAFETY: see the impl.
                unsafe { ($sub)(a, b) }
            }
            #[inline(always)]
            fn mul(self, a: $v, b: $v) -> $v {
                // SAFETY: see the impl.
                unsafe { ($mul)(a, b) }
            }
            #[inline(always)]
            fn max(self, a: $v, b: $v) -> $v {
                // SAFETY: see the impl.
                unsafe { ($max)(a, b) }
            }
            #[inline(always)]
            fn exp(self, x: $v) -> $v {
                // SAFETY: see the impl.
                unsafe { ($exp)(x) }
            }
            #[inline(always)]
            fn reduce(self, v: $v) -> f32 {
                // SAFETY: see the impl.
                unsafe { ($reduce)(v) }
            }
            #[inline(always)]
            unsafe fn load(self, p: *const f32) -> $v {
                // SAFETY: see the impl.
                unsafe { ($load)(p) }
            }
            #[inline(always)]
            unsafe fn store(self, p: *mut f32, v: $v) {
                // SAFETY: see the impl.
                unsafe { ($store)(p, v) }
            }
            #[inline(always)]
            unsafe fn load_f16(self, p: *const half::f16) -> $v {
                // SAFETY: see the impl.
                unsafe { ($lf16)(p) }
            }
            $(
                #[inline(always)]
                unsafe fn load2_f16(self, p: *const half::f16) -> [$v; 2] {
                    // SAFETY: see the impl.
                    unsafe { ($l2)(p) }
                }
            )?
            #[inline(always)]
            fn h2f(self, h: half::f16) -> f32 {
                // SAFETY: see the impl.
                unsafe { ($h2f)(h.to_bits()) }
            }
        }
    };
}
pub(crate) use impl_f32_simd;
