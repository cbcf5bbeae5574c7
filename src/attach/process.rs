//! A target process as the kernel shows it in `/proc`: existence (and why not: zombie, kernel
//! thread, exited while attaching, refused), executable, command line, mapped files (through
//! the `procfs` crate), threads with their ids mapped out of a container's PID namespace, and
//! its files read through its own root. Reads only; never signals the target.

use super::namespaces::{
    ReaderUserNamespace, ThreadIdMap, reader_user_namespace, yama_ptrace_scope,
};
use super::proc_files::{Liveness, ProcFile, StatFields, is_gone, liveness, page_size, task_ids};
use super::process_tree::descendant_pids;
use procfs::ProcError;
use procfs::process::{MMPermissions, MMapPath, Process};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a process cannot be attached to. Each message says what is wrong and what to do.
#[derive(Debug, Error)]
pub enum ProcessError {
    /// No process has this pid.
    #[error("no process with pid {0}: check the pid (`ps -ef | grep python`)")]
    NoSuchProcess(i32),
    /// The process has exited but its parent has not reaped it.
    #[error(
        "process {pid} is a zombie: it has exited and its parent (pid {ppid}) has not reaped it, so it has no memory left to read"
    )]
    Zombie {
        /// The process.
        pid: i32,
        /// Its parent, which should wait for it.
        ppid: i32,
    },
    /// The pid is a kernel thread.
    #[error(
        "process {pid} ({name}) is a kernel thread, not a Python process: pass the pid of a Python process (`ps -ef | grep python`)"
    )]
    KernelThread {
        /// The thread.
        pid: i32,
        /// Its name.
        name: String,
    },
    /// The process went away between being found and being read.
    #[error("process {0} exited while it was being attached to: there is nothing left to read")]
    ExitedWhileAttaching(i32),
    /// The caller may not inspect the process (and is not root).
    #[error(
        "permission denied for process {0}: run as root, or give pmt CAP_SYS_PTRACE (`sudo setcap cap_sys_ptrace+ep $(which pmt)`), or set `kernel.yama.ptrace_scope` to 0"
    )]
    PermissionDenied(i32),
    /// Root was refused: the process is outside our user namespace, or a security module
    /// protects it.
    #[error("permission denied for process {pid} although pmt runs as root: {reason}")]
    Protected {
        /// The process.
        pid: i32,
        /// Why root is not enough here, and what to do.
        reason: String,
    },
    /// Reading `/proc` failed for another reason.
    #[error("cannot read /proc/{pid}: {message}")]
    Proc {
        /// The process.
        pid: i32,
        /// What failed.
        message: String,
    },
}

impl ProcessError {
    /// The error for a process that cannot be opened, from what the kernel says it is now.
    fn not_openable(pid: i32) -> ProcessError {
        match liveness(pid) {
            Liveness::Zombie(stat) => ProcessError::Zombie {
                pid,
                ppid: stat.ppid,
            },
            Liveness::KernelThread(stat) => ProcessError::KernelThread {
                pid,
                name: stat.name,
            },
            Liveness::Alive(_) | Liveness::Gone => ProcessError::NoSuchProcess(pid),
        }
    }

    /// The error for a refusal: what a root reader must be told differs from what others must.
    pub(crate) fn denied(pid: i32) -> ProcessError {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return ProcessError::PermissionDenied(pid);
        }
        let reason = match (reader_user_namespace(), yama_ptrace_scope()) {
            (ReaderUserNamespace::Nested, _) => "pmt is root only inside a user namespace (a container or `unshare --user`), which gives no rights over processes outside it: run pmt from the host, or inside the target's user namespace (`nsenter --target PID --user --pid --mount`)".to_string(),
            (ReaderUserNamespace::Initial, Some(3)) => "kernel.yama.ptrace_scope is 3, which forbids reading other processes even to root until the next reboot".to_string(),
            (ReaderUserNamespace::Initial, _) => "a security module (SELinux, AppArmor, or kernel lockdown) protects it: check the kernel's audit log (`journalctl -k | grep -i denied`) and allow pmt to ptrace it".to_string(),
        };
        ProcessError::Protected { pid, reason }
    }

    /// The same error, seen after the process had been found: its disappearance is an exit
    /// during attaching, not a wrong pid.
    pub fn while_attaching(self) -> ProcessError {
        match self {
            ProcessError::NoSuchProcess(pid) => ProcessError::ExitedWhileAttaching(pid),
            other => other,
        }
    }

    /// Whether the error means the process is gone.
    pub fn process_exited(&self) -> bool {
        matches!(
            self,
            ProcessError::NoSuchProcess(_)
                | ProcessError::ExitedWhileAttaching(_)
                | ProcessError::Zombie { .. }
        )
    }
}

