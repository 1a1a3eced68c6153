//! `llq chat`: an interactive conversation with the model's own chat template.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use llq::chat::{ChatMessage, ChatTemplate};
use llq::generate::Session;
use llq::{Error, Result};

use super::common::{piece_text, stop_ids, KvArgs, ModelArgs, SamplingArgs};

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
    /// Longest answer, in tokens.
    #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
    n_predict: usize,
}

static GENERATING: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    // Only async-signal-safe work here: atomics and _exit.
    if GENERATING.load(Ordering::SeqCst) {
        STOP.store(true, Ordering::SeqCst);
    } else {
        // SAFETY: _exit is async-signal-safe and ends the process at once.
        unsafe { libc::_exit(130) };
    }
}

pub fn run(a: Args) -> Result<()> {
    let model = a.model.load()?;
    let tok = model.tokenizer()?;
    let tpl = match model.chat_template.as_deref() {
        Some(src) => {
            Some(ChatTemplate::new(src).map_err(|e| Error::usage(format!("chat template: {e}")))?)
        }
        None => {
            eprintln!(
                "llq: warning: {} has no chat template; each message is continued as plain text",
                a.model.model.display()
            );
            None
        }
    };
    let (bos, eos) = (piece_text(tok, tok.bos_id()), piece_text(tok, tok.eos_id()));
    let render = |msgs: &[ChatMessage]| -> Result<Vec<u32>> {
        match &tpl {
            Some(tpl) => {
                let text = tpl
                    .render(msgs, true, &bos, &eos)
                    .map_err(|e| Error::usage(format!("chat template: {e}")))?;
                Ok(tok.encode(&text, true))
            }
            None => {
                let text: Vec<&str> = msgs.iter().map(|m| m.content.as_str()).collect();
                let mut ids: Vec<u32> =
                    tok.bos_id().filter(|_| tok.add_bos()).into_iter().collect();
                ids.extend(tok.encode(&text.join("\n"), false));
                Ok(ids)
            }
        }
    };
    #[cfg(unix)]
    // SAFETY: installs a handler that only touches atomics and calls _exit.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }

    let interactive = std::io::stdin().is_terminal();
    let n_ctx = a.model.n_ctx(&model);
    let mut session = Session::with_config(&model, n_ctx, a.sampling.params(), a.kv.config())?;
    let stops = stop_ids(&model);
    let base: Vec<ChatMessage> = a
        .system
        .iter()
        .map(|s| ChatMessage::new("system", s))
        .collect();
    let mut history = base.clone();
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
        line.clear();
        if stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::io("stdin", e))?
            == 0
        {
            break;
        }
        let msg = line.trim_end_matches(['\n', '\r']);
        match msg.trim() {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                history = base.clone();
                session.reset();
                eprintln!("llq chat: conversation reset");
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage::new("user", msg));
        // Leave room for the answer; drop the oldest exchanges (not the system message)
        // until the conversation fits.
        let room = n_ctx.saturating_sub(a.n_predict.min(n_ctx / 2));
        let mut prompt = render(&history)?;
        while prompt.len() > room && history.len() > base.len() + 1 {
            history.remove(base.len());
            prompt = render(&history)?;
        }
        if prompt.len() > room {
            history.pop();
            eprintln!(
                "llq chat: that message alone does not fit the context of {n_ctx} tokens (set -c)"
            );
            continue;
        }
        session.set_prompt(&prompt)?;
        STOP.store(false, Ordering::SeqCst);
        GENERATING.store(true, Ordering::SeqCst);
        let mut dec = tok.stream_decoder(true);
        let mut answer = String::new();
        let budget = a.n_predict.min(n_ctx - prompt.len());
        let result = session.generate(budget, &|t| stops.contains(&t), |t| {
            if stops.contains(&t) {
                return false;
            }
            let s = dec.push(t);
            answer.push_str(&s);
            let _ = out.write_all(s.as_bytes()).and_then(|_| out.flush());
            !STOP.load(Ordering::SeqCst)
        });
        GENERATING.store(false, Ordering::SeqCst);
        result?;
        let tail = dec.flush();
        answer.push_str(&tail);
        writeln!(out, "{tail}").map_err(|e| Error::io("stdout", e))?;
        if STOP.load(Ordering::SeqCst) {
            eprintln!("llq chat: answer stopped");
        }
        history.push(ChatMessage::new("assistant", &answer));
    }
    Ok(())
}
