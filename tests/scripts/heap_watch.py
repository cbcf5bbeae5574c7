"""pmt heap --diff's watchpoint test program: handle() calls remember(), which appends a small
dict to KEEP, a module list, about every millisecond, from a worker thread; STEADY keeps its
size. Prints READY once both exist (KEEP starts with 2,000 dicts, so that it is among the
first snapshot's holders however soon that is taken)."""

import threading
import time

KEEP = [{"n": -i} for i in range(1, 2001)]
STEADY = [{"i": i} for i in range(1000)]


def remember(i):
    KEEP.append({"n": i})


def handle():
    i = 0
    while True:
        remember(i)
        i += 1
        time.sleep(0.001)


worker = threading.Thread(target=handle, name="worker", daemon=True)
worker.start()
print("READY", flush=True)
worker.join()
