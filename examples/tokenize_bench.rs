//! Single-threaded tokenizer throughput: `cargo run --release --example tokenize_bench [TEXT_FILE]`.
//!
//! Without a file, builds ~1 MB of mixed-language text from the fixture strings
//! (the same construction as `tools/bench_tokenizers.py`). Prints MB/s per tokenizer.

use std::time::Instant;

use llq::tokenizer::Tokenizer;

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/tokenizers");

fn build_text() -> String {
    let cases =
        std::fs::read_to_string(format!("{FIX}/smollm2-bpe/cases.jsonl")).expect("fixtures");
    let texts: Vec<String> = cases
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["text"].as_str().unwrap().to_string()
        })
        .collect();
    let block = texts.join("\n");
    let mut out = String::new();
    while out.len() < 1_000_000 {
        out.push_str(&block);
        out.push('\n');
    }
    out
}

fn bench(name: &str, tok: &Tokenizer, text: &str, parse_special: bool) {
    let mut best = f64::MAX;
    let mut n = 0;
    for _ in 0..5 {
        let t0 = Instant::now();
        n = tok.encode(text, parse_special).len();
        best = best.min(t0.elapsed().as_secs_f64());
    }
    println!(
        "llq {name}: {:.2} MB/s ({} bytes -> {} tokens, best of 5: {:.1} ms)",
        text.len() as f64 / best / 1e6,
        text.len(),
        n,
        best * 1e3
    );
    // Line by line (many short calls), as the Python script also measures.
    let lines: Vec<&str> = text.split('\n').collect();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t0 = Instant::now();
        n = lines
            .iter()
            .map(|l| tok.encode(l, parse_special).len())
            .sum();
        best = best.min(t0.elapsed().as_secs_f64());
    }
    println!(
        "llq {name} per line: {:.2} MB/s ({} tokens, best of 3: {:.1} ms)",
        text.len() as f64 / best / 1e6,
        n,
        best * 1e3
    );
}

fn main() {
    let text = match std::env::args().nth(1) {
        Some(p) => std::fs::read_to_string(p).expect("text file"),
        None => build_text(),
    };
    let spm = Tokenizer::from_sentencepiece_model(
        &std::fs::read(format!("{FIX}/llama2-spm/tokenizer.model")).unwrap(),
    )
    .unwrap();
    let bpe = Tokenizer::from_hf_json(
        &std::fs::read(format!("{FIX}/smollm2-bpe/tokenizer.json")).unwrap(),
        Some(&std::fs::read(format!("{FIX}/smollm2-bpe/tokenizer_config.json")).unwrap()),
    )
    .unwrap();
    bench("llama2-spm", &spm, &text, false);
    bench("smollm2-bpe", &bpe, &text, true);
}
