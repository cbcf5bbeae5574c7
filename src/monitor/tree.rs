//! Monitoring a process and all its descendants as they come and go (`pmt tree`), in the
//! manner of pymemtrace's `process_tree.py`: the same columns, table layout (or `--sep`
//! separated), diff columns, and JSON records, plus a total row per tick.
//!
//! The tree is followed by the attach layer's [`ProcessTree`] (the kernel's process events where
//! it gives them, else the children lists every tick); each process is read through descriptors
//! kept open ([`ProcessProbe`]) and its CPU-time clock, so with the default columns a tick costs a
//! `clock_gettime` and one `pread` of `statm` per process (see [`TreeMonitor`]).

use crate::attach::ProcessTree;
use crate::attach::proc_files::{KernelUnits, StatFields};
use crate::monitor::probe::{self, ProbeError, ProcessProbe};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A column of the table, as `process_tree.py` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Column {
    /// Resident set size (MB in the table, bytes in JSON).
    Rss,
    /// Unique set size (`-u`); -1 where it cannot be read.
    Uss,
    /// Page faults since start, minor + major (`-g`).
    PFaults,
    /// CPU % since the previous tick.
    Cpu,
    /// User CPU seconds (`-c`).
    User,
    /// System CPU seconds (`-c`).
    Sys,
    /// Context switches, millions (`-x`).
    Ctx,
    /// Threads (`-t`).
    Thrds,
    /// Status (`-s`).
    Status,
    /// Open regular files (`-f`).
    Files,
    /// TCP/UDP sockets (`-n`).
    Net,
    /// Command line (`--cmdline`).
    CmdLine,
}

/// How a number or string is laid out (a subset of Python's format mini-language).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    width: usize,
    plus: bool,
    comma: bool,
    /// `Some(n)`: fixed point with `n` decimals; `None`: integer or string.
    decimals: Option<usize>,
}

const fn layout(width: usize, plus: bool, comma: bool, decimals: Option<usize>) -> Layout {
    Layout {
        width,
        plus,
        comma,
        decimals,
    }
}

impl Column {
    /// The name used in the header and as the JSON key.
    pub fn name(self) -> &'static str {
        match self {
            Column::Rss => "RSS",
            Column::Uss => "USS",
            Column::PFaults => "PFaults",
            Column::Cpu => "CPU",
            Column::User => "User",
            Column::Sys => "Sys",
            Column::Ctx => "Ctx",
            Column::Thrds => "Thrds",
            Column::Status => "Status",
            Column::Files => "Files",
            Column::Net => "Net",
            Column::CmdLine => "CmdLine",
        }
    }

    fn units(self) -> &'static str {
        match self {
            Column::Rss | Column::Uss => "MB",
            Column::Cpu => "%",
            Column::User | Column::Sys => "s",
            Column::Ctx => "m",
            _ => "",
        }
    }

    fn scale(self) -> f64 {
        match self {
            Column::Rss | Column::Uss => 1.0 / (1024.0 * 1024.0),
            Column::Ctx => 1e-6,
            _ => 1.0,
        }
    }

    fn layout(self) -> Layout {
        match self {
            Column::Rss | Column::Uss | Column::Ctx => layout(8, false, true, Some(1)),
            Column::PFaults => layout(12, false, true, None),
            Column::Cpu => layout(8, false, false, Some(1)),
            Column::User | Column::Sys => layout(8, false, true, Some(3)),
            Column::Thrds => layout(6, false, true, None),
            Column::Status => layout(10, false, false, None),
            Column::Files | Column::Net => layout(6, false, false, None),
            Column::CmdLine => layout(0, false, false, None),
        }
    }

    fn diff_layout(self) -> Option<Layout> {
        match self {
            Column::Rss | Column::Uss => Some(layout(8, true, true, Some(1))),
            Column::PFaults => Some(layout(12, true, true, None)),
            Column::Cpu => Some(layout(8, true, false, Some(1))),
            Column::Ctx => Some(layout(8, false, true, Some(1))),
            Column::Thrds => Some(layout(6, true, true, None)),
            Column::Status => Some(layout(10, false, false, None)),
            Column::Files | Column::Net => Some(layout(6, false, false, None)),
            Column::User | Column::Sys | Column::CmdLine => None,
        }
    }

    /// Whether the total row sums this column.
    fn summable(self) -> bool {
        !matches!(self, Column::Status | Column::CmdLine)
    }

    /// Whether a process's value comes from `/proc/PID/stat` (CPU % and RSS do not: they come
    /// from the CPU-time clock and `statm`).
    fn needs_stat(self) -> bool {
        matches!(
            self,
            Column::PFaults | Column::User | Column::Sys | Column::Thrds | Column::Status
        )
    }

    /// Whether a process's value needs reads beyond `/proc/PID/stat`.
    fn needs_extra_reads(self) -> bool {
        matches!(
            self,
            Column::Uss | Column::Ctx | Column::Files | Column::Net | Column::CmdLine
        )
    }
}

/// Which columns to show, from `process_tree.py`'s flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ColumnFlags {
    /// `-u`.
    pub uss: bool,
    /// `-g`.
    pub page_faults: bool,
    /// `-c`.
    pub cpu_times: bool,
    /// `-x`.
    pub context_switches: bool,
    /// `-t`.
    pub threads: bool,
    /// `-s`.
    pub status: bool,
    /// `-f`.
    pub open_files: bool,
    /// `-n`.
    pub net_connections: bool,
    /// `--cmdline`.
    pub cmdline: bool,
    /// `-a`: the same as `-cfgstn`.
    pub all: bool,
}

