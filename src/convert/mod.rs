//! Checkpoint → `.llq`. A [`Checkpoint`] hands out hyper-parameters and tensors as f32 one
//! at a time (so peak memory stays near the largest tensor); [`convert`] picks each
//! tensor's storage type, encodes it and streams it into an atomic [`LlqWriter`].

pub mod detect;
mod gguf;
mod hf;

pub(crate) use gguf::unpermute_rows;
pub use gguf::{gguf_tokenizer_parts, GgufCheckpoint};
pub use hf::HfCheckpoint;

use std::borrow::Cow;
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::{keys, LlqWriter, TensorPlan, Value};
use crate::imatrix::Imatrix;
use crate::model::{names, ModelConfig};
use crate::quant::interleave::{BlockQ4_0x16, BlockQ8_0x16, Interleaved, GROUP};
use crate::quant::kx16::{
    BlockQ4_1x16, BlockQ4_Kx16, BlockQ5_0x16, BlockQ5_1x16, BlockQ5_Kx16, BlockQ6_Kx16,
};
use crate::quant::{
    blocks, blocks_mut, quantize_row_weighted, quantize_rows_weighted, DType, WeightKind,
};

/// A source of weights in llq's canonical naming and orientation.
pub trait Checkpoint {
    fn config(&self) -> &ModelConfig;
    /// Tensor `name` (canonical llq name) as f32, outermost dimension first: borrowed from
    /// the mapped checkpoint when it holds exactly those values (an f32 tensor llq reads
    /// as stored), else computed.
    fn load(&self, name: &str) -> Result<Cow<'_, [f32]>>;
    /// Non-weight metadata to embed (tokenizer, chat template, provenance).
    fn extra_metadata(&self) -> Result<Vec<(String, Value)>>;
    /// Free anything kept for tensor `name` once it has been written (e.g. mapped pages).
    fn release(&self, _name: &str) {}
    /// The llq type tensor `name` is stored as in the checkpoint, if llq can keep it
    /// as it is (GGUF tensors of ggml's Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K,
    /// F16, F32); `None` if the tensor is only available as f32 values.
    fn native_dtype(&self, _name: &str) -> Option<DType> {
        None
    }
    /// Tensor `name`'s stored bytes, row-major in llq's row order, when
    /// [`Checkpoint::native_dtype`] is `Some`.
    fn load_native(&self, name: &str) -> Result<(DType, Vec<u8>)> {
        Err(Error::usage(format!(
            "tensor '{name}' has no stored encoding to keep"
        )))
    }
}

/// What [`convert`] stores each weight matrix as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every matrix encoded as this type (with the fallbacks of [`storage_type`]).
    Type(DType),
    /// Every matrix the checkpoint stores in a type llq has ([`Checkpoint::native_dtype`])
    /// kept exactly as it is, no second rounding; the others encoded as `fallback`.
    /// Vectors are f32 either way.
    Keep { fallback: DType },
    /// One of llama.cpp's K-quant mixtures (see [`Mix`]).
    Mix(Mix),
}

/// llama.cpp's `Q4_K_M` / `Q5_K_M` mixtures (its `llama_tensor_get_type`): every matrix
/// at Q4_K (Q5_K), except the output matrix (or the tied embedding serving as it) at Q6_K,
/// and `attn_v` and `ffn_down` at Q6_K in the layers [`use_more_bits`] picks (the first
/// and last eighth, and every third layer between). Rows that are not whole 256-weight
/// super-blocks fall back as in llama.cpp (see [`storage_type`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    Q4KM,
    Q5KM,
}

impl Mix {
    pub const ALL: [Mix; 2] = [Mix::Q4KM, Mix::Q5KM];

    pub fn name(self) -> &'static str {
        match self {
            Mix::Q4KM => "q4_k_m",
            Mix::Q5KM => "q5_k_m",
        }
    }

    pub fn from_name(s: &str) -> Option<Mix> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
    }

    /// The type tensor `name` gets before the row-length fallback.
    fn wanted(self, cfg: &ModelConfig, name: &str) -> DType {
        let base = match self {
            Mix::Q4KM => DType::Q4_K,
            Mix::Q5KM => DType::Q5_K,
        };
        let n = cfg.n_layers;
        let more =
            |part: &str| (0..n).any(|i| name == names::layer(i, part) && use_more_bits(i, n));
        if more("attn_v") || more("ffn_down") {
            DType::Q6_K
        } else {
            base
        }
    }
}

