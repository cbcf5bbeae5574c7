//! The live table of `pmt top`: per function (or per line), what the run charged to it in the
//! last few seconds (memory growth, allocator bytes, CPU share) and what it holds now, with a
//! thread and process filter, and the RSS history for a sparkline. A [`super::RunObserver`]
//! feeds it; it knows no terminal.
//!
//! Owns: the sliding window and the rows. Must not touch: sampling, the profile's ledger
//! (it only reads what each stack holds) or drawing.

use crate::profile::{Profile, ThreadInfo};
use crate::python::TASK_FRAME_PREFIX;
use crate::sample::{Metric, MetricValues, ProcessIdentity, Sample, ThreadIdentity};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// What a row stands for: the innermost frame's function (and line, per line), in one
/// process (`--subprocesses`) and one asyncio task (`--async`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey {
    /// The function's (qualified) name, or a placeholder for a thread without Python frames.
    pub function: String,
    /// Its file.
    pub filename: String,
    /// The line, when rows are per line.
    pub line: Option<u32>,
    /// The process, as `PID ROLE` (or `PID` where no role could be told), when several are
    /// sampled.
    pub process: Option<String>,
    /// The name of the asyncio task the stacks ran in, when they are rooted at one.
    pub task: Option<String>,
}

impl RowKey {
    /// The row of `leaf` (a stack's innermost frame; `None` for a thread without Python
    /// frames) in `process`, for stacks whose outermost frame is `root`.
    fn new(
        leaf: Option<(&str, &str, u32)>,
        thread: &ThreadIdentity,
        by_line: bool,
        process: Option<String>,
        root: Option<&str>,
    ) -> RowKey {
        let (function, filename, line) = match leaf {
            Some((function, filename, line)) => (
                function.to_string(),
                filename.to_string(),
                by_line.then_some(line),
            ),
            None => (placeholder(thread), String::new(), None),
        };
        let task = root.and_then(|root| {
            root.strip_prefix(TASK_FRAME_PREFIX)?
                .strip_suffix('>')
                .map(str::to_string)
        });
        RowKey {
            function,
            filename,
            line,
            process,
            task,
        }
    }
}

/// A process as the process column shows it: its pid and its role in the tree (as the
/// sampler's process root frames name it).
fn process_label(pid: i32, role: Option<&str>) -> String {
    match role {
        Some(role) => format!("{pid} {role}"),
        None => pid.to_string(),
    }
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// What it stands for.
    pub key: RowKey,
    /// What the window charged to it (`rss` is gross growth, `cpu` on-CPU samples).
    pub window: MetricValues,
    /// The bytes its stacks hold now.
    pub held: u64,
    /// The bytes of the Python heap its stacks hold now (the allocation hook's `heap`).
    pub heap: u64,
}

/// How rows are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Memory growth in the window.
    Growth,
    /// Memory held now.
    Held,
    /// Allocator bytes in the window.
    Malloc,
    /// CPU share in the window.
    Cpu,
    /// Python heap held now.
    Heap,
}

impl SortKey {
    /// Every key, in the order `s` cycles through them.
    pub const ALL: [SortKey; 5] = [
        SortKey::Growth,
        SortKey::Held,
        SortKey::Malloc,
        SortKey::Cpu,
        SortKey::Heap,
    ];

    /// The key's name (as `--sort` takes it).
    pub fn name(self) -> &'static str {
        match self {
            SortKey::Growth => "growth",
            SortKey::Held => "held",
            SortKey::Malloc => "malloc",
            SortKey::Cpu => "cpu",
            SortKey::Heap => "heap",
        }
    }

    /// The next key.
    pub fn next(self) -> SortKey {
        let at = SortKey::ALL.iter().position(|&k| k == self).unwrap_or(0);
        SortKey::ALL[(at + 1) % SortKey::ALL.len()]
    }

    fn value(self, row: &Row) -> u64 {
        match self {
            SortKey::Growth => row.window.get(Metric::Rss),
            SortKey::Held => row.held,
            SortKey::Malloc => row.window.get(Metric::MallocBytes),
            SortKey::Cpu => row.window.get(Metric::Cpu),
            SortKey::Heap => row.heap,
        }
    }
}

