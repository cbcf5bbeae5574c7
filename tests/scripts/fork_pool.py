"""A master whose two forked pool workers do the work (allocating and freeing for 2.5 s) while
it waits. Prints READY once the workers run."""

import multiprocessing
import time


def work(seconds):
    end = time.time() + seconds
    kept = []
    while time.time() < end:
        kept.append(bytearray(100_000))
        if len(kept) > 100:
            kept.clear()
    return seconds


if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    with multiprocessing.Pool(2) as pool:
        result = pool.map_async(work, [2.5, 2.5])
        time.sleep(0.3)
        print("READY", flush=True)
        result.get()
