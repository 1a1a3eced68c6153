//! Token samplers with llama.cpp's flags and order: repetition penalty → top-k → top-p →
//! min-p → temperature → draw. `temp <= 0` is greedy. Seeded, so runs are reproducible.

use std::collections::VecDeque;

#[derive(Clone, Debug)]
pub struct SamplerParams {
    pub temp: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    /// How many recent tokens the repetition penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            temp: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0x5eed,
        }
    }
}

impl SamplerParams {
    /// The one check of sampling parameters, shared by every shell (CLI flags, C API).
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::usage(m));
        if !(self.temp.is_finite() && self.temp >= 0.0) {
            return bad(format!(
                "temperature {} must be a finite number >= 0 (0 = greedy)",
                self.temp
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top-p {} must be in (0, 1] (1 = off)", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min-p {} must be in [0, 1] (0 = off)", self.min_p));
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return bad(format!(
                "repeat penalty {} must be a finite number > 0 (1 = off)",
                self.repeat_penalty
            ));
        }
        Ok(())
    }
}

/// A seed that differs from run to run (clock and process id, mixed): what `--seed -1`
/// asks for.
pub fn random_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut z = t ^ ((std::process::id() as u64) << 32) ^ 0x9e37_79b9_7f4a_7c15;
    // splitmix64's finalizer: nearby clock values give unrelated seeds.
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) & (i64::MAX as u64)
}

pub struct Sampler {
    params: SamplerParams,
    rng: Rng,
    /// The last `repeat_last_n` accepted tokens, oldest first.
    recent: VecDeque<u32>,
    // Buffers reused across calls, so sampling does not allocate per token.
    candidates: Vec<(u32, f32)>,
    probs: Vec<f32>,
    weights: Vec<f64>,
}

impl Sampler {
    pub fn new(params: SamplerParams) -> Sampler {
        Sampler {
            rng: Rng::new(params.seed),
            params,
            recent: VecDeque::new(),
            candidates: Vec::new(),
            probs: Vec::new(),
            weights: Vec::new(),
        }
    }

    /// Remember a token for the repetition penalty (prompt tokens and sampled ones).
    pub fn accept(&mut self, token: u32) {
        let n = self.params.repeat_last_n;
        if n == 0 {
            return;
        }
        if self.recent.len() == n {
            self.recent.pop_front();
        }
        self.recent.push_back(token);
    }

    /// Apply the repetition penalty to `c` (one entry per token id, in id order): once per
    /// distinct recent token, as llama.cpp does. Touches only the recent tokens' entries,
    /// where asking "is this id recent?" of every id of the vocabulary cost a scan of the
    /// window per id.
    fn penalize(&self, c: &mut [(u32, f32)]) {
        let rp = self.params.repeat_penalty;
        if rp == 1.0 {
            return;
        }
        for (k, &id) in self.recent.iter().enumerate() {
            if self.recent.iter().take(k).any(|&seen| seen == id) {
                continue;
            }
            if let Some((_, l)) = c.get_mut(id as usize) {
                *l = if *l > 0.0 { *l / rp } else { *l * rp };
            }
        }
    }

    /// Pick the next token from `logits`. Does not `accept` it.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.params.temp <= 0.0 && self.params.repeat_penalty == 1.0 {
            return argmax(logits);
        }
        let mut c = std::mem::take(&mut self.candidates);
        c.clear();
        c.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        self.penalize(&mut c);
        self.candidates = c;
        let p = &self.params;
        let c = &mut self.candidates;
        if p.temp <= 0.0 {
            return argmax_by(c.len(), |i| c[i].1);
        }
        // Only the top k need ordering: partition first, then sort those (O(n + k log k)).
        if p.top_k > 0 && p.top_k < c.len() {
            c.select_nth_unstable_by(p.top_k - 1, |a, b| b.1.total_cmp(&a.1));
            c.truncate(p.top_k);
        }
        c.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        // Softmax at temperature 1 for top-p / min-p, as llama.cpp does before temp.
        let max = c[0].1;
        let probs = &mut self.probs;
        probs.clear();
        probs.extend(c.iter().map(|&(_, l)| (l - max).exp()));
        let sum: f32 = probs.iter().sum();
        let mut keep = c.len();
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            for (i, pr) in probs.iter().enumerate() {
                cum += pr / sum;
                if cum >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = p.min_p * probs[0];
            keep = keep.min(probs.iter().take_while(|&&pr| pr >= floor).count().max(1));
        }
        c.truncate(keep);
        let weights = &mut self.weights;
        weights.clear();
        weights.extend(c.iter().map(|&(_, l)| (((l - max) / p.temp) as f64).exp()));
        let total: f64 = weights.iter().sum();
        let mut r = self.rng.next_f64() * total;
        for (w, &(id, _)) in weights.iter().zip(c.iter()) {
            if r < *w {
                return id;
            }
            r -= w;
        }
        c.last().unwrap().0
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(v: &[f32]) -> u32 {
    argmax_by(v.len(), |i| v[i])
}

fn argmax_by(n: usize, f: impl Fn(usize) -> f32) -> u32 {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for i in 0..n {
        let v = f(i);
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

/// SplitMix64: small, fast, and good enough for sampling.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_argmax() {
        let mut s = Sampler::new(SamplerParams {
            temp: 0.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9]), 1);
    }

    #[test]
    fn same_seed_same_draws() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let p = SamplerParams {
            temp: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..Default::default()
        };
        let draw = |seed| {
            let mut s = Sampler::new(SamplerParams { seed, ..p.clone() });
            (0..20).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(SamplerParams {
            temp: 1.5,
            top_k: 1,
            ..Default::default()
        });
        for _ in 0..10 {
            assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9]), 1);
        }
    }

    #[test]
    fn repeat_penalty_lowers_recent_tokens() {
        let mut s = Sampler::new(SamplerParams {
            temp: 0.0,
            repeat_penalty: 2.0,
            ..Default::default()
        });
        s.accept(1);
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9]), 3);
    }

    /// Once per distinct token however often it recurs; negative logits are multiplied;
    /// only the last `repeat_last_n` tokens count.
    #[test]
    fn repeat_penalty_applies_once_to_the_window() {
        let mut s = Sampler::new(SamplerParams {
            temp: 0.0,
            repeat_penalty: 2.0,
            repeat_last_n: 3,
            ..Default::default()
        });
        s.accept(0);
        s.accept(0);
        // 2.0 / 2 = 1.0 > 0.8 (twice would be 0.5 < 0.8).
        assert_eq!(s.sample(&[2.0, 0.8]), 0);
        // -1.0 · 2 = -2.0 < -1.5.
        assert_eq!(s.sample(&[-1.0, -1.5]), 1);
        // Token 0 leaves the window of 3.
        for t in [5, 6, 7] {
            s.accept(t);
        }
        assert_eq!(s.sample(&[-1.0, -1.5]), 0);
        // Sampling with a temperature sees the same penalized logits: with top-k 1 the
        // draw is forced.
        let mut s = Sampler::new(SamplerParams {
            temp: 1.0,
            top_k: 1,
            repeat_penalty: 4.0,
            ..Default::default()
        });
        s.accept(0);
        assert_eq!(s.sample(&[2.0, 0.8]), 1);
    }
}
