//! `llq convert`: checkpoint → `.llq`.

use std::path::PathBuf;

use llq::convert::{convert, open_checkpoint};

use super::common::ConvertProgress;
use llq::quant::DType;
use llq::Result;

/// Convert a Hugging Face checkpoint directory or a GGUF file into a .llq file.
///
/// A GGUF file must be of the llama architecture (any of F32, F16, BF16, Q8_0, Q4_0, Q4_1,
/// Q5_0, Q5_1, Q2_K..Q6_K tensors); its weights are dequantized and re-encoded at --type
/// (--type f32 reproduces them exactly). A Hugging Face directory needs config.json (LlamaForCausalLM or MistralForCausalLM) and
/// model.safetensors or model.safetensors.index.json with its shards (F32, F16 or BF16).
/// tokenizer.json, tokenizer.model, tokenizer_config.json and chat_template.jinja are
/// embedded when present. The output appears only when conversion succeeded.
#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory or .gguf file.
    input: PathBuf,
    /// Output .llq file.
    #[arg(short, long)]
    output: PathBuf,
    /// Weight type: f32, f16, q8_0 (8.5 bits/weight) or q4_0 (4.5 bits/weight). Norms stay
    /// f32; matrices whose rows are not a multiple of 32 fall back to f16.
    #[arg(long = "type", default_value = "q8_0", value_parser = parse_dtype)]
    dtype: DType,
    /// Threads used to quantize (0 = one per physical core).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
}

fn parse_dtype(s: &str) -> std::result::Result<DType, String> {
    DType::from_name(s).ok_or_else(|| format!("unknown type '{s}' (f32, f16, q8_0, q4_0)"))
}

pub fn run(a: Args) -> Result<()> {
    super::init_threads(a.threads)?;
    // Ctrl-C or a kill during the conversion must not leave the temporary file behind.
    llq::format::temp::install_signal_cleanup();
    let start = std::time::Instant::now();
    let ck = open_checkpoint(&a.input)?;
    convert(ck.as_ref(), a.dtype, &a.output, &ConvertProgress::new())?;
    let size = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "llq: wrote {} ({:.1} MiB, {}) in {:.2?}",
        a.output.display(),
        size as f64 / (1 << 20) as f64,
        a.dtype.name(),
        start.elapsed()
    );
    Ok(())
}
