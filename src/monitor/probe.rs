//! Reading one process's counters for the monitors: the cheap per-tick fields (`stat`,
//! `statm`, the CPU-time clock) through the attach layer's [`ProcFile`]s kept open, and the
//! dearer extras (USS, context switches, open files, network connections, command line) on
//! demand. The `/proc` parsers and kernel units are the attach layer's
//! ([`crate::attach::proc_files`]); which processes form a tree is its follower's.
//!
//! It knows nothing of records, tables or output formats.

use crate::attach::proc_files::{
    ProcFile, StatFields, StatmFields, StatusFields, is_gone, read_status,
};
use std::collections::HashSet;
use std::io;
use std::path::PathBuf;

/// Why a process could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The process does not exist (or has exited since).
    #[error("no process with PID {pid}: check the PID with `ps -p {pid}`")]
    NoSuchProcess {
        /// The PID asked for.
        pid: i32,
    },
    /// `/proc` refused to show this process.
    #[error(
        "permission denied reading {path}: run as the process's owner or as root (or with CAP_SYS_PTRACE)"
    )]
    PermissionDenied {
        /// The file that could not be read.
        path: PathBuf,
    },
    /// Any other failure reading `/proc`, or contents that could not be parsed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
}

fn io_error(pid: i32, path: PathBuf, err: io::Error) -> ProbeError {
    match err.kind() {
        io::ErrorKind::NotFound => ProbeError::NoSuchProcess { pid },
        io::ErrorKind::PermissionDenied => ProbeError::PermissionDenied { path },
        _ if is_gone(&err) => ProbeError::NoSuchProcess { pid },
        _ => ProbeError::Io { path, source: err },
    }
}

fn malformed(path: PathBuf, what: &str) -> ProbeError {
    ProbeError::Io {
        path,
        source: io::Error::new(io::ErrorKind::InvalidData, format!("malformed {what}")),
    }
}

/// Proportional and unique memory from `/proc/PID/smaps_rollup`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FullMemory {
    /// Unique set size: private pages, freed if the process ended now.
    pub uss: u64,
    /// Proportional set size.
    pub pss: u64,
    /// Swapped out.
    pub swap: u64,
}

/// Voluntary and involuntary context switches (`/proc/PID/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContextSwitches {
    /// The process gave up the CPU (waited).
    pub voluntary: u64,
    /// The scheduler took the CPU away.
    pub involuntary: u64,
}

/// One live process, read through descriptors kept open between ticks.
///
/// Holding `/proc/PID/stat` open also pins the identity: once the process is gone the
/// descriptor reads nothing, so a recycled PID is never mistaken for it.
#[derive(Debug)]
pub struct ProcessProbe {
    pid: i32,
    stat: ProcFile,
    statm: Option<ProcFile>,
    cpu_clock: libc::clockid_t,
}

impl ProcessProbe {
    /// Opens `/proc/PID/stat` (and `statm` when `with_statm`) and checks it can be read.
    pub fn open(pid: i32, with_statm: bool) -> Result<ProcessProbe, ProbeError> {
        if pid <= 0 {
            return Err(ProbeError::NoSuchProcess { pid });
        }
        let open = |name: &str| {
            ProcFile::of_process(pid, name)
                .map_err(|err| io_error(pid, format!("/proc/{pid}/{name}").into(), err))
        };
        let stat = open("stat")?;
        let statm = if with_statm {
            Some(open("statm")?)
        } else {
            None
        };
        let mut cpu_clock: libc::clockid_t = 0;
        // SAFETY: `cpu_clock` is valid for the write; the call only builds and checks a clock ID.
        if unsafe { libc::clock_getcpuclockid(pid, &mut cpu_clock) } != 0 {
            return Err(ProbeError::NoSuchProcess { pid });
        }
        Ok(ProcessProbe {
            pid,
            stat,
            statm,
            cpu_clock,
        })
    }

    /// The PID.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Reads `/proc/PID/stat` now. A process that has gone away is [`ProbeError::NoSuchProcess`].
    pub fn stat(&mut self) -> Result<StatFields, ProbeError> {
        let pid = self.pid;
        let path = || PathBuf::from(format!("/proc/{pid}/stat"));
        let text = self.stat.read().map_err(|err| io_error(pid, path(), err))?;
        if text.is_empty() {
            return Err(ProbeError::NoSuchProcess { pid });
        }
        StatFields::parse(text).ok_or_else(|| malformed(path(), "stat"))
    }

