#!/usr/bin/env python3
"""Benchmark: what the in-kernel stacks cost the target, per page fault and per allocation sample.

A timed loop in bench/workloads/kernel_cost.py (20 Python frames deep, CPython 3.12 from pyenv)
runs with nothing attached, under `pmt-sample --pid` in each configuration, and under `memray run`
(the peer, which records every allocation in process); configurations take turns, --repeats
rounds, medians compared. Cost per event = (loop time under the tool - loop time alone) / events.

  faults-same   N fresh pages touched from one line: each fault after the first reuses the
                thread's last walk (same frame, same instruction)
  faults-two    the same pages touched from two lines in turn: every fault walks the stack
  allocs        N libc allocations of 1000 bytes: with --malloc-sample-bytes 0 every call is a
                sample (a walk each); at the default mean of 64 KiB one call in about 65 is

pmt-sample's own cost per 1,000 faults (issue #21): for the fault workloads, pmt-sample's CPU time
(user + system, from its rusage) over its whole attach, less what the same attach costs with
`--attribution ticks` per second (the ticks themselves), divided by the page faults its summary
says were captured and charged, times 1,000. `--own-cpu` measures only that (the fault workloads
under the two pmt-sample configurations, which need no quiet machine: CPU time, not wall time)
and writes bench/results/kernel_stacks_own_cpu.md instead.

Run as root from the repository root: python3 bench/kernel_stacks_cost.py [--repeats 5]
(or `bash bench/run.sh kernel_stacks_cost`); [--own-cpu]. Writes bench/results/kernel_stacks_cost.md.
"""
import argparse
import datetime
import glob
import os
import re
import shutil
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOAD = os.path.join(ROOT, "bench", "workloads", "kernel_cost.py")
PMT = os.path.join(ROOT, "target", "release", "pmt-sample")
DEPTH = 20
FAULTS = 262144
ALLOCS = 2000000


def fail(message):
    sys.exit("kernel_stacks_cost: " + message)


def python312():
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip() or os.path.expanduser("~/.pyenv")
    found = sorted(glob.glob(os.path.join(root, "versions/3.12.*/bin/python3.12")))
    if not found:
        fail("no CPython 3.12 under %s/versions: pyenv install 3.12" % root)
    return found[-1]


def memray():
    for candidate in [os.path.join(ROOT, "bench/.venv/bin/memray"), os.path.join(ROOT, "bench/.venv-real/bin/memray"),
                      shutil.which("memray")]:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    fail("memray is not installed: bash bench/run.sh installs it into bench/.venv")


def configurations(kind):
    """(name, pmt-sample arguments or None, memray?) per configuration of workload `kind`."""
    rows = [("alone", None, False)]
    if kind.startswith("faults"):
        rows += [("pmt-sample --metric rss --attribution kernel", ["--metric", "rss", "--attribution", "kernel"], False),
                 ("pmt-sample --metric rss --attribution ticks", ["--metric", "rss", "--attribution", "ticks"], False)]
    else:
        rows += [("pmt-sample --metric malloc-bytes --attribution kernel --malloc-sample-bytes 0",
                  ["--metric", "malloc-bytes", "--attribution", "kernel", "--malloc-sample-bytes", "0"], False),
                 ("pmt-sample --metric malloc-bytes --attribution kernel (64 KiB mean)",
                  ["--metric", "malloc-bytes", "--attribution", "kernel"], False),
                 ("pmt-sample --metric malloc-bytes --attribution ticks",
                  ["--metric", "malloc-bytes", "--attribution", "ticks"], False)]
    rows.append(("memray run", None, True))
    return rows


