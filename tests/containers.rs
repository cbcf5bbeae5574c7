//! Targets in containers: real CPython 3.13 (Debian sid's, in the chroot `.ci/sid_chroot.sh`
//! makes at /srv/pmt-sid) started as a container runtime starts it, in its own PID and mount
//! namespaces (`unshare --pid --mount --fork --mount-proc` + `chroot`, so it is PID 1 there),
//! and read both from the host and from a "sidecar": `pmt` entered into the same PID and mount
//! namespaces (`nsenter`), seeing the container's PIDs and `/proc`.
//!
//! Shown: `pmt dump` idle/active and the GIL right for a sleeping and a spinning thread; `rss`
//! charged to the growing thread's function with a CPU-only bystander near zero; `malloc-*`
//! metrics; `--subprocesses` of a multiprocessing pool; `pmt tree` of a tree whose children
//! come and go; and the exact errors for a zombie, a kernel thread, root refused from a user
//! namespace. Needs root (for the namespaces); skips with a message elsewhere, or without the
//! chroot unless `PMT_REQUIRE_PYTHONS` names `sid3.13`.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The interpreter inside the chroot ([`common::sid_root`]).
const SID_PYTHON: &str = "/usr/bin/python3.13";

/// The chroot's interpreter, or `None` after saying why the test is skipped.
fn sid_root() -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions.
    let root_user = unsafe { libc::geteuid() } == 0;
    let root =
        PathBuf::from(std::env::var("PMT_SID_ROOT").unwrap_or_else(|_| "/srv/pmt-sid".into()));
    let present = root.join(SID_PYTHON.trim_start_matches('/')).exists();
    match (root_user, present) {
        (true, true) => Some(root),
        _ if common::required("sid3.13") => {
            panic!(
                "sid3.13 is required: needs root and {} (bash .ci/sid_chroot.sh)",
                root.display()
            )
        }
        (false, _) => {
            eprintln!("skipped: containers need root (unshare --pid --mount)");
            None
        }
        (true, false) => {
            eprintln!(
                "skipped: no {}{SID_PYTHON} (make it with `bash .ci/sid_chroot.sh`)",
                root.display()
            );
            None
        }
    }
}

/// CPython running as PID 1 of its own PID and mount namespaces, chrooted. Killed on drop.
struct Container {
    unshare: Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
    /// The interpreter's PID as the host sees it.
    host_pid: i32,
}

impl Container {
    /// Starts sid's `python3.13 -c code` chrooted in a new container and waits for it to print
    /// `ready`.
    fn start(root: &Path, code: &str) -> Container {
        Container::start_python(Some(root), Path::new(SID_PYTHON), code)
    }

    /// Starts `python -c code` in new PID and mount namespaces, chrooted to `root` if given.
    fn start_python(root: Option<&Path>, python: &Path, code: &str) -> Container {
        let mut command = Command::new("unshare");
        command.args(["--pid", "--mount", "--fork", "--mount-proc", "--kill-child"]);
        if let Some(root) = root {
            command.arg("chroot").arg(root);
        }
        let mut unshare = command
            .arg(python)
            .args(["-c", code])
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting unshare");
        let stdin = unshare.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(unshare.stdout.take().expect("piped stdout"));
        let unshare_pid = unshare.id() as i32;
        let mut container = Container {
            unshare,
            stdin,
            stdout,
            host_pid: 0,
        };
        container.wait_for("ready");
        container.host_pid = container_init(unshare_pid);
        container
    }

    /// Reads stdout until a line equals `marker`.
    fn wait_for(&mut self, marker: &str) {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).expect("container stdout");
            assert!(n > 0, "the container exited before printing {marker:?}");
            if line.trim_end() == marker {
                return;
            }
        }
    }

    /// Writes a line to the interpreter's stdin.
    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("container stdin");
        self.stdin.flush().expect("flush");
    }

    /// The interpreter's PID in its own namespace (1: it is the container's init).
    fn own_pid(&self) -> i32 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.host_pid))
            .expect("container status");
        let nspid = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .expect("NSpid line");
        let ids: Vec<i32> = nspid
            .split_whitespace()
            .map(|n| n.parse().expect("pid"))
            .collect();
        assert_eq!(ids.len(), 2, "one nested PID namespace: {ids:?}");
        ids[1]
    }

    /// Host thread ids of the interpreter.
    fn host_tids(&self) -> BTreeSet<u32> {
        std::fs::read_dir(format!("/proc/{}/task", self.host_pid))
            .expect("task dir")
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGKILL to unshare; `--kill-child` takes the container's init (and so every
        // process of its namespace) with it.
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// The child of `unshare --fork`: the container's init.
fn container_init(unshare_pid: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let children =
            std::fs::read_to_string(format!("/proc/{unshare_pid}/task/{unshare_pid}/children"))
                .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            return pid.parse().expect("pid");
        }
        assert!(Instant::now() < deadline, "unshare never forked");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Where `pmt` runs: on the host with host PIDs, or in a sidecar sharing the container's PID
/// namespace (and a mount namespace whose `/proc` is the container's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Viewer {
    Host,
    Sidecar,
}

