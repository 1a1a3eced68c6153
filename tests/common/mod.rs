//! Shared helpers for integration tests: fixture paths, conversion into temp dirs,
//! logit comparison metrics.
#![allow(dead_code)]

pub mod gguf;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use llq::convert::{convert, GgufCheckpoint, HfCheckpoint, Silent, Target};
use llq::model::{Logits, Model, State};
use llq::quant::DType;
use safetensors::tensor::{Dtype, TensorView};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")
}

pub fn read_json(p: &Path) -> serde_json::Value {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap()
}

/// Convert a fixture checkpoint and open the result (the temp dir lives as long as the model).
pub fn convert_fixture(name: &str, dtype: DType) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("{name}.{}.llq", dtype.name()));
    let ck = HfCheckpoint::open(&fixtures().join(name)).unwrap();
    convert(&ck, dtype, &out, &Silent).unwrap();
    let model = Model::open(&out).unwrap();
    (dir, model)
}

/// Where a test binary keeps models that live as long as the process: a folder of its own
/// under cargo's `target/tmp`. A `TempDir` held in a `static` is never dropped, so never
/// deleted; every run used to leave its converted models in /tmp (1 GB per SmolLM2 run)
/// until the disk filled. Fixed names here mean a run replaces the previous run's files.
/// `convert` renames a finished file into place, so two processes converting the same
/// model at once cannot see half a file.
pub fn scratch_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(env!("CARGO_CRATE_NAME"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// Where models converted for the whole process live. `tools/test.sh` sets
/// `LLQ_TEST_MODELS` to one folder that it empties at the start of a run: then every test
/// binary, and every forced kernel level, of that run shares one conversion per model and
/// type (conversion does not depend on the kernel level: every level's encoders write the
/// same bytes, `tests/kernels.rs::encoders_are_bit_identical`). Without it, each test binary converts into its own [`scratch_dir`],
/// replacing what an earlier run left.
fn models_dir() -> (PathBuf, bool) {
    match std::env::var_os("LLQ_TEST_MODELS") {
        Some(d) => {
            let d = PathBuf::from(d);
            std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
            (d, true)
        }
        None => (scratch_dir(), false),
    }
}

/// `out` converted from `ck` at `dtype`: reused when the run shares converted models and
/// the file is there, converted otherwise (`convert` renames a finished file into place,
/// so a reader never sees half a file). Conversions within a process are serialized so
/// that parallel tests wanting the same file convert it once.
fn convert_once(
    name: &str,
    target: impl Into<Target>,
    ck: &dyn llq::convert::Checkpoint,
) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (dir, shared) = models_dir();
    let target = target.into();
    let label = match target {
        Target::Type(d) => d.name().to_string(),
        Target::Keep { fallback } => format!("kept-{}", fallback.name()),
        Target::Mix(m) => m.name().to_string(),
    };
    let out = dir.join(format!("{name}.{label}.llq"));
    static DONE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if done.contains(&out) || (shared && out.is_file()) {
        return out;
    }
    convert(ck, target, &out, &Silent).unwrap();
    done.push(out.clone());
    out
}

/// Convert a fixture checkpoint once (see [`convert_once`]), for tests that need the
/// file's path for the whole process (the C API, the command line).
pub fn convert_fixture_to_scratch(name: &str, dtype: DType) -> PathBuf {
    let ck = HfCheckpoint::open(&fixtures().join(name)).unwrap();
    convert_once(name, dtype, &ck)
}

/// Convert SmolLM2 once (see [`convert_once`]) and return the path.
pub fn convert_smollm2_to_scratch(dtype: DType) -> PathBuf {
    let ck = GgufCheckpoint::open(&smollm2_gguf()).unwrap();
    convert_once("smollm2", dtype, &ck)
}

/// SmolLM2 with the GGUF's own tensors kept as they are (Q4_1 matrices, Q8_0 embedding:
/// exactly the weights the f32 goldens were computed with), converted once.
pub fn convert_smollm2_kept() -> PathBuf {
    let ck = GgufCheckpoint::open(&smollm2_gguf()).unwrap();
    convert_once(
        "smollm2",
        Target::Keep {
            fallback: DType::Q8_0,
        },
        &ck,
    )
}

/// Gemma 3 270M with the GGUF's own tensors kept (Q4_K, Q6_K, Q5_0, Q8_0), converted once.
pub fn convert_gemma3_kept() -> PathBuf {
    let ck = GgufCheckpoint::open(&gemma3_gguf()).unwrap();
    convert_once(
        "gemma3",
        Target::Keep {
            fallback: DType::Q8_0,
        },
        &ck,
    )
}

/// SmolLM2 at `dtype`, opened for the rest of the process.
pub fn open_smollm2(dtype: DType) -> Model {
    Model::open(&convert_smollm2_to_scratch(dtype)).unwrap()
}

/// Whether a forced kernel level is being re-checked (`tools/test.sh` sets `LLQ_TEST_QUICK`
/// for every level after the first): real-model tests then score a few windows of text
/// instead of all of it. The kernels themselves are compared with the scalar reference on
/// random data at every level (`tests/kernels.rs`); what the real model adds per level is
/// that a whole forward pass stays within the same statistical bounds.
/// `LLQ_TEST_QUICK=1` and `LLQ_TEST_QUICK=2` both mean quick; 2 is [`quickest`].
pub fn quick() -> bool {
    quick_level() >= 1
}

/// The shortest real-model checks, for the scalar level (`LLQ_TEST_QUICK=2`): its kernels
/// run ~14× slower than the SIMD ones, and they are the reference every other level is
/// compared with element by element (`tests/kernels.rs`), so on the real model the scalar
/// level only has to show that a whole forward pass through it lands in the same bounds:
/// one 256-token window for perplexity, the first prompt for KL divergence, short texts
/// for the command line.
pub fn quickest() -> bool {
    quick_level() >= 2
}

fn quick_level() -> u32 {
    match std::env::var("LLQ_TEST_QUICK").as_deref() {
        Err(std::env::VarError::NotPresent) | Ok("") | Ok("0") => 0,
        Ok("1") => 1,
        Ok("2") => 2,
        other => panic!("LLQ_TEST_QUICK={other:?}: expected unset, 0, 1 or 2"),
    }
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

pub fn argmax(v: &[f32]) -> u32 {
    llq::sample::argmax(v)
}

/// Logits of every prompt position from one batched forward pass.
pub fn all_logits(model: &Model, prompt: &[u32]) -> Vec<f32> {
    let mut st = State::new(model, prompt.len() + 64);
    model
        .forward(&mut st, prompt, Logits::All)
        .unwrap()
        .to_vec()
}

/// Greedy continuation through the KV cache: the prompt as one batch, then token by token.
pub fn greedy(model: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut st = State::new(model, prompt.len() + n + 1);
    let mut next = argmax(model.forward(&mut st, prompt, Logits::Last).unwrap());
    let mut out = vec![next];
    while out.len() < n {
        next = argmax(model.forward(&mut st, &[next], Logits::Last).unwrap());
        out.push(next);
    }
    out
}

pub fn log_softmax(v: &[f32]) -> Vec<f64> {
    let max = v.iter().fold(f32::NEG_INFINITY, |m, x| m.max(*x)) as f64;
    let lse = v.iter().map(|x| (*x as f64 - max).exp()).sum::<f64>().ln() + max;
    v.iter().map(|x| *x as f64 - lse).collect()
}

/// KL(P_ref || P_test) in nats.
pub fn kl_divergence(reference: &[f32], test: &[f32]) -> f64 {
    let (p, q) = (log_softmax(reference), log_softmax(test));
    p.iter().zip(&q).map(|(lp, lq)| lp.exp() * (lp - lq)).sum()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// SmolLM2-135M-Instruct's GGUF: `LLQ_SMOLLM2_GGUF`, else the cache `tools/fetch_smollm2.sh`
/// fills (`$LLQ_CACHE`, default `~/.cache/llq`). A missing model fails the test: CI fetches it.
pub fn smollm2_gguf() -> PathBuf {
    let p = match std::env::var("LLQ_SMOLLM2_GGUF") {
        Ok(p) => PathBuf::from(p),
        Err(_) => std::env::var("LLQ_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/llq"))
            .join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    assert!(
        p.is_file(),
        "{} is missing: run tools/fetch_smollm2.sh (or set LLQ_SMOLLM2_GGUF)",
        p.display()
    );
    p
}

/// Gemma 3 270M Q4_K_M's GGUF (real Q4_K, Q6_K, Q5_0 and Q8_0 tensors): `LLQ_GEMMA3_GGUF`,
/// else the cache `tools/fetch_gemma3.sh` fills (`$LLQ_CACHE`, default `~/.cache/llq`). A
/// missing model fails the test: `tools/setup.sh` fetches it (Gemma's terms keep it out of
/// the repository).
pub fn gemma3_gguf() -> PathBuf {
    let p = match std::env::var("LLQ_GEMMA3_GGUF") {
        Ok(p) => PathBuf::from(p),
        Err(_) => std::env::var("LLQ_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/llq"))
            .join("gemma3/gemma-3-270m-q4_k_m.gguf"),
    };
    assert!(
        p.is_file(),
        "{} is missing: run tools/setup.sh (or tools/fetch_gemma3.sh, or set LLQ_GEMMA3_GGUF)",
        p.display()
    );
    p
}

/// Run the `llq` binary with `args`, `stdin` piped in: (success, stdout, stderr).
pub fn llq_cli(args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_llq"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that exits before reading its input closes the pipe: not an error here.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let o = child.wait_with_output().unwrap();
    (
        o.status.success(),
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

/// SplitMix64: small, seeded, good enough for test data (the kernel tests' inputs).
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Uniform in [-1, 1).
    pub fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn i8(&mut self) -> i8 {
        self.next() as i8
    }
    pub fn bytes(&mut self, out: &mut [u8]) {
        for b in out {
            *b = self.next() as u8;
        }
    }
}

/// A safetensors file's tensors by name: (dtype, shape, bytes).
pub type Tensors = HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

/// Rewrite the safetensors file `path` after `edit` changes its tensors.
pub fn edit_safetensors(path: &Path, edit: impl FnOnce(&mut Tensors)) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut t: Tensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut t);
    let views: Vec<(String, TensorView)> = t
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// The cases of one of llama.cpp's vocab test files (`.inp` texts separated by
/// `__ggml_vocab_test__` lines, `.out` the expected ids, a line per text).
pub fn llamacpp_vocab_cases<'a>(inp: &'a str, out: &str) -> Vec<(&'a str, Vec<u32>)> {
    let mut texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    assert_eq!(texts.pop(), Some(""));
    let expected: Vec<&str> = out.lines().collect();
    assert_eq!(texts.len(), expected.len());
    let ids = |line: &str| {
        line.split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect()
    };
    texts
        .into_iter()
        .zip(expected)
        .map(|(t, l)| (t, ids(l)))
        .collect()
}
