//! `llq chat`: an interactive conversation with the model's own chat template.

mod commands;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use llq::chat::ChatMessage;
use llq::generate::{Conversation, GenerateParams, Session, StopHandle, StopReason};
use llq::sample::SamplerParams;
use llq::{Error, Result};

use self::commands::{Command, Line, Setting};
use super::common::{
    parse_n_predict, read_line_bounded, KvArgs, ModelArgs, SamplingArgs, TemplateArgs,
};

/// Longest message read from stdin (`llq chat < /dev/zero` must not fill the memory).
const MAX_MESSAGE: usize = 1 << 20;
/// Largest conversation file `/load` reads.
const MAX_CONVERSATION_FILE: u64 = 64 << 20;
/// Lines kept in the history file.
const HISTORY_LINES: usize = 1000;

/// Talk with the model. Each line is a user message; the answer streams to stdout (and
/// only the answers do: prompts, notes and command output go to the terminal or stderr).
/// The conversation is kept in the context (the oldest turns are dropped when it would
/// overflow; the system message stays), and each turn only evaluates the new tokens.
///
/// On a terminal, lines can be edited (arrows, Home/End, Ctrl-A/E/K/U/W, ...) and earlier
/// ones recalled (Up/Down, Ctrl-R). The history is kept in $LLQ_CACHE/chat_history
/// (default ~/.cache/llq/chat_history, last 1000 lines, readable only by you); lines that
/// start with a space are not kept, and --no-history keeps none of it on disk.
///
/// Commands (never sent to the model): /help, /reset, /quit or /exit, /set (show the
/// sampling settings), /set NAME VALUE (temp, top-k, top-p, min-p, repeat-penalty,
/// repeat-last-n, seed, n-predict; checked like the flags), /save FILE and /load FILE (the
/// conversation as a JSON list of {"role", "content"} messages; /load replaces the
/// conversation and evaluates it). //text sends a message that starts with '/'.
///
/// Ctrl-C stops the current answer and returns to the prompt; at the prompt it drops the
/// line (Ctrl-D or /quit leaves, with exit code 0). An answer that did not end by itself
/// (cut at -n tokens, a full context, Ctrl-C) gets " […]" after it on a terminal and a
/// note on stderr saying why; when stdout is not a terminal, it carries only the model's
/// text.
///
/// With piped stdin (scripts), only the answers are printed, each ending with a line break,
/// and a command that fails (an unknown command, a bad value, an unreadable file) ends the run
/// with exit code 1.
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
    /// Tokens to generate per answer; -1 = until an end-of-generation token or a full
    /// context.
    #[arg(short = 'n', long = "n-predict", default_value_t = 512, allow_negative_numbers = true,
          value_parser = parse_n_predict)]
    n_predict: usize,
    /// Keep the line history in memory only (nothing read from or written to the history
    /// file).
    #[arg(long)]
    no_history: bool,
}

/// Set while the model works for the user (evaluating a message, answering): then Ctrl-C
/// stops that work instead of ending the process.
static BUSY: AtomicBool = AtomicBool::new(false);
/// Set by Ctrl-C while busy; taken by the loop.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Whether the prompt is on a terminal: then an exit from the handler ends the line first.
static ON_TERMINAL: AtomicBool = AtomicBool::new(false);
/// The session's stop handle, for the signal handler.
static STOP: OnceLock<StopHandle> = OnceLock::new();

extern "C" fn on_sigint(_: libc::c_int) {
    // Only async-signal-safe work here: atomic loads and stores, write and _exit.
    if BUSY.load(Ordering::SeqCst) {
        INTERRUPTED.store(true, Ordering::SeqCst);
        if let Some(stop) = STOP.get() {
            stop.request();
        }
        return;
    }
    if ON_TERMINAL.load(Ordering::SeqCst) {
        // SAFETY: write(2) on stderr with a static buffer is async-signal-safe.
        unsafe { libc::write(2, b"\n".as_ptr().cast(), 1) };
    }
    // SAFETY: _exit is async-signal-safe and ends the process at once.
    unsafe { libc::_exit(130) }
}

/// What the user typed.
enum Input {
    Line(String),
    /// Ctrl-C at the prompt.
    Interrupted,
    /// Ctrl-D at an empty prompt, or the end of piped input.
    End,
}

/// Where lines come from: a line editor on a terminal, plain lines otherwise.
enum Reader {
    Editor {
        editor: Box<rustyline::DefaultEditor>,
        history: Option<PathBuf>,
    },
    Lines {
        prompt: bool,
    },
}

