//! The `llq` binary: stdout carries only the command's output, errors give one line on
//! stderr and a non-zero exit.

mod common;

use std::process::Command;

fn llq(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_llq"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

fn converted(dir: &std::path::Path) -> String {
    let out = dir.join("m.llq");
    let src = common::fixtures().join("tiny-llama-gqa");
    let (ok, _, err) = llq(&[
        "convert",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        "f32",
    ]);
    assert!(ok, "{err}");
    out.to_str().unwrap().to_string()
}

#[test]
fn run_prints_only_the_generated_ids() {
    let dir = tempfile::tempdir().unwrap();
    let m = converted(dir.path());
    let exp = common::read_json(&common::fixtures().join("tiny-llama-gqa/expected.json"));
    let case = &exp["cases"][1];
    let prompt: Vec<String> = common::ids(&case["prompt_ids"])
        .iter()
        .map(|i| i.to_string())
        .collect();
    let (ok, out, err) = llq(&[
        "run",
        "-m",
        &m,
        "--prompt-ids",
        &prompt.join(","),
        "-n",
        "16",
        "--temp",
        "0",
    ]);
    assert!(ok, "{err}");
    let want: Vec<String> = common::ids(&case["greedy_new_ids"])
        .iter()
        .map(|i| i.to_string())
        .collect();
    assert_eq!(out, want.join(" ") + "\n");
    assert!(err.contains("tok/s"), "timings belong on stderr: {err}");
}

#[test]
fn sampling_is_reproducible_with_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let m = converted(dir.path());
    let args = |seed: &str| {
        vec![
            "run",
            "-m",
            &m,
            "--prompt-ids",
            "1,2,3",
            "-n",
            "12",
            "--temp",
            "1.0",
            "--seed",
            seed,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let run = |seed: &str| {
        let a = args(seed);
        llq(&a.iter().map(String::as_str).collect::<Vec<_>>()).1
    };
    assert_eq!(run("42"), run("42"));
    assert_ne!(run("42"), run("43"));
}

#[test]
fn info_shows_metadata_tensors_and_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let m = converted(dir.path());
    let (ok, out, _) = llq(&["info", &m]);
    assert!(ok);
    for needle in [
        "header checksum: ok",
        "data checksum: ok",
        "llama.attention.head_count_kv",
        "blk.1.ffn_down.weight",
        "bits per weight",
        "KV cache per 1024 positions: f32 ",
    ] {
        assert!(out.contains(needle), "info lacks {needle}");
    }
}

#[test]
fn corrupt_model_gives_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let m = converted(dir.path());
    let mut bytes = std::fs::read(&m).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&m, bytes).unwrap();
    for args in [
        vec!["info", m.as_str()],
        vec!["run", "-m", m.as_str(), "--prompt-ids", "1"],
    ] {
        let (ok, out, err) = llq(&args);
        assert!(!ok);
        assert!(out.is_empty());
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains("checksum mismatch") && err.contains("m.llq"),
            "{err}"
        );
    }
}

#[test]
fn out_of_vocabulary_prompt_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let m = converted(dir.path());
    let (ok, _, err) = llq(&["run", "-m", &m, "--prompt-ids", "1,99999", "-n", "2"]);
    assert!(!ok);
    assert!(err.contains("99999"), "{err}");
}

#[test]
fn invalid_utf8_prompt_file_names_the_byte_offset() {
    let dir = tempfile::tempdir().unwrap();
    let m = converted(dir.path());
    let bad = dir.path().join("prompt.txt");
    std::fs::write(&bad, b"abc\xff\xfedef").unwrap();
    for cmd in ["run", "tokenize"] {
        let (ok, out, err) = llq(&[cmd, "-m", &m, "-f", bad.to_str().unwrap()]);
        assert!(!ok && out.is_empty());
        assert!(
            err.contains("prompt.txt") && err.contains("byte offset 3"),
            "{cmd}: {err}"
        );
    }
}

