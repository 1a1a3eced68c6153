//! llq's GGUF reader and dequantization against gguf-py on a real K-quant file: every
//! tensor of Gemma 3 270M Q4_K_M (Q4_K, Q6_K, Q5_0, Q8_0 and F32). For each tensor the
//! type, the dimensions, the sha256 of its stored bytes and the sha256 of its values
//! dequantized to little-endian f32 (row-major, ne0 fastest) must equal what
//! `tools/gen_gemma3_dequant_refs.py` recorded from `gguf.quants.dequantize` in
//! `tests/data/gemma3_dequant_sha256.json`: bit-exact dequantization of ~270M values.
//!
//! Second, every 2-D quantized tensor (Q4_K, Q6_K, Q5_0, Q8_0) is imported into llq's
//! `rows16` storage straight from its GGUF blocks (`quant::native` / `quant::kx16`, no
//! f32 round trip) and decoded row by row through `WeightView::dequantize_row`: the rows
//! must hash to the same sha256, so the import loses nothing.
//!
//! `tools/fetch_gemma3.sh` (run by `tools/setup.sh`) downloads the model; set
//! LLQ_GEMMA3_GGUF to use another copy. Run it optimized:
//! `cargo test --release --test gguf_gemma3`.

mod common;

use std::collections::BTreeMap;

use llq::gguf::{dequantize, GgmlType, GgufFile, GgufTensorInfo};
use llq::quant::interleave::{BlockQ4_0x16, BlockQ8_0x16, Interleaved, GROUP};
use llq::quant::kx16::{
    BlockQ4_1x16, BlockQ4_Kx16, BlockQ5_0x16, BlockQ5_1x16, BlockQ5_Kx16, BlockQ6_Kx16,
};
use llq::quant::{blocks, blocks_mut, WeightKind, WeightView};
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

/// `len` zero bytes at a 64-byte boundary (what the `.llq` reader guarantees a tensor), as
/// (buffer, offset of the aligned bytes).
fn aligned_zeros(len: usize) -> (Vec<u8>, usize) {
    let buf = vec![0u8; len + 64];
    let at = buf.as_ptr().align_offset(64);
    (buf, at)
}

/// A `[rows, cols]` matrix of GGUF blocks (ggml's row-major layout) in llq's `rows16`
/// storage: the GGUF bytes viewed in place as `B::Plain` blocks and interleaved 16 rows at
/// a time by `B::interleave`, with no trip through f32. Rows are padded to a whole group
/// with zero blocks, as `WeightKind::tensor_bytes` lays them out. Returns (buffer, offset).
fn repack_groups<B: Interleaved>(data: &[u8], rows: usize, cols: usize) -> (Vec<u8>, usize) {
    let nb = cols / B::COLS;
    let plain_row = nb * std::mem::size_of::<B::Plain>();
    assert_eq!(data.len(), rows * plain_row, "GGUF bytes of {rows}x{cols}");
    let padded = rows.next_multiple_of(GROUP);
    let (mut src, s) = aligned_zeros(padded * plain_row);
    src[s..s + data.len()].copy_from_slice(data);
    let plain = blocks::<B::Plain>(&src[s..s + padded * plain_row]);
    let (mut out, o) = aligned_zeros(padded * plain_row);
    let sbs = blocks_mut::<B>(&mut out[o..o + padded * plain_row]);
    for (g, sb) in plain.chunks_exact(GROUP * nb).zip(sbs.chunks_exact_mut(nb)) {
        B::interleave(g, sb);
    }
    (out, o)
}

