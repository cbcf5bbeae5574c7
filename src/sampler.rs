//! The sampling loop: ticks on absolute deadlines, reads the target's Python stacks and memory
//! counters at each tick, has its attribution charge each counter's delta to the stack of the
//! thread that caused it, and hands one [`Sample`] per tick to a [`SampleSink`].
//!
//! Owns: tick timing and missed-tick accounting, stop conditions (duration, stop flag, target
//! exit), reading the counters each tick (RSS, per-thread page faults and CPU time,
//! [`CounterSource`]s), stand-ins for unreadable stacks, and the run's statistics.
//! Must not touch: how stacks are read (`python`), how counters are read (`memory`), and any
//! aggregation or output format (`profile`, `output`): it only emits samples. The metrics and
//! sample types it emits are `sample`'s.
//!
//! What each interval charges to which stack is the attribution's (`sampler/ticks.rs`: counter
//! deltas between two ticks, charged to the stacks read at the second).
//!
//! A tick whose stack read fails is skipped without updating the baselines, so its deltas are
//! charged at the next successful tick rather than lost.
//!
//! One [`Sampler`] samples one process; [`process_tree::ProcessTreeSampler`] (`--subprocesses`)
//! runs one per Python process of a tree on the same clock, each charging only within its own
//! process, and tags their samples with a [`ProcessIdentity`].

mod heap;
pub mod kernel;
mod page_ledger;
pub mod process_tree;
mod quiet;
mod ticks;
mod time_ledger;
mod unknown_threads;

use crate::memory::rss::RssCounter;
use crate::python::ImageChange;

/// Said (not counted as a read error) while a replaced program runs no readable interpreter.
const EXEC_STARTING: &str =
    "the program was replaced (exec) and the new one runs no Python interpreter pmt can read yet";
use crate::memory::thread_counters::{ThreadCounters, ThreadStat};
use crate::python::{Frame, ThreadStack};
use crate::sample::{Metric, ProcessIdentity, Sample, ThreadSample};
use kernel::{InKernelStats, KernelAttribution, SharedCapture, TickThread};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use ticks::{TickAttribution, TickReadings};

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
    /// `(kernel tid, thread-state address)` of the threads the last read found, for an
    /// in-kernel walker.
    fn thread_states(&self) -> Vec<(u32, u64)> {
        Vec::new()
    }
    /// Decodes a stack captured in the kernel, innermost frame first.
    fn decode_captured(
        &mut self,
        frames: &mut dyn Iterator<Item = crate::python::CapturedFrame>,
    ) -> Vec<Frame> {
        let _ = frames;
        Vec::new()
    }
    /// After a failed read: whether the process has replaced its program (`exec`), and
    /// whether the source now reads the new one.
    fn reattach_after_exec(&mut self) -> ImageChange {
        ImageChange::Same
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

    fn thread_states(&self) -> Vec<(u32, u64)> {
        crate::python::PythonSpy::thread_states(self).to_vec()
    }

    fn decode_captured(
        &mut self,
        frames: &mut dyn Iterator<Item = crate::python::CapturedFrame>,
    ) -> Vec<Frame> {
        self.decode_frames(frames)
    }

    fn reattach_after_exec(&mut self) -> ImageChange {
        crate::python::PythonSpy::reattach_after_exec(self)
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
    /// `process` (one of several sampled together) exited: no more samples of it will come.
    fn process_exited(&mut self, _process: &ProcessIdentity) {}
}

/// How often the sampler ticks and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerOptions {
    /// Ticks per second.
    pub rate_hz: f64,
    /// With in-kernel stacks: read the stacks (and RSS, per-thread counters) every this many
    /// ticks; the ticks between only charge what the kernel and the allocation hook captured,
    /// so that memory is weighed often (the sustained peak sees a buffer freed and made again
    /// between two reads) while stacks are read at the rate asked. 1: every tick reads.
    pub read_every: u32,
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
    /// Ticks that did not read the stacks again because no thread of the target had been on
    /// a CPU since the last read (the scheduler's figures said so): the stacks were the same.
    pub stacks_unchanged: u64,
    /// Counter-source failures.
    pub counter_errors: u64,
    /// Times the target replaced its program (`exec`) and was read anew.
    pub execs: u64,
    /// The program the target replaced itself with (`exec`) when pmt could not read it (no
    /// Python interpreter, or none yet): nothing has been sampled since.
    pub replaced_by_unread: Option<String>,
    /// Time from the first tick to the end of the run.
    pub elapsed: Duration,
    /// The latest RSS read, in bytes.
    pub rss: Option<u64>,
    /// How RSS growth was charged.
    pub attribution: Attribution,
    /// What in-kernel attribution did, when the run used it.
    pub in_kernel: Option<InKernelStats>,
    /// What the allocation hook sampled, when the run has it (summed over processes).
    pub heap: Option<crate::memory::heap_hook::HookTallies>,
    /// Why the run ended (`None` while running).
    pub stop: Option<StopReason>,
    /// The work time of each sample (counters, stacks, attribution, sink), in nanoseconds.
    pub sample_costs_ns: Vec<u32>,
    /// With `--subprocesses`: each process sampled, in the order it was first seen.
    pub processes: Vec<ProcessStats>,
    /// With `--subprocesses`: the processes the tree held, sampled or not.
    pub tree: Option<TreeTallies>,
}