impl Reader {
    fn new(no_history: bool) -> Reader {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Reader::Lines { prompt: false };
        }
        ON_TERMINAL.store(true, Ordering::SeqCst);
        // Terminals the editor cannot drive: plain lines, the prompt on stderr.
        let dumb = matches!(
            std::env::var("TERM").as_deref(),
            Ok("dumb" | "cons25" | "emacs")
        );
        if dumb {
            return Reader::Lines { prompt: true };
        }
        let config = rustyline::Config::builder()
            // The prompt and the line being edited go to the terminal, not to stdout.
            .behavior(rustyline::Behavior::PreferTerm)
            .auto_add_history(false)
            .history_ignore_space(true)
            .history_ignore_dups(true)
            .and_then(|c| c.max_history_size(HISTORY_LINES))
            .map(|c| c.build());
        let editor = match config.and_then(rustyline::DefaultEditor::with_config) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("llq chat: warning: no line editing ({e})");
                return Reader::Lines { prompt: true };
            }
        };
        let mut reader = Reader::Editor {
            editor: Box::new(editor),
            history: None,
        };
        if !no_history {
            match super::common::cache_dir() {
                Ok(dir) => reader.open_history(dir.join("chat_history")),
                Err(e) => eprintln!("llq chat: warning: no history file ({e})"),
            }
        }
        reader
    }

    /// Read earlier sessions' lines from `path`, created (readable only by its owner) if
    /// missing; new lines are appended to it as they are entered.
    fn open_history(&mut self, path: PathBuf) {
        let Reader::Editor { editor, history } = self else {
            return;
        };
        let created = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                let mut o = std::fs::OpenOptions::new();
                o.append(true).create(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
                o.open(&path)
            });
        if let Err(e) = created {
            eprintln!(
                "llq chat: warning: history file {}: {e} (--no-history keeps it in memory)",
                path.display()
            );
            return;
        }
        if let Err(e) = editor.load_history(&path) {
            eprintln!(
                "llq chat: warning: history file {}: {e} (not read)",
                path.display()
            );
        }
        *history = Some(path);
    }

    fn read(&mut self) -> Result<Input> {
        match self {
            Reader::Lines { prompt } => {
                if *prompt {
                    eprint!("> ");
                }
                let mut line = String::new();
                if !read_line_bounded(&mut std::io::stdin().lock(), &mut line, MAX_MESSAGE)? {
                    if *prompt {
                        eprintln!();
                    }
                    return Ok(Input::End);
                }
                let len = line.trim_end_matches(['\n', '\r']).len();
                line.truncate(len);
                Ok(Input::Line(line))
            }
            Reader::Editor { editor, history } => match editor.readline("> ") {
                Ok(line) => {
                    if line.len() > MAX_MESSAGE {
                        eprintln!(
                            "llq chat: a line longer than {} KiB: not a chat message",
                            MAX_MESSAGE >> 10
                        );
                        return Ok(Input::Line(String::new()));
                    }
                    if !line.trim().is_empty() && editor.add_history_entry(line.as_str()).is_ok() {
                        if let Some(path) = history {
                            if let Err(e) = editor.append_history(path) {
                                eprintln!(
                                    "llq chat: warning: history file {}: {e} (no longer \
                                     written)",
                                    path.display()
                                );
                                *history = None;
                            }
                        }
                    }
                    Ok(Input::Line(line))
                }
                Err(rustyline::error::ReadlineError::Interrupted) => Ok(Input::Interrupted),
                Err(rustyline::error::ReadlineError::Eof) => Ok(Input::End),
                Err(e) => Err(Error::usage(format!("reading the terminal: {e}"))),
            },
        }
    }

    fn interactive(&self) -> bool {
        !matches!(self, Reader::Lines { prompt: false })
    }
}

