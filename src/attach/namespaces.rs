//! A target's namespaces as the reader sees them: its thread ids mapped between its own PID
//! namespace (what `threading.get_native_id()` and glibc's `struct pthread` hold) and the
//! reader's (what `/proc/PID/task` lists), through the `NSpid` lines of
//! `/proc/PID/task/TID/status`; and which user namespace the reader is in, for saying why a
//! root reader is refused.
//!
//! A profiler on the host sees a container's threads under host ids; one in a sidecar that
//! shares the pod's PID namespace sees the container's own ids, and the map is the identity.

use super::proc_files::{ProcFile, StatusFields, read_status, task_ids};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How soon after a rescan an unknown thread id may cause another one (a garbage id must not
/// make every sample read every thread's `status`).
const RESCAN_AFTER: Duration = Duration::from_millis(50);

/// Maps one process's thread ids between its own PID namespace and the reader's.
#[derive(Debug)]
pub struct ThreadIdMap {
    pid: i32,
    /// The process's id in its own namespace (the reader's id when they share one).
    own_pid: i32,
    /// Whether the process shares the reader's PID namespace (every id is the same).
    identity: bool,
    to_host: HashMap<u32, u32>,
    scanned_at: Option<Instant>,
}

impl ThreadIdMap {
    /// Reads the process's `NSpid` to learn whether ids need mapping at all.
    pub fn new(pid: i32) -> ThreadIdMap {
        let nspid = read_status(pid)
            .ok()
            .flatten()
            .map(|status| status.nspid)
            .unwrap_or_default();
        ThreadIdMap {
            pid,
            own_pid: nspid.last().copied().unwrap_or(pid),
            identity: nspid.len() <= 1,
            to_host: HashMap::new(),
            scanned_at: None,
        }
    }

    /// Whether the process is in a PID namespace nested below the reader's (a container seen
    /// from the host).
    pub fn is_nested(&self) -> bool {
        !self.identity
    }

    /// The process's pid in its own PID namespace (1 for a container's init).
    pub fn own_pid(&self) -> i32 {
        self.own_pid
    }

    /// The reader's id of the thread the process itself calls `tid`; `None` when it has no
    /// such thread (as of a rescan at most [`RESCAN_AFTER`] ago).
    pub fn to_host(&mut self, tid: u32) -> Option<u32> {
        if self.identity {
            return Some(tid);
        }
        if let Some(host) = self.to_host.get(&tid) {
            return Some(*host);
        }
        if self
            .scanned_at
            .is_some_and(|at| at.elapsed() < RESCAN_AFTER)
        {
            return None;
        }
        self.rescan();
        self.to_host.get(&tid).copied()
    }

    /// The process's own id of the reader's thread `host`, when known.
    pub fn to_namespace(&mut self, host: u32) -> Option<u32> {
        if self.identity {
            return Some(host);
        }
        let find = |map: &HashMap<u32, u32>| map.iter().find(|(_, h)| **h == host).map(|(n, _)| *n);
        if let Some(own) = find(&self.to_host) {
            return Some(own);
        }
        self.rescan();
        find(&self.to_host)
    }

    /// Reads every thread's `NSpid` again.
    fn rescan(&mut self) {
        self.scanned_at = Some(Instant::now());
        self.to_host.clear();
        let Ok(tids) = task_ids(self.pid) else {
            return;
        };
        for host in tids {
            let own = ProcFile::of_process(self.pid, &format!("task/{host}/status"))
                .and_then(|mut file| Ok(StatusFields::parse(file.read()?)))
                .ok()
                .flatten()
                .and_then(|status| status.own_namespace_id())
                .and_then(|own| u32::try_from(own).ok());
            if let Some(own) = own {
                self.to_host.insert(own, host);
            }
        }
    }
}

/// The reader's place among user namespaces, for explaining a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderUserNamespace {
    /// The host's initial user namespace: root here may read any process.
    Initial,
    /// A user namespace below it (a rootless container, `unshare --user`): root here has no
    /// rights over processes outside it.
    Nested,
}

/// Which user namespace this process runs in: the initial one maps every uid to itself.
pub fn reader_user_namespace() -> ReaderUserNamespace {
    let initial = std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|map| {
        let fields: Vec<&str> = map.split_ascii_whitespace().collect();
        fields == ["0", "0", "4294967295"]
    });
    if initial {
        ReaderUserNamespace::Initial
    } else {
        ReaderUserNamespace::Nested
    }
}

/// The inode number of the initial PID namespace (`PROC_PID_INIT_INO` in the kernel).
const INITIAL_PID_NAMESPACE_INO: u64 = 0xEFFF_FFFC;

/// The device and inode of the reader's PID namespace (`/proc/self/ns/pid`) when it is not the
/// initial one (a sidecar, a container): what the kernel needs to number tasks as it does.
pub fn reader_pid_namespace() -> Option<(u64, u64)> {
    nested_pid_namespace("self")
}

/// The device and inode of process `pid`'s PID namespace when it is not the initial one: the
/// namespace its interpreter numbers threads in.
pub fn pid_namespace_of(pid: i32) -> Option<(u64, u64)> {
    nested_pid_namespace(&pid.to_string())
}

fn nested_pid_namespace(process: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(format!("/proc/{process}/ns/pid")).ok()?;
    (meta.ino() != INITIAL_PID_NAMESPACE_INO).then(|| (meta.dev(), meta.ino()))
}

/// `kernel.yama.ptrace_scope`, where the Yama security module is loaded.
pub fn yama_ptrace_scope() -> Option<u8> {
    std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_threads_map_to_themselves() {
        let pid = std::process::id() as i32;
        let mut map = ThreadIdMap::new(pid);
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        // The test may itself run inside a container; either way our own ids are ours.
        assert!(!map.is_nested());
        assert_eq!(map.to_host(tid), Some(tid));
        assert_eq!(map.to_namespace(tid), Some(tid));
        assert_eq!(map.own_pid(), pid);
    }
}
