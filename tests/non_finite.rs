//! A `.llq` whose weight bytes were changed after conversion (a NaN or an infinity where
//! `convert` wrote finite weights; the data checksum is only read by `llq info`) must not
//! print garbage: evaluation stops with an error naming the likely cause, through the Rust
//! API, the C API (a status code, no panic across the ABI) and the command line (exit 1,
//! one line).

mod common;

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr::null_mut;

use common::*;
use llq::error::Error;
use llq::ffi::*;
use llq::format::LlqFile;
use llq::generate::{GenerateParams, Session};
use llq::model::Model;
use llq::quant::DType;
use llq::sample::SamplerParams;

const PROMPT: [u32; 5] = [1, 5, 9, 33, 2];

/// Damage found when the model is opened: a non-finite value in a norm vector (f32),
/// which the next matmul's activation quantization would otherwise hide.
const AT_OPEN: [(&str, usize, &[u8]); 2] = [
    ("output_norm.weight", 0, &f32::NAN.to_le_bytes()),
    ("blk.0.ffn_norm.weight", 4, &f32::INFINITY.to_le_bytes()),
];

/// Damage found by the forward pass on the prompt: an f16 weight, the first bytes of
/// q8_0 matrices (tensor, byte offset in it, bytes written).
const IN_PROMPT: [(&str, usize, &[u8]); 3] = [
    ("blk.0.ffn_down.weight", 0, &[0x00, 0x7e]), // f16 NaN
    ("output.weight", 0, &[0x00, 0x7e]),
    ("blk.0.attn_output.weight", 0, &[0x00, 0x7c]), // the "0 0 0 0" case of issue #14
];

fn tiny(dtype: DType) -> PathBuf {
    convert_fixture_to_scratch("tiny-llama-gqa", dtype)
}

/// A copy of the tiny model with `bytes` written at `offset` into tensor `name`.
fn damaged(dir: &Path, dtype: DType, name: &str, offset: usize, bytes: &[u8]) -> PathBuf {
    let src = tiny(dtype);
    let at = {
        let f = LlqFile::open(&src).unwrap();
        let t = f.tensor(name).unwrap();
        assert!(offset + bytes.len() <= t.n_bytes);
        t.offset + offset
    };
    let mut data = std::fs::read(&src).unwrap();
    data[at..at + bytes.len()].copy_from_slice(bytes);
    let out = dir.join(format!("{name}-{offset}-{}.llq", dtype.name()));
    std::fs::write(&out, data).unwrap();
    out
}

/// The f32 model with the embedding of the first token that greedy decoding generates
/// after PROMPT set to NaN: the prompt evaluates, the first generated token does not.
fn damaged_at_generation(dir: &Path) -> (PathBuf, u32) {
    let model = Model::open(&tiny(DType::F32)).unwrap();
    let first = greedy(&model, &PROMPT, 1)[0];
    assert!(!PROMPT.contains(&first));
    let dim = model.config.dim;
    let path = damaged(
        dir,
        DType::F32,
        "token_embd.weight",
        first as usize * dim * 4,
        &f32::NAN.to_le_bytes(),
    );
    (path, first)
}

fn greedy_params() -> SamplerParams {
    SamplerParams {
        temp: 0.0,
        ..SamplerParams::default()
    }
}

