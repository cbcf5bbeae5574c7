#!/usr/bin/env python3
"""What the `heap` view's allocation hook costs the target, beside memray, in one run.

Three workloads under one interpreter (by default Debian's /usr/bin/python3.11, which
bench/.venv's memray runs on; `--venv DIR` for another venv with memray in it, e.g. one made
with pyenv's 3.13 to measure the hook's reference tracer), each timing itself (only its timed
part counts, not start-up):
- small objects: bench/workloads/alloc_heavy.py (dicts, strings, tuples, lists, bytearrays);
- pairs: a loop whose every iteration is one allocator call and one free (`[None] * 4`: the
  list object comes from CPython's free list, its item array from the allocator) beside the
  loop's own int (another call and free), from which the cost of one non-sampled iteration
  is derived: (hooked - bare) / iterations;
- recycled objects: a loop of tuples, floats and one-key dicts, which CPython takes from and
  gives back to its free lists (no allocator call): on 3.13+ each is one creation and one
  destruction seen by the hook's reference tracer, whose cost per object is derived the same way;
- int arithmetic: `x = (x * 31 + i) % 1000003`, the commonest Python work there is: each
  iteration makes and drops three or four ints (allocator calls, or from 3.14 its int free list).
  On an interpreter built with profile-guided optimisation (Debian's, the official Docker
  images'), CPython calls its own allocator inlined where it is the one installed; any PEP 445
  hook (the heap view's, memray's --trace-python-allocators) turns those calls into calls
  through a pointer, which this workload shows most;
- mypy, where the venv has it (and rich and markdown_it, the packages it checks): a real
  program's own time, the mix of allocator calls and recycled objects that real code makes.

Runs, interleaved, best of --repeat each: bare; `pmt-sample --attribution ticks --rate 10`
(the hook, sampled every --heap-sample-bytes, plus a light sampler); `pmt-sample` as users
type it (kernel capture too); the same with `--heap-free-lists off` (no reference tracer);
`memray run`; `memray run --trace-python-allocators`; and the floors under the hook
(bench/empty_hooks.rs): bare with pass-through allocator wrappers installed (what any PEP 445
hook costs, on an interpreter that inlines its own allocator while it is the one installed),
and on 3.13+ with an empty reference tracer, and with both (what CPython spends calling any
tracer at every object's creation and destruction: the floor under following free lists).
Writes bench/results/heap_hook_cost.md.

Usage: python3 bench/heap_hook_cost.py [--repeat N] [--sample-bytes A,B,...] [--venv DIR] [--root ROOT]
(--root: the venv is inside that chroot, e.g. `--root /srv/pmt-sid --venv /opt/pmt-pkgs-3.14`
after `pip install memray` there, for Debian sid's python3.14.)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, "bench", ".venv")
PMT = os.path.join(ROOT, "target", "release", "pmt-sample")
PAIRS = 5_000_000

PAIRS_SCRIPT = """
import json, time
n = %d
start, cpu = time.perf_counter(), time.process_time()
for i in range(n):
    x = [None] * 4
elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
print(json.dumps({"elapsed": elapsed, "cpu": cpu, "rounds": n}), flush=True)
""" % PAIRS

RECYCLED = 3_000_000
# Per iteration: two tuples, one float, one dict: four objects from free lists.
RECYCLED_SCRIPT = """
import json, time
n = %d
start, cpu = time.perf_counter(), time.process_time()
for i in range(n):
    x = (i, i + 1.5)
    y = {"a": x}
elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
print(json.dumps({"elapsed": elapsed, "cpu": cpu, "rounds": n}), flush=True)
""" % RECYCLED

INTS = 3_000_000
INTS_SCRIPT = """
import json, time
n = %d
start, cpu = time.perf_counter(), time.process_time()
x = 0
for i in range(n):
    x = (x * 31 + i) %% 1000003
elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
print(json.dumps({"elapsed": elapsed, "cpu": cpu, "rounds": n}), flush=True)
""" % INTS

MYPY_SCRIPT = """
import json, site, time
site.addsitedir(%r)  # the venv's packages: the workloads run its interpreter itself
from mypy import api
start, cpu = time.perf_counter(), time.process_time()
api.run(["--cache-dir=/dev/null", "--no-error-summary", "-p", "rich", "-p", "markdown_it"])
elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
print(json.dumps({"elapsed": elapsed, "cpu": cpu, "rounds": 1}), flush=True)
"""

# Runs a workload (argv[3:]) after installing the empty hooks of the library argv[1] that
# argv[2] names ("tracer", "allocators" or both, comma-separated).
EMPTY_HOOKS_WRAPPER = """
import ctypes, runpy, sys
library = ctypes.PyDLL(sys.argv[1])
for hook in sys.argv[2].split(","):
    if getattr(library, "pmt_bench_install_" + {"tracer": "empty_tracer",
               "allocators": "pass_through_allocators"}[hook])() != 0:
        sys.exit("cannot install the empty %s" % hook)
