//! Hostile-input tests for the GGUF reader: small valid files are built
//! in-test with a tiny writer, then corrupted. Every corruption must give a
//! `GgufError` whose message names the problem — never a panic.

use llq::gguf::{GgmlType, GgufArray, GgufError, GgufFile, GgufValue};

// ---- tiny test-only GGUF writer -------------------------------------------

const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

fn gstr(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

#[derive(Clone)]
struct Kv {
    key: String,
    ty: u32,
    payload: Vec<u8>,
}

fn kv(key: &str, ty: u32, payload: Vec<u8>) -> Kv {
    Kv {
        key: key.into(),
        ty,
        payload,
    }
}

fn arr_payload(elem_ty: u32, count: u64, elems: &[u8]) -> Vec<u8> {
    let mut v = elem_ty.to_le_bytes().to_vec();
    v.extend_from_slice(&count.to_le_bytes());
    v.extend_from_slice(elems);
    v
}

#[derive(Clone)]
struct Ti {
    name: String,
    dims: Vec<u64>,
    ty: u32,
    offset: u64,
}

#[derive(Clone)]
struct Spec {
    magic: [u8; 4],
    version: u32,
    tensor_count: Option<u64>,
    kv_count: Option<u64>,
    kvs: Vec<Kv>,
    tensors: Vec<Ti>,
    /// Padding used to place the data section.
    align: u64,
    data: Vec<u8>,
}

struct Built {
    bytes: Vec<u8>,
    data_start: usize,
}

fn build(s: &Spec) -> Built {
    let mut b = s.magic.to_vec();
    b.extend_from_slice(&s.version.to_le_bytes());
    let tc = s.tensor_count.unwrap_or(s.tensors.len() as u64);
    let kc = s.kv_count.unwrap_or(s.kvs.len() as u64);
    b.extend_from_slice(&tc.to_le_bytes());
    b.extend_from_slice(&kc.to_le_bytes());
    for k in &s.kvs {
        b.extend_from_slice(&gstr(&k.key));
        b.extend_from_slice(&k.ty.to_le_bytes());
        b.extend_from_slice(&k.payload);
    }
    for t in &s.tensors {
        b.extend_from_slice(&gstr(&t.name));
        b.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&t.ty.to_le_bytes());
        b.extend_from_slice(&t.offset.to_le_bytes());
    }
    while !(b.len() as u64).is_multiple_of(s.align) {
        b.push(0);
    }
    let data_start = b.len();
    b.extend_from_slice(&s.data);
    Built {
        bytes: b,
        data_start,
    }
}

