//! `llq bench`: prompt-processing and generation throughput, like llama-bench.

use std::path::PathBuf;
use std::time::Instant;

use llq::generate::BATCH;
use llq::model::{Logits, Model, State};
use llq::{Error, Result};
use serde::Serialize;

/// Measure tokens per second, llama-bench style.
///
/// ppN: evaluate N tokens (one forward pass per batch of up to 256 tokens; only the last
/// token's logits are computed). tgN: after a 1-token prompt (not timed), generate N
/// tokens one by one (greedy: each step evaluates the previous token and takes the argmax
/// of the logits). With -d D (llama-bench's "@ dD"), D tokens are already in the cache
/// when the test starts (evaluated once per thread count and depth, not timed), so the
/// row shows the speed at position D of a long conversation, where attention grows with
/// D. Each test runs once as a warm-up that is not counted, then -r times; the table gives
/// mean ± standard deviation of tokens/s. Each thread count runs in its own thread pool.
/// Token ids are pseudo-random (fixed seed).
#[derive(clap::Args)]
pub struct Args {
    /// The model: a .llq file, or a GGUF file or Hugging Face checkpoint directory
    /// (converted once into the cache, as for `llq run`).
    #[arg(short, long)]
    model: PathBuf,
    /// Prompt lengths to test (comma-separated; 0 skips the prompt test).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "512"
    )]
    n_prompt: Vec<usize>,
    /// Generation lengths to test (comma-separated; 0 skips the generation test).
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "128"
    )]
    n_gen: Vec<usize>,
    /// Context depths to test at (comma-separated): tokens already in the cache when each
    /// test starts, like llama-bench's -d.
    #[arg(
        short = 'd',
        long = "n-depth",
        value_delimiter = ',',
        default_value = "0"
    )]
    n_depth: Vec<usize>,
    /// Storage type of the KV cache: f32, f16 or q8_0 (llama.cpp's default is f16).
    #[arg(long, default_value = "f32")]
    cache_type: llq::kv::CacheType,
    /// Thread counts to test (comma-separated; 0 = one per physical core).
    #[arg(short = 't', long, value_delimiter = ',', default_value = "0")]
    threads: Vec<usize>,
    /// Repetitions of each test (after one warm-up run).
    #[arg(short = 'r', long, default_value_t = 5)]
    repetitions: usize,
    /// Output format: md (a markdown table) or json.
    #[arg(short = 'o', long, default_value = "md", value_parser = ["md", "json"])]
    output: String,
    /// LoRA adapters applied at run time (see `llq run --lora`), to measure their cost.
    #[arg(long = "lora", value_name = "ADAPTER[:SCALE]", value_parser = super::common::parse_lora)]
    lora: Vec<(PathBuf, f32)>,
}

/// One row of the results.
#[derive(Serialize, Clone, Debug)]
pub struct BenchResult {
    pub model: String,
    pub model_type: String,
    pub model_size: u64,
    pub model_n_params: u64,
    pub weight_bytes: u64,
    /// Weight bytes read to generate one token (every matrix and norm once; of the token
    /// embedding only one row unless it doubles as the output matrix).
    pub decode_bytes_per_token: u64,
    /// KV-cache bytes per context position (f32 keys and values, every layer).
    pub kv_bytes_per_position: u64,
    pub kernels: String,
    /// KV cache storage type.
    pub cache_type: String,
    pub n_threads: usize,
    pub test: String,
    pub n_prompt: usize,
    pub n_gen: usize,
    /// Tokens already in the cache when the test starts.
    pub n_depth: usize,
    pub repetitions: usize,
    pub avg_ts: f64,
    pub stddev_ts: f64,
    pub samples_ts: Vec<f64>,
    pub samples_ns: Vec<u64>,
}

/// A deterministic token stream (xorshift), avoiding id 0 like llama-bench avoids BOS.
fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (1 + s % (vocab.max(2) as u64 - 1)) as u32
        })
        .collect()
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Evaluate `toks` in batches after the current context.
fn eval(model: &Model, state: &mut State, toks: &[u32]) -> Result<()> {
    for chunk in toks.chunks(BATCH) {
        model.forward(state, chunk, Logits::Last)?;
    }
    Ok(())
}