impl ColumnFlags {
    /// The columns in `process_tree.py`'s order: RSS, [USS], [PFaults], CPU, [User, Sys], [Ctx],
    /// [Thrds], [Status], [Files], [Net], [CmdLine].
    pub fn columns(self) -> Vec<Column> {
        let all = self.all;
        let mut columns = vec![Column::Rss];
        let mut add = |on: bool, column: &[Column]| {
            if on {
                columns.extend_from_slice(column);
            }
        };
        add(self.uss, &[Column::Uss]);
        add(self.page_faults || all, &[Column::PFaults]);
        add(true, &[Column::Cpu]);
        add(self.cpu_times || all, &[Column::User, Column::Sys]);
        add(self.context_switches, &[Column::Ctx]);
        add(self.threads || all, &[Column::Thrds]);
        add(self.status || all, &[Column::Status]);
        add(self.open_files || all, &[Column::Files]);
        add(self.net_connections || all, &[Column::Net]);
        add(self.cmdline, &[Column::CmdLine]);
        columns
    }
}

/// One cell's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A count or byte size.
    Int(i64),
    /// Seconds or percent.
    Float(f64),
    /// Status or command line.
    Text(String),
}

impl Value {
    fn as_f64(&self) -> f64 {
        match self {
            Value::Int(v) => *v as f64,
            Value::Float(v) => *v,
            Value::Text(_) => 0.0,
        }
    }

    /// The value as JSON (bytes and counts unscaled, as `process_tree.py` writes them).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Int(v) => serde_json::Value::from(*v),
            Value::Float(v) => serde_json::Value::from(*v),
            Value::Text(v) => serde_json::Value::from(v.as_str()),
        }
    }
}

/// Text buffers reused for every cell of a tick, so formatting allocates nothing per cell.
#[derive(Debug, Default)]
struct Scratch {
    /// The digits as Rust formats them.
    raw: String,
    /// Sign and grouped digits, before padding.
    number: String,
    /// One padded cell.
    cell: String,
}

/// Appends `value` laid out as Python's `format(value, spec)` would for `layout`.
fn push_number(
    out: &mut String,
    raw: &mut String,
    number: &mut String,
    value: f64,
    layout: Layout,
) {
    raw.clear();
    let _ = match layout.decimals {
        Some(decimals) => write!(raw, "{:.decimals$}", value.abs()),
        None => write!(raw, "{}", value.abs().round() as u64),
    };
    let negative = value < 0.0 && raw.bytes().any(|c| c.is_ascii_digit() && c != b'0');
    number.clear();
    if negative {
        number.push('-');
    } else if layout.plus {
        number.push('+');
    }
    if layout.comma {
        let (int, frac) = match raw.split_once('.') {
            Some((int, frac)) => (int, Some(frac)),
            None => (raw.as_str(), None),
        };
        for (i, ch) in int.chars().enumerate() {
            if i > 0 && (int.len() - i).is_multiple_of(3) {
                number.push(',');
            }
            number.push(ch);
        }
        if let Some(frac) = frac {
            number.push('.');
            number.push_str(frac);
        }
    } else {
        number.push_str(raw);
    }
    let _ = write!(out, "{number:>width$}", width = layout.width);
}

fn push_value(out: &mut String, scratch: &mut Scratch, value: &Value, scale: f64, layout: Layout) {
    let Scratch { raw, number, .. } = scratch;
    match value {
        Value::Text(text) => {
            let _ = write!(out, "{text:>width$}", width = layout.width);
        }
        Value::Int(v) if scale == 1.0 && layout.decimals.is_none() => {
            push_number(out, raw, number, *v as f64, layout)
        }
        other => push_number(out, raw, number, other.as_f64() * scale, layout),
    }
}

/// ANSI colours as colorama writes them (only used when the output is a terminal).
#[derive(Debug, Clone, Copy)]
enum Colour {
    Red,
    Green,
    Plain,
}

impl Colour {
    fn code(self) -> Option<&'static str> {
        match self {
            Colour::Red => Some("\x1b[31m"),
            Colour::Green => Some("\x1b[32m"),
            Colour::Plain => None,
        }
    }
}

/// One process in one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Depth below the root (0 is the root).
    pub depth: usize,
    /// PID.
    pub pid: i32,
    /// Executable name (shared with the monitor, so a tick does not copy it).
    pub name: Arc<str>,
    /// Seconds since the process started.
    pub process_time: f64,
    /// Values in column order, or `None` where access was denied.
    pub values: Option<Vec<Value>>,
    /// Parent PID.
    pub ppid: i32,
    /// User + system CPU since the process started, seconds.
    pub cpu_seconds: f64,
}

impl Row {
    fn blank() -> Row {
        Row {
            depth: 0,
            pid: 0,
            name: Arc::from(""),
            process_time: 0.0,
            values: None,
            ppid: 0,
            cpu_seconds: 0.0,
        }
    }
}

/// The whole tree at one tick: rows depth-first, children by PID, and the totals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TreeSnapshot {
    /// Seconds since monitoring started.
    pub monitor_time: f64,
    /// Rows, depth-first from the root.
    pub rows: Vec<Row>,
    /// Column totals over all rows (status and command line left empty).
    pub totals: Vec<Option<f64>>,
}

impl TreeSnapshot {
    /// Total RSS, bytes.
    pub fn total_rss(&self) -> u64 {
        self.total_of(0) as u64
    }

    fn total_of(&self, index: usize) -> f64 {
        self.totals.get(index).copied().flatten().unwrap_or(0.0)
    }
}

