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

/// Names each of `processes` (pid, command line; the Python processes under a launcher, say)
/// so that a user tells them apart: a topmost one (no ancestor among them) by its command
/// line, as `master` when others run under it, and those under it by their role there
/// (`worker 1`, `spawn child`…) or, when none can be told, their command line. Topmost ones
/// in the order they started, each followed by those under it in the order they started:
/// `2747 (master: python -m gunicorn app:app)`, `2749 (worker 1)`, `2750 (worker 2)`.
pub fn name_in_trees(processes: &[(i32, String)]) -> Vec<String> {
    let pids: Vec<i32> = processes.iter().map(|(pid, _)| *pid).collect();
    let started = |pid: i32| stat_of(pid).map_or(u64::MAX, |(_, start)| start);
    let mut tops: Vec<(u64, i32)> = Vec::new();
    let mut under: Vec<(i32, u64, i32)> = Vec::new();
    for &pid in &pids {
        match topmost_ancestor_among(pid, &pids) {
            Some(top) => under.push((top, started(pid), pid)),
            None => tops.push((started(pid), pid)),
        }
    }
    tops.sort_unstable();
    under.sort_unstable_by_key(|&(_, start, pid)| (start, pid));
    let command = |pid: i32| {
        processes
            .iter()
            .find(|(p, _)| *p == pid)
            .map_or("", |(_, c)| c.as_str())
    };
    let mut named = Vec::new();
    for (_, top) in tops {
        let members: Vec<i32> = under
            .iter()
            .filter(|(t, _, _)| *t == top)
            .map(|(_, _, pid)| *pid)
            .collect();
        if members.is_empty() {
            named.push(format!("{top} ({})", command(top)));
            continue;
        }
        named.push(format!("{top} ({}: {})", ProcessRole::Master, command(top)));
        for pid in members {
            named.push(match role_of(pid, top) {
                Some(role) => format!("{pid} ({role})"),
                None => format!("{pid} ({})", command(pid)),
            });
        }
    }
    named
}

/// The farthest ancestor of `pid` that is one of `among`, if any (up to 64 generations).
fn topmost_ancestor_among(pid: i32, among: &[i32]) -> Option<i32> {
    let mut topmost = None;
    let mut at = pid;
    for _ in 0..64 {
        match stat_of(at) {
            Some((parent, _)) if parent > 1 => {
                if among.contains(&parent) {
                    topmost = Some(parent);
                }
                at = parent;
            }
            _ => break,
        }
    }
    topmost
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

    /// A shell whose child forks two subshells (its own command line, each running `sleep`):
    /// named among themselves, the child is the master (by its command line) and the
    /// subshells workers 1 and 2, in the order they started.
    #[test]
    fn processes_under_a_launcher_are_named_by_their_role_in_their_tree() {
        let inner = "sh -c (sleep 30; true) & (sleep 30; true) & wait";
        let mut shell = std::process::Command::new("sh")
            .args([
                "-c",
                "sh -c '(sleep 30; true) & (sleep 30; true) & wait'; true",
            ])
            .spawn()
            .expect("sh");
        let root = shell.id() as i32;
        let shells = || -> Vec<(i32, String)> {
            descendant_pids(root)
                .into_iter()
                .filter_map(|pid| Some((pid, command_of(pid)?)))
                .filter(|(_, command)| command == inner)
                .collect()
        };
        let mut processes = shells();
        for _ in 0..250 {
            if processes.len() == 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            processes = shells();
        }
        let named = name_in_trees(&processes);
        let master = processes
            .iter()
            .map(|(pid, _)| *pid)
            .find(|pid| stat_of(*pid).is_some_and(|(parent, _)| parent == root));
        for pid in descendant_pids(root) {
            // SAFETY: kill(2) on a process this test started (through the shell).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = shell.kill();
        let _ = shell.wait();
        let master = master.expect("the inner shell");
        assert_eq!(named.len(), 3, "{named:?}");
        assert_eq!(named[0], format!("{master} (master: {inner})"));
        assert!(named[1].ends_with(" (worker 1)"), "{named:?}");
        assert!(named[2].ends_with(" (worker 2)"), "{named:?}");
    }
}
