//! The run-time adapter file: a LoRA adapter in the `.llq` container (docs/FORMAT.md,
//! "LoRA adapter files"), written by `llq convert --lora-only` and mapped by [`Adapter`].
//!
//! Per adapted projection it holds `A` as `blk.N.<part>.lora_a` `[r, in]` and `B`
//! *transposed* as `blk.N.<part>.lora_bt` `[r, out]`, both row-major f16 or f32. The
//! transpose is what lets the run-time product `B·(A·x)` be a sum of r rows of length
//! `out` weighted by the r values of `A·x`, the access pattern of attention's value
//! kernel, instead of `out` dot products of length r.

use std::path::{Path, PathBuf};

use half::f16;

use super::{LoraAdapter, Proj, PROJECTIONS};
use crate::error::{Error, Result};
use crate::format::{keys, LlqFile, LlqWriter, TensorEntry, TensorPlan, Value};
use crate::model::ModelConfig;
use crate::quant::{DType, WeightKind};

/// `general.architecture` of an adapter file: a model loader refuses it by name.
pub const ARCHITECTURE: &str = "llama-lora";
pub const KEY_RANK: &str = "lora.rank";
pub const KEY_ALPHA: &str = "lora.alpha";
pub const KEY_RSLORA: &str = "lora.use_rslora";
pub const KEY_SHA256: &str = "lora.source_sha256";

/// Write `a` as an adapter file with its matrices stored as `dtype` (f16 or f32).
pub fn write_adapter(a: &LoraAdapter, dtype: DType, out: &Path) -> Result<()> {
    if !matches!(dtype, DType::F16 | DType::F32) {
        return Err(Error::usage(format!(
            "an adapter is stored as f16 or f32, not {}",
            dtype.name()
        )));
    }
    let meta = vec![
        (
            keys::ARCHITECTURE.to_string(),
            Value::Str(ARCHITECTURE.into()),
        ),
        (keys::NAME.to_string(), Value::Str(a.name.clone())),
        (keys::SOURCE.to_string(), Value::Str("peft".into())),
        (
            keys::CONVERTER.to_string(),
            Value::Str(format!("llq {}", env!("CARGO_PKG_VERSION"))),
        ),
        (
            keys::QUANTIZATION.to_string(),
            Value::Str(dtype.name().into()),
        ),
        (KEY_RANK.to_string(), Value::U32(a.rank as u32)),
        (KEY_ALPHA.to_string(), Value::F64(a.alpha)),
        (KEY_RSLORA.to_string(), Value::Bool(a.use_rslora)),
        (KEY_SHA256.to_string(), Value::Str(a.sha256.clone())),
    ];
    let kind = WeightKind::for_dtype(dtype);
    let plan = |name: String, rows: usize, cols: usize| TensorPlan {
        name,
        kind,
        shape: vec![rows as u64, cols as u64],
    };
    let mut plans = Vec::new();
    for t in &a.targets {
        let base = t.name.strip_suffix(".weight").unwrap_or(&t.name);
        plans.push(plan(format!("{base}.lora_a"), t.rank, t.in_dim));
        plans.push(plan(format!("{base}.lora_bt"), t.rank, t.out_dim));
    }
    let mut w = LlqWriter::create(out, meta, plans)?;
    for t in &a.targets {
        w.write_tensor(&encode(dtype, &t.a))?;
        w.write_tensor(&encode(dtype, &transpose(&t.b, t.out_dim, t.rank)))?;
    }
    w.finish()
}

/// The transpose of a row-major `[rows, cols]` matrix.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; m.len()];
    for i in 0..rows {
        for k in 0..cols {
            t[k * rows + i] = m[i * cols + k];
        }
    }
    t
}

