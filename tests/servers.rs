//! Real pre-fork servers as users run them: gunicorn + Flask and uvicorn + FastAPI (the apps of
//! `bench/workloads/servers/`, two workers each), from the venvs `tests/packages/setup_venvs.sh`
//! makes (pyenv's 3.12 on the host, Debian sid's 3.14 in its chroot), started through a shell
//! and attached to while clients in this test send requests over 127.0.0.1:
//! - `pmt-sample --pid SHELL` says the shell is not Python and names the master, its workers by
//!   role and `--subprocesses`;
//! - `--pid MASTER` alone names the workers it does not sample and `--subprocesses`;
//! - `--pid MASTER --subprocesses` roots each worker's stacks at its process, with the handler
//!   under it; with `--async` (uvicorn) the `async def` endpoints under their request's task;
//! - `pmt heap --pid WORKER --diff 10` (gunicorn), started with the first `/leak` requests,
//!   names the module-level list the leaking handler appends to, and the handler's lines as
//!   what grew it.
//!
//! A missing venv skips its tests, unless `PMT_REQUIRE_PYTHONS` requires its interpreter: then
//! they fail with a line that says how to make it.

mod common;

use common::{Interpreter, serial};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the servers' venvs hold.
const PACKAGES: &[&str] = &["gunicorn", "flask", "uvicorn", "fastapi"];

/// The child processes of `pid` (every thread's).
fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut found: Vec<i32> = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    found.sort_unstable();
    found
}

fn command_line(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .unwrap_or_default()
}

/// A free port on 127.0.0.1 (bound and let go: the server binds it next).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// One `GET path` over HTTP/1.0; the body of a `200` answer.
fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.lines().next()?;
    (status.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
}

/// Clients sending requests in a loop (each cycles through `paths`, pausing between
/// requests), counting answers and the worker pids `/pid` answered with.
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    pids: Arc<Mutex<BTreeSet<i32>>>,
    clients: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, paths: &'static [&'static str], clients: usize, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let pids = Arc::new(Mutex::new(BTreeSet::new()));
        let clients = (0..clients)
            .map(|k| {
                let (stop, answered, failed, pids) =
                    (stop.clone(), answered.clone(), failed.clone(), pids.clone());
                std::thread::spawn(move || {
                    for i in k.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let path = paths[i % paths.len()];
                        match get(port, path) {
                            Some(body) => {
                                answered.fetch_add(1, Ordering::Relaxed);
                                if path == "/pid"
                                    && let Ok(pid) = body.trim().parse()
                                {
                                    pids.lock().expect("pids").insert(pid);
                                }
                            }
                            None => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        std::thread::sleep(pause);
                    }
                })
            })
            .collect();
        Load {
            stop,
            answered,
            failed,
            pids,
            clients,
        }
    }

    fn pids(&self) -> BTreeSet<i32> {
        self.pids.lock().expect("pids").clone()
    }

    /// Stops the clients; `(answered, failed)`.
    fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients.drain(..) {
            let _ = client.join();
        }
        (
            self.answered.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients.drain(..) {
            let _ = client.join();
        }
    }
}

