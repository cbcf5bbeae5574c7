//! In-kernel attribution: memory is charged to the Python stack the kernel captured at the
//! moment it was acquired (`memory::kernel_stacks`, SPEC §2.4), not to the stack found at the
//! end of the interval.
//!
//! Owns: the page-ownership ledger of one process (each faulted page belongs to the (thread,
//! stack) that faulted it; `munmap`, dropping `madvise`, a shrinking `brk` and `mremap` give
//! the pages of their range back, or move them), the decoding of captured stacks (through the
//! stack source's code-object cache), and turning the interval's events into charges:
//! - `rss`: a page newly owned is `page size` bytes of growth charged to its owner;
//! - `rss-release`: a page given back is charged as a release to the stack that owned it, so
//!   the profile gives back that stack's growth (pages this run never saw faulted in, such as
//!   memory from before attaching, release nothing);
//! - `malloc-bytes` / `malloc-count`: each allocation sample carries the bytes and calls its
//!   thread made since its previous sample, charged to the sample's stack.
//!
//! A fault or sample whose stack could not be captured (a thread Python does not know, or a
//! frame that could not be read) goes to the thread's stack read at this tick, else to the
//! thread without Python frames.
//! Must not touch: tick timing, reading stacks or counters, how charges add up (`profile`).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use crate::memory::kernel_stacks::{EventKind, KernelStacks, MemoryEvent};
use crate::python::Frame;
use crate::sample::{Metric, MetricValues, ThreadIdentity, ThreadSample};

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
        self.released_bytes += other.released_bytes;
        self.held_bytes += other.held_bytes;
        self.alloc_samples += other.alloc_samples;
        self.alloc_samples_with_stack += other.alloc_samples_with_stack;
        self.lost_events = self.lost_events.max(other.lost_events);
    }
}

/// Who owns pages: a thread and its stack at the time.
#[derive(Debug, Clone)]
struct Owner {
    thread: ThreadIdentity,
    frames: Vec<Frame>,
}

/// Turns a captured stack (`(code, instruction position)` per frame) into frames.
pub(crate) type Decode<'a> = dyn FnMut(&mut dyn Iterator<Item = (u64, u64)>) -> Vec<Frame> + 'a;

/// A thread as this tick's stack read saw it: identity and frames.
pub(crate) type TickThread = (ThreadIdentity, Vec<Frame>);

/// The in-kernel attribution of one process.
#[derive(Debug)]
pub(crate) struct KernelAttribution {
    capture: SharedCapture,
    tgid: u32,
    page_size: u64,
    /// Page address -> owner index.
    pages: BTreeMap<u64, u32>,
    owners: Vec<Owner>,
    /// (tid, stack id) -> owner index; stack id 0 entries stand for the thread's tick stack
    /// and are forgotten every tick.
    owner_ids: HashMap<(u32, u64), u32>,
    /// Decoded stacks by id.
    decoded: HashMap<u64, Vec<Frame>>,
    /// Each owner's bytes held now (for the summary).
    held: u64,
    brk: Option<u64>,
    mremaps: HashMap<u32, (u64, u64, u64)>,
    stats: InKernelStats,
}

impl KernelAttribution {
    /// Attribution of process `tgid`'s events from `capture`; `initial_brk` is the end of its
    /// heap when attaching, if it has one.
    pub(crate) fn new(capture: SharedCapture, tgid: u32, initial_brk: Option<u64>) -> Self {
        KernelAttribution {
            capture,
            tgid,
            page_size: crate::attach::proc_files::page_size(),
            pages: BTreeMap::new(),
            owners: Vec::new(),
            owner_ids: HashMap::new(),
            decoded: HashMap::new(),
            held: 0,
            brk: initial_brk,
            mremaps: HashMap::new(),
            stats: InKernelStats::default(),
        }
    }