    /// The process's CPU time, user + system of all its threads (and of threads already ended),
    /// in nanoseconds: its CPU-time clock (`clock_getcpuclockid`), the same scheduler total the
    /// kernel splits into `utime` and `stime` for `/proc/PID/stat`, without formatting a file.
    ///
    /// The clock names a PID, not a process: read `stat` or `statm` through the open descriptors
    /// *after* it, and a success there proves the PID was not reused in between.
    pub fn cpu_time_ns(&self) -> Result<u64, ProbeError> {
        // SAFETY: timespec is plain data that clock_gettime fills.
        let mut time: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: `time` is valid for the write.
        if unsafe { libc::clock_gettime(self.cpu_clock, &mut time) } != 0 {
            return Err(ProbeError::NoSuchProcess { pid: self.pid });
        }
        let seconds = u64::try_from(time.tv_sec).unwrap_or(0);
        let nanos = u64::try_from(time.tv_nsec).unwrap_or(0);
        Ok(seconds * 1_000_000_000 + nanos)
    }

    /// Reads `/proc/PID/statm` now (the probe must have been opened `with_statm`).
    pub fn statm(&mut self) -> Result<StatmFields, ProbeError> {
        let pid = self.pid;
        let path = || PathBuf::from(format!("/proc/{pid}/statm"));
        let Some(file) = self.statm.as_mut() else {
            return Err(ProbeError::NoSuchProcess { pid });
        };
        let text = file.read().map_err(|err| io_error(pid, path(), err))?;
        if text.is_empty() {
            return Err(ProbeError::NoSuchProcess { pid });
        }
        StatmFields::parse(text).ok_or_else(|| malformed(path(), "statm"))
    }
}

/// Reads USS, PSS and swap from `/proc/PID/smaps_rollup` (or `smaps` on older kernels).
pub fn full_memory(pid: i32) -> Result<FullMemory, ProbeError> {
    let mut path = PathBuf::from(format!("/proc/{pid}/smaps_rollup"));
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            path = PathBuf::from(format!("/proc/{pid}/smaps"));
            std::fs::read_to_string(&path).map_err(|err| io_error(pid, path.clone(), err))?
        }
        Err(err) => return Err(io_error(pid, path, err)),
    };
    let mut full = FullMemory::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let kib: u64 = match value.split_ascii_whitespace().next().map(str::parse) {
            Some(Ok(kib)) => kib,
            _ => continue,
        };
        match key {
            "Private_Clean" | "Private_Dirty" | "Private_Hugetlb" => full.uss += kib * 1024,
            "Pss" => full.pss += kib * 1024,
            "Swap" => full.swap += kib * 1024,
            _ => {}
        }
    }
    Ok(full)
}

/// Reads the context switch counts from `/proc/PID/status`.
pub fn context_switches(pid: i32) -> Result<ContextSwitches, ProbeError> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let status: StatusFields = read_status(pid)
        .map_err(|err| io_error(pid, path.clone(), err))?
        .ok_or_else(|| malformed(path.clone(), "status"))?;
    Ok(ContextSwitches {
        voluntary: status.voluntary_ctxt_switches,
        involuntary: status.nonvoluntary_ctxt_switches,
    })
}

