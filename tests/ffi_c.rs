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
use llq::chat::{ChatMessage, ChatTemplate};
use llq::format::{keys, LlqFile, LlqWriter, TensorPlan, Value};
use llq::generate::{GenerateParams, Session, SessionConfig, StopReason};
use llq::kv::{CacheType, ContextPolicy, KvConfig};
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
    run_with_stderr_in(bin, args, stdin).0
}

fn run_with_stderr(bin: &Path, args: &[&str]) -> (String, String) {
    run_with_stderr_in(bin, args, None)
}

/// Run a test program, which must succeed: (stdout, stderr).
fn run_with_stderr_in(bin: &Path, args: &[&str], stdin: Option<&str>) -> (String, String) {
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
    (
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
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
    rust_ids(&mut s, n).0
}

/// Every id the session generates (end of generation does not stop it), and why it
/// stopped.
fn rust_ids(s: &mut Session<'_>, n: usize) -> (Vec<u32>, StopReason) {
    let mut out = Vec::new();
    let params = GenerateParams {
        max_tokens: n,
        stop_at_eog: false,
        ..GenerateParams::default()
    };
    let done = s
        .generate(&params, |p| {
            out.extend(p.token);
            true
        })
        .unwrap();
    assert_eq!(done.n_tokens, out.len());
    (out, done.stop)
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
        "tests/c/policy.c",
        "tests/c/stress.c",
        "tests/c/lifetime.c",
        "tests/c/refusals.c",
        "tests/c/lora.c",
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

/// 16 threads × 100 rounds on one model (tests/c/stress.c): contexts churned, seeded
/// generation equal to (a prefix of, when stopped) the single-threaded run, stop requests
/// across threads, busy calls and frees refused, per-thread last errors, misuse.
#[test]
fn sixteen_threads_churning_contexts_make_no_error() {
    let (_, path) = tiny();
    for link in [Link::Shared, Link::Static] {
        let bin = build_c("tests/c/stress.c", link);
        let out = run(&bin, &[path.to_str().unwrap(), "16", "100"], None);
        assert!(
            out.contains("16 threads x 100 rounds") && out.contains(" 0 errors"),
            "{out}"
        );
        eprintln!("{link:?}: {}", out.trim_end());
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
// Lifetimes, refusals and the library's identity (issue #18).

#[test]
fn freeing_a_context_in_use_is_busy_and_it_can_still_be_stopped() {
    let (_, path) = tiny();
    for link in [Link::Shared, Link::Static] {
        let bin = build_c("tests/c/lifetime.c", link);
        let out = run(&bin, &[path.to_str().unwrap()], None);
        assert!(out.contains("checks passed"), "{out}");
    }
}

/// A copy of the .llq at `src` whose metadata key `key` is `value` (an existing key is
/// replaced): the reader's checks pass (the writer computes the checksums), so what is
/// tested is the model's check of the value.
fn llq_with(src: &Path, dst: &Path, key: &str, value: Value) {
    let f = LlqFile::open(src).unwrap();
    let mut meta: Vec<(String, Value)> = f
        .metadata()
        .iter()
        .filter(|(k, _)| k != key)
        .cloned()
        .collect();
    meta.push((key.to_string(), value));
    let plans = f
        .tensors()
        .iter()
        .map(|t| TensorPlan {
            name: t.name.clone(),
            kind: t.kind,
            shape: t.shape.clone(),
        })
        .collect();
    let mut w = LlqWriter::create(dst, meta, plans).unwrap();
    for t in f.tensors() {
        w.write_tensor(f.tensor_data(t)).unwrap();
    }
    w.finish().unwrap();
}

/// A kernel level this build knows but this CPU cannot run (there is always one: the
/// x86 and Arm levels exclude each other).
fn unavailable_kernel_level() -> &'static str {
    let here: Vec<&str> = llq::kernels::available().iter().map(|k| k.name).collect();
    llq::kernels::ALL_LEVELS
        .iter()
        .copied()
        .find(|l| !here.contains(l))
        .expect("a kernel level this CPU lacks")
}

#[test]
fn open_and_new_refuse_with_messages_that_say_why() {
    let (model, path) = tiny();
    // In the scratch directory (not a temporary one), like the converted fixtures: a
    // failure can be rerun by hand.
    let dir = scratch_dir();
    let bad_bos = dir.join("bad-bos.llq");
    let id = model.config.vocab_size as u32 + 7;
    llq_with(path, &bad_bos, keys::BOS_ID, Value::U32(id));
    let id = id.to_string();
    let args = [
        path.to_str().unwrap(),
        bad_bos.to_str().unwrap(),
        &id,
        unavailable_kernel_level(),
    ];
    for link in [Link::Shared, Link::Static] {
        let bin = build_c("tests/c/refusals.c", link);
        let out = run(&bin, &args, None);
        assert!(out.contains("checks passed"), "{out}");
    }
    // The check is the library's: the CLI says the same.
    let (ok, _, err) = llq_cli(
        &[
            "run",
            "-m",
            bad_bos.to_str().unwrap(),
            "--prompt-ids",
            "1",
            "-n",
            "1",
        ],
        "",
    );
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "BOS token id {id} is outside the vocabulary (vocab size {})",
            model.config.vocab_size
        )),
        "{err}"
    );
    // So is an EOS id.
    let bad_eos = dir.join("bad-eos.llq");
    let eos = model.config.vocab_size as u32;
    llq_with(path, &bad_eos, keys::EOS_IDS, Value::ArrU32(vec![2, eos]));
    let e = Model::open(&bad_eos)
        .err()
        .expect("EOS outside the vocabulary");
    assert!(
        e.to_string()
            .contains(&format!("EOS token id {eos} is outside the vocabulary")),
        "{e}"
    );
}