/// One file mapped into the target's address space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedFile {
    /// The path as the target sees it.
    pub path: PathBuf,
    /// Lowest address of any mapping of the file.
    pub start: u64,
    /// Lowest address of a mapping with file offset 0 (where the ELF header sits).
    pub base: Option<u64>,
    /// The file's inode, which tells the right file among candidate paths.
    pub inode: u64,
    /// Whether any mapping of it is executable.
    pub executable: bool,
}

/// A process to read from.
#[derive(Debug)]
pub struct TargetProcess {
    pid: i32,
    proc: Process,
    threads: ThreadIdMap,
}

impl TargetProcess {
    /// Checks that `pid` is a live user process and that its memory map is readable by us.
    pub fn open(pid: i32) -> Result<Self, ProcessError> {
        if pid <= 0 {
            return Err(ProcessError::NoSuchProcess(pid));
        }
        if !matches!(liveness(pid), Liveness::Alive(_)) {
            return Err(ProcessError::not_openable(pid));
        }
        let proc = Process::new(pid).map_err(|e| proc_error(pid, e))?;
        let target = TargetProcess {
            pid,
            proc,
            threads: ThreadIdMap::new(pid),
        };
        target.maps().map_err(ProcessError::while_attaching)?;
        Ok(target)
    }

    /// The pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The pid the process has in its own PID namespace (1 for a container's init; the same
    /// as [`TargetProcess::pid`] outside containers).
    pub fn own_pid(&self) -> i32 {
        self.threads.own_pid()
    }

    /// Whether the process is in a PID namespace below ours (a container seen from the host).
    pub fn in_nested_pid_namespace(&self) -> bool {
        self.threads.is_nested()
    }

    /// Our id of the thread the process itself numbers `tid` (`threading.get_native_id()`,
    /// glibc's tid); `None` when it has no such thread.
    pub fn host_tid(&mut self, tid: u32) -> Option<u32> {
        self.threads.to_host(tid)
    }

    /// The process's own number for our thread id `tid`.
    pub fn namespace_tid(&mut self, tid: u32) -> Option<u32> {
        self.threads.to_namespace(tid)
    }

    /// Whether the process still exists (and is not a zombie).
    pub fn is_alive(&self) -> bool {
        matches!(liveness(self.pid), Liveness::Alive(_))
    }

    /// What tells one program image of the process from the next: the start of its stack and
    /// of its code, both placed anew by each `exec` (address-space randomisation); `None` when
    /// `/proc` cannot say.
    pub fn image_id(&self) -> Option<(u64, u64)> {
        let stat = self.proc.stat().ok()?;
        Some((stat.startstack, stat.startcode))
    }

    /// The executable's path, as the target sees it.
    pub fn exe(&self) -> Result<PathBuf, ProcessError> {
        self.proc.exe().map_err(|e| proc_error(self.pid, e))
    }

    /// The command line, arguments joined by spaces.
    pub fn cmdline(&self) -> Result<String, ProcessError> {
        Ok(self
            .proc
            .cmdline()
            .map_err(|e| proc_error(self.pid, e))?
            .join(" "))
    }

    /// A path to read one of the target's mapped files through (see [`readable_path`]).
    pub fn file_path(&self, path: &Path) -> PathBuf {
        let inode = self
            .maps()
            .ok()
            .and_then(|maps| maps.into_iter().find(|m| m.path == path))
            .map(|m| m.inode);
        readable_path(self.pid, path, inode)
    }

    /// Every file mapped into the process, in address order of first mapping.
    pub fn maps(&self) -> Result<Vec<MappedFile>, ProcessError> {
        mapped_files(self.pid)
    }

    /// Kernel thread ids of the process's threads.
    pub fn thread_ids(&self) -> Result<Vec<u32>, ProcessError> {
        task_ids(self.pid).map_err(|e| io_error(self.pid, &e))
    }

    /// The scheduler state letter (`R` running, `S` sleeping, …) of each thread.
    pub fn thread_states(&self) -> HashMap<u32, char> {
        let Ok(tids) = self.thread_ids() else {
            return HashMap::new();
        };
        tids.into_iter()
            .filter_map(|tid| {
                let mut file = ProcFile::of_process(self.pid, &format!("task/{tid}/stat")).ok()?;
                let stat: StatFields = file.read_stat().ok()??;
                Some((tid, stat.state))
            })
            .collect()
    }

