"""A multiprocessing pool of sleeping workers, for the tree-following benchmark (bench/discovery.py).

Starts a pool of --workers processes (fork start method); each worker sleeps in a Python function
for --seconds, so that a sampler of the pool keeps its rate and what it costs is its own work.
Usage: python idle_pool.py [--workers 16] [--seconds 10]
"""

import argparse
import multiprocessing
import time


def rest(seconds):
    time.sleep(seconds)
    return seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    multiprocessing.set_start_method("fork")
    with multiprocessing.Pool(args.workers) as pool:
        pool.map(rest, [args.seconds] * args.workers, chunksize=1)
    print("done", flush=True)


if __name__ == "__main__":
    main()
