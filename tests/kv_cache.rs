//! The ring-buffer KV cache (`llq::kv`): bounded memory under the `shift` policy, exact
//! batched eviction, cache types, saved prompts, and streaming perplexity on SmolLM2.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use common::*;
use llq::convert::{convert, Silent};
use llq::generate::{GenerateParams, Session, StopReason};
use llq::kv::{CacheType, ContextPolicy, KvConfig};
use llq::model::{Logits, Model, State};
use llq::quant::DType;
use llq::sample::SamplerParams;

fn greedy_params() -> SamplerParams {
    SamplerParams {
        temp: 0.0,
        repeat_penalty: 1.0,
        ..Default::default()
    }
}

fn shift(cache_type: CacheType, keep: usize) -> KvConfig {
    KvConfig {
        cache_type,
        policy: ContextPolicy::Shift,
        keep,
    }
}

fn tiny_prompt() -> Vec<u32> {
    let exp = read_json(&fixtures().join("tiny-llama-gqa/expected.json"));
    ids(&exp["cases"][1]["prompt_ids"])
}

/// Sample and feed one token at a time (what `Session::generate` does), calling `check`
/// after each step.
fn generate_stepwise(s: &mut Session, n: usize, mut check: impl FnMut(&Session)) -> Vec<u32> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = s.sample().unwrap();
        out.push(t);
        s.feed(&[t]).unwrap();
        check(s);
    }
    out
}

#[test]
fn shift_generates_4x_n_ctx_in_constant_memory() {
    const N_CTX: usize = 64;
    let (_dir, model) = convert_fixture("tiny-llama-gqa", DType::F32);
    let prompt = tiny_prompt();
    for ct in [CacheType::F32, CacheType::F16] {
        let mut ring = Session::with_config(&model, N_CTX, greedy_params(), shift(ct, 4)).unwrap();
        ring.set_prompt(&prompt).unwrap();
        let bytes = ring.kv_cache_bytes();
        let addrs = ring.state().cache().buffer_addresses();
        let elem = if ct == CacheType::F32 { 4 } else { 2 };
        // K and V of 2 layers × 64 positions × kv_dim 32, plus the side buffer for the
        // slots one batch may evict (min(256, 64 - 4) = 60 positions).
        assert_eq!(bytes, elem * 2 * 32 * (2 * N_CTX + 60), "{ct:?}");
        let got = generate_stepwise(&mut ring, 4 * N_CTX, |s| {
            assert_eq!(s.kv_cache_bytes(), bytes, "cache bytes changed");
            assert_eq!(
                s.state().cache().buffer_addresses(),
                addrs,
                "a cache buffer was reallocated"
            );
            assert!(s.tokens().len() <= N_CTX);
        });
        assert_eq!(got.len(), 4 * N_CTX);
        assert_eq!(ring.state().pos(), prompt.len() + 4 * N_CTX);
        assert!(ring.state().cache().wrapped());

        let cfg = KvConfig {
            cache_type: ct,
            ..KvConfig::default()
        };
        let mut unbounded = Session::with_config(&model, 1024, greedy_params(), cfg).unwrap();
        unbounded.set_prompt(&prompt).unwrap();
        let want = generate_stepwise(&mut unbounded, 4 * N_CTX, |_| {});
        // Ids sampled from logits computed before the first overwrite: the prompt plus
        // k generated tokens fill k + prompt.len() ≤ N_CTX positions.
        let same = N_CTX - prompt.len() + 1;
        assert_eq!(
            got[..same],
            want[..same],
            "{ct:?}: ids before the first wrap"
        );
        let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        eprintln!(
            "{ct:?}: {} ids generated in a {N_CTX}-position ring, {bytes} cache bytes constant; first {same} equal the unbounded run, {differ} of {} differ overall",
            got.len(),
            got.len()
        );

        // The Session's own loop goes on past n_ctx as well.
        let mut s = Session::with_config(&model, N_CTX, greedy_params(), shift(ct, 4)).unwrap();
        s.set_prompt(&prompt).unwrap();
        let params = GenerateParams {
            max_tokens: 3 * N_CTX,
            stop_at_eog: false,
            ..GenerateParams::default()
        };
        let done = s.generate(&params, |_| true).unwrap();
        assert_eq!(done.n_tokens, 3 * N_CTX);
        assert_eq!(done.stop, StopReason::MaxTokens);
        // After a wrap a new prompt is evaluated from scratch (no stale prefix reuse).
        let before = s.evaluated();
        s.set_prompt(&prompt).unwrap();
        assert_eq!(s.evaluated() - before, prompt.len());
        assert_eq!(s.tokens(), &prompt[..]);
        let mut fresh = Session::with_config(&model, N_CTX, greedy_params(), shift(ct, 4)).unwrap();
        fresh.set_prompt(&prompt).unwrap();
        assert_eq!(s.logits(), fresh.logits());
    }
}

