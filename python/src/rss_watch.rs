//! A system-call-free answer to "may this process's RSS have changed since I last read it?",
//! so that a trace event only re-reads `/proc/self/statm` when it could see a new value.
//!
//! How: every change of an mm's RSS counters (file, anon, shmem pages; and swap entries) goes
//! through the kernel's `add_mm_counter`/`inc_mm_counter`/`dec_mm_counter`, which fire the
//! `kmem:rss_stat` tracepoint with a hash of the mm (`mm_id`). This is true whoever makes the
//! change: this thread's page faults and munmap/madvise/brk/mremap, other threads, GUP
//! (MAP_POPULATE, mlock, O_DIRECT), khugepaged, reclaim by kswapd, another process's
//! process_madvise or process_vm_writev. One perf event per online CPU (pid -1, that CPU),
//! filtered in the kernel to `mm_id == ours`, with `sample_period` 1, writes an 8-byte record
//! per change into a read-only (overwrite-mode) ring whose `data_head` only grows. The sum of
//! all rings' `data_head`s is a plain memory read; while it is unchanged, no RSS counter of
//! this process has changed, and the statm value read last is still the current one.
//!
//! Exactness: the kernel publishes a record (updates `data_head`) before the fault or system
//! call that changed the counter returns, so a change made by this thread, or by any thread
//! that has since synchronised with it, is always seen by the next check. A change still in
//! progress on another CPU is concurrent with the event and may be seen by the next event
//! instead, exactly as a `pread` racing with it could miss it.
//!
//! When it is used: on first use the events are opened (this needs root or CAP_PERFMON, and a
//! readable tracefs), the own `mm_id` is learnt from one record of a per-thread event, and a
//! self-test checks that a page fault moves the rings. They are enabled while at least one
//! tracer uses them (`Use`) and disabled, not closed, when none does, so a disabled watcher
//! costs other processes nothing. Any failure, or `PYMEMTRACE_RSS=statm`, leaves the
//! watcher off and every event re-reads statm, as before; `source()` says which and why.
//! CPUs that are offline when the events are opened are not watched, so the watcher refuses
//! to start unless every possible CPU is online; a CPU taken offline and back online while
//! tracing may lose its event (a known gap, documented in docs/guide.md, not tested here).
//!
//! fork(): the rings describe the parent's mm, so the child unmaps them, closes the events and
//! starts unopened (a later tracer in the child opens its own).
//!
//! Owns: the perf events, their rings, the epoch and the users count. Must not: read statm or
//! cache RSS values (see `rss_reader`).

use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_SAMPLE_RAW: u64 = 1 << 10;
const PERF_RECORD_SAMPLE: u32 = 9;
const FLAG_DISABLED: u64 = 1;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const IOC_ENABLE: libc::c_ulong = 0x2400;
const IOC_DISABLE: libc::c_ulong = 0x2401;
const IOC_SET_FILTER: libc::c_ulong = 0x4008_2406;
/// Offsets in `struct perf_event_mmap_page`.
const DATA_HEAD: usize = 1024;
const DATA_OFFSET: usize = 1040;
const DATA_SIZE: usize = 1048;
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// `struct perf_event_attr` as of PERF_ATTR_SIZE_VER0 (64 bytes), which every kernel accepts.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

/// The opened events: one per CPU, each with its ring mapped read-only.
struct Rings {
    fds: Vec<i32>,
    maps: Vec<(*mut c_void, usize)>,
}

impl Rings {
    fn heads(&self) -> impl Iterator<Item = &AtomicU64> {
        // SAFETY: each map is at least one page; `data_head` is a naturally aligned u64 at
        // DATA_HEAD of the control page, written by the kernel with release semantics.
        self.maps.iter().map(|&(base, _)| unsafe {
            AtomicU64::from_ptr(base.cast::<u8>().add(DATA_HEAD).cast())
        })
    }