/// A checkpoint with a tokenizer and a chat template (SmolLM2's tokenizer on the tiny
/// random model: ids beyond the model's 512-token vocabulary are rejected at run time).
fn with_tokenizer(dir: &std::path::Path, template: &str) -> String {
    let ck = dir.join("ck");
    std::fs::create_dir(&ck).unwrap();
    let src = common::fixtures().join("tiny-llama-gqa");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), ck.join(f)).unwrap();
    }
    let tok = common::fixtures().join("tokenizers/smollm2-bpe/tokenizer.json");
    std::fs::copy(tok, ck.join("tokenizer.json")).unwrap();
    std::fs::write(ck.join("chat_template.jinja"), template).unwrap();
    let out = dir.join("t.llq");
    let (ok, _, err) = llq(&[
        "convert",
        ck.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        "f32",
    ]);
    assert!(ok, "{err}");
    out.to_str().unwrap().to_string()
}

#[test]
fn template_errors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let m = with_tokenizer(
        dir.path(),
        "{{ raise_exception('System role not supported') }}",
    );
    let (ok, out, err) = llq(&["run", "-m", &m, "--chat", "-p", "hi", "-n", "1"]);
    assert!(!ok && out.is_empty());
    assert!(
        err.contains("chat template") && err.contains("System role not supported"),
        "{err}"
    );
    let dir2 = tempfile::tempdir().unwrap();
    let m = with_tokenizer(dir2.path(), "{% for m in messages %}{{ m.content }");
    let (ok, _, err) = llq(&["run", "-m", &m, "--chat", "-p", "hi", "-n", "1"]);
    assert!(!ok);
    assert!(err.contains("chat template"), "{err}");
}

#[test]
fn tokenize_prints_ids_and_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let m = with_tokenizer(dir.path(), "{{ messages[0].content }}");
    let (ok, out, err) = llq(&["tokenize", "-m", &m, "Hello world", "--ids"]);
    assert!(ok, "{err}");
    assert_eq!(out, "19556 905\n");
    let (ok, out, _) = llq(&["tokenize", "-m", &m, "Hello world"]);
    assert!(ok);
    assert_eq!(out, "19556\tHello\n905\tĠworld\n");
}

/// Sizes and counts from flags that cannot be honoured are one-line errors (exit 1),
/// never an abort in the allocator (a thread count above the CPUs is capped with a
/// warning: tests/cli_newcomer.rs).
#[test]
fn absurd_sizes_and_counts_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let m = converted(dir.path());
    let run = |extra: &[&str]| {
        let mut a = vec!["run", "-m", &m, "--prompt-ids", "1,2,3", "-n", "2"];
        a.extend_from_slice(extra);
        let o = Command::new(env!("CARGO_BIN_EXE_llq"))
            .args(&a)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (o.status.code(), String::from_utf8(o.stderr).unwrap())
    };
    for (flags, needle) in [
        (&["-c", "1000000000"][..], "larger than the maximum"),
        (&["-c", "4294967296"][..], "larger than the maximum"),
        (&["-c", "144115188075855872"][..], "larger than the maximum"),
        (&["--temp", "nan"][..], "temperature"),
        (&["--temp=-1"][..], "temperature"),
        (&["--temp", "inf"][..], "temperature"),
        (&["--top-p", "1.5"][..], "top-p"),
        (&["--min-p", "2"][..], "min-p"),
        (&["--repeat-penalty", "0"][..], "repeat penalty"),
    ] {
        let (code, err) = run(flags);
        assert_eq!(code, Some(1), "{flags:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{flags:?}: {err}");
        assert!(err.contains(needle), "{flags:?}: {err}");
    }
    let (ok, _, err) = llq(&["bench", "-m", &m, "-p", "1000000000", "-n", "0"]);
    assert!(
        !ok && err.contains("longer than the largest context"),
        "{err}"
    );
}

/// Endless or huge inputs stop at a cap checked while reading.
#[test]
fn unbounded_inputs_stop_at_a_cap() {
    let dir = tempfile::tempdir().unwrap();
    let m = converted(dir.path());
    for args in [
        vec!["run", "-m", &m, "-f", "/dev/zero"],
        vec!["tokenize", "-m", &m, "-f", "/dev/zero"],
    ] {
        let (ok, _, err) = llq(&args);
        assert!(!ok, "{args:?}");
        assert!(err.contains("/dev/zero") && err.contains("MiB"), "{err}");
    }
    // `llq chat < /dev/zero`: tests/smollm2.rs (chat needs a tokenizer).
}