/// A valid file using every metadata value type, a nested array and three
/// tensors (F32, Q8_0, Q4_K).
fn base() -> Spec {
    let tokens: Vec<u8> = ["<unk>", "<s>", "</s>", "hi"]
        .iter()
        .flat_map(|t| gstr(t))
        .collect();
    let scores: Vec<u8> = [0.0f32, -1.0, -2.0, -3.5]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let mut nested = Vec::new();
    for inner in [[1i32, 2], [3, 4]] {
        nested.extend(arr_payload(
            T_I32,
            2,
            &inner
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<_>>(),
        ));
    }
    let kvs = vec![
        kv("general.architecture", T_STRING, gstr("llama")),
        kv("general.alignment", T_U32, 32u32.to_le_bytes().to_vec()),
        kv("test.u8", T_U8, vec![7]),
        kv("test.i8", T_I8, vec![(-3i8) as u8]),
        kv("test.u16", T_U16, 513u16.to_le_bytes().to_vec()),
        kv("test.i16", T_I16, (-300i16).to_le_bytes().to_vec()),
        kv(
            "llama.context_length",
            T_U32,
            2048u32.to_le_bytes().to_vec(),
        ),
        kv("test.i32", T_I32, (-5i32).to_le_bytes().to_vec()),
        kv(
            "llama.rope.freq_base",
            T_F32,
            10000f32.to_le_bytes().to_vec(),
        ),
        kv("test.bool", T_BOOL, vec![1]),
        kv("test.u64", T_U64, (1u64 << 40).to_le_bytes().to_vec()),
        kv("test.i64", T_I64, 12i64.to_le_bytes().to_vec()),
        kv("test.f64", T_F64, 0.25f64.to_le_bytes().to_vec()),
        kv(
            "tokenizer.ggml.tokens",
            T_ARRAY,
            arr_payload(T_STRING, 4, &tokens),
        ),
        kv(
            "tokenizer.ggml.scores",
            T_ARRAY,
            arr_payload(T_F32, 4, &scores),
        ),
        kv(
            "tokenizer.ggml.token_type",
            T_ARRAY,
            arr_payload(T_U8, 4, &[2, 3, 3, 1]),
        ),
        kv("test.nested", T_ARRAY, arr_payload(T_ARRAY, 2, &nested)),
    ];
    // tok_embd: F32 [4, 2] = 32 bytes at 0; q: Q8_0 [32, 2] = 68 bytes at 32;
    // k: Q4_K [256] = 144 bytes at 128.
    let tensors = vec![
        Ti {
            name: "tok_embd.weight".into(),
            dims: vec![4, 2],
            ty: 0,
            offset: 0,
        },
        Ti {
            name: "blk.0.attn_q.weight".into(),
            dims: vec![32, 2],
            ty: 8,
            offset: 32,
        },
        Ti {
            name: "blk.0.attn_k.weight".into(),
            dims: vec![256],
            ty: 12,
            offset: 128,
        },
    ];
    let mut data = vec![0u8; 128 + 144];
    for (i, x) in data[..32].chunks_exact_mut(4).enumerate() {
        x.copy_from_slice(&(i as f32).to_le_bytes());
    }
    // Q8_0 blocks: d = 1.0 (f16 0x3c00), q = j
    for blk in 0..2 {
        let o = 32 + blk * 34;
        data[o..o + 2].copy_from_slice(&0x3c00u16.to_le_bytes());
        for j in 0..32 {
            data[o + 2 + j] = j as u8;
        }
    }
    Spec {
        magic: *b"GGUF",
        version: 3,
        tensor_count: None,
        kv_count: None,
        kvs,
        tensors,
        align: 32,
        data,
    }
}

fn parse(s: &Spec) -> Result<GgufFile, GgufError> {
    GgufFile::from_bytes(build(s).bytes)
}

#[track_caller]
fn expect_err(s: &Spec, needles: &[&str]) -> String {
    let e = parse(s).expect_err("corrupt file was accepted");
    let msg = e.to_string();
    eprintln!("{msg}");
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} does not mention {n:?}");
    }
    msg
}

// ---- valid files ------------------------------------------------------------

#[test]
fn valid_file_parses_fully() {
    let f = parse(&base()).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.metadata().len(), 17);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.get_str("general.architecture"), Some("llama"));
    assert_eq!(f.get_u32("llama.context_length"), Some(2048));
    assert_eq!(f.get_u32("test.u8"), Some(7));
    assert_eq!(f.get_u32("test.u16"), Some(513));
    assert_eq!(f.get_i32("test.i8"), Some(-3));
    assert_eq!(f.get_i32("test.i16"), Some(-300));
    assert_eq!(
        f.get_u32("test.i32"),
        None,
        "negative value must not fit u32"
    );
    assert_eq!(f.get_u64("test.u64"), Some(1 << 40));
    assert_eq!(f.get_u32("test.u64"), None);
    assert_eq!(f.get_i64("test.i64"), Some(12));
    assert_eq!(f.get_f32("llama.rope.freq_base"), Some(10000.0));
    assert_eq!(f.get_f32("test.f64"), Some(0.25));
    assert_eq!(f.get_bool("test.bool"), Some(true));
    assert_eq!(f.get_str("test.u8"), None);
    assert_eq!(f.get("missing"), None);
    let toks = f.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(toks, ["<unk>", "<s>", "</s>", "hi"]);
    assert_eq!(
        f.get_f32_array("tokenizer.ggml.scores").unwrap(),
        vec![0.0, -1.0, -2.0, -3.5]
    );
    assert_eq!(
        f.get_i32_array("tokenizer.ggml.token_type").unwrap(),
        vec![2, 3, 3, 1]
    );
    match f.get("test.nested") {
        Some(GgufValue::Array(GgufArray::Array(inner))) => {
            assert_eq!(inner.len(), 2);
            assert_eq!(inner[1], GgufArray::I32(vec![3, 4]));
        }
        other => panic!("nested array: {other:?}"),
    }

    let built = build(&base());
    assert_eq!(f.data_offset(), built.data_start as u64);
    let t = f.tensors();
    assert_eq!(t.len(), 3);
    assert_eq!(t[0].name, "tok_embd.weight");
    assert_eq!(t[0].ggml_type, GgmlType::F32);
    assert_eq!(t[0].dims, vec![4, 2]);
    assert_eq!(t[0].n_bytes, 32);
    assert_eq!(t[0].offset, built.data_start as u64);
    assert_eq!(t[1].ggml_type, GgmlType::Q8_0);
    assert_eq!(t[1].n_bytes, 68);
    assert_eq!(t[2].ggml_type, GgmlType::Q4_K);
    assert_eq!(t[2].n_bytes, 144);
    assert_eq!(t[2].offset, built.data_start as u64 + 128);
    let emb = f.dequantize_tensor(&t[0]).unwrap();
    assert_eq!(emb, (0..8).map(|i| i as f32).collect::<Vec<_>>());
    let q = f
        .dequantize_tensor(f.tensor("blk.0.attn_q.weight").unwrap())
        .unwrap();
    assert_eq!(q[33], 1.0);
    assert_eq!(q[63], 31.0);
    assert_eq!(f.tensor_data(&t[2]).len(), 144);
}