/// Which threads and processes count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// A thread's kernel id or name.
    pub thread: Option<String>,
    /// A process id (with `--subprocesses`).
    pub process: Option<i32>,
}

impl Filter {
    fn thread_matches(&self, native_id: Option<u32>, name: Option<&str>) -> bool {
        match &self.thread {
            None => true,
            Some(wanted) => {
                native_id.is_some_and(|tid| tid.to_string() == *wanted) || name == Some(wanted)
            }
        }
    }

    fn process_matches(&self, pid: Option<i32>) -> bool {
        self.process.is_none() || self.process == pid
    }
}

/// One refresh's worth of charges.
#[derive(Debug, Default)]
struct Bucket {
    end: Duration,
    charges: HashMap<RowKey, MetricValues>,
    ticks: u64,
}

/// The live table.
#[derive(Debug)]
pub struct LiveTable {
    /// Rows per line instead of per function.
    pub by_line: bool,
    /// Which threads and processes count.
    pub filter: Filter,
    window: Duration,
    closed: VecDeque<Bucket>,
    open: Bucket,
    last_tick: Option<Duration>,
    rss_by_process: HashMap<Option<i32>, u64>,
    rss_history: VecDeque<u64>,
    now: Duration,
}

/// How many RSS points the sparkline keeps (one per refresh).
const RSS_HISTORY: usize = 240;

impl LiveTable {
    /// An empty table over a sliding `window`.
    pub fn new(window: Duration, by_line: bool, filter: Filter) -> LiveTable {
        LiveTable {
            by_line,
            filter,
            window,
            closed: VecDeque::new(),
            open: Bucket::default(),
            last_tick: None,
            rss_by_process: HashMap::new(),
            rss_history: VecDeque::new(),
            now: Duration::ZERO,
        }
    }

    /// The window's length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Takes one sample (of `process` when several are sampled).
    pub fn record(&mut self, process: Option<&ProcessIdentity>, sample: &Sample) {
        self.now = self.now.max(sample.time);
        let pid = process.map(|p| p.pid);
        if let Some(rss) = sample.rss {
            self.rss_by_process.insert(pid, rss);
        }
        if self.last_tick != Some(sample.time) {
            self.last_tick = Some(sample.time);
            self.open.ticks += 1;
        }
        if !self.filter.process_matches(pid) {
            return;
        }
        for thread in &sample.threads {
            let identity = &thread.thread;
            if thread.values.is_zero()
                || !self
                    .filter
                    .thread_matches(identity.native_id, identity.name.as_deref())
            {
                continue;
            }
            let leaf = thread
                .frames
                .first()
                .map(|f| (f.code.function.as_str(), f.code.filename.as_str(), f.line));
            let root = thread.frames.last().map(|f| f.code.function.as_str());
            let process = process.map(|p| process_label(p.pid, p.role.as_deref()));
            let key = RowKey::new(leaf, identity, self.by_line, process, root);
            self.open
                .charges
                .entry(key)
                .or_default()
                .add_all(&thread.values);
        }
    }

    /// Closes the current refresh: the window slides, and the RSS history gets a point.
    pub fn roll(&mut self) {
        let mut bucket = std::mem::take(&mut self.open);
        bucket.end = self.now;
        self.closed.push_back(bucket);
        while self
            .closed
            .front()
            .is_some_and(|b| b.end + self.window < self.now)
        {
            self.closed.pop_front();
        }
        self.rss_history
            .push_back(self.rss_by_process.values().sum());
        while self.rss_history.len() > RSS_HISTORY {
            self.rss_history.pop_front();
        }
    }

    /// Forgets the window (after the rows' key changed: per line / per function).
    pub fn clear_window(&mut self) {
        self.closed.clear();
        self.open = Bucket::default();
    }

