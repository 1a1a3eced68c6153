//! Helpers shared by the fuzz targets: splitting one input into several files, a
//! per-process scratch directory, the fixtures, and a tiny converted model.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use llq::model::Model;
use llq::quant::DType;
use llq::tokenizer::Tokenizer;

/// Separates the parts of an input that holds several files (config and weights,
/// template and messages, tokenizer and text). Seeds use it; the fuzzer's mutations
/// keep, move or drop it.
pub const SEP: &[u8] = b"\n--8<--\n";

/// Splits `data` at the first `n - 1` separators into at most `n` parts.
pub fn split(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts = Vec::with_capacity(n);
    let mut rest = data;
    while parts.len() + 1 < n {
        match rest.windows(SEP.len()).position(|w| w == SEP) {
            Some(i) => {
                parts.push(&rest[..i]);
                rest = &rest[i + SEP.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts
}

/// Joins parts with [`SEP`] (seed generation).
pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(SEP)
}

/// The repository's shared fixtures (`../shared/fixtures` from the repository root).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures")
}

/// A scratch directory for this process, removed when it exits normally. Targets write
/// their input into fixed names in it: the readers under test take paths.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

/// `seeds/tiny-hf`: the tiny Hugging Face checkpoint (dim 64; written by
/// `tools/make_seeds.py`).
pub fn tiny_hf() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/tiny-hf"))
}

/// The wide tiny llama of the gguf corpus (dim 256, every matrix in a type `convert`
/// keeps) as a GGUF file in the scratch directory, written once per process.
pub fn tiny_wide_gguf() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let src =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/gguf/tiny-wide-every-kept-type");
        let bytes = std::fs::read(src).expect("the wide seed");
        // Its last byte is the gguf target's type selector.
        let p = scratch().join("tiny-wide.gguf");
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        p
    })
}

/// The tiny checkpoint of `seeds/tiny-hf` (written by `tools/make_seeds.py`; head_dim 32,
/// so that a q8_0 cache can be made for it) converted to q8_0 once per process: the
/// prompt-cache target needs a real model's identity and dimensions.
pub fn tiny_model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        let out = dir.join("tiny.llq");
        let ck = llq::convert::open_checkpoint(tiny_hf()).unwrap();
        llq::convert::convert(ck.as_ref(), DType::Q8_0, &out, &llq::convert::Silent).unwrap();
        Model::open(&out).unwrap()
    })
}

/// The SmolLM2 byte-level BPE and Llama 2 SentencePiece tokenizers from the fixtures.
pub fn fixture_tokenizers() -> &'static [Tokenizer; 2] {
    static T: OnceLock<[Tokenizer; 2]> = OnceLock::new();
    T.get_or_init(|| {
        let dir = fixtures().join("tokenizers");
        let json = std::fs::read(dir.join("smollm2-bpe/tokenizer.json")).unwrap();
        let cfg = std::fs::read(dir.join("smollm2-bpe/tokenizer_config.json")).unwrap();
        let spm = std::fs::read(dir.join("llama2-spm/tokenizer.model")).unwrap();
        [
            Tokenizer::from_hf_json(&json, Some(&cfg)).unwrap(),
            Tokenizer::from_sentencepiece_model(&spm).unwrap(),
        ]
    })
}

/// Encode and decode `text` every way the runtime does, checking what must hold for
/// any tokenizer: streamed decoding equals whole decoding.
pub fn exercise_tokenizer(tok: &Tokenizer, text: &str) {
    for parse_special in [false, true] {
        let ids = tok.encode_prompt(text, true, parse_special);
        for skip in [false, true] {
            let whole = tok.decode(&ids, skip);
            let mut dec = tok.stream_decoder(skip);
            let mut streamed = String::new();
            for &id in &ids {
                streamed.push_str(&dec.push(id));
            }
            streamed.push_str(&dec.flush());
            assert_eq!(streamed, whole, "streamed decoding differs from whole");
        }
    }
    // Ids the tokenizer never produced (out of range, specials) must decode quietly.
    let n = tok.vocab_size() as u32;
    let odd: Vec<u32> = text
        .bytes()
        .take(64)
        .map(|b| (b as u32).wrapping_mul(2654435761) % (n + 8))
        .collect();
    let _ = tok.decode(&odd, false);
    for id in [0, n.saturating_sub(1), n, u32::MAX] {
        let _ = tok.token_piece(id);
        let _ = tok.token_type(id);
        let _ = tok.is_special(id);
    }
}

/// Weights above this are only opened, not run: a forward pass is linear in them.
const MAX_RUN_BYTES: usize = 16 << 20;

/// Run a model that opened: a 9-token prompt (every logit), then one more token, through
/// the kernels this CPU has. Whatever a file's weights and hyper-parameters are, once
/// `Model::open` accepted it the forward pass must not panic or read out of bounds.
pub fn run_briefly(m: &Model) {
    run_with_adapters(m, llq::lora::AdapterSet::default());
}

/// [`run_briefly`] with run-time LoRA adapters set on the context.
pub fn run_with_adapters(m: &Model, adapters: llq::lora::AdapterSet) {
    use llq::model::{Logits, State};
    if m.weight_bytes() > MAX_RUN_BYTES {
        return;
    }
    let c = &m.config;
    let Ok(mut st) = State::with_config(m, 16, llq::kv::KvConfig::default()) else {
        return;
    };
    st.set_adapters(adapters);
    let v = c.vocab_size as u32;
    // 9 tokens: the prompt kernels' paths for batches of 8 or more, and a remainder.
    let prompt: Vec<u32> = (0..9).map(|i| (i * 37 + 1) % v).collect();
    let logits = m.forward(&mut st, &prompt, Logits::All).expect("prompt");
    assert_eq!(logits.len(), prompt.len() * c.vocab_size);
    let logits = m.forward(&mut st, &[0], Logits::Last).expect("one token");
    assert_eq!(logits.len(), c.vocab_size);
}

/// The fixtures' `tiny-llama-gqa` (the base of their PEFT adapters: hidden 64, 2 layers,
/// 4 heads / 2 kv heads, ffn 172, vocab 512) as a checkpoint, opened anew for each use.
pub fn lora_base() -> Box<dyn llq::convert::Checkpoint> {
    llq::convert::open_checkpoint(&fixtures().join("tiny-llama-gqa")).expect("fixture base")
}

/// [`lora_base`] converted to q8_0 once per process: the model run-time adapters apply to.
pub fn lora_base_model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        let out = dir.join("base.llq");
        llq::convert::convert(
            lora_base().as_ref(),
            DType::Q8_0,
            &out,
            &llq::convert::Silent,
        )
        .unwrap();
        Model::open(&out).unwrap()
    })
}