/// What reading one process in a tick found.
#[derive(Debug)]
enum NodeRead {
    /// Running, its row filled.
    Alive,
    /// Exited but not yet reaped by its parent.
    Zombie,
    /// No longer there.
    Gone,
}

#[derive(Debug)]
struct Node {
    probe: ProcessProbe,
    /// CPU nanoseconds at the previous tick, and when.
    previous_cpu: Option<(u64, Instant)>,
    /// The values last shown, in column order, that the diff columns compare against.
    previous: Vec<Option<Value>>,
    /// `comm`, start time (ticks after boot) and parent, as `stat` last said.
    name: Arc<str>,
    start_ticks: u64,
    ppid: i32,
    /// `stat` must be read at the next tick: never read yet, or an exec or rename was seen.
    stale: bool,
    /// Threads, as `stat` last said (the tree follower reads every thread's children list
    /// only for processes with more than one).
    threads: Option<u64>,
    /// The last tick (1, 2, …) that reached it.
    seen_in: usize,
}

impl Node {
    fn new(probe: ProcessProbe) -> Node {
        Node {
            probe,
            previous_cpu: None,
            previous: Vec::new(),
            name: Arc::from(""),
            start_ticks: 0,
            ppid: 0,
            stale: true,
            threads: None,
            seen_in: 0,
        }
    }
}

/// What `pmt tree` saw over its run, for the final summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TreeStats {
    /// Every PID seen: (name, first seen s, last seen s, peak RSS bytes, last CPU seconds).
    pub seen: BTreeMap<i32, SeenProcess>,
    /// Most processes alive at one tick.
    pub max_alive: usize,
    /// Processes seen that are no longer in the tree (exited or reparented).
    pub departed: usize,
    /// Ticks taken.
    pub ticks: usize,
    /// Ticks that read every process's children list (all of them without process events).
    pub walks: usize,
    /// Peak total RSS, bytes.
    pub peak_total_rss: u64,
}

/// One process seen by `pmt tree`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeenProcess {
    /// Executable name.
    pub name: String,
    /// First tick it was seen, seconds since monitoring started.
    pub first_seen: f64,
    /// Last tick it was seen.
    pub last_seen: f64,
    /// Largest RSS seen, bytes.
    pub peak_rss: u64,
    /// User + system CPU at the last tick it was seen, seconds.
    pub cpu_seconds: f64,
}

/// Tracks a root process and its descendants.
///
/// Each tick reads, per process, its CPU-time clock and `/proc/PID/statm` (RSS, as psutil reads
/// it); `/proc/PID/stat`
/// only when a shown column needs it (page faults, user/system CPU, threads, status), when the
/// process is new or has exec'd or been renamed, or when the tree is walked. Which processes are
/// in the tree is the [`ProcessTree`] follower's business: from process events, walking the
/// children lists only at the first tick, after lost events, and when a process with children
/// exits. Without events (not root, or not in the initial PID namespace) it walks, and the
/// monitor reads `stat` (and `statm`, but not the clock: CPU time then comes from `stat`), at
/// every tick.
#[derive(Debug)]
pub struct TreeMonitor {
    root: i32,
    units: KernelUnits,
    columns: Vec<Column>,
    /// Whether a shown column comes from `stat`.
    columns_need_stat: bool,
    nodes: FxHashMap<i32, Node>,
    tree: ProcessTree,
    /// The depth-first walk's stack, one process's children, and children that vanished
    /// before they were opened, kept between ticks for their storage.
    stack: Vec<(i32, usize)>,
    kids: Vec<i32>,
    vanished: Vec<i32>,
    started: Instant,
    stats: TreeStats,
}

impl TreeMonitor {
    /// Starts tracking `root`, from process events where the kernel gives them (else by
    /// polling); fails with a clear error if `root` does not exist or cannot be read.
    pub fn new(root: i32, columns: Vec<Column>) -> Result<TreeMonitor, ProbeError> {
        Self::with_tree(root, columns, ProcessTree::follow(root))
    }

    /// Starts tracking `root` by reading every process's children list and `stat` at every tick
    /// (what [`TreeMonitor::new`] falls back to without process events).
    pub fn polling(root: i32, columns: Vec<Column>) -> Result<TreeMonitor, ProbeError> {
        Self::with_tree(root, columns, ProcessTree::polling(root))
    }

    fn with_tree(
        root: i32,
        columns: Vec<Column>,
        tree: ProcessTree,
    ) -> Result<TreeMonitor, ProbeError> {
        let units = KernelUnits::read().map_err(|source| ProbeError::Io {
            path: "/proc/stat".into(),
            source,
        })?;
        let mut probe = ProcessProbe::open(root, true)?;
        if probe.stat()?.has_exited() {
            return Err(ProbeError::NoSuchProcess { pid: root });
        }
        let mut nodes = FxHashMap::default();
        nodes.insert(root, Node::new(probe));
        Ok(TreeMonitor {
            root,
            units,
            columns_need_stat: columns.iter().any(|c| c.needs_stat()),
            columns,
            nodes,
            tree,
            stack: Vec::new(),
            kids: Vec::new(),
            vanished: Vec::new(),
            started: Instant::now(),
            stats: TreeStats::default(),
        })
    }

    /// The columns shown.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// What was seen so far.
    pub fn stats(&self) -> &TreeStats {
        &self.stats
    }

    /// Whether the tree is followed through the kernel's process events (rather than polled).
    pub fn uses_events(&self) -> bool {
        self.tree.uses_events()
    }

