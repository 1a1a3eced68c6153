//! include/llq.h must be what cbindgen generates from src/ffi with cbindgen.toml.
//! Regenerate it with `LLQ_BLESS_HEADER=1 cargo test --test ffi_header`.

use std::path::Path;

fn generate() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).unwrap();
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/ffi/mod.rs"))
        .generate()
        .expect("cbindgen failed on src/ffi");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn header_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/llq.h");
    let fresh = generate();
    if std::env::var_os("LLQ_BLESS_HEADER").is_some() {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "include/llq.h is stale: run `LLQ_BLESS_HEADER=1 cargo test --test ffi_header` \
         (or `cbindgen --config cbindgen.toml --output include/llq.h src/ffi/mod.rs`) and commit it"
    );
}

#[test]
fn header_documents_every_function() {
    let h = generate();
    let lines: Vec<&str> = h.lines().collect();
    let mut n = 0;
    for (i, l) in lines.iter().enumerate() {
        if *l == "LLQ_API" || l.starts_with("LLQ_API ") {
            n += 1;
            // The line before the declaration closes its doc comment.
            assert!(
                i > 0 && lines[i - 1].trim_end().ends_with("*/"),
                "undocumented function: {l}"
            );
        }
    }
    assert!(n >= 30, "only {n} functions in the header");
    assert!(h.contains("#ifndef LLQ_H"));
    assert!(h.contains("#define LLQ_API_VERSION"));
}
