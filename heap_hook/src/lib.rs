//! The allocation-sampling hook that pmt loads into a target for the `heap` metric (SPEC §2.5).
//!
//! Installed with PEP 445's `PyMem_GetAllocator`/`PyMem_SetAllocator` around the raw, mem and
//! object domains, it passes every call through to the allocator it wraps. Allocations are
//! sampled by bytes: each thread counts down a random interval (exponential, mean
//! `sample_bytes`, as tcmalloc and Go do), and the allocation that crosses it is sampled and
//! weighted by the inverse of its probability (`1 / (1 - exp(-size / mean))`), so the estimates
//! are unbiased. A sampled allocation records its thread's Python stack (code object,
//! instruction, code tag per frame, walked with the layout pmt hands over) as a path of a
//! frame tree (stacks that share their callers share their nodes) and a stack entry per
//! (thread, innermost node), and is remembered in a table of live samples until it is freed.
//! pmt reads [`state::HeapState`] and the tables out of process.
//!
//! The common path of an allocation is a per-thread countdown (found by the thread pointer,
//! not through the dynamic linker); of a free, one byte of a
//! counting filter (is any live sample hashed here?). Everything else happens on the sampled
//! path under one spin lock. The hook never allocates (its tables are mmapped), never calls
//! into Python except `Py_IncRef` on the code objects of a new stack while the GIL is held (so
//! they outlive the stacks that name them), and uninstalls itself once the pmt that installed
//! it is gone. A forked child starts with empty tables.
//!
//! CPython recycles small objects (floats, tuples, lists, dicts…) through free lists: the code
//! that takes one from a free list calls no allocator, and the one that puts it there frees
//! nothing, so an allocator hook alone charges what a keeper holds to whichever code first
//! allocated the memory. From 3.13 on the hook also installs a reference tracer
//! (`PyRefTracer_SetTracer`): an object created from recycled memory forgets the sample that
//! was there (as a free would have) and counts down the thread's interval by a fixed unit (so
//! it is sampled with a fixed probability, weighted by its size over that probability, and
//! charged to its creator); a dict's destruction forgets its keys table, which goes to a free
//! list of its own. CPython calls the tracer at every object's creation and destruction, so its
//! common path reads neither the object's size nor, unless the filter says a sample may be
//! there, its type.
//!
//! Owns: the wrappers, sampling, stack capture in the target, the tables.
//! Must not touch: anything pmt decides (layouts, which processes, the metric).
//! Depends on nothing but the C library: it is built by pmt's build script with `rustc` alone.

#![allow(clippy::missing_safety_doc)]

mod state;

use state::{
    CHANGES, DEPTH_TRUNCATED, FrameEntry, HeapState, HookLayout, MAGIC, MAX_DEPTH, MAX_FRAMES, MAX_STACKS,
    NO_PARENT, OPT_FREE_LISTS, StackEntry, VERSION,
};
use std::cell::{Cell, UnsafeCell};
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

// ---------------------------------------------------------------------------------------------
// The C library and the CPython API, resolved at install time.

unsafe extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn mmap(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, off: i64)
    -> *mut c_void;
    fn munmap(addr: *mut c_void, len: usize) -> c_int;
    fn getpid() -> c_int;
    fn syscall(number: i64, ...) -> i64;
    fn kill(pid: c_int, sig: c_int) -> c_int;
    fn pthread_atfork(
        prepare: Option<unsafe extern "C" fn()>,
        parent: Option<unsafe extern "C" fn()>,
        child: Option<unsafe extern "C" fn()>,
    ) -> c_int;
    fn sched_yield() -> c_int;
    fn clock_gettime(clock: c_int, ts: *mut [i64; 2]) -> c_int;
    fn __errno_location() -> *mut c_int;
}

const PROT_READ_WRITE: c_int = 0x1 | 0x2;
const MAP_PRIVATE_ANONYMOUS_NORESERVE: c_int = 0x02 | 0x20 | 0x4000;
const MAP_FAILED: *mut c_void = !0usize as *mut c_void;
const SYS_GETTID: i64 = 186;
const ESRCH: c_int = 3;
const CLOCK_MONOTONIC_COARSE: c_int = 6;

/// `PyMemAllocatorEx`, the same from CPython 3.5 on.
#[repr(C)]
#[derive(Clone, Copy)]
struct Allocator {
    ctx: *mut c_void,
    malloc: Option<unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void>,
    calloc: Option<unsafe extern "C" fn(*mut c_void, usize, usize) -> *mut c_void>,
    realloc: Option<unsafe extern "C" fn(*mut c_void, *mut c_void, usize) -> *mut c_void>,
    free: Option<unsafe extern "C" fn(*mut c_void, *mut c_void)>,
}

const EMPTY_ALLOCATOR: Allocator = Allocator {
    ctx: std::ptr::null_mut(),
    malloc: None,
    calloc: None,
    realloc: None,
    free: None,
};

type GetAllocator = unsafe extern "C" fn(c_int, *mut Allocator);
type SetAllocator = unsafe extern "C" fn(c_int, *mut Allocator);
type ThisThreadState = unsafe extern "C" fn() -> *mut c_void;
type GilCheck = unsafe extern "C" fn() -> c_int;
type IncRef = unsafe extern "C" fn(*mut c_void);
/// `PyRefTracer` (3.13+): called with the object, `PyRefTracer_CREATE` (0) or `_DESTROY` (1).
type RefTracer = unsafe extern "C" fn(*mut c_void, c_int, *mut c_void) -> c_int;
type SetRefTracer = unsafe extern "C" fn(Option<RefTracer>, *mut c_void) -> c_int;
type GetRefTracer = unsafe extern "C" fn(*mut *mut c_void) -> Option<RefTracer>;
const REF_CREATE: c_int = 0;
const REF_DESTROY: c_int = 1;

/// The CPython functions the hook calls.
#[derive(Clone, Copy)]
struct Api {
    set_allocator: SetAllocator,
    this_thread_state: ThisThreadState,
    gil_check: GilCheck,
    inc_ref: IncRef,
    /// `PyRefTracer_SetTracer` and `_GetTracer`, where the interpreter has them (3.13+).
    ref_tracer: Option<(SetRefTracer, GetRefTracer)>,
}

// ---------------------------------------------------------------------------------------------
// Global state.

/// A global the hook mutates under its own discipline (the lock, or install time).
#[repr(transparent)]
pub struct Global<T>(UnsafeCell<T>);
// SAFETY: every access is either at install (GIL held, before the wrappers run) or under
// `LOCK`, or through atomics of naturally aligned words.
unsafe impl<T> Sync for Global<T> {}

impl<T> Global<T> {
    const fn new(value: T) -> Self {
        Global(UnsafeCell::new(value))
    }
    fn get(&self) -> *mut T {
        self.0.get()
    }
}

const EMPTY_STATE: HeapState = HeapState {
    magic: 0,
    version: 0,
    pid: 0,
    generation: 0,
    sample_bytes: 0,
    enabled: 0,
    owner_pid: 0,
    stacks_len: 0,
    frames_len: 0,
    stacks_addr: 0,
    frames_addr: 0,
    samples: 0,
    live_samples: 0,
    stacks_full: 0,
    table_full: 0,
    no_thread_state: 0,
    table_bytes: 0,
    layout: HookLayout {
        flags: 0,
        tstate_frame: 0,
        cframe_current_frame: 0,
        frame_back: 0,
        frame_code: 0,
        frame_lasti: 0,
        frame_owner: 0,
        first_shim_owner: 0,
        code_tag: 0,
        code_tag_len: 0,
    },
    changes_addr: 0,
    changes_written: 0,
    options: 0,
    reserved: 0,
};

/// What pmt reads: found through this symbol of the loaded library.
#[unsafe(no_mangle)]
pub static PMT_HEAP_STATE: Global<HeapState> = Global::new(EMPTY_STATE);

/// The wrapped allocators, one per domain (raw, mem, object).
static ORIGINAL: Global<[Allocator; 3]> = Global::new([EMPTY_ALLOCATOR; 3]);
static API: Global<Option<Api>> = Global::new(None);
/// Whether the wrappers sample (cleared when the hook uninstalls itself).
static SAMPLING: AtomicBool = AtomicBool::new(false);
/// Whether the wrappers are installed in CPython's allocator table.
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// One bit per bucket of the counting filter, set while its counter is not zero: what the
/// common path of a free reads (32 KiB, where the counters are 256 KiB: it stays in cache
/// beside a workload that streams through memory). Null: no live sample can exist.
static FILTER: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static LOCK: AtomicBool = AtomicBool::new(false);
/// The reference tracer the hook's own passes every event on to (installed before it).
static PREVIOUS_TRACER: Global<(Option<RefTracer>, *mut c_void)> =
    Global::new((None, std::ptr::null_mut()));
