//! `pmt-sample` against real CPython processes: ground-truth memory attribution (known call
//! sites, with and without a CPU-only bystander thread), attaching to a leaking HTTP server
//! under load, every interpreter version, outputs (SVG parsed, JSON re-rendered), signals and
//! errors.

mod common;

use common::{read_folded, repo, run, sampler, serial};

use common::Interpreter;
use pymemtrace::output::collapsed::{self, FoldOptions};
use pymemtrace::output::timeline;
use pymemtrace::sample::Metric;
use quick_xml::events::Event;
use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Total weight of the stacks that contain a frame of `function`.
fn weight_of(folded: &[(Vec<String>, u64)], function: &str) -> u64 {
    let prefix = format!("{function} (");
    folded
        .iter()
        .filter(|(frames, _)| frames.iter().any(|f| f.starts_with(&prefix)))
        .map(|(_, w)| w)
        .sum()
}

fn total(folded: &[(Vec<String>, u64)]) -> u64 {
    folded.iter().map(|(_, w)| w).sum()
}

/// Every text node of an SVG (entities decoded), failing on malformed XML.
fn svg_texts(path: &Path) -> Vec<String> {
    let svg = std::fs::read(path).expect("reading the SVG");
    let mut reader = quick_xml::Reader::from_reader(svg.as_slice());
    let mut texts = Vec::new();
    let mut current = String::new();
    let mut buffer = Vec::new();
    loop {
        match reader
            .read_event_into(&mut buffer)
            .expect("well-formed XML")
        {
            Event::Text(text) => current.push_str(&text.xml10_content().expect("text")),
            Event::GeneralRef(reference) => current.push_str(match reference.as_ref() {
                b"lt" => "<",
                b"gt" => ">",
                b"amp" => "&",
                b"quot" => "\"",
                _ => "'",
            }),
            Event::Eof => break,
            _ => {
                if !current.trim().is_empty() {
                    texts.push(std::mem::take(&mut current));
                }
                current.clear();
            }
        }
        buffer.clear();
    }
    texts
}

/// The JSON timeline, read back and folded, must equal the folded file.
fn assert_json_refolds(json: &Path, folded: &Path, options: FoldOptions) {
    let file = std::fs::File::open(json).expect("opening the timeline");
    let profile = timeline::read(file).expect("reading the timeline");
    let refolded: Vec<String> = collapsed::fold(&profile, options)
        .into_iter()
        .map(|(stack, weight)| format!("{stack} {weight}"))
        .collect();
    let written: Vec<String> = std::fs::read_to_string(folded)
        .expect("reading the folded output")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        refolded, written,
        "the timeline re-renders the same folded stacks"
    );
}

/// Reads the rest of the target's stdout and returns the `truth {json}` line's map.
fn read_truth(target: &mut common::Target) -> HashMap<String, i64> {
    let mut rest = String::new();
    target
        .stdout
        .read_to_string(&mut rest)
        .expect("reading the workload's output");
    let line = rest
        .lines()
        .find_map(|l| l.strip_prefix("truth "))
        .expect("the workload printed its ground truth");
    serde_json::from_str(line).expect("ground truth JSON")
}

/// How the ground-truth workload calls its sites.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// Each site as one block of back-to-back calls, no waiting.
    Phased,
    /// Calls interleaved at random; each waits 25 ms after allocating (simulated I/O), which
    /// is over two 100 Hz periods, so a late tick on a busy machine still finds it.
    InterleavedWithIo,
}

/// Where `pmt-sample` charges memory (`--attribution`), and how close each must come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Stacks captured in the kernel at page faults: each retaining site within 5% of what it
    /// kept, the CPU-only bystander under 1%.
    Kernel,
    /// Stacks read at each tick: each site's share of the retained growth within 25% of its
    /// true share, the bystander under 3%.
    Ticks,
}

impl Mode {
    fn flag(self) -> &'static str {
        match self {
            Mode::Kernel => "kernel",
            Mode::Ticks => "ticks",
        }
    }
}

