//! The sampling loop: ticks on absolute deadlines, reads the target's Python stacks and memory
//! counters at each tick, charges each counter's delta to the stack of the thread that caused it,
//! and hands one [`Sample`] per tick to a [`SampleSink`].
//!
//! Owns: tick timing and missed-tick accounting, stop conditions (duration, stop flag, target
//! exit), the attribution rules of every [`Metric`], and the run's statistics.
//! Must not touch: how stacks are read (`python`), how counters are read (`memory`), and any
//! aggregation or output format (`profile`, `output`): it only emits samples.
//!
//! Attribution, per interval between two successful ticks:
//! - `rss`: a growth of the process RSS is shared among the process's threads in proportion to
//!   their page-fault deltas; threads without Python frames keep their share (so a C library's
//!   thread is not blamed on Python code). When per-thread faults cannot be matched to Python
//!   threads (no kernel thread ids, or no fault moved), the whole growth goes to the thread
//!   holding the GIL, and the tick is counted as a GIL fallback. Faults of threads that exited
//!   between two samples (the process's count minus its live threads') go to the last stacks
//!   seen of the Python threads that vanished, else to a thread-less placeholder.
//! - `rss-release`: a decrease of RSS is shared among threads by their recent page-fault
//!   activity (faults decayed by 1/8 per interval: freeing does not fault, and memory is most
//!   often freed by the thread that made it), else equally among the Python threads on CPU,
//!   else given to the GIL holder.
//!
//! Samples carry these gross per-interval charges; `profile` decides how they add up (for
//! `rss`, the growth a stack still owned at the peak, so transient allocations cancel out).
//! - `cpu`: 1 for each Python thread the kernel had running (state `R`) or whose CPU time moved.
//! - `wall`: 1 for each Python thread.
//! - Further metrics come from [`CounterSource`]s: per-thread cumulative counters whose deltas
//!   are charged to the thread's stack.
//!
//! A tick whose stack read fails is skipped without updating the baselines, so its deltas are
//! charged at the next successful tick rather than lost.
//!
//! One [`Sampler`] samples one process; [`process_tree::ProcessTreeSampler`] (`--subprocesses`)
//! runs one per Python process of a tree on the same clock, each charging only within its own
//! process, and tags their samples with a [`ProcessIdentity`].

pub mod process_tree;

use crate::memory::rss::RssCounter;
use crate::memory::thread_counters::{ThreadCounters, ThreadStat};
use crate::python::{Frame, ThreadStack};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What a flamegraph can weigh. Adding a metric is one variant here (with its name, unit and
/// description) plus one [`CounterSource`] that feeds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// Growth of resident memory, in bytes.
    Rss,
    /// Decrease of resident memory, in bytes.
    RssRelease,
    /// Samples where the thread was on CPU.
    Cpu,
    /// All samples.
    Wall,
    /// Bytes requested from the target's allocator (eBPF uprobes, `memory::malloc`).
    MallocBytes,
    /// Calls of the target's allocator (eBPF uprobes, `memory::malloc`).
    MallocCount,
}

/// The unit of a metric's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes of memory.
    Bytes,
    /// Sample counts.
    Samples,
    /// Counted events (calls).
    Calls,
}

impl Unit {
    /// The unit's name as written in outputs.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Bytes => "bytes",
            Unit::Samples => "samples",
            Unit::Calls => "calls",
        }
    }
}

impl Metric {
    /// Every metric, in the order of [`MetricValues`].
    pub const ALL: [Metric; 6] = [
        Metric::Rss,
        Metric::RssRelease,
        Metric::Cpu,
        Metric::Wall,
        Metric::MallocBytes,
        Metric::MallocCount,
    ];
    /// The number of metrics.
    pub const COUNT: usize = Metric::ALL.len();

