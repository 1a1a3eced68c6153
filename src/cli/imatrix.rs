//! `llq imatrix`: an importance matrix from a calibration text, in llama.cpp's legacy
//! `imatrix.dat` format (usable with `llama-quantize --imatrix` and `llq convert
//! --imatrix`).

use std::path::PathBuf;

use llq::imatrix::{compute, ImatrixParams};
use llq::Result;

use super::common::model_and_text_tokens;
use super::progress::{Progress, Unit};

/// Compute an importance matrix: the text is tokenized without BOS and cut into chunks of
/// -c tokens (the trailing partial chunk is dropped); each chunk is evaluated from an
/// empty cache and, for every matrix of every layer, the mean square of each input
/// column over all tokens is recorded (the output matrix is not, as in llama-imatrix
/// without --process-output).
#[derive(clap::Args)]
pub struct Args {
    /// The model: a .llq file, or a GGUF file or Hugging Face checkpoint directory
    /// (converted once into the cache, as for `llq run`).
    #[arg(short, long)]
    model: PathBuf,
    /// The calibration text file (UTF-8).
    #[arg(short = 'f', long)]
    file: PathBuf,
    /// Output file.
    #[arg(short, long, default_value = "imatrix.dat")]
    output: PathBuf,
    /// Chunk size in tokens.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    ctx_size: usize,
    /// Process at most this many chunks (default: all).
    #[arg(long)]
    chunks: Option<usize>,
    /// Threads (0 = one per physical core).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
}

pub fn run(a: Args) -> Result<()> {
    let (model, tokens) = model_and_text_tokens(&a.model, &a.file, a.threads, a.ctx_size)?;
    let n_chunks = (tokens.len() / a.ctx_size.max(1)).min(a.chunks.unwrap_or(usize::MAX));
    eprintln!(
        "llq: {} tokens, {n_chunks} chunks of {}",
        tokens.len(),
        a.ctx_size
    );
    let bar = Progress::new("imatrix", Unit::Steps("chunk"), n_chunks as u64);
    let params = ImatrixParams {
        n_ctx: a.ctx_size,
        max_chunks: a.chunks,
        dataset: a.file.display().to_string(),
    };
    let m = compute(&model, &tokens, &params, |done, _| {
        bar.set_position(done as u64)
    })?;
    bar.finish();
    m.write(&a.output)?;
    eprintln!(
        "llq: wrote {} ({} entries, {} chunks)",
        a.output.display(),
        m.entries.len(),
        m.last_chunk
    );
    Ok(())
}
