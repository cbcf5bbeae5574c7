"""The kernel_stacks_cost benchmark's target: one timed loop, run once pmt-sample is attached.

    python kernel_cost.py faults-same N DEPTH   touch N fresh pages from one line
    python kernel_cost.py faults-two N DEPTH    touch N fresh pages, alternating two lines
    python kernel_cost.py allocs N DEPTH        N libc allocations of 1000 bytes (bytearray)

The loop runs DEPTH Python frames deep. Prints `ready <pid>`, waits for a line on stdin
(the bench sends it once pmt-sample samples), then prints `elapsed <seconds>` of the loop alone.
"""

import mmap
import sys
import time

PAGE = mmap.PAGESIZE


def faults_same(n):
    mem = mmap.mmap(-1, n * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    start = time.perf_counter()
    for offset in range(0, n * PAGE, PAGE):
        mem[offset] = 1
    return time.perf_counter() - start


def faults_two(n):
    mem = mmap.mmap(-1, n * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    start = time.perf_counter()
    for offset in range(0, n * PAGE, 2 * PAGE):
        mem[offset] = 1
        mem[offset + PAGE] = 2
    return time.perf_counter() - start


def allocs(n):
    start = time.perf_counter()
    for _ in range(n):
        bytearray(1000)
    return time.perf_counter() - start


def deep(depth, loop, n):
    if depth <= 1:
        return loop(n)
    return deep(depth - 1, loop, n)


def main():
    kind, n, depth = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    loop = {"faults-same": faults_same, "faults-two": faults_two, "allocs": allocs}[kind]
    print("ready", flush=True)
    sys.stdin.readline()
    print(f"elapsed {deep(depth, loop, n):.6f}", flush=True)


if __name__ == "__main__":
    main()
