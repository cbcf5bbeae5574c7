"""Two named asyncio tasks taking turns on one event loop: `alpha` spins and allocates in
`alpha_work`, `beta` in `beta_work`, for SECONDS (default 2.5). Kept lists are dropped at
the end of each round, so each task holds what it allocated in its current round."""

import asyncio
import sys
import time

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 2.5


def alpha_work(kept):
    end = time.perf_counter() + 0.004
    while time.perf_counter() < end:
        kept.append([0] * 64)


def beta_work(kept):
    end = time.perf_counter() + 0.004
    while time.perf_counter() < end:
        kept.append(("b",) * 64)


async def alpha_loop(stop):
    kept = []
    while time.monotonic() < stop:
        alpha_work(kept)
        if len(kept) > 20000:
            kept = []
        await asyncio.sleep(0)


async def beta_loop(stop):
    kept = []
    while time.monotonic() < stop:
        beta_work(kept)
        if len(kept) > 20000:
            kept = []
        await asyncio.sleep(0)


async def main():
    stop = time.monotonic() + SECONDS
    a = asyncio.create_task(alpha_loop(stop), name="alpha")
    b = asyncio.create_task(beta_loop(stop), name="beta")
    print("ready", flush=True)
    await asyncio.gather(a, b)


asyncio.run(main())
