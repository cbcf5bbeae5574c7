"""Benchmark: target slowdown under pymemtrace's eBPF allocator counters, beside bpftrace on the
same probes and memray, on one allocation-heavy workload, in one run.

Run as root from the repository root (or `bash bench/run.sh malloc_counters`):
    python3 bench/malloc_counters.py [--repeats 5] [--rounds 1000000] [--python PATH]
Builds the driver (`cargo build --release --example malloc_counters`), then runs every
configuration REPEATS times, interleaved, and writes bench/results/malloc_counters.md.

Configurations (the workload times only its own allocation loop, after attach):
  baseline          nothing attached
  counters-libc     pymemtrace counters, libc allocation probes (what --metric malloc-* uses)
  counters-libc+frees   the same plus free()
  counters-python   pymemtrace counters with --python-allocators (no frees)
  bpftrace          dtrace/malloc_per_thread.bt: the same six libc probes, per-thread maps
  memray            `memray run` (in-process allocation tracking) on the same script
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOAD = os.path.join(ROOT, "bench", "workloads", "alloc_heavy.py")
DRIVER = os.path.join(ROOT, "target", "release", "examples", "malloc_counters")
BPFTRACE_SCRIPT = os.path.join(ROOT, "dtrace", "malloc_per_thread.bt")
RESULTS = os.path.join(ROOT, "bench", "results", "malloc_counters.md")
MEMRAY = shutil.which("memray") or "/opt/peers/bin/memray"


def start_workload(python, rounds):
    proc = subprocess.Popen(
        [python, WORKLOAD, str(rounds), "--wait"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def run_attached(python, rounds, attacher_cmd, ready_stream, ready_marker):
    """Starts the workload, attaches, times the loop; returns (elapsed, attacher stdout)."""
    target = start_workload(python, rounds)
    cmd = [a.replace("{pid}", str(target.pid)) for a in attacher_cmd]
    attacher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stream = attacher.stderr if ready_stream == "stderr" else attacher.stdout
    while True:
        line = stream.readline()
        if not line:
            target.kill()
            raise RuntimeError("%s did not attach: %s" % (cmd[0], attacher.stderr.read()))
        if ready_marker in line:
            break
    target.stdin.write("go\n")
    target.stdin.flush()
    result = json.loads(target.stdout.readline())
    target.stdin.close()
    target.wait()
    out, _ = attacher.communicate(timeout=120)
    return result["elapsed"], out


def run_baseline(python, rounds):
    target = start_workload(python, rounds)
    target.stdin.write("go\n")
    target.stdin.flush()
    result = json.loads(target.stdout.readline())
    target.stdin.close()
    target.wait()
    return result["elapsed"], ""


def run_memray(python, rounds):
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [MEMRAY, "run", "--force", "-q", "-o", os.path.join(tmp, "capture.bin"),
             WORKLOAD, str(rounds)],
            check=True, capture_output=True, text=True,
        ).stdout
    line = [l for l in out.splitlines() if l.startswith("{")][-1]
    return json.loads(line)["elapsed"], ""


def driver_report(driver_output):
    return json.loads(driver_output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1000000)
    beside_memray = os.path.join(os.path.dirname(MEMRAY), "python3")
    parser.add_argument("--python",
                        default=beside_memray if os.path.exists(beside_memray) else sys.executable,
                        help="target interpreter (default: the one memray runs under, so that"
                             " every row runs the same interpreter)")
    args = parser.parse_args()

    subprocess.run(["cargo", "build", "--release", "--example", "malloc_counters"],
                   cwd=ROOT, check=True)
    configs = {
        "baseline": lambda: run_baseline(args.python, args.rounds),
        "counters-libc": lambda: run_attached(
            args.python, args.rounds, [DRIVER, "--pid", "{pid}"], "stderr", "attached"),
        "counters-libc+frees": lambda: run_attached(
            args.python, args.rounds, [DRIVER, "--pid", "{pid}", "--frees"], "stderr", "attached"),
        "counters-python": lambda: run_attached(
            args.python, args.rounds, [DRIVER, "--pid", "{pid}", "--python-allocators"],
            "stderr", "attached"),
    }
    if shutil.which("bpftrace"):
        configs["bpftrace"] = lambda: run_attached(
            args.python, args.rounds, ["bpftrace", "-B", "line", BPFTRACE_SCRIPT, "{pid}"],
            "stdout", "Ctrl-C to stop")
    if os.path.exists(MEMRAY):
        configs["memray"] = lambda: run_memray(args.python, args.rounds)

    times = {name: [] for name in configs}
    calls = {name: [] for name in configs}
    read_us = []
    for repeat in range(args.repeats):
        for name, run in configs.items():
            elapsed, out = run()
            times[name].append(elapsed)
            if name.startswith("counters"):
                report = driver_report(out)
                calls[name].append(sum(t["calls"] for t in report["threads"].values()))
                read_us.append(report["read_mean_us"])
            print("repeat %d %-16s %.3f s" % (repeat + 1, name, elapsed), file=sys.stderr)

    base = statistics.median(times["baseline"])
    rows = []
    for name in configs:
        med = statistics.median(times[name])
        counted, per_call = "", ""
        if calls[name]:
            n = statistics.median(calls[name])
            counted = "%d" % n
            per_call = "%.2f" % ((med - base) / n * 1e6)
        rows.append("| %s | %.3f | %.3f | %.2fx | %s | %s |" % (
            name, med, min(times[name]), med / base, counted, per_call))
    load = os.getloadavg()
    python_version = subprocess.run([args.python, "--version"], capture_output=True,
                                    text=True).stdout.strip()
    text = "\n".join([
        "# eBPF malloc counters: target slowdown",
        "",
        "Written by `python3 bench/malloc_counters.py --repeats %d --rounds %d` on %s UTC."
        % (args.repeats, args.rounds,
           datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")),
        "",
        "Workload: `bench/workloads/alloc_heavy.py` (%d rounds; each makes a 1-5 KiB bytearray and"
        " a 200-item list, which go to libc malloc, and a small dict, string and tuple, which"
        " pymalloc serves), self-timed after the tracer attached. Target: %s (%s)."
        % (args.rounds, args.python, python_version),
        "Machine: %s, kernel %s, %d CPUs, load average %.1f %.1f %.1f at the end (shared with"
        " other builds: figures are noisy)." % (platform.machine(), platform.release(),
                                               os.cpu_count(), *load),
        "",
        "| configuration | median s | min s | slowdown (median / baseline median) |"
        " allocation calls counted | added µs per counted call |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "Configurations: baseline = nothing attached; counters-libc = pymemtrace's counters on"
        " libc's malloc, calloc, realloc, posix_memalign, aligned_alloc/memalign"
        " (`--metric malloc-*`); counters-libc+frees = the same plus free (`frees: true`);"
        " counters-python = counters-libc plus CPython's allocator (`--python-allocators`);"
        " bpftrace = `dtrace/malloc_per_thread.bt`, the same six libc"
        " probes (free included) with per-thread bpftrace maps, at function entry (pymemtrace moves"
        " a probe past leading flag-only instructions onto one the kernel emulates, see"
        " src/memory/malloc/targets.rs); memray = `memray run` on the same script"
        " (in-process hooks, writes a capture file).",
        "",
        "One read of the per-thread map by the sampler (`MallocCounters::read`, every 10 ms"
        " here, map of 1-2 threads): median of the runs' mean %.1f µs." % statistics.median(read_us),
        "",
        "Reading: a uprobe costs a trap per hit whatever the BPF program does, so the slowdown is"
        " about 1 + (probe hits per second of the target) x (added µs per call above). This"
        " workload makes about a million libc allocations per second of baseline time, far more"
        " than most programs; the 1.3x goal for libc probes holds up to roughly"
        " 0.3 / (added µs per call) million allocator calls per second.",
        "",
    ])
    if "memray" in times and statistics.median(times["memray"]) < base:
        text += ("\nmemray's median came out below the baseline's in this run; why (its allocator"
                 " hooks changing glibc's behaviour, or noise) was not investigated.\n")
    with open(RESULTS, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
