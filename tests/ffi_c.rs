//! The C API from C: the examples and test programs in examples/c and tests/c are built
//! with the system `cc` against libllq.so and libllq.a and run on a fixture model; their
//! output must equal the Rust API's greedy output.
//!
//! The shared and static libraries are built by the test with `$CARGO build --lib` (same
//! profile, same target directory) so they always match the code under test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use common::*;
use llq::generate::{stop_ids, Session};
use llq::model::Model;
use llq::quant::DType;
use llq::sample::SamplerParams;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `<target>/<profile>`: the test binary lives in `<target>/<profile>/deps`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    assert_eq!(
        deps.file_name().unwrap(),
        "deps",
        "unexpected test binary location"
    );
    deps.parent().unwrap().to_path_buf()
}

fn libs() -> &'static (PathBuf, PathBuf) {
    static LIBS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    LIBS.get_or_init(|| {
        let dir = profile_dir();
        // Always ask cargo (a no-op when up to date): libraries left in deps/ by an earlier
        // build may be stale, and a C test against a stale library proves nothing.
        let target = dir.parent().unwrap();
        let profile = dir.file_name().unwrap().to_str().unwrap();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(root())
            .args(["build", "--lib"])
            .env("CARGO_TARGET_DIR", target);
        match profile {
            "release" => cmd.arg("--release"),
            _ => cmd.args(["--profile", "test"]),
        };
        let st = cmd.status().expect("running cargo build --lib");
        assert!(st.success(), "cargo build --lib failed");
        let (so, a) = (dir.join("libllq.so"), dir.join("libllq.a"));
        assert!(so.is_file(), "{} missing", so.display());
        assert!(a.is_file(), "{} missing", a.display());
        (so, a)
    })
}

#[derive(Clone, Copy, Debug)]
enum Link {
    Shared,
    Static,
}

