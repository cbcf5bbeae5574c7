//! Benchmark: the sampler's own CPU time per sample at 1000 Hz, on the same target (a thread
//! 50 Python frames deep, `bench/workloads/deep_stack.py`) in the same run, for `pmt-sample`
//! (`--metric wall`, whose time is sampled in the kernel, with the kernel's time in its BPF
//! programs beside; the same with `--attribution ticks`; and its defaults),
//! `py-spy record --nonblocking` and, on CPython 3.15, CPython's own sampler
//! (`python3.15 -m profiling.sampling attach`, run inside the sid chroot beside its target),
//! and on 3.15 per metric (`--metric cpu` beside the 3.15 sampler's `--mode cpu`).
//! CPU time is the sampler process's user + system time (`wait4` rusage), divided by the
//! samples it reports; the whole process is counted, start-up included.
//! Beside them, the floor any sampler at this rate pays on this machine, measured in the
//! same run by a thread of the benchmark itself: waking at 1000 Hz and doing nothing, and
//! waking and making the reads a tick cannot do without (one `process_vm_readv` of the 8
//! pages pmt-sample reads for this stack, the thread's `stat`, the process's `statm`).
//! Writes `bench/results/sampler_cost.md`.
//!
//! Run: `bash bench/run.sh sampler_cost` (installs py-spy into bench/.venv first).

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const SECONDS: &str = "10";
/// When the window of a run's steady CPU starts (its start-up is over by then).
const STEADY_FROM: f64 = 2.0;
const RATE: &str = "1000";
const RUNS: usize = 3;

