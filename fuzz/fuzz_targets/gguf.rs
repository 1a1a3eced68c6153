//! GGUF: parse from bytes, dequantize every (modest) tensor, build the tokenizer from
//! `tokenizer.ggml.*`, then open it as a checkpoint, convert it to `.llq` in a temp dir and
//! run the result briefly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llq::convert::{convert, Mix, Silent, Target};
use llq::convert::{gguf_tokenizer_parts, GgufCheckpoint};
use llq::gguf::GgufFile;
use llq::quant::DType;
use llq::tokenizer::Tokenizer;

/// Dequantizing is linear in the element count; a bigger tensor only costs time.
const MAX_DEQUANT: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    // The last byte (when present) picks the conversion's target: keeping the stored types
    // (the command line's default for a GGUF), one type, or a K-quant mixture.
    let target = [
        Target::Keep {
            fallback: DType::Q8_0,
        },
        Target::Type(DType::Q8_0),
        Target::Type(DType::Q4_0),
        Target::Type(DType::F16),
        Target::Type(DType::F32),
        Target::Mix(Mix::Q4KM),
        Target::Type(DType::Q5_1),
        Target::Type(DType::Q6_K),
    ][*data.last().unwrap_or(&0) as usize % 8];
    let Ok(f) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    for t in f.tensors() {
        if t.n_elements() <= MAX_DEQUANT {
            if let Ok(v) = f.dequantize_tensor(t) {
                assert_eq!(v.len() as u64, t.n_elements());
            }
        }
    }
    if let Some(parts) = gguf_tokenizer_parts(&f) {
        if let Ok(tok) = Tokenizer::from_gguf_parts(parts) {
            llq_fuzz::exercise_tokenizer(&tok, "Hello world, 123 héllo\n\t<s>");
        }
    }
    drop(f);
    let dir = llq_fuzz::scratch();
    let path = dir.join("input.gguf");
    std::fs::write(&path, data).unwrap();
    let Ok(ck) = GgufCheckpoint::open(&path) else {
        return;
    };
    let out = dir.join("gguf-out.llq");
    let _ = std::fs::remove_file(&out);
    if convert(&ck, target, &out, &Silent).is_ok() {
        // What convert writes, the runtime must open and run.
        let m = llq::model::Model::open(&out).expect("a converted GGUF opens");
        llq_fuzz::run_briefly(&m);
    }
});
