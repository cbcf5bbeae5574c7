//! `pmt sample` / `pmt-sample`: attach to (or launch) a CPython process, sample it, and write
//! memory flamegraphs, folded stacks, speedscope and pprof profiles, a JSON timeline and a
//! memory plot, and push pprof profiles to a Pyroscope server.
//!
//! Owns: the command line of the sampler, progress and summary on stderr.
//! Must not touch: how the run is assembled ([`crate::run`]), how stacks, counters or samples
//! are produced, or how outputs are rendered ([`crate::output::format`]).

use super::output_args::OutputArgs;
use super::run_args::{RunArgs, start_run};
use super::unsampled::UnsampledChildren;
use crate::attach::stop;
use crate::output::collapsed::{self, FoldOptions};
use crate::output::format_value;
use crate::output::frames::FrameLabels;
use crate::output::pyroscope::{PyroscopeConfig, Uploader};
use crate::profile::Profile;
use crate::run::{Finished, MallocMode, RunObserver};
use crate::sample::{Metric, ProcessIdentity, Sample, Unit};
use crate::sampler::{SamplerStats, StopReason};
use clap::Args;
use std::io::IsTerminal;

/// Sample a running CPython process (or a command) and charge memory growth to Python stacks.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  pmt-sample --pid 1234 --duration 30 --flame grow.svg
  pmt-sample --threads --collapsed out.folded --json out.json -- python3 app.py
  pmt-sample --subprocesses --flame pool.svg -- python3 pool_app.py
  pmt-sample --pid 1234 --pprof grow.pb.gz --speedscope grow.speedscope.json
  pmt-sample --flame grow.svg --plot grow-over-time.svg -- python3 app.py
  pmt-sample --pid 1234 --pyroscope http://localhost:4040 --app myapp{env=prod}

rss charges RSS growth, by default (--attribution auto, where eBPF is available), to the Python
stack the kernel captures at each page fault that grows it; with --attribution ticks (or without
eBPF), each interval's growth goes to the threads that page-faulted in it, at the stack they are
in at the end of the interval. Either way a stack is weighed by the growth it still owned when
RSS was at its sustained peak (memory freed again within 250 ms does not count).
Needs ptrace rights over the target: root, CAP_SYS_PTRACE, or kernel.yama.ptrace_scope=0.")]
pub struct SampleArgs {
    /// What to sample and how.
    #[command(flatten)]
    pub run: RunArgs,
    /// What to write, and how it reads.
    #[command(flatten)]
    pub outputs: OutputArgs,
    /// Push pprof profiles to this Pyroscope server's /ingest endpoint (e.g.
    /// http://localhost:4040) every --upload-interval seconds and at the end. A failed push is
    /// a warning; local outputs are written regardless.
    #[arg(long, value_name = "URL", requires = "app")]
    pub pyroscope: Option<String>,
    /// The application name the pushes carry (Pyroscope's `name`; labels allowed: app{env=prod}).
    #[arg(long, value_name = "NAME", requires = "pyroscope")]
    pub app: Option<String>,
    /// Seconds between pushes to Pyroscope.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub upload_interval: f64,
}

/// Runs the subcommand.
pub fn run(args: SampleArgs) -> anyhow::Result<()> {
    let metric = args.outputs.metric;
    let mut options = args.run.options(metric.map_or(MallocMode::Off, |m| {
        MallocMode::for_metric(m, MallocMode::Off)
    }))?;
    // A profile of time needs nothing loaded into the kernel or the target.
    if let Some(m) = metric.filter(|m| m.unit() == Unit::Samples)
        && let Some(left_out) = options.for_time_only()
    {
        eprintln!(
            "pmt-sample: --metric {} weighs time only, so pmt-sample loads {left_out} (memory in --json is charged at ticks)",
            m.name()
        );
    }
    let pyroscope = match (&args.pyroscope, &args.app) {
        (Some(url), Some(app)) => Some(PyroscopeConfig::new(
            url,
            app,
            args.upload_interval,
            // The run's own, set once it has started (below).
            args.run.rate.unwrap_or(crate::run::DEFAULT_RATE_HZ),
            metric.unwrap_or(Metric::Rss),
        )?),
        _ => None,
    };
    let (run, outputs, options) = start_run(options, &args.outputs)?;
    let rate_hz = run.rate_hz();
    let shown_notes = run.notes().to_vec();
    for note in &shown_notes {
        eprintln!("pmt-sample: {note}");
    }
    let target = run.target();
    let mut unsampled = UnsampledChildren::new(target.pid, run.is_tree());
    let what = if run.is_tree() {
        format!("process {} and its Python descendants", target.pid)
    } else {
        format!(
            "process {} (Python {})",
            target.pid,
            target.python_version.as_deref().unwrap_or("?")
        )
    };
    eprintln!(
        "pmt-sample: sampling {what} at {rate_hz} Hz{}{}; Ctrl-C to stop",
        options
            .duration
            .map_or(String::new(), |d| format!(" for {:.1} s", d.as_secs_f64())),
        if args.run.rate.is_none() && rate_hz == crate::run::MEMORY_RATE_HZ {
            format!(
                " (memory captured in the kernel is charged {} times a second; stacks need no higher rate: --rate to change)",
                crate::run::CAPTURE_TICK_HZ
            )
        } else {
            String::new()
        },
    );
    if let Some(line) = unsampled.announce() {
        eprintln!("pmt-sample: {line}");
    }
    let mut uploader = pyroscope.map(|mut config| {
        config.rate_hz = rate_hz;
        Uploader::start(config, target.clone())
    });
    let mut finished = {
        let mut progress = Progress::new(uploader.as_mut());
        let finished = run.sample(stop::flag(), &mut progress);
        progress.finish();
        finished
    };
    let written = args
        .outputs
        .write(outputs, &finished.profile, Some(finished.started));
    let child_note = finished.stop_target();
    let pushed = uploader.map(|u| {
        let url = u.url().to_string();
        (url, u.finish(finished.stats.elapsed))
    });
    finished.notes.retain(|note| !shown_notes.contains(note));
    print_summary(&finished, &args, child_note.as_deref());
    unsampled.look_again();
    if let Some(line) = unsampled.describe() {
        eprintln!("pmt-sample: {line}");
    }
    if let Some((url, pushed)) = pushed {
        eprintln!(
            "  pushed to Pyroscope {url}: {} sent, {} failed, {} dropped",
            pushed.sent, pushed.failed, pushed.dropped
        );
    }
    let written = written?;
    if !written.is_empty() {
        eprintln!("  wrote: {}", written.join(", "));
    }
    Ok(())
}

