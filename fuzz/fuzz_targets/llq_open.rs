//! `.llq` open (mapped and read into memory), every tensor view of the model and, for a
//! small model, a short forward pass, with the header CRC recomputed by the harness.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llq::format::LlqFile;
use llq::model::{Model, TensorRef};

fn touch_weight(m: &Model, t: &TensorRef) {
    let w = m.weight(t);
    if w.rows == 0 || w.cols == 0 {
        return;
    }
    let mut row = vec![0f32; w.cols];
    // First and last row: where an offset or a size is wrong, the ends show it.
    for r in [0, w.rows - 1] {
        w.dequantize_row(r, &mut row);
    }
}

/// Where the fixed header keeps its size (the header CRC32 follows the header).
const HEADER_SIZE_AT: usize = 8;

fuzz_target!(|data: &[u8]| {
    // Recompute the header CRC, as an attacker would, so that mutations of the header and
    // tensor directory reach the checks after it instead of all failing the checksum.
    let mut bytes = data.to_vec();
    if let Some(hs) = bytes.get(HEADER_SIZE_AT..HEADER_SIZE_AT + 8) {
        let hs = u64::from_le_bytes(hs.try_into().unwrap());
        if let Some(hs) = usize::try_from(hs)
            .ok()
            .filter(|&h| h.saturating_add(4) <= bytes.len())
        {
            let crc = crc32fast::hash(&bytes[..hs]);
            bytes[hs..hs + 4].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let path = llq_fuzz::scratch().join("input.llq");
    std::fs::write(&path, &bytes).unwrap();
    for in_memory in [false, true] {
        if let Ok(f) = LlqFile::open_with(&path, in_memory) {
            let _ = f.version();
            for (k, _) in f.metadata() {
                let _ = f.get(k);
                let _ = f.get_bytes(k);
            }
            let mut sum = 0u64;
            for t in f.tensors() {
                let _ = t.n_elements();
                sum += f.tensor_data(t).iter().map(|&b| b as u64).sum::<u64>();
            }
            std::hint::black_box(sum);
            let _ = f.verify_data();
        }
        let Ok(m) = Model::open_with(&path, in_memory) else {
            continue;
        };
        let _ = m.identity();
        let _ = m.weight_bytes();
        touch_weight(&m, &m.token_embd);
        touch_weight(&m, &m.output);
        std::hint::black_box(m.vector(&m.output_norm));
        for l in &m.layers {
            std::hint::black_box(m.vector(&l.attn_norm));
            std::hint::black_box(m.vector(&l.ffn_norm));
            for t in [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down] {
                touch_weight(&m, t);
            }
        }
        if !in_memory {
            llq_fuzz::run_briefly(&m);
        }
        if let Some(tok) = &m.tokenizer {
            llq_fuzz::exercise_tokenizer(tok, "Hello, world! <s> 日本");
        }
        if let Some(src) = &m.chat_template {
            if let Ok(t) = llq::chat::ChatTemplate::new(src) {
                let msgs = [llq::chat::ChatMessage::new("user", "hi")];
                let _ = t.render(&msgs, true, "<s>", "</s>");
            }
        }
    }
});