/// A server started through a shell (`sh -c '"$@"; true'`, which waits for it rather than
/// exec-ing it), as a user's start script does; killed with its whole tree when dropped.
struct Server {
    shell: Child,
    master: i32,
    workers: Vec<i32>,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `python -m MODULE ARGS…` of `venv` (`{port}` in an argument is the port) and
    /// waits until both of its workers have answered `/pid`.
    fn start(venv: &Interpreter, module: &str, args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("server.log");
        let port = free_port();
        let mut command = Command::new("sh");
        command
            .args(["-c", "\"$@\"; true", "sh"])
            .args(venv.argv())
            .args(["-m", module])
            .args(args.iter().map(|a| a.replace("{port}", &port.to_string())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the server's log"));
        let shell = command.spawn().expect("starting sh");
        let mut server = Server {
            master: 0,
            workers: Vec::new(),
            shell,
            port,
            log,
            _dir: dir,
        };
        server.wait_for_workers(venv);
        server
    }

    fn wait_for_workers(&mut self, venv: &Interpreter) {
        let shell = self.shell.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(90);
        let load = Load::start(self.port, &["/pid"], 2, Duration::from_millis(20));
        loop {
            if let Some(status) = self.shell.try_wait().expect("the shell's status") {
                panic!(
                    "{}: the server exited ({status}): {}",
                    venv.label,
                    self.log()
                );
            }
            self.master = children(shell).first().copied().unwrap_or(0);
            self.workers = children(self.master)
                .into_iter()
                .filter(|&pid| !command_line(pid).contains("resource_tracker"))
                .collect();
            let answered = load.pids();
            if self.workers.len() == 2 && self.workers.iter().all(|w| answered.contains(w)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: the server's two workers did not both answer in 90 s (workers {:?}, answered {answered:?}): {}",
                venv.label,
                self.workers,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn shell(&self) -> i32 {
        self.shell.id() as i32
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let shell = self.shell();
        let tree = pymemtrace::attach::descendant_pids(shell);
        for pid in std::iter::once(self.master).chain(tree) {
            if pid > 0 {
                // SAFETY: kill(2) on a process of the tree this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}

fn pmt_sample(args: &[&str]) -> Output {
    let mut command = common::sampler();
    command.args(args);
    common::run(command)
}

/// `pmt-sample --pid SHELL`: one line says the shell is not Python and names its Python
/// descendants (the master by its command line, each worker by its pid and `role`) and
/// `--subprocesses`.
fn check_shell(label: &str, server: &Server, role: &str) {
    let out = pmt_sample(&["--pid", &server.shell().to_string(), "--duration", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{label}: --pid SHELL: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("is not a Python process"))
        .unwrap_or_else(|| panic!("{label}: --pid SHELL: {stderr}"));
    let master = format!("{} (master: ", server.master);
    assert!(
        line.contains(&master) && line.contains("--subprocesses"),
        "{label}: --pid SHELL names the master and --subprocesses: {line}"
    );
    for worker in &server.workers {
        assert!(
            line.contains(&format!("{worker} ({role}")),
            "{label}: --pid SHELL names worker {worker} as {role}: {line}"
        );
    }
}

/// `pmt-sample --pid MASTER` alone: a line as the run starts and one in the summary name each
/// worker by its pid and `role`, and `--subprocesses`.
fn check_master_alone(label: &str, server: &Server, role: &str) {
    let out = pmt_sample(&[
        "--pid",
        &server.master.to_string(),
        "--duration",
        "1",
        "--metric",
        "cpu",
        "--no-heap",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{label}: --pid MASTER: {stderr}");
    for verb in ["will not be sampled", "were not sampled"] {
        let line = stderr
            .lines()
            .find(|l| l.contains(&format!("Python children that {verb}")))
            .unwrap_or_else(|| panic!("{label}: --pid MASTER: no '{verb}' line: {stderr}"));
        assert!(line.contains("--subprocesses"), "{label}: {line}");
        for worker in &server.workers {
            assert!(
                line.contains(&format!("{worker} ({role}")),
                "{label}: --pid MASTER names worker {worker} as {role}: {line}"
            );
        }
    }
}

/// `pmt-sample --pid MASTER --subprocesses --metric cpu [EXTRA]` for 3 s while two clients
/// request `paths` in turn: the folded stacks.
fn sample_tree(
    label: &str,
    server: &Server,
    extra: &[&str],
    paths: &'static [&'static str],
) -> Vec<(Vec<String>, u64)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let folded = dir.path().join("tree.folded");
    let load = Load::start(server.port, paths, 2, Duration::from_millis(2));
    let master = server.master.to_string();
    let mut args = vec!["--pid", &master, "--subprocesses", "--duration", "3"];
    args.extend(["--metric", "cpu", "--no-heap"]);
    args.extend(extra);
    args.push("--collapsed");
    args.push(folded.to_str().expect("a UTF-8 temp path"));
    let out = pmt_sample(&args);
    let (answered, failed) = load.stop();
    assert!(
        out.status.success(),
        "{label}: --pid MASTER --subprocesses failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        answered > 20,
        "{label}: {answered} requests answered, {failed} failed: {}",
        server.log()
    );
    common::read_folded(&folded)
}

/// Whether `frame` is `function (…/FILE:LINE)`.
fn is_frame_of(frame: &str, function: &str, file: &str) -> bool {
    frame.starts_with(&format!("{function} (")) && frame.contains(&format!("/{file}:"))
}

/// The CPU samples under a worker's root (`process PID: ROLE…`) whose stack runs `function`
/// of `file`: (total, of them with a `<task …>` frame right under the root).
fn under_worker(
    folded: &[(Vec<String>, u64)],
    worker: i32,
    role: &str,
    function: &str,
    file: &str,
) -> (u64, u64) {
    let root = format!("process {worker}: {role}");
    folded
        .iter()
        .filter(|(frames, _)| frames[0].starts_with(&root))
        .filter(|(frames, _)| frames.iter().any(|f| is_frame_of(f, function, file)))
        .fold((0, 0), |(all, tasks), (frames, weight)| {
            let in_task = frames.get(1).is_some_and(|f| f.starts_with("<task "));
            (all + weight, tasks + if in_task { *weight } else { 0 })
        })
}

/// The lines of `file` (in `bench/workloads/servers/`) that start with `text`, 1-based.
fn lines_starting(file: &str, text: &str) -> Vec<usize> {
    common::lines_starting(&Path::new(APPS).join(file), text)
}

const APPS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/workloads/servers");

/// gunicorn + Flask, two sync workers: `--pid SHELL`, `--pid MASTER` with and without
/// `--subprocesses`, and `pmt heap --diff` on a worker while `/leak` is requested.
fn check_gunicorn(label: &str) {
    let Some(venv) = common::package_venv_or_skip(label, PACKAGES) else {
        return;
    };
    let _serial = serial();
    let bind = "127.0.0.1:{port}";
    let args = ["-w", "2", "-b", bind, "--chdir", APPS, "leaky_flask:app"];
    let server = Server::start(&venv, "gunicorn", &args);
    check_shell(label, &server, "worker ");
    check_master_alone(label, &server, "worker ");

    let folded = sample_tree(label, &server, &[], &["/spin", "/pid"]);
    for worker in &server.workers {
        let (spin, _) = under_worker(&folded, *worker, "worker ", "spin", "leaky_flask.py");
        assert!(
            spin > 0,
            "{label}: no `spin` under process {worker}: worker N: {:?}",
            folded.iter().map(|(f, w)| (&f[0], w)).collect::<Vec<_>>()
        );
    }
    let master_root = format!("process {}: master", server.master);
    assert!(
        !folded
            .iter()
            .any(|(f, _)| f[0].starts_with(&master_root)
                && f.iter().any(|f| f.starts_with("spin ("))),
        "{label}: the master runs no handler"
    );

    check_who_grew(label, &server);
}

/// `pmt heap --pid WORKER --diff 10` while `/leak` is requested twenty times a second (from
/// when pmt starts, so that the list is empty at the first snapshot): the module-level list
/// `leaky_flask.KEEP` grew, and was grown by `remember` at its appending lines called from the
/// `leak` handler at its call.
fn check_who_grew(label: &str, server: &Server) {
    let appends = lines_starting("leaky_flask.py", "KEEP.append(");
    let calls = lines_starting("leaky_flask.py", "remember(len(KEEP))");
    assert!(appends.len() == 2 && calls.len() == 1, "the app's lines");
    let worker = server.workers[0].to_string();
    // Every /leak goes to the worker read: the other is stopped meanwhile (the kernel may
    // hand one worker all the connections for seconds; this one then kept nothing in the
    // window that picks what to watch). The master's worker timeout (30 s) is not reached.
    let other = server.workers[1];
    // SAFETY: signals to a process of the test's own server.
    unsafe { libc::kill(other, libc::SIGSTOP) };
    // The server has served no /leak yet: KEEP is empty, or holds the few items of the
    // first requests, when the first snapshot is read.
    let load = Load::start(server.port, &["/leak"], 1, Duration::from_millis(50));
    let (diff, report) = common::pmt_heap_json(label, &["--pid", &worker, "--diff", "10"]);
    let (answered, _) = load.stop();
    // SAFETY: as above.
    unsafe { libc::kill(other, libc::SIGCONT) };
    let keep = common::holder(&diff["growth"]["holders"], "leaky_flask.KEEP")
        .unwrap_or_else(|| panic!("{label}: KEEP did not grow ({answered} /leak): {report}"));
    // Listed in the first snapshot however little it held then.
    let (before, after) = (keep["items"][0].as_u64(), keep["items"][1].as_u64());
    assert!(
        before.zip(after).is_some_and(|(b, a)| a > b),
        "{label}: {keep}"
    );
    // Each /leak keeps a 256 KiB bytearray (its buffer counted, as `sys.getsizeof` does) and
    // a list of 1,000 strings.
    let retained = keep["retained_bytes"][1].as_u64().unwrap_or(0);
    let kept = after.unwrap_or(0) / 2;
    assert!(
        retained >= kept * (256 << 10),
        "{label}: KEEP retains {retained} bytes for {kept} /leak requests: {keep}"
    );
    let who = &diff["growth"]["who_grew"];
    let watched = common::holder(&who["holders"], "leaky_flask.KEEP")
        .unwrap_or_else(|| panic!("{label}: KEEP not watched: {who:#}"));
    assert!(watched["refused"].is_null(), "{label}: {watched:#}");
    let grown_by = watched["grown_by"].as_array().cloned().unwrap_or_default();
    let mut added = 0;
    for by in &grown_by {
        let stack: Vec<&str> = by["stack"]
            .as_array()
            .map(|s| s.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let at = |frame: &str, function: &str, lines: &[usize]| {
            lines.iter().any(|l| {
                frame.starts_with(function) && frame.ends_with(&format!("/leaky_flask.py:{l})"))
            })
        };
        assert!(
            stack.len() >= 2
                && at(stack[0], "remember (", &appends)
                && at(stack[1], "leak (", &calls),
            "{label}: KEEP grown by {stack:?}"
        );
        added += by["added"].as_u64().unwrap_or(0);
    }
    assert!(
        added >= 2,
        "{label}: {added} items added to KEEP while watched: {who:#}"
    );
    assert!(
        report.contains("leaky_flask.KEEP (list)")
            && report.contains("grown by remember (")
            && report.contains("← leak ("),
        "{label}: report:\n{report}"
    );
}

/// uvicorn + FastAPI, two workers: `--pid SHELL`, `--pid MASTER` alone, and `--pid MASTER
/// --subprocesses --async`: the `async def` endpoints' samples under their request's task in
/// each worker, the plain `def` one (run in the thread pool) under the worker.
fn check_uvicorn(label: &str) {
    let Some(venv) = common::package_venv_or_skip(label, PACKAGES) else {
        return;
    };
    let _serial = serial();
    let args = [
        "--workers",
        "2",
        "--port",
        "{port}",
        "--app-dir",
        APPS,
        "--log-level",
        "warning",
        "leaky_fastapi:app",
    ];
    let server = Server::start(&venv, "uvicorn", &args);
    check_shell(label, &server, "spawn child");
    check_master_alone(label, &server, "spawn child");

    let paths = &["/async_spin", "/async_rows", "/spin", "/pid"];
    let folded = sample_tree(label, &server, &["--async"], paths);
    let file = "leaky_fastapi.py";
    let (mut in_tasks, mut endpoint_samples) = (0, 0);
    for worker in &server.workers {
        let (spin, spin_in_task) = under_worker(&folded, *worker, "spawn child", "spin", file);
        assert!(
            spin > 0 && spin_in_task == 0,
            "{label}: plain-def `spin` in {worker}: {spin} samples, {spin_in_task} in a task"
        );
        let (all, tasks) = under_worker(&folded, *worker, "spawn child", "async_spin", file);
        assert!(
            tasks > 0,
            "{label}: no `async_spin` under a task in {worker} ({all} samples)"
        );
        let (rows, rows_in_tasks) =
            under_worker(&folded, *worker, "spawn child", "async_rows", file);
        in_tasks += tasks + rows_in_tasks;
        endpoint_samples += all + rows;
    }
    eprintln!(
        "{label}: {in_tasks} of {endpoint_samples} samples of the async endpoints under a task"
    );
    // A stack read at a tick goes to the running task if that task's coroutine is on it.
    assert!(
        in_tasks * 10 >= endpoint_samples * 9,
        "{label}: {in_tasks} of {endpoint_samples} samples of the async endpoints under a task"
    );
}

#[test]
fn gunicorn_on_3_12() {
    check_gunicorn("3.12");
}

#[test]
fn gunicorn_on_sid_3_14() {
    check_gunicorn("sid3.14");
}

#[test]
fn uvicorn_on_3_12() {
    check_uvicorn("3.12");
}

#[test]
fn uvicorn_on_sid_3_14() {
    check_uvicorn("sid3.14");
}