#[test]
fn a_pool_that_cannot_start_is_reported_as_itself() {
    let (_, path) = tiny();
    let bin = build_c("tests/c/refusals.c", Link::Shared);
    let out = run(&bin, &["--pool", path.to_str().unwrap()], None);
    assert!(out.contains("checks passed"), "{out}");
}

/// `LLQ_API_VERSION` is the SONAME's number.
fn soname() -> String {
    format!("libllq.so.{}", llq::ffi::LLQ_API_VERSION)
}

fn readelf_dynamic(file: &Path) -> String {
    let o = Command::new("readelf")
        .arg("-d")
        .arg(file)
        .output()
        .expect("readelf (binutils) is needed");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn shared_library_has_the_api_major_as_soname() {
    let (so, _) = libs();
    let d = readelf_dynamic(so);
    assert!(
        d.contains(&format!("Library soname: [{}]", soname())),
        "{d}"
    );
    // Programs linked with -lllq record the SONAME, found next to the library.
    let link = so.with_file_name(soname());
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("libllq.so"));
    let bin = build_c("examples/c/generate.c", Link::Shared);
    let d = readelf_dynamic(&bin);
    assert!(
        d.contains(&format!("Shared library: [{}]", soname())),
        "{d}"
    );
}

/// The fenced block that follows `marker` in docs/C_API.md.
fn docs_block(marker: &str) -> String {
    let doc = std::fs::read_to_string(root().join("docs/C_API.md")).unwrap();
    let at = doc
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in docs/C_API.md"));
    let rest = &doc[at..];
    let start = rest
        .find("```sh\n")
        .expect("a ```sh block after the marker")
        + 6;
    let len = rest[start..].find("```").expect("the block's end");
    rest[start..start + len].to_string()
}

#[test]
fn docs_build_lines_work_as_written() {
    let (_, model) = tiny();
    let _ = libs(); // built (and checked) once; the docs' cargo line is then a no-op
    for (marker, bin) in [
        ("<!-- tested: build-shared -->", "generate"),
        ("<!-- tested: build-static -->", "generate-static"),
    ] {
        let block = docs_block(marker);
        if bin == "generate" {
            // The examples' build comments say the same.
            let cc = block.lines().find(|l| l.starts_with("cc ")).unwrap();
            for ex in ["generate", "chat"] {
                let src = std::fs::read_to_string(root().join(format!("examples/c/{ex}.c")));
                let line = cc.replace("generate", ex);
                assert!(src.unwrap().contains(&line), "examples/c/{ex}.c: {line}");
            }
        }
        let out = root().join(bin);
        let _ = std::fs::remove_file(&out);
        // As a user runs it: in the source tree, the default target directory.
        let o = Command::new("sh")
            .args(["-ec", &block])
            .current_dir(root())
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{block}failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        // Run from elsewhere, with no LD_LIBRARY_PATH: the rpath finds the library.
        let ids = run(
            &out,
            &[model.to_str().unwrap(), "--ids", "1,5,9", "-n", "4"],
            None,
        );
        std::fs::remove_file(&out).unwrap();
        assert_eq!(parse_ids(&ids).len(), 4, "{ids}");
    }
}

