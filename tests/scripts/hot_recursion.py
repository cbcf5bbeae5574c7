"""Recurses to every depth from 0 to DEPTH (the first argument, default 20) and back, over
and over, so that the reader of its stack races frames being pushed and popped. A whole stack
is `rec` 0 to DEPTH + 1 times, then `loop`, `main`, `<module>`, and every caller is on its
call line (marked `# @call`). Prints READY, then runs until killed."""

import sys

DEPTH = int(sys.argv[1]) if len(sys.argv) > 1 else 20


def rec(n):
    if n:
        rec(n - 1)  # @call rec


def loop():
    print("READY", flush=True)
    while True:
        for depth in range(DEPTH + 1):
            rec(depth)  # @call loop


def main():
    loop()  # @call main


main()  # @call <module>