    /// The metric's command-line and file name (`rss`, `rss-release`, …).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Rss => "rss",
            Metric::RssRelease => "rss-release",
            Metric::Cpu => "cpu",
            Metric::Wall => "wall",
            Metric::MallocBytes => "malloc-bytes",
            Metric::MallocCount => "malloc-count",
        }
    }

    /// The unit of the metric's values.
    pub fn unit(self) -> Unit {
        match self {
            Metric::Rss | Metric::RssRelease | Metric::MallocBytes => Unit::Bytes,
            Metric::Cpu | Metric::Wall => Unit::Samples,
            Metric::MallocCount => Unit::Calls,
        }
    }

    /// A few words saying what the metric measures.
    pub fn description(self) -> &'static str {
        match self {
            Metric::Rss => "resident memory growth",
            Metric::RssRelease => "resident memory released",
            Metric::Cpu => "on-CPU samples",
            Metric::Wall => "wall-clock samples",
            Metric::MallocBytes => "bytes requested from the allocator",
            Metric::MallocCount => "allocator calls",
        }
    }

    /// The metric's position in [`MetricValues`].
    pub fn index(self) -> usize {
        match self {
            Metric::Rss => 0,
            Metric::RssRelease => 1,
            Metric::Cpu => 2,
            Metric::Wall => 3,
            Metric::MallocBytes => 4,
            Metric::MallocCount => 5,
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A metric name that is not one of [`Metric::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown metric {0:?}: use one of rss, rss-release, cpu, wall, malloc-bytes, malloc-count")]
pub struct UnknownMetric(pub String);

impl FromStr for Metric {
    type Err = UnknownMetric;

    fn from_str(s: &str) -> Result<Metric, UnknownMetric> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownMetric(s.to_string()))
    }
}

/// One value per metric, indexed by [`Metric::index`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricValues(pub [u64; Metric::COUNT]);

impl MetricValues {
    /// The value of `metric`.
    pub fn get(&self, metric: Metric) -> u64 {
        self.0[metric.index()]
    }

    /// Adds `value` to `metric`.
    pub fn add(&mut self, metric: Metric, value: u64) {
        let slot = &mut self.0[metric.index()];
        *slot = slot.saturating_add(value);
    }

    /// Adds every value of `other`.
    pub fn add_all(&mut self, other: &MetricValues) {
        for metric in Metric::ALL {
            self.add(metric, other.get(metric));
        }
    }

    /// Whether every value is zero.
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&v| v == 0)
    }
}

/// Where the stacks come from: implemented by the CPython stack reader, and by synthetic
/// sources in tests.
pub trait StackSource {
    /// A failed read.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Every thread's stack at this instant.
    fn read_stacks(&mut self) -> Result<Vec<ThreadStack>, Self::Error>;
    /// Whether `error` means the target is gone (rather than a torn read).
    fn process_exited(error: &Self::Error) -> bool;
    /// Thread stacks found torn and read again so far.
    fn torn_reads(&self) -> u64 {
        0
    }
}

impl StackSource for crate::python::PythonSpy {
    type Error = crate::python::SpyError;

    fn read_stacks(&mut self) -> Result<Vec<ThreadStack>, Self::Error> {
        crate::python::PythonSpy::read_stacks(self)
    }

    fn process_exited(error: &Self::Error) -> bool {
        error.process_exited()
    }

    fn torn_reads(&self) -> u64 {
        crate::python::PythonSpy::torn_reads(self)
    }
}

/// A failure of a [`CounterSource`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CounterError(pub String);

/// A per-thread cumulative counter read once per tick (for example eBPF malloc bytes).
pub trait CounterSource {
    /// The metric this source feeds.
    fn metric(&self) -> Metric;
    /// Writes each thread's cumulative total since the source started, keyed by kernel thread id.
    /// `totals` is cleared by the caller.
    fn read(&mut self, totals: &mut HashMap<u32, u64>) -> Result<(), CounterError>;
}

/// Who a [`ThreadSample`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadIdentity {
    /// `threading.get_ident()` of a Python thread; `None` for a thread Python does not know.
    pub python_id: Option<u64>,
    /// The kernel thread id, where known.
    pub native_id: Option<u32>,
    /// The Python thread's name, else the kernel's name of the thread.
    pub name: Option<String>,
}

/// One thread's part of a tick: its stack and what is charged to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadSample {
    /// The thread.
    pub thread: ThreadIdentity,
    /// Its Python frames, innermost first (empty for a thread Python does not know).
    pub frames: Vec<Frame>,
    /// What the interval ending at this tick charges to this stack.
    pub values: MetricValues,
}

/// Everything one tick produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Time since sampling started.
    pub time: Duration,
    /// The process RSS in bytes at this tick, where it could be read.
    pub rss: Option<u64>,
    /// The Python threads, plus any other thread charged something in this interval.
    pub threads: Vec<ThreadSample>,
}

/// Which process a [`Sample`] belongs to, when several are sampled (`--subprocesses`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessIdentity {
    /// The process id.
    pub pid: i32,
    /// Its command line.
    pub command: String,
    /// Its CPython version, e.g. `3.11.7`.
    pub python_version: Option<String>,
}

/// Receives the samples of a run.
pub trait SampleSink {
    /// Takes one tick's sample.
    fn record(&mut self, sample: Sample);
    /// Takes one tick's sample of `process`, one of several sampled together. Each process's
    /// samples carry its own RSS and charges. By default the process is forgotten.
    fn record_process(&mut self, process: &ProcessIdentity, sample: Sample) {
        let _ = process;
        self.record(sample);
    }
    /// Called a few times a second with the run's statistics so far.
    fn progress(&mut self, _stats: &SamplerStats) {}
}

/// How often the sampler ticks and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerOptions {
    /// Ticks per second.
    pub rate_hz: f64,
    /// Stop after this long (`None`: until the target exits or the stop flag is raised).
    pub duration: Option<Duration>,
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `--duration` elapsed.
    Duration,
    /// The stop flag was raised (Ctrl-C, SIGTERM).
    Interrupted,
    /// The target exited.
    TargetExited,
}

impl StopReason {
    /// A few words for the summary.
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::Duration => "duration elapsed",
            StopReason::Interrupted => "interrupted",
            StopReason::TargetExited => "target exited",
        }
    }
}

/// How RSS growth was charged during a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attribution {
    /// Growth intervals shared by per-thread page faults.
    pub by_faults: u64,
    /// Growth intervals given to the GIL holder because per-thread faults were unavailable.
    pub by_gil: u64,
    /// Growth intervals that no thread could be charged with (no Python thread at all).
    pub uncharged: u64,
    /// Growth intervals where faults of a kernel thread matching no Python thread were given to
    /// a Python thread whose kernel id is unknown (the GIL holder among them, if any).
    pub unmatched_guessed: u64,
}

/// The statistics of a run.
#[derive(Debug, Clone, Default)]
pub struct SamplerStats {
    /// Ticks that were due, taken or missed.
    pub ticks: u64,
    /// Ticks that produced a sample.
    pub samples: u64,
    /// Ticks skipped because the sampler fell a whole period or more behind.
    pub missed_ticks: u64,
    /// Ticks whose stack read failed (torn reads while the target runs).
    pub read_errors: u64,
    /// The last read error, for the summary.
    pub last_error: Option<String>,
    /// Thread stacks the reader found torn and read again.
    pub torn_reads: u64,
    /// Thread stacks that stayed torn for every try: each was charged to its thread's
    /// previous stack (or, with none, to no Python frames), never dropped.
    pub unreadable_stacks: u64,
    /// Counter-source failures.
    pub counter_errors: u64,
    /// Time from the first tick to the end of the run.
    pub elapsed: Duration,
    /// The latest RSS read, in bytes.
    pub rss: Option<u64>,
    /// How RSS growth was charged.
    pub attribution: Attribution,
    /// Why the run ended (`None` while running).
    pub stop: Option<StopReason>,
    /// The work time of each sample (counters, stacks, attribution, sink), in nanoseconds.
    pub sample_costs_ns: Vec<u32>,
    /// With `--subprocesses`: each process sampled, in the order it was first seen.
    pub processes: Vec<ProcessStats>,
}

/// One process's part of a run that samples several (`--subprocesses`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessStats {
    /// The process.
    pub process: ProcessIdentity,
    /// Samples taken of it.
    pub samples: u64,
    /// Its failed stack reads.
    pub read_errors: u64,
    /// When sampling it started, since the start of the run.
    pub first: Duration,
    /// Its last sample (or, once it exited, when that was noticed).
    pub last: Duration,
    /// Whether it exited during the run.
    pub exited: bool,
}

impl ProcessStats {
    /// Samples per second achieved while it was sampled.
    pub fn achieved_rate(&self) -> f64 {
        let secs = self.last.saturating_sub(self.first).as_secs_f64();
        if secs > 0.0 {
            self.samples.saturating_sub(1) as f64 / secs
        } else {
            0.0
        }
    }
}

impl SamplerStats {
    /// Samples per second achieved so far.
    pub fn achieved_rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.samples as f64 / secs
        } else {
            0.0
        }
    }

    /// The `p`-th percentile (0–100) of the per-sample cost.
    pub fn sample_cost_percentile(&self, p: f64) -> Option<Duration> {
        if self.sample_costs_ns.is_empty() {
            return None;
        }
        let mut sorted = self.sample_costs_ns.clone();
        sorted.sort_unstable();
        let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        let ns = sorted[rank.min(sorted.len() - 1)];
        Some(Duration::from_nanos(u64::from(ns)))
    }
}

/// Why a sampler could not start.
#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    /// The rate is not a positive number of at most 100 kHz.
    #[error("--rate must be between 0.1 and 100000 samples per second, not {0}")]
    BadRate(f64),
    /// The process's RSS could not be read.
    #[error(transparent)]
    Rss(#[from] crate::memory::rss::RssError),
    /// The root process of `--subprocesses` cannot be inspected.
    #[error(transparent)]
    Process(#[from] crate::attach::ProcessError),
}

/// The per-thread baselines kept between ticks.
#[derive(Debug, Clone, Copy, Default)]
struct ThreadBaseline {
    faults: u64,
    cpu_ticks: u64,
}

/// The sampling loop over one target.
pub struct Sampler<S: StackSource> {
    source: S,
    pid: i32,
    options: SamplerOptions,
    rss: RssCounter,
    threads: Option<ThreadCounters>,
    counters: Vec<Box<dyn CounterSource>>,
    prev_rss: Option<u64>,
    prev_threads: HashMap<u32, ThreadBaseline>,
    fault_activity: HashMap<u32, u64>,
    prev_process_faults: Option<u64>,
    live_faults_since_process: u64,
    prev_python_threads: usize,
    last_stacks: HashMap<u32, (ThreadIdentity, Vec<Frame>)>,
    /// Each counter source's totals at the previous successful read; `None` before the first.
    prev_counters: Vec<Option<HashMap<u32, u64>>>,
    stats: SamplerStats,
    scratch_stats: Vec<(u32, ThreadStat)>,
    scratch_totals: HashMap<u32, u64>,
}

impl<S: StackSource> Sampler<S> {
    /// Prepares to sample process `pid`, whose stacks `source` reads.
    ///
    /// Per-thread counters that cannot be opened are not an error: RSS growth then goes to the
    /// GIL holder, and the statistics say so.
    pub fn new(source: S, pid: i32, options: SamplerOptions) -> Result<Sampler<S>, SamplerError> {
        if !(options.rate_hz.is_finite() && (0.1..=100_000.0).contains(&options.rate_hz)) {
            return Err(SamplerError::BadRate(options.rate_hz));
        }
        Ok(Sampler {
            source,
            pid,
            options,
            rss: RssCounter::open(pid)?,
            threads: ThreadCounters::open(pid).ok(),
            counters: Vec::new(),
            prev_rss: None,
            prev_threads: HashMap::new(),
            fault_activity: HashMap::new(),
            prev_process_faults: None,
            live_faults_since_process: 0,
            prev_python_threads: 0,
            last_stacks: HashMap::new(),
            prev_counters: Vec::new(),
            stats: SamplerStats::default(),
            scratch_stats: Vec::new(),
            scratch_totals: HashMap::new(),
        })
    }

    /// Adds a counter source whose per-thread deltas feed its metric.
    pub fn add_counter(&mut self, counter: Box<dyn CounterSource>) {
        self.counters.push(counter);
        self.prev_counters.push(None);
    }

    /// Whether per-thread page-fault counters could be opened.
    pub fn has_thread_counters(&self) -> bool {
        self.threads.is_some()
    }

    /// Samples until the duration elapses, `stop` is raised or the target exits, giving each
    /// sample to `sink`; returns the run's statistics.
    pub fn run(&mut self, stop: &AtomicBool, sink: &mut dyn SampleSink) -> SamplerStats {
        let options = self.options;
        run_ticks(self, options, stop, sink)
    }

    /// The statistics so far.
    pub fn stats(&self) -> &SamplerStats {
        &self.stats
    }

    /// Takes one sample; returns whether the target has exited.
    fn tick(&mut self, time: Duration, sink: &mut dyn SampleSink) -> bool {
        let rss = match self.rss.read() {
            Ok(rss) => Some(rss),
            Err(err) if err.process_exited() || process_gone(self.pid) => return true,
            Err(_) => None,
        };
        if rss == Some(0) && process_gone(self.pid) {
            return true;
        }
        let stacks = match self.source.read_stacks() {
            Ok(stacks) => stacks,
            Err(err) => {
                if S::process_exited(&err) || process_gone(self.pid) {
                    return true;
                }
                self.stats.read_errors += 1;
                self.stats.last_error = Some(err.to_string());
                return false;
            }
        };
        self.stats.torn_reads = self.source.torn_reads();
        let rescanned = self.refresh_thread_list(&stacks);
        let mut task_stats = std::mem::take(&mut self.scratch_stats);
        let mut process_faults = None;
        let python_threads = stacks.len();
        if let Some(threads) = &mut self.threads {
            let exited = threads.read_all(&mut task_stats);
            // The process-wide count (which keeps exited threads' faults) costs a walk over all
            // threads in the kernel: read it when threads came or went, else every 16 samples.
            if exited > 0
                || rescanned
                || python_threads != self.prev_python_threads
                || self.stats.samples.is_multiple_of(16)
            {
                process_faults = threads.read_process().map(|p| p.faults);
            }
        }
        self.prev_python_threads = python_threads;
        let counter_deltas = self.read_counter_deltas();
        let sample = self.attribute(
            time,
            rss,
            stacks,
            &task_stats,
            process_faults,
            &counter_deltas,
        );
        self.scratch_stats = task_stats;
        self.stats.samples += 1;
        if rss.is_some() {
            self.stats.rss = rss;
        }
        sink.record(sample);
        false
    }

    /// Re-lists the kernel threads when a Python thread names one not tracked yet, and
    /// every 64 samples to notice threads that Python does not know; returns whether it did.
    fn refresh_thread_list(&mut self, stacks: &[ThreadStack]) -> bool {
        let Some(threads) = &mut self.threads else {
            return false;
        };
        let unknown = stacks
            .iter()
            .filter_map(|s| s.native_id)
            .any(|tid| !threads.contains(tid));
        let due = unknown || self.stats.samples.is_multiple_of(64);
        if due {
            // A failed listing means the process is exiting; the next tick will notice.
            let _ = threads.rescan();
        }
        due
    }

    /// Each counter source's per-thread deltas since the previous successful tick.
    fn read_counter_deltas(&mut self) -> Vec<HashMap<u32, u64>> {
        let mut all = Vec::with_capacity(self.counters.len());
        for (counter, prev) in self.counters.iter_mut().zip(&mut self.prev_counters) {
            self.scratch_totals.clear();
            let mut deltas = HashMap::new();
            match counter.read(&mut self.scratch_totals) {
                Ok(()) => {
                    // The first read is the baseline. After it, a thread not seen before
                    // counts from 0: totals run from the source's start, so its whole total
                    // (say, a new thread's first allocations) belongs to this interval.
                    if let Some(prev) = prev.as_ref() {
                        for (&tid, &total) in &self.scratch_totals {
                            let before = prev.get(&tid).copied().unwrap_or(0);
                            deltas.insert(tid, total.saturating_sub(before));
                        }
                    }
                    let totals = std::mem::take(&mut self.scratch_totals);
                    if let Some(old) = prev.replace(totals) {
                        self.scratch_totals = old;
                    }
                }
                Err(err) => {
                    self.stats.counter_errors += 1;
                    self.stats.last_error = Some(err.to_string());
                }
            }
            all.push(deltas);
        }
        all
    }

    /// Builds the tick's sample: charges the interval's deltas to the threads' stacks.
    fn attribute(
        &mut self,
        time: Duration,
        rss: Option<u64>,
        stacks: Vec<ThreadStack>,
        task_stats: &[(u32, ThreadStat)],
        process_faults: Option<u64>,
        counter_deltas: &[HashMap<u32, u64>],
    ) -> Sample {
        let mut fault_deltas: Vec<(u32, u64)> = Vec::with_capacity(task_stats.len());
        let mut cpu_moved: HashMap<u32, bool> = HashMap::with_capacity(task_stats.len());
        let mut next_baselines = HashMap::with_capacity(task_stats.len());
        for &(tid, stat) in task_stats {
            let prev = self.prev_threads.get(&tid).copied();
            // A thread first seen after the first sample started during the run: all its
            // faults are new. At the first sample, counts are only baselines.
            let first_sample = self.stats.samples == 0;
            let faults = match prev {
                Some(p) => stat.faults.saturating_sub(p.faults),
                None if first_sample => 0,
                None => stat.faults,
            };
            let moved = prev.is_some_and(|p| stat.cpu_ticks > p.cpu_ticks);
            fault_deltas.push((tid, faults));
            cpu_moved.insert(tid, stat.running() || moved);
            next_baselines.insert(
                tid,
                ThreadBaseline {
                    faults: stat.faults,
                    cpu_ticks: stat.cpu_ticks,
                },
            );
        }
        self.prev_threads = next_baselines;
        self.live_faults_since_process += fault_deltas.iter().map(|(_, f)| f).sum::<u64>();
        if let Some(now) = process_faults {
            if let Some(before) = self.prev_process_faults {
                let exited = now
                    .saturating_sub(before)
                    .saturating_sub(self.live_faults_since_process);
                if exited > 0 {
                    fault_deltas.push((EXITED_THREADS, exited));
                }
            }
            self.prev_process_faults = Some(now);
            self.live_faults_since_process = 0;
        }
        let vanished: Vec<(ThreadIdentity, Vec<Frame>)> = {
            let alive: Vec<u32> = stacks.iter().filter_map(|s| s.native_id).collect();
            let mut gone: Vec<(u32, (ThreadIdentity, Vec<Frame>))> = self
                .last_stacks
                .drain()
                .filter(|(tid, _)| !alive.contains(tid))
                .collect();
            gone.sort_by_key(|(tid, _)| *tid);
            gone.into_iter().map(|(_, last)| last).collect()
        };
        let mut activity = HashMap::with_capacity(fault_deltas.len());
        for &(tid, faults) in &fault_deltas {
            let before = self.fault_activity.get(&tid).copied().unwrap_or(0);
            activity.insert(tid, before - before / 8 + faults);
        }
        self.fault_activity = activity;

        let (growth, release) = match (self.prev_rss, rss) {
            (Some(before), Some(now)) => (now.saturating_sub(before), before.saturating_sub(now)),
            _ => (0, 0),
        };
        if rss.is_some() {
            self.prev_rss = rss;
        }

        let gil_holder = stacks.iter().position(|s| s.holds_gil);
        let has_faults = self.threads.is_some() && stacks.iter().any(|s| s.native_id.is_some());
        let unmatched_holder = unmatched_fallback(&stacks);
        let mut unreadable = 0u64;
        let mut samples: Vec<ThreadSample> = stacks
            .into_iter()
            .map(|stack| {
                let mut values = MetricValues::default();
                values.add(Metric::Wall, 1);
                let on_cpu = stack
                    .native_id
                    .and_then(|tid| cpu_moved.get(&tid).copied())
                    .unwrap_or(!stack.idle);
                if on_cpu {
                    values.add(Metric::Cpu, 1);
                }
                if let Some(tid) = stack.native_id {
                    for (counter, deltas) in self.counters.iter().zip(counter_deltas) {
                        if let Some(&delta) = deltas.get(&tid) {
                            values.add(counter.metric(), delta);
                        }
                    }
                }
                let frames = match (&stack.read_error, stack.native_id) {
                    (Some(_), Some(tid)) => {
                        unreadable += 1;
                        self.last_stacks
                            .get(&tid)
                            .map(|(_, frames)| frames.clone())
                            .unwrap_or_default()
                    }
                    (Some(_), None) => {
                        unreadable += 1;
                        Vec::new()
                    }
                    (None, _) => stack.frames,
                };
                ThreadSample {
                    thread: ThreadIdentity {
                        python_id: Some(stack.thread_id),
                        native_id: stack.native_id,
                        name: stack.name,
                    },
                    frames,
                    values,
                }
            })
            .collect();
        self.stats.unreadable_stacks += unreadable;
        for sample in &samples {
            if let (Some(_), Some(tid)) = (sample.thread.python_id, sample.thread.native_id) {
                self.last_stacks
                    .insert(tid, (sample.thread.clone(), sample.frames.clone()));
            }
        }
        let fallback = gil_holder
            .or_else(|| samples.iter().position(|s| s.values.get(Metric::Cpu) > 0))
            .or(if samples.is_empty() { None } else { Some(0) });
        if growth > 0 {
            let total_faults: u64 = fault_deltas.iter().map(|(_, f)| f).sum();
            if has_faults && total_faults > 0 {
                self.stats.attribution.by_faults += 1;
                if self.charge_by_faults(
                    Metric::Rss,
                    growth,
                    &mut samples,
                    &fault_deltas,
                    unmatched_holder,
                    &vanished,
                ) {
                    self.stats.attribution.unmatched_guessed += 1;
                }
            } else if let Some(index) = fallback {
                self.stats.attribution.by_gil += 1;
                samples[index].values.add(Metric::Rss, growth);
            } else {
                self.stats.attribution.uncharged += 1;
            }
        }
        if release > 0 {
            let activity: Vec<(u32, u64)> = fault_deltas
                .iter()
                .map(|&(tid, _)| (tid, self.fault_activity.get(&tid).copied().unwrap_or(0)))
                .collect();
            if has_faults && activity.iter().any(|&(_, a)| a > 0) {
                self.charge_by_faults(
                    Metric::RssRelease,
                    release,
                    &mut samples,
                    &activity,
                    unmatched_holder,
                    &vanished,
                );
            } else {
                let on_cpu: Vec<usize> = (0..samples.len())
                    .filter(|&i| samples[i].values.get(Metric::Cpu) > 0)
                    .collect();
                let receivers = if on_cpu.is_empty() {
                    fallback.into_iter().collect()
                } else {
                    on_cpu
                };
                let shares = split_proportionally(release, &vec![1; receivers.len()]);
                for (index, share) in receivers.into_iter().zip(shares) {
                    samples[index].values.add(Metric::RssRelease, share);
                }
            }
        }
        Sample {
            time,
            rss,
            threads: samples,
        }
    }

    /// Shares `amount` of `metric` among the process's threads by `weights` (per kernel thread).
    /// A kernel thread that matches no Python thread's id is charged to `unmatched` (a Python
    /// thread whose kernel id is unknown: it may be that thread) when there is one, else gets a
    /// sample of its own, without frames. Returns whether anything went to `unmatched`.
    fn charge_by_faults(
        &self,
        metric: Metric,
        amount: u64,
        samples: &mut Vec<ThreadSample>,
        weights: &[(u32, u64)],
        unmatched: Option<usize>,
        vanished: &[(ThreadIdentity, Vec<Frame>)],
    ) -> bool {
        let mut guessed = false;
        let shares =
            split_proportionally(amount, &weights.iter().map(|&(_, w)| w).collect::<Vec<_>>());
        for (&(tid, _), share) in weights.iter().zip(shares) {
            if share == 0 {
                continue;
            }
            if tid == EXITED_THREADS {
                charge_exited(metric, share, samples, vanished);
                continue;
            }
            if let Some(sample) = samples
                .iter_mut()
                .find(|s| s.thread.python_id.is_some() && s.thread.native_id == Some(tid))
            {
                sample.values.add(metric, share);
                continue;
            }
            if let Some(index) = unmatched {
                samples[index].values.add(metric, share);
                guessed = true;
                continue;
            }
            let mut values = MetricValues::default();
            values.add(metric, share);
            let name = self
                .threads
                .as_ref()
                .and_then(|t| t.name(tid))
                .map(str::to_string);
            samples.push(ThreadSample {
                thread: ThreadIdentity {
                    python_id: None,
                    native_id: Some(tid),
                    name,
                },
                frames: Vec::new(),
                values,
            });
        }
        guessed
    }
}

/// The pseudo kernel thread id of faults taken by threads that exited between two samples
/// (the process's count minus its live threads'); no real thread has id 0.
const EXITED_THREADS: u32 = 0;

/// Charges `amount` taken by threads that exited since the previous sample to the last stacks
/// of the Python threads that vanished, equally; without any, to a thread without ids.
fn charge_exited(
    metric: Metric,
    amount: u64,
    samples: &mut Vec<ThreadSample>,
    vanished: &[(ThreadIdentity, Vec<Frame>)],
) {
    if vanished.is_empty() {
        let mut values = MetricValues::default();
        values.add(metric, amount);
        samples.push(ThreadSample {
            thread: ThreadIdentity {
                python_id: None,
                native_id: None,
                name: Some("exited between samples".to_string()),
            },
            frames: Vec::new(),
            values,
        });
        return;
    }
    let shares = split_proportionally(amount, &vec![1; vanished.len()]);
    for ((thread, frames), share) in vanished.iter().zip(shares) {
        let mut values = MetricValues::default();
        values.add(metric, share);
        samples.push(ThreadSample {
            thread: thread.clone(),
            frames: frames.clone(),
            values,
        });
    }
}

/// The Python thread (index into `stacks`) to charge for kernel threads that match no
/// Python thread: among the Python threads without a kernel id, the GIL holder, else one
/// that is not idle, else the first; `None` when every Python thread's kernel id is known.
fn unmatched_fallback(stacks: &[ThreadStack]) -> Option<usize> {
    let unknown = || {
        stacks
            .iter()
            .enumerate()
            .filter(|(_, s)| s.native_id.is_none())
    };
    unknown()
        .find(|(_, s)| s.holds_gil)
        .or_else(|| unknown().find(|(_, s)| !s.idle))
        .or_else(|| unknown().next())
        .map(|(i, _)| i)
}

/// Splits `total` in proportion to `weights`; the parts add up to `total` exactly (the rounding
/// remainder goes to the largest weight). All-zero weights get nothing.
pub fn split_proportionally(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let mut parts: Vec<u64> = weights
        .iter()
        .map(|&w| u64::try_from(u128::from(total) * u128::from(w) / sum).unwrap_or(u64::MAX))
        .collect();
    let given: u64 = parts.iter().sum();
    if let Some((largest, _)) = weights.iter().enumerate().max_by_key(|&(_, w)| *w) {
        parts[largest] += total - given;
    }
    parts
}

/// What [`run_ticks`] drives: one tick at a time, and the run's statistics.
pub(crate) trait Ticker {
    /// Takes one tick's samples; returns whether the target has exited.
    fn tick(&mut self, time: Duration, sink: &mut dyn SampleSink) -> bool;
    /// The run's statistics, in which the loop keeps timing and tick counts.
    fn stats_mut(&mut self) -> &mut SamplerStats;
}

impl<S: StackSource> Ticker for Sampler<S> {
    fn tick(&mut self, time: Duration, sink: &mut dyn SampleSink) -> bool {
        Sampler::tick(self, time, sink)
    }

    fn stats_mut(&mut self) -> &mut SamplerStats {
        &mut self.stats
    }
}

/// The loop of a run: ticks on absolute deadlines (a tick that overruns skips the deadlines it
/// passed, counted as missed, so the clock never drifts) until the duration elapses, `stop`
/// is raised or the target is gone; returns the run's statistics.
pub(crate) fn run_ticks(
    ticker: &mut impl Ticker,
    options: SamplerOptions,
    stop: &AtomicBool,
    sink: &mut dyn SampleSink,
) -> SamplerStats {
    let clock = MonotonicClock::for_sampling();
    let period_ns = (1e9 / options.rate_hz).round().max(1.0) as u64;
    let end_ns = options
        .duration
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let progress_every_ns = 250_000_000;
    let mut next_progress_ns = progress_every_ns;
    let mut tick: u64 = 0;
    let stop_reason = loop {
        if stop.load(Ordering::Relaxed) {
            break StopReason::Interrupted;
        }
        let started_ns = clock.elapsed_ns();
        if end_ns.is_some_and(|end| started_ns >= end) {
            break StopReason::Duration;
        }
        ticker.stats_mut().ticks += 1;
        let exited = ticker.tick(Duration::from_nanos(started_ns), sink);
        let finished_ns = clock.elapsed_ns();
        let stats = ticker.stats_mut();
        stats.elapsed = Duration::from_nanos(finished_ns);
        if exited {
            break StopReason::TargetExited;
        }
        let cost = finished_ns.saturating_sub(started_ns);
        stats
            .sample_costs_ns
            .push(u32::try_from(cost).unwrap_or(u32::MAX));
        if finished_ns >= next_progress_ns {
            sink.progress(stats);
            next_progress_ns = finished_ns + progress_every_ns;
        }
        tick += 1;
        let mut deadline = tick.saturating_mul(period_ns);
        if finished_ns > deadline {
            let skipped = (finished_ns - deadline) / period_ns;
            stats.missed_ticks += skipped;
            stats.ticks += skipped;
            tick += skipped;
            deadline = tick.saturating_mul(period_ns);
        }
        if let Some(end) = end_ns {
            deadline = deadline.min(end);
        }
        clock.sleep_until_ns(deadline, stop);
    };
    let stats = ticker.stats_mut();
    stats.elapsed = Duration::from_nanos(clock.elapsed_ns());
    stats.stop = Some(stop_reason);
    stats.clone()
}

/// Whether the target has exited (gone, or a zombie), as the attach layer tells.
fn process_gone(pid: i32) -> bool {
    crate::attach::proc_files::has_exited(pid)
}

/// Time since the start of a run, and sleeping until an absolute deadline after it (so that
/// sleep overshoot never accumulates into drift) through the attach layer's deadline sleep.
struct MonotonicClock {
    start: Instant,
}

impl MonotonicClock {
    /// Starts the clock, and asks the kernel for 1 µs timer slack on this thread (the default
    /// 50 µs would blur deadlines at high rates).
    fn for_sampling() -> MonotonicClock {
        // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
        }
        MonotonicClock {
            start: Instant::now(),
        }
    }

    /// Nanoseconds since the clock started.
    fn elapsed_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Sleeps until `deadline_ns` after the start, returning early when `stop` is raised
    /// (a signal interrupts the sleep).
    fn sleep_until_ns(&self, deadline_ns: u64, stop: &AtomicBool) {
        crate::attach::stop::sleep_until(self.start + Duration::from_nanos(deadline_ns), stop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::CodeInfo;
    use std::sync::Arc;

    fn frame(function: &str) -> Frame {
        Frame {
            code: Arc::new(CodeInfo {
                function: function.to_string(),
                filename: "test.py".to_string(),
                first_line: 1,
            }),
            line: 10,
        }
    }

    fn own_thread(function: &str) -> ThreadStack {
        ThreadStack {
            thread_id: 1,
            // SAFETY: gettid has no preconditions.
            native_id: Some(unsafe { libc::gettid() } as u32),
            name: Some("MainThread".to_string()),
            holds_gil: true,
            idle: false,
            frames: vec![frame(function)],
            locals: Vec::new(),
            read_error: None,
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("synthetic read failure (exited: {exited})")]
    struct FakeError {
        exited: bool,
    }

    /// Replays a script of read results, then reports the target gone.
    struct Scripted {
        script: std::vec::IntoIter<Result<Vec<ThreadStack>, FakeError>>,
        delay: Duration,
    }

    impl StackSource for Scripted {
        type Error = FakeError;
        fn read_stacks(&mut self) -> Result<Vec<ThreadStack>, FakeError> {
            std::thread::sleep(self.delay);
            self.script
                .next()
                .unwrap_or(Err(FakeError { exited: true }))
        }
        fn process_exited(error: &FakeError) -> bool {
            error.exited
        }
    }

    #[derive(Default)]
    struct Collect(Vec<Sample>);

    impl SampleSink for Collect {
        fn record(&mut self, sample: Sample) {
            self.0.push(sample);
        }
    }

    fn sampler(
        script: Vec<Result<Vec<ThreadStack>, FakeError>>,
        delay: Duration,
        rate_hz: f64,
    ) -> Sampler<Scripted> {
        let source = Scripted {
            script: script.into_iter(),
            delay,
        };
        let options = SamplerOptions {
            rate_hz,
            duration: None,
        };
        Sampler::new(source, std::process::id() as i32, options).expect("sampler")
    }

    #[test]
    fn split_adds_up_exactly_and_follows_weights() {
        assert_eq!(split_proportionally(10, &[1, 1, 2]), vec![2, 2, 6]);
        assert_eq!(split_proportionally(7, &[0, 0]), vec![0, 0]);
        assert_eq!(split_proportionally(5, &[]), Vec::<u64>::new());
        let parts = split_proportionally(1_000_003, &[3, 0, 5, 9]);
        assert_eq!(parts.iter().sum::<u64>(), 1_000_003);
        assert_eq!(parts[1], 0);
    }

    #[test]
    fn metric_names_round_trip() {
        for metric in Metric::ALL {
            assert_eq!(metric.name().parse::<Metric>().expect("parse"), metric);
            assert_eq!(Metric::ALL[metric.index()], metric);
        }
        let err = "bytes".parse::<Metric>().expect_err("unknown");
        assert!(err.to_string().contains("rss-release"), "{err}");
    }

    #[test]
    fn rejects_unusable_rates() {
        for rate in [0.0, -5.0, f64::NAN, 1e9] {
            let source = Scripted {
                script: Vec::new().into_iter(),
                delay: Duration::ZERO,
            };
            let options = SamplerOptions {
                rate_hz: rate,
                duration: None,
            };
            let result = Sampler::new(source, std::process::id() as i32, options);
            assert!(matches!(result, Err(SamplerError::BadRate(_))), "{rate}");
        }
    }

    #[test]
    fn stops_when_the_target_exits_and_counts_torn_reads() {
        let script = vec![
            Ok(vec![own_thread("a")]),
            Err(FakeError { exited: false }),
            Ok(vec![own_thread("b")]),
        ];
        let mut sampler = sampler(script, Duration::ZERO, 1000.0);
        let mut sink = Collect::default();
        let stats = sampler.run(&AtomicBool::new(false), &mut sink);
        assert_eq!(stats.stop, Some(StopReason::TargetExited));
        assert_eq!(stats.samples, 2);
        assert_eq!(stats.read_errors, 1);
        assert!(
            stats
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("synthetic"))
        );
        let functions: Vec<&str> = sink
            .0
            .iter()
            .map(|s| s.threads[0].frames[0].code.function.as_str())
            .collect();
        assert_eq!(functions, ["a", "b"]);
        assert!(
            sink.0
                .iter()
                .all(|s| s.threads[0].values.get(Metric::Wall) == 1)
        );
        assert!(sink.0.iter().all(|s| s.rss.is_some_and(|rss| rss > 0)));
    }

    #[test]
    fn a_slow_read_misses_ticks_instead_of_drifting() {
        let script = (0..6).map(|_| Ok(vec![own_thread("slow")])).collect();
        // Each read takes 3.5 periods of a 200 Hz clock.
        let mut sampler = sampler(script, Duration::from_micros(17_500), 200.0);
        let stats = sampler.run(&AtomicBool::new(false), &mut Collect::default());
        assert_eq!(stats.samples, 6);
        assert!(stats.missed_ticks >= 6 * 2, "missed {}", stats.missed_ticks);
        // Every due tick is either taken (6 samples + the exit tick) or missed.
        assert_eq!(stats.ticks, stats.samples + 1 + stats.missed_ticks);
    }

    #[test]
    fn stop_flag_ends_the_run() {
        let script = (0..100_000).map(|_| Ok(vec![own_thread("loop")])).collect();
        let mut sampler = sampler(script, Duration::ZERO, 100.0);
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                stop.store(true, Ordering::Relaxed);
            });
            let stats = sampler.run(&stop, &mut Collect::default());
            assert_eq!(stats.stop, Some(StopReason::Interrupted));
            assert!(stats.samples >= 1 && stats.samples < 100_000);
        });
    }

    #[test]
    fn duration_ends_the_run() {
        let script: Vec<_> = (0..100_000).map(|_| Ok(vec![own_thread("loop")])).collect();
        let source = Scripted {
            script: script.into_iter(),
            delay: Duration::ZERO,
        };
        let options = SamplerOptions {
            rate_hz: 100.0,
            duration: Some(Duration::from_millis(50)),
        };
        let mut sampler =
            Sampler::new(source, std::process::id() as i32, options).expect("sampler");
        let stats = sampler.run(&AtomicBool::new(false), &mut Collect::default());
        assert_eq!(stats.stop, Some(StopReason::Duration));
        assert!(stats.samples >= 1);
        assert!(stats.elapsed >= Duration::from_millis(50));
    }

    /// A counter source that reports a growing total for the calling thread.
    struct Growing {
        tid: u32,
        total: u64,
    }

    impl CounterSource for Growing {
        fn metric(&self) -> Metric {
            Metric::Cpu
        }
        fn read(&mut self, totals: &mut HashMap<u32, u64>) -> Result<(), CounterError> {
            self.total += 5;
            totals.insert(self.tid, self.total);
            Ok(())
        }
    }

    #[test]
    fn counter_sources_charge_their_deltas_to_the_thread() {
        let script = (0..3).map(|_| Ok(vec![own_thread("c")])).collect();
        let mut sampler = sampler(script, Duration::ZERO, 1000.0);
        let tid = own_thread("x").native_id.expect("tid");
        sampler.add_counter(Box::new(Growing { tid, total: 0 }));
        let mut sink = Collect::default();
        sampler.run(&AtomicBool::new(false), &mut sink);
        let cpu: Vec<u64> = sink
            .0
            .iter()
            .map(|s| s.threads[0].values.get(Metric::Cpu))
            .collect();
        // The first read is the baseline; then +5 per tick, plus 1 for the on-CPU sample.
        assert_eq!(cpu, [1, 6, 6]);
    }

    #[test]
    fn without_thread_ids_growth_goes_to_the_gil_holder() {
        let holder = ThreadStack {
            native_id: None,
            ..own_thread("holder")
        };
        let waiter = ThreadStack {
            thread_id: 2,
            native_id: None,
            holds_gil: false,
            idle: true,
            ..own_thread("waiter")
        };
        let mut sampler = sampler(Vec::new(), Duration::ZERO, 100.0);
        sampler.prev_rss = Some(1000);
        let sample = sampler.attribute(
            Duration::ZERO,
            Some(5096),
            vec![waiter, holder],
            &[],
            None,
            &[],
        );
        let rss: Vec<u64> = sample
            .threads
            .iter()
            .map(|t| t.values.get(Metric::Rss))
            .collect();
        assert_eq!(rss, [0, 4096]);
        assert_eq!(sampler.stats.attribution.by_gil, 1);
        let cpu: Vec<u64> = sample
            .threads
            .iter()
            .map(|t| t.values.get(Metric::Cpu))
            .collect();
        assert_eq!(cpu, [0, 1]);
    }

    #[test]
    fn growth_follows_fault_deltas_including_non_python_threads() {
        let a = ThreadStack {
            native_id: Some(101),
            ..own_thread("a")
        };
        let b = ThreadStack {
            thread_id: 2,
            native_id: Some(102),
            ..own_thread("b")
        };
        let mut sampler = sampler(Vec::new(), Duration::ZERO, 100.0);
        let stat = |faults| ThreadStat {
            state: b'S',
            faults,
            cpu_ticks: 0,
        };
        let baseline = [(101, stat(0)), (102, stat(0)), (103, stat(0))];
        sampler.attribute(
            Duration::ZERO,
            Some(0),
            vec![a.clone(), b.clone()],
            &baseline,
            None,
            &[],
        );
        let later = [(101, stat(300)), (102, stat(0)), (103, stat(100))];
        let sample = sampler.attribute(Duration::ZERO, Some(4000), vec![a, b], &later, None, &[]);
        let rss: Vec<(Option<u64>, Option<u32>, u64)> = sample
            .threads
            .iter()
            .map(|t| {
                (
                    t.thread.python_id,
                    t.thread.native_id,
                    t.values.get(Metric::Rss),
                )
            })
            .collect();
        assert_eq!(
            rss,
            [
                (Some(1), Some(101), 3000),
                (Some(2), Some(102), 0),
                (None, Some(103), 1000)
            ]
        );
        assert_eq!(sampler.stats.attribution.by_faults, 1);
    }

    #[test]
    fn release_follows_recent_faults_not_cpu() {
        let allocator = ThreadStack {
            native_id: Some(201),
            idle: true,
            holds_gil: false,
            ..own_thread("allocator")
        };
        let burner = ThreadStack {
            thread_id: 2,
            native_id: Some(202),
            idle: false,
            holds_gil: true,
            ..own_thread("burner")
        };
        let mut sampler = sampler(Vec::new(), Duration::ZERO, 100.0);
        let stat = |faults, state| ThreadStat {
            state,
            faults,
            cpu_ticks: 0,
        };
        let stacks = || vec![allocator.clone(), burner.clone()];
        sampler.attribute(
            Duration::ZERO,
            Some(0),
            stacks(),
            &[(201, stat(0, b'S')), (202, stat(0, b'R'))],
            None,
            &[],
        );
        sampler.attribute(
            Duration::ZERO,
            Some(8192),
            stacks(),
            &[(201, stat(2, b'S')), (202, stat(0, b'R'))],
            None,
            &[],
        );
        let sample = sampler.attribute(
            Duration::ZERO,
            Some(0),
            stacks(),
            &[(201, stat(2, b'S')), (202, stat(0, b'R'))],
            None,
            &[],
        );
        let release: Vec<u64> = sample
            .threads
            .iter()
            .map(|t| t.values.get(Metric::RssRelease))
            .collect();
        assert_eq!(release, [8192, 0], "the burner is on CPU but never faulted");
    }

    #[test]
    fn faults_of_exited_threads_go_to_their_last_stack() {
        let main = ThreadStack {
            native_id: Some(301),
            ..own_thread("serve")
        };
        let handler = ThreadStack {
            thread_id: 2,
            native_id: Some(302),
            ..own_thread("handler")
        };
        let stat = |faults| ThreadStat {
            state: b'S',
            faults,
            cpu_ticks: 0,
        };
        let mut sampler = sampler(Vec::new(), Duration::ZERO, 100.0);
        let both = [(301, stat(10)), (302, stat(5))];
        sampler.attribute(
            Duration::ZERO,
            Some(0),
            vec![main.clone(), handler],
            &both,
            Some(15),
            &[],
        );
        // The handler exited after taking 90 more faults; the main thread took 30.
        let sample = sampler.attribute(
            Duration::ZERO,
            Some(12_000),
            vec![main.clone()],
            &[(301, stat(40))],
            Some(135),
            &[],
        );
        let charged: Vec<(&str, u64)> = sample
            .threads
            .iter()
            .map(|t| {
                (
                    t.frames[0].code.function.as_str(),
                    t.values.get(Metric::Rss),
                )
            })
            .collect();
        assert_eq!(charged, [("serve", 3_000), ("handler", 9_000)]);
        // Later exits with no Python thread vanished go to a placeholder without ids.
        let sample = sampler.attribute(
            Duration::ZERO,
            Some(16_000),
            vec![main],
            &[(301, stat(40))],
            Some(175),
            &[],
        );
        let placeholder = &sample.threads[1];
        assert_eq!(placeholder.thread.python_id, None);
        assert_eq!(placeholder.thread.native_id, None);
        assert_eq!(placeholder.values.get(Metric::Rss), 4_000);
    }

    #[test]
    fn release_goes_to_threads_on_cpu() {
        let busy = ThreadStack {
            native_id: None,
            idle: false,
            ..own_thread("busy")
        };
        let idle = ThreadStack {
            thread_id: 2,
            native_id: None,
            idle: true,
            holds_gil: false,
            ..own_thread("idle")
        };
        let mut sampler = sampler(Vec::new(), Duration::ZERO, 100.0);
        sampler.prev_rss = Some(10_000);
        let sample = sampler.attribute(
            Duration::ZERO,
            Some(2_000),
            vec![busy, idle],
            &[],
            None,
            &[],
        );
        let release: Vec<u64> = sample
            .threads
            .iter()
            .map(|t| t.values.get(Metric::RssRelease))
            .collect();
        assert_eq!(release, [8_000, 0]);
    }
}