/// What a run that follows a tree saw of its processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeTallies {
    /// Processes found in the tree.
    pub seen: u64,
    /// Processes attached to and sampled.
    pub attached: u64,
    /// Processes that exited before they could be attached to.
    pub missed: u64,
    /// Forked children that exited before they could be attached to, charged what the kernel
    /// captured of them (decoded with their parent's code objects).
    pub charged_unattached: u64,
    /// Processes that are not Python (or not a Python pmt can read).
    pub not_python: u64,
    /// Processes not sampled for another reason (said in the run's notes).
    pub failed: u64,
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
    /// Times it replaced its program (`exec`) and was read anew.
    pub execs: u64,
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

/// The sampling loop over one target.
pub struct Sampler<S: StackSource> {
    source: S,
    pid: i32,
    options: SamplerOptions,
    rss: RssCounter,
    threads: Option<ThreadCounters>,
    counters: Vec<Box<dyn CounterSource>>,
    attribution: TickAttribution,
    /// In-kernel stacks, when the run has them (`rss` and/or `malloc-*` charged there).
    kernel: Option<KernelAttribution>,
    /// The allocation hook in the target, when the run has it (`heap`).
    heap: Option<heap::HeapAttribution>,
    prev_python_threads: usize,
    /// The last read's stacks, while no thread has run since.
    quiet: quiet::QuietThreads,
    /// Each counter source's totals at the previous successful read; `None` before the first.
    prev_counters: Vec<Option<HashMap<u32, u64>>>,
    stats: SamplerStats,
    scratch_stats: Vec<(u32, ThreadStat)>,
    scratch_totals: HashMap<u32, u64>,
    /// The RSS the last full tick read, and when that tick was: a quiet tick
    /// ([`quiet::QuietThreads::still_quiet`]) reads neither RSS nor per-thread counters.
    last_full: Option<(Option<u64>, Duration)>,
    /// The last RSS read, and when: with pages charged in the kernel, RSS serves only the
    /// timeline and the sustained peak, and is read at most every [`KERNEL_RSS_EVERY`].
    last_rss: Option<(Option<u64>, Duration)>,
    /// How long an RSS reading serves (zero: every tick reads it, as tick-based charging needs).
    rss_every: Duration,
    /// The period of [`SamplerOptions::read_every`] ticks in which stacks were last read.
    read_period: Option<u64>,
    /// The last read's Python threads by kernel tid, which name the threads of what the
    /// kernel and the hook captured in the ticks that read no stacks.
    last_threads: HashMap<u32, TickThread>,
    /// The hook's state could not be read at the last read of stacks.
    heap_failed: bool,
}

/// Longest a run of quiet ticks lasts before a full tick reads RSS and the counters anyway
/// (memory the kernel reclaims shows then; a process that went while quiet is noticed).
const QUIET_FULL_EVERY: Duration = Duration::from_millis(250);