    /// Drops `pid` from the tree and forgets its descriptors.
    fn unlink(&mut self, pid: i32) {
        self.tree.remove(pid);
        self.nodes.remove(&pid);
    }

    /// Reads the whole tree now; `None` once the root has exited.
    pub fn tick(&mut self) -> Option<TreeSnapshot> {
        let mut snapshot = TreeSnapshot::default();
        self.tick_into(&mut snapshot).then_some(snapshot)
    }

    /// Reads the whole tree now into `snapshot`, reusing its rows, so that a tick of a tree
    /// whose processes stay allocates nothing; `false` once the root has exited.
    pub fn tick_into(&mut self, snapshot: &mut TreeSnapshot) -> bool {
        let nodes = &self.nodes;
        let update = self
            .tree
            .update(|pid| nodes.get(&pid).and_then(|node| node.threads));
        for pid in &update.renamed {
            if let Some(node) = self.nodes.get_mut(pid) {
                node.stale = true;
            }
        }
        let walk = update.walked;
        if walk {
            self.stats.walks += 1;
        }
        let tick = self.stats.ticks + 1;
        let now = Instant::now();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut filled = 0;
        let mut stack = std::mem::take(&mut self.stack);
        let mut vanished = std::mem::take(&mut self.vanished);
        let mut kids = std::mem::take(&mut self.kids);
        stack.clear();
        stack.push((self.root, 0usize));
        while let Some((pid, depth)) = stack.pop() {
            match self.nodes.get_mut(&pid) {
                Some(node) if node.seen_in != tick => node.seen_in = tick,
                _ => continue,
            }
            if snapshot.rows.len() == filled {
                snapshot.rows.push(Row::blank());
            }
            match self.read_node(pid, depth, now, wall, walk, &mut snapshot.rows[filled]) {
                NodeRead::Alive => {}
                // Kept (one open descriptor) until reaped, so it is not reopened every tick.
                NodeRead::Zombie if pid != self.root => continue,
                NodeRead::Zombie | NodeRead::Gone if pid == self.root => {
                    self.stack = stack;
                    self.vanished = vanished;
                    self.kids = kids;
                    return false;
                }
                NodeRead::Zombie | NodeRead::Gone => {
                    self.unlink(pid);
                    continue;
                }
            }
            filled += 1;
            kids.clear();
            kids.extend_from_slice(self.tree.children(pid));
            for &child in kids.iter().rev() {
                if let std::collections::hash_map::Entry::Vacant(slot) = self.nodes.entry(child) {
                    match ProcessProbe::open(child, true) {
                        Ok(probe) => {
                            slot.insert(Node::new(probe));
                        }
                        Err(_) => {
                            vanished.push(child);
                            continue;
                        }
                    }
                }
                stack.push((child, depth + 1));
            }
            for child in vanished.drain(..) {
                self.unlink(child);
            }
        }
        self.stack = stack;
        self.vanished = vanished;
        self.kids = kids;
        snapshot.rows.truncate(filled);
        self.nodes.retain(|_, node| node.seen_in == tick);
        snapshot.monitor_time = now.duration_since(self.started).as_secs_f64();
        self.fill_totals(&snapshot.rows, &mut snapshot.totals);
        self.record_stats(snapshot);
        true
    }

    fn read_node(
        &mut self,
        pid: i32,
        depth: usize,
        now: Instant,
        wall: f64,
        walk: bool,
        row: &mut Row,
    ) -> NodeRead {
        let units = self.units;
        let born_since_last_tick = self.stats.ticks > 0;
        let Some(node) = self.nodes.get_mut(&pid) else {
            return NodeRead::Gone;
        };
        // Polling reads `stat` every tick anyway, and takes the CPU time from it (utime + stime,
        // in clock ticks) rather than pay for the clock too. Otherwise the clock comes first:
        // the descriptor reads after it prove the PID still names this process.
        let polling = !self.tree.uses_events();
        let clock_ns = if polling {
            None
        } else {
            match node.probe.cpu_time_ns() {
                Ok(ns) => Some(ns),
                Err(_) => return NodeRead::Gone,
            }
        };
        // RSS from `statm`, as psutil reads it: `stat`'s rss field can lag it by some pages.
        let rss_pages = match node.probe.statm() {
            Ok(statm) => statm.resident,
            Err(_) => return NodeRead::Gone,
        };
        // No memory at all: exiting or a zombie, which `stat` tells.
        let read_stat = polling || walk || node.stale || self.columns_need_stat || rss_pages == 0;
        let stat = if read_stat {
            match node.probe.stat() {
                Ok(stat) if stat.has_exited() => return NodeRead::Zombie,
                Ok(stat) => Some(stat),
                Err(_) => return NodeRead::Gone,
            }
        } else {
            None
        };
        if let Some(stat) = &stat {
            if *node.name != *stat.name {
                node.name = Arc::from(stat.name.as_str());
            }
            node.start_ticks = stat.starttime;
            node.ppid = stat.ppid;
            node.threads = Some(stat.num_threads);
            node.stale = false;
        }
        let cpu_ns = match (clock_ns, &stat) {
            (Some(ns), _) => ns,
            (None, stat) => stat.as_ref().map_or(0, |stat| {
                ((stat.utime + stat.stime) as f64 * 1e9 / units.ticks_per_second) as u64
            }),
        };
        let cpu_seconds = cpu_ns as f64 / 1e9;
        let process_time =
            wall - (units.boot_time + node.start_ticks as f64 / units.ticks_per_second);
        let cpu_percent = match node.previous_cpu {
            Some((previous_ns, at)) => {
                let dt = now.duration_since(at).as_secs_f64();
                let used = cpu_ns.saturating_sub(previous_ns) as f64 / 1e9;
                if dt > 0.0 { 100.0 * used / dt } else { 0.0 }
            }
            // Born since the previous tick: its whole life is inside this interval.
            None if born_since_last_tick => 100.0 * cpu_seconds / process_time.max(1e-3),
            // Present at the first tick: no interval yet (psutil's first cpu_percent() is 0.0 too).
            None => 0.0,
        };
        node.previous_cpu = Some((cpu_ns, now));
        row.depth = depth;
        row.pid = pid;
        row.name = Arc::clone(&node.name);
        row.process_time = process_time;
        row.ppid = if pid == self.root {
            node.ppid
        } else {
            self.tree.parent(pid).unwrap_or(node.ppid)
        };
        row.cpu_seconds = cpu_seconds;
        let counters = Counters {
            pid,
            rss_bytes: rss_pages * units.page_size,
            cpu_percent,
            stat: stat.as_ref(),
        };
        let mut values = row.values.take().unwrap_or_default();
        if fill_values(&self.columns, &counters, units, &mut values) {
            row.values = Some(values);
        }
        NodeRead::Alive
    }