    /// Where thread `tid` (our id) waits in the kernel (`/proc/PID/task/TID/wchan`, such as
    /// `do_select` or `hrtimer_nanosleep`); `None` when it is running or the kernel hides it.
    pub fn thread_wait_channel(&self, tid: u32) -> Option<String> {
        let text = std::fs::read_to_string(format!("/proc/{}/task/{tid}/wchan", self.pid)).ok()?;
        let text = text.trim();
        (!text.is_empty() && text != "0").then(|| text.to_string())
    }

    /// Resident set size in bytes, from `/proc/PID/statm`.
    pub fn rss_bytes(&self) -> Result<u64, ProcessError> {
        let mut file =
            ProcFile::of_process(self.pid, "statm").map_err(|e| io_error(self.pid, &e))?;
        match file.read_statm() {
            Ok(Some(statm)) => Ok(statm.resident * page_size()),
            Ok(None) => Err(ProcessError::NoSuchProcess(self.pid)),
            Err(e) => Err(io_error(self.pid, &e)),
        }
    }

    /// Every living descendant of the process, parents first, with its command line.
    pub fn descendants(&self) -> Vec<(i32, String)> {
        descendant_pids(self.pid)
            .into_iter()
            .map(|child| {
                let cmd = Process::new(child)
                    .and_then(|p| p.cmdline())
                    .map(|a| a.join(" "))
                    .unwrap_or_default();
                (child, cmd)
            })
            .collect()
    }
}

/// Every file mapped into process `pid`, in address order of first mapping.
pub fn mapped_files(pid: i32) -> Result<Vec<MappedFile>, ProcessError> {
    let proc = Process::new(pid).map_err(|e| proc_error(pid, e))?;
    let maps = proc.maps().map_err(|e| proc_error(pid, e))?;
    let mut files: Vec<MappedFile> = Vec::new();
    for map in maps {
        let MMapPath::Path(path) = map.pathname else {
            continue;
        };
        let start = map.address.0;
        let executable = map.perms.contains(MMPermissions::EXECUTE);
        match files.iter_mut().find(|f| f.path == path) {
            Some(file) => {
                file.start = file.start.min(start);
                file.executable |= executable;
                if map.offset == 0 && file.base.is_none_or(|b| start < b) {
                    file.base = Some(start);
                }
            }
            None => files.push(MappedFile {
                path,
                start,
                base: (map.offset == 0).then_some(start),
                inode: map.inode,
                executable,
            }),
        }
    }
    Ok(files)
}

/// A path this process can open one of `pid`'s files by. `/proc/PID/maps` names a file as the
/// reader's root sees it when the file lies below that root (a chroot seen from the host), else
/// as the target's own mount namespace does (a container's overlay); so the path is tried
/// through the target's root (`/proc/PID/root/...`) and as it stands, and the one holding the
/// mapped inode wins (the first that exists when the inode is not known).
pub fn readable_path(pid: i32, path: &Path, inode: Option<u64>) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let through_root =
        PathBuf::from(format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(path));
    let candidates = [through_root.clone(), path.to_path_buf()];
    let holds = |candidate: &PathBuf| match (std::fs::metadata(candidate), inode) {
        (Ok(meta), Some(inode)) if inode != 0 => meta.ino() == inode,
        (Ok(_), _) => true,
        (Err(_), _) => false,
    };
    candidates.into_iter().find(holds).unwrap_or(through_root)
}

fn io_error(pid: i32, err: &std::io::Error) -> ProcessError {
    match err.kind() {
        std::io::ErrorKind::PermissionDenied => ProcessError::denied(pid),
        _ if is_gone(err) => ProcessError::not_openable(pid),
        _ => ProcessError::Proc {
            pid,
            message: err.to_string(),
        },
    }
}

fn proc_error(pid: i32, err: ProcError) -> ProcessError {
    match err {
        ProcError::NotFound(_) => ProcessError::not_openable(pid),
        ProcError::PermissionDenied(_) => ProcessError::denied(pid),
        other => ProcessError::Proc {
            pid,
            message: other.to_string(),
        },
    }
}

/// What backs a memory region's pages.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Backing {
    /// Private anonymous memory: the heap, stacks, `mmap(MAP_ANONYMOUS|MAP_PRIVATE)`.
    Anonymous,
    /// A mapped file (its pages are the page cache's).
    File(PathBuf),
    /// Shared memory: shared anonymous mappings, memfd, System V segments.
    Shared,
}

/// One region of a process's address space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// What backs it.
    pub backing: Backing,
    /// Whether it is the `[heap]` (the program break's region).
    pub heap: bool,
}

