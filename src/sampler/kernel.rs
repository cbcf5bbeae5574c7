//! In-kernel attribution: memory is charged to the Python stack the kernel captured at the
//! moment it was acquired (`memory::kernel_stacks`, SPEC §2.4), not to the stack found at the
//! end of the interval.
//!
//! Owns: turning one process's events into charges through its page ledger
//! ([`super::page_ledger`]: each faulted page belongs to the (thread, stack) that faulted it;
//! `munmap`, dropping `madvise`, a shrinking `brk` and `mremap` give the pages of their range
//! back, or move them), the owners (thread and decoded stack) it charges, the decoding of
//! captured stacks (through the stack source's code-object cache), and what backs a page:
//! - `rss`: a page newly owned is `page size` bytes of growth charged to its owner;
//! - `rss-release`: a page given back is charged as a release to the stack that owned it, so
//!   the profile gives back that stack's growth (pages this run never saw faulted in, such as
//!   memory from before attaching, release nothing);
//! - `malloc-bytes` / `malloc-count`: each allocation sample carries the bytes and calls its
//!   thread made since its previous sample, charged to the sample's stack.
//!
//! A page of an anonymous private mapping made since attaching (malloc's large blocks; not
//! pymalloc's arenas, whose pools go to the code that first uses them) is charged to the stack
//! that made the mapping, whoever touches it first: an array allocated on one line and filled
//! by worker threads is the allocating line's.
//!
//! Faults on file-backed pages (mapped files, the page cache's) and shared memory are charged
//! apart from anonymous memory, under a `<file-backed pages>` (the file in its tooltip) or
//! `<shared memory>` leaf frame of the stack that touched them.
//!
//! A fault or sample whose stack could not be captured goes to the thread's stack read at this
//! tick, else to the thread without Python frames; but that of a thread neither this tick's
//! read nor a captured stack names yet (a new thread before its thread state is bound) is held
//! until its first captured stack, and charged there ([`super::unknown_threads`]).
//! Must not touch: tick timing, reading stacks or counters, how charges add up (`profile`).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use super::page_ledger::{Charges, Fault, PageLedger};
use super::time_ledger::TimeLedger;
use super::unknown_threads::{Held, UnknownThreads};

use crate::attach::process::{Backing, Region, memory_regions};
use crate::memory::kernel_stacks::{
    EventKind, KernelStacks, MemoryEvent, OffCpu, RawStack, STACK_TABLE_SIZE, Tallies,
};
use crate::python::{CapturedFrame, CodeInfo, Frame};
use crate::sample::{Metric, PageKind, ThreadIdentity, ThreadSample};

/// One [`KernelStacks`] shared by the samplers of a run (one per process with
/// `--subprocesses`): the ring holds every process's events, sorted out here by process.
///
/// The in-kernel stack table is recycled before it fills: once the distinct stack ids seen
/// in events reach [`RECYCLE_AT`] of its size, every process's events are drained, the raw
/// stacks that events not yet charged name are kept here, and the stacks seen are removed
/// from the table for the walker to fill it again (a stack id is a hash of the frames, so an
/// id decoded before stays valid; stacks of events not drained yet stay in the table).
#[derive(Debug)]
pub struct KernelCapture {
    stacks: KernelStacks,
    pending: HashMap<u32, Vec<MemoryEvent>>,
    scratch: Vec<MemoryEvent>,
    /// Distinct stack ids in events drained since the table was last emptied.
    ids_seen: HashSet<u64>,
    /// Raw stacks kept across the last emptying, for events drained before it.
    kept: HashMap<u64, RawStack>,
    /// Processes that exited, oldest first, with when that was drained.
    exited: Vec<(u32, std::time::Instant)>,
    /// Children captured from their first page -> the process that forked them, until their
    /// events are dropped.
    forks: HashMap<u32, u32>,
    /// Processes a [`KernelAttribution`] takes the events of.
    claimed: HashSet<u32>,
    tallies: CaptureTallies,
    /// When the walker's tallies were last read into `tallies.kernel` (reading them costs one
    /// syscall per tally): read again after [`TALLIES_REFRESH`], and always at the end of a
    /// process's or a run's sampling.
    kernel_tallies_read: Option<std::time::Instant>,
    /// When the process and thread tables were last counted.
    occupancy_read: Option<std::time::Instant>,
    /// The intervals off CPUs still open as last read: when, by this process's clock and by
    /// `CLOCK_MONOTONIC` (read before the table), and the table.
    off_cpu: Option<(std::time::Instant, u64, OpenOffCpu)>,
}

/// Open intervals off CPUs, by kernel tid as the scheduler names it.
type OpenOffCpu = Vec<(u32, OffCpu)>;

/// How long one read of the open intervals off CPUs serves: the processes of a tree, ticked
/// one after the other, charge theirs from one read (a read costs two `bpf` calls an entry).
const OFF_CPU_REFRESH: std::time::Duration = std::time::Duration::from_millis(20);

/// How long the walker's tallies may go unread: not at every tick, which at 100 ticks a
/// second of several processes would cost a syscall per tally each time.
const TALLIES_REFRESH: std::time::Duration = std::time::Duration::from_millis(100);

/// How long the events of a process that exited wait for a sampler to take them.
const EXITED_KEPT: std::time::Duration = std::time::Duration::from_secs(2);

/// How often the walker's process and thread tables are counted for their peaks (a count is a
/// walk over the table's keys, one `bpf` call each).
const OCCUPANCY_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The share of the stack table's size at which it is recycled.
const RECYCLE_AT: f64 = 0.75;

