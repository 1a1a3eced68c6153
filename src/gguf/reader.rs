//! Hardened GGUF v2/v3 reader.
//!
//! Every length, count, dimension and offset read from the file is checked
//! against the bytes actually present before it is used or allocated for, so
//! a hostile file produces a [`GgufError`] naming the problem and where it is,
//! never a panic or an absurd allocation.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use super::error::GgufError;
use super::types::GgmlType;
use super::value::{GgufArray, GgufValue, GgufValueType};

/// `GGUF` in file order.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the tensor data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Maximum number of tensor dimensions (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Maximum nesting depth of metadata arrays (guards the recursion).
const MAX_ARRAY_DEPTH: u32 = 8;
/// Minimum encoded size of one metadata KV entry: key length (8) + value
/// type (4) + smallest value (1).
const MIN_KV_SIZE: u64 = 13;
/// Minimum encoded size of one tensor info: name length (8) + n_dims (4) +
/// type (4) + offset (8).
const MIN_TENSOR_INFO_SIZE: u64 = 24;
/// Upper bound on up-front `Vec` reservations driven by counts in the file.
/// Counts are already bounded by the file size; this additionally keeps a
/// hostile count from reserving several times the file size for entries
/// (strings, KV pairs) that are larger in memory than on disk.
const MAX_PREALLOC: u64 = 1 << 16;

fn prealloc(count: u64) -> usize {
    count.min(MAX_PREALLOC) as usize
}

/// One tensor's description from the tensor-info table, validated against
/// the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufTensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Dimensions in ggml order: `dims[0]` is the innermost (row length).
    pub dims: Vec<u64>,
    /// Absolute byte offset of the tensor data in the file.
    pub offset: u64,
    /// Size of the tensor data in bytes.
    pub n_bytes: u64,
}

impl GgufTensorInfo {
    /// Number of elements (product of `dims`; validated not to overflow).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

enum Backing {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// An opened, fully validated GGUF file.
pub struct GgufFile {
    backing: Backing,
    parsed: Parsed,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.parsed.version)
            .field("n_metadata", &self.parsed.metadata.len())
            .field("n_tensors", &self.parsed.tensors.len())
            .field("alignment", &self.parsed.alignment)
            .field("data_offset", &self.parsed.data_offset)
            .finish()
    }
}

