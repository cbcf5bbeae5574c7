#!/usr/bin/env python3
"""Benchmark: what following a process tree costs, before and after the tree follower moved into
the attach layer (issue 11), by the CPU the monitor or sampler uses.

Two workloads, each on a fresh tree for every run:

- ``pmt tree --pid P -i 0.1`` (10 Hz) on 200 processes (a parent and 199 forked children, each
  holding a little memory and sleeping), with process events, and alone in a user namespace
  (``unshare --user --map-root-user``, where the kernel sends no process events: the children
  lists are polled every tick);
- ``pmt-sample --subprocesses --rate 100 --metric cpu`` on a multiprocessing pool of 16 workers
  (bench/workloads/idle_pool.py: each worker sleeps in a Python function, so that the sampler keeps
  its rate and the figure is the sampler's own cost rather than how much CPU 16 busy workers leave
  it), attached with ``--pid``, once on the host (process events) and once with pool and sampler
  in one new user namespace (no events: the children lists are polled every 100 ms).

"before" is a pmt built from the commit given by ``--before-commit`` (default: the branch point
of this work), "after" the release build of this tree. CPU is user + system time of the monitor
process (wait4 rusage), over its wall time.

Writes bench/results/discovery.md.
Usage: python3 bench/discovery.py --before DIR [--runs 2] [--seconds 20]
   DIR holds the `pmt` and `pmt-sample` binaries to compare against.
"""
import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
AFTER = os.path.join(ROOT, "target", "release")

TREE = r'''
import os, sys, time
n = int(sys.argv[1])
for _ in range(n - 1):
    if os.fork() == 0:
        data = b"x" * (256 * 1024)
        time.sleep(3600)
        os._exit(0)
print("ready", flush=True)
time.sleep(3600)
'''


def start_tree(size):
    tree = subprocess.Popen([sys.executable, "-c", TREE, str(size)], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    if tree.stdout.readline().strip() != "ready":
        raise RuntimeError("the tree did not start")
    deadline = time.time() + 20
    while time.time() < deadline:
        out = subprocess.run(["pgrep", "-c", "-P", str(tree.pid)], capture_output=True,
                             text=True).stdout.strip()
        if out and int(out) == size - 1:
            return tree
        time.sleep(0.2)
    raise RuntimeError("not all children started")


def measure(argv, seconds):
    """Runs argv for `seconds` (SIGINT, then waits); returns (cpu s, wall s, stdout)."""
    with tempfile.TemporaryFile("w+") as out:
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        time.sleep(seconds)
        proc.send_signal(signal.SIGINT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
        out.seek(0)
        text = out.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv[0]} failed:\n{text[-2000:]}")
    return usage.ru_utime + usage.ru_stime, wall, text


def tree_runs(binaries, runs, seconds):
    rows = []
    for run in range(1, runs + 1):
        for label, bindir in binaries:
            for mode in ("events", "polling"):
                tree = start_tree(200)
                try:
                    argv = [os.path.join(bindir, "pmt"), "tree", "--pid", str(tree.pid), "-i", "0.1"]
                    if mode == "polling":
                        argv = ["unshare", "--user", "--map-root-user", "--"] + argv
                    cpu, wall, _ = measure(argv, seconds)
                finally:
                    os.killpg(tree.pid, signal.SIGKILL)
                    tree.wait()
                rows.append((run, label, mode, cpu, wall))
                print(f"tree run {run} {label} {mode}: {cpu:.2f} s CPU in {wall:.1f} s", flush=True)
    return rows


def start_pool(python, seconds, user_namespace):
    """The idle pool, in a new user namespace when asked; returns it once its workers run."""
    argv = [python, os.path.join(HERE, "workloads", "idle_pool.py"), "--workers", "16",
            "--seconds", str(seconds)]
    if user_namespace:
        argv = ["unshare", "--user", "--map-root-user", "--"] + argv
    pool = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 20
    while time.time() < deadline:
        python_pid = pool.pid  # `unshare` without --fork execs the interpreter itself
        out = subprocess.run(["pgrep", "-c", "-P", str(python_pid)], capture_output=True,
                             text=True).stdout.strip()
        if out and int(out) >= 16:
            time.sleep(0.5)
            return pool, python_pid
        time.sleep(0.1)
    raise RuntimeError("the pool did not start")


def pool_runs(binaries, runs, seconds, python):
    rows = []
    for run in range(1, runs + 1):
        for label, bindir in binaries:
            for mode in ("events", "polling"):
                pool, pid = start_pool(python, seconds + 20, mode == "polling")
                try:
                    with tempfile.TemporaryDirectory() as tmp:
                        timeline = os.path.join(tmp, "t.json")
                        argv = [os.path.join(bindir, "pmt-sample"), "--pid", str(pid),
                                "--subprocesses", "--rate", "100", "--metric", "cpu",
                                "--duration", str(seconds), "--json", timeline]
                        if mode == "polling":
                            # Into the pool's user namespace, where the kernel sends no events.
                            argv = ["nsenter", "--target", str(pid), "--user", "--"] + argv
                        cpu, wall, _ = run_to_end(argv)
                        achieved = achieved_rate(timeline)
                finally:
                    os.killpg(pool.pid, signal.SIGKILL)
                    pool.wait()
                rows.append((run, label, mode, cpu, wall, achieved))
                print(f"pool run {run} {label} {mode}: {cpu:.2f} s CPU in {wall:.1f} s, "
                      f"{achieved}", flush=True)
    return rows


def run_to_end(argv):
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    err = proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv} failed:\n{err[-2000:]}")
    return usage.ru_utime + usage.ru_stime, wall, err