/// llama.cpp's choice of the layers that get more bits in its mixtures: the first and
/// last eighth, and every third layer in between.
pub fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

impl From<DType> for Target {
    fn from(d: DType) -> Target {
        Target::Type(d)
    }
}

impl Target {
    /// The storage of tensor `name` of `shape` from `src`, and whether its stored bytes
    /// are kept.
    fn plan(self, src: &dyn Checkpoint, name: &str, shape: &[u64]) -> (DType, bool) {
        let tied = src.config().tie_embeddings;
        match self {
            Target::Type(t) => (storage_type(t, name, tied, shape), false),
            Target::Keep { fallback } => match src.native_dtype(name) {
                Some(d) if shape.len() == 2 => (d, true),
                _ => (storage_type(fallback, name, tied, shape), false),
            },
            Target::Mix(m) => (
                storage_type(m.wanted(src.config(), name), name, tied, shape),
                false,
            ),
        }
    }
}

/// Open a checkpoint: a Hugging Face checkpoint directory or a GGUF file (judged by
/// content); anything else is an error saying what it is and what to pass instead.
pub fn open_checkpoint(path: &Path) -> Result<Box<dyn Checkpoint>> {
    let kind = detect::inspect(path)?;
    if let Some(e) = detect::not_a_checkpoint(path, &kind) {
        return Err(e);
    }
    if kind == detect::PathKind::Gguf {
        Ok(Box::new(GgufCheckpoint::open(path)?))
    } else {
        Ok(Box::new(HfCheckpoint::open(path)?))
    }
}

/// Storage type of each tensor for a requested `--type`: vectors stay f32; at q4_0 the
/// output matrix (or the tied embedding that serves as it) is kept at q8_0, and at
/// q4_k/q5_k (alone or in a mixture) at q6_k, because logits are the most
/// quantization-sensitive product of the model (llama.cpp likewise keeps it at 6 bits).
/// A matrix whose rows are not a whole number of blocks falls back as llama.cpp does:
/// q4_k → q5_0, q5_k → q5_1, q6_k → q8_0, and to f16 if even those do not fit.
///
/// The block format is llama.cpp's, but the encoding is not its reference rounding: every
/// block's scales and codes are searched for the least *weighted* squared error
/// (`quant::quantize_row_weighted`, `quant::kq_encode`), with per-column weights from an
/// importance matrix when one is given, else from [`column_importance`] (the attention
/// norm's gain for Q/K/V, the final norm's for an untied output matrix; elsewhere each
/// block's data-free weights, `quant::quantize_row_weighted`).
pub fn storage_type(target: DType, name: &str, tied: bool, shape: &[u64]) -> DType {
    if shape.len() < 2 {
        return DType::F32;
    }
    let is_output = name == names::OUTPUT || (tied && name == names::TOKEN_EMBD);
    let target = match target {
        DType::Q4_0 if is_output => DType::Q8_0,
        DType::Q4_K | DType::Q5_K if is_output => DType::Q6_K,
        t => t,
    };
    let cols = *shape.last().unwrap() as usize;
    let fallback = match target {
        DType::Q4_K => DType::Q5_0,
        DType::Q5_K => DType::Q5_1,
        DType::Q6_K => DType::Q8_0,
        t => t,
    };
    [target, fallback]
        .into_iter()
        .find(|t| t.row_bytes(cols).is_some())
        .unwrap_or(DType::F16)
}

/// Progress reporting, so the library stays free of terminal concerns.
pub trait Progress {
    /// Before anything is written: `total_bytes` is the size of the output file.
    fn start(&self, total_bytes: u64);
    /// `bytes` more were written (the header, then each tensor with the padding before
    /// it): the advances add up to the total given to [`Progress::start`].
    fn advance(&self, tensor: &str, bytes: u64);
    fn finish(&self);
}

/// No progress output.
pub struct Silent;
impl Progress for Silent {
    fn start(&self, _: u64) {}
    fn advance(&self, _: &str, _: u64) {}
    fn finish(&self) {}
}

/// Convert `src` into the `.llq` file `out` (written to a temporary file and renamed
/// into place when complete), storing weights as `target` says.
pub fn convert(
    src: &dyn Checkpoint,
    target: impl Into<Target>,
    out: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    convert_with(src, target, out, progress, None)
}

