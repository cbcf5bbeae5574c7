//! Log file names and the Clock column shared by every tracer.
//!
//! Names are `YYYYMMDD_HHMMSS_ORD_PID_{P|T|O}_DEPTH_PY<version>.log` (UTC date and time); the
//! ordinal is one process-wide counter shared by Profile, Trace and ReferenceTracing, so two
//! files made in the same second never collide.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

static ORDINAL: AtomicU64 = AtomicU64::new(0);

/// Which tracer a log file belongs to; its letter is part of the file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TracerKind {
    /// `Profile`: letter `P`.
    Profile,
    /// `Trace`: letter `T`.
    Trace,
    /// `ReferenceTracing` (objects, CPython 3.13+): letter `O`.
    #[cfg(Py_3_13)]
    ReferenceTracing,
}

impl TracerKind {
    /// The letter written in the file name.
    pub fn letter(self) -> char {
        match self {
            TracerKind::Profile => 'P',
            TracerKind::Trace => 'T',
            #[cfg(Py_3_13)]
            TracerKind::ReferenceTracing => 'O',
        }
    }
}

/// The running interpreter's version as `PY_VERSION` spells it, e.g. `3.13.0b3`.
pub fn python_version() -> String {
    // SAFETY: Py_GetVersion returns a static NUL-terminated string.
    let full = unsafe { std::ffi::CStr::from_ptr(pyo3::ffi::Py_GetVersion()) };
    let text = full.to_string_lossy();
    text.split_whitespace().next().unwrap_or("").to_string()
}

/// UTC `YYYYMMDD_HHMMSS` of now, from `CLOCK_REALTIME` (the clock Python's `datetime.now()`
/// reads; glibc's `time()` reads the coarse clock, which can already show the next second).
fn utc_timestamp() -> String {
    // SAFETY: clock_gettime and gmtime_r with valid pointers.
    unsafe {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts);
        let now = ts.tv_sec;
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::gmtime_r(&now, &mut tm).is_null() {
            return "00000000_000000".to_string();
        }
        format!(
            "{:04}{:02}{:02}_{:02}{:02}{:02}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec
        )
    }
}

/// A new log file name (not a path); takes the next ordinal.
pub fn new_file_name(kind: TracerKind, depth: usize) -> String {
    let ordinal = ORDINAL.fetch_add(1, Ordering::SeqCst);
    format!(
        "{}_{}_{}_{}_{}_PY{}.log",
        utc_timestamp(),
        ordinal,
        std::process::id(),
        kind.letter(),
        depth,
        python_version()
    )
}

/// A new log file path in the current working directory.
pub fn new_file_path(kind: TracerKind, depth: usize) -> std::io::Result<PathBuf> {
    Ok(std::env::current_dir()?.join(new_file_name(kind, depth)))
}

/// Process CPU time in seconds, as C's `clock()` reports it (microsecond resolution).
pub fn process_clock() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    let micros = ts.tv_sec * 1_000_000 + ts.tv_nsec / 1_000;
    micros as f64 / 1_000_000.0
}
