"""A task pool that recycles its workers every few seconds, for the soak benchmark (bench/soak.py).

A multiprocessing pool (fork start method) of --workers processes, each replaced after
--tasks-per-child tasks (maxtasksperchild), is fed tasks without end (or for --seconds). A task
builds a few thousand small objects and a buffer of 0.5-4 MiB in nested calls, keeps it for about
--task-ms milliseconds of CPU work, and returns its size; every fifth task does its part in a
short-lived thread, so that threads come and go inside the workers too. Prints `ready` once the
pool runs.
Usage: python recycling_pool.py [--workers 4] [--tasks-per-child 40] [--task-ms 50] [--seconds 0]
"""

import argparse
import multiprocessing
import threading
import time


def fill(size, ms):
    buffer = bytearray(size)
    items = [str(i) * 3 for i in range(2000)]
    deadline = time.perf_counter() + ms / 1000
    n = 0
    while time.perf_counter() < deadline:
        buffer[(n * 4096) % size] = n & 0xFF
        n += 1
    return len(buffer) + len(items)


def task(args):
    i, ms = args
    size = (512 << 10) << (i % 4)
    if i % 5 == 0:
        result = []
        thread = threading.Thread(target=lambda: result.append(fill(size, ms)))
        thread.start()
        thread.join()
        return result[0]
    return fill(size, ms)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--tasks-per-child", type=int, default=40)
    parser.add_argument("--task-ms", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=0.0, help="0: until killed")
    args = parser.parse_args()
    ctx = multiprocessing.get_context("fork")
    deadline = time.monotonic() + args.seconds if args.seconds > 0 else None

    def tasks():
        i = 0
        while deadline is None or time.monotonic() < deadline:
            yield (i, args.task_ms)
            i += 1

    with ctx.Pool(args.workers, maxtasksperchild=args.tasks_per_child) as pool:
        print("ready", flush=True)
        for _ in pool.imap_unordered(task, tasks(), chunksize=1):
            pass


if __name__ == "__main__":
    main()