/// The next time (coarse monotonic seconds) to check that pmt is still there.
static NEXT_OWNER_CHECK: AtomicU64 = AtomicU64::new(0);

const FILTER_BITS: u32 = 18;
/// The bytes of the counting filter's bits: a bit per bucket, then a byte that
/// [`any_of_three_buckets`]'s two-byte read reaches past the last group's last byte.
const FILTER_BIT_BYTES: usize = (1 << FILTER_BITS) / 8 + 1;
/// The counting filter's mapping: a byte per bucket, then the bits.
const FILTER_BYTES: usize = (1 << FILTER_BITS) + FILTER_BIT_BYTES;

/// The byte of the filter's bits that holds `bucket`'s.
///
/// # Safety
/// `filter` is the counting filter's mapping.
unsafe fn filter_bit(filter: *mut u8, bucket: usize) -> &'static std::sync::atomic::AtomicU8 {
    // SAFETY: within the mapping, which is never unmapped.
    unsafe { std::sync::atomic::AtomicU8::from_ptr(filter.add((1 << FILTER_BITS) + (bucket >> 3))) }
}
/// The indexes of stacks and frame nodes start small and double as entries come (half full at
/// most): a target with few distinct stacks keeps them small.
const INDEX_MIN_BITS: u32 = 12;
const STACK_INDEX_MAX_BITS: u32 = MAX_STACKS.trailing_zeros() + 1;
const FRAME_INDEX_MAX_BITS: u32 = MAX_FRAMES.trailing_zeros() + 1;
const LIVE_MIN_BITS: u32 = 12;
const LIVE_MAX_BITS: u32 = 24;

/// The tables, under `LOCK`.
struct Tables {
    /// Stacks by (thread, innermost node) hash.
    stack_index: Index,
    stacks: *mut StackEntry,
    /// The frame tree's nodes.
    frames: *mut FrameEntry,
    /// Frame nodes by (parent, frame) hash.
    frame_index: Index,
    live: *mut LiveSample,
    /// The change log ([`CHANGES`] stack indices, a ring).
    changes: *mut u32,
    /// The counting filter: a counter per bucket, then the bucket bits (published in
    /// `FILTER` while the hook is installed).
    filter: *mut u8,
    live_bits: u32,
    live_used: usize,
    live_tombs: usize,
}

static TABLES: Global<Tables> = Global::new(Tables {
    stack_index: Index::empty(),
    stacks: std::ptr::null_mut(),
    frames: std::ptr::null_mut(),
    frame_index: Index::empty(),
    live: std::ptr::null_mut(),
    changes: std::ptr::null_mut(),
    filter: std::ptr::null_mut(),
    live_bits: 0,
    live_used: 0,
    live_tombs: 0,
});

/// One sampled allocation not yet freed.
#[repr(C)]
#[derive(Clone, Copy)]
struct LiveSample {
    /// Its address; 0 empty, 1 a removed entry.
    ptr: u64,
    stack: u32,
    reserved: u32,
    bytes: u64,
    count: u64,
}

const TOMB: u64 = 1;

/// What the hook's common path keeps per thread: reached once per call, so it must be cheap
/// to find (see [`hot`]).
struct Hot {
    /// Bytes this thread may still allocate before its next sample.
    countdown: Cell<i64>,
    /// Set while the thread is inside the hook's sampled path.
    busy: Cell<bool>,
    /// Set while the thread is inside a wrapped allocator: a call it makes to another domain
    /// (pymalloc hands large blocks to the raw domain) is part of the outer call, counted once.
    inside: Cell<bool>,
    /// The block the thread's last allocator call returned, until an object created in it
    /// says it came from the allocator (and was counted there), not from a free list.
    last_alloc: Cell<u64>,
}

impl Hot {
    const fn new() -> Self {
        Hot {
            countdown: Cell::new(0),
            busy: Cell::new(false),
            inside: Cell::new(false),
            last_alloc: Cell::new(0),
        }
    }
}

/// What the hook keeps per thread in a thread-local block: what only the sampled path needs,
/// and the common path's state for a thread that finds no slot (see [`hot`]).
struct ThreadState {
    hot: Hot,
    /// The thread's random state (0: not seeded).
    rng: Cell<u64>,
    /// The thread's kernel id (0: not known yet).
    tid: Cell<u32>,
}

thread_local! {
    static THREAD: ThreadState = const {
        ThreadState { hot: Hot::new(), rng: Cell::new(0), tid: Cell::new(0) }
    };
}

/// The calling thread's thread-local block. In a library loaded with `dlopen` each access is a
/// call into the dynamic linker (`__tls_get_addr`): the sampled path only.
#[inline(always)]
fn thread() -> &'static ThreadState {
    // SAFETY: the block is const-initialised and has no destructor, so it lives as long as
    // its thread; the reference is used only within the calling thread's current call.
    THREAD.with(|t| unsafe { &*(t as *const ThreadState) })
}

/// A slot of the common path's per-thread state, claimed by the first thread whose thread
/// pointer hashes to it and kept by that thread pointer (a thread that reuses a dead thread's
/// stack and thread block, as glibc's stack cache does, takes over its countdown: intervals
/// are memoryless, and a thread cannot end inside an allocator call, so the flags are clear).
#[cfg(target_arch = "x86_64")]
#[repr(C, align(64))]
struct Slot {
    owner: AtomicU64,
    hot: Hot,
}

#[cfg(target_arch = "x86_64")]
const SLOT_BITS: u32 = 10;

#[cfg(target_arch = "x86_64")]
static SLOTS: Global<[Slot; 1 << SLOT_BITS]> = Global::new(
    [const {
        Slot {
            owner: AtomicU64::new(0),
            hot: Hot::new(),
        }
    }; 1 << SLOT_BITS],
);

/// The slot of the calling thread's common-path state, and its thread pointer (`%fs:0`, one
/// load) that owns it unless another live thread does.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn own_slot() -> (&'static Slot, u64) {
    let tp: u64;
    // SAFETY: on x86-64 Linux `%fs:0` holds the thread control block's own address (glibc
    // and musl), readable by its thread at any time.
    unsafe {
        std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp,
            options(nostack, readonly, preserves_flags, pure));
    }
    let index = (tp.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SLOT_BITS)) as usize;
    // SAFETY: a slot's `hot` is used only by the thread whose pointer owns the slot.
    (unsafe { &(*SLOTS.get())[index] }, tp)
}

/// The calling thread's common-path state: on x86-64 a slot found by the thread pointer
/// instead of a call into the dynamic linker; the thread-local block where the slot is
/// another live thread's.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn hot() -> &'static Hot {
    let (slot, tp) = own_slot();
    if slot.owner.load(Ordering::Relaxed) == tp {
        return &slot.hot;
    }
    claim(slot, tp)
}

/// The calling thread's common-path state where that needs no call: its slot, once claimed.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn owned_hot() -> Option<&'static Hot> {
    let (slot, tp) = own_slot();
    (slot.owner.load(Ordering::Relaxed) == tp).then_some(&slot.hot)
}

#[cfg(target_arch = "x86_64")]
#[cold]
#[inline(never)]
fn claim(slot: &'static Slot, tp: u64) -> &'static Hot {
    match slot.owner.compare_exchange(0, tp, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => &slot.hot,
        Err(owner) if owner == tp => &slot.hot,
        Err(_) => &thread().hot,
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn hot() -> &'static Hot {
    &thread().hot
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn owned_hot() -> Option<&'static Hot> {
    Some(hot())
}

/// Runs `call`, saying whether it was the outermost allocator call of `t`'s thread (an inner
/// one is made all the same, but not counted).
#[inline(always)]
fn outermost<T>(t: &Hot, call: impl FnOnce() -> T) -> (T, bool) {
    if t.inside.replace(true) {
        return (call(), false);
    }
    let result = call();
    t.inside.set(false);
    (result, true)
}

fn state() -> *mut HeapState {
    PMT_HEAP_STATE.get()
}

/// An atomic view of a `u64` field of the shared state or tables.
unsafe fn word(field: *mut u64) -> &'static AtomicU64 {
    // SAFETY: the field is naturally aligned and lives as long as the library.
    unsafe { AtomicU64::from_ptr(field) }
}

fn lock() {
    while LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        // SAFETY: plain system call.
        unsafe { sched_yield() };
    }
}

fn unlock() {
    LOCK.store(false, Ordering::Release);
}

fn mix(h: u64, v: u64) -> u64 {
    let h = (h ^ v).wrapping_mul(0x100_0000_01b3);
    h ^ (h >> 29)
}

