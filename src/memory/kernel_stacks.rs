//! In-kernel Python stacks at the moment memory is acquired (SPEC §2.4): the BPF object built
//! from `dtrace/bpf/memory_stacks.bpf.c`, its loading, and the events and stacks it produces.
//!
//! Owns: loading the object; attaching its page-fault and syscall tracepoints (faults, and the
//! `munmap`/`madvise`/`brk`/`mremap` calls that give pages back or move them) and, per target,
//! its allocator uprobes (the same sites as the counters in [`super::malloc`]); the per-process
//! walk offsets (`PMT_PROCS`), the thread-state handover (`PMT_THREADS`); draining the event ring and
//! looking up the raw stacks (code object address, instruction position, code tag triples) by id.
//! The watchpoint program of the same object (it shares the walker and its tables) is set on
//! addresses by [`super::watchpoints`].
//! Must not touch: what a code object means (user space decodes stacks through `python`),
//! which page belongs to which stack (the sampler's ledger), outputs.
//!
//! The tracepoints and uprobes are perf-event links: the kernel removes them when the fds
//! close, so nothing is left behind when this process dies, however it dies. Maps and
//! programs are fd-owned too (nothing is pinned).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{PerfEvent, TracePoint};
use aya::{Ebpf, EbpfLoader};

use super::malloc::{self, AttachedProbe, MallocError, MallocOptions};

/// The BPF object (committed, see `dtrace/bpf/build.sh`), or an empty one on an architecture
/// it is not built for (all but x86: the page-fault tracepoints are x86's).
#[cfg(not(any(pmt_no_bpf, pmt_no_memory_stacks)))]
static BPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memory_stacks.bpf.o"));
#[cfg(any(pmt_no_bpf, pmt_no_memory_stacks))]
static BPF_OBJECT: &[u8] = &[];

/// Python frames recorded per stack, innermost first (`MAX_DEPTH` in the C).
pub const MAX_DEPTH: usize = 128;

/// How the walker reads one target's frames: mirrors `struct py_layout` in the C.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BpfLayout {
    /// Address of the pointer to the first interpreter (`_PyRuntime.interpreters.head`).
    pub interp_head: u64,
    /// The target's PID namespace (`st_dev`, inode), to match `native_thread_id`s.
    pub pidns_dev: u64,
    /// See `pidns_dev`.
    pub pidns_ino: u64,
    /// `F_*` flags below.
    pub flags: u32,
    /// `PyInterpreterState` thread list head.
    pub interp_threads_head: u32,
    /// `PyThreadState.next`.
    pub tstate_next: u32,
    /// `PyThreadState` frame member (`frame`, `cframe`, `current_frame`).
    pub tstate_frame: u32,
    /// `_PyCFrame.current_frame` (with [`BpfLayout::F_CFRAME`]).
    pub cframe_current_frame: u32,
    /// `native_thread_id`, or with [`BpfLayout::F_NATIVE_ID`] unset glibc's tid offset in
    /// the `struct pthread` that `thread_id` points to.
    pub tstate_native_id: u32,
    /// `PyThreadState.thread_id`.
    pub tstate_thread_id: u32,
    /// `f_back` / `previous`.
    pub frame_back: u32,
    /// `f_code` / `f_executable`.
    pub frame_code: u32,
    /// `f_lasti` / `prev_instr` / `instr_ptr`.
    pub frame_lasti: u32,
    /// `_PyInterpreterFrame.owner`.
    pub frame_owner: u32,
    /// The first `owner` value of a shim frame.
    pub first_shim_owner: u32,
    /// Where the code object's tag lies (`co_filename`, and `co_name` beside it).
    pub code_tag: u32,
    /// Its length: 8 or 16 bytes.
    pub code_tag_len: u32,
}

/// The bytes of a frame the walker reads its members from (`FRAME_SPAN` in the C, which
/// masks every frame offset with it): a layout with a frame member past it is refused.
pub const FRAME_WINDOW: u32 = 256;

impl BpfLayout {
    /// Refuses a layout the walker would misread: every frame member it reads (8 bytes each,
    /// `owner` 1 byte) must lie within [`FRAME_WINDOW`].
    pub fn check_window(&self) -> Result<(), MallocError> {
        let members = [
            ("f_back/previous", self.frame_back, 8),
            ("f_code/f_executable", self.frame_code, 8),
            ("f_lasti/instr_ptr", self.frame_lasti, 8),
            ("owner", self.frame_owner, 1),
        ];
        for (field, offset, len) in members {
            if offset.saturating_add(len) > FRAME_WINDOW {
                return Err(MallocError::LayoutOutOfWindow {
                    field,
                    offset,
                    window: FRAME_WINDOW,
                });
            }
        }
        Ok(())
    }

