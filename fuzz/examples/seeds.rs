//! Writes the seeds that need the library: `.llq` files converted from the tiny
//! checkpoint `tools/make_seeds.py` writes to `seeds/tiny-hf`, the compact tokenizer
//! form, and prompt caches for `llq_fuzz::tiny_model()`. Run from `fuzz/` after the script.

use std::path::Path;

use llq::convert::{convert, open_checkpoint, Silent, Target};
use llq::kv::prompt_cache::save;
use llq::kv::{CacheType, KvCache, KvConfig};
use llq::model::Model;
use llq::quant::DType;

fn put(target: &str, name: &str, data: &[u8]) {
    let d = Path::new("corpus").join(target);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(name), data).unwrap();
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = open_checkpoint(llq_fuzz::tiny_hf()).unwrap();
    for dtype in [DType::Q4_0, DType::Q8_0, DType::F16] {
        let out = tmp.path().join(format!("{}.llq", dtype.name()));
        convert(ck.as_ref(), dtype, &out, &Silent).unwrap();
        put(
            "llq_open",
            &format!("tiny-{}", dtype.name()),
            &std::fs::read(&out).unwrap(),
        );
    }
    // The wide GGUF of the gguf corpus (its last byte is that target's type selector)
    // with every matrix kept as stored: one .llq holding every coded layout.
    let ck = open_checkpoint(llq_fuzz::tiny_wide_gguf()).unwrap();
    let out = tmp.path().join("wide.llq");
    let keep = Target::Keep {
        fallback: DType::Q8_0,
    };
    convert(ck.as_ref(), keep, &out, &Silent).unwrap();
    put("llq_open", "tiny-wide-kept", &std::fs::read(&out).unwrap());

    // The tiny Gemma 3 of the gguf corpus (sliding window of 4, one global layer) at
    // q8_0: the gemma3 metadata and tensors through the .llq reader.
    let bytes = std::fs::read("corpus/gguf/tiny-gemma3-f32").unwrap();
    let src = tmp.path().join("gemma3.gguf");
    std::fs::write(&src, &bytes[..bytes.len() - 1]).unwrap();
    let ck = open_checkpoint(&src).unwrap();
    let out = tmp.path().join("gemma3.llq");
    convert(ck.as_ref(), DType::Q8_0, &out, &Silent).unwrap();
    put("llq_open", "tiny-gemma3-q8_0", &std::fs::read(&out).unwrap());

    // llq adapter files (`llq convert --lora-only`) from the fixtures' r8 PEFT adapter,
    // f16 and f32; selector byte 1: one adapter file, scale 1.
    let peft = llq_fuzz::fixtures().join("lora/tiny-llama-gqa-lora-r8");
    let adapter = llq::lora::open_peft(&peft).unwrap();
    for dtype in [DType::F16, DType::F32] {
        let out = tmp.path().join(format!("adapter-{}.llq", dtype.name()));
        llq::lora::write_adapter(&adapter, dtype, &out).unwrap();
        put(
            "lora",
            &format!("llq-adapter-r8-{}", dtype.name()),
            &[&[1u8][..], &std::fs::read(&out).unwrap()].concat(),
        );
    }

    let m = Model::open(&tmp.path().join("q4_0.llq")).unwrap();
    let tok = m.tokenizer().unwrap();
    let text = b"Hello world! \xc3\xa9 <|im_start|>";
    put(
        "tokenizer",
        "compact-tiny",
        &[&[2u8][..], &llq_fuzz::join(&[&tok.to_bytes(), text])].concat(),
    );

    // Prompt caches for the model the target loads, one per cache type, with the flags
    // byte the target reads: type in bits 4-5, context 41 (bit 6), identity patched.
    let model = llq_fuzz::tiny_model();
    let c = &model.config;
    for (ti, ct) in CacheType::ALL.into_iter().enumerate() {
        let cfg = KvConfig {
            cache_type: ct,
            ..KvConfig::default()
        };
        let mut cache = KvCache::new(c.n_layers, c.n_kv_heads, c.head_dim, 41, cfg).unwrap();
        let n = 3;
        let kv: Vec<f32> = (0..n * c.kv_dim())
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        for l in 0..c.n_layers {
            cache.store(l, &kv, &kv);
        }
        cache.advance(n);
        let logits: Vec<f32> = (0..c.vocab_size).map(|i| i as f32 / 100.0).collect();
        let p = tmp.path().join(format!("{}.pcache", ct.name()));
        save(&p, &model.identity(), &cache, &[1, 5, 9], &logits).unwrap();
        let flags = 0x40 | ((ti as u8) << 4);
        put(
            "prompt_cache",
            &format!("cache-{}", ct.name()),
            &[&[flags][..], &std::fs::read(&p).unwrap()].concat(),
        );
        put(
            "prompt_cache",
            &format!("cache-{}-patched", ct.name()),
            &[&[flags | 3][..], &std::fs::read(&p).unwrap()].concat(),
        );
    }
    println!("seeds written");
}