/// Samples `retain_sites.py` by `--pid` until it exits and checks the attribution.
fn ground_truth(interp: &Interpreter, shape: Shape, bystander: bool, mode: Mode) {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let (folded, svg, json) = (
        dir.path().join("out.folded"),
        dir.path().join("out.svg"),
        dir.path().join("out.json"),
    );
    let script = repo().join("bench/workloads/retain_sites.py");
    let mut args = vec!["--start-delay", "1.5"];
    match shape {
        Shape::Phased => args.extend(["--phased", "--pause", "0"]),
        Shape::InterleavedWithIo => args.extend(["--pause", "0.025"]),
    }
    if bystander {
        args.push("--bystander");
    }
    let mut target = common::start(interp, &script, &args);
    target.wait_for_line("ready", Duration::from_secs(30));
    let mut command = sampler();
    command
        .args([
            "--pid",
            &target.pid().to_string(),
            "--metric",
            "rss",
            "--threads",
            "--attribution",
            mode.flag(),
        ])
        .arg("--collapsed")
        .arg(&folded)
        .arg("--flame")
        .arg(&svg)
        .arg("--json")
        .arg(&json);
    let output = run(command);
    assert!(output.status.success(), "pmt-sample failed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("target exited"),
        "says the target exited: {stderr}"
    );
    let truth = read_truth(&mut target);

    let stacks = read_folded(&folded);
    let all = total(&stacks);
    let buffers = weight_of(&stacks, "retain_buffers");
    let small = weight_of(&stacks, "retain_small_objects");
    let churn = weight_of(&stacks, "churn");
    let truth_buffers = truth["retain_buffers"] as f64;
    let truth_small = truth["retain_small_objects"] as f64;
    let retained = (buffers + small) as f64;
    for (site, charged, truth) in [
        ("retain_buffers", buffers, truth_buffers),
        ("retain_small_objects", small, truth_small),
    ] {
        let share = charged as f64 / retained;
        let truth_share = truth / (truth_buffers + truth_small);
        eprintln!(
            "{} {mode:?} {shape:?} {site}: charged {charged} ({share:.3}), truth {truth} ({truth_share:.3})",
            interp.label
        );
        match mode {
            Mode::Kernel => assert!(
                (charged as f64 / truth - 1.0).abs() < 0.05,
                "{}: {site} was charged {charged} bytes; it kept {truth}",
                interp.label
            ),
            Mode::Ticks => assert!(
                (share / truth_share - 1.0).abs() < 0.25,
                "{site} got {share:.3} of the retained growth; it retained {truth_share:.3}"
            ),
        }
    }
    if mode == Mode::Kernel {
        assert!(
            stderr.contains("charged to Python stacks captured in the kernel"),
            "the summary says how memory was charged: {stderr}"
        );
    }
    assert!(
        retained >= 0.75 * (truth_buffers + truth_small),
        "the retaining sites got {retained} of {} bytes",
        truth_buffers + truth_small
    );
    assert!(
        (churn as f64) < 0.05 * all as f64,
        "the transient site got {churn} of {all}"
    );
    if bystander {
        let burner: u64 = stacks
            .iter()
            .filter(|(frames, _)| frames[0].starts_with("thread bystander ("))
            .map(|(_, w)| w)
            .sum();
        eprintln!("bystander thread: {burner} of {all}");
        let limit = if mode == Mode::Kernel { 0.01 } else { 0.03 };
        assert!(
            (burner as f64) < limit * all as f64,
            "the CPU-only thread got {burner} of {all}"
        );
        assert!(
            stacks
                .iter()
                .any(|(frames, _)| frames[0].starts_with("thread MainThread (")),
            "threads are root frames"
        );
    }

    let texts = svg_texts(&svg).join("\n");
    assert!(texts.contains("Memory flamegraph: rss (resident memory growth)"));
    assert!(texts.contains(&format!("(pid {}", target.pid())));
    assert!(
        texts.contains("retain_buffers ("),
        "SVG shows the retaining frame"
    );
    assert_json_refolds(
        &json,
        &folded,
        FoldOptions {
            metric: Metric::Rss,
            threads: true,
        },
    );
}

#[test]
fn ground_truth_rss_single_thread() {
    if let Some(interp) = common::interpreter_or_skip("3.11") {
        ground_truth(&interp, Shape::Phased, false, Mode::Ticks);
        ground_truth(&interp, Shape::Phased, false, Mode::Kernel);
    }
}

#[test]
fn ground_truth_rss_ignores_a_cpu_only_thread() {
    if let Some(interp) = common::interpreter_or_skip("3.11") {
        ground_truth(&interp, Shape::Phased, true, Mode::Ticks);
    }
}