/// A stream evaluated in batches that overwrite slots gives the same logits as token by
/// token: each query reads the slots later tokens of its batch evicted from the side
/// buffer.
#[test]
fn batched_eviction_matches_token_by_token() {
    let (_dir, model) = convert_fixture("tiny-llama-gqa", DType::F32);
    let vocab = model.config.vocab_size;
    let stream: Vec<u32> = (0..200u32).map(|i| (i * 37 + 11) % vocab as u32).collect();
    for (ct, keep) in [
        (CacheType::F32, 4),
        (CacheType::F16, 0),
        (CacheType::F32, 9),
    ] {
        let mut one = State::with_config(&model, 48, shift(ct, keep)).unwrap();
        let mut reference = Vec::new();
        for &t in &stream {
            reference.extend_from_slice(model.forward(&mut one, &[t], Logits::Last).unwrap());
        }
        for batch in [7, 16, 48 - keep] {
            let mut st = State::with_config(&model, 48, shift(ct, keep)).unwrap();
            let mut got = Vec::new();
            for c in stream.chunks(batch) {
                got.extend_from_slice(model.forward(&mut st, c, Logits::All).unwrap());
            }
            let d = max_abs_diff(&got, &reference);
            assert!(
                d < 1e-4,
                "{ct:?} keep {keep} batch {batch}: max |Δlogit| {d}"
            );
        }
    }
}

#[test]
fn bad_cache_configs_are_errors() {
    let (_dir, model) = convert_fixture("tiny-llama-gqa", DType::F32);
    // head_dim 16 cannot hold whole Q8_0 blocks.
    assert!(State::with_config(&model, 64, shift(CacheType::Q8_0, 4)).is_err());
    assert!(State::with_config(&model, 64, shift(CacheType::F16, 64)).is_err());
    // stop refuses to go past the context.
    let mut st = State::with_config(&model, 8, KvConfig::default()).unwrap();
    model.forward(&mut st, &[1; 8], Logits::Last).unwrap();
    assert!(model.forward(&mut st, &[1], Logits::Last).is_err());
}

// ---- Saved prompts ----

/// A cache larger than the machine's memory is an error that says what would fit, and
/// sizes whose product overflows are refused before anything is allocated.
#[test]
fn kv_cache_larger_than_memory_is_an_error() {
    use llq::kv::KvCache;
    let cfg = KvConfig::default();
    let err = |r: llq::Result<KvCache>| r.err().expect("an error").to_string();
    let e = err(KvCache::new(4096, 64, 128, 1 << 20, cfg));
    assert!(
        e.contains("more than this machine's") && e.contains("would fit"),
        "{e}"
    );
    let e = err(KvCache::new(usize::MAX / 4, 64, 128, 1 << 20, cfg));
    assert!(e.contains("overflow") || e.contains("more than"), "{e}");
}

fn greedy_after(s: &mut Session, prompt: &[u32], n: usize) -> Vec<u32> {
    s.set_prompt(prompt).unwrap();
    let mut out = Vec::new();
    let params = GenerateParams {
        max_tokens: n,
        stop_at_eog: false,
        ..GenerateParams::default()
    };
    s.generate(&params, |p| {
        out.extend(p.token);
        true
    })
    .unwrap();
    out
}

