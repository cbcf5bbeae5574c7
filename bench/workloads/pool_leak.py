"""A multiprocessing workload for `pmt-sample --subprocesses`.

After --start-delay (time for a sampler to attach), the parent keeps a little memory itself
(`parent_setup`), starts a short-lived child that keeps
some memory and exits early (`short_lived`), then runs a pool of workers (fork start method):
one task keeps everything it allocates (`leak_task`, the leak), the others allocate big
buffers and free them again at once (`churn_task`, transient growth). Sizes are in MiB.
Prints `done` at the end.

Usage: python pool_leak.py [--workers 3] [--leak-mib 96] [--seconds 2.0] [--start-delay 0.4]
"""

import argparse
import multiprocessing
import time

MIB = 1 << 20
KEPT = []


def touched(mib):
    """`mib` MiB whose pages are all written (so they are resident)."""
    return b"\x01" * (mib * MIB)


def parent_setup(mib):
    # 1 MiB at a time with short waits, so that a sampler finds this function on the stack at
    # the end of the intervals it grew in (attribution resolution is one sampling period).
    for _ in range(mib):
        KEPT.append(touched(1))
        time.sleep(0.02)


def short_lived(mib, start_delay, seconds):
    time.sleep(start_delay)
    KEPT.append(touched(mib))
    time.sleep(seconds)


def leak_task(mib, seconds, start_delay):
    time.sleep(start_delay)
    pause = seconds / mib
    for _ in range(mib):
        KEPT.append(touched(1))
        time.sleep(pause)
    time.sleep(0.5)
    return len(KEPT)


def churn_task(seconds, start_delay):
    time.sleep(start_delay)
    deadline = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < deadline:
        buffer = touched(8)
        del buffer
        rounds += 1
        time.sleep(0.01)
    time.sleep(0.5)
    return rounds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--leak-mib", type=int, default=96)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--start-delay", type=float, default=0.4)
    args = parser.parse_args()
    context = multiprocessing.get_context("fork")
    time.sleep(args.start_delay)
    parent_setup(8)
    early = context.Process(target=short_lived, args=(16, args.start_delay, 0.4))
    early.start()
    with context.Pool(args.workers) as pool:
        leak = pool.apply_async(leak_task, (args.leak_mib, args.seconds, args.start_delay))
        churns = [
            pool.apply_async(churn_task, (args.seconds, args.start_delay))
            for _ in range(args.workers - 1)
        ]
        leak.get()
        for churn in churns:
            churn.get()
    early.join()
    print("done", flush=True)


if __name__ == "__main__":
    main()
