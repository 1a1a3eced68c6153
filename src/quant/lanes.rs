//! Helpers for encoders that work on [`BATCH`] blocks at a time, one block per vector
//! lane (`affine_batch`, `sym_batch`): lane arrays, masks, bitwise selection and f16
//! conversions written so that LLVM turns each lane loop into vector instructions.

// Index loops over lanes are the form the compiler vectorises here.
#![allow(clippy::needless_range_loop)]

/// Blocks encoded side by side: one AVX-512 register of f32.
pub(super) const BATCH: usize = 16;

/// One f32 per block of the batch.
pub(super) type F = [f32; BATCH];
/// One f64 per block of the batch.
pub(super) type D = [f64; BATCH];
/// One mask per block of the batch: all ones (set) or zero. Selections through masks are
/// bit operations, which stay vector instructions; a `bool` read back from memory made
/// LLVM turn each selection into a branch per lane.
pub(super) type M = [u32; BATCH];

/// 1/v for v > 0 when that is finite, else 0 (codes then all round to the bottom).
#[inline(always)]
pub(super) fn safe_inv(v: f32) -> f32 {
    let r = 1.0 / v;
    if v > 0.0 && r.abs() < f32::INFINITY {
        r
    } else {
        0.0
    }
}

/// Marks one step of a loop over a block's elements whose body works on whole lanes
/// (`for j in 0..BATCH`). Without it, LLVM fully unrolls the lane loop and then vectorises
/// the element loop instead, with gathers and scatters across the transposed arrays
/// (measured: 30% slower than one block at a time); an empty `asm!` is an instruction
/// the loop vectoriser cannot widen, so the lane statements go to the SLP vectoriser,
/// which packs each into one vector instruction.
#[inline(always)]
pub(super) fn lane_step() {
    // SAFETY: an empty instruction sequence: reads and writes no memory, no registers, no
    // stack, no flags.
    unsafe { std::arch::asm!("", options(nomem, nostack, preserves_flags)) }
}

/// Whether any lane is set.
#[inline(always)]
pub(super) fn any(m: &M) -> bool {
    m.iter().fold(0, |a, &b| a | b) != 0
}

/// The mask of `b`.
#[inline(always)]
pub(super) fn mask(b: bool) -> u32 {
    0u32.wrapping_sub(b as u32)
}

/// Values selected by masks, bitwise.
pub(super) trait Select: Copy {
    /// `self` where `m` is set, else `other`.
    fn select(self, other: Self, m: u32) -> Self;
}

impl Select for u32 {
    #[inline(always)]
    fn select(self, other: u32, m: u32) -> u32 {
        (self & m) | (other & !m)
    }
}

impl Select for f32 {
    #[inline(always)]
    fn select(self, other: f32, m: u32) -> f32 {
        f32::from_bits(self.to_bits().select(other.to_bits(), m))
    }
}

impl Select for f64 {
    #[inline(always)]
    fn select(self, other: f64, m: u32) -> f64 {
        let m = m as i32 as i64 as u64;
        f64::from_bits((self.to_bits() & m) | (other.to_bits() & !m))
    }
}

/// Lane-wise `if m { a } else { b }`.
#[inline(always)]
pub(super) fn pick<T: Select>(m: &M, a: &[T; BATCH], b: &[T; BATCH]) -> [T; BATCH] {
    let mut o = *b;
    for j in 0..BATCH {
        o[j] = a[j].select(b[j], m[j]);
    }
    o
}

/// The f16 bits (in a u32) of `v` clamped to ±65504 (the largest finite f16), as
/// `half::f16::from_f32` of the clamped value gives them.
#[inline(always)]
pub(super) fn f16_sat_bits(v: f32) -> u32 {
    let v = if v < -65504.0 { -65504.0 } else { v };
    f16_bits(if v > 65504.0 { 65504.0 } else { v })
}