/// How long an RSS reading serves when the kernel charges pages: the sustained peak it is
/// weighed at lasts 250 ms, so a reading 10 ms old places it as well (and a tick at 1000 Hz
/// saves a `statm` read nine times in ten).
const KERNEL_RSS_EVERY: Duration = Duration::from_millis(10);

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
            attribution: TickAttribution::default(),
            kernel: None,
            heap: None,
            prev_python_threads: 0,
            quiet: quiet::QuietThreads::default(),
            prev_counters: Vec::new(),
            stats: SamplerStats::default(),
            scratch_stats: Vec::new(),
            scratch_totals: HashMap::new(),
            last_full: None,
            last_rss: None,
            rss_every: Duration::ZERO,
            read_period: None,
            last_threads: HashMap::new(),
            heap_failed: false,
        })
    }

    /// Sets how often it ticks and reads (the run's own figures, checked where they are made).
    pub fn set_rates(&mut self, rate_hz: f64, read_every: u32) {
        self.options.rate_hz = rate_hz;
        self.options.read_every = read_every;
    }

    /// Adds a counter source whose per-thread deltas feed its metric.
    pub fn add_counter(&mut self, counter: Box<dyn CounterSource>) {
        self.counters.push(counter);
        self.prev_counters.push(None);
    }

    /// Charges memory by the stacks `capture` takes in the kernel: `rss` and `rss-release`
    /// through the page ledger when `pages` (tick-based charging then leaves them alone), and
    /// `malloc-*` by its allocation samples. The process must have been added to the capture.
    pub fn use_kernel_stacks(&mut self, capture: SharedCapture, pages: bool) {
        let tgid = u32::try_from(self.pid).unwrap_or(0);
        let heap_end = crate::attach::process::heap_end(self.pid);
        let kernel = KernelAttribution::new(capture, tgid, heap_end);
        if kernel.samples_time() {
            self.attribution.skip_time();
        }
        self.kernel = Some(kernel);
        if pages {
            self.attribution.skip_rss();
            self.rss_every = KERNEL_RSS_EVERY;
        }
    }

    /// Charges the `heap-*` metrics by what the allocation hook in the target samples, once
    /// it is found loaded there.
    pub fn use_heap_hook(&mut self) {
        self.heap = Some(heap::HeapAttribution::new(self.pid));
    }

    /// Whether the allocation hook feeds this sampler.
    pub fn has_heap_hook(&self) -> bool {
        self.heap.is_some()
    }

    /// The stack source.
    pub fn source(&self) -> &S {
        &self.source
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
        let exited = self.read_and_charge(time, sink);
        if exited {
            self.charge_last(time, sink);
        }
        exited
    }

    /// Charges what the kernel captured of `child`, a process this one forked that exited
    /// before it could be attached to: its events, decoded from this process's memory (code
    /// objects made before the fork lie at the same addresses; each is checked). `None` when
    /// the capture did not follow that fork (or no longer holds its events).
    fn charge_exited_child(&mut self, child: i32) -> Option<(Vec<ThreadSample>, InKernelStats)> {
        let kernel = self.kernel.as_ref()?;
        let capture = kernel.capture().clone();
        let child = u32::try_from(child).ok()?;
        if capture.borrow().forked_from(child) != u32::try_from(self.pid).ok() {
            return None;
        }
        let mut attribution = KernelAttribution::new(capture, child, None);
        let source = &mut self.source;
        let threads = attribution.charge_last(&mut |frames| source.decode_captured(frames));
        attribution.read_tallies_now();
        Some((threads, attribution.stats()))
    }

    /// Charges what the kernel captured of a process that exited since its last tick: its
    /// last interval's events (a child that lived less than a tick, memory taken just before
    /// exiting), in one last sample without RSS.
    fn charge_last(&mut self, time: Duration, sink: &mut dyn SampleSink) {
        let Some(kernel) = &mut self.kernel else {
            return;
        };
        let source = &mut self.source;
        let threads = kernel.charge_last(&mut |frames| source.decode_captured(frames));
        self.stats.in_kernel = Some(kernel.stats());
        if !threads.is_empty() {
            sink.record(Sample {
                time,
                rss: None,
                threads,
            });
        }
    }

    /// The last full tick's RSS and the last read's stacks, when this tick can be a quiet one:
    /// within [`QUIET_FULL_EVERY`] of the last full tick, and no thread switched in since the
    /// last stack read (the scheduler's figures alone: one small file per thread).
    fn quiet_tick(
        &mut self,
        time: Duration,
    ) -> Option<(Option<u64>, Vec<crate::python::ThreadStack>)> {
        let (rss, at) = self.last_full?;
        if time.saturating_sub(at) >= QUIET_FULL_EVERY {
            return None;
        }
        let stacks = self.quiet.still_quiet(self.threads.as_mut()?)?;
        Some((rss, stacks))
    }

    /// One tick's readings and charges; returns whether the target has exited.
    fn read_and_charge(&mut self, time: Duration, sink: &mut dyn SampleSink) -> bool {
        // Reads come at the first tick of each period of `read_every` ticks, counted from
        // the start of the run, so that the processes of a tree are read at the same ticks
        // (and a period whose first tick was missed is read at its next).
        // (A tree member whose capture could not be added has no in-kernel stacks and is
        // read at every tick, whatever `read_every` says.)
        let between = self.kernel.is_some() && self.options.read_every > 1;
        let period = between.then(|| {
            (time.as_secs_f64() * self.options.rate_hz).round() as u64
                / u64::from(self.options.read_every)
        });
        if between && self.read_period == period {
            // A tick between two reads: only what was captured, to the threads last read.
            let threads = std::mem::take(&mut self.last_threads);
            let mut charged = Vec::new();
            self.charge_captured(&threads, &mut charged, false);
            self.last_threads = threads;
            if !charged.is_empty() {
                sink.record(Sample {
                    time,
                    rss: None,
                    threads: charged,
                });
            }
            return false;
        }
        self.read_period = period;
        // The last tick's per-thread counters, which a quiet tick keeps.
        let mut task_stats = std::mem::take(&mut self.scratch_stats);
        let mut exited = 0;
        let (rss, unchanged) = match self.quiet_tick(time) {
            // No thread has been switched in since the last stack read: nothing a thread
            // does (its frames, faults, CPU time, the RSS it grows) can have changed.
            Some((rss, stacks)) => (rss, Some(stacks)),
            None => {
                let rss = match self.last_rss {
                    Some((rss, at)) if time.saturating_sub(at) < self.rss_every => rss,
                    _ => {
                        let rss = match self.rss.read() {
                            Ok(rss) => Some(rss),
                            Err(err) if err.process_exited() || process_gone(self.pid) => {
                                return true;
                            }
                            Err(_) => None,
                        };
                        if rss == Some(0) && process_gone(self.pid) {
                            return true;
                        }
                        self.last_rss = Some((rss, time));
                        rss
                    }
                };
                self.last_full = Some((rss, time));
                // The per-thread counters come first: they tell whether any thread ran
                // since the last stack read (if none did, the stacks are the same and need
                // no read).
                let unchanged = match &mut self.threads {
                    Some(threads) => {
                        exited = threads.read_all(&mut task_stats);
                        if exited == 0 {
                            self.quiet.unchanged_stacks(threads, &task_stats)
                        } else {
                            self.quiet.forget();
                            None
                        }
                    }
                    None => None,
                };
                (rss, unchanged)
            }
        };
        let stacks = match unchanged {
            Some(stacks) => {
                self.stats.stacks_unchanged += 1;
                stacks
            }
            None => match self.source.read_stacks() {
                Ok(stacks) => {
                    self.quiet.read(&stacks);
                    stacks
                }
                Err(err) => {
                    self.quiet.forget();
                    self.scratch_stats = task_stats;
                    if S::process_exited(&err) || process_gone(self.pid) {
                        return true;
                    }
                    match self.source.reattach_after_exec() {
                        ImageChange::Reattached => self.program_replaced(),
                        ImageChange::Starting => new_program_unread(&mut self.stats, self.pid),
                        ImageChange::Same => {
                            self.stats.read_errors += 1;
                            self.stats.last_error = Some(err.to_string());
                        }
                    }
                    return false;
                }
            },
        };
        self.stats.torn_reads = self.source.torn_reads();
        let stacks = self.stand_in_for_unreadable(stacks);
        let rescanned = self.refresh_thread_list(&stacks);
        let mut process_faults = None;
        let python_threads = stacks.len();
        if let Some(threads) = &mut self.threads {
            if rescanned {
                // Threads the listing found are counted from this tick.
                exited += threads.read_all(&mut task_stats);
            }
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
        let readings = TickReadings {
            time,
            rss,
            stacks,
            task_stats: &task_stats,
            process_faults,
            counter_deltas: &counter_deltas,
        };
        let mut sample =
            self.attribution
                .charge(readings, self.threads.as_ref(), &mut self.stats.attribution);
        if self.kernel.is_some() || self.heap.is_some() {
            let tick_threads: HashMap<u32, TickThread> = sample
                .threads
                .iter()
                .filter(|s| s.thread.python_id.is_some())
                .filter_map(|s| Some((s.thread.native_id?, (s.thread.clone(), s.frames.clone()))))
                .collect();
            self.charge_captured(&tick_threads, &mut sample.threads, true);
            self.last_threads = tick_threads;
        }
        self.scratch_stats = task_stats;
        self.stats.samples += 1;
        if rss.is_some() {
            self.stats.rss = rss;
        }
        sink.record(sample);
        false
    }

    /// Charges what the kernel and the allocation hook captured since the last tick to
    /// `charged`; `tick_threads` are the Python threads of the last stack read, by kernel tid,
    /// `read` whether this tick read them (and so may have found threads to hand over).
    fn charge_captured(
        &mut self,
        tick_threads: &HashMap<u32, TickThread>,
        charged: &mut Vec<ThreadSample>,
        read: bool,
    ) {
        let source = &mut self.source;
        let before = charged.len();
        if let Some(kernel) = &mut self.kernel {
            charged
                .extend(kernel.charge(tick_threads, &mut |frames| source.decode_captured(frames)));
            if read {
                kernel.hand_over_threads(&source.thread_states());
            }
            self.stats.in_kernel = Some(kernel.stats());
        }
        if let Some(heap) = &mut self.heap {
            // Between two reads, the hook's state is read only while it changes, or when the
            // kernel caught the process faulting pages in: most processes a pool follows are
            // quiet, and one read of each one's state at every tick was most of what following
            // them cost. What a quiet process starts doing is seen at the next tick it faults,
            // or at the next read of its stacks.
            if !read && heap.quiet() && charged.len() == before {
                return;
            }
            match heap.charge(tick_threads, &mut |frames| source.decode_captured(frames)) {
                Ok(captured) => {
                    self.heap_failed = false;
                    charged.extend(captured);
                }
                // Between two reads, or at a first failure: the process may be exiting (its
                // memory goes before it is a zombie) or replacing its program, which the next
                // read of its stacks tells apart.
                Err(_) if !read || !std::mem::replace(&mut self.heap_failed, true) => {}
                // A program whose interpreter lies where the old one's did (a binary not
                // built position-independent) reads on after `exec`; its hook's state does
                // not.
                Err(err) => match source.reattach_after_exec() {
                    ImageChange::Reattached => {
                        self.heap_failed = false;
                        self.stats.execs += 1;
                        self.stats.replaced_by_unread = None;
                        heap.program_replaced();
                    }
                    ImageChange::Starting => new_program_unread(&mut self.stats, self.pid),
                    ImageChange::Same => {
                        self.stats.counter_errors += 1;
                        self.stats.last_error = Some(err.to_string());
                    }
                },
            }
            self.stats.heap = heap.tallies();
        }
    }

    /// The process replaced its program (`exec`) and the source reads the new one: nothing of
    /// the old program's heap is left, so what its stacks held is given back at the next
    /// reading of the new program's.
    fn program_replaced(&mut self) {
        self.stats.execs += 1;
        self.stats.replaced_by_unread = None;
        if let Some(heap) = &mut self.heap {
            heap.program_replaced();
        }
    }

    /// A thread whose stack stayed torn for every try is charged to its previous stack (the
    /// same guess tick-based charging makes at the other end of the interval), or with none
    /// to no Python frames; each is counted.
    fn stand_in_for_unreadable(&mut self, mut stacks: Vec<ThreadStack>) -> Vec<ThreadStack> {
        for stack in &mut stacks {
            if stack.read_error.is_none() {
                continue;
            }
            self.stats.unreadable_stacks += 1;
            if let Some(frames) = stack
                .native_id
                .and_then(|tid| self.attribution.previous_frames(tid))
            {
                stack.frames = frames.to_vec();
            }
        }
        stacks
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

    /// Each counter source's metric and per-thread deltas since the previous successful tick.
    fn read_counter_deltas(&mut self) -> Vec<(Metric, HashMap<u32, u64>)> {
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
            all.push((counter.metric(), deltas));
        }
        all
    }
}