fn pointer_hash(ptr: u64) -> u64 {
    (ptr >> 4).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The counting filter's bucket of an address: a group of 256 buckets per 4 KiB page, chosen
/// by a mixing hash of the page (so that blocks at the same offsets of the allocator's
/// same-shaped pools do not alias), and the address's 16-byte granule within the page, so
/// that the blocks of a page (a free list's, a pool's) share one cache line of the filter's
/// bits instead of missing the cache at every check.
#[inline(always)]
fn filter_bucket(ptr: u64) -> usize {
    let group = (ptr >> 12).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - (FILTER_BITS - 8));
    ((group as usize) << 8) | ((ptr >> 4) & 0xff) as usize
}

unsafe fn map_zeroed(bytes: usize) -> *mut c_void {
    // SAFETY: a fresh private anonymous mapping.
    let p = unsafe {
        mmap(
            std::ptr::null_mut(),
            bytes,
            PROT_READ_WRITE,
            MAP_PRIVATE_ANONYMOUS_NORESERVE,
            -1,
            0,
        )
    };
    if p == MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p
    }
}

// ---------------------------------------------------------------------------------------------
// The wrappers: one set per domain, each passing through to the allocator it wraps. Their
// context is the wrapped allocator's own, so a caller that reads the allocator table while it
// is being swapped gets a consistent pair either way.

unsafe extern "C" fn hook_malloc<const D: usize>(ctx: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: ORIGINAL[D] was filled before the wrappers were installed.
    let original = unsafe { (*ORIGINAL.get())[D] };
    let Some(malloc) = original.malloc else {
        return std::ptr::null_mut();
    };
    let t = hot();
    // SAFETY: passing the call through.
    let (p, outer) = outermost(t, || unsafe { malloc(ctx, size) });
    if outer {
        after_alloc(t, p, size);
    }
    p
}

unsafe extern "C" fn hook_calloc<const D: usize>(
    ctx: *mut c_void,
    nelem: usize,
    elsize: usize,
) -> *mut c_void {
    // SAFETY: as in `hook_malloc`.
    let original = unsafe { (*ORIGINAL.get())[D] };
    let Some(calloc) = original.calloc else {
        return std::ptr::null_mut();
    };
    let t = hot();
    // SAFETY: passing the call through.
    let (p, outer) = outermost(t, || unsafe { calloc(ctx, nelem, elsize) });
    if outer {
        after_alloc(t, p, nelem.saturating_mul(elsize));
    }
    p
}

unsafe extern "C" fn hook_realloc<const D: usize>(
    ctx: *mut c_void,
    ptr: *mut c_void,
    size: usize,
) -> *mut c_void {
    // SAFETY: as in `hook_malloc`.
    let original = unsafe { (*ORIGINAL.get())[D] };
    let Some(realloc) = original.realloc else {
        return std::ptr::null_mut();
    };
    let t = hot();
    if t.inside.get() {
        // SAFETY: passing the call through, inside an outer call that counts it.
        return unsafe { realloc(ctx, ptr, size) };
    }
    before_free(ptr);
    // SAFETY: passing the call through.
    let (p, _) = outermost(t, || unsafe { realloc(ctx, ptr, size) });
    after_alloc(t, p, size);
    p
}

unsafe extern "C" fn hook_free<const D: usize>(ctx: *mut c_void, ptr: *mut c_void) {
    // SAFETY: as in `hook_malloc`.
    let original = unsafe { (*ORIGINAL.get())[D] };
    let Some(free) = original.free else {
        return;
    };
    // A free needs no thread state: one made inside another wrapped call (pymalloc handing a
    // large block back to the raw domain) finds the sample already forgotten by the outer one.
    before_free(ptr);
    // SAFETY: passing the call through.
    unsafe { free(ctx, ptr) }
}

/// The common path of an allocation: count the bytes down.
#[inline(always)]
fn after_alloc(t: &Hot, p: *mut c_void, size: usize) {
    if p.is_null() {
        return;
    }
    t.last_alloc.set(p as u64);
    let left = t.countdown.get().wrapping_sub(size as i64);
    t.countdown.set(left);
    if left <= 0 {
        sampled(t, p, size, size as u64);
    }
}

/// The common path of a free: is any live sample hashed where `ptr` would be?
#[inline(always)]
fn before_free(ptr: *mut c_void) {
    if let Some(bucket) = sampled_bucket(ptr as u64) {
        forget(ptr as u64, bucket);
    }
}

/// The counting filter's bucket of `ptr` if a live sample may be hashed there.
#[inline(always)]
fn sampled_bucket(ptr: u64) -> Option<usize> {
    if ptr == 0 {
        return None;
    }
    let filter = FILTER.load(Ordering::Acquire);
    if filter.is_null() {
        return None;
    }
    let bucket = filter_bucket(ptr);
    // SAFETY: the bits are 1 << FILTER_BITS of them and are never unmapped.
    (unsafe { *filter.add(bucket >> 3) } & (1 << (bucket & 7)) != 0).then_some(bucket)
}

/// Whether a live sample may start at `obj`, 16 or 32 bytes before it (where a recycled
/// object's block starts, by its type's [`pre_header`]).
#[inline(always)]
fn may_start_a_sample_before(obj: u64) -> bool {
    let filter = FILTER.load(Ordering::Acquire);
    // SAFETY: `FILTER` is null or the filter's bits, which are never unmapped.
    !filter.is_null() && unsafe { any_of_three_buckets(filter, obj) }
}

/// Whether any of the filter's bits is set for the buckets of `obj - 32`, `obj - 16` and
/// `obj`: within a page, three bits next to each other, read with one two-byte load that
/// waits for no read of the object's type.
///
/// # Safety
/// `bits` points at the filter's [`FILTER_BIT_BYTES`].
#[inline(always)]
unsafe fn any_of_three_buckets(bits: *const u8, obj: u64) -> bool {
    if obj & 0xfff < 32 {
        // The three are in two pages' groups: the exact check decides.
        return true;
    }
    // Within one page's group of 256 (`first + 2` is in the same group). The byte after
    // `first / 8` may be the next group's, or past the last group's the padding byte.
    let first = filter_bucket(obj - 32);
    // SAFETY: bytes `first / 8` and the next are within the bits and their padding.
    let word = unsafe { (bits.add(first >> 3) as *const u16).read_unaligned() };
    (word >> (first & 7)) & 0b111 != 0
}

// ---------------------------------------------------------------------------------------------
// The reference tracer (3.13+): objects recycled through CPython's free lists.

/// Offsets of the object header and type that every supported (not free-threaded) 64-bit
/// CPython shares: `ob_type`, `ob_size`, `tp_basicsize`, `tp_itemsize`, `tp_flags`.
const OB_TYPE: usize = 8;
const OB_SIZE: usize = 16;
const TP_BASICSIZE: usize = 32;
const TP_ITEMSIZE: usize = 40;
const TP_FLAGS: usize = 168;
const TPFLAGS_HAVE_GC: u64 = 1 << 14;
/// `Py_TPFLAGS_MANAGED_DICT | Py_TPFLAGS_MANAGED_WEAKREF`: two words before the GC header.
const TPFLAGS_PREHEADER: u64 = (1 << 3) | (1 << 4);
/// `Py_TPFLAGS_DICT_SUBCLASS`, and where a dict keeps its keys table and its split values
/// (`PyDictObject.ma_keys`, `.ma_values`, 3.13 to 3.15).
const TPFLAGS_DICT_SUBCLASS: u64 = 1 << 29;
/// `Py_TPFLAGS_LONG_SUBCLASS`: an int, whose `ob_size` word is `lv_tag` (3.12+; the tracer is
/// 3.13+).
const TPFLAGS_LONG_SUBCLASS: u64 = 1 << 24;
const DICT_KEYS: usize = 32;
const DICT_VALUES: usize = 40;
/// The largest object a recycled one is taken to be (a bad `ob_size` counts no more).
const MAX_RECYCLED_BYTES: u64 = 1 << 20;

/// What a recycled object counts down its thread's interval by, whatever its size. Its size
/// takes three more reads of its type and its item count, which only the sampled path needs:
/// each recycled object is sampled with the same probability, `1 - exp(-RECYCLED_UNIT /
/// mean)`, and weighted by its own size over that probability ([`weights`]), which keeps the
/// estimates unbiased (the objects free lists recycle are small: ints, floats, tuples of up to
/// 20 items, lists, dicts).
const RECYCLED_UNIT: u64 = 64;

/// How far before an object its block starts: the GC header, and the managed-dict
/// pre-header (3.13's `_PyType_PreHeaderSize`), by its type's flags.
#[inline(always)]
fn pre_header(flags: u64) -> u64 {
    let mut pre = 0;
    if flags & TPFLAGS_HAVE_GC != 0 {
        pre += 16;
    }
    if flags & TPFLAGS_PREHEADER != 0 {
        pre += 16;
    }
    pre
}

