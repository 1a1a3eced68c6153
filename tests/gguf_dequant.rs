//! Checks llq's reference dequantization against vectors generated with the
//! `gguf` Python package (`tools/gen_ggml_dequant_vectors.py`).
//!
//! `<TYPE>.bin` holds random blocks; `<TYPE>_edge.bin` (quantized types) blocks at the
//! extremes: all quant bits set or clear, K-quant scales and mins at 0 and 63, Q6_K
//! scales at -128 and 127, large and subnormal f16 scales.
//!
//! Equality is bit-exact: both sides do the same f32 operations in the same
//! order (f16 -> f32 widening is exact, no fused multiply-add).

use llq::gguf::{dequantize, GgmlType};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ggml_dequant");

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn check(ty: GgmlType) {
    check_file(ty, "");
}

fn check_edge(ty: GgmlType) {
    check_file(ty, "_edge");
}

fn check_file(ty: GgmlType, suffix: &str) {
    let path = format!("{DIR}/{}{suffix}.bin", ty.name());
    let file = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(&file[..8], b"LLQDQV01", "{path}: bad magic");
    assert_eq!(u32_at(&file, 8), ty.id(), "{path}: type id");
    let n_blocks = u32_at(&file, 12) as usize;
    let block_size = u32_at(&file, 16) as usize;
    let type_size = u32_at(&file, 20) as usize;
    assert_eq!(block_size, ty.block_size(), "{path}: block size");
    assert_eq!(type_size, ty.type_size(), "{path}: type size");
    let raw_end = 24 + n_blocks * type_size;
    let raw = &file[24..raw_end];
    let expected: Vec<f32> = file[raw_end..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(
        expected.len(),
        n_blocks * block_size,
        "{path}: expected count"
    );

    // Whole buffer at once.
    let mut out = vec![f32::NAN; expected.len()];
    dequantize(ty, raw, &mut out).unwrap();
    // And block by block, so a failure names the block.
    for (blk, (raw_blk, exp_blk)) in raw
        .chunks_exact(type_size)
        .zip(expected.chunks_exact(block_size))
        .enumerate()
    {
        let mut got = vec![f32::NAN; block_size];
        dequantize(ty, raw_blk, &mut got).unwrap();
        for (i, (g, e)) in got.iter().zip(exp_blk).enumerate() {
            assert_eq!(
                g.to_bits(),
                e.to_bits(),
                "{ty}{suffix} block {blk} element {i}: got {g}, expected {e}"
            );
        }
    }
    for (g, e) in out.iter().zip(&expected) {
        assert_eq!(g.to_bits(), e.to_bits());
    }
}

macro_rules! vector_tests {
    ($($name:ident => $ty:ident),* $(,)?) => {
        $(#[test] fn $name() { check(GgmlType::$ty); })*
    };
}

vector_tests! {
    f32_matches_python => F32,
    f16_matches_python => F16,
    bf16_matches_python => BF16,
    q4_0_matches_python => Q4_0,
    q4_1_matches_python => Q4_1,
    q5_0_matches_python => Q5_0,
    q5_1_matches_python => Q5_1,
    q8_0_matches_python => Q8_0,
    q2_k_matches_python => Q2_K,
    q3_k_matches_python => Q3_K,
    q4_k_matches_python => Q4_K,
    q5_k_matches_python => Q5_K,
    q6_k_matches_python => Q6_K,
}

macro_rules! edge_vector_tests {
    ($($name:ident => $ty:ident),* $(,)?) => {
        $(#[test] fn $name() { check_edge(GgmlType::$ty); })*
    };
}

edge_vector_tests! {
    q4_0_edge_blocks_match_python => Q4_0,
    q4_1_edge_blocks_match_python => Q4_1,
    q5_0_edge_blocks_match_python => Q5_0,
    q5_1_edge_blocks_match_python => Q5_1,
    q8_0_edge_blocks_match_python => Q8_0,
    q2_k_edge_blocks_match_python => Q2_K,
    q3_k_edge_blocks_match_python => Q3_K,
    q4_k_edge_blocks_match_python => Q4_K,
    q5_k_edge_blocks_match_python => Q5_K,
    q6_k_edge_blocks_match_python => Q6_K,
}
