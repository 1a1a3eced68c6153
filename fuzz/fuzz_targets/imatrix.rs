//! Importance matrices (llama.cpp's imatrix.dat, which users download beside models):
//! `Imatrix::parse` → written and parsed again (the same matrix) → a conversion weighted
//! by it, of the tiny checkpoint at q4_0 or of the wide one at the Q4_K_M mixture (which
//! re-encodes every matrix through the K-quant searches; the last byte picks), → opened
//! and run briefly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llq::convert::{convert_with, open_checkpoint, Mix, Silent, Target};
use llq::imatrix::Imatrix;
use llq::quant::DType;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_last() else {
        return;
    };
    let Ok(m) = Imatrix::parse(rest) else {
        return;
    };
    let again = Imatrix::parse(&m.to_bytes().expect("a parsed imatrix writes")).unwrap();
    assert_eq!(again, m, "written and read again, the same matrix");
    let (src, target) = if sel & 1 == 0 {
        (llq_fuzz::tiny_hf(), Target::Type(DType::Q4_0))
    } else {
        (llq_fuzz::tiny_wide_gguf(), Target::Mix(Mix::Q4KM))
    };
    let ck = open_checkpoint(src).expect("seed checkpoint");
    let out = llq_fuzz::scratch().join("imatrix-out.llq");
    let _ = std::fs::remove_file(&out);
    if convert_with(ck.as_ref(), target, &out, &Silent, Some(&m)).is_ok() {
        let model = llq::model::Model::open(&out).expect("a weighted conversion opens");
        llq_fuzz::run_briefly(&model);
    }
});
