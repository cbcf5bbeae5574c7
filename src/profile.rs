//! The profile model: what a sampling run gathered, aggregated as interned stacks × metrics,
//! plus (when asked for) the timeline of every sample. The `rss` weight of a stack is the
//! growth it still owned when RSS peaked (a ledger in which a release gives back its own
//! stack's growth first, then the latest), so transient allocations cancel out. Every output format is a reader of a
//! [`Profile`]; a profile read back from a timeline file is the same model.
//!
//! With `--subprocesses` a profile holds several processes: a [`ProcessInfo`] table, each
//! thread's process index ([`ThreadInfo::process`]), one ledger per process (a process's
//! releases cancel only its own growth), and a `process PID: CMD` root frame in
//! [`Profile::stack_text`], so every output shows processes without knowing about them.
//!
//! A [`Profile::snapshot`] is the same model for memory held at one moment (`pmt heap`): its
//! stacks are retention paths, its `heap` and `heap-objects` weights given directly.
//!
//! Owns: interning of frames, stacks, threads and processes; per-(thread, stack) metric
//! totals; the timeline; the run's summary as recorded for outputs.
//! Must not touch: sampling or counters (it only receives [`Sample`]s), and any output format.

use crate::python::Frame;
use crate::sample::{Metric, MetricValues, ProcessIdentity, Sample, ThreadIdentity, ThreadSample};
use crate::sample_log::SampleLog;
use crate::sampler::{SampleSink, SamplerStats};
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// One frame as outputs show it: `function (file:line)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FrameInfo {
    /// The function's (qualified) name.
    pub function: String,
    /// The source file.
    pub filename: String,
    /// The line being executed.
    pub line: u32,
    /// The first line of the function's code object (0 where unknown).
    pub first_line: u32,
}

impl fmt::Display for FrameInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::python::write_frame(f, &self.function, &self.filename, self.line)
    }
}

impl From<&Frame> for FrameInfo {
    fn from(frame: &Frame) -> FrameInfo {
        FrameInfo {
            function: frame.code.function.clone(),
            filename: frame.code.filename.clone(),
            line: frame.line,
            first_line: frame.code.first_line,
        }
    }
}

/// A process sampled during a `--subprocesses` run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The process id.
    pub pid: i32,
    /// Its command line.
    pub command: String,
    /// Its CPython version.
    pub python_version: Option<String>,
    /// Its role in the tree, where one could be told (see [`ProcessIdentity::role`]).
    pub role: Option<String>,
    /// How many processes that exited this entry stands for, merged
    /// ([`Profile::process_exited`]); 0 for one process. A merged entry's `pid` is 0.
    pub merged: u32,
}

/// The longest command shown in a process's root frame, in characters.
const COMMAND_IN_LABEL: usize = 80;

/// The longest command shown beside the master's role, in characters.
const COMMAND_BESIDE_ROLE: usize = 40;

/// The role of the root of a tree, whose root frame also shows its command.
const MASTER: &str = "master";

impl ProcessInfo {
    /// The root frame of the process's stacks: `process PID: ROLE` for a process whose role
    /// is known (`process PID: master · CMD` for the root), else `process PID: CMD` (a long
    /// command is cut with `…`): the processes of a pre-fork server share one command line.
    pub fn label(&self) -> String {
        if self.merged > 0 {
            return format!("{} exited processes merged: {}", self.merged, self.group());
        }
        match self.role.as_deref() {
            Some(MASTER) => format!(
                "process {}: {MASTER} · {}",
                self.pid,
                cut_command(&self.command, COMMAND_BESIDE_ROLE)
            ),
            Some(role) => format!("process {}: {role}", self.pid),
            None => format!(
                "process {}: {}",
                self.pid,
                cut_command(&self.command, COMMAND_IN_LABEL)
            ),
        }
    }

    /// What exited processes are merged by ([`process_group`]).
    fn group(&self) -> String {
        process_group(self.role.as_deref(), &self.command)
    }
}

/// What exited processes are merged by ([`Profile::process_exited`]): the kind of their role
/// (`worker 4` and `worker 12` are both `worker`), else their command, cut as in labels.
pub fn process_group(role: Option<&str>, command: &str) -> String {
    match role {
        Some(role) => role
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .trim_end()
            .to_string(),
        None if command.is_empty() => "(command unknown)".to_string(),
        None => cut_command(command, COMMAND_IN_LABEL),
    }
}

/// `command`, cut to `limit` characters (with `…` where it was cut).
fn cut_command(command: &str, limit: usize) -> String {
    let mut cut: String = command.chars().take(limit).collect();
    if command.chars().count() > limit {
        cut.push('…');
    }
    cut
}

/// A thread seen during the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadInfo {
    /// `threading.get_ident()`; `None` for a thread Python does not know.
    pub python_id: Option<u64>,
    /// The kernel thread id, where known.
    pub native_id: Option<u32>,
    /// The thread's latest known name.
    pub name: Option<String>,
    /// Index into [`Profile::processes`] of its process (`--subprocesses`); `None` in a
    /// single-process profile.
    pub process: Option<u32>,
    /// Whether it stands for the threads of that name in exited processes merged into one
    /// ([`ProcessInfo::merged`]); its ids then say only which kind of thread it was (0 where
    /// it had one).
    pub merged: bool,
}

impl ThreadInfo {
    /// The root frame that `--threads` adds: `thread NAME (TID)`; the TID is the kernel's,
    /// else Python's thread identifier in hex.
    pub fn label(&self) -> String {
        let name = self.name.as_deref().unwrap_or("?");
        if self.merged {
            return format!("thread {name}");
        }
        match (self.native_id, self.python_id) {
            (Some(tid), _) => format!("thread {name} ({tid})"),
            (None, Some(ident)) => format!("thread {name} (0x{ident:x})"),
            (None, None) => format!("thread {name}"),
        }
    }

    /// The frame shown for a stack without Python frames on this thread.
    pub fn empty_stack_label(&self) -> String {
        if self.python_id.is_some() {
            "<no Python frames>".to_string()
        } else if self.native_id.is_none() {
            "<threads that exited between samples>".to_string()
        } else {
            format!(
                "<non-Python thread {}>",
                self.name.as_deref().unwrap_or("?")
            )
        }
    }
}

/// What was sampled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetInfo {
    /// The process id.
    pub pid: i32,
    /// The command line, as far as it is known.
    pub command: String,
    /// The CPython version, e.g. `3.11.7`.
    pub python_version: Option<String>,
}

/// The run's figures as outputs report them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    /// The requested rate, in samples per second.
    pub rate_hz: f64,
    /// Seconds from the first tick to the end.
    pub duration_s: f64,
    /// Ticks due (taken or missed).
    pub ticks: u64,
    /// Samples taken.
    pub samples: u64,
    /// Ticks missed because the sampler fell behind.
    pub missed_ticks: u64,
    /// Failed stack reads.
    pub read_errors: u64,
    /// Why the run ended.
    pub stop: String,
    /// Growth intervals shared by per-thread page faults.
    pub growth_by_faults: u64,
    /// Growth intervals given to the GIL holder (per-thread faults unavailable).
    pub growth_by_gil: u64,
    /// Growth intervals where faults of threads with no known kernel id went to a guess.
    pub growth_unmatched: u64,
    /// How memory was charged to stacks captured in the kernel, when it was.
    pub in_kernel: Option<String>,
    /// Every tally of the run's capture and process tree, by name (for the JSON summary).
    pub tallies: Vec<(String, u64)>,
    /// One line when the run lost more than a small share of its events.
    pub warning: Option<String>,
    /// Median per-sample cost, in microseconds.
    pub sample_cost_p50_us: Option<f64>,
    /// 99th-percentile per-sample cost, in microseconds.
    pub sample_cost_p99_us: Option<f64>,
}

/// The in-kernel capture's, the process tree's and the allocation hook's tallies, and the
/// ticks that needed no stack read, by name.
fn run_tallies(stats: &SamplerStats) -> Vec<(String, u64)> {
    let mut tallies: Vec<(String, u64)> = stats
        .in_kernel
        .map(|k| k.tallies())
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect();
    if let Some(tree) = stats.tree {
        for (name, value) in [
            ("processes_seen", tree.seen),
            ("processes_attached", tree.attached),
            ("processes_missed", tree.missed),
            ("processes_charged_unattached", tree.charged_unattached),
            ("processes_not_python", tree.not_python),
            ("processes_failed", tree.failed),
        ] {
            tallies.push((name.to_string(), value));
        }
    }
    if let Some(heap) = stats.heap {
        for (name, value) in [
            ("heap_samples", heap.samples),
            ("heap_live_samples", heap.live_samples),
            ("heap_stacks_full", heap.stacks_full),
            ("heap_table_full", heap.table_full),
            ("heap_no_thread_state", heap.no_thread_state),
            ("heap_sample_bytes", heap.sample_bytes),
            ("heap_free_lists", heap.free_lists),
            ("heap_table_bytes", heap.table_bytes),
        ] {
            tallies.push((name.to_string(), value));
        }
    }
    if stats.stacks_unchanged > 0 {
        tallies.push(("stacks_unchanged".to_string(), stats.stacks_unchanged));
    }
    tallies
}