/// The region a `/proc/PID/maps` or `smaps` line describes.
fn region_of(map: &procfs::process::MemoryMap) -> Region {
    let shared = map.perms.contains(MMPermissions::SHARED);
    let backing = match &map.pathname {
        MMapPath::Path(path) => {
            let name = path.to_string_lossy();
            let anonymous_shm = ["/memfd:", "/dev/zero", "/SYSV", "/dev/shm/"]
                .iter()
                .any(|p| name.starts_with(p));
            if shared && anonymous_shm {
                Backing::Shared
            } else {
                Backing::File(path.clone())
            }
        }
        _ if shared => Backing::Shared,
        _ => Backing::Anonymous,
    };
    Region {
        start: map.address.0,
        end: map.address.1,
        backing,
        heap: matches!(map.pathname, MMapPath::Heap),
    }
}

/// Process `pid`'s memory regions, in address order (`/proc/PID/maps`).
pub fn memory_regions(pid: i32) -> Result<Vec<Region>, ProcessError> {
    let proc = Process::new(pid).map_err(|e| proc_error(pid, e))?;
    let maps = proc.maps().map_err(|e| proc_error(pid, e))?;
    Ok(maps.iter().map(region_of).collect())
}

/// What kind of pages a resident region holds, beyond its [`Backing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    /// The main thread's `[stack]`.
    MainStack,
    /// The kernel's `[vdso]`, `[vvar]`, `[vsyscall]` and other pseudo-paths.
    Kernel,
    /// Writable memory (anonymous, file or shared).
    Writable,
    /// Read-only or executable memory.
    ReadOnly,
}

/// One region of a process's address space with its resident size (`/proc/PID/smaps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResidentRegion {
    /// The region.
    pub region: Region,
    /// What it holds.
    pub kind: RegionKind,
    /// Its resident bytes (`Rss`).
    pub rss: u64,
}

/// Process `pid`'s regions with their resident sizes, in address order (`/proc/PID/smaps`).
pub fn resident_regions(pid: i32) -> Result<Vec<ResidentRegion>, ProcessError> {
    let proc = Process::new(pid).map_err(|e| proc_error(pid, e))?;
    let maps = proc.smaps().map_err(|e| proc_error(pid, e))?;
    Ok(maps
        .iter()
        .map(|map| {
            let kind = match &map.pathname {
                MMapPath::Stack => RegionKind::MainStack,
                MMapPath::Vdso | MMapPath::Vvar | MMapPath::Vsyscall | MMapPath::Other(_) => {
                    RegionKind::Kernel
                }
                _ if map.perms.contains(MMPermissions::WRITE) => RegionKind::Writable,
                _ => RegionKind::ReadOnly,
            };
            ResidentRegion {
                region: region_of(map),
                kind,
                rss: map.extension.map.get("Rss").copied().unwrap_or(0),
            }
        })
        .collect())
}

/// Each thread's stack pointer where the kernel tells it (`/proc/PID/task/TID/syscall` of a
/// thread blocked in a system call or stopped; a running thread has none), by thread id.
pub fn stack_pointers(pid: i32) -> Vec<(u32, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut pointers = Vec::new();
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(task.path().join("syscall")) else {
            continue;
        };
        // `NR arg1 … arg6 SP PC` (or `-1 SP PC` between system calls); `running` otherwise.
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() < 3 {
            continue;
        }
        let sp = fields[fields.len() - 2].trim_start_matches("0x");
        if let Ok(sp) = u64::from_str_radix(sp, 16) {
            pointers.push((tid, sp));
        }
    }
    pointers
}

/// The end of process `pid`'s heap (its program break, the `[heap]` region's end), if it has
/// one.
pub fn heap_end(pid: i32) -> Option<u64> {
    memory_regions(pid)
        .ok()?
        .into_iter()
        .find(|region| region.heap)
        .map(|region| region.end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_process_that_exits_while_attaching_is_said_so() {
        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep");
        let pid = child.id() as i32;
        let target = TargetProcess::open(pid).expect("a live process opens");
        assert_eq!(target.own_pid(), pid, "not in a nested namespace");
        let _ = child.kill();
        let _ = child.wait();
        let err = target
            .maps()
            .map_err(ProcessError::while_attaching)
            .expect_err("its maps are gone");
        assert!(err.process_exited());
        assert_eq!(
            err.to_string(),
            format!(
                "process {pid} exited while it was being attached to: there is nothing left to read"
            )
        );
        assert!(matches!(
            TargetProcess::open(pid),
            Err(ProcessError::NoSuchProcess(p)) if p == pid
        ));
    }
}