pub fn run(a: Args) -> Result<()> {
    let model = a.model.load()?;
    model.tokenizer()?;
    let template = a
        .template
        .template(&model, "each message is continued as plain text")?;
    let session = a.model.session(&model, &a.kv, &a.sampling)?;
    let _ = STOP.set(session.stop_handle());
    let mut reader = Reader::new(a.no_history);
    #[cfg(unix)]
    // SAFETY: installs a handler that only touches atomics and calls write and _exit.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
    if reader.interactive() {
        eprintln!("llq chat: /help lists the commands; Ctrl-C stops an answer, Ctrl-D leaves");
    }
    let mut chat = Chat {
        conversation: Conversation::new(template, a.system.as_deref()),
        session,
        n_predict: a.n_predict,
        out: std::io::stdout(),
        out_is_terminal: std::io::stdout().is_terminal(),
    };
    loop {
        let line = match reader.read()? {
            Input::Line(l) => l,
            Input::End => break,
            Input::Interrupted => {
                eprintln!("(the line is dropped: Ctrl-D or /quit leaves)");
                continue;
            }
        };
        let result = match commands::parse(&line) {
            Ok(Line::Empty) => Ok(()),
            Ok(Line::Message(msg)) => chat.answer(msg),
            Ok(Line::Command(Command::Quit)) => break,
            Ok(Line::Command(c)) => chat.command(c),
            Err(msg) => Err(Error::usage(msg)),
        };
        match result {
            Ok(()) => {}
            // Told, and the conversation goes on (or, piped, ends with an error).
            Err(e @ (Error::Usage(_) | Error::Invalid { .. } | Error::Io { .. }))
                if reader.interactive() =>
            {
                eprintln!("llq chat: {e}")
            }
            Err(e @ Error::ContextFull(_)) => eprintln!("llq chat: {e}"),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The conversation and what it runs on.
struct Chat<'m> {
    conversation: Conversation,
    session: Session<'m>,
    n_predict: usize,
    out: std::io::Stdout,
    out_is_terminal: bool,
}

/// Runs `f` with Ctrl-C stopping it (instead of ending the process); returns its result
/// and whether Ctrl-C was pressed.
fn interruptible<T>(f: impl FnOnce() -> T) -> (T, bool) {
    INTERRUPTED.store(false, Ordering::SeqCst);
    BUSY.store(true, Ordering::SeqCst);
    let r = f();
    BUSY.store(false, Ordering::SeqCst);
    (r, INTERRUPTED.swap(false, Ordering::SeqCst))
}

impl Chat<'_> {
    /// Send `msg` and stream the answer to stdout.
    fn answer(&mut self, msg: &str) -> Result<()> {
        let n_predict = self.n_predict;
        let Chat {
            conversation,
            session,
            ..
        } = self;
        let (budget, interrupted) = interruptible(|| conversation.ask(session, msg, n_predict));
        let budget = budget?;
        if interrupted {
            // Ctrl-C while the message was evaluated: no answer, the message taken back.
            self.conversation.withdraw();
            eprintln!("llq chat: stopped before the answer (the message is dropped)");
            return Ok(());
        }
        let params = GenerateParams {
            max_tokens: budget,
            ..GenerateParams::default()
        };
        let mut answer = String::new();
        let out = &mut self.out;
        let (done, _) = interruptible(|| {
            self.session.generate(&params, |p| {
                answer.push_str(p.text);
                let _ = out.write_all(p.text.as_bytes()).and_then(|_| out.flush());
                true
            })
        });
        let done = done?;
        let cut = done.stop != StopReason::EndOfGeneration;
        let marker = if cut && self.out_is_terminal {
            " […]"
        } else {
            ""
        };
        writeln!(self.out, "{marker}")
            .and_then(|_| self.out.flush())
            .map_err(|e| Error::io("stdout", e))?;
        match done.stop {
            StopReason::EndOfGeneration => {}
            StopReason::MaxTokens if budget == self.n_predict => eprintln!(
                "llq chat: answer stopped at -n {} tokens (/set n-predict to change)",
                self.n_predict
            ),
            StopReason::MaxTokens | StopReason::ContextFull => {
                eprintln!("llq chat: answer stopped: the context is full")
            }
            StopReason::Requested => eprintln!("llq chat: answer stopped (Ctrl-C)"),
            other => eprintln!("llq chat: answer stopped ({other})"),
        }
        self.conversation.answered(&answer);
        Ok(())
    }

    fn command(&mut self, c: Command) -> Result<()> {
        match c {
            Command::Help => eprintln!("{}", commands::HELP),
            Command::Quit => {}
            Command::Reset => {
                self.conversation.reset();
                self.session.reset();
                eprintln!("llq chat: conversation reset");
            }
            Command::Show => {
                for (name, value) in self.settings() {
                    eprintln!("{name} = {value}");
                }
            }
            Command::Set(s) => self.set(s)?,
            Command::Save(path) => {
                save_conversation(&path, self.conversation.messages())?;
                eprintln!(
                    "llq chat: {} messages saved to {}",
                    self.conversation.messages().len(),
                    path.display()
                );
            }
            Command::Load(path) => {
                let messages = load_conversation(&path)?;
                let n = messages.len();
                let n_predict = self.n_predict;
                let Chat {
                    conversation,
                    session,
                    ..
                } = self;
                let (dropped, _) =
                    interruptible(|| conversation.replace(session, messages, n_predict));
                let dropped = dropped.map_err(|e| match e {
                    Error::ContextFull(m) => Error::invalid(&path, format!("{m} (not loaded)")),
                    Error::Usage(m) => Error::invalid(&path, format!("{m} (not loaded)")),
                    e => e,
                })?;
                eprint!("llq chat: {n} messages loaded from {}", path.display());
                if dropped > 0 {
                    eprint!(" ({dropped} of the oldest do not fit the context: dropped)");
                }
                eprintln!();
            }
        }
        Ok(())
    }

    /// `/set NAME VALUE`: applied only if the library accepts the new parameters.
    fn set(&mut self, s: Setting) -> Result<()> {
        let mut p: SamplerParams = self.session.sampler_params().clone();
        match s {
            Setting::Temp(v) => p.temp = v,
            Setting::TopK(v) => p.top_k = v,
            Setting::TopP(v) => p.top_p = v,
            Setting::MinP(v) => p.min_p = v,
            Setting::RepeatPenalty(v) => p.repeat_penalty = v,
            Setting::RepeatLastN(v) => p.repeat_last_n = v,
            Setting::Seed(v) => {
                p.seed = u64::try_from(v).unwrap_or_else(|_| llq::sample::random_seed())
            }
            Setting::NPredict(v) => self.n_predict = v,
        }
        if !matches!(s, Setting::NPredict(_)) {
            self.session.set_sampler(p)?;
        }
        let (name, value) = self
            .settings()
            .into_iter()
            .find(|(n, _)| *n == s.name())
            .expect("every setting is listed");
        eprintln!("llq chat: {name} = {value}");
        Ok(())
    }

    /// What `/set` alone shows, in the order of [`commands::SETTINGS`].
    fn settings(&self) -> Vec<(&'static str, String)> {
        let p = self.session.sampler_params();
        let values = [
            p.temp.to_string(),
            p.top_k.to_string(),
            p.top_p.to_string(),
            p.min_p.to_string(),
            p.repeat_penalty.to_string(),
            p.repeat_last_n.to_string(),
            p.seed.to_string(),
            n_predict_text(self.n_predict),
        ];
        commands::SETTINGS.into_iter().zip(values).collect()
    }
}

fn n_predict_text(n: usize) -> String {
    if n == usize::MAX {
        "-1 (no limit)".into()
    } else {
        n.to_string()
    }
}

/// Write the conversation as a JSON list of `{"role", "content"}` objects.
fn save_conversation(path: &Path, messages: &[ChatMessage]) -> Result<()> {
    let mut json =
        serde_json::to_string_pretty(messages).map_err(|e| Error::invalid(path, e.to_string()))?;
    json.push('\n');
    std::fs::write(path, json).map_err(|e| Error::io(path, e))
}

/// Read a conversation written by [`save_conversation`] (or by hand): a JSON list of
/// messages whose roles are system, user or assistant.
fn load_conversation(path: &Path) -> Result<Vec<ChatMessage>> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_CONVERSATION_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > MAX_CONVERSATION_FILE {
        return Err(Error::invalid(
            path,
            format!(
                "larger than {} MiB: not a conversation (not loaded)",
                MAX_CONVERSATION_FILE >> 20
            ),
        ));
    }
    parse_conversation(&bytes).map_err(|m| Error::invalid(path, format!("{m} (not loaded)")))
}

