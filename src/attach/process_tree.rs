//! The one process-tree follower: which processes descend from a root, as children come and
//! go. `pmt tree` and `--subprocesses` both ask it.
//!
//! Where the kernel gives process events ([`ProcEvents`]: root in the initial PID and user
//! namespaces) the tree is kept from fork and exit events, and the children lists are read
//! again only at the start, after lost events, and when a process with children exits (they
//! are reparented). Otherwise (a sidecar, an unprivileged user) every update re-reads the
//! children lists (`/proc/PID/task/TID/children`, through descriptors kept open), or, on
//! kernels without them, scans `/proc` for parents. PIDs are the reader's: a containerized
//! tree seen from the host has host PIDs, from a sidecar in its namespace the container's.
//!
//! It knows the shape of the tree only; what is read from each process is the callers' business.

use super::proc_events::{ProcEvent, ProcEvents};
use super::proc_files::{ProcFile, parse_pids, read_stat, task_ids};
use rustc_hash::FxHashMap;
use std::path::Path;

/// How the tree learns of new and departed processes.
#[derive(Debug)]
enum Discovery {
    /// The kernel's fork, exec, comm and exit events.
    Events(ProcEvents),
    /// Every process's children list at every update.
    Polling,
}

/// What one [`ProcessTree::update`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TreeUpdate {
    /// The children lists were read (all of them).
    pub walked: bool,
    /// Processes added to or removed from the tree by events or the walk.
    pub changed: bool,
    /// Processes in the tree that exec'd or changed their name since the last update.
    pub renamed: Vec<i32>,
}

/// A root process and its descendants.
#[derive(Debug)]
pub struct ProcessTree {
    root: i32,
    discovery: Discovery,
    /// Children (sorted) of each process in the tree.
    children: FxHashMap<i32, Vec<i32>>,
    /// Parent of each process in the tree but the root.
    parent: FxHashMap<i32, i32>,
    /// The main thread's children list of each process, kept open between walks.
    lists: FxHashMap<i32, ProcFile>,
    walk_next: bool,
    events: Vec<ProcEvent>,
    queue: Vec<i32>,
}

impl ProcessTree {
    /// Follows `root`'s tree by process events where the kernel gives them, else by polling.
    pub fn follow(root: i32) -> ProcessTree {
        match ProcEvents::subscribe() {
            Ok(events) => ProcessTree::with(root, Discovery::Events(events)),
            Err(_) => ProcessTree::polling(root),
        }
    }

    /// Follows `root`'s tree by reading every children list at every update.
    pub fn polling(root: i32) -> ProcessTree {
        ProcessTree::with(root, Discovery::Polling)
    }

    fn with(root: i32, discovery: Discovery) -> ProcessTree {
        ProcessTree {
            root,
            discovery,
            children: FxHashMap::default(),
            parent: FxHashMap::default(),
            lists: FxHashMap::default(),
            walk_next: true,
            events: Vec::new(),
            queue: Vec::new(),
        }
    }

    /// The root.
    pub fn root(&self) -> i32 {
        self.root
    }

    /// Whether the tree is followed through the kernel's process events.
    pub fn uses_events(&self) -> bool {
        matches!(self.discovery, Discovery::Events(_))
    }

    /// The children of `pid` in the tree, sorted.
    pub fn children(&self, pid: i32) -> &[i32] {
        self.children.get(&pid).map_or(&[], Vec::as_slice)
    }

    /// The parent of `pid` in the tree (`None` for the root and for processes not in it).
    pub fn parent(&self, pid: i32) -> Option<i32> {
        self.parent.get(&pid).copied()
    }

    /// Whether `pid` is in the tree as last known.
    pub fn contains(&self, pid: i32) -> bool {
        pid == self.root || self.parent.contains_key(&pid)
    }

    /// Every process in the tree but the root, parents before children, children by PID.
    pub fn descendants(&self) -> Vec<i32> {
        let mut found = Vec::new();
        let mut stack = vec![self.root];
        while let Some(pid) = stack.pop() {
            for &child in self.children(pid).iter().rev() {
                found.push(child);
                stack.push(child);
            }
        }
        found
    }

    /// Brings the tree up to date. `threads_of` may tell how many threads a process had when
    /// last read (a process with more than one has every thread's children list read; `None`:
    /// unknown, read them all).
    pub fn update(&mut self, threads_of: impl Fn(i32) -> Option<u64>) -> TreeUpdate {
        let mut update = TreeUpdate::default();
        let walk = self.follow_events(&mut update);
        if walk {
            self.walk(threads_of);
            update.walked = true;
            update.changed = true;
        }
        update
    }

    /// Drops `pid` (found gone by a caller) from the tree; if it had children they were
    /// reparented, so the next update reads the children lists again.
    pub fn remove(&mut self, pid: i32) {
        if let Some(parent) = self.parent.remove(&pid)
            && let Some(siblings) = self.children.get_mut(&parent)
        {
            siblings.retain(|p| *p != pid);
        }
        if self.children.remove(&pid).is_some_and(|c| !c.is_empty()) {
            self.walk_next = true;
        }
        self.lists.remove(&pid);
    }

