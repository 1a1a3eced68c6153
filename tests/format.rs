//! The `.llq` reader against truncated, corrupted and hostile files: always an error with a
//! message, never a panic. Hostile files are built here byte by byte from docs/FORMAT.md,
//! which doubles as a check that the spec and the reader agree.

use std::path::Path;

use llq::format::{LlqFile, LlqWriter, TensorPlan, Value};
use llq::quant::WeightKind;

fn write_valid(path: &Path) {
    let meta = vec![
        (
            "general.architecture".to_string(),
            Value::Str("llama".into()),
        ),
        ("test.u32".to_string(), Value::U32(7)),
        ("test.blob".to_string(), Value::Bytes(vec![1, 2, 3, 4, 5])),
        (
            "test.list".to_string(),
            Value::ArrStr(vec!["a".into(), "bc".into()]),
        ),
        ("test.f32s".to_string(), Value::ArrF32(vec![1.5, -2.0])),
    ];
    let plans = vec![
        TensorPlan {
            name: "a".into(),
            kind: WeightKind::F32,
            shape: vec![3],
        },
        // Two rows of q8_0 in rows16, padded to a group of 16.
        TensorPlan {
            name: "b".into(),
            kind: WeightKind::Q8_0x16,
            shape: vec![2, 64],
        },
    ];
    let mut w = LlqWriter::create(path, meta, plans).unwrap();
    w.write_tensor(&[0u8; 12]).unwrap();
    w.write_tensor(&[1u8; 16 * 2 * 34]).unwrap();
    w.finish().unwrap();
}

fn header_size(bytes: &[u8]) -> usize {
    u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize
}

fn open_bytes(bytes: &[u8]) -> Result<LlqFile, String> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.llq");
    std::fs::write(&p, bytes).unwrap();
    LlqFile::open(&p).map_err(|e| e.to_string())
}

#[test]
fn valid_file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ok.llq");
    write_valid(&p);
    let f = LlqFile::open(&p).unwrap();
    assert_eq!(f.get("test.u32"), Some(&Value::U32(7)));
    assert_eq!(f.get_bytes("test.blob"), Some(&[1u8, 2, 3, 4, 5][..]));
    assert_eq!(f.tensors().len(), 2);
    let b = f.tensor("b").unwrap();
    assert_eq!(b.shape, vec![2, 64]);
    assert_eq!(b.offset % 64, 0);
    assert!(f.tensor_data(b).iter().all(|&x| x == 1));
    assert!(f.verify_data());
    // Read into memory instead of mapped: the same views.
    let g = LlqFile::open_with(&p, true).unwrap();
    assert_eq!(g.tensor_data(g.tensor("b").unwrap()), f.tensor_data(b));
    assert_eq!(g.tensor("b").unwrap().offset % 64, 0);
    assert!(g.verify_data());
}

#[test]
fn every_truncation_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ok.llq");
    write_valid(&p);
    let bytes = std::fs::read(&p).unwrap();
    // Every cut inside the header and the page after it, then a sample of the data.
    let dense = header_size(&bytes) + 4 + 4096;
    for cut in (0..dense.min(bytes.len())).chain((dense..bytes.len()).step_by(61)) {
        let e = open_bytes(&bytes[..cut])
            .err()
            .unwrap_or_else(|| panic!("cut at {cut} accepted"));
        assert!(!e.is_empty());
    }
}

#[test]
fn every_header_byte_flip_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ok.llq");
    write_valid(&p);
    let bytes = std::fs::read(&p).unwrap();
    for i in 0..header_size(&bytes) + 4 {
        let mut b = bytes.clone();
        b[i] ^= 0x5a;
        assert!(open_bytes(&b).is_err(), "flip at byte {i} accepted");
    }
}

#[test]
fn data_corruption_is_caught_by_the_data_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ok.llq");
    write_valid(&p);
    let mut bytes = std::fs::read(&p).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let f = open_bytes(&bytes).unwrap();
    assert!(!f.verify_data());
}

#[test]
fn newer_major_version_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ok.llq");
    write_valid(&p);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[4..6].copy_from_slice(&2u16.to_le_bytes());
    let e = open_bytes(&bytes).err().unwrap();
    assert!(e.contains("version 2.3 is newer"), "{e}");
}