impl RunSummary {
    /// The summary of a finished run sampled at `rate_hz`.
    pub fn from_stats(stats: &SamplerStats, rate_hz: f64) -> RunSummary {
        let micros = |p| {
            stats
                .sample_cost_percentile(p)
                .map(|d| d.as_secs_f64() * 1e6)
        };
        RunSummary {
            rate_hz,
            duration_s: stats.elapsed.as_secs_f64(),
            ticks: stats.ticks,
            samples: stats.samples,
            missed_ticks: stats.missed_ticks,
            read_errors: stats.read_errors,
            stop: stats.stop.map_or("running", |s| s.describe()).to_string(),
            growth_by_faults: stats.attribution.by_faults,
            growth_by_gil: stats.attribution.by_gil,
            growth_unmatched: stats.attribution.unmatched_guessed,
            in_kernel: stats.in_kernel.map(|k| k.note()),
            tallies: run_tallies(stats),
            warning: stats.in_kernel.and_then(|k| k.loss_warning()),
            sample_cost_p50_us: micros(50.0),
            sample_cost_p99_us: micros(99.0),
        }
    }

    /// Whether time was sampled in the kernel (its on-CPU samples or intervals off CPUs
    /// were counted), not by the ticks `samples` counts.
    pub fn time_sampled_in_kernel(&self) -> bool {
        self.tallies.iter().any(|(name, value)| {
            (name == "cpu_samples" || name == "off_cpu_intervals") && *value > 0
        })
    }

    /// Samples per second achieved.
    pub fn achieved_rate(&self) -> f64 {
        if self.duration_s > 0.0 {
            self.samples as f64 / self.duration_s
        } else {
            0.0
        }
    }

    /// One sentence on how RSS growth was charged.
    pub fn attribution_note(&self) -> String {
        if let Some(note) = &self.in_kernel {
            return note.clone();
        }
        let mut note = self.fault_note();
        if self.growth_unmatched > 0 {
            note.push_str(&format!(
                "; in {} intervals, faults of threads whose kernel id is unknown went to the GIL holder among them",
                self.growth_unmatched
            ));
        }
        note
    }

    fn fault_note(&self) -> String {
        match (self.growth_by_faults, self.growth_by_gil) {
            (_, 0) => "RSS growth charged by per-thread page faults".to_string(),
            (0, _) => "per-thread page faults unavailable: RSS growth charged to the GIL holder"
                .to_string(),
            (faults, gil) => format!(
                "RSS growth charged by per-thread page faults ({faults} intervals), \
                 to the GIL holder where no fault was seen ({gil} intervals)"
            ),
        }
    }
}

/// One thread's part of one timeline sample.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TimelineEntry {
    /// Index into [`Profile::threads`].
    pub thread: u32,
    /// Index into [`Profile::stacks`].
    pub stack: u32,
    /// What this sample charged to that stack.
    pub values: MetricValues,
}

/// One tick of the timeline (of one process, with `--subprocesses`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TimelineSample {
    /// Seconds since sampling started.
    pub time_s: f64,
    /// Index into [`Profile::processes`] of the process sampled; `None` in a single-process
    /// profile.
    pub process: Option<u32>,
    /// The process RSS at that tick, in bytes.
    pub rss: Option<u64>,
    /// Each thread's stack and deltas.
    pub entries: Vec<TimelineEntry>,
}

/// The totals of one (thread, stack) pair, as outputs read them.
#[derive(Debug, Clone, Copy)]
pub struct StackWeight<'a> {
    /// The thread.
    pub thread: &'a ThreadInfo,
    /// The stack's frame ids, root first (into [`Profile::frames`]).
    pub frames: &'a [u32],
    /// The metric weights.
    pub values: MetricValues,
}

/// Why a profile could not be assembled from parts (a timeline file that does not hold together).
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// A stack names a frame that does not exist.
    #[error("stack {stack} refers to frame {frame}, but there are {frames} frames")]
    BadFrame {
        /// The stack's index.
        stack: usize,
        /// The bad frame id.
        frame: u32,
        /// How many frames exist.
        frames: usize,
    },
    /// A thread or sample names a process that does not exist.
    #[error("{what} refers to process {process}, but there are {processes} processes")]
    BadProcess {
        /// The thread or sample.
        what: String,
        /// The bad process index.
        process: u32,
        /// How many processes exist.
        processes: usize,
    },
    /// A sample names a thread or stack that does not exist.
    #[error("sample {sample} refers to thread {thread} / stack {stack}, which do not exist")]
    BadEntry {
        /// The sample's index.
        sample: usize,
        /// Its thread index.
        thread: u32,
        /// Its stack index.
        stack: u32,
    },
}

/// How long RSS must hold a level for it to count as the sustained peak: growth freed again
/// sooner is transient. A quarter second, not less: a site that allocates and frees big
/// buffers back to back makes RSS a sawtooth, and the lowest of the few samples in a shorter
/// window still sits part-way up a tooth, which would be charged to that site as kept.
pub const SUSTAIN_S: f64 = 0.25;

/// How long a stack must hold heap memory for it to count at the sustained peak of a run of
/// ten times that or more (see [`GrowthLedger`]): longer than a loaded server's slow
/// requests take.
pub const KEY_SUSTAIN_S: f64 = 1.0;

/// Which stacks own the RSS that sampling saw grow, as a ledger of growth in the order it came.
///
/// Each interval's RSS growth is pushed with the (thread, stack) it was charged to. A decrease
/// charged to a (thread, stack) first gives back that stack's own growth, most recent first
/// (with in-kernel stacks a release is charged to the stack that faulted the pages in, so
/// this is exact; tick-based charging gives it to the stack that ran when RSS fell), and only
/// what exceeds it cancels the most recently pushed growth of other stacks. The `rss` metric
/// is the ledger at the *sustained peak*: the highest level that RSS held for at least
/// [`SUSTAIN_S`] (and two samples). Memory raised and freed again within that time —
/// transient allocations — cancels out, and memory freed at exit does not erase what the run
/// grew.
///
/// The bottom `m` bytes of the ledger are unchanged while the level stays at or above `m`, so
/// once the level has held `m` for the whole window, the current ledger's bottom `m` bytes are
/// the state to keep, and everything above `m` was pushed within the window.
///
/// With `per_key` (the heap, whose releases are exact), each key's share is also capped at
/// the least it held at any time within the window before the peak: [`SUSTAIN_S`], or in a
/// run of ten times [`KEY_SUSTAIN_S`] or more, that long before the peak or (for a peak early
/// in the run) the whole of that long after it. A server's in-flight requests
/// overlap, so the total they hold can stay up although no request's memory does, and a
/// request slowed down by load can take longer than [`SUSTAIN_S`]; a stack that held nothing
/// at some moment of the window keeps nothing. In a long run a key that already held memory
/// when the second before the peak began keeps at least what it grew within that second
/// beyond what it gave back within it: a stack that builds what the program keeps (a parser's
/// trees, growing up to the peak) is not cut back to what it held a second earlier, while
/// in-flight requests give back what they take, or started within the second.
#[derive(Debug, Default)]
struct GrowthLedger {
    /// Growth in push order; an entry a stack's own release emptied stays, at 0, until the
    /// next compaction.
    entries: Vec<((u32, u32), u64)>,
    /// Each key's non-empty entries, as indices into `entries`, oldest first.
    by_key: HashMap<(u32, u32), Vec<usize>>,
    /// Entries at 0 left in `entries`.
    emptied: usize,
    current: HashMap<(u32, u32), u64>,
    level: u64,
    window: std::collections::VecDeque<(f64, u64)>,
    best_level: u64,
    best: HashMap<(u32, u32), u64>,
    per_key: bool,
    /// With `per_key`: the keys changed in the current sample, with their value before it
    /// and what the sample released of them.
    changed: HashMap<(u32, u32), (u64, u64)>,
    /// With `per_key`: each key's values within the window, oldest first (a key not here has
    /// not changed within it).
    history: HashMap<(u32, u32), std::collections::VecDeque<(f64, u64)>>,
    last_time: f64,
    first_time: Option<f64>,
    /// With `per_key`: the least each key of `best` held within [`SUSTAIN_S`] and within
    /// [`KEY_SUSTAIN_S`] before the peak, and what it released within the latter.
    best_least: HashMap<(u32, u32), (u64, u64, u64)>,
    /// With `per_key`: when the peak was, and the least each key of `best` has held since
    /// (a peak early in a run has no second before it in which its memory was held).
    best_time: f64,
    best_after: HashMap<(u32, u32), u64>,
}

impl GrowthLedger {
    /// Its process is sampled no more (it exited): only what each key held at the peak
    /// ([`GrowthLedger::at_peak`], which no later sample can change) and holds now are kept;
    /// the working state (entries, windows, histories) is dropped, so that a long run over
    /// many short-lived processes does not keep every one's.
    fn freeze(&mut self) {
        let best = self.at_peak();
        let current = std::mem::take(&mut self.current);
        *self = GrowthLedger {
            best,
            current,
            ..GrowthLedger::default()
        };
    }

    /// Adds a frozen ledger's peak and current holdings ([`GrowthLedger::freeze`]) to this
    /// one (frozen too, or never fed), its keys' threads renamed by `threads`.
    fn absorb(&mut self, frozen: &GrowthLedger, threads: &FxHashMap<u32, u32>) {
        let rename = |&(thread, stack): &(u32, u32)| {
            (threads.get(&thread).copied().unwrap_or(thread), stack)
        };
        for (key, &bytes) in &frozen.best {
            *self.best.entry(rename(key)).or_default() += bytes;
        }
        for (key, &bytes) in &frozen.current {
            *self.current.entry(rename(key)).or_default() += bytes;
        }
    }

    /// A ledger that also caps each key at the least it held within the window.
    fn per_key() -> GrowthLedger {
        GrowthLedger {
            per_key: true,
            ..GrowthLedger::default()
        }
    }

    /// Notes `key`'s value before this sample changes it.
    fn touch(&mut self, key: (u32, u32)) {
        if self.per_key && !self.changed.contains_key(&key) {
            let before = self.current.get(&key).copied().unwrap_or(0);
            self.changed.insert(key, (before, 0));
        }
    }

