//! Checkpoint → `.llq`. A [`Checkpoint`] hands out hyper-parameters and tensors as f32 one
//! at a time (so peak memory stays near the largest tensor); [`convert`] picks each
//! tensor's storage type, encodes it and streams it into an atomic [`LlqWriter`].

mod gguf;
mod hf;

pub use gguf::{gguf_tokenizer_parts, GgufCheckpoint};
pub use hf::HfCheckpoint;

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::{keys, Layout, LlqWriter, TensorPlan, Value};
use crate::model::{names, ModelConfig};
use crate::quant::{quantize_row_best, DType};

/// A source of weights in llq's canonical naming and orientation.
pub trait Checkpoint {
    fn config(&self) -> &ModelConfig;
    /// Tensor `name` (canonical llq name) as f32, outermost dimension first.
    fn load(&self, name: &str) -> Result<Vec<f32>>;
    /// Non-weight metadata to embed (tokenizer, chat template, provenance).
    fn extra_metadata(&self) -> Result<Vec<(String, Value)>>;
    /// Free anything kept for tensor `name` once it has been written (e.g. mapped pages).
    fn release(&self, _name: &str) {}
}

/// Open a checkpoint: a directory is a Hugging Face checkpoint, a file a GGUF.
pub fn open_checkpoint(path: &Path) -> Result<Box<dyn Checkpoint>> {
    if path.is_dir() {
        Ok(Box::new(HfCheckpoint::open(path)?))
    } else if path.is_file() {
        Ok(Box::new(GgufCheckpoint::open(path)?))
    } else {
        Err(Error::io(
            path,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ))
    }
}

/// Storage type of each tensor for a requested `--type`: vectors stay f32; a matrix whose
/// rows are not a whole number of blocks falls back to f16; at q4_0 the output matrix (or
/// the tied embedding that serves as it) is kept at q8_0, because logits are the most
/// quantization-sensitive product of the model (llama.cpp likewise keeps it at 6 bits).
pub fn storage_type(target: DType, name: &str, tied: bool, shape: &[u64]) -> DType {
    if shape.len() < 2 {
        return DType::F32;
    }
    let is_output = name == names::OUTPUT || (tied && name == names::TOKEN_EMBD);
    let target = if target == DType::Q4_0 && is_output {
        DType::Q8_0
    } else {
        target
    };
    let cols = *shape.last().unwrap() as usize;
    if target.row_bytes(cols).is_some() {
        target
    } else {
        DType::F16
    }
}

/// Progress reporting, so the library stays free of terminal concerns.
pub trait Progress {
    fn start(&self, total_bytes: u64);
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

pub fn convert(
    src: &dyn Checkpoint,
    target: DType,
    out: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    let cfg = src.config();
    let plans: Vec<TensorPlan> = cfg
        .expected_tensors()
        .into_iter()
        .map(|(name, shape)| {
            let dtype = storage_type(target, &name, cfg.tie_embeddings, &shape);
            TensorPlan {
                layout: storage_layout(dtype),
                dtype,
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
        Value::Str(target.name().to_string()),
    ));
    meta.extend(src.extra_metadata()?);

    let total: u64 = plans.iter().map(|p| p.n_bytes().unwrap_or(0)).sum();
    let mut w = LlqWriter::create(out, meta, plans.clone())?;
    progress.start(total);
    let mut buf = Vec::new();
    for p in &plans {
        let data = src.load(&p.name)?;
        if data.len() as u64 != p.n_elements() {
            return Err(Error::usage(format!(
                "tensor '{}': checkpoint gave {} values for shape {:?}",
                p.name,
                data.len(),
                p.shape
            )));
        }
        let n_bytes = p.n_bytes().unwrap() as usize;
        buf.clear();
        buf.resize(n_bytes, 0u8);
        let cols = *p.shape.last().unwrap() as usize;
        encode_matrix(p.dtype, p.layout, &data, cols, &mut buf);
        drop(data);
        w.write_tensor(&buf)?;
        src.release(&p.name);
        progress.advance(&p.name, n_bytes as u64);
    }
    w.finish()?;
    progress.finish();
    Ok(())
}

/// Layout of a tensor stored as `dtype`: quantized matrices are interleaved by 16 rows
/// for the kernels (`quant::interleave`), everything else is row-major.
pub fn storage_layout(dtype: DType) -> Layout {
    if dtype.is_quantized() {
        Layout::Rows16
    } else {
        Layout::RowMajor
    }
}

/// Encode a row-major f32 matrix (or vector) with `cols` columns as `dtype` in `layout`
/// into `out`, which must be exactly [`crate::format::tensor_bytes`] long.
pub fn encode_matrix(dtype: DType, layout: Layout, data: &[f32], cols: usize, out: &mut [u8]) {
    match layout {
        Layout::RowMajor => encode_rows(dtype, data, cols, out),
        Layout::Rows16 => encode_rows16(dtype, data, cols, out),
    }
}

/// Encode row by row in parallel: the converter's time is dominated by quantization.
fn encode_rows(dtype: DType, data: &[f32], cols: usize, out: &mut [u8]) {
    use rayon::prelude::*;
    let row_bytes = dtype.row_bytes(cols).unwrap();
    out.par_chunks_mut(row_bytes)
        .zip(data.par_chunks(cols))
        .for_each(|(o, r)| quantize_row_best(dtype, r, o));
}

/// Encode groups of 16 rows in parallel: quantize each row, then interleave the group
/// (a last partial group is padded with zero rows).
fn encode_rows16(dtype: DType, data: &[f32], cols: usize, out: &mut [u8]) {
    use crate::quant::interleave::{interleave_q4_0, interleave_q8_0, GROUP};
    use crate::quant::{blocks, blocks_mut};
    use rayon::prelude::*;
    let row_bytes = dtype.row_bytes(cols).unwrap();
    out.par_chunks_mut(GROUP * row_bytes)
        .zip(data.par_chunks(GROUP * cols))
        .for_each(|(o, rows)| {
            let mut plain = vec![0u8; GROUP * row_bytes];
            for (p, r) in plain.chunks_exact_mut(row_bytes).zip(rows.chunks(cols)) {
                quantize_row_best(dtype, r, p);
            }
            // Padding rows: all-zero blocks (scale 0), which decode to 0.
            match dtype {
                DType::Q8_0 => interleave_q8_0(blocks(&plain), blocks_mut(o)),
                DType::Q4_0 => interleave_q4_0(blocks(&plain), blocks_mut(o)),
                DType::F32 | DType::F16 => unreachable!("only quantized types are interleaved"),
            }
        });
}
