//! One sampling run, the model that `pmt-sample` and `pmt top` drive (and `pmt report`
//! renders the same way): the target (attached or launched), the sampler
//! over it (one process, or a tree with `--subprocesses`), the allocator counters where asked,
//! the profile the samples go into, and the run's notes for the summary. Front ends watch
//! the samples through a [`RunObserver`] and render the finished profile through
//! [`crate::output::format`].
//!
//! Owns: assembling a run from [`RunOptions`] and taking it to its end.
//! Must not touch: the command line, the terminal, signal handlers (the caller passes the
//! stop flag of `attach::stop`) or output formats.

pub mod live;
mod target;

pub use target::Target;

use crate::memory::malloc::MallocError;
use crate::profile::{Profile, RunSummary, TargetInfo};
use crate::python::{PythonSpy, SpyError, SpyOptions};
use crate::sample::{Metric, ProcessIdentity, Sample};
use crate::sampler::process_tree::ProcessTreeSampler;
use crate::sampler::{SampleSink, Sampler, SamplerError, SamplerOptions, SamplerStats, StopReason};
pub use heap_capture::HeapHookError;
pub use kernel_capture::AttributionMode;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

pub mod heap_capture;
pub mod kernel_capture;
mod malloc_metrics;
mod sources;

use sources::Sources;
use std::rc::Rc;

/// What to sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// A running process.
    Pid(i32),
    /// A command to launch (program first) and sample until it exits.
    Command(Vec<String>),
}

/// How to sample.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// The target.
    pub target: TargetSpec,
    /// Stack reads per second; `None`: the default for what the run loads
    /// ([`default_rate_hz`]).
    pub rate_hz: Option<f64>,
    /// The outputs weigh time only (`wall`, `cpu`): ticks are their samples.
    pub weighs_time: bool,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Whether to count the allocator (eBPF) for the `malloc-*` metrics.
    pub malloc: MallocMode,
    /// With `malloc`: count CPython's object allocator too.
    pub python_allocators: bool,
    /// Sample the target's Python descendants too.
    pub subprocesses: bool,
    /// Pause each thread while reading it.
    pub blocking: bool,
    /// Keep every sample in the profile (the timeline, the memory plot).
    pub keep_timeline: bool,
    /// A launched command's standard streams go to `/dev/null`.
    pub quiet_child: bool,
    /// Where memory is charged: stacks captured in the kernel, or at ticks.
    pub attribution: AttributionMode,
    /// With in-kernel stacks and `malloc`: mean bytes between two allocation samples of a
    /// thread (0: every allocation).
    pub sample_bytes: u64,
    /// The allocation hook (`heap` metrics), where it can be loaded, and how it samples.
    /// `None`: no hook.
    pub heap: Option<heap_capture::HookOptions>,
    /// Root each stack at the asyncio task its thread runs (`<task NAME>`).
    pub tasks: bool,
}

impl RunOptions {
    /// For a run whose outputs weigh time only (`wall`, `cpu`): the in-kernel capture (unless
    /// `--attribution ticks`) samples time instead of charging memory, and no allocation hook
    /// is put into the target. Returns what it left out, for a note; `None` if nothing.
    pub fn for_time_only(&mut self) -> Option<&'static str> {
        self.weighs_time = true;
        let hook = self.heap.take().is_some();
        hook.then_some("no allocation hook")
    }
}

/// Stack reads per second when `--rate` is not given and ticks are samples of what is shown:
/// time, or memory charged at ticks.
pub const DEFAULT_RATE_HZ: f64 = 100.0;

/// Stack reads per second when `--rate` is not given and memory is charged to stacks captured
/// in the kernel where it is acquired: the reads then serve only the time columns of `--json`
/// and pprof, the RSS of the timeline, and the names of threads, which need no high rate. A
/// fifth of the default costs a fifth of the stack reads: following 8 lightly loaded workers,
/// 1.4% of a core against 3.4% (bench/results/subprocesses_light_default_rate.md).
pub const MEMORY_RATE_HZ: f64 = 20.0;

/// With in-kernel stacks, how often at least what was captured is charged, whatever the rate
/// of stack reads: the sustained peak of `rss` and `heap` is weighed at these ticks, and must
/// see a buffer freed and made again between two reads of stacks. A tick between two reads
/// that would find nothing captured is not taken (`sampler::skip_idle_ticks`).
pub const CAPTURE_TICK_HZ: f64 = 100.0;