/// The nanoseconds the kernel has spent in process `pid`'s BPF programs so far (the
/// `run_time_ns` of each program's fd, counted while `kernel.bpf_stats_enabled` is 1).
fn bpf_run_time_ns(pid: i32) -> u64 {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_to_string(fd.path()).ok())
        .filter(|info| info.contains("prog_type:"))
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("run_time_ns:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

/// The CPU time of process `pid`'s threads so far, in nanoseconds (`/proc/PID/task/*/schedstat`).
fn cpu_ns(pid: i32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// What a measured run took: its CPU seconds (the process and the children it waited for),
/// the time the kernel spent in its BPF programs (read just before its end), and its CPU in
/// the window from [`STEADY_FROM`] seconds to then, with the window's share of the run.
struct Measured {
    cpu: f64,
    bpf_ns: u64,
    window_cpu_ns: u64,
    window_share: f64,
}

/// Runs `command` to completion, for `seconds`; returns (stdout, stderr, what it took).
fn run_measured(mut command: Command, seconds: &str) -> Option<(String, String, Measured)> {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let pid = child.id() as libc::pid_t;
    let seconds: f64 = seconds.parse().unwrap_or(1.0);
    let window = std::thread::spawn(move || {
        let end = (seconds - 0.3).max(STEADY_FROM);
        std::thread::sleep(Duration::from_secs_f64(STEADY_FROM));
        let before = cpu_ns(pid);
        std::thread::sleep(Duration::from_secs_f64(end - STEADY_FROM));
        let after = cpu_ns(pid);
        (
            bpf_run_time_ns(pid),
            after.saturating_sub(before),
            (end - STEADY_FROM) / seconds,
        )
    });
    let output_thread = std::thread::spawn(move || {
        let mut child = child;
        let mut out = String::new();
        let mut err = String::new();
        use std::io::Read;
        if let Some(mut s) = child.stdout.take() {
            let _ = s.read_to_string(&mut out);
        }
        if let Some(mut s) = child.stderr.take() {
            let _ = s.read_to_string(&mut err);
        }
        (child, out, err)
    });
    let (child, out, err) = output_thread.join().ok()?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet reaped (std's Child never waited on it).
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    std::mem::forget(child);
    if reaped != pid {
        return None;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let (bpf_ns, window_cpu_ns, window_share) = window.join().unwrap_or((0, 0, 0.0));
    let measured = Measured {
        cpu: secs(usage.ru_utime) + secs(usage.ru_stime),
        bpf_ns,
        window_cpu_ns,
        window_share,
    };
    Some((out, err, measured))
}

/// The sum of the weights of a folded file.
fn folded_samples(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

/// `pmt-sample` with `--metric wall` (the folded weights are the samples), or with its defaults
/// (`metric` None: rss, kernel attribution, the allocation hook on 3.14+; the samples are the
/// summary's count, as nothing may be charged to rss); `extra` arguments after. With the
/// samples and pmt-sample's CPU, the nanoseconds the kernel spent in its BPF programs.
fn pmt_sample(
    pid: &str,
    dir: &Path,
    metric: Option<&str>,
    extra: &[&str],
) -> Option<(u64, Measured)> {
    let seconds = SECONDS;
    let folded = dir.join("pmt.folded");
    let mut command = Command::new(env!("CARGO_BIN_EXE_pmt-sample"));
    if let Some(metric) = metric {
        command.args(["--metric", metric]);
    }
    command.args(extra);
    command
        .args(["--rate", RATE, "--duration", seconds])
        .arg("--collapsed")
        .arg(&folded)
        .args(["--pid", pid]);
    let (_, err, measured) = run_measured(command, seconds)?;
    let samples = match metric {
        Some(_) => folded_samples(&folded),
        None => summary_samples(&err)?,
    };
    Some((samples, measured))
}

/// A run's CPU per sample past its start-up: its CPU in the steady window over the samples
/// of the window (the run's, by the window's share of it: the target's thread is sampled at
/// an even rate).
fn steady_cell(result: &Option<(u64, Measured)>) -> String {
    match result {
        Some((samples, m)) if *samples > 0 && m.window_share > 0.0 => {
            let in_window = *samples as f64 * m.window_share;
            format!(
                "{:.1} µs ({:.3} s CPU in {:.1} s)",
                m.window_cpu_ns as f64 / 1e3 / in_window,
                m.window_cpu_ns as f64 / 1e9,
                m.window_share * SECONDS.parse::<f64>().unwrap_or(0.0)
            )
        }
        _ => "failed".to_string(),
    }
}

/// A pmt-sample result's samples and CPU, for [`cell`].
fn sampler_only(result: &Option<(u64, Measured)>) -> Option<(u64, f64)> {
    result.as_ref().map(|(samples, m)| (*samples, m.cpu))
}

/// The kernel's time in pmt-sample's BPF programs per sample (its programs on every CPU's
/// clock included, which return at once on other processes' ticks).
fn kernel_cell(result: &Option<(u64, Measured)>) -> String {
    match result {
        Some((samples, m)) if *samples > 0 && m.bpf_ns > 0 => {
            format!("{:.1} µs", m.bpf_ns as f64 / 1e3 / *samples as f64)
        }
        Some(_) => "not counted (kernel.bpf_stats_enabled is 0)".to_string(),
        None => "failed".to_string(),
    }
}

/// The `samples: N` count of a pmt-sample summary.
fn summary_samples(summary: &str) -> Option<u64> {
    summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("samples: "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn py_spy(pid: &str, dir: &Path) -> Option<(u64, f64)> {
    let raw = dir.join("py-spy.txt");
    let mut command = Command::new("py-spy");
    command
        .args([
            "record",
            "--nonblocking",
            "--rate",
            RATE,
            "--duration",
            SECONDS,
        ])
        .args(["--format", "raw", "-o"])
        .arg(&raw)
        .args(["--pid", pid]);
    let (_, _, Measured { cpu, .. }) = run_measured(command, SECONDS)?;
    Some((folded_samples(&raw), cpu))
}

/// CPython's own sampler, in its default mode (wall) or the one named.
fn cpython_sampler(
    interp: &common::Interpreter,
    pid: &str,
    dir: &Path,
    mode: Option<&str>,
) -> Option<(u64, f64)> {
    let folded = dir.join("cpython.folded");
    let mut command = interp.command();
    command
        .args([
            "-m",
            "profiling.sampling",
            "attach",
            "-r",
            RATE,
            "-d",
            SECONDS,
        ])
        .args(mode.map(|m| ["--mode", m]).into_iter().flatten())
        .args(["--collapsed", "-o"])
        .arg(&folded)
        .arg(pid);
    let (_, _, Measured { cpu, .. }) = run_measured(command, SECONDS)?;
    Some((folded_samples(&folded), cpu))
}

/// What a thread of this process spends, in CPU, waking at `RATE` Hz for `SECONDS` (absolute
/// deadlines on the monotonic clock, as pmt-sample sleeps) and, with `reads`, making at each
/// wake-up the reads no tick can skip: `PAGES` pages of `pid`'s memory at `address` in one
/// `process_vm_readv`, its main thread's `stat` and its `statm`. Returns (wake-ups, CPU s).
fn floor(pid: i32, address: u64, reads: bool) -> Option<(u64, f64)> {
    const PAGES: usize = 8;
    let rate: u64 = RATE.parse().ok()?;
    let seconds: u64 = SECONDS.parse().ok()?;
    let handle = std::thread::spawn(move || {
        use std::os::unix::fs::FileExt;
        let stat = std::fs::File::open(format!("/proc/{pid}/task/{pid}/stat")).ok()?;
        let statm = std::fs::File::open(format!("/proc/{pid}/statm")).ok()?;
        let mut pages = vec![0u8; PAGES * 4096];
        let mut text = [0u8; 4096];
        let thread_cpu = || {
            // SAFETY: an all-zero rusage is valid; getrusage fills it for the calling thread.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: a valid rusage pointer.
            unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
            let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            secs(usage.ru_utime) + secs(usage.ru_stime)
        };
        let mut deadline = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid timespec pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut deadline) };
        let start = thread_cpu();
        let wakeups = rate * seconds;
        for _ in 0..wakeups {
            deadline.tv_nsec += (1_000_000_000 / rate) as libc::c_long;
            if deadline.tv_nsec >= 1_000_000_000 {
                deadline.tv_nsec -= 1_000_000_000;
                deadline.tv_sec += 1;
            }
            // SAFETY: a valid timespec; no remainder is asked for with an absolute deadline.
            unsafe {
                libc::clock_nanosleep(
                    libc::CLOCK_MONOTONIC,
                    libc::TIMER_ABSTIME,
                    &deadline,
                    std::ptr::null_mut(),
                )
            };
            if reads {
                let local = libc::iovec {
                    iov_base: pages.as_mut_ptr().cast(),
                    iov_len: pages.len(),
                };
                let remote = libc::iovec {
                    iov_base: address as *mut libc::c_void,
                    iov_len: pages.len(),
                };
                // SAFETY: the local buffer is ours and as long as said; the remote side is
                // only read by the kernel, which checks it.
                unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
                let _ = stat.read_at(&mut text, 0);
                let _ = statm.read_at(&mut text, 0);
            }
        }
        Some((wakeups, thread_cpu() - start))
    });
    handle.join().ok()?
}

/// The start of the target's heap mapping (where its objects and frames' code lie).
fn heap_start(pid: i32) -> Option<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let line = maps.lines().find(|l| l.ends_with("[heap]"))?;
    u64::from_str_radix(line.split('-').next()?, 16).ok()
}

fn cell(result: Option<(u64, f64)>) -> String {
    match result {
        Some((samples, cpu)) if samples > 0 => format!(
            "{:.1} µs ({samples} samples, {:.2} s CPU)",
            cpu * 1e6 / samples as f64,
            cpu
        ),
        Some(_) => "no samples".to_string(),
        None => "failed".to_string(),
    }
}

fn main() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/workloads/deep_stack.py");
    // The kernel counts the time spent in BPF programs only while asked to.
    let stats_switch = "/proc/sys/kernel/bpf_stats_enabled";
    let stats_before = std::fs::read_to_string(stats_switch).unwrap_or_default();
    let _ = std::fs::write(stats_switch, "1");
    let mut report = format!(
        "# Sampler CPU per sample\n\n\
         Each sampler attached for {SECONDS} s at {RATE} Hz to the same process, whose main \
         thread runs 50 Python frames deep (`bench/workloads/deep_stack.py`), one after the other \
         in the same run; CPU per sample = the sampler's user+system time / the samples it \
         wrote (pmt-sample's defaults: the summary's sample count). {RUNS} runs each. \
         `pmt-sample --metric wall` (and `--metric cpu`) weighs time, which it samples in the \
         kernel (the default attribution, `auto`): a BPF program on each CPU's clock walks the \
         thread it interrupts, another walks threads as they leave a CPU, and pmt-sample drains \
         their events 10 times a second. That walk runs in the kernel, in the target's time, \
         not pmt-sample's: its column is the kernel's time in pmt-sample's BPF programs \
         (`run_time_ns` of their fds, with `kernel.bpf_stats_enabled`) per sample, the programs' \
         runs on the other CPU's ticks included. `--attribution ticks` samples time by reading \
         the stacks at each tick instead. `pmt-sample` with its defaults charges rss (kernel \
         attribution: the eBPF page-fault capture is loaded, its start-up included) and loads \
         the allocation hook into 3.14+ targets for the heap view. The floor columns are not \
         samplers: a thread of the benchmark wakes {RATE} times a second (CPU per wake-up), and \
         then also reads 8 pages of the target and its `stat` and `statm` (what one tick of one \
         thread cannot do without).\n\n\
         | CPython | run | floor: wake-up only | floor: wake-up + reads | `pmt-sample --metric wall` | the same past its start-up (its CPU from {STEADY_FROM} s on) | its BPF programs (kernel time) | `pmt-sample --metric wall --attribution ticks` | the same past its start-up | `pmt-sample` (defaults) | `py-spy record --nonblocking` | `python3.15 -m profiling.sampling attach` |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    );
    let mut cpu_rows = String::new();
    for label in ["3.12", "sid3.14", "sid3.15"] {
        let Some(interp) = common::find(label) else {
            println!("{label}: not installed, skipped");
            continue;
        };
        let mut target = common::start(&interp, &script, &["50", "600"]);
        target.wait_for_line("READY", Duration::from_secs(30));
        let pid = target.pid().to_string();
        let heap = heap_start(target.pid()).expect("the target's heap mapping");
        for run in 1..=RUNS {
            let dir = tempfile::tempdir_in("/tmp").expect("temp dir");
            let wake = floor(target.pid(), heap, false);
            let wake_read = floor(target.pid(), heap, true);
            let pmt = pmt_sample(&pid, dir.path(), Some("wall"), &[]);
            let pmt_ticks = pmt_sample(&pid, dir.path(), Some("wall"), &["--attribution", "ticks"]);
            let pmt_default = pmt_sample(&pid, dir.path(), None, &[]);
            let spy = py_spy(&pid, dir.path());
            let own = (label == "sid3.15")
                .then(|| cpython_sampler(&interp, &pid, dir.path(), None))
                .flatten();
            if label == "sid3.15" {
                let pmt_cpu = pmt_sample(&pid, dir.path(), Some("cpu"), &[]);
                cpu_rows.push_str(&format!(
                    "| {run} | {} | {} | {} |\n",
                    cell(sampler_only(&pmt_cpu)),
                    kernel_cell(&pmt_cpu),
                    cell(cpython_sampler(&interp, &pid, dir.path(), Some("cpu")))
                ));
            }
            let line = format!(
                "| {label} | {run} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                cell(wake),
                cell(wake_read),
                cell(sampler_only(&pmt)),
                steady_cell(&pmt),
                kernel_cell(&pmt),
                cell(sampler_only(&pmt_ticks)),
                steady_cell(&pmt_ticks),
                cell(sampler_only(&pmt_default)),
                cell(spy),
                if label == "sid3.15" {
                    cell(own)
                } else {
                    "(3.15 only)".to_string()
                }
            );
            print!("{line}");
            report.push_str(&line);
        }
    }
    if !cpu_rows.is_empty() {
        let _ = write!(
            report,
            "\nPer metric on sid 3.15, same target, same runs: CPU time (the thread on a CPU).\n\n\
             | run | `pmt-sample --metric cpu` | its BPF programs (kernel time) | `python3.15 -m profiling.sampling attach --mode cpu` |\n\
             | --- | --- | --- | --- |\n{cpu_rows}"
        );
    }
    let _ = writeln!(
        report,
        "\nMachine: {} cores. Command: `bash bench/run.sh sampler_cost`.",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = std::fs::write(stats_switch, stats_before.trim());
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results/sampler_cost.md");
    std::fs::write(&out, report).expect("writing the report");
    println!("wrote {}", out.display());
}