/// What the capture as a whole counted (the walker's tallies and user space's own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureTallies {
    /// Events drained from the ring.
    pub events: u64,
    /// The walker's tallies (lost events, stacks full, unreadable frames, no thread state).
    pub kernel: Tallies,
    /// Times the stack table was emptied for reuse.
    pub stack_table_recycles: u64,
    /// Children of captured processes captured from their first page.
    pub children_followed: u64,
    /// Event stack ids found in neither the table nor the stacks kept at a recycling
    /// (charged to the thread's stack at the tick).
    pub stacks_missing: u64,
    /// The most stacks the table held at once (distinct ids since it was last emptied).
    pub stack_table_peak: u64,
    /// Processes in the walker's table when its tallies were last read at a process's or
    /// the run's end ([`KernelCapture::refresh_tallies`] with `now`): what an exited process
    /// leaves behind shows here.
    pub processes_in_table: u64,
    /// Threads in the walker's thread-state table, read with `processes_in_table`.
    pub threads_in_table: u64,
    /// The most processes the walker's table held at one of its counts (once a second and at
    /// each process's end).
    pub processes_table_peak: u64,
    /// The most threads the walker's thread-state table held at one of its counts.
    pub threads_table_peak: u64,
}

/// The capture as the samplers of one run share it.
pub type SharedCapture = Rc<RefCell<KernelCapture>>;

impl KernelCapture {
    /// Wraps a loaded capture for sharing.
    pub fn shared(stacks: KernelStacks) -> SharedCapture {
        Rc::new(RefCell::new(KernelCapture {
            stacks,
            pending: HashMap::new(),
            scratch: Vec::new(),
            ids_seen: HashSet::new(),
            kept: HashMap::new(),
            exited: Vec::new(),
            forks: HashMap::new(),
            claimed: HashSet::new(),
            tallies: CaptureTallies::default(),
            kernel_tallies_read: None,
            occupancy_read: None,
            off_cpu: None,
        }))
    }

    /// The loaded programs (to add or remove processes, read tallies).
    pub fn stacks(&mut self) -> &mut KernelStacks {
        &mut self.stacks
    }

    /// The ring of events: readable while an event waits to be drained.
    pub(crate) fn events_fd(&self) -> std::os::fd::RawFd {
        self.stacks.events_fd()
    }

    /// The capture's tallies so far: the walker's as last read (see [`Self::refresh_tallies`]).
    pub fn tallies(&self) -> CaptureTallies {
        self.tallies
    }

    /// Reads the walker's tallies again if `now` is asked or [`TALLIES_REFRESH`] has passed.
    fn refresh_tallies(&mut self, now: bool) {
        let due = now
            || self
                .kernel_tallies_read
                .is_none_or(|at| at.elapsed() >= TALLIES_REFRESH);
        if now
            || self
                .occupancy_read
                .is_none_or(|at| at.elapsed() >= OCCUPANCY_EVERY)
        {
            let t = &mut self.tallies;
            t.processes_in_table = self.stacks.process_count() as u64;
            t.threads_in_table = self.stacks.thread_count() as u64;
            t.processes_table_peak = t.processes_table_peak.max(t.processes_in_table);
            t.threads_table_peak = t.threads_table_peak.max(t.threads_in_table);
            self.occupancy_read = Some(std::time::Instant::now());
        }
        if due {
            self.tallies.kernel = self.stacks.tallies();
            self.kernel_tallies_read = Some(std::time::Instant::now());
        }
    }

    /// Every event of process `tgid` since the last call, oldest first.
    fn take_events(&mut self, tgid: u32) -> Vec<MemoryEvent> {
        self.drain_all();
        let threshold = (STACK_TABLE_SIZE as f64 * RECYCLE_AT) as usize;
        if self.ids_seen.len() >= threshold {
            self.recycle_stacks();
        }
        self.pending.remove(&tgid).unwrap_or_default()
    }

    fn drain_all(&mut self) {
        self.scratch.clear();
        self.stacks.drain(&mut self.scratch);
        self.tallies.events += self.scratch.len() as u64;
        for event in self.scratch.drain(..) {
            if event.stack != 0 && self.ids_seen.insert(event.stack) {
                self.tallies.stack_table_peak = self
                    .tallies
                    .stack_table_peak
                    .max(self.ids_seen.len() as u64);
            }
            match event.kind {
                // What the process did before exec belongs to the image it replaced.
                EventKind::Exec => {
                    self.pending.remove(&event.tgid);
                }
                EventKind::Fork => {
                    self.tallies.children_followed += 1;
                    if let Ok(child) = u32::try_from(event.addr) {
                        self.forks.insert(child, event.tgid);
                    }
                }
                EventKind::Exit => {
                    self.exited.push((event.tgid, std::time::Instant::now()));
                }
                _ => self.pending.entry(event.tgid).or_default().push(event),
            }
        }
        // Events of a process that exited and that no sampler took within EXITED_KEPT
        // (a child that was never attached to) are dropped.
        while let Some(&(tgid, at)) = self.exited.first()
            && at.elapsed() >= EXITED_KEPT
        {
            self.exited.remove(0);
            self.pending.remove(&tgid);
            self.forks.remove(&tgid);
        }
    }

    /// The intervals off CPUs of process `tgid`'s threads still open (by kernel tid, as the
    /// scheduler names them), and when they were read (`CLOCK_MONOTONIC` nanoseconds).
    fn open_off_cpu(&mut self, tgid: u32) -> (u64, OpenOffCpu) {
        let fresh = self
            .off_cpu
            .as_ref()
            .is_some_and(|(at, _, _)| at.elapsed() < OFF_CPU_REFRESH);
        if !fresh {
            // Now is read before the table: an interval that ends after it charges the rest.
            let now = crate::attach::stop::monotonic_ns();
            self.off_cpu = Some((std::time::Instant::now(), now, self.stacks.off_cpu()));
        }
        let (_, now, open) = self.off_cpu.as_ref().expect("read above");
        let mine = open
            .iter()
            .filter(|(_, interval)| interval.tgid == tgid)
            .copied()
            .collect();
        (*now, mine)
    }

    /// The process that forked `child`, if the capture followed the fork and still holds the
    /// child's events.
    pub(crate) fn forked_from(&self, child: u32) -> Option<u32> {
        self.forks.get(&child).copied()
    }

