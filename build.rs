//! Gives the shared library its SONAME on Linux: `libllq.so.N`, where N is
//! `LLQ_API_VERSION` (src/ffi/mod.rs), the number bumped on every incompatible C API
//! change. Programs linked with `-lllq` then record `libllq.so.N` and keep working across
//! compatible library updates, and refuse to load an incompatible one.
//!
//! Cargo names its output `libllq.so` whatever the SONAME, and a program linked against
//! it looks for `libllq.so.N` at run time; so this also puts a `libllq.so.N -> libllq.so`
//! link next to the library in the target directory, which makes programs linked in the
//! build tree (`-Ltarget/release -Wl,-rpath,...`) run. `make install` installs the file as
//! `libllq.so.N` with the `libllq.so` link for the linker.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=src/ffi/mod.rs");
    println!("cargo:rerun-if-changed=build.rs");
    let api = api_version();
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let soname = format!("libllq.so.{api}");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    // OUT_DIR is <target>/[<triple>/]<profile>/build/llq-<hash>/out; the library lands in
    // <profile>. Writing outside OUT_DIR is a convenience only: any failure is a warning.
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    if let Some(dir) = out.ancestors().nth(3) {
        if let Err(e) = link(dir, &soname) {
            println!(
                "cargo:warning=could not create {}: {e}",
                dir.join(&soname).display()
            );
        }
    }
}

/// `LLQ_API_VERSION` as written in src/ffi/mod.rs (the one place it is defined).
fn api_version() -> u32 {
    let src = std::fs::read_to_string("src/ffi/mod.rs").expect("reading src/ffi/mod.rs");
    src.lines()
        .find_map(|l| l.trim().strip_prefix("pub const LLQ_API_VERSION: i32 = "))
        .and_then(|v| v.trim_end_matches(';').parse().ok())
        .expect("src/ffi/mod.rs defines `pub const LLQ_API_VERSION: i32 = N;`")
}

#[cfg(unix)]
fn link(dir: &Path, soname: &str) -> std::io::Result<()> {
    let path = dir.join(soname);
    match std::fs::read_link(&path) {
        Ok(t) if t == Path::new("libllq.so") => return Ok(()),
        Ok(_) => std::fs::remove_file(&path)?,
        Err(_) => {}
    }
    std::os::unix::fs::symlink("libllq.so", &path)
}

#[cfg(not(unix))]
fn link(_: &Path, _: &str) -> std::io::Result<()> {
    Ok(())
}
