"""CPU-bound pure-Python workload that times itself.

Prints `ready`, waits --start-delay seconds (time for a profiler to attach), then runs a fixed
amount of work (nested calls, arithmetic, small dict and list churn) and prints
`elapsed SECONDS cpu SECONDS` (wall time by time.perf_counter, the process's CPU time by
time.process_time: the latter is less disturbed by other load on a shared machine).
Usage: python cpu_bound.py [--iterations 2000000] [--start-delay 1.0]
"""

import argparse
import time


def leaf(i):
    return (i * 2654435761) % 4294967296


def middle(i):
    d = {"a": i, "b": leaf(i)}
    return d["b"] ^ len([d["a"]])


def outer(n):
    total = 0
    for i in range(n):
        total += middle(i)
    return total


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=2000000)
    parser.add_argument("--start-delay", type=float, default=1.0)
    args = parser.parse_args()
    print("ready", flush=True)
    time.sleep(args.start_delay)
    start, cpu_start = time.perf_counter(), time.process_time()
    outer(args.iterations)
    print("elapsed %.6f cpu %.6f" % (time.perf_counter() - start, time.process_time() - cpu_start), flush=True)


if __name__ == "__main__":
    main()
