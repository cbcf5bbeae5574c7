//! Per-thread counters of the target from `/proc/PID/task/TID/stat`: page faults (the proxy for
//! which thread made the process grow), CPU time and run state. One descriptor per thread is kept
//! open and re-read with `pread`; the thread list is re-scanned on request.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Why the threads of a process could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("cannot list threads in {path}: {source}")]
pub struct ThreadListError {
    /// The task directory.
    pub path: PathBuf,
    /// The underlying error.
    pub source: io::Error,
}

impl ThreadListError {
    /// Whether the error means the process is gone.
    pub fn process_exited(&self) -> bool {
        self.source.kind() == io::ErrorKind::NotFound
            || self.source.raw_os_error() == Some(libc::ESRCH)
    }
}

/// One thread's counters at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadStat {
    /// The one-letter scheduler state (`R` running, `S` sleeping, `D` disk wait…).
    pub state: u8,
    /// Minor plus major page faults since the thread started.
    pub faults: u64,
    /// User plus system CPU time since the thread started, in clock ticks.
    pub cpu_ticks: u64,
}

impl ThreadStat {
    /// Whether the scheduler had the thread running or runnable.
    pub fn running(&self) -> bool {
        self.state == b'R'
    }
}

/// An open `/proc/PID/task/TID/stat`.
#[derive(Debug)]
struct TaskFile {
    file: File,
    name: String,
}

/// The per-thread counters of one process.
#[derive(Debug)]
pub struct ThreadCounters {
    pid: i32,
    process: File,
    tasks: HashMap<u32, TaskFile>,
    buffer: Vec<u8>,
}

impl ThreadCounters {
    /// Lists the threads of `pid` and opens their counters.
    pub fn open(pid: i32) -> Result<ThreadCounters, ThreadListError> {
        let path = PathBuf::from(format!("/proc/{pid}/stat"));
        let process = File::open(&path).map_err(|source| ThreadListError { path, source })?;
        let mut counters = ThreadCounters {
            pid,
            process,
            tasks: HashMap::new(),
            buffer: vec![0; 1024],
        };
        counters.rescan()?;
        Ok(counters)
    }

    /// Re-lists the process's threads: opens new ones, forgets those that exited.
    pub fn rescan(&mut self) -> Result<(), ThreadListError> {
        let path = PathBuf::from(format!("/proc/{}/task", self.pid));
        let entries = std::fs::read_dir(&path).map_err(|source| ThreadListError {
            path: path.clone(),
            source,
        })?;
        let mut alive = Vec::new();
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let Some(tid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            alive.push(tid);
            if !self.tasks.contains_key(&tid) {
                // A thread may exit between the listing and the open: then it is simply not tracked.
                if let Ok(file) = File::open(path.join(tid.to_string()).join("stat")) {
                    let mut task = TaskFile {
                        file,
                        name: String::new(),
                    };
                    if let Some((name, _)) = read_task(&mut task.file, &mut self.buffer) {
                        task.name = name;
                    }
                    self.tasks.insert(tid, task);
                }
            }
        }
        self.tasks.retain(|tid, _| alive.contains(tid));
        Ok(())
    }

    /// Whether `tid` is currently tracked.
    pub fn contains(&self, tid: u32) -> bool {
        self.tasks.contains_key(&tid)
    }

    /// The kernel's name of a tracked thread (`comm`), as of when it was first seen.
    pub fn name(&self, tid: u32) -> Option<&str> {
        self.tasks.get(&tid).map(|task| task.name.as_str())
    }

    /// The whole process's counters (`/proc/PID/stat`): its faults include those of threads
    /// that have exited. `None` once the process is gone.
    pub fn read_process(&mut self) -> Option<ThreadStat> {
        read_task(&mut self.process, &mut self.buffer).map(|(_, stat)| stat)
    }

    /// Reads every tracked thread's counters into `out` (cleared first). Threads whose file can
    /// no longer be read have exited and are forgotten; returns how many.
    pub fn read_all(&mut self, out: &mut Vec<(u32, ThreadStat)>) -> usize {
        out.clear();
        let before = self.tasks.len();
        let buffer = &mut self.buffer;
        self.tasks
            .retain(|&tid, task| match read_task(&mut task.file, buffer) {
                Some((_, stat)) => {
                    out.push((tid, stat));
                    true
                }
                None => false,
            });
        before - self.tasks.len()
    }
}

