"""Shared by the real-program workloads: where cached input lives, the start gate, the timing line.

The gate lets a profiler attach by pid before the workload does anything that matters: with
PMT_BENCH_GATE=1 the workload prints "ready" and waits for one line on stdin. The package under
test is imported after the gate, so an attached profiler sees its import as a launching one does.
"""

import os
import sys
import time

DATA_DIR = os.environ.get("PMT_BENCH_DATA") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), ".data-real")


def data_path(name):
    os.makedirs(DATA_DIR, exist_ok=True)
    return os.path.join(DATA_DIR, name)


def run(work, describe):
    """Gate, run work() (which imports its package), print describe(result) and the elapsed time."""
    if os.environ.get("PMT_BENCH_GATE") == "1":
        print("ready", flush=True)
        sys.stdin.readline()
    start = time.perf_counter()
    result = work()
    print(describe(result))
    print("elapsed %.3f" % (time.perf_counter() - start), flush=True)