/// What [`run_ticks`] drives: one tick at a time, and the run's statistics.
pub(crate) trait Ticker {
    /// Takes one tick's samples; returns whether the target has exited.
    fn tick(&mut self, time: Duration, sink: &mut dyn SampleSink) -> bool;
    /// The run's statistics, in which the loop keeps timing and tick counts.
    fn stats_mut(&mut self) -> &mut SamplerStats;
    /// Brings the statistics up to date at the end of the run (figures read less often
    /// than every tick are read once more).
    fn finish(&mut self);
    /// Whether a run stopped by its duration or the stop flag ticks once more as it ends:
    /// where ticks are rarer than what they charge is gathered (time sampled in the kernel,
    /// drained at [`crate::run::TIME_TICK_HZ`]), what came since the last tick is charged.
    fn ticks_at_the_end(&self) -> bool {
        false
    }
    /// Between two reads of stacks: the descriptors (what the kernel captures) whose becoming
    /// readable is all a tick could find to do, when nothing else is pending; `None` (the
    /// default) when ticks must come as they are due.
    fn idle_fds(&self) -> Option<Vec<RawFd>> {
        None
    }
}

impl<S: StackSource> Ticker for Sampler<S> {
    fn tick(&mut self, time: Duration, sink: &mut dyn SampleSink) -> bool {
        Sampler::tick(self, time, sink)
    }