    fn sum_of_heads(&self) -> u64 {
        self.heads().fold(0u64, |sum, head| {
            sum.wrapping_add(head.load(Ordering::Acquire))
        })
    }

    fn ioctl_all(&self, request: libc::c_ulong) -> bool {
        // SAFETY: our own perf event descriptors; these requests take no argument.
        self.fds
            .iter()
            .all(|&fd| unsafe { libc::ioctl(fd, request, 0) } == 0)
    }

    /// Unmaps and closes everything (in a fork() child, or when opening failed half-way).
    fn release(&self) {
        for &(base, len) in &self.maps {
            // SAFETY: mapped by `map_ring` with this length and not used after release.
            unsafe { libc::munmap(base, len) };
        }
        for &fd in &self.fds {
            // SAFETY: our own descriptor, not used after release.
            unsafe { libc::close(fd) };
        }
    }
}

/// What is known about the watcher, guarded by `CONTROL`.
struct Control {
    users: usize,
    /// Some(reason) once opening failed or was refused; it is not tried again.
    failure: Option<String>,
}

/// A spin lock that the fork handlers can take before fork() and reset in the child (a std
/// Mutex held by another thread at fork() would stay locked in the child forever).
struct SpinLocked<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: `value` is only reached through `with`, which holds `locked`.
unsafe impl<T: Send> Sync for SpinLocked<T> {}

impl<T> SpinLocked<T> {
    fn acquire(&self) {
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::thread::yield_now();
        }
    }

    fn release(&self) {
        self.locked.store(false, Ordering::Release);
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        self.acquire();
        // SAFETY: the lock is held until `release` below.
        let result = f(unsafe { &mut *self.value.get() });
        self.release();
        result
    }
}

static CONTROL: SpinLocked<Control> = SpinLocked {
    locked: AtomicBool::new(false),
    value: UnsafeCell::new(Control {
        users: 0,
        failure: None,
    }),
};
/// The open rings (leaked once opened), or null.
static RINGS: AtomicPtr<Rings> = AtomicPtr::new(std::ptr::null_mut());
/// Odd while the events are not counting; changes at every enable and disable, so a value
/// cached under one epoch is never trusted under another.
static EPOCH: AtomicU64 = AtomicU64::new(1);
static AT_FORK: Once = Once::new();

extern "C" fn before_fork() {
    CONTROL.acquire();
}

extern "C" fn after_fork_in_parent() {
    CONTROL.release();
}

extern "C" fn after_fork_in_child() {
    if EPOCH.load(Ordering::Relaxed) & 1 == 0 {
        EPOCH.fetch_add(1, Ordering::SeqCst);
    }
    let rings = RINGS.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if !rings.is_null() {
        // SAFETY: leaked by `open`, never freed; the child is single-threaded here.
        unsafe { (*rings).release() };
    }
    // SAFETY: the lock was taken by `before_fork` in the thread that forked, which is this one.
    unsafe { (*CONTROL.value.get()).failure = None };
    CONTROL.release();
}

fn register_at_fork() {
    AT_FORK.call_once(|| {
        // SAFETY: the handlers only touch atomics, unmap and close.
        unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_in_parent),
                Some(after_fork_in_child),
            )
        };
    });
}

/// A value that is the same at two calls only if no RSS counter of this process changed in
/// between (and the watcher counted all along); None when the watcher is not counting.
#[inline]
pub fn stamp() -> Option<(u64, u64)> {
    let epoch = EPOCH.load(Ordering::Acquire);
    if epoch & 1 == 1 {
        return None;
    }
    let rings = RINGS.load(Ordering::Acquire);
    if rings.is_null() {
        return None;
    }
    // SAFETY: published rings are never freed in this process (only in a fork() child, where
    // RINGS is cleared first and no other thread exists).
    Some((epoch, unsafe { (*rings).sum_of_heads() }))
}

/// One tracer's use of the watcher: counting while any `Use` lives.
pub struct Use(());