    /// Children captured from their first page that exited with no [`KernelAttribution`]
    /// taking their events (never attached to), with the process that forked each.
    pub(crate) fn exited_unclaimed(&self) -> Vec<(u32, u32)> {
        self.exited
            .iter()
            .filter(|(tgid, _)| !self.claimed.contains(tgid))
            .filter_map(|&(tgid, _)| Some((tgid, self.forked_from(tgid)?)))
            .collect()
    }

    /// Empties the in-kernel stack table, keeping the raw stacks that pending events name.
    fn recycle_stacks(&mut self) {
        self.drain_all();
        let mut kept = HashMap::new();
        for event in self.pending.values().flatten() {
            if event.stack != 0
                && !kept.contains_key(&event.stack)
                && let Some(raw) = self.stack(event.stack)
            {
                kept.insert(event.stack, raw);
            }
        }
        self.kept = kept;
        self.stacks.remove_stacks(self.ids_seen.drain());
        self.tallies.stack_table_recycles += 1;
    }

    /// The raw stack `id`, from the stacks kept at the last recycling or the table.
    fn stack(&self, id: u64) -> Option<RawStack> {
        self.kept
            .get(&id)
            .copied()
            .or_else(|| self.stacks.stack(id))
    }

    /// Process `tgid` is no longer sampled: it leaves every in-kernel table (with its threads
    /// `tids`) and its undrained events are dropped.
    fn remove_process(&mut self, tgid: u32, tids: impl IntoIterator<Item = u32>) {
        self.stacks.remove_process(tgid, tids);
        self.drain_all();
        self.pending.remove(&tgid);
        self.forks.remove(&tgid);
        self.claimed.remove(&tgid);
    }
}

/// What in-kernel attribution did during a run, for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InKernelStats {
    /// Page faults captured.
    pub faults: u64,
    /// Faults whose stack was captured in the kernel.
    pub faults_with_stack: u64,
    /// Faults on a page the ledger already gave an owner (counted once).
    pub faults_on_owned_pages: u64,
    /// Faults on file-backed or shared pages (charged under a `<file-backed pages>` or
    /// `<shared memory>` leaf frame).
    pub file_or_shared_faults: u64,
    /// Faults that mapped a transparent huge page (each charged the whole huge page).
    pub huge_faults: u64,
    /// Faults in an anonymous mapping made since attaching (charged to the stack that made it).
    pub faults_in_mappings: u64,
    /// Read faults on anonymous memory never written (the zero page: charged nothing).
    pub zero_page_reads: u64,
    /// Bytes given back from owned pages.
    pub released_bytes: u64,
    /// Bytes the ledger holds now.
    pub held_bytes: u64,
    /// Allocation samples captured.
    pub alloc_samples: u64,
    /// Allocation samples whose stack was captured in the kernel.
    pub alloc_samples_with_stack: u64,
    /// Threads whose events without a stack were held until their stack was known.
    pub threads_held: u64,
    /// Of them, charged to their first captured stack.
    pub held_placed: u64,
    /// Of them, charged to their stack at the tick (or none) after the hold's limit.
    pub held_let_go: u64,
    /// Time is sampled (not memory): the run's `cpu` and `wall` come from the kernel.
    pub samples_time: bool,
    /// On-CPU samples of Python threads (time sampling).
    pub cpu_samples: u64,
    /// Intervals off CPUs of Python threads that ended.
    pub off_cpu_intervals: u64,
    /// Time events of threads that are not Python's, left out.
    pub time_not_python: u64,
    /// What the capture counted, over the whole capture (shared by every process of a run).
    pub capture: CaptureTallies,
}

/// The share of events lost, or of walks without a stored stack, past which a run says so.
const LOSS_WARNING_SHARE: f64 = 0.01;

/// The leaf frame under which a stack's file-backed or shared pages are shown.
fn backing_frame(kind: PageKind, backing: &Backing) -> Frame {
    let filename = match backing {
        Backing::File(path) => path.to_string_lossy().to_string(),
        Backing::Shared | Backing::Anonymous => String::new(),
    };
    Frame {
        code: std::sync::Arc::new(CodeInfo {
            function: kind.frame_name().to_string(),
            filename,
            first_line: 0,
        }),
        line: 0,
    }
}

impl InKernelStats {
    /// One sentence for the summary.
    pub fn note(&self) -> String {
        let share = |part: u64, whole: u64| {
            if whole == 0 {
                100.0
            } else {
                100.0 * part as f64 / whole as f64
            }
        };
        if self.samples_time {
            return self.time_note();
        }
        let mut note = format!(
            "memory charged to Python stacks captured in the kernel: {} page faults ({:.1}% with a Python stack, the rest to their thread's stack at the tick)",
            self.faults,
            share(self.faults_with_stack, self.faults)
        );
        if self.file_or_shared_faults > 0 {
            note.push_str(&format!(
                "; {} of them file-backed or shared (under <file-backed pages> or <shared memory>)",
                self.file_or_shared_faults
            ));
        }
        if self.faults_in_mappings > 0 {
            note.push_str(&format!(
                "; {} in anonymous mappings, charged to the stack that mapped them",
                self.faults_in_mappings
            ));
        }
        if self.huge_faults > 0 {
            note.push_str(&format!(
                "; {} mapped a transparent huge page",
                self.huge_faults
            ));
        }
        if self.alloc_samples > 0 {
            note.push_str(&format!(
                ", {} allocation samples ({:.1}% with a Python stack)",
                self.alloc_samples,
                share(self.alloc_samples_with_stack, self.alloc_samples)
            ));
        }
        if self.threads_held > 0 {
            note.push_str(&format!(
                "; {} threads' first events waited for their stack ({} charged to their first captured stack, {} to their stack at the tick)",
                self.threads_held, self.held_placed, self.held_let_go
            ));
        }
        let c = &self.capture;
        note.push_str(&format!(
            "; capture: {}, stack table recycled {} times (at most {} of {} stacks held), {} child processes captured from their first page; the walker's tables at the end: {} processes, {} threads (at most {} and {} at its once-a-second counts)",
            self.walker_sentence(),
            c.stack_table_recycles,
            c.stack_table_peak,
            STACK_TABLE_SIZE,
            c.children_followed,
            c.processes_in_table,
            c.threads_in_table,
            c.processes_table_peak,
            c.threads_table_peak,
        ));
        note
    }