/// `computed`: found by the forward pass (else by the open-time check of a vector).
fn assert_names_the_cause(msg: &str, path: &Path, computed: bool) {
    if computed {
        assert!(msg.contains("non-finite values"), "{msg}");
    } else {
        assert!(
            msg.contains("holds NaN") || msg.contains("holds inf"),
            "{msg}"
        );
    }
    assert!(msg.contains("corrupted"), "{msg}");
    assert!(
        msg.contains(&format!("llq info {}", path.display())),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");
}

#[test]
fn intact_models_generate() {
    for dtype in [DType::Q8_0, DType::F32] {
        let model = Model::open(&tiny(dtype)).unwrap();
        let mut s = Session::new(&model, 64, greedy_params());
        s.set_prompt(&PROMPT).unwrap();
        assert!(s.logits().iter().all(|x| x.is_finite()));
        let params = GenerateParams {
            max_tokens: 8,
            stop_at_eog: false,
            ..GenerateParams::default()
        };
        assert_eq!(s.generate(&params, |_| true).unwrap().n_tokens, 8);
    }
}

#[test]
fn rust_api_refuses_or_stops_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for (name, offset, bytes) in AT_OPEN {
        let path = damaged(dir.path(), DType::Q8_0, name, offset, bytes);
        let e = Model::open(&path)
            .err()
            .expect("opened a model with a NaN norm");
        let msg = e.to_string();
        assert!(matches!(e, Error::Invalid { .. }), "{name}: {e:?}");
        assert!(msg.contains(name), "{msg}");
        assert_names_the_cause(&msg, &path, false);
    }
    for (name, offset, bytes) in IN_PROMPT {
        let path = damaged(dir.path(), DType::Q8_0, name, offset, bytes);
        let model = Model::open(&path).unwrap();
        let mut s = Session::new(&model, 64, greedy_params());
        let e = s.set_prompt(&PROMPT).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{name}: {e:?}");
        assert_names_the_cause(&e.to_string(), &path, true);
        // The bad logits are gone: nothing samples from them.
        assert!(s.logits().is_empty(), "{name}");
        let g = s.generate(&GenerateParams::default(), |_| true);
        assert!(g.is_err(), "{name}: generated from non-finite logits");
    }
    // In the generation loop: the first token is reported, evaluating it fails.
    let (path, first) = damaged_at_generation(dir.path());
    let model = Model::open(&path).unwrap();
    let mut s = Session::new(&model, 64, greedy_params());
    s.set_prompt(&PROMPT).unwrap();
    let mut got = Vec::new();
    let params = GenerateParams {
        max_tokens: 8,
        stop_at_eog: false,
        ..GenerateParams::default()
    };
    let e = s
        .generate(&params, |p| {
            got.extend(p.token);
            true
        })
        .unwrap_err();
    assert_eq!(got, [first]);
    assert_names_the_cause(&e.to_string(), &path, true);
    assert!(s.logits().is_empty());
}

