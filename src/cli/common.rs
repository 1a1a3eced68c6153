//! Flags and helpers shared by the subcommands that run a model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use llq::chat::{ChatTemplate, TemplateSource};
use llq::generate::{LongPrompt, Session, SessionConfig, DEFAULT_MAX_CTX};
use llq::kv::{CacheType, ContextPolicy, KvConfig};
use llq::lora::{Adapter, AdapterSet};
use llq::model::Model;
use llq::sample::SamplerParams;
use llq::{Error, Result};

use super::progress::{Progress, Unit};

// Every default below is the library's (`SamplerParams::default`, `KvConfig::interactive`,
// `SessionConfig`): the CLI only spells them as flags.
const KV: KvConfig = KvConfig::interactive();

fn sampler_default() -> SamplerParams {
    SamplerParams::default()
}

#[derive(clap::Args, Clone)]
pub struct ModelArgs {
    /// The model: a .llq file, or a GGUF file or Hugging Face checkpoint directory, which
    /// is converted once (a GGUF's own types kept where llq has them, else q8_0) and kept
    /// in the cache (~/.cache/llq/converted, or $LLQ_CACHE/converted); a source that
    /// changed is converted again, and its old conversion removed.
    #[arg(short, long)]
    pub model: PathBuf,
    /// Accepted for llama.cpp habits and ignored: llq runs on the CPU.
    #[arg(long = "n-gpu-layers", visible_alias = "ngl", value_name = "N")]
    pub n_gpu_layers: Option<i64>,
    #[arg(short = 'c', long = "ctx-size", default_value_t = 0, help = format!(
        "Context size in tokens (0 = the model's trained context, capped at {DEFAULT_MAX_CTX})"))]
    pub ctx_size: usize,
    /// Threads (0 = one per physical core).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
    /// A LoRA adapter applied at run time beside the model's weights: an adapter file
    /// (llq convert --lora-only) or a llama.cpp GGUF LoRA, with an optional scale
    /// (default 1). Repeat for several.
    #[arg(long = "lora", value_name = "ADAPTER[:SCALE]", value_parser = parse_lora)]
    pub lora: Vec<(PathBuf, f32)>,
}

/// `FILE[:SCALE]`: the text after the last ':' is a scale if it parses as one (so a path
/// containing ':' still works without a scale).
pub fn parse_lora(s: &str) -> std::result::Result<(PathBuf, f32), String> {
    if let Some((path, scale)) = s.rsplit_once(':') {
        if let Ok(v) = scale.parse::<f32>() {
            if !v.is_finite() {
                return Err(format!("LoRA scale '{scale}' is not a finite number"));
            }
            return Ok((PathBuf::from(path), v));
        }
    }
    Ok((PathBuf::from(s), 1.0))
}

/// Open the adapters of `--lora` for `model`, checked against it.
pub fn load_adapters(model: &Model, specs: &[(PathBuf, f32)]) -> Result<AdapterSet> {
    let list = specs
        .iter()
        .map(|(p, scale)| Ok((Arc::new(Adapter::open(p, &model.config)?), *scale)))
        .collect::<Result<Vec<_>>>()?;
    AdapterSet::new(list, &model.config)
}

impl ModelArgs {
    /// Start the thread pool, check the kernel choice and map the model (converting a
    /// GGUF file or a checkpoint directory first, once).
    pub fn load(&self) -> Result<Model> {
        if self.n_gpu_layers.is_some() {
            eprintln!("llq: note: llq runs on the CPU; --n-gpu-layers is ignored");
        }
        super::init_threads(self.threads)?;
        llq::kernels::select().map_err(Error::usage)?;
        Model::open(&llq_path_for(&self.model)?)
    }