#[test]
fn not_an_llq_file() {
    let e = open_bytes(
        b"GGUF and then some more bytes to pass the length check........................",
    )
    .err()
    .unwrap();
    assert!(e.contains("not an llq file"), "{e}");
    let e = open_bytes(b"").err().unwrap();
    assert!(e.contains("not an llq file"), "{e}");
}

/// A hand-encoded file per docs/FORMAT.md with a correct header checksum, so that the
/// reader's structural checks (not the CRC) must catch the problem.
struct Raw {
    meta: Vec<u8>,
    n_meta: u64,
    dir: Vec<u8>,
    n_tensors: u64,
    data: Vec<u8>,
    data_size_delta: i64,
}

impl Raw {
    fn new() -> Raw {
        Raw {
            meta: vec![],
            n_meta: 0,
            dir: vec![],
            n_tensors: 0,
            data: vec![0; 256],
            data_size_delta: 0,
        }
    }

    fn meta_raw(mut self, key: &str, tag: u32, payload: &[u8]) -> Raw {
        self.meta.extend((key.len() as u32).to_le_bytes());
        self.meta.extend(key.as_bytes());
        self.meta.extend(tag.to_le_bytes());
        self.meta.extend(payload);
        self.n_meta += 1;
        self
    }

    #[allow(clippy::too_many_arguments)]
    fn tensor(
        mut self,
        name: &str,
        dtype: u32,
        layout: u32,
        dims: &[u64],
        offset: u64,
        n_bytes: u64,
    ) -> Raw {
        self.dir.extend((name.len() as u32).to_le_bytes());
        self.dir.extend(name.as_bytes());
        self.dir.extend(dtype.to_le_bytes());
        self.dir.extend(layout.to_le_bytes());
        self.dir.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.dir.extend(d.to_le_bytes());
        }
        self.dir.extend(offset.to_le_bytes());
        self.dir.extend(n_bytes.to_le_bytes());
        self.n_tensors += 1;
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let header_size = 64 + self.meta.len() + self.dir.len();
        let data_offset = (header_size + 4).div_ceil(4096) * 4096;
        let mut h = Vec::new();
        h.extend(b"LLQF");
        h.extend(1u16.to_le_bytes());
        h.extend(0u16.to_le_bytes());
        h.extend((header_size as u64).to_le_bytes());
        h.extend(self.n_meta.to_le_bytes());
        h.extend(self.n_tensors.to_le_bytes());
        h.extend((data_offset as u64).to_le_bytes());
        h.extend(((self.data.len() as i64 + self.data_size_delta) as u64).to_le_bytes());
        h.extend(crc32fast::hash(&self.data).to_le_bytes());
        h.extend([0u8; 12]);
        h.extend(&self.meta);
        h.extend(&self.dir);
        let crc = crc32fast::hash(&h);
        h.extend(crc.to_le_bytes());
        h.resize(data_offset, 0);
        h.extend(&self.data);
        h
    }
}

fn expect_err(raw: Raw, needle: &str) {
    let e = open_bytes(&raw.bytes())
        .err()
        .unwrap_or_else(|| panic!("accepted; expected error with {needle:?}"));
    assert!(e.contains(needle), "error {e:?} lacks {needle:?}");
}

#[test]
fn hand_encoded_valid_file_opens() {
    let raw = Raw::new()
        .meta_raw("k", 0, &5u32.to_le_bytes())
        .tensor("t", 0, 0, &[4, 8], 64, 128);
    let f = open_bytes(&raw.bytes()).unwrap();
    assert_eq!(f.get("k"), Some(&Value::U32(5)));
    assert_eq!(f.tensor("t").unwrap().n_bytes, 128);
}

#[test]
fn rows16_tensor_is_padded_to_whole_groups() {
    let mut raw = Raw::new().tensor("t", 2, 1, &[2, 64], 0, 16 * 68);
    raw.data = vec![0; 16 * 68];
    let f = open_bytes(&raw.bytes()).unwrap();
    let t = f.tensor("t").unwrap();
    assert_eq!((t.kind, t.n_bytes), (WeightKind::Q8_0x16, 16 * 68));
}