#[test]
fn ground_truth_rss_interleaved_request_handlers() {
    if let Some(interp) = common::interpreter_or_skip("3.11") {
        ground_truth(&interp, Shape::InterleavedWithIo, true, Mode::Ticks);
        ground_truth(&interp, Shape::InterleavedWithIo, true, Mode::Kernel);
    }
}

/// In-kernel stacks on every interpreter: phased sites beside the CPU-only bystander, each
/// site within 5% of what it kept; tick-based charging keeps its ground truth on the newest.
fn ground_truth_in_kernel(label: &str) {
    if let Some(interp) = common::interpreter_or_skip(label) {
        ground_truth(&interp, Shape::Phased, true, Mode::Kernel);
        if label.starts_with("sid3.1") && label != "sid3.13" {
            ground_truth(&interp, Shape::Phased, true, Mode::Ticks);
        }
    }
}

macro_rules! kernel_ground_truth_tests {
    ($($name:ident => $label:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                ground_truth_in_kernel($label);
            }
        )*
    };
}

kernel_ground_truth_tests! {
    ground_truth_in_kernel_3_6 => "3.6",
    ground_truth_in_kernel_3_7 => "3.7",
    ground_truth_in_kernel_3_8 => "3.8",
    ground_truth_in_kernel_3_9 => "3.9",
    ground_truth_in_kernel_3_10 => "3.10",
    ground_truth_in_kernel_3_11 => "3.11",
    ground_truth_in_kernel_3_12 => "3.12",
    ground_truth_in_kernel_3_13 => "3.13",
    ground_truth_in_kernel_debian_3_11 => "system3.11",
    ground_truth_in_kernel_sid_3_13 => "sid3.13",
    ground_truth_in_kernel_sid_3_14 => "sid3.14",
    ground_truth_in_kernel_sid_3_15 => "sid3.15",
}

/// One HTTP/1.0 GET on loopback; returns the status line.
fn get(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply.lines().next().unwrap_or_default().to_string())
}

#[test]
fn attach_to_a_leaking_http_server_under_load() {
    // Requests that wait 20 ms (threads live a few sampling periods), then requests that
    // wait for nothing (threads shorter than a tick, which only the kernel walker sees).
    leaking_http_server(Mode::Ticks, "20");
    leaking_http_server(Mode::Kernel, "20");
    leaking_http_server(Mode::Kernel, "0");
}

