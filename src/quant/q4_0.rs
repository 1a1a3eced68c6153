//! Q4_0: 32 weights per block, one f16 scale, 4-bit values offset by 8.
//! Byte j holds element j in its low nibble and element j + 16 in its high nibble.

use super::search::{encode_symmetric, Symmetric, Window};
use super::sym_batch::encode_rows;
use super::{Block, QK};

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ4_0 {
    /// Scale, f16 bits.
    pub d: u16,
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

// SAFETY: repr(C), integer fields only, no padding (size asserted to 2 + 16).
unsafe impl Block for BlockQ4_0 {}

impl BlockQ4_0 {
    pub fn scale(&self) -> f32 {
        half::f16::from_bits(self.d).to_f32()
    }
}

/// llama.cpp's reference Q4_0 quantization: the signed value of largest magnitude maps
/// to -8, so d = max / -8 and q = clamp(trunc(x / d + 8.5), 0, 15).
pub fn quantize_row_q4_0(src: &[f32], out: &mut [BlockQ4_0]) {
    assert_eq!(src.len(), out.len() * QK);
    for (x, b) in src.chunks_exact(QK).zip(out.iter_mut()) {
        let (q, d) = reference_codes(x);
        b.d = d;
        for j in 0..QK / 2 {
            b.qs[j] = (q[j] + 8) as u8 | (((q[j + QK / 2] + 8) as u8) << 4);
        }
    }
}

/// [`quantize_row_q4_0`] of one block as codes in [−8, 7] and the f16 bits of its scale.
fn reference_codes(x: &[f32]) -> ([i8; QK], u16) {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        // Selects, not a branch (which one is taken is unpredictable).
        let bigger = v.abs() > amax;
        amax = if bigger { v.abs() } else { amax };
        max = if bigger { v } else { max };
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0i8; QK];
    for (c, &v) in q.iter_mut().zip(x) {
        // trunc(t) clamped to [0, 15] is trunc of t clamped to [0, 15] (a NaN stays NaN
        // and casts to 0, as before).
        let t = (v * id + 8.5).clamp(0.0, 15.0);
        *c = t as i8 - 8;
    }
    (q, half::f16::from_f32(d).to_bits())
}

