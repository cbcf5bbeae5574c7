//! The one reader of the kernel's per-process text files: [`ProcFile`] (a `/proc` file opened
//! once and re-read with `pread`, one system call and no path walk per read), the parsers of
//! `stat`, `statm` and `status`, the kernel's units (page size, clock ticks, boot time), and
//! the one "exited / zombie / kernel thread" check ([`liveness`]).
//!
//! Every other module that needs these asks here: the sampler's counters (`memory`), the
//! monitors (`monitor`), the process tree follower, attaching, and the exact mode's RSS reader.
//! It knows nothing of Python, records or output formats.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The `flags` bit of `stat` that marks a kernel thread (`PF_KTHREAD` in `linux/sched.h`).
const PF_KTHREAD: u64 = 0x0020_0000;

/// Whether an I/O error on a `/proc` file means the process (or thread) is gone.
pub fn is_gone(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ESRCH)
}

/// A `/proc` file kept open and re-read from offset 0, which makes the kernel produce its text
/// afresh. Holding the descriptor also pins the identity: once the process is gone the
/// descriptor reads nothing (or fails), so a recycled PID is never mistaken for it.
#[derive(Debug)]
pub struct ProcFile {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
}

impl ProcFile {
    /// Opens `path`.
    pub fn open(path: impl Into<PathBuf>) -> io::Result<ProcFile> {
        let path = path.into();
        let file = File::open(&path)?;
        Ok(ProcFile {
            file,
            path,
            buf: Vec::with_capacity(512),
        })
    }

