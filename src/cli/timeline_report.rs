//! `pmt report`: re-renders a timeline saved by `pmt-sample --json` as a flamegraph, folded
//! stacks, a speedscope profile or a pprof profile, for any metric, without the target.
//!
//! Owns: the command line of `pmt report`, reading the timeline file, writing the outputs.
//! Must not touch: sampling (the timeline is all it reads) or the formats themselves.

use crate::output::collapsed::{self, FoldOptions};
use crate::output::pprof::{self, PprofOptions};
use crate::output::{flame, speedscope, timeline};
use crate::profile::Profile;
use crate::sampler::Metric;
use anyhow::{Context, bail};
use clap::Args;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Re-render a saved `--json` timeline.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  pmt-sample --json run.json -- python3 app.py
  pmt report run.json --metric cpu --flame cpu.svg --speedscope cpu.speedscope.json
  pmt report run.json --pprof run.pb.gz --collapsed run.folded --threads")]
pub struct ReportArgs {
    /// The timeline written by `pmt-sample --json`.
    #[arg(value_name = "FILE.json")]
    pub timeline: PathBuf,
    /// What the flamegraph, folded stacks and speedscope weigh: rss, rss-release, cpu, wall
    /// (and the allocator metrics when the run recorded them).
    #[arg(short, long, default_value = "rss", value_parser = parse_metric)]
    pub metric: Metric,
    /// Write an SVG flamegraph of the metric.
    #[arg(long, value_name = "FILE.svg")]
    pub flame: Option<PathBuf>,
    /// Write folded stacks of the metric (`frame;frame;frame WEIGHT`, root first).
    #[arg(long, value_name = "FILE")]
    pub collapsed: Option<PathBuf>,
    /// Write a speedscope profile of the metric (one sampled profile per thread).
    #[arg(long, value_name = "FILE.json")]
    pub speedscope: Option<PathBuf>,
    /// Write a gzipped pprof profile with a sample type for every metric recorded.
    #[arg(long, value_name = "FILE.pb.gz")]
    pub pprof: Option<PathBuf>,
    /// Put each thread at the root of its stacks, as `thread NAME (TID)` (flame, collapsed).
    #[arg(long)]
    pub threads: bool,
}

fn parse_metric(text: &str) -> Result<Metric, String> {
    text.parse()
        .map_err(|e: crate::sampler::UnknownMetric| e.to_string())
}

/// Creates `path` and runs `write` on it, naming the option in any error.
fn write_file(
    option: &str,
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let file =
        File::create(path).with_context(|| format!("cannot write {option} {}", path.display()))?;
    let mut out = BufWriter::new(file);
    write(&mut out)
        .and_then(|()| out.flush())
        .with_context(|| format!("cannot write {option} {}", path.display()))
}

/// Reads the timeline at `path`.
fn read_timeline(path: &Path) -> anyhow::Result<Profile> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    timeline::read(file).with_context(|| format!("cannot read {}", path.display()))
}

/// Runs the subcommand.
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    if args.flame.is_none()
        && args.collapsed.is_none()
        && args.speedscope.is_none()
        && args.pprof.is_none()
    {
        bail!(
            "nothing to write: give --flame, --collapsed, --speedscope and/or --pprof (see --help)"
        );
    }
    let profile = read_timeline(&args.timeline)?;
    let fold = FoldOptions {
        metric: args.metric,
        threads: args.threads,
    };
    let mut written = Vec::new();
    if let Some(path) = &args.flame {
        write_file("--flame", path, |out| {
            flame::write(&profile, fold, out).map(|_| ())
        })?;
        written.push(path.display().to_string());
    }
    if let Some(path) = &args.collapsed {
        write_file("--collapsed", path, |out| {
            collapsed::write(&profile, fold, out)
        })?;
        written.push(path.display().to_string());
    }
    if let Some(path) = &args.speedscope {
        write_file("--speedscope", path, |out| {
            speedscope::write(&profile, args.metric, out)
        })?;
        written.push(path.display().to_string());
    }
    if let Some(path) = &args.pprof {
        let options = PprofOptions::for_run(&profile, args.metric, None);
        write_file("--pprof", path, |out| pprof::write(&profile, &options, out))?;
        written.push(path.display().to_string());
    }
    eprintln!("pmt report: wrote {}", written.join(", "));
    Ok(())
}
