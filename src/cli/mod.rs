//! Subcommands of the `llq` binary.

mod bench;
mod chat;
mod common;
mod convert;
mod imatrix;
mod info;
mod perplexity;
mod progress;
mod run;
mod tokenize;

use clap::{Parser, Subcommand};
use llq::Result;

#[derive(Parser)]
#[command(
    name = "llq",
    version,
    about = "A quantized LLM runtime for the LLaMA family",
    long_about = "llq converts LLaMA-family checkpoints (a Hugging Face safetensors \
directory or a GGUF file) into one self-contained, memory-mappable .llq file and runs them \
on the CPU.\n\n\
Typical use:\n  llq convert ./TinyLlama-1.1B -o tinyllama.llq --type q4_0\n  \
llq convert SmolLM2-135M-Instruct.Q4_1.gguf -o smollm2.llq --type q8_0\n  \
llq info tinyllama.llq\n  llq run -m smollm2.llq -p \"Why is the sky blue?\" -n 64\n  \
llq chat -m smollm2.llq"
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    Convert(convert::Args),
    Info(info::Args),
    Run(run::Args),
    Chat(chat::Args),
    Tokenize(tokenize::Args),
    Perplexity(perplexity::Args),
    Bench(bench::Args),
    Imatrix(imatrix::Args),
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Command::Convert(a) => convert::run(a),
        Command::Info(a) => info::run(a),
        Command::Run(a) => run::run(a),
        Command::Chat(a) => chat::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Perplexity(a) => perplexity::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Imatrix(a) => imatrix::run(a),
    }
}

/// llama.cpp's flags that are one dash and several letters (`-ngl 99`), which no flag
/// parser reads as one flag (clap would take `-ngl` as `-n gl`), spelled the long way.
pub fn llama_cpp_spellings(
    args: impl Iterator<Item = std::ffi::OsString>,
) -> impl Iterator<Item = std::ffi::OsString> {
    args.map(|a| match a.to_str() {
        Some("-ngl") => "--n-gpu-layers".into(),
        Some(s) if s.starts_with("-ngl=") => format!("--n-gpu-layers={}", &s[5..]).into(),
        _ => a,
    })
}

/// Size the global compute pool once (the library's rule: 0 = one thread per physical
/// core; more than the logical CPUs is capped, said here).
pub fn init_threads(n: usize) -> Result<()> {
    warn_if_capped(llq::threads::init(n)?);
    Ok(())
}

/// A `-t` above the logical CPUs was cut to their number: say so, since the user asked
/// for something else.
pub fn warn_if_capped(t: llq::threads::ThreadCount) {
    if t.capped() {
        eprintln!(
            "llq: warning: -t {}: this process may use {} logical CPUs; using {} threads \
             (more would only take turns on the same cores)",
            t.requested,
            llq::threads::logical_cpus(),
            t.n
        );
    }
}
