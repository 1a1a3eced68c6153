//! Bad input to `llq convert`: one clear error line naming the file (and tensor/key), a
//! non-zero exit, and no output file left behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::tensor::Dtype;

/// A writable copy of the tiny GQA fixture.
fn checkpoint_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = common::fixtures().join("tiny-llama-gqa");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    dir
}

/// Rewrite model.safetensors after `edit` changes its tensors (name → (dtype, shape, bytes)).
fn edit_tensors(dir: &Path, edit: impl FnOnce(&mut common::Tensors)) {
    common::edit_safetensors(&dir.join("model.safetensors"), edit)
}

/// Run `llq convert` and return (success, stderr); assert no output file remains on failure.
fn convert(input: &Path, out: &Path) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_llq"))
        .args([
            "convert",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--type",
            "q8_0",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    if !o.status.success() {
        assert!(!out.exists(), "failed conversion left {}", out.display());
        if let Some(dir) = out.parent().filter(|d| d.is_dir()) {
            let leftovers: Vec<PathBuf> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().ends_with(".tmp"))
                .collect();
            assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
        }
    }
    (o.status.success(), stderr)
}

/// The conversion must fail with exactly one line on stderr containing every `needle`.
fn expect_error(input: &Path, needles: &[&str]) {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("out.llq");
    let (ok, stderr) = convert(input, &out);
    assert!(!ok, "conversion unexpectedly succeeded");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}: {stderr}");
    }
    eprintln!("ok: {}", stderr.trim_end());
}

#[test]
fn the_copy_converts() {
    let dir = checkpoint_copy();
    let out_dir = tempfile::tempdir().unwrap();
    let (ok, stderr) = convert(dir.path(), &out_dir.path().join("m.llq"));
    assert!(ok, "{stderr}");
}

#[test]
fn missing_config() {
    let dir = checkpoint_copy();
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    expect_error(
        dir.path(),
        &[
            "cannot convert this directory: it has no config.json",
            "Hugging Face",
        ],
    );
}

#[test]
fn malformed_config_json() {
    let dir = checkpoint_copy();
    std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": 64,").unwrap();
    expect_error(dir.path(), &["config.json", "malformed JSON"]);
}

/// A config declaring more layers than any model has is refused from config.json alone,
/// before anything is built per layer (the GGUF and `.llq` readers share the check:
/// `gguf_hostile::absurd_layer_counts_are_refused_before_anything_per_layer`).
#[test]
fn absurd_layer_count() {
    let dir = checkpoint_copy();
    let p = dir.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    cfg["num_hidden_layers"] = serde_json::json!(16_777_215);
    std::fs::write(&p, cfg.to_string()).unwrap();
    expect_error(
        dir.path(),
        &[
            "config.json",
            "layer count = 16777215 is out of range (at most 4096)",
        ],
    );
}

#[test]
fn unsupported_architecture() {
    let dir = checkpoint_copy();
    let p = dir.path().join("config.json");
    let s = std::fs::read_to_string(&p)
        .unwrap()
        .replace("LlamaForCausalLM", "GPT2LMHeadModel");
    std::fs::write(&p, s).unwrap();
    expect_error(
        dir.path(),
        &["config.json", "GPT2LMHeadModel", "not supported"],
    );
}

#[test]
fn missing_tensor() {
    let dir = checkpoint_copy();
    edit_tensors(dir.path(), |t| {
        t.remove("model.layers.1.mlp.up_proj.weight");
    });
    expect_error(
        dir.path(),
        &[
            "model.safetensors",
            "model.layers.1.mlp.up_proj.weight",
            "missing",
        ],
    );
}

#[test]
fn extra_tensor() {
    let dir = checkpoint_copy();
    edit_tensors(dir.path(), |t| {
        t.insert(
            "model.layers.0.mlp.extra.weight".into(),
            (Dtype::F32, vec![2], vec![0; 8]),
        );
    });
    expect_error(
        dir.path(),
        &["model.safetensors", "model.layers.0.mlp.extra.weight"],
    );
}

#[test]
fn extra_layer() {
    let dir = checkpoint_copy();
    edit_tensors(dir.path(), |t| {
        t.insert(
            "model.layers.7.input_layernorm.weight".into(),
            (Dtype::F32, vec![64], vec![0; 256]),
        );
    });
    expect_error(
        dir.path(),
        &["model.safetensors", "model.layers.7.input_layernorm.weight"],
    );
}

#[test]
fn wrong_shape() {
    let dir = checkpoint_copy();
    edit_tensors(dir.path(), |t| {
        let e = t.get_mut("model.layers.0.self_attn.k_proj.weight").unwrap();
        e.1 = vec![64, 32];
        e.2.truncate(64 * 32 * 4);
    });
    expect_error(
        dir.path(),
        &[
            "model.safetensors",
            "model.layers.0.self_attn.k_proj.weight",
            "shape",
        ],
    );
}

#[test]
fn unsupported_dtype() {
    let dir = checkpoint_copy();
    edit_tensors(dir.path(), |t| {
        let e = t.get_mut("model.norm.weight").unwrap();
        e.0 = Dtype::I32;
    });
    expect_error(
        dir.path(),
        &["model.safetensors", "model.norm.weight", "I32"],
    );
}

#[test]
fn truncated_safetensors() {
    let dir = checkpoint_copy();
    let p = dir.path().join("model.safetensors");
    let len = std::fs::metadata(&p).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(len - 100).unwrap();
    expect_error(dir.path(), &["model.safetensors", "truncated"]);
}

