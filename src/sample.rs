//! The vocabulary of what a sampling run produces: the [`Metric`]s a stack can be weighed by
//! (with their [`Unit`]s), one value per metric ([`MetricValues`]), and the [`Sample`] of one
//! tick — each thread's stack and what the interval charged to it — tagged, when several
//! processes are sampled, with a [`ProcessIdentity`].
//!
//! Owns: the metric names, units and descriptions, the sample types, the leaf frames that mark
//! what kind of pages a stack holds ([`PageKind`]), and [`split_proportionally`], the exact
//! division attribution shares amounts by.
//! Must not touch: how samples are taken or charged (`sampler`), how they add up (`profile`),
//! and any output format (`output`): it is the data those pass along.

use crate::python::Frame;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Pages that are not the process's own anonymous memory, shown as a leaf frame under the
/// stack that touched them; the frame's filename is the mapped file (empty for shared memory),
/// which is data, not code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    /// Pages of a mapped file (the page cache's).
    FileBacked,
    /// Shared anonymous memory, memfd, System V segments.
    Shared,
}

impl PageKind {
    /// The leaf frame's function name.
    pub fn frame_name(self) -> &'static str {
        match self {
            PageKind::FileBacked => "<file-backed pages>",
            PageKind::Shared => "<shared memory>",
        }
    }

    /// The kind a frame's function name marks, if it is such a leaf frame.
    pub fn of_frame(function: &str) -> Option<PageKind> {
        [PageKind::FileBacked, PageKind::Shared]
            .into_iter()
            .find(|kind| kind.frame_name() == function)
    }
}

/// What a flamegraph can weigh. Adding a metric is one variant here (with its name, unit and
/// description) plus one [`crate::sampler::CounterSource`] that feeds it.
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
    /// Bytes held through Python's allocators, by the stack that allocated them, at the
    /// sustained peak of the held total (the allocation hook, `memory::heap_hook`): derived
    /// by the profile from `heap-alloc` and `heap-freed`.
    Heap,
    /// Allocations held, likewise (`heap` over the stack's mean allocation size).
    HeapObjects,
    /// Bytes allocated through Python's allocators (estimated from samples).
    HeapAlloc,
    /// Allocations made through Python's allocators (estimated from samples).
    HeapAllocCount,
    /// Bytes of sampled allocations freed again, charged to the stack that allocated them.
    HeapFreed,
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
    /// Objects (allocations) held.
    Objects,
}

impl Unit {
    /// The unit's name as written in outputs.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Bytes => "bytes",
            Unit::Samples => "samples",
            Unit::Calls => "calls",
            Unit::Objects => "objects",
        }
    }
}

impl Metric {
    /// Every metric, in the order of [`MetricValues`].
    pub const ALL: [Metric; 11] = [
        Metric::Rss,
        Metric::RssRelease,
        Metric::Cpu,
        Metric::Wall,
        Metric::MallocBytes,
        Metric::MallocCount,
        Metric::Heap,
        Metric::HeapObjects,
        Metric::HeapAlloc,
        Metric::HeapAllocCount,
        Metric::HeapFreed,
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
            Metric::Heap => "heap",
            Metric::HeapObjects => "heap-objects",
            Metric::HeapAlloc => "heap-alloc",
            Metric::HeapAllocCount => "heap-alloc-count",
            Metric::HeapFreed => "heap-freed",
        }
    }

    /// The unit of the metric's values.
    pub fn unit(self) -> Unit {
        match self {
            Metric::Rss
            | Metric::RssRelease
            | Metric::MallocBytes
            | Metric::Heap
            | Metric::HeapAlloc
            | Metric::HeapFreed => Unit::Bytes,
            Metric::Cpu | Metric::Wall => Unit::Samples,
            Metric::MallocCount | Metric::HeapAllocCount => Unit::Calls,
            Metric::HeapObjects => Unit::Objects,
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
            Metric::Heap => "Python heap held",
            Metric::HeapObjects => "Python allocations held",
            Metric::HeapAlloc => "bytes allocated through Python's allocators",
            Metric::HeapAllocCount => "allocations through Python's allocators",
            Metric::HeapFreed => "sampled Python allocations freed",
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
            Metric::Heap => 6,
            Metric::HeapObjects => 7,
            Metric::HeapAlloc => 8,
            Metric::HeapAllocCount => 9,
            Metric::HeapFreed => 10,
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
#[error(
    "unknown metric {0:?}: use one of heap, heap-objects, heap-alloc, heap-alloc-count, rss, rss-release, cpu, wall, malloc-bytes, malloc-count"
)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Its role in the tree (`master`, `worker 2`, `spawn child`, `resource tracker`), where
    /// one could be told.
    pub role: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
