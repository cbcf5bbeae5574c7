//! `pmt dump`: every thread's Python stack, once.

use clap::Args;

/// Print every thread's Python stack once, with the interpreter version and RSS.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// PID of the Python process.
    #[arg(short, long)]
    pub pid: i32,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the subcommand.
pub fn run(_args: DumpArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
