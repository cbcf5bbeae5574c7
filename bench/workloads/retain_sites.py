"""Ground-truth memory workload with three known call sites, interleaved:

- `retain_buffers` keeps --buffers-mb MiB in 1 MiB bytearrays;
- `retain_small_objects` keeps about --small-mb MiB in small objects (tuples of an int and a str);
- `churn` allocates, fills and frees 40 MiB buffers, keeping nothing.

By default the calls are interleaved at random, and after each allocation a site waits a
little (--pause seconds, simulated I/O) before returning, as request handlers do: an
out-of-process sampler charges growth to the stack it finds at the end of a sampling interval,
so with calls that short a site must still be on the stack one period after it grew (the
sampler's attribution resolution is one sampling period). With --phased --pause 0 each site
runs as one block of back-to-back calls with no waiting at all, the way a batch job builds
its data.

churn's buffers are larger than glibc's largest dynamic mmap threshold (32 MiB), so they are
mapped and unmapped each time and never left in the allocator's cache: RSS attribution charges
whoever first touches memory, and memory that an allocator keeps after a free and hands to the
next caller would be charged to the first toucher, not the retainer.

The ground truth is measured in-process: RSS (from /proc/self/statm) before and after every
site call, summed per site. With --bystander, a second thread burns CPU in pure Python and
allocates nothing. Prints `ready`, then at the end one line `truth {json}`, then lingers.
"""

import argparse
import json
import random
import sys
import threading
import time

KEPT = []
STOP = threading.Event()
PAGE = 4096
PAUSE = 0.015


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def pause():
    if PAUSE:
        time.sleep(PAUSE)


def retain_buffers():
    KEPT.append(bytearray(1 << 20))
    pause()


def retain_small_objects():
    KEPT.append([(i, "s%012d" % i) for i in range(4000)])
    pause()


def churn():
    big = bytearray(40 << 20)
    del big
    pause()


def burn():
    x = 0
    while not STOP.is_set():
        for i in range(10000):
            x = (x * 31 + i) % 1000003
    return x


def main():
    global PAUSE, PAGE
    parser = argparse.ArgumentParser()
    parser.add_argument("--buffers-mb", type=int, default=200)
    parser.add_argument("--small-mb", type=int, default=60)
    parser.add_argument("--churn-rounds", type=int, default=60)
    parser.add_argument("--pause", type=float, default=0.015)
    parser.add_argument("--bystander", action="store_true")
    parser.add_argument(
        "--phased",
        action="store_true",
        help="call each site in a block of its own instead of interleaving them at random",
    )
    parser.add_argument("--start-delay", type=float, default=0.3)
    parser.add_argument("--linger", type=float, default=0.3)
    args = parser.parse_args()
    PAUSE = args.pause
    try:
        import resource
        PAGE = resource.getpagesize()
    except ImportError:
        pass
    # An element is a list slot, a 2-tuple, an int and a 13-character str: about 176 bytes.
    small_chunks = max(1, args.small_mb * (1 << 20) // (4000 * 176))
    calls = (
        [retain_buffers] * args.buffers_mb
        + [retain_small_objects] * small_chunks
        + [churn] * args.churn_rounds
    )
    if not args.phased:
        random.Random(7).shuffle(calls)
    bystander = None
    if args.bystander:
        bystander = threading.Thread(target=burn, name="bystander")
        bystander.start()
    print("ready", flush=True)
    time.sleep(args.start_delay)
    truth = {"retain_buffers": 0, "retain_small_objects": 0, "churn": 0}
    # RSS is measured around each block of calls to one site (each call when interleaved).
    blocks = []
    for call in calls:
        if args.phased and blocks and blocks[-1][0] is call:
            blocks[-1][1] += 1
        else:
            blocks.append([call, 1])
    for call, times in blocks:
        before = rss_bytes()
        for _ in range(times):
            call()
        truth[call.__name__] += rss_bytes() - before
        if args.phased:
            # A batch job's phases: a short idle gap (outside every site) between blocks.
            time.sleep(0.05)
    print("truth", json.dumps(truth), flush=True)
    time.sleep(args.linger)
    STOP.set()
    if bystander is not None:
        bystander.join()


if __name__ == "__main__":
    sys.exit(main())
