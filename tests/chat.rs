//! `llq chat` as a person uses it: in a pseudo-terminal (the child's stdin, stderr and
//! controlling terminal), typing keys and reading the screen, against the real SmolLM2
//! model with greedy sampling. Every step waits for the text it expects (never a fixed
//! sleep), with a generous deadline; a failure shows the whole screen so far.
//! Plus `/save`, `/load` and the commands through piped stdin, and the library's
//! `Conversation` under them.

#![cfg(unix)]

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::*;
use llq::chat::{ChatMessage, ChatTemplate};
use llq::generate::{Conversation, Session};
use llq::model::Model;
use llq::sample::SamplerParams;

/// Each wait's deadline: model loading and answers on a busy 2-core machine included.
const DEADLINE: Duration = Duration::from_secs(180);

fn model() -> String {
    convert_smollm2_kept().to_str().unwrap().to_string()
}

/// Bytes read from a file descriptor by a thread, to wait on.
/// The bytes so far, and whether the source has ended.
type Bytes = Mutex<(Vec<u8>, bool)>;

#[derive(Clone, Default)]
struct Stream(Arc<(Bytes, Condvar)>);

impl Stream {
    /// Collect everything `src` gives until its end (or an error: a pty's master reads
    /// EIO once the child's side is closed).
    fn collect(mut src: impl Read + Send + 'static) -> Stream {
        let s = Stream::default();
        let s2 = s.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = src.read(&mut buf).unwrap_or(0);
                let (lock, cv) = &*s2.0;
                let mut g = lock.lock().unwrap();
                if n == 0 {
                    g.1 = true;
                    cv.notify_all();
                    return;
                }
                g.0.extend_from_slice(&buf[..n]);
                cv.notify_all();
            }
        });
        s
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0 .0.lock().unwrap().0).into_owned()
    }

    /// Wait until `pred` holds of the bytes so far (or the stream ends, or the deadline).
    fn wait_for(&self, what: &str, mut pred: impl FnMut(&[u8]) -> bool) -> bool {
        let (lock, cv) = &*self.0;
        let t0 = Instant::now();
        let mut g = lock.lock().unwrap();
        loop {
            if pred(&g.0) {
                return true;
            }
            let left = DEADLINE.saturating_sub(t0.elapsed());
            if g.1 || left.is_zero() {
                eprintln!("waited for {what}, in vain");
                return false;
            }
            g = cv.wait_timeout(g, left).unwrap().0;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `llq chat` on a pseudo-terminal. Its stdout is a pipe (so that the answers can be read
/// apart from the screen) unless `stdout_on_terminal`.
struct Chat {
    master: std::fs::File,
    screen: Stream,
    /// Where the next [`Chat::expect`] starts looking.
    pos: usize,
    stdout: Option<Stream>,
    child: Child,
}

impl Chat {
    fn spawn(args: &[&str], cache: &Path, stdout_on_terminal: bool) -> Chat {
        let (mut m, mut s) = (-1, -1);
        let ws = libc::winsize {
            ws_row: 50,
            ws_col: 250,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two fds; the null pointers ask for no name and default
        // terminal settings (canonical mode, echo, signals: a fresh terminal).
        let r =
            unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both fds were just opened and are owned here alone.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        for fd in [&master, &slave] {
            // SAFETY: fcntl on an open fd; other tests' children must not inherit them.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        let tty = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_llq"));
        cmd.arg("chat")
            .args(args)
            .env("TERM", "xterm")
            .env("LLQ_CACHE", cache)
            .stdin(tty(&slave))
            .stderr(tty(&slave))
            .stdout(if stdout_on_terminal {
                tty(&slave)
            } else {
                Stdio::piped()
            });
        // SAFETY: between fork and exec only async-signal-safe calls: a new session whose
        // controlling terminal is the pty (so Ctrl-C there sends SIGINT, /dev/tty opens).
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        // The child holds the only copies of the terminal's side now: when it exits, the
        // master reads EIO and the screen stream ends.
        drop(cmd);
        drop(slave);
        let master = std::fs::File::from(master);
        let screen = Stream::collect(master.try_clone().unwrap());
        let stdout = child.stdout.take().map(Stream::collect);
        Chat {
            master,
            screen,
            pos: 0,
            stdout,
            child,
        }
    }

    /// Wait for `text` on the screen after the previous match; returns the screen between.
    fn expect(&mut self, text: &str) -> String {
        let mut at = None;
        let pos = self.pos;
        let found = self.screen.wait_for(text, |b| {
            at = b
                .get(pos..)
                .and_then(|rest| find(rest, text.as_bytes()))
                .map(|i| pos + i);
            at.is_some()
        });
        let screen = self.screen.text();
        assert!(
            found,
            "{text:?} did not appear on the screen; after byte {pos}:\n{:?}\nstdout: {:?}",
            screen.get(pos..).unwrap_or(&screen),
            self.stdout.as_ref().map(|s| s.text())
        );
        let at = at.unwrap();
        self.pos = at + text.len();
        String::from_utf8_lossy(&self.screen.0 .0.lock().unwrap().0[pos..at]).into_owned()
    }

    /// Wait for the prompt.
    fn prompt(&mut self) -> String {
        self.expect("> ")
    }

    fn send(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }

    /// Type a line at the prompt (the prompt must be showing) and wait for the next prompt;
    /// returns what was shown in between.
    fn line(&mut self, text: &str) -> String {
        self.send(&format!("{text}\r"));
        self.prompt()
    }

    fn stdout(&self) -> String {
        self.stdout.as_ref().unwrap().text()
    }

    /// stdout once it holds `len` bytes: its reader may lag behind the screen's, so what
    /// the child wrote to stdout before a prompt appeared is waited for by its length.
    fn stdout_of_len(&self, len: usize) -> String {
        let s = self.stdout.as_ref().unwrap();
        s.wait_for("stdout", |b| b.len() >= len);
        s.text()
    }

    /// The last message of the conversation, through `/save` into `file`.
    fn last_message(&mut self, file: &Path) -> serde_json::Value {
        self.line(&format!("/save {}", file.display()));
        let conv = read_conversation(file);
        conv.as_array().unwrap().last().unwrap().clone()
    }

    /// Wait for the process to end: its exit code.
    fn wait(&mut self) -> Option<i32> {
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if t0.elapsed() > DEADLINE {
                let _ = self.child.kill();
                panic!("llq chat did not exit; screen:\n{}", self.screen.text());
            }
            // Only to poll the exit status: no synchronization rests on it.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The answer `llq chat` gives to `question` with piped stdin and these flags.
fn piped_answer(args: &[&str], question: &str) -> String {
    let (ok, out, err) = llq_cli(&[&["chat"], args].concat(), &format!("{question}\n"));
    assert!(ok, "{err}");
    out
}

fn read_conversation(p: &Path) -> serde_json::Value {
    read_json(p)
}

/// The whole session: editing, history, /help, /set, /reset, /save and /load, a cut
/// answer, Ctrl-C at the prompt and during an answer, Ctrl-D.
#[test]
fn scripted_session_in_a_terminal() {
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let args = ["-m", &m, "--temp", "0", "--system", "Be brief."];
    let want = piped_answer(&args, "What is 2+2?");
    assert!(!want.trim().is_empty());

    let mut chat = Chat::spawn(&args, &cache, false);
    let banner = chat.prompt();
    assert!(banner.contains("/help"), "{banner}");

    // Editing: "Wht is 2+2?", nine times Left (after "Wh"), 'a', Enter: the model receives
    // "What is 2+2?" and answers as it does to that question typed whole.
    // (Typing at the end of the line echoes the characters; an insertion in the middle
    // redraws the prompt and the line, which is waited for.)
    chat.send("Wht is 2+2?");
    chat.send(&"\x1b[D".repeat(9));
    chat.send("a");
    chat.expect("> What is 2+2?");
    chat.send("\r");
    let shown = chat.prompt();
    assert!(!shown.contains("answer stopped"), "{shown}");
    assert_eq!(
        chat.stdout_of_len(want.len()),
        want,
        "the answer to the edited line"
    );

    // /help lists the commands; it is not sent to the model (stdout unchanged).
    let help = chat.line("/help");
    for c in [
        "/reset",
        "/quit",
        "/set NAME VALUE",
        "/save FILE",
        "/load FILE",
    ] {
        assert!(help.contains(c), "{c}: {help}");
    }
    let unknown = chat.line("/hlep");
    assert!(
        unknown.contains("unknown command /hlep") && unknown.contains("/help"),
        "{unknown}"
    );

    // /set temp 0.5 is shown by /set; an out-of-range value gets the library's message
    // and changes nothing.
    let set = chat.line("/set temp 0.5");
    assert!(set.contains("temp = 0.5"), "{set}");
    let shown = chat.line("/set");
    assert!(
        shown.contains("temp = 0.5") && shown.contains("top-k = 40"),
        "{shown}"
    );
    let refused = chat.line("/set temp -1");
    assert!(
        refused.contains("temperature -1 must be a finite number >= 0"),
        "{refused}"
    );
    // History: Up recalls the previous line ("/set temp -1"), Up again "/set".
    chat.send("\x1b[A");
    chat.expect("> /set temp -1");
    chat.send("\x1b[A");
    chat.expect("> /set");
    let recalled = chat.line("");
    assert!(
        recalled.contains("temp = 0.5") && recalled.contains("n-predict = 512"),
        "{recalled}"
    );
    chat.line("/set temp 0");

    // /save, /reset, /load: the same conversation back, the edited message in it.
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    let saved = chat.line(&format!("/save {}", a.display()));
    assert!(saved.contains("3 messages saved"), "{saved}");
    let conv = read_conversation(&a);
    assert_eq!(conv[0]["role"], "system");
    assert_eq!(conv[1]["content"], "What is 2+2?");
    assert_eq!(conv[2]["content"].as_str().unwrap(), want.trim_end());
    let reset = chat.line("/reset");
    assert!(reset.contains("conversation reset"), "{reset}");
    let loaded = chat.line(&format!("/load {}", a.display()));
    assert!(loaded.contains("3 messages loaded"), "{loaded}");
    chat.line(&format!("/save {}", b.display()));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // A bad file is refused and the conversation stays.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"[{"role": "user"}]"#).unwrap();
    let refused = chat.line(&format!("/load {}", bad.display()));
    assert!(
        refused.contains("bad.json") && refused.contains("not loaded"),
        "{refused}"
    );
    chat.line(&format!("/save {}", b.display()));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    // A cut answer: a note on the terminal; stdout (a pipe here) gets only the text.
    chat.line("/set n-predict 3");
    let before = chat.stdout().len();
    let note = chat.line("And 3+3?");
    assert!(note.contains("answer stopped at -n 3 tokens"), "{note}");
    let last = chat.last_message(&b);
    let cut = last["content"].as_str().unwrap();
    assert!(!cut.is_empty());
    let out = chat.stdout_of_len(before + cut.len() + 1);
    assert_eq!(
        &out[before..],
        format!("{cut}\n"),
        "no marker in a piped stdout"
    );

    // Ctrl-C at the prompt drops the line and keeps the session.
    chat.send("half a line\x03");
    let hint = chat.prompt();
    assert!(hint.contains("Ctrl-D or /quit leaves"), "{hint}");

    // Ctrl-C during an answer stops it and returns to the prompt.
    chat.line("/set n-predict -1");
    let before = chat.stdout().len();
    chat.send("Write a long story about a dragon who learns to cook.\r");
    let stdout = chat.stdout.clone().unwrap();
    assert!(
        stdout.wait_for("the answer to start", |b| b.len() > before + 20),
        "no answer: {}",
        chat.screen.text()
    );
    chat.send("\x03");
    let stopped = chat.prompt();
    assert!(stopped.contains("answer stopped (Ctrl-C)"), "{stopped}");
    // The partial answer is part of the conversation, and what stdout got.
    let last = chat.last_message(&b);
    assert_eq!(last["role"], "assistant");
    let partial = last["content"].as_str().unwrap();
    assert!(partial.len() > 20, "{partial:?}");
    let out = chat.stdout_of_len(before + partial.len() + 1);
    assert_eq!(&out[before..], format!("{partial}\n"));

    // Ctrl-D at the empty prompt: a new line, exit code 0.
    chat.send("\x04");
    assert_eq!(chat.wait(), Some(0), "{}", chat.screen.text());
    let screen = chat.screen.text();
    assert!(
        screen[chat.pos..].contains('\n'),
        "no line break after the last prompt: {:?}",
        &screen[chat.pos..]
    );
    // Every line typed is in the history file, readable only by its owner.
    let history = cache.join("chat_history");
    let h = std::fs::read_to_string(&history).unwrap();
    assert!(
        h.contains("What is 2+2?") && h.contains("/set temp 0.5"),
        "{h}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&history).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}

/// With stdout on the terminal too (the usual case), a cut answer ends with " […]"; /quit
/// leaves with 0, and --no-history writes no history file.
#[test]
fn cut_answer_marker_on_a_terminal() {
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mut chat = Chat::spawn(
        &["-m", &m, "--temp", "0", "-n", "3", "--no-history"],
        &cache,
        true,
    );
    chat.prompt();
    let shown = chat.line("What is 2+2?");
    assert!(shown.contains(" […]"), "{shown}");
    assert!(shown.contains("answer stopped at -n 3 tokens"), "{shown}");
    chat.send("/quit\r");
    assert_eq!(chat.wait(), Some(0));
    assert!(!cache.join("chat_history").exists());
}

/// Piped stdin: commands work as on a terminal, /save and /load round-trip, and a failing
/// command ends the run with exit code 1 (a script must not go on with a conversation it
/// did not mean to have); stdout carries only the answers.
#[test]
fn piped_commands_save_and_load() {
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    let args = ["chat", "-m", &m, "--temp", "0", "-n", "24"];
    let script = format!(
        "What is 2+2?\n/help\n/set top-k 5\n/set\n/save {a}\n/reset\n/load {a}\n/save {b}\n\
         //help me\n/quit\nnot read\n",
        a = a.display(),
        b = b.display()
    );
    let (ok, out, err) = llq_cli(&args, &script);
    assert!(ok, "{err}");
    assert!(err.contains("top-k = 5"), "{err}");
    assert!(err.contains("/save FILE"), "{err}");
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let conv = read_conversation(&a);
    assert_eq!(conv.as_array().unwrap().len(), 2, "{conv}");
    assert_eq!(conv[0]["content"], "What is 2+2?");
    // Only answers: the first is the one saved, the commands' output is not there.
    let first = conv[1]["content"].as_str().unwrap();
    assert!(out.starts_with(&format!("{first}\n")), "{out}");
    assert!(
        !out.contains("top-k") && !out.contains("/save FILE"),
        "{out}"
    );
    // "//help me" went to the model as "/help me": a second answer, after the reloaded
    // conversation (an answer to the first question ends in a line break).
    assert!(out.len() > first.len() + 2, "{out}");

    for (bad, why) in [
        ("/set temp -1\n", "temperature -1 must be"),
        ("/set top-k many\n", "not a whole number"),
        ("/frobnicate\n", "unknown command /frobnicate"),
        ("/load /nonexistent/c.json\n", "/nonexistent/c.json"),
        ("/save\n", "needs a file name"),
    ] {
        let (ok, out, err) = llq_cli(&args, &format!("{bad}What is 2+2?\n"));
        assert!(!ok && out.is_empty(), "{bad}: {out} {err}");
        assert!(err.contains(why), "{bad}: {err}");
    }
}

/// A conversation file that does not fit the context (system message and last message
/// alone) is refused and the conversation stays; one whose older turns do not fit loads
/// with those dropped.
#[test]
fn load_that_does_not_fit() {
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    let long = "word ".repeat(400);
    let conv: Vec<serde_json::Value> = (0..4)
        .flat_map(|i| {
            [
                serde_json::json!({"role": "user", "content": format!("{i} {long}")}),
                serde_json::json!({"role": "assistant", "content": "ok"}),
            ]
        })
        .collect();
    std::fs::write(&big, serde_json::to_string(&conv).unwrap()).unwrap();
    let out = dir.path().join("out.json");
    let args = ["chat", "-m", &m, "--temp", "0", "-n", "16", "-c", "1024"];
    let (ok, _, err) = llq_cli(
        &args,
        &format!("/load {}\n/save {}\n", big.display(), out.display()),
    );
    assert!(ok, "{err}");
    assert!(
        err.contains("8 messages loaded") && err.contains("dropped"),
        "{err}"
    );
    let kept = read_conversation(&out);
    let kept = kept.as_array().unwrap();
    assert!(kept.len() < 8 && !kept.is_empty(), "{kept:?}");
    assert_eq!(kept.last().unwrap()["content"], "ok");

    let huge = dir.path().join("huge.json");
    let one = serde_json::json!([{"role": "user", "content": "word ".repeat(2000)}]);
    std::fs::write(&huge, one.to_string()).unwrap();
    let (ok, _, err) = llq_cli(&args, &format!("/load {}\n", huge.display()));
    assert!(!ok, "{err}");
    assert!(
        err.contains("huge.json") && err.contains("not loaded"),
        "{err}"
    );
}

/// The library side of /load and of Ctrl-C during evaluation: `Conversation::replace`
/// evaluates exactly the loaded conversation, drops the oldest turns that do not fit,
/// leaves everything as it was on an error; `withdraw` takes back an unanswered message.
#[test]
fn conversation_replace_and_withdraw() {
    let model = Model::open(&convert_smollm2_kept()).unwrap();
    let tpl = || ChatTemplate::new(model.chat_template.as_deref().unwrap()).unwrap();
    let greedy = SamplerParams {
        temp: 0.0,
        ..SamplerParams::default()
    };
    let mut s = Session::new(&model, 512, greedy);
    let mut c = Conversation::new(Some(tpl()), Some("Be brief."));
    let msg = |r: &str, c: &str| ChatMessage::new(r, c);
    let saved = vec![
        msg("system", "Be nice."),
        msg("user", "Hi"),
        msg("assistant", "Hello! How can I help?"),
    ];
    assert_eq!(c.replace(&mut s, saved.clone(), 64).unwrap(), 0);
    assert_eq!(c.messages(), &saved[..]);
    let want = s.encode_chat(Some(&tpl()), &saved).unwrap();
    assert_eq!(
        s.tokens(),
        &want[..],
        "the context holds the loaded conversation"
    );
    // The loaded system message is the one /reset keeps.
    c.reset();
    assert_eq!(c.messages(), &saved[..1]);
    c.replace(&mut s, saved.clone(), 64).unwrap();

    // Alone too long for the context: refused, nothing changed.
    let huge = vec![msg("user", &"word ".repeat(1000))];
    let e = c.replace(&mut s, huge, 64).unwrap_err();
    assert!(matches!(e, llq::Error::ContextFull(_)), "{e}");
    assert_eq!(c.messages(), &saved[..]);

    // Older turns that do not fit are dropped, the system message and the last kept.
    let long = "word ".repeat(150);
    let mut many = vec![msg("system", "Be nice.")];
    for i in 0..4 {
        many.push(msg("user", &format!("{i} {long}")));
        many.push(msg("assistant", "ok"));
    }
    let dropped = c.replace(&mut s, many.clone(), 64).unwrap();
    assert!(dropped > 0 && dropped < 8, "{dropped}");
    assert_eq!(c.messages()[0], many[0]);
    assert_eq!(c.messages()[1..], many[1 + dropped..]);
    let want = s.encode_chat(Some(&tpl()), c.messages()).unwrap();
    assert_eq!(s.tokens(), &want[..]);
    assert!(want.len() <= 512 - 64);

    // A message asked and withdrawn (Ctrl-C before its answer) leaves no trace.
    c.replace(&mut s, saved.clone(), 64).unwrap();
    c.ask(&mut s, "Who are you?", 16).unwrap();
    assert_eq!(c.messages().len(), 4);
    c.withdraw();
    assert_eq!(c.messages(), &saved[..]);
    c.withdraw();
    assert_eq!(c.messages(), &saved[..], "an answered message stays");

    // An empty conversation: nothing in the context.
    assert_eq!(c.replace(&mut s, vec![], 64).unwrap(), 0);
    assert!(c.messages().is_empty() && s.tokens().is_empty());
}
