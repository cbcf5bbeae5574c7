//! `pmt-sample --subprocesses` against real CPython process trees: a multiprocessing pool where
//! one worker leaks (bench/workloads/pool_leak.py), a child that exits mid-run, and a shell
//! launcher attached by pid.

mod common;

use common::{read_folded, repo, run, serial};

use pymemtrace::output::timeline;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// The pid in a `process PID: CMD` root frame.
fn pid_of(root: &str) -> Option<i32> {
    root.strip_prefix("process ")?
        .split(':')
        .next()?
        .parse()
        .ok()
}

fn has_function(frames: &[String], function: &str) -> bool {
    let prefix = format!("{function} (");
    frames.iter().any(|f| f.starts_with(&prefix))
}

/// Per process (by pid): its total weight and whether its stacks run `function`.
fn by_process(folded: &[(Vec<String>, u64)]) -> BTreeMap<i32, (u64, Vec<String>)> {
    let mut processes: BTreeMap<i32, (u64, Vec<String>)> = BTreeMap::new();
    for (frames, weight) in folded {
        let pid = pid_of(&frames[0]).unwrap_or_else(|| panic!("no process root: {frames:?}"));
        let entry = processes.entry(pid).or_default();
        entry.0 += weight;
        entry.1.extend(frames.iter().skip(1).cloned());
    }
    processes
}

const MIB: u64 = 1 << 20;

#[test]
fn the_leaking_pool_worker_carries_the_growth() {
    pool_leak("3.12");
}

#[test]
fn the_leaking_pool_worker_carries_the_growth_on_3_14() {
    pool_leak("sid3.14");
}

fn pool_leak(label: &str) {
    let Some(interp) = common::interpreter_or_skip(label) else {
        return;
    };
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let folded_path = dir.path().join("pool.folded");
    let json_path = dir.path().join("pool.json");
    let mut command = Command::new(env!("CARGO_BIN_EXE_pmt-sample"));
    command
        .args([
            "--subprocesses",
            "--threads",
            "--metric",
            "rss",
            "--collapsed",
        ])
        .arg(&folded_path)
        .arg("--json")
        .arg(&json_path)
        .arg("--")
        .args(interp.argv())
        .arg(repo().join("bench/workloads/pool_leak.py"))
        .args(["--workers", "3", "--leak-mib", "96"]);
    let output = run(command);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("processes sampled: 5"), "{stderr}");
    // The tree's processes are read at the same ticks: the run's rate is theirs, 20 Hz (a
    // memory run in the kernel), not the 100 Hz it ticks at.
    let rate: f64 = stderr
        .split("  samples: ")
        .nth(1)
        .and_then(|rest| rest.split(" at ").nth(1))
        .and_then(|rest| rest.split(" Hz").next())
        .and_then(|hz| hz.parse().ok())
        .unwrap_or_else(|| panic!("no rate in the summary: {stderr}"));
    assert!(
        stderr.contains("(asked 20)") && rate <= 21.0,
        "{rate} Hz: {stderr}"
    );
    let top: Vec<&str> = stderr
        .lines()
        .skip_while(|l| !l.contains("top stacks by"))
        .skip(1)
        .take_while(|l| l.contains('%'))
        .collect();
    assert!(
        !top.is_empty() && top.iter().all(|l| l.contains("[process ")),
        "the top stacks name their process: {stderr}"
    );

    let folded = read_folded(&folded_path);
    assert!(
        folded
            .iter()
            .all(|(frames, _)| frames[1].starts_with("thread ")),
        "the thread frame comes below the process frame"
    );
    let roots: std::collections::BTreeSet<&str> = folded
        .iter()
        .map(|(frames, _)| frames[0].as_str())
        .collect();
    assert!(
        roots.iter().filter(|r| r.contains(": worker ")).count() >= 3,
        "the workers' root frames name their role: {roots:?}"
    );
    assert!(
        roots.iter().any(|r| r.contains(": master · ")),
        "the master's root frame says so: {roots:?}"
    );
    let processes = by_process(&folded);
    let total: u64 = processes.values().map(|(w, _)| w).sum();
    let (leaker, (leaked, _)) = processes
        .iter()
        .find(|(_, (_, frames))| has_function(frames, "leak_task"))
        .expect("a process ran leak_task");
    assert!(
        *leaked >= 64 * MIB && *leaked * 10 >= total * 6,
        "the leaking worker {leaker} carries {leaked} of {total} bytes"
    );
    for (pid, (weight, frames)) in &processes {
        if pid != leaker && has_function(frames, "churn_task") {
            assert!(
                *weight * 4 < *leaked,
                "churning worker {pid}: {weight} bytes, transient growth is not kept"
            );
        }
    }

    let profile = timeline::read(std::fs::File::open(&json_path).expect("json")).expect("read");
    let parent = profile.target.pid;
    let (_, parent_frames) = processes.get(&parent).expect("the parent's own stacks");
    assert!(
        has_function(parent_frames, "parent_setup"),
        "the parent's growth is charged within the parent"
    );
    let (short, (kept, _)) = processes
        .iter()
        .find(|(_, (_, frames))| has_function(frames, "short_lived"))
        .expect("the short-lived child's frames are in the output");
    assert!(*kept >= 12 * MIB, "the short-lived child kept {kept} bytes");

    // The short-lived child stopped being sampled well before the end: it exited mid-run.
    let timeline = profile.timeline().expect("samples");
    let last_time = |pid: i32| {
        let index = profile
            .processes()
            .iter()
            .position(|p| p.pid == pid)
            .expect("the process is in the table") as u32;
        timeline
            .iter()
            .filter(|s| s.process == Some(index))
            .map(|s| s.time_s)
            .fold(0.0, f64::max)
    };
    assert!(
        last_time(*short) + 1.0 < last_time(parent),
        "child {short} exited mid-run"
    );
}