    /// The RSS at each refresh, oldest first (summed over processes).
    pub fn rss_history(&self) -> impl Iterator<Item = u64> + '_ {
        self.rss_history.iter().copied()
    }

    /// The latest RSS (summed over processes).
    pub fn rss(&self) -> u64 {
        self.rss_by_process.values().sum()
    }

    /// Ticks in the window (the denominator of the CPU share).
    pub fn ticks(&self) -> u64 {
        self.closed.iter().map(|b| b.ticks).sum()
    }

    /// The row of (thread, stack) of `profile`, if its thread counts.
    fn row_key(&self, profile: &Profile, thread: u32, stack: u32) -> Option<RowKey> {
        let info = profile.threads().get(thread as usize)?;
        if !self.counts(profile, info) {
            return None;
        }
        let frames = profile
            .stacks()
            .get(stack as usize)
            .map_or(&[][..], |s| s.as_slice());
        let frame = |id: Option<&u32>| id.and_then(|&id| profile.frames().get(id as usize));
        let leaf = frame(frames.last()).map(|f| (f.function.as_str(), f.filename.as_str(), f.line));
        let root = frame(frames.first()).map(|f| f.function.as_str());
        let process = profile.process_of(info).map(|p| match p.merged {
            // Exited processes merged into one entry (pid 0): how many, and their role.
            0 => process_label(p.pid, p.role.as_deref()),
            merged => format!("×{merged} {}", p.role.as_deref().unwrap_or("exited")),
        });
        let thread = ThreadIdentity {
            python_id: info.python_id,
            native_id: info.native_id,
            name: info.name.clone(),
        };
        Some(RowKey::new(leaf, &thread, self.by_line, process, root))
    }

    /// The rows, by `sort` (then growth, held, name), with what `profile` says each holds now.
    pub fn rows(&self, profile: &Profile, sort: SortKey) -> Vec<Row> {
        let mut rows: HashMap<RowKey, Row> = HashMap::new();
        fn row(rows: &mut HashMap<RowKey, Row>, key: RowKey) -> &mut Row {
            rows.entry(key.clone()).or_insert_with(|| Row {
                key,
                window: MetricValues::default(),
                held: 0,
                heap: 0,
            })
        }
        for bucket in &self.closed {
            for (key, values) in &bucket.charges {
                row(&mut rows, key.clone()).window.add_all(values);
            }
        }
        for (holdings, heap) in [(profile.held_now(), false), (profile.heap_held_now(), true)] {
            for ((thread, stack), bytes) in holdings {
                let Some(key) = self.row_key(profile, thread, stack) else {
                    continue;
                };
                let row = row(&mut rows, key);
                if heap {
                    row.heap += bytes;
                } else {
                    row.held += bytes;
                }
            }
        }
        // A row is shown for what its columns show: growth, held, heap, allocator bytes or
        // CPU (a stack charged only with, say, released memory has nothing to show).
        let shown = |row: &Row| {
            row.held > 0
                || row.heap > 0
                || [Metric::Rss, Metric::MallocBytes, Metric::Cpu]
                    .into_iter()
                    .any(|m| row.window.get(m) > 0)
        };
        let mut rows: Vec<Row> = rows.into_values().filter(shown).collect();
        rows.sort_by(|a, b| {
            sort.value(b)
                .cmp(&sort.value(a))
                .then(SortKey::Growth.value(b).cmp(&SortKey::Growth.value(a)))
                .then(b.held.cmp(&a.held))
                .then(a.key.cmp(&b.key))
        });
        rows
    }

    fn counts(&self, profile: &Profile, thread: &ThreadInfo) -> bool {
        let pid = profile.process_of(thread).map(|p| p.pid);
        self.filter.process_matches(pid)
            && self
                .filter
                .thread_matches(thread.native_id, thread.name.as_deref())
    }
}