/// Ticks per second of a run whose time is sampled in the kernel: each reads what the kernel
/// captured and the stacks (for thread names, and the threads that wait from before they were
/// first seen).
pub const TIME_TICK_HZ: f64 = 10.0;

/// The stack reads per second of a run without `--rate`: [`MEMORY_RATE_HZ`] when memory is
/// charged in the kernel (`in_kernel`) and no output weighs time, else [`DEFAULT_RATE_HZ`].
pub fn default_rate_hz(in_kernel: bool, weighs_time: bool) -> f64 {
    if in_kernel && !weighs_time {
        MEMORY_RATE_HZ
    } else {
        DEFAULT_RATE_HZ
    }
}

/// The ticks per second and how many ticks a stack read comes every, for stack reads at
/// `rate_hz`: with in-kernel stacks, ticks at least [`CAPTURE_TICK_HZ`] (a whole multiple of
/// the rate), else one tick a read.
fn ticks_for(rate_hz: f64, in_kernel: bool) -> (f64, u32) {
    if !in_kernel || rate_hz >= CAPTURE_TICK_HZ {
        return (rate_hz, 1);
    }
    let every = (CAPTURE_TICK_HZ / rate_hz).ceil().min(1000.0) as u32;
    (rate_hz * f64::from(every), every)
}

