//! `llq perplexity`: perplexity of a text file, and KL divergence against a base model.

use std::path::PathBuf;

use llq::kv::{CacheType, ContextPolicy, KvConfig};
use llq::perplexity::{
    kl_divergence_vs_base, perplexity_streaming, perplexity_with, save_base_logits,
};
use llq::Result;

use super::common::model_and_text_tokens;
use super::progress::{Progress, Unit};

/// Perplexity of a text: the text is tokenized without BOS, cut into non-overlapping
/// windows of -c tokens (the trailing partial window is dropped), each window is evaluated
/// from an empty cache, and every token but the first of each window is scored. The last
/// stdout line is `PPL = <value>`.
///
/// With --streaming the whole text instead streams through one context of -c positions
/// used as a ring (--keep sinks, the oldest other positions overwritten), and every token
/// but the first is scored once as it passes.
///
/// KL divergence (like llama-perplexity --kl-divergence): first run the reference model
/// with --kl-divergence-base FILE to save its log-probabilities, then run another model
/// (e.g. a quantization of it) with --kl-divergence-base FILE --kl-divergence.
#[derive(clap::Args)]
pub struct Args {
    /// The model: a .llq file, or a GGUF file or Hugging Face checkpoint directory
    /// (converted once into the cache, as for `llq run`).
    #[arg(short, long)]
    model: PathBuf,
    /// The text file (UTF-8).
    #[arg(short = 'f', long)]
    file: PathBuf,
    /// Window size in tokens.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    ctx_size: usize,
    /// Threads (0 = one per physical core).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Base log-probabilities file: written by this run, or read with --kl-divergence.
    #[arg(long)]
    kl_divergence_base: Option<PathBuf>,
    /// Compare against --kl-divergence-base instead of writing it.
    #[arg(long, requires = "kl_divergence_base")]
    kl_divergence: bool,
    /// Storage type of the KV cache: f32, f16 or q8_0.
    #[arg(long, default_value_t = KvConfig::interactive().cache_type)]
    cache_type: CacheType,
    /// Stream the text through a ring cache of -c positions instead of windows.
    #[arg(long, conflicts_with = "kl_divergence_base")]
    streaming: bool,
    /// Attention-sink positions kept by --streaming.
    #[arg(long, default_value_t = llq::kv::DEFAULT_KEEP, requires = "streaming")]
    keep: usize,
    /// Tokens per forward call with --streaming.
    #[arg(long, default_value_t = 64, requires = "streaming")]
    batch: usize,
}

pub fn run(a: Args) -> Result<()> {
    let (model, tokens) = model_and_text_tokens(&a.model, &a.file, a.threads, a.ctx_size)?;
    if a.streaming {
        let kv = KvConfig {
            cache_type: a.cache_type,
            policy: ContextPolicy::Shift,
            keep: a.keep,
        };
        eprintln!(
            "llq: {} tokens streamed through a {}-position {} ring cache (keep {})",
            tokens.len(),
            a.ctx_size,
            a.cache_type.name(),
            a.keep
        );
        let bar = Progress::new("perplexity", Unit::Steps("batch"), 0);
        let r = perplexity_streaming(
            &model,
            &tokens,
            a.ctx_size,
            kv,
            a.batch,
            |done, total, ppl| {
                bar.set_length(total as u64);
                bar.set_message(format!("PPL {ppl:.4}"));
                bar.set_position(done as u64);
            },
        )?;
        bar.finish();
        println!("scored tokens = {}", r.n_scored);
        println!("mean NLL = {:.6}", r.mean_nll);
        println!("PPL = {:.4}", r.ppl);
        return Ok(());
    }
    let n_windows = tokens.len() / a.ctx_size.max(1);
    eprintln!(
        "llq: {} tokens, {n_windows} windows of {} ({} trailing tokens dropped)",
        tokens.len(),
        a.ctx_size,
        tokens.len() - n_windows * a.ctx_size
    );
    let bar = Progress::new("perplexity", Unit::Steps("window"), n_windows as u64);
    let progress = |done: usize, _total: usize, ppl: f64| {
        bar.set_message(format!("PPL {ppl:.4}"));
        bar.set_position(done as u64);
    };
    match (&a.kl_divergence_base, a.kl_divergence) {
        (None, _) => {
            let r = perplexity_with(&model, &tokens, a.ctx_size, a.cache_type, progress)?;
            bar.finish();
            println!("windows = {}, scored tokens = {}", r.n_windows, r.n_scored);
            println!("mean NLL = {:.6}", r.mean_nll);
            println!("PPL = {:.4}", r.ppl);
        }
        (Some(base), false) => {
            let r = save_base_logits(&model, &tokens, a.ctx_size, base, progress)?;
            bar.finish();
            eprintln!("llq: saved base log-probabilities to {}", base.display());
            println!("PPL = {:.4}", r.ppl);
        }
        (Some(base), true) => {
            let r = kl_divergence_vs_base(&model, &tokens, a.ctx_size, base, progress)?;
            bar.finish();
            println!("scored tokens = {}", r.n_scored);
            println!("base PPL = {:.4}", r.base_ppl);
            println!("mean KL divergence = {:.6}", r.mean_kl);
            println!("median KL divergence = {:.6}", r.median_kl);
            println!("99th percentile KL divergence = {:.6}", r.p99_kl);
            println!("max KL divergence = {:.6}", r.max_kl);
            println!("top-1 agreement = {:.3}%", r.top1_agreement * 100.0);
            println!("PPL = {:.4}", r.ppl);
        }
    }
    Ok(())
}
