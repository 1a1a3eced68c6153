//! A minimal GGUF v3 writer for tests that rewrite a fixture the way llama.cpp's
//! `convert_hf_to_gguf.py` writes one (tests/gguf_rope_freqs.rs, tests/lora.rs).

use std::path::Path;

/// GGUF metadata value types.
pub const T_U32: u32 = 4;
pub const T_F32: u32 = 6;
pub const T_STRING: u32 = 8;
/// ggml's type id of f32 tensors (the only kind this writer stores).
const GGML_F32: u32 = 0;
/// GGUF's default data alignment.
const ALIGN: usize = 32;

/// A GGUF string: u64 length, then the bytes.
pub fn gstr(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

/// A minimal GGUF v3 writer: metadata, then f32 tensors (`dims` innermost first, as GGUF
/// stores them), data aligned to 32 bytes.
pub fn write_gguf(
    path: &Path,
    kvs: &[(&str, u32, Vec<u8>)],
    tensors: &[(String, Vec<u64>, Vec<f32>)],
) {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend((kvs.len() as u64).to_le_bytes());
    for (k, ty, payload) in kvs {
        b.extend(gstr(k));
        b.extend(ty.to_le_bytes());
        b.extend(payload);
    }
    let mut offset = 0usize;
    for (name, dims, data) in tensors {
        b.extend(gstr(name));
        b.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(GGML_F32.to_le_bytes());
        b.extend((offset as u64).to_le_bytes());
        offset = (offset + 4 * data.len()).next_multiple_of(ALIGN);
    }
    b.resize(b.len().next_multiple_of(ALIGN), 0);
    for (_, _, data) in tensors {
        b.extend(data.iter().flat_map(|v| v.to_le_bytes()));
        b.resize(b.len().next_multiple_of(ALIGN), 0);
    }
    std::fs::write(path, b).unwrap();
}

/// llama.cpp's permutation of Q/K rows for interleaved RoPE: within each head, row
/// `s · hd/2 + j` (HF's rotate-half order) moves to row `2j + s`.
pub fn permute(w: &[f32], n_heads: usize, cols: usize) -> Vec<f32> {
    let hd = w.len() / cols / n_heads;
    let mut out = vec![0.0; w.len()];
    for h in 0..n_heads {
        for s in 0..2 {
            for j in 0..hd / 2 {
                let (from, to) = (h * hd + s * hd / 2 + j, h * hd + 2 * j + s);
                out[to * cols..(to + 1) * cols].copy_from_slice(&w[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}