/// A 2-D GGUF tensor in llq's own storage: its weight kind and the bytes of that kind,
/// built straight from the GGUF blocks. `None` for the types without such a kind.
fn repack(info: &GgufTensorInfo, data: &[u8]) -> Option<(WeightKind, Vec<u8>, usize)> {
    let (cols, rows) = (info.dims[0] as usize, info.dims[1] as usize);
    let (kind, (buf, at)) = match info.ggml_type {
        // ggml's block_q8_0 is llq's BlockQ8_0 (f16 scale, 32 i8).
        GgmlType::Q8_0 => (
            WeightKind::Q8_0x16,
            repack_groups::<BlockQ8_0x16>(data, rows, cols),
        ),
        GgmlType::Q4_0 => (
            WeightKind::Q4_0x16,
            repack_groups::<BlockQ4_0x16>(data, rows, cols),
        ),
        // quant::native's blocks are ggml's byte layouts.
        GgmlType::Q4_1 => (
            WeightKind::Q4_1x16,
            repack_groups::<BlockQ4_1x16>(data, rows, cols),
        ),
        GgmlType::Q5_0 => (
            WeightKind::Q5_0x16,
            repack_groups::<BlockQ5_0x16>(data, rows, cols),
        ),
        GgmlType::Q5_1 => (
            WeightKind::Q5_1x16,
            repack_groups::<BlockQ5_1x16>(data, rows, cols),
        ),
        GgmlType::Q4_K => (
            WeightKind::Q4_Kx16,
            repack_groups::<BlockQ4_Kx16>(data, rows, cols),
        ),
        GgmlType::Q5_K => (
            WeightKind::Q5_Kx16,
            repack_groups::<BlockQ5_Kx16>(data, rows, cols),
        ),
        GgmlType::Q6_K => (
            WeightKind::Q6_Kx16,
            repack_groups::<BlockQ6_Kx16>(data, rows, cols),
        ),
        _ => return None,
    };
    assert_eq!(
        Some((buf.len() - 64) as u64),
        kind.tensor_bytes(&[rows as u64, cols as u64]),
        "{}: repacked size",
        info.name
    );
    Some((kind, buf, at))
}

/// sha256 of a repacked matrix decoded row by row through [`WeightView::dequantize_row`].
fn rows_sha256(view: &WeightView) -> String {
    let mut row = vec![0f32; view.cols];
    let mut bytes = Vec::with_capacity(view.cols * 4);
    let mut h = Sha256::new();
    for r in 0..view.rows {
        row.fill(f32::NAN);
        view.dequantize_row(r, &mut row);
        bytes.clear();
        bytes.extend(row.iter().flat_map(|v| v.to_le_bytes()));
        h.update(&bytes);
    }
    hex(h.finalize())
}

#[test]
fn every_2d_quantized_tensor_repacked_into_llq_storage_decodes_like_gguf_py() {
    let path = common::gemma3_gguf();
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let refs = refs();
    assert_eq!(file.tensors().len(), refs.len());
    let start = std::time::Instant::now();
    let results: Vec<(GgmlType, Option<WeightKind>, Option<String>)> = file
        .tensors()
        .par_iter()
        .zip(&refs)
        .filter(|(info, _)| info.dims.len() == 2 && info.ggml_type != GgmlType::F32)
        .map(|(info, r)| {
            assert_eq!(info.name, r.name);
            let Some((kind, buf, at)) = repack(info, file.tensor_data(info)) else {
                return (info.ggml_type, None, None);
            };
            let view = WeightView {
                kind,
                rows: info.dims[1] as usize,
                cols: info.dims[0] as usize,
                data: &buf[at..buf.len() - 64 + at],
            };
            let got = rows_sha256(&view);
            let bad = (got != r.f32_sha256).then(|| {
                format!(
                    "{} ({} as {kind:?}): rows decode to sha256 {got}, gguf-py {}",
                    r.name, r.ty, r.f32_sha256
                )
            });
            (info.ggml_type, Some(kind), bad)
        })
        .collect();

    let mut per_type: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (ty, kind, _) in &results {
        let e = per_type.entry(ty.name()).or_default();
        if kind.is_some() {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
    eprintln!("2-D quantized tensors repacked in {:.1?}:", start.elapsed());
    for (ty, (checked, skipped)) in &per_type {
        eprintln!("  {ty:5} {checked:4} repacked and checked, {skipped:4} without a rows16 kind");
    }
    let failures: Vec<&String> = results.iter().filter_map(|r| r.2.as_ref()).collect();
    assert!(
        failures.is_empty(),
        "{} repacked tensors differ from gguf-py:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Every 2-D quantized tensor of this file has a rows16 kind, and each of the four
    // types is there.
    for (ty, (_, skipped)) in &per_type {
        assert_eq!(*skipped, 0, "{ty}: tensors without a rows16 kind");
    }
    for ty in [
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
    ] {
        assert!(
            per_type.get(ty.name()).is_some_and(|c| c.0 > 0),
            "no {ty} tensor repacked"
        );
    }
}
