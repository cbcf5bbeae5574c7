//! Reading one process's counters from `/proc`: the cheap per-tick fields (`stat`, `statm`,
//! the children lists) through file descriptors kept open and re-read with `pread`, and the
//! dearer extras (USS, context switches, open files, network connections, command line) on demand.
//!
//! It knows nothing of records, tables or output formats.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
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
        _ if err.raw_os_error() == Some(libc::ESRCH) => ProbeError::NoSuchProcess { pid },
        _ => ProbeError::Io { path, source: err },
    }
}

fn malformed(path: PathBuf, what: &str) -> ProbeError {
    ProbeError::Io {
        path,
        source: io::Error::new(io::ErrorKind::InvalidData, format!("malformed {what}")),
    }
}

/// Constants of the running kernel that turn `/proc` units into seconds and bytes.
#[derive(Debug, Clone, Copy)]
pub struct KernelUnits {
    /// Clock ticks per second (`_SC_CLK_TCK`).
    pub ticks_per_second: f64,
    /// Bytes per page (`_SC_PAGESIZE`).
    pub page_size: u64,
    /// Boot time, seconds since the Unix epoch (`btime` of `/proc/stat`).
    pub boot_time: f64,
}

impl KernelUnits {
    /// Reads the units of this machine.
    pub fn read() -> Result<Self, ProbeError> {
        // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let path = PathBuf::from("/proc/stat");
        let text = std::fs::read_to_string(&path).map_err(|err| io_error(0, path.clone(), err))?;
        let boot_time = text
            .lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .ok_or_else(|| malformed(path, "btime line"))?;
        Ok(KernelUnits {
            ticks_per_second: if ticks > 0 { ticks as f64 } else { 100.0 },
            page_size: u64::try_from(page).ok().filter(|p| *p > 0).unwrap_or(4096),
            boot_time,
        })
    }
}

/// The fields of `/proc/PID/stat` the monitors use, in `/proc` units.
#[derive(Debug, Clone, PartialEq)]
pub struct StatFields {
    /// Process ID.
    pub pid: i32,
    /// Executable name (`comm`, at most 15 bytes).
    pub name: String,
    /// State letter: `R`, `S`, `D`, `Z`, `T`…
    pub state: char,
    /// Parent PID.
    pub ppid: i32,
    /// Minor page faults.
    pub minflt: u64,
    /// Major page faults.
    pub majflt: u64,
    /// User CPU, ticks.
    pub utime: u64,
    /// System CPU, ticks.
    pub stime: u64,
    /// User CPU of waited-for children, ticks.
    pub cutime: u64,
    /// System CPU of waited-for children, ticks.
    pub cstime: u64,
    /// Number of threads.
    pub num_threads: u64,
    /// Start time, ticks after boot.
    pub starttime: u64,
    /// Virtual memory size, bytes.
    pub vsize: u64,
    /// Resident set size, pages.
    pub rss_pages: u64,
    /// Block I/O delay, ticks (0 where the kernel does not account it).
    pub blkio_ticks: u64,
}

impl StatFields {
    /// Parses the text of `/proc/PID/stat`. `comm` may hold spaces and parentheses: it ends at the last `)`.
    pub fn parse(text: &str) -> Option<StatFields> {
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let pid = text.get(..open)?.trim().parse().ok()?;
        let name = text.get(open + 1..close)?.to_string();
        let rest: Vec<&str> = text.get(close + 1..)?.split_ascii_whitespace().collect();
        let num = |index: usize| -> Option<u64> { rest.get(index)?.parse().ok() };
        Some(StatFields {
            pid,
            name,
            state: rest.first()?.chars().next()?,
            ppid: rest.get(1)?.parse().ok()?,
            minflt: num(7)?,
            majflt: num(9)?,
            utime: num(11)?,
            stime: num(12)?,
            cutime: num(13)?,
            cstime: num(14)?,
            num_threads: num(17)?,
            starttime: num(19)?,
            vsize: num(20)?,
            rss_pages: num(21)?,
            blkio_ticks: num(39).unwrap_or(0),
        })
    }

