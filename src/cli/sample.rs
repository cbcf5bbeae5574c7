//! `pmt sample` / `pmt-sample`.

use clap::Args;

/// Sample a running CPython process (or a command) and charge memory growth to Python stacks.
#[derive(Debug, Args)]
pub struct SampleArgs {
    /// PID of the Python process to attach to.
    #[arg(short, long)]
    pub pid: Option<i32>,
    /// Command to launch and sample until it exits (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// Runs the subcommand.
pub fn run(_args: SampleArgs) -> anyhow::Result<()> {
    anyhow::bail!("`pmt sample` is not built yet: use `pmt dump --pid PID` for stacks")
}