impl Viewer {
    /// A command running `binary args…` from this viewer, and the target PID it must use.
    fn command(self, container: &Container, binary: &str) -> (Command, i32) {
        match self {
            Viewer::Host => (Command::new(binary), container.host_pid),
            Viewer::Sidecar => {
                let mut command = Command::new("nsenter");
                command
                    .arg("--target")
                    .arg(container.host_pid.to_string())
                    .args(["--pid", "--mount", "--"])
                    .arg(binary);
                (command, container.own_pid())
            }
        }
    }
}

/// Two tests of one check: `pmt` on the host, and `pmt` in a sidecar.
macro_rules! from_host_and_sidecar {
    ($check:ident: $host:ident, $sidecar:ident) => {
        #[test]
        fn $host() {
            $check(Viewer::Host);
        }

        #[test]
        fn $sidecar() {
            $check(Viewer::Sidecar);
        }
    };
}

const PMT: &str = env!("CARGO_BIN_EXE_pmt");
const PMT_SAMPLE: &str = env!("CARGO_BIN_EXE_pmt-sample");

fn run(mut command: Command) -> Output {
    let output = command.output().expect("running pmt");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    output
}

/// Total weight of the folded stacks with a frame of `function`, and of all stacks.
fn share_of(folded: &str, function: &str) -> (u64, u64) {
    let frame = format!("{function} (");
    let mut with = 0;
    let mut total = 0;
    for line in folded.lines() {
        let Some((stack, weight)) = line.rsplit_once(' ') else {
            continue;
        };
        let weight: u64 = weight.parse().expect("integer weight");
        total += weight;
        if stack.contains(&frame) {
            with += weight;
        }
    }
    (with, total)
}

const IDLE_AND_SPIN: &str = r#"
import threading, time
def burn_cpu():
    x = 0
    while True:
        x += 1
threading.Thread(target=burn_cpu, name="spinner", daemon=True).start()
def sleep_forever():
    print("ready", flush=True)
    while True:
        time.sleep(1000)
sleep_forever()
"#;

fn dump_idle_and_active(viewer: Viewer) {
    let Some(root) = sid_root() else { return };
    let _serial = common::serial();
    let container = Container::start(&root, IDLE_AND_SPIN);
    assert_eq!(
        container.own_pid(),
        1,
        "the interpreter is the container's init"
    );
    // `ready` is printed just before the main thread's sleep: give it time to get there and
    // the spinner time to take the GIL back.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (mut command, pid) = viewer.command(&container, PMT);
    command.args(["dump", "--pid", &pid.to_string()]);
    let output = run(command);
    let text = String::from_utf8_lossy(&output.stdout);
    eprintln!("{text}");
    assert!(output.status.success(), "pmt dump failed");
    assert!(
        text.starts_with(&format!("Process {pid}: {SID_PYTHON} -c")),
        "the PID given and the command line the container sees: {text}"
    );
    let thread_line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with("Thread ") && l.contains(&format!("\"{name}\"")))
            .unwrap_or_else(|| panic!("no {name} thread in:\n{text}"))
            .to_string()
    };
    let main = thread_line("MainThread");
    let spinner = thread_line("spinner");
    assert!(main.ends_with("[idle]"), "sleeping main thread: {main}");
    assert!(
        spinner.ends_with("[gil, active]"),
        "spinning thread holds the GIL and runs: {spinner}"
    );
    assert!(text.contains("sleep_forever (<string>:"), "{text}");
    assert!(text.contains("burn_cpu (<string>:"), "{text}");
    // The thread ids shown are the viewer's: host tids from the host, the container's own
    // (1 for its init's main thread) from the sidecar.
    let tid_of = |line: &str| -> u32 {
        let start = line.find("(tid ").expect("tid") + 5;
        line[start..]
            .split(')')
            .next()
            .and_then(|t| t.parse().ok())
            .expect("tid number")
    };
    match viewer {
        Viewer::Host => {
            let host = container.host_tids();
            assert!(host.contains(&tid_of(&main)) && host.contains(&tid_of(&spinner)));
            assert_eq!(tid_of(&main), container.host_pid as u32);
        }
        Viewer::Sidecar => assert_eq!(tid_of(&main), 1),
    }
}

