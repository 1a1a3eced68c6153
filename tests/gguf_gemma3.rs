//! llq's GGUF reader and dequantization against gguf-py on a real K-quant file: every
//! tensor of Gemma 3 270M Q4_K_M (Q4_K, Q6_K, Q5_0, Q8_0 and F32). For each tensor the
//! type, the dimensions, the sha256 of its stored bytes and the sha256 of its values
//! dequantized to little-endian f32 (row-major, ne0 fastest) must equal what
//! `tools/gen_gemma3_dequant_refs.py` recorded from `gguf.quants.dequantize` in
//! `tests/data/gemma3_dequant_sha256.json`: bit-exact dequantization of ~270M values.
//!
//! `tools/fetch_gemma3.sh` (run by `tools/setup.sh`) downloads the model; set
//! LLQ_GEMMA3_GGUF to use another copy. Run it optimized:
//! `cargo test --release --test gguf_gemma3`.

mod common;

use std::collections::BTreeMap;

use llq::gguf::{dequantize, GgmlType, GgufFile, GgufTensorInfo};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

const REFS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/gemma3_dequant_sha256.json"
);

/// Values dequantized (and hashed) at a time: a whole number of blocks of every type.
const CHUNK: usize = 1 << 16;

struct Ref {
    name: String,
    ty: String,
    dims: Vec<u64>,
    n_elements: u64,
    raw_sha256: String,
    f32_sha256: String,
}

fn refs() -> Vec<Ref> {
    let doc = common::read_json(std::path::Path::new(REFS));
    doc["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| Ref {
            name: t["name"].as_str().unwrap().to_owned(),
            ty: t["type"].as_str().unwrap().to_owned(),
            dims: t["dims"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .collect(),
            n_elements: t["n_elements"].as_u64().unwrap(),
            raw_sha256: t["raw_sha256"].as_str().unwrap().to_owned(),
            f32_sha256: t["f32_sha256"].as_str().unwrap().to_owned(),
        })
        .collect()
}

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of the tensor's values dequantized by llq, as little-endian f32 bytes.
fn dequantized_sha256(ty: GgmlType, data: &[u8]) -> String {
    let (bs, ts) = (ty.block_size(), ty.type_size());
    assert_eq!(CHUNK % bs, 0);
    let mut values = vec![0f32; CHUNK];
    let mut bytes = Vec::with_capacity(CHUNK * 4);
    let mut h = Sha256::new();
    for blocks in data.chunks(CHUNK / bs * ts) {
        let out = &mut values[..blocks.len() / ts * bs];
        dequantize(ty, blocks, out).unwrap();
        bytes.clear();
        bytes.extend(out.iter().flat_map(|v| v.to_le_bytes()));
        h.update(&bytes);
    }
    hex(h.finalize())
}

/// What differs between llq's reading of `info` and gguf-py's `r` (empty when nothing).
fn check(file: &GgufFile, info: &GgufTensorInfo, r: &Ref) -> Vec<String> {
    let mut bad = Vec::new();
    if info.name != r.name {
        bad.push(format!("name {:?}, gguf-py {:?}", info.name, r.name));
    }
    if info.ggml_type.name() != r.ty {
        bad.push(format!("type {}, gguf-py {}", info.ggml_type, r.ty));
    }
    if info.dims != r.dims || info.n_elements() != r.n_elements {
        bad.push(format!(
            "dims {:?} ({} elements), gguf-py {:?} ({})",
            info.dims,
            info.n_elements(),
            r.dims,
            r.n_elements
        ));
    }
    let data = file.tensor_data(info);
    let raw = hex(Sha256::digest(data));
    if raw != r.raw_sha256 {
        bad.push(format!(
            "stored bytes sha256 {raw}, gguf-py {}",
            r.raw_sha256
        ));
    }
    if bad.is_empty() {
        let got = dequantized_sha256(info.ggml_type, data);
        if got != r.f32_sha256 {
            bad.push(format!(
                "dequantized f32 sha256 {got}, gguf-py {}",
                r.f32_sha256
            ));
        }
    }
    bad
}

#[test]
fn every_tensor_dequantizes_bit_exactly_like_gguf_py() {
    let path = common::gemma3_gguf();
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let refs = refs();
    let tensors = file.tensors();
    assert_eq!(
        tensors.len(),
        refs.len(),
        "{}: {} tensors, gguf-py read {}",
        path.display(),
        tensors.len(),
        refs.len()
    );

    let start = std::time::Instant::now();
    let failures: Vec<String> = tensors
        .par_iter()
        .zip(&refs)
        .flat_map_iter(|(info, r)| {
            check(&file, info, r)
                .into_iter()
                .map(move |m| format!("{} ({}): {m}", r.name, r.ty))
        })
        .collect();

    let mut per_type: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for info in tensors {
        let e = per_type.entry(info.ggml_type.name()).or_default();
        e.0 += 1;
        e.1 += info.n_elements();
    }
    let total: u64 = per_type.values().map(|c| c.1).sum();
    eprintln!(
        "{} tensors, {total} values checked in {:.1?}:",
        tensors.len(),
        start.elapsed()
    );
    for (ty, (n, elems)) in &per_type {
        eprintln!("  {ty:5} {n:4} tensors, {elems:10} values");
    }
    assert!(
        failures.is_empty(),
        "{} differences from gguf-py over {} tensors:\n{}",
        failures.len(),
        tensors.len(),
        failures.join("\n")
    );
    // The test proves what it claims only if the file holds each of these.
    for ty in [
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::F32,
    ] {
        assert!(
            per_type.get(ty.name()).is_some_and(|c| c.0 > 0),
            "no {ty} tensor in {}",
            path.display()
        );
    }
}