/// [`convert`] with an importance matrix (llama.cpp's `imatrix.dat`, see
/// [`crate::imatrix`]; checked against the model before anything is written): a matrix
/// with an entry is encoded minimising the error weighted by its columns' mean squared
/// activations.
pub fn convert_with(
    src: &dyn Checkpoint,
    target: impl Into<Target>,
    out: &Path,
    progress: &dyn Progress,
    imatrix: Option<&Imatrix>,
) -> Result<()> {
    let target = target.into();
    let cfg = src.config();
    let mut keep = Vec::new();
    let plans: Vec<TensorPlan> = cfg
        .expected_tensors()
        .into_iter()
        .map(|(name, shape)| {
            let (dtype, kept) = target.plan(src, &name, &shape);
            keep.push(kept);
            TensorPlan {
                kind: WeightKind::for_dtype(dtype),
                name,
                shape,
            }
        })
        .collect();
    let mut meta = cfg.to_metadata();
    meta.push((
        keys::CONVERTER.to_string(),
        Value::Str(format!("llq {}", env!("CARGO_PKG_VERSION"))),
    ));
    meta.push((
        keys::QUANTIZATION.to_string(),
        Value::Str(quantization_name(target, &plans)),
    ));
    meta.extend(src.extra_metadata()?);

    if let Some(m) = imatrix {
        check_imatrix(m, &plans)?;
    }
    let mut w = LlqWriter::create(out, meta, plans.clone())?;
    // Progress counts the file's bytes, header and alignment included, so its total is
    // the size of the file written (the tensors alone fall short by the tokenizer and
    // metadata, megabytes for a large vocabulary).
    progress.start(w.file_len());
    progress.advance("header", w.position());
    let mut buf = Vec::new();
    for (p, &kept) in plans.iter().zip(&keep) {
        let n_bytes = p.n_bytes().unwrap() as usize;
        let cols = *p.shape.last().unwrap() as usize;
        if kept {
            buf.clear();
            buf.resize(n_bytes, 0u8);
            let (dtype, native) = src.load_native(&p.name)?;
            check_native(&p.name, dtype, &native, cols)?;
            place_native(p.kind, &native, cols, &mut buf);
            let before = w.position();
            w.write_tensor(&buf)?;
            src.release(&p.name);
            progress.advance(&p.name, w.position() - before);
            continue;
        }
        let data = src.load(&p.name)?;
        if data.len() as u64 != p.n_elements() {
            return Err(Error::usage(format!(
                "tensor '{}': checkpoint gave {} values for shape {:?}",
                p.name,
                data.len(),
                p.shape
            )));
        }
        // A NaN or infinity would quantize to garbage (or poison a whole block's scale)
        // and surface only as nonsense output: refuse the checkpoint instead.
        if let Some(i) = first_non_finite(&data) {
            return Err(Error::usage(format!(
                "tensor '{}' holds a non-finite value ({}) at element {i}: the checkpoint is \
                 corrupt",
                p.name, data[i]
            )));
        }
        buf.clear();
        buf.resize(n_bytes, 0u8);
        // Widths were checked by `check_imatrix`; values are finite and ≥ 0 (`parse`).
        let from_imatrix = imatrix
            .and_then(|m| m.get(&p.name))
            .map(|e| e.importance())
            .filter(|v| v.iter().all(|x| x.is_finite()));
        let weights = match (p.kind.dtype().is_quantized(), from_imatrix) {
            (false, _) => None,
            (true, Some(v)) => Some(v),
            (true, None) => column_importance(src, &p.name)?,
        };
        encode_matrix(p.kind, &data, cols, weights.as_deref(), &mut buf);
        drop(data);
        let before = w.position();
        w.write_tensor(&buf)?;
        src.release(&p.name);
        progress.advance(&p.name, w.position() - before);
    }
    w.finish()?;
    progress.finish();
    Ok(())
}

/// An importance matrix must be for this model: every entry that names one of its
/// matrices has that matrix's width (llama-quantize refuses the same), and at least one
/// entry names one. Checked before anything is written.
fn check_imatrix(m: &Imatrix, plans: &[TensorPlan]) -> Result<()> {
    let mut used = 0;
    for p in plans {
        let Some(e) = m.get(&p.name) else { continue };
        let cols = *p.shape.last().unwrap() as usize;
        if e.values.len() != cols {
            return Err(Error::usage(format!(
                "the importance matrix's entry '{}' has {} columns, the tensor {cols}: an \
                 importance matrix made for another model?",
                p.name,
                e.values.len()
            )));
        }
        used += 1;
    }
    if used == 0 && !m.entries.is_empty() {
        return Err(Error::usage(format!(
            "none of the importance matrix's {} entries (e.g. '{}') names a matrix of this \
             model: an importance matrix made for another model?",
            m.entries.len(),
            m.entries[0].name
        )));
    }
    Ok(())
}