sys.argv = sys.argv[3:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

def timed(argv):
    """Runs argv; returns the seconds of CPU the workload's process spent in its timed part (all
    its threads: memray's own included), which other work on a shared machine changes far less
    than the wall time it printed beside it."""
    out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=True).stdout
    for line in out.splitlines():
        if line.startswith("{"):
            return json.loads(line)["cpu"]
    raise RuntimeError("no timing in %r: %s" % (argv, out))


def build_empty_hooks(tmp):
    """Builds bench/empty_hooks.rs into TMP; returns the library's path."""
    library = os.path.join(tmp, "libempty_hooks.so")
    subprocess.run(["rustc", "--edition", "2024", "-O", "--crate-type", "cdylib", "-o",
                    library, os.path.join(ROOT, "bench", "empty_hooks.rs")], check=True)
    return library


def best_of(workloads, variants, repeat, argv):
    """Runs every variant on every workload REPEAT times, interleaved; returns the fewest CPU
    seconds of each, by workload then variant. `argv(name, script)` is the command of one run."""
    results = {}
    for workload, script in workloads.items():
        best = {}
        for _ in range(repeat):
            for name in variants:
                elapsed = timed(argv(name, script))
                best[name] = min(best.get(name, elapsed), elapsed)
        results[workload] = best
    return results