    fn stats_mut(&mut self) -> &mut SamplerStats {
        &mut self.stats
    }

    fn finish(&mut self) {
        if let Some(kernel) = &mut self.kernel {
            kernel.read_tallies_now();
            self.stats.in_kernel = Some(kernel.stats());
        }
    }

    fn ticks_at_the_end(&self) -> bool {
        self.kernel
            .as_ref()
            .is_some_and(KernelAttribution::samples_time)
    }

    /// A tick between two reads charges only what was captured since (`read_and_charge`):
    /// with nothing captured and the hook quiet, it does nothing, so the run waits on the ring
    /// of events instead of waking for it.
    fn idle_fds(&self) -> Option<Vec<RawFd>> {
        let kernel = self.kernel.as_ref()?;
        let quiet = self.heap.as_ref().is_none_or(heap::HeapAttribution::quiet);
        (self.options.read_every > 1 && quiet && !kernel.samples_time())
            .then(|| vec![kernel.capture().borrow().events_fd()])
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
        let ending = if stop.load(Ordering::Relaxed) {
            Some(StopReason::Interrupted)
        } else if end_ns.is_some_and(|end| clock.elapsed_ns() >= end) {
            Some(StopReason::Duration)
        } else {
            None
        };
        if let Some(reason) = ending {
            if tick > 0 && ticker.ticks_at_the_end() {
                let now = Duration::from_nanos(clock.elapsed_ns());
                ticker.stats_mut().ticks += 1;
                if ticker.tick(now, sink) {
                    break StopReason::TargetExited;
                }
            }
            break reason;
        }
        let started_ns = clock.elapsed_ns();
        ticker.stats_mut().ticks += 1;
        let samples_before = ticker.stats_mut().samples;
        let exited = ticker.tick(Duration::from_nanos(started_ns), sink);
        let finished_ns = clock.elapsed_ns();
        let stats = ticker.stats_mut();
        stats.elapsed = Duration::from_nanos(finished_ns);
        if exited {
            break StopReason::TargetExited;
        }
        // The cost of a sample: ticks between two reads of stacks are not samples.
        if stats.samples > samples_before {
            let cost = finished_ns.saturating_sub(started_ns);
            stats
                .sample_costs_ns
                .push(u32::try_from(cost).unwrap_or(u32::MAX));
        }
        if finished_ns >= next_progress_ns {
            sink.progress(stats);
            next_progress_ns = finished_ns + progress_every_ns;
        }
        tick += 1;
        let deadline = tick.saturating_mul(period_ns);
        if finished_ns > deadline {
            let skipped = (finished_ns - deadline) / period_ns;
            stats.missed_ticks += skipped;
            stats.ticks += skipped;
            tick += skipped;
        } else {
            // (After missed ticks, the next tick may be a read that came late: it is taken.)
            let idle = skip_idle_ticks(
                ticker,
                &clock,
                options.read_every,
                tick,
                period_ns,
                end_ns,
                stop,
            );
            ticker.stats_mut().ticks += idle;
            tick += idle;
        }
        let deadline = tick.saturating_mul(period_ns);
        clock.sleep_until_ns(end_ns.map_or(deadline, |end| deadline.min(end)), stop);
    };
    ticker.finish();
    let stats = ticker.stats_mut();
    stats.elapsed = Duration::from_nanos(clock.elapsed_ns());
    stats.stop = Some(stop_reason);
    stats.clone()
}