/// Every interpreter here (3.6 and 3.7 keep no native thread id: pmt reads glibc's), in new
/// PID and mount namespaces (sid's chrooted too).
#[test]
fn dump_maps_thread_ids_of_every_interpreter_in_a_pid_namespace() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: containers need root (unshare --pid --mount)");
        return;
    }
    let _serial = common::serial();
    for label in common::LABELS {
        let Some(interp) = common::interpreter_or_skip(label) else {
            continue;
        };
        let container =
            Container::start_python(interp.root.as_deref(), &interp.path, IDLE_AND_SPIN);
        // The main thread prints `ready` holding the GIL, then sleeps: let it get there.
        std::thread::sleep(Duration::from_millis(300));
        let output = run({
            let mut command = Command::new(PMT);
            command.args(["dump", "--pid", &container.host_pid.to_string()]);
            command
        });
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{label}: pmt dump failed");
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with("Thread ") && l.contains(&format!("\"{name}\"")))
                .unwrap_or_else(|| panic!("{label}: no {name} thread in:\n{text}"))
                .to_string()
        };
        let (main, spinner) = (line("MainThread"), line("spinner"));
        assert!(
            main.contains(&format!("(tid {})", container.host_pid)) && main.ends_with("[idle]"),
            "{label}: the sleeping main thread, by its host tid: {main}"
        );
        assert!(
            spinner.ends_with("[gil, active]"),
            "{label}: the spinning thread: {spinner}"
        );
    }
}

from_host_and_sidecar!(dump_idle_and_active: dump_from_the_host_tells_idle_from_active, dump_from_a_sidecar_tells_idle_from_active);

/// One thread grows 300 MiB when told to on stdin; another only burns CPU.
const GROW_AND_SPIN: &str = r#"
import sys, threading, time
def burn_cpu():
    x = 0
    while True:
        x += 1
def grow_memory():
    blocks = []
    for _ in range(300):
        blocks.append(bytearray(1 << 20))
        time.sleep(0.004)
    print("grown", flush=True)
    time.sleep(1000)
threading.Thread(target=burn_cpu, daemon=True).start()
print("ready", flush=True)
sys.stdin.readline()
threading.Thread(target=grow_memory, daemon=True).start()
time.sleep(1000)
"#;

