//! Q8_0: 32 weights per block, one f16 scale, int8 values. Also the block type that
//! activations are quantized to on the fly for the integer dot products.

use super::search::{encode_symmetric, Symmetric, Window};
use super::sym_batch::encode_rows;
use super::{Block, QK};

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale, f16 bits.
    pub d: u16,
    pub qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

// SAFETY: repr(C), integer fields only, no padding (size asserted to 2 + 32).
unsafe impl Block for BlockQ8_0 {}

impl BlockQ8_0 {
    pub fn scale(&self) -> f32 {
        half::f16::from_bits(self.d).to_f32()
    }
}

/// llama.cpp's reference Q8_0 quantization: d = max|x| / 127, q = round(x / d).
pub fn quantize_row_q8_0(src: &[f32], out: &mut [BlockQ8_0]) {
    assert_eq!(src.len(), out.len() * QK);
    for (x, b) in src.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = half::f16::from_f32(d).to_bits();
        for (q, v) in b.qs.iter_mut().zip(x) {
            // round_ties_even (|v·id| ≤ 127) without a libm call on x86-64's baseline.
            *q = super::search::round_even_small(v * id) as i8;
        }
    }
}

/// Q8_0 for *activations* (and the q8_0 KV cache), exactly as ggml's CPU backend quantizes
/// them on x86 (`quantize_row_q8_0`'s AVX path): d = max|x| / 127 stored as f16,
/// id = 127 / max|x| (not 1/d: the two differ in the last bit, which moves x·id across a
/// rounding boundary now and then), and q = x·id rounded half to even. Matching ggml here,
/// not just approximately, is what lets llq's logits on a llama.cpp file agree with
/// llama.cpp's: one flipped rounding in an early layer of a small model changes its
/// late-layer logits by about as much as the quantization itself (measured on SmolLM2
/// Q8_0: KL 3.2e-3 between the engines with half-away rounding and 1/d, see the commit).
/// Every SIMD level is bit-identical to this; NaN → 0.
pub fn quantize_act_q8_0(src: &[f32], out: &mut [BlockQ8_0]) {
    assert_eq!(src.len(), out.len() * QK);
    for (x, b) in src.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        b.d = half::f16::from_f32(amax / 127.0).to_bits();
        for (q, v) in b.qs.iter_mut().zip(x) {
            *q = (v * id).round_ties_even() as i8;
        }
    }
}

/// Q8_0 that minimises the *weighted* squared error Σ w_j (x_j − x̂_j)² of each block
/// (same format as [`quantize_row_q8_0`]; codes stay within ±127 like llama.cpp's, so
/// every kernel's sign tricks stay valid). `weights` has one non-negative weight per
/// element of `src`; `None` gives each block its data-free weights
/// (`search::data_free_weights`). See [`block_q8_0_weighted`].
#[inline(always)]
pub fn quantize_row_q8_0_weighted(src: &[f32], weights: Option<&[f32]>, out: &mut [BlockQ8_0]) {
    if let Some(w) = weights {
        assert_eq!(w.len(), src.len());
    }
    quantize_rows_q8_0_weighted(src, weights, out)
}

/// [`quantize_row_q8_0_weighted`] for rows laid end to end, `weights` one per column (its
/// length the row length), sixteen blocks at a time (`sym_batch`).
#[inline(always)]
pub(super) fn quantize_rows_q8_0_weighted(
    src: &[f32],
    weights: Option<&[f32]>,
    out: &mut [BlockQ8_0],
) {
    encode_rows(src, weights, &Q8_0_SEARCH, out, q8_0_block)
}

/// How [`block_q8_0_weighted`] searches: codes within ±127 (like llama.cpp's, so every
/// kernel's sign tricks stay valid), inverse scales s·max|x| within 2.5 codes of
/// llama.cpp's 127 (wider clipping or coarser scales do not pay at 8 bits); symmetric
/// codes, so a negative scale gives the same blocks and one sign suffices.
pub(super) const Q8_0_SEARCH: Symmetric = Symmetric {
    neg_max: 127,
    pos_max: 127,
    window: Window {
        lo: 124.5,
        hi: 129.5,
    },
    both_signs: false,
    weight_ratio: None,
};