#[test]
fn a_shell_launcher_is_followed_to_its_python_child() {
    let Some(interp) = common::interpreter_or_skip("3.11") else {
        return;
    };
    let _serial = serial();
    let script = repo().join("tests/scripts/sleeper.py");
    // `; true` keeps the shell from exec-ing Python in its place.
    let mut shell = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' '{}'; true",
            interp.path.display(),
            script.display()
        ))
        .stdout(Stdio::piped())
        .spawn()
        .expect("sh");
    let mut stdout = BufReader::new(shell.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .expect("the sleeper's ready line");
    assert_eq!(line.trim(), "ready");

    let dir = tempfile::tempdir().expect("tempdir");
    let folded_path = dir.path().join("shell.folded");
    let shell_pid = shell.id() as i32;
    let python_pid = pymemtrace::attach::descendant_pids(shell_pid);
    let mut command = Command::new(env!("CARGO_BIN_EXE_pmt-sample"));
    command
        .args(["--pid", &shell_pid.to_string(), "--subprocesses"])
        .args(["--duration", "1", "--metric", "wall", "--collapsed"])
        .arg(&folded_path);
    let output = run(command);
    for pid in python_pid {
        // SAFETY: kill(2) on the shell's child, which this test started through the shell.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    let _ = shell.kill();
    let _ = shell.wait();
    assert!(output.status.success());

    let folded = read_folded(&folded_path);
    let processes = by_process(&folded);
    assert_eq!(processes.len(), 1, "only the Python child: {processes:?}");
    let (pid, (samples, frames)) = processes.iter().next().expect("one process");
    assert_ne!(*pid, shell_pid, "the shell itself is not sampled");
    assert!(has_function(frames, "<module>"), "{frames:?}");
    assert!(*samples >= 50, "{samples} wall samples in 1 s at 100 Hz");
}

#[test]
fn a_tree_without_python_ends_with_the_root_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folded_path = dir.path().join("none.folded");
    let mut command = Command::new(env!("CARGO_BIN_EXE_pmt-sample"));
    command
        .args(["--subprocesses", "--collapsed"])
        .arg(&folded_path)
        .args(["--", "sh", "-c", "sleep 0.3; true"]);
    let output = run(command);
    assert!(output.status.success(), "outputs are written");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("target exited"), "{stderr}");
    assert!(
        stderr.contains("no Python process was found in the tree"),
        "{stderr}"
    );
    assert!(read_folded(&folded_path).is_empty());
}

