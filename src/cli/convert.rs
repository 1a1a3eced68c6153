//! `llq convert`: checkpoint → `.llq`.

use std::path::PathBuf;

use llq::convert::{convert_with, open_checkpoint, Mix, Target};
use llq::lora::merge_adapters;

use super::common::ConvertProgress;
use llq::quant::DType;
use llq::Result;

/// Convert a Hugging Face checkpoint directory or a GGUF file into a .llq file.
///
/// A GGUF file must be of the llama architecture. Without --type its Q8_0, Q4_0, Q4_1,
/// Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, F16 and F32 matrices are kept exactly as they are (no
/// second rounding: a Q4_K_M file stays Q4_K_M, bit for bit), the others (BF16, Q2_K,
/// Q3_K) become q8_0; with --type every matrix is dequantized and re-encoded. A Hugging Face directory needs config.json (LlamaForCausalLM or MistralForCausalLM) and
/// model.safetensors or model.safetensors.index.json with its shards (F32, F16 or BF16).
/// tokenizer.json, tokenizer.model, tokenizer_config.json and chat_template.jinja are
/// embedded when present. The output appears only when conversion succeeded.
#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory or .gguf file.
    #[arg(required_unless_present = "lora_only")]
    input: Option<PathBuf>,
    /// Output .llq file.
    #[arg(short, long)]
    output: PathBuf,
    /// Weight type: f32, f16, q8_0 (8.5 bits/weight), q4_0 (4.5), q4_1 (5), q5_0 (5.5),
    /// q5_1 (6), q4_k (4.5), q5_k (5.5), q6_k (6.56), or llama.cpp's mixtures q4_k_m and
    /// q5_k_m (Q6_K for the output matrix and for attn_v/ffn_down in some layers). Norms
    /// stay f32; rows that are not whole blocks fall back as llama.cpp does (q4_k → q5_0,
    /// q5_k → q5_1, q6_k → q8_0), then to f16. Default: a GGUF's own types where llq has
    /// them, else q8_0 (f32 with --lora-only, where only f32 and f16 are allowed).
    #[arg(long = "type", value_parser = parse_type)]
    dtype: Option<TypeArg>,
    /// An importance matrix (llama.cpp's imatrix.dat, e.g. from `llq imatrix`): each
    /// matrix with an entry is encoded minimising the error weighted by its columns' mean
    /// squared activations. A file made for another model (an entry of another width, or
    /// no entry for any of this model's matrices) is refused.
    #[arg(long)]
    imatrix: Option<PathBuf>,
    /// Convert only a PEFT LoRA adapter directory into a run-time adapter file (its A and
    /// B matrices at --type f16 or f32, with alpha, rank and targets), for
    /// `llq run -m base.llq --lora adapter.llq[:scale]`. No base model is read; the
    /// adapter is checked against the model when it is loaded.
    #[arg(long = "lora-only", value_name = "ADAPTER_DIR", conflicts_with_all = ["input", "lora", "lora_scale"])]
    lora_only: Option<PathBuf>,
    /// Threads used to quantize (0 = one per physical core).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) or
    /// a llama.cpp GGUF LoRA file to merge into the weights before quantizing:
    /// W' = W + scale·(alpha/r)·B·A (alpha/sqrt(r) with use_rslora). Repeat to merge
    /// several, in order. The base is INPUT (a Hugging Face directory or a GGUF, whose Q/K
    /// rows are put back in Hugging Face order before the merge), never the adapter's
    /// base_model_name_or_path. Plain LoRA on q/k/v/o/gate/up/down only: DoRA,
    /// modules_to_save, embedding or lm_head targets, rank/alpha patterns, fan_in_fan_out,
    /// layers_to_transform and trained biases are refused.
    #[arg(long = "lora", value_name = "ADAPTER_DIR")]
    lora: Vec<PathBuf>,
    /// Multiplier of the adapters' update: once for all --lora adapters, or once per
    /// --lora in the same order (default 1).
    #[arg(long = "lora-scale", value_name = "S", allow_negative_numbers = true)]
    lora_scale: Vec<f32>,
}

