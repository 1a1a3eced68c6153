//! The newcomer's path through the command line (issue #15): values out of the useful
//! range warned about or refused with the numbers, prompts that do not fit the context,
//! chat templates by name or file, errors that say what to do, and progress without a
//! terminal. Every case checks the message and the exit code (1: an error, 2: a bad flag).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `llq args` with `env` set: (exit code, stdout, stderr).
fn llq_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_llq"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        o.status.code().expect("exited, not killed"),
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

fn llq(args: &[&str]) -> (i32, String, String) {
    llq_env(args, &[])
}

/// The tiny fixture (trained context 256, no tokenizer) as an f32 .llq.
fn tiny() -> PathBuf {
    common::convert_fixture_to_scratch("tiny-llama-gqa", llq::quant::DType::F32)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `llq run -m MODEL --prompt-ids IDS ARGS…`: (exit code, stdout, stderr).
fn run_ids(m: &Path, ids: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["run", "-m", s(m), "--prompt-ids", ids];
    all.extend_from_slice(args);
    llq(&all)
}

// ---- -t and -c ---------------------------------------------------------------------

/// More threads than logical CPUs: a warning naming both numbers, and the run goes on
/// with one thread per CPU (it used to be refused above 4 per CPU, accepted below).
#[test]
fn threads_above_the_cpus_are_capped_with_a_warning() {
    let m = tiny();
    let cpus = std::thread::available_parallelism().unwrap().get();
    for t in [cpus + 1, 100_000] {
        let t = t.to_string();
        let (code, out, err) = run_ids(&m, "1,2,3", &["-n", "2", "--temp", "0", "-t", &t]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.split_whitespace().count(), 2, "{out}");
        assert!(
            err.contains(&format!(
                "warning: -t {t}: this process may use {cpus} logical CPUs; using {cpus} threads"
            )),
            "{err}"
        );
    }
    let (code, _, err) = run_ids(&m, "1", &["-n", "1", "-t", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
}

/// A context longer than the model's training: a warning naming both numbers (the hard
/// caps stay errors: tests/cli.rs).
#[test]
fn context_above_the_trained_length_is_warned() {
    let m = tiny();
    let (code, _, err) = run_ids(&m, "1,2,3", &["-n", "2", "-c", "300"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: -c 300 is longer than the 256 tokens"),
        "{err}"
    );
    let (code, _, err) = run_ids(&m, "1", &["-n", "1", "-c", "256"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
}

// ---- prompts longer than the context -----------------------------------------------

fn ids(n: usize) -> String {
    (1..=n).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

/// Under the default policy (shift, for generating past -c) a prompt that does not fit
/// is an error naming both sizes and the two ways out; so it is under an explicit `stop`.
#[test]
fn a_prompt_longer_than_the_context_is_an_error_by_default() {
    let m = tiny();
    let prompt = ids(20);
    for extra in [&[][..], &["--context-policy", "stop"][..]] {
        let mut args = vec![
            "run",
            "-m",
            s(&m),
            "--prompt-ids",
            &prompt,
            "-c",
            "16",
            "--temp",
            "0",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = llq(&args);
        assert_eq!(code, 1, "{extra:?}: {err}");
        assert!(out.is_empty(), "{out}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains("the prompt has 20 tokens but the context is 16 (-c 16)")
                && err.contains("larger -c")
                && err.contains("--context-policy shift"),
            "{extra:?}: {err}"
        );
    }
}

/// `--context-policy shift` given explicitly: the prompt streams through the ring and a
/// warning says how many tokens were dropped.
#[test]
fn an_explicit_shift_drops_the_oldest_prompt_tokens_with_a_warning() {
    let m = tiny();
    let (code, out, err) = run_ids(
        &m,
        &ids(20),
        &[
            "-c",
            "16",
            "-n",
            "3",
            "--temp",
            "0",
            "--context-policy",
            "shift",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.split_whitespace().count(), 3, "{out}");
    assert!(
        err.contains("warning: the prompt has 20 tokens but the context is 16: its oldest 4 tokens after the first 4 were dropped"),
        "{err}"
    );
    // A prompt that fits says nothing.
    let (code, _, err) = run_ids(
        &m,
        &ids(16),
        &["-c", "16", "-n", "1", "--context-policy", "shift"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("dropped"), "{err}");
}

// ---- progress without a terminal ---------------------------------------------------

/// Lines of `err` that are progress lines of `what`.
fn progress_lines<'a>(err: &'a str, what: &str) -> Vec<&'a str> {
    let prefix = format!("llq: {what}: ");
    err.lines().filter(|l| l.starts_with(&prefix)).collect()
}

/// `llq convert` with stderr not a terminal prints plain progress lines (every step with
/// a zero interval), and the last one counts the whole file: its total is the size of
/// the file written.
#[test]
fn convert_prints_plain_progress_lines_up_to_the_file_size() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.llq");
    let src = common::fixtures().join("tiny-llama-gqa");
    let args = ["convert", s(&src), "-o", s(&out), "--type", "q8_0"];
    let (code, _, err) = llq_env(&args, &[("LLQ_PROGRESS_INTERVAL_MS", "0")]);
    assert_eq!(code, 0, "{err}");
    let lines = progress_lines(&err, "convert");
    // The header, then each of the fixture's 2 × 9 + 3 tensors.
    assert_eq!(lines.len(), 1 + 2 * 9 + 3, "{err}");
    for l in &lines {
        assert!(l.contains(" elapsed, ETA "), "{l}");
    }
    let size = std::fs::metadata(&out).unwrap().len();
    let total = indicatif::HumanBytes(size).to_string();
    let last = lines.last().unwrap();
    assert!(
        last.contains(&format!("{total} of {total} (100%)")),
        "{last} (file: {size} bytes)"
    );
    // The default interval (seconds) prints nothing for a conversion this short.
    let out2 = dir.path().join("m2.llq");
    let (code, _, err) = llq(&["convert", s(&src), "-o", s(&out2), "--type", "q8_0"]);
    assert_eq!(code, 0, "{err}");
    assert!(progress_lines(&err, "convert").is_empty(), "{err}");
}

/// The library's progress totals are the file's size, whatever the type (the header and
/// the tokenizer included: the bar used to stop short of the file by megabytes).
#[test]
fn convert_progress_total_is_the_file_size() {
    use std::sync::Mutex;
    struct Record(Mutex<(u64, u64)>);
    impl llq::convert::Progress for Record {
        fn start(&self, total: u64) {
            self.0.lock().unwrap().0 = total;
        }
        fn advance(&self, _: &str, bytes: u64) {
            self.0.lock().unwrap().1 += bytes;
        }
        fn finish(&self) {}
    }
    let dir = tempfile::tempdir().unwrap();
    let ck = llq::convert::HfCheckpoint::open(&common::fixtures().join("tiny-llama-gqa")).unwrap();
    for t in [llq::quant::DType::F32, llq::quant::DType::Q4_0] {
        let out = dir.path().join(format!("{}.llq", t.name()));
        let r = Record(Mutex::new((0, 0)));
        llq::convert::convert(&ck, t, &out, &r).unwrap();
        let size = std::fs::metadata(&out).unwrap().len();
        assert_eq!(*r.0.lock().unwrap(), (size, size), "{}", t.name());
    }
}

/// `llq perplexity` with stderr not a terminal: a plain line per window with a zero
/// interval (it used to print nothing for minutes), on the real model.
#[test]
fn perplexity_prints_plain_progress_lines() {
    let m = common::convert_smollm2_kept();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    let full = std::fs::read_to_string(common::fixtures().join("smollm2/english.txt")).unwrap();
    std::fs::write(&text, &full[..1200]).unwrap();
    let args = ["perplexity", "-m", s(&m), "-f", s(&text), "-c", "64"];
    let (code, out, err) = llq_env(&args, &[("LLQ_PROGRESS_INTERVAL_MS", "0")]);
    assert_eq!(code, 0, "{err}");
    let windows: usize = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("windows = "))
        .and_then(|l| l.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(windows >= 2, "{out}");
    let lines = progress_lines(&err, "perplexity");
    assert_eq!(lines.len(), windows, "{err}");
    assert!(
        lines[0].starts_with(&format!("llq: perplexity: window 1 of {windows} (")),
        "{}",
        lines[0]
    );
    assert!(
        lines
            .iter()
            .all(|l| l.contains(" elapsed, ETA ") && l.contains("PPL ")),
        "{err}"
    );
    assert!(
        !out.contains("llq:"),
        "progress belongs on stderr, not stdout: {out}"
    );
}

// ---- --chat-template ---------------------------------------------------------------

/// The prompt ids `llq run` evaluates (its --verbose-prompt line).
fn prompt_ids(err: &str) -> String {
    let line = err
        .lines()
        .find_map(|l| l.strip_prefix("llq: prompt ("))
        .unwrap_or_else(|| panic!("no prompt line: {err}"));
    line.split_once("): ").unwrap().1.to_string()
}

/// `llq run --chat-template NAME|FILE` renders the prompt with that template instead of
/// the model's own: the ids are those of the template's text.
#[test]
fn run_renders_with_a_builtin_or_file_template() {
    let m = common::convert_smollm2_kept();
    let m = s(&m);
    let run = |extra: &[&str]| {
        let mut a = vec![
            "run",
            "-m",
            m,
            "-p",
            "hi",
            "-n",
            "1",
            "--temp",
            "0",
            "--verbose-prompt",
        ];
        a.extend_from_slice(extra);
        let (code, _, err) = llq(&a);
        assert_eq!(code, 0, "{a:?}: {err}");
        prompt_ids(&err)
    };
    let tokenize = |text: &str| {
        let (code, out, err) = llq(&["tokenize", "-m", m, "--ids", text]);
        assert_eq!(code, 0, "{err}");
        out.trim_end().to_string()
    };
    let own = run(&["--chat"]);
    // SmolLM2's own template is ChatML with a default system message: plain ChatML
    // differs from it.
    let chatml = run(&["--chat-template", "chatml"]);
    assert_eq!(
        chatml,
        tokenize("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    );
    assert_ne!(chatml, own);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("qa.jinja");
    std::fs::write(&file, "{{ 'Q: ' + messages[-1].content + '\\nA:' }}").unwrap();
    assert_eq!(
        run(&["--chat", "--chat-template", s(&file)]),
        tokenize("Q: hi\nA:")
    );
}

/// `llq chat --chat-template` answers through the named template (piped stdin).
#[test]
fn chat_takes_a_template_name() {
    let m = common::convert_smollm2_kept();
    let o = Command::new(env!("CARGO_BIN_EXE_llq"))
        .args(["chat", "-m", s(&m), "--chat-template", "chatml"])
        .args(["-n", "4", "--temp", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"What is 2+2?\n")?;
            c.wait_with_output()
        })
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        !String::from_utf8_lossy(&o.stdout).trim().is_empty(),
        "{err}"
    );
}

/// An unknown name or a missing file is a bad flag (exit 2) whose message lists the
/// built-in names, in `run` and in `chat`.
#[test]
fn unknown_template_names_list_the_builtin_ones() {
    let m = tiny();
    for cmd in ["run", "chat"] {
        for spec in ["alpaca", "/no/such/template.jinja"] {
            let mut args = vec![cmd, "-m", s(&m), "--chat-template", spec];
            if cmd == "run" {
                args.extend(["-p", "x"]);
            }
            let (code, out, err) = llq(&args);
            assert_eq!(code, 2, "{cmd} {spec}: {err}");
            assert!(out.is_empty());
            assert!(
                err.contains(&format!(
                    "'{spec}' is neither a built-in chat template nor a file"
                )) && err.contains("chatml, llama2, llama2-sys, llama3, gemma, zephyr"),
                "{cmd} {spec}: {err}"
            );
        }
    }
}

/// A template file runs in the same bounded renderer as a model's template: an endless
/// loop or an exploding output is an error naming the file (exit 1), not a hang.
#[test]
fn a_template_file_is_bounded_like_a_model_template() {
    let m = common::convert_smollm2_kept();
    let dir = tempfile::tempdir().unwrap();
    for (name, src, why) in [
        (
            "loop.jinja",
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "fuel",
        ),
        (
            "big.jinja",
            "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(40) %}\
             {% set ns.s = ns.s + ns.s %}{{ ns.s }}{% endfor %}",
            "larger than 16 MiB",
        ),
        (
            "bad.jinja",
            "{% for m in messages %}{{ m.content }",
            "does not compile",
        ),
    ] {
        let f = dir.path().join(name);
        std::fs::write(&f, src).unwrap();
        let (code, out, err) = llq(&[
            "run",
            "-m",
            s(&m),
            "--chat-template",
            s(&f),
            "-p",
            "hi",
            "--temp",
            "0",
        ]);
        assert_eq!(code, 1, "{name}: {err}");
        assert!(out.is_empty());
        assert!(
            err.contains(name) && err.contains(why) && err.contains("chat template"),
            "{name}: {err}"
        );
    }
}

// ---- errors that explain -----------------------------------------------------------

/// `cmd` fails with exit 1 and one stderr line holding every needle.
fn fails_with(args: &[&str], needles: &[&str]) {
    let (code, out, err) = llq(args);
    assert_eq!(code, 1, "{args:?}: {err}");
    assert!(out.is_empty(), "{args:?}: {out}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: stderr lacks {n:?}: {err}");
    }
}

/// What `llq convert` says for paths that are not a checkpoint: the path, what it is,
/// and what to give instead.
#[test]
fn convert_says_what_the_path_is_and_what_to_pass() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("x.llq");
    let out = s(&out);
    let fixture = common::fixtures().join("tiny-llama-gqa");
    // Missing: no raw "entity not found".
    let nope = d.join("nope");
    fails_with(
        &["convert", s(&nope), "-o", out],
        &[
            s(&nope),
            "cannot convert it: no such file or directory",
            "Hugging Face checkpoint directory",
            ".gguf file",
        ],
    );
    // The safetensors file of a checkpoint: pass its directory.
    let st = fixture.join("model.safetensors");
    fails_with(
        &["convert", s(&st), "-o", out],
        &[
            "model.safetensors: is a safetensors file",
            &format!(
                "pass the directory that holds it and its config.json: {}",
                fixture.display()
            ),
        ],
    );
    // A directory without config.json, holding a GGUF: name it.
    let empty = d.join("download");
    std::fs::create_dir(&empty).unwrap();
    fails_with(
        &["convert", s(&empty), "-o", out],
        &["download: cannot convert this directory: it has no config.json"],
    );
    std::fs::write(empty.join("model.Q4_0.gguf"), b"GGUF").unwrap();
    fails_with(
        &["convert", s(&empty), "-o", out],
        &["; pass ", "model.Q4_0.gguf instead"],
    );
    // Some other file: its first bytes as text and hex.
    let junk = d.join("notes.txt");
    std::fs::write(&junk, b"hello world").unwrap();
    fails_with(
        &["convert", s(&junk), "-o", out],
        &[
            "notes.txt: not a checkpoint: it starts with \"hell\" (68 65 6c 6c)",
            "\"GGUF\" (47 47 55 46)",
        ],
    );
    // An output directory that does not exist.
    let far = d.join("no/such/dir/x.llq");
    fails_with(
        &["convert", s(&fixture), "-o", s(&far)],
        &[
            "cannot write the output file: the directory",
            "does not exist",
        ],
    );
}

/// What `-m` says for a path that is no model: neither .llq, GGUF nor a checkpoint.
#[test]
fn run_says_what_the_model_path_is() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("weights.bin");
    std::fs::write(&junk, [0xa0u8, 0x76, 0, 0, 1, 2, 3, 4]).unwrap();
    fails_with(
        &["run", "-m", s(&junk), "--prompt-ids", "1"],
        &[
            "weights.bin: not a model llq runs: it starts with \"\\xa0v\\x00\\x00\" (a0 76 00 00)",
            "\"LLQF\" (4c 4c 51 46)",
            "\"GGUF\" (47 47 55 46)",
        ],
    );
    let nope = dir.path().join("nope.llq");
    fails_with(
        &["run", "-m", s(&nope), "--prompt-ids", "1"],
        &["nope.llq: cannot open the model: no such file or directory"],
    );
    let st = common::fixtures().join("tiny-llama-gqa/model.safetensors");
    fails_with(
        &["run", "-m", s(&st), "--prompt-ids", "1"],
        &["is a safetensors file", "pass the directory"],
    );
    // `info` reads .llq files only: a GGUF is named as one, with the way on.
    let gguf = dir.path().join("m.gguf");
    std::fs::write(&gguf, [b"GGUF".as_slice(), &[0u8; 80]].concat()).unwrap();
    fails_with(
        &["info", s(&gguf)],
        &[
            "its magic (first 4 bytes) is \"GGUF\" (47 47 55 46), expected \"LLQF\"",
            "llq convert",
        ],
    );
}

/// A model without a tokenizer: `run` suggests --prompt-ids (it has the flag), `chat`,
/// `perplexity` and `imatrix` do not (they don't).
#[test]
fn tokenizer_hints_name_only_the_command_s_flags() {
    let m = tiny();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("t.txt");
    std::fs::write(&text, "some text").unwrap();
    fails_with(
        &["run", "-m", s(&m), "-p", "hi", "--temp", "0"],
        &["has no tokenizer", "--prompt-ids"],
    );
    for args in [
        vec!["chat", "-m", s(&m)],
        vec!["perplexity", "-m", s(&m), "-f", s(&text), "-c", "64"],
        vec!["imatrix", "-m", s(&m), "-f", s(&text), "-c", "64"],
    ] {
        let (code, _, err) = llq(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("has no tokenizer"), "{args:?}: {err}");
        assert!(!err.contains("--prompt-ids"), "{args:?}: {err}");
    }
    // A text file that is not there: the path and what was being done.
    let nope = dir.path().join("nope.txt");
    fails_with(
        &["perplexity", "-m", s(&m), "-f", s(&nope), "-c", "64"],
        &["nope.txt: cannot read the text file: no such file or directory"],
    );
}