def achieved_rate(timeline):
    import json
    with open(timeline) as f:
        data = json.load(f)
    summary = data.get("summary") or {}
    processes = len(data.get("processes") or [])
    return (f"{processes} processes, {summary.get('achieved_rate_hz', 0):.1f} ticks/s, "
            f"{summary.get('missed_ticks', '?')} missed")


def median(values):
    return statistics.median(values) if values else float("nan")


def write(path, before_commit, tree_rows, pool_rows, seconds):
    lines = [
        "# Following a process tree: `pmt tree` and `--subprocesses`, before and after",
        "",
        "Command: `python3 bench/discovery.py --before DIR` (this file is its output); \"before\" is",
        f"pmt built from commit {before_commit}, \"after\" this tree's release build. Machine: "
        f"{os.cpu_count()} CPUs, {platform.machine()}, Linux {platform.release()}.",
        "CPU is user + system time of the monitor process from wait4's rusage (the workload's is",
        "not in it); % is CPU over wall time.",
        "",
        f"## `pmt tree -i 0.1` on 200 processes, {seconds} s a run",
        "",
        "\"polling\" runs the monitor in a user namespace, where the kernel sends no process events.",
        "",
        "| build | discovery | CPU % of one core (median) | runs (CPU s / wall s) |",
        "| --- | --- | ---: | --- |",
    ]
    for label in ("before", "after"):
        for mode in ("events", "polling"):
            picked = [r for r in tree_rows if r[1] == label and r[2] == mode]
            pct = median([100 * r[3] / r[4] for r in picked])
            runs = ", ".join(f"{r[3]:.2f} / {r[4]:.1f}" for r in picked)
            lines.append(f"| {label} | {mode} | {pct:.2f}% | {runs} |")
    lines += [
        "",
        "## `pmt-sample --subprocesses --rate 100` on a pool of 16 sleeping workers",
        "",
        "`pmt-sample --pid POOL --subprocesses --rate 100 --metric cpu` on",
        "`bench/workloads/idle_pool.py --workers 16` started beforehand; \"polling\" starts the pool in",
        "a new user namespace and the sampler in the same one (`nsenter --user`), where the kernel",
        "sends no process events.",
        "",
        "| build | discovery | CPU % of one core (median) | runs (CPU s / wall s) | achieved |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for label in ("before", "after"):
        for mode in ("events", "polling"):
            picked = [r for r in pool_rows if r[1] == label and r[2] == mode]
            pct = median([100 * r[3] / r[4] for r in picked])
            runs = ", ".join(f"{r[3]:.2f} / {r[4]:.1f}" for r in picked)
            achieved = picked[-1][5] if picked else ""
            lines.append(f"| {label} | {mode} | {pct:.2f}% | {runs} | {achieved} |")
    lines += [
        "",
        "Reading: \"before\" `--subprocesses` never used process events (it listed the tree from the",
        "children lists every 100 ms in both rows); \"after\" it drains the kernel's events every tick",
        "where they come, and polls where they do not. Stack reading (16 processes x 100 Hz) is",
        "nearly all of the sampler's CPU either way, so the discovery difference is inside the",
        "run-to-run spread. Where the kernel sends no events the follower first waits up to",
        "0.25 s for a subscription that is never acknowledged (the longer wall times of \"after,",
        "polling\"). `pmt tree`, whose per-tick work is small, shows what discovery costs: about",
        "half with events of what it costs polling, before and after alike (the follower moved,",
        "its work did not change).",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", required=True, help="folder with the before pmt, pmt-sample")
    parser.add_argument("--before-commit", default="67031c1")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--only", choices=["tree", "pool"])
    args = parser.parse_args()
    binaries = [("before", args.before), ("after", AFTER)]
    tree_rows = [] if args.only == "pool" else tree_runs(binaries, args.runs, args.seconds)
    pool_rows = [] if args.only == "tree" else pool_runs(binaries, args.runs, args.seconds // 2,
                                                          args.python)
    write(os.path.join(HERE, "results", "discovery.md"), args.before_commit, tree_rows, pool_rows,
          args.seconds)


if __name__ == "__main__":
    main()