/// Index of the first NaN or infinity in `v`. Chunks are tested with a bitwise OR of
/// exponent checks (branch-free, vectorised) and only a flagged chunk is searched: a
/// model's every value passes through here.
fn first_non_finite(v: &[f32]) -> Option<usize> {
    const EXP: u32 = 0x7f80_0000;
    v.chunks(1024).enumerate().find_map(|(c, chunk)| {
        let bad = chunk
            .iter()
            .fold(false, |acc, x| acc | (x.to_bits() & EXP == EXP));
        bad.then(|| c * 1024 + chunk.iter().position(|x| !x.is_finite()).unwrap_or(0))
    })
}

/// Little-endian f32 bytes as f32 values without a copy, when their address is aligned
/// (a mapped checkpoint's f32 tensor: converting a 1B-parameter f32 model otherwise copies
/// 4 GB into fresh pages first).
pub(crate) fn borrow_f32(bytes: &[u8]) -> Option<&[f32]> {
    if !cfg!(target_endian = "little") || !bytes.len().is_multiple_of(4) {
        return None;
    }
    // SAFETY: every bit pattern is a valid f32, and `align_to` hands out only the aligned
    // middle, which is all of `bytes` when the other two parts are empty.
    let (pre, mid, post) = unsafe { bytes.align_to::<f32>() };
    (pre.is_empty() && post.is_empty()).then_some(mid)
}