    /// ≤ 3.10: frames are `PyFrameObject`s and `f_lasti` is an `int`.
    pub const F_FRAME_OBJECTS: u32 = 1;
    /// 3.11–3.12: the thread state points to a `_PyCFrame`.
    pub const F_CFRAME: u32 = 2;
    /// 3.12+: frames owned by the C stack or the interpreter are shims.
    pub const F_SHIMS: u32 = 4;
    /// 3.14+: `f_executable` is a tagged `_PyStackRef`.
    pub const F_TAGGED_CODE: u32 = 8;
    /// The thread state records the kernel thread id.
    pub const F_NATIVE_ID: u32 = 16;
}

// SAFETY: `BpfLayout` is `repr(C)`, all integers, without padding (3 × u64 then 14 × u32).
unsafe impl aya::Pod for BpfLayout {}

/// One recorded stack: mirrors `struct py_stack` in the C.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawStack {
    depth: u32,
    truncated: u32,
    code: [u64; MAX_DEPTH],
    pos: [u64; MAX_DEPTH],
    tag: [u64; MAX_DEPTH],
}

/// Stacks `PMT_STACKS` holds at most (`max_entries` in the C).
pub const STACK_TABLE_SIZE: usize = 65536;

// SAFETY: `RawStack` is `repr(C)`, all integers, without padding.
unsafe impl aya::Pod for RawStack {}

impl std::fmt::Debug for RawStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawStack")
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}

impl RawStack {
    /// `(code object address, instruction position, code object tag)` per frame, innermost
    /// first. The position is `f_lasti` before 3.11, else the frame's instruction pointer; the
    /// tag is the XOR of the words at [`BpfLayout::code_tag`] in the code object.
    pub fn frames(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        let depth = (self.depth as usize).min(MAX_DEPTH);
        (0..depth).map(|i| (self.code[i], self.pos[i], self.tag[i]))
    }
}

/// What an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A page fault at `addr`, taken by `stack`.
    Fault,
    /// `munmap(addr, len)`.
    Munmap,
    /// `madvise(addr, len, arg)` with an advice that drops the range's pages.
    Madvise,
    /// `brk` returned `addr`, the new program break.
    Brk,
    /// `mremap(addr, len, arg)` is starting (old address, old length, new length).
    MremapEnter,
    /// `mremap` returned `addr` (the new address, or a negative error).
    MremapExit,
    /// An allocation sample: `len` bytes in `arg` calls since the thread's previous sample,
    /// charged to `stack`.
    Alloc,
    /// The thread's last [`EventKind::Fault`] mapped a transparent huge page (the whole
    /// aligned huge page around its address).
    HugeFault,
    /// An anonymous private mapping of `len` bytes is being made by `stack`.
    MmapEnter,
    /// `mmap` returned `addr` (the mapping, or a negative error).
    MmapExit,
    /// The process made process `addr`, captured from its first page with its layout.
    Fork,
    /// The process exec'd: it is no longer captured (its layout no longer applies).
    Exec,
    /// The process exited: it is no longer captured.
    Exit,
    /// The thread was on a CPU at a tick of that CPU's clock, running `stack`.
    CpuSample,
    /// The thread came back to a CPU: it was off CPUs from `addr` to `len` (`CLOCK_MONOTONIC`
    /// nanoseconds), waiting in `stack`.
    OffCpu,
}

/// One event from the ring, in the order the kernel wrote them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEvent {
    /// What happened.
    pub kind: EventKind,
    /// The thread (kernel tid, as this process sees it).
    pub tid: u32,
    /// Its process.
    pub tgid: u32,
    /// See [`EventKind`].
    pub addr: u64,
    /// See [`EventKind`].
    pub len: u64,
    /// See [`EventKind`].
    pub arg: u64,
    /// The stack id (0: no Python stack could be read).
    pub stack: u64,
}