    /// A generation session on `model` with these flags (checked by the library).
    pub fn session<'m>(
        &self,
        model: &'m Model,
        kv: &KvArgs,
        sampling: &SamplingArgs,
    ) -> Result<Session<'m>> {
        let cfg = SessionConfig {
            n_ctx: self.ctx_size,
            kv: kv.config(),
            sampler: sampling.params(),
            // `shift` is the CLI's default so that generation can go on past -c; cutting
            // the user's prompt is only done when they asked for `shift` themselves.
            long_prompt: if kv.context_policy == Some(ContextPolicy::Shift) {
                LongPrompt::ShiftIfAllowed
            } else {
                LongPrompt::Refuse
            },
            ..SessionConfig::default()
        };
        let mut session = Session::open(model, &cfg)?;
        warn_if_past_training(model, session.n_ctx());
        if !self.lora.is_empty() {
            session.set_adapters(load_adapters(model, &self.lora)?)?;
        }
        if sampling.seed < 0 && cfg.sampler.temp > 0.0 {
            let s = cfg.sampler.seed;
            eprintln!("llq: seed {s} (pass --seed {s} to repeat this run)");
        }
        Ok(session)
    }
}

/// A context (`-c`) longer than the model was trained on is allowed (RoPE extrapolates
/// somewhat, and a user may know better) but worth a warning naming both numbers.
pub fn warn_if_past_training(model: &Model, n_ctx: usize) {
    let trained = model.config.context_length;
    if trained > 0 && n_ctx > trained {
        eprintln!(
            "llq: warning: -c {n_ctx} is longer than the {trained} tokens {} was trained on: \
             positions past {trained} are untrained and the output may degrade",
            model.file.path().display()
        );
    }
}

/// The `.llq` file to open for `path`: `path` itself when it is one; a GGUF file or a
/// Hugging Face checkpoint directory is converted once into the cache (a GGUF's own types
/// kept where llq has them, else q8_0), keyed by the source's path, size and modification
/// time, and reused from then on. A conversion of an earlier version of the same source
/// (another size or time) is removed once the new one is complete, so updating a model
/// does not leave its old copies behind. Anything else is an error saying what the path
/// holds and what to give instead.
pub fn llq_path_for(path: &Path) -> Result<PathBuf> {
    use llq::convert::detect::{inspect, not_a_model, PathKind};
    let found = inspect(path)?;
    if let Some(e) = not_a_model(path, &found) {
        return Err(e);
    }
    let kind = match found {
        PathKind::Gguf => "GGUF file",
        PathKind::Directory { .. } => "Hugging Face checkpoint",
        _ => return Ok(path.to_path_buf()),
    };
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let canonical = path.canonicalize().map_err(|e| Error::io(path, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    // `{stem}-{source}-{version}.llq`: the source's path, then its size and time.
    let source = fnv1a(canonical.display().to_string().as_bytes());
    let version = fnv1a(format!("{}\0{}\0{mtime}", canonical.display(), meta.len()).as_bytes());
    let stem = canonical
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned());
    let prefix = format!("{stem}-{source:016x}-");
    // A GGUF's own types are kept where llq has them (lossless); the rest become q8_0.
    let target = llq::convert::Target::Keep {
        fallback: llq::quant::DType::Q8_0,
    };
    let out = cache_dir()?
        .join("converted")
        .join(format!("{prefix}{version:016x}.llq"));
    if out.is_file() {
        return Ok(out);
    }
    // Opened before saying "converting": a checkpoint llq cannot read fails here.
    let ck = llq::convert::open_checkpoint(path)?;
    eprintln!(
        "llq: {} is a {kind}: converting it once (its own types where llq has them, else \
         q8_0), into {}",
        path.display(),
        out.display()
    );
    let dir = out.parent().expect("a file in the cache");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    llq::format::temp::install_signal_cleanup();
    llq::convert::convert(ck.as_ref(), target, &out, &ConvertProgress::new())?;
    remove_earlier_conversions(dir, &prefix, &out, path);
    Ok(out)
}

/// Remove the cached conversions of earlier versions of `source` (the files in `dir`
/// named `prefix*.llq` other than `keep`). A process still running one keeps its mapping:
/// removing a file only unlinks its name. Failures are reported, not fatal.
fn remove_earlier_conversions(dir: &Path, prefix: &str, keep: &Path, source: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let p = e.path();
        if !name.starts_with(prefix) || !name.ends_with(".llq") || p == keep {
            continue;
        }
        let mib = e.metadata().map_or(0, |m| m.len()) as f64 / (1 << 20) as f64;
        match std::fs::remove_file(&p) {
            Ok(()) => eprintln!(
                "llq: removed {} ({mib:.1} MiB), the conversion of an earlier version of {}",
                p.display(),
                source.display()
            ),
            Err(err) => eprintln!("llq: warning: could not remove {}: {err}", p.display()),
        }
    }
}