    fn grow(&mut self, key: (u32, u32), bytes: u64) {
        self.touch(key);
        match self.entries.last_mut() {
            Some((top, amount)) if *top == key && *amount > 0 => *amount += bytes,
            _ => {
                self.by_key.entry(key).or_default().push(self.entries.len());
                self.entries.push((key, bytes));
            }
        }
        *self.current.entry(key).or_default() += bytes;
        self.level += bytes;
    }

    /// Gives back `bytes` charged to `key`: its own growth first, then the latest growth.
    fn release_from(&mut self, key: (u32, u32), mut bytes: u64) {
        while bytes > 0 {
            let Some(&index) = self.by_key.get(&key).and_then(|v| v.last()) else {
                break;
            };
            let taken = self.take(index, bytes);
            bytes -= taken;
        }
        self.release(bytes);
        if self.emptied > 64 && self.emptied * 2 > self.entries.len() {
            self.compact();
        }
    }

    /// Cancels the most recently pushed growth first.
    fn release(&mut self, mut bytes: u64) {
        while bytes > 0 {
            let Some(&(_, amount)) = self.entries.last() else {
                break;
            };
            if amount == 0 {
                self.entries.pop();
                self.emptied -= 1;
                continue;
            }
            bytes -= self.take(self.entries.len() - 1, bytes);
        }
    }

    /// Takes up to `bytes` from entry `index` (non-empty, its key's latest); returns how much.
    fn take(&mut self, index: usize, bytes: u64) -> u64 {
        let key = self.entries[index].0;
        self.touch(key);
        let (_, amount) = &mut self.entries[index];
        let taken = bytes.min(*amount);
        *amount -= taken;
        if let Some((_, released)) = self.changed.get_mut(&key) {
            *released += taken;
        }
        self.level -= taken;
        subtract(&mut self.current, key, taken);
        if *amount == 0 {
            if let Some(indices) = self.by_key.get_mut(&key) {
                indices.pop();
                if indices.is_empty() {
                    self.by_key.remove(&key);
                }
            }
            if index + 1 == self.entries.len() {
                self.entries.pop();
            } else {
                self.emptied += 1;
            }
        }
        taken
    }

    /// Drops the emptied entries and renumbers the index.
    fn compact(&mut self) {
        self.entries.retain(|&(_, amount)| amount > 0);
        self.by_key.clear();
        for (index, &(key, _)) in self.entries.iter().enumerate() {
            self.by_key.entry(key).or_default().push(index);
        }
        self.emptied = 0;
    }

    /// Closes a sample at `time_s`: updates the sustained peak.
    fn end_sample(&mut self, time_s: f64) {
        if self.per_key {
            self.note_changes(time_s);
        }
        self.window.push_back((time_s, self.level));
        while self.window.len() > 2 && self.window[1].0 <= time_s - SUSTAIN_S {
            self.window.pop_front();
        }
        let spans = self
            .window
            .front()
            .is_some_and(|&(start, _)| start <= time_s - SUSTAIN_S);
        if !spans || self.window.len() < 2 {
            return;
        }
        let held = self.window.iter().map(|&(_, l)| l).min().unwrap_or(0);
        if held > self.best_level {
            self.best_level = held;
            self.best = self.bottom(held);
            if self.per_key {
                self.best_least = self
                    .best
                    .keys()
                    .filter_map(|key| {
                        let values = self.history.get(key)?;
                        // The value in effect when the window starts, and every later one.
                        let within = |window: f64| {
                            let start = time_s - window;
                            let from = values.iter().rposition(|&(t, _)| t <= start).unwrap_or(0);
                            values.range(from..).map(|&(_, v)| v)
                        };
                        let least = |window: f64| within(window).min().unwrap_or(0);
                        let long: Vec<u64> = within(KEY_SUSTAIN_S).collect();
                        let released = long.windows(2).map(|w| w[0].saturating_sub(w[1])).sum();
                        Some((*key, (least(SUSTAIN_S), least(KEY_SUSTAIN_S), released)))
                    })
                    .collect();
                self.best_time = time_s;
                self.best_after = self.best.keys().map(|&k| (k, self.value(k))).collect();
            }
        }
    }

    fn value(&self, key: (u32, u32)) -> u64 {
        self.current.get(&key).copied().unwrap_or(0)
    }

    /// Records the values of the keys this sample changed, and forgets what left the window.
    /// Within a sample the order of a key's allocations and frees is not known: it is taken
    /// to have freed first (a thread that ends one request and starts the next within a tick
    /// held the first one's memory no longer), so its low point is its value before less what
    /// it freed.
    fn note_changes(&mut self, time_s: f64) {
        for (key, (before, released)) in self.changed.drain() {
            let values = self.history.entry(key).or_default();
            if values.is_empty() {
                values.push_back((self.last_time, before));
            }
            let after = self.current.get(&key).copied().unwrap_or(0);
            let low = before.saturating_sub(released);
            if low < after {
                values.push_back((time_s, low));
            }
            values.push_back((time_s, after));
            if time_s <= self.best_time + KEY_SUSTAIN_S
                && let Some(least) = self.best_after.get_mut(&key)
            {
                *least = (*least).min(low).min(after);
            }
        }
        self.last_time = time_s;
        self.first_time.get_or_insert(time_s);
        let start = time_s - KEY_SUSTAIN_S;
        self.history.retain(|_, values| {
            while values.len() > 1 && values[1].0 <= start {
                values.pop_front();
            }
            !(values.len() == 1 && values[0].0 <= start)
        });
    }

    /// Per key, the bytes among the bottom `level` bytes of the ledger.
    fn bottom(&self, level: u64) -> HashMap<(u32, u32), u64> {
        let mut kept = self.current.clone();
        let mut above = self.level.saturating_sub(level);
        for &(key, amount) in self.entries.iter().rev() {
            if above == 0 {
                break;
            }
            let taken = above.min(amount);
            subtract(&mut kept, key, taken);
            above -= taken;
        }
        kept
    }

    /// The bytes each (thread, stack) owned at the sustained peak.
    fn at_peak(&self) -> HashMap<(u32, u32), u64> {
        if !self.per_key {
            return self.best.clone();
        }
        let run = self.last_time - self.first_time.unwrap_or(self.last_time);
        let long = run >= 10.0 * KEY_SUSTAIN_S;
        // Held throughout the second before the peak, or throughout the whole second after.
        let after_whole = self.last_time >= self.best_time + KEY_SUSTAIN_S;
        self.best
            .iter()
            .filter_map(|(&key, &bytes)| {
                let capped = match self.best_least.get(&key) {
                    Some(&(short, _, _)) if !long => bytes.min(short),
                    Some(&(_, before, released)) => {
                        let after = match self.best_after.get(&key) {
                            Some(&after) if after_whole => after,
                            _ => 0,
                        };
                        // What it grew within the second and did not give back: a stack
                        // that builds what it keeps (a parser's trees) grows steadily up to
                        // the peak; one whose requests are in flight gives back as much.
                        // Only for a stack that already held memory when the second began:
                        // a request that started within it is in flight, not kept.
                        let grown = if before > 0 {
                            bytes.saturating_sub(released)
                        } else {
                            0
                        };
                        bytes.min(before.max(after).max(grown))
                    }
                    None => bytes,
                };
                (capped > 0).then_some((key, capped))
            })
            .collect()
    }
}

fn subtract(map: &mut HashMap<(u32, u32), u64>, key: (u32, u32), bytes: u64) {
    if let Some(value) = map.get_mut(&key) {
        *value = value.saturating_sub(bytes);
        if *value == 0 {
            map.remove(&key);
        }
    }
}

/// What identifies a thread: its process index, Python id and kernel id (forked processes
/// share Python ids).
type ThreadKey = (Option<u32>, Option<u64>, Option<u32>);

/// Interned stacks × metrics for one run.
#[derive(Debug, Default)]
pub struct Profile {
    /// What was sampled.
    pub target: TargetInfo,
    /// The run's figures, once it has ended.
    pub summary: Option<RunSummary>,
    frames: Vec<FrameInfo>,
    // Interning runs for every frame of every sample: the maps hash with FxHash (the same
    // trade as the code cache's), not SipHash.
    frame_ids: FxHashMap<Frame, u32>,
    stacks: Vec<Vec<u32>>,
    stack_ids: FxHashMap<Vec<u32>, u32>,
    threads: Vec<ThreadInfo>,
    thread_ids: FxHashMap<ThreadKey, u32>,
    processes: Vec<ProcessInfo>,
    process_ids: HashMap<i32, u32>,
    totals: FxHashMap<(u32, u32), MetricValues>,
    ledgers: BTreeMap<Option<u32>, Ledgers>,
    timeline: Option<SampleLog>,
    scratch: Vec<u32>,
    /// Per frame id: whether the frame runs pmt's own hook loader in the target.
    loader_frames: Vec<bool>,
    /// Whether this is a profile of memory held at one moment ([`Profile::snapshot`]), not
    /// of a sampling run.
    snapshot: bool,
    /// Per (thread, stack): `(bytes, objects)` held at that moment, added to the `heap` and
    /// `heap-objects` weights ([`Profile::add_held`]).
    held: HashMap<(u32, u32), (u64, u64)>,
    /// Exited processes kept under their own root so far (at most [`EXITED_APART`]).
    exited_apart: usize,
    /// The entry that exited processes of each group are merged into ([`ProcessInfo::group`]).
    merged_groups: HashMap<String, u32>,
    /// The thread that threads of merged processes are merged into, by (merged entry,
    /// thread name with its numbers as `N`, whether it had a Python id, a kernel id).
    merged_threads: FxHashMap<(u32, Option<String>, bool, bool), u32>,
    /// Process and thread slots that merged processes left, for the next ones to take.
    free_processes: Vec<u32>,
    free_threads: Vec<u32>,
}