/// An object's type and its flags (`None` where its type is not set yet).
///
/// # Safety
/// `obj` is a live object (CPython sets the type before `_Py_NewReference`).
#[inline(always)]
unsafe fn type_flags(obj: u64) -> Option<(u64, u64)> {
    // SAFETY: the object's header and its type object, both alive (see above).
    unsafe {
        let tp = *((obj as usize + OB_TYPE) as *const u64);
        if tp == 0 {
            return None;
        }
        Some((tp, *((tp as usize + TP_FLAGS) as *const u64)))
    }
}

/// An object's block as the allocator returned it (before the GC header and the managed-dict
/// pre-header), its size in bytes, and its type's flags.
///
/// # Safety
/// `obj` is a live object whose type is set (CPython sets it before `_Py_NewReference`).
unsafe fn object_block(obj: u64) -> Option<(u64, u64, u64)> {
    // SAFETY: the object's header and its type object, both alive (see above).
    unsafe {
        let (tp, flags) = type_flags(obj)?;
        let pre = pre_header(flags);
        let basic = *((tp as usize + TP_BASICSIZE) as *const i64);
        let item = *((tp as usize + TP_ITEMSIZE) as *const i64);
        let mut size = basic.max(0) as u64;
        if item > 0 {
            let word = *((obj as usize + OB_SIZE) as *const i64);
            // An int (3.12+) keeps its digit count above three flag bits (`lv_tag`).
            let len = if flags & TPFLAGS_LONG_SUBCLASS != 0 { (word >> 3).max(1) } else { word };
            size += (item as u64).saturating_mul(len.clamp(0, 1 << 24) as u64);
        }
        Some((obj - pre, (size + pre).min(MAX_RECYCLED_BYTES), flags))
    }
}

/// The hook's reference tracer. Its common paths make no call but the chained one, so that
/// they save no registers: whatever needs more goes on in [`created_slowly`] or
/// [`destroyed_slowly`], which chain the event themselves.
unsafe extern "C" fn ref_tracer(obj: *mut c_void, event: c_int, data: *mut c_void) -> c_int {
    if !obj.is_null() && SAMPLING.load(Ordering::Relaxed) {
        if event == REF_CREATE {
            if !created_quickly(obj as u64) {
                // SAFETY: as this function's own caller.
                return unsafe { created_slowly(obj, event, data) };
            }
        } else if event == REF_DESTROY {
            // SAFETY: CPython passes a live object with its type set.
            if unsafe { may_free_a_sampled_keys_table(obj as u64) } {
                // SAFETY: as this function's own caller.
                return unsafe { destroyed_slowly(obj, event, data) };
            }
        }
    }
    chain(obj, event)
}

/// Passes a reference tracer's event on to the tracer installed before the hook's.
#[inline(always)]
fn chain(obj: *mut c_void, event: c_int) -> c_int {
    // SAFETY: set at install, before this tracer was.
    let (previous, previous_data) = unsafe { *PREVIOUS_TRACER.get() };
    match previous {
        // SAFETY: passing the event on to the tracer installed before the hook's.
        Some(previous) => unsafe { previous(obj, event, previous_data) },
        None => 0,
    }
}

#[inline(never)]
unsafe extern "C" fn created_slowly(obj: *mut c_void, event: c_int, _data: *mut c_void) -> c_int {
    created(obj as u64);
    chain(obj, event)
}

#[cold]
#[inline(never)]
unsafe extern "C" fn destroyed_slowly(obj: *mut c_void, event: c_int, _data: *mut c_void) -> c_int {
    // SAFETY: CPython passes a live object with its type set.
    unsafe { destroyed(obj as u64) };
    chain(obj, event)
}

/// An object is destroyed. Its own memory, if it goes to a free list rather than back to the
/// allocator, is forgotten when it is taken again ([`created`]); a dict's own keys table may
/// go to the keys free list, which no event tells of: it is forgotten now. (A split table's
/// keys belong to its class.)
///
/// # Safety
/// `obj` is a live object whose type is set.
unsafe fn destroyed(obj: u64) {
    // SAFETY: as the caller's.
    if let Some(keys) = unsafe { own_keys_table(obj) } {
        before_free(keys as *mut c_void);
    }
}

/// A dict's own keys table (not its class's split one), `None` for any other object.
///
/// # Safety
/// `obj` is a live object whose type is set.
#[inline(always)]
unsafe fn own_keys_table(obj: u64) -> Option<u64> {
    // SAFETY: the object's header and type, and a dict's members, still in place.
    unsafe {
        let tp = *((obj as usize + OB_TYPE) as *const u64);
        if tp == 0 || *((tp as usize + TP_FLAGS) as *const u64) & TPFLAGS_DICT_SUBCLASS == 0 {
            return None;
        }
        if *((obj as usize + DICT_VALUES) as *const u64) != 0 {
            return None;
        }
        Some(*((obj as usize + DICT_KEYS) as *const u64))
    }
}

/// Whether [`destroyed`] may have a sample to forget: `obj` is a dict whose own keys table
/// is hashed where a live sample is.
///
/// # Safety
/// `obj` is a live object whose type is set.
#[inline(always)]
unsafe fn may_free_a_sampled_keys_table(obj: u64) -> bool {
    // SAFETY: as the caller's.
    unsafe { own_keys_table(obj) }.and_then(sampled_bucket).is_some()
}

/// An object was created. If the allocator just handed out its block, the allocation was
/// counted there. Otherwise its memory was recycled from a free list: whatever sample was
/// there is gone, and it counts down the thread's interval as an allocation of its size would.
fn created(obj: u64) {
    let t = hot();
    if created_quickly_by(t, obj) {
        return;
    }
    if may_start_a_sample_before(obj) {
        // SAFETY: CPython passes a live object with its type set.
        if let Some((_, flags)) = unsafe { type_flags(obj) } {
            before_free((obj - pre_header(flags)) as *mut c_void);
        }
    }
    let left = t.countdown.get().wrapping_sub(RECYCLED_UNIT as i64);
    t.countdown.set(left);
    if left <= 0 {
        sampled_recycled(t, obj);
    }
}

/// [`created`]'s common path, if the calling thread's state needs no call to find: `false`
/// where `created` has more to do.
#[inline(always)]
fn created_quickly(obj: u64) -> bool {
    owned_hot().is_some_and(|t| created_quickly_by(t, obj))
}

/// [`created`]'s common path by `t`: `true` where that was all there was to do; `false`,
/// leaving `t` as it was, where a live sample may be in the object's block or the thread's
/// interval is over.
#[inline(always)]
fn created_quickly_by(t: &Hot, obj: u64) -> bool {
    let last = t.last_alloc.get();
    // Fresh: the object lies in the block the allocator just handed out, right at its start
    // (ints, floats, str), after the GC header (16 bytes) or after that and the managed-dict
    // pre-header (32): counted by the allocator, once. No recycled object can lie there while
    // that block is allocated, so the type need not be read to tell.
    if last != 0 && matches!(obj.wrapping_sub(last), 0 | 16 | 32) {
        t.last_alloc.set(0);
        return true;
    }
    if t.inside.get() {
        return true;
    }
    if may_start_a_sample_before(obj) {
        return false;
    }
    let left = t.countdown.get().wrapping_sub(RECYCLED_UNIT as i64);
    if left <= 0 {
        return false;
    }
    t.countdown.set(left);
    true
}

/// The sampled path of a recycled object: its block and size, read now.
#[cold]
#[inline(never)]
fn sampled_recycled(t: &Hot, obj: u64) {
    // SAFETY: CPython passes a live object with its type set.
    if let Some((block, size, _)) = unsafe { object_block(obj) } {
        sampled(t, block as *mut c_void, size as usize, RECYCLED_UNIT);
    }
}