/// Compile a C source against the library (once per test binary; tests run in parallel,
/// so compilation is serialized and each binary appears atomically by rename).
fn build_c(src: &str, link: Link) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // Emptied once per process, so a binary from an earlier run is never taken for this
    // run's.
    let dir = DIR.get_or_init(|| {
        let dir = scratch_dir().join("c");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    });
    let (so, a) = libs();
    let stem = Path::new(src).file_stem().unwrap().to_str().unwrap();
    let out = dir.join(format!("{stem}-{link:?}"));
    if out.is_file() {
        return out;
    }
    let tmp = dir.join(format!("{stem}-{link:?}.tmp"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut cmd = Command::new(cc);
    cmd.args(["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-O1", "-g"])
        .args(["-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(root().join("include"))
        .arg(root().join(src))
        .arg("-o")
        .arg(&tmp);
    match link {
        Link::Shared => {
            let d = so.parent().unwrap();
            cmd.arg("-L").arg(d).arg("-lllq");
            cmd.arg(format!("-Wl,-rpath,{}", d.display()));
            cmd.arg("-lpthread");
        }
        Link::Static => {
            cmd.arg(a).args(["-lpthread", "-ldl", "-lm"]);
        }
    }
    let o = cmd.output().expect("running cc");
    assert!(
        o.status.success(),
        "cc {src} ({link:?}) failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::rename(&tmp, &out).unwrap();
    out
}

fn run(bin: &Path, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new(bin)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut i = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            i.write_all(s.as_bytes()).unwrap();
        }
    }
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "{} {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        bin.display(),
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// The tiny GQA fixture (no tokenizer), converted once.
fn tiny() -> &'static (Model, PathBuf) {
    static M: OnceLock<(Model, PathBuf)> = OnceLock::new();
    M.get_or_init(|| {
        let path = convert_fixture_to_scratch("tiny-llama-gqa", DType::Q8_0);
        (Model::open(&path).unwrap(), path)
    })
}

fn greedy_params() -> SamplerParams {
    SamplerParams {
        temp: 0.0,
        ..Default::default()
    }
}

/// Greedy ids from the Rust API, no stop tokens.
fn rust_greedy(model: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut s = Session::new(model, 128, greedy_params());
    s.set_prompt(prompt).unwrap();
    let mut out = Vec::new();
    s.generate(n, &|_| false, |t| {
        out.push(t);
        true
    })
    .unwrap();
    out
}

fn parse_ids(line: &str) -> Vec<u32> {
    line.split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect()
}

fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[test]
fn examples_and_test_programs_compile_both_ways() {
    for src in [
        "examples/c/generate.c",
        "examples/c/chat.c",
        "tests/c/threads.c",
        "tests/c/misuse.c",
    ] {
        for link in [Link::Shared, Link::Static] {
            build_c(src, link);
        }
    }
}

#[test]
fn generate_ids_equal_rust_greedy() {
    let (model, path) = tiny();
    let prompt = [1u32, 5, 9, 33, 2];
    let want = rust_greedy(model, &prompt, 20);
    for link in [Link::Shared, Link::Static] {
        let bin = build_c("examples/c/generate.c", link);
        let out = run(
            &bin,
            &[path.to_str().unwrap(), "--ids", &join(&prompt), "-n", "20"],
            None,
        );
        assert_eq!(parse_ids(&out), want, "{link:?}");
    }
}

#[test]
fn two_threads_on_one_model_equal_sequential_and_rust() {
    let (model, path) = tiny();
    let (a, b) = ([3u32, 14, 15, 92, 65], [27u32, 18, 28]);
    let want = [rust_greedy(model, &a, 24), rust_greedy(model, &b, 24)];
    for link in [Link::Shared, Link::Static] {
        let bin = build_c("tests/c/threads.c", link);
        let out = run(
            &bin,
            &[path.to_str().unwrap(), &join(&a), &join(&b), "24"],
            None,
        );
        let got: Vec<Vec<u32>> = out.lines().map(parse_ids).collect();
        assert_eq!(got, want, "{link:?}");
    }
}

#[test]
fn misuse_gives_documented_codes() {
    let (_, path) = tiny();
    for link in [Link::Shared, Link::Static] {
        let bin = build_c("tests/c/misuse.c", link);
        let out = run(&bin, &[path.to_str().unwrap()], None);
        assert!(out.contains("checks passed"), "{out}");
    }
}

// ---------------------------------------------------------------------------------------
// Text level, on SmolLM2 (tools/fetch_smollm2.sh fetches it; a missing model fails).

fn smollm2() -> &'static (Model, PathBuf) {
    static M: OnceLock<(Model, PathBuf)> = OnceLock::new();
    M.get_or_init(|| {
        let path = convert_smollm2_to_scratch(DType::Q8_0);
        (Model::open(&path).unwrap(), path)
    })
}

/// What `llq_generate` with default parameters and greedy sampling prints for `ids`.
fn rust_text(model: &Model, ids: &[u32], n: usize) -> String {
    let tok = model.tokenizer().unwrap();
    let mut s = Session::new(model, 2048, greedy_params());
    s.set_prompt(ids).unwrap();
    let stops = stop_ids(model);
    let mut dec = tok.stream_decoder(true);
    let mut text = String::new();
    s.generate(n, &|t| stops.contains(&t), |t| {
        if !stops.contains(&t) {
            text.push_str(&dec.push(t));
        }
        true
    })
    .unwrap();
    text.push_str(&dec.flush());
    text
}

#[test]
fn smollm2_generate_text_equals_rust() {
    let (model, path) = smollm2();
    let tok = model.tokenizer().unwrap();
    let prompt = "The capital of France is";
    let mut ids = Vec::new();
    if tok.add_bos() {
        ids.extend(tok.bos_id());
    }
    ids.extend(tok.encode(prompt, true));
    let want = rust_text(model, &ids, 24);
    assert!(!want.trim().is_empty());
    for link in [Link::Shared, Link::Static] {
        let bin = build_c("examples/c/generate.c", link);
        let out = run(&bin, &[path.to_str().unwrap(), prompt, "-n", "24"], None);
        assert_eq!(out, format!("{want}\n"), "{link:?}");
    }
}

#[test]
fn smollm2_chat_first_reply_equals_rust() {
    let (model, path) = smollm2();
    let tok = model.tokenizer().unwrap();
    let tpl = llq::chat::ChatTemplate::new(model.chat_template.as_deref().unwrap()).unwrap();
    let msgs = [llq::chat::ChatMessage::new("user", "What is 2+2?")];
    let rendered = tpl
        .render(
            &msgs,
            true,
            &llq::generate::piece_text(tok, tok.bos_id()),
            &llq::generate::piece_text(tok, tok.eos_id()),
        )
        .unwrap();
    let want = rust_text(model, &tok.encode(&rendered, true), 32);
    let bin = build_c("examples/c/chat.c", Link::Shared);
    let out = run(
        &bin,
        &[path.to_str().unwrap(), "-n", "32", "--temp", "0"],
        Some("What is 2+2?\nAnd 3+3?\n"),
    );
    let lines: Vec<&str> = out.split("\n> ").collect();
    assert!(out.starts_with("> "), "{out}");
    assert_eq!(out[2..].split("\n> ").next().unwrap(), want, "{out}");
    assert_eq!(lines.len(), 2, "two replies expected: {out}");
}

#[test]
fn smollm2_python_ctypes_example_equals_rust() {
    let (model, path) = smollm2();
    assert!(
        Command::new("python3").arg("--version").output().is_ok(),
        "python3 is needed for the ctypes example"
    );
    let tok = model.tokenizer().unwrap();
    let prompt = "Once upon a time";
    let mut ids = Vec::new();
    if tok.add_bos() {
        ids.extend(tok.bos_id());
    }
    ids.extend(tok.encode(prompt, true));
    let want = rust_text(model, &ids, 16);
    let (so, _) = libs();
    let o = Command::new("python3")
        .arg(root().join("examples/python/llq_ctypes.py"))
        .args([path.to_str().unwrap(), prompt, "-n", "16", "--lib"])
        .arg(so)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("prompt tokens: {ids:?}")), "{err}");
    assert_eq!(String::from_utf8(o.stdout).unwrap(), format!("{want}\n"));
}
