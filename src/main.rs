//! The `llq` command line. Parses flags and calls the library; stdout carries only the
//! command's output, everything else (logs, progress, timings) goes to stderr.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llq: error: {e}");
            ExitCode::FAILURE
        }
    }
}