    fn fill_totals(&self, rows: &[Row], totals: &mut Vec<Option<f64>>) {
        totals.clear();
        totals.extend(self.columns.iter().enumerate().map(|(index, column)| {
            column.summable().then(|| {
                rows.iter()
                    .filter_map(|row| row.values.as_ref()?.get(index))
                    .map(Value::as_f64)
                    .filter(|v| *v >= 0.0)
                    .sum()
            })
        }));
    }

    fn record_stats(&mut self, snapshot: &TreeSnapshot) {
        let stats = &mut self.stats;
        stats.ticks += 1;
        stats.max_alive = stats.max_alive.max(snapshot.rows.len());
        stats.peak_total_rss = stats.peak_total_rss.max(snapshot.total_rss());
        for row in &snapshot.rows {
            let rss = row
                .values
                .as_ref()
                .and_then(|v| v.first())
                .map(|v| v.as_f64() as u64)
                .unwrap_or(0);
            let seen = stats.seen.entry(row.pid).or_insert_with(|| SeenProcess {
                name: row.name.to_string(),
                first_seen: snapshot.monitor_time,
                ..SeenProcess::default()
            });
            seen.last_seen = snapshot.monitor_time;
            seen.cpu_seconds = row.cpu_seconds;
            seen.peak_rss = seen.peak_rss.max(rss);
        }
        stats.departed = stats.seen.len() - snapshot.rows.len();
    }

    /// The columns, and the values last shown for `pid` (while it is tracked).
    fn row_state(&mut self, pid: i32) -> (&[Column], Option<&mut Vec<Option<Value>>>) {
        let previous = self.nodes.get_mut(&pid).map(|node| &mut node.previous);
        (&self.columns, previous)
    }
}

/// One process's counters at one tick, from wherever they were read.
struct Counters<'a> {
    pid: i32,
    rss_bytes: u64,
    cpu_percent: f64,
    /// Read this tick whenever a shown column needs it.
    stat: Option<&'a StatFields>,
}

/// Fills `values` with the columns' values; `false` where access was denied.
fn fill_values(
    columns: &[Column],
    counters: &Counters,
    units: KernelUnits,
    values: &mut Vec<Value>,
) -> bool {
    values.clear();
    let pid = counters.pid;
    let count = |r: Result<usize, ProbeError>| match r {
        Ok(n) => Ok(Value::Int(n as i64)),
        Err(err) => Err(err),
    };
    let from_stat = |value: fn(&StatFields, KernelUnits) -> Value| {
        counters
            .stat
            .map(|stat| value(stat, units))
            .ok_or_else(|| ProbeError::Io {
                path: format!("/proc/{pid}/stat").into(),
                source: std::io::Error::other("not read this tick"),
            })
    };
    for column in columns {
        let value = match column {
            Column::Rss => Ok(Value::Int(counters.rss_bytes as i64)),
            Column::Uss => Ok(Value::Int(
                probe::full_memory(pid).map(|m| m.uss as i64).unwrap_or(-1),
            )),
            Column::PFaults => from_stat(|s, _| Value::Int((s.minflt + s.majflt) as i64)),
            Column::Cpu => Ok(Value::Float(counters.cpu_percent)),
            Column::User => from_stat(|s, u| Value::Float(s.utime as f64 / u.ticks_per_second)),
            Column::Sys => from_stat(|s, u| Value::Float(s.stime as f64 / u.ticks_per_second)),
            Column::Ctx => probe::context_switches(pid)
                .map(|c| Value::Int((c.voluntary + c.involuntary) as i64)),
            Column::Thrds => from_stat(|s, _| Value::Int(s.num_threads as i64)),
            Column::Status => from_stat(|s, _| Value::Text(s.status().to_string())),
            Column::Files => count(probe::open_file_count(pid)),
            Column::Net => count(probe::inet_connection_count(pid)),
            Column::CmdLine => probe::cmdline(pid).map(|args| Value::Text(args.join(" "))),
        };
        match value {
            Ok(value) => values.push(value),
            Err(ProbeError::PermissionDenied { .. }) if column.needs_extra_reads() => return false,
            Err(_) => values.push(Value::Int(-1)),
        }
    }
    true
}