    /// The sentence of a run whose time was sampled in the kernel.
    fn time_note(&self) -> String {
        format!(
            "time sampled in the kernel: {} on-CPU samples and {} ended intervals off CPUs of Python threads ({} events of other threads left out); capture: {}",
            self.cpu_samples,
            self.off_cpu_intervals,
            self.time_not_python,
            self.walker_sentence(),
        )
    }

    /// What the walker counted: events, losses and walks.
    fn walker_sentence(&self) -> String {
        let c = &self.capture;
        format!(
            "{} events, {} lost (ring full), {} stack walks ({} reused the last), {} without a thread state, {} cut short by an unreadable frame, {} stacks not stored (table full), {} stacks missing",
            c.events,
            c.kernel.lost_events,
            c.kernel.walks,
            c.kernel.reused,
            c.kernel.no_thread,
            c.kernel.read_failed,
            c.kernel.stacks_full,
            c.stacks_missing,
        )
    }

    /// One line when the run lost more than a small share of its events or stacks.
    pub fn loss_warning(&self) -> Option<String> {
        let c = &self.capture;
        let share = |part: u64, whole: u64| part as f64 / whole.max(1) as f64;
        let lost = share(c.kernel.lost_events, c.events + c.kernel.lost_events);
        let unstored = share(
            c.kernel.stacks_full + c.stacks_missing,
            c.kernel.walks + c.kernel.reused,
        );
        (lost > LOSS_WARNING_SHARE || unstored > LOSS_WARNING_SHARE).then(|| {
            format!(
                "warning: the in-kernel capture lost {:.1}% of its events (the kernel's ring was full) and {:.1}% of its stacks (table full or recycled): those charges are missing or went to the stack at the tick",
                100.0 * lost,
                100.0 * unstored
            )
        })
    }

    /// Every tally by name, for the JSON summary.
    pub fn tallies(&self) -> Vec<(&'static str, u64)> {
        let c = &self.capture;
        vec![
            ("faults", self.faults),
            ("faults_with_stack", self.faults_with_stack),
            ("faults_on_owned_pages", self.faults_on_owned_pages),
            ("file_or_shared_faults", self.file_or_shared_faults),
            ("huge_faults", self.huge_faults),
            ("faults_in_mappings", self.faults_in_mappings),
            ("zero_page_reads", self.zero_page_reads),
            ("released_bytes", self.released_bytes),
            ("held_bytes", self.held_bytes),
            ("alloc_samples", self.alloc_samples),
            ("alloc_samples_with_stack", self.alloc_samples_with_stack),
            ("threads_held", self.threads_held),
            ("held_placed", self.held_placed),
            ("held_let_go", self.held_let_go),
            ("cpu_samples", self.cpu_samples),
            ("off_cpu_intervals", self.off_cpu_intervals),
            ("time_not_python", self.time_not_python),
            ("events", c.events),
            ("lost_events", c.kernel.lost_events),
            ("stack_walks", c.kernel.walks),
            ("reused_walks", c.kernel.reused),
            ("no_thread", c.kernel.no_thread),
            ("read_failed", c.kernel.read_failed),
            ("stacks_full", c.kernel.stacks_full),
            ("stacks_missing", c.stacks_missing),
            ("stack_table_recycles", c.stack_table_recycles),
            ("stack_table_peak", c.stack_table_peak),
            ("processes_in_table_at_end", c.processes_in_table),
            ("threads_in_table_at_end", c.threads_in_table),
            ("processes_table_peak", c.processes_table_peak),
            ("threads_table_peak", c.threads_table_peak),
            ("children_followed", c.children_followed),
            ("children_not_followed_table_full", c.kernel.procs_full),
        ]
    }

    /// Adds another process's figures (`--subprocesses`).
    pub fn add(&mut self, other: &InKernelStats) {
        self.faults += other.faults;
        self.faults_with_stack += other.faults_with_stack;
        self.faults_on_owned_pages += other.faults_on_owned_pages;
        self.file_or_shared_faults += other.file_or_shared_faults;
        self.huge_faults += other.huge_faults;
        self.faults_in_mappings += other.faults_in_mappings;
        self.zero_page_reads += other.zero_page_reads;
        self.released_bytes += other.released_bytes;
        self.held_bytes += other.held_bytes;
        self.alloc_samples += other.alloc_samples;
        self.alloc_samples_with_stack += other.alloc_samples_with_stack;
        self.threads_held += other.threads_held;
        self.held_placed += other.held_placed;
        self.held_let_go += other.held_let_go;
        self.samples_time |= other.samples_time;
        self.cpu_samples += other.cpu_samples;
        self.off_cpu_intervals += other.off_cpu_intervals;
        self.time_not_python += other.time_not_python;
        // One capture serves every process: the latest figures are the most events seen.
        if other.capture.events >= self.capture.events {
            self.capture = other.capture;
        }
    }
}

/// The write bit of a page fault's error code (`X86_PF_WRITE`: the `exceptions:page_fault_*`
/// tracepoints are x86's).
const X86_PF_WRITE: u64 = 1 << 1;

/// How often the memory regions are read again at most, unless the process made a mapping
/// they miss since.
const REGIONS_REFRESH: std::time::Duration = std::time::Duration::from_millis(100);

/// Who owns pages: a thread and its stack at the time.
#[derive(Debug, Clone)]
struct Owner {
    thread: ThreadIdentity,
    frames: Vec<Frame>,
}

/// A kernel thread Python's view does not name.
fn thread_alone(tid: u32) -> ThreadIdentity {
    ThreadIdentity {
        python_id: None,
        native_id: Some(tid),
        name: None,
    }
}

/// Adds `more` to `charges`, owner by owner.
fn add_charges(charges: &mut Charges, more: Charges) {
    for (owner, values) in more {
        charges.entry(owner).or_default().add_all(&values);
    }
}

