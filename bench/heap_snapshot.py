#!/usr/bin/env python3
"""How long `pmt heap` takes and how much memory pmt uses, on heaps of N small objects,
beside what `gc.get_objects()` (and counting its result by type) costs inside the target.

The target keeps N small containers in a module list (`KEEP`, half one-item lists, half
two-key dicts, so N/2 of them are on the collector's lists) plus their ints and strings,
measures gc.get_objects() on itself, prints READY and sleeps. pmt runs under /usr/bin/time -v
(its wall time and peak RSS). Results go to bench/results/heap_snapshot.md.

    python3 bench/heap_snapshot.py [--python PY]... [--objects N]... [--pmt PATH]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

TARGET = r"""
import gc, sys, time
N = int(sys.argv[1])
KEEP = []
for i in range(N // 2):
    KEEP.append([i])
    KEEP.append({"id": i, "name": "row%d" % i})
gc.collect()
t0 = time.perf_counter()
objects = gc.get_objects()
t1 = time.perf_counter()
counts = {}
for o in objects:
    name = type(o).__name__
    counts[name] = counts.get(name, 0) + 1
t2 = time.perf_counter()
print("GC %d %.4f %.4f" % (len(objects), t1 - t0, t2 - t0), flush=True)
del objects, o
print("READY", flush=True)
while True:
    time.sleep(1)
"""


def measure(python, n, pmt):
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "target.py")
        with open(script, "w") as f:
            f.write(TARGET)
        target = subprocess.Popen([python, script, str(n)], stdout=subprocess.PIPE, text=True)
        try:
            gc_line = target.stdout.readline().split()
            assert target.stdout.readline().strip() == "READY"
            out = os.path.join(tmp, "heap.json")
            timed = subprocess.run(
                ["/usr/bin/time", "-v", pmt, "heap", "--pid", str(target.pid), "--json", out],
                capture_output=True,
                text=True,
                check=True,
            )
            snap = json.load(open(out))
        finally:
            target.kill()
            target.wait()
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", timed.stderr)
    seconds = float(wall.group(2)) * 60 + float(wall.group(3))
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", timed.stderr).group(1))
    version = subprocess.run(
        [python, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    keep = next((h for h in snap["holders"] if h["path"] == "__main__.KEEP"), None)
    return {
        "python": version,
        "n": n,
        "objects": snap["objects"],
        "tracked": snap["tracked_objects"],
        "gc_objects": int(gc_line[1]),
        "gc_seconds": float(gc_line[2]),
        "gc_count_seconds": float(gc_line[3]),
        "pmt_seconds": seconds,
        "walk_seconds": snap["seconds"],
        "pmt_rss_mib": rss_kib / 1024,
        "peak_cached_mib": snap["peak_cached_bytes"] / 2**20,
        "read_calls": snap["read_calls"],
        "keep_items": keep["items"] if keep else None,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", action="append", help="interpreter(s) to run the target")
    parser.add_argument("--objects", action="append", type=int, help="N (default 1000000)")
    parser.add_argument(
        "--pmt", default=os.path.join(os.path.dirname(__file__), "..", "target/release/pmt")
    )
    parser.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(__file__), "results", "heap_snapshot.md"),
    )
    args = parser.parse_args()
    pythons = args.python or [sys.executable]
    sizes = args.objects or [1_000_000]
    rows = [measure(py, n, args.pmt) for py in pythons for n in sizes]
    lines = [
        "# `pmt heap` snapshot cost",
        "",
        "Written by `bench/heap_snapshot.py` on %s (%d CPUs shared with other work)."
        % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.cpu_count()),
        "The target keeps N small containers in `__main__.KEEP` (half `[i]`, half",
        '`{"id": i, "name": "row…"}`) beside their ints and strings. `gc.get_objects()` is',
        "timed inside the target (alone, and with counting its result by type); `pmt heap` is",
        "timed from outside with `/usr/bin/time -v` (whole run: attach, walk, dominators, report)",
        "and its peak RSS recorded.",
        "",
        "| CPython | N | objects found | tracked | gc.get_objects() len | gc.get_objects() s | + count by type s | pmt heap s (walk) | pmt peak RSS MiB | cache peak MiB | reads | KEEP items |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            "| {python} | {n:,} | {objects:,} | {tracked:,} | {gc_objects:,} | {gc_seconds:.3f} | "
            "{gc_count_seconds:.3f} | {pmt_seconds:.2f} ({walk_seconds:.2f}) | {pmt_rss_mib:.0f} | "
            "{peak_cached_mib:.0f} | {read_calls:,} | {keep_items} |".format(**r)
        )
    text = "\n".join(lines) + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