/// The C's event kinds (`EV_*` in memory_stacks.bpf.c): name, value, kind.
const EVENT_KINDS: [(&str, u32, EventKind); 15] = [
    ("EV_FAULT", 1, EventKind::Fault),
    ("EV_MUNMAP", 2, EventKind::Munmap),
    ("EV_MADVISE", 3, EventKind::Madvise),
    ("EV_BRK", 4, EventKind::Brk),
    ("EV_MREMAP_ENTER", 5, EventKind::MremapEnter),
    ("EV_MREMAP_EXIT", 6, EventKind::MremapExit),
    ("EV_ALLOC", 7, EventKind::Alloc),
    ("EV_HUGE_FAULT", 8, EventKind::HugeFault),
    ("EV_MMAP_ENTER", 9, EventKind::MmapEnter),
    ("EV_MMAP_EXIT", 10, EventKind::MmapExit),
    ("EV_FORK", 11, EventKind::Fork),
    ("EV_EXEC", 12, EventKind::Exec),
    ("EV_EXIT", 13, EventKind::Exit),
    ("EV_CPU_SAMPLE", 14, EventKind::CpuSample),
    ("EV_OFF_CPU", 15, EventKind::OffCpu),
];

/// The C's tally slots (`T_*` in `PMT_TALLIES`): name, index.
const TALLY_SLOTS: [(&str, u32); 8] = [
    ("T_LOST_EVENTS", 0),
    ("T_NO_THREAD", 1),
    ("T_READ_FAILED", 2),
    ("T_STACKS_FULL", 3),
    ("T_WALKS", 4),
    ("T_REUSED", 5),
    ("T_PROCS_FULL", 6),
    ("T_WATCH_FULL", 7),
];

/// `struct event` in the C.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawEvent {
    kind: u32,
    tid: u32,
    tgid: u32,
    pad: u32,
    addr: u64,
    len: u64,
    arg: u64,
    stack: u64,
}

impl RawEvent {
    fn parse(bytes: &[u8]) -> Option<MemoryEvent> {
        if bytes.len() < std::mem::size_of::<RawEvent>() {
            return None;
        }
        // SAFETY: the length was checked; `RawEvent` is plain integers, read unaligned.
        let raw: RawEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let (_, _, kind) = EVENT_KINDS
            .iter()
            .find(|(_, value, _)| *value == raw.kind)?;
        let kind = *kind;
        Some(MemoryEvent {
            kind,
            tid: raw.tid,
            tgid: raw.tgid,
            addr: raw.addr,
            len: raw.len,
            arg: raw.arg,
            stack: raw.stack,
        })
    }
}

/// What the BPF programs counted going wrong or right (`PMT_TALLIES`, summed over CPUs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tallies {
    /// Events dropped because the ring was full.
    pub lost_events: u64,
    /// Events from a target thread without a Python thread state.
    pub no_thread: u64,
    /// Walks cut short by a frame that could not be read.
    pub read_failed: u64,
    /// Stacks not stored because `PMT_STACKS` was full.
    pub stacks_full: u64,
    /// Stack walks done.
    pub walks: u64,
    /// Events that reused the thread's previous walk.
    pub reused: u64,
    /// Children of targets not captured because `PMT_PROCS` was full.
    pub procs_full: u64,
    /// Watchpoint hits not counted because `PMT_WATCH_HITS` was full.
    pub watch_full: u64,
}

/// What to capture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureOptions {
    /// Page faults and the calls that give pages back (the `rss` ledger).
    pub pages: bool,
    /// Mean bytes between two allocation samples of a thread (`None`: no allocator probes;
    /// `Some(0)`: every call is a sample).
    pub sample_bytes: Option<u64>,
    /// Load the watchpoint program ([`super::watchpoints`]).
    pub watchpoints: bool,
    /// Sample time: each CPU's clock ticks every this many nanoseconds and the target thread
    /// it interrupts is walked (on-CPU samples), and target threads are walked as they leave
    /// their CPU (off-CPU intervals). `None`: no time sampling.
    pub time_period_ns: Option<u64>,
}

/// An interval off CPUs still open: mirrors `struct off_cpu` in the C.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OffCpu {
    /// When the thread left its CPU (`CLOCK_MONOTONIC` nanoseconds).
    pub since: u64,
    /// The stack it waits in (0: unknown).
    pub stack: u64,
    /// The thread, as this process sees it.
    pub tid: u32,
    /// Its process.
    pub tgid: u32,
}

// SAFETY: plain integers, no padding (two u64 then two u32).
unsafe impl aya::Pod for OffCpu {}