/// Attaches by `--pid` to a threaded HTTP server that keeps 256 KiB per `/leak` request
/// (each request on a new thread), under loopback load, and checks that every request is
/// answered and the leaking handler owns the growth (kernel: ≥ 90%, ticks: > 50%).
fn leaking_http_server(mode: Mode, work_ms: &str) {
    // 3.11 names functions by their qualified name (`Handler.do_GET`).
    let Some(interp) = common::interpreter_or_skip("3.11") else {
        return;
    };
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let folded = dir.path().join("server.folded");
    let script = repo().join("bench/workloads/leaky_server.py");
    let mut server = common::start(
        &interp,
        &script,
        &["--leak-kb", "256", "--work-ms", work_ms],
    );
    let mut line = String::new();
    server
        .stdout
        .read_line(&mut line)
        .expect("reading the server's port");
    let port: u16 = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .expect("`listening PORT`");

    let stop = std::sync::atomic::AtomicBool::new(false);
    let (answered, failed) = std::thread::scope(|scope| {
        let client = scope.spawn(|| {
            let (mut answered, mut failed) = (0u32, Vec::new());
            let started = Instant::now();
            // Bounded: at most 4000 requests or 20 s, and it stops once sampling is over.
            for i in 0..4000u32 {
                if stop.load(std::sync::atomic::Ordering::Relaxed)
                    || started.elapsed() > Duration::from_secs(20)
                {
                    break;
                }
                let path = if i % 2 == 0 { "/leak" } else { "/ok" };
                match get(port, path) {
                    Ok(status) if status.contains(" 200 ") => answered += 1,
                    Ok(status) => failed.push(status),
                    Err(err) => failed.push(err.to_string()),
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (answered, failed)
        });
        std::thread::sleep(Duration::from_millis(300));
        let mut command = sampler();
        command
            .args([
                "--pid",
                &server.pid().to_string(),
                "--duration",
                "3",
                "--rate",
                "200",
                "--attribution",
                mode.flag(),
            ])
            .arg("--collapsed")
            .arg(&folded);
        let output = run(command);
        assert!(output.status.success(), "pmt-sample failed");
        // Keep the load on a little after detaching: the server must go on answering.
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        client.join().expect("client thread")
    });
    assert!(failed.is_empty(), "requests failed: {failed:?}");
    assert!(answered > 100, "only {answered} requests answered");
    assert_eq!(
        get(port, "/ok").expect("after detaching").split(' ').nth(1),
        Some("200")
    );
    let stacks = read_folded(&folded);
    let leak = weight_of(&stacks, "Handler.do_GET");
    let all = total(&stacks);
    eprintln!("{mode:?}, requests waiting {work_ms} ms: leaking handler {leak} of {all}");
    assert!(all > 0, "growth was recorded");
    let least = if mode == Mode::Kernel { 0.9 } else { 0.5 };
    assert!(
        leak as f64 >= least * all as f64,
        "{mode:?}, requests waiting {work_ms} ms: the leaking handler owns {leak} of {all}"
    );
}

/// Launches `grow_here.py` under `label`'s interpreter with `-- CMD` and checks the flame of
/// its growth.
fn samples_version(label: &str) {
    let Some(interp) = common::interpreter_or_skip(label) else {
        return;
    };
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let folded = dir.path().join("v.folded");
    let svg = dir.path().join("v.svg");
    let script = repo().join("tests/scripts/grow_here.py");
    let mut command = sampler();
    command
        .args(["--rate", "200", "--metric", "rss", "--collapsed"])
        .arg(&folded)
        .arg("--flame")
        .arg(&svg)
        .arg("--")
        .args(interp.argv())
        .arg(&script)
        .args(["--mb", "30", "--start-delay", "0.5"])
        .stdout(Stdio::null());
    let output = run(command);
    assert!(output.status.success(), "pmt-sample failed on {label}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("target exited"), "{stderr}");
    assert!(
        stderr.contains("exited (exit status: 0)"),
        "the launched command ended by itself and was reaped: {stderr}"
    );
    let stacks = read_folded(&folded);
    let grow = weight_of(&stacks, "grow_here");
    let all = total(&stacks);
    assert!(
        grow >= 25 << 20,
        "{label}: grow_here owns {grow} bytes of the 30 MiB it kept"
    );
    // Launched, the interpreter's start-up (imports, site-packages) is sampled too.
    assert!(grow as f64 > 0.6 * all as f64, "{label}: {grow} of {all}");
    let main_frame = stacks
        .iter()
        .filter(|(frames, _)| frames.iter().any(|f| f.starts_with("grow_here (")))
        .all(|(frames, _)| {
            frames
                .iter()
                .any(|f| f.starts_with("main (") && f.contains("grow_here.py:"))
        });
    assert!(main_frame, "{label}: grow_here is called from main");
    assert!(svg_texts(&svg).iter().any(|t| t.starts_with("grow_here (")));
}

macro_rules! version_tests {
    ($($name:ident => $label:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                samples_version($label);
            }
        )*
    };
}

version_tests! {
    samples_cpython_3_6 => "3.6",
    samples_cpython_3_7 => "3.7",
    samples_cpython_3_8 => "3.8",
    samples_cpython_3_9 => "3.9",
    samples_cpython_3_10 => "3.10",
    samples_cpython_3_11 => "3.11",
    samples_cpython_3_12 => "3.12",
    samples_cpython_3_13 => "3.13",
    samples_debian_python_3_11 => "system3.11",
    samples_debian_sid_3_13 => "sid3.13",
    samples_debian_sid_3_14 => "sid3.14",
    samples_debian_sid_3_15 => "sid3.15",
}

/// A Python process that sleeps until killed.
fn sleeper(interp: &Interpreter) -> common::Target {
    let mut target = common::start(interp, &repo().join("tests/scripts/sleeper.py"), &[]);
    target.wait_for_line("ready", Duration::from_secs(30));
    target
}

#[test]
fn unwritable_output_fails_before_sampling() {
    let Some(interp) = common::interpreter_or_skip("3.11") else {
        return;
    };
    let target = sleeper(&interp);
    let mut command = sampler();
    command
        .args(["--pid", &target.pid().to_string(), "--duration", "1"])
        .args(["--flame", "/nonexistent-dir/x.svg"]);
    let output = run(command);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("cannot write --flame /nonexistent-dir/x.svg"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("sampling"),
        "fails before sampling: {stderr}"
    );
}

#[test]
fn a_process_that_is_not_python_is_named() {
    let mut sleep = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("starting sleep");
    let output = run({
        let mut c = sampler();
        c.args(["--pid", &sleep.id().to_string(), "--duration", "1"]);
        c
    });
    // Ending our own child; it only sleeps.
    let _ = sleep.kill();
    let _ = sleep.wait();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not a Python process"), "{stderr}");
}

#[test]
fn blocking_reads_sample_and_leave_the_target_running() {
    let Some(interp) = common::interpreter_or_skip("3.11") else {
        return;
    };
    let _serial = serial();
    let target = sleeper(&interp);
    let dir = tempfile::tempdir().expect("tempdir");
    let folded = dir.path().join("b.folded");
    let mut command = sampler();
    command
        .args([
            "--pid",
            &target.pid().to_string(),
            "--blocking",
            "--duration",
            "1",
        ])
        .args(["--metric", "wall", "--rate", "200", "--collapsed"])
        .arg(&folded);
    let output = run(command);
    assert!(output.status.success());
    assert!(weight_of(&read_folded(&folded), "<module>") > 50);
    // A profile of time samples time in the kernel, charges no memory there, and says so.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("time sampled in the kernel") && !stderr.contains("captured in the kernel"),
        "{stderr}"
    );
    let state = std::fs::read_to_string(format!("/proc/{}/stat", target.pid())).expect("stat");
    let state = state
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next());
    assert!(
        matches!(state, Some("S") | Some("R")),
        "target left in state {state:?}"
    );
}

