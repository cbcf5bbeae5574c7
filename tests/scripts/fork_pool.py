"""A master whose two forked pool workers do the work (allocating and freeing for SECONDS,
default 2.5) while it waits. Prints READY once the workers run."""

import multiprocessing
import os
import sys
import time

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 2.5


def work(seconds):
    end = time.time() + seconds
    master = os.getppid()
    kept = []
    # A worker whose master was killed stops too.
    while time.time() < end and os.getppid() == master:
        kept.append(bytearray(100_000))
        if len(kept) > 100:
            kept.clear()
    if os.getppid() != master:
        os._exit(0)
    return seconds


if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    with multiprocessing.Pool(2) as pool:
        result = pool.map_async(work, [SECONDS, SECONDS])
        time.sleep(0.3)
        print("READY", flush=True)
        result.get()
