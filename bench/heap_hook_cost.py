#!/usr/bin/env python3
"""What the `heap` view's allocation hook costs the target, beside memray, in one run.

Two workloads under the same interpreter (Debian's /usr/bin/python3.11, which bench/.venv's
memray runs on), each timing itself (only its timed part counts, not start-up):
- small objects: bench/workloads/alloc_heavy.py (dicts, strings, tuples, lists, bytearrays);
- pairs: a loop whose every iteration is one allocator call and one free (`[None] * 4`: the
  list object comes from CPython's free list, its item array from the allocator), from which
  the cost of one non-sampled call is derived: (hooked - bare) / calls.

Runs, interleaved, best of --repeat each: bare; `pmt-sample --attribution ticks --rate 10`
(the hook, sampled every --heap-sample-bytes, plus a light sampler); `pmt-sample` as users
type it (kernel capture too); `memray run`; `memray run --trace-python-allocators`.
Writes bench/results/heap_hook_cost.md.

Usage: python3 bench/heap_hook_cost.py [--repeat N] [--sample-bytes A,B,...]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3.11"
MEMRAY = os.path.join(ROOT, "bench", ".venv", "bin", "memray")
PMT = os.path.join(ROOT, "target", "release", "pmt-sample")
PAIRS = 5_000_000

PAIRS_SCRIPT = """
import json, time
n = %d
start = time.perf_counter()
for i in range(n):
    x = [None] * 4
elapsed = time.perf_counter() - start
print(json.dumps({"elapsed": elapsed, "rounds": n}), flush=True)
""" % PAIRS


def timed(argv):
    """Runs argv; returns the elapsed seconds the workload printed."""
    out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=True).stdout
    for line in out.splitlines():
        if line.startswith("{"):
            return json.loads(line)["elapsed"]
    raise RuntimeError("no timing in %r: %s" % (argv, out))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sample-bytes", default="262144,65536")
    args = parser.parse_args()
    if not os.path.exists(MEMRAY):
        sys.exit("bench/.venv has no memray: run `bash bench/run.sh heap_hook_cost`")
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="pmt-bench-")
    pairs = os.path.join(tmp, "pairs.py")
    with open(pairs, "w") as f:
        f.write(PAIRS_SCRIPT)
    workloads = {
        "small objects (alloc_heavy.py 300000)": [
            os.path.join(ROOT, "bench", "workloads", "alloc_heavy.py"),
            "300000",
        ],
        "one call and one free per iteration (%d)" % PAIRS: [pairs],
    }
    variants = {"bare": []}
    for size in args.sample_bytes.split(","):
        variants["pmt-sample --attribution ticks --rate 10 --heap-sample-bytes %s" % size] = [
            PMT, "--attribution", "ticks", "--rate", "10", "--heap-sample-bytes", size,
            "--collapsed", os.path.join(tmp, "o.folded"), "--"]
    variants["pmt-sample (defaults)"] = [PMT, "--collapsed", os.path.join(tmp, "d.folded"), "--"]
    variants["memray run"] = [MEMRAY, "run", "-f", "-q", "-o", os.path.join(tmp, "m.bin")]
    variants["memray run --trace-python-allocators"] = [
        MEMRAY, "run", "-f", "-q", "--trace-python-allocators", "-o", os.path.join(tmp, "t.bin")]
    results = {}
    for workload, script in workloads.items():
        best = {}
        for _ in range(args.repeat):
            for name, prefix in variants.items():
                argv = prefix + ([PYTHON] if not name.startswith("memray") else []) + script
                elapsed = timed(argv)
                best[name] = min(best.get(name, elapsed), elapsed)
        results[workload] = best
    lines = [
        "# The heap view's allocation hook: what it costs the target",
        "",
        "`python3 bench/heap_hook_cost.py --repeat %d` on %s, %s (2 cores), interleaved runs, best of %d;"
        % (args.repeat, subprocess.run([PYTHON, "--version"], capture_output=True,
                                       text=True).stdout.strip(), time.strftime("%Y-%m-%d"),
           args.repeat),
        "memray %s from PyPI. Times are the workload's own timed part (start-up excluded)." % (
            subprocess.run([MEMRAY, "--version"], capture_output=True, text=True).stdout.strip()),
        "",
    ]
    for workload, best in results.items():
        bare = best["bare"]
        lines += ["## " + workload, "", "| run | seconds | slowdown |", "|---|---|---|"]
        for name, elapsed in best.items():
            lines.append("| %s | %.3f | %.2fx |" % (name, elapsed, elapsed / bare))
        lines.append("")
        if workload.startswith("one call"):
            for name, elapsed in best.items():
                if "ticks" in name:
                    lines.append("- %s: %.1f ns per allocator call and free"
                                 % (name, (elapsed - bare) * 1e9 / PAIRS))
            lines.append("")
    text = "\n".join(lines)
    out = os.path.join(ROOT, "bench", "results", "heap_hook_cost.md")
    with open(out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
