//! Run-time application: `y = W·x + scale · scaling · B·(A·x)` computed beside the base
//! model's matmul, so one mapped base serves any number of adapters and contexts with no
//! copy of its weights.
//!
//! The two rank-r products use attention's kernels, which have exactly their shape:
//! `A·x` is r dot products of a token against consecutive rows (`attn_scores_*`), and
//! `B·(A·x)` with `Bᵀ` stored row-major is a weighted sum of r rows (`attn_values_*`),
//! each output element kept in a register across the r terms. A prompt's tokens go to the
//! pool one per task; a single token (decode) splits the rows of `A` and the columns of
//! `Bᵀ` across the pool when the matrices are large enough to pay for it.

use std::sync::Arc;

use rayon::prelude::*;

use super::file::{Adapter, Mat, TargetRef};
use super::Proj;
use crate::error::Result;
use crate::kernels::Kernels;
use crate::model::ModelConfig;

/// The adapters one context applies, each with its scale.
#[derive(Clone, Default)]
pub struct AdapterSet {
    list: Vec<(Arc<Adapter>, f32)>,
    /// The model configuration the adapters were checked against (`None` when empty).
    checked: Option<ModelConfig>,
}

/// Buffers reused by every [`AdapterSet::apply`] of a context.
#[derive(Default)]
pub struct LoraScratch {
    tmp: Vec<f32>,
}

/// Multiply-adds below which a single token's product stays on the calling thread (a
/// fork-join costs a few µs, about 30k multiply-adds of one core).
const PAR_MIN_WORK: usize = 1 << 16;

impl AdapterSet {
    /// Check each adapter against `cfg`'s model and keep them in order.
    pub fn new(list: Vec<(Arc<Adapter>, f32)>, cfg: &ModelConfig) -> Result<AdapterSet> {
        for (a, scale) in &list {
            if !scale.is_finite() {
                return Err(crate::Error::usage(format!(
                    "LoRA scale {scale} for '{}' is not a finite number",
                    a.path().display()
                )));
            }
            a.check_model(cfg)?;
        }
        let checked = (!list.is_empty()).then(|| cfg.clone());
        Ok(AdapterSet { list, checked })
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether the set may be applied to a model of configuration `cfg` (an empty set
    /// fits any).
    pub fn fits(&self, cfg: &ModelConfig) -> bool {
        self.checked.as_ref().is_none_or(|c| c == cfg)
    }

    pub fn adapters(&self) -> &[(Arc<Adapter>, f32)] {
        &self.list
    }

    /// `out[t·rows + i] += Σ_adapters scale · scaling · Σ_k B[i,k] · (A·x_t)_k` for the `n`
    /// tokens of `x` (`n × in`) and `out` (`n × out`), where `out` already holds `W·x`.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &self,
        k: &Kernels,
        layer: usize,
        proj: Proj,
        x: &[f32],
        n: usize,
        out: &mut [f32],
        scratch: &mut LoraScratch,
    ) {
        for (a, scale) in &self.list {
            if let Some(t) = a.target(layer, proj) {
                let factor = scale * a.scaling();
                apply_one(k, a, t, factor, x, n, out, &mut scratch.tmp);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn apply_one(
    k: &Kernels,
    a: &Adapter,
    t: &TargetRef,
    factor: f32,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    tmp: &mut Vec<f32>,
) {
    let (r, din, dout) = (t.rank, t.in_dim, t.out_dim);
    assert_eq!(x.len(), n * din, "LoRA input");
    assert_eq!(out.len(), n * dout, "LoRA output");
    tmp.resize(n * r, 0.0);
    let (am, btm) = a.matrices(t);
    // s[j] = A[row0 + j, :] · xt
    let scores = |xt: &[f32], row0: usize, s: &mut [f32]| match am {
        Mat::F32(m) => (k.attn_scores_f32)(xt, &m[row0 * din..], din, s),
        Mat::F16(m) => (k.attn_scores_f16)(xt, &m[row0 * din..], din, s),
    };
    // o[c] += Σ_k p[k] · Bᵀ[k, col0 + c]
    let values = |o: &mut [f32], p: &[f32], col0: usize| match btm {
        Mat::F32(m) => (k.attn_values_f32)(o, p, &m[col0..], dout),
        Mat::F16(m) => (k.attn_values_f16)(o, p, &m[col0..], dout),
    };
    let threads = rayon::current_num_threads().max(1);
    if n > 1 {
        x.par_chunks_exact(din)
            .zip(tmp.par_chunks_exact_mut(r))
            .for_each(|(xt, s)| {
                scores(xt, 0, s);
                s.iter_mut().for_each(|v| *v *= factor);
            });
        out.par_chunks_exact_mut(dout)
            .zip(tmp.par_chunks_exact(r))
            .for_each(|(o, p)| values(o, p, 0));
        return;
    }
    // One token.
    if threads > 1 && r * din >= PAR_MIN_WORK && r >= 2 {
        let rows = r.div_ceil(threads);
        tmp.par_chunks_mut(rows)
            .enumerate()
            .for_each(|(c, s)| scores(x, c * rows, s));
    } else {
        scores(x, 0, tmp);
    }
    tmp.iter_mut().for_each(|v| *v *= factor);
    if threads > 1 && r * dout >= PAR_MIN_WORK {
        // Column chunks of whole 16-float runs, so the SIMD kernels see no tails but the last.
        let cols = dout.div_ceil(threads).next_multiple_of(16);
        let p = &tmp[..];
        out.par_chunks_mut(cols)
            .enumerate()
            .for_each(|(c, o)| values(o, p, c * cols));
    } else {
        values(out, tmp, 0);
    }
}