#[test]
fn prompt_cache_skips_the_saved_prefix() {
    let (_dir, model) = convert_fixture("tiny-llama-gqa", DType::F32);
    let (_dir2, other) = convert_fixture("tiny-llama-tied-bf16-sharded", DType::F32);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prompt.cache");
    let prompt = tiny_prompt();
    let mut longer = prompt.clone();
    longer.extend_from_slice(&[5, 6, 7, 8, 9]);
    for ct in [CacheType::F32, CacheType::F16] {
        let cfg = shift(ct, 4);
        let new = || Session::with_config(&model, 256, greedy_params(), cfg).unwrap();
        let reference = greedy_after(&mut new(), &prompt, 16);
        let reference_longer = greedy_after(&mut new(), &longer, 16);

        let mut first = new();
        first.set_prompt(&prompt).unwrap();
        first.save_prompt_cache(&path).unwrap();
        assert_eq!(first.evaluated(), prompt.len());

        // Same prompt: nothing is evaluated, the output is the same.
        let mut s = new();
        assert_eq!(s.load_prompt_cache(&path, &prompt).unwrap(), prompt.len());
        let got = greedy_after(&mut s, &prompt, 16);
        assert_eq!(got, reference, "{ct:?}");
        assert_eq!(
            s.evaluated(),
            16,
            "only the generated tokens are evaluated (each is kept)"
        );

        // A prompt that extends it: only the new tokens are evaluated.
        let mut s = new();
        assert_eq!(s.load_prompt_cache(&path, &longer).unwrap(), prompt.len());
        s.set_prompt(&longer).unwrap();
        assert_eq!(s.evaluated(), longer.len() - prompt.len());
        let mut s2 = new();
        s2.load_prompt_cache(&path, &longer).unwrap();
        assert_eq!(greedy_after(&mut s2, &longer, 16), reference_longer);

        // A prompt that diverges inside it: the common part is reused.
        let mut cut = prompt[..prompt.len() - 2].to_vec();
        cut.push(if prompt[prompt.len() - 2] == 3 { 4 } else { 3 });
        let mut s = new();
        assert_eq!(s.load_prompt_cache(&path, &cut).unwrap(), prompt.len() - 2);
        let got = greedy_after(&mut s, &cut, 16);
        assert_eq!(got, greedy_after(&mut new(), &cut, 16));

        // Unusable files: an error to warn about, and the session evaluates normally.
        let good = std::fs::read(&path).unwrap();
        let mut corrupt = good.clone();
        let mid = corrupt.len() / 2;
        corrupt[mid] ^= 0x40;
        let other_path = dir.path().join("other.cache");
        let mut o = Session::with_config(&other, 256, greedy_params(), cfg).unwrap();
        o.set_prompt(&prompt).unwrap();
        o.save_prompt_cache(&other_path).unwrap();
        let other_model = std::fs::read(&other_path).unwrap();
        let other_type = {
            let t = if ct == CacheType::F32 {
                CacheType::F16
            } else {
                CacheType::F32
            };
            let p = dir.path().join("type.cache");
            let mut s = Session::with_config(&model, 256, greedy_params(), shift(t, 4)).unwrap();
            s.set_prompt(&prompt).unwrap();
            s.save_prompt_cache(&p).unwrap();
            std::fs::read(&p).unwrap()
        };
        let cases: [(&str, Vec<u8>, &str); 5] = [
            ("corrupt", corrupt, "checksum"),
            ("truncated", good[..good.len() - 100].to_vec(), "checksum"),
            ("empty", Vec::new(), "not an llq prompt cache"),
            ("other model", other_model, "different model"),
            ("other cache type", other_type, "cache"),
        ];
        for (what, bytes, msg) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let mut s = new();
            let e = s.load_prompt_cache(&path, &prompt).unwrap_err().to_string();
            assert!(e.contains(msg), "{what}: {e}");
            assert_eq!(greedy_after(&mut s, &prompt, 16), reference, "{what}");
            assert_eq!(s.evaluated(), prompt.len() + 16, "{what}");
        }
        std::fs::write(&path, &good).unwrap();
        let mut s = new();
        assert!(
            s.load_prompt_cache(&path, &[7, 7, 7]).is_err(),
            "no common prefix"
        );
    }
}

fn llq(args: &[&str]) -> (String, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_llq"))
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(o.status.success(), "{err}");
    (String::from_utf8(o.stdout).unwrap(), err)
}

