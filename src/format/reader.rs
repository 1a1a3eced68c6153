//! Memory-mapped, validated `.llq` reader. Every count, length and offset read from the
//! file is checked against the file before use; tensor views are zero-copy slices of the
//! mapping.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::spec::*;
use super::value::{tag, Value};
use crate::error::{Error, Result};
use crate::quant::{DType, WeightKind};

#[derive(Clone, Debug)]
pub struct TensorEntry {
    pub name: String,
    pub kind: WeightKind,
    /// Outermost dimension first.
    pub shape: Vec<u64>,
    /// Absolute byte offset in the file.
    pub offset: usize,
    pub n_bytes: usize,
}

impl TensorEntry {
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// Open `path` for reading, refusing anything but a regular file (after symlinks) with a
/// message that says what the path is. The open itself never blocks: a FIFO would wait
/// for a writer, so it is opened non-blocking and refused by `fstat` on the open file
/// (checking before opening would leave a window for the path to change).
fn open_regular(path: &Path) -> Result<(std::fs::File, u64)> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK changes nothing for regular files (reads from disk do not honour it).
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let file = opts
        .open(path)
        .map_err(|e| Error::io_while(path, "cannot open the model file", e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        let what = file_type_name(&meta.file_type());
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("is {what}, not a .llq model file"),
            ),
        ));
    }
    Ok((file, meta.len()))
}

fn file_type_name(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
    }
    if t.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}

pub struct LlqFile {
    path: PathBuf,
    map: Mmap,
    version: (u16, u16),
    header_size: usize,
    data_offset: usize,
    data_size: usize,
    data_crc: u32,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorEntry>,
}

impl LlqFile {
    pub fn open(path: &Path) -> Result<LlqFile> {
        Self::open_with(path, false)
    }

