"""A target for the bpftrace/DTrace scripts of ``dtrace/``: allocations through each cMemLeak
allocator (C malloc, PyMem_RawMalloc, PyMem_Malloc) and Python objects, in named functions so
the scripts' per-function output has something to show. Prints its PID, then waits ``--delay``
seconds so a script can be attached, e.g.::

    python -m pymemtrace.examples.ex_dtrace --delay 5 &
    sudo bpftrace dtrace/malloc_by_caller.bt $!
"""
import argparse
import os
import sys
import time

from pymemtrace import cMemLeak


def create_cmalloc_list(count: int, size: int) -> list:
    return [cMemLeak.CMalloc(size) for _ in range(count)]


def create_pyrawmalloc_list(count: int, size: int) -> list:
    return [cMemLeak.PyRawMalloc(size) for _ in range(count)]


def create_pymalloc_list(count: int, size: int) -> list:
    return [cMemLeak.PyMalloc(size) for _ in range(count)]


def create_py_strings(count: int, size: int) -> list:
    return [' ' * size for _ in range(count)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m pymemtrace.examples.ex_dtrace')
    parser.add_argument('--delay', type=float, default=0.0, help='Seconds to wait before allocating')
    args = parser.parse_args(argv)
    print(f'PID: {os.getpid()}', flush=True)
    time.sleep(args.delay)
    for size in (256, 4096, 1024 ** 2):
        for make in (create_cmalloc_list, create_pyrawmalloc_list, create_pymalloc_list, create_py_strings):
            kept = make(16, size)
            time.sleep(0.01)
            del kept
    return 0


if __name__ == '__main__':
    sys.exit(main())
