#!/usr/bin/env python3
"""Sampler overhead benchmark: how much a profiler attached with --pid slows a CPU-bound
pure-Python target (bench/workloads/cpu_bound.py, which times its own work), how much CPU the
profiler itself uses, and pmt-sample's per-sample cost. Side by side in one run: no profiler,
pmt-sample at 100 Hz and 1000 Hz, py-spy record (nonblocking, like pmt-sample's default) at the
same rates, and austin -m at 1 ms. Each configuration runs --repeats times; medians are reported.

Writes bench/results/sampler_overhead.md.
Usage: python3 bench/sampler_overhead.py [--python PATH] [--repeats 5] [--iterations 6000000]
Needs a release build: cargo build --release. Peers are looked up on PATH, then in /opt/peers/bin.
"""

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = "/opt/peers/bin"


def peer(name):
    """A peer profiler: from PATH (bench/run.sh puts bench/.venv/bin first), else /opt/peers/bin."""
    return shutil.which(name) or os.path.join(PEERS, name)


def configs(out_dir):
    pmt = os.path.join(ROOT, "target", "release", "pmt-sample")
    folded = os.path.join(out_dir, "bench.folded")
    return [
        ("no profiler", None),
        ("pmt-sample 100 Hz", lambda pid: [pmt, "--pid", str(pid), "--rate", "100", "--metric", "cpu", "--collapsed", folded]),
        ("pmt-sample 1000 Hz", lambda pid: [pmt, "--pid", str(pid), "--rate", "1000", "--metric", "cpu", "--collapsed", folded]),
        ("py-spy 100 Hz", lambda pid: [peer("py-spy"), "record", "--pid", str(pid), "--rate", "100", "--nonblocking", "--format", "raw", "-o", folded]),
        ("py-spy 1000 Hz", lambda pid: [peer("py-spy"), "record", "--pid", str(pid), "--rate", "1000", "--nonblocking", "--format", "raw", "-o", folded]),
        ("austin -m 1000 Hz", lambda pid: [peer("austin"), "-m", "-i", "1000", "-p", str(pid), "-o", folded]),
    ]


def run_once(python, iterations, make_cmd):
    target = subprocess.Popen(
        [python, os.path.join(ROOT, "bench", "workloads", "cpu_bound.py"), "--iterations", str(iterations), "--start-delay", "1.0"],
        stdout=subprocess.PIPE, text=True)
    assert target.stdout.readline().strip() == "ready"
    prof = None
    started = time.monotonic()
    if make_cmd is not None:
        prof = subprocess.Popen(make_cmd(target.pid), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = target.stdout.readline()
    target.wait()
    fields = line.split()
    elapsed = (float(fields[1]), float(fields[3]))
    cpu, cost = None, (None, None)
    if prof is not None:
        _, status, usage = os.wait4(prof.pid, 0)
        prof.returncode = status
        stderr = prof.stderr.read()
        cpu = (usage.ru_utime + usage.ru_stime) / (time.monotonic() - started)
        m = re.search(r"cost per sample: p50 ([\d.]+) µs, p99 ([\d.]+) µs", stderr)
        if m:
            cost = (float(m.group(1)), float(m.group(2)))
    return elapsed, cpu, cost


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--python", default="/root/.pyenv/versions/3.11.7/bin/python3.11")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=6000000)
    args = parser.parse_args()
    out_dir = os.path.join(ROOT, "bench", "results")
    os.makedirs(out_dir, exist_ok=True)
    scratch = os.path.join("/tmp", "pmt_bench_%d" % os.getpid())
    os.makedirs(scratch, exist_ok=True)
    results = {}
    plan = configs(scratch)
    # Interleave configurations so that machine noise spreads evenly over them.
    for r in range(args.repeats):
        for name, make_cmd in plan:
            if make_cmd is not None and not os.path.exists(make_cmd(0)[0]):
                continue
            results.setdefault(name, []).append(run_once(args.python, args.iterations, make_cmd))
            e = results[name][-1]
            print("repeat %d %-20s elapsed %.3f s cpu %.3f s profiler cpu %s cost %s" % (r + 1, name, e[0][0], e[0][1], e[1], e[2]), file=sys.stderr)
    base_wall = min(e[0] for e, _, _ in results["no profiler"])
    base_cpu = statistics.median(e[1] for e, _, _ in results["no profiler"])
    rows = []
    for name, _ in plan:
        if name not in results:
            rows.append("| %s | not installed | | | |" % name)
            continue
        runs = results[name]
        wall = min(e[0] for e, _, _ in runs)
        cpu_time = statistics.median(e[1] for e, _, _ in runs)
        slowdown_wall = 100.0 * (wall / base_wall - 1.0)
        slowdown_cpu = 100.0 * (cpu_time / base_cpu - 1.0)
        cpus = [c for _, c, _ in runs if c is not None]
        cpu = "%.1f %%" % (100.0 * statistics.median(cpus)) if cpus else "—"
        p50s = [c[0] for _, _, c in runs if c[0] is not None]
        p99s = [c[1] for _, _, c in runs if c[1] is not None]
        cost = "%.1f / %.1f µs" % (statistics.median(p50s), statistics.median(p99s)) if p50s else "—"
        rows.append("| %s | %.3f s (%+.1f %%) | %.3f s (%+.1f %%) | %s | %s |" % (name, wall, slowdown_wall, cpu_time, slowdown_cpu, cpu, cost))
    with open(os.path.join(out_dir, "sampler_overhead.md"), "w") as f:
        f.write("# Sampler overhead\n\n")
        f.write("Written by `python3 bench/sampler_overhead.py --repeats %d --iterations %d` on %s (%s, %d cores, %s), target %s.\n\n"
                % (args.repeats, args.iterations, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), platform.machine(), os.cpu_count(), platform.release(), args.python))
        f.write("The target (`bench/workloads/cpu_bound.py`) times its own pure-Python work; each profiler attaches by pid before the work starts. "
                "Slowdown: the target's best wall time of the runs, and its median CPU time (less sensitive to other load), each against the same figure without a profiler. Profiler CPU: its user+system time over its own lifetime (attach, sampling, writing; %% of one core). "
                "Per-sample cost: pmt-sample's own measurement (counters + stack read + attribution + aggregation), median over runs of each run's p50 / p99. "
                "py-spy runs with `--nonblocking` (like pmt-sample's default). The machine is shared with other builds "
                "(load average %s at the end): differences of a few percent are noise.\n\n" % " / ".join("%.1f" % x for x in os.getloadavg()))
        f.write("| profiler | target wall, best of %d (slowdown) | target CPU time, median (slowdown) | profiler CPU | per-sample cost p50 / p99 |\n" % args.repeats)
        f.write("|---|---|---|---|---|\n")
        f.write("\n".join(rows) + "\n")
    print(open(os.path.join(out_dir, "sampler_overhead.md")).read())


if __name__ == "__main__":
    main()