/// Writes `process_tree.py`'s table (or `--sep` separated) text for the ticks of a [`TreeMonitor`].
#[derive(Debug)]
pub struct TableWriter {
    /// Separator; empty for an aligned table.
    pub sep: String,
    /// Colour increases red and decreases green.
    pub colour: bool,
    scratch: Scratch,
}

const INDENT: &str = "  ";

impl TableWriter {
    /// A writer separating cells with `sep` (empty: an aligned table), in colour or not.
    pub fn new(sep: &str, colour: bool) -> TableWriter {
        TableWriter {
            sep: sep.to_string(),
            colour,
            scratch: Scratch::default(),
        }
    }

    /// The header line (without a newline).
    pub fn header(&self, columns: &[Column]) -> String {
        let sep = &self.sep;
        let mut out = String::new();
        if sep.is_empty() {
            let _ = write!(out, "{:8}  {:>5} {:24}", "Time(s)", "PID", "Name");
        } else {
            let _ = write!(out, "Time(s){sep}PID{sep}Name");
        }
        for column in columns {
            let units = column.units();
            let named = |prefix: &str| {
                if units.is_empty() {
                    format!("{prefix}{}", column.name())
                } else {
                    format!("{prefix}{}({units})", column.name())
                }
            };
            let mut cell = |text: String, width: usize| {
                if sep.is_empty() {
                    let _ = write!(out, " {text:>width$}");
                } else {
                    let _ = write!(out, "{sep}{text}");
                }
            };
            cell(named(""), column.layout().width);
            if let Some(diff) = column.diff_layout() {
                cell(named("d"), diff.width);
            }
        }
        out
    }

    /// Appends the lines of one tick to `out`, each ending in a newline: one per process, then
    /// the total line. Updates the previous values the diff columns compare against.
    pub fn write_tick(
        &mut self,
        monitor: &mut TreeMonitor,
        snapshot: &TreeSnapshot,
        out: &mut String,
    ) {
        let mut scratch = std::mem::take(&mut self.scratch);
        for row in &snapshot.rows {
            self.row_prefix(out, &mut scratch, row);
            let (columns, previous) = monitor.row_state(row.pid);
            match &row.values {
                None => {
                    let denied = "ACCESS DENIED";
                    out.push(' ');
                    if self.colour {
                        let _ = write!(out, "\x1b[43m\x1b[30m{denied}\x1b[0m");
                    } else {
                        out.push_str(denied);
                    }
                }
                Some(values) => {
                    let mut previous = previous;
                    if let Some(previous) = previous.as_deref_mut() {
                        previous.resize(columns.len(), None);
                    }
                    for (index, (column, value)) in columns.iter().zip(values).enumerate() {
                        scratch.cell.clear();
                        let mut cell = std::mem::take(&mut scratch.cell);
                        push_value(
                            &mut cell,
                            &mut scratch,
                            value,
                            column.scale(),
                            column.layout(),
                        );
                        self.push_cell(out, &cell, Colour::Plain);
                        let slot = previous.as_deref_mut().and_then(|p| p.get_mut(index));
                        if let Some(diff) = column.diff_layout() {
                            cell.clear();
                            let before = slot.as_deref().and_then(Option::as_ref);
                            let colour =
                                push_diff(&mut cell, &mut scratch, value, before, *column, diff);
                            self.push_cell(out, &cell, colour);
                        }
                        scratch.cell = cell;
                        if let Some(slot) = slot {
                            match slot {
                                Some(kept) => kept.clone_from(value),
                                None => *slot = Some(value.clone()),
                            }
                        }
                    }
                }
            }
            out.push('\n');
        }
        self.total_line(out, &mut scratch, monitor.columns(), snapshot);
        out.push('\n');
        self.scratch = scratch;
    }

    /// Appends a separator (a space in the table) and `text`: trimmed when separated, and
    /// wrapped in `colour` when colour is on (then untrimmed, as `process_tree.py` does).
    fn push_cell(&self, out: &mut String, text: &str, colour: Colour) {
        if self.sep.is_empty() {
            out.push(' ');
        } else {
            out.push_str(&self.sep);
        }
        match colour.code() {
            Some(code) if self.colour => {
                out.push_str(code);
                out.push_str(text);
                out.push_str("\x1b[0m");
            }
            _ if self.sep.is_empty() => out.push_str(text),
            _ => out.push_str(text.trim()),
        }
    }

    fn row_prefix(&self, out: &mut String, scratch: &mut Scratch, row: &Row) {
        let sep = &self.sep;
        let (depth, pid) = (row.depth, row.pid);
        if sep.is_empty() {
            if depth == 0 {
                let _ = write!(out, "{:8.1}", row.process_time);
            } else {
                out.push_str("        ");
            }
            out.push(' ');
            for _ in 0..depth {
                out.push_str(INDENT);
            }
            scratch.cell.clear();
            let _ = write!(scratch.cell, "\"{}\"", row.name);
            let _ = write!(out, " {pid:>5} {:24}", scratch.cell);
        } else {
            if depth == 0 {
                let _ = write!(out, "{:.1}", row.process_time);
            }
            let _ = write!(out, "{sep}{pid}{sep}\"{}\"", row.name);
        }
    }