/// Exited processes that keep their own root; those that exit after them are merged by their
/// role (or command) into one root per group, so that a long attach to a pool that replaces its
/// workers keeps a bounded profile: what they charged stays, their pids do not.
pub const EXITED_APART: usize = 32;

/// The one frame that stands for pmt's own hook loader running in the target (the frames it
/// runs are pmt's, not the program's).
pub const HOOK_LOADER: &str = "<pmt loading its heap hook>";

impl Profile {
    /// An empty profile of `target`; `keep_timeline` keeps every sample (for the JSON timeline).
    pub fn new(target: TargetInfo, keep_timeline: bool) -> Profile {
        Profile {
            target,
            timeline: keep_timeline.then(SampleLog::new),
            ..Profile::default()
        }
    }

    /// An empty profile of the memory `target` holds at one moment (a heap snapshot): its
    /// stacks are named paths, not code, and their weights come from [`Profile::add_held`]
    /// only; outputs show no run (no rate, no threads, no sampled metrics).
    pub fn snapshot(target: TargetInfo) -> Profile {
        Profile {
            target,
            snapshot: true,
            ..Profile::default()
        }
    }

    /// Whether this is a profile of memory held at one moment ([`Profile::snapshot`]).
    pub fn is_snapshot(&self) -> bool {
        self.snapshot
    }

    /// Charges `bytes` and `objects` held to the stack of `names` (root first; each a frame
    /// with no file, shown as its name alone): the `heap` and `heap-objects` weights of a
    /// [`Profile::snapshot`]. Charges to one stack add up.
    pub fn add_held(&mut self, names: &[String], bytes: u64, objects: u64) {
        let nobody = ThreadIdentity {
            python_id: None,
            native_id: None,
            name: None,
        };
        let thread = self.intern_thread(None, nobody);
        let frames: Vec<Frame> = names
            .iter()
            .rev()
            .map(|name| Frame {
                code: std::sync::Arc::new(crate::python::CodeInfo {
                    function: name.clone(),
                    filename: String::new(),
                    first_line: 0,
                }),
                line: 0,
            })
            .collect();
        let stack = self.intern_stack(&frames);
        self.totals.entry((thread, stack)).or_default();
        let held = self.held.entry((thread, stack)).or_default();
        held.0 += bytes;
        held.1 += objects;
    }