/// The function shown for a thread without Python frames.
fn placeholder(thread: &ThreadIdentity) -> String {
    format!(
        "<non-Python thread {}>",
        thread.name.as_deref().unwrap_or("?")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::TargetInfo;
    use crate::profile::test_support::{frame, thread_sample};
    use crate::sample::ProcessIdentity;

    fn sample(ms: u64, frames: &[crate::python::Frame], rss: u64) -> Sample {
        Sample {
            time: Duration::from_millis(ms),
            rss: Some(1 << 24),
            threads: vec![thread_sample(1, "MainThread", frames, rss)],
        }
    }

    #[test]
    fn the_window_slides_and_holdings_come_from_the_profile() {
        let mut profile = Profile::new(TargetInfo::default(), false);
        let mut table = LiveTable::new(Duration::from_secs(1), false, Filter::default());
        let early = [frame("early", 3), frame("main", 1)];
        let late = [frame("late", 9), frame("main", 1)];
        for ms in (0..1000).step_by(100) {
            let s = sample(ms, &early, 1000);
            table.record(None, &s);
            profile.add(s);
        }
        table.roll();
        for ms in (1000..3000).step_by(100) {
            let s = sample(ms, &late, 10);
            table.record(None, &s);
            profile.add(s);
            if ms % 1000 == 900 {
                table.roll();
            }
        }
        let rows = table.rows(&profile, SortKey::Growth);
        assert_eq!(rows[0].key.function, "late");
        assert_eq!(rows[0].window.get(Metric::Rss), 10 * 10 * 2);
        let early_row = rows
            .iter()
            .find(|r| r.key.function == "early")
            .expect("held");
        assert_eq!(early_row.window.get(Metric::Rss), 0, "out of the window");
        assert_eq!(early_row.held, 10_000);
        let by_held = table.rows(&profile, SortKey::Held);
        assert_eq!(by_held[0].key.function, "early");
        assert_eq!(table.rss(), 1 << 24);
    }

    #[test]
    fn a_thread_filter_keeps_only_that_thread() {
        let mut table = LiveTable::new(
            Duration::from_secs(5),
            true,
            Filter {
                thread: Some("worker".to_string()),
                process: None,
            },
        );
        let s = Sample {
            time: Duration::from_millis(10),
            rss: None,
            threads: vec![
                thread_sample(1, "MainThread", &[frame("a", 1)], 5),
                thread_sample(2, "worker", &[frame("b", 2)], 7),
            ],
        };
        table.record(None, &s);
        table.roll();
        let rows = table.rows(&Profile::default(), SortKey::Growth);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].key.function, "b");
        assert_eq!(rows[0].key.line, Some(2));
    }
    #[test]
    fn rows_name_their_process_and_task_and_rows_with_nothing_shown_are_left_out() {
        let mut profile = Profile::new(TargetInfo::default(), false);
        let mut table = LiveTable::new(Duration::from_secs(5), false, Filter::default());
        let worker = ProcessIdentity {
            pid: 4321,
            command: "python app.py".to_string(),
            python_version: None,
            role: Some("worker 1".to_string()),
        };
        let master = ProcessIdentity {
            role: None,
            pid: 4320,
            ..worker.clone()
        };
        let task_root = frame("<task fetch>", 0);
        let grows = thread_sample(1, "MainThread", &[frame("grow", 3), task_root], 4096);
        // Only a wall sample: nothing any column shows.
        let mut idle = thread_sample(2, "MainThread", &[frame("wait", 8)], 0);
        idle.values = MetricValues::default();
        idle.values.add(Metric::Wall, 1);
        for (process, thread) in [(&worker, grows), (&master, idle)] {
            let sample = Sample {
                time: Duration::from_millis(10),
                rss: Some(1 << 20),
                threads: vec![thread],
            };
            table.record(Some(process), &sample);
            profile.add_process_sample(process, sample);
        }
        table.roll();
        let rows = table.rows(&profile, SortKey::Growth);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].key.function, "grow");
        assert_eq!(rows[0].key.process.as_deref(), Some("4321 worker 1"));
        assert_eq!(rows[0].key.task.as_deref(), Some("fetch"));
        assert_eq!(rows[0].window.get(Metric::Rss), 4096);
        assert_eq!(rows[0].held, 4096, "the held bytes join the same row");
    }
}