    fn total_line(
        &self,
        out: &mut String,
        scratch: &mut Scratch,
        columns: &[Column],
        snapshot: &TreeSnapshot,
    ) {
        scratch.cell.clear();
        let _ = write!(scratch.cell, "\"{} processes\"", snapshot.rows.len());
        if self.sep.is_empty() {
            let _ = write!(out, "{:8}  {:>5} {:24}", "", "total", scratch.cell);
        } else {
            let _ = write!(out, "{sep}total{sep}{}", scratch.cell, sep = self.sep);
        }
        let mut cell = std::mem::take(&mut scratch.cell);
        for (column, total) in columns.iter().zip(&snapshot.totals) {
            cell.clear();
            let width = column.layout().width;
            match total {
                Some(total) => {
                    let Scratch { raw, number, .. } = scratch;
                    push_number(
                        &mut cell,
                        raw,
                        number,
                        total * column.scale(),
                        column.layout(),
                    );
                }
                None => {
                    let _ = write!(cell, "{:width$}", "");
                }
            }
            self.push_cell(out, &cell, Colour::Plain);
            if let Some(diff) = column.diff_layout() {
                cell.clear();
                let _ = write!(cell, "{:width$}", "", width = diff.width);
                self.push_cell(out, &cell, Colour::Plain);
            }
        }
        scratch.cell = cell;
    }
}

/// Appends the change from `previous` to `value` laid out for a diff column; returns its colour.
fn push_diff(
    out: &mut String,
    scratch: &mut Scratch,
    value: &Value,
    previous: Option<&Value>,
    column: Column,
    layout: Layout,
) -> Colour {
    match value {
        Value::Text(text) => {
            let changed = previous.is_none_or(|p| p != value);
            let shown = if changed { text.as_str() } else { "" };
            let _ = write!(out, "{shown:>width$}", width = layout.width);
            if changed { Colour::Red } else { Colour::Green }
        }
        _ => {
            let delta = value.as_f64() - previous.map(Value::as_f64).unwrap_or(0.0);
            let colour = if delta > 0.0 {
                Colour::Red
            } else if delta < 0.0 {
                Colour::Green
            } else {
                Colour::Plain
            };
            let delta_value = match value {
                Value::Int(_) => Value::Int(delta as i64),
                _ => Value::Float(delta),
            };
            push_value(out, scratch, &delta_value, column.scale(), layout);
            colour
        }
    }
}

/// JSON that keeps its keys in insertion order (as Python's `json.dumps` does with a dict).
#[derive(Debug, Clone, PartialEq)]
pub enum OrderedJson {
    /// A number, string or null.
    Leaf(serde_json::Value),
    /// A list.
    List(Vec<OrderedJson>),
    /// An object, keys in order.
    Object(Vec<(String, OrderedJson)>),
}

