//! The command line of `pmt` and `pmt-sample`: argument definitions (clap), the dispatch to
//! the library, and the mapping of errors to one line on stderr and an exit code.
//!
//! It lives in the library so that the binaries and the `pymemtrace` Python package's console
//! scripts run exactly the same code.

pub mod dump;
pub mod heap;
mod output_args;

mod monitor_common;
pub mod process;
pub mod report;
mod run_args;
pub mod sample;
pub mod timeline_report;
pub mod top;
pub mod tree;
mod unsampled;

use clap::{Parser, Subcommand};
use std::ffi::OsString;
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
    Dump(dump::DumpArgs),
    /// What is held and who holds it: live objects by type and the holders that retain the most.
    Heap(heap::HeapArgs),
    /// Sample a Python process and charge memory growth to its stacks (same as `pmt-sample`).
    Sample(sample::SampleArgs),
    /// Log one process's memory and CPU over time (pymemtrace `process.py`).
    Process(process::ProcessArgs),
    /// Monitor a process and all its descendants (pymemtrace `process_tree.py`).
    Tree(tree::TreeArgs),
    /// Re-render a saved `--json` timeline as flamegraph, folded, speedscope, pprof or plot.
    Report(timeline_report::ReportArgs),
    /// Watch live which functions grow memory now (q quits).
    Top(top::TopArgs),
}

/// Sample a running CPython process (or a command) and charge memory growth to Python stacks
/// (the same program as `pmt sample`).
#[derive(Debug, Parser)]
#[command(name = "pmt-sample", version)]
struct PmtSample {
    #[command(flatten)]
    args: sample::SampleArgs,
}

/// Runs `pmt` with `args` (the first is the program name) and returns its exit code.
pub fn pmt_main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let pmt = match Pmt::try_parse_from(args) {
        Ok(pmt) => pmt,
        Err(err) => return report::clap_exit(err),
    };
    let result = match pmt.command {
        Command::Dump(args) => dump::run(args),
        Command::Heap(args) => heap::run(args),
        Command::Sample(args) => sample::run(args),
        Command::Process(args) => process::run(args),
        Command::Tree(args) => tree::run(args),
        Command::Report(args) => timeline_report::run(args),
        Command::Top(args) => top::run(args),
    };
    report::exit_code(result)
}

/// Runs `pmt-sample` with `args` (the first is the program name) and returns its exit code.
pub fn pmt_sample_main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match PmtSample::try_parse_from(args) {
        Ok(parsed) => report::exit_code(sample::run(parsed.args)),
        Err(err) => report::clap_exit(err),
    }
}
