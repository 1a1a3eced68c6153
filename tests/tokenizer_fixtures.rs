//! Golden tokenizer vectors from `shared/fixtures/tokenizers` (see its README §2).

mod common;

use llq::chat::{ChatMessage, ChatTemplate};
use llq::tokenizer::Tokenizer;
use serde_json::Value;

fn read(rel: &str) -> Vec<u8> {
    let p = common::fixtures().join("tokenizers").join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn jsonl(rel: &str) -> Vec<Value> {
    String::from_utf8(read(rel))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn llama2() -> Tokenizer {
    Tokenizer::from_sentencepiece_model(&read("llama2-spm/tokenizer.model")).unwrap()
}

pub fn smollm2() -> Tokenizer {
    Tokenizer::from_hf_json(
        &read("smollm2-bpe/tokenizer.json"),
        Some(&read("smollm2-bpe/tokenizer_config.json")),
    )
    .unwrap()
}

/// Counts passes, prints `N/M cases passed`, panics listing the first mismatches.
fn report(name: &str, total: usize, failures: Vec<String>) {
    let passed = total - failures.len();
    println!("{name}: {passed}/{total} cases passed");
    if !failures.is_empty() {
        panic!(
            "{name}: {}/{total} failed; first mismatches:\n{}",
            failures.len(),
            failures
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

fn check_encode(name: &str, tok: &Tokenizer, rel: &str, parse_special: bool) {
    let cases = jsonl(rel);
    let mut failures = Vec::new();
    for c in &cases {
        let text = c["text"].as_str().unwrap();
        let want = ids(&c["ids"]);
        let got = tok.encode(text, parse_special);
        if got != *want {
            failures.push(format!("  {text:?}\n    want {want:?}\n    got  {got:?}"));
        }
    }
    report(name, cases.len(), failures);
}

fn check_decode(name: &str, tok: &Tokenizer, rel: &str) {
    let cases = jsonl(rel);
    let mut failures = Vec::new();
    for c in &cases {
        let ids = ids(&c["ids"]);
        let skip = c
            .get("skip_special_tokens")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let want = c["text"].as_str().unwrap();
        let got = tok.decode(&ids, skip);
        // The streaming decoder must produce the same text.
        let mut sd = tok.stream_decoder(skip);
        let mut streamed = String::new();
        for &id in &ids {
            streamed.push_str(&sd.push(id));
        }
        streamed.push_str(&sd.flush());
        if got != want || streamed != want {
            failures.push(format!(
                "  {ids:?} skip={skip}\n    want {want:?}\n    got  {got:?}\n    stream {streamed:?}"
            ));
        }
    }
    report(name, cases.len(), failures);
}

#[test]
fn llama2_spm_cases() {
    check_encode(
        "llama2-spm/cases",
        &llama2(),
        "llama2-spm/cases.jsonl",
        false,
    );
}

#[test]
fn llama2_spm_decode_cases() {
    check_decode(
        "llama2-spm/decode_cases",
        &llama2(),
        "llama2-spm/decode_cases.jsonl",
    );
}

#[test]
fn smollm2_bpe_cases() {
    check_encode(
        "smollm2-bpe/cases",
        &smollm2(),
        "smollm2-bpe/cases.jsonl",
        true,
    );
}

#[test]
fn smollm2_bpe_decode_cases() {
    check_decode(
        "smollm2-bpe/decode_cases",
        &smollm2(),
        "smollm2-bpe/decode_cases.jsonl",
    );
}

#[test]
fn smollm2_chat_template_cases() {
    let tok = smollm2();
    let src = String::from_utf8(read("smollm2-bpe/chat_template.jinja")).unwrap();
    let tmpl = ChatTemplate::new(&src).unwrap();
    let cases = jsonl("smollm2-bpe/chat_template_cases.jsonl");
    let mut failures = Vec::new();
    for c in &cases {
        let messages: Vec<ChatMessage> = serde_json::from_value(c["messages"].clone()).unwrap();
        let agp = c["add_generation_prompt"].as_bool().unwrap();
        let want = c["rendered"].as_str().unwrap();
        let got = tmpl
            .render(&messages, agp, "<|im_start|>", "<|im_end|>")
            .unwrap();
        let want_ids = ids(&c["ids"]);
        let got_ids = tok.encode(&got, true);
        if got != want || got_ids != want_ids {
            failures.push(format!(
                "  rendered want {want:?}\n           got  {got:?}\n  ids want {want_ids:?}\n      got  {got_ids:?}"
            ));
        }
    }
    report("smollm2-bpe/chat_template_cases", cases.len(), failures);
}

/// llama.cpp's vocab vectors, checked with the SPM tokenizer built from tokenizer.model.
#[test]
fn llamacpp_vocab_vectors_with_spm_model() {
    let tok = llama2();
    let inp = String::from_utf8(read("llamacpp-vocab/ggml-vocab-llama-spm.gguf.inp")).unwrap();
    let out = String::from_utf8(read("llamacpp-vocab/ggml-vocab-llama-spm.gguf.out")).unwrap();
    let cases = common::llamacpp_vocab_cases(&inp, &out);
    let mut failures = Vec::new();
    for (text, want) in &cases {
        let got = tok.encode(text, false);
        if got != *want {
            failures.push(format!("  {text:?}\n    want {want:?}\n    got  {got:?}"));
        }
    }
    report(
        "llamacpp-vocab (spm from tokenizer.model)",
        cases.len(),
        failures,
    );
}

/// Serialized form: encodings identical on every fixture case.
#[test]
fn serialized_round_trip_matches() {
    for (name, tok, rel, parse_special) in [
        ("llama2", llama2(), "llama2-spm/cases.jsonl", false),
        ("smollm2", smollm2(), "smollm2-bpe/cases.jsonl", true),
    ] {
        let bytes = tok.to_bytes();
        let t0 = std::time::Instant::now();
        let back = Tokenizer::from_bytes(&bytes).unwrap();
        let dt = t0.elapsed();
        println!(
            "{name}: {} serialized bytes, loaded in {:.2} ms",
            bytes.len(),
            dt.as_secs_f64() * 1e3
        );
        assert_eq!(back.to_bytes(), bytes, "{name}: re-serialization differs");
        assert_eq!(back.vocab_size(), tok.vocab_size());
        assert_eq!(back.eog_ids(), tok.eog_ids());
        assert_eq!(back.add_bos(), tok.add_bos());
        let cases = jsonl(rel);
        let mut failures = Vec::new();
        for c in &cases {
            let text = c["text"].as_str().unwrap();
            let want = ids(&c["ids"]);
            let got = back.encode(text, parse_special);
            if got != *want {
                failures.push(format!("  {text:?}: want {want:?} got {got:?}"));
            }
            if back.decode(&want, false) != tok.decode(&want, false) {
                failures.push(format!("  decode differs for {text:?}"));
            }
        }
        report(&format!("{name} from_bytes"), cases.len(), failures);
    }
}

#[test]
fn smollm2_load_time_from_bytes() {
    let bytes = smollm2().to_bytes();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t0 = std::time::Instant::now();
        let t = Tokenizer::from_bytes(&bytes).unwrap();
        best = best.min(t0.elapsed().as_secs_f64());
        assert_eq!(t.vocab_size(), 49152);
    }
    println!(
        "SmolLM2 tokenizer from_bytes: {:.2} ms (best of 5, {} bytes)",
        best * 1e3,
        bytes.len()
    );
}