impl GgufFile {
    /// Memory-map and parse the GGUF file at `path`.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let io_err = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let backing = if len == 0 {
            // Mapping an empty file is an error on some platforms; an empty
            // buffer gives the proper "truncated" error instead.
            Backing::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only and only ever read through `&[u8]`.
            // Like every mmap-based reader we rely on the file not being
            // truncated or modified by another process while it is mapped;
            // all structure read from it is validated before use, so content
            // (even hostile content) cannot cause out-of-bounds access.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
            Backing::Mmap(map)
        };
        let parsed = parse(backing.bytes())?;
        Ok(GgufFile { backing, parsed })
    }

    /// Parse a GGUF image held in memory (used by tests and tools).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        let parsed = parse(&bytes)?;
        Ok(GgufFile {
            backing: Backing::Owned(bytes),
            parsed,
        })
    }

    /// GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.parsed.version
    }

    /// All metadata entries, in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.parsed.metadata
    }

    /// The value of metadata key `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.parsed
            .key_index
            .get(key)
            .map(|&i| &self.parsed.metadata[i].1)
    }

    /// An integer value of any integer type that fits in `u32`.
    pub fn get_u32(&self, key: &str) -> Option<u32> {
        self.get(key)?.as_u32()
    }

    /// An integer value of any integer type that fits in `u64`.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    /// An integer value of any integer type that fits in `i32`.
    pub fn get_i32(&self, key: &str) -> Option<i32> {
        self.get(key)?.as_i32()
    }

    /// An integer value of any integer type that fits in `i64`.
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get(key)?.as_i64()
    }

    /// An `f32` value (an `f64` value is narrowed).
    pub fn get_f32(&self, key: &str) -> Option<f32> {
        self.get(key)?.as_f32()
    }

    /// A bool value.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// An array value.
    pub fn get_array(&self, key: &str) -> Option<&GgufArray> {
        self.get(key)?.as_array()
    }

    /// A string array value.
    pub fn get_str_array(&self, key: &str) -> Option<&[String]> {
        match self.get_array(key)? {
            GgufArray::String(v) => Some(v),
            _ => None,
        }
    }

    /// A float array (`f32`, or `f64` narrowed).
    pub fn get_f32_array(&self, key: &str) -> Option<Vec<f32>> {
        self.get_array(key)?.to_f32_vec()
    }

    /// An integer array of any integer element type whose values fit `i32`.
    pub fn get_i32_array(&self, key: &str) -> Option<Vec<i32>> {
        self.get_array(key)?.to_i32_vec()
    }

    /// An integer array of any integer element type whose values fit `u32`.
    pub fn get_u32_array(&self, key: &str) -> Option<Vec<u32>> {
        self.get_array(key)?.to_u32_vec()
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.parsed.tensors
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.parsed
            .tensor_index
            .get(name)
            .map(|&i| &self.parsed.tensors[i])
    }

    /// The raw bytes of a tensor of this file. (An info that does not
    /// belong to this file and lies outside it yields an empty slice.)
    pub fn tensor_data(&self, info: &GgufTensorInfo) -> &[u8] {
        let bytes = self.backing.bytes();
        let range = usize::try_from(info.offset).ok().and_then(|start| {
            let len = usize::try_from(info.n_bytes).ok()?;
            Some(start..start.checked_add(len)?)
        });
        range.and_then(|r| bytes.get(r)).unwrap_or(&[])
    }

    /// Dequantize a whole tensor to `f32` (see [`super::dequantize`]).
    pub fn dequantize_tensor(&self, info: &GgufTensorInfo) -> Result<Vec<f32>, GgufError> {
        let n = usize::try_from(info.n_elements()).map_err(|_| GgufError::Tensor {
            tensor: info.name.clone(),
            msg: "too many elements for this platform".into(),
        })?;
        let mut out = vec![0.0f32; n];
        super::dequant::dequantize(info.ggml_type, self.tensor_data(info), &mut out)?;
        Ok(out)
    }

    /// Alignment of the tensor data (from `general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.parsed.alignment
    }

    /// Absolute byte offset where the tensor data section starts.
    pub fn data_offset(&self) -> u64 {
        self.parsed.data_offset
    }

    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        self.backing.bytes()
    }
}

/// Everything parsed from a GGUF image; owns no reference to the bytes.
struct Parsed {
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

/// Bounds-checked little-endian reader over the file image.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.offset(),
                needed: n,
                available: self.remaining(),
            });
        }
        // n <= remaining <= usize::MAX, so the cast is lossless.
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A GGUF string: u64 byte length then UTF-8 bytes.
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let start = self.offset();
        let len = self.u64(&|| format!("length of {}", what()))?;
        if len > self.remaining() {
            return Err(GgufError::Truncated {
                what: format!("string of length {len} ({})", what()),
                offset: self.offset(),
                needed: len,
                available: self.remaining(),
            });
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| GgufError::Invalid {
            offset: start,
            msg: format!("{} is not valid UTF-8: {e}", what()),
        })
    }

    /// Fail unless `count` items of at least `min_size` bytes each can fit in
    /// the remaining bytes (so allocating `count` items is bounded by the
    /// file size).
    fn check_count(
        &self,
        count: u64,
        min_size: u64,
        what: &dyn Fn() -> String,
    ) -> Result<(), GgufError> {
        match count.checked_mul(min_size) {
            Some(n) if n <= self.remaining() => Ok(()),
            _ => Err(GgufError::Invalid {
                offset: self.offset(),
                msg: format!(
                    "{} is {count}, which is impossible: each entry needs at least {min_size} byte(s) but only {} bytes remain before the end of the file",
                    what(),
                    self.remaining()
                ),
            }),
        }
    }
}

fn value_type(id: u32, offset: u64, what: &dyn Fn() -> String) -> Result<GgufValueType, GgufError> {
    GgufValueType::from_id(id).ok_or_else(|| GgufError::Invalid {
        offset,
        msg: format!("unknown metadata value type id {id} for {}", what()),
    })
}