/// llama.cpp habits: `-ngl` is accepted with a note, `-n -1` generates until the context
/// is full (or an end-of-generation token), `--seed -1` and the default pick a seed per
/// run and print it, and a printed seed repeats the run.
#[test]
fn llama_cpp_habits() {
    let dir = tempfile::tempdir().unwrap();
    let m = converted(dir.path());
    let run = |extra: &[&str]| {
        let mut a = vec!["run", "-m", &m, "--prompt-ids", "1,2,3"];
        a.extend_from_slice(extra);
        let (ok, out, err) = llq(&a);
        assert!(ok, "{a:?}: {err}");
        (out, err)
    };
    let (_, err) = run(&["-ngl", "99", "-n", "2", "--temp", "0"]);
    assert!(err.contains("llq runs on the CPU"), "{err}");
    let (out, err) = run(&[
        "-n",
        "-1",
        "-c",
        "24",
        "--context-policy",
        "stop",
        "--temp",
        "0",
    ]);
    assert_eq!(out.split_whitespace().count(), 24 - 3, "{out}");
    assert!(err.contains("stop: context full"), "{err}");
    let seed_of = |err: &str| -> String {
        let s = err.split("llq: seed ").nth(1).expect("a printed seed");
        s.split_whitespace().next().unwrap().to_string()
    };
    let (a, err_a) = run(&["-n", "16", "--temp", "1"]);
    let (b, err_b) = run(&["-n", "16", "--temp", "1", "--seed", "-1"]);
    let (sa, sb) = (seed_of(&err_a), seed_of(&err_b));
    assert_ne!(sa, sb, "two runs drew the same seed");
    assert_ne!(a, b, "two random seeds gave the same 16 tokens");
    let (again, err) = run(&["-n", "16", "--temp", "1", "--seed", &sa]);
    assert_eq!(again, a, "the printed seed does not repeat the run");
    assert!(!err.contains("llq: seed"), "{err}");
    let (ok, _, err) = llq(&["run", "-m", &m, "--prompt-ids", "1", "-n", "-2"]);
    assert!(!ok && err.contains("-1 for no limit"), "{err}");
}

/// `-m` also takes a Hugging Face checkpoint directory: it is converted once into the
/// cache, said on stderr, and reused by the next run. When the source changes, it is
/// converted again and the conversion of the earlier version is removed.
#[test]
fn run_takes_a_checkpoint_directory() {
    let cache = tempfile::tempdir().unwrap();
    // A copy, whose modification time the test changes.
    let copy = tempfile::tempdir().unwrap();
    let src = copy.path().join("tiny-llama-gqa");
    std::fs::create_dir(&src).unwrap();
    for e in std::fs::read_dir(common::fixtures().join("tiny-llama-gqa")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), src.join(e.file_name())).unwrap();
    }
    let run = || {
        let o = Command::new(env!("CARGO_BIN_EXE_llq"))
            .args([
                "run",
                "-m",
                src.to_str().unwrap(),
                "--prompt-ids",
                "1,2,3",
                "-n",
                "4",
            ])
            .args(["--temp", "0"])
            .env("LLQ_CACHE", cache.path())
            .output()
            .unwrap();
        let err = String::from_utf8(o.stderr).unwrap();
        assert!(o.status.success(), "{err}");
        (String::from_utf8(o.stdout).unwrap(), err)
    };
    let (first, err) = run();
    assert!(
        err.contains("Hugging Face checkpoint: converting it once"),
        "{err}"
    );
    let (second, err) = run();
    assert!(!err.contains("converting"), "{err}");
    assert_eq!(first, second);
    let listing = || -> Vec<String> {
        std::fs::read_dir(cache.path().join("converted"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let converted = listing();
    assert_eq!(converted.len(), 1, "{converted:?}");
    // A file added to the checkpoint changes the directory's time: a new version.
    std::fs::write(src.join("README.md"), "updated").unwrap();
    let (third, err) = run();
    assert!(err.contains("converting it once"), "{err}");
    assert!(
        err.contains("the conversion of an earlier version of"),
        "{err}"
    );
    assert_eq!(third, first);
    let after = listing();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after, converted);
    let converted = after;
    assert!(converted[0].starts_with("tiny-llama-gqa-") && converted[0].ends_with(".llq"));
    // A safetensors checkpoint has no stored types llq keeps: its matrices become q8_0.
    let f =
        llq::format::LlqFile::open(&cache.path().join("converted").join(&converted[0])).unwrap();
    assert_eq!(
        f.get(llq::format::keys::QUANTIZATION),
        Some(&llq::format::Value::Str("q8_0".into()))
    );
}
