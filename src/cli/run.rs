//! `llq run`: evaluate a prompt and stream what the model generates.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use llq::chat::ChatMessage;
use llq::generate::GenerateParams;
use llq::{Error, Result};

use super::common::{
    parse_n_predict, read_text_file, KvArgs, ModelArgs, SamplingArgs, TemplateArgs,
};

/// Generate text from a prompt, streamed to stdout as it is produced.
///
/// The prompt is text (-p or -f, tokenized with the model's tokenizer, BOS added when the
/// model wants one) or raw token ids (--prompt-ids; the generated ids are then printed,
/// space-separated). With --chat the text is sent as a user message through the model's
/// chat template. Generation stops after -n tokens or at an end-of-generation token.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    kv: KvArgs,
    /// Saved prompt: if FILE holds the cache of a prompt this one starts with (same model
    /// and cache type), only the rest is evaluated; after the prompt, its cache is saved
    /// to FILE. An unusable file is ignored with a warning. Not with --lora (a prompt
    /// cache records the model, not the adapters).
    #[arg(long, value_name = "FILE", conflicts_with = "lora")]
    prompt_cache: Option<PathBuf>,
    /// Print the KV cache and prompt-cache details to stderr.
    #[arg(long)]
    verbose: bool,
    /// Prompt text.
    #[arg(short = 'p', long, conflicts_with_all = ["file", "prompt_ids"])]
    prompt: Option<String>,
    /// Read the prompt text from a file (UTF-8).
    #[arg(short = 'f', long, conflicts_with = "prompt_ids")]
    file: Option<PathBuf>,
    /// Prompt as comma-separated token ids (used as is: no BOS is added).
    #[arg(long, value_delimiter = ',')]
    prompt_ids: Vec<u32>,
    /// Tokens to generate; -1 = until an end-of-generation token or a full context.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128, allow_negative_numbers = true,
          value_parser = parse_n_predict)]
    n_predict: usize,
    /// Wrap the prompt in the model's chat template as a user message (implied by
    /// --chat-template).
    #[arg(long)]
    chat: bool,
    /// System message for --chat.
    #[arg(long, requires = "chat")]
    system: Option<String>,
    #[command(flatten)]
    template: TemplateArgs,
    /// Keep generating past end-of-generation tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Print special tokens (e.g. <|im_end|>) in the text output.
    #[arg(long)]
    special: bool,
    /// Print the prompt's token ids to stderr before generating.
    #[arg(long)]
    verbose_prompt: bool,
}