/// Attaches the on-CPU sampler to every online CPU's clock, one tick per `period_ns` of
/// that CPU's time.
fn attach_cpu_clocks(ebpf: &mut Ebpf, period_ns: u64) -> Result<(), MallocError> {
    use aya::programs::perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent};
    let program: &mut PerfEvent = malloc::program_of(ebpf, CPU_SAMPLE_PROGRAM)?;
    program
        .load()
        .map_err(|e| MallocError::from_bpf(&format!("loading {CPU_SAMPLE_PROGRAM}"), &e))?;
    let cpus = aya::util::online_cpus().map_err(|(what, e)| MallocError::Bpf {
        what: format!("{what}: {e}"),
    })?;
    for cpu in cpus {
        program
            .attach(
                PerfEventConfig::Software(SoftwareEvent::CpuClock),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Period(period_ns),
                false,
            )
            .map_err(|e| MallocError::from_bpf(&format!("attaching to CPU {cpu}'s clock"), &e))?;
    }
    Ok(())
}

/// The page order of a transparent huge page (9 for 2 MiB of 4 KiB pages).
fn huge_order() -> u32 {
    let (huge, _) = crate::attach::proc_files::transparent_huge_pages();
    let page = crate::attach::proc_files::page_size();
    (huge / page).trailing_zeros()
}

/// The in-kernel stack capture. Dropping it detaches everything.
pub struct KernelStacks {
    events: RingBuf<MapData>,
    stacks: BpfHashMap<MapData, u64, RawStack>,
    procs: BpfHashMap<MapData, u32, BpfLayout>,
    threads: BpfHashMap<MapData, u32, u64>,
    last_walks: BpfHashMap<MapData, u32, [u64; 5]>,
    samplers: BpfHashMap<MapData, u32, [u64; 3]>,
    off_cpu: BpfHashMap<MapData, u32, OffCpu>,
    tallies: PerCpuArray<MapData, u64>,
    probes: HashMap<u32, Vec<AttachedProbe>>,
    options: CaptureOptions,
    // Owns the programs and their links.
    ebpf: Ebpf,
}

impl std::fmt::Debug for KernelStacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelStacks")
            .field("options", &self.options)
            .field("probes", &self.probes)
            .finish_non_exhaustive()
    }
}

/// The program counting watchpoint hits (`SEC("perf_event")` in the C).
pub(super) const WATCH_PROGRAM: &str = "pmt_watch";

/// The program on each CPU's clock ([`CaptureOptions::time_period_ns`]).
const CPU_SAMPLE_PROGRAM: &str = "pmt_cpu_sample";

/// The tracepoints of [`CaptureOptions::pages`]: (program, category, event).
const PAGE_TRACEPOINTS: [(&str, &str, &str); 10] = [
    ("pmt_fault_user", "exceptions", "page_fault_user"),
    ("pmt_fault_kernel", "exceptions", "page_fault_kernel"),
    ("pmt_munmap", "syscalls", "sys_enter_munmap"),
    ("pmt_madvise", "syscalls", "sys_enter_madvise"),
    ("pmt_brk", "syscalls", "sys_exit_brk"),
    ("pmt_mremap_enter", "syscalls", "sys_enter_mremap"),
    ("pmt_mremap_exit", "syscalls", "sys_exit_mremap"),
    ("pmt_huge_fault", "kmem", "mm_page_alloc"),
    ("pmt_mmap_enter", "syscalls", "sys_enter_mmap"),
    ("pmt_mmap_exit", "syscalls", "sys_exit_mmap"),
];

/// The tracepoints that follow the targets' processes (children, `exec`, exit), with pages or
/// time.
const PROCESS_TRACEPOINTS: [(&str, &str, &str); 3] = [
    ("pmt_fork", "task", "task_newtask"),
    ("pmt_exec", "sched", "sched_process_exec"),
    ("pmt_exit", "sched", "sched_process_exit"),
];

/// The tracepoint of [`CaptureOptions::time_period_ns`]: threads leaving and taking CPUs.
const TIME_TRACEPOINTS: [(&str, &str, &str); 1] = [("pmt_switch", "sched", "sched_switch")];