#[test]
fn cli_prompt_cache_saves_loads_and_ignores_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.llq");
    let src = fixtures().join("tiny-llama-gqa");
    let ck = llq::convert::HfCheckpoint::open(&src).unwrap();
    convert(&ck, DType::F32, &m, &Silent).unwrap();
    let pc = dir.path().join("p.cache");
    let prompt: Vec<String> = tiny_prompt().iter().map(|t| t.to_string()).collect();
    let prompt = prompt.join(",");
    let run = |cache: Option<&Path>| {
        let mut a = vec![
            "run",
            "-m",
            m.to_str().unwrap(),
            "--prompt-ids",
            &prompt,
            "-n",
            "12",
            "--temp",
            "0",
            "--verbose",
        ];
        if let Some(c) = cache {
            a.extend(["--prompt-cache", c.to_str().unwrap()]);
        }
        llq(&a)
    };
    let (plain, _) = run(None);
    let (first, err) = run(Some(&pc));
    assert_eq!(first, plain);
    assert!(err.contains("0 tokens reused"), "{err}");
    assert!(pc.is_file());
    let (second, err) = run(Some(&pc));
    assert_eq!(second, plain);
    assert!(err.contains(" reused, 0 evaluated"), "{err}");
    let mut bytes = std::fs::read(&pc).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&pc, &bytes).unwrap();
    let (third, err) = run(Some(&pc));
    assert_eq!(third, plain);
    assert!(err.contains("warning: ignoring prompt cache"), "{err}");
    // The bad file was replaced by a good one.
    let (_, err) = run(Some(&pc));
    assert!(err.contains(" reused, 0 evaluated"), "{err}");

    // Anything that is not a prompt cache is never overwritten: the model itself, a text,
    // a directory.
    let model_bytes = std::fs::read(&m).unwrap();
    let (out, err) = run(Some(&m));
    assert_eq!(out, plain);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(
        std::fs::read(&m).unwrap(),
        model_bytes,
        "the model was overwritten"
    );
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "my notes\n").unwrap();
    let (_, err) = run(Some(&text));
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read_to_string(&text).unwrap(), "my notes\n");
    let (_, err) = run(Some(dir.path()));
    assert!(err.contains("warning"), "{err}");
    assert!(dir.path().is_dir());
}

// ---- SmolLM2 ----

fn smollm2() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| common::open_smollm2(DType::F32))
}

/// Streaming perplexity with a 256-position ring and 4 sinks vs the windowed protocol
/// (independent 256-token windows from an empty cache, golden 18.9206).
///
/// In a window, token i is predicted from only i previous tokens (the first ones from
/// almost none), while in the stream every token after the first 256 sees 252 previous
/// tokens plus the sinks, so streaming is *lower*: measured 14.79 (2026-11-29, f32 cache).
/// A broken ring (wrong RoPE distances, lost sinks, reading overwritten slots) makes it
/// higher, so the test bounds it from above by the windowed PPL + 10%, and compares it
/// with the golden's matched-context variant (`llamacpp_protocol`: the same windows
/// scoring only positions ≥ 128, i.e. tokens with 128..255 tokens of context, PPL
/// 15.554): within 10%.
#[test]
fn smollm2_streaming_perplexity_is_close_to_windowed() {
    let p = read_json(&fixtures().join("smollm2/perplexity.json"));
    let mut tokens = ids(&p["token_ids"]);
    let mut windowed = p["ppl"].as_f64().unwrap();
    let matched = p["llamacpp_protocol"]["ppl"].as_f64().unwrap();
    if common::quick() {
        // A forced kernel level: the first 3 windows' worth of text (the ring wraps twice),
        // 2 at the scalar level (`quickest`: the ring wraps once, and 252 more tokens
        // stream through it), bounded by the windowed PPL of the same windows. The
        // matched-context golden exists for the whole text only, so it is checked at the
        // default level.
        let n = if common::quickest() { 2 } else { 3 };
        let per_window: Vec<f64> = p["per_window_mean_nll"].as_array().unwrap()[..n]
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        windowed = (per_window.iter().sum::<f64>() / n as f64).exp();
        tokens.truncate(n * 256);
    }
    let cfg = shift(CacheType::F32, 4);
    let r = llq::perplexity::perplexity_streaming(smollm2(), &tokens, 256, cfg, 64, |_, _, _| {})
        .unwrap();
    assert_eq!(r.n_scored, tokens.len() - 1);
    let rel = (r.ppl - matched).abs() / matched;
    eprintln!(
        "SmolLM2 streaming PPL (ring 256, keep 4, f32 cache) {:.4} over {} tokens; windowed {windowed:.4} (ratio {:.3}); windowed scoring positions >= 128 {matched:.4} (rel. diff {rel:.3})",
        r.ppl,
        r.n_scored,
        r.ppl / windowed
    );
    assert!(
        r.ppl <= windowed * 1.10,
        "streaming PPL {} vs windowed {windowed}",
        r.ppl
    );
    assert!(
        common::quick() || rel < 0.10,
        "streaming PPL {} vs matched-context windowed {matched}",
        r.ppl
    );
}

