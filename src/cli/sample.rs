//! `pmt sample` / `pmt-sample`: attach to (or launch) a CPython process, sample it, and write
//! memory flamegraphs, folded stacks, speedscope and pprof profiles and a JSON timeline, and
//! push pprof profiles to a Pyroscope server.
//!
//! Owns: the command line of the sampler, launching the target command, signal handling,
//! progress and summary on stderr, and opening and writing the output files.
//! Must not touch: how stacks, counters or samples are produced (it calls `python`,
//! `sampler`, `profile` and `output`).

use crate::attach::child::{LaunchedChild, NotReady};
use crate::attach::stop;
use crate::output::collapsed::{self, FoldOptions};
use crate::output::pprof::{self, PprofOptions};
use crate::output::pyroscope::{PyroscopeConfig, Uploader};
use crate::output::{flame, format_value, speedscope, timeline};
use crate::profile::{Profile, RunSummary, TargetInfo};
use crate::python::{PythonSpy, SpyError, SpyOptions};
use crate::sampler::process_tree::ProcessTreeSampler;
use crate::sampler::{
    Metric, ProcessIdentity, Sample, SampleSink, Sampler, SamplerOptions, SamplerStats, StopReason,
};
use anyhow::{Context, bail};
use clap::Args;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Sample a running CPython process (or a command) and charge memory growth to Python stacks.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  pmt-sample --pid 1234 --duration 30 --flame grow.svg
  pmt-sample --threads --collapsed out.folded --json out.json -- python3 app.py
  pmt-sample --subprocesses --flame pool.svg -- python3 pool_app.py
  pmt-sample --pid 1234 --pprof grow.pb.gz --speedscope grow.speedscope.json
  pmt-sample --pid 1234 --pyroscope http://localhost:4040 --app myapp{env=prod}

rss charges each interval's RSS growth to the threads that page-faulted in it, at the stack they
are in at the end of the interval, and weighs a stack by the growth it still owned when RSS was
at its sustained peak (memory freed again within 250 ms does not count).
Needs ptrace rights over the target: root, CAP_SYS_PTRACE, or kernel.yama.ptrace_scope=0.")]
pub struct SampleArgs {
    /// PID of the Python process to attach to (no restart, no code change).
    #[arg(short, long, conflicts_with = "command")]
    pub pid: Option<i32>,
    /// Samples per second.
    #[arg(short, long, default_value_t = 100.0, value_name = "HZ")]
    pub rate: f64,
    /// Stop after this many seconds (default: until the target exits or Ctrl-C).
    #[arg(short, long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// What the flamegraph, folded stacks and summary weigh: rss (memory growth, bytes, charged
    /// to the thread that caused it), rss-release (memory released), cpu (on-CPU samples),
    /// wall (all samples), malloc-bytes / malloc-count (bytes / calls of the target's libc
    /// allocator, per thread, from eBPF uprobes: needs root or CAP_BPF+CAP_PERFMON).
    #[arg(short, long, default_value = "rss", value_parser = parse_metric)]
    pub metric: Metric,
    /// Write an SVG flamegraph of the metric.
    #[arg(long, value_name = "FILE.svg")]
    pub flame: Option<PathBuf>,
    /// Write folded stacks of the metric (`frame;frame;frame WEIGHT`, root first).
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
    /// Put each thread at the root of its stacks, as `thread NAME (TID)`.
    #[arg(long)]
    pub threads: bool,
    /// Also sample the target's descendant processes as they appear and exit (multiprocessing
    /// pools, pre-fork workers); each gets a root frame `process PID: CMD` and its own RSS.
    /// The target may then be a launcher (a shell, pyenv's shim, a venv script).
    #[arg(long)]
    pub subprocesses: bool,
    /// With malloc-bytes / malloc-count: also count CPython's object allocator (pymalloc), so
    /// small objects count too. Slows the target more: these calls are very frequent.
    #[arg(long)]
    pub python_allocators: bool,
    /// Pause each thread while reading it (consistent stacks; the target stops briefly).
    #[arg(long, conflicts_with = "nonblocking")]
    pub blocking: bool,
    /// Read without pausing the target (the default).
    #[arg(long)]
    pub nonblocking: bool,
    /// Command to launch and sample until it exits (after `--`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

fn parse_metric(text: &str) -> Result<Metric, String> {
    text.parse()
        .map_err(|e: crate::sampler::UnknownMetric| e.to_string())
}

/// An output file opened before sampling starts (so an unwritable path fails early).
struct OutputFile {
    option: &'static str,
    path: PathBuf,
    file: File,
    existed: bool,
}

impl OutputFile {
    fn create(option: &'static str, path: &Path) -> anyhow::Result<OutputFile> {
        let existed = path.exists();
        let file = File::create(path)
            .with_context(|| format!("cannot write {option} {}", path.display()))?;
        Ok(OutputFile {
            option,
            path: path.to_path_buf(),
            file,
            existed,
        })
    }