#[test]
fn make_install_installs_the_soname_and_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let target = profile_dir().parent().unwrap().to_path_buf();
    if profile_dir().file_name().unwrap() != "release" {
        return; // the Makefile installs the release build
    }
    let _ = libs();
    let o = Command::new("make")
        .arg("install")
        .arg(format!("DESTDIR={}", dir.path().display()))
        .arg("PREFIX=/usr")
        .arg(format!("CARGO_TARGET_DIR={}", target.display()))
        .current_dir(root())
        .output()
        .expect("make");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lib = dir.path().join("usr/lib");
    assert!(lib.join(soname()).is_file());
    assert_eq!(
        std::fs::read_link(lib.join("libllq.so")).unwrap(),
        Path::new(&soname())
    );
    assert!(readelf_dynamic(&lib.join(soname())).contains(&soname()));
    assert!(dir.path().join("usr/include/llq.h").is_file());
}

// ---------------------------------------------------------------------------------------
// Context policy and sampling: the C API, the Rust API and the CLI give the same ids and
// the same stop reason for the same model, context parameters, seed and sampling.

/// One context configuration.
#[derive(Clone, Copy, Debug)]
struct Policy {
    n_ctx: usize,
    shift: bool,
    keep: usize,
    cache: CacheType,
    temp: f32,
    seed: u64,
}

/// What tests/c/policy.c printed.
#[derive(Debug, Default)]
struct CRun {
    generate: Vec<u32>,
    stop: String,
    eval: Vec<u32>,
    eval_context_full: bool,
    /// Argmax after one bulk llq_eval of every generated id, and after the one-by-one loop.
    bulk: Option<(u32, u32)>,
}

fn c_policy(path: &Path, prompt: &[u32], n: usize, p: Policy) -> CRun {
    let bin = build_c("tests/c/policy.c", Link::Shared);
    let args = [
        path.to_str().unwrap().to_string(),
        join(prompt),
        n.to_string(),
        p.n_ctx.to_string(),
        (p.shift as u8).to_string(),
        p.keep.to_string(),
        p.cache.name().to_string(),
        p.temp.to_string(),
        p.seed.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&bin, &args, None);
    let mut r = CRun::default();
    for line in out.lines() {
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "generate" => r.generate = parse_ids(rest),
            "stop" => r.stop = rest.to_string(),
            "eval" => r.eval = parse_ids(rest),
            "eval-error" => r.eval_context_full = rest == "LLQ_ERR_CONTEXT_FULL",
            "bulk" => {
                let v = parse_ids(rest);
                r.bulk = Some((v[0], v[1]));
            }
            _ => panic!("unexpected line from policy.c: {line}"),
        }
    }
    r
}

fn rust_policy(model: &Model, prompt: &[u32], n: usize, p: Policy) -> (Vec<u32>, StopReason) {
    let cfg = SessionConfig {
        n_ctx: p.n_ctx,
        kv: KvConfig {
            cache_type: p.cache,
            policy: if p.shift {
                ContextPolicy::Shift
            } else {
                ContextPolicy::Stop
            },
            keep: p.keep,
        },
        sampler: SamplerParams {
            temp: p.temp,
            seed: p.seed,
            ..SamplerParams::default()
        },
        ..SessionConfig::default()
    };
    let mut s = Session::open(model, &cfg).unwrap();
    s.set_prompt(prompt).unwrap();
    rust_ids(&mut s, n)
}

/// `llq run --prompt-ids`: the ids it prints and the stop reason on its stderr line.
fn cli_policy(path: &Path, prompt: &[u32], n: usize, p: Policy) -> (Vec<u32>, String) {
    let args = [
        "run".to_string(),
        "-m".into(),
        path.to_str().unwrap().into(),
        "--prompt-ids".into(),
        join(prompt),
        "-n".into(),
        n.to_string(),
        "-c".into(),
        p.n_ctx.to_string(),
        "--context-policy".into(),
        if p.shift { "shift" } else { "stop" }.into(),
        "--keep".into(),
        p.keep.to_string(),
        "--cache-type".into(),
        p.cache.name().into(),
        "--temp".into(),
        p.temp.to_string(),
        "--seed".into(),
        p.seed.to_string(),
        "--ignore-eos".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = llq_cli(&args, "");
    assert!(ok, "llq {args:?} failed: {err}");
    let stop = err
        .split("stop: ")
        .nth(1)
        .and_then(|s| s.split(" |").next())
        .unwrap_or_else(|| panic!("no stop reason on stderr: {err}"));
    (parse_ids(&out), stop.to_string())
}

/// The tiny fixture with head_dim 32, which a q8_0 cache needs.
fn tiny_hd32() -> &'static (Model, PathBuf) {
    static M: OnceLock<(Model, PathBuf)> = OnceLock::new();
    M.get_or_init(|| {
        let path = convert_fixture_to_scratch("tiny-llama3-rope", DType::Q8_0);
        (Model::open(&path).unwrap(), path)
    })
}

