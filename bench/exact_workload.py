"""Workload of bench/exact_overhead.py: call-heavy pure Python (recursive fib + dict updates).

Run as ``python exact_workload.py MODE REPEATS [LOGDIR]`` with MODE one of ``none``,
``profile``, ``trace``, ``profile0``, ``trace0`` (the ``0`` modes use d_rss_trigger=0); prints the
best wall time in seconds. Works with pymemtrace 0.4.0 and with this project's package alike.
"""

import os
import sys
import time


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def dict_work(n):
    counts = {}
    for i in range(n):
        key = i % 97
        counts[key] = counts.get(key, 0) + i
    return counts


def workload():
    fib(23)
    dict_work(150_000)


def run(mode, log_path):
    if mode == "none":
        workload()
        return
    from pymemtrace import cPyMemTrace

    cls = cPyMemTrace.Profile if mode.startswith("profile") else cPyMemTrace.Trace
    trigger = 0 if mode.endswith("0") else -1
    with cls(trigger, filepath=log_path):
        workload()


def main():
    mode, repeats = sys.argv[1], int(sys.argv[2])
    log_dir = sys.argv[3] if len(sys.argv) > 3 else "."
    best = float("inf")
    for index in range(repeats):
        log_path = os.path.join(log_dir, f"{mode}_{index}.log")
        start = time.perf_counter()
        run(mode, log_path)
        best = min(best, time.perf_counter() - start)
    print(f"{best:.6f}")


if __name__ == "__main__":
    main()
