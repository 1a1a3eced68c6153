//! `llq run`: evaluate a prompt and stream generated tokens.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use llq::model::{Logits, Model, State};
use llq::sample::{Sampler, SamplerParams};
use llq::{Error, Result};

/// Generate tokens from a prompt. With --prompt-ids the generated ids are printed to
/// stdout, space-separated, as they are produced.
#[derive(clap::Args)]
pub struct Args {
    /// The .llq model file.
    #[arg(short, long)]
    model: PathBuf,
    /// Prompt as comma-separated token ids (no BOS is added).
    #[arg(long, value_delimiter = ',', required = true)]
    prompt_ids: Vec<u32>,
    /// Number of tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 64)]
    n_predict: usize,
    /// Context size in tokens (0 = the model's).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 0)]
    ctx_size: usize,
    /// Threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    temp: f32,
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1 = off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Drop tokens less likely than min_p × the most likely one (0 = off).
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Penalty for tokens among the last --repeat-last-n (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    #[arg(long, default_value_t = 64)]
    repeat_last_n: usize,
    /// Random seed.
    #[arg(short = 's', long, default_value_t = 0x5eed)]
    seed: u64,
    /// Stop at the model's end-of-sequence token.
    #[arg(long)]
    stop_at_eos: bool,
}

pub fn run(a: Args) -> Result<()> {
    super::init_threads(a.threads)?;
    llq::kernels::select().map_err(Error::usage)?;
    let t0 = Instant::now();
    let model = Model::open(&a.model)?;
    let n_ctx = if a.ctx_size == 0 {
        model.config.context_length
    } else {
        a.ctx_size
    };
    if a.prompt_ids.len() + a.n_predict > n_ctx {
        return Err(Error::usage(format!(
            "prompt ({}) + tokens to generate ({}) exceed the context size {n_ctx} (set -c)",
            a.prompt_ids.len(),
            a.n_predict
        )));
    }
    let mut state = State::new(&model, n_ctx);
    let mut sampler = Sampler::new(SamplerParams {
        temp: a.temp,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repeat_penalty: a.repeat_penalty,
        repeat_last_n: a.repeat_last_n,
        seed: a.seed,
    });
    a.prompt_ids.iter().for_each(|&t| sampler.accept(t));
    let load = t0.elapsed();

    let t1 = Instant::now();
    let mut next = sampler.sample(model.forward(&mut state, &a.prompt_ids, Logits::Last)?);
    let prompt_time = t1.elapsed();
    let t2 = Instant::now();
    let mut out = std::io::stdout().lock();
    let mut generated: usize = 0;
    for i in 0..a.n_predict {
        write!(out, "{}{next}", if i == 0 { "" } else { " " })
            .map_err(|e| Error::io("stdout", e))?;
        out.flush().map_err(|e| Error::io("stdout", e))?;
        generated += 1;
        sampler.accept(next);
        if a.stop_at_eos && model.config.eos_ids.contains(&next) {
            break;
        }
        if i + 1 < a.n_predict {
            next = sampler.sample(model.forward(&mut state, &[next], Logits::Last)?);
        }
    }
    writeln!(out).map_err(|e| Error::io("stdout", e))?;
    let gen_time = t2.elapsed();
    eprintln!(
        "llq: load {:.2?} | prompt {} tokens in {:.2?} ({:.1} tok/s) | generated {} tokens in {:.2?} ({:.1} tok/s) | kernels {}",
        load,
        a.prompt_ids.len(),
        prompt_time,
        a.prompt_ids.len() as f64 / prompt_time.as_secs_f64(),
        generated,
        gen_time,
        generated.saturating_sub(1) as f64 / gen_time.as_secs_f64().max(1e-9),
        llq::kernels::kernels().name
    );
    Ok(())
}
