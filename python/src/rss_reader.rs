//! Resident set size of this process, read cheaply enough to be asked on every trace event.
//!
//! pymemtrace 0.4.0 opens, parses and closes `/proc/self/statm` on every event; the open (a
//! path walk through procfs) is most of the cost. Here the file is opened once and re-read
//! with `pread` at offset 0, which makes the kernel regenerate the text each time, so every
//! value is as fresh as 0.4.0's. A `fork()` child must not read its parent's file through the
//! inherited descriptor, so an at-fork handler drops the cached descriptor in the child.
//!
//! Most events do not need even that `pread`: while `rss_watch` is counting, it tells without
//! a system call whether any RSS counter of this process changed since this thread last read
//! statm, and only then is statm read again; otherwise the value read last is returned. That
//! value is cached per thread, with the watcher's stamp it was read under.
//!
//! The same handler counts forks, so log writers can tell that they are running in a child
//! (see `fork_generation`).
//!
//! The `statm` parser and the page size are the main crate's attach layer
//! (`pymemtrace::attach::proc_files`), which this crate already depends on for the CLI: one
//! parser for the sampler, the monitors and the exact mode. The descriptor itself stays here,
//! a raw atomic that a fork handler can drop without locking.
//!
//! Owns: the cached descriptor, the fork counter and the per-thread (stamp, RSS) cache. Must
//! not: cache an RSS value without a stamp of the watcher that vouches for it.

use pymemtrace::attach::proc_files::StatmFields;
pub use pymemtrace::attach::proc_files::page_size;

use std::cell::Cell;
use std::sync::Once;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// The open `/proc/self/statm` of this process, or -1 when not (yet) open.
static STATM_FD: AtomicI32 = AtomicI32::new(-1);
static AT_FORK: Once = Once::new();
/// How many `fork()`s separate this process from the one that loaded the extension.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
    let fd = STATM_FD.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: the descriptor was opened by `statm_fd` and is no longer published.
        unsafe { libc::close(fd) };
    }
}

fn register_at_fork() {
    AT_FORK.call_once(|| {
        // SAFETY: registers a handler that only touches atomics and closes a descriptor.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
}

/// A number that changes in a child process after `fork()`: a log opened under one value must
/// not be written under another (the child would duplicate the parent's buffered lines).
pub fn fork_generation() -> u64 {
    register_at_fork();
    FORK_GENERATION.load(Ordering::Relaxed)
}

fn statm_fd() -> i32 {
    let fd = STATM_FD.load(Ordering::Acquire);
    if fd >= 0 {
        return fd;
    }
    register_at_fork();
    // SAFETY: a NUL-terminated literal path; the result is checked.
    let opened = unsafe {
        libc::open(
            c"/proc/self/statm".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if opened < 0 {
        return -1;
    }
    match STATM_FD.compare_exchange(-1, opened, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => opened,
        Err(current) => {
            // Another thread won the race; keep its descriptor.
            // SAFETY: `opened` is ours and unpublished.
            unsafe { libc::close(opened) };
            current
        }
    }
}

thread_local! {
    /// The watcher's stamp and the statm value read under it, by this thread.
    static LAST_READ: Cell<Option<((u64, u64), u64)>> = const { Cell::new(None) };
}

/// The current RSS in bytes, or 0 if it cannot be read (as pymemtrace 0.4.0 does).
#[inline]
pub fn current_rss() -> u64 {
    let Some(stamp) = crate::rss_watch::stamp() else {
        return read_statm();
    };
    LAST_READ.with(|last| match last.get() {
        Some((seen, rss)) if seen == stamp => rss,
        _ => {
            // The stamp is taken before the read: a change racing with it moves the stamp
            // again, so the next event reads once more.
            let rss = read_statm();
            last.set(Some((stamp, rss)));
            rss
        }
    })
}

/// The RSS in bytes read from `/proc/self/statm` now, or 0 if it cannot be read.
pub fn read_statm() -> u64 {
    let fd = statm_fd();
    if fd < 0 {
        return 0;
    }
    let mut buf = [0u8; 128];
    // SAFETY: `buf` is valid for its length; the descriptor is open (or the read fails).
    let read = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    let Ok(len) = usize::try_from(read) else {
        return 0;
    };
    buf.get(..len)
        .and_then(StatmFields::parse)
        .map_or(0, |statm| statm.resident * page_size())
}

/// The peak RSS of this process in bytes (`getrusage` `ru_maxrss`, kilobytes on Linux).
pub fn peak_rss() -> u64 {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid out-pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_rss() {
        assert!(current_rss() > 0);
        assert!(peak_rss() >= current_rss() / 2);
    }
}
