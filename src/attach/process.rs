//! A target process as the kernel shows it in `/proc` (through the `procfs` crate): existence,
//! permissions, executable, command line, mapped files, threads and descendants. Reads only;
//! never signals the target.

use procfs::ProcError;
use procfs::process::{MMapPath, Process};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a process cannot be attached to.
#[derive(Debug, Error)]
pub enum ProcessError {
    /// No process has this pid.
    #[error("no process with pid {0}: check the pid (`ps -ef | grep python`)")]
    NoSuchProcess(i32),
    /// The caller may not inspect the process.
    #[error(
        "permission denied for process {0}: run as root, or give pmt CAP_SYS_PTRACE (`sudo setcap cap_sys_ptrace+ep $(which pmt)`), or set `kernel.yama.ptrace_scope` to 0"
    )]
    PermissionDenied(i32),
    /// Reading `/proc` failed for another reason.
    #[error("cannot read /proc/{pid}: {message}")]
    Proc {
        /// The process.
        pid: i32,
        /// What failed.
        message: String,
    },
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
}

/// A process to read from.
#[derive(Debug)]
pub struct TargetProcess {
    pid: i32,
    proc: Process,
}

impl TargetProcess {
    /// Checks that `pid` exists and that its memory map is readable by us.
    pub fn open(pid: i32) -> Result<Self, ProcessError> {
        if pid <= 0 {
            return Err(ProcessError::NoSuchProcess(pid));
        }
        let proc = Process::new(pid).map_err(|e| proc_error(pid, e))?;
        let target = TargetProcess { pid, proc };
        if !target.is_alive() {
            return Err(ProcessError::NoSuchProcess(pid));
        }
        target.maps()?;
        Ok(target)
    }

    /// The pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether the process still exists (and is not a zombie).
    pub fn is_alive(&self) -> bool {
        self.proc
            .stat()
            .is_ok_and(|stat| stat.state != 'Z' && stat.state != 'X')
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

    /// A path to read one of the target's files through, seen from its own root (containers).
    pub fn file_path(&self, path: &Path) -> PathBuf {
        let through_root = PathBuf::from(format!("/proc/{}/root", self.pid))
            .join(path.strip_prefix("/").unwrap_or(path));
        if through_root.exists() {
            through_root
        } else {
            path.to_path_buf()
        }
    }

    /// Every file mapped into the process, in address order of first mapping.
    pub fn maps(&self) -> Result<Vec<MappedFile>, ProcessError> {
        let maps = self.proc.maps().map_err(|e| proc_error(self.pid, e))?;
        let mut files: Vec<MappedFile> = Vec::new();
        for map in maps {
            let MMapPath::Path(path) = map.pathname else {
                continue;
            };
            let start = map.address.0;
            match files.iter_mut().find(|f| f.path == path) {
                Some(file) => {
                    file.start = file.start.min(start);
                    if map.offset == 0 && file.base.is_none_or(|b| start < b) {
                        file.base = Some(start);
                    }
                }
                None => files.push(MappedFile {
                    path,
                    start,
                    base: (map.offset == 0).then_some(start),
                }),
            }
        }
        Ok(files)
    }

    /// Kernel thread ids of the process's threads.
    pub fn thread_ids(&self) -> Result<Vec<u32>, ProcessError> {
        let tasks = self.proc.tasks().map_err(|e| proc_error(self.pid, e))?;
        let mut tids: Vec<u32> = tasks
            .flatten()
            .filter_map(|t| u32::try_from(t.tid).ok())
            .collect();
        tids.sort_unstable();
        Ok(tids)
    }

    /// The scheduler state letter (`R` running, `S` sleeping, …) of each thread.
    pub fn thread_states(&self) -> HashMap<u32, char> {
        let Ok(tasks) = self.proc.tasks() else {
            return HashMap::new();
        };
        tasks
            .flatten()
            .filter_map(|task| Some((u32::try_from(task.tid).ok()?, task.stat().ok()?.state)))
            .collect()
    }

    /// Resident set size in bytes, from `/proc/PID/statm`.
    pub fn rss_bytes(&self) -> Result<u64, ProcessError> {
        let statm = self.proc.statm().map_err(|e| proc_error(self.pid, e))?;
        Ok(statm.resident * page_size())
    }

    /// Every living descendant of the process, depth first, with its command line.
    pub fn descendants(&self) -> Vec<(i32, String)> {
        let mut parent_of: Vec<(Process, i32)> = Vec::new();
        if let Ok(all) = procfs::process::all_processes() {
            for proc in all.flatten() {
                if let Ok(stat) = proc.stat() {
                    parent_of.push((proc, stat.ppid));
                }
            }
        }
        let mut found = Vec::new();
        let mut stack = vec![self.pid];
        while let Some(parent) = stack.pop() {
            for (child, _) in parent_of.iter().filter(|(_, p)| *p == parent) {
                let cmd = child.cmdline().map(|a| a.join(" ")).unwrap_or_default();
                found.push((child.pid, cmd));
                stack.push(child.pid);
            }
        }
        found
    }
}

/// The pids of every living descendant of `pid`, parents before their children, from the
/// kernel's `/proc/PID/task/TID/children` lists (cheap: no scan of every process). Processes
/// that exit while being listed are simply left out; a missing `children` file (kernels
/// built without it) falls back to [`TargetProcess::descendants`].
pub fn descendant_pids(pid: i32) -> Vec<i32> {
    if !Path::new(&format!("/proc/{pid}/task/{pid}/children")).exists() {
        return TargetProcess::open(pid)
            .map(|target| {
                target
                    .descendants()
                    .into_iter()
                    .map(|(child, _)| child)
                    .collect()
            })
            .unwrap_or_default();
    }
    let mut found = Vec::new();
    let mut queue = std::collections::VecDeque::from([pid]);
    while let Some(parent) = queue.pop_front() {
        for child in children_of(parent) {
            if child != pid && !found.contains(&child) {
                found.push(child);
                queue.push_back(child);
            }
        }
    }
    found
}

/// The direct children of `pid`, over all its threads.
pub fn children_of(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut children = Vec::new();
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        children.extend(
            text.split_whitespace()
                .filter_map(|t| t.parse::<i32>().ok()),
        );
    }
    children
}

/// The system page size in bytes.
pub fn page_size() -> u64 {
    procfs::page_size()
}

fn proc_error(pid: i32, err: ProcError) -> ProcessError {
    match err {
        ProcError::NotFound(_) => ProcessError::NoSuchProcess(pid),
        ProcError::PermissionDenied(_) => ProcessError::PermissionDenied(pid),
        other => ProcessError::Proc {
            pid,
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn descendants_include_grandchildren() {
        // A shell that starts a sleeping subshell, which starts a sleeping child: a child and a
        // grandchild of the shell.
        let mut shell = Command::new("sh")
            .args(["-c", "(sleep 30; true) & sleep 30; true"])
            .spawn()
            .expect("sh");
        let pid = shell.id() as i32;
        let mut found = Vec::new();
        for _ in 0..200 {
            found = descendant_pids(pid);
            if found.len() >= 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for &descendant in &found {
            // SAFETY: kill(2) on processes this test started (they are not reaped by anyone
            // else while the shell is alive).
            unsafe {
                libc::kill(descendant, libc::SIGKILL);
            }
        }
        let _ = shell.kill();
        let _ = shell.wait();
        assert_eq!(
            found.len(),
            3,
            "subshell, its sleep, the shell's sleep: {found:?}"
        );
        assert!(!found.contains(&pid));
        assert!(descendant_pids(i32::MAX).is_empty());
    }
}