/// The closing summary on stderr, with the run's notes after it.
fn print_summary(finished: &Finished, args: &SampleArgs, child_note: Option<&str>) {
    let (profile, stats) = (&finished.profile, &finished.stats);
    let Some(summary) = &profile.summary else {
        return;
    };
    let stop = stats.stop.unwrap_or(StopReason::Interrupted);
    let mut stop_text = stop.describe().to_string();
    if let Some(note) = child_note {
        stop_text = format!("{stop_text}; {note}");
    }
    eprintln!(
        "pmt-sample: stopped after {:.2} s: {stop_text}",
        summary.duration_s
    );
    let time_in_kernel = stats.in_kernel.as_ref().filter(|k| k.samples_time);
    let last_error = stats
        .last_error
        .as_deref()
        .map(|e| format!(" (last: {e})"))
        .unwrap_or_default();
    match time_in_kernel {
        // The kernel sampled time; the ticks only read what it captured and the stacks.
        Some(kernel) => eprintln!(
            "  samples: {} on CPUs at {} Hz a thread ({:.1} a second in all), taken in the kernel, and {} intervals off CPUs; stack reads: {} at {:.1} Hz, read errors: {}{last_error}",
            kernel.cpu_samples,
            summary.rate_hz,
            kernel.cpu_samples as f64 / summary.duration_s.max(1e-9),
            kernel.off_cpu_intervals,
            summary.samples,
            summary.achieved_rate(),
            summary.read_errors,
        ),
        None => eprintln!(
            "  samples: {} at {:.1} Hz (asked {}), missed ticks: {}, read errors: {}{last_error}",
            summary.samples,
            summary.achieved_rate(),
            summary.rate_hz,
            summary.missed_ticks,
            summary.read_errors,
        ),
    }
    eprintln!(
        "  thread stacks torn and read again: {}, torn on every try: {} (charged to the thread's previous stack)",
        stats.torn_reads, stats.unreadable_stacks
    );
    if stats.execs > 0 {
        eprintln!(
            "  {} program(s) replaced by exec: each new program was read anew, and what the old one's stacks held on the heap was given back{}",
            stats.execs,
            if stats.tree.is_none() && stats.heap.is_some() {
                " (a program started by exec loads the allocation hook with --subprocesses)"
            } else {
                ""
            }
        );
    }
    if let Some(exe) = &stats.replaced_by_unread {
        eprintln!(
            "  the program was replaced (exec) by {exe}, which runs no Python interpreter pmt can read: nothing was sampled of it"
        );
    }
    if stats.stacks_unchanged > 0 {
        eprintln!(
            "  samples that needed no stack read (no thread had run since the last read): {}",
            stats.stacks_unchanged
        );
    }
    if let (Some(p50), Some(p99)) = (summary.sample_cost_p50_us, summary.sample_cost_p99_us) {
        let per = if time_in_kernel.is_some() {
            "stack read"
        } else {
            "sample"
        };
        eprintln!("  cost per {per}: p50 {p50:.1} µs, p99 {p99:.1} µs");
    }
    if let Some(rss) = stats.rss {
        eprintln!("  RSS at the end: {}", format_value(Metric::Rss, rss));
    }
    let metric = args.outputs.metric_for(profile);
    if matches!(metric, Metric::Rss) {
        eprintln!("  {}", summary.attribution_note());
    } else if let Some(kernel) = time_in_kernel {
        eprintln!("  {}", kernel.note());
    }
    if let Some(line) = heap_line(profile, stats, metric, args.outputs.metric.is_none()) {
        eprintln!("  {line}");
    }
    if let Some(warning) = &summary.warning {
        eprintln!("  {warning}");
    }
    print_top_stacks(profile, &args.outputs);
    for note in &finished.notes {
        eprintln!("  {note}");
    }
}

