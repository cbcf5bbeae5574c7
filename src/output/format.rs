//! The registry of output files: every format a run (or a saved timeline) can be written as,
//! how each is rendered from a [`Profile`], and the set of files a run was asked for, opened
//! before sampling starts (so an unwritable path fails early) and written once at the end.
//! `pmt-sample`, `pmt report` and `pmt top` all write through it.
//!
//! Owns: the list of formats, their render options, opening and writing the files.
//! Must not touch: sampling, or the command line (callers name the options; errors here
//! name the file and the format only).

use super::collapsed::{self, FoldOptions};
use super::flame::{self, FlameOptions, FlameOutcome};
use super::frames::FrameStyle;
use super::pprof::{self, PprofOptions};
use super::{growth_plot, speedscope, timeline};
use crate::profile::Profile;
use crate::sample::Metric;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// An output file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// SVG flamegraph of the metric (inferno).
    Flame,
    /// Folded stacks of the metric.
    Collapsed,
    /// The JSON timeline (every sample), readable back by `pmt report`.
    Timeline,
    /// speedscope JSON of the metric.
    Speedscope,
    /// gzipped pprof with a sample type per recorded metric.
    Pprof,
    /// SVG memory-over-time plot: RSS, with the top stacks' holdings stacked.
    GrowthPlot,
}

impl Format {
    /// Every format, in the order files are written.
    pub const ALL: [Format; 6] = [
        Format::Flame,
        Format::Collapsed,
        Format::Timeline,
        Format::Speedscope,
        Format::Pprof,
        Format::GrowthPlot,
    ];

    /// What the file is, for messages (`flamegraph`, `pprof profile`).
    pub fn describe(self) -> &'static str {
        match self {
            Format::Flame => "flamegraph",
            Format::Collapsed => "folded stacks",
            Format::Timeline => "timeline",
            Format::Speedscope => "speedscope profile",
            Format::Pprof => "pprof profile",
            Format::GrowthPlot => "memory plot",
        }
    }

    /// Whether rendering needs every sample kept (not only the totals).
    pub fn needs_timeline(self) -> bool {
        matches!(self, Format::Timeline | Format::GrowthPlot)
    }

    /// Renders `profile` into `out`; returns a few words on what was written.
    pub fn render(
        self,
        profile: &Profile,
        options: &RenderOptions,
        out: &mut dyn Write,
    ) -> io::Result<String> {
        let metric = options.metric;
        let fold = FoldOptions {
            metric,
            threads: options.threads,
        };
        match self {
            Format::Flame => {
                let flame_options = FlameOptions {
                    fold,
                    style: options.style,
                    icicle: options.icicle,
                };
                Ok(match flame::write(profile, flame_options, &mut *out)? {
                    FlameOutcome::Drawn if options.icicle => format!("icicle graph of {metric}"),
                    FlameOutcome::Drawn => format!("flamegraph of {metric}"),
                    FlameOutcome::Empty => format!("empty: nothing was charged to {metric}"),
                })
            }
            Format::Collapsed => {
                collapsed::write(profile, fold, out).map(|()| format!("folded {metric}"))
            }
            Format::Timeline => timeline::write(profile, out).map(|()| "timeline".to_string()),
            Format::Speedscope => {
                speedscope::write(profile, metric, out).map(|()| format!("speedscope of {metric}"))
            }
            Format::Pprof => {
                let pprof_options = PprofOptions::for_run(profile, metric, options.started);
                pprof::write(profile, &pprof_options, out).map(|()| "pprof".to_string())
            }
            Format::GrowthPlot => {
                let title = format!(
                    "Memory over time: pid {} {}",
                    profile.target.pid, profile.target.command
                );
                let title: String = title.chars().take(90).collect();
                growth_plot::write(profile, &title, out).map(|()| "memory plot".to_string())
            }
        }
    }
}

/// How the outputs of a run are rendered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenderOptions {
    /// The metric the flamegraph, folded stacks and speedscope weigh (pprof's default).
    pub metric: Metric,
    /// Threads as root frames.
    pub threads: bool,
    /// How frames read in the flamegraph.
    pub style: FrameStyle,
    /// Draw the flamegraph as an icicle graph.
    pub icicle: bool,
    /// When sampling started (pprof's time), where known.
    pub started: Option<SystemTime>,
}

/// A file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the {} {}: {source}", format.describe(), path.display())]
pub struct OutputError {
    /// Its format.
    pub format: Format,
    /// Its path.
    pub path: PathBuf,
    /// What failed.
    #[source]
    pub source: io::Error,
}

/// One output file, created before sampling.
#[derive(Debug)]
struct OutputFile {
    format: Format,
    path: PathBuf,
    file: File,
    /// Whether the path existed before (it is then never removed).
    existed: bool,
}

/// The files a run was asked for, open and empty until [`Outputs::write`].
#[derive(Debug, Default)]
pub struct Outputs {
    files: Vec<OutputFile>,
}

impl Outputs {
    /// Creates every requested file; on a failure, removes those this call created.
    pub fn open(requests: &[(Format, PathBuf)]) -> Result<Outputs, OutputError> {
        let mut outputs = Outputs::default();
        for (format, path) in requests {
            match create(*format, path) {
                Ok(file) => outputs.files.push(file),
                Err(err) => {
                    outputs.discard();
                    return Err(err);
                }
            }
        }
        Ok(outputs)
    }

    /// Whether no file was asked for.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Whether some format needs the profile to keep every sample.
    pub fn needs_timeline(&self) -> bool {
        self.files.iter().any(|f| f.format.needs_timeline())
    }

    /// Removes the (still empty) files this run created, when it fails before writing.
    pub fn discard(self) {
        for file in self.files {
            if !file.existed {
                // Best effort: the file is empty, and failing to remove it changes nothing else.
                let _ = std::fs::remove_file(&file.path);
            }
        }
    }

    /// Writes every file; returns `path (what)` of each one written, and the first failure
    /// (after trying the others).
    pub fn write(
        self,
        profile: &Profile,
        options: &RenderOptions,
    ) -> (Vec<String>, Option<OutputError>) {
        let mut written = Vec::new();
        let mut first_error = None;
        for file in self.files {
            let result = (|| {
                let mut out = BufWriter::new(&file.file);
                let what = file.format.render(profile, options, &mut out)?;
                out.flush()?;
                Ok(what)
            })();
            match result {
                Ok(what) => written.push(format!("{} ({what})", file.path.display())),
                Err(source) => {
                    first_error.get_or_insert(OutputError {
                        format: file.format,
                        path: file.path,
                        source,
                    });
                }
            }
        }
        (written, first_error)
    }
}

fn create(format: Format, path: &Path) -> Result<OutputFile, OutputError> {
    let existed = path.exists();
    let file = File::create(path).map_err(|source| OutputError {
        format,
        path: path.to_path_buf(),
        source,
    })?;
    Ok(OutputFile {
        format,
        path: path.to_path_buf(),
        file,
        existed,
    })
}