/// Reads and parses one task's `stat`; `None` when it is unreadable (the thread exited).
fn read_task(file: &mut File, buffer: &mut [u8]) -> Option<(String, ThreadStat)> {
    let len = file.read_at(buffer, 0).ok()?;
    parse_stat(buffer.get(..len)?)
}

/// Parses `stat` text: `pid (comm) state ppid ... minflt cminflt majflt cmajflt utime stime ...`.
/// `comm` may hold spaces and parentheses, so fields are counted from its last `)`.
fn parse_stat(text: &[u8]) -> Option<(String, ThreadStat)> {
    let open = text.iter().position(|&b| b == b'(')?;
    let close = text.iter().rposition(|&b| b == b')')?;
    let name = String::from_utf8_lossy(text.get(open + 1..close)?).into_owned();
    let rest = std::str::from_utf8(text.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    // Field numbers as in proc(5): state is 3, minflt 10, majflt 12, utime 14, stime 15.
    let state = *fields.next()?.as_bytes().first()?;
    let mut numbers = fields.skip(6).map(|f| f.parse::<u64>().ok());
    let minflt = numbers.next()??;
    let _cminflt = numbers.next()??;
    let majflt = numbers.next()??;
    let _cmajflt = numbers.next()??;
    let utime = numbers.next()??;
    let stime = numbers.next()??;
    Some((
        name,
        ThreadStat {
            state,
            faults: minflt + majflt,
            cpu_ticks: utime + stime,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_comm() {
        let text = b"4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1500 0 7 0 120 30 0 0 20 0 3 0 100 1000 50\n";
        let (name, stat) = parse_stat(text).expect("parse");
        assert_eq!(name, "my (odd) name");
        assert_eq!(
            stat,
            ThreadStat {
                state: b'S',
                faults: 1507,
                cpu_ticks: 150
            }
        );
        assert!(!stat.running());
    }

    #[test]
    fn rejects_truncated_stat() {
        assert_eq!(parse_stat(b"4242 (x) R 1 2 3"), None);
        assert_eq!(parse_stat(b"garbage"), None);
    }

    #[test]
    fn faults_are_charged_to_the_thread_that_touches_memory() {
        let pid = std::process::id() as i32;
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let (exit_tx, exit_rx) = std::sync::mpsc::channel::<()>();
        let toucher = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() } as u32;
            tid_tx.send(tid).expect("send tid");
            go_rx.recv().expect("wait for go");
            let block = std::hint::black_box(vec![7u8; 32 << 20]);
            done_tx.send(()).expect("done");
            exit_rx.recv().expect("wait for exit");
            block.len()
        });
        // SAFETY: gettid has no preconditions.
        let own_tid = unsafe { libc::gettid() } as u32;
        let tid = tid_rx.recv().expect("tid");
        let mut counters = ThreadCounters::open(pid).expect("open");
        assert!(counters.contains(tid) && counters.contains(own_tid));
        let faults_of = |stats: &[(u32, ThreadStat)], wanted: u32| {
            stats
                .iter()
                .find(|(t, _)| *t == wanted)
                .map(|(_, s)| s.faults)
                .expect("thread tracked")
        };
        let mut before = Vec::new();
        counters.read_all(&mut before);
        go_tx.send(()).expect("go");
        done_rx.recv().expect("touched");
        let mut after = Vec::new();
        counters.read_all(&mut after);
        let toucher_faults = faults_of(&after, tid) - faults_of(&before, tid);
        let own_faults = faults_of(&after, own_tid) - faults_of(&before, own_tid);
        assert!(
            toucher_faults >= (32 << 20) / page_size_for_test() / 2,
            "toucher took {toucher_faults} faults only"
        );
        assert!(own_faults < 100, "main thread took {own_faults} faults");
        let process_before = counters.read_process().expect("process stat").faults;
        exit_tx.send(()).expect("exit");
        assert_eq!(toucher.join().expect("join"), 32 << 20);
        let process_after = counters.read_process().expect("process stat").faults;
        assert!(
            process_after >= process_before,
            "an exited thread's faults stay in the process's count"
        );
        counters.read_all(&mut after);
        assert!(
            !after.iter().any(|(t, _)| *t == tid),
            "exited thread still tracked"
        );
    }

    fn page_size_for_test() -> u64 {
        crate::memory::rss::page_size()
    }
}