/// What the `heap` view saw: the metric chosen by default and why, the hook's tallies, and
/// how much of the RSS growth did not go through Python's allocators.
fn heap_line(
    profile: &Profile,
    stats: &SamplerStats,
    metric: Metric,
    defaulted: bool,
) -> Option<String> {
    let tallies = stats.heap?;
    let held = profile.total(Metric::Heap);
    let rss = profile.total(Metric::Rss);
    let mut line = format!(
        "heap: {} held at the sustained peak by the stacks that allocated it ({} sampled allocations, one per {} KiB, {} still live)",
        format_value(Metric::Heap, held),
        tallies.samples,
        tallies.sample_bytes / 1024,
        tallies.live_samples
    );
    if defaulted && metric == Metric::Heap {
        line.push_str("; the default metric, since the allocation hook ran");
    }
    if rss > held {
        line.push_str(&format!(
            "; {} of RSS growth did not go through Python's allocators (native buffers, C libraries): see --metric rss",
            format_value(Metric::Rss, rss - held)
        ));
    }
    if tallies.stacks_full + tallies.table_full > 0 {
        line.push_str(&format!(
            "; {} samples found the hook's tables full",
            tallies.stacks_full + tallies.table_full
        ));
    }
    Some(line)
}

/// The five heaviest stacks of the metric, innermost three frames each, as the flamegraph
/// labels them.
fn print_top_stacks(profile: &Profile, outputs: &OutputArgs) {
    let metric = outputs.metric_for(profile);
    let labels = FrameLabels::new(profile, outputs.render_options(profile, None).style);
    let fold = FoldOptions {
        metric,
        threads: outputs.threads,
    };
    let mut folded = collapsed::fold_labelled(profile, fold, &labels);
    let total: u64 = folded.iter().map(|(_, w)| w).sum();
    if total == 0 {
        eprintln!("  nothing was charged to {metric}");
        return;
    }
    folded.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    eprintln!(
        "  top stacks by {metric} (total {}):",
        format_value(metric, total)
    );
    let several = !profile.processes().is_empty();
    for (stack, weight) in folded.iter().take(5) {
        let innermost: Vec<&str> = stack.rsplit(';').take(3).collect();
        // With --subprocesses the root frame names the process; say it when the three
        // innermost frames do not reach it.
        let mut process = match stack.split(';').next() {
            Some(root) if several && stack.split(';').count() > 3 => format!("  [{root}]"),
            _ => String::new(),
        };
        // With --async, likewise the task the stack ran in.
        if let Some(task) = stack
            .split(';')
            .find(|f| f.starts_with(crate::python::TASK_FRAME_PREFIX))
            && !innermost.contains(&task)
        {
            process.push_str(&format!("  [{task}]"));
        }
        eprintln!(
            "  {:>12} {:5.1}%  {}{process}",
            format_value(metric, *weight),
            100.0 * *weight as f64 / total as f64,
            innermost.join(" ← ")
        );
    }
}

/// Keeps one progress line up to date on a terminal, and hands samples to the Pyroscope
/// uploader.
struct Progress<'a> {
    uploader: Option<&'a mut Uploader>,
    live: bool,
    shown: bool,
}

impl<'a> Progress<'a> {
    fn new(uploader: Option<&'a mut Uploader>) -> Progress<'a> {
        Progress {
            uploader,
            live: std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    /// Clears the progress line.
    fn finish(&mut self) {
        if self.shown {
            eprint!("\r\x1b[K");
        }
    }
}

impl RunObserver for Progress<'_> {
    fn sample(&mut self, process: Option<&ProcessIdentity>, sample: &Sample) {
        if let Some(uploader) = self.uploader.as_deref_mut() {
            match process {
                Some(process) => uploader.record_process(process, sample),
                None => uploader.record(sample),
            }
        }
    }

    fn progress(&mut self, stats: &SamplerStats, _profile: &Profile) {
        if !self.live {
            return;
        }
        self.shown = true;
        eprint!(
            "\r\x1b[Kpmt-sample: {:.1} s, {} samples, {:.1} Hz, {} missed, {} errors, RSS {}",
            stats.elapsed.as_secs_f64(),
            stats.samples,
            stats.achieved_rate(),
            stats.missed_ticks,
            stats.read_errors,
            stats
                .rss
                .map_or("?".to_string(), |r| format_value(Metric::Rss, r))
        );
    }
}