    /// Assembles a profile from a timeline's parts, recomputing the totals from its samples.
    pub fn from_timeline(
        target: TargetInfo,
        summary: Option<RunSummary>,
        frames: Vec<FrameInfo>,
        stacks: Vec<Vec<u32>>,
        threads: Vec<ThreadInfo>,
        timeline: Vec<TimelineSample>,
    ) -> Result<Profile, ProfileError> {
        for (index, stack) in stacks.iter().enumerate() {
            if let Some(&frame) = stack.iter().find(|&&f| f as usize >= frames.len()) {
                return Err(ProfileError::BadFrame {
                    stack: index,
                    frame,
                    frames: frames.len(),
                });
            }
        }
        let mut totals: FxHashMap<(u32, u32), MetricValues> = FxHashMap::default();
        let mut ledgers: BTreeMap<Option<u32>, Ledgers> = BTreeMap::new();
        for (index, sample) in timeline.iter().enumerate() {
            for entry in &sample.entries {
                if entry.thread as usize >= threads.len() || entry.stack as usize >= stacks.len() {
                    return Err(ProfileError::BadEntry {
                        sample: index,
                        thread: entry.thread,
                        stack: entry.stack,
                    });
                }
                totals
                    .entry((entry.thread, entry.stack))
                    .or_default()
                    .add_all(&entry.values);
            }
            replay(
                ledgers.entry(sample.process).or_default(),
                sample.time_s,
                &sample.entries,
            );
        }
        let stack_ids = stacks
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32))
            .collect();
        let thread_ids = threads
            .iter()
            .enumerate()
            .map(|(i, t)| ((t.process, t.python_id, t.native_id), i as u32))
            .collect();
        let loader_frames = frames
            .iter()
            .map(|f| crate::memory::heap_hook::is_loader_frame(&f.function, &f.filename))
            .collect();
        Ok(Profile {
            target,
            summary,
            frames,
            loader_frames,
            frame_ids: FxHashMap::default(),
            stacks,
            stack_ids,
            threads,
            thread_ids,
            processes: Vec::new(),
            process_ids: HashMap::new(),
            totals,
            ledgers,
            timeline: Some(timeline.into_iter().collect()),
            scratch: Vec::new(),
            snapshot: false,
            held: HashMap::new(),
            ..Profile::default()
        })
    }

    /// Gives a profile assembled by [`Profile::from_timeline`] its process table, checking
    /// that every thread and sample names one of them.
    pub fn with_processes(mut self, processes: Vec<ProcessInfo>) -> Result<Profile, ProfileError> {
        let bad = |what: String, process: u32| ProfileError::BadProcess {
            what,
            process,
            processes: processes.len(),
        };
        for (index, thread) in self.threads.iter().enumerate() {
            if let Some(process) = thread.process.filter(|&p| p as usize >= processes.len()) {
                return Err(bad(format!("thread {index}"), process));
            }
        }
        for (index, sample) in self.timeline.iter().flat_map(SampleLog::iter).enumerate() {
            if let Some(process) = sample.process.filter(|&p| p as usize >= processes.len()) {
                return Err(bad(format!("sample {index}"), process));
            }
        }
        self.process_ids = processes
            .iter()
            .enumerate()
            .map(|(i, p)| (p.pid, i as u32))
            .collect();
        self.processes = processes;
        Ok(self)
    }

    /// Adds one sample.
    pub fn add(&mut self, sample: Sample) {
        self.add_to(None, sample);
    }

    /// Adds one sample of `process`, one of several sampled together (`--subprocesses`).
    pub fn add_process_sample(&mut self, process: &ProcessIdentity, sample: Sample) {
        let index = self.intern_process(process);
        self.add_to(Some(index), sample);
    }

    /// `process` exited and will have no more samples: its growth ledgers keep only what they
    /// need for the weights, and a later process with the same pid is another process.
    ///
    /// Past the first [`EXITED_APART`] exited processes, each one that exits is merged into
    /// its group's entry: its charges move to that entry's threads, its `rss` and `heap` at its
    /// own peak add to the entry's, and its slots are reused — unless the timeline is kept,
    /// whose samples name the process and its threads: their entries then stay as they are
    /// (a few bytes each), and only the charges move.
    pub fn process_exited(&mut self, process: &ProcessIdentity) {
        let Some(index) = self.process_ids.remove(&process.pid) else {
            return;
        };
        if let Some(ledgers) = self.ledgers.get_mut(&Some(index)) {
            ledgers.rss.freeze();
            ledgers.heap.freeze();
        }
        if self.exited_apart < EXITED_APART {
            self.exited_apart += 1;
            return;
        }
        self.merge_exited(index);
    }

    /// Moves exited process `index`'s charges to its group's entry and frees its slots.
    fn merge_exited(&mut self, index: u32) {
        let Some(info) = self.processes.get(index as usize) else {
            return;
        };
        let group_key = info.group();
        let group = match self.merged_groups.get(&group_key) {
            Some(&group) => group,
            None => {
                let entry = ProcessInfo {
                    pid: 0,
                    command: info.command.clone(),
                    python_version: info.python_version.clone(),
                    role: info.role.as_ref().map(|_| group_key.clone()),
                    merged: 0,
                };
                let group = self.take_process_slot(entry);
                self.merged_groups.insert(group_key, group);
                group
            }
        };
        self.processes[group as usize].merged += 1;
        let mut moved: FxHashMap<u32, u32> = FxHashMap::default();
        for id in 0..self.threads.len() as u32 {
            let thread = &self.threads[id as usize];
            if thread.process != Some(index) {
                continue;
            }
            let key = (
                group,
                thread.name.as_deref().map(numbers_as_n),
                thread.python_id.is_some(),
                thread.native_id.is_some(),
            );
            let into = match self.merged_threads.get(&key) {
                Some(&into) => into,
                None => {
                    let into = self.take_thread_slot(ThreadInfo {
                        python_id: key.2.then_some(0),
                        native_id: key.3.then_some(0),
                        name: key.1.clone(),
                        process: Some(group),
                        merged: true,
                    });
                    self.merged_threads.insert(key, into);
                    into
                }
            };
            moved.insert(id, into);
        }
        let keys: Vec<(u32, u32)> = self
            .totals
            .keys()
            .filter(|(thread, _)| moved.contains_key(thread))
            .copied()
            .collect();
        for key in keys {
            if let Some(values) = self.totals.remove(&key) {
                self.totals
                    .entry((moved[&key.0], key.1))
                    .or_default()
                    .add_all(&values);
            }
        }
        if let Some(ledgers) = self.ledgers.remove(&Some(index)) {
            let into = self
                .ledgers
                .entry(Some(group))
                .or_insert_with(Ledgers::frozen);
            into.rss.absorb(&ledgers.rss, &moved);
            into.heap.absorb(&ledgers.heap, &moved);
        }
        let keep_slots = self.timeline.is_some();
        for &id in moved.keys() {
            let thread = &mut self.threads[id as usize];
            self.thread_ids
                .remove(&(thread.process, thread.python_id, thread.native_id));
            if !keep_slots {
                thread.process = None;
                thread.name = None;
                self.free_threads.push(id);
            }
        }
        if !keep_slots {
            self.free_processes.push(index);
        }
    }

    /// Puts `info` in a slot a merged process left, or a new one.
    fn take_process_slot(&mut self, info: ProcessInfo) -> u32 {
        match self.free_processes.pop() {
            Some(index) => {
                self.processes[index as usize] = info;
                index
            }
            None => {
                self.processes.push(info);
                self.processes.len() as u32 - 1
            }
        }
    }

    /// Puts `info` in a slot a thread of a merged process left, or a new one.
    fn take_thread_slot(&mut self, info: ThreadInfo) -> u32 {
        match self.free_threads.pop() {
            Some(id) => {
                self.threads[id as usize] = info;
                id
            }
            None => {
                self.threads.push(info);
                self.threads.len() as u32 - 1
            }
        }
    }

    fn intern_process(&mut self, process: &ProcessIdentity) -> u32 {
        if let Some(&index) = self.process_ids.get(&process.pid) {
            return index;
        }
        let index = self.take_process_slot(ProcessInfo {
            pid: process.pid,
            command: process.command.clone(),
            python_version: process.python_version.clone(),
            role: process.role.clone(),
            merged: 0,
        });
        self.process_ids.insert(process.pid, index);
        index
    }

    fn add_to(&mut self, process: Option<u32>, sample: Sample) {
        let mut entries = Vec::with_capacity(sample.threads.len());
        for thread_sample in sample.threads {
            entries.push(self.add_thread_sample(process, thread_sample));
        }
        replay(
            self.ledgers.entry(process).or_default(),
            sample.time.as_secs_f64(),
            &entries,
        );
        if self.timeline.is_none() {
            return;
        }
        if let Some(timeline) = &mut self.timeline {
            timeline.push(&TimelineSample {
                time_s: sample.time.as_secs_f64(),
                process,
                rss: sample.rss,
                entries,
            });
        }
    }

    /// Gives a profile assembled by [`Profile::from_timeline`] no further samples: its frame
    /// table is not indexed for interning.
    fn add_thread_sample(&mut self, process: Option<u32>, sample: ThreadSample) -> TimelineEntry {
        let thread = self.intern_thread(process, sample.thread);
        let stack = self.intern_stack(&sample.frames);
        self.totals
            .entry((thread, stack))
            .or_default()
            .add_all(&sample.values);
        TimelineEntry {
            thread,
            stack,
            values: sample.values,
        }
    }

    fn intern_thread(&mut self, process: Option<u32>, identity: ThreadIdentity) -> u32 {
        let key = (process, identity.python_id, identity.native_id);
        if let Some(&id) = self.thread_ids.get(&key) {
            if identity.name.is_some() {
                self.threads[id as usize].name = identity.name;
            }
            return id;
        }
        let id = self.take_thread_slot(ThreadInfo {
            python_id: identity.python_id,
            native_id: identity.native_id,
            name: identity.name,
            process,
            merged: false,
        });
        self.thread_ids.insert(key, id);
        id
    }

    /// Interns `frames` (innermost first) as a root-first stack of frame ids.
    fn intern_stack(&mut self, frames: &[Frame]) -> u32 {
        let mut ids = std::mem::take(&mut self.scratch);
        ids.clear();
        for frame in frames.iter().rev() {
            let id = self.intern_frame(frame);
            if self.loader_frames[id as usize] {
                // pmt's loader and all it calls: one frame on the program's stack. A script
                // run by remote execution (PEP 768) is a `<module>` of `<string>`: pmt's too.
                if let Some(&caller) = ids.last() {
                    let caller = &self.frames[caller as usize];
                    if caller.function == "<module>" && caller.filename == "<string>" {
                        ids.pop();
                    }
                }
                let loader = Frame {
                    code: std::sync::Arc::new(crate::python::CodeInfo {
                        function: HOOK_LOADER.to_string(),
                        filename: String::new(),
                        first_line: 0,
                    }),
                    line: 0,
                };
                let id = self.intern_frame(&loader);
                ids.push(id);
                break;
            }
            ids.push(id);
        }
        let id = match self.stack_ids.get(&ids) {
            Some(&id) => id,
            None => {
                let id = self.stacks.len() as u32;
                self.stacks.push(ids.clone());
                self.stack_ids.insert(ids.clone(), id);
                id
            }
        };
        self.scratch = ids;
        id
    }

    fn intern_frame(&mut self, frame: &Frame) -> u32 {
        if let Some(&id) = self.frame_ids.get(frame) {
            return id;
        }
        let next = self.frames.len() as u32;
        let id = *self.frame_ids.entry(frame.clone()).or_insert(next);
        if id == next {
            self.frames.push(FrameInfo::from(frame));
            self.loader_frames
                .push(crate::memory::heap_hook::is_loader_frame(
                    &frame.code.function,
                    &frame.code.filename,
                ));
        }
        id
    }

    /// Every distinct frame, indexed by frame id.
    pub fn frames(&self) -> &[FrameInfo] {
        &self.frames
    }

    /// Every distinct stack, as root-first frame ids, indexed by stack id.
    pub fn stacks(&self) -> &[Vec<u32>] {
        &self.stacks
    }

    /// Every thread seen, indexed by thread id.
    pub fn threads(&self) -> &[ThreadInfo] {
        &self.threads
    }

    /// Every process sampled (`--subprocesses`), indexed by [`ThreadInfo::process`]; empty in
    /// a single-process profile.
    pub fn processes(&self) -> &[ProcessInfo] {
        &self.processes
    }

    /// The distinct CPython versions of the processes sampled (`--subprocesses`), sorted and
    /// joined with `, `; `None` before any.
    pub fn process_versions(&self) -> Option<String> {
        let mut versions: Vec<&str> = self
            .processes
            .iter()
            .filter_map(|p| p.python_version.as_deref())
            .collect();
        versions.sort_unstable();
        versions.dedup();
        (!versions.is_empty()).then(|| versions.join(", "))
    }

    /// The process a thread belongs to, in a multi-process profile.
    pub fn process_of(&self, thread: &ThreadInfo) -> Option<&ProcessInfo> {
        self.processes.get(thread.process? as usize)
    }

    /// Every sample, when the profile keeps a timeline.
    pub fn timeline(&self) -> Option<&SampleLog> {
        self.timeline.as_ref()
    }

    /// The weights of every (thread, stack) pair with anything charged, in a stable order
    /// (by thread, then stack id). `rss` is the growth the stack owned at the peak (see
    /// `GrowthLedger`); every other metric is the sum of what its samples charged.
    pub fn weights(&self) -> Vec<StackWeight<'_>> {
        let mut at_peak: HashMap<(u32, u32), u64> = HashMap::new();
        let mut heap_at_peak: HashMap<(u32, u32), u64> = HashMap::new();
        for ledgers in self.ledgers.values() {
            for (key, bytes) in ledgers.rss.at_peak() {
                *at_peak.entry(key).or_default() += bytes;
            }
            for (key, bytes) in ledgers.heap.at_peak() {
                *heap_at_peak.entry(key).or_default() += bytes;
            }
        }
        let mut keys: Vec<&(u32, u32)> = self.totals.keys().collect();
        keys.sort_unstable();
        keys.into_iter()
            .filter_map(|key| {
                let mut values = *self.totals.get(key)?;
                values.0[Metric::Rss.index()] = at_peak.get(key).copied().unwrap_or(0);
                let held = heap_at_peak.get(key).copied().unwrap_or(0);
                values.0[Metric::Heap.index()] = held;
                values.0[Metric::HeapObjects.index()] = held_objects(
                    held,
                    values.get(Metric::HeapAlloc),
                    values.get(Metric::HeapAllocCount),
                );
                if let Some(&(bytes, objects)) = self.held.get(key) {
                    values.0[Metric::Heap.index()] += bytes;
                    values.0[Metric::HeapObjects.index()] += objects;
                }
                Some(StackWeight {
                    thread: self.threads.get(key.0 as usize)?,
                    frames: self.stacks.get(key.1 as usize)?,
                    values,
                })
            })
            .collect()
    }

    /// Replays the timeline (when kept) through fresh growth ledgers, calling `visit` after
    /// each sample with its time, its process and what each (thread id, stack id) of that
    /// process owns at that moment: the holdings over time that the `rss` weights are the
    /// peak of, and the sample's RSS.
    pub fn replay_holdings(
        &self,
        mut visit: impl FnMut(f64, Option<u32>, Option<u64>, &HashMap<(u32, u32), u64>),
    ) {
        let mut ledgers: BTreeMap<Option<u32>, Ledgers> = BTreeMap::new();
        for sample in self.timeline.iter().flat_map(SampleLog::iter) {
            let ledger = ledgers.entry(sample.process).or_default();
            replay(ledger, sample.time_s, &sample.entries);
            visit(
                sample.time_s,
                sample.process,
                sample.rss,
                &ledger.rss.current,
            );
        }
    }

    /// What each (thread id, stack id) owns now, by the growth ledgers (the `rss` weights are
    /// the same ledgers at their peak).
    pub fn held_now(&self) -> HashMap<(u32, u32), u64> {
        self.held_now_by(|ledgers| &ledgers.rss)
    }

    /// What each (thread id, stack id) holds of the Python heap now (the `heap` weights are
    /// the same ledgers at their peak).
    pub fn heap_held_now(&self) -> HashMap<(u32, u32), u64> {
        self.held_now_by(|ledgers| &ledgers.heap)
    }

    fn held_now_by(&self, pick: impl Fn(&Ledgers) -> &GrowthLedger) -> HashMap<(u32, u32), u64> {
        let mut held: HashMap<(u32, u32), u64> = HashMap::new();
        for ledgers in self.ledgers.values() {
            for (&key, &bytes) in &pick(ledgers).current {
                *held.entry(key).or_default() += bytes;
            }
        }
        held
    }

    /// Whether the allocation hook charged anything (the `heap` metrics have data).
    pub fn has_heap(&self) -> bool {
        self.totals.values().any(|v| v.get(Metric::HeapAlloc) > 0)
    }

    /// The total weight of `metric` over the whole run, as [`Profile::weights`] counts it.
    pub fn total(&self, metric: Metric) -> u64 {
        self.weights().iter().map(|w| w.values.get(metric)).sum()
    }

    /// The frame texts of a weight's stack, root first; a stack without Python frames shows
    /// as one placeholder frame, and `with_thread` puts the thread's label at the root. In a
    /// multi-process profile, the process's label (`process PID: CMD`) comes first.
    pub fn stack_text(&self, weight: &StackWeight<'_>, with_thread: bool) -> Vec<String> {
        self.stack_labels(weight, with_thread, |ids| {
            ids.iter()
                .filter_map(|&id| self.frames.get(id as usize))
                .map(FrameInfo::to_string)
                .collect()
        })
    }

    /// Like [`Profile::stack_text`], with the texts of the stack's frames (root-first frame
    /// ids) given by `frame_texts`, which may leave frames out or merge them. A stack left
    /// with no frame shows the placeholder.
    pub fn stack_labels(
        &self,
        weight: &StackWeight<'_>,
        with_thread: bool,
        frame_texts: impl FnOnce(&[u32]) -> Vec<String>,
    ) -> Vec<String> {
        let mut texts = Vec::with_capacity(weight.frames.len() + 2);
        if let Some(process) = self.process_of(weight.thread) {
            texts.push(process.label());
        }
        if with_thread {
            texts.push(weight.thread.label());
        }
        let frames = frame_texts(weight.frames);
        if frames.is_empty() {
            texts.push(weight.thread.empty_stack_label());
        }
        texts.extend(frames);
        texts
    }
}

