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

// ---- -t and -c ---------------------------------------------------------------------

/// More threads than logical CPUs: a warning naming both numbers, and the run goes on
/// with one thread per CPU (it used to be refused above 4 per CPU, accepted below).
#[test]
fn threads_above_the_cpus_are_capped_with_a_warning() {
    let m = tiny();
    let cpus = std::thread::available_parallelism().unwrap().get();
    for t in [cpus + 1, 100_000] {
        let t = t.to_string();
        let (code, out, err) = llq(&[
            "run",
            "-m",
            s(&m),
            "--prompt-ids",
            "1,2,3",
            "-n",
            "2",
            "--temp",
            "0",
            "-t",
            &t,
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.split_whitespace().count(), 2, "{out}");
        assert!(
            err.contains(&format!(
                "warning: -t {t}: this process may use {cpus} logical CPUs; using {cpus} threads"
            )),
            "{err}"
        );
    }
    let (code, _, err) = llq(&["run", "-m", s(&m), "--prompt-ids", "1", "-n", "1", "-t", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
}

/// A context longer than the model's training: a warning naming both numbers (the hard
/// caps stay errors: tests/cli.rs).
#[test]
fn context_above_the_trained_length_is_warned() {
    let m = tiny();
    let (code, _, err) = llq(&[
        "run",
        "-m",
        s(&m),
        "--prompt-ids",
        "1,2,3",
        "-n",
        "2",
        "-c",
        "300",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: -c 300 is longer than the 256 tokens"),
        "{err}"
    );
    let (code, _, err) = llq(&["run", "-m", s(&m), "--prompt-ids", "1", "-n", "1", "-c", "256"]);
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
    let (code, out, err) = llq(&[
        "run",
        "-m",
        s(&m),
        "--prompt-ids",
        &ids(20),
        "-c",
        "16",
        "-n",
        "3",
        "--temp",
        "0",
        "--context-policy",
        "shift",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.split_whitespace().count(), 3, "{out}");
    assert!(
        err.contains("warning: the prompt has 20 tokens but the context is 16: its oldest 4 tokens after the first 4 were dropped"),
        "{err}"
    );
    // A prompt that fits says nothing.
    let (code, _, err) = llq(&[
        "run",
        "-m",
        s(&m),
        "--prompt-ids",
        &ids(16),
        "-c",
        "16",
        "-n",
        "1",
        "--context-policy",
        "shift",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("dropped"), "{err}");
}