/// Samples the growth of [`GROW_AND_SPIN`] with `metric`; returns the folded stacks.
fn sample_growth(root: &Path, viewer: Viewer, metric: &str) -> Option<String> {
    let mut container = Container::start(root, GROW_AND_SPIN);
    let dir = tempfile::tempdir().expect("tempdir");
    let folded = dir.path().join("folded.txt");
    let (mut command, pid) = viewer.command(&container, PMT_SAMPLE);
    command
        .args([
            "--pid",
            &pid.to_string(),
            "--metric",
            metric,
            "--rate",
            "200",
        ])
        .args(["--duration", "5", "--collapsed"])
        .arg(&folded)
        .stderr(Stdio::piped());
    let mut sampler = command.spawn().expect("pmt-sample");
    // The growth starts once pmt-sample says it samples (its capture is in place by then): a
    // fixed wait let a loaded machine miss the first allocations.
    let (lines, sampling) = std::sync::mpsc::channel::<String>();
    let stderr = sampler.stderr.take().expect("stderr piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("Ctrl-C to stop") {
                let _ = lines.send(line.clone());
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let started = sampling.recv_timeout(Duration::from_secs(60)).is_ok();
    if started {
        container.send("go");
        container.wait_for("grown");
    }
    let status = sampler.wait().expect("pmt-sample ran");
    let stderr = reader.join().expect("the stderr reader");
    eprintln!("{stderr}");
    if !status.success() && metric.starts_with("malloc") {
        let unavailable = stderr.contains("CAP_BPF") || stderr.contains("no eBPF object");
        let required = std::env::var("PMT_REQUIRE_EBPF").as_deref() == Ok("1");
        assert!(unavailable && !required, "pmt-sample failed: {stderr}");
        eprintln!("skipped: eBPF malloc counters unavailable here");
        return None;
    }
    assert!(status.success(), "pmt-sample failed: {stderr}");
    assert!(started, "pmt-sample never said it was sampling: {stderr}");
    Some(std::fs::read_to_string(&folded).expect("folded output"))
}

/// Asserts that `grow_memory` got at least `least` and more than `share` of the folded
/// weight, and the CPU-only bystander under 3%.
fn assert_growth_charged(folded: &str, what: &str, least: u64, share: f64) {
    let (grow, total) = share_of(folded, "grow_memory");
    let (burn, _) = share_of(folded, "burn_cpu");
    eprintln!("{what}:\n{folded}");
    assert!(
        grow >= least,
        "{what}: grow_memory got {grow}, at least {least} expected"
    );
    assert!(
        grow as f64 > share * total as f64,
        "{what}: grow_memory got {grow} of {total}"
    );
    assert!(
        (burn as f64) < 0.03 * total as f64,
        "{what}: the CPU-only bystander got {burn} of {total}"
    );
}

fn rss_goes_to_the_growing_function(viewer: Viewer) {
    let Some(root) = sid_root() else { return };
    let _serial = common::serial();
    let folded = sample_growth(&root, viewer, "rss").expect("rss is always available");
    // 300 MiB grown.
    assert_growth_charged(&folded, "rss", 250 << 20, 0.95);
}

from_host_and_sidecar!(rss_goes_to_the_growing_function: rss_from_the_host_goes_to_the_growing_thread, rss_from_a_sidecar_goes_to_the_growing_thread);

fn malloc_goes_to_the_allocating_function(viewer: Viewer) {
    let Some(root) = sid_root() else { return };
    let _serial = common::serial();
    // 300 bytearrays of 1 MiB each.
    for (metric, least) in [("malloc-bytes", 280 << 20), ("malloc-count", 300)] {
        let Some(folded) = sample_growth(&root, viewer, metric) else {
            return;
        };
        assert_growth_charged(&folded, metric, least, 0.9);
    }
}

from_host_and_sidecar!(malloc_goes_to_the_allocating_function: malloc_metrics_from_the_host, malloc_metrics_from_a_sidecar);

/// A multiprocessing pool of 3 forked workers, each allocating in `work` for a while.
const POOL: &str = r#"
import multiprocessing as mp, os, sys, time
def work(n):
    blocks = []
    end = time.time() + 2.5
    while time.time() < end:
        blocks.append(bytearray(1 << 16))
        if len(blocks) > 200:
            blocks.clear()
    return os.getpid()
if __name__ == "__main__":
    mp.set_start_method("fork")
    print("ready", flush=True)
    sys.stdin.readline()
    with mp.Pool(3) as pool:
        pids = pool.map(work, range(3), chunksize=1)
    print("done", len(set(pids)), flush=True)
    time.sleep(1000)
"#;

fn subprocesses_of_a_pool(viewer: Viewer) {
    let Some(root) = sid_root() else { return };
    let _serial = common::serial();
    let mut container = Container::start(&root, POOL);
    let dir = tempfile::tempdir().expect("tempdir");
    let folded = dir.path().join("folded.txt");
    let (mut command, pid) = viewer.command(&container, PMT_SAMPLE);
    command
        .args([
            "--pid",
            &pid.to_string(),
            "--subprocesses",
            "--metric",
            "cpu",
        ])
        .args(["--rate", "50", "--duration", "5", "--collapsed"])
        .arg(&folded)
        .stderr(Stdio::piped());
    let sampler = command.spawn().expect("pmt-sample");
    std::thread::sleep(Duration::from_millis(800));
    container.send("go");
    let output = sampler.wait_with_output().expect("pmt-sample ran");
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stderr}");
    assert!(output.status.success(), "pmt-sample failed: {stderr}");
    let text = std::fs::read_to_string(&folded).expect("folded output");
    let mut workers = BTreeSet::new();
    for line in text.lines().filter(|l| l.contains("work (<string>:")) {
        let root_frame = line.split(';').next().unwrap_or_default();
        let pid = root_frame
            .strip_prefix("process ")
            .and_then(|rest| rest.split(':').next())
            .and_then(|p| p.parse::<i32>().ok())
            .unwrap_or_else(|| panic!("no process root frame: {line}"));
        workers.insert(pid);
    }
    assert_eq!(
        workers.len(),
        3,
        "each of the 3 pool workers sampled in `work`: {workers:?}\n{text}"
    );
    assert!(!workers.contains(&pid), "the workers are not the parent");
    if viewer == Viewer::Host {
        // Host PIDs: each is a process the host can see, below the container's init.
        for worker in &workers {
            let status = std::fs::read_to_string(format!("/proc/{worker}/status"));
            if let Ok(status) = status {
                assert!(status.contains("NSpid:"), "{worker}");
            }
        }
    }
}

