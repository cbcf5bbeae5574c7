//! Per-thread counters of the target from `/proc/PID/task/TID/stat`: page faults (the proxy for
//! which thread made the process grow), CPU time and run state; and, on request, the scheduler's
//! time on CPU in nanoseconds (`schedstat`). One [`ProcFile`] per thread is kept open and
//! re-read; the thread list is re-scanned on request. Thread ids are the reader's
//! (host ids for a container seen from the host): the attach layer maps Python's to them.

use crate::attach::proc_files::{ProcFile, SchedStat, StatFields, is_gone, task_ids};
use std::collections::HashMap;
use std::io;
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
        is_gone(&self.source)
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
    file: ProcFile,
    name: String,
    /// `schedstat`, opened the first time it is asked for.
    schedstat: Option<ProcFile>,
}

/// The per-thread counters of one process.
#[derive(Debug)]
pub struct ThreadCounters {
    pid: i32,
    process: ProcFile,
    tasks: HashMap<u32, TaskFile>,
}

impl ThreadCounters {
    /// Lists the threads of `pid` and opens their counters.
    pub fn open(pid: i32) -> Result<ThreadCounters, ThreadListError> {
        let path = PathBuf::from(format!("/proc/{pid}/stat"));
        let process = ProcFile::open(&path).map_err(|source| ThreadListError { path, source })?;
        let mut counters = ThreadCounters {
            pid,
            process,
            tasks: HashMap::new(),
        };
        counters.rescan()?;
        Ok(counters)
    }

    /// Re-lists the process's threads: opens new ones, forgets those that exited.
    pub fn rescan(&mut self) -> Result<(), ThreadListError> {
        let path = PathBuf::from(format!("/proc/{}/task", self.pid));
        let alive = task_ids(self.pid).map_err(|source| ThreadListError {
            path: path.clone(),
            source,
        })?;
        for &tid in &alive {
            if let std::collections::hash_map::Entry::Vacant(slot) = self.tasks.entry(tid) {
                // A thread may exit between the listing and the open: then it is simply not tracked.
                if let Ok(mut file) = ProcFile::open(path.join(tid.to_string()).join("stat")) {
                    let name = match file.read_stat() {
                        Ok(Some(stat)) => stat.name,
                        _ => String::new(),
                    };
                    slot.insert(TaskFile {
                        file,
                        name,
                        schedstat: None,
                    });
                }
            }
        }
        self.tasks.retain(|tid, _| alive.binary_search(tid).is_ok());
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
        read_task(&mut self.process)
    }

    /// Reads every tracked thread's counters into `out` (cleared first). Threads whose file can
    /// no longer be read have exited and are forgotten; returns how many.
    pub fn read_all(&mut self, out: &mut Vec<(u32, ThreadStat)>) -> usize {
        out.clear();
        let before = self.tasks.len();
        self.tasks
            .retain(|&tid, task| match read_task(&mut task.file) {
                Some(stat) => {
                    out.push((tid, stat));
                    true
                }
                None => false,
            });
        before - self.tasks.len()
    }

    /// Reads every tracked thread's scheduler statistics into `out` (cleared first, sorted by
    /// thread id); `false` if one could not be read (the thread exited, or the kernel keeps
    /// no `schedstat`), and then `out` is incomplete.
    pub fn read_schedstats(&mut self, out: &mut Vec<(u32, SchedStat)>) -> bool {
        out.clear();
        for (&tid, task) in &mut self.tasks {
            if task.schedstat.is_none() {
                let path = task.file.path().with_file_name("schedstat");
                match ProcFile::open(path) {
                    Ok(file) => task.schedstat = Some(file),
                    Err(_) => return false,
                }
            }
            let Some(file) = &mut task.schedstat else {
                return false;
            };
            match file.read_schedstat() {
                Ok(Some(stat)) => out.push((tid, stat)),
                _ => return false,
            }
        }
        out.sort_unstable_by_key(|(tid, _)| *tid);
        true
    }
}

/// Reads and parses one task's `stat`; `None` when it is unreadable (the thread exited).
fn read_task(file: &mut ProcFile) -> Option<ThreadStat> {
    let stat: StatFields = file.read_stat().ok()??;
    Some(ThreadStat {
        state: u8::try_from(stat.state).unwrap_or(b'?'),
        faults: stat.faults(),
        cpu_ticks: stat.cpu_ticks(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_blocked_thread_keeps_its_time_on_cpu_and_one_that_ran_shows_more() {
        let pid = std::process::id() as i32;
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid_tx
                .send(unsafe { libc::gettid() } as u32)
                .expect("send tid");
            go_rx.recv().expect("wait for go");
            std::hint::black_box((0..100_000u64).sum::<u64>());
            done_tx.send(()).expect("done");
            go_rx.recv().expect("wait for exit");
        });
        let tid = tid_rx.recv().expect("tid");
        // Let the worker reach its blocking receive.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut counters = ThreadCounters::open(pid).expect("open");
        let of = |stats: &[(u32, SchedStat)]| {
            stats
                .iter()
                .find(|(t, _)| *t == tid)
                .map(|(_, s)| *s)
                .expect("thread tracked")
        };
        let (mut first, mut second) = (Vec::new(), Vec::new());
        assert!(counters.read_schedstats(&mut first));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(counters.read_schedstats(&mut second));
        assert_eq!(of(&first), of(&second), "a blocked thread did not run");
        go_tx.send(()).expect("go");
        done_rx.recv().expect("ran");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(counters.read_schedstats(&mut second));
        assert!(
            of(&second).run_ns > of(&first).run_ns,
            "a thread that ran shows more time"
        );
        go_tx.send(()).expect("exit");
        worker.join().expect("join");
    }

    fn page_size_for_test() -> u64 {
        crate::attach::proc_files::page_size()
    }
}