    fn link(&mut self, parent: i32, child: i32) {
        let siblings = self.children.entry(parent).or_default();
        if let Err(at) = siblings.binary_search(&child) {
            siblings.insert(at, child);
        }
        self.parent.insert(child, parent);
    }

    /// Applies the events since the last update; returns whether the children lists must be
    /// read.
    fn follow_events(&mut self, update: &mut TreeUpdate) -> bool {
        let Discovery::Events(source) = &mut self.discovery else {
            return true;
        };
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        match source.drain(|event| events.push(event)) {
            Ok(drained) => self.walk_next |= drained.lost,
            Err(_) => {
                self.discovery = Discovery::Polling;
                return true;
            }
        }
        for event in &events {
            match *event {
                ProcEvent::Fork {
                    parent_tgid,
                    child_pid,
                    child_tgid,
                } if child_pid == child_tgid && self.contains(parent_tgid) => {
                    self.link(parent_tgid, child_pid);
                    update.changed = true;
                }
                ProcEvent::Exec { tgid, .. } | ProcEvent::Comm { tgid, .. }
                    if self.contains(tgid) =>
                {
                    update.renamed.push(tgid);
                }
                ProcEvent::Exit { pid, tgid }
                    if pid == tgid && pid != self.root && self.contains(pid) =>
                {
                    self.remove(pid);
                    update.changed = true;
                }
                _ => {}
            }
        }
        self.events = events;
        std::mem::take(&mut self.walk_next)
    }

    /// Reads the children lists from the root down.
    fn walk(&mut self, threads_of: impl Fn(i32) -> Option<u64>) {
        self.children.clear();
        self.parent.clear();
        let mut queue = std::mem::take(&mut self.queue);
        queue.clear();
        queue.push(self.root);
        let mut index = 0;
        while let Some(&pid) = queue.get(index) {
            index += 1;
            for child in self.children_of(pid, threads_of(pid)) {
                if child != self.root && !self.parent.contains_key(&child) {
                    self.link(pid, child);
                    queue.push(child);
                }
            }
        }
        let (root, parent) = (self.root, &self.parent);
        self.lists
            .retain(|pid, _| *pid == root || parent.contains_key(pid));
        self.queue = queue;
    }

    /// The direct children of `pid`: its main thread's list through a descriptor kept open,
    /// and, unless it is known to have one thread, the other threads' lists too.
    fn children_of(&mut self, pid: i32, threads: Option<u64>) -> Vec<i32> {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.lists.entry(pid) {
            match ProcFile::of_process(pid, &format!("task/{pid}/children")) {
                Ok(file) => {
                    slot.insert(file);
                }
                Err(_) if !Path::new("/proc/thread-self/children").exists() => {
                    return scan_children(pid);
                }
                Err(_) => return Vec::new(),
            }
        }
        let mut pids: Vec<i32> = match self.lists.get_mut(&pid).map(ProcFile::read_list) {
            Some(Ok(text)) => parse_pids(text).collect(),
            _ => return Vec::new(),
        };
        if threads != Some(1) {
            pids.extend(other_threads_children(pid));
            pids.sort_unstable();
            pids.dedup();
        }
        pids
    }
}

/// The children of `pid`'s threads other than its main thread.
fn other_threads_children(pid: i32) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(tids) = task_ids(pid) else {
        return pids;
    };
    for tid in tids
        .into_iter()
        .filter(|tid| i64::from(*tid) != i64::from(pid))
    {
        if let Ok(text) = std::fs::read(format!("/proc/{pid}/task/{tid}/children")) {
            pids.extend(parse_pids(&text));
        }
    }
    pids
}

/// Kernels without children lists: every process whose parent is `parent`.
fn scan_children(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            read_stat(*pid)
                .ok()
                .flatten()
                .is_some_and(|s| s.ppid == parent)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The pids of every living descendant of `pid`, parents before their children, read once
/// from the children lists (no events, nothing kept).
pub fn descendant_pids(pid: i32) -> Vec<i32> {
    let mut tree = ProcessTree::polling(pid);
    tree.update(|_| None);
    tree.descendants()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Duration;

    /// A shell that starts a sleeping subshell, which starts a sleeping child: a child and a
    /// grandchild of the shell, found by both ways of following.
    #[test]
    fn descendants_include_grandchildren() {
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
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut followed = ProcessTree::follow(pid);
        followed.update(|_| None);
        let by_follower = followed.descendants();
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
        assert_eq!(by_follower, found);
        let subshell = found
            .iter()
            .copied()
            .find(|p| !followed.children(*p).is_empty())
            .expect("the subshell has a child");
        assert_eq!(followed.parent(subshell), Some(pid));
        assert!(descendant_pids(i32::MAX).is_empty());
    }
}
