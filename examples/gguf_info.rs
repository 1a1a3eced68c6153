//! Print a GGUF file's metadata and tensor table.
//!
//! `cargo run --example gguf_info -- model.gguf`

use std::path::PathBuf;

use llq::gguf::{GgufArray, GgufFile, GgufValue};

fn short(v: &GgufValue) -> String {
    match v {
        GgufValue::String(s) if s.len() > 80 => format!(
            "{:?}... ({} bytes)",
            s.chars().take(80).collect::<String>(),
            s.len()
        ),
        GgufValue::Array(a) => {
            let preview = match a {
                GgufArray::String(v) => format!("{:?}", &v[..v.len().min(5)]),
                GgufArray::F32(v) => format!("{:?}", &v[..v.len().min(5)]),
                GgufArray::I32(v) => format!("{:?}", &v[..v.len().min(5)]),
                GgufArray::U32(v) => format!("{:?}", &v[..v.len().min(5)]),
                _ => String::new(),
            };
            format!("[{:?}; {}] {preview}", a.element_type(), a.len())
        }
        other => format!("{other:?}"),
    }
}

fn main() {
    let path: PathBuf = std::env::args_os()
        .nth(1)
        .expect("usage: gguf_info FILE.gguf")
        .into();
    let f = match GgufFile::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "GGUF v{}  alignment {}  data at {}  {} metadata  {} tensors",
        f.version(),
        f.alignment(),
        f.data_offset(),
        f.metadata().len(),
        f.tensors().len()
    );
    for (k, v) in f.metadata() {
        println!("{k} = {}", short(v));
    }
    let mut counts = std::collections::BTreeMap::new();
    for t in f.tensors() {
        *counts.entry(t.ggml_type.name()).or_insert(0usize) += 1;
        println!(
            "{:<40} {:<6} {:?}  {} bytes @ {}",
            t.name, t.ggml_type, t.dims, t.n_bytes, t.offset
        );
    }
    println!("tensor types: {counts:?}");
}
