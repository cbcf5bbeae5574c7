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
//! A fault or sample whose stack could not be captured (a thread Python does not know, or a
//! frame that could not be read) goes to the thread's stack read at this tick, else to the
//! thread without Python frames.
//! Must not touch: tick timing, reading stacks or counters, how charges add up (`profile`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::page_ledger::{Charges, Fault, PageLedger};

use crate::attach::process::{Backing, Region, memory_regions};
use crate::memory::kernel_stacks::{EventKind, KernelStacks, MemoryEvent};
use crate::python::{CapturedFrame, CodeInfo, Frame};
use crate::sample::{Metric, PageKind, ThreadIdentity, ThreadSample};

/// One [`KernelStacks`] shared by the samplers of a run (one per process with
/// `--subprocesses`): the ring holds every process's events, sorted out here by process.
#[derive(Debug)]
pub struct KernelCapture {
    stacks: KernelStacks,
    pending: HashMap<u32, Vec<MemoryEvent>>,
    scratch: Vec<MemoryEvent>,
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
        }))
    }

    /// The loaded programs (to add or remove processes, read tallies).
    pub fn stacks(&mut self) -> &mut KernelStacks {
        &mut self.stacks
    }

    /// Every event of process `tgid` since the last call, oldest first.
    fn take_events(&mut self, tgid: u32) -> Vec<MemoryEvent> {
        self.scratch.clear();
        self.stacks.drain(&mut self.scratch);
        for event in self.scratch.drain(..) {
            self.pending.entry(event.tgid).or_default().push(event);
        }
        self.pending.remove(&tgid).unwrap_or_default()
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
    /// Events the kernel dropped (ring full), over the whole capture.
    pub lost_events: u64,
}

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
        if self.lost_events > 0 {
            note.push_str(&format!(
                "; {} events were lost (the kernel's ring was full)",
                self.lost_events
            ));
        }
        note
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
        self.lost_events = self.lost_events.max(other.lost_events);
    }
}

/// The write bit of a page fault's error code (`X86_PF_WRITE`: the `exceptions:page_fault_*`
/// tracepoints are x86's).
const X86_PF_WRITE: u64 = 1 << 1;

/// How often the memory regions are read again at most.
const REGIONS_REFRESH: std::time::Duration = std::time::Duration::from_millis(100);

/// Who owns pages: a thread and its stack at the time.
#[derive(Debug, Clone)]
struct Owner {
    thread: ThreadIdentity,
    frames: Vec<Frame>,
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
    regions: Vec<Region>,
    /// When `regions` was last read: a fault outside every known region reads them again, at
    /// most every [`REGIONS_REFRESH`].
    regions_read: Option<std::time::Instant>,
    stats: InKernelStats,
}

/// The owners the ledger charges, interned: a thread and its decoded stack (with a leaf frame
/// for file-backed or shared pages).
#[derive(Debug, Default)]
struct Owners {
    owners: Vec<Owner>,
    /// (tid, stack id, what backs the pages) -> owner index; stack id 0 entries stand for the
    /// thread's tick stack and are forgotten every tick.
    ids: HashMap<(u32, u64, Backing), u32>,
    /// Decoded stacks by id.
    decoded: HashMap<u64, Vec<Frame>>,
    /// The leaf frames that mark file-backed and shared pages, by file.
    backing_frames: HashMap<Backing, Frame>,
}

impl KernelAttribution {
    /// Attribution of process `tgid`'s events from `capture`; `initial_brk` is the end of its
    /// heap when attaching, if it has one.
    pub(crate) fn new(capture: SharedCapture, tgid: u32, initial_brk: Option<u64>) -> Self {
        KernelAttribution {
            capture,
            tgid,
            ledger: PageLedger::new(
                crate::attach::proc_files::page_size(),
                crate::attach::proc_files::transparent_huge_pages(),
                initial_brk,
            ),
            owners: Owners::default(),
            regions: Vec::new(),
            regions_read: None,
            stats: InKernelStats::default(),
        }
    }

    /// The run's figures so far.
    pub(crate) fn stats(&self) -> InKernelStats {
        let ledger = self.ledger.figures();
        InKernelStats {
            faults_on_owned_pages: ledger.faults_on_owned_pages,
            file_or_shared_faults: ledger.file_or_shared_faults,
            huge_faults: ledger.huge_faults,
            faults_in_mappings: ledger.faults_in_mappings,
            zero_page_reads: ledger.zero_page_reads,
            released_bytes: ledger.released_bytes,
            held_bytes: self.ledger.held_bytes(),
            ..self.stats
        }
    }

    /// Hands the live Python threads' thread states to the kernel walker.
    pub(crate) fn hand_over_threads(&self, threads: &[(u32, u64)]) {
        self.capture.borrow_mut().stacks.set_threads(threads);
    }