#[test]
fn version_2_and_open_from_disk() {
    let mut s = base();
    s.version = 2;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.gguf");
    std::fs::write(&path, build(&s).bytes).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version(), 2);
    assert_eq!(f.tensors().len(), 3);

    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let e = GgufFile::open(&empty).unwrap_err().to_string();
    assert!(e.contains("truncated") && e.contains("magic"), "{e}");
    let e = GgufFile::open(&dir.path().join("missing.gguf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.gguf"), "{e}");
}

#[test]
fn default_alignment_and_no_tensors() {
    let mut s = base();
    s.kvs.retain(|k| k.key != "general.alignment");
    let f = parse(&s).unwrap();
    assert_eq!(f.alignment(), 32);
    // A metadata-only file may end right after the KV section.
    let mut s = base();
    s.tensors.clear();
    s.data.clear();
    s.align = 1;
    let f = parse(&s).unwrap();
    assert!(f.tensors().is_empty());
}

#[test]
fn custom_alignment_is_honoured() {
    let mut s = base();
    s.kvs[1].payload = 64u32.to_le_bytes().to_vec();
    s.align = 64;
    s.tensors[1].offset = 64;
    s.tensors[2].offset = 192;
    s.data.resize(192 + 144, 0);
    let f = parse(&s).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_offset() % 64, 0);
    // With alignment 64 the old offset 32 is misaligned.
    let mut s2 = s.clone();
    s2.tensors[1].offset = 32;
    expect_err(&s2, &["blk.0.attn_q.weight", "misaligned", "64"]);
}

// ---- truncation -------------------------------------------------------------

#[test]
fn truncated_at_every_byte_is_an_error() {
    let built = build(&base());
    let full = built.bytes;
    // Every cut point of the header/KV/tensor-info region, plus a few in
    // the data section.
    let mut cuts: Vec<usize> = (0..=built.data_start).collect();
    cuts.extend([built.data_start + 1, built.data_start + 100, full.len() - 1]);
    for cut in cuts {
        let r = std::panic::catch_unwind(|| GgufFile::from_bytes(full[..cut].to_vec()));
        let r = r.unwrap_or_else(|_| panic!("panic when truncated at {cut}"));
        let e = r.expect_err(&format!("file truncated at {cut} accepted"));
        let msg = e.to_string();
        assert!(
            msg.contains("end of the file") || msg.contains("truncated"),
            "cut {cut}: {msg}"
        );
    }
    assert!(GgufFile::from_bytes(full).is_ok());
}

// ---- header -----------------------------------------------------------------

#[test]
fn bad_magic() {
    let mut s = base();
    s.magic = *b"GGML";
    expect_err(&s, &["magic"]);
    let e = GgufFile::from_bytes(b"\x00\x01\x02\x03rest".to_vec()).unwrap_err();
    assert!(matches!(e, GgufError::BadMagic { .. }), "{e}");
}