def run_once(python, kind, events, pmt_args, with_memray, scratch):
    """The loop's time, and pmt-sample's (CPU seconds, seconds attached, page faults captured)
    when it ran."""
    command = [python, WORKLOAD, kind, str(events), str(DEPTH)]
    if with_memray:
        out = os.path.join(scratch, "memray.bin")
        command = [memray(), "run", "-q", "-f", "-o", out] + command[1:]
        env = dict(os.environ, PATH=os.path.dirname(python) + ":" + os.environ["PATH"])
        target = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    else:
        target = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if target.stdout.readline().strip() != "ready":
        fail("the workload did not start: " + " ".join(command))
    sampler = None
    if pmt_args is not None:
        folded = os.path.join(scratch, "out.folded")
        sampler = subprocess.Popen([PMT, "--pid", str(target.pid), "--collapsed", folded] + pmt_args,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for line in sampler.stderr:
            if "sampling process" in line:
                break
        else:
            target.kill()
            fail("pmt-sample did not start sampling: " + " ".join(pmt_args))
    target.stdin.write("go\n")
    target.stdin.flush()
    elapsed = None
    for line in target.stdout:
        if line.startswith("elapsed "):
            elapsed = float(line.split()[1])
    target.wait()
    own = None
    if sampler is not None:
        rest = sampler.stderr.read()
        _, status, usage = os.wait4(sampler.pid, 0)
        sampler.returncode = os.waitstatus_to_exitcode(status)
        if sampler.returncode != 0:
            fail("pmt-sample failed: " + rest.strip().splitlines()[-1] if rest.strip() else "pmt-sample failed")
        attached = re.search(r"stopped after ([0-9.]+) s", rest)
        faults = re.search(r"captured in the kernel: (\d+) page faults", rest)
        own = (usage.ru_utime + usage.ru_stime, float(attached.group(1)) if attached else None,
               int(faults.group(1)) if faults else None)
    if elapsed is None:
        fail("the workload printed no time")
    return elapsed, own


def per_thousand_faults(kind, own):
    """Lines on pmt-sample's own CPU per 1,000 faults captured, for fault workload `kind`."""
    kernel = own.get((kind, "pmt-sample --metric rss --attribution kernel"), [])
    ticks = own.get((kind, "pmt-sample --metric rss --attribution ticks"), [])
    if not kernel or not ticks or any(a is None or f is None for _, a, f in kernel) or any(a is None for _, a, _ in ticks):
        return ["pmt-sample's own CPU per 1,000 faults: not measured (no summary figures).", ""]
    # What ticking alone costs per second attached, from the ticks runs.
    tick_rate = statistics.median(c / a for c, a, _ in ticks)
    # CPU seconds per fault, times 1,000 faults, in milliseconds.
    per_thousand = [max(0.0, c - tick_rate * a) / f * 1000 * 1000 for c, a, f in kernel if f]
    return [
        "pmt-sample's own CPU with `--attribution kernel`: %s s over %s s attached, %s faults captured "
        "(each run); with `--attribution ticks` %.1f ms per second attached. **Kernel mode costs "
        "pmt-sample %.2f ms of CPU per 1,000 faults** (median; runs: %s)." % (
            ", ".join("%.3f" % c for c, _, _ in kernel), ", ".join("%.2f" % a for _, a, _ in kernel),
            ", ".join(str(f) for _, _, f in kernel), tick_rate * 1000, statistics.median(per_thousand),
            ", ".join("%.2f" % x for x in per_thousand)),
        "",
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--own-cpu", action="store_true",
                        help="only pmt-sample's own CPU per 1,000 faults (no memray, no target timing)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        fail("the in-kernel stacks need root: run as root")
    if not os.access(PMT, os.X_OK):
        fail("no %s: cargo build --release" % PMT)
    python = python312()
    scratch = subprocess.run(["mktemp", "-d"], capture_output=True, text=True, check=True).stdout.strip()
    workloads = [("faults-same", FAULTS), ("faults-two", FAULTS), ("allocs", ALLOCS)]
    if args.own_cpu:
        workloads = workloads[:2]
    times = {}
    own = {}
    for _ in range(args.repeats):
        for kind, events in workloads:
            for name, pmt_args, with_memray in configurations(kind):
                if args.own_cpu and pmt_args is None:
                    continue
                elapsed, cost = run_once(python, kind, events, pmt_args, with_memray, scratch)
                times.setdefault((kind, name), []).append(elapsed)
                if cost is not None:
                    own.setdefault((kind, name), []).append(cost)
    shutil.rmtree(scratch, ignore_errors=True)
    load = os.getloadavg()[0]
    if args.own_cpu:
        lines = ["# In-kernel stacks: pmt-sample's own CPU per 1,000 page faults", "",
                 "Written by `python3 bench/kernel_stacks_cost.py --own-cpu --repeats %d` on %s UTC (load average %.1f "
                 "at the end: CPU time is measured, not wall time); target CPython 3.12 loop %d Python frames deep, "
                 "`pmt-sample --pid PID --metric rss` at its default 100 Hz." % (
                     args.repeats, datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"), load,
                     DEPTH), ""]
        for kind, events in workloads:
            lines += ["## %s (%d page faults)" % (kind, events), ""] + per_thousand_faults(kind, own)
        out = os.path.join(ROOT, "bench", "results", "kernel_stacks_own_cpu.md")
        with open(out, "w") as f:
            f.write("\n".join(lines))
        print("\n".join(lines))
        print("wrote", os.path.relpath(out, ROOT))
        return
    lines = ["# In-kernel stacks: cost to the target per page fault and per allocation sample", "",
             "Written by `python3 bench/kernel_stacks_cost.py --repeats %d` on %s UTC (load average %.1f at the end); "
             "target CPython %s, loop %d Python frames deep, `pmt-sample --pid` at its default 100 Hz. "
             "Median of %d interleaved rounds; cost per event = (median under the tool - median alone) / events."
             % (args.repeats, datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"), load,
                subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                               capture_output=True, text=True).stdout.strip(), DEPTH, args.repeats), ""]
    for kind, events in workloads:
        what = "page faults" if kind.startswith("faults") else "allocations"
        lines += ["## %s (%d %s)" % (kind, events, what), "",
                  "| configuration | median loop time | slowdown | cost per event | every run |", "|---|---|---|---|---|"]
        alone = statistics.median(times[(kind, "alone")])
        for name, _, _ in configurations(kind):
            runs = times[(kind, name)]
            median = statistics.median(runs)
            cost = "" if name == "alone" else "%.2f µs" % ((median - alone) / events * 1e6)
            lines.append("| %s | %.3f s | %.2fx | %s | %s |" % (
                name, median, median / alone, cost, ", ".join("%.3f" % t for t in runs)))
        lines.append("")
        if kind.startswith("faults"):
            lines += per_thousand_faults(kind, own)
    out = os.path.join(ROOT, "bench", "results", "kernel_stacks_cost.md")
    with open(out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    print("wrote", os.path.relpath(out, ROOT))


if __name__ == "__main__":
    main()