/// `$LLQ_CACHE`, or `~/.cache/llq`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("LLQ_CACHE") {
        return Ok(PathBuf::from(d));
    }
    let home = std::env::var_os("HOME")
        .ok_or_else(|| Error::usage("neither LLQ_CACHE nor HOME is set: no cache folder"))?;
    Ok(PathBuf::from(home).join(".cache/llq"))
}

/// 64-bit FNV-1a: a stable key for cache file names (not a security property).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A conversion's progress on stderr (see [`super::progress`]): bytes written of the
/// output file's size, elapsed time, ETA and the tensor being written.
pub struct ConvertProgress(Progress);

impl ConvertProgress {
    pub fn new() -> ConvertProgress {
        ConvertProgress(Progress::new("convert", Unit::Bytes, 0))
    }
}

impl llq::convert::Progress for ConvertProgress {
    fn start(&self, total: u64) {
        self.0.set_length(total);
    }
    fn advance(&self, tensor: &str, bytes: u64) {
        self.0.set_message(tensor);
        self.0.inc(bytes);
    }
    fn finish(&self) {
        self.0.finish();
    }
}

/// `--chat-template`, for the commands that render a conversation.
#[derive(clap::Args, Clone)]
pub struct TemplateArgs {
    #[arg(long = "chat-template", value_name = "FILE|NAME",
          value_parser = TemplateSource::parse, help = format!(
        "Chat template instead of the model's own: a file holding a Jinja template, or a \
         built-in one: {} (llama.cpp's names; ./NAME for a file named like one)",
        llq::chat::builtin::names()))]
    pub chat_template: Option<TemplateSource>,
}

impl TemplateArgs {
    /// The template to render with (the library decides: the flag's, else the model's);
    /// without one, a warning ending in `without` (what the command does instead).
    pub fn template(&self, model: &Model, without: &str) -> Result<Option<ChatTemplate>> {
        let t = llq::chat::choose_template(
            self.chat_template.as_ref(),
            model.chat_template.as_deref(),
        )?;
        if t.is_none() {
            eprintln!(
                "llq: warning: {} has no chat template; {without} (--chat-template NAME \
                 picks one: {})",
                model.file.path().display(),
                llq::chat::builtin::names()
            );
        }
        Ok(t)
    }
}

/// KV cache flags (see `llq::kv`).
#[derive(clap::Args, Clone)]
pub struct KvArgs {
    /// Storage type of the KV cache: f32, f16 or q8_0 (q8_0 needs head_dim % 32 == 0).
    /// f16 halves f32's memory at a negligible accuracy cost.
    #[arg(long, default_value_t = KV.cache_type)]
    pub cache_type: CacheType,
    /// When the context is full: stop, or shift (keep the first --keep positions and
    /// overwrite the oldest others, so generation can go on without end) [default:
    /// shift]. In `run`, a prompt longer than the context is an error unless shift is
    /// given explicitly (then its oldest tokens after the --keep sinks are dropped, with a
    /// warning); `chat` drops the oldest turns instead.
    #[arg(long, value_name = "POLICY")]
    pub context_policy: Option<ContextPolicy>,
    /// Positions at the start of the context never evicted under --context-policy shift
    /// (attention sinks).
    #[arg(long, default_value_t = KV.keep)]
    pub keep: usize,
}

impl KvArgs {
    pub fn config(&self) -> KvConfig {
        KvConfig {
            cache_type: self.cache_type,
            policy: self.context_policy.unwrap_or(KV.policy),
            keep: self.keep,
        }
    }
}