/// Turns a captured stack into frames.
pub(crate) type Decode<'a> = dyn FnMut(&mut dyn Iterator<Item = CapturedFrame>) -> Vec<Frame> + 'a;

/// A thread as this tick's stack read saw it: identity and frames.
pub(crate) type TickThread = (ThreadIdentity, Vec<Frame>);

/// The in-kernel attribution of one process.
#[derive(Debug)]
pub(crate) struct KernelAttribution {
    capture: SharedCapture,
    tgid: u32,
    ledger: PageLedger,
    owners: Owners,
    /// The process's memory regions, to tell file-backed and shared pages from anonymous ones.
    regions: KnownRegions,
    /// The process's threads seen in events or handed over, to clear from the in-kernel
    /// per-thread tables when the process goes.
    tids: HashSet<u32>,
    /// The thread states last handed to the walker, and when (see
    /// [`KernelAttribution::hand_over_threads`]).
    handed: Vec<(u32, u64)>,
    handed_at: Option<std::time::Instant>,
    /// Threads whose events without a stack wait for their first captured stack.
    unknown: UnknownThreads,
    /// With time sampling: what each thread's time off CPUs was charged up to.
    time: Option<TimeLedger>,
    /// Threads whose interval off CPUs user space opened (at their first hand-over), so that
    /// a thread waiting since before sampling began is charged its wait; `None` where it
    /// cannot (no time sampling, or this process numbers threads in a PID namespace of its
    /// own, and the scheduler's table is keyed by the kernel's own ids).
    time_opened: Option<HashSet<u32>>,
    stats: InKernelStats,
}

/// How long thread states handed to the walker go without being checked against its table:
/// one the table evicted meanwhile is looked up by the walker itself, in the interpreter's
/// thread list (exact, only slower).
const HAND_OVER_REFRESH: std::time::Duration = std::time::Duration::from_millis(100);

impl Drop for KernelAttribution {
    /// The process exited or is no longer followed: it leaves every in-kernel table.
    fn drop(&mut self) {
        if let Ok(mut capture) = self.capture.try_borrow_mut() {
            capture.remove_process(self.tgid, self.tids.drain());
        }
    }
}

/// The owners the ledger charges, interned: a thread and its decoded stack (with a leaf frame
/// for file-backed or shared pages).
#[derive(Debug, Default)]
struct Owners {
    owners: Vec<Owner>,
    /// (tid, stack id, what backs the pages) -> owner index; stack id 0 entries stand for the
    /// thread's tick stack and are forgotten every tick.
    ids: HashMap<(u32, u64, Backing), u32>,
    /// The stack id 0 keys of `ids` made since the last tick's start, to forget then (a walk
    /// over every key at every tick cost a 1000 Hz run over mypy's thousands of stacks 3–5%).
    tick_keys: Vec<(u32, u64, Backing)>,
    /// Decoded stacks by id.
    decoded: HashMap<u64, Vec<Frame>>,
    /// The leaf frames that mark file-backed and shared pages, by file.
    backing_frames: HashMap<Backing, Frame>,
    /// Stand-in owners of threads whose stack is not known yet: owner -> (tid, backing).
    stand_ins: HashMap<u32, (u32, Backing)>,
}

/// The stack id under which stand-in owners are interned (no captured stack has it: ids are
/// hashes of frames, and this one is not a hash the walker gives).
const STAND_IN: u64 = u64::MAX;

impl KernelAttribution {
    /// Attribution of process `tgid`'s events from `capture`; `initial_brk` is the end of its
    /// heap when attaching, if it has one.
    pub(crate) fn new(capture: SharedCapture, tgid: u32, initial_brk: Option<u64>) -> Self {
        capture.borrow_mut().claimed.insert(tgid);
        let time = capture
            .borrow()
            .stacks
            .options()
            .time_period_ns
            .map(TimeLedger::new);
        KernelAttribution {
            capture,
            tgid,
            ledger: PageLedger::new(
                crate::attach::proc_files::page_size(),
                crate::attach::proc_files::transparent_huge_pages(),
                initial_brk,
            ),
            owners: Owners::default(),
            regions: KnownRegions::default(),
            tids: HashSet::new(),
            handed: Vec::new(),
            handed_at: None,
            unknown: UnknownThreads::default(),
            time_opened: (time.is_some()
                && crate::attach::namespaces::reader_pid_namespace().is_none())
            .then(HashSet::new),
            time,
            stats: InKernelStats::default(),
        }
    }

    /// Whether it charges `cpu` and `wall` by time sampled in the kernel.
    pub(crate) fn samples_time(&self) -> bool {
        self.time.is_some()
    }

    /// The capture it takes its events from.
    pub(crate) fn capture(&self) -> &SharedCapture {
        &self.capture
    }

    /// The run's figures so far.
    pub(crate) fn stats(&self) -> InKernelStats {
        let ledger = self.ledger.figures();
        let held = self.unknown.figures();
        InKernelStats {
            threads_held: held.threads_held,
            held_placed: held.placed,
            held_let_go: held.let_go,
            faults_on_owned_pages: ledger.faults_on_owned_pages,
            file_or_shared_faults: ledger.file_or_shared_faults,
            huge_faults: ledger.huge_faults,
            faults_in_mappings: ledger.faults_in_mappings,
            zero_page_reads: ledger.zero_page_reads,
            released_bytes: ledger.released_bytes,
            held_bytes: self.ledger.held_bytes(),
            samples_time: self.time.is_some(),
            ..self.stats
        }
    }

    /// Reads the walker's tallies now, for the figures at the end of sampling this process.
    pub(crate) fn read_tallies_now(&mut self) {
        let mut capture = self.capture.borrow_mut();
        capture.refresh_tallies(true);
        self.stats.capture = capture.tallies();
    }

