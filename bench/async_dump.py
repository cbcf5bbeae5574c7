#!/usr/bin/env python3
"""Benchmark: `pmt dump --async` beside CPython's own task dumpers on one process with 1,000
asyncio tasks (tests/scripts/async_tasks.py 1000: 1,000 tasks waiting on an event, plus a task
group, a gather, nested awaits and a second thread's loop).

For each interpreter: the wall time of one whole command (start to exit, as a user sees it),
median and min over --runs runs, of
- `pmt dump --pid P --async` (text) and `--async --json`;
- `python3.14 -m asyncio pstree P` / `python3.15 -m asyncio pstree P` (3.14+);
- `python3.15 -m profiling.sampling dump --async-aware P` (3.15+);
each output checked to name all 1,000 `many-N` tasks (a tool that lists fewer is reported so).
Debian sid's 3.14/3.15 run in the chroot `PMT_SID_ROOT` (default /srv/pmt-sid), which shares
/tmp and /work with the host; CPython's tools run inside it too. pyenv's 3.12 (3.11–3.13 have no
such tool of their own) is timed with pmt alone.

Writes bench/results/async_dump.md.
Usage: python3 bench/async_dump.py [--runs 10]
"""
import argparse
import glob
import os
import platform
import re
import statistics
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PMT = os.path.join(ROOT, "target", "release", "pmt")
SCRIPT = os.path.join(ROOT, "tests", "scripts", "async_tasks.py")
SID = os.environ.get("PMT_SID_ROOT", "/srv/pmt-sid")
TASKS = 1000


def interpreters():
    found = []
    for minor in ("3.14", "3.15"):
        if os.path.exists(os.path.join(SID, "usr/bin/python" + minor)):
            found.append(("sid " + minor, ["chroot", SID, "python" + minor]))
    pyenv = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
    for path in sorted(glob.glob(os.path.join(pyenv, "versions", "3.12.*", "bin", "python3.12"))):
        found.append(("pyenv " + path.split("/versions/")[1].split("/")[0], [path]))
        break
    return found


def timed(command, runs):
    times, output = [], ""
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        output = done.stdout
        if done.returncode != 0:
            return None, done.stderr.strip().splitlines()[-1:]
    listed = len(set(re.findall(r"many-\d+", output)))
    return (statistics.median(times), min(times), listed), None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    rows = []
    for label, python in interpreters():
        target = subprocess.Popen(python + [SCRIPT, str(TASKS)], stdout=subprocess.PIPE, text=True)
        try:
            if target.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{label}: the workload did not start")
            pid = str(target.pid)
            commands = [
                ("pmt dump --async", [PMT, "dump", "--pid", pid, "--async"]),
                ("pmt dump --async --json", [PMT, "dump", "--pid", pid, "--async", "--json"]),
                ("pmt dump (no --async)", [PMT, "dump", "--pid", pid]),
            ]
            if "3.14" in label or "3.15" in label:
                commands.append(("python -m asyncio pstree", python + ["-m", "asyncio", "pstree", pid]))
            if "3.15" in label:
                commands.append(
                    ("python -m profiling.sampling dump --async-aware",
                     python + ["-m", "profiling.sampling", "dump", "--async-aware", pid]))
            for name, command in commands:
                result, error = timed(command, args.runs)
                rows.append((label, name, result, error))
        finally:
            target.kill()
            target.wait()
    lines = [
        "# `pmt dump --async` beside CPython's task dumpers, 1,000 tasks",
        "",
        f"Command: `python3 bench/async_dump.py --runs {args.runs}` (this file is its output).",
        f"Workload: `tests/scripts/async_tasks.py {TASKS}`. Machine: {os.cpu_count()} CPUs, "
        f"{platform.machine()}, Linux {platform.release()}; shared with other jobs while measured.",
        "Time: wall time of the whole command (process start to exit), over the runs.",
        "\"listed\": how many of the 1,000 `many-N` tasks the output names (pmt's plain dump lists no tasks).",
        "",
        "| interpreter | command | median | min | listed |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for label, name, result, error in rows:
        if result is None:
            lines.append(f"| {label} | {name} | failed: {' '.join(error)} | | |")
        else:
            median, fastest, listed = result
            lines.append(f"| {label} | {name} | {median * 1000:.1f} ms | {fastest * 1000:.1f} ms | {listed} |")
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "async_dump.md"), "w") as out:
        out.write(text)
    print(text)


if __name__ == "__main__":
    main()
