//! Attaches the eBPF allocator counters to a running process and prints its per-thread totals.
//!
//! A driver for the benchmark (`bench/malloc_counters.py`) and the probe-cleanup tests: the
//! counters alone, without stack sampling (`pmt-sample --metric malloc-bytes` adds the stacks).
//!
//!     cargo run --release --example malloc_counters -- --pid PID [--python-allocators] [--frees]
//!         [--interval-ms 10] [--duration SECS]
//!
//! Prints `attached N probes` on stderr once counting, reads the map every interval (as the
//! sampler's ticks would), and when the target exits (or the duration ends) prints one JSON
//! object: `{"threads": {"TID": {"calls":..,"bytes":..,"frees":..,...}}, "reads": N,
//! "read_mean_us": mean duration of one read, "lost": N}`.

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use pymemtrace::memory::malloc::{MallocCounters, MallocOptions};

#[derive(Parser)]
struct Args {
    /// Process to count.
    #[arg(long)]
    pid: i32,
    /// Also count CPython's object allocator.
    #[arg(long)]
    python_allocators: bool,
    /// Also count frees.
    #[arg(long)]
    frees: bool,
    /// Milliseconds between map reads.
    #[arg(long, default_value_t = 10)]
    interval_ms: u64,
    /// Stop after this many seconds (default: when the target exits).
    #[arg(long)]
    duration: Option<f64>,
}

/// The target is gone or a zombie.
fn target_exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(true),
        Err(_) => !Path::new(&format!("/proc/{pid}")).exists(),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let options = MallocOptions {
        python_allocators: args.python_allocators,
        frees: args.frees,
    };
    let mut counters = MallocCounters::attach(args.pid, &options)?;
    eprintln!("attached {} probes", counters.probes().len());
    let start = Instant::now();
    let mut reads = 0u64;
    let mut read_time = Duration::ZERO;
    let mut totals = counters.read()?;
    loop {
        if target_exited(args.pid)
            || args
                .duration
                .is_some_and(|d| start.elapsed().as_secs_f64() >= d)
        {
            break;
        }
        sleep(Duration::from_millis(args.interval_ms));
        let before = Instant::now();
        totals = counters.read()?;
        read_time += before.elapsed();
        reads += 1;
    }
    totals.extend(counters.read()?);
    let threads: serde_json::Map<String, serde_json::Value> = totals
        .iter()
        .map(|(tid, t)| {
            let value = serde_json::json!({
                "calls": t.calls, "bytes": t.bytes, "frees": t.frees,
                "python_calls": t.python_calls, "python_bytes": t.python_bytes,
                "python_frees": t.python_frees,
            });
            (tid.to_string(), value)
        })
        .collect();
    let report = serde_json::json!({
        "threads": threads,
        "reads": reads,
        "read_mean_us": read_time.as_secs_f64() * 1e6 / reads.max(1) as f64,
        "lost": counters.lost_events()?,
    });
    println!(
        "{}",
        serde_json::to_string(&report).context("encoding totals")?
    );
    Ok(())
}
