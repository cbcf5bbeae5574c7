//! What a process is in a pre-fork tree (a `multiprocessing` pool, a gunicorn or uvicorn
//! master and its workers), told from what `/proc` shows: the parent relation and the command
//! lines `multiprocessing` gives the processes it starts. Owns naming those roles; must not
//! touch Python state (the caller decides which processes are Python).

use super::proc_files::ProcFile;
use super::process_tree::descendant_pids;
use std::fmt;

/// The role of a process under the root of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessRole {
    /// The root: the process whose descendants do the work.
    Master,
    /// A child forked from its parent (the same command line): the Nth of its parent's, in
    /// the order they started.
    Worker(usize),
    /// Started by `multiprocessing`'s spawn method (`spawn_main` on its command line).
    SpawnChild,
    /// `multiprocessing`'s resource tracker.
    ResourceTracker,
    /// `multiprocessing`'s fork server.
    ForkServer,
}

impl fmt::Display for ProcessRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessRole::Master => f.write_str("master"),
            ProcessRole::Worker(n) => write!(f, "worker {n}"),
            ProcessRole::SpawnChild => f.write_str("spawn child"),
            ProcessRole::ResourceTracker => f.write_str("resource tracker"),
            ProcessRole::ForkServer => f.write_str("forkserver"),
        }
    }
}

/// The role `multiprocessing`'s command-line markers give, if any.
pub fn role_from_command(command: &str) -> Option<ProcessRole> {
    if command.contains("multiprocessing.resource_tracker") {
        Some(ProcessRole::ResourceTracker)
    } else if command.contains("multiprocessing.forkserver") {
        Some(ProcessRole::ForkServer)
    } else if command.contains("multiprocessing.spawn") || command.contains("spawn_main") {
        Some(ProcessRole::SpawnChild)
    } else {
        None
    }
}

/// The role of `pid` in the tree under `root` (read now), if one can be told: the root is
/// the master, `multiprocessing`'s helpers are named by their command line, and a child
/// with its parent's command line is a forked worker, numbered among its siblings by start.
pub fn role_of(pid: i32, root: i32) -> Option<ProcessRole> {
    if pid == root {
        return Some(ProcessRole::Master);
    }
    let command = command_of(pid)?;
    if let Some(role) = role_from_command(&command) {
        return Some(role);
    }
    let parent = stat_of(pid)?.0;
    if command_of(parent)? != command {
        return None;
    }
    let mut forked: Vec<(u64, i32)> = descendant_pids(parent)
        .into_iter()
        .filter_map(|sibling| {
            let (ppid, start) = stat_of(sibling)?;
            (ppid == parent && command_of(sibling)? == command).then_some((start, sibling))
        })
        .collect();
    forked.sort_unstable();
    let rank = forked.iter().position(|&(_, p)| p == pid)?;
    Some(ProcessRole::Worker(rank + 1))
}

/// The command line of `pid`, arguments joined by spaces.
fn command_of(pid: i32) -> Option<String> {
    let mut file = ProcFile::of_process(pid, "cmdline").ok()?;
    let raw = file.read().ok()?;
    let text = String::from_utf8_lossy(raw);
    Some(text.trim_end_matches('\0').replace('\0', " "))
}

/// `(parent pid, start time)` of `pid`.
fn stat_of(pid: i32) -> Option<(i32, u64)> {
    let stat = ProcFile::of_process(pid, "stat").ok()?.read_stat().ok()??;
    Some((stat.ppid, stat.starttime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiprocessing_helpers_are_told_by_their_command_line() {
        let tracker = "python3 -c from multiprocessing.resource_tracker import main;main(6)";
        assert_eq!(
            role_from_command(tracker),
            Some(ProcessRole::ResourceTracker)
        );
        let spawned = "python3 -c from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=7, pipe_handle=9) --multiprocessing-fork";
        assert_eq!(role_from_command(spawned), Some(ProcessRole::SpawnChild));
        assert_eq!(role_from_command("python3 app.py"), None);
        assert_eq!(ProcessRole::Worker(2).to_string(), "worker 2");
    }
}
