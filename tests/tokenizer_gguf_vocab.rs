//! llama.cpp's vocab-only GGUF (`llamacpp-vocab/ggml-vocab-llama-spm.gguf`) through
//! llq's GGUF reader and `Tokenizer::from_gguf_parts`, checked against its `.inp/.out`
//! vectors.

mod common;

use llq::convert::gguf_tokenizer_parts;
use llq::gguf::GgufFile;
use llq::tokenizer::Tokenizer;

#[test]
fn llamacpp_spm_vocab_via_gguf_parts() {
    let dir = common::fixtures().join("tokenizers/llamacpp-vocab");
    let f = GgufFile::open(&dir.join("ggml-vocab-llama-spm.gguf")).unwrap();
    let parts = gguf_tokenizer_parts(&f).expect("the file has a tokenizer");
    assert_eq!(parts.model, "llama");
    let tok = Tokenizer::from_gguf_parts(parts).unwrap();
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.unk_id()),
        (Some(1), Some(2), Some(0))
    );
    let inp = std::fs::read_to_string(dir.join("ggml-vocab-llama-spm.gguf.inp")).unwrap();
    let out = std::fs::read_to_string(dir.join("ggml-vocab-llama-spm.gguf.out")).unwrap();
    let cases = common::llamacpp_vocab_cases(&inp, &out);
    let mut failures = Vec::new();
    for (text, want) in &cases {
        let got = tok.encode(text, false);
        if got != *want {
            failures.push(format!("  {text:?}\n    want {want:?}\n    got  {got:?}"));
        }
        // llama.cpp's test also checks that detokenizing gives the text back
        // (modulo the leading space its SPM path adds/removes).
        let back = tok.decode(&got, false);
        if back != *text && format!(" {back}") != *text {
            failures.push(format!("  round trip {text:?} -> {back:?}"));
        }
    }
    println!(
        "llamacpp-vocab via gguf parts: {}/{} cases passed",
        cases.len() - failures.len().min(cases.len()),
        cases.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