    /// Hands the live Python threads' thread states to the kernel walker: when they differ
    /// from the last ones handed over, or those are [`HAND_OVER_REFRESH`] old (each costs a
    /// lookup in the walker's table per thread).
    pub(crate) fn hand_over_threads(&mut self, threads: &[(u32, u64)]) {
        if self.handed == threads
            && self
                .handed_at
                .is_some_and(|at| at.elapsed() < HAND_OVER_REFRESH)
        {
            return;
        }
        self.tids.extend(threads.iter().map(|&(tid, _)| tid));
        self.open_off_cpu(threads);
        self.capture.borrow_mut().stacks.set_threads(threads);
        self.handed.clear();
        self.handed.extend_from_slice(threads);
        self.handed_at = Some(std::time::Instant::now());
    }

    /// Opens an interval off CPUs for each thread of `threads` seen for the first time, from
    /// now: a thread that waits from before it was seen is charged its wait when it next runs
    /// or at the next charge (a thread on a CPU now closes it at its next on-CPU sample, and
    /// opens its own as it leaves).
    fn open_off_cpu(&mut self, threads: &[(u32, u64)]) {
        let Some(opened) = &mut self.time_opened else {
            return;
        };
        let new: Vec<(u32, u32)> = threads
            .iter()
            .filter(|&&(tid, _)| opened.insert(tid))
            .map(|&(tid, _)| (tid, tid))
            .collect();
        if !new.is_empty() {
            let now = crate::attach::stop::monotonic_ns();
            self.capture
                .borrow_mut()
                .stacks
                .open_off_cpu(self.tgid, &new, now);
        }
    }

    /// Charges the intervals off CPUs the process's threads are still in, up to now (their
    /// ends come later as events, and charge only what follows): those of threads that are
    /// not this tick's Python threads are closed uncharged (gone, or not Python).
    fn charge_open_off_cpu(
        &mut self,
        tick_threads: &HashMap<u32, TickThread>,
        decode: &mut Decode<'_>,
        charges: &mut Charges,
    ) {
        let Some(time) = &mut self.time else {
            return;
        };
        let (now, open) = self.capture.borrow_mut().open_off_cpu(self.tgid);
        for (kernel_tid, interval) in open {
            if !tick_threads.contains_key(&interval.tid) {
                self.capture.borrow_mut().stacks.close_off_cpu(kernel_tid);
                time.forget(interval.tid);
                continue;
            }
            let samples = time.off_cpu(interval.tid, interval.since, now);
            if samples > 0 {
                let key = (interval.tid, interval.stack, Backing::Anonymous);
                let owner = self.owners.owner(&self.capture, key, tick_threads, decode);
                charges.entry(owner).or_default().add(Metric::Wall, samples);
            }
        }
    }

    /// The interval's charges, one [`ThreadSample`] per owner charged: `tick_threads` are
    /// this tick's Python threads by kernel tid, `decode` turns a captured stack into frames.
    pub(crate) fn charge(
        &mut self,
        tick_threads: &HashMap<u32, TickThread>,
        decode: &mut Decode<'_>,
    ) -> Vec<ThreadSample> {
        self.charge_events(tick_threads, decode, false)
    }

    /// The charges of the process's last events, once it has exited (every one of them is in
    /// the ring by then: a process takes no fault after its memory is gone): what threads
    /// still held goes to their last known stack or none.
    pub(crate) fn charge_last(&mut self, decode: &mut Decode<'_>) -> Vec<ThreadSample> {
        self.charge_events(&HashMap::new(), decode, true)
    }

    fn charge_events(
        &mut self,
        tick_threads: &HashMap<u32, TickThread>,
        decode: &mut Decode<'_>,
        last: bool,
    ) -> Vec<ThreadSample> {
        self.owners.forget_tick_stacks();
        self.unknown.begin_tick(tick_threads.keys().copied());
        let now = std::time::Instant::now();
        let events = self.capture.borrow_mut().take_events(self.tgid);
        let mut charges = Charges::new();
        for event in &events {
            self.tids.insert(event.tid);
            self.apply(event, tick_threads, decode, &mut charges, now);
        }
        if !last {
            self.charge_open_off_cpu(tick_threads, decode, &mut charges);
        }
        self.unknown.set_aside(&mut charges);
        let due = if last {
            self.unknown.let_go_all()
        } else {
            self.unknown.due(now)
        };
        for (tid, held) in due {
            self.owners.let_go(tid, held, tick_threads, &mut charges);
        }
        {
            let mut capture = self.capture.borrow_mut();
            capture.refresh_tallies(false);
            self.stats.capture = capture.tallies();
        }
        let mut samples: Vec<ThreadSample> = charges
            .into_iter()
            .filter(|(_, values)| !values.is_zero())
            .map(|(owner, values)| {
                let owner = &self.owners.owners[owner as usize];
                ThreadSample {
                    thread: owner.thread.clone(),
                    frames: owner.frames.clone(),
                    values,
                }
            })
            .collect();
        samples.sort_by_key(|s| s.thread.native_id);
        samples
    }