#[test]
fn unsupported_versions() {
    for (v, extra) in [(1u32, "obsolete"), (4, "version 4"), (0, "version 0")] {
        let mut s = base();
        s.version = v;
        expect_err(&s, &[&format!("version {v}"), extra]);
    }
    let mut s = base();
    s.version = 3u32.swap_bytes();
    expect_err(&s, &["big-endian"]);
}

#[test]
fn absurd_counts_do_not_allocate() {
    for count in [1u64 << 60, u64::MAX, 1 << 32] {
        let mut s = base();
        s.tensor_count = Some(count);
        expect_err(&s, &["tensor count is", &count.to_string(), "impossible"]);
        let mut s = base();
        s.kv_count = Some(count);
        expect_err(&s, &["metadata KV count", &count.to_string()]);
    }
    // Counts individually plausible but together too large.
    let mut s = base();
    let built = build(&s);
    let rem = (built.bytes.len() - 24) as u64;
    s.kv_count = Some(rem / 13);
    s.tensor_count = Some(rem / 24);
    expect_err(&s, &["end of the file"]);
}

// ---- metadata -----------------------------------------------------------------

#[test]
fn string_length_past_end() {
    // Key length.
    let mut s = base();
    let built = build(&s);
    let mut bytes = built.bytes.clone();
    bytes[24..32].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = GgufFile::from_bytes(bytes).unwrap_err().to_string();
    assert!(e.contains("string of length 1099511627776"), "{e}");
    assert!(e.contains("key of metadata entry #0"), "{e}");
    assert!(e.contains("byte offset 32"), "{e}");
    // Value string length.
    s.kvs[0].payload = (u64::MAX).to_le_bytes().to_vec();
    expect_err(&s, &["general.architecture", "end of the file"]);
}

#[test]
fn absurd_array_lengths() {
    for count in [1u64 << 60, u64::MAX, 1000] {
        for elem in [T_U8, T_F32, T_STRING, T_ARRAY, T_F64] {
            let mut s = base();
            s.kvs[13].payload = arr_payload(elem, count, &[]);
            expect_err(&s, &["tokenizer.ggml.tokens", "array length", "impossible"]);
        }
    }
}

#[test]
fn bad_value_types_and_values() {
    let mut s = base();
    s.kvs[2].ty = 13;
    expect_err(&s, &["unknown metadata value type id 13", "test.u8"]);
    let mut s = base();
    s.kvs[13].payload = arr_payload(99, 0, &[]);
    expect_err(
        &s,
        &["unknown metadata value type id 99", "tokenizer.ggml.tokens"],
    );
    let mut s = base();
    s.kvs[9].payload = vec![2];
    expect_err(&s, &["bool value 2", "test.bool"]);
    let mut s = base();
    s.kvs[0].payload = {
        let mut v = 2u64.to_le_bytes().to_vec();
        v.extend_from_slice(&[0xff, 0xfe]);
        v
    };
    expect_err(&s, &["UTF-8", "general.architecture"]);
}

#[test]
fn deeply_nested_arrays_are_refused() {
    // 100000 nested array headers would overflow the stack without a limit.
    let mut payload = Vec::new();
    for _ in 0..100_000 {
        payload.extend(arr_payload(T_ARRAY, 1, &[]));
    }
    payload.extend(arr_payload(T_U8, 0, &[]));
    let mut s = base();
    s.kvs.push(kv("test.deep", T_ARRAY, payload));
    expect_err(&s, &["nested", "test.deep"]);
    // Shallow nesting is fine.
    let mut payload = Vec::new();
    for _ in 0..3 {
        payload.extend(arr_payload(T_ARRAY, 1, &[]));
    }
    payload.extend(arr_payload(T_U8, 1, &[9]));
    let mut s = base();
    s.kvs.push(kv("test.shallow", T_ARRAY, payload));
    parse(&s).unwrap();
}

