"""A thread 50 Python frames deep that keeps running, for stack-read benchmarks.

Usage: python deep_stack.py [DEPTH] [SECONDS]. Prints READY when the stack is built, then
spins in its innermost frame (so the stack stays the same) until SECONDS have passed.
"""
import sys
import time

DEPTH = int(sys.argv[1]) if len(sys.argv) > 1 else 50
SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 600.0


def level(n):
    if n > 1:
        return level(n - 1)
    print("READY", flush=True)
    end = time.time() + SECONDS
    x = 0
    while time.time() < end:
        x += 1
    return x


# <module> is one frame; level() makes the other DEPTH - 1.
level(DEPTH - 1)
