//! `llq chat`: an interactive conversation with the model's own chat template.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use llq::generate::{Conversation, GenerateParams, StopHandle, StopReason};
use llq::{Error, Result};

use super::common::{
    parse_n_predict, read_line_bounded, KvArgs, ModelArgs, SamplingArgs, TemplateArgs,
};

/// Longest message read from stdin (`llq chat < /dev/zero` must not fill the memory).
const MAX_MESSAGE: usize = 1 << 20;

/// Talk with the model. Each line read from stdin is a user message; the answer streams
/// to stdout. The conversation is kept in the context (the oldest turns are dropped when it
/// would overflow; the system message stays), and each turn only evaluates the new tokens.
///
/// Commands: /reset starts over, /quit (or end of input) leaves. Ctrl-C stops the current
/// answer; at the prompt it leaves. Works with piped stdin for scripts: then only the
/// answers are printed, one after another.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    kv: KvArgs,
    /// System message that opens the conversation.
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    template: TemplateArgs,
    /// Tokens to generate; -1 = until an end-of-generation token or a full context.
    #[arg(short = 'n', long = "n-predict", default_value_t = 512, allow_negative_numbers = true,
          value_parser = parse_n_predict)]
    n_predict: usize,
}

static GENERATING: AtomicBool = AtomicBool::new(false);
/// The session's stop handle, for the signal handler.
static STOP: OnceLock<StopHandle> = OnceLock::new();

extern "C" fn on_sigint(_: libc::c_int) {
    // Only async-signal-safe work here: atomic loads and stores, and _exit.
    match STOP.get() {
        Some(stop) if GENERATING.load(Ordering::SeqCst) => stop.request(),
        // SAFETY: _exit is async-signal-safe and ends the process at once.
        _ => unsafe { libc::_exit(130) },
    }
}

pub fn run(a: Args) -> Result<()> {
    let model = a.model.load()?;
    model.tokenizer()?;
    let template = a
        .template
        .template(&model, "each message is continued as plain text")?;
    let mut session = a.model.session(&model, &a.kv, &a.sampling)?;
    let _ = STOP.set(session.stop_handle());
    #[cfg(unix)]
    // SAFETY: installs a handler that only touches atomics and calls _exit.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }

    let interactive = std::io::stdin().is_terminal();
    let mut conversation = Conversation::new(template, a.system.as_deref());
    if interactive {
        eprintln!(
            "llq chat: /reset to start over, /quit or Ctrl-D to leave, Ctrl-C stops an answer"
        );
    }
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    let mut line = String::new();
    loop {
        if interactive {
            eprint!("> ");
        }
        if !read_line_bounded(&mut stdin.lock(), &mut line, MAX_MESSAGE)? {
            break;
        }
        let msg = line.trim_end_matches(['\n', '\r']);
        match msg.trim() {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                conversation.reset();
                session.reset();
                eprintln!("llq chat: conversation reset");
                continue;
            }
            _ => {}
        }
        let budget = match conversation.ask(&mut session, msg, a.n_predict) {
            Ok(b) => b,
            Err(e @ Error::ContextFull(_)) => {
                eprintln!("llq chat: {e}");
                continue;
            }
            Err(e) => return Err(e),
        };
        let params = GenerateParams {
            max_tokens: budget,
            ..GenerateParams::default()
        };
        GENERATING.store(true, Ordering::SeqCst);
        let mut answer = String::new();
        let result = session.generate(&params, |p| {
            answer.push_str(p.text);
            let _ = out.write_all(p.text.as_bytes()).and_then(|_| out.flush());
            true
        });
        GENERATING.store(false, Ordering::SeqCst);
        let done = result?;
        writeln!(out).map_err(|e| Error::io("stdout", e))?;
        if done.stop != StopReason::EndOfGeneration {
            eprintln!("llq chat: answer stopped ({})", done.stop);
        }
        conversation.answered(&answer);
    }
    Ok(())
}
