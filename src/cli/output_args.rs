//! The output options that `pmt-sample`, `pmt report` and `pmt top` share, declared once and
//! flattened into each command (clap `flatten`), and their mapping onto the output registry
//! ([`crate::output::format`]).
//!
//! Owns: the names and help of the output options, and naming them in errors.
//! Must not touch: how any format is rendered.

use crate::output::format::{Format, OutputError, Outputs, RenderOptions};
use crate::output::frames::FrameStyle;
use crate::sample::Metric;
use clap::Args;
use std::path::PathBuf;
use std::time::SystemTime;

/// What to write, and how it reads.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Outputs")]
pub struct OutputArgs {
    /// What the flamegraph, folded stacks, speedscope and summary weigh: heap (bytes held
    /// through Python's allocators at the sustained peak, by the stack that allocated them,
    /// sampled in the target by pmt's allocation hook), heap-objects, heap-alloc /
    /// heap-alloc-count (everything allocated), rss (memory growth, bytes, charged to the thread
    /// that caused it), rss-release (memory released), cpu (on-CPU samples), wall (all
    /// samples), malloc-bytes / malloc-count (bytes / calls of the target's libc allocator, per
    /// thread, from eBPF uprobes: needs root or CAP_BPF+CAP_PERFMON). Default: heap where the
    /// allocation hook ran (launched commands), else rss.
    #[arg(short, long, value_parser = parse_metric)]
    pub metric: Option<Metric>,
    /// Write an SVG flamegraph of the metric.
    #[arg(long, value_name = "FILE.svg")]
    pub flame: Option<PathBuf>,
    /// Write folded stacks of the metric (`frame;frame;frame WEIGHT`, root first; exact frame
    /// text, import frames included).
    #[arg(long, value_name = "FILE")]
    pub collapsed: Option<PathBuf>,
    /// Write the JSON timeline: every sample with per-metric deltas, the stack table and a summary.
    #[arg(long, value_name = "FILE.json")]
    pub json: Option<PathBuf>,
    /// Write a speedscope profile of the metric (one sampled profile per thread).
    #[arg(long, value_name = "FILE.json")]
    pub speedscope: Option<PathBuf>,
    /// Write a gzipped pprof profile with a sample type for every metric recorded.
    #[arg(long, value_name = "FILE.pb.gz")]
    pub pprof: Option<PathBuf>,
    /// Write an SVG plot of memory over time: RSS, with what the top stacks held stacked under it.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Put each thread at the root of its stacks, as `thread NAME (TID)`.
    #[arg(long)]
    pub threads: bool,
    /// Keep the import system's frames (`<frozen importlib._bootstrap>` …) in the flamegraph;
    /// by default they are folded away, leaving the imported module's code under its importer.
    #[arg(long)]
    pub show_imports: bool,
    /// Print file paths whole in the flamegraph (by default they are package-relative, e.g.
    /// `http/server.py`, with the full path in the tooltip).
    #[arg(long)]
    pub full_paths: bool,
    /// Draw the flamegraph as an icicle graph (root at the top).
    #[arg(long)]
    pub icicle: bool,
}

fn parse_metric(text: &str) -> Result<Metric, String> {
    text.parse()
        .map_err(|e: crate::sample::UnknownMetric| e.to_string())
}

impl OutputArgs {
    /// The option that names `format`'s file.
    pub fn option(format: Format) -> &'static str {
        match format {
            Format::Flame => "--flame",
            Format::Collapsed => "--collapsed",
            Format::Timeline => "--json",
            Format::Speedscope => "--speedscope",
            Format::Pprof => "--pprof",
            Format::GrowthPlot => "--plot",
        }
    }

    /// The files asked for.
    pub fn requests(&self) -> Vec<(Format, PathBuf)> {
        Format::ALL
            .into_iter()
            .filter_map(|format| {
                let path = match format {
                    Format::Flame => &self.flame,
                    Format::Collapsed => &self.collapsed,
                    Format::Timeline => &self.json,
                    Format::Speedscope => &self.speedscope,
                    Format::Pprof => &self.pprof,
                    Format::GrowthPlot => &self.plot,
                };
                path.clone().map(|p| (format, p))
            })
            .collect()
    }

    /// The metric asked for, else `heap` where `profile` has it, else `rss`.
    pub fn metric_for(&self, profile: &crate::profile::Profile) -> Metric {
        self.metric.unwrap_or(if profile.has_heap() {
            Metric::Heap
        } else {
            Metric::Rss
        })
    }

    /// How the files of `profile` are rendered.
    pub fn render_options(
        &self,
        profile: &crate::profile::Profile,
        started: Option<SystemTime>,
    ) -> RenderOptions {
        RenderOptions {
            metric: self.metric_for(profile),
            threads: self.threads,
            style: FrameStyle {
                show_imports: self.show_imports,
                full_paths: self.full_paths,
            },
            icicle: self.icicle,
            started,
        }
    }

    /// Opens the files asked for.
    pub fn open(&self) -> anyhow::Result<Outputs> {
        Outputs::open(&self.requests()).map_err(named)
    }

    /// Writes `outputs`; returns what was written, or the first failure (after trying the others).
    pub fn write(
        &self,
        outputs: Outputs,
        profile: &crate::profile::Profile,
        started: Option<SystemTime>,
    ) -> anyhow::Result<Vec<String>> {
        let (written, error) = outputs.write(profile, &self.render_options(profile, started));
        match error {
            Some(err) => Err(named(err)),
            None => Ok(written),
        }
    }
}

/// An output error naming the option of the file: `cannot write --flame x.svg: …`.
fn named(err: OutputError) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot write {} {}: {}",
        OutputArgs::option(err.format),
        err.path.display(),
        err.source
    )
}