/// Evaluate `toks` after the first `depth` positions; returns nanoseconds.
fn run_pp(model: &Model, state: &mut State, depth: usize, toks: &[u32]) -> Result<u64> {
    state.truncate(depth);
    let t0 = Instant::now();
    eval(model, state, toks)?;
    Ok(t0.elapsed().as_nanos() as u64)
}

/// After the first `depth` positions, one untimed prompt token, then `n` timed
/// single-token steps; returns nanoseconds.
fn run_tg(model: &Model, state: &mut State, depth: usize, first: u32, n: usize) -> Result<u64> {
    state.truncate(depth);
    let mut next = argmax(model.forward(state, &[first], Logits::Last)?);
    let t0 = Instant::now();
    for _ in 0..n {
        next = argmax(model.forward(state, &[next], Logits::Last)?);
    }
    std::hint::black_box(next);
    Ok(t0.elapsed().as_nanos() as u64)
}

fn stats(samples: &[f64]) -> (f64, f64) {
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let var = if samples.len() > 1 {
        samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Parameters (weights) in the model: one per element of every tensor.
pub fn n_params(model: &Model) -> u64 {
    model
        .file
        .tensors()
        .iter()
        .map(|t| t.shape.iter().product::<u64>())
        .sum()
}

/// Weight bytes read per generated token.
pub fn decode_bytes(model: &Model) -> u64 {
    let n = |t: &llq::model::TensorRef| model.weight(t).data.len() as u64;
    let layers: u64 = model
        .layers
        .iter()
        .map(|l| {
            [
                &l.attn_norm,
                &l.wq,
                &l.wk,
                &l.wv,
                &l.wo,
                &l.ffn_norm,
                &l.w_gate,
                &l.w_up,
                &l.w_down,
            ]
            .into_iter()
            .map(n)
            .sum::<u64>()
        })
        .sum();
    layers + n(&model.output_norm) + n(&model.output)
}

/// Run every (threads, test) pair; `progress` gets each finished row.
#[allow(clippy::too_many_arguments)]
pub fn bench(
    model: &Model,
    adapters: &llq::lora::AdapterSet,
    name: &str,
    n_prompt: &[usize],
    n_gen: &[usize],
    n_depth: &[usize],
    cache_type: llq::kv::CacheType,
    threads: &[usize],
    reps: usize,
    mut progress: impl FnMut(&BenchResult),
) -> Result<Vec<BenchResult>> {
    let reps = reps.max(1);
    let cfg = &model.config;
    let max_pp = n_prompt.iter().copied().max().unwrap_or(0);
    let max_tg = n_gen.iter().copied().max().unwrap_or(0);
    let max_depth = n_depth.iter().copied().max().unwrap_or(0);
    let n_ctx = max_depth
        .checked_add(max_pp.max(max_tg + 1))
        .ok_or_else(|| Error::usage("test depth and length overflow"))?;
    if n_ctx > llq::generate::MAX_CTX {
        return Err(Error::usage(format!(
            "a test of {n_ctx} tokens (depth included) is longer than the largest context ({})",
            llq::generate::MAX_CTX
        )));
    }
    let size = std::fs::metadata(model.file.path())
        .map(|m| m.len())
        .unwrap_or(0);
    let wq = &model.layers[0].wq;
    let mut out = Vec::new();
    let kv = llq::kv::KvConfig {
        cache_type,
        ..llq::kv::KvConfig::default()
    };
    let mut state = State::with_config(model, n_ctx, kv)?;
    state.set_adapters(adapters.clone());
    for &t in threads {
        let t = llq::threads::resolve(t);
        super::warn_if_capped(t);
        let t = t.n;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .map_err(|e| Error::usage(format!("cannot start {t} threads: {e}")))?;
        let mut tests: Vec<(usize, usize)> = Vec::new();
        tests.extend(n_prompt.iter().filter(|&&p| p > 0).map(|&p| (p, 0)));
        tests.extend(n_gen.iter().filter(|&&g| g > 0).map(|&g| (0, g)));
        for &d in n_depth {
            // The context the tests start from, evaluated once (each test truncates back to it).
            let context = tokens(d, cfg.vocab_size, 0xde97);
            state.reset();
            pool.install(|| eval(model, &mut state, &context))?;
            for &(p, g) in &tests {
                let toks = tokens(p.max(1), cfg.vocab_size, 0x11c0 + p as u64);
                let once = |state: &mut State| -> Result<u64> {
                    if p > 0 {
                        run_pp(model, state, d, &toks)
                    } else {
                        run_tg(model, state, d, toks[0], g)
                    }
                };
                let samples_ns = pool.install(|| -> Result<Vec<u64>> {
                    once(&mut state)?; // warm-up
                    (0..reps).map(|_| once(&mut state)).collect()
                })?;
                let n_tok = (p + g) as f64;
                let samples_ts: Vec<f64> = samples_ns
                    .iter()
                    .map(|&ns| n_tok / (ns.max(1) as f64 * 1e-9))
                    .collect();
                let (avg_ts, stddev_ts) = stats(&samples_ts);
                let r = BenchResult {
                    model: name.to_string(),
                    model_type: wq.kind.dtype().name().to_string(),
                    model_size: size,
                    model_n_params: n_params(model),
                    weight_bytes: model.weight_bytes() as u64,
                    decode_bytes_per_token: decode_bytes(model),
                    kv_bytes_per_position: (cfg.n_layers * cfg.kv_dim() * 2 * 4) as u64,
                    kernels: llq::kernels::kernels().name.to_string(),
                    cache_type: cache_type.name().to_string(),
                    n_threads: t,
                    test: test_name(p, g, d),
                    n_prompt: p,
                    n_gen: g,
                    n_depth: d,
                    repetitions: reps,
                    avg_ts,
                    stddev_ts,
                    samples_ts,
                    samples_ns,
                };
                progress(&r);
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// llama-bench's test names: `pp512`, `tg128`, `pp512 @ d4096`.
fn test_name(p: usize, g: usize, depth: usize) -> String {
    let t = if p > 0 {
        format!("pp{p}")
    } else {
        format!("tg{g}")
    };
    if depth > 0 {
        format!("{t} @ d{depth}")
    } else {
        t
    }
}

fn human_size(b: u64) -> String {
    let mib = b as f64 / (1u64 << 20) as f64;
    if mib >= 1024.0 {
        format!("{:.2} GiB", mib / 1024.0)
    } else {
        format!("{mib:.2} MiB")
    }
}

fn human_params(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.2} B", n as f64 / 1e9)
    } else {
        format!("{:.2} M", n as f64 / 1e6)
    }
}

/// The markdown table header and separator (llama-bench's columns).
pub fn md_header() -> String {
    "| model | size | params | type | kernels | threads | test | t/s |\n\
     | --- | ---: | ---: | --- | --- | ---: | ---: | ---: |"
        .to_string()
}

pub fn md_row(r: &BenchResult) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {:.2} ± {:.2} |",
        r.model,
        human_size(r.model_size),
        human_params(r.model_n_params),
        r.model_type,
        r.kernels,
        r.n_threads,
        r.test,
        r.avg_ts,
        r.stddev_ts
    )
}

pub fn run(a: Args) -> Result<()> {
    llq::kernels::select().map_err(Error::usage)?;
    let model = Model::open(&super::common::llq_path_for(&a.model)?)?;
    let name = a
        .model
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let md = a.output == "md";
    if md {
        println!("{}", md_header());
    }
    let adapters = super::common::load_adapters(&model, &a.lora)?;
    let name = match a.lora.len() {
        0 => name,
        n => format!("{name} + {n} LoRA"),
    };
    let results = bench(
        &model,
        &adapters,
        &name,
        &a.n_prompt,
        &a.n_gen,
        &a.n_depth,
        a.cache_type,
        &a.threads,
        a.repetitions,
        |r| {
            if md {
                println!("{}", md_row(r));
            }
        },
    )?;
    if !md {
        let s = serde_json::to_string_pretty(&results)
            .map_err(|e| Error::usage(format!("json: {e}")))?;
        println!("{s}");
    }
    Ok(())
}