/// Without `--rate`, a run whose memory is charged in the kernel reads stacks at 20 Hz (what
/// the kernel captured is still charged 100 times a second) and says why; one that weighs
/// time reads them at 100 Hz; `--rate` wins over both.
#[test]
fn the_default_rate_follows_what_the_ticks_are_for() {
    let Some(interp) = common::interpreter_or_skip("3.12") else {
        return;
    };
    let _serial = serial();
    let target = sleeper(&interp);
    let pid = target.pid().to_string();
    for (args, line, asked) in [
        (
            &["--no-heap"][..],
            "at 20 Hz for 0.3 s (memory captured in the kernel is charged 100 times a second; stacks need no higher rate: --rate to change)",
            "(asked 20)",
        ),
        (
            &["--metric", "wall"][..],
            "at 100 Hz for 0.3 s;",
            "on CPUs at 100 Hz a thread (",
        ),
        (&["--rate", "50"][..], "at 50 Hz for 0.3 s;", "(asked 50)"),
    ] {
        let mut command = sampler();
        command
            .args(["--pid", &pid, "--duration", "0.3"])
            .args(args);
        let output = run(command);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.contains(line) && stderr.contains(asked),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn no_such_process_is_one_clear_line() {
    let output = run({
        let mut c = sampler();
        c.args(["--pid", "2147483600"]);
        c
    });
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// SIGTERM and SIGINT stop the run and every output is still written.
#[test]
fn signals_stop_the_run_and_outputs_are_written() {
    let Some(interp) = common::interpreter_or_skip("3.11") else {
        return;
    };
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let target = sleeper(&interp);
        let dir = tempfile::tempdir().expect("tempdir");
        let (folded, json) = (dir.path().join("s.folded"), dir.path().join("s.json"));
        let mut child = sampler()
            .args(["--pid", &target.pid().to_string(), "--metric", "wall"])
            .arg("--collapsed")
            .arg(&folded)
            .arg("--json")
            .arg(&json)
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting pmt-sample");
        std::thread::sleep(Duration::from_millis(1500));
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
        let status = child.wait().expect("waiting for pmt-sample");
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            pipe.read_to_string(&mut stderr).expect("stderr");
        }
        eprintln!("{stderr}");
        assert!(status.success(), "signal {signal}: {status}");
        assert!(stderr.contains("interrupted"), "{stderr}");
        let stacks = read_folded(&folded);
        assert!(
            weight_of(&stacks, "<module>") > 0,
            "wall samples of the sleeper"
        );
        assert_json_refolds(
            &json,
            &folded,
            FoldOptions {
                metric: Metric::Wall,
                threads: false,
            },
        );
    }
}

/// A launched program that replaces itself (`exec`) with one that is not Python: the summary
/// names the new program on a line of its own (nothing can be sampled of it), the run ends
/// with it, and what was sampled before is kept.
#[test]
fn exec_into_a_program_without_python_is_named() {
    let Some(interp) = common::interpreter_or_skip("3.12") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let folded = dir.path().join("x.folded");
    let mut command = sampler();
    command
        .args([
            "--no-heap",
            "--attribution",
            "ticks",
            "--metric",
            "wall",
            "--collapsed",
        ])
        .arg(&folded)
        .arg("--")
        .args(interp.argv())
        .args([
            "-c",
            "import os, time\nend = time.monotonic() + 0.5\nwhile time.monotonic() < end: pass\n\
             os.execv('/bin/sleep', ['sleep', '0.5'])",
        ]);
    let output = run(command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("the program was replaced (exec) by /usr/bin/sleep, which runs no Python interpreter pmt can read"),
        "{stderr}"
    );
    assert!(
        read_folded(&folded)
            .iter()
            .any(|(stack, _)| stack.iter().any(|f| f.contains("<module>"))),
        "the samples before the exec are kept"
    );
}

/// The process's CPU time so far, in seconds (`utime + stime` of `/proc/PID/stat`).
fn process_cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .expect("fields")
        .split_whitespace()
        .collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based over the whole line).
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// `--metric cpu` and `--metric wall` are sampled in the kernel (each CPU's clock, and threads
/// as they leave a CPU): against ground truth (tests/scripts/time_threads.py), the spinning
/// thread's `cpu` is the process's CPU time at the rate asked, and each thread's `wall`
/// (spinning, napping 200 times a second, waiting from before the attach) is the run's length
/// at that rate.
#[test]
fn time_sampled_in_the_kernel_is_the_cpu_time_and_wall_clock() {
    let _serial = serial();
    for label in ["3.6", "3.12", "sid3.14"] {
        let Some(interp) = common::interpreter_or_skip(label) else {
            continue;
        };
        let mut target = common::start(&interp, &common::script("time_threads.py"), &[]);
        target.wait_for_line("READY", Duration::from_secs(30));
        let pid = target.pid();
        let dir = tempfile::tempdir().expect("tempdir");
        let rate = 200.0;
        for metric in ["cpu", "wall"] {
            let folded = dir.path().join(format!("{metric}.folded"));
            let mut command = sampler();
            command
                .args([
                    "--pid",
                    &pid.to_string(),
                    "--duration",
                    "2",
                    "--rate",
                    "200",
                ])
                .args(["--metric", metric, "--collapsed"])
                .arg(&folded);
            let cpu_before = process_cpu_seconds(pid);
            let started = Instant::now();
            let output = run(command);
            let elapsed = started.elapsed().as_secs_f64();
            let cpu = process_cpu_seconds(pid) - cpu_before;
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "{label} {metric}: {stderr}");
            assert!(stderr.contains("taken in the kernel"), "{label}: {stderr}");
            let stacks = read_folded(&folded);
            let within =
                |got: u64, want: f64, share: f64| (got as f64 - want).abs() <= share * want;
            match metric {
                "cpu" => {
                    // The process's CPU time over the whole command (start-up included), as
                    // a share of a CPU, over the 2 s sampled: the spinning thread is all of
                    // it but the naps' wake-ups, and spins at a steady share.
                    let spin = weight_of(&stacks, "spin");
                    let want = cpu / elapsed * 2.0 * rate;
                    assert!(
                        within(total(&stacks), want, 0.12),
                        "{label}: {} cpu samples for {cpu:.2} s of CPU in {elapsed:.2} s ({want:.0} expected in 2 s at {rate} Hz): {stacks:?}",
                        total(&stacks)
                    );
                    assert!(
                        spin as f64 >= 0.9 * total(&stacks) as f64
                            && weight_of(&stacks, "main_wait") == 0,
                        "{label}: {stacks:?}"
                    );
                }
                _ => {
                    // The run lasts 2 s of the command's `elapsed` (which adds its start-up).
                    for function in ["spin", "nap", "main_wait"] {
                        let got = weight_of(&stacks, function);
                        assert!(
                            within(got, 2.0 * rate, 0.1),
                            "{label}: {function} has {got} wall samples for 2 s at {rate} Hz ({elapsed:.2} s in all): {stacks:?}"
                        );
                    }
                }
            }
        }
    }
}