#[test]
fn hostile_headers_with_valid_checksums() {
    let huge = u64::MAX / 2;
    // Counts larger than the header can hold.
    let mut r = Raw::new();
    r.n_meta = huge;
    expect_err(r, "cannot fit");
    let mut r = Raw::new();
    r.n_tensors = 1 << 40;
    expect_err(r, "cannot fit");
    // String and array lengths past the end.
    expect_err(
        Raw::new().meta_raw("s", 6, &huge.to_le_bytes()),
        "runs past the end",
    );
    expect_err(
        Raw::new().meta_raw("a", 8, &huge.to_le_bytes()),
        "runs past the end",
    );
    expect_err(
        Raw::new().meta_raw("a", 10, &huge.to_le_bytes()),
        "runs past the end",
    );
    expect_err(Raw::new().meta_raw("b", 5, &[7]), "bool byte 7");
    expect_err(Raw::new().meta_raw("x", 99, &[]), "unknown value type 99");
    expect_err(
        Raw::new()
            .meta_raw("k", 0, &[0; 4])
            .meta_raw("k", 0, &[0; 4]),
        "appears twice",
    );
    // Tensor entries.
    expect_err(
        Raw::new().tensor("t", 42, 0, &[4], 0, 16),
        "unknown type id 42",
    );
    expect_err(
        Raw::new().tensor("t", 0, 9, &[4], 0, 16),
        "unknown layout id 9",
    );
    expect_err(Raw::new().tensor("t", 0, 0, &[], 0, 0), "0 dimensions");
    expect_err(Raw::new().tensor("t", 0, 0, &[1; 5], 0, 4), "5 dimensions");
    expect_err(
        Raw::new().tensor("t", 0, 0, &[huge, huge], 0, 16),
        "overflows",
    );
    expect_err(Raw::new().tensor("t", 0, 0, &[0, 4], 0, 0), "empty");
    expect_err(
        Raw::new().tensor("t", 0, 0, &[4], 0, 20),
        "does not match shape",
    );
    expect_err(Raw::new().tensor("t", 2, 0, &[2, 33], 0, 0), "whole number");
    // Quantized matrices row-major (as llq format 1.0 wrote them): no such weight kind.
    expect_err(
        Raw::new().tensor("t", 2, 0, &[2, 64], 0, 136),
        "q8_0 in the row-major layout is not supported",
    );
    // rows16: quantized matrices only, rows padded to 16 (2 rows of q8_0 × 64 → 16 × 68).
    expect_err(
        Raw::new().tensor("t", 0, 1, &[16, 4], 0, 256),
        "layout rows16 needs a quantized 2-D tensor",
    );
    expect_err(
        Raw::new().tensor("t", 2, 1, &[64], 0, 68),
        "layout rows16 needs a quantized 2-D tensor",
    );
    expect_err(
        Raw::new().tensor("t", 2, 1, &[2, 64], 0, 136),
        "does not match shape",
    );
    // q5_k and q6_k as format 1.2 wrote them (layout 1, all high bits before all
    // nibbles) are refused by name; layout 2 is theirs alone, and checked like rows16
    // (16 rows × 256 columns of q6_k: 3360 bytes).
    for (id, name) in [(8, "q5_k"), (9, "q6_k")] {
        expect_err(
            Raw::new().tensor("t", id, 1, &[16, 256], 0, 0),
            &format!("{name} in the rows16 layout of format 1.2 is not supported"),
        );
    }
    expect_err(
        Raw::new().tensor("t", 2, 2, &[16, 64], 0, 1088),
        "layout rows16-sub is for q5_k and q6_k matrices, not q8_0",
    );
    expect_err(
        Raw::new().tensor("t", 9, 2, &[16, 256], 0, 3359),
        "byte length 3359 does not match shape [16, 256] as q6_k (3360 bytes)",
    );
    expect_err(
        Raw::new().tensor("t", 9, 2, &[256], 0, 210),
        "layout rows16-sub needs a quantized 2-D tensor",
    );
    expect_err(
        Raw::new().tensor("t", 0, 0, &[4], 32, 16),
        "not 64-byte aligned",
    );
    expect_err(Raw::new().tensor("t", 0, 0, &[64], 192, 256), "outside");
    expect_err(
        Raw::new().tensor("t", 0, 0, &[4], u64::MAX - 63, 16),
        "outside",
    );
    expect_err(
        Raw::new()
            .tensor("t", 0, 0, &[32], 0, 128)
            .tensor("u", 0, 0, &[4], 64, 16),
        "overlap",
    );
    expect_err(
        Raw::new()
            .tensor("t", 0, 0, &[4], 0, 16)
            .tensor("t", 0, 0, &[4], 64, 16),
        "appears twice",
    );
    // Sizes of the data section.
    let mut r = Raw::new();
    r.data_size_delta = 64;
    expect_err(r, "does not end at the end of the file");
}