/// How many of the ticks from `tick` on a ticker with nothing to do between two reads of
/// stacks ([`Ticker::idle_fds`]) leaves out: it waits until what it captures is readable (then
/// ticks at the first tick due from then) or until the next read. Following lightly loaded
/// workers, the ticks that found nothing were a third of what the run cost.
fn skip_idle_ticks(
    ticker: &impl Ticker,
    clock: &MonotonicClock,
    read_every: u32,
    tick: u64,
    period_ns: u64,
    end_ns: Option<u64>,
    stop: &AtomicBool,
) -> u64 {
    let read_every = u64::from(read_every);
    if read_every <= 1 || tick.is_multiple_of(read_every) {
        return 0;
    }
    let Some(fds) = ticker.idle_fds() else {
        return 0;
    };
    let read_tick = tick.next_multiple_of(read_every);
    let until = read_tick.saturating_mul(period_ns);
    let until = end_ns.map_or(until, |end| until.min(end));
    clock.wait_readable_until_ns(&fds, until, stop);
    if stop.load(Ordering::Relaxed) {
        return 0;
    }
    // Readable: the first tick due from now; else the read (or the run's end) came.
    let due = clock.elapsed_ns().div_ceil(period_ns);
    due.clamp(tick, read_tick) - tick
}

/// Whether the target has exited (gone, or a zombie), as the attach layer tells.
/// Process `pid` replaced its program (`exec`) and the new one cannot be read (yet).
fn new_program_unread(stats: &mut SamplerStats, pid: i32) {
    stats.last_error = Some(EXEC_STARTING.into());
    if stats.replaced_by_unread.is_none() {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"));
        stats.replaced_by_unread = Some(exe.map_or_else(
            |_| "a program pmt cannot name".into(),
            |p| p.to_string_lossy().into_owned(),
        ));
    }
}

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

    /// Waits until one of `fds` is readable (`true`) or `deadline_ns` after the start.
    fn wait_readable_until_ns(&self, fds: &[RawFd], deadline_ns: u64, stop: &AtomicBool) -> bool {
        crate::attach::stop::wait_readable_until(
            fds,
            self.start + Duration::from_nanos(deadline_ns),
            stop,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::{CodeInfo, Frame};
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

    /// A stack of this thread (holding the GIL, on CPU) in `function`.
    pub(super) fn own_thread(function: &str) -> ThreadStack {
        ThreadStack {
            thread_id: 1,
            // SAFETY: gettid has no preconditions.
            native_id: Some(unsafe { libc::gettid() } as u32),
            name: Some("MainThread".to_string()),
            holds_gil: true,
            idle: false,
            frames: vec![frame(function)],
            locals: Vec::new(),
            cut: false,
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
            read_every: 1,
            duration: None,
        };
        Sampler::new(source, std::process::id() as i32, options).expect("sampler")
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
                read_every: 1,
                duration: None,
            };
            let result = Sampler::new(source, std::process::id() as i32, options);
            assert!(matches!(result, Err(SamplerError::BadRate(_))), "{rate}");
        }
    }

    #[test]
    fn an_unreadable_stack_is_charged_to_the_threads_previous_one_and_counted() {
        let mut torn = own_thread("ignored");
        torn.frames.clear();
        torn.read_error = Some("frame chain (cut)".to_string());
        let script = vec![
            Ok(vec![torn.clone()]),
            Ok(vec![own_thread("a")]),
            Ok(vec![torn]),
            Ok(vec![own_thread("b")]),
        ];
        let mut sampler = sampler(script, Duration::ZERO, 1000.0);
        let mut sink = Collect::default();
        let stats = sampler.run(&AtomicBool::new(false), &mut sink);
        assert_eq!(stats.unreadable_stacks, 2);
        let functions: Vec<Option<&str>> = sink
            .0
            .iter()
            .map(|s| {
                s.threads[0]
                    .frames
                    .first()
                    .map(|f| f.code.function.as_str())
            })
            .collect();
        assert_eq!(functions, [None, Some("a"), Some("a"), Some("b")]);
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

    /// A ticker that is idle between reads, waiting on a pipe (non-blocking) it drains at each
    /// tick.
    struct Waiting {
        pipe: std::io::PipeReader,
        times: Vec<Duration>,
        stats: SamplerStats,
    }

    impl Ticker for Waiting {
        fn tick(&mut self, time: Duration, _: &mut dyn SampleSink) -> bool {
            use std::io::Read;
            let _ = self.pipe.read(&mut [0; 64]);
            self.times.push(time);
            false
        }
        fn stats_mut(&mut self) -> &mut SamplerStats {
            &mut self.stats
        }
        fn finish(&mut self) {}
        fn idle_fds(&self) -> Option<Vec<RawFd>> {
            use std::os::fd::AsRawFd;
            Some(vec![self.pipe.as_raw_fd()])
        }
    }

    #[test]
    fn an_idle_ticker_wakes_only_to_read_or_for_what_it_captured() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let (pipe, mut writer) = std::io::pipe().expect("pipe");
        // SAFETY: F_SETFL on a descriptor this test owns.
        unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        let mut ticker = Waiting {
            pipe,
            times: Vec::new(),
            stats: SamplerStats::default(),
        };
        // Ticks at 100 Hz, stacks read every 10th: reads at 0, 100, 200 and 300 ms.
        let options = SamplerOptions {
            rate_hz: 100.0,
            read_every: 10,
            duration: Some(Duration::from_millis(350)),
        };
        let wrote = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            writer.write_all(b"x").expect("write");
            writer
        });
        let stats = run_ticks(
            &mut ticker,
            options,
            &AtomicBool::new(false),
            &mut Collect::default(),
        );
        drop(wrote.join());
        // Without the wait, 35 ticks; without waking for the write, none between 100 and 200 ms.
        // (A busy machine may miss a read's deadline, and take a late read after it.)
        let ms: Vec<u128> = ticker.times.iter().map(Duration::as_millis).collect();
        assert!(ms.len() <= 8, "ticks taken at {ms:?}");
        assert!(
            ms.iter().any(|t| (150..200).contains(t)),
            "ticks taken at {ms:?}"
        );
        // The ticks left out are counted as ticks.
        assert!(stats.ticks >= 34, "{} ticks", stats.ticks);
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
            read_every: 1,
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

    /// Ticks `sampler` `n` times over the target, `pause` apart; returns the samples.
    fn tick_n(sampler: &mut Sampler<Scripted>, n: usize, pause: Duration) -> Vec<Sample> {
        let mut sink = Collect::default();
        for i in 0..n {
            assert!(!sampler.tick(Duration::from_millis(i as u64), &mut sink));
            std::thread::sleep(pause);
        }
        sink.0
    }

    fn over_child(child: &std::process::Child, reads: usize) -> Sampler<Scripted> {
        let script: Vec<Result<Vec<ThreadStack>, FakeError>> = (0..reads)
            .map(|i| Ok(vec![own_thread(&format!("read{i}"))]))
            .collect();
        let source = Scripted {
            script: script.into_iter(),
            delay: Duration::ZERO,
        };
        let options = SamplerOptions {
            rate_hz: 100.0,
            read_every: 1,
            duration: None,
        };
        Sampler::new(source, child.id() as i32, options).expect("sampler")
    }

    #[test]
    fn a_target_whose_threads_did_not_run_keeps_its_last_stacks_without_a_read() {
        let mut asleep = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        // Let it reach its sleep.
        std::thread::sleep(Duration::from_millis(100));
        let mut sampler = over_child(&asleep, 1);
        let samples = tick_n(&mut sampler, 4, Duration::from_millis(5));
        assert_eq!(sampler.stats.stacks_unchanged, 3, "one read, then none");
        assert!(
            samples
                .iter()
                .all(|s| s.threads[0].frames[0].code.function == "read0")
        );
        // The quiet ticks kept the first tick's RSS rather than reading it.
        assert!(
            samples
                .iter()
                .all(|s| s.rss.is_some() && s.rss == samples[0].rss)
        );
        // Killed (a zombie until reaped) within the quiet window: its exit, the last thing
        // it ran, is seen at the next tick.
        let _ = asleep.kill();
        std::thread::sleep(Duration::from_millis(20));
        let mut sink = Collect::default();
        assert!(
            sampler.tick(Duration::from_millis(5), &mut sink),
            "a target that exited while quiet is noticed"
        );
        let _ = asleep.wait();

        // A shell that wakes every 10 ms to start a `sleep` runs between ticks 50 ms apart.
        let mut busy = std::process::Command::new("sh")
            .args(["-c", "while :; do sleep 0.01; done"])
            .spawn()
            .expect("spawn sh");
        std::thread::sleep(Duration::from_millis(100));
        let mut sampler = over_child(&busy, 4);
        let samples = tick_n(&mut sampler, 4, Duration::from_millis(50));
        assert_eq!(sampler.stats.stacks_unchanged, 0, "a read every tick");
        let read: Vec<&str> = samples
            .iter()
            .map(|s| s.threads[0].frames[0].code.function.as_str())
            .collect();
        assert_eq!(read, ["read0", "read1", "read2", "read3"]);
        let _ = busy.kill();
        let _ = busy.wait();
    }
}
