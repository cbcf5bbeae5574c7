//! `pmt report`: re-renders a timeline saved by `pmt-sample --json` as a flamegraph, folded
//! stacks, a speedscope or pprof profile or a memory plot, for any metric, without the target.
//!
//! Owns: the command line of `pmt report` and reading the timeline file.
//! Must not touch: sampling (the timeline is all it reads) or the formats themselves
//! (it writes through the same registry as `pmt-sample`).

use super::output_args::OutputArgs;
use crate::output::timeline;
use crate::profile::Profile;
use anyhow::{Context, bail};
use clap::Args;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Re-render a saved `--json` timeline.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  pmt-sample --json run.json -- python3 app.py
  pmt report run.json --metric cpu --flame cpu.svg --speedscope cpu.speedscope.json
  pmt report run.json --pprof run.pb.gz --collapsed run.folded --threads
  pmt report run.json --plot run-over-time.svg --flame run.svg --icicle")]
pub struct ReportArgs {
    /// The timeline written by `pmt-sample --json`.
    #[arg(value_name = "FILE.json")]
    pub timeline: PathBuf,
    /// What to write, and how it reads.
    #[command(flatten)]
    pub outputs: OutputArgs,
}

/// Reads the timeline at `path`.
fn read_timeline(path: &Path) -> anyhow::Result<Profile> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    timeline::read(file).with_context(|| format!("cannot read {}", path.display()))
}

/// Runs the subcommand.
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    if args.outputs.requests().is_empty() {
        bail!(
            "nothing to write: give --flame, --collapsed, --speedscope, --pprof, --plot and/or --json (see --help)"
        );
    }
    let profile = read_timeline(&args.timeline)?;
    let outputs = args.outputs.open()?;
    let written = args.outputs.write(outputs, &profile, None)?;
    eprintln!("pmt report: wrote {}", written.join(", "));
    Ok(())
}