fn parse_conversation(bytes: &[u8]) -> std::result::Result<Vec<ChatMessage>, String> {
    let messages: Vec<ChatMessage> = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "not a conversation: expected a JSON list of {{\"role\": ..., \"content\": ...}} \
             messages ({e})"
        )
    })?;
    for (i, m) in messages.iter().enumerate() {
        if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
            return Err(format!(
                "message {}: role '{}' is not system, user or assistant",
                i + 1,
                m.role
            ));
        }
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_files() {
        let msgs = vec![
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Hi \"there\"\n"),
            ChatMessage::new("assistant", "Hello."),
        ];
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        save_conversation(&p, &msgs).unwrap();
        assert_eq!(load_conversation(&p).unwrap(), msgs);
        let bad = |s: &str| parse_conversation(s.as_bytes()).unwrap_err();
        assert!(bad("{").contains("not a conversation"));
        assert!(bad(r#"{"role": "user", "content": "x"}"#).contains("JSON list"));
        assert!(bad(r#"[{"role": "user"}]"#).contains("content"));
        let e = bad(r#"[{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]"#);
        assert!(e.contains("message 2") && e.contains("'tool'"), "{e}");
        assert_eq!(parse_conversation(b"[]").unwrap(), vec![]);
        let e = load_conversation(&dir.path().join("missing.json")).unwrap_err();
        assert!(e.to_string().contains("missing.json"), "{e}");
    }
}
