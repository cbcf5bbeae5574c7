//! Benchmark: the cost of one full stack read of a thread 50 Python frames deep, per CPython
//! here (p50/p99 in microseconds), and `pmt dump` beside `py-spy dump` as whole commands on
//! the same target in the same run. Writes `bench/results/stack_read.md`.
//!
//! Run: `bash bench/run.sh stack_read` (installs py-spy into bench/.venv first).

#[path = "../tests/common/mod.rs"]
mod common;

use pymemtrace::python::{PythonSpy, SpyOptions};
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEPTH: &str = "50";
const READS: usize = 20_000;
const COMMAND_RUNS: usize = 40;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn time_reads(spy: &mut PythonSpy) -> (f64, f64, usize) {
    let mut depth = 0;
    for _ in 0..200 {
        let stacks = spy.read_stacks().expect("warm-up read");
        depth = stacks.iter().map(|s| s.frames.len()).max().unwrap_or(0);
    }
    let mut micros = Vec::with_capacity(READS);
    for _ in 0..READS {
        let start = Instant::now();
        let stacks = spy.read_stacks().expect("read");
        micros.push(start.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(stacks);
    }
    micros.sort_by(f64::total_cmp);
    (percentile(&micros, 0.5), percentile(&micros, 0.99), depth)
}

fn time_command(program: &str, args: &[&str]) -> Option<(f64, f64)> {
    let mut millis = Vec::new();
    for _ in 0..COMMAND_RUNS {
        let start = Instant::now();
        let status = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        if !status.success() {
            return None;
        }
        millis.push(start.elapsed().as_secs_f64() * 1e3);
    }
    millis.sort_by(f64::total_cmp);
    Some((percentile(&millis, 0.5), percentile(&millis, 0.99)))
}

fn main() {
    let pmt = env!("CARGO_BIN_EXE_pmt");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/workloads/deep_stack.py");
    let mut report = String::from(
        "# Stack read cost\n\nOne full `read_stacks()` of a process whose main thread is 50 Python frames deep \
         (`bench/workloads/deep_stack.py`), running (non-blocking read); then `pmt dump` and `py-spy dump` \
         as whole commands on the same target.\n\n\
         | CPython | frames | read p50 (µs) | read p99 (µs) | `pmt dump` p50 / p99 (ms) | `py-spy dump` p50 / p99 (ms) |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    for label in common::LABELS {
        let Some(interp) = common::find(label) else {
            println!("{label}: not installed, skipped");
            continue;
        };
        let mut target = common::start(&interp, &script, &[DEPTH, "600"]);
        target.wait_for_line("READY", Duration::from_secs(30));
        let pid = target.pid().to_string();
        let mut spy = PythonSpy::attach(target.pid(), &SpyOptions::default()).expect("attach");
        let (p50, p99, depth) = time_reads(&mut spy);
        let pmt_cmd = time_command(pmt, &["dump", "--pid", &pid]);
        let pyspy_cmd = time_command("py-spy", &["dump", "--pid", &pid]);
        let fmt = |t: Option<(f64, f64)>| {
            t.map_or("failed".to_string(), |(a, b)| format!("{a:.2} / {b:.2}"))
        };
        let line = format!(
            "| {} {} | {depth} | {p50:.1} | {p99:.1} | {} | {} |\n",
            label,
            spy.version(),
            fmt(pmt_cmd),
            fmt(pyspy_cmd)
        );
        print!("{line}");
        report.push_str(&line);
    }
    let _ = writeln!(
        report,
        "\nMachine: {} cores. Command: `bash bench/run.sh stack_read`.",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results/stack_read.md");
    std::fs::write(&out, report).expect("writing the report");
    println!("wrote {}", out.display());
}