pub fn dequantize_row_q4_0(src: &[BlockQ4_0], out: &mut [f32]) {
    assert_eq!(out.len(), src.len() * QK);
    for (b, o) in src.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.scale();
        for j in 0..QK / 2 {
            o[j] = ((b.qs[j] & 0x0f) as i32 - 8) as f32 * d;
            o[j + QK / 2] = ((b.qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

/// Q4_0 with a searched scale and no importance: [`quantize_row_q4_0_weighted`] without
/// weights (each block's data-free weights).
pub fn quantize_row_q4_0_search(src: &[f32], out: &mut [BlockQ4_0]) {
    quantize_row_q4_0_weighted(src, None, out)
}

/// Q4_0 that minimises the *weighted* squared error Σ w_j (x_j − x̂_j)² of each block.
/// Same block format as [`quantize_row_q4_0`] (so the same kernels and llama.cpp can read
/// it), but the scale is not tied to the largest value: per block, the scale and codes
/// that minimise the error are searched (see [`block_q4_0_weighted`]). `weights` has one
/// non-negative weight per element of `src` (the converter passes a column-importance
/// vector per row); `None` gives each block its data-free weights
/// (`search::data_free_weights`: σ + |x|, which keeps the largest values better than
/// plain least squares).
#[inline(always)]
pub fn quantize_row_q4_0_weighted(src: &[f32], weights: Option<&[f32]>, out: &mut [BlockQ4_0]) {
    if let Some(w) = weights {
        assert_eq!(w.len(), src.len());
    }
    quantize_rows_q4_0_weighted(src, weights, out)
}

/// [`quantize_row_q4_0_weighted`] for rows laid end to end, `weights` one per column (its
/// length the row length), sixteen blocks at a time (`sym_batch`).
#[inline(always)]
pub(super) fn quantize_rows_q4_0_weighted(
    src: &[f32],
    weights: Option<&[f32]>,
    out: &mut [BlockQ4_0],
) {
    encode_rows(src, weights, &Q4_0_SEARCH, out, q4_0_block)
}

/// How [`block_q4_0_weighted`] searches: codes in [−8, 7]; inverse scales s·max|x| in
/// [4, 11] while the block's weights are within a factor 64 of each other (there the
/// optimum lies at [4.5, 10) in every one of 323k SmolLM2 blocks with the exact search),
/// every scale exactly past that.
pub(super) const Q4_0_SEARCH: Symmetric = Symmetric {
    neg_max: 8,
    pos_max: 7,
    window: Window { lo: 4.0, hi: 11.0 },
    both_signs: true,
    weight_ratio: Some(64.0),
};

/// One Q4_0 block minimising Σ w (x − x̂)² with x̂ = d·(q − 8), d stored as f16
/// ([`encode_symmetric`]: never worse than llama.cpp's block under the same
/// weights). A block without a finite non-zero value, or with a non-finite weight, is
/// llama.cpp's block; all-zero weights count as uniform.
#[inline(always)]
pub fn block_q4_0_weighted(x: &[f32], w: &[f32]) -> BlockQ4_0 {
    debug_assert!(x.len() == QK && w.len() == QK);
    q4_0_block(encode_symmetric(x, w, &Q4_0_SEARCH), x)
}

/// The block of search result `found` for values `x` (llama.cpp's block where the search
/// found none).
#[inline(always)]
fn q4_0_block(found: Option<([i8; QK], f32)>, x: &[f32]) -> BlockQ4_0 {
    let Some((q, d)) = found else {
        let mut b = [BlockQ4_0 {
            d: 0,
            qs: [0; QK / 2],
        }];
        quantize_row_q4_0(x, &mut b);
        return b[0];
    };
    let mut b = BlockQ4_0 {
        d: half::f16::from_f32(d).to_bits(),
        qs: [0; QK / 2],
    };
    for j in 0..QK / 2 {
        let lo = (q[j] + 8) as u8;
        let hi = (q[j + QK / 2] + 8) as u8;
        b.qs[j] = lo | (hi << 4);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::super::search::data_free_weights;
    use super::super::search::tests::{test_blocks, test_weights, weighted_error};
    use super::*;

    const Z: BlockQ4_0 = BlockQ4_0 { d: 0, qs: [0; 16] };

    fn werr_of(x: &[f32], w: &[f32], b: &BlockQ4_0) -> f64 {
        let mut y = [0.0f32; QK];
        dequantize_row_q4_0(std::slice::from_ref(b), &mut y);
        weighted_error(x, &y, w)
    }

    #[test]
    fn searched_scale_is_never_worse_than_reference() {
        let (mut tot_ref, mut tot) = (0.0, 0.0);
        for (i, x) in test_blocks(400, 7).iter().enumerate() {
            for w in [[1.0; QK], test_weights(i as u64)] {
                let mut r = [Z];
                quantize_row_q4_0(x, &mut r);
                let b = block_q4_0_weighted(x, &w);
                let (er, eb) = (werr_of(x, &w, &r[0]), werr_of(x, &w, &b));
                assert!(eb <= er, "block {i}: {eb} > {er}");
                if i % 8 == 0 {
                    tot_ref += er;
                    tot += eb;
                }
            }
        }
        assert!(tot < 0.9 * tot_ref, "{tot} vs {tot_ref}");
    }

    /// Brute force over a fine grid of scales (codes rounded, then the scale re-fitted
    /// and stored as f16) never beats the exact search by more than f16 rounding allows
    /// (the search ranks code vectors by their unrounded error; ties such as a constant
    /// block, exact at every code level, may then round differently).
    #[test]
    fn search_matches_brute_force() {
        for (i, x) in test_blocks(80, 13).iter().enumerate() {
            let w = test_weights(100 + i as u64);
            let b = block_q4_0_weighted(x, &w);
            let eb = werr_of(x, &w, &b);
            let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            if amax == 0.0 {
                continue;
            }
            let f16_tol: f64 = x
                .iter()
                .zip(&w)
                .map(|(v, w)| (w * v * v) as f64)
                .sum::<f64>()
                * 1e-6;
            for k in 1..4000 {
                let d = amax / (k as f32 * 0.005) * if k % 2 == 0 { 1.0 } else { -1.0 };
                let mut q = [0i8; QK];
                for (c, &v) in q.iter_mut().zip(x.iter()) {
                    *c = (v / d).round().clamp(-8.0, 7.0) as i8;
                }
                let (mut num, mut den) = (0.0f64, 0.0f64);
                for ((&v, &wi), &c) in x.iter().zip(&w).zip(&q) {
                    num += (wi * v * c as f32) as f64;
                    den += (wi * (c as f32) * (c as f32)) as f64;
                }
                if den == 0.0 {
                    continue;
                }
                let d16 = half::f16::from_f32((num / den) as f32).to_f32();
                let e = super::super::search::werr(x, &w, &q, d16);
                assert!(eb <= e * 1.0001 + f16_tol, "block {i}, k {k}: {eb} > {e}");
            }
        }
    }

    /// Without weights each block gets its data-free weights (`search::data_free_weights`),
    /// and they change the choice against all-1 weights somewhere.
    #[test]
    fn no_weights_means_data_free_weights() {
        let blocks = test_blocks(64, 5);
        let x: Vec<f32> = blocks.concat();
        let w: Vec<f32> = blocks.iter().flat_map(data_free_weights).collect();
        let (mut a, mut b, mut c) = (vec![Z; 64], vec![Z; 64], vec![Z; 64]);
        quantize_row_q4_0_search(&x, &mut a);
        quantize_row_q4_0_weighted(&x, Some(&w), &mut b);
        quantize_row_q4_0_weighted(&x, Some(&vec![1.0; x.len()]), &mut c);
        assert_eq!(a, b);
        assert!(a.iter().zip(&c).filter(|(a, c)| a != c).count() > 8);
    }

    #[test]
    fn zero_blocks_and_zero_weights() {
        let b = block_q4_0_weighted(&[0.0; QK], &test_weights(1));
        let mut y = [1.0; 32];
        dequantize_row_q4_0(&[b], &mut y);
        assert!(y.iter().all(|v| *v == 0.0));
        let x = test_blocks(1, 3)[0];
        assert_eq!(
            block_q4_0_weighted(&x, &[0.0; QK]),
            block_q4_0_weighted(&x, &[1.0; QK])
        );
    }
}
