"""A program that exercises memory in C and in Python, in a loop, for watching from outside
(``pmt-sample``, ``process_tree``, the bpftrace scripts of ``dtrace/``): C buffers through
cMemLeak and Python strings, made and freed. ``--seconds`` sets how long it runs."""
import argparse
import os
import sys
import time

from pymemtrace import cMemLeak


def exercise_c_memory(size: int) -> None:
    buffers = [cMemLeak.CMalloc(size) for _ in range(8)]
    time.sleep(0.05)
    del buffers


def exercise_python_memory(size: int) -> None:
    strings = [' ' * size for _ in range(8)]
    time.sleep(0.05)
    del strings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m pymemtrace.examples.ex_memory_exercise')
    parser.add_argument('--seconds', type=float, default=5.0, help='How long to run [default: %(default)s]')
    args = parser.parse_args(argv)
    print(f'PID: {os.getpid()}', flush=True)
    deadline = time.monotonic() + args.seconds
    size = 1024
    while time.monotonic() < deadline:
        exercise_c_memory(size)
        exercise_python_memory(size)
        size = size * 2 if size < 16 * 1024 ** 2 else 1024
    return 0


if __name__ == '__main__':
    sys.exit(main())