def slowdown_table(workload, best):
    """The markdown lines of one workload's runs: seconds and slowdown against `bare`."""
    lines = ["## " + workload, "", "| run | seconds | slowdown |", "|---|---|---|"]
    for name, elapsed in best.items():
        lines.append("| %s | %.3f | %.2fx |" % (name, elapsed, elapsed / best["bare"]))
    lines.append("")
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sample-bytes", default="262144,65536")
    parser.add_argument("--venv", default=VENV,
                        help="a venv with memray; its python runs every workload")
    parser.add_argument("--root", help="a chroot the venv is in")
    args = parser.parse_args()
    inside = lambda path: os.path.join(args.root, path.lstrip("/")) if args.root else path
    chroot = ["chroot", args.root] if args.root else []
    memray = os.path.join(args.venv, "bin", "memray")
    # The venv's interpreter itself (not its symlink), as pmt-sample launches it.
    python = os.path.realpath(inside(os.path.join(args.venv, "bin", "python3")))
    if args.root:
        python = "/" + os.path.relpath(python, args.root)
    if not os.path.exists(inside(memray)):
        sys.exit("%s has no memray: run `bash bench/run.sh heap_hook_cost`, or make that "
                 "venv and `pip install memray` into it" % args.venv)
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    # Inside the chroot too (the tests' sid chroot shares /tmp with the host).
    tmp = tempfile.mkdtemp(prefix="pmt-bench-")
    if args.root and not os.path.exists(inside(tmp)):
        sys.exit("%s does not see the host's %s: bind-mount /tmp into it" % (args.root, tmp))
    pairs = os.path.join(tmp, "pairs.py")
    with open(pairs, "w") as f:
        f.write(PAIRS_SCRIPT)
    recycled = os.path.join(tmp, "recycled.py")
    with open(recycled, "w") as f:
        f.write(RECYCLED_SCRIPT)
    ints = os.path.join(tmp, "ints.py")
    with open(ints, "w") as f:
        f.write(INTS_SCRIPT)
    workloads = {
        "small objects (alloc_heavy.py 300000)": [
            os.path.join(ROOT, "bench", "workloads", "alloc_heavy.py"),
            "300000",
        ],
        "one call and one free per iteration (%d)" % PAIRS: [pairs],
        "recycled objects, four per iteration (%d)" % RECYCLED: [recycled],
        "int arithmetic (%d iterations)" % INTS: [ints],
    }
    packages = subprocess.run(
        chroot + [os.path.join(args.venv, "bin", "python3"), "-c",
                  "import sysconfig, mypy, rich, markdown_it; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True)
    if packages.returncode == 0:
        mypy = os.path.join(tmp, "mypy_run.py")
        with open(mypy, "w") as f:
            f.write(MYPY_SCRIPT % packages.stdout.strip())
        workloads["mypy -p rich -p markdown_it (mypy from PyPI)"] = [mypy]
    library = build_empty_hooks(tmp)
    wrapper = os.path.join(tmp, "empty_hooks.py")
    with open(wrapper, "w") as f:
        f.write(EMPTY_HOOKS_WRAPPER)
    has_tracer = subprocess.run(
        chroot + [python, "-c", "import sys; sys.exit(sys.version_info < (3, 13))"]).returncode == 0
    floors = {"bare, pass-through allocator wrappers installed": "allocators"}
    if has_tracer:
        floors["bare, an empty reference tracer installed"] = "tracer"
        floors["bare, both installed"] = "allocators,tracer"
    variants = {"bare": []}
    for size in args.sample_bytes.split(","):
        variants["pmt-sample --attribution ticks --rate 10 --heap-sample-bytes %s" % size] = [
            PMT, "--attribution", "ticks", "--rate", "10", "--heap-sample-bytes", size,
            "--collapsed", os.path.join(tmp, "o.folded"), "--"]
    variants["pmt-sample (defaults)"] = [PMT, "--collapsed", os.path.join(tmp, "d.folded"), "--"]
    variants["pmt-sample --heap-free-lists off"] = [
        PMT, "--heap-free-lists", "off", "--collapsed", os.path.join(tmp, "f.folded"), "--"]
    variants["memray run"] = [memray, "run", "-f", "-q", "-o", os.path.join(tmp, "m.bin")]
    variants["memray run --trace-python-allocators"] = [
        memray, "run", "-f", "-q", "--trace-python-allocators", "-o", os.path.join(tmp, "t.bin")]
    if args.root:
        variants = {name: prefix + chroot if name.startswith("pmt") else chroot + prefix
                    for name, prefix in variants.items()}
        variants["bare"] = chroot
    for name in floors:
        variants[name] = chroot
    load_before = " ".join("%.2f" % x for x in os.getloadavg())
    results = best_of(workloads, variants, args.repeat, lambda name, script: (
        variants[name] + ([python] if not name.startswith("memray") else [])
        + ([wrapper, library, floors[name]] if name in floors else []) + script))
    lines = [
        "# The heap view's allocation hook: what it costs the target",
        "",
        "`%s` on %s, %s (2 cores), interleaved runs, best of %d;"
        % (" ".join(["python3", "bench/heap_hook_cost.py"] + sys.argv[1:]).replace(ROOT + "/", ""),
           subprocess.run(chroot + [python, "--version"], capture_output=True,
                                       text=True).stdout.strip(), time.strftime("%Y-%m-%d"),
           args.repeat),
        "%smemray %s from PyPI. Times are the CPU seconds of the workload's own timed part (start-up "
        "excluded; `time.process_time()`, all threads of the target: memray's included, "
        "pmt-sample's process not), taken as CPU rather than wall time so that other work on "
        "the machine changes them less; machine load: %s (before) and %s (after)." % (
            "In the chroot %s. " % args.root if args.root else "",
            subprocess.run(chroot + [memray, "--version"], capture_output=True,
                           text=True).stdout.strip(),
            load_before, " ".join("%.2f" % x for x in os.getloadavg())),
        "",
    ]
    for workload, best in results.items():
        bare = best["bare"]
        lines += slowdown_table(workload, best)
        if workload.startswith("one call"):
            for name, elapsed in best.items():
                if "ticks" in name:
                    lines.append("- %s: %.1f ns per iteration (two allocator calls and two frees: "
                                 "the loop's int and the list's items; from 3.13 four reference-"
                                 "tracer events: the int and the list created and destroyed)"
                                 % (name, (elapsed - bare) * 1e9 / PAIRS))
            lines.append("")
        if workload.startswith("int arithmetic"):
            for name, elapsed in best.items():
                if "ticks" in name:
                    lines.append("- %s: %.1f ns per iteration" % (
                        name, (elapsed - bare) * 1e9 / INTS))
            lines.append("")
        if workload.startswith("recycled"):
            for name, elapsed in best.items():
                if "ticks" in name:
                    lines.append("- %s: %.1f ns per recycled object (created and destroyed)"
                                 % (name, (elapsed - bare) * 1e9 / (4 * RECYCLED)))
            lines.append("")
    text = "\n".join(lines)
    version = subprocess.run(chroot + [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.strip()
    name = "heap_hook_cost.md" if args.venv == VENV else "heap_hook_cost-%s%s.md" % (
        "sid" if args.root else "", version)
    out = os.path.join(ROOT, "bench", "results", name)
    with open(out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