/// A safetensors tensor's little-endian F32, F16 or BF16 bytes as f32 values (widened
/// exactly); `None` for any other dtype. Shared by checkpoints and PEFT adapters.
pub(crate) fn safetensors_f32(dtype: safetensors::Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    use safetensors::Dtype;
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// What the file's `quantization` says: the requested type, or for kept tensors the
/// types of the quantized matrices, most bytes first (e.g. `q4_k+q6_k+q5_0`).
fn quantization_name(target: Target, plans: &[TensorPlan]) -> String {
    match target {
        Target::Type(t) => t.name().to_string(),
        Target::Mix(m) => m.name().to_string(),
        Target::Keep { .. } => {
            let mut by_type: Vec<(DType, u64)> = Vec::new();
            for p in plans.iter().filter(|p| p.kind.dtype().is_quantized()) {
                let b = p.n_bytes().unwrap_or(0);
                match by_type.iter_mut().find(|(d, _)| *d == p.kind.dtype()) {
                    Some((_, n)) => *n += b,
                    None => by_type.push((p.kind.dtype(), b)),
                }
            }
            by_type.sort_by_key(|b| std::cmp::Reverse(b.1));
            let names: Vec<&str> = by_type.iter().map(|(d, _)| d.name()).collect();
            if names.is_empty() {
                "f32".to_string()
            } else {
                names.join("+")
            }
        }
    }
}

/// Refuse a stored tensor of the wrong size or with a non-finite value (a NaN or inf
/// scale would poison every product with its block, and surface only as nonsense).
fn check_native(name: &str, dtype: DType, bytes: &[u8], cols: usize) -> Result<()> {
    let row_bytes = dtype.row_bytes(cols).ok_or_else(|| {
        Error::usage(format!(
            "tensor '{name}': rows of {cols} are not whole {} blocks",
            dtype.name()
        ))
    })?;
    if row_bytes == 0 || !bytes.len().is_multiple_of(row_bytes) {
        return Err(Error::usage(format!(
            "tensor '{name}': {} bytes are not whole rows of {row_bytes}",
            bytes.len()
        )));
    }
    let mut vals = vec![0.0f32; cols];
    for (r, row) in bytes.chunks_exact(row_bytes).enumerate() {
        crate::quant::dequantize_row(dtype, row, &mut vals);
        if let Some(i) = vals.iter().position(|v| !v.is_finite()) {
            return Err(Error::usage(format!(
                "tensor '{name}' holds a non-finite value ({}) at row {r}, column {i}: the \
                 checkpoint is corrupt",
                vals[i]
            )));
        }
    }
    Ok(())
}

/// Lay out a kept tensor's row-major stored bytes as `kind`: floats as they are,
/// quantized rows interleaved in groups of 16 (a last partial group padded with zero
/// blocks, which decode to 0). `out` is [`WeightKind::tensor_bytes`] long.
fn place_native(kind: WeightKind, native: &[u8], cols: usize, out: &mut [u8]) {
    fn groups<B: Interleaved>(native: &[u8], cols: usize, out: &mut [u8]) {
        use rayon::prelude::*;
        let row_bytes = B::DTYPE.row_bytes(cols).unwrap();
        out.par_chunks_mut(GROUP * row_bytes)
            .zip(native.par_chunks(GROUP * row_bytes))
            .for_each(|(o, rows)| {
                let mut plain = vec![0u8; GROUP * row_bytes];
                plain[..rows.len()].copy_from_slice(rows);
                B::interleave(blocks(&plain), blocks_mut(o));
            });
    }
    match kind {
        WeightKind::F32 | WeightKind::F16 => out.copy_from_slice(native),
        WeightKind::Q8_0x16 => groups::<BlockQ8_0x16>(native, cols, out),
        WeightKind::Q4_0x16 => groups::<BlockQ4_0x16>(native, cols, out),
        WeightKind::Q4_1x16 => groups::<BlockQ4_1x16>(native, cols, out),
        WeightKind::Q5_0x16 => groups::<BlockQ5_0x16>(native, cols, out),
        WeightKind::Q5_1x16 => groups::<BlockQ5_1x16>(native, cols, out),
        WeightKind::Q4_Kx16 => groups::<BlockQ4_Kx16>(native, cols, out),
        WeightKind::Q5_Kx16 => groups::<BlockQ5_Kx16>(native, cols, out),
        WeightKind::Q6_Kx16 => groups::<BlockQ6_Kx16>(native, cols, out),
    }
}

/// Encode a row-major f32 matrix (or vector) with `cols` columns as `kind` into `out`,
/// which must be exactly [`WeightKind::tensor_bytes`] long. `weights` (one per column, or
/// `None` for each block's data-free weights) weigh each column's quantization error
/// ([`crate::quant::quantize_row_weighted`]).
pub fn encode_matrix(
    kind: WeightKind,
    data: &[f32],
    cols: usize,
    weights: Option<&[f32]>,
    out: &mut [u8],
) {
    if let Some(w) = weights {
        assert_eq!(w.len(), cols);
    }
    match kind {
        WeightKind::F32 | WeightKind::F16 => encode_rows(kind.dtype(), data, cols, weights, out),
        WeightKind::Q8_0x16 => encode_groups::<BlockQ8_0x16>(data, cols, weights, out),
        WeightKind::Q4_0x16 => encode_groups::<BlockQ4_0x16>(data, cols, weights, out),
        WeightKind::Q4_1x16 => encode_groups::<BlockQ4_1x16>(data, cols, weights, out),
        WeightKind::Q5_0x16 => encode_groups::<BlockQ5_0x16>(data, cols, weights, out),
        WeightKind::Q5_1x16 => encode_groups::<BlockQ5_1x16>(data, cols, weights, out),
        WeightKind::Q4_Kx16 => encode_groups::<BlockQ4_Kx16>(data, cols, weights, out),
        WeightKind::Q5_Kx16 => encode_groups::<BlockQ5_Kx16>(data, cols, weights, out),
        WeightKind::Q6_Kx16 => encode_groups::<BlockQ6_Kx16>(data, cols, weights, out),
    }
}

/// The RMSNorm whose output matrix `name` reads, for the matrices whose quantization is
/// weighted by it ([`column_importance`]): the layer's attention norm for Q/K/V and the
/// final norm for an untied output matrix.
fn input_norm(cfg: &ModelConfig, name: &str) -> Option<String> {
    if name == names::OUTPUT {
        return Some(names::OUTPUT_NORM.to_string());
    }
    (0..cfg.n_layers)
        .find(|&i| {
            ["attn_q", "attn_k", "attn_v"]
                .iter()
                .any(|p| name == names::layer(i, p))
        })
        .map(|i| names::layer(i, "attn_norm"))
}

/// Data-free importance of each column of matrix `name` for its quantization, or `None`
/// where the encoders' per-block data-free weights do better (`quant::quantize_row_weighted`).
///
/// A matrix that reads an RMSNorm's output meets column j of its input as
/// (h / rms(h))_j · g_j, where g is the norm's gain, so an error in W's column j reaches
/// the product scaled by g_j: minimising Σ_j g_j² (w_j − ŵ_j)² per row is minimising the
/// plain squared error of W·diag(g). Without calibration data the normalized activation's
/// own per-channel size is unknown (and real models have outlier channels, often where
/// g is small), so the proxy is shrunk halfway to uniform: w_j = g_j² + mean(g²).
/// Measured on SmolLM2-135M q4_0 (two texts, BENCHMARKS.md): pure g² is *worse* than
/// uniform, the shrunk weights on Q/K/V lower the KL divergence by 5–7 %, and also
/// weighting gate/up by the FFN norm loses part of that gain, so gate/up, like
/// attention-output and down (whose inputs have no such proxy), get `None`. A tied
/// embedding is also the input lookup, where every column matters alike: `None`.
/// (Since the encoders' `None` became per-block data-free weights instead of uniform
/// ones, q4_0 measured: the proxy alone on Q/K/V beats the proxy times those weights,
/// mean KL 0.234 against 0.236 on SmolLM2, 0.304 against 0.308 on its dithered copy.)
fn column_importance(src: &dyn Checkpoint, name: &str) -> Result<Option<Vec<f32>>> {
    let Some(norm) = input_norm(src.config(), name) else {
        return Ok(None);
    };
    let g = src.load(&norm)?;
    let mean = g.iter().map(|v| v * v).sum::<f32>() / g.len().max(1) as f32;
    if !mean.is_finite() || mean <= 0.0 {
        return Ok(None);
    }
    Ok(Some(g.iter().map(|v| v * v + mean).collect()))
}

/// Encode row by row in parallel: the converter's time is dominated by quantization.
fn encode_rows(dtype: DType, data: &[f32], cols: usize, weights: Option<&[f32]>, out: &mut [u8]) {
    use rayon::prelude::*;
    let row_bytes = dtype.row_bytes(cols).unwrap();
    out.par_chunks_mut(row_bytes)
        .zip(data.par_chunks(cols))
        .for_each(|(o, r)| quantize_row_weighted(dtype, r, weights, o));
}

/// Encode groups of 16 rows in parallel: quantize each row, then interleave the group
/// (a last partial group is padded with zero rows).
fn encode_groups<B: Interleaved>(
    data: &[f32],
    cols: usize,
    weights: Option<&[f32]>,
    out: &mut [u8],
) {
    use rayon::prelude::*;
    let row_bytes = B::DTYPE.row_bytes(cols).unwrap();
    out.par_chunks_mut(GROUP * row_bytes)
        .zip(data.par_chunks(GROUP * cols))
        .for_each(|(o, rows)| {
            let mut plain = vec![0u8; GROUP * row_bytes];
            // The group's rows in one call: encoders that work on several blocks at a
            // time fill their lanes across row ends.
            let n = rows.len() / cols;
            quantize_rows_weighted(B::DTYPE, rows, weights, &mut plain[..n * row_bytes]);
            // Padding rows: all-zero blocks (scale 0), which decode to 0.
            B::interleave(blocks(&plain), blocks_mut(o));
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_non_finite_finds_the_first_anywhere() {
        let mut v = vec![1.5f32; 3000];
        assert_eq!(first_non_finite(&v), None);
        for (at, bad) in [
            (0, f32::NAN),
            (1023, f32::INFINITY),
            (1024, f32::NEG_INFINITY),
            (2999, f32::NAN),
        ] {
            v[at] = bad;
            v[2500] = f32::NAN; // a later one must not win
            assert_eq!(first_non_finite(&v), Some(at.min(2500)), "at {at}");
            v[at] = 1.5;
            v[2500] = 1.5;
        }
        // The largest finite value and subnormals are finite.
        v[7] = f32::MAX;
        v[8] = -1e-45;
        assert_eq!(first_non_finite(&v), None);
    }

    #[test]
    fn borrow_f32_only_when_aligned() {
        let vals = [1.0f32, -2.5, 3.25];
        let mut bytes = vec![0u8; 4 * vals.len() + 8];
        // Find an offset where the bytes are 4-aligned, and one where they are not.
        let aligned = bytes.as_ptr().align_offset(4);
        for (i, v) in vals.iter().enumerate() {
            bytes[aligned + 4 * i..aligned + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        let view = borrow_f32(&bytes[aligned..aligned + 12]).expect("aligned");
        assert_eq!(view, &vals);
        assert!(borrow_f32(&bytes[aligned + 1..aligned + 13]).is_none());
        assert!(borrow_f32(&bytes[aligned..aligned + 11]).is_none());
    }
}
