//! LoRA adapters, which users download from strangers, against the fixtures' tiny base
//! (`llq_fuzz::lora_base`):
//! - selector bit 0 clear: a PEFT directory (`adapter_config.json` SEP
//!   `adapter_model.safetensors`) → `open_peft` → merged into the base checkpoint and
//!   converted (as `llq convert --lora`), and written as an adapter file (as `llq convert
//!   --lora-only`) that is opened and applied at run time;
//! - selector bit 0 set: one file, a llq adapter or a llama.cpp GGUF LoRA → `Adapter::open`
//!   → applied at run time; a GGUF one is also merged at conversion.
//!
//! Bits 1-2 of the selector pick the scale. Whatever opened is run briefly
//! (`llq_fuzz::run_with_adapters`).
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use llq::convert::{convert, Silent};
use llq::lora::{merge_adapters, open_peft, write_adapter, Adapter, AdapterSet, MergedCheckpoint};
use llq::model::Model;
use llq::quant::DType;

/// Merge `adapter` into the base at `scale`, convert, open and run the result.
fn merged_runs(ck: MergedCheckpoint) {
    let out = llq_fuzz::scratch().join("merged.llq");
    let _ = std::fs::remove_file(&out);
    if convert(&ck, DType::Q8_0, &out, &Silent).is_ok() {
        let m = Model::open(&out).expect("a merged conversion opens");
        llq_fuzz::run_briefly(&m);
    }
}

/// Open the adapter file at `path` for the base model and run with it at `scale`.
fn applied_runs(path: &std::path::Path, scale: f32) {
    let base = llq_fuzz::lora_base_model();
    let Ok(a) = Adapter::open(path, &base.config) else {
        return;
    };
    let set = AdapterSet::new(vec![(Arc::new(a), scale)], &base.config)
        .expect("an adapter that opened for this model fits it");
    llq_fuzz::run_with_adapters(base, set);
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let scale = [1.0f32, 0.5, -2.0, 0.0][(sel >> 1) as usize % 4];
    let dir = llq_fuzz::scratch().join("lora");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if sel & 1 == 0 {
        let parts = llq_fuzz::split(rest, 2);
        std::fs::write(dir.join("adapter_config.json"), parts[0]).unwrap();
        if let Some(w) = parts.get(1) {
            std::fs::write(dir.join("adapter_model.safetensors"), w).unwrap();
        }
        let Ok(a) = open_peft(&dir) else {
            return;
        };
        let file = llq_fuzz::scratch().join("peft-adapter.llq");
        let _ = std::fs::remove_file(&file);
        if write_adapter(&a, DType::F16, &file).is_ok() {
            applied_runs(&file, scale);
        }
        if let Ok(ck) = MergedCheckpoint::new(llq_fuzz::lora_base(), vec![(a, scale)]) {
            merged_runs(ck);
        }
    } else {
        let file = dir.join("adapter.bin");
        std::fs::write(&file, rest).unwrap();
        applied_runs(&file, scale);
        if rest.starts_with(b"GGUF") {
            if let Ok(ck) = merge_adapters(llq_fuzz::lora_base(), &[(file, scale)]) {
                merged_runs(ck);
            }
        }
    }
});