    /// Applies one event to the ledger.
    fn apply(
        &mut self,
        event: &MemoryEvent,
        tick_threads: &HashMap<u32, TickThread>,
        decode: &mut Decode<'_>,
        charges: &mut Charges,
        now: std::time::Instant,
    ) {
        // A thread's first captured stack places what it held.
        if event.stack != 0
            && matches!(
                event.kind,
                EventKind::Fault
                    | EventKind::Alloc
                    | EventKind::MmapEnter
                    | EventKind::CpuSample
                    | EventKind::OffCpu
            )
            && let Some(held) = self.unknown.placed(event.tid)
        {
            self.owners.place(
                &self.capture,
                (event.tid, event.stack),
                held,
                tick_threads,
                decode,
                charges,
            );
        }
        let mut owner = |owners: &mut Owners, unknown: &mut UnknownThreads, backing: Backing| {
            owner_of(
                owners,
                unknown,
                &self.capture,
                (event.tid, event.stack, backing),
                tick_threads,
                decode,
                now,
            )
        };
        match event.kind {
            EventKind::Fault => {
                self.stats.faults += 1;
                if event.stack != 0 {
                    self.stats.faults_with_stack += 1;
                }
                let page_size = crate::attach::proc_files::page_size();
                let backing = self
                    .regions
                    .backing(self.tgid, event.addr & !(page_size - 1));
                let fault = Fault {
                    tid: event.tid,
                    addr: event.addr,
                    write: event.arg & X86_PF_WRITE != 0,
                    anonymous: backing == Backing::Anonymous,
                };
                // The owner is made only when the page needs one (interning decodes the stack).
                let (owners, unknown) = (&mut self.owners, &mut self.unknown);
                self.ledger
                    .fault(fault, || owner(owners, unknown, backing), charges);
            }
            EventKind::HugeFault => self.ledger.huge_fault(event.tid, charges),
            EventKind::Alloc => {
                self.stats.alloc_samples += 1;
                if event.stack != 0 {
                    self.stats.alloc_samples_with_stack += 1;
                }
                let owner = owner(&mut self.owners, &mut self.unknown, Backing::Anonymous);
                let values = charges.entry(owner).or_default();
                values.add(Metric::MallocBytes, event.len);
                values.add(Metric::MallocCount, event.arg);
            }
            EventKind::Munmap => self.ledger.munmap(event.addr, event.len, charges),
            EventKind::Madvise => self.ledger.madvise(event.addr, event.len, charges),
            EventKind::MmapEnter => {
                let owner = owner(&mut self.owners, &mut self.unknown, Backing::Anonymous);
                self.ledger.mmap_enter(event.tid, event.len, owner);
            }
            EventKind::MmapExit => {
                // An anonymous private mapping needs no new look at the regions: a page in
                // no known region is taken for anonymous.
                if !self.ledger.mmap_exit(event.tid, event.addr) {
                    self.regions.mapped(event.addr);
                }
            }
            EventKind::Brk => self.ledger.brk(event.addr, charges),
            EventKind::MremapEnter => {
                self.ledger
                    .mremap_enter(event.tid, event.addr, event.len, event.arg);
            }
            EventKind::MremapExit => self.ledger.mremap_exit(event.tid, event.addr, charges),
            // Time, as `wall` and `cpu` count it: of Python threads only (a thread this tick
            // did not read as Python and whose stack the walker could not read is not one).
            EventKind::CpuSample | EventKind::OffCpu
                if event.stack == 0 && !tick_threads.contains_key(&event.tid) =>
            {
                self.stats.time_not_python += 1;
            }
            EventKind::CpuSample => {
                self.stats.cpu_samples += 1;
                let owner = owner(&mut self.owners, &mut self.unknown, Backing::Anonymous);
                let values = charges.entry(owner).or_default();
                values.add(Metric::Cpu, 1);
                values.add(Metric::Wall, 1);
            }
            EventKind::OffCpu => {
                self.stats.off_cpu_intervals += 1;
                let samples = self
                    .time
                    .as_mut()
                    .map_or(0, |time| time.off_cpu(event.tid, event.addr, event.len));
                if samples > 0 {
                    let owner = owner(&mut self.owners, &mut self.unknown, Backing::Anonymous);
                    charges.entry(owner).or_default().add(Metric::Wall, samples);
                }
            }
            // Sorted out by the capture (`KernelCapture::drain_all`).
            EventKind::Fork | EventKind::Exec | EventKind::Exit => {}
        }
    }
}

/// The owner of an event of (thread, stack, what backs the page) `key`: a stand-in held until
/// the thread's stack is known when the event has no stack and the thread is not known.
fn owner_of(
    owners: &mut Owners,
    unknown: &mut UnknownThreads,
    capture: &SharedCapture,
    key: (u32, u64, Backing),
    tick_threads: &HashMap<u32, TickThread>,
    decode: &mut Decode<'_>,
    now: std::time::Instant,
) -> u32 {
    if key.1 == 0 && unknown.holds(key.0) {
        let owner = owners.stand_in(key.0, key.2);
        unknown.hold(key.0, owner, now);
        return owner;
    }
    owners.owner(capture, key, tick_threads, decode)
}

/// The process's memory regions as last read, to tell file-backed and shared pages from
/// anonymous ones.
#[derive(Debug, Default)]
struct KnownRegions {
    regions: Vec<Region>,
    /// When they were last read.
    read_at: Option<std::time::Instant>,
    /// The process mapped something other than anonymous private memory since (an `mmap`
    /// the kernel reported): the next fault outside them reads them again at once.
    stale: bool,
}

impl KnownRegions {
    fn find(&self, page: u64) -> Option<&Region> {
        let index = self.regions.partition_point(|r| r.end <= page);
        self.regions.get(index).filter(|r| r.start <= page)
    }

    /// The process mapped a file or shared memory at `addr` (an `mmap`'s result, negative if
    /// it failed).
    fn mapped(&mut self, addr: u64) {
        self.stale |= (addr as i64) >= 0;
    }

    /// What backs the page at `page` of process `tgid`: the region holding it, read again when
    /// none does (at once after a mapping they miss, else at most every
    /// [`REGIONS_REFRESH`]); anonymous when none is found.
    fn backing(&mut self, tgid: u32, page: u64) -> Backing {
        if let Some(region) = self.find(page) {
            return region.backing.clone();
        }
        let due = self.stale
            || self
                .read_at
                .is_none_or(|at| at.elapsed() >= REGIONS_REFRESH);
        if due {
            self.read_at = Some(std::time::Instant::now());
            self.stale = false;
            if let Ok(read) = memory_regions(i32::try_from(tgid).unwrap_or(0)) {
                self.regions = read;
            }
            if let Some(region) = self.find(page) {
                return region.backing.clone();
            }
        }
        Backing::Anonymous
    }
}

impl Owners {
    /// The stand-in owner of thread `tid`'s pages backed by `backing` while its stack is not
    /// known: no frames until it is placed or let go.
    fn stand_in(&mut self, tid: u32, backing: Backing) -> u32 {
        let key = (tid, STAND_IN, backing);
        if let Some(&owner) = self.ids.get(&key) {
            return owner;
        }
        let owner = self.push(Owner {
            thread: thread_alone(tid),
            frames: Vec::new(),
        });
        self.stand_ins.insert(owner, (tid, key.2.clone()));
        self.ids.insert(key, owner);
        owner
    }