pub fn run(a: Args) -> Result<()> {
    let t0 = Instant::now();
    let model = a.model.load()?;
    let text = match (&a.prompt, &a.file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(f)) => Some(read_text_file(f)?),
        (None, None) => None,
    };
    if text.is_some() && model.tokenizer.is_none() {
        // The library's message cannot name this command's flags; this one can.
        return Err(Error::invalid(
            model.file.path(),
            "has no tokenizer to encode a text prompt (its checkpoint had no tokenizer.json \
             or tokenizer.model): give the prompt as token ids with --prompt-ids, or convert \
             a checkpoint that has a tokenizer",
        ));
    }
    let mut session = a.model.session(&model, &a.kv, &a.sampling)?;
    let ids_mode = text.is_none();
    let prompt: Vec<u32> = match text {
        None if a.prompt_ids.is_empty() => {
            return Err(Error::usage(
                "give a prompt: -p TEXT, -f FILE or --prompt-ids 1,2,3",
            ))
        }
        None => a.prompt_ids.clone(),
        Some(text) if a.chat || a.template.chat_template.is_some() => {
            let template = a.template.template(&model, "using plain completion")?;
            let mut msgs = Vec::new();
            if let Some(s) = &a.system {
                msgs.push(ChatMessage::new("system", s));
            }
            msgs.push(ChatMessage::new("user", &text));
            session.encode_chat(template.as_ref(), &msgs)?
        }
        Some(text) => session.encode(&text, true, true)?,
    };
    if a.verbose_prompt {
        let s: Vec<String> = prompt.iter().map(|t| t.to_string()).collect();
        eprintln!("llq: prompt ({} tokens): {}", prompt.len(), s.join(" "));
    }
    let n_ctx = session.n_ctx();
    let kv = a.kv.config();
    let load = t0.elapsed();
    if a.verbose {
        eprintln!(
            "llq: KV cache {} × {n_ctx} positions, {} bytes, policy {} (keep {})",
            kv.cache_type,
            session.kv_cache_bytes(),
            kv.policy,
            kv.keep
        );
    }

    let t1 = Instant::now();
    let mut reused = 0;
    if let Some(pc) = &a.prompt_cache {
        if pc.exists() {
            match session.load_prompt_cache(pc, &prompt) {
                Ok(n) => reused = n,
                Err(e) => eprintln!("llq: warning: ignoring prompt cache: {e}"),
            }
        }
    }
    let before = session.evaluated();
    session.set_prompt(&prompt).map_err(|e| match e {
        // The library refused a prompt longer than the context: say it with this
        // command's flags.
        Error::ContextFull(_) => Error::usage(format!(
            "the prompt has {} tokens but the context is {n_ctx} (-c {n_ctx}): give a \
             larger -c (at least {} plus room for the answer), or --context-policy shift \
             to drop the prompt's oldest {} tokens",
            prompt.len(),
            prompt.len(),
            prompt.len().saturating_sub(n_ctx)
        )),
        e => e,
    })?;
    if prompt.len() > n_ctx {
        // Only reached under an explicit `--context-policy shift` (see ModelArgs::session).
        eprintln!(
            "llq: warning: the prompt has {} tokens but the context is {n_ctx}: its oldest \
             {} tokens after the first {} were dropped",
            prompt.len(),
            prompt.len() - n_ctx,
            kv.keep
        );
    }
    let prompt_time = t1.elapsed();
    let prompt_evaluated = session.evaluated() - before;
    if let Some(pc) = &a.prompt_cache {
        if a.verbose {
            eprintln!("llq: prompt cache: {reused} tokens reused, {prompt_evaluated} evaluated");
        }
        if reused < prompt.len() && prompt.len() <= n_ctx && !session.state().cache().wrapped() {
            if let Err(e) = session.save_prompt_cache(pc) {
                eprintln!("llq: warning: cannot save the prompt cache: {e}");
            }
        }
    }

    let params = GenerateParams {
        max_tokens: a.n_predict,
        stop_at_eog: !a.ignore_eos,
        skip_special: !a.special,
    };
    let mut out = std::io::stdout().lock();
    let mut first = true;
    let mut io_err = None;
    let t2 = Instant::now();
    let done = session.generate(&params, |p| {
        // --prompt-ids prints ids, space-separated; text prompts print text.
        let s = match (ids_mode, p.token) {
            (true, None) => return true,
            (true, Some(t)) => {
                let s = format!("{}{t}", if first { "" } else { " " });
                first = false;
                s
            }
            (false, _) => p.text.to_string(),
        };
        if let Err(e) = out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
            io_err = Some(e);
            return false;
        }
        true
    })?;
    if let Some(e) = io_err {
        return Err(Error::io("stdout", e));
    }
    writeln!(out).map_err(|e| Error::io("stdout", e))?;
    let gen_time = t2.elapsed();
    eprintln!(
        "llq: load {:.2?} | prompt {} tokens ({} evaluated) in {:.2?} ({:.1} tok/s) | generated {} tokens in {:.2?} ({:.1} tok/s), stop: {} | kernels {} | KV cache {} {:.1} MiB",
        load,
        prompt.len(),
        prompt_evaluated,
        prompt_time,
        prompt_evaluated as f64 / prompt_time.as_secs_f64().max(1e-9),
        done.n_tokens,
        gen_time,
        done.n_tokens as f64 / gen_time.as_secs_f64().max(1e-9),
        done.stop,
        llq::kernels::kernels().name,
        kv.cache_type,
        session.kv_cache_bytes() as f64 / (1 << 20) as f64,
    );
    Ok(())
}