impl Use {
    /// Starts counting (opening the events on first use) unless the watcher is unavailable.
    pub fn begin() -> Use {
        register_at_fork();
        CONTROL.with(|control| {
            control.users += 1;
            // Not only for the first user: a fork() child inherits the count, not the rings.
            if ensure_open(control) {
                enable();
            }
        });
        Use(())
    }
}

impl Drop for Use {
    fn drop(&mut self) {
        CONTROL.with(|control| {
            control.users = control.users.saturating_sub(1);
            if control.users == 0 {
                disable();
            }
        });
    }
}

fn rings() -> Option<&'static Rings> {
    let rings = RINGS.load(Ordering::Acquire);
    // SAFETY: as in `stamp`.
    (!rings.is_null()).then(|| unsafe { &*rings })
}

fn enable() {
    if let Some(rings) = rings()
        && EPOCH.load(Ordering::Acquire) & 1 == 1
        && rings.ioctl_all(IOC_ENABLE)
    {
        EPOCH.fetch_add(1, Ordering::AcqRel);
    }
}

fn disable() {
    if let Some(rings) = rings()
        && EPOCH.load(Ordering::Acquire) & 1 == 0
    {
        EPOCH.fetch_add(1, Ordering::AcqRel);
        rings.ioctl_all(IOC_DISABLE);
    }
}

/// Opens the events once; true when they are open.
fn ensure_open(control: &mut Control) -> bool {
    if rings().is_some() {
        return true;
    }
    if control.failure.is_some() {
        return false;
    }
    match open() {
        Ok(rings) => {
            RINGS.store(Box::into_raw(Box::new(rings)), Ordering::Release);
            true
        }
        Err(reason) => {
            control.failure = Some(reason);
            false
        }
    }
}

/// Which RSS source trace events use, for `rss_source()`: "rss_stat" (statm is re-read only
/// after a change) or "statm (REASON)" (re-read on every event).
pub fn source() -> String {
    register_at_fork();
    CONTROL.with(|control| {
        if ensure_open(control) {
            "rss_stat".to_owned()
        } else {
            format!(
                "statm ({})",
                control.failure.as_deref().unwrap_or("not opened")
            )
        }
    })
}

fn open() -> Result<Rings, String> {
    match std::env::var("PYMEMTRACE_RSS").as_deref() {
        Err(_) | Ok("") | Ok("auto") => {}
        Ok("statm") => return Err("PYMEMTRACE_RSS=statm".to_owned()),
        Ok(other) => {
            return Err(format!(
                "PYMEMTRACE_RSS={other:?} is neither auto nor statm"
            ));
        }
    }
    let cpus = online_cpus()?;
    let (id, format) = tracepoint()?;
    let mm_id = own_mm_id(
        id,
        field_offset(&format, "mm_id")?,
        field_offset(&format, "curr")?,
    )?;
    let mut rings = Rings {
        fds: Vec::new(),
        maps: Vec::new(),
    };
    let filter = std::ffi::CString::new(format!("mm_id == {mm_id}")).map_err(|e| e.to_string())?;
    for cpu in cpus {
        let attr = PerfEventAttr {
            flags: FLAG_DISABLED,
            ..tracepoint_attr(id)
        };
        let opened = perf_event_open(&attr, -1, cpu).and_then(|fd| {
            rings.fds.push(fd);
            // SAFETY: our descriptor and a NUL-terminated filter.
            if unsafe { libc::ioctl(fd, IOC_SET_FILTER, filter.as_ptr()) } != 0 {
                return Err(format!("setting the mm_id filter: {}", last_error()));
            }
            rings.maps.push(map_ring(fd)?);
            Ok(())
        });
        if let Err(err) = opened {
            rings.release();
            return Err(format!("kmem:rss_stat on CPU {cpu}: {err}"));
        }
    }
    self_test(&rings).inspect_err(|_| rings.release())?;
    Ok(rings)
}

