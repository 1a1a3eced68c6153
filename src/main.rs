//! The `llq` command line. Parses flags and calls the library; stdout carries only the
//! command's output, everything else (logs, progress, timings) goes to stderr.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`llq info m.llq | head`) like other Unix tools, instead
    // of panicking on the failed write.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any other thread exists; SIG_DFL is a
    // valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = cli::Cli::parse_from(cli::llama_cpp_spellings(std::env::args_os()));
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llq: error: {e}");
            ExitCode::FAILURE
        }
    }
}