    /// The state as psutil names it (`running`, `sleeping`, `zombie`…).
    pub fn status(&self) -> &'static str {
        match self.state {
            'R' => "running",
            'S' => "sleeping",
            'D' => "disk-sleep",
            'T' => "stopped",
            't' => "tracing-stop",
            'Z' => "zombie",
            'X' | 'x' => "dead",
            'K' => "wake-kill",
            'W' => "waking",
            'I' => "idle",
            'P' => "parked",
            _ => "unknown",
        }
    }

    /// Whether the process has finished (a zombie or dead process holds no memory).
    pub fn has_exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// The fields of `/proc/PID/statm`, in pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatmFields {
    /// Total program size.
    pub size: u64,
    /// Resident set size.
    pub resident: u64,
    /// Resident shared pages (file-backed or shared memory).
    pub shared: u64,
    /// Text (code).
    pub text: u64,
    /// Library (always 0 since Linux 2.6).
    pub lib: u64,
    /// Data + stack.
    pub data: u64,
    /// Dirty pages (always 0 since Linux 2.6).
    pub dirty: u64,
}

impl StatmFields {
    /// Parses the text of `/proc/PID/statm`.
    pub fn parse(text: &str) -> Option<StatmFields> {
        let mut values = [0u64; 7];
        let mut words = text.split_ascii_whitespace();
        for value in &mut values {
            *value = words.next()?.parse().ok()?;
        }
        let [size, resident, shared, text, lib, data, dirty] = values;
        Some(StatmFields {
            size,
            resident,
            shared,
            text,
            lib,
            data,
            dirty,
        })
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

/// One live process, read through file descriptors kept open between ticks.
///
/// Holding `/proc/PID/stat` open also pins the identity: once the process is gone the
/// descriptor reads nothing, so a recycled PID is never mistaken for it.
#[derive(Debug)]
pub struct ProcessProbe {
    pid: i32,
    stat: File,
    statm: Option<File>,
    children: Option<File>,
    cpu_clock: libc::clockid_t,
    buf: Vec<u8>,
}

impl ProcessProbe {
    /// Opens `/proc/PID/stat` (and `statm` when `with_statm`) and checks it can be read.
    pub fn open(pid: i32, with_statm: bool) -> Result<ProcessProbe, ProbeError> {
        if pid <= 0 {
            return Err(ProbeError::NoSuchProcess { pid });
        }
        let open = |name: &str| {
            let path = PathBuf::from(format!("/proc/{pid}/{name}"));
            File::open(&path).map_err(|err| io_error(pid, path, err))
        };
        let stat = open("stat")?;
        let statm = if with_statm {
            Some(open("statm")?)
        } else {
            None
        };
        let children = File::open(format!("/proc/{pid}/task/{pid}/children")).ok();
        let mut cpu_clock: libc::clockid_t = 0;
        // SAFETY: `cpu_clock` is valid for the write; the call only builds and checks a clock ID.
        if unsafe { libc::clock_getcpuclockid(pid, &mut cpu_clock) } != 0 {
            return Err(ProbeError::NoSuchProcess { pid });
        }
        let probe = ProcessProbe {
            pid,
            stat,
            statm,
            children,
            cpu_clock,
            buf: Vec::with_capacity(512),
        };
        Ok(probe)
    }

    /// The PID.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Reads the whole file from offset 0 into `buf`. `one_record` files (`stat`, `statm`) are
    /// produced whole by the kernel on the first read, so a read that does not fill the buffer
    /// is the end; list files (`children`) are read until a read returns nothing.
    fn reread(file: &File, buf: &mut Vec<u8>, one_record: bool) -> io::Result<usize> {
        buf.clear();
        buf.resize(buf.capacity().max(512), 0);
        let mut filled = 0;
        loop {
            let n = file.read_at(&mut buf[filled..], filled as u64)?;
            filled += n;
            if n == 0 || (one_record && filled < buf.len()) {
                break;
            }
            if filled == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
        }
        buf.truncate(filled);
        Ok(filled)
    }

    fn read_file(&mut self, which: Which) -> Result<&str, ProbeError> {
        let pid = self.pid;
        let (file, name) = match which {
            Which::Stat => (&self.stat, "stat"),
            Which::Statm => match &self.statm {
                Some(file) => (file, "statm"),
                None => return Err(ProbeError::NoSuchProcess { pid }),
            },
            Which::Children => match &self.children {
                Some(file) => (file, "children"),
                None => return Err(ProbeError::NoSuchProcess { pid }),
            },
        };
        let path = || PathBuf::from(format!("/proc/{pid}/{name}"));
        let one_record = !matches!(which, Which::Children);
        let n = Self::reread(file, &mut self.buf, one_record)
            .map_err(|err| io_error(pid, path(), err))?;
        if n == 0 && !matches!(which, Which::Children) {
            return Err(ProbeError::NoSuchProcess { pid });
        }
        std::str::from_utf8(&self.buf).map_err(|_| malformed(path(), "text (not UTF-8)"))
    }

    /// Reads `/proc/PID/stat` now. A process that has gone away is [`ProbeError::NoSuchProcess`].
    pub fn stat(&mut self) -> Result<StatFields, ProbeError> {
        let pid = self.pid;
        let text = self.read_file(Which::Stat)?;
        StatFields::parse(text).ok_or_else(|| malformed(format!("/proc/{pid}/stat").into(), "stat"))
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
        let text = self.read_file(Which::Statm)?;
        StatmFields::parse(text)
            .ok_or_else(|| malformed(format!("/proc/{pid}/statm").into(), "statm"))
    }

    /// The PIDs of the process's children (all threads' children), sorted.
    ///
    /// Reads `/proc/PID/task/TID/children` (kernel option `CONFIG_PROC_CHILDREN`), the main
    /// thread's through the open descriptor; other threads' only when `num_threads > 1`.
    /// Where that file does not exist, scans `/proc` for processes whose parent is this one.
    pub fn children(&mut self, num_threads: u64) -> Result<Vec<i32>, ProbeError> {
        if self.children.is_none() {
            return Ok(scan_children(self.pid));
        }
        let mut pids = parse_pids(self.read_file(Which::Children)?);
        if num_threads > 1 {
            let pid = self.pid;
            if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
                for task in tasks.flatten() {
                    let name = task.file_name();
                    if name.to_str() == Some(&pid.to_string()) {
                        continue;
                    }
                    if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                        pids.extend(parse_pids(&text));
                    }
                }
            }
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }
}

#[derive(Clone, Copy)]
enum Which {
    Stat,
    Statm,
    Children,
}

fn parse_pids(text: &str) -> Vec<i32> {
    text.split_ascii_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn scan_children(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|text| StatFields::parse(&text))
                .is_some_and(|stat| stat.ppid == parent)
        })
        .collect();
    pids.sort_unstable();
    pids
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
    let text = std::fs::read_to_string(&path).map_err(|err| io_error(pid, path.clone(), err))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    match (
        field("voluntary_ctxt_switches:"),
        field("nonvoluntary_ctxt_switches:"),
    ) {
        (Some(voluntary), Some(involuntary)) => Ok(ContextSwitches {
            voluntary,
            involuntary,
        }),
        _ => Err(malformed(path, "ctxt_switches lines")),
    }
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
    fn parses_stat_with_spaces_and_parens_in_comm() {
        let text = "1234 (a (b) c) S 1 1234 1234 0 -1 4194304 1500 0 7 0 250 30 4 5 20 0 3 0 \
                    98765 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 9 0 0";
        let stat = StatFields::parse(text).expect("parses");
        assert_eq!(stat.pid, 1234);
        assert_eq!(stat.name, "a (b) c");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.ppid, 1);
        assert_eq!((stat.minflt, stat.majflt), (1500, 7));
        assert_eq!(
            (stat.utime, stat.stime, stat.cutime, stat.cstime),
            (250, 30, 4, 5)
        );
        assert_eq!(stat.num_threads, 3);
        assert_eq!(stat.starttime, 98765);
        assert_eq!((stat.vsize, stat.rss_pages), (123456789, 2048));
        assert_eq!(stat.blkio_ticks, 9);
        assert_eq!(stat.status(), "sleeping");
    }

    #[test]
    fn rejects_truncated_stat() {
        assert_eq!(StatFields::parse("1234 (x) S 1 2"), None);
        assert_eq!(StatFields::parse("garbage"), None);
    }

    #[test]
    fn parses_statm() {
        let statm = StatmFields::parse("100 50 20 3 0 40 0\n").expect("parses");
        assert_eq!(statm.resident, 50);
        assert_eq!(statm.data, 40);
        assert_eq!(StatmFields::parse("1 2 x"), None);
    }

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
        let tps = KernelUnits::read().expect("units").ticks_per_second;
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