/// The f16 bits (in a u32) of `v` rounded to nearest, ties to even, as
/// `half::f16::from_f32` rounds (±∞ past the range, a quiet NaN for NaN); branch-free so
/// it vectorises.
#[inline(always)]
pub(super) fn f16_bits(v: f32) -> u32 {
    let bits = v.to_bits();
    let sign = (bits >> 16) & 0x8000;
    let a = bits & 0x7fff_ffff;
    // Normal f16 (|v| ≥ 2⁻¹⁴): drop 13 mantissa bits with rounding (a carry into the
    // exponent is the correct rounding up), rebias the exponent from 127 to 15.
    let normal = (a.wrapping_add(0x0fff + ((a >> 13) & 1)) >> 13).wrapping_sub((127 - 15) << 10);
    // Subnormal: adding 0.5, whose last mantissa bit is 2⁻²⁴ (the f16 subnormal step),
    // rounds |v| to a multiple of 2⁻²⁴; the mantissa then holds that multiple.
    let sub = (f32::from_bits(a) + 0.5)
        .to_bits()
        .wrapping_sub(0x3f00_0000);
    let nan = 0x7e00 | ((a >> 13) & 0x3ff);
    let mag = if a > 0x7f80_0000 {
        nan
    } else if a >= 0x477f_f000 {
        // 65520 and up (and ∞) round to ∞.
        0x7c00
    } else if a >= 0x3880_0000 {
        normal
    } else {
        sub
    };
    sign | mag
}

/// The f16 with bits `h` as f32, as `half::f16::to_f32` gives it.
#[inline(always)]
pub(super) fn f16_bits_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000) << 16;
    let mag = h & 0x7fff;
    let normal = f32::from_bits(sign | ((mag + ((127 - 15) << 10)) << 13));
    let sub = f32::from_bits(sign | (mag as f32 * (1.0 / 16_777_216.0)).to_bits());
    let special = f32::from_bits(sign | 0x7f80_0000 | ((mag & 0x3ff) << 13));
    if mag >= 0x7c00 {
        special
    } else if mag >= 0x0400 {
        normal
    } else {
        sub
    }
}

/// `search::f16_step` on f16 bits: the f16 `steps` values away from `h` in magnitude, or
/// `h` itself past the finite range.
#[inline(always)]
pub(super) fn f16_step_bits(h: u32, steps: i32) -> u32 {
    let mag = (h & 0x7fff) as i32 + steps;
    if (0..=0x7bff).contains(&mag) {
        (h & 0x8000) | mag as u32
    } else {
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The branch-free f16 conversions agree with `half` on every value the search can
    /// meet (and many it cannot): random bit patterns, subnormal, rounding boundaries.
    #[test]
    fn f16_conversions_match_half() {
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut vals = vec![
            0.0f32, -0.0, 65504.0, -65504.0, 65520.0, 1e9, -1e9, 6.1e-5, 5.96e-8,
        ];
        for _ in 0..200_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let v = f32::from_bits(s as u32);
            if !v.is_nan() {
                vals.push(v);
            }
            // Values near f16's range, where the interesting rounding happens.
            vals.push(
                ((s >> 32) as u32 as f32 / u32::MAX as f32 - 0.5)
                    * 2.0f32.powi((s % 40) as i32 - 26),
            );
        }
        vals.extend([
            f32::INFINITY,
            f32::NEG_INFINITY,
            65519.99,
            65520.0,
            f32::MAX,
        ]);
        for v in vals {
            let want = half::f16::from_f32(v.clamp(-65504.0, 65504.0));
            assert_eq!(f16_sat_bits(v), want.to_bits() as u32, "{v:e}");
            let want = half::f16::from_f32(v);
            assert_eq!(f16_bits(v), want.to_bits() as u32, "{v:e}");
            assert_eq!(
                f16_bits_to_f32(want.to_bits() as u32).to_bits(),
                want.to_f32().to_bits(),
                "{v:e}"
            );
        }
    }
}