    /// Thread `tid`'s first captured stack `stack` is known: its stand-ins become its owners
    /// with that stack, and what they held is charged.
    fn place(
        &mut self,
        capture: &SharedCapture,
        (tid, stack): (u32, u64),
        held: Held,
        tick_threads: &HashMap<u32, TickThread>,
        decode: &mut Decode<'_>,
        charges: &mut Charges,
    ) {
        for &stand_in in &held.owners {
            let Some((_, backing)) = self.stand_ins.remove(&stand_in) else {
                continue;
            };
            self.ids.remove(&(tid, STAND_IN, backing.clone()));
            let real = self.owner(capture, (tid, stack, backing), tick_threads, decode);
            let settled = self.owners[real as usize].clone();
            self.owners[stand_in as usize] = settled;
        }
        add_charges(charges, held.charges);
    }

    /// Thread `tid`'s stack was not known in time: its stand-ins become owners with its stack
    /// at this tick (else no Python frames), and what they held is charged.
    fn let_go(
        &mut self,
        tid: u32,
        held: Held,
        tick_threads: &HashMap<u32, TickThread>,
        charges: &mut Charges,
    ) {
        let tick = tick_threads.get(&tid);
        for &stand_in in &held.owners {
            let Some((_, backing)) = self.stand_ins.remove(&stand_in) else {
                continue;
            };
            self.ids.remove(&(tid, STAND_IN, backing.clone()));
            let frames = tick.map(|(_, frames)| frames.clone()).unwrap_or_default();
            let frames = self.with_leaf(&backing, frames);
            let thread = tick.map_or_else(|| thread_alone(tid), |(identity, _)| identity.clone());
            self.owners[stand_in as usize] = Owner { thread, frames };
        }
        add_charges(charges, held.charges);
    }

    /// `frames` with the leaf frame of file-backed or shared pages in front, if `backing` is.
    fn with_leaf(&mut self, backing: &Backing, mut frames: Vec<Frame>) -> Vec<Frame> {
        let kind = match backing {
            Backing::Anonymous => return frames,
            Backing::File(_) => PageKind::FileBacked,
            Backing::Shared => PageKind::Shared,
        };
        let leaf = self
            .backing_frames
            .entry(backing.clone())
            .or_insert_with(|| backing_frame(kind, backing))
            .clone();
        frames.insert(0, leaf);
        frames
    }

    fn push(&mut self, owner: Owner) -> u32 {
        let index = u32::try_from(self.owners.len()).unwrap_or(u32::MAX);
        self.owners.push(owner);
        index
    }

    /// The owner index of (thread `tid`, captured stack `stack`), made on first sight.
    fn owner(
        &mut self,
        capture: &SharedCapture,
        key: (u32, u64, Backing),
        tick_threads: &HashMap<u32, TickThread>,
        decode: &mut Decode<'_>,
    ) -> u32 {
        let (tid, stack) = (key.0, key.1);
        if let Some(&owner) = self.ids.get(&key) {
            return owner;
        }
        let tick = tick_threads.get(&tid);
        let thread = tick.map_or_else(|| thread_alone(tid), |(identity, _)| identity.clone());
        let tick_frames = || tick.map(|(_, frames)| frames.clone()).unwrap_or_default();
        let (key, mut frames) = match stack {
            0 => (key, tick_frames()),
            id => match self.frames_of(capture, id, decode) {
                Some(frames) => (key, frames),
                // A stack no longer stored: the thread's stack at the tick stands for it
                // (interned as such, so a later event naming it decodes it if it is back).
                None => ((tid, 0, key.2), tick_frames()),
            },
        };
        if let Some(&owner) = self.ids.get(&key) {
            return owner;
        }
        frames = self.with_leaf(&key.2, frames);
        let owner = self.push(Owner { thread, frames });
        if key.1 == 0 {
            self.tick_keys.push(key.clone());
        }
        self.ids.insert(key, owner);
        owner
    }

    /// Forgets the owners that stood for threads' stacks at the last tick (stack id 0): the
    /// next tick's stacks may differ.
    fn forget_tick_stacks(&mut self) {
        for key in self.tick_keys.drain(..) {
            self.ids.remove(&key);
        }
    }

    fn frames_of(
        &mut self,
        capture: &SharedCapture,
        id: u64,
        decode: &mut Decode<'_>,
    ) -> Option<Vec<Frame>> {
        if let Some(frames) = self.decoded.get(&id) {
            return Some(frames.clone());
        }
        let raw = capture.borrow().stack(id);
        let Some(raw) = raw else {
            // Not cached: the table may hold it again later.
            capture.borrow_mut().tallies.stacks_missing += 1;
            return None;
        };
        let frames = decode(
            &mut raw.frames().map(|(code, position, tag)| CapturedFrame {
                code,
                position,
                tag,
            }),
        );
        self.decoded.insert(id, frames.clone());
        Some(frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A file this process maps just after its regions were read is told apart from anonymous
    /// memory at its first fault once its `mmap` is reported, however soon that fault comes.
    #[test]
    fn a_file_mapped_since_the_regions_were_read_is_a_file() {
        let pid = std::process::id();
        let mut known = KnownRegions::default();
        let on_heap = Box::new(0u64);
        let heap_page = (&*on_heap as *const u64 as u64) & !0xfff;
        assert_eq!(known.backing(pid, heap_page), Backing::Anonymous);
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(&[1u8; 8192]).expect("write");
        file.flush().expect("flush");
        // SAFETY: a fresh shared read-only mapping of a file this test owns, unmapped below.
        let at = unsafe {
            use std::os::fd::AsRawFd;
            libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_file().as_raw_fd(),
                0,
            )
        };
        assert_ne!(at, libc::MAP_FAILED);
        let page = at as u64;
        known.mapped(page);
        let backing = known.backing(pid, page);
        // SAFETY: unmapping the mapping made above.
        unsafe { libc::munmap(at, 8192) };
        assert_eq!(backing, Backing::File(file.path().to_path_buf()));
        assert!(!known.stale, "read again");
    }
}