from_host_and_sidecar!(subprocesses_of_a_pool: subprocesses_of_a_containerized_pool_from_the_host, subprocesses_of_a_containerized_pool_from_a_sidecar);

/// A parent that starts two children at a time, each living 0.4 s, six times over.
const COMING_AND_GOING: &str = r#"
import subprocess, sys, time
print("ready", flush=True)
sys.stdin.readline()
for _ in range(6):
    kids = [subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(8 << 20); time.sleep(0.4)"]) for _ in range(2)]
    for kid in kids:
        kid.wait()
    time.sleep(0.2)
print("done", flush=True)
time.sleep(1000)
"#;

fn count_nodes(node: &serde_json::Value, pids: &mut BTreeSet<i64>) -> usize {
    if let Some(pid) = node["pid"].as_i64() {
        pids.insert(pid);
    }
    1 + node["children"]
        .as_array()
        .map(|c| c.iter().map(|child| count_nodes(child, pids)).sum())
        .unwrap_or(0)
}

fn tree_of_children_coming_and_going(viewer: Viewer) {
    let Some(root) = sid_root() else { return };
    let _serial = common::serial();
    let mut container = Container::start(&root, COMING_AND_GOING);
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("tree.json");
    let (mut command, pid) = viewer.command(&container, PMT);
    command
        .args([
            "tree",
            "--pid",
            &pid.to_string(),
            "-i",
            "0.1",
            "--duration",
            "5.5",
        ])
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let monitor = command.spawn().expect("pmt tree");
    std::thread::sleep(Duration::from_millis(500));
    container.send("go");
    container.wait_for("done");
    let output = monitor.wait_with_output().expect("pmt tree ran");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "pmt tree failed");
    let text = std::fs::read_to_string(&json).expect("json written");
    let records: Vec<serde_json::Value> = serde_json::from_str(&text).expect("JSON list");
    let mut pids = BTreeSet::new();
    let mut most = 0;
    for record in &records {
        assert_eq!(record["pid"].as_i64(), Some(i64::from(pid)), "the root");
        most = most.max(count_nodes(record, &mut pids));
    }
    assert_eq!(most, 3, "the parent and two children at once");
    assert!(
        pids.len() >= 11,
        "the parent and (nearly) all 12 children seen: {pids:?}"
    );
    let mut last = BTreeSet::new();
    assert_eq!(
        count_nodes(records.last().expect("records"), &mut last),
        1,
        "children gone at the end"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("python3.13"),
        "names as the container shows them"
    );
}

from_host_and_sidecar!(tree_of_children_coming_and_going: tree_of_a_container_from_the_host, tree_of_a_container_from_a_sidecar);

/// The one-line error of a failed `pmt dump`.
fn dump_error(command: &mut Command) -> String {
    let output = command.output().expect("pmt dump");
    assert!(!output.status.success(), "pmt dump should fail");
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn zombies_and_kernel_threads_are_named_as_such() {
    // A child that has exited and that nobody reaps while it is looked at.
    let mut zombie = Command::new("true").spawn().expect("true");
    let pid = zombie.id();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    }) {
        assert!(Instant::now() < deadline, "the child never became a zombie");
        std::thread::sleep(Duration::from_millis(5));
    }
    let error = dump_error(Command::new(PMT).args(["dump", "--pid", &pid.to_string()]));
    let _ = zombie.wait();
    assert!(
        error.contains(&format!("process {pid} is a zombie"))
            && error.contains(&format!("parent (pid {})", std::process::id())),
        "{error}"
    );
    // kthreadd is PID 2 where the tests see the host's PID namespace.
    let kthreadd = std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd");
    if kthreadd {
        let error = dump_error(Command::new(PMT).args(["dump", "--pid", "2"]));
        assert!(
            error.contains("process 2 (kthreadd) is a kernel thread, not a Python process"),
            "{error}"
        );
    } else {
        eprintln!("skipped the kernel-thread case: PID 2 is not kthreadd here");
    }
}

#[test]
fn root_in_a_user_namespace_is_told_why_it_is_refused() {
    let Some(root) = sid_root() else { return };
    let _serial = common::serial();
    let container = Container::start(&root, IDLE_AND_SPIN);
    // Root of a new user namespace has no rights over the host's processes.
    let error = dump_error(
        Command::new("unshare")
            .args(["--user", "--map-root-user", "--"])
            .arg(PMT)
            .args(["dump", "--pid", &container.host_pid.to_string()]),
    );
    assert!(
        error.contains("although pmt runs as root")
            && error.contains("only inside a user namespace")
            && !error.contains("run as root,"),
        "{error}"
    );
}