    /// The interval's charges, one [`ThreadSample`] per owner charged: `tick_threads` are
    /// this tick's Python threads by kernel tid, `decode` turns a captured stack into frames.
    pub(crate) fn charge(
        &mut self,
        tick_threads: &HashMap<u32, TickThread>,
        decode: &mut Decode<'_>,
    ) -> Vec<ThreadSample> {
        self.owners.ids.retain(|&(_, stack, _), _| stack != 0);
        let events = self.capture.borrow_mut().take_events(self.tgid);
        let mut charges = Charges::new();
        for event in &events {
            self.apply(event, tick_threads, decode, &mut charges);
        }
        let lost = self.capture.borrow().stacks.tallies().lost_events;
        self.stats.lost_events = lost;
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
    ) {
        match event.kind {
            EventKind::Fault => self.fault(event, tick_threads, decode, charges),
            EventKind::HugeFault => self.ledger.huge_fault(event.tid, charges),
            EventKind::Alloc => {
                self.stats.alloc_samples += 1;
                if event.stack != 0 {
                    self.stats.alloc_samples_with_stack += 1;
                }
                let owner = self.owners.owner(
                    &self.capture,
                    (event.tid, event.stack, Backing::Anonymous),
                    tick_threads,
                    decode,
                );
                let values = charges.entry(owner).or_default();
                values.add(Metric::MallocBytes, event.len);
                values.add(Metric::MallocCount, event.arg);
            }
            EventKind::Munmap => self.ledger.munmap(event.addr, event.len, charges),
            EventKind::Madvise => self.ledger.madvise(event.addr, event.len, charges),
            EventKind::MmapEnter => {
                let owner = self.owners.owner(
                    &self.capture,
                    (event.tid, event.stack, Backing::Anonymous),
                    tick_threads,
                    decode,
                );
                self.ledger.mmap_enter(event.tid, event.len, owner);
            }
            EventKind::MmapExit => self.ledger.mmap_exit(event.tid, event.addr),
            EventKind::Brk => self.ledger.brk(event.addr, charges),
            EventKind::MremapEnter => {
                self.ledger
                    .mremap_enter(event.tid, event.addr, event.len, event.arg);
            }
            EventKind::MremapExit => self.ledger.mremap_exit(event.tid, event.addr, charges),
        }
    }

    fn fault(
        &mut self,
        event: &MemoryEvent,
        tick_threads: &HashMap<u32, TickThread>,
        decode: &mut Decode<'_>,
        charges: &mut Charges,
    ) {
        self.stats.faults += 1;
        if event.stack != 0 {
            self.stats.faults_with_stack += 1;
        }
        let page_size = crate::attach::proc_files::page_size();
        let backing = self.backing_of(event.addr & !(page_size - 1));
        let fault = Fault {
            tid: event.tid,
            addr: event.addr,
            write: event.arg & X86_PF_WRITE != 0,
            anonymous: backing == Backing::Anonymous,
        };
        // The owner is made only when the page needs one (interning decodes the stack).
        let (owners, capture) = (&mut self.owners, &self.capture);
        let owner = || {
            owners.owner(
                capture,
                (event.tid, event.stack, backing),
                tick_threads,
                decode,
            )
        };
        self.ledger.fault(fault, owner, charges);
    }

    /// What backs the page at `page`: the region holding it, read again (at most every
    /// [`REGIONS_REFRESH`]) when no known region does; anonymous when none is found.
    fn backing_of(&mut self, page: u64) -> Backing {
        let find = |regions: &[Region]| {
            let index = regions.partition_point(|r| r.end <= page);
            regions
                .get(index)
                .filter(|r| r.start <= page)
                .map(|r| r.backing.clone())
        };
        if let Some(backing) = find(&self.regions) {
            return backing;
        }
        let due = self
            .regions_read
            .is_none_or(|at| at.elapsed() >= REGIONS_REFRESH);
        if due {
            self.regions_read = Some(std::time::Instant::now());
            if let Ok(regions) = memory_regions(i32::try_from(self.tgid).unwrap_or(0)) {
                self.regions = regions;
            }
            if let Some(backing) = find(&self.regions) {
                return backing;
            }
        }
        Backing::Anonymous
    }
}

impl Owners {
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
        let thread = tick.map_or_else(
            || ThreadIdentity {
                python_id: None,
                native_id: Some(tid),
                name: None,
            },
            |(identity, _)| identity.clone(),
        );
        let mut frames = match stack {
            0 => tick.map(|(_, frames)| frames.clone()).unwrap_or_default(),
            id => self.frames_of(capture, id, decode),
        };
        let kind = match key.2 {
            Backing::Anonymous => None,
            Backing::File(_) => Some(PageKind::FileBacked),
            Backing::Shared => Some(PageKind::Shared),
        };
        if let Some(kind) = kind {
            let leaf = self
                .backing_frames
                .entry(key.2.clone())
                .or_insert_with(|| backing_frame(kind, &key.2))
                .clone();
            frames.insert(0, leaf);
        }
        let owner = u32::try_from(self.owners.len()).unwrap_or(u32::MAX);
        self.owners.push(Owner { thread, frames });
        self.ids.insert(key, owner);
        owner
    }

    fn frames_of(
        &mut self,
        capture: &SharedCapture,
        id: u64,
        decode: &mut Decode<'_>,
    ) -> Vec<Frame> {
        if let Some(frames) = self.decoded.get(&id) {
            return frames.clone();
        }
        let raw = capture.borrow().stacks.stack(id);
        let frames = raw.map_or_else(Vec::new, |raw| {
            decode(
                &mut raw.frames().map(|(code, position, tag)| CapturedFrame {
                    code,
                    position,
                    tag,
                }),
            )
        });
        self.decoded.insert(id, frames.clone());
        frames
    }
}