fn encode(dtype: DType, v: &[f32]) -> Vec<u8> {
    match dtype {
        DType::F16 => v
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect(),
        _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// Where a matrix lies: a byte range of the mapped file, or an index into the adapter's
/// own f32 matrices (adapters read from GGUF).
#[derive(Clone, Debug)]
enum Loc {
    File(std::ops::Range<usize>),
    Owned(usize),
}

/// Where one projection's matrices lie.
#[derive(Clone, Debug)]
pub struct TargetRef {
    pub dtype: DType,
    pub rank: usize,
    pub in_dim: usize,
    pub out_dim: usize,
    a: Loc,
    bt: Loc,
}

/// A run-time adapter, ready to be applied beside a base model's matmuls: an adapter file
/// mapped in place, or (from a GGUF adapter) matrices held in memory.
pub struct Adapter {
    path: PathBuf,
    file: Option<LlqFile>,
    owned: Vec<Vec<f32>>,
    pub name: String,
    pub sha256: String,
    pub rank: usize,
    pub alpha: f64,
    pub use_rslora: bool,
    /// `slots[layer][proj]`.
    slots: Vec<[Option<TargetRef>; 7]>,
}

/// A matrix of an adapter, viewed in place.
#[derive(Clone, Copy, Debug)]
pub enum Mat<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl Adapter {
    /// Open a run-time adapter for `cfg`'s model: an adapter file (`llq convert
    /// --lora-only`) or a llama.cpp GGUF LoRA adapter. Every target is checked against the
    /// model's layers and shapes.
    pub fn open(path: &Path, cfg: &ModelConfig) -> Result<Adapter> {
        let mut magic = [0u8; 4];
        let is_gguf = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok()
            && &magic == b"GGUF";
        let a = if is_gguf {
            let la = super::gguf::open_gguf_adapter(path, cfg)?;
            Adapter::from_lora(&la, path)?
        } else {
            Adapter::open_file(path, cfg)?
        };
        a.check_model(cfg)?;
        Ok(a)
    }

    /// An adapter held in memory (f32) from one already checked against the model (a
    /// GGUF adapter).
    fn from_lora(la: &LoraAdapter, path: &Path) -> Result<Adapter> {
        let mut owned = Vec::with_capacity(2 * la.targets.len());
        let mut slots: Vec<[Option<TargetRef>; 7]> = Vec::new();
        for t in &la.targets {
            let (layer, proj) = parse_name(&t.name, ".weight")
                .ok_or_else(|| Error::invalid(path, format!("'{}' is not a projection", t.name)))?;
            if layer >= slots.len() {
                slots.resize(layer + 1, Default::default());
            }
            owned.push(t.a.clone());
            owned.push(transpose(&t.b, t.out_dim, t.rank));
            slots[layer][proj as usize] = Some(TargetRef {
                dtype: DType::F32,
                rank: t.rank,
                in_dim: t.in_dim,
                out_dim: t.out_dim,
                a: Loc::Owned(owned.len() - 2),
                bt: Loc::Owned(owned.len() - 1),
            });
        }
        Ok(Adapter {
            path: path.to_path_buf(),
            file: None,
            owned,
            name: la.name.clone(),
            sha256: la.sha256.clone(),
            rank: la.rank,
            alpha: la.alpha,
            use_rslora: la.use_rslora,
            slots,
        })
    }

    /// Map and validate an adapter file (written by `llq convert --lora-only`); layer
    /// indices are checked against `cfg` before anything is sized by them.
    fn open_file(path: &Path, cfg: &ModelConfig) -> Result<Adapter> {
        let file = LlqFile::open(path)?;
        let bad = |msg: String| Error::invalid(path, msg);
        let arch = file.get(keys::ARCHITECTURE).and_then(Value::as_str);
        if arch != Some(ARCHITECTURE) {
            return Err(bad(format!(
                "not a LoRA adapter file (architecture {arch:?}, '{ARCHITECTURE}' expected; \
                 make one with llq convert --lora-only)"
            )));
        }
        let rank = file
            .get(KEY_RANK)
            .and_then(Value::as_u64)
            .filter(|&r| r > 0 && r <= 1 << 16)
            .ok_or_else(|| bad(format!("metadata '{KEY_RANK}' is missing or out of range")))?
            as usize;
        let alpha = file
            .get(KEY_ALPHA)
            .and_then(Value::as_f64)
            .filter(|a| a.is_finite())
            .ok_or_else(|| bad(format!("metadata '{KEY_ALPHA}' is missing or not finite")))?;
        let use_rslora = match file.get(KEY_RSLORA) {
            Some(Value::Bool(b)) => *b,
            _ => return Err(bad(format!("metadata '{KEY_RSLORA}' is missing"))),
        };
        let str_of = |k: &str| {
            file.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let mut slots: Vec<[Option<TargetRef>; 7]> = Vec::new();
        let tensors = file.tensors();
        if tensors.is_empty() || !tensors.len().is_multiple_of(2) {
            return Err(bad(format!(
                "{} tensors: an adapter holds lora_a/lora_bt pairs",
                tensors.len()
            )));
        }
        for pair in tensors.chunks_exact(2) {
            let (a, bt) = (&pair[0], &pair[1]);
            let (layer, proj) = parse_name(&a.name, ".lora_a")
                .ok_or_else(|| bad(format!("unexpected tensor '{}'", a.name)))?;
            if parse_name(&bt.name, ".lora_bt") != Some((layer, proj)) {
                return Err(bad(format!(
                    "tensor '{}' is not followed by its lora_bt (found '{}')",
                    a.name, bt.name
                )));
            }
            let t = target_ref(a, bt, rank).map_err(&bad)?;
            if layer >= cfg.n_layers {
                return Err(bad(format!(
                    "tensor '{}' adapts layer {layer}, the model has {} layers",
                    a.name, cfg.n_layers
                )));
            }
            if layer >= slots.len() {
                slots.resize(layer + 1, Default::default());
            }
            let slot = &mut slots[layer][proj as usize];
            if slot.is_some() {
                return Err(bad(format!("tensor '{}' appears twice", a.name)));
            }
            *slot = Some(t);
        }
        Ok(Adapter {
            path: path.to_path_buf(),
            name: str_of(keys::NAME),
            sha256: str_of(KEY_SHA256),
            rank,
            alpha,
            use_rslora,
            slots,
            file: Some(file),
            owned: Vec::new(),
        })
    }

    pub fn scaling(&self) -> f32 {
        super::scaling(self.alpha, self.rank, self.use_rslora)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn n_layers(&self) -> usize {
        self.slots.len()
    }

    pub fn target(&self, layer: usize, proj: Proj) -> Option<&TargetRef> {
        self.slots.get(layer)?[proj as usize].as_ref()
    }

    /// `A` (`[r, in]`) and `Bᵀ` (`[r, out]`) of a target.
    pub fn matrices(&self, t: &TargetRef) -> (Mat<'_>, Mat<'_>) {
        let view = |l: &Loc| match l {
            Loc::Owned(i) => Mat::F32(&self.owned[*i]),
            Loc::File(r) => {
                let file = self.file.as_ref().expect("file locations come from a file");
                let b = file.bytes_at(r.clone());
                match t.dtype {
                    DType::F16 => Mat::F16(crate::quant::blocks::<f16>(b)),
                    _ => Mat::F32(crate::quant::blocks::<f32>(b)),
                }
            }
        };
        (view(&t.a), view(&t.bt))
    }

    /// Check every target against `cfg`'s model: same layers, same projection shapes.
    pub fn check_model(&self, cfg: &ModelConfig) -> Result<()> {
        let bad = |msg: String| Error::invalid(self.path(), msg);
        if self.slots.len() > cfg.n_layers {
            return Err(bad(format!(
                "adapts layer {}, the model has {} layers",
                self.slots.len() - 1,
                cfg.n_layers
            )));
        }
        for (l, slots) in self.slots.iter().enumerate() {
            for (p, t) in slots.iter().enumerate() {
                let Some(t) = t else { continue };
                let proj = Proj::ALL[p];
                let (rows, cols) = proj.shape(cfg);
                if (t.out_dim, t.in_dim) != (rows, cols) {
                    return Err(bad(format!(
                        "layer {l} {}: B·A is [{}, {}], the model's matrix is [{rows}, {cols}] \
                         (an adapter for another model?)",
                        PROJECTIONS[p].1, t.out_dim, t.in_dim
                    )));
                }
            }
        }
        Ok(())
    }
}

/// `blk.N.<part><suffix>` → (N, projection).
fn parse_name(name: &str, suffix: &str) -> Option<(usize, Proj)> {
    let rest = name.strip_prefix("blk.")?.strip_suffix(suffix)?;
    let (layer, part) = rest.split_once('.')?;
    let p = PROJECTIONS.iter().position(|(_, q)| *q == part)?;
    Some((layer.parse().ok()?, Proj::ALL[p]))
}

fn target_ref(
    a: &TensorEntry,
    bt: &TensorEntry,
    rank: usize,
) -> std::result::Result<TargetRef, String> {
    for t in [a, bt] {
        if !matches!(t.kind, WeightKind::F16 | WeightKind::F32) {
            return Err(format!(
                "tensor '{}' is {:?}; adapters are row-major f16 or f32",
                t.name, t.kind
            ));
        }
        if t.shape.len() != 2 || t.shape[0] != rank as u64 {
            return Err(format!(
                "tensor '{}' has shape {:?}, expected [{rank}, _]",
                t.name, t.shape
            ));
        }
    }
    if a.kind != bt.kind {
        return Err(format!("'{}' and '{}' differ in type", a.name, bt.name));
    }
    let range = |t: &TensorEntry| {
        // Absolute offsets, validated by the reader to lie inside the data section.
        t.offset..t.offset + t.n_bytes
    };
    Ok(TargetRef {
        dtype: a.kind.dtype(),
        rank,
        in_dim: a.shape[1] as usize,
        out_dim: bt.shape[1] as usize,
        a: Loc::File(range(a)),
        bt: Loc::File(range(bt)),
    })
}