    /// Opens `/proc/PID/NAME` (`NAME` may hold slashes: `task/TID/stat`).
    pub fn of_process(pid: i32, name: &str) -> io::Result<ProcFile> {
        ProcFile::open(format!("/proc/{pid}/{name}"))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads a one-record file (`stat`, `statm`, `status`): the kernel produces it whole on the
    /// first read, so a read that does not fill the buffer is the end. Empty once the process
    /// is gone.
    pub fn read(&mut self) -> io::Result<&[u8]> {
        self.read_whole(true)
    }

    /// Reads a list file (`children`) until a read returns nothing.
    pub fn read_list(&mut self) -> io::Result<&[u8]> {
        self.read_whole(false)
    }

    fn read_whole(&mut self, one_record: bool) -> io::Result<&[u8]> {
        self.buf.clear();
        self.buf.resize(self.buf.capacity().max(512), 0);
        let mut filled = 0;
        loop {
            let n = self.file.read_at(&mut self.buf[filled..], filled as u64)?;
            filled += n;
            if n == 0 || (one_record && filled < self.buf.len()) {
                break;
            }
            if filled == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        self.buf.truncate(filled);
        Ok(&self.buf)
    }

    /// Reads and parses `stat`; `None` if it is empty (gone) or malformed.
    pub fn read_stat(&mut self) -> io::Result<Option<StatFields>> {
        Ok(StatFields::parse(self.read()?))
    }

    /// Reads and parses `statm`.
    pub fn read_statm(&mut self) -> io::Result<Option<StatmFields>> {
        Ok(StatmFields::parse(self.read()?))
    }

    /// Reads and parses `schedstat`.
    pub fn read_schedstat(&mut self) -> io::Result<Option<SchedStat>> {
        Ok(SchedStat::parse(self.read()?))
    }
}

/// The fields of `/proc/PID/task/TID/schedstat`: a thread's time on CPU, in nanoseconds, and
/// how many times it was switched onto a CPU. The kernel adds the time of a run when the
/// thread leaves the CPU (or at a scheduler tick), so a thread that ran and went back to
/// sleep always shows more time than before it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SchedStat {
    /// Time on CPU, nanoseconds.
    pub run_ns: u64,
    /// Times switched onto a CPU (0 where the kernel keeps no scheduler statistics).
    pub switches_in: u64,
}

impl SchedStat {
    /// Parses the text of `schedstat` (`RUN_NS WAIT_NS SWITCHES_IN`).
    pub fn parse(text: &[u8]) -> Option<SchedStat> {
        let text = std::str::from_utf8(text).ok()?;
        let mut words = text.split_ascii_whitespace();
        let run_ns = words.next()?.parse().ok()?;
        let switches_in = words.nth(1)?.parse().ok()?;
        Some(SchedStat {
            run_ns,
            switches_in,
        })
    }
}

/// The fields of `/proc/PID/stat` (or `/proc/PID/task/TID/stat`) that pmt uses, in `/proc` units.
#[derive(Debug, Clone, PartialEq)]
pub struct StatFields {
    /// Process (or thread) ID, as the reader's PID namespace numbers it.
    pub pid: i32,
    /// Executable or thread name (`comm`, at most 15 bytes).
    pub name: String,
    /// State letter: `R`, `S`, `D`, `Z`, `T`…
    pub state: char,
    /// Parent PID.
    pub ppid: i32,
    /// Kernel flags (`PF_*`).
    pub flags: u64,
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
    /// Parses the text of `stat`. `comm` may hold spaces and parentheses: it ends at the last `)`.
    pub fn parse(text: &[u8]) -> Option<StatFields> {
        let open = text.iter().position(|&b| b == b'(')?;
        let close = text.iter().rposition(|&b| b == b')')?;
        let pid = std::str::from_utf8(text.get(..open)?)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let name = String::from_utf8_lossy(text.get(open + 1..close)?).into_owned();
        let rest = std::str::from_utf8(text.get(close + 1..)?).ok()?;
        // Field numbers of proc(5) less 3: state is 3, ppid 4, flags 9, minflt 10 …
        let mut fields = rest.split_ascii_whitespace();
        let state = fields.next()?.chars().next()?;
        let ppid = fields.next()?.parse().ok()?;
        let mut numbers = [0u64; 20];
        for slot in &mut numbers {
            // Fields 5..=24; some (tpgid, cutime, priority, nice) are signed, and none of
            // the signed ones that are used is ever negative.
            let word = fields.next()?;
            *slot = word
                .parse::<u64>()
                .or_else(|_| word.parse::<i64>().map(|v| v as u64))
                .ok()?;
        }
        let field = |number: usize| numbers[number - 5];
        let blkio_ticks = fields.nth(17).and_then(|w| w.parse().ok()).unwrap_or(0);
        Some(StatFields {
            pid,
            name,
            state,
            ppid,
            flags: field(9),
            minflt: field(10),
            majflt: field(12),
            utime: field(14),
            stime: field(15),
            cutime: field(16),
            cstime: field(17),
            num_threads: field(20),
            starttime: field(22),
            vsize: field(23),
            rss_pages: field(24),
            blkio_ticks,
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

    /// Whether this is a kernel thread (no user memory, no program).
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }

    /// Minor plus major page faults.
    pub fn faults(&self) -> u64 {
        self.minflt + self.majflt
    }

    /// User plus system CPU, ticks.
    pub fn cpu_ticks(&self) -> u64 {
        self.utime + self.stime
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
    /// Parses the text of `statm`.
    pub fn parse(text: &[u8]) -> Option<StatmFields> {
        let text = std::str::from_utf8(text).ok()?;
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

    /// Resident set size in bytes.
    pub fn resident_bytes(&self) -> u64 {
        self.resident * page_size()
    }
}

/// The fields of `/proc/PID/status` (or `/proc/PID/task/TID/status`) that pmt uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusFields {
    /// `Name:` (`comm`).
    pub name: String,
    /// `Tgid:`: the process a thread belongs to.
    pub tgid: i32,
    /// `PPid:` (0 when the parent is outside the reader's PID namespace).
    pub ppid: i32,
    /// `NSpid:`: the task's id in the reader's PID namespace first, then in each nested one,
    /// the task's own namespace last. One entry when both share a namespace.
    pub nspid: Vec<i32>,
    /// `Uid:` real and effective.
    pub uid: (u32, u32),
    /// `Gid:` real and effective.
    pub gid: (u32, u32),
    /// `CapEff:`: the effective capabilities, one bit each.
    pub cap_eff: u64,
    /// `voluntary_ctxt_switches:`.
    pub voluntary_ctxt_switches: u64,
    /// `nonvoluntary_ctxt_switches:`.
    pub nonvoluntary_ctxt_switches: u64,
}

impl StatusFields {
    /// Parses the text of `status`; fields the kernel does not show stay at their default.
    pub fn parse(text: &[u8]) -> Option<StatusFields> {
        let text = std::str::from_utf8(text).ok()?;
        let mut status = StatusFields::default();
        let mut named = false;
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            let mut numbers = value.split_ascii_whitespace();
            match key {
                "Name" => {
                    status.name = value.to_string();
                    named = true;
                }
                "Tgid" => status.tgid = value.parse().ok()?,
                "PPid" => status.ppid = value.parse().ok()?,
                "CapEff" => status.cap_eff = u64::from_str_radix(value, 16).ok()?,
                "NSpid" => status.nspid = numbers.filter_map(|n| n.parse().ok()).collect(),
                "Uid" => {
                    let real = numbers.next()?.parse().ok()?;
                    let effective = numbers.next()?.parse().ok()?;
                    status.uid = (real, effective);
                }
                "Gid" => {
                    let real = numbers.next()?.parse().ok()?;
                    let effective = numbers.next()?.parse().ok()?;
                    status.gid = (real, effective);
                }
                "voluntary_ctxt_switches" => status.voluntary_ctxt_switches = value.parse().ok()?,
                "nonvoluntary_ctxt_switches" => {
                    status.nonvoluntary_ctxt_switches = value.parse().ok()?;
                }
                _ => {}
            }
        }
        named.then_some(status)
    }

    /// The task's id in its own PID namespace (the last `NSpid` entry).
    pub fn own_namespace_id(&self) -> Option<i32> {
        self.nspid.last().copied()
    }
}

/// Reads `/proc/PID/status` once.
pub fn read_status(pid: i32) -> io::Result<Option<StatusFields>> {
    Ok(StatusFields::parse(&std::fs::read(format!(
        "/proc/{pid}/status"
    ))?))
}

/// Reads `/proc/PID/stat` once.
pub fn read_stat(pid: i32) -> io::Result<Option<StatFields>> {
    Ok(StatFields::parse(&std::fs::read(format!(
        "/proc/{pid}/stat"
    ))?))
}

/// The kernel's page size in bytes.
pub fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    // SAFETY: sysconf has no preconditions; it returns -1 on error, handled below.
    *PAGE.get_or_init(|| {
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
    })
}

/// Transparent huge pages as the kernel maps them on an anonymous fault: (size of a PMD-mapped
/// huge page, whether a read fault maps the shared huge zero page instead of memory).
/// `/sys/kernel/mm/transparent_hugepage/`; 2 MiB and the zero page when it cannot be read.
pub fn transparent_huge_pages() -> (u64, bool) {
    static THP: OnceLock<(u64, bool)> = OnceLock::new();
    *THP.get_or_init(|| {
        let read = |name: &str| {
            std::fs::read_to_string(format!("/sys/kernel/mm/transparent_hugepage/{name}"))
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
        };
        let size = read("hpage_pmd_size").filter(|&s| s > 0).unwrap_or(2 << 20);
        (size, read("use_zero_page").is_none_or(|z| z != 0))
    })
}

/// Clock ticks per second, the unit of `stat`'s times (`_SC_CLK_TCK`).
pub fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    // SAFETY: sysconf has no preconditions; it returns -1 on error, handled below.
    *TICKS.get_or_init(|| {
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
    })
}

/// Constants of the running kernel that turn `/proc` units into seconds and bytes.
#[derive(Debug, Clone, Copy)]
pub struct KernelUnits {
    /// Clock ticks per second ([`clock_ticks`]).
    pub ticks_per_second: f64,
    /// Bytes per page ([`page_size`]).
    pub page_size: u64,
    /// Boot time, seconds since the Unix epoch (`btime` of `/proc/stat`).
    pub boot_time: f64,
}

impl KernelUnits {
    /// Reads the units of this machine.
    pub fn read() -> io::Result<KernelUnits> {
        let text = std::fs::read_to_string("/proc/stat")?;
        let boot_time = text
            .lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "/proc/stat has no btime line")
            })?;
        Ok(KernelUnits {
            ticks_per_second: clock_ticks() as f64,
            page_size: page_size(),
            boot_time,
        })
    }
}