/// Enables the events, checks that faulting in a fresh page moves the rings, disables them.
fn self_test(rings: &Rings) -> Result<(), String> {
    if !rings.ioctl_all(IOC_ENABLE) {
        return Err(format!("enabling the events: {}", last_error()));
    }
    let before = rings.sum_of_heads();
    touch_fresh_page()?;
    let after = rings.sum_of_heads();
    rings.ioctl_all(IOC_DISABLE);
    if after == before {
        return Err("kmem:rss_stat wrote no record for a page fault".to_owned());
    }
    Ok(())
}

fn tracepoint_attr(id: u64) -> PerfEventAttr {
    PerfEventAttr {
        kind: PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: id,
        sample_period: 1,
        ..PerfEventAttr::default()
    }
}

fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn perf_event_open(attr: &PerfEventAttr, pid: i32, cpu: i32) -> Result<i32, String> {
    // SAFETY: a valid attr of the size it declares; the result is checked.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr as *const PerfEventAttr,
            pid,
            cpu,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(format!("perf_event_open: {}", last_error()));
    }
    i32::try_from(fd).map_err(|e| e.to_string())
}

/// Maps the control page and one data page read-only (overwrite mode: `data_head` never waits
/// for a reader).
fn map_ring(fd: i32) -> Result<(*mut c_void, usize), String> {
    let len = 2 * crate::rss_reader::page_size() as usize;
    // SAFETY: a fresh shared read-only mapping of our perf descriptor; checked.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(format!("mmap of the ring: {}", last_error()));
    }
    Ok((base, len))
}

/// Maps, writes to and unmaps one anonymous page: at least one RSS counter change.
fn touch_fresh_page() -> Result<(), String> {
    let len = crate::rss_reader::page_size() as usize;
    // SAFETY: a private anonymous mapping, written within its length, then unmapped.
    unsafe {
        let page = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if page == libc::MAP_FAILED {
            return Err(format!("mmap of a test page: {}", last_error()));
        }
        std::ptr::write_volatile(page.cast::<u8>(), 1);
        libc::munmap(page, len);
    }
    Ok(())
}

/// The `mm_id` of this process: from the first record of a per-thread event with raw data
/// that names the current task's own mm (`curr`), caused by faulting in a fresh page.
fn own_mm_id(id: u64, mm_id_offset: usize, curr_offset: usize) -> Result<u32, String> {
    let attr = PerfEventAttr {
        sample_type: PERF_SAMPLE_RAW,
        ..tracepoint_attr(id)
    };
    let fd = perf_event_open(&attr, 0, -1)?;
    let mut ring = Rings {
        fds: vec![fd],
        maps: Vec::new(),
    };
    let result = map_ring(fd).and_then(|map| {
        ring.maps.push(map);
        touch_fresh_page()?;
        own_record_field(map.0, mm_id_offset, curr_offset)
    });
    ring.release();
    result
}