#[test]
fn duplicate_keys_and_tensors() {
    let mut s = base();
    s.kvs.push(kv("test.u8", T_U8, vec![1]));
    expect_err(&s, &["duplicate metadata key 'test.u8'"]);
    let mut s = base();
    s.tensors[2].name = "tok_embd.weight".into();
    expect_err(&s, &["duplicate tensor name 'tok_embd.weight'"]);
}

#[test]
fn bad_alignment_values() {
    for (ty, payload, shown) in [
        (T_U32, 3u32.to_le_bytes().to_vec(), "3"),
        (T_U32, 0u32.to_le_bytes().to_vec(), "0"),
        (T_U32, 48u32.to_le_bytes().to_vec(), "48"),
        (T_I32, (-32i32).to_le_bytes().to_vec(), "-32"),
        (T_STRING, gstr("32"), "32"),
    ] {
        let mut s = base();
        s.kvs[1] = kv("general.alignment", ty, payload);
        expect_err(&s, &["general.alignment", "power of two", shown]);
    }
    // A compatible integer type is accepted.
    let mut s = base();
    s.kvs[1] = kv("general.alignment", T_U64, 32u64.to_le_bytes().to_vec());
    parse(&s).unwrap();
}

// ---- tensor infos -------------------------------------------------------------

#[test]
fn too_many_dims() {
    let mut s = base();
    s.tensors[0].dims = vec![1, 1, 1, 1, 1];
    expect_err(&s, &["tok_embd.weight", "n_dims 5"]);
    // n_dims field itself absurd.
    let built = build(&base());
    let mut bytes = built.bytes;
    let pos = find(&bytes, b"tok_embd.weight") + "tok_embd.weight".len();
    bytes[pos..pos + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = GgufFile::from_bytes(bytes).unwrap_err().to_string();
    assert!(e.contains("n_dims 4294967295"), "{e}");
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle")
}

#[test]
fn absurd_dims() {
    let mut s = base();
    s.tensors[0].dims = vec![u64::MAX, 2];
    expect_err(&s, &["tok_embd.weight", "exceeds"]);
    let mut s = base();
    s.tensors[0].dims = vec![1 << 32, 1 << 32];
    expect_err(&s, &["tok_embd.weight", "overflows"]);
    let mut s = base();
    s.tensors[0].dims = vec![1 << 21, 1 << 21, 1 << 21];
    expect_err(&s, &["tok_embd.weight", "overflows"]);
    // Product fits in elements but not in bytes (F32: 4 bytes each).
    let mut s = base();
    s.tensors[0].dims = vec![1 << 62];
    expect_err(&s, &["tok_embd.weight", "overflows"]);
    // Large but representable: past the end of the file.
    let mut s = base();
    s.tensors[0].dims = vec![1 << 20, 1 << 20];
    expect_err(&s, &["tok_embd.weight", "past the end"]);
}

#[test]
fn row_length_not_multiple_of_block() {
    let mut s = base();
    s.tensors[1].dims = vec![31, 2];
    expect_err(&s, &["blk.0.attn_q.weight", "ne[0] = 31", "Q8_0", "32"]);
    let mut s = base();
    s.tensors[2].dims = vec![128, 2];
    expect_err(&s, &["blk.0.attn_k.weight", "ne[0] = 128", "Q4_K"]);
}

#[test]
fn unknown_type_id() {
    for id in [4u32, 31, 99, u32::MAX] {
        let mut s = base();
        s.tensors[1].ty = id;
        expect_err(
            &s,
            &[
                "blk.0.attn_q.weight",
                "unknown ggml type id",
                &id.to_string(),
            ],
        );
    }
}

#[test]
fn overlapping_tensor_data() {
    let mut s = base();
    s.tensors[2].offset = 64; // Q8_0 tensor occupies 32..100
    expect_err(
        &s,
        &["overlaps", "blk.0.attn_q.weight", "blk.0.attn_k.weight"],
    );
    let mut s = base();
    s.tensors[1].offset = 0;
    expect_err(&s, &["overlaps", "tok_embd.weight"]);
    // Zero-sized tensors overlap nothing.
    let mut s = base();
    s.tensors.push(Ti {
        name: "empty".into(),
        dims: vec![0, 4],
        ty: 0,
        offset: 0,
    });
    let f = parse(&s).unwrap();
    assert_eq!(f.tensor("empty").unwrap().n_bytes, 0);
}

#[test]
fn offset_past_end() {
    for off in [1u64 << 20, u64::MAX - 31, 256] {
        let mut s = base();
        s.tensors[2].offset = off;
        expect_err(&s, &["blk.0.attn_k.weight", "past the end"]);
    }
}

#[test]
fn misaligned_offset() {
    let mut s = base();
    s.tensors[2].offset = 130;
    expect_err(&s, &["blk.0.attn_k.weight", "misaligned", "130"]);
}

// ---- fuzz-ish: random corruption never panics -------------------------------

#[test]
fn random_corruption_never_panics() {
    let full = build(&base()).bytes;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let mut b = full.clone();
        let n_edits = 1 + next() % 4;
        for _ in 0..n_edits {
            let pos = (next() % b.len() as u64) as usize;
            match next() % 3 {
                0 => b[pos] = next() as u8,
                1 => b[pos] ^= 1 << (next() % 8),
                _ => b[pos] = 0xff,
            }
        }
        if next() % 4 == 0 {
            b.truncate((next() % b.len() as u64) as usize);
        }
        let r = std::panic::catch_unwind(|| {
            if let Ok(f) = GgufFile::from_bytes(b.clone()) {
                for t in f.tensors() {
                    let _ = f.tensor_data(t);
                    let _ = f.dequantize_tensor(t);
                }
            }
        });
        assert!(r.is_ok(), "panic on corrupted input {b:02x?}");
    }
}