/// What the kernel says a PID is.
#[derive(Debug, Clone, PartialEq)]
pub enum Liveness {
    /// A running (or sleeping, stopped…) user process.
    Alive(StatFields),
    /// It has exited and its parent has not reaped it yet.
    Zombie(StatFields),
    /// A kernel thread: no user memory to read.
    KernelThread(StatFields),
    /// No such process (or its `stat` cannot be read at all).
    Gone,
}

/// Whether `pid` is alive, a zombie, a kernel thread or gone, from one read of its `stat`.
pub fn liveness(pid: i32) -> Liveness {
    match read_stat(pid) {
        Ok(Some(stat)) => classify(stat),
        _ => Liveness::Gone,
    }
}

/// The [`Liveness`] that a read of `stat` shows.
pub fn classify(stat: StatFields) -> Liveness {
    if stat.has_exited() {
        Liveness::Zombie(stat)
    } else if stat.is_kernel_thread() {
        Liveness::KernelThread(stat)
    } else {
        Liveness::Alive(stat)
    }
}

/// Whether `pid` has exited (gone, or a zombie).
pub fn has_exited(pid: i32) -> bool {
    matches!(liveness(pid), Liveness::Gone | Liveness::Zombie(_))
}

/// The thread ids of `pid` (the entries of `/proc/PID/task`), sorted.
pub fn task_ids(pid: i32) -> io::Result<Vec<u32>> {
    let mut tids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

/// PIDs in a list file's text (`children`).
pub fn parse_pids(text: &[u8]) -> impl Iterator<Item = i32> + '_ {
    text.split(u8::is_ascii_whitespace)
        .filter_map(|word| std::str::from_utf8(word).ok()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_and_parens_in_comm() {
        let text = b"1234 (a (b) c) S 1 1234 1234 0 -1 4194304 1500 0 7 0 250 30 4 5 20 0 3 0 \
                    98765 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 9 0 0";
        let stat = StatFields::parse(text).expect("parses");
        assert_eq!(stat.pid, 1234);
        assert_eq!(stat.name, "a (b) c");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.ppid, 1);
        assert_eq!(stat.flags, 4194304);
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
        assert_eq!((stat.faults(), stat.cpu_ticks()), (1507, 280));
        assert!(!stat.is_kernel_thread());
    }

    #[test]
    fn rejects_truncated_stat() {
        assert_eq!(StatFields::parse(b"1234 (x) S 1 2"), None);
        assert_eq!(StatFields::parse(b"garbage"), None);
        assert_eq!(StatFields::parse(b""), None);
    }

    #[test]
    fn parses_statm() {
        let statm = StatmFields::parse(b"100 50 20 3 0 40 0\n").expect("parses");
        assert_eq!(statm.resident, 50);
        assert_eq!(statm.data, 40);
        assert_eq!(StatmFields::parse(b"1 2 x"), None);
        assert_eq!(StatmFields::parse(b"5713"), None);
    }

    #[test]
    fn parses_schedstat() {
        let stat = SchedStat::parse(b"219895348 112850083 909\n").expect("parses");
        assert_eq!(stat.run_ns, 219_895_348);
        assert_eq!(stat.switches_in, 909);
        assert_eq!(SchedStat::parse(b"1 2"), None);
        assert_eq!(SchedStat::parse(b""), None);
    }

    #[test]
    fn parses_status_with_nested_namespaces() {
        let text = b"Name:\tpython3.13\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t19075\n\
                     PPid:\t19074\nUid:\t1000\t1001\t1000\t1000\nGid:\t100\t101\t100\t100\nNSpid:\t19076\t2\n\
                     voluntary_ctxt_switches:\t7\nnonvoluntary_ctxt_switches:\t3\n";
        let status = StatusFields::parse(text).expect("parses");
        assert_eq!(status.name, "python3.13");
        assert_eq!(status.ppid, 19074);
        assert_eq!(status.tgid, 19075);
        assert_eq!(status.uid, (1000, 1001));
        assert_eq!(status.gid, (100, 101));
        assert_eq!(status.nspid, vec![19076, 2]);
        assert_eq!(status.own_namespace_id(), Some(2));
        assert_eq!(
            (
                status.voluntary_ctxt_switches,
                status.nonvoluntary_ctxt_switches
            ),
            (7, 3)
        );
        assert_eq!(StatusFields::parse(b"garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_kthreadd_is_a_kernel_thread() {
        let own = std::process::id() as i32;
        assert!(matches!(liveness(own), Liveness::Alive(stat) if stat.pid == own));
        assert_eq!(liveness(i32::MAX), Liveness::Gone);
        // kthreadd is PID 2 of the initial PID namespace; elsewhere PID 2 may be anything.
        if let Ok(Some(status)) = read_status(2)
            && status.name == "kthreadd"
        {
            assert!(matches!(liveness(2), Liveness::KernelThread(_)));
        }
        let mut file = ProcFile::of_process(own, "statm").expect("open");
        let statm = file.read_statm().expect("read").expect("parse");
        assert!(statm.resident_bytes() > 0);
        assert!(page_size() >= 4096 && clock_ticks() > 0);
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        assert!(task_ids(own).expect("own tasks").contains(&tid));
    }

    #[test]
    fn pids_of_a_children_list() {
        assert_eq!(parse_pids(b"12 345 \n6").collect::<Vec<_>>(), [12, 345, 6]);
        assert_eq!(parse_pids(b"").count(), 0);
    }
}