#[test]
fn children_of_an_orphaned_process_are_followed() {
    let Some(interp) = common::interpreter_or_skip("3.12") else {
        return;
    };
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let folded_path = dir.path().join("orphans.folded");
    let mut command = Command::new(env!("CARGO_BIN_EXE_pmt-sample"));
    command
        .args(["--subprocesses", "--metric", "wall", "--collapsed"])
        .arg(&folded_path)
        .arg("--")
        .arg(&interp.path)
        .arg(repo().join("tests/scripts/orphans.py"));
    let output = run(command);
    assert!(output.status.success());
    let processes = by_process(&read_folded(&folded_path));
    assert_eq!(
        processes.len(),
        3,
        "parent, child, grandchild: {processes:?}"
    );
    let (_, (samples, _)) = processes
        .iter()
        .find(|(_, (_, frames))| has_function(frames, "grandchild_work"))
        .expect("the grandchild, born after its grandparent exited, was sampled");
    assert!(*samples >= 20, "{samples} wall samples in 0.6 s at 100 Hz");
}

#[test]
fn a_launcher_that_execs_python_late_is_sampled_after_the_exec() {
    let Some(interp) = common::interpreter_or_skip("3.11") else {
        return;
    };
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let folded_path = dir.path().join("exec.folded");
    let script = repo().join("tests/scripts/sleeper.py");
    // The shell outlives the 2 s given to a process that is not Python yet, then execs Python.
    let shell = format!(
        "sleep 2.5; exec '{}' '{}'",
        interp.path.display(),
        script.display()
    );
    let mut command = Command::new(env!("CARGO_BIN_EXE_pmt-sample"));
    command
        .args(["--subprocesses", "--duration", "4", "--metric", "wall"])
        .arg("--collapsed")
        .arg(&folded_path)
        .args(["--", "sh", "-c", &shell]);
    let output = run(command);
    assert!(output.status.success());
    let processes = by_process(&read_folded(&folded_path));
    assert_eq!(processes.len(), 1, "{processes:?}");
    let (_, (samples, frames)) = processes.iter().next().expect("one process");
    assert!(has_function(frames, "<module>"), "{frames:?}");
    assert!(*samples >= 50, "{samples} wall samples after the exec");
}

/// A pool's master sampled alone: one line says at once, and the summary again, which
/// Python children do the work unsampled (by role and pid) and how to sample them; the kernel
/// capture's banner is printed once.
#[test]
fn a_master_sampled_alone_names_its_workers() {
    let Some(interp) = common::interpreter_or_skip("3.12") else {
        return;
    };
    let _serial = serial();
    let mut target = common::start(&interp, &common::script("fork_pool.py"), &[]);
    target.wait_for_line("READY", std::time::Duration::from_secs(30));
    let mut command = Command::new(env!("CARGO_BIN_EXE_pmt-sample"));
    command.args(["--duration", "1", "--pid", &target.pid().to_string()]);
    let output = run(command);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let at = |text: &str| lines.iter().position(|l| l.contains(text));
    let (Some(start), Some(stop), Some(end)) = (
        at("Python children that will not be sampled"),
        at("pmt-sample: stopped after"),
        at("Python children that were not sampled"),
    ) else {
        panic!("a line as the run starts and one in the summary: {stderr}");
    };
    assert!(start < stop && stop < end, "{stderr}");
    for hint in [lines[start], lines[end]] {
        assert!(
            hint.contains("(worker 1)")
                && hint.contains("(worker 2)")
                && hint.contains("--subprocesses"),
            "{stderr}"
        );
    }
    let banners = stderr
        .lines()
        .filter(|l| l.contains("captured in the kernel at page faults"))
        .count();
    assert!(banners <= 1, "the banner once: {stderr}");
    let status = target.child.wait().expect("the pool finishes");
    assert!(status.success(), "the pool's work finished");
}
