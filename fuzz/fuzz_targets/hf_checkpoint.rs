//! Hugging Face checkpoint (`HfCheckpoint::open`): `config.json` parsing, safetensors headers (one file, or
//! shards through `model.safetensors.index.json`), then conversion in a temp dir.
//! Input: `config.json` SEP `model.safetensors` [SEP index.json SEP second shard].
#![no_main]

use libfuzzer_sys::fuzz_target;
use llq::convert::HfCheckpoint;
use llq::convert::{convert, Silent};
use llq::quant::DType;

fuzz_target!(|data: &[u8]| {
    let parts = llq_fuzz::split(data, 4);
    let dir = llq_fuzz::scratch().join("hf");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), parts[0]).unwrap();
    if parts.len() >= 3 {
        // Sharded: the index names the shard files.
        std::fs::write(dir.join("model.safetensors.index.json"), parts[2]).unwrap();
        std::fs::write(dir.join("model-00001-of-00002.safetensors"), parts[1]).unwrap();
        std::fs::write(
            dir.join("model-00002-of-00002.safetensors"),
            parts.get(3).copied().unwrap_or_default(),
        )
        .unwrap();
    } else if let Some(st) = parts.get(1) {
        std::fs::write(dir.join("model.safetensors"), st).unwrap();
    }
    let Ok(ck) = HfCheckpoint::open(&dir) else {
        return;
    };
    let out = llq_fuzz::scratch().join("hf-out.llq");
    let _ = std::fs::remove_file(&out);
    if convert(&ck, DType::Q8_0, &out, &Silent).is_ok() {
        let m = llq::model::Model::open(&out).expect("a converted checkpoint opens");
        llq_fuzz::run_briefly(&m);
    }
});