#[derive(clap::Args, Clone)]
pub struct SamplingArgs {
    /// Temperature; 0 = greedy (always the most likely token).
    #[arg(long, default_value_t = sampler_default().temp)]
    pub temp: f32,
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long, default_value_t = sampler_default().top_k)]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1 = off).
    #[arg(long, default_value_t = sampler_default().top_p)]
    pub top_p: f32,
    /// Drop tokens less likely than min_p × the most likely one (0 = off).
    #[arg(long, default_value_t = sampler_default().min_p)]
    pub min_p: f32,
    /// Divide the logits of recently seen tokens by this (1 = off).
    #[arg(long, default_value_t = sampler_default().repeat_penalty)]
    pub repeat_penalty: f32,
    /// How many recent tokens --repeat-penalty looks at.
    #[arg(long, default_value_t = sampler_default().repeat_last_n)]
    pub repeat_last_n: usize,
    /// Random seed: the same seed, model and flags give the same output. -1 (the default)
    /// picks a new one each run and prints it on stderr, so a run can be repeated.
    #[arg(short = 's', long, default_value_t = -1, allow_negative_numbers = true)]
    pub seed: i64,
}

impl SamplingArgs {
    /// The seed to use: the given one, or a fresh one (`ModelArgs::session` says which on
    /// stderr when sampling is not greedy).
    fn seed(&self) -> u64 {
        u64::try_from(self.seed).unwrap_or_else(|_| llq::sample::random_seed())
    }

    pub fn params(&self) -> SamplerParams {
        SamplerParams {
            temp: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed(),
        }
    }
}

/// Largest text file read whole (prompts, perplexity texts): a device such as /dev/zero
/// or a mistaken path must give an error, not fill the memory.
pub const MAX_TEXT_FILE: u64 = 256 << 20;

/// What the text-scoring commands (`perplexity`, `imatrix`) share: the thread pool and the
/// kernel level set up, `model` opened (a GGUF or Hugging Face path converted once; a
/// window of `n_ctx` longer than its training warned about), and the text file `file`
/// tokenized without BOS (each window is scored as it stands).
pub fn model_and_text_tokens(
    model: &Path,
    file: &Path,
    threads: usize,
    n_ctx: usize,
) -> Result<(llq::model::Model, Vec<u32>)> {
    super::init_threads(threads)?;
    llq::kernels::select().map_err(llq::Error::usage)?;
    let model = llq::model::Model::open(&llq_path_for(model)?)?;
    warn_if_past_training(&model, n_ctx);
    let text = read_text_file(file)?;
    let tokens = model.tokenizer()?.encode_prompt(&text, false, false);
    Ok((model, tokens))
}

/// Read a text file byte for byte, at most [`MAX_TEXT_FILE`] bytes (checked while
/// reading, so an endless stream stops there); invalid UTF-8 is an error naming the byte
/// offset.
pub fn read_text_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| Error::io_while(path, "cannot read the text file", e))?;
    let mut bytes = Vec::new();
    file.take(MAX_TEXT_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > MAX_TEXT_FILE {
        return Err(Error::invalid(
            path,
            format!(
                "larger than {} MiB: not read (is it the right file?)",
                MAX_TEXT_FILE >> 20
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        Error::invalid(
            path,
            format!(
                "invalid UTF-8 at byte offset {}",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Read one line of at most `max` bytes from `input` into `line` (cleared first).
/// Returns false at the end of input; a longer line is an error (input without line
/// breaks, such as /dev/zero, must not fill the memory).
pub fn read_line_bounded(
    input: &mut impl std::io::BufRead,
    line: &mut String,
    max: usize,
) -> Result<bool> {
    use std::io::{BufRead, Read};
    line.clear();
    let mut bytes = Vec::new();
    let n = input
        .by_ref()
        .take(max as u64 + 1)
        .read_until(b'\n', &mut bytes)
        .map_err(|e| Error::io("stdin", e))?;
    if n == 0 {
        return Ok(false);
    }
    if bytes.len() > max && bytes.last() != Some(&b'\n') {
        return Err(Error::invalid(
            "stdin",
            format!("a line longer than {} KiB: not a chat message", max >> 10),
        ));
    }
    *line = String::from_utf8(bytes).map_err(|e| {
        Error::invalid(
            "stdin",
            format!(
                "invalid UTF-8 at byte offset {}",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    Ok(true)
}

/// `-n`: a count, or -1 for "no limit" (llama.cpp's convention).
pub fn parse_n_predict(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<i64>() {
        Ok(-1) => Ok(usize::MAX),
        Ok(n) if n >= 0 => Ok(n as usize),
        _ => Err(format!(
            "'{s}' is not a token count (a number >= 0, or -1 for no limit)"
        )),
    }
}