    /// Like [`LlqFile::open`], but with `in_memory` the file is read into an anonymous,
    /// page-aligned allocation instead of being mapped (for file systems without mmap, or
    /// to avoid page faults on first use). Views behave the same either way.
    pub fn open_with(path: &Path, in_memory: bool) -> Result<LlqFile> {
        let (mut file, len) = open_regular(path)?;
        if len < FIXED_HEADER_LEN as u64 {
            return Err(Error::invalid(
                path,
                format!(
                    "not an llq file: {len} bytes, shorter than the {FIXED_HEADER_LEN}-byte header"
                ),
            ));
        }
        let map = if in_memory {
            let len = usize::try_from(len)
                .map_err(|_| Error::invalid(path, "file too large for this address space"))?;
            let mut buf = memmap2::MmapMut::map_anon(len).map_err(|e| Error::io(path, e))?;
            std::io::Read::read_exact(&mut file, &mut buf).map_err(|e| Error::io(path, e))?;
            buf.make_read_only().map_err(|e| Error::io(path, e))?
        } else {
            // SAFETY: the mapping is read-only and private to this process. llq never
            // writes to a model file it has open; a file truncated by another process while
            // mapped is outside what any mmap-based reader can defend against (as with
            // llama.cpp).
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            // Pages not yet in the page cache are read in 2 MiB folios and mapped as huge
            // pages (see `ChunkWriter` in writer.rs for the measured gain). A hint only:
            // kernels without transparent huge pages refuse it, which changes nothing.
            #[cfg(target_os = "linux")]
            let _ = map.advise(memmap2::Advice::HugePage);
            map
        };
        let (version, header_size, data_offset, data_size, data_crc, metadata, tensors) =
            parse(&map).map_err(|msg| Error::invalid(path, msg))?;
        Ok(LlqFile {
            path: path.to_path_buf(),
            map,
            version,
            header_size,
            data_offset,
            data_size,
            data_crc,
            metadata,
            tensors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> (u16, u16) {
        self.version
    }

    pub fn file_size(&self) -> usize {
        self.map.len()
    }

    pub fn header_size(&self) -> usize {
        self.header_size
    }

    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The bytes of a `bytes` value (stored in place in the file).
    pub fn get_bytes(&self, key: &str) -> Option<&[u8]> {
        match self.get(key)? {
            Value::BytesAt(r) => Some(&self.map[r.clone()]),
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Zero-copy view of a tensor's data (64-byte aligned in memory).
    pub fn tensor_data(&self, t: &TensorEntry) -> &[u8] {
        &self.map[t.offset..t.offset + t.n_bytes]
    }

    /// Bytes of the mapped file (panics outside it; ranges come from validated entries).
    pub fn bytes_at(&self, range: std::ops::Range<usize>) -> &[u8] {
        &self.map[range]
    }

    /// Check the CRC32 of the data section (reads the whole file).
    pub fn verify_data(&self) -> bool {
        crc32fast::hash(&self.map[self.data_offset..self.data_offset + self.data_size])
            == self.data_crc
    }
}

type Parsed = (
    (u16, u16),
    usize,
    usize,
    usize,
    u32,
    Vec<(String, Value)>,
    Vec<TensorEntry>,
);

fn parse(buf: &[u8]) -> std::result::Result<Parsed, String> {
    if buf[0..4] != MAGIC {
        // A GGUF file is the likely mistake: say how to get a .llq from it.
        let hint = if buf[0..4] == *b"GGUF" {
            " (a GGUF file: convert it with llq convert, or give it to llq run -m, which \
             converts it once)"
        } else {
            ""
        };
        return Err(format!(
            "not an llq file: its magic (first 4 bytes) is {}, expected {}{hint}",
            crate::error::show_magic(&buf[0..4]),
            crate::error::show_magic(&MAGIC)
        ));
    }
    let mut c = Cursor { buf, pos: 4 };
    let major = c.u16()?;
    let minor = c.u16()?;
    if major > VERSION_MAJOR {
        return Err(format!(
            "format version {major}.{minor} is newer than this llq reads ({VERSION_MAJOR}.x); upgrade llq"
        ));
    }
    if major != VERSION_MAJOR {
        return Err(format!("unsupported format version {major}.{minor}"));
    }
    let header_size = c.u64()?;
    let n_meta = c.u64()?;
    let n_tensors = c.u64()?;
    let data_offset = c.u64()?;
    let data_size = c.u64()?;
    let data_crc = c.u32()?;
    let file_len = buf.len() as u64;
    if header_size < FIXED_HEADER_LEN as u64 || header_size.saturating_add(4) > file_len {
        return Err(format!(
            "header size {header_size} does not fit the file ({file_len} bytes): truncated or corrupt"
        ));
    }
    let header_size = header_size as usize;
    let stored_crc = u32::from_le_bytes(buf[header_size..header_size + 4].try_into().unwrap());
    let crc = crc32fast::hash(&buf[..header_size]);
    if crc != stored_crc {
        return Err(format!(
            "header checksum mismatch (stored {stored_crc:08x}, computed {crc:08x}): the header or tensor directory is corrupt"
        ));
    }
    if data_offset % DATA_ALIGN != 0 || data_offset < header_size as u64 + 4 {
        return Err(format!(
            "data offset {data_offset} is not a valid page-aligned offset after the header"
        ));
    }
    if data_offset.checked_add(data_size) != Some(file_len) {
        return Err(format!(
            "data section [{data_offset}, +{data_size}) does not end at the end of the file ({file_len} bytes): truncated or padded"
        ));
    }
    let data_offset = data_offset as usize;
    let data_size = data_size as usize;

    // Everything below reads only from the checksummed header region.
    let mut c = Cursor {
        buf: &buf[..header_size],
        pos: FIXED_HEADER_LEN,
    };
    // Each entry takes at least 8 bytes, so the counts are bounded by the header size.
    if n_meta > (header_size / 8) as u64 || n_tensors > (header_size / 8) as u64 {
        return Err(format!(
            "metadata count {n_meta} / tensor count {n_tensors} cannot fit in a {header_size}-byte header"
        ));
    }
    let mut metadata = Vec::with_capacity(n_meta as usize);
    let mut keys = HashSet::new();
    for i in 0..n_meta {
        let key = c
            .string_u32(MAX_KEY_LEN)
            .map_err(|e| format!("metadata entry {i}: key: {e}"))?;
        let value = c.value().map_err(|e| format!("metadata '{key}': {e}"))?;
        if !keys.insert(key.clone()) {
            return Err(format!("metadata key '{key}' appears twice"));
        }
        metadata.push((key, value));
    }
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut names = HashSet::new();
    for i in 0..n_tensors {
        let name = c
            .string_u32(MAX_NAME_LEN)
            .map_err(|e| format!("tensor entry {i}: name: {e}"))?;
        let t = tensor_entry(&mut c, &name, data_offset, data_size)
            .map_err(|e| format!("tensor '{name}': {e}"))?;
        if !names.insert(name.clone()) {
            return Err(format!("tensor '{name}' appears twice"));
        }
        tensors.push(t);
    }
    if c.pos != header_size {
        return Err(format!(
            "header has {} unexplained bytes after the tensor directory",
            header_size - c.pos
        ));
    }
    let mut by_offset: Vec<&TensorEntry> = tensors.iter().collect();
    by_offset.sort_by_key(|t| t.offset);
    for w in by_offset.windows(2) {
        if w[0].offset + w[0].n_bytes > w[1].offset {
            return Err(format!(
                "tensors '{}' and '{}' overlap",
                w[0].name, w[1].name
            ));
        }
    }
    Ok((
        (major, minor),
        header_size,
        data_offset,
        data_size,
        data_crc,
        metadata,
        tensors,
    ))
}

fn tensor_entry(
    c: &mut Cursor,
    name: &str,
    data_offset: usize,
    data_size: usize,
) -> std::result::Result<TensorEntry, String> {
    let dtype_id = c.u32()?;
    let dtype = DType::from_u32(dtype_id).ok_or(format!("unknown type id {dtype_id}"))?;
    let layout_id = c.u32()?;
    let layout = Layout::from_u32(layout_id).ok_or(format!("unknown layout id {layout_id}"))?;
    let n_dims = c.u32()? as usize;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(format!("{n_dims} dimensions (1..={MAX_DIMS} allowed)"));
    }
    let mut shape = Vec::with_capacity(n_dims);
    for _ in 0..n_dims {
        shape.push(c.u64()?);
    }
    let offset = c.u64()?;
    let n_bytes = c.u64()?;
    shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .filter(|&n| n > 0)
        .ok_or(format!("shape {shape:?} is empty or overflows"))?;
    let cols = *shape.last().expect("at least one dimension");
    let not_whole = || {
        format!(
            "shape {shape:?} is not a whole number of {} blocks",
            dtype.name()
        )
    };
    usize::try_from(cols)
        .ok()
        .and_then(|c| dtype.row_bytes(c))
        .ok_or_else(not_whole)?;
    let kind = kind_from_codes(dtype, layout)?;
    let expected = kind.tensor_bytes(&shape).ok_or_else(|| match layout {
        Layout::RowMajor => not_whole(),
        Layout::Rows16 | Layout::Rows16Sub => format!(
            "layout {} needs a quantized 2-D tensor of whole blocks, not {} {shape:?}",
            layout.name(),
            dtype.name()
        ),
    })?;
    if n_bytes != expected {
        return Err(format!(
            "byte length {n_bytes} does not match shape {shape:?} as {} ({expected} bytes)",
            dtype.name()
        ));
    }
    if offset % TENSOR_ALIGN != 0 {
        return Err(format!(
            "offset {offset} is not {TENSOR_ALIGN}-byte aligned"
        ));
    }
    match offset.checked_add(n_bytes) {
        Some(end) if end <= data_size as u64 => {}
        _ => {
            return Err(format!(
                "data [{offset}, +{n_bytes}) lies outside the {data_size}-byte data section"
            ))
        }
    }
    Ok(TensorEntry {
        name: name.to_string(),
        kind,
        shape,
        offset: data_offset + offset as usize,
        n_bytes: n_bytes as usize,
    })
}

/// Bounds-checked little-endian reader; errors name the offset.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.buf.len() => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            _ => Err(format!(
                "{n} bytes needed at offset {} but the header ends at {}",
                self.pos,
                self.buf.len()
            )),
        }
    }

    fn u16(&mut self) -> std::result::Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    /// A u64 count of `elem`-byte items, bounded by what is left in the buffer.
    fn count(&mut self, elem: usize) -> std::result::Result<usize, String> {
        let at = self.pos;
        let n = self.u64()?;
        let left = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(elem as u64) > left {
            return Err(format!(
                "count {n} at offset {at} runs past the end of the header"
            ));
        }
        Ok(n as usize)
    }

    fn utf8(&self, bytes: &[u8], at: usize) -> std::result::Result<String, String> {
        String::from_utf8(bytes.to_vec())
            .map_err(|_| format!("invalid UTF-8 in string at offset {at}"))
    }

    fn string_u32(&mut self, max: usize) -> std::result::Result<String, String> {
        let at = self.pos;
        let n = self.u32()? as usize;
        if n > max {
            return Err(format!("length {n} at offset {at} exceeds the limit {max}"));
        }
        let b = self.take(n)?;
        self.utf8(b, at)
    }

    fn string_u64(&mut self) -> std::result::Result<String, String> {
        let at = self.pos;
        let n = self.count(1)?;
        let b = self.take(n)?;
        self.utf8(b, at)
    }

    /// An array of 4-byte little-endian values: its count, then the values.
    fn array4<T>(&mut self, from: fn([u8; 4]) -> T) -> std::result::Result<Vec<T>, String> {
        let n = self.count(4)?;
        let b = self.take(n * 4)?;
        Ok(b.chunks_exact(4)
            .map(|c| from([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn value(&mut self) -> std::result::Result<Value, String> {
        let at = self.pos;
        Ok(match self.u32()? {
            tag::U32 => Value::U32(self.u32()?),
            tag::I32 => Value::I32(self.u32()? as i32),
            tag::U64 => Value::U64(self.u64()?),
            tag::F32 => Value::F32(f32::from_bits(self.u32()?)),
            tag::F64 => Value::F64(f64::from_bits(self.u64()?)),
            tag::BOOL => match self.take(1)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(format!("bool byte {b} at offset {}", self.pos - 1)),
            },
            tag::STR => Value::Str(self.string_u64()?),
            tag::BYTES => {
                let n = self.count(1)?;
                let start = self.pos;
                self.take(n)?;
                Value::BytesAt(start..start + n)
            }
            tag::ARR_U32 => Value::ArrU32(self.array4(u32::from_le_bytes)?),
            tag::ARR_F32 => Value::ArrF32(self.array4(f32::from_le_bytes)?),
            tag::ARR_STR => {
                let n = self.count(8)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.string_u64()?);
                }
                Value::ArrStr(v)
            }
            t => return Err(format!("unknown value type {t} at offset {at}")),
        })
    }
}