/// One Q8_0 block minimising Σ w (x − d·q)² with d stored as f16
/// ([`encode_symmetric`]: never worse than llama.cpp's block under the same
/// weights). A block without a finite non-zero value, or with a non-finite weight, is
/// llama.cpp's block; all-zero weights count as uniform.
#[inline(always)]
pub fn block_q8_0_weighted(x: &[f32], w: &[f32]) -> BlockQ8_0 {
    debug_assert!(x.len() == QK && w.len() == QK);
    q8_0_block(encode_symmetric(x, w, &Q8_0_SEARCH), x)
}

/// The block of search result `found` for values `x` (llama.cpp's block where the search
/// found none).
#[inline(always)]
fn q8_0_block(found: Option<([i8; QK], f32)>, x: &[f32]) -> BlockQ8_0 {
    match found {
        Some((qs, d)) => BlockQ8_0 {
            d: half::f16::from_f32(d).to_bits(),
            qs,
        },
        None => {
            let mut r = [BlockQ8_0 { d: 0, qs: [0; QK] }];
            quantize_row_q8_0(x, &mut r);
            r[0]
        }
    }
}

pub fn dequantize_row_q8_0(src: &[BlockQ8_0], out: &mut [f32]) {
    assert_eq!(out.len(), src.len() * QK);
    for (b, o) in src.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.scale();
        for (y, q) in o.iter_mut().zip(b.qs) {
            *y = q as f32 * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::search::data_free_weights;
    use super::super::search::tests::{test_blocks, test_weights, weighted_error};
    use super::*;

    fn werr_of(x: &[f32], w: &[f32], b: &BlockQ8_0) -> f64 {
        let mut y = [0.0f32; QK];
        dequantize_row_q8_0(std::slice::from_ref(b), &mut y);
        weighted_error(x, &y, w)
    }

    #[test]
    fn weighted_search_is_never_worse_than_reference() {
        let (mut tot_ref, mut tot) = (0.0, 0.0);
        for (i, x) in test_blocks(400, 11).iter().enumerate() {
            let w = test_weights(i as u64);
            let mut r = [BlockQ8_0 { d: 0, qs: [0; QK] }];
            quantize_row_q8_0(x, &mut r);
            let b = block_q8_0_weighted(x, &w);
            let (er, eb) = (werr_of(x, &w, &r[0]), werr_of(x, &w, &b));
            assert!(eb <= er, "block {i}: {eb} > {er}");
            assert!(b.qs.iter().all(|&q| q != i8::MIN), "block {i}: code -128");
            if i % 8 == 0 {
                tot_ref += er;
                tot += eb;
            }
        }
        assert!(tot < 0.97 * tot_ref, "{tot} vs {tot_ref}");
    }

    /// Without weights each block gets its data-free weights (`search::data_free_weights`).
    #[test]
    fn no_weights_means_data_free_weights() {
        let blocks = test_blocks(64, 5);
        let x: Vec<f32> = blocks.concat();
        let w: Vec<f32> = blocks.iter().flat_map(data_free_weights).collect();
        let z = BlockQ8_0 { d: 0, qs: [0; QK] };
        let (mut a, mut b) = (vec![z; 64], vec![z; 64]);
        quantize_row_q8_0_weighted(&x, None, &mut a);
        quantize_row_q8_0_weighted(&x, Some(&w), &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn weights_change_the_choice() {
        // Non-uniform weights must matter somewhere (else they are being ignored).
        let blocks = test_blocks(64, 9);
        let changed = blocks.iter().enumerate().filter(|(i, x)| {
            block_q8_0_weighted(&x[..], &test_weights(*i as u64))
                != block_q8_0_weighted(&x[..], &[1.0; QK])
        });
        assert!(changed.count() > 8);
    }

    #[test]
    fn zero_blocks_and_zero_weights() {
        let b = block_q8_0_weighted(&[0.0; QK], &test_weights(1));
        assert_eq!(b, BlockQ8_0 { d: 0, qs: [0; QK] });
        let x = test_blocks(1, 3)[0];
        assert_eq!(
            block_q8_0_weighted(&x, &[0.0; QK]),
            block_q8_0_weighted(&x, &[1.0; QK])
        );
    }
}
