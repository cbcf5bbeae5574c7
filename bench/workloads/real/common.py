"""Shared by the real-program workloads: where cached input lives, the start gate, the timing line.

The gate lets a profiler attach by pid before the workload does anything that matters: with
PMT_BENCH_GATE=1 the workload prints "ready" and waits for one line on stdin. The package under
test is imported after the gate, so an attached profiler sees its import as a launching one does.

The same start for every profiler: `memray run` imports its own modules (argparse, subprocess,
typing, concurrent.futures, ...) before it starts tracking and runs the workload, so under memray
the package under test finds them imported and its own imports allocate less than they do under
pmt-sample, which launches the workload bare. With PMT_BENCH_MODULES_OUT=FILE the workload writes
the names of the modules already imported when it starts (under memray: memray's); with
PMT_BENCH_PREIMPORT=FILE it first imports those, in the order they were imported, memray's own
among them (`preimport`, a frame the comparison leaves out as memray never tracked them), so that
both runs then do the same work from the same state (the interpreter's own tables, its interned
strings among them, grow by doubling, and each step, megabytes on mypy, is charged to whatever
allocation crosses the threshold).
"""

import os
import sys
import time

DATA_DIR = os.environ.get("PMT_BENCH_DATA") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), ".data-real")


def data_path(name):
    os.makedirs(DATA_DIR, exist_ok=True)
    return os.path.join(DATA_DIR, name)


def preimport(names):
    """Imports the modules a reference profiler's launcher had imported (see above)."""
    import importlib
    for name in names:
        if name in sys.modules or name == "__main__" or name.endswith(".__main__"):
            continue
        try:
            importlib.import_module(name)
        except Exception:  # a module that only imports in its launcher's context
            pass


def run(work, describe):
    """Gate, run work() (which imports its package), print describe(result) and the elapsed time."""
    if os.environ.get("PMT_BENCH_MODULES_OUT"):
        with open(os.environ["PMT_BENCH_MODULES_OUT"], "w") as f:
            f.write("\n".join(sys.modules) + "\n")
    if os.environ.get("PMT_BENCH_PREIMPORT"):
        with open(os.environ["PMT_BENCH_PREIMPORT"]) as f:
            preimport(f.read().split())
    if os.environ.get("PMT_BENCH_GATE") == "1":
        print("ready", flush=True)
        sys.stdin.readline()
    start = time.perf_counter()
    result = work()
    print(describe(result))
    print("elapsed %.3f" % (time.perf_counter() - start), flush=True)
