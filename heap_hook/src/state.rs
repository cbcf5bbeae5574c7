//! The allocation hook's shared state: the one definition of what the hook (`heap_hook`, loaded
//! into the target) writes and what pmt (`src/memory/heap_hook.rs`) reads out of process. Both
//! compile this file; the layout is `repr(C)`, all fields naturally aligned, so the bytes pmt
//! reads are the structs the hook writes.
//!
//! Owns: the field layout, the constants both sides agree on. Must not touch: how the hook
//! samples, how pmt charges.
#![allow(dead_code)]

/// `b"pmt_heap"` read as a little-endian word: the state is initialised.
pub const MAGIC: u64 = u64::from_le_bytes(*b"pmt_heap");
/// The version of this layout; pmt refuses a hook of another version.
pub const VERSION: u32 = 4;
/// The name of the exported [`HeapState`] symbol.
pub const STATE_SYMBOL: &str = "PMT_HEAP_STATE";
/// The hook library's file name, by which pmt finds its mapping.
pub const LIBRARY_NAME: &str = "libpmt_heap_hook.so";
/// Frames recorded per stack at most (the innermost are kept).
pub const MAX_DEPTH: usize = 128;
/// Stacks the table holds at most; index 0 collects what found no room.
pub const MAX_STACKS: usize = 1 << 18;
/// Frame nodes the frame tree holds at most.
pub const MAX_FRAMES: usize = 1 << 20;
/// A frame node's `parent` when it is an outermost frame.
pub const NO_PARENT: u32 = u32::MAX;
/// Entries of the change log ([`HeapState::changes_addr`]): a ring of the stack indices whose
/// counters changed, so that pmt reads only those each tick, not the whole stack table.
pub const CHANGES: usize = 1 << 16;
/// A stack's `depth` bit saying its innermost frames were kept and the rest cut.
pub const DEPTH_TRUNCATED: u32 = 1 << 31;

/// How the hook walks the calling thread's frames: the subset of pmt's in-kernel walk layout
/// (`BpfLayout`) that a thread's own chain needs. Written by the loader at install time.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HookLayout {
    /// `F_*` flags below.
    pub flags: u32,
    /// `PyThreadState` frame member (`frame`, `cframe`, `current_frame`).
    pub tstate_frame: u32,
    /// `_PyCFrame.current_frame` (with [`HookLayout::F_CFRAME`]).
    pub cframe_current_frame: u32,
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

impl HookLayout {
    /// ≤ 3.10: frames are `PyFrameObject`s and `f_lasti` is an `int`.
    pub const F_FRAME_OBJECTS: u32 = 1;
    /// 3.11–3.12: the thread state points to a `_PyCFrame`.
    pub const F_CFRAME: u32 = 2;
    /// 3.12+: frames owned by the C stack or the interpreter are shims.
    pub const F_SHIMS: u32 = 4;
    /// 3.14+: `f_executable` is a tagged `_PyStackRef`.
    pub const F_TAGGED_CODE: u32 = 8;
    /// The byte size of the layout as the loader passes it.
    pub const SIZE: usize = 40;
    /// The largest member offset the hook reads within a frame or thread state.
    pub const MAX_OFFSET: u32 = 4096;
}

/// One node of the frame tree: a frame (as the in-kernel walker records it) below the node of
/// its caller. Stacks that share their outer frames share their nodes, so a program with deep,
/// varied stacks (a type checker's recursion) stores each distinct path once. Nodes are only
/// appended; a node's caller comes before it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameEntry {
    /// The code object's address.
    pub code: u64,
    /// `f_lasti` (≤ 3.10, sign-extended) or the instruction pointer (3.11+).
    pub position: u64,
    /// The XOR of the words at the code object's tag window when captured.
    pub tag: u64,
    /// The caller's node ([`NO_PARENT`] for an outermost frame).
    pub parent: u32,
    /// Padding.
    pub reserved: u32,
}

/// One distinct (thread, stack) of sampled allocations and what it allocated and freed. The
/// identity fields are written before the entry is published (`stacks_len`) and never change;
/// the four counters only grow.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StackEntry {
    /// Hash of the thread and frames.
    pub hash: u64,
    /// The allocating thread's kernel id (as the target's PID namespace numbers it).
    pub tid: u32,
    /// Frames recorded, with [`DEPTH_TRUNCATED`] when cut.
    pub depth: u32,
    /// The innermost frame's node in the frame tree (its callers follow by `parent`;
    /// [`NO_PARENT`] for a stack of no frames).
    pub first_frame: u32,
    /// Padding.
    pub reserved: u32,
    /// Estimated bytes allocated (each sample weighted by the inverse of its probability).
    pub alloc_bytes: u64,
    /// Estimated allocations.
    pub alloc_count: u64,
    /// Estimated bytes of those allocations freed since.
    pub freed_bytes: u64,
    /// Estimated allocations freed since.
    pub freed_count: u64,
}

/// The exported state (`PMT_HEAP_STATE`). Counters only grow, except that a forked child starts
/// afresh: its `pid` and `generation` change and its tables are emptied.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapState {
    /// [`MAGIC`] once initialised.
    pub magic: u64,
    /// [`VERSION`].
    pub version: u32,
    /// The process these tables belong to (`getpid()` in the target's PID namespace).
    pub pid: u32,
    /// Bumped each time the tables are emptied (a forked child).
    pub generation: u64,
    /// Mean bytes between two samples of a thread.
    pub sample_bytes: u64,
    /// 1 while the hook samples; 0 before install and after it has uninstalled itself.
    pub enabled: u32,
    /// The pid of the pmt that installed it (the hook uninstalls itself once it is gone).
    pub owner_pid: u32,
    /// Stacks published in `stacks` (entries below it are complete).
    pub stacks_len: u64,
    /// Frame nodes published in `frames` (nodes below it are complete).
    pub frames_len: u64,
    /// Address of the [`StackEntry`] array ([`MAX_STACKS`] entries).
    pub stacks_addr: u64,
    /// Address of the frame tree: [`FrameEntry`] nodes ([`MAX_FRAMES`] entries).
    pub frames_addr: u64,
    /// Allocations sampled.
    pub samples: u64,
    /// Sampled allocations not yet freed.
    pub live_samples: u64,
    /// Samples whose stack found no room (charged to stack 0).
    pub stacks_full: u64,
    /// Samples not remembered because the live table was full (their frees are not seen).
    pub table_full: u64,
    /// Samples made by a thread without a Python thread state.
    pub no_thread_state: u64,
    /// Bytes the hook's own tables hold resident-ish (the live table as sized now).
    pub table_bytes: u64,
    /// The walk layout in use.
    pub layout: HookLayout,
    /// Address of the change log: [`CHANGES`] `u32` stack indices, a ring. Each time a
    /// stack's counters change, its index is written at `changes_written % CHANGES`, then
    /// `changes_written` is bumped: a reader that has seen the log up to `n` reads the stacks
    /// named in `[n, changes_written)`, or the whole table when more than [`CHANGES`] were
    /// written since (the ring went round).
    pub changes_addr: u64,
    /// Indices written to the change log since the tables were last emptied.
    pub changes_written: u64,
    /// The `OPT_*` options the hook was installed with.
    pub options: u32,
    /// Zero.
    pub reserved: u32,
}

/// [`HeapState::options`]: objects CPython recycles through its free lists (3.13+) are followed
/// with a reference tracer, so that what is made from a free list is charged to the stack that
/// made it (not to the one that first allocated the memory). It costs the target most on code
/// that makes many short-lived ints, floats and tuples.
pub const OPT_FREE_LISTS: u32 = 1;