/// The u32 at `offset` of the raw data of the first sample whose `curr` is 1, in a ring that
/// has not wrapped.
fn own_record_field(base: *mut c_void, offset: usize, curr_offset: usize) -> Result<u32, String> {
    let page = base.cast::<u8>();
    // SAFETY: the control page's fields are naturally aligned u64s within the first page.
    let (head, data_offset, data_size) = unsafe {
        (
            AtomicU64::from_ptr(page.add(DATA_HEAD).cast()).load(Ordering::Acquire),
            std::ptr::read_volatile(page.add(DATA_OFFSET).cast::<u64>()),
            std::ptr::read_volatile(page.add(DATA_SIZE).cast::<u64>()),
        )
    };
    let page_size = crate::rss_reader::page_size();
    let (data_offset, data_size) = if data_size == 0 {
        (page_size, page_size)
    } else {
        (data_offset, data_size)
    };
    let available = usize::try_from(head.min(data_size)).map_err(|e| e.to_string())?;
    // SAFETY: the data area is `data_size` bytes at `data_offset` of the two-page mapping.
    let data = unsafe { std::slice::from_raw_parts(page.add(data_offset as usize), available) };
    let u32_at = |bytes: &[u8], at: usize| {
        bytes
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
    };
    let mut at = 0;
    while let (Some(kind), Some(size)) = (
        u32_at(data, at),
        data.get(at + 6..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(|b| usize::from(u16::from_ne_bytes(b))),
    ) {
        if size < 8 {
            break;
        }
        // A sample's body: u32 size, then the raw trace entry.
        if kind == PERF_RECORD_SAMPLE
            && let Some(raw) = data.get(at + 12..at + size)
            && u32_at(raw, curr_offset) == Some(1)
            && let Some(value) = u32_at(raw, offset)
        {
            return Ok(value);
        }
        at += size;
    }
    Err("no kmem:rss_stat record for a page fault of this thread".to_owned())
}

/// The tracepoint's id and format text from tracefs.
fn tracepoint() -> Result<(u64, String), String> {
    for root in TRACEFS {
        let dir = format!("{root}/events/kmem/rss_stat");
        if let (Ok(id), Ok(format)) = (
            std::fs::read_to_string(format!("{dir}/id")),
            std::fs::read_to_string(format!("{dir}/format")),
        ) {
            let id = id
                .trim()
                .parse()
                .map_err(|_| format!("{dir}/id: not a number"))?;
            return Ok((id, format));
        }
    }
    Err("kmem:rss_stat is not readable in tracefs (needs root and a mounted tracefs)".to_owned())
}

/// Offset of a 4-byte field in a tracepoint format, e.g. `field:unsigned int mm_id;\toffset:8;\tsize:4;`.
fn field_offset(format: &str, name: &str) -> Result<usize, String> {
    let wanted = format!(" {name};");
    let line = format
        .lines()
        .find(|line| line.contains(&wanted))
        .ok_or_else(|| format!("kmem:rss_stat has no {name} field"))?;
    let value = |key: &str| {
        line.split(';')
            .find_map(|part| part.trim().strip_prefix(key))
            .and_then(|v| v.parse::<usize>().ok())
    };
    match (value("offset:"), value("size:")) {
        (Some(offset), Some(4)) => Ok(offset),
        _ => Err(format!("kmem:rss_stat field {name} is not a 4-byte field")),
    }
}

/// The online CPUs, if every possible CPU is online.
fn online_cpus() -> Result<Vec<i32>, String> {
    let read = |name: &str| {
        std::fs::read_to_string(format!("/sys/devices/system/cpu/{name}"))
            .map_err(|err| format!("/sys/devices/system/cpu/{name}: {err}"))
    };
    let online = parse_cpu_list(read("online")?.trim())?;
    let possible = parse_cpu_list(read("possible")?.trim())?;
    if online != possible {
        return Err("some possible CPUs are offline".to_owned());
    }
    Ok(online)
}

/// Parses a kernel CPU list such as `0-3,8,10-11`.
fn parse_cpu_list(text: &str) -> Result<Vec<i32>, String> {
    let mut cpus = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("bad CPU list {text:?}");
        let (low, high) = part.split_once('-').unwrap_or((part, part));
        let low: i32 = low.parse().map_err(|_| bad())?;
        let high: i32 = high.parse().map_err(|_| bad())?;
        cpus.extend(low..=high);
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-2,5,7-8").unwrap(), vec![0, 1, 2, 5, 7, 8]);
        assert_eq!(parse_cpu_list("0").unwrap(), vec![0]);
        assert!(parse_cpu_list("0-x").is_err());
    }

    #[test]
    fn format_offsets() {
        let format = "\tfield:unsigned int mm_id;\toffset:8;\tsize:4;\tsigned:0;\n\
                      \tfield:long size;\toffset:24;\tsize:8;\tsigned:1;\n";
        assert_eq!(field_offset(format, "mm_id").unwrap(), 8);
        assert!(field_offset(format, "size").is_err());
        assert!(field_offset(format, "curr").is_err());
    }
}