/// Puts the hook's reference tracer in, chaining the one there was (`install`), or puts that
/// one back if the hook's is still the one installed. With the GIL held.
unsafe fn swap_tracer(api: &Api, install: bool) {
    let Some((set, get)) = api.ref_tracer else {
        return;
    };
    // SAFETY: CPython's tracer functions, called with the GIL held.
    unsafe {
        let mut data = std::ptr::null_mut();
        let current = get(&mut data);
        let ours = current.is_some_and(|f| f as usize == ref_tracer as RefTracer as usize);
        match (install, ours) {
            (true, false) => {
                *PREVIOUS_TRACER.get() = (current, data);
                set(Some(ref_tracer), std::ptr::null_mut());
            }
            (false, true) => {
                let (previous, previous_data) = *PREVIOUS_TRACER.get();
                set(previous, previous_data);
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The sampled path.

fn next_random(t: &ThreadState) -> u64 {
    let mut x = t.rng.get();
    if x == 0 {
        let mut ts = [0i64; 2];
        // SAFETY: plain system call into a local.
        unsafe { clock_gettime(1, &mut ts) };
        x = mix(
            mix(ts[1] as u64 ^ (ts[0] as u64).rotate_left(32), thread_id(t) as u64),
            t as *const ThreadState as u64,
        ) | 1;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    t.rng.set(x);
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// A draw of the exponential interval of mean `mean` bytes.
fn next_interval(t: &ThreadState, mean: u64) -> i64 {
    if mean <= 1 {
        return 1;
    }
    let u = ((next_random(t) >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let interval = -u.ln() * mean as f64;
    (interval as i64).clamp(1, i64::MAX / 2)
}

fn thread_id(t: &ThreadState) -> u32 {
    let mut tid = t.tid.get();
    if tid == 0 {
        // SAFETY: gettid takes no arguments.
        tid = unsafe { syscall(SYS_GETTID) } as u32;
        t.tid.set(tid);
    }
    tid
}

/// The sampled path: `measure` is what the event counted the interval down by (an
/// allocation's size, or [`RECYCLED_UNIT`]), which sets its probability of being sampled.
#[cold]
#[inline(never)]
fn sampled(t: &Hot, p: *mut c_void, size: usize, measure: u64) {
    if t.busy.replace(true) {
        // An allocation made by the hook's own work (`Py_IncRef` does not allocate; this is
        // a guard, not a path taken).
        return;
    }
    // SAFETY: the state is only written under the lock or at install.
    let mean = unsafe { word(&raw mut (*state()).sample_bytes) }.load(Ordering::Relaxed);
    let cold = thread();
    t.countdown.set(next_interval(cold, mean));
    if SAMPLING.load(Ordering::Acquire) {
        record(cold, p as u64, size as u64, measure, mean);
        check_owner();
    }
    t.busy.set(false);
}

/// The weights of a sample of `size` bytes that counted the interval down by `measure`:
/// (bytes, allocations) it stands for, each over its probability of being sampled.
fn weights(size: u64, measure: u64, mean: u64) -> (u64, u64) {
    if mean <= 1 || size == 0 || measure == 0 {
        return (size, 1);
    }
    let probability = -(-(measure as f64) / mean as f64).exp_m1();
    if probability <= 0.0 {
        return (size, 1);
    }
    let scale = 1.0 / probability;
    ((size as f64 * scale).round() as u64, scale.round().max(1.0) as u64)
}

fn record(t: &ThreadState, ptr: u64, size: u64, measure: u64, mean: u64) {
    let (bytes, count) = weights(size, measure, mean);
    let mut frames = [FrameEntry::default(); MAX_DEPTH];
    // SAFETY: the API and layout were set at install, before sampling started.
    let api = unsafe { (*API.get()).as_ref().copied() };
    let Some(api) = api else { return };
    let layout = unsafe { (*state()).layout };
    // SAFETY: the calling thread's own frame chain, which only this thread changes.
    let (depth, truncated, has_thread) = unsafe { capture(&api, &layout, &mut frames) };
    let tid = thread_id(t);
    let mut new_codes = [0u64; MAX_DEPTH];
    lock();
    let st = state();
    // SAFETY: under the lock.
    unsafe {
        if !has_thread {
            (*st).no_thread_state += 1;
        }
        let (path, new_nodes) = intern_path(&frames[..depth], &mut new_codes);
        let stack = match path {
            Some(leaf) => intern_stack(tid, leaf, depth, truncated),
            None => {
                (*st).stacks_full += 1;
                0
            }
        };
        let tables = &mut *TABLES.get();
        let entry = &mut *tables.stacks.add(stack as usize);
        word(&raw mut entry.alloc_bytes).fetch_add(bytes, Ordering::Relaxed);
        word(&raw mut entry.alloc_count).fetch_add(count, Ordering::Relaxed);
        word(&raw mut (*st).samples).fetch_add(1, Ordering::Relaxed);
        if remember(ptr, stack, bytes, count) {
            word(&raw mut (*st).live_samples).fetch_add(1, Ordering::Relaxed);
        } else {
            // Not remembered: its free will not be seen, so it is counted as freed now
            // rather than held for ever.
            (*st).table_full += 1;
            word(&raw mut entry.freed_bytes).fetch_add(bytes, Ordering::Relaxed);
            word(&raw mut entry.freed_count).fetch_add(count, Ordering::Relaxed);
        }
        log_change(stack);
        unlock();
        // Each node keeps its code object alive (a node made without the GIL cannot).
        if new_nodes > 0 && (api.gil_check)() != 0 {
            for &code in &new_codes[..new_nodes] {
                (api.inc_ref)(code as *mut c_void);
            }
        }
    }
}

/// Walks the calling thread's frames, innermost first; returns (depth, truncated, whether the
/// thread has a Python thread state).
unsafe fn capture(
    api: &Api,
    layout: &HookLayout,
    out: &mut [FrameEntry; MAX_DEPTH],
) -> (usize, bool, bool) {
    // SAFETY (whole function): the thread state and frames are this thread's own, alive while
    // it is inside an allocator call; the offsets were checked against `MAX_OFFSET` at install.
    unsafe {
        let tstate = (api.this_thread_state)() as u64;
        if tstate == 0 {
            return (0, false, false);
        }
        let read = |addr: u64| *(addr as *const u64);
        let mut frame = read(tstate + layout.tstate_frame as u64);
        if layout.flags & HookLayout::F_CFRAME != 0 && frame != 0 {
            frame = read(frame + layout.cframe_current_frame as u64);
        }
        let mut depth = 0;
        let mut truncated = false;
        for _ in 0..4 * MAX_DEPTH {
            if frame == 0 {
                break;
            }
            let back = read(frame + layout.frame_back as u64);
            let mut code = read(frame + layout.frame_code as u64);
            if layout.flags & HookLayout::F_SHIMS != 0
                && u32::from(*((frame + layout.frame_owner as u64) as *const u8))
                    >= layout.first_shim_owner
            {
                frame = back;
                continue;
            }
            if layout.flags & HookLayout::F_TAGGED_CODE != 0 {
                code &= !3;
            }
            if code == 0 {
                if depth == 0 && layout.flags & HookLayout::F_FRAME_OBJECTS == 0 {
                    frame = back;
                    continue;
                }
                break;
            }
            if depth == MAX_DEPTH {
                truncated = true;
                break;
            }
            let position = if layout.flags & HookLayout::F_FRAME_OBJECTS != 0 {
                *((frame + layout.frame_lasti as u64) as *const i32) as i64 as u64
            } else {
                read(frame + layout.frame_lasti as u64)
            };
            let mut tag = read(code + layout.code_tag as u64);
            if layout.code_tag_len == 16 {
                tag ^= read(code + layout.code_tag as u64 + 8);
            }
            out[depth] = FrameEntry {
                code,
                position,
                tag,
                parent: NO_PARENT,
                reserved: 0,
            };
            depth += 1;
            frame = back;
        }
        (depth, truncated, true)
    }
}

fn node_hash(parent: u32, frame: &FrameEntry) -> u64 {
    mix(mix(mix(mix(0x7a7a_5151, parent as u64), frame.code), frame.position), frame.tag)
}

/// Interns `frames` (innermost first) as a path of the frame tree, from its outermost frame
/// in. Returns its innermost node ([`NO_PARENT`] for no frames; `None` when the tree is full)
/// and how many nodes were new, whose code objects are put in `new_codes`.
///
/// # Safety
/// Under the lock, with the tables mapped.
unsafe fn intern_path(frames: &[FrameEntry], new_codes: &mut [u64; MAX_DEPTH]) -> (Option<u32>, usize) {
    // SAFETY (whole function): under the lock; the tables were mapped at install.
    unsafe {
        let st = state();
        let tables = &mut *TABLES.get();
        let mut len = (*st).frames_len as usize;
        let nodes = tables.frames;
        let room = tables.frame_index.reserve(len, frames.len(), FRAME_INDEX_MAX_BITS, |i| {
            let node = &*nodes.add(i);
            node_hash(node.parent, node)
        });
        if !room {
            return (None, 0);
        }
        let mut parent = NO_PARENT;
        let mut new_nodes = 0;
        for frame in frames.iter().rev() {
            let (mut slot, mask) = tables.frame_index.start(node_hash(parent, frame));
            let found = loop {
                let at = *tables.frame_index.slots.add(slot);
                if at == 0 {
                    break None;
                }
                let node = &*tables.frames.add(at as usize - 1);
                if node.parent == parent
                    && node.code == frame.code
                    && node.position == frame.position
                    && node.tag == frame.tag
                {
                    break Some(at - 1);
                }
                slot = (slot + 1) & mask;
            };
            parent = match found {
                Some(node) => node,
                None => {
                    if len >= MAX_FRAMES {
                        return (None, new_nodes);
                    }
                    *tables.frames.add(len) = FrameEntry { parent, ..*frame };
                    *tables.frame_index.slots.add(slot) = len as u32 + 1;
                    len += 1;
                    word(&raw mut (*st).frames_len).store(len as u64, Ordering::Release);
                    new_codes[new_nodes] = frame.code;
                    new_nodes += 1;
                    len as u32 - 1
                }
            };
        }
        (Some(parent), new_nodes)
    }
}

/// An open-addressing index of `entry + 1` by hash, rebuilt at twice the size when half full.
struct Index {
    slots: *mut u32,
    bits: u32,
}

impl Index {
    const fn empty() -> Index {
        Index {
            slots: std::ptr::null_mut(),
            bits: 0,
        }
    }

    /// Maps an empty index of `1 << bits` slots; false when it cannot.
    unsafe fn map(&mut self, bits: u32) -> bool {
        // SAFETY: a fresh mapping.
        let slots = unsafe { map_zeroed((1usize << bits) * size_of::<u32>()) } as *mut u32;
        if slots.is_null() {
            return false;
        }
        self.slots = slots;
        self.bits = bits;
        true
    }

    /// Empties it.
    unsafe fn clear(&mut self) {
        // SAFETY: within the mapping.
        unsafe { std::ptr::write_bytes(self.slots, 0, 1 << self.bits) };
    }

    /// The first slot to probe for `hash`, and the mask to probe on with.
    fn start(&self, hash: u64) -> (usize, usize) {
        ((hash >> (64 - self.bits)) as usize, (1usize << self.bits) - 1)
    }

    /// Makes room for `entries + more` entries, at most `1 << (max_bits - 1)`: rebuilds the
    /// index at twice the size (entry `i` hashed by `hash(i)`) while over half full; false
    /// when it cannot grow.
    unsafe fn reserve(&mut self, entries: usize, more: usize, max_bits: u32, hash: impl Fn(usize) -> u64) -> bool {
        // SAFETY (whole function): under the lock; the old slots are this index's mapping.
        unsafe {
            while (entries + more) * 2 > 1 << self.bits {
                let (old_slots, old_bits) = (self.slots, self.bits);
                // `map` leaves the index as it was when it fails.
                if old_bits + 1 > max_bits || !self.map(old_bits + 1) {
                    return false;
                }
                for i in 0..entries {
                    let (mut slot, mask) = self.start(hash(i));
                    while *self.slots.add(slot) != 0 {
                        slot = (slot + 1) & mask;
                    }
                    *self.slots.add(slot) = i as u32 + 1;
                }
                munmap(old_slots as *mut c_void, (1usize << old_bits) * size_of::<u32>());
            }
            true
        }
    }
}

/// The index of the stack of thread `tid` whose innermost frame is node `leaf` (interning it
/// if new; 0 when there is no room).
unsafe fn intern_stack(tid: u32, leaf: u32, depth: usize, truncated: bool) -> u32 {
    // SAFETY (whole function): under the lock; the tables were mapped at install.
    unsafe {
        let st = state();
        let tables = &mut *TABLES.get();
        let hash = mix(mix(0x5151_7a7a, tid as u64), leaf as u64);
        let depth = depth as u32 | if truncated { DEPTH_TRUNCATED } else { 0 };
        let stacks_len = (*st).stacks_len as usize;
        let stacks = tables.stacks;
        if !tables.stack_index.reserve(stacks_len, 1, STACK_INDEX_MAX_BITS, |i| (*stacks.add(i)).hash) {
            (*st).stacks_full += 1;
            return 0;
        }
        let (mut slot, mask) = tables.stack_index.start(hash);
        loop {
            let at = *tables.stack_index.slots.add(slot);
            if at == 0 {
                break;
            }
            let entry = &*tables.stacks.add(at as usize - 1);
            if entry.tid == tid && entry.first_frame == leaf && entry.depth == depth {
                return at - 1;
            }
            slot = (slot + 1) & mask;
        }
        if stacks_len >= MAX_STACKS {
            (*st).stacks_full += 1;
            return 0;
        }
        // The whole entry: one of an emptied table (a forked child's, a new run's) still
        // holds the counters of the stack it was before.
        *tables.stacks.add(stacks_len) = StackEntry {
            hash,
            tid,
            depth,
            first_frame: leaf,
            reserved: 0,
            alloc_bytes: 0,
            alloc_count: 0,
            freed_bytes: 0,
            freed_count: 0,
        };
        *tables.stack_index.slots.add(slot) = stacks_len as u32 + 1;
        word(&raw mut (*st).stacks_len).store(stacks_len as u64 + 1, Ordering::Release);
        stacks_len as u32
    }
}

/// Writes `stack` to the change log (after its counters changed), under the lock.
///
/// # Safety
/// Under the lock, with the tables mapped.
unsafe fn log_change(stack: u32) {
    // SAFETY: under the lock; the ring has CHANGES entries.
    unsafe {
        let st = state();
        let written = (*st).changes_written;
        *(*TABLES.get()).changes.add(written as usize % CHANGES) = stack;
        word(&raw mut (*st).changes_written).store(written + 1, Ordering::Release);
    }
}

/// Remembers a live sample; false when the table cannot grow.
unsafe fn remember(ptr: u64, stack: u32, bytes: u64, count: u64) -> bool {
    // SAFETY (whole function): under the lock.
    unsafe {
        let tables = &mut *TABLES.get();
        if (tables.live_used + tables.live_tombs + 1) * 2 > 1 << tables.live_bits && !grow_live(tables)
        {
            return false;
        }
        let mask = (1usize << tables.live_bits) - 1;
        let mut slot = (pointer_hash(ptr) >> (64 - tables.live_bits)) as usize;
        loop {
            let entry = &mut *tables.live.add(slot);
            if entry.ptr == 0 || entry.ptr == TOMB {
                if entry.ptr == TOMB {
                    tables.live_tombs -= 1;
                }
                *entry = LiveSample {
                    ptr,
                    stack,
                    reserved: 0,
                    bytes,
                    count,
                };
                break;
            }
            slot = (slot + 1) & mask;
        }
        tables.live_used += 1;
        let bucket = filter_bucket(ptr);
        let counter = &mut *tables.filter.add(bucket);
        *counter = counter.saturating_add(1);
        filter_bit(tables.filter, bucket).fetch_or(1 << (bucket & 7), Ordering::Release);
        true
    }
}

/// Rebuilds the live table at twice the size (or the same size when it is mostly removed
/// entries); false when it cannot.
unsafe fn grow_live(tables: &mut Tables) -> bool {
    // SAFETY (whole function): under the lock.
    unsafe {
        let bits = if tables.live_used * 4 > 1 << tables.live_bits {
            tables.live_bits + 1
        } else {
            tables.live_bits
        };
        if bits > LIVE_MAX_BITS {
            return false;
        }
        let bytes = (1usize << bits) * size_of::<LiveSample>();
        let fresh = map_zeroed(bytes) as *mut LiveSample;
        if fresh.is_null() {
            return false;
        }
        let mask = (1usize << bits) - 1;
        for i in 0..1usize << tables.live_bits {
            let entry = *tables.live.add(i);
            if entry.ptr <= TOMB {
                continue;
            }
            let mut slot = (pointer_hash(entry.ptr) >> (64 - bits)) as usize;
            while (*fresh.add(slot)).ptr != 0 {
                slot = (slot + 1) & mask;
            }
            *fresh.add(slot) = entry;
        }
        munmap(
            tables.live as *mut c_void,
            (1usize << tables.live_bits) * size_of::<LiveSample>(),
        );
        tables.live = fresh;
        tables.live_bits = bits;
        tables.live_tombs = 0;
        (*state()).table_bytes = bytes as u64;
        true
    }
}

/// A free of a pointer the filter says may be a live sample.
#[cold]
#[inline(never)]
fn forget(ptr: u64, bucket: usize) {
    lock();
    // SAFETY: under the lock.
    unsafe {
        let tables = &mut *TABLES.get();
        if !tables.live.is_null() {
            let mask = (1usize << tables.live_bits) - 1;
            let mut slot = (pointer_hash(ptr) >> (64 - tables.live_bits)) as usize;
            loop {
                let entry = &mut *tables.live.add(slot);
                if entry.ptr == 0 {
                    break;
                }
                if entry.ptr == ptr {
                    let stack = &mut *tables.stacks.add(entry.stack as usize);
                    word(&raw mut stack.freed_bytes).fetch_add(entry.bytes, Ordering::Relaxed);
                    word(&raw mut stack.freed_count).fetch_add(entry.count, Ordering::Relaxed);
                    log_change(entry.stack);
                    entry.ptr = TOMB;
                    tables.live_used -= 1;
                    tables.live_tombs += 1;
                    let st = state();
                    word(&raw mut (*st).live_samples).fetch_sub(1, Ordering::Relaxed);
                    let counter = &mut *tables.filter.add(bucket);
                    if *counter != u8::MAX {
                        *counter -= 1;
                        if *counter == 0 {
                            filter_bit(tables.filter, bucket)
                                .fetch_and(!(1 << (bucket & 7)), Ordering::Release);
                        }
                    }
                    break;
                }
                slot = (slot + 1) & mask;
            }
        }
    }
    unlock();
}

/// Once a second of sampling at most: if the pmt that installed the hook is gone, stop
/// sampling and, with the GIL held, put the wrapped allocators back.
fn check_owner() {
    let mut ts = [0i64; 2];
    // SAFETY: plain system call into a local.
    unsafe { clock_gettime(CLOCK_MONOTONIC_COARSE, &mut ts) };
    let now = ts[0].max(0) as u64;
    if now < NEXT_OWNER_CHECK.load(Ordering::Relaxed) {
        return;
    }
    NEXT_OWNER_CHECK.store(now + 1, Ordering::Relaxed);
    // SAFETY: reading a word of the state.
    let owner = unsafe { (*state()).owner_pid } as c_int;
    // SAFETY: signal 0 only checks that the process exists.
    let gone = owner > 0 && unsafe { kill(owner, 0) } != 0 && unsafe { *__errno_location() } == ESRCH;
    if gone {
        uninstall();
    }
}

/// Stops sampling; puts the wrapped allocators back where the GIL allows it (else the
/// wrappers stay, passing every call through).
fn uninstall() {
    SAMPLING.store(false, Ordering::Release);
    // SAFETY: the state's word; the API was set at install.
    unsafe {
        (*state()).enabled = 0;
        if let Some(api) = *API.get()
            && INSTALLED.load(Ordering::Acquire)
            && (api.gil_check)() != 0
        {
            for domain in 0..3 {
                let mut original = (*ORIGINAL.get())[domain];
                (api.set_allocator)(domain as c_int, &mut original);
            }
            swap_tracer(&api, false);
            INSTALLED.store(false, Ordering::Release);
            // No sampled free can be seen any more: frees skip the filter.
            FILTER.store(std::ptr::null_mut(), Ordering::Release);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fork: the lock is held across it; the child starts afresh.

unsafe extern "C" fn before_fork() {
    lock();
}

unsafe extern "C" fn after_fork_parent() {
    unlock();
}

unsafe extern "C" fn after_fork_child() {
    let t = thread();
    t.tid.set(0);
    t.rng.set(0);
    // SAFETY: the child's only thread, holding the lock taken before the fork.
    unsafe {
        reset_tables();
        (*state()).pid = getpid() as u32;
    }
    unlock();
}

/// Empties the tables and the tallies (a forked child's, or a new run's): a new generation.
unsafe fn reset_tables() {
    // SAFETY (whole function): under the lock, or in a forked child's only thread.
    unsafe {
        let st = state();
        let tables = &mut *TABLES.get();
        if !tables.live.is_null() {
            std::ptr::write_bytes(tables.live, 0, 1 << tables.live_bits);
            tables.live_used = 0;
            tables.live_tombs = 0;
            tables.stack_index.clear();
            tables.frame_index.clear();
            if !tables.filter.is_null() {
                std::ptr::write_bytes(tables.filter, 0, FILTER_BYTES);
            }
        }
        (*st).stacks_len = 1; // stack 0 collects what finds no room
        (*st).frames_len = 0;
        (*st).samples = 0;
        (*st).live_samples = 0;
        (*st).stacks_full = 0;
        (*st).table_full = 0;
        (*st).no_thread_state = 0;
        (*st).changes_written = 0;
        if !tables.stacks.is_null() {
            std::ptr::write_bytes(tables.stacks, 0, 1);
        }
        (*st).generation += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// Install.

unsafe fn symbol(name: &[u8]) -> *mut c_void {
    // SAFETY: a NUL-terminated name; RTLD_DEFAULT is the null handle on glibc and musl.
    unsafe { dlsym(std::ptr::null_mut(), name.as_ptr() as *const c_char) }
}

/// Installs the hook: `layout` is a [`HookLayout`] of `layout_len` bytes (from pmt, for the
/// running interpreter), `sample_bytes` the mean interval (0 or 1: every allocation),
/// `owner_pid` the pmt to outlive no longer (0: none). Call with the GIL held (the loader
/// does, through `ctypes.PyDLL`). Returns 0 when installed, 1 when it already was (its tables
/// are emptied for the new run), and a negative number
/// saying what is wrong: -1 a bad layout, -2 a missing CPython function, -3 no memory.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pmt_heap_install(
    layout: *const u8,
    layout_len: usize,
    sample_bytes: u64,
    owner_pid: u32,
    options: u32,
) -> c_int {
    if layout.is_null() || layout_len != HookLayout::SIZE {
        return -1;
    }
    // SAFETY: the caller passes `layout_len` readable bytes.
    let layout: HookLayout = unsafe { std::ptr::read_unaligned(layout as *const HookLayout) };
    let offsets = [
        layout.tstate_frame,
        layout.cframe_current_frame,
        layout.frame_back,
        layout.frame_code,
        layout.frame_lasti,
        layout.frame_owner,
        layout.code_tag,
    ];
    if offsets.iter().any(|&o| o > HookLayout::MAX_OFFSET)
        || !matches!(layout.code_tag_len, 8 | 16)
    {
        return -1;
    }
    if INSTALLED.load(Ordering::Acquire) {
        // Installed for an earlier run: this run starts afresh, with its own owner and rate.
        lock();
        // SAFETY: under the lock.
        unsafe {
            reset_tables();
            let st = state();
            (*st).sample_bytes = sample_bytes;
            (*st).owner_pid = owner_pid;
            (*st).layout = layout;
            (*st).options = options;
            (*st).enabled = 1;
        }
        SAMPLING.store(true, Ordering::Release);
        unlock();
        // SAFETY: set at the first install; the loader runs with the GIL held.
        if let Some(api) = unsafe { (*API.get()).as_ref() } {
            // SAFETY: with the GIL held.
            unsafe { swap_tracer(api, options & OPT_FREE_LISTS != 0) };
        }
        return 1;
    }
    // SAFETY: symbol look-ups and transmutes of their addresses to the documented signatures.
    unsafe {
        let get = symbol(b"PyMem_GetAllocator\0");
        let set = symbol(b"PyMem_SetAllocator\0");
        let tstate = symbol(b"PyGILState_GetThisThreadState\0");
        let gil = symbol(b"PyGILState_Check\0");
        let inc_ref = symbol(b"Py_IncRef\0");
        if [get, set, tstate, gil, inc_ref].iter().any(|p| p.is_null()) {
            return -2;
        }
        let get: GetAllocator = std::mem::transmute(get);
        let set_tracer = symbol(b"PyRefTracer_SetTracer\0");
        let get_tracer = symbol(b"PyRefTracer_GetTracer\0");
        let ref_tracer = (!set_tracer.is_null() && !get_tracer.is_null()).then(|| {
            (
                std::mem::transmute::<*mut c_void, SetRefTracer>(set_tracer),
                std::mem::transmute::<*mut c_void, GetRefTracer>(get_tracer),
            )
        });
        let api = Api {
            set_allocator: std::mem::transmute::<*mut c_void, SetAllocator>(set),
            this_thread_state: std::mem::transmute::<*mut c_void, ThisThreadState>(tstate),
            gil_check: std::mem::transmute::<*mut c_void, GilCheck>(gil),
            inc_ref: std::mem::transmute::<*mut c_void, IncRef>(inc_ref),
            ref_tracer,
        };
        let tables = &mut *TABLES.get();
        if tables.stacks.is_null() {
            let stacks = map_zeroed(MAX_STACKS * size_of::<StackEntry>()) as *mut StackEntry;
            let frames = map_zeroed(MAX_FRAMES * size_of::<FrameEntry>()) as *mut FrameEntry;
            let live = map_zeroed((1 << LIVE_MIN_BITS) * size_of::<LiveSample>()) as *mut LiveSample;
            let filter = map_zeroed(FILTER_BYTES) as *mut u8;
            let changes = map_zeroed(CHANGES * size_of::<u32>()) as *mut u32;
            if !tables.stack_index.map(INDEX_MIN_BITS) || !tables.frame_index.map(INDEX_MIN_BITS) {
                return -3;
            }
            if [
                stacks as usize,
                frames as usize,
                live as usize,
                filter as usize,
                changes as usize,
            ]
            .contains(&0)
            {
                return -3;
            }
            tables.stacks = stacks;
            tables.frames = frames;
            tables.live = live;
            tables.live_bits = LIVE_MIN_BITS;
            tables.filter = filter;
            tables.changes = changes;
            pthread_atfork(
                Some(before_fork),
                Some(after_fork_parent),
                Some(after_fork_child),
            );
        }
        *API.get() = Some(api);
        let st = state();
        (*st).version = VERSION;
        (*st).pid = getpid() as u32;
        (*st).sample_bytes = sample_bytes;
        (*st).owner_pid = owner_pid;
        (*st).stacks_addr = tables.stacks as u64;
        (*st).frames_addr = tables.frames as u64;
        (*st).changes_addr = tables.changes as u64;
        (*st).table_bytes = ((1usize << LIVE_MIN_BITS) * size_of::<LiveSample>()) as u64;
        (*st).layout = layout;
        (*st).options = options;
        reset_tables();
        FILTER.store(tables.filter.add(1 << FILTER_BITS), Ordering::Release);
        for domain in 0..3 {
            get(domain as c_int, &mut (*ORIGINAL.get())[domain]);
        }
        type Wrappers = (
            unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void,
            unsafe extern "C" fn(*mut c_void, usize, usize) -> *mut c_void,
            unsafe extern "C" fn(*mut c_void, *mut c_void, usize) -> *mut c_void,
            unsafe extern "C" fn(*mut c_void, *mut c_void),
        );
        let wrappers: [Wrappers; 3] = [
            (hook_malloc::<0>, hook_calloc::<0>, hook_realloc::<0>, hook_free::<0>),
            (hook_malloc::<1>, hook_calloc::<1>, hook_realloc::<1>, hook_free::<1>),
            (hook_malloc::<2>, hook_calloc::<2>, hook_realloc::<2>, hook_free::<2>),
        ];
        SAMPLING.store(true, Ordering::Release);
        (*st).enabled = 1;
        for (domain, (malloc, calloc, realloc, free)) in wrappers.into_iter().enumerate() {
            let mut ours = Allocator {
                ctx: (*ORIGINAL.get())[domain].ctx,
                malloc: Some(malloc),
                calloc: Some(calloc),
                realloc: Some(realloc),
                free: Some(free),
            };
            (api.set_allocator)(domain as c_int, &mut ours);
        }
        if options & OPT_FREE_LISTS != 0 {
            swap_tracer(&api, true);
        }
        INSTALLED.store(true, Ordering::Release);
        word(&raw mut (*st).magic).store(MAGIC, Ordering::Release);
    }
    0
}

/// Stops sampling and puts the wrapped allocators back (with the GIL held). Returns 0.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pmt_heap_uninstall() -> c_int {
    uninstall();
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_unbiased_for_small_and_large_allocations() {
        // A 512 KiB mean: a 64-byte allocation stands for mean/64 such allocations.
        let (bytes, count) = weights(64, 64, 512 * 1024);
        assert!((bytes as f64 - 512.0 * 1024.0).abs() / (512.0 * 1024.0) < 0.001);
        assert!((8191..=8193).contains(&count), "{count}");
        // Far above the mean: itself, once.
        assert_eq!(weights(64 << 20, 64 << 20, 512 * 1024), (64 << 20, 1));
        assert_eq!(weights(100, 100, 0), (100, 1));
        // A recycled object of 200 bytes, sampled as one of RECYCLED_UNIT: it stands for as
        // many objects as a 64-byte allocation would, each of its own size.
        let (bytes, count) = weights(200, RECYCLED_UNIT, 512 * 1024);
        assert!((8191..=8193).contains(&count), "{count}");
        assert!((bytes as f64 - 200.0 * 8192.0).abs() / (200.0 * 8192.0) < 0.001, "{bytes}");
    }

    #[test]
    fn a_recycled_objects_block_and_size_come_from_its_type() {
        // A type object (tp_basicsize, tp_itemsize, tp_flags) and objects of it, as words.
        let mut int_type = [0u64; 32];
        int_type[TP_BASICSIZE / 8] = 24;
        int_type[TP_ITEMSIZE / 8] = 4;
        int_type[TP_FLAGS / 8] = TPFLAGS_LONG_SUBCLASS;
        // An int of 2 digits: `lv_tag` is the digit count above three flag bits.
        let mut int = [0u64; 4];
        int[OB_TYPE / 8] = int_type.as_ptr() as u64;
        int[OB_SIZE / 8] = (2 << 3) | 2;
        let at = int.as_ptr() as u64;
        // SAFETY: `int` and its type are laid out as the function reads them.
        assert_eq!(unsafe { object_block(at) }, Some((at, 24 + 2 * 4, TPFLAGS_LONG_SUBCLASS)));
        // A tuple-like GC object of 3 items: the GC header's 16 bytes come before it.
        let mut tuple_type = [0u64; 32];
        tuple_type[TP_BASICSIZE / 8] = 24;
        tuple_type[TP_ITEMSIZE / 8] = 8;
        tuple_type[TP_FLAGS / 8] = TPFLAGS_HAVE_GC;
        let mut tuple = [0u64; 8];
        tuple[2 + OB_TYPE / 8] = tuple_type.as_ptr() as u64;
        tuple[2 + OB_SIZE / 8] = 3;
        let obj = tuple.as_ptr() as u64 + 16;
        // SAFETY: as above.
        let (block, size, _) = unsafe { object_block(obj) }.unwrap();
        assert_eq!((block, size), (obj - 16, 16 + 24 + 3 * 8));
    }

    #[test]
    fn a_sampled_block_is_found_from_an_object_at_each_header_size_and_no_further() {
        // The furthest byte the two-byte read reaches: the last group's, at the last offset
        // that does not cross a page, and the byte after it.
        let last = (((1usize << (FILTER_BITS - 8)) - 1) << 8) | (0xfff - 32) >> 4;
        assert!((last >> 3) + 1 < FILTER_BIT_BYTES);
        let mut bits = vec![0u8; FILTER_BIT_BYTES];
        let set = |bits: &mut [u8], at: u64| {
            let bucket = filter_bucket(at);
            bits[bucket >> 3] |= 1 << (bucket & 7);
        };
        // Blocks at every bit position within a byte, and at the ends of a page.
        let blocks = (0x7f00_0000_1000u64..0x7f00_0000_1100).step_by(16);
        for block in blocks.chain([0x7f00_0040_0000, 0x7f00_0040_0fe0, 0x7f00_0040_0ff0]) {
            bits.iter_mut().for_each(|b| *b = 0);
            set(&mut bits, block);
            for (obj, expected) in [(block, true), (block + 16, true), (block + 32, true),
                (block + 48, false), (block + 4096, false)] {
                // SAFETY: `bits` has the filter's size.
                let found = unsafe { any_of_three_buckets(bits.as_ptr(), obj) };
                // Where the three cross a page the exact check decides: `true` is allowed.
                let crosses = obj & 0xfff < 32;
                assert!(found == expected || (crosses && found), "{block:#x} {obj:#x} {found}");
            }
        }
    }

    #[test]
    fn a_stack_interned_after_the_tables_are_emptied_starts_from_nothing() {
        // SAFETY: the only test that touches the tables; mapped as install maps them.
        unsafe {
            let tables = &mut *TABLES.get();
            tables.stacks = map_zeroed(MAX_STACKS * size_of::<StackEntry>()) as *mut StackEntry;
            tables.live = map_zeroed((1 << LIVE_MIN_BITS) * size_of::<LiveSample>()) as *mut LiveSample;
            tables.live_bits = LIVE_MIN_BITS;
            assert!(tables.stack_index.map(INDEX_MIN_BITS) && tables.frame_index.map(INDEX_MIN_BITS));
            reset_tables();
            let first = intern_stack(7, 3, 1, false);
            (*tables.stacks.add(first as usize)).alloc_bytes = 1 << 20;
            (*tables.stacks.add(first as usize)).freed_count = 5;
            assert_eq!(intern_stack(7, 3, 1, false), first, "the same stack");
            // A forked child (or a new run) empties the tables: the next stack interned
            // takes the same entry, and none of what it counted before.
            reset_tables();
            let again = intern_stack(8, 4, 2, false);
            assert_eq!(again, first);
            let entry = &*tables.stacks.add(again as usize);
            assert_eq!((entry.tid, entry.first_frame, entry.alloc_bytes, entry.freed_count), (8, 4, 0, 0));
        }
    }

    #[test]
    fn intervals_have_the_mean_asked_for() {
        let n = 200_000;
        let mean: f64 = (0..n).map(|_| next_interval(thread(), 4096) as f64).sum::<f64>() / n as f64;
        assert!((mean - 4096.0).abs() < 4096.0 * 0.02, "{mean}");
    }
}
