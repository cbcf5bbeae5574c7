//! `pmt tree`'s two ways of following a tree, side by side on one real process tree that
//! changes in known steps: the kernel's process events (fork, exec, exit) and polling every
//! children list. Both must show the same processes, parents, names and RSS at every step, and
//! the event-driven monitor must walk the children lists only when it has to.

use pymemtrace::monitor::tree::{Column, TreeMonitor, TreeSnapshot};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::process::{ChildStdin, Command, Stdio};

/// Python that builds the tree in steps, one per line read from stdin, printing the PIDs
/// involved after each step (and after waiting until the step is complete).
///
/// start: root -> A (waits to exec), B -> G
/// step 1: A execs `sleep`; new C -> D            (forks and an exec: no walk needed)
/// step 2: D is killed                             (a leaf exits: no walk needed)
/// step 3: B is killed, G is reparented away      (a parent exits: one walk)
const SCRIPT: &str = r#"
import os, sys, time, signal
def fork(body):
    pid = os.fork()
    if pid == 0:
        try:
            body()
        finally:
            os._exit(0)
    return pid
def sleep():
    time.sleep(60)
def parent_of_one():
    r, w = os.pipe()
    def middle():
        g = fork(sleep)
        os.write(w, b"%d\n" % g)
        time.sleep(60)
    pid = fork(middle)
    return pid, int(os.read(r, 64))
def settle(*pids):
    # Until every new process sleeps (its RSS then holds still), and a little more.
    for pid in pids:
        while open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[0] != "S":
            time.sleep(0.01)
    time.sleep(0.1)
exec_r, exec_w = os.pipe()
def exec_later():
    os.read(exec_r, 1)
    os.execv("/bin/sleep", ["sleep", "60"])
a = fork(exec_later)
b, g = parent_of_one()
settle(a, b, g)
print(a, b, g, flush=True)
sys.stdin.readline()
os.write(exec_w, b"x")
c, d = parent_of_one()
while open("/proc/%d/comm" % a).read().strip() != "sleep":
    time.sleep(0.01)
settle(a, c, d)
print(c, d, flush=True)
sys.stdin.readline()
os.kill(d, signal.SIGKILL)
while open("/proc/%d/stat" % d).read().split(")")[1].split()[0] != "Z":
    time.sleep(0.01)
print("ok", flush=True)
sys.stdin.readline()
os.kill(b, signal.SIGKILL)
os.waitpid(b, 0)
print("ok", flush=True)
sys.stdin.readline()
for pid in (a, c, g, d):
    os.kill(pid, signal.SIGKILL)
"#;

/// Debian's CPython, else the first `python3` on PATH.
fn python() -> std::path::PathBuf {
    let system = std::path::Path::new("/usr/bin/python3");
    if system.exists() {
        return system.to_path_buf();
    }
    "python3".into()
}

/// The process events connector answers only in the initial PID namespace (and, before
/// Linux 6.6, to root).
fn events_expected() -> bool {
    const INIT_PID_NS: u64 = 0xEFFF_FFFC;
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let init_ns = std::fs::metadata("/proc/self/ns/pid").is_ok_and(|m| m.ino() == INIT_PID_NS);
    root && init_ns
}

/// (depth, pid, name, RSS) of every row.
fn rows(snapshot: &TreeSnapshot) -> Vec<(usize, i32, String, i64)> {
    snapshot
        .rows
        .iter()
        .map(|row| {
            let rss = row
                .values
                .as_ref()
                .and_then(|v| v.first())
                .and_then(|v| v.to_json().as_i64())
                .unwrap_or(-1);
            (row.depth, row.pid, row.name.to_string(), rss)
        })
        .collect()
}

struct Tree {
    child: std::process::Child,
    stdin: ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Tree {
    fn line(&mut self) -> Vec<i32> {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("script prints");
        line.split_whitespace()
            .filter_map(|word| word.parse().ok())
            .collect()
    }

    fn step(&mut self) -> Vec<i32> {
        self.stdin.write_all(b"\n").expect("script reads");
        self.stdin.flush().expect("script reads");
        self.line()
    }
}

#[test]
fn events_and_polling_see_the_same_tree() {
    if !events_expected() {
        eprintln!("skipped: process events need root in the initial PID namespace");
        return;
    }
    let mut child = Command::new(python())
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let stdin = child.stdin.take().expect("stdin");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut tree = Tree {
        child,
        stdin,
        stdout,
    };
    let root = tree.child.id() as i32;
    let columns = vec![Column::Rss, Column::Cpu];
    let mut events = TreeMonitor::new(root, columns.clone()).expect("events monitor");
    let mut polling = TreeMonitor::polling(root, columns).expect("polling monitor");
    assert!(events.uses_events(), "root in the initial PID namespace");
    assert!(!polling.uses_events());

    let mut both = |expected: &[(usize, i32)], names: &[(i32, &str)]| {
        both_agree(&mut events, &mut polling, expected, names)
    };
    let sorted = |mut pids: Vec<i32>| {
        pids.sort_unstable();
        pids
    };

    let start = tree.line();
    let [a, b, g] = start[..] else {
        panic!("start line: {start:?}");
    };
    assert_eq!(
        both(&[(0, root), (1, a), (1, b), (2, g)], &[(a, "python")]),
        1
    );

    let step = tree.step();
    let [c, d] = step[..] else {
        panic!("step 1 line: {step:?}");
    };
    let mut expected = vec![(0, root)];
    for kid in sorted(vec![a, b, c]) {
        expected.push((1, kid));
        if kid == b {
            expected.push((2, g));
        }
        if kid == c {
            expected.push((2, d));
        }
    }
    assert_eq!(
        both(&expected, &[(a, "sleep"), (d, "python")]),
        1,
        "forks, exec: events"
    );

    tree.step();
    expected.retain(|(_, pid)| *pid != d);
    assert_eq!(both(&expected, &[]), 1, "a leaf's exit followed by events");

    tree.step();
    expected.retain(|(_, pid)| *pid != b && *pid != g);
    assert_eq!(both(&expected, &[]), 2, "a parent's exit walks once");

    tree.step();
    tree.child.wait().expect("script exits");
    assert!(events.tick().is_none(), "root gone");
    assert_eq!(polling.stats().walks, 4, "polling walks every tick");
}

/// Ticks both monitors, checks they agree with each other and with the expected (depth, PID)
/// rows and names; returns how many walks the event-driven one has made.
fn both_agree(
    events: &mut TreeMonitor,
    polling: &mut TreeMonitor,
    expected: &[(usize, i32)],
    names: &[(i32, &str)],
) -> usize {
    let seen = rows(&events.tick().expect("root alive"));
    let polled = rows(&polling.tick().expect("root alive"));
    assert_eq!(seen, polled, "events and polling disagree");
    let shape: Vec<(usize, i32)> = seen.iter().map(|(d, p, ..)| (*d, *p)).collect();
    assert_eq!(shape, expected);
    for (pid, name) in names {
        let row = seen.iter().find(|r| r.1 == *pid).expect("row");
        assert!(row.2.starts_with(name), "{pid} is {:?}, not {name}", row.2);
    }
    // RSS is what psutil (and so process_tree.py) reports: `VmRSS`, the same as `statm`.
    for (_, pid, _, rss) in &seen {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let kib: i64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        assert_eq!(*rss, kib * 1024, "RSS of {pid}");
    }
    events.stats().walks
}
