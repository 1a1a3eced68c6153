//! Rotary position embeddings in Hugging Face's "rotate-half" convention: element i of a
//! head is rotated with element i + head_dim/2 by angle pos · inv_freq[i].

use super::config::{ModelConfig, RopeScaling};

pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    /// Frequencies computed in f32 exactly as transformers does, so angles match bit for bit
    /// as far as `powf` allows.
    pub fn new(cfg: &ModelConfig) -> Rope {
        let hd = cfg.head_dim;
        let mut inv_freq: Vec<f32> = (0..hd / 2)
            .map(|i| 1.0 / cfg.rope_theta.powf((2 * i) as f32 / hd as f32))
            .collect();
        match cfg.rope_scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => inv_freq.iter_mut().for_each(|f| *f /= factor),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_context,
            } => {
                let old = original_context as f32;
                let low_freq_wavelen = old / low_freq_factor;
                let high_freq_wavelen = old / high_freq_factor;
                for f in inv_freq.iter_mut() {
                    let wavelen = 2.0 * std::f32::consts::PI / *f;
                    if wavelen > low_freq_wavelen {
                        *f /= factor;
                    } else if wavelen >= high_freq_wavelen {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        *f = (1.0 - smooth) * *f / factor + smooth * *f;
                    }
                }
            }
        }
        if let Some(factors) = &cfg.rope_freq_factors {
            inv_freq.iter_mut().zip(factors).for_each(|(f, d)| *f /= d);
        }
        Rope { inv_freq }
    }

    /// Base `theta` with no scaling (Gemma 3's sliding-window layers).
    pub fn plain(head_dim: usize, theta: f32) -> Rope {
        let inv_freq = (0..head_dim / 2)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        Rope { inv_freq }
    }

    /// Fill `cos`/`sin` (length head_dim/2) for one position. Below 2^16 the angle is the
    /// f32 product transformers computes; beyond (endless generation with a ring cache)
    /// it is computed in f64, as f32 would lose the high-frequency angles.
    pub fn angles(&self, pos: usize, cos: &mut [f32], sin: &mut [f32]) {
        for ((f, c), s) in self.inv_freq.iter().zip(cos.iter_mut()).zip(sin.iter_mut()) {
            let a = if pos < 1 << 16 {
                (pos as f32 * f) as f64
            } else {
                pos as f64 * *f as f64
            };
            *c = a.cos() as f32;
            *s = a.sin() as f32;
        }
    }

    /// Rotate every head of `x` (heads of `cos.len() * 2` elements, back to back).
    pub fn apply(x: &mut [f32], cos: &[f32], sin: &[f32]) {
        let half = cos.len();
        for head in x.chunks_exact_mut(2 * half) {
            let (a, b) = head.split_at_mut(half);
            for i in 0..half {
                let (x0, x1) = (a[i], b[i]);
                a[i] = x0 * cos[i] - x1 * sin[i];
                b[i] = x1 * cos[i] + x0 * sin[i];
            }
        }
    }
}