#[test]
fn context_shift_generates_past_n_ctx_alike_in_c_rust_and_cli() {
    let prompt = [1u32, 5, 9];
    let n = 40;
    let configs = [
        // The reported bug: n_ctx 16, a 3-token prompt, 40 tokens asked for.
        (
            tiny(),
            Policy {
                n_ctx: 16,
                shift: true,
                keep: 4,
                cache: CacheType::F16,
                temp: 0.8,
                seed: 42,
            },
        ),
        (
            tiny(),
            Policy {
                n_ctx: 12,
                shift: true,
                keep: 0,
                cache: CacheType::F32,
                temp: 0.0,
                seed: 1,
            },
        ),
        (
            tiny_hd32(),
            Policy {
                n_ctx: 16,
                shift: true,
                keep: 2,
                cache: CacheType::Q8_0,
                temp: 1.1,
                seed: 7,
            },
        ),
    ];
    for ((model, path), p) in configs {
        let c = c_policy(path, &prompt, n, p);
        assert_eq!(
            c.generate.len(),
            n,
            "llq_generate stopped early: {p:?} {c:?}"
        );
        assert_eq!(c.stop, "LLQ_STOP_MAX_TOKENS", "{p:?}");
        assert!(!c.eval_context_full, "llq_eval refused to shift: {p:?}");
        assert_eq!(
            c.eval, c.generate,
            "llq_eval + llq_sample vs llq_generate: {p:?}"
        );
        let (bulk, one_by_one) = c.bulk.expect("bulk line");
        assert_eq!(
            bulk, one_by_one,
            "one llq_eval of {n} tokens past n_ctx: {p:?}"
        );
        let (rust, why) = rust_policy(model, &prompt, n, p);
        assert_eq!(rust, c.generate, "Rust API vs C API: {p:?}");
        assert_eq!(why, StopReason::MaxTokens);
        let (cli, cli_stop) = cli_policy(path, &prompt, n, p);
        assert_eq!(cli, c.generate, "CLI vs C API: {p:?}");
        assert_eq!(cli_stop, StopReason::MaxTokens.name());
    }
}

