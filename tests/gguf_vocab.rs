//! Opens a real llama.cpp vocab-only GGUF file from the shared fixtures.

use std::path::Path;

use llq::gguf::GgufFile;

const SPM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/fixtures/tokenizers/llamacpp-vocab/ggml-vocab-llama-spm.gguf"
);

#[test]
fn llama_spm_vocab_opens() {
    let f = GgufFile::open(Path::new(SPM)).unwrap();
    assert!(f.version() == 2 || f.version() == 3);
    assert_eq!(f.get_str("tokenizer.ggml.model"), Some("llama"));
    let tokens = f.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 32000);
    assert_eq!(tokens[0], "<unk>");
    assert_eq!(
        f.get_f32_array("tokenizer.ggml.scores").unwrap().len(),
        32000
    );
    assert_eq!(
        f.get_i32_array("tokenizer.ggml.token_type").unwrap().len(),
        32000
    );
    assert_eq!(f.get_u32("tokenizer.ggml.bos_token_id"), Some(1));
    assert_eq!(f.get_u32("tokenizer.ggml.eos_token_id"), Some(2));
}