/// One process's growth ledgers: RSS (`rss` growth and `rss-release`), and the Python heap
/// (`heap-alloc` and `heap-freed`, whose releases are exact: each goes back to the stack
/// that allocated it).
#[derive(Debug)]
struct Ledgers {
    rss: GrowthLedger,
    heap: GrowthLedger,
}

impl Default for Ledgers {
    fn default() -> Ledgers {
        Ledgers {
            rss: GrowthLedger::default(),
            heap: GrowthLedger::per_key(),
        }
    }
}

impl Ledgers {
    /// The ledgers of merged processes: what each held at its own peak, summed
    /// ([`GrowthLedger::absorb`]); no sample feeds them.
    fn frozen() -> Ledgers {
        Ledgers {
            rss: GrowthLedger::default(),
            heap: GrowthLedger::default(),
        }
    }
}

/// `name` with each run of digits written `N` (`Thread-12 (work)` is `Thread-N (work)`): the
/// name that threads of merged processes are merged by.
fn numbers_as_n(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_number = false;
    for c in name.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            out.push(c);
            in_number = false;
        }
    }
    out
}

/// Feeds one sample's charges to the ledgers: growth in thread order, then each release from
/// the stack it was charged to.
fn replay(ledgers: &mut Ledgers, time_s: f64, entries: &[TimelineEntry]) {
    for (ledger, grow, release) in [
        (&mut ledgers.rss, Metric::Rss, Metric::RssRelease),
        (&mut ledgers.heap, Metric::HeapAlloc, Metric::HeapFreed),
    ] {
        for entry in entries {
            let growth = entry.values.get(grow);
            if growth > 0 {
                ledger.grow((entry.thread, entry.stack), growth);
            }
        }
        for entry in entries {
            let released = entry.values.get(release);
            if released > 0 {
                ledger.release_from((entry.thread, entry.stack), released);
            }
        }
        ledger.end_sample(time_s);
    }
}

/// Allocations held, from bytes held and the stack's mean allocation size.
fn held_objects(held_bytes: u64, alloc_bytes: u64, alloc_count: u64) -> u64 {
    if alloc_bytes == 0 {
        return 0;
    }
    let objects = u128::from(held_bytes) * u128::from(alloc_count) / u128::from(alloc_bytes);
    u64::try_from(objects).unwrap_or(u64::MAX)
}

impl SampleSink for Profile {
    fn record(&mut self, sample: Sample) {
        self.add(sample);
    }

    fn record_process(&mut self, process: &ProcessIdentity, sample: Sample) {
        self.add_process_sample(process, sample);
    }
}