#[test]
fn stop_policy_reports_context_full_alike_in_c_rust_and_cli() {
    let (model, path) = tiny();
    let prompt = [1u32, 5, 9];
    let p = Policy {
        n_ctx: 16,
        shift: false,
        keep: 4,
        cache: CacheType::F16,
        temp: 0.8,
        seed: 3,
    };
    let c = c_policy(path, &prompt, 40, p);
    assert_eq!(c.generate.len(), 16 - prompt.len(), "{c:?}");
    assert_eq!(c.stop, "LLQ_STOP_CONTEXT_FULL");
    // The sample after the 16th position is drawn; evaluating it does not fit.
    assert!(c.eval_context_full, "{c:?}");
    assert_eq!(c.eval[..c.generate.len()], c.generate[..]);
    let (rust, why) = rust_policy(model, &prompt, 40, p);
    assert_eq!((rust, why), (c.generate.clone(), StopReason::ContextFull));
    let (cli, cli_stop) = cli_policy(path, &prompt, 40, p);
    assert_eq!(cli, c.generate);
    assert_eq!(cli_stop, StopReason::ContextFull.name());
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

/// What `llq_generate` with default parameters and greedy sampling prints for `ids`, and
/// why it stops.
fn rust_text(model: &Model, ids: &[u32], n: usize) -> (String, StopReason) {
    let mut s = Session::new(model, 2048, greedy_params());
    s.set_prompt(ids).unwrap();
    let mut text = String::new();
    let params = GenerateParams {
        max_tokens: n,
        ..GenerateParams::default()
    };
    let done = s
        .generate(&params, |p| {
            text.push_str(p.text);
            true
        })
        .unwrap();
    (text, done.stop)
}

#[test]
fn smollm2_generate_text_equals_rust() {
    let (model, path) = smollm2();
    let prompt = "The capital of France is";
    let ids = Session::new(model, 64, greedy_params())
        .encode(prompt, true, true)
        .unwrap();
    let (want, why) = rust_text(model, &ids, 24);
    assert!(!want.trim().is_empty());
    for link in [Link::Shared, Link::Static] {
        let bin = build_c("examples/c/generate.c", link);
        let (out, err) = run_with_stderr(&bin, &[path.to_str().unwrap(), prompt, "-n", "24"]);
        assert_eq!(out, format!("{want}\n"), "{link:?}");
        assert!(err.contains(&format!("stop: {why}\n")), "{why:?}: {err}");
    }
    // The CLI: same text, same stop reason.
    let m = path.to_str().unwrap();
    let (ok, out, err) = llq_cli(
        &[
            "run",
            "-m",
            m,
            "-p",
            prompt,
            "-n",
            "24",
            "--temp",
            "0",
            "--cache-type",
            "f32",
        ],
        "",
    );
    assert!(ok, "{err}");
    assert_eq!(out, format!("{want}\n"));
    assert!(err.contains(&format!("stop: {why} |")), "{why:?}: {err}");
}

#[test]
fn smollm2_chat_first_reply_equals_rust() {
    let (model, path) = smollm2();
    let tpl = ChatTemplate::new(model.chat_template.as_deref().unwrap()).unwrap();
    let msgs = [ChatMessage::new("user", "What is 2+2?")];
    let ids = Session::new(model, 64, greedy_params())
        .encode_chat(Some(&tpl), &msgs)
        .unwrap();
    let (want, why) = rust_text(model, &ids, 32);
    // The CLI's two ways to one chat turn, with the same cache and policy as the C API's
    // defaults.
    let m = path.to_str().unwrap();
    let same = [
        "--temp",
        "0",
        "--cache-type",
        "f32",
        "--context-policy",
        "stop",
    ];
    let (ok, run_out, err) = llq_cli(
        &[
            &["run", "-m", m, "--chat", "-p", "What is 2+2?", "-n", "32"],
            &same[..],
        ]
        .concat(),
        "",
    );
    assert!(ok, "{err}");
    assert_eq!(run_out, format!("{want}\n"), "llq run --chat");
    assert!(err.contains(&format!("stop: {why} |")), "{why:?}: {err}");
    let (ok, chat_out, err) = llq_cli(
        &[&["chat", "-m", m, "-n", "32"], &same[..]].concat(),
        "What is 2+2?\n",
    );
    assert!(ok, "{err}");
    assert_eq!(chat_out, format!("{want}\n"), "llq chat");
    let cut = err.contains("answer stopped");
    assert_eq!(cut, why != StopReason::EndOfGeneration, "{why:?}: {err}");
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
    let prompt = "Once upon a time";
    let ids = Session::new(model, 64, greedy_params())
        .encode(prompt, true, true)
        .unwrap();
    let (want, _) = rust_text(model, &ids, 16);
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

// ---------------------------------------------------------------------------------------
// LoRA adapters (issue #17).

/// tests/c/lora.c: two adapters opened for the f32 tiny model, applied to two contexts
/// run on two threads, give PEFT's merged goldens' greedy ids; removed, the base model's.
#[test]
fn lora_adapters_from_c_give_merged_goldens() {
    let fx = fixtures();
    let base = convert_fixture_to_scratch("tiny-llama-gqa", DType::F32);
    let other = convert_fixture_to_scratch("tiny-llama3-rope", DType::F32);
    let names = ["tiny-llama-gqa-lora-r8", "tiny-llama-gqa-lora-rslora"];
    let files: Vec<PathBuf> = names
        .iter()
        .map(|n| {
            let out = scratch_dir().join(format!("{n}.f32.llq"));
            let a = llq::lora::open_peft(&fx.join("lora").join(n)).unwrap();
            llq::lora::write_adapter(&a, DType::F32, &out).unwrap();
            out
        })
        .collect();
    let exp: Vec<serde_json::Value> = names
        .iter()
        .map(|n| read_json(&fx.join("lora").join(n).join("expected.json")))
        .collect();
    let base_exp = read_json(&fx.join("tiny-llama-gqa").join("expected.json"));
    for case in [1, 2] {
        let prompt = ids(&exp[0]["cases"][case]["prompt_ids"]);
        let want: Vec<Vec<u32>> = vec![
            ids(&exp[0]["cases"][case]["greedy_new_ids"]),
            ids(&exp[1]["cases"][case]["greedy_new_ids"]),
            ids(&base_exp["cases"][case]["greedy_new_ids"]),
        ];
        for link in [Link::Shared, Link::Static] {
            let bin = build_c("tests/c/lora.c", link);
            let s = |p: &Path| p.to_str().unwrap().to_string();
            let out = run(
                &bin,
                &[
                    &s(&base),
                    &s(&files[0]),
                    &s(&files[1]),
                    &join(&prompt),
                    "16",
                    &s(&other),
                ],
                None,
            );
            let got: Vec<Vec<u32>> = out.lines().map(parse_ids).collect();
            assert_eq!(got, want, "case {case} {link:?}");
        }
    }
}
