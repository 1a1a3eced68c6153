//! Dot-product kernels behind one table of function pointers, chosen once per process.
//!
//! Every kernel has a scalar reference in [`scalar`]; ISA-specific versions fill the same
//! table and are tested against it. `LLQ_KERNEL=<name>` forces a level.

pub mod matmul;
pub mod scalar;

use std::sync::OnceLock;

use half::f16;

use crate::quant::{BlockQ4_0, BlockQ8_0};

/// One implementation level of every kernel the forward pass calls.
pub struct Kernels {
    pub name: &'static str,
    /// Σ w·x over Q8_0 weight blocks and Q8_0 activation blocks.
    pub dot_q8_0: fn(&[BlockQ8_0], &[BlockQ8_0]) -> f32,
    /// Σ w·x over Q4_0 weight blocks and Q8_0 activation blocks.
    pub dot_q4_0: fn(&[BlockQ4_0], &[BlockQ8_0]) -> f32,
    pub dot_f16: fn(&[f16], &[f32]) -> f32,
    pub dot_f32: fn(&[f32], &[f32]) -> f32,
    /// Quantize activations to Q8_0 (the same math as the reference quantizer).
    pub quantize_q8_0: fn(&[f32], &mut [BlockQ8_0]),
}

/// Every level compiled into this binary, scalar first.
pub fn available() -> Vec<&'static Kernels> {
    vec![&scalar::KERNELS]
}

static SELECTED: OnceLock<&'static Kernels> = OnceLock::new();

/// The kernels for this process: `LLQ_KERNEL` if set, else the best the CPU supports.
/// Panics with a clear message if `LLQ_KERNEL` names a level this CPU cannot run; the CLI
/// calls [`select`] first to turn that into an error.
pub fn kernels() -> &'static Kernels {
    SELECTED.get_or_init(|| select().unwrap_or_else(|e| panic!("{e}")))
}

/// Choose the kernel level from `LLQ_KERNEL` or the CPU's features.
pub fn select() -> Result<&'static Kernels, String> {
    let all = available();
    match std::env::var("LLQ_KERNEL") {
        Ok(want) if !want.is_empty() => {
            all.iter().copied().find(|k| k.name == want).ok_or_else(|| {
                format!(
                    "LLQ_KERNEL={want}: not available on this CPU/binary (available: {})",
                    all.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
                )
            })
        }
        _ => Ok(*all.last().unwrap()),
    }
}