/// Whether a run counts the target's allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MallocMode {
    /// No allocator counters.
    Off,
    /// Counters or no run: the metric asked for needs them.
    Required,
    /// Counters where eBPF is available; without, the run goes on and a note says why.
    IfAvailable,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The target cannot be read as a Python process.
    #[error(transparent)]
    Spy(#[from] SpyError),
    /// The sampler cannot start.
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    /// The allocator counters cannot be attached.
    #[error(transparent)]
    Malloc(#[from] MallocError),
    /// The command cannot be launched.
    #[error(transparent)]
    Launch(#[from] crate::attach::child::LaunchError),
    /// The allocation hook cannot be prepared.
    #[error(transparent)]
    HeapHook(#[from] HeapHookError),
    /// The launched command exited before Python could be attached.
    #[error("{command} exited ({status}) before its Python interpreter could be attached")]
    ExitedBeforeAttach {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
    },
}

/// Watches a run's samples as they come (a progress line, a live view, a Pyroscope pusher).
pub trait RunObserver {
    /// One tick's sample, of `process` when several are sampled.
    fn sample(&mut self, process: Option<&ProcessIdentity>, sample: &Sample) {
        let _ = (process, sample);
    }
    /// The statistics so far, and the profile as it stands, a few times a second.
    fn progress(&mut self, stats: &SamplerStats, profile: &Profile) {
        let _ = (stats, profile);
    }
}

/// An observer that watches nothing.
impl RunObserver for () {}

enum Engine {
    Single(Box<Sampler<PythonSpy>>),
    Tree(Box<ProcessTreeSampler>),
}

/// A run ready to sample.
pub struct Run {
    target: Target,
    engine: Engine,
    profile: Profile,
    rate_hz: f64,
    notes: Vec<String>,
    counts_allocations: bool,
    /// The run's sources, kept for as long as it samples (the hook's files among them).
    _sources: Rc<Sources>,
}

/// A run that has ended: its profile (with its summary), statistics and notes, and the
/// target, still to be stopped if it was launched.
pub struct Finished {
    /// What the run gathered.
    pub profile: Profile,
    /// The run's statistics.
    pub stats: SamplerStats,
    /// Lines for the summary (processes sampled, processes skipped).
    pub notes: Vec<String>,
    /// When sampling started.
    pub started: SystemTime,
    target: Target,
}

impl Run {
    /// Attaches to (or launches and attaches to) the target and prepares its sampler; `stop`
    /// cuts short the wait for a launched interpreter.
    pub fn start(options: &RunOptions, stop: &AtomicBool) -> Result<Run, RunError> {
        let spy_options = SpyOptions {
            blocking: options.blocking,
            thread_state: false,
            tasks: options.tasks,
            ..SpyOptions::default()
        };
        // The capture is loaded before a command is launched, so that it sees the start.
        let mut notes = Vec::new();
        let sources = Rc::new(Sources::prepare(options, &mut notes)?);
        // Stack reads per second, and the sampler's ticks for them.
        let rates = |sources: &Sources| {
            let in_kernel = sources.in_kernel();
            let rate_hz = options
                .rate_hz
                .unwrap_or_else(|| default_rate_hz(in_kernel, options.weighs_time));
            if sources.samples_time() {
                // The kernel samples at `rate_hz`; ticks only read its events and the stacks
                // that name threads.
                return (rate_hz, (rate_hz.min(TIME_TICK_HZ), 1));
            }
            (rate_hz, ticks_for(rate_hz, in_kernel))
        };
        let (mut rate_hz, (tick_hz, read_every)) = rates(&sources);
        let sampler_options = SamplerOptions {
            rate_hz: tick_hz,
            read_every,
            duration: options.duration,
        };
        let env = sources.launch_environment();
        let mut target = match &options.target {
            TargetSpec::Pid(pid) => Target::existing(
                *pid,
                crate::attach::TargetProcess::open(*pid)
                    .and_then(|p| p.cmdline())
                    .unwrap_or_default(),
            ),
            TargetSpec::Command(command) => Target::launch(command, options.quiet_child, &env)?,
        };
        if options.subprocesses {
            let mut sampler = ProcessTreeSampler::new(target.pid, sampler_options, spy_options)?;
            notes.extend(sources.describe());
            let per_process = Rc::clone(&sources);
            sampler.on_attach(Box::new(move |sampler, pid| {
                per_process
                    .add_process(sampler, pid)
                    .map(|_| ())
                    .map_err(|err| err.to_string())
            }));
            let info = TargetInfo {
                pid: target.pid,
                command: target.command.clone(),
                python_version: None,
            };
            return Ok(Run {
                profile: Profile::new(info, options.keep_timeline),
                target,
                engine: Engine::Tree(Box::new(sampler)),
                rate_hz,
                notes,
                counts_allocations: sources.counts_allocations(),
                _sources: sources,
            });
        }
        let spy = match options.target {
            TargetSpec::Pid(pid) => PythonSpy::attach(pid, &spy_options)?,
            TargetSpec::Command(_) => target.attach_when_ready(&spy_options, stop)?,
        };
        if let TargetSpec::Pid(_) = options.target {
            target.command = spy.process().cmdline().unwrap_or_default();
        }
        let python_version = spy.version().to_string();
        let mut sampler = Sampler::new(spy, target.pid, sampler_options)?;
        let added = sources.add_process(&mut sampler, target.pid)?;
        // Adding the process may have dropped the in-kernel capture (`auto`, a process it
        // cannot follow): then memory is charged at ticks.
        let (tick_hz, read_every);
        (rate_hz, (tick_hz, read_every)) = rates(&sources);
        sampler.set_rates(tick_hz, read_every);
        notes.extend(sources.describe());
        notes.extend(added.notes);
        if !sampler.has_thread_counters() {
            notes.push(format!(
                "per-thread page faults of process {} are unreadable: RSS growth will be charged to the GIL holder",
                target.pid
            ));
        }
        let info = TargetInfo {
            pid: target.pid,
            command: target.command.clone(),
            python_version: Some(python_version),
        };
        Ok(Run {
            profile: Profile::new(info, options.keep_timeline),
            target,
            engine: Engine::Single(Box::new(sampler)),
            rate_hz,
            notes,
            counts_allocations: added.counts_allocations,
            _sources: sources,
        })
    }

    /// What is sampled.
    pub fn target(&self) -> &TargetInfo {
        &self.profile.target
    }

    /// Stack reads per second: `--rate`, or the default for what the run loaded.
    pub fn rate_hz(&self) -> f64 {
        self.rate_hz
    }

    /// Whether the run samples a tree of processes.
    pub fn is_tree(&self) -> bool {
        matches!(self.engine, Engine::Tree(_))
    }

    /// Whether the allocator counters feed the `malloc-*` metrics (with `--subprocesses`:
    /// whether they are attached to each process as it is found).
    pub fn counts_allocations(&self) -> bool {
        self.counts_allocations
    }

    /// What the start found worth saying (allocator probes, a fallback of the attribution).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Samples until the duration elapses, `stop` is raised or the target exits, showing each
    /// sample to `observer`.
    pub fn sample(mut self, stop: &AtomicBool, observer: &mut dyn RunObserver) -> Finished {
        let started = SystemTime::now();
        let mut sink = Feed {
            profile: &mut self.profile,
            observer,
        };
        let (stats, mut notes) = match &mut self.engine {
            Engine::Single(sampler) => (sampler.run(stop, &mut sink), Vec::new()),
            Engine::Tree(sampler) => {
                let stats = sampler.run(stop, &mut sink);
                let mut notes = process_lines(&stats);
                notes.extend(sampler.skipped());
                if stats.processes.is_empty() {
                    notes.push(format!(
                        "no Python process was found in the tree of process {}",
                        self.target.pid
                    ));
                }
                (stats, notes)
            }
        };
        if self.is_tree() {
            self.profile.target.python_version = self.profile.process_versions();
        }
        self.profile.summary = Some(RunSummary::from_stats(&stats, self.rate_hz));
        self.notes.append(&mut notes);
        Finished {
            profile: self.profile,
            stats,
            notes: self.notes,
            started,
            target: self.target,
        }
    }
}

impl Finished {
    /// Stops a launched target (one that exited is given two seconds to be reaped); returns
    /// a note for the summary.
    pub fn stop_target(&mut self) -> Option<String> {
        let grace = match self.stats.stop {
            Some(StopReason::TargetExited) => Duration::from_secs(2),
            _ => Duration::ZERO,
        };
        self.target.stop(grace)
    }
}

/// Hands samples to the profile and shows them to the observer.
struct Feed<'a> {
    profile: &'a mut Profile,
    observer: &'a mut dyn RunObserver,
}

impl SampleSink for Feed<'_> {
    fn record(&mut self, sample: Sample) {
        self.observer.sample(None, &sample);
        self.profile.add(sample);
    }

    fn record_process(&mut self, process: &ProcessIdentity, sample: Sample) {
        self.observer.sample(Some(process), &sample);
        self.profile.add_process_sample(process, sample);
    }

    fn process_exited(&mut self, process: &ProcessIdentity) {
        self.profile.process_exited(process);
    }

    fn progress(&mut self, stats: &SamplerStats) {
        self.observer.progress(stats, self.profile);
    }
}

/// One summary line per process sampled with `--subprocesses`.
fn process_lines(stats: &SamplerStats) -> Vec<String> {
    let mut lines = vec![format!("processes sampled: {}", stats.processes.len())];
    if let Some(tree) = stats.tree {
        lines.push(format!(
            "processes in the tree: {} seen, {} attached, {} exited before they could be attached, {} not Python, {} not sampled for another reason; {} forked children that exited before they were attached charged what the kernel captured of them",
            tree.seen, tree.attached, tree.missed, tree.not_python, tree.failed, tree.charged_unattached
        ));
    }
    // As in the profile, exited processes past the first EXITED_APART are counted by group,
    // not listed: a pool that replaces its workers for hours has thousands.
    let mut exited = 0;
    let mut merged: Vec<(String, u64)> = Vec::new();
    for process in &stats.processes {
        if process.exited {
            exited += 1;
            if exited > crate::profile::EXITED_APART {
                let group = crate::profile::process_group(
                    process.process.role.as_deref(),
                    &process.process.command,
                );
                match merged.iter_mut().find(|(g, _)| *g == group) {
                    Some((_, count)) => *count += 1,
                    None => merged.push((group, 1)),
                }
                continue;
            }
        }
        let mut command: String = process.process.command.chars().take(60).collect();
        if process.process.command.chars().count() > 60 {
            command.push('…');
        }
        if let Some(role) = &process.process.role {
            command = format!("({role}) {command}");
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
    if !merged.is_empty() {
        let groups: Vec<String> = merged
            .iter()
            .map(|(group, count)| format!("{count} × {group}"))
            .collect();
        lines.push(format!(
            "  and {} more that exited, merged by role in the outputs: {}",
            exited - crate::profile::EXITED_APART,
            groups.join("; ")
        ));
    }
    lines
}

/// Whether `metric` needs the allocator counters.
pub fn needs_malloc(metric: Metric) -> bool {
    matches!(metric, Metric::MallocBytes | Metric::MallocCount)
}

impl MallocMode {
    /// [`MallocMode::Required`] when `metric` needs the counters, else `otherwise`.
    pub fn for_metric(metric: Metric, otherwise: MallocMode) -> MallocMode {
        if needs_malloc(metric) {
            MallocMode::Required
        } else {
            otherwise
        }
    }
}
