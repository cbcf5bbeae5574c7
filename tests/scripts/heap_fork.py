"""A master that builds and keeps a large table, then forks workers that each keep a little:
for the allocation hook's fork handling. A forked worker starts with an empty hook table, so
none of what the master's stacks counted may be charged to it.

Usage: heap_fork.py [--print-ready]
With --print-ready: prints `ready`, then waits 1.5 s (in short sleeps, so that a hook loaded
through PEP 768 gets in) before building the table. Each of 2 workers waits 0.5 s, keeps
~3 MiB in worker_keep() and exits; the master waits for them.
"""
import os
import sys
import time

TABLE = []
KEPT = []


def master_setup():
    # ~30 MiB of small strings, allocated before any fork.
    TABLE.extend(str(i) * 8 for i in range(400_000))


def worker_keep():
    for i in range(300):
        KEPT.append(bytearray(10_000))
        time.sleep(0.002)


def main():
    if "--print-ready" in sys.argv:
        print("ready", flush=True)
        for _ in range(150):
            time.sleep(0.01)
    master_setup()
    workers = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            time.sleep(0.5)  # pmt has found the worker and read its (empty) table
            worker_keep()
            time.sleep(0.8)
            os._exit(0)
        workers.append(pid)
    for pid in workers:
        os.waitpid(pid, 0)


main()