/// f16 and q8_0 caches vs the f32 cache on the goldens' prompts + greedy continuations,
/// every position. Bounds: see the constants.
#[test]
fn smollm2_cache_types_stay_close_to_f32() {
    let m = smollm2();
    let vocab = m.config.vocab_size;
    let exp = read_json(&fixtures().join("smollm2/expected.json"));
    let logits = |seq: &[u32], ct: CacheType| {
        let cfg = KvConfig {
            cache_type: ct,
            ..KvConfig::default()
        };
        let mut st = State::with_config(m, seq.len(), cfg).unwrap();
        m.forward(&mut st, seq, Logits::All).unwrap().to_vec()
    };
    // Measured 2026-11-29 (avx512vnni kernels), 438 positions: f16 mean KL 1.23e-6,
    // top-1 438/438; q8_0 mean KL 1.33e-3, top-1 431/438. Since the blocked prompt
    // attention (2026-12-03; it dequantizes Q8_0 keys instead of quantizing the query):
    // f16 1.31e-6, 438/438; q8_0 9.41e-4, 433/438. Bounds: 8× and ~4× the
    // measurements (other kernel levels round f16 dots differently; Q8_0 quantization is
    // bit-identical across levels), far below a broken cache (KL ≳ 0.1).
    // A forced kernel level (`quick`) compares the first two prompts' continuations, the
    // scalar level (`quickest`) the first one. The f32-cache reference of each sequence is
    // computed once.
    let cases = exp["cases"].as_array().unwrap();
    let cases = if common::quickest() {
        &cases[..1]
    } else if common::quick() {
        &cases[..2]
    } else {
        &cases[..]
    };
    let refs: Vec<(Vec<u32>, Vec<f32>)> = cases
        .iter()
        .map(|case| {
            let mut seq = ids(&case["prompt_ids"]);
            let want = ids(&case["greedy_new_ids"]);
            seq.extend_from_slice(&want[..want.len() - 1]);
            let a = logits(&seq, CacheType::F32);
            (seq, a)
        })
        .collect();
    for (ct, max_kl, min_agree) in [
        (CacheType::F16, F16_MAX_KL, 0.99),
        (CacheType::Q8_0, Q8_MAX_KL, 0.95),
    ] {
        let (mut kl, mut n, mut agree) = (0.0, 0usize, 0usize);
        for (seq, a) in &refs {
            let b = logits(seq, ct);
            for (ra, rb) in a.chunks_exact(vocab).zip(b.chunks_exact(vocab)) {
                kl += kl_divergence(ra, rb);
                agree += (argmax(ra) == argmax(rb)) as usize;
                n += 1;
            }
        }
        let kl = kl / n as f64;
        let rate = agree as f64 / n as f64;
        eprintln!(
            "SmolLM2 {} cache vs f32 cache: mean KL {kl:.3e} nats over {n} positions, top-1 agreement {agree}/{n}",
            ct.name()
        );
        assert!(kl <= max_kl, "{}: mean KL {kl} > {max_kl}", ct.name());
        assert!(rate >= min_agree, "{}: agreement {rate}", ct.name());
    }
}

const F16_MAX_KL: f64 = 1e-5;
const Q8_MAX_KL: f64 = 5e-3;