/// Synthetic samples for the tests of the profile and its outputs.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::python::CodeInfo;
    use std::sync::Arc;
    use std::time::Duration;

    /// A frame of `function` in `file.py` at `line`.
    pub fn frame(function: &str, line: u32) -> Frame {
        Frame {
            code: Arc::new(CodeInfo {
                function: function.to_string(),
                filename: "app/file.py".to_string(),
                first_line: 1,
            }),
            line,
        }
    }

    /// A Python thread's sample with `frames` (innermost first), `rss` bytes and one wall sample.
    pub fn thread_sample(tid: u32, name: &str, frames: &[Frame], rss: u64) -> ThreadSample {
        let mut values = MetricValues::default();
        values.add(Metric::Rss, rss);
        values.add(Metric::Wall, 1);
        ThreadSample {
            thread: ThreadIdentity {
                python_id: Some(u64::from(tid) * 16),
                native_id: Some(tid),
                name: Some(name.to_string()),
            },
            frames: frames.to_vec(),
            values,
        }
    }

    /// A `--subprocesses` profile of two forked processes whose main threads share ids:
    /// process 10 keeps 1000 bytes in `keep`; process 11 grows 500 in `spike` first and
    /// releases them after process 10 grew.
    pub fn two_process_profile() -> Profile {
        let mut profile = Profile::new(TargetInfo::default(), true);
        let keeper = ProcessIdentity {
            pid: 10,
            command: "python3 keeper.py".to_string(),
            python_version: Some("3.12.1".to_string()),
            role: None,
        };
        let spiker = ProcessIdentity {
            pid: 11,
            command: "python3 keeper.py".to_string(),
            python_version: Some("3.12.1".to_string()),
            role: None,
        };
        let sample = |ms: u64, frames: &[Frame], rss: u64, release: u64| {
            let mut thread = thread_sample(7, "MainThread", frames, rss);
            thread.values.add(Metric::RssRelease, release);
            Sample {
                time: Duration::from_millis(ms),
                rss: Some(1 << 20),
                threads: vec![thread],
            }
        };
        profile.add_process_sample(&spiker, sample(0, &[frame("spike", 9)], 500, 0));
        profile.add_process_sample(&keeper, sample(10, &[frame("keep", 5)], 1000, 0));
        profile.add_process_sample(&spiker, sample(20, &[frame("spike", 9)], 0, 500));
        for ms in (30..600).step_by(10) {
            profile.add_process_sample(&keeper, sample(ms, &[frame("keep", 5)], 0, 0));
            profile.add_process_sample(&spiker, sample(ms, &[frame("idle", 1)], 0, 0));
        }
        profile
    }

    /// A profile of two threads running the same leaf under different callers, plus a
    /// non-Python thread charged some growth.
    pub fn two_thread_profile() -> Profile {
        let target = TargetInfo {
            pid: 4242,
            command: "python3 app.py".to_string(),
            python_version: Some("3.11.7".to_string()),
        };
        let mut profile = Profile::new(target, true);
        let main = [frame("grow", 7), frame("main", 3), frame("<module>", 20)];
        let worker = [frame("grow", 7), frame("main", 3), frame("<module>", 20)];
        let idle = [frame("wait", 2)];
        for tick in 0..4u64 {
            let mut native = ThreadSample {
                thread: ThreadIdentity {
                    python_id: None,
                    native_id: Some(99),
                    name: Some("jemalloc_bg".to_string()),
                },
                frames: Vec::new(),
                values: MetricValues::default(),
            };
            native.values.add(Metric::Rss, 100);
            profile.add(Sample {
                time: Duration::from_millis(10 * tick),
                rss: Some(1_000_000 + tick * 4096),
                threads: vec![
                    thread_sample(1, "MainThread", &main, 1 << 20),
                    thread_sample(
                        2,
                        "worker",
                        if tick % 2 == 0 { &worker } else { &idle },
                        512,
                    ),
                    native,
                ],
            });
        }
        // A quiet sample later, so that the growth has been sustained.
        profile.add(Sample {
            time: Duration::from_millis(500),
            rss: Some(1_016_384),
            threads: Vec::new(),
        });
        profile
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_allocation_hooks_tallies_are_in_the_run_tallies() {
        let stats = crate::sampler::SamplerStats {
            heap: Some(crate::memory::heap_hook::HookTallies {
                samples: 7,
                stacks_full: 2,
                table_full: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        let tallies = super::run_tallies(&stats);
        let get = |name: &str| tallies.iter().find(|(n, _)| n == name).map(|&(_, v)| v);
        assert_eq!(get("heap_samples"), Some(7));
        assert_eq!(get("heap_stacks_full"), Some(2));
        assert_eq!(get("heap_table_full"), Some(1));
        assert!(super::run_tallies(&crate::sampler::SamplerStats::default()).is_empty());
    }

    use super::test_support::*;
    use super::*;

    #[test]
    fn stacks_are_interned_root_first() {
        let profile = two_thread_profile();
        assert_eq!(
            profile.stacks().len(),
            3,
            "grow stack, wait stack, empty stack"
        );
        let grow = &profile.stacks()[0];
        let names: Vec<&str> = grow
            .iter()
            .map(|&id| profile.frames()[id as usize].function.as_str())
            .collect();
        assert_eq!(names, ["<module>", "main", "grow"]);
        assert_eq!(profile.threads().len(), 3);
        assert_eq!(profile.timeline().map(SampleLog::len), Some(5));
    }

    #[test]
    fn pmts_own_loader_is_one_frame() {
        use crate::python::CodeInfo;
        use std::sync::Arc;
        use std::time::Duration;
        let mut profile = Profile::new(TargetInfo::default(), false);
        let in_file = |function: &str, filename: &str| Frame {
            code: Arc::new(CodeInfo {
                function: function.to_string(),
                filename: filename.to_string(),
                first_line: 1,
            }),
            line: 3,
        };
        let frames = [
            in_file(
                "FileLoader.get_data",
                "<frozen importlib._bootstrap_external>",
            ),
            in_file("_pmt_heap_load", "<string>"),
            in_file("<module>", "<string>"),
            frame("rec", 13),
            frame("main", 20),
        ];
        profile.add(Sample {
            time: Duration::from_millis(1),
            rss: None,
            threads: vec![thread_sample(7, "MainThread", &frames, 4096)],
        });
        let names: Vec<&str> = profile.stacks()[0]
            .iter()
            .map(|&id| profile.frames()[id as usize].function.as_str())
            .collect();
        assert_eq!(names, ["main", "rec", HOOK_LOADER]);
    }

    #[test]
    fn totals_add_every_sample() {
        let profile = two_thread_profile();
        assert_eq!(profile.total(Metric::Rss), 4 * ((1 << 20) + 512 + 100));
        assert_eq!(profile.total(Metric::Wall), 8);
        assert_eq!(profile.total(Metric::Cpu), 0);
    }

    /// Quiet 10 ms steps that hold a level a little longer than [`SUSTAIN_S`].
    fn held() -> usize {
        (SUSTAIN_S / 0.01) as usize + 5
    }

    /// Replays (growth key, growth, release) steps 10 ms apart.
    fn ledger_after(steps: &[((u32, u32), u64, u64)]) -> GrowthLedger {
        let mut ledger = GrowthLedger::default();
        for (i, &(key, growth, release)) in steps.iter().enumerate() {
            if growth > 0 {
                ledger.grow(key, growth);
            }
            if release > 0 {
                ledger.release_from(key, release);
            }
            ledger.end_sample(i as f64 * 0.01);
        }
        ledger
    }

    #[test]
    fn overlapping_requests_keep_nothing_in_the_per_key_ledger() {
        // Two request stacks take turns, each holding 500 for 40 ms, overlapping so that
        // one of them always holds memory; a leak grows 10 every 10 ms.
        let mut ledger = GrowthLedger::per_key();
        let mut plain = GrowthLedger::default();
        for i in 0..200u32 {
            for l in [&mut ledger, &mut plain] {
                l.grow((0, 9), 10);
                match i % 6 {
                    0 => l.grow((0, 1), 500),
                    4 => l.release_from((0, 1), 500),
                    3 => l.grow((0, 2), 500),
                    1 if i > 1 => l.release_from((0, 2), 500),
                    _ => {}
                }
                l.end_sample(f64::from(i) * 0.01);
            }
        }
        let peak = ledger.at_peak();
        assert_eq!(peak.get(&(0, 1)), None, "{peak:?}");
        assert_eq!(peak.get(&(0, 2)), None, "{peak:?}");
        assert!(peak.get(&(0, 9)).is_some_and(|&b| b >= 1_700), "{peak:?}");
        // Without the per-key cap, part of what was in flight is kept.
        let held: u64 = plain
            .at_peak()
            .iter()
            .filter(|(k, _)| k.1 != 9)
            .map(|(_, b)| b)
            .sum();
        assert!(held > 0);
    }

    #[test]
    fn slow_requests_keep_nothing_in_a_long_run() {
        // A request stack holds 5 000 for 500 ms out of every 600 ms (slowed down by load:
        // longer than SUSTAIN_S), for 12 s; a leak grows 10 every 10 ms.
        let mut ledger = GrowthLedger::per_key();
        for i in 0..1200u32 {
            ledger.grow((0, 9), 10);
            match i % 60 {
                0 => ledger.grow((0, 1), 5_000),
                50 => ledger.release_from((0, 1), 5_000),
                _ => {}
            }
            ledger.end_sample(f64::from(i) * 0.01);
        }
        let peak = ledger.at_peak();
        assert_eq!(peak.get(&(0, 1)), None, "{peak:?}");
        assert!(peak.get(&(0, 9)).is_some_and(|&b| b >= 10_000), "{peak:?}");
    }

    #[test]
    fn back_to_back_requests_of_one_thread_keep_nothing() {
        // One thread runs a request every 50 ms, each the same stack: within one sample it
        // frees the last request's 5 000 and allocates the next one's; a leak grows beside it.
        let mut ledger = GrowthLedger::per_key();
        for i in 0..1200u32 {
            ledger.grow((0, 9), 10);
            if i % 5 == 0 {
                ledger.grow((0, 1), 5_000);
                if i > 0 {
                    ledger.release_from((0, 1), 5_000);
                }
            }
            ledger.end_sample(f64::from(i) * 0.01);
        }
        let peak = ledger.at_peak();
        assert_eq!(peak.get(&(0, 1)), None, "{peak:?}");
        assert!(peak.get(&(0, 9)).is_some_and(|&b| b >= 10_000), "{peak:?}");
    }

    #[test]
    fn steady_growth_up_to_a_peak_freed_after_it_is_kept() {
        // A parser's stack grows 100 every 10 ms for 10 s up to the peak, then the program
        // frees it; a request stack beside it takes and gives back 5 000 every 50 ms.
        let mut ledger = GrowthLedger::per_key();
        for i in 0..1400u32 {
            if i < 1000 {
                ledger.grow((0, 1), 100);
            } else if i == 1050 {
                ledger.release_from((0, 1), 100_000);
            }
            if i % 5 == 0 {
                ledger.grow((0, 2), 5_000);
            } else if i % 5 == 3 {
                ledger.release_from((0, 2), 5_000);
            }
            // A slow request that starts half a second before the peak and ends after it.
            if i == 950 {
                ledger.grow((0, 3), 5_000);
            } else if i == 1060 {
                ledger.release_from((0, 3), 5_000);
            }
            ledger.end_sample(f64::from(i) * 0.01);
        }
        let peak = ledger.at_peak();
        assert_eq!(peak.get(&(0, 3)), None, "{peak:?}");
        // Held at the sustained peak (up to SUSTAIN_S of growth before it), not what it held
        // a second before the peak (90 000).
        assert!(peak.get(&(0, 1)).is_some_and(|&b| b >= 97_000), "{peak:?}");
        assert_eq!(peak.get(&(0, 2)), None, "{peak:?}");
    }

    #[test]
    fn an_early_peak_held_through_a_long_run_is_kept() {
        // 1 000 allocated in the first 100 ms and held for 12 s: the peak is early, with no
        // second before it, but it is held for the whole second after.
        let mut ledger = GrowthLedger::per_key();
        for i in 0..1200u32 {
            if i < 10 {
                ledger.grow((0, 1), 100);
            }
            ledger.end_sample(f64::from(i) * 0.01);
        }
        assert_eq!(ledger.at_peak().get(&(0, 1)), Some(&1_000));
    }

    #[test]
    fn transient_growth_cancels_and_the_peak_survives_exit() {
        let mut steps = vec![((0, 1), 100, 0), ((0, 2), 40, 0)];
        // A transient: 500 raised by stack 3 and freed in the next interval.
        steps.push(((0, 3), 500, 0));
        steps.push(((0, 0), 0, 500));
        steps.extend(std::iter::repeat_n(((0, 0), 0, 0), held()));
        // Exit frees everything.
        steps.push(((0, 0), 0, 1_000));
        let ledger = ledger_after(&steps);
        let peak = ledger.at_peak();
        assert_eq!(peak.get(&(0, 1)), Some(&100));
        assert_eq!(peak.get(&(0, 2)), Some(&40));
        assert_eq!(
            peak.get(&(0, 3)),
            None,
            "the transient is not part of the peak"
        );
        assert_eq!(ledger.level, 0);
    }

    #[test]
    fn a_release_gives_back_its_own_stacks_growth_first() {
        // Stack 1 keeps 300; stack 2 raises 200 after it; stack 1 then frees 100 of its own.
        let mut steps = vec![((0, 1), 300, 0), ((0, 2), 200, 0), ((0, 1), 0, 100)];
        steps.extend(std::iter::repeat_n(((0, 0), 0, 0), held()));
        // A release beyond a stack's holdings cancels the latest growth of the others.
        steps.push(((0, 3), 0, 50));
        let ledger = ledger_after(&steps);
        assert_eq!(ledger.at_peak().get(&(0, 1)), Some(&200));
        assert_eq!(ledger.at_peak().get(&(0, 2)), Some(&200));
        assert_eq!(ledger.current.get(&(0, 2)), Some(&150));
        assert_eq!(ledger.level, 350);
    }

    #[test]
    fn emptied_entries_are_compacted_and_the_ledger_stays_consistent() {
        let mut ledger = GrowthLedger::default();
        for round in 0..500u32 {
            ledger.grow((0, round % 7), 10);
            ledger.grow((1, round % 5), 10);
            if round % 3 == 0 {
                ledger.release_from((0, round % 7), 10);
            }
        }
        let sum: u64 = ledger.current.values().sum();
        assert_eq!(sum, ledger.level);
        let in_entries: u64 = ledger.entries.iter().map(|&(_, a)| a).sum();
        assert_eq!(in_entries, ledger.level);
        assert!(
            ledger.emptied <= 64 || ledger.emptied * 2 <= ledger.entries.len(),
            "{} emptied of {}",
            ledger.emptied,
            ledger.entries.len()
        );
    }

    #[test]
    fn the_highest_sustained_level_wins() {
        let mut steps = vec![((0, 1), 100, 0)];
        steps.extend(std::iter::repeat_n(((0, 0), 0, 0), held()));
        steps.push(((0, 0), 0, 100));
        steps.push(((0, 2), 150, 0));
        steps.extend(std::iter::repeat_n(((0, 0), 0, 0), held()));
        steps.push(((0, 2), 0, 30));
        let ledger = ledger_after(&steps);
        assert_eq!(ledger.at_peak().get(&(0, 2)), Some(&150));
        assert_eq!(ledger.at_peak().get(&(0, 1)), None);
    }

    #[test]
    fn thread_labels_name_the_kernel_id() {
        let profile = two_thread_profile();
        let labels: Vec<String> = profile.threads().iter().map(ThreadInfo::label).collect();
        assert_eq!(
            labels,
            [
                "thread MainThread (1)",
                "thread worker (2)",
                "thread jemalloc_bg (99)"
            ]
        );
        assert_eq!(
            profile.threads()[2].empty_stack_label(),
            "<non-Python thread jemalloc_bg>"
        );
        let anonymous = ThreadInfo {
            python_id: Some(255),
            native_id: None,
            name: None,
            process: None,
            merged: false,
        };
        assert_eq!(anonymous.label(), "thread ? (0xff)");
        assert_eq!(anonymous.empty_stack_label(), "<no Python frames>");
    }

    #[test]
    fn the_heap_is_what_each_allocating_stack_still_holds_at_the_sustained_peak() {
        let mut profile = Profile::new(TargetInfo::default(), false);
        let heap = |alloc: u64, count: u64, freed: u64| {
            let mut values = MetricValues::default();
            values.add(Metric::HeapAlloc, alloc);
            values.add(Metric::HeapAllocCount, count);
            values.add(Metric::HeapFreed, freed);
            values
        };
        let (keep, churn) = ([frame("keep", 3)], [frame("churn", 9)]);
        for tick in 0..40u64 {
            let mut threads = vec![thread_sample(1, "MainThread", &keep, 0)];
            threads[0].values = heap(1000, 10, 0);
            let mut churned = thread_sample(1, "MainThread", &churn, 0);
            // Churn allocates 50 000 a tick and frees the previous tick's.
            churned.values = heap(50_000, 500, if tick > 0 { 50_000 } else { 0 });
            threads.push(churned);
            profile.add(Sample {
                time: std::time::Duration::from_millis(10 * tick),
                rss: None,
                threads,
            });
        }
        let weights = profile.weights();
        let of = |function: &str, metric: Metric| {
            weights
                .iter()
                .find(|w| {
                    profile
                        .stack_text(w, false)
                        .last()
                        .is_some_and(|f| f.starts_with(function))
                })
                .map_or(0, |w| w.values.get(metric))
        };
        // The last 250 ms held at least 40 000 of keep's growth (its level rose throughout).
        assert!(
            of("keep", Metric::Heap) >= 14_000,
            "{}",
            of("keep", Metric::Heap)
        );
        assert_eq!(
            of("keep", Metric::HeapObjects),
            of("keep", Metric::Heap) / 100
        );
        // Churn holds at most one tick's allocation, never more.
        assert!(of("churn", Metric::Heap) <= 50_000);
        assert_eq!(of("churn", Metric::HeapAlloc), 40 * 50_000);
        assert!(profile.has_heap());
        assert_eq!(
            profile.heap_held_now().values().sum::<u64>(),
            40 * 1000 + 50_000
        );
    }

    #[test]
    fn processes_get_a_root_frame_and_their_own_ledger() {
        let profile = two_process_profile();
        assert_eq!(profile.processes().len(), 2);
        assert_eq!(profile.threads().len(), 2, "the same ids in two processes");
        let charged: Vec<(Vec<String>, u64)> = profile
            .weights()
            .iter()
            .map(|w| (profile.stack_text(w, true), w.values.get(Metric::Rss)))
            .filter(|(_, rss)| *rss > 0)
            .collect();
        assert_eq!(
            charged,
            [(
                vec![
                    "process 10: python3 keeper.py".to_string(),
                    "thread MainThread (7)".to_string(),
                    "keep (app/file.py:5)".to_string(),
                ],
                1000
            )],
            "process 11's release cancels its own spike, not process 10's growth"
        );
        let long = ProcessInfo {
            pid: 3,
            command: "x".repeat(100),
            python_version: None,
            role: None,
            merged: 0,
        };
        assert_eq!(long.label().chars().count(), "process 3: ".len() + 81);
        let worker = ProcessInfo {
            role: Some("worker 2".to_string()),
            ..long.clone()
        };
        assert_eq!(worker.label(), "process 3: worker 2");
        let master = ProcessInfo {
            role: Some("master".to_string()),
            ..long
        };
        assert_eq!(
            master.label().chars().count(),
            "process 3: master · ".len() - 1 + 41
        );
    }

    #[test]
    fn timeline_parts_that_point_nowhere_are_rejected() {
        let err = Profile::from_timeline(
            TargetInfo::default(),
            None,
            Vec::new(),
            vec![vec![3]],
            Vec::new(),
            Vec::new(),
        )
        .expect_err("bad frame id");
        assert!(matches!(err, ProfileError::BadFrame { frame: 3, .. }));
        let err = Profile::from_timeline(
            TargetInfo::default(),
            None,
            Vec::new(),
            vec![Vec::new()],
            Vec::new(),
            vec![TimelineSample {
                time_s: 0.0,
                process: None,
                rss: None,
                entries: vec![TimelineEntry {
                    thread: 0,
                    stack: 0,
                    values: MetricValues::default(),
                }],
            }],
        )
        .expect_err("bad thread id");
        assert!(matches!(err, ProfileError::BadEntry { thread: 0, .. }));
    }

    #[test]
    fn exited_processes_past_the_first_are_merged_by_role_and_keep_what_they_charged() {
        exited_processes_are_merged(false);
    }

    #[test]
    fn with_a_timeline_exited_processes_are_merged_and_their_samples_keep_their_names() {
        exited_processes_are_merged(true);
    }

    /// 200 workers, each keeping 1 000 bytes in `keep` on its main thread and in a numbered
    /// thread of its own, then exiting; one worker still runs.
    fn exited_processes_are_merged(keep_timeline: bool) {
        use std::time::Duration;
        let mut profile = Profile::new(TargetInfo::default(), keep_timeline);
        let worker = |pid: i32| ProcessIdentity {
            pid,
            command: "python3 -m pool".to_string(),
            python_version: Some("3.12.1".to_string()),
            role: Some(format!("worker {}", pid % 4 + 1)),
        };
        let sample = |ms: u64, tid: u32, rss: u64| {
            let main = thread_sample(tid, "MainThread", &[frame("keep", 5)], rss);
            let extra = thread_sample(
                tid + 1,
                &format!("Thread-{tid} (fill)"),
                &[frame("fill", 9)],
                rss,
            );
            Sample {
                time: Duration::from_millis(ms),
                rss: Some(1 << 20),
                threads: vec![main, extra],
            }
        };
        let mut sizes = Vec::new();
        for pid in 100..300 {
            let tid = pid as u32 * 10;
            profile.add_process_sample(&worker(pid), sample(0, tid, 1_000));
            for ms in (10..400).step_by(10) {
                profile.add_process_sample(&worker(pid), sample(ms, tid, 0));
            }
            profile.process_exited(&worker(pid));
            // With a timeline, the process and thread entries its samples name stay.
            let (processes, threads) = if keep_timeline {
                (0, 0)
            } else {
                (profile.processes.len(), profile.threads.len())
            };
            sizes.push((
                processes,
                threads,
                profile.totals.len(),
                profile.ledgers.len(),
            ));
        }
        profile.add_process_sample(&worker(7), sample(0, 70, 1_000));
        for ms in (10..400).step_by(10) {
            profile.add_process_sample(&worker(7), sample(ms, 70, 0));
        }
        let weights = profile.weights();
        let rss: u64 = weights.iter().map(|w| w.values.get(Metric::Rss)).sum();
        assert_eq!(rss, 201 * 2_000, "nothing charged is lost");
        let wall: u64 = weights.iter().map(|w| w.values.get(Metric::Wall)).sum();
        assert_eq!(wall, 201 * 40 * 2);
        // The first EXITED_APART keep their own root; the rest share one, whose threads are
        // merged by name, numbers aside.
        let mut roots: Vec<String> = weights
            .iter()
            .map(|w| profile.stack_text(w, true)[..2].join(" · "))
            .collect();
        roots.sort();
        roots.dedup();
        let merged: Vec<&String> = roots.iter().filter(|r| r.contains("merged")).collect();
        assert_eq!(
            merged,
            [
                "168 exited processes merged: worker · thread MainThread",
                "168 exited processes merged: worker · thread Thread-N (fill)",
            ]
        );
        assert_eq!(roots.len(), 2 * (EXITED_APART + 1) + 2, "{roots:?}");
        assert!(roots.contains(&"process 7: worker 4 · thread MainThread (70)".to_string()));
        // Bounded: the tables stop growing once processes are merged.
        let settled = sizes[EXITED_APART + 2];
        assert_eq!(sizes.last(), Some(&settled), "{sizes:?}");
        if keep_timeline {
            let timeline = profile.timeline().expect("kept");
            assert_eq!(timeline.len(), 201 * 40);
            for sample in timeline.iter() {
                let process = &profile.processes()[sample.process.expect("a process") as usize];
                assert!(process.pid == 7 || (100..300).contains(&process.pid));
                for entry in &sample.entries {
                    let thread = &profile.threads()[entry.thread as usize];
                    assert_eq!(thread.process, sample.process, "{thread:?}");
                    assert!(thread.name.is_some());
                }
            }
        }
    }
}