fn read_value(
    cur: &mut Cursor<'_>,
    ty: GgufValueType,
    depth: u32,
    what: &dyn Fn() -> String,
) -> Result<GgufValue, GgufError> {
    Ok(match ty {
        GgufValueType::U8 => GgufValue::U8(u8::from_le_bytes(cur.array(what)?)),
        GgufValueType::I8 => GgufValue::I8(i8::from_le_bytes(cur.array(what)?)),
        GgufValueType::U16 => GgufValue::U16(u16::from_le_bytes(cur.array(what)?)),
        GgufValueType::I16 => GgufValue::I16(i16::from_le_bytes(cur.array(what)?)),
        GgufValueType::U32 => GgufValue::U32(u32::from_le_bytes(cur.array(what)?)),
        GgufValueType::I32 => GgufValue::I32(i32::from_le_bytes(cur.array(what)?)),
        GgufValueType::F32 => GgufValue::F32(f32::from_le_bytes(cur.array(what)?)),
        GgufValueType::U64 => GgufValue::U64(u64::from_le_bytes(cur.array(what)?)),
        GgufValueType::I64 => GgufValue::I64(i64::from_le_bytes(cur.array(what)?)),
        GgufValueType::F64 => GgufValue::F64(f64::from_le_bytes(cur.array(what)?)),
        GgufValueType::Bool => {
            let off = cur.offset();
            let [b] = cur.array::<1>(what)?;
            GgufValue::Bool(bool_from(b, off, what)?)
        }
        GgufValueType::String => GgufValue::String(cur.string(what)?),
        GgufValueType::Array => GgufValue::Array(read_array(cur, depth, what)?),
    })
}

fn bool_from(b: u8, offset: u64, what: &dyn Fn() -> String) -> Result<bool, GgufError> {
    match b {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(GgufError::Invalid {
            offset,
            msg: format!("bool value {b} (must be 0 or 1) in {}", what()),
        }),
    }
}

/// Decode `count` fixed-size little-endian elements.
fn fixed<const N: usize, T>(
    cur: &mut Cursor<'_>,
    count: u64,
    what: &dyn Fn() -> String,
    conv: fn([u8; N]) -> T,
) -> Result<Vec<T>, GgufError> {
    // count was checked against the remaining bytes; the product fits.
    let bytes = cur.take(count * N as u64, what)?;
    Ok(bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            conv(a)
        })
        .collect())
}

fn read_array(
    cur: &mut Cursor<'_>,
    depth: u32,
    what: &dyn Fn() -> String,
) -> Result<GgufArray, GgufError> {
    let type_off = cur.offset();
    let elem_id = cur.u32(&|| format!("array element type of {}", what()))?;
    let elem = value_type(elem_id, type_off, &|| {
        format!("array elements of {}", what())
    })?;
    if elem == GgufValueType::Array && depth + 1 >= MAX_ARRAY_DEPTH {
        return Err(GgufError::Invalid {
            offset: type_off,
            msg: format!(
                "arrays nested more than {MAX_ARRAY_DEPTH} deep in {}",
                what()
            ),
        });
    }
    let count = cur.u64(&|| format!("array length of {}", what()))?;
    cur.check_count(count, elem.min_encoded_size(), &|| {
        format!("array length of {}", what())
    })?;
    Ok(match elem {
        GgufValueType::U8 => GgufArray::U8(fixed(cur, count, what, u8::from_le_bytes)?),
        GgufValueType::I8 => GgufArray::I8(fixed(cur, count, what, i8::from_le_bytes)?),
        GgufValueType::U16 => GgufArray::U16(fixed(cur, count, what, u16::from_le_bytes)?),
        GgufValueType::I16 => GgufArray::I16(fixed(cur, count, what, i16::from_le_bytes)?),
        GgufValueType::U32 => GgufArray::U32(fixed(cur, count, what, u32::from_le_bytes)?),
        GgufValueType::I32 => GgufArray::I32(fixed(cur, count, what, i32::from_le_bytes)?),
        GgufValueType::F32 => GgufArray::F32(fixed(cur, count, what, f32::from_le_bytes)?),
        GgufValueType::U64 => GgufArray::U64(fixed(cur, count, what, u64::from_le_bytes)?),
        GgufValueType::I64 => GgufArray::I64(fixed(cur, count, what, i64::from_le_bytes)?),
        GgufValueType::F64 => GgufArray::F64(fixed(cur, count, what, f64::from_le_bytes)?),
        GgufValueType::Bool => {
            let start = cur.offset();
            let raw = cur.take(count, what)?;
            let mut v = Vec::with_capacity(raw.len());
            for (i, &b) in raw.iter().enumerate() {
                v.push(bool_from(b, start + i as u64, &|| {
                    format!("element {i} of {}", what())
                })?);
            }
            GgufArray::Bool(v)
        }
        GgufValueType::String => {
            let mut v = Vec::with_capacity(prealloc(count));
            for i in 0..count {
                v.push(cur.string(&|| format!("element {i} of {}", what()))?);
            }
            GgufArray::String(v)
        }
        GgufValueType::Array => {
            let mut v = Vec::with_capacity(prealloc(count));
            for i in 0..count {
                v.push(read_array(cur, depth + 1, &|| {
                    format!("element {i} of {}", what())
                })?);
            }
            GgufArray::Array(v)
        }
    })
}

