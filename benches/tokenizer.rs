//! Encoding throughput of both fixture tokenizers on ~1 MB of mixed-language text.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use llq::tokenizer::Tokenizer;

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/tokenizers");

fn build_text() -> String {
    let cases =
        std::fs::read_to_string(format!("{FIX}/smollm2-bpe/cases.jsonl")).expect("fixtures");
    let block: Vec<String> = cases
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["text"].as_str().unwrap().to_string()
        })
        .collect();
    let block = block.join("\n");
    let mut out = String::new();
    while out.len() < 1_000_000 {
        out.push_str(&block);
        out.push('\n');
    }
    out
}

fn tokenizers(c: &mut Criterion) {
    let text = build_text();
    let spm = Tokenizer::from_sentencepiece_model(
        &std::fs::read(format!("{FIX}/llama2-spm/tokenizer.model")).unwrap(),
    )
    .unwrap();
    let bpe = Tokenizer::from_hf_json(
        &std::fs::read(format!("{FIX}/smollm2-bpe/tokenizer.json")).unwrap(),
        None,
    )
    .unwrap();
    let mut g = c.benchmark_group("encode_1MB");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.sample_size(10);
    g.bench_function("llama2-spm", |b| b.iter(|| spm.encode(&text, false)));
    g.bench_function("smollm2-bpe", |b| b.iter(|| bpe.encode(&text, true)));
    g.finish();
    let bytes = bpe.to_bytes();
    c.bench_function("smollm2_from_bytes", |b| {
        b.iter(|| Tokenizer::from_bytes(&bytes).unwrap())
    });
}

criterion_group!(benches, tokenizers);
criterion_main!(benches);
