"""A pre-fork style pool of lightly loaded workers, for the `--subprocesses` cost benchmark.

Starts --workers processes (multiprocessing, fork start method); each worker loops for --seconds:
it handles a small "request" in nested Python calls (builds a few dozen small objects and a 4 KiB
buffer, keeps the last 64 in a ring so its memory stays bounded) and then sleeps 20 ms, so it is
off the CPU most of the time. Prints `ready` once every worker runs and `done` when all finished.
Usage: python light_pool.py [--workers 8] [--seconds 10]
"""

import argparse
import multiprocessing
import time


def build_reply(i):
    return {"id": i, "items": [str(i * k) for k in range(32)], "body": bytearray(4096)}


def handle(i, ring):
    ring[i % len(ring)] = build_reply(i)


def serve(seconds, started):
    started.release()
    ring = [None] * 64
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        handle(i, ring)
        i += 1
        time.sleep(0.02)
    return i


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("fork")
    started = ctx.Semaphore(0)
    workers = [ctx.Process(target=serve, args=(args.seconds, started)) for _ in range(args.workers)]
    for worker in workers:
        worker.start()
    for _ in workers:
        started.acquire()
    print("ready", flush=True)
    for worker in workers:
        worker.join()
    print("done", flush=True)


if __name__ == "__main__":
    main()
