//! Importance matrices: per weight matrix, the mean square of each input column over a
//! calibration text (`llq imatrix`), stored in llama.cpp's legacy `imatrix.dat` format
//! so files are interchangeable with `llama-imatrix` / `llama-quantize --imatrix`.
//!
//! # File format (little-endian, as llama.cpp's `save_imatrix_legacy` writes it)
//! ```text
//! i32 n_entries (≥ 1)
//! n_entries × { i32 name_len (≥ 1), name bytes (GGUF tensor name, e.g. blk.0.attn_q.weight),
//!               i32 ncall, i32 nval (≥ 1), nval × f32 value }
//! i32 last_chunk, i32 dataset_len (≥ 0), dataset bytes          (optional trailer)
//! ```
//! `value = (Σ x² / count) · ncall`, where `count` is the number of token rows seen and
//! `ncall = ⌈count / chunk_size⌉`; readers divide by `ncall` again, so the importance of
//! column j is the mean of x_j² over every token. Entries are sorted by name.
//! llq's tensor names are the GGUF names, so no mapping is needed. Like llama-imatrix
//! without `--process-output`, only the layers' matrices are recorded (not `output`).

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::model::{names, Logits, MatmulInput, Model, State};

/// One matrix's importance.
#[derive(Clone, Debug, PartialEq)]
pub struct ImatrixEntry {
    /// GGUF / llq tensor name, e.g. `blk.0.ffn_down.weight`.
    pub name: String,
    /// Chunks the statistics were gathered over (the file's `ncall`).
    pub ncall: i32,
    /// As stored: mean square × `ncall` (see the module documentation).
    pub values: Vec<f32>,
}

impl ImatrixEntry {
    /// The mean square of each input column (`values / ncall`, as llama-quantize reads
    /// it; the stored values when `ncall` ≤ 0).
    pub fn importance(&self) -> Vec<f32> {
        if self.ncall > 0 {
            self.values.iter().map(|v| v / self.ncall as f32).collect()
        } else {
            self.values.clone()
        }
    }
}

/// A whole importance matrix file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Imatrix {
    /// Sorted by name.
    pub entries: Vec<ImatrixEntry>,
    /// Chunks processed (the trailer's `last_chunk`).
    pub last_chunk: i32,
    /// The calibration text's name (the trailer's dataset).
    pub dataset: String,
}

impl Imatrix {
    pub fn get(&self, name: &str) -> Option<&ImatrixEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let too_big = |what: &str| Error::usage(format!("imatrix: {what} does not fit in an i32"));
        let i32_of = |n: usize, what: &str| i32::try_from(n).map_err(|_| too_big(what));
        if self.entries.is_empty() {
            return Err(Error::usage("imatrix: no entries to write"));
        }
        let mut out = Vec::new();
        out.extend_from_slice(&i32_of(self.entries.len(), "entry count")?.to_le_bytes());
        for e in &self.entries {
            if e.name.is_empty() || e.values.is_empty() {
                return Err(Error::usage(format!(
                    "imatrix: entry '{}' has an empty name or no values",
                    e.name
                )));
            }
            out.extend_from_slice(&i32_of(e.name.len(), "name length")?.to_le_bytes());
            out.extend_from_slice(e.name.as_bytes());
            out.extend_from_slice(&e.ncall.to_le_bytes());
            out.extend_from_slice(&i32_of(e.values.len(), "value count")?.to_le_bytes());
            for v in &e.values {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out.extend_from_slice(&self.last_chunk.to_le_bytes());
        out.extend_from_slice(&i32_of(self.dataset.len(), "dataset name")?.to_le_bytes());
        out.extend_from_slice(self.dataset.as_bytes());
        Ok(out)
    }

    /// Write the file (atomically: a temporary file renamed into place).
    pub fn write(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(path, e))?;
        std::io::Write::write_all(&mut tmp, &bytes).map_err(|e| Error::io(path, e))?;
        tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
        Ok(())
    }

    /// Read a file (see [`Imatrix::parse`]).
    pub fn read(path: &Path) -> Result<Imatrix> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Imatrix::parse(&bytes).map_err(|msg| Error::invalid(path, msg))
    }

    /// Parse a file's bytes. Every count and length is checked against the bytes that
    /// remain before anything is allocated, so a hostile file gives an error, never a
    /// huge allocation or a panic. Values must be finite and ≥ 0 (they are sums of
    /// squares). The trailer is optional (older files); bytes after it are refused.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Imatrix, String> {
        let mut r = Reader { bytes, at: 0 };
        let n = r.i32("entry count")?;
        if n < 1 {
            return Err(format!("entry count {n} (at least 1 expected)"));
        }
        let mut entries: Vec<ImatrixEntry> = Vec::new();
        for i in 0..n {
            let ctx = |m: String| format!("entry {}: {m}", i + 1);
            let len = r.len("name length", 1).map_err(ctx)?;
            let name = r.take(len, "name").map_err(ctx)?;
            let name = String::from_utf8(name.to_vec())
                .map_err(|_| ctx("the name is not UTF-8".into()))?;
            let ncall = r.i32("ncall").map_err(ctx)?;
            let nval = r.len("value count", 1).map_err(ctx)?;
            let raw = r
                .take(
                    nval.checked_mul(4).ok_or("value count overflows")?,
                    "values",
                )
                .map_err(ctx)?;
            let values: Vec<f32> = raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            // Mean squares are finite and never negative; anything else would steer the
            // encoder's weighted search towards larger errors (negative) or nowhere (NaN).
            if let Some(c) = values.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
                return Err(format!(
                    "entry '{name}': value {} at column {c} is not a mean square (finite and \
                     >= 0): the file is corrupt",
                    values[c]
                ));
            }
            if entries.iter().any(|e| e.name == name) {
                return Err(format!("entry '{name}' appears twice"));
            }
            entries.push(ImatrixEntry {
                name,
                ncall,
                values,
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let (mut last_chunk, mut dataset) = (0, String::new());
        if r.at < bytes.len() {
            last_chunk = r.i32("last chunk")?;
            let len = r.len("dataset name length", 0)?;
            dataset = String::from_utf8_lossy(r.take(len, "dataset name")?).into_owned();
        }
        if r.at != bytes.len() {
            return Err(format!(
                "{} unexpected bytes after the end of the data",
                bytes.len() - r.at
            ));
        }
        Ok(Imatrix {
            entries,
            last_chunk,
            dataset,
        })
    }
}

