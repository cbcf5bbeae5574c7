//! `pmt`: the pymemtrace command line.

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Find which Python code makes a process grow.
#[derive(Debug, Parser)]
#[command(name = "pmt", version, about)]
struct Pmt {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print every thread's Python stack once.
    Dump(cli::dump::DumpArgs),
    /// Sample a Python process and charge memory growth to its stacks (same as `pmt-sample`).
    Sample(cli::sample::SampleArgs),
}

fn main() -> ExitCode {
    let pmt = Pmt::parse();
    let result = match pmt.command {
        Command::Dump(args) => cli::dump::run(args),
        Command::Sample(args) => cli::sample::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => cli::report::report(&err),
    }
}