    /// Removes a file this run created, when the run fails before writing anything.
    fn discard(self) {
        if !self.existed {
            // Best effort: the file is empty, and failing to remove it changes nothing else.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The outputs asked for.
#[derive(Default)]
struct Outputs {
    flame: Option<OutputFile>,
    collapsed: Option<OutputFile>,
    json: Option<OutputFile>,
    speedscope: Option<OutputFile>,
    pprof: Option<OutputFile>,
}

impl Outputs {
    fn open(args: &SampleArgs) -> anyhow::Result<Outputs> {
        let mut outputs = Outputs::default();
        let open =
            |option, path: &Option<PathBuf>| path.as_deref().map(|p| OutputFile::create(option, p));
        let result = (|| -> anyhow::Result<()> {
            outputs.flame = open("--flame", &args.flame).transpose()?;
            outputs.collapsed = open("--collapsed", &args.collapsed).transpose()?;
            outputs.json = open("--json", &args.json).transpose()?;
            outputs.speedscope = open("--speedscope", &args.speedscope).transpose()?;
            outputs.pprof = open("--pprof", &args.pprof).transpose()?;
            Ok(())
        })();
        match result {
            Ok(()) => Ok(outputs),
            Err(err) => {
                outputs.discard();
                Err(err)
            }
        }
    }

    fn discard(self) {
        for file in [
            self.flame,
            self.collapsed,
            self.json,
            self.speedscope,
            self.pprof,
        ]
        .into_iter()
        .flatten()
        {
            file.discard();
        }
    }
}

/// The process being sampled, and whether we launched it.
struct Target {
    pid: i32,
    command: String,
    child: Option<LaunchedChild>,
}

/// Runs the subcommand.
pub fn run(args: SampleArgs) -> anyhow::Result<()> {
    if args.pid.is_none() && args.command.is_empty() {
        bail!("nothing to sample: give --pid PID, or a command after `--` (see --help)");
    }
    if args.python_allocators && !matches!(args.metric, Metric::MallocBytes | Metric::MallocCount) {
        bail!("--python-allocators goes with --metric malloc-bytes or malloc-count");
    }
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!(
            "--rate must be a positive number of samples per second, not {}",
            args.rate
        );
    }
    let duration = match args.duration {
        Some(secs) if !(secs.is_finite() && secs > 0.0) => {
            bail!("--duration must be a positive number of seconds, not {secs}")
        }
        Some(secs) => Some(Duration::from_secs_f64(secs)),
        None => None,
    };
    let pyroscope = match (&args.pyroscope, &args.app) {
        (Some(url), Some(app)) => Some(PyroscopeConfig::new(
            url,
            app,
            args.upload_interval,
            args.rate,
            args.metric,
        )?),
        _ => None,
    };
    stop::install_handlers().context("cannot install the SIGINT/SIGTERM handlers")?;
    let outputs = Outputs::open(&args)?;
    let spy_options = SpyOptions {
        blocking: args.blocking,
        thread_state: false,
        ..SpyOptions::default()
    };
    let sampler_options = SamplerOptions {
        rate_hz: args.rate,
        duration,
    };
    if args.subprocesses {
        return sample_tree(&args, sampler_options, &spy_options, outputs, pyroscope);
    }
    let (mut target, spy) = match start_target(&args, &spy_options) {
        Ok(started) => started,
        Err(err) => {
            outputs.discard();
            return Err(err);
        }
    };
    let python_version = spy.version().to_string();
    let mut sampler = match Sampler::new(spy, target.pid, sampler_options) {
        Ok(sampler) => sampler,
        Err(err) => {
            outputs.discard();
            stop_child(&mut target, Duration::ZERO);
            return Err(err.into());
        }
    };
    if matches!(args.metric, Metric::MallocBytes | Metric::MallocCount) {
        let options = crate::memory::malloc::MallocOptions {
            python_allocators: args.python_allocators,
            frees: false,
        };
        match super::malloc_metrics::add_malloc_sources(&mut sampler, target.pid, &options) {
            Ok(description) => eprintln!("pmt-sample: counting allocations with {description}"),
            Err(err) => {
                outputs.discard();
                stop_child(&mut target, Duration::ZERO);
                return Err(err.into());
            }
        }
    }
    if !sampler.has_thread_counters() {
        eprintln!(
            "pmt-sample: per-thread page faults of process {} are unreadable: RSS growth will be charged to the GIL holder",
            target.pid
        );
    }
    let info = TargetInfo {
        pid: target.pid,
        command: target.command.clone(),
        python_version: Some(python_version.clone()),
    };
    let mut profile = Profile::new(info, outputs.json.is_some());
    eprintln!(
        "pmt-sample: sampling process {} (Python {python_version}) at {} Hz{}; Ctrl-C to stop",
        target.pid,
        args.rate,
        duration.map_or(String::new(), |d| format!(" for {:.1} s", d.as_secs_f64()))
    );
    let mut uploader = pyroscope.map(|config| Uploader::start(config, profile.target.clone()));
    let started = SystemTime::now();
    let stats = {
        let mut sink = ProgressSink::new(&mut profile, uploader.as_mut());
        let stats = sampler.run(stop::flag(), &mut sink);
        sink.finish();
        stats
    };
    finish(
        profile,
        &stats,
        &args,
        outputs,
        &mut target,
        (uploader, started),
        &[],
    )
}

/// After a run: writes the outputs, stops or reaps a launched command, waits for the last
/// Pyroscope pushes, prints the summary (with `notes` after it).
fn finish(
    mut profile: Profile,
    stats: &SamplerStats,
    args: &SampleArgs,
    outputs: Outputs,
    target: &mut Target,
    (uploader, started): (Option<Uploader>, SystemTime),
    notes: &[String],
) -> anyhow::Result<()> {
    profile.summary = Some(RunSummary::from_stats(stats, args.rate));
    let written = write_outputs(&profile, args, outputs, started);
    let grace = match stats.stop {
        Some(StopReason::TargetExited) => Duration::from_secs(2),
        _ => Duration::ZERO,
    };
    let child_note = stop_child(target, grace);
    let pushed = uploader.map(|u| {
        let url = u.url().to_string();
        (url, u.finish(stats.elapsed))
    });
    print_summary(&profile, stats, args, child_note.as_deref());
    for note in notes {
        eprintln!("  {note}");
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

/// `--subprocesses`: samples the target (launched or attached) and its Python descendants.
fn sample_tree(
    args: &SampleArgs,
    options: SamplerOptions,
    spy_options: &SpyOptions,
    outputs: Outputs,
    pyroscope: Option<PyroscopeConfig>,
) -> anyhow::Result<()> {
    let mut target = match args.pid {
        Some(pid) => Target {
            pid,
            command: crate::attach::TargetProcess::open(pid)
                .and_then(|p| p.cmdline())
                .unwrap_or_default(),
            child: None,
        },
        None => match launch(args) {
            Ok(target) => target,
            Err(err) => {
                outputs.discard();
                return Err(err);
            }
        },
    };
    let mut sampler = match ProcessTreeSampler::new(target.pid, options, spy_options.clone()) {
        Ok(sampler) => sampler,
        Err(err) => {
            outputs.discard();
            stop_child(&mut target, Duration::ZERO);
            return Err(err.into());
        }
    };
    if matches!(args.metric, Metric::MallocBytes | Metric::MallocCount) {
        let options = crate::memory::malloc::MallocOptions {
            python_allocators: args.python_allocators,
            frees: false,
        };
        sampler.on_attach(Box::new(move |sampler, pid| {
            super::malloc_metrics::add_malloc_sources(sampler, pid, &options)
                .map(|_| ())
                .map_err(|err| format!("no allocator counters: {err}"))
        }));
    }
    let info = TargetInfo {
        pid: target.pid,
        command: target.command.clone(),
        python_version: None,
    };
    let mut profile = Profile::new(info, outputs.json.is_some());
    eprintln!(
        "pmt-sample: sampling process {} and its Python descendants at {} Hz{}; Ctrl-C to stop",
        target.pid,
        args.rate,
        options
            .duration
            .map_or(String::new(), |d| format!(" for {:.1} s", d.as_secs_f64()))
    );
    let mut uploader = pyroscope.map(|config| Uploader::start(config, profile.target.clone()));
    let started = SystemTime::now();
    let stats = {
        let mut sink = ProgressSink::new(&mut profile, uploader.as_mut());
        let stats = sampler.run(stop::flag(), &mut sink);
        sink.finish();
        stats
    };
    let mut versions: Vec<&str> = profile
        .processes()
        .iter()
        .filter_map(|p| p.python_version.as_deref())
        .collect();
    versions.sort_unstable();
    versions.dedup();
    profile.target.python_version = (!versions.is_empty()).then(|| versions.join(", "));
    let mut notes = process_lines(&stats);
    notes.extend(sampler.skipped().iter().cloned());
    if stats.processes.is_empty() {
        notes.push(format!(
            "no Python process was found in the tree of process {}",
            target.pid
        ));
    }
    finish(
        profile,
        &stats,
        args,
        outputs,
        &mut target,
        (uploader, started),
        &notes,
    )
}

/// One summary line per process sampled with `--subprocesses`.
fn process_lines(stats: &SamplerStats) -> Vec<String> {
    let mut lines = vec![format!("processes sampled: {}", stats.processes.len())];
    for process in &stats.processes {
        let mut command: String = process.process.command.chars().take(60).collect();
        if process.process.command.chars().count() > 60 {
            command.push('…');
        }
        lines.push(format!(
            "  {:>7} {:>6} samples, {:6.1} Hz, {} read errors, {:.2}-{:.2} s{}  {command}",
            process.process.pid,
            process.samples,
            process.achieved_rate(),
            process.read_errors,
            process.first.as_secs_f64(),
            process.last.as_secs_f64(),
            if process.exited { ", exited" } else { "" },
        ));
    }
    lines
}

/// Attaches to `--pid`, or launches the command and attaches to it once its interpreter is up.
fn start_target(args: &SampleArgs, options: &SpyOptions) -> anyhow::Result<(Target, PythonSpy)> {
    if let Some(pid) = args.pid {
        let spy = PythonSpy::attach(pid, options)?;
        let command = spy.process().cmdline().unwrap_or_default();
        return Ok((
            Target {
                pid,
                command,
                child: None,
            },
            spy,
        ));
    }
    let mut target = launch(args)?;
    match attach_when_ready(&mut target, options) {
        Ok(spy) => Ok((target, spy)),
        Err(err) => {
            stop_child(&mut target, Duration::ZERO);
            Err(err)
        }
    }
}

/// Launches the command after `--`.
fn launch(args: &SampleArgs) -> anyhow::Result<Target> {
    let child = LaunchedChild::spawn(&args.command)?;
    Ok(Target {
        pid: child.pid(),
        command: child.command().to_string(),
        child: Some(child),
    })
}

/// Retries attaching to a freshly launched command for a few seconds: it may still be a
/// launcher (a shell, pyenv's shim) about to exec Python, or an interpreter still loading.
/// Once attached, waits (within the same few seconds) for the interpreter to have a thread:
/// a static interpreter's symbols are there from `exec`, before the dynamic loader has mapped
/// libc, which the malloc counters probe.
fn attach_when_ready(target: &mut Target, options: &SpyOptions) -> anyhow::Result<PythonSpy> {
    let patience = Duration::from_secs(10);
    let give_up = Instant::now() + patience;
    let child = target
        .child
        .as_mut()
        .context("only a launched command is waited for")?;
    let attached = child.wait_until_ready(
        patience,
        stop::flag(),
        |pid| PythonSpy::attach(pid, options),
        |err: &SpyError| matches!(err, SpyError::NotPython { .. } | SpyError::Read { .. }),
    );
    match attached {
        Ok(mut spy) => {
            while Instant::now() < give_up && !stop::requested() {
                match spy.read_stacks() {
                    Ok(stacks) if !stacks.is_empty() => break,
                    Err(err) if err.process_exited() => break,
                    _ => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            Ok(spy)
        }
        Err(NotReady::Exited(status)) => bail!(
            "{} exited ({status}) before its Python interpreter could be attached",
            target.command
        ),
        Err(NotReady::Failed(err)) => Err(err.into()),
    }
}

/// After sampling: reaps a launched command that exited (waiting up to `grace` for one that is
/// exiting), or stops one still running (we started it, so it does not outlive the run).
/// Returns a note for the summary.
fn stop_child(target: &mut Target, grace: Duration) -> Option<String> {
    Some(target.child.as_mut()?.stop(grace))
}

/// Writes every requested output; returns what was written, or the first failure (after
/// trying the others).
fn write_outputs(
    profile: &Profile,
    args: &SampleArgs,
    outputs: Outputs,
    started: SystemTime,
) -> anyhow::Result<Vec<String>> {
    let fold = FoldOptions {
        metric: args.metric,
        threads: args.threads,
    };
    let mut written = Vec::new();
    let mut first_error: Option<anyhow::Error> = None;
    let mut note = |file: &OutputFile, result: std::io::Result<String>| match result {
        Ok(what) => written.push(format!("{} ({what})", file.path.display())),
        Err(err) => {
            let err = anyhow::Error::new(err).context(format!(
                "cannot write {} {}",
                file.option,
                file.path.display()
            ));
            first_error.get_or_insert(err);
        }
    };
    if let Some(file) = outputs.flame {
        let result = (|| {
            let mut out = BufWriter::new(&file.file);
            let outcome = flame::write(profile, fold, &mut out)?;
            out.flush()?;
            Ok(match outcome {
                flame::FlameOutcome::Drawn => format!("flamegraph of {}", args.metric),
                flame::FlameOutcome::Empty => {
                    format!("empty: nothing was charged to {}", args.metric)
                }
            })
        })();
        note(&file, result);
    }
    if let Some(file) = outputs.collapsed {
        let result = collapsed::write(profile, fold, BufWriter::new(&file.file))
            .map(|()| format!("folded {}", args.metric));
        note(&file, result);
    }
    if let Some(file) = outputs.json {
        let result =
            timeline::write(profile, BufWriter::new(&file.file)).map(|()| "timeline".to_string());
        note(&file, result);
    }
    if let Some(file) = outputs.speedscope {
        let result = speedscope::write(profile, args.metric, BufWriter::new(&file.file))
            .map(|()| format!("speedscope of {}", args.metric));
        note(&file, result);
    }
    if let Some(file) = outputs.pprof {
        let options = PprofOptions::for_run(profile, args.metric, Some(started));
        let result =
            pprof::write(profile, &options, BufWriter::new(&file.file)).map(|()| "pprof".into());
        note(&file, result);
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(written),
    }
}

/// The closing summary on stderr.
fn print_summary(
    profile: &Profile,
    stats: &SamplerStats,
    args: &SampleArgs,
    child_note: Option<&str>,
) {
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
    eprintln!(
        "  samples: {} at {:.1} Hz (asked {}), missed ticks: {}, read errors: {}{}",
        summary.samples,
        summary.achieved_rate(),
        args.rate,
        summary.missed_ticks,
        summary.read_errors,
        stats
            .last_error
            .as_deref()
            .map(|e| format!(" (last: {e})"))
            .unwrap_or_default()
    );
    eprintln!(
        "  thread stacks torn and read again: {}, torn on every try: {} (charged to the thread's previous stack)",
        stats.torn_reads, stats.unreadable_stacks
    );
    if let (Some(p50), Some(p99)) = (summary.sample_cost_p50_us, summary.sample_cost_p99_us) {
        eprintln!("  cost per sample: p50 {p50:.1} µs, p99 {p99:.1} µs");
    }
    if let Some(rss) = stats.rss {
        eprintln!("  RSS at the end: {}", format_value(Metric::Rss, rss));
    }
    if matches!(args.metric, Metric::Rss) {
        eprintln!("  {}", summary.attribution_note());
    }
    let mut folded = collapsed::fold(
        profile,
        FoldOptions {
            metric: args.metric,
            threads: args.threads,
        },
    );
    let total: u64 = folded.iter().map(|(_, w)| w).sum();
    if total == 0 {
        eprintln!("  nothing was charged to {}", args.metric);
        return;
    }
    folded.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    eprintln!(
        "  top stacks by {} (total {}):",
        args.metric,
        format_value(args.metric, total)
    );
    for (stack, weight) in folded.iter().take(5) {
        let innermost: Vec<&str> = stack.rsplit(';').take(3).collect();
        eprintln!(
            "  {:>12} {:5.1}%  {}",
            format_value(args.metric, *weight),
            100.0 * *weight as f64 / total as f64,
            innermost.join(" ← ")
        );
    }
}

/// Hands samples to the profile (and to the Pyroscope uploader) and keeps one progress line
/// up to date on a terminal.
struct ProgressSink<'a> {
    profile: &'a mut Profile,
    uploader: Option<&'a mut Uploader>,
    live: bool,
    shown: bool,
}

impl<'a> ProgressSink<'a> {
    fn new(profile: &'a mut Profile, uploader: Option<&'a mut Uploader>) -> ProgressSink<'a> {
        ProgressSink {
            profile,
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

impl SampleSink for ProgressSink<'_> {
    fn record(&mut self, sample: Sample) {
        if let Some(uploader) = self.uploader.as_deref_mut() {
            uploader.record(&sample);
        }
        self.profile.add(sample);
    }

    fn record_process(&mut self, process: &ProcessIdentity, sample: Sample) {
        if let Some(uploader) = self.uploader.as_deref_mut() {
            uploader.record_process(process, &sample);
        }
        self.profile.add_process_sample(process, sample);
    }

    fn progress(&mut self, stats: &SamplerStats) {
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
