"""A multiprocessing pool of CPU-bound workers, for the `--subprocesses` benchmark.

Starts a pool of --workers processes (fork start method), gives each one task that burns CPU in
nested pure-Python calls for --seconds, and prints `done` when all have finished.
Usage: python cpu_pool.py [--workers 16] [--seconds 10]
"""

import argparse
import multiprocessing
import time


def leaf(i):
    return (i * 2654435761) % 4294967296


def middle(i):
    return leaf(i) ^ (i >> 3)


def burn(seconds):
    deadline = time.monotonic() + seconds
    total = 0
    i = 0
    while time.monotonic() < deadline:
        for _ in range(1000):
            total += middle(i)
            i += 1
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        pool.map(burn, [args.seconds] * args.workers, chunksize=1)
    print("done", flush=True)


if __name__ == "__main__":
    main()