/// Bounds-checked little-endian reads.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> std::result::Result<&'a [u8], String> {
        let left = self.bytes.len() - self.at;
        if n > left {
            return Err(format!(
                "{what}: {n} bytes needed at offset {}, {left} left (truncated file?)",
                self.at
            ));
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn i32(&mut self, what: &str) -> std::result::Result<i32, String> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A non-negative length ≥ `min`.
    fn len(&mut self, what: &str, min: i32) -> std::result::Result<usize, String> {
        let v = self.i32(what)?;
        if v < min {
            return Err(format!("{what} {v} (at least {min} expected)"));
        }
        Ok(v as usize)
    }
}

/// Running sums of squares per (layer, matrix input), in f64.
struct Sums {
    /// `[layer][input]`: (Σ x², rows seen).
    acc: Vec<[(Vec<f64>, u64); 4]>,
}

fn input_index(i: MatmulInput) -> usize {
    match i {
        MatmulInput::AttnNorm => 0,
        MatmulInput::Attention => 1,
        MatmulInput::FfnNorm => 2,
        MatmulInput::FfnAct => 3,
    }
}

const INPUTS: [MatmulInput; 4] = [
    MatmulInput::AttnNorm,
    MatmulInput::Attention,
    MatmulInput::FfnNorm,
    MatmulInput::FfnAct,
];

/// Options of [`compute`].
#[derive(Clone, Debug)]
pub struct ImatrixParams {
    /// Tokens per chunk (each chunk is evaluated from an empty cache).
    pub n_ctx: usize,
    /// Process at most this many chunks (`None`: every whole chunk of the text).
    pub max_chunks: Option<usize>,
    /// Recorded in the file's trailer.
    pub dataset: String,
}

/// Run `model` over `tokens` in consecutive chunks of `n_ctx` tokens (the trailing
/// partial chunk is dropped, as in perplexity) and collect, for every matrix of every
/// layer, the mean square of each input column over all tokens. `progress(done, total)`
/// after each chunk.
pub fn compute(
    model: &Model,
    tokens: &[u32],
    params: &ImatrixParams,
    mut progress: impl FnMut(usize, usize),
) -> Result<Imatrix> {
    let n_ctx = params.n_ctx;
    if n_ctx == 0 {
        return Err(Error::usage("imatrix: the chunk size must be at least 1"));
    }
    let mut n_chunks = tokens.len() / n_ctx;
    if let Some(m) = params.max_chunks {
        n_chunks = n_chunks.min(m);
    }
    if n_chunks == 0 {
        return Err(Error::usage(format!(
            "imatrix: {} tokens are fewer than one chunk of {n_ctx}",
            tokens.len()
        )));
    }
    let n_layers = model.config.n_layers;
    let sums = Arc::new(Mutex::new(Sums {
        acc: (0..n_layers)
            .map(|_| std::array::from_fn(|_| (Vec::new(), 0)))
            .collect(),
    }));
    let cfg = &model.config;
    let widths = [cfg.dim, cfg.q_dim(), cfg.dim, cfg.ffn_dim];
    let mut state = State::new(model, n_ctx);
    let sink = Arc::clone(&sums);
    state.set_observer(Some(Box::new(move |layer, input, rows: &[f32]| {
        let i = input_index(input);
        let cols = widths[i];
        let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
        let (acc, count) = &mut s.acc[layer][i];
        if acc.is_empty() {
            acc.resize(cols, 0.0);
        }
        for row in rows.chunks_exact(cols) {
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += (v as f64) * (v as f64);
            }
            *count += 1;
        }
    })));
    for c in 0..n_chunks {
        state.reset();
        model.forward(
            &mut state,
            &tokens[c * n_ctx..(c + 1) * n_ctx],
            Logits::Last,
        )?;
        progress(c + 1, n_chunks);
    }
    state.set_observer(None);
    drop(state);
    let sums = Arc::try_unwrap(sums)
        .map_err(|_| Error::usage("imatrix: observer still in use"))?
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    let mut entries = Vec::new();
    for (l, inputs) in sums.acc.iter().enumerate() {
        for (input, (acc, count)) in INPUTS.iter().zip(inputs) {
            if *count == 0 {
                continue;
            }
            let ncall = count.div_ceil(n_ctx as u64) as i32;
            let values: Vec<f32> = acc
                .iter()
                .map(|s| (s / *count as f64 * ncall as f64) as f32)
                .collect();
            for part in input.parts() {
                entries.push(ImatrixEntry {
                    name: names::layer(l, part),
                    ncall,
                    values: values.clone(),
                });
            }
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Imatrix {
        entries,
        last_chunk: n_chunks as i32,
        dataset: params.dataset.clone(),
    })
}