fn version_hint(version: u32) -> &'static str {
    match version {
        1 => "; GGUF v1 is obsolete, re-convert the model",
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            "; this looks like a big-endian GGUF file, which is not supported"
        }
        0 => "",
        _ => "; the file may be from a newer format revision",
    }
}

/// Parse and validate a complete GGUF image.
fn parse(buf: &[u8]) -> Result<Parsed, GgufError> {
    let mut cur = Cursor { buf, pos: 0 };

    // ---- header -------------------------------------------------------
    if buf.len() >= 4 && buf[..4] != GGUF_MAGIC {
        return Err(GgufError::BadMagic {
            found: buf[..4].to_vec(),
        });
    }
    let magic = cur.array::<4>(&|| "magic".to_string())?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic {
            found: magic.to_vec(),
        });
    }
    let version = cur.u32(&|| "version".to_string())?;
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion {
            version,
            hint: version_hint(version),
        });
    }
    let tensor_count = cur.u64(&|| "tensor count".to_string())?;
    let kv_count = cur.u64(&|| "metadata KV count".to_string())?;
    cur.check_count(kv_count, MIN_KV_SIZE, &|| "metadata KV count".to_string())?;
    cur.check_count(tensor_count, MIN_TENSOR_INFO_SIZE, &|| {
        "tensor count".to_string()
    })?;
    // Both tables share the remaining bytes.
    let min_tables = kv_count * MIN_KV_SIZE + tensor_count * MIN_TENSOR_INFO_SIZE;
    if min_tables > cur.remaining() {
        return Err(GgufError::Invalid {
            offset: cur.offset(),
            msg: format!(
                "{kv_count} metadata entries and {tensor_count} tensor infos need at least {min_tables} bytes but only {} remain before the end of the file",
                cur.remaining()
            ),
        });
    }

    // ---- metadata -----------------------------------------------------
    let mut metadata = Vec::with_capacity(prealloc(kv_count));
    let mut key_index = HashMap::with_capacity(prealloc(kv_count));
    for i in 0..kv_count {
        let key_off = cur.offset();
        let key = cur.string(&|| format!("key of metadata entry #{i}"))?;
        if key_index.contains_key(&key) {
            return Err(GgufError::DuplicateKey {
                key,
                offset: key_off,
            });
        }
        let what = || format!("value of metadata key '{key}'");
        let type_off = cur.offset();
        let ty_id = cur.u32(&|| format!("value type of metadata key '{key}'"))?;
        let ty = value_type(ty_id, type_off, &what)?;
        let value = read_value(&mut cur, ty, 0, &what)?;
        key_index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }

    let alignment = match key_index.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(&i) => {
            let v = &metadata[i].1;
            match v.as_u32() {
                Some(a) if a != 0 && a.is_power_of_two() => a as u64,
                _ => {
                    return Err(GgufError::Metadata {
                        key: "general.alignment".into(),
                        msg: format!(
                            "bad alignment value {v:?}: must be a non-zero power of two that fits in u32"
                        ),
                    })
                }
            }
        }
    };

    // ---- tensor infos ---------------------------------------------------
    struct RawInfo {
        name: String,
        ggml_type: GgmlType,
        dims: Vec<u64>,
        rel_offset: u64,
        n_bytes: u64,
    }
    let mut raw_infos: Vec<RawInfo> = Vec::with_capacity(prealloc(tensor_count));
    let mut tensor_index = HashMap::with_capacity(prealloc(tensor_count));
    for i in 0..tensor_count {
        let info_off = cur.offset();
        let name = cur.string(&|| format!("name of tensor #{i}"))?;
        if tensor_index.contains_key(&name) {
            return Err(GgufError::DuplicateTensor {
                name,
                offset: info_off,
            });
        }
        let ndims_off = cur.offset();
        let n_dims = cur.u32(&|| format!("n_dims of tensor '{name}'"))?;
        if n_dims > MAX_DIMS {
            return Err(GgufError::Invalid {
                offset: ndims_off,
                msg: format!(
                    "tensor '{name}' has n_dims {n_dims}, more than the maximum {MAX_DIMS}"
                ),
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(cur.u64(&|| format!("dimension {d} of tensor '{name}'"))?);
        }
        let type_off = cur.offset();
        let type_id = cur.u32(&|| format!("type of tensor '{name}'"))?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownType {
            tensor: name.clone(),
            id: type_id,
            offset: type_off,
        })?;
        let rel_offset = cur.u64(&|| format!("data offset of tensor '{name}'"))?;

        let tensor_err = |msg: String| GgufError::Tensor {
            tensor: name.clone(),
            msg: format!("{msg} (tensor info at byte offset {info_off})"),
        };
        let mut n_elements: u64 = 1;
        for &d in &dims {
            if d > i64::MAX as u64 {
                return Err(tensor_err(format!(
                    "dimension {d} in dims {dims:?} exceeds i64::MAX"
                )));
            }
            n_elements = n_elements
                .checked_mul(d)
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| tensor_err(format!("element count of dims {dims:?} overflows")))?;
        }
        let block = ggml_type.block_size() as u64;
        let ne0 = dims.first().copied().unwrap_or(1);
        if ne0 % block != 0 || !n_elements.is_multiple_of(block) {
            return Err(tensor_err(format!(
                "row length ne[0] = {ne0} is not a multiple of the {ggml_type} block size {block}"
            )));
        }
        let n_bytes = ggml_type
            .bytes_for(n_elements)
            .ok_or_else(|| tensor_err(format!("byte size of dims {dims:?} overflows")))?;
        if rel_offset % alignment != 0 {
            return Err(tensor_err(format!(
                "data offset {rel_offset} is misaligned: not a multiple of the alignment {alignment}"
            )));
        }
        tensor_index.insert(name.clone(), raw_infos.len());
        raw_infos.push(RawInfo {
            name,
            ggml_type,
            dims,
            rel_offset,
            n_bytes,
        });
    }

    // ---- data section -----------------------------------------------------
    let infos_end = cur.offset();
    let data_offset = infos_end
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| GgufError::Invalid {
            offset: infos_end,
            msg: "data section offset overflows".into(),
        })?;
    let file_len = buf.len() as u64;
    let mut tensors = Vec::with_capacity(raw_infos.len());
    for r in raw_infos {
        let start = data_offset.checked_add(r.rel_offset);
        let end = start.and_then(|s| s.checked_add(r.n_bytes));
        match (start, end) {
            (Some(start), Some(end)) if end <= file_len => tensors.push(GgufTensorInfo {
                name: r.name,
                ggml_type: r.ggml_type,
                dims: r.dims,
                offset: start,
                n_bytes: r.n_bytes,
            }),
            _ => {
                return Err(GgufError::Tensor {
                    msg: format!(
                        "data (offset {} + {} bytes from the data section at byte offset {data_offset}) extends past the end of the file ({file_len} bytes)",
                        r.rel_offset, r.n_bytes
                    ),
                    tensor: r.name,
                })
            }
        }
    }

    // Non-empty tensor data ranges must not overlap.
    let mut order: Vec<usize> = (0..tensors.len())
        .filter(|&i| tensors[i].n_bytes > 0)
        .collect();
    order.sort_by_key(|&i| tensors[i].offset);
    for w in order.windows(2) {
        let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
        if a.offset + a.n_bytes > b.offset {
            return Err(GgufError::Overlap {
                a: a.name.clone(),
                a_start: a.offset,
                a_end: a.offset + a.n_bytes,
                b: b.name.clone(),
                b_start: b.offset,
                b_end: b.offset + b.n_bytes,
            });
        }
    }

    Ok(Parsed {
        version,
        metadata,
        key_index,
        tensors,
        tensor_index,
        alignment,
        data_offset,
    })
}