fn last_error() -> String {
    // SAFETY: llq_last_error never returns NULL and the string is NUL-terminated.
    unsafe { CStr::from_ptr(llq_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Open `path` through the C API: the status and the model (null on failure).
fn c_open(path: &Path) -> (llq_status, *mut llq_model) {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    let mut m = null_mut();
    // SAFETY: valid C string and out-pointer.
    let st = unsafe { llq_model_open(c.as_ptr(), llq_model_default_params(), &mut m) };
    (st, m)
}

fn c_greedy_ctx(m: *mut llq_model) -> *mut llq_context {
    let mut p = llq_context_default_params();
    p.temp = 0.0;
    p.n_ctx = 64;
    let mut ctx = null_mut();
    // SAFETY: live model, valid out-pointer.
    assert_eq!(unsafe { llq_context_new(m, p, &mut ctx) }, LLQ_OK);
    ctx
}

#[test]
fn c_api_returns_a_model_error() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<llq_token> = PROMPT.iter().map(|&t| t as llq_token).collect();
    for (name, offset, bytes) in AT_OPEN {
        let path = damaged(dir.path(), DType::Q8_0, name, offset, bytes);
        let (st, m) = c_open(&path);
        assert_eq!(st, LLQ_ERR_MODEL, "{name}");
        assert!(m.is_null());
        assert_names_the_cause(&last_error(), &path, false);
    }
    for (name, offset, bytes) in IN_PROMPT {
        let path = damaged(dir.path(), DType::Q8_0, name, offset, bytes);
        let (st, m) = c_open(&path);
        assert_eq!(st, LLQ_OK, "{name}: {}", last_error());
        let ctx = c_greedy_ctx(m);
        // SAFETY: live handles, valid buffers; every handle is freed below.
        unsafe {
            assert_eq!(
                llq_eval(ctx, ids.as_ptr(), ids.len()),
                LLQ_ERR_MODEL,
                "{name}"
            );
            assert_names_the_cause(&last_error(), &path, true);
            // Nothing to sample from, and the context stays usable for the caller to free.
            let mut t = 0;
            assert_ne!(llq_sample(ctx, &mut t), LLQ_OK, "{name}");
            assert_eq!(llq_context_free(ctx), LLQ_OK);
            assert_eq!(llq_model_free(m), LLQ_OK);
        }
    }
    // llq_generate on a context whose prompt evaluates: the error comes from the loop.
    let (path, _) = damaged_at_generation(dir.path());
    let (st, m) = c_open(&path);
    assert_eq!(st, LLQ_OK);
    let ctx = c_greedy_ctx(m);
    // SAFETY: as above.
    unsafe {
        assert_eq!(llq_eval(ctx, ids.as_ptr(), ids.len()), LLQ_OK);
        let mut res = std::mem::zeroed();
        let mut gp = llq_generate_default_params();
        gp.max_tokens = 8;
        let st = llq_generate(ctx, std::ptr::null(), gp, None, null_mut(), &mut res);
        assert_eq!(st, LLQ_ERR_MODEL);
        assert_names_the_cause(&last_error(), &path, true);
        assert_eq!(llq_context_free(ctx), LLQ_OK);
        assert_eq!(llq_model_free(m), LLQ_OK);
    }
}

/// `llq run` on `path`: (exit code, stdout, the stderr lines that say "error").
fn cli_run(path: &Path) -> (Option<i32>, String, Vec<String>) {
    let o = Command::new(env!("CARGO_BIN_EXE_llq"))
        .args(["run", "-m", path.to_str().unwrap()])
        .args([
            "--prompt-ids",
            "1,5,9,33,2",
            "-n",
            "8",
            "--temp",
            "0",
            "-c",
            "64",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8(o.stderr).unwrap();
    let lines = err
        .lines()
        .filter(|l| l.contains("error"))
        .map(String::from)
        .collect();
    (o.status.code(), String::from_utf8(o.stdout).unwrap(), lines)
}

#[test]
fn cli_exits_1_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (name, offset, bytes) = AT_OPEN[0];
    let at_open = damaged(dir.path(), DType::Q8_0, name, offset, bytes);
    let (name, offset, bytes) = IN_PROMPT[2];
    let in_prompt = damaged(dir.path(), DType::Q8_0, name, offset, bytes);
    let (in_loop, first) = damaged_at_generation(dir.path());
    for (path, computed, out) in [
        (&at_open, false, String::new()),
        (&in_prompt, true, String::new()),
        (&in_loop, true, first.to_string()),
    ] {
        let (code, stdout, lines) = cli_run(path);
        assert_eq!(code, Some(1), "{lines:?}");
        assert_eq!(stdout.trim(), out, "only the tokens before the damage");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_names_the_cause(&lines[0], path, computed);
        // The command the message suggests finds the damage.
        let (ok, out, _) = llq_cli(&["info", path.to_str().unwrap()], "");
        assert!(!ok && out.contains("data checksum: MISMATCH"), "{out}");
    }
    let intact = tiny(DType::Q8_0);
    let (code, stdout, lines) = cli_run(&intact);
    assert_eq!((code, lines.len()), (Some(0), 0), "{lines:?}");
    assert_eq!(stdout.split_whitespace().count(), 8);
    let (ok, out, _) = llq_cli(&["info", intact.to_str().unwrap()], "");
    assert!(ok && out.contains("data checksum: ok"), "{out}");
}