/// The command line (`/proc/PID/cmdline`), one string per argument.
pub fn cmdline(pid: i32) -> Result<Vec<String>, ProbeError> {
    let path = PathBuf::from(format!("/proc/{pid}/cmdline"));
    let bytes = std::fs::read(&path).map_err(|err| io_error(pid, path, err))?;
    Ok(bytes
        .split(|b| *b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect())
}

/// Descriptors of `/proc/PID/fd` as their link targets.
fn fd_targets(pid: i32) -> Result<Vec<(PathBuf, PathBuf)>, ProbeError> {
    let dir = PathBuf::from(format!("/proc/{pid}/fd"));
    let entries = std::fs::read_dir(&dir).map_err(|err| io_error(pid, dir.clone(), err))?;
    Ok(entries
        .flatten()
        .filter_map(|entry| {
            let link = entry.path();
            let target = std::fs::read_link(&link).ok()?;
            Some((link, target))
        })
        .collect())
}

/// The number of regular files the process has open (as psutil's `open_files()` counts them).
pub fn open_file_count(pid: i32) -> Result<usize, ProbeError> {
    Ok(fd_targets(pid)?
        .into_iter()
        .filter(|(link, target)| {
            target.is_absolute() && std::fs::metadata(link).is_ok_and(|meta| meta.is_file())
        })
        .count())
}

/// The number of the process's sockets that are TCP or UDP (IPv4 or IPv6) endpoints,
/// as psutil's `net_connections(kind="inet")` counts them.
pub fn inet_connection_count(pid: i32) -> Result<usize, ProbeError> {
    let socket_inodes: Vec<u64> = fd_targets(pid)?
        .into_iter()
        .filter_map(|(_, target)| {
            let text = target.to_str()?;
            text.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    if socket_inodes.is_empty() {
        return Ok(0);
    }
    let mut inet_inodes = HashSet::new();
    for table in ["tcp", "tcp6", "udp", "udp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            if let Some(Ok(inode)) = line.split_ascii_whitespace().nth(9).map(str::parse::<u64>) {
                inet_inodes.insert(inode);
            }
        }
    }
    Ok(socket_inodes
        .iter()
        .filter(|inode| inet_inodes.contains(inode))
        .count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let mut probe = ProcessProbe::open(std::process::id() as i32, true).expect("opens self");
        let stat = probe.stat().expect("stat");
        assert_eq!(stat.pid, std::process::id() as i32);
        assert!(stat.rss_pages > 0);
        let statm = probe.statm().expect("statm");
        assert!(statm.resident > 0);
        assert!(probe.cpu_time_ns().expect("cpu clock") > 0);
        assert!(context_switches(stat.pid).is_ok());
        assert!(!cmdline(stat.pid).expect("cmdline").is_empty());
    }

    /// The CPU-time clock `pmt tree` reads is the total `stat` splits into `utime` + `stime`
    /// (each truncated to clock ticks), threads that have ended included.
    #[test]
    fn cpu_clock_agrees_with_stat_times() {
        let mut probe = ProcessProbe::open(std::process::id() as i32, false).expect("opens self");
        // Each thread spins until it has used 0.3 s of CPU (however busy the machine is).
        let spin = || {
            let thread_cpu = || {
                // SAFETY: timespec is plain data that clock_gettime fills.
                let mut time: libc::timespec = unsafe { std::mem::zeroed() };
                // SAFETY: `time` is valid for the write.
                unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) };
                time.tv_sec as f64 + time.tv_nsec as f64 / 1e9
            };
            let mut n = 0u64;
            while thread_cpu() < 0.3 {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        };
        let threads = [std::thread::spawn(spin), std::thread::spawn(spin)];
        for thread in threads {
            thread.join().expect("spinner ends");
        }
        let tps = crate::attach::proc_files::clock_ticks() as f64;
        let before = probe.cpu_time_ns().expect("cpu clock");
        let stat = probe.stat().expect("stat");
        let after = probe.cpu_time_ns().expect("cpu clock");
        let to_ticks = |ns: u64| ns as f64 / 1e9 * tps;
        let stat_ticks = (stat.utime + stat.stime) as f64;
        assert!(
            to_ticks(before) >= 0.5 * tps,
            "two 0.3 s spinners: {before} ns"
        );
        assert!(
            stat_ticks >= to_ticks(before) - 2.0 && stat_ticks <= to_ticks(after) + 2.0,
            "stat {stat_ticks} ticks, clock {:.2}..{:.2} ticks",
            to_ticks(before),
            to_ticks(after)
        );
    }

    #[test]
    fn missing_process_is_no_such_process() {
        assert!(matches!(
            ProcessProbe::open(i32::MAX, false),
            Err(ProbeError::NoSuchProcess { .. })
        ));
        assert!(matches!(
            ProcessProbe::open(-5, false),
            Err(ProbeError::NoSuchProcess { .. })
        ));
    }
}
