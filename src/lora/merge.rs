//! Merge at conversion: a [`Checkpoint`] that hands out the base's tensors with adapters
//! folded in, `W' = W + Σ_k scale_k · scaling_k · (B_k·A_k)` in f32, so `convert` quantizes
//! the merged weights like any others and the runtime needs nothing new.
//!
//! The wrapper works on the tensors a checkpoint hands out, which are in llq's canonical
//! (Hugging Face) orientation whatever the source: a GGUF base has had its Q/K rows
//! un-permuted by the time `load` returns, which is the row order PEFT trained B in.

use std::borrow::Cow;
use std::path::PathBuf;

use super::{open_peft, LoraAdapter, LoraTarget};
use crate::convert::Checkpoint;
use crate::error::{Error, Result};
use crate::format::{keys, Value};
use crate::model::ModelConfig;

/// A base checkpoint with adapters merged in, in order.
pub struct MergedCheckpoint {
    base: Box<dyn Checkpoint>,
    /// (adapter, user scale)
    adapters: Vec<(LoraAdapter, f32)>,
}

impl MergedCheckpoint {
    /// Wrap `base`; every adapter is checked against its shapes first.
    pub fn new(base: Box<dyn Checkpoint>, adapters: Vec<(LoraAdapter, f32)>) -> Result<Self> {
        for (a, scale) in &adapters {
            if !scale.is_finite() {
                return Err(Error::usage(format!(
                    "LoRA scale {scale} for adapter '{}' is not a finite number",
                    a.name
                )));
            }
            a.check_base(base.config()).map_err(Error::usage)?;
        }
        Ok(MergedCheckpoint { base, adapters })
    }
}

/// Open the adapters in `specs` (path, scale) and wrap `base` with them. A directory is a
/// PEFT adapter, a file a llama.cpp GGUF LoRA adapter.
pub fn merge_adapters(
    base: Box<dyn Checkpoint>,
    specs: &[(PathBuf, f32)],
) -> Result<MergedCheckpoint> {
    let adapters = specs
        .iter()
        .map(|(path, scale)| {
            let a = if path.is_file() {
                super::gguf::open_gguf_adapter(path, base.config())?
            } else {
                open_peft(path)?
            };
            Ok((a, *scale))
        })
        .collect::<Result<Vec<_>>>()?;
    MergedCheckpoint::new(base, adapters)
}

/// `w += factor · (B·A)` for a row-major `[out, in]` matrix. Each row's `B·A` is summed
/// first and scaled once, the order of PEFT's `(B @ A) * scaling` (so a power-of-two
/// scaling merges bit-identically to an f32 reference).
pub fn add_delta(w: &mut [f32], t: &LoraTarget, factor: f32) {
    use rayon::prelude::*;
    debug_assert_eq!(w.len(), t.out_dim * t.in_dim);
    let (r, n) = (t.rank, t.in_dim);
    w.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        let mut acc = vec![0f32; n];
        for (k, &bik) in t.b[i * r..(i + 1) * r].iter().enumerate() {
            for (s, &akj) in acc.iter_mut().zip(&t.a[k * n..(k + 1) * n]) {
                *s += bik * akj;
            }
        }
        for (x, s) in row.iter_mut().zip(&acc) {
            *x += factor * s;
        }
    });
}

impl Checkpoint for MergedCheckpoint {
    fn config(&self) -> &ModelConfig {
        self.base.config()
    }

    fn load(&self, name: &str) -> Result<Cow<'_, [f32]>> {
        let mut w = self.base.load(name)?;
        for (a, scale) in &self.adapters {
            if let Some(t) = a.target(name) {
                if w.len() != t.out_dim * t.in_dim {
                    return Err(Error::usage(format!(
                        "adapter '{}': '{name}' has {} values in the base, B·A has {}",
                        a.name,
                        w.len(),
                        t.out_dim * t.in_dim
                    )));
                }
                // A copy of the base's values only for a tensor an adapter changes.
                add_delta(w.to_mut(), t, scale * a.scaling());
            }
        }
        Ok(w)
    }

    fn extra_metadata(&self) -> Result<Vec<(String, Value)>> {
        let mut m = self.base.extra_metadata()?;
        let a = &self.adapters;
        m.push((
            keys::LORA_NAMES.to_string(),
            Value::ArrStr(a.iter().map(|(a, _)| a.name.clone()).collect()),
        ));
        m.push((
            keys::LORA_SHA256.to_string(),
            Value::ArrStr(a.iter().map(|(a, _)| a.sha256.clone()).collect()),
        ));
        m.push((
            keys::LORA_SCALES.to_string(),
            Value::ArrF32(a.iter().map(|(_, s)| *s).collect()),
        ));
        m.push((
            keys::LORA_SCALINGS.to_string(),
            Value::ArrF32(a.iter().map(|(a, _)| a.scaling()).collect()),
        ));
        Ok(m)
    }

    fn release(&self, name: &str) {
        self.base.release(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_is_b_times_a() {
        // A = [[1, 2, 3]], B = [[1], [-1]]: B·A = [[1, 2, 3], [-1, -2, -3]].
        let t = LoraTarget {
            name: "x".into(),
            rank: 1,
            in_dim: 3,
            out_dim: 2,
            a: vec![1.0, 2.0, 3.0],
            b: vec![1.0, -1.0],
        };
        let mut w = vec![0.5; 6];
        add_delta(&mut w, &t, 2.0);
        assert_eq!(w, [2.5, 4.5, 6.5, -1.5, -3.5, -5.5]);
    }
}