    /// The run's figures so far.
    pub(crate) fn stats(&self) -> InKernelStats {
        let mut stats = self.stats;
        stats.held_bytes = self.held;
        stats
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
        self.owner_ids.retain(|&(_, stack), _| stack != 0);
        let events = self.capture.borrow_mut().take_events(self.tgid);
        let mut charges: HashMap<u32, MetricValues> = HashMap::new();
        for event in &events {
            match event.kind {
                EventKind::Fault => self.fault(event, tick_threads, decode, &mut charges),
                EventKind::Alloc => {
                    self.stats.alloc_samples += 1;
                    if event.stack != 0 {
                        self.stats.alloc_samples_with_stack += 1;
                    }
                    let owner = self.owner(event.tid, event.stack, tick_threads, decode);
                    let values = charges.entry(owner).or_default();
                    values.add(Metric::MallocBytes, event.len);
                    values.add(Metric::MallocCount, event.arg);
                }
                EventKind::Munmap | EventKind::Madvise => {
                    self.give_back(event.addr, event.len, &mut charges);
                }
                EventKind::Brk => {
                    let now = event.addr;
                    if let Some(before) = self.brk.filter(|&before| now < before) {
                        self.give_back(now, before - now, &mut charges);
                    }
                    if now < (1 << 63) {
                        self.brk = Some(now);
                    }
                }
                EventKind::MremapEnter => {
                    self.mremaps
                        .insert(event.tid, (event.addr, event.len, event.arg));
                }
                EventKind::MremapExit => {
                    if let Some((old, old_len, new_len)) = self.mremaps.remove(&event.tid)
                        && event.addr < (1 << 63)
                    {
                        self.moved(old, old_len, event.addr, new_len, &mut charges);
                    }
                }
            }
        }
        let lost = self.capture.borrow().stacks.tallies().lost_events;
        self.stats.lost_events = lost;
        let mut samples: Vec<ThreadSample> = charges
            .into_iter()
            .filter(|(_, values)| !values.is_zero())
            .map(|(owner, values)| {
                let owner = &self.owners[owner as usize];
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

    fn fault(
        &mut self,
        event: &MemoryEvent,
        tick_threads: &HashMap<u32, TickThread>,
        decode: &mut Decode<'_>,
        charges: &mut HashMap<u32, MetricValues>,
    ) {
        self.stats.faults += 1;
        if event.stack != 0 {
            self.stats.faults_with_stack += 1;
        }
        let page = event.addr & !(self.page_size - 1);
        if self.pages.contains_key(&page) {
            self.stats.faults_on_owned_pages += 1;
            return;
        }
        let owner = self.owner(event.tid, event.stack, tick_threads, decode);
        self.pages.insert(page, owner);
        self.held += self.page_size;
        charges
            .entry(owner)
            .or_default()
            .add(Metric::Rss, self.page_size);
    }

    /// Gives back the owned pages in `[addr, addr + len)`, each charged as a release to its
    /// owner.
    fn give_back(&mut self, addr: u64, len: u64, charges: &mut HashMap<u32, MetricValues>) {
        let end = addr.saturating_add(len);
        let gone: Vec<(u64, u32)> = self.pages.range(addr..end).map(|(&p, &o)| (p, o)).collect();
        for (page, owner) in gone {
            self.pages.remove(&page);
            self.held -= self.page_size;
            self.stats.released_bytes += self.page_size;
            charges
                .entry(owner)
                .or_default()
                .add(Metric::RssRelease, self.page_size);
        }
    }

    /// `mremap` moved `[old, old + old_len)` to `new` with `new_len` bytes: pages keep their
    /// owners at their new addresses; pages beyond a shrunk length are given back.
    fn moved(
        &mut self,
        old: u64,
        old_len: u64,
        new: u64,
        new_len: u64,
        charges: &mut HashMap<u32, MetricValues>,
    ) {
        if new_len < old_len {
            self.give_back(old + new_len, old_len - new_len, charges);
        }
        if new == old {
            return;
        }
        let kept = old_len.min(new_len);
        let moving: Vec<(u64, u32)> = self
            .pages
            .range(old..old.saturating_add(kept))
            .map(|(&p, &o)| (p, o))
            .collect();
        for (page, _) in &moving {
            self.pages.remove(page);
        }
        for (page, owner) in moving {
            self.pages.insert(page - old + new, owner);
        }
    }

    /// The owner index of (thread `tid`, captured stack `stack`), made on first sight.
    fn owner(
        &mut self,
        tid: u32,
        stack: u64,
        tick_threads: &HashMap<u32, TickThread>,
        decode: &mut Decode<'_>,
    ) -> u32 {
        if let Some(&owner) = self.owner_ids.get(&(tid, stack)) {
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
        let frames = match stack {
            0 => tick.map(|(_, frames)| frames.clone()).unwrap_or_default(),
            id => self.frames_of(id, decode),
        };
        let owner = u32::try_from(self.owners.len()).unwrap_or(u32::MAX);
        self.owners.push(Owner { thread, frames });
        self.owner_ids.insert((tid, stack), owner);
        owner
    }

    fn frames_of(&mut self, id: u64, decode: &mut Decode<'_>) -> Vec<Frame> {
        if let Some(frames) = self.decoded.get(&id) {
            return frames.clone();
        }
        let raw = self.capture.borrow().stacks.stack(id);
        let frames = raw.map_or_else(Vec::new, |raw| decode(&mut raw.frames()));
        self.decoded.insert(id, frames.clone());
        frames
    }
}