impl OrderedJson {
    /// The value under `key` of an object.
    pub fn get(&self, key: &str) -> Option<&OrderedJson> {
        match self {
            OrderedJson::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl serde::Serialize for OrderedJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            OrderedJson::Leaf(value) => value.serialize(serializer),
            OrderedJson::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            OrderedJson::Object(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

fn leaf(value: impl Into<serde_json::Value>) -> OrderedJson {
    OrderedJson::Leaf(value.into())
}

/// One tick as the JSON record `process_tree.py --json` writes: the root with its columns
/// (bytes unscaled) and `children` nested, plus (on the root only) a `total` object.
pub fn snapshot_json(columns: &[Column], snapshot: &TreeSnapshot) -> OrderedJson {
    fn node(columns: &[Column], rows: &[Row], index: usize) -> Vec<(String, OrderedJson)> {
        let row = &rows[index];
        let mut entries = vec![
            ("process_time".to_string(), leaf(row.process_time)),
            ("pid".to_string(), leaf(row.pid)),
            ("name".to_string(), leaf(&*row.name)),
        ];
        if let Some(values) = &row.values {
            for (column, value) in columns.iter().zip(values) {
                entries.push((
                    column.name().to_string(),
                    OrderedJson::Leaf(value.to_json()),
                ));
            }
        }
        let children = rows
            .iter()
            .enumerate()
            .skip(index + 1)
            .take_while(|(_, r)| r.depth > row.depth)
            .filter(|(_, r)| r.depth == row.depth + 1)
            .map(|(child, _)| OrderedJson::Object(node(columns, rows, child)))
            .collect();
        entries.push(("children".to_string(), OrderedJson::List(children)));
        entries
    }
    if snapshot.rows.is_empty() {
        return OrderedJson::Leaf(serde_json::Value::Null);
    }
    let mut root = node(columns, &snapshot.rows, 0);
    let mut total = vec![("processes".to_string(), leaf(snapshot.rows.len()))];
    for (column, value) in columns.iter().zip(&snapshot.totals) {
        if let Some(value) = value {
            let json = if matches!(column, Column::Cpu | Column::User | Column::Sys) {
                leaf(*value)
            } else {
                leaf(*value as i64)
            };
            total.push((column.name().to_string(), json));
        }
    }
    root.push(("total".to_string(), OrderedJson::Object(total)));
    OrderedJson::Object(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format_number(value: f64, layout: Layout) -> String {
        let mut out = String::new();
        push_number(
            &mut out,
            &mut String::new(),
            &mut String::new(),
            value,
            layout,
        );
        out
    }

    #[test]
    fn numbers_format_like_python() {
        assert_eq!(
            format_number(1234567.0, layout(12, false, true, None)),
            "   1,234,567"
        );
        assert_eq!(
            format_number(12.345, layout(8, true, true, Some(1))),
            "   +12.3"
        );
        assert_eq!(
            format_number(-1536.0, layout(8, true, true, Some(1))),
            "-1,536.0"
        );
        assert_eq!(
            format_number(0.0, layout(8, true, false, Some(1))),
            "    +0.0"
        );
        assert_eq!(
            format_number(-0.01, layout(8, true, false, Some(1))),
            "    +0.0"
        );
    }

    #[test]
    fn columns_follow_flags() {
        let names = |flags: ColumnFlags| -> Vec<&str> {
            flags.columns().iter().map(|c| c.name()).collect()
        };
        assert_eq!(names(ColumnFlags::default()), ["RSS", "CPU"]);
        let all = ColumnFlags {
            all: true,
            ..ColumnFlags::default()
        };
        assert_eq!(
            names(all),
            [
                "RSS", "PFaults", "CPU", "User", "Sys", "Thrds", "Status", "Files", "Net"
            ]
        );
    }

    #[test]
    fn header_matches_process_tree_layout() {
        let writer = TableWriter::new("", false);
        assert_eq!(
            writer.header(&[Column::Rss, Column::Cpu]),
            "Time(s)     PID Name                      RSS(MB) dRSS(MB)   CPU(%)  dCPU(%)"
        );
        let writer = TableWriter::new("|", false);
        assert_eq!(
            writer.header(&[Column::Rss, Column::User]),
            "Time(s)|PID|Name|RSS(MB)|dRSS(MB)|User(s)"
        );
    }

    /// Two ticks through the writer, against lines Python's `format()` makes for the same values
    /// (`process_tree.py`'s specs): table and `--sep`, diffs against the previous tick.
    #[test]
    fn tick_lines_match_python_format() {
        const MB: i64 = 1024 * 1024;
        let me = std::process::id() as i32;
        let columns = vec![Column::Rss, Column::Cpu, Column::Status];
        let mut monitor = TreeMonitor::polling(me, columns.clone()).expect("monitor of self");
        monitor.tick().expect("self is alive");
        let row = |depth, pid, name: &str, time, rss, cpu, status: &str| Row {
            depth,
            pid,
            name: name.into(),
            process_time: time,
            values: Some(vec![
                Value::Int(rss),
                Value::Float(cpu),
                Value::Text(status.into()),
            ]),
            ppid: 0,
            cpu_seconds: 0.0,
        };
        let snapshot = |rows: Vec<Row>| {
            let totals = monitor_totals(&columns, &rows);
            TreeSnapshot {
                monitor_time: 0.0,
                rows,
                totals,
            }
        };
        let mut table = TableWriter::new("", false);
        let first = snapshot(vec![
            row(0, me, "python3", 12.34, 10 * MB, 12.5, "sleeping"),
            row(1, 4322, "a b", 0.0, 1536 * MB, 0.0, "running"),
        ]);
        let mut text = String::new();
        table.write_tick(&mut monitor, &first, &mut text);
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                format!(
                    "    12.3  {me:>5} \"python3\"                    10.0    +10.0     12.5    +12.5   sleeping   sleeping"
                ),
                "             4322 \"a b\"                     1,536.0 +1,536.0      0.0     +0.0    running    running".to_string(),
                "          total \"2 processes\"             1,546.0              12.5                               ".to_string(),
            ]
        );
        let second = snapshot(vec![row(0, me, "python3", 12.44, 9 * MB, 2.0, "sleeping")]);
        let mut text = String::new();
        table.write_tick(&mut monitor, &second, &mut text);
        assert_eq!(
            text.lines().next(),
            Some(
                format!(
                    "    12.4  {me:>5} \"python3\"                     9.0     -1.0      2.0    -10.5   sleeping           "
                )
                .as_str()
            )
        );
        let mut separated = TableWriter::new("|", false);
        let mut text = String::new();
        separated.write_tick(&mut monitor, &second, &mut text);
        assert_eq!(
            text.lines().next(),
            Some(format!("12.4|{me}|\"python3\"|9.0|+0.0|2.0|+0.0|sleeping|").as_str())
        );
    }

    fn monitor_totals(columns: &[Column], rows: &[Row]) -> Vec<Option<f64>> {
        columns
            .iter()
            .enumerate()
            .map(|(index, column)| {
                column.summable().then(|| {
                    rows.iter()
                        .filter_map(|row| row.values.as_ref()?.get(index))
                        .map(Value::as_f64)
                        .sum()
                })
            })
            .collect()
    }

    #[test]
    fn json_nests_children_by_depth() {
        let row = |depth, pid| Row {
            depth,
            pid,
            name: format!("p{pid}").into(),
            process_time: 1.0,
            values: Some(vec![Value::Int(1024), Value::Float(0.0)]),
            ppid: 0,
            cpu_seconds: 0.0,
        };
        let snapshot = TreeSnapshot {
            monitor_time: 0.0,
            rows: vec![row(0, 1), row(1, 2), row(2, 3), row(1, 4)],
            totals: vec![Some(4096.0), Some(0.0)],
        };
        let text = crate::monitor::record::to_python_json(
            &snapshot_json(&[Column::Rss, Column::Cpu], &snapshot),
            true,
        )
        .expect("serializes");
        assert!(text.starts_with(
            "{\n  \"process_time\": 1.0,\n  \"pid\": 1,\n  \"name\": \"p1\",\n  \"RSS\": 1024,"
        ));
        let json: serde_json::Value = serde_json::from_str(&text).expect("parses");
        assert_eq!(json["children"][0]["pid"], 2);
        assert_eq!(json["children"][0]["children"][0]["pid"], 3);
        assert_eq!(json["children"][1]["pid"], 4);
        assert_eq!(
            json["children"][1]["children"].as_array().map(Vec::len),
            Some(0)
        );
        assert_eq!(json["total"]["RSS"], 4096);
        assert_eq!(json["total"]["processes"], 4);
    }
}