/// Names read from a corrupt file reach the user as one printable line of bounded length:
/// control characters escaped, kilobytes of name cut.
#[test]
fn raw_bytes_in_names_are_escaped_and_cut_in_messages() {
    let mut s = base();
    let evil = format!("tok\nembd\u{0}\u{1b}[31m{}", "x".repeat(3000));
    s.tensors[2].name = evil.clone();
    s.tensors.push(Ti {
        name: evil,
        ..s.tensors[2].clone()
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evil.gguf");
    std::fs::write(&path, build(&s).bytes).unwrap();
    // The library's error is what the CLI prints after "llq: error: " (checked in-process,
    // so that the test also runs under qemu, where a spawned binary would not).
    let err = match llq::convert::open_checkpoint(&path) {
        Ok(_) => panic!("a GGUF with duplicate tensor names opened"),
        Err(e) => e.to_string(),
    };
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains('\0') && !err.contains('\u{1b}'), "{err:?}");
    assert!(
        err.contains("\\n"),
        "the newline is not shown escaped: {err}"
    );
    assert!(err.len() < 1000, "{} bytes: {err}", err.len());
    eprintln!("{err}");
}

/// A GGUF whose header declares more layers than any model has: `convert` (and
/// `run -m file.gguf`) must refuse it from the header, before building anything per
/// layer. Found by the `gguf` fuzz target: `llama.block_count` = 2^24 - 1 made
/// `GgufCheckpoint::open` list 150 M expected tensors (more than 8 GB) before checking
/// the first one.
#[test]
fn absurd_layer_counts_are_refused_before_anything_per_layer() {
    use llq::convert::GgufCheckpoint;
    let dir = tempfile::tempdir().unwrap();
    for layers in [4097u32, (1 << 24) - 1, u32::MAX] {
        let mut s = base();
        s.tensors[0].name = "token_embd.weight".into();
        let u32kv = |k: &str, v: u32| kv(k, T_U32, v.to_le_bytes().to_vec());
        s.kvs.extend([
            u32kv("llama.embedding_length", 2),
            u32kv("llama.feed_forward_length", 4),
            u32kv("llama.attention.head_count", 1),
            u32kv("llama.block_count", layers),
        ]);
        let path = dir.path().join(format!("layers-{layers}.gguf"));
        std::fs::write(&path, build(&s).bytes).unwrap();
        let t = std::time::Instant::now();
        let msg = GgufCheckpoint::open(&path)
            .err()
            .unwrap_or_else(|| panic!("{layers} layers accepted"))
            .to_string();
        eprintln!("{msg}");
        assert!(
            msg.contains(&format!(
                "layer count = {layers} is out of range (at most 4096)"
            )),
            "{msg}"
        );
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }
}