/// Pair each --lora with its scale.
fn lora_specs(a: &Args) -> Result<Vec<(PathBuf, f32)>> {
    let scale = |i: usize| match a.lora_scale.len() {
        0 => Ok(1.0),
        1 => Ok(a.lora_scale[0]),
        n if n == a.lora.len() => Ok(a.lora_scale[i]),
        n => Err(llq::Error::usage(format!(
            "{n} --lora-scale values for {} --lora adapters: give one for all or one per adapter",
            a.lora.len()
        ))),
    };
    if a.lora.is_empty() && !a.lora_scale.is_empty() {
        return Err(llq::Error::usage("--lora-scale needs --lora"));
    }
    a.lora
        .iter()
        .enumerate()
        .map(|(i, d)| Ok((d.clone(), scale(i)?)))
        .collect()
}

/// A `--type`: one storage type, or a mixture.
#[derive(Clone, Copy)]
enum TypeArg {
    One(DType),
    Mix(Mix),
}

fn parse_type(s: &str) -> std::result::Result<TypeArg, String> {
    match Mix::from_name(s) {
        Some(m) => Ok(TypeArg::Mix(m)),
        None => parse_dtype(s).map(TypeArg::One),
    }
}

fn parse_dtype(s: &str) -> std::result::Result<DType, String> {
    DType::from_name(s).ok_or_else(|| {
        let known: Vec<&str> = DType::ALL.into_iter().map(DType::name).collect();
        format!(
            "unknown type '{s}' ({}, or the mixtures {})",
            known.join(", "),
            Mix::ALL.map(Mix::name).join(", ")
        )
    })
}

/// `--lora-only`: a PEFT adapter → run-time adapter file.
fn adapter_only(dir: &std::path::Path, a: &Args) -> Result<()> {
    // f32 keeps the adapter exact (PEFT's goldens within ~3e-6); adapters are small, and
    // --type f16 halves the file at ~5e-4 of logit error.
    let dtype = match a.dtype {
        None => DType::F32,
        Some(TypeArg::One(d)) => d,
        Some(TypeArg::Mix(m)) => {
            return Err(llq::Error::usage(format!(
                "--lora-only takes f32 or f16, not {}",
                m.name()
            )))
        }
    };
    let adapter = llq::lora::open_peft(dir)?;
    llq::lora::write_adapter(&adapter, dtype, &a.output)?;
    eprintln!(
        "llq: wrote {} (LoRA adapter '{}': rank {}, {} projections, {})",
        a.output.display(),
        adapter.name,
        adapter.rank,
        adapter.targets.len(),
        dtype.name()
    );
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    super::init_threads(a.threads)?;
    if let Some(dir) = &a.lora_only {
        llq::format::temp::install_signal_cleanup();
        return adapter_only(dir, &a);
    }
    // Ctrl-C or a kill during the conversion must not leave the temporary file behind.
    llq::format::temp::install_signal_cleanup();
    let start = std::time::Instant::now();
    let target = match a.dtype {
        Some(TypeArg::One(d)) => Target::Type(d),
        Some(TypeArg::Mix(m)) => Target::Mix(m),
        None => Target::Keep {
            fallback: DType::Q8_0,
        },
    };
    let specs = lora_specs(&a)?;
    let input = a
        .input
        .as_ref()
        .expect("clap requires INPUT without --lora-only");
    let mut ck = open_checkpoint(input)?;
    if !specs.is_empty() {
        ck = Box::new(merge_adapters(ck, &specs)?);
    }
    let imatrix = match &a.imatrix {
        Some(p) => {
            let m = llq::imatrix::Imatrix::read(p)?;
            eprintln!(
                "llq: importance matrix {} ({} entries, {} chunks of '{}')",
                p.display(),
                m.entries.len(),
                m.last_chunk,
                m.dataset
            );
            Some(m)
        }
        None => None,
    };
    convert_with(
        ck.as_ref(),
        target,
        &a.output,
        &ConvertProgress::new(),
        imatrix.as_ref(),
    )?;
    let size = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    let types = llq::format::LlqFile::open(&a.output)
        .ok()
        .and_then(|f| match f.get(llq::format::keys::QUANTIZATION) {
            Some(llq::format::Value::Str(s)) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default();
    eprintln!(
        "llq: wrote {} ({:.1} MiB, {types}) in {:.2?}",
        a.output.display(),
        size as f64 / (1 << 20) as f64,
        start.elapsed()
    );
    Ok(())
}
