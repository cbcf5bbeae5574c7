//! `pmt-sample`: the same program as `pmt sample`.

#[path = "cli/report.rs"]
mod report;
#[path = "cli/sample.rs"]
mod sample;

use clap::Parser;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "pmt-sample", version, about)]
struct PmtSample {
    #[command(flatten)]
    args: sample::SampleArgs,
}

fn main() -> ExitCode {
    match sample::run(PmtSample::parse().args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report::report(&err),
    }
}