#[test]
fn header_length_beyond_file() {
    let dir = checkpoint_copy();
    let p = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    let huge = bytes.len() as u64 * 2;
    bytes[..8].copy_from_slice(&huge.to_le_bytes());
    std::fs::write(&p, bytes).unwrap();
    expect_error(dir.path(), &["model.safetensors", "header"]);
}

#[test]
fn malformed_safetensors_header() {
    let dir = checkpoint_copy();
    let p = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[8] = b'[';
    std::fs::write(&p, bytes).unwrap();
    expect_error(dir.path(), &["model.safetensors", "JSON"]);
}

#[test]
fn missing_shard() {
    let dir = tempfile::tempdir().unwrap();
    let src = common::fixtures().join("tiny-llama-tied-bf16-sharded");
    for f in [
        "config.json",
        "model.safetensors.index.json",
        "model-00001-of-00003.safetensors",
    ] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    expect_error(dir.path(), &["model-00002-of-00003.safetensors"]);
}

#[test]
fn output_not_writable() {
    let dir = checkpoint_copy();
    let parent_is_file = dir.path().join("config.json").join("out.llq");
    let (ok, stderr) = convert(dir.path(), &parent_is_file);
    assert!(!ok);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("out.llq"), "{stderr}");
}

#[test]
fn malformed_tokenizer_json() {
    let dir = checkpoint_copy();
    std::fs::write(
        dir.path().join("tokenizer.json"),
        "{\"model\": {\"type\": \"BPE\"",
    )
    .unwrap();
    expect_error(dir.path(), &["tokenizer.json"]);
}

#[test]
fn malformed_tokenizer_model() {
    let dir = checkpoint_copy();
    std::fs::write(
        dir.path().join("tokenizer.model"),
        [0x0a, 0xff, 0xff, 0xff, 0x0f, 1, 2],
    )
    .unwrap();
    expect_error(dir.path(), &["tokenizer.model"]);
}

#[test]
fn empty_weight_map() {
    let dir = tempfile::tempdir().unwrap();
    let src = common::fixtures().join("tiny-llama-tied-bf16-sharded");
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        r#"{"weight_map": {}}"#,
    )
    .unwrap();
    expect_error(dir.path(), &["model.safetensors.index.json", "weight_map"]);
}

#[test]
fn non_finite_weights() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let dir = checkpoint_copy();
        edit_tensors(dir.path(), |t| {
            let (_, _, bytes) = t.get_mut("model.layers.1.mlp.down_proj.weight").unwrap();
            bytes[40..44].copy_from_slice(&bad.to_le_bytes());
        });
        expect_error(
            dir.path(),
            &["blk.1.ffn_down.weight", "non-finite", "element 10"],
        );
    }
}

/// A temporary file left by a killed conversion (its process is gone) is removed by the
/// next conversion into that folder; one of a live process is left alone.
#[test]
fn stale_temporaries_of_dead_runs_are_removed() {
    let dir = checkpoint_copy();
    let out_dir = tempfile::tempdir().unwrap();
    // A pid above the kernel's limit (pid_max is at most 2^22) belongs to no process.
    let dead = out_dir.path().join(".llq-9999999-abc123.tmp");
    let live = out_dir
        .path()
        .join(format!(".llq-{}-abc123.tmp", std::process::id()));
    let other = out_dir.path().join("notes.tmp");
    for p in [&dead, &live, &other] {
        std::fs::write(p, b"partial").unwrap();
    }
    let out = out_dir.path().join("m.llq");
    let o = Command::new(env!("CARGO_BIN_EXE_llq"))
        .args([
            "convert",
            dir.path().to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!dead.exists(), "the dead run's temporary is still there");
    assert!(live.exists() && other.exists());
}

/// A full disk (here: a file-size limit, which fails writes the same way) is a one-line
/// error naming the output, and leaves neither the output nor a temporary file.
#[test]
fn disk_full_during_convert_leaves_nothing() {
    use std::os::unix::process::CommandExt;
    let dir = checkpoint_copy();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("m.llq");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llq"));
    cmd.args([
        "convert",
        dir.path().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        "f32",
    ]);
    // SAFETY: only async-signal-safe calls between fork and exec: ignore SIGXFSZ (so the
    // write fails with EFBIG instead of killing the process) and cap the file size.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: 100_000,
                rlim_max: 100_000,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("m.llq") && err.contains("too large"), "{err}");
    let left: Vec<_> = std::fs::read_dir(out_dir.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `llq convert` replaces a model by renaming a finished file over it, so a process that
/// has the old file mapped keeps reading the old, complete data (its inode lives until
/// unmapped) and gets the same results as before the replacement. (Overwriting a mapped
/// file in place, with `cp` or `truncate`, is what can fault a running process: see
/// docs/RELIABILITY.md.)
#[test]
fn converting_over_a_mapped_model_is_safe_for_its_readers() {
    let dir = checkpoint_copy();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("m.llq");
    let ck = llq::convert::HfCheckpoint::open(dir.path()).unwrap();
    llq::convert::convert(&ck, llq::quant::DType::F32, &out, &llq::convert::Silent).unwrap();
    let model = llq::model::Model::open(&out).unwrap();
    let before = common::greedy(&model, &[1, 5, 9], 8);
    llq::convert::convert(&ck, llq::quant::DType::Q4_0, &out, &llq::convert::Silent).unwrap();
    assert_eq!(common::greedy(&model, &[1, 5, 9], 8), before);
    let replaced = llq::model::Model::open(&out).unwrap();
    assert_eq!(replaced.layers[0].wq.kind.dtype(), llq::quant::DType::Q4_0);
}
