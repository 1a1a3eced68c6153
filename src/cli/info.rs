//! `llq info`: everything inside a `.llq` file.

use std::path::PathBuf;

use llq::format::{LlqFile, Value};
use llq::Result;

/// Print a .llq file's metadata, tensor table and checksum status, or (with --system)
/// what this machine offers llq.
#[derive(clap::Args)]
pub struct Args {
    /// The .llq file.
    #[arg(required_unless_present_any = ["system", "kernels"])]
    model: Option<PathBuf>,
    /// Print the CPU's features, the kernel levels available and the one chosen.
    #[arg(long)]
    system: bool,
    /// Print only the names of the kernel levels this CPU can run, space-separated.
    #[arg(long)]
    kernels: bool,
}

fn system() -> Result<()> {
    let levels: Vec<&str> = llq::kernels::available().iter().map(|k| k.name).collect();
    println!("arch: {}", std::env::consts::ARCH);
    println!(
        "threads available: {} (default -t: {}, one per physical core)",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        llq::threads::default_threads()
    );
    let features: Vec<String> = llq::kernels::cpu_features()
        .into_iter()
        .map(|(name, has)| format!("{name}{}", if has { "+" } else { "-" }))
        .collect();
    println!("cpu features: {}", features.join(" "));
    println!("kernel levels available: {}", levels.join(" "));
    let chosen = llq::kernels::select().map_err(llq::Error::usage)?;
    println!("kernel level chosen: {}", chosen.name);
    Ok(())
}

fn show(f: &LlqFile, v: &Value) -> String {
    const MAX: usize = 8;
    fn list<T: std::fmt::Debug>(a: &[T]) -> String {
        if a.len() <= MAX {
            format!("{a:?}")
        } else {
            format!("{:?}… ({} items)", &a[..MAX], a.len())
        }
    }
    match v {
        Value::Str(s) if s.len() > 80 => {
            format!("{:?}… ({} bytes)", &s[..s.floor_char_boundary(60)], s.len())
        }
        Value::Str(s) => format!("{s:?}"),
        Value::BytesAt(r) => format!(
            "<{} bytes, crc32 {:08x}>",
            r.len(),
            crc32fast::hash(f.bytes_at(r.clone()))
        ),
        Value::Bytes(b) => format!("<{} bytes>", b.len()),
        Value::ArrU32(a) => list(a),
        Value::ArrF32(a) => list(a),
        Value::ArrStr(a) => list(a),
        Value::U32(x) => x.to_string(),
        Value::I32(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::F32(x) => x.to_string(),
        Value::F64(x) => x.to_string(),
        Value::Bool(x) => x.to_string(),
    }
}

pub fn run(a: Args) -> Result<()> {
    if a.kernels {
        let levels: Vec<&str> = llq::kernels::available().iter().map(|k| k.name).collect();
        println!("{}", levels.join(" "));
        return Ok(());
    }
    if a.system {
        system()?;
        if a.model.is_none() {
            return Ok(());
        }
        println!();
    }
    let path = a.model.expect("clap requires a model without --system");
    let f = LlqFile::open(&path)?;
    let (major, minor) = f.version();
    println!("file: {}", path.display());
    println!("format: llq {major}.{minor}, {} bytes", f.file_size());
    println!("header checksum: ok (crc32 over {} bytes)", f.header_size());
    let data_ok = f.verify_data();
    println!("data checksum: {}", if data_ok { "ok" } else { "MISMATCH" });
    println!();
    println!("metadata ({} keys):", f.metadata().len());
    for (k, v) in f.metadata() {
        println!("  {k:<44} {:<8} {}", v.type_name(), show(&f, v));
    }
    println!();
    println!("tensors ({}):", f.tensors().len());
    println!(
        "  {:<28} {:<6} {:<16} {:>12} {:>12} {:>6}",
        "name", "type", "shape", "offset", "bytes", "bpw"
    );
    let (mut elems, mut bytes) = (0u64, 0u64);
    for t in f.tensors() {
        let n = t.n_elements();
        elems += n;
        bytes += t.n_bytes as u64;
        println!(
            "  {:<28} {:<6} {:<16} {:>12} {:>12} {:>6.2}",
            t.name,
            t.kind.dtype().name(),
            format!("{:?}", t.shape),
            t.offset,
            t.n_bytes,
            t.n_bytes as f64 * 8.0 / n as f64
        );
    }
    println!();
    println!(
        "total: {} weights, {} bytes of tensor data, {:.3} bits per weight",
        elems,
        bytes,
        bytes as f64 * 8.0 / elems.max(1) as f64
    );
    if let Ok(cfg) = llq::model::ModelConfig::from_file(&f) {
        // K and V for every layer: what a context of n positions allocates (llq run -c n).
        let elems = |n: usize| cfg.n_layers * n * cfg.kv_dim() * 2;
        let sizes: Vec<String> = llq::kv::CacheType::ALL
            .iter()
            .map(|t| {
                let mib = |n| t.bytes_for(elems(n)) as f64 / (1 << 20) as f64;
                format!(
                    "{} {:.1} MiB ({:.1} MiB at {} positions)",
                    t.name(),
                    mib(1024),
                    mib(cfg.context_length),
                    cfg.context_length
                )
            })
            .collect();
        println!("KV cache per 1024 positions: {}", sizes.join(", "));
    }
    if !data_ok {
        return Err(llq::Error::invalid(
            &path,
            "tensor data checksum mismatch: the file is corrupt",
        ));
    }
    Ok(())
}