impl KernelStacks {
    /// Loads the programs and attaches the page tracepoints (with `options.pages`); targets
    /// are added with [`KernelStacks::add_process`].
    pub fn load(options: CaptureOptions) -> Result<KernelStacks, MallocError> {
        if BPF_OBJECT.is_empty() {
            return Err(MallocError::NoInKernelStacks);
        }
        malloc::check_privileges()?;
        let (pidns_dev, pidns_ino) =
            crate::attach::namespaces::reader_pid_namespace().unwrap_or((0, 0));
        let sample_bytes = options.sample_bytes.unwrap_or(0);
        let mut ebpf = EbpfLoader::new()
            .override_global("PIDNS_DEV", &pidns_dev, true)
            .override_global("PIDNS_INO", &pidns_ino, true)
            .override_global("SAMPLE_BYTES", &sample_bytes, true)
            .override_global("HUGE_ORDER", &huge_order(), true)
            .load(BPF_OBJECT)
            .map_err(|e| MallocError::from_bpf("loading the in-kernel stack programs", &e))?;
        let mut tracepoints: Vec<(&str, &str, &str)> = Vec::new();
        if options.pages {
            tracepoints.extend(PAGE_TRACEPOINTS);
        }
        if options.pages || options.time_period_ns.is_some() {
            tracepoints.extend(PROCESS_TRACEPOINTS);
        }
        if options.time_period_ns.is_some() {
            tracepoints.extend(TIME_TRACEPOINTS);
        }
        for (program, category, event) in tracepoints {
            let tracepoint: &mut TracePoint = malloc::program_of(&mut ebpf, program)?;
            tracepoint
                .load()
                .map_err(|e| MallocError::from_bpf(&format!("loading {program}"), &e))?;
            tracepoint.attach(category, event).map_err(|e| {
                MallocError::from_bpf(&format!("attaching to tracepoint {category}:{event}"), &e)
            })?;
        }
        if let Some(period_ns) = options.time_period_ns {
            attach_cpu_clocks(&mut ebpf, period_ns)?;
        }
        if options.watchpoints {
            let program: &mut PerfEvent = malloc::program_of(&mut ebpf, WATCH_PROGRAM)?;
            program
                .load()
                .map_err(|e| MallocError::from_bpf(&format!("loading {WATCH_PROGRAM}"), &e))?;
        }
        let map = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name).ok_or_else(|| MallocError::Bpf {
                what: format!("BPF object lacks map {name}"),
            })
        };
        let bad =
            |name: &'static str| move |e: aya::maps::MapError| MallocError::from_bpf(name, &e);
        Ok(KernelStacks {
            events: RingBuf::try_from(map(&mut ebpf, "PMT_EVENTS")?).map_err(bad("PMT_EVENTS"))?,
            stacks: BpfHashMap::try_from(map(&mut ebpf, "PMT_STACKS")?)
                .map_err(bad("PMT_STACKS"))?,
            procs: BpfHashMap::try_from(map(&mut ebpf, "PMT_PROCS")?).map_err(bad("PMT_PROCS"))?,
            threads: BpfHashMap::try_from(map(&mut ebpf, "PMT_THREADS")?)
                .map_err(bad("PMT_THREADS"))?,
            last_walks: BpfHashMap::try_from(map(&mut ebpf, "PMT_LAST_WALK")?)
                .map_err(bad("PMT_LAST_WALK"))?,
            samplers: BpfHashMap::try_from(map(&mut ebpf, "PMT_SAMPLERS")?)
                .map_err(bad("PMT_SAMPLERS"))?,
            off_cpu: BpfHashMap::try_from(map(&mut ebpf, "PMT_OFF_CPU")?)
                .map_err(bad("PMT_OFF_CPU"))?,
            tallies: PerCpuArray::try_from(map(&mut ebpf, "PMT_TALLIES")?)
                .map_err(bad("PMT_TALLIES"))?,
            probes: HashMap::new(),
            options,
            ebpf,
        })
    }

    /// Starts capturing process `pid` (its thread group), whose frames `layout` describes; with
    /// [`CaptureOptions::sample_bytes`] its allocator entry points are probed too.
    pub fn add_process(
        &mut self,
        pid: i32,
        layout: BpfLayout,
        allocators: &MallocOptions,
    ) -> Result<(), MallocError> {
        layout.check_window()?;
        let tgid: NonZeroU32 = malloc::thread_group(pid)?;
        self.procs
            .insert(tgid.get(), layout, 0)
            .map_err(|e| MallocError::from_bpf("adding the target to PMT_PROCS", &e))?;
        if self.options.sample_bytes.is_some() {
            let pid = i32::try_from(tgid.get()).map_err(|_| MallocError::NoSuchProcess { pid })?;
            let (sites, _) = malloc::probe_sites(pid, allocators)?;
            let probes = malloc::attach_uprobes(&mut self.ebpf, tgid, &sites)?;
            self.probes.insert(tgid.get(), probes);
        }
        Ok(())
    }

    /// Stops capturing process `tgid` (it exited, or is no longer followed): it leaves
    /// `PMT_PROCS`, its probes are detached, and its threads `tids` leave the per-thread
    /// tables (`PMT_THREADS`, `PMT_LAST_WALK`, `PMT_SAMPLERS`).
    pub fn remove_process(&mut self, tgid: u32, tids: impl IntoIterator<Item = u32>) {
        // A key already gone is not an error worth reporting: the tables only shrink here.
        let _ = self.procs.remove(&tgid);
        self.probes.remove(&tgid);
        for tid in tids {
            let _ = self.threads.remove(&tid);
            let _ = self.last_walks.remove(&tid);
            let _ = self.samplers.remove(&tid);
            let _ = self.off_cpu.remove(&tid);
        }
    }

    /// Processes being captured (`PMT_PROCS` entries).
    pub fn process_count(&self) -> usize {
        self.procs.keys().filter(Result::is_ok).count()
    }

    /// Threads whose thread state the walker holds (`PMT_THREADS` entries).
    pub fn thread_count(&self) -> usize {
        self.threads.keys().filter(Result::is_ok).count()
    }

    /// Removes stacks `ids` from the stack table (`PMT_STACKS`), after emptying the
    /// per-thread last walks (`PMT_LAST_WALK`) that may name them, for the walker to fill the
    /// table again. The caller keeps what it still needs of them first.
    pub fn remove_stacks(&mut self, ids: impl IntoIterator<Item = u64>) {
        let tids: Vec<u32> = self.last_walks.keys().filter_map(Result::ok).collect();
        for tid in &tids {
            let _ = self.last_walks.remove(tid);
        }
        for id in ids {
            let _ = self.stacks.remove(&id);
        }
    }

    /// Hands over the thread states of live Python threads: `(kernel tid, PyThreadState
    /// address)`. Threads not handed over are found by the walker itself.
    pub fn set_threads(&mut self, threads: &[(u32, u64)]) {
        for &(tid, tstate) in threads {
            if self.threads.get(&tid, 0).ok() != Some(tstate) {
                // A full LRU map evicts its oldest entry; an error here only costs a lookup.
                let _ = self.threads.insert(tid, tstate, 0);
            }
        }
    }

    /// Opens an interval off CPUs from `since` (`CLOCK_MONOTONIC` nanoseconds) for each of
    /// `threads` (kernel tid as the scheduler names it, the thread as this process sees it)
    /// not in one yet, in an unknown stack: threads that wait from before time sampling began
    /// are charged when they next run (a thread on a CPU now replaces its entry as it leaves).
    pub fn open_off_cpu(&mut self, tgid: u32, threads: &[(u32, u32)], since: u64) {
        for &(kernel_tid, tid) in threads {
            let open = OffCpu {
                since,
                stack: 0,
                tid,
                tgid,
            };
            // BPF_NOEXIST: an interval the scheduler opened since is the truer one.
            let _ = self.off_cpu.insert(kernel_tid, open, 1);
        }
    }

    /// The intervals off CPUs still open, by kernel tid (as the scheduler names it).
    pub fn off_cpu(&self) -> Vec<(u32, OffCpu)> {
        self.off_cpu.iter().filter_map(Result::ok).collect()
    }

    /// Closes the open interval of kernel thread `kernel_tid` (a thread gone).
    pub fn close_off_cpu(&mut self, kernel_tid: u32) {
        let _ = self.off_cpu.remove(&kernel_tid);
    }

    /// The ring of events, which polls readable while it holds an event not drained (the
    /// programs wake a reader only with the first event after it caught up).
    pub fn events_fd(&self) -> RawFd {
        self.events.as_raw_fd()
    }

    /// Appends every event written since the last call to `out`, oldest first.
    pub fn drain(&mut self, out: &mut Vec<MemoryEvent>) {
        while let Some(item) = self.events.next() {
            if let Some(event) = RawEvent::parse(&item) {
                out.push(event);
            }
        }
    }

    /// The stack recorded under `id`, if it is stored.
    pub fn stack(&self, id: u64) -> Option<RawStack> {
        self.stacks.get(&id, 0).ok()
    }

    /// The programs' tallies so far.
    pub fn tallies(&self) -> Tallies {
        let sum = |index: u32| {
            self.tallies
                .get(&index, 0)
                .map(|values| values.iter().sum())
                .unwrap_or(0)
        };
        let [
            lost,
            no_thread,
            read_failed,
            full,
            walks,
            reused,
            procs_full,
            watch_full,
        ] = TALLY_SLOTS.map(|(_, i)| sum(i));
        Tallies {
            lost_events: lost,
            no_thread,
            read_failed,
            stacks_full: full,
            walks,
            reused,
            procs_full,
            watch_full,
        }
    }

    /// The loaded object, for the watchpoints that share its walker and tables.
    pub(super) fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// The allocator probes attached, per process.
    pub fn probes(&self) -> impl Iterator<Item = &AttachedProbe> {
        self.probes.values().flatten()
    }

    /// What is captured.
    pub fn options(&self) -> CaptureOptions {
        self.options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::mem::{offset_of, size_of};

    /// The C source the object is built from.
    const SOURCE: &str = include_str!("../../dtrace/bpf/memory_stacks.bpf.c");

    /// `#define NAME VALUE` of the C source.
    fn c_define(name: &str) -> Option<u64> {
        SOURCE.lines().find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("#define") && words.next() == Some(name))
                .then(|| words.next()?.trim_end_matches("ULL").parse().ok())
                .flatten()
        })
    }

    /// Struct `name`'s size and members (name, byte offset), from the object's BTF.
    fn btf_struct(object: &[u8], name: &str) -> Option<(u32, Vec<(String, u32)>)> {
        use object::{Object, ObjectSection};
        let file = object::File::parse(object).ok()?;
        let btf = file.section_by_name(".BTF")?.data().ok()?;
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(btf.get(at..at + 4)?.try_into().ok()?))
        };
        let hdr_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let str_off = u32_at(16)? as usize;
        let string = |offset: u32| -> Option<String> {
            let start = hdr_len + str_off + offset as usize;
            let end = start + btf.get(start..)?.iter().position(|&b| b == 0)?;
            Some(String::from_utf8_lossy(btf.get(start..end)?).into_owned())
        };
        let mut at = hdr_len + type_off;
        while at < hdr_len + type_off + type_len {
            let (name_off, info, size) = (u32_at(at)?, u32_at(at + 4)?, u32_at(at + 8)?);
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            at += 12;
            if kind == 4 && string(name_off)? == name {
                let members = (0..vlen)
                    .map(|i| {
                        let m = at + 12 * i;
                        Some((string(u32_at(m)?)?, u32_at(m + 8)? / 8))
                    })
                    .collect::<Option<Vec<_>>>()?;
                return Some((size, members));
            }
            at += match kind {
                1 | 14 | 17 => 4,
                3 => 12,
                4 | 5 | 15 | 19 => 12 * vlen,
                6 | 13 => 8 * vlen,
                _ => 0,
            };
        }
        None
    }

    fn assert_struct(name: &str, size: usize, rust: &[(&str, usize)]) {
        let (c_size, members) = btf_struct(BPF_OBJECT, name).expect("the struct in the BTF");
        assert_eq!(c_size as usize, size, "struct {name}: size");
        let members: Vec<(&str, usize)> = members
            .iter()
            .map(|(n, o)| (n.as_str(), *o as usize))
            .collect();
        assert_eq!(members, rust, "struct {name}: members and offsets");
    }

    #[test]
    #[cfg(not(any(pmt_no_bpf, pmt_no_memory_stacks)))]
    fn every_field_matches_the_c_structs_of_the_object() {
        macro_rules! fields {
            ($t:ty; $($c:literal = $f:ident),*) => { [$(($c, offset_of!($t, $f))),*] };
        }
        assert_struct(
            "py_layout",
            size_of::<BpfLayout>(),
            &fields!(BpfLayout; "interp_head" = interp_head, "pidns_dev" = pidns_dev,
                "pidns_ino" = pidns_ino, "flags" = flags,
                "interp_threads_head" = interp_threads_head, "tstate_next" = tstate_next,
                "tstate_frame" = tstate_frame, "cframe_current_frame" = cframe_current_frame,
                "tstate_native_id" = tstate_native_id, "tstate_thread_id" = tstate_thread_id,
                "frame_back" = frame_back, "frame_code" = frame_code,
                "frame_lasti" = frame_lasti, "frame_owner" = frame_owner,
                "first_shim_owner" = first_shim_owner, "code_tag" = code_tag,
                "code_tag_len" = code_tag_len),
        );
        assert_struct(
            "py_stack",
            size_of::<RawStack>(),
            &fields!(RawStack; "depth" = depth, "truncated" = truncated, "code" = code,
                "pos" = pos, "tag" = tag),
        );
        assert_struct(
            "event",
            size_of::<RawEvent>(),
            &fields!(RawEvent; "kind" = kind, "tid" = tid, "tgid" = tgid, "pad" = pad,
                "addr" = addr, "len" = len, "arg" = arg, "stack" = stack),
        );
        assert_struct(
            "off_cpu",
            size_of::<OffCpu>(),
            &fields!(OffCpu; "since" = since, "stack" = stack, "tid" = tid, "tgid" = tgid),
        );
    }

    #[test]
    fn every_constant_matches_the_c_source() {
        for (name, value, _) in EVENT_KINDS {
            assert_eq!(c_define(name), Some(u64::from(value)), "{name}");
        }
        for (name, index) in TALLY_SLOTS {
            assert_eq!(c_define(name), Some(u64::from(index)), "{name}");
        }
        assert_eq!(c_define("T_COUNT"), Some(TALLY_SLOTS.len() as u64));
        for (name, value) in [
            ("F_FRAME_OBJECTS", BpfLayout::F_FRAME_OBJECTS),
            ("F_CFRAME", BpfLayout::F_CFRAME),
            ("F_SHIMS", BpfLayout::F_SHIMS),
            ("F_TAGGED_CODE", BpfLayout::F_TAGGED_CODE),
            ("F_NATIVE_ID", BpfLayout::F_NATIVE_ID),
        ] {
            assert_eq!(c_define(name), Some(u64::from(value)), "{name}");
        }
        assert_eq!(c_define("MAX_DEPTH"), Some(MAX_DEPTH as u64));
        assert_eq!(c_define("FRAME_SPAN"), Some(u64::from(FRAME_WINDOW)));
        let stacks_size = SOURCE
            .split("} PMT_STACKS")
            .next()
            .and_then(|head| head.rsplit("max_entries, ").next())
            .and_then(|tail| tail.split(')').next())
            .and_then(|n| n.parse::<usize>().ok());
        assert_eq!(stacks_size, Some(STACK_TABLE_SIZE));
    }

    #[test]
    fn a_frame_member_past_the_walkers_window_is_refused_in_one_line() {
        // 3.6's f_lasti is at 120: inside.
        let inside = BpfLayout {
            frame_back: 24,
            frame_code: 32,
            frame_lasti: 120,
            ..BpfLayout::default()
        };
        assert!(inside.check_window().is_ok());
        let last = BpfLayout {
            frame_lasti: FRAME_WINDOW - 8,
            frame_owner: FRAME_WINDOW - 1,
            ..inside
        };
        assert!(last.check_window().is_ok());
        let past = BpfLayout {
            frame_lasti: FRAME_WINDOW - 4,
            ..inside
        };
        let message = past.check_window().expect_err("refused").to_string();
        assert!(message.contains("f_lasti"), "{message}");
        assert!(
            message.contains(&format!("{}", FRAME_WINDOW - 4)),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");
        let owner = BpfLayout {
            frame_owner: FRAME_WINDOW,
            ..inside
        };
        assert!(owner.check_window().is_err());
    }

    #[test]
    fn events_parse_and_unknown_kinds_are_dropped() {
        let mut bytes = vec![0u8; 48];
        bytes[0] = 1;
        bytes[4] = 7;
        bytes[16] = 0x10;
        bytes[40] = 9;
        let event = RawEvent::parse(&bytes).expect("a fault");
        assert_eq!(event.kind, EventKind::Fault);
        assert_eq!((event.tid, event.addr, event.stack), (7, 0x10, 9));
        bytes[0] = 99;
        assert!(RawEvent::parse(&bytes).is_none());
        assert!(RawEvent::parse(&bytes[..20]).is_none());
    }
}
