"""A small demo program for `pmt dump`: a few threads with readable stacks.

`python3 stack_demo.py --daemon` starts the demo in the background, prints its pid and
returns; the demo exits by itself after 60 seconds.
"""
import os
import sys
import threading
import time


def handle_request(n):
    buffers = [bytearray(1024) for _ in range(n)]
    time.sleep(60)
    return buffers


def worker_loop():
    handle_request(100)


def main():
    threading.Thread(target=worker_loop, name="request-worker", daemon=True).start()
    deadline = time.time() + 60
    while time.time() < deadline:
        sum(i * i for i in range(1000))


if __name__ == "__main__":
    if "--daemon" in sys.argv:
        pid = os.fork()
        if pid:
            print(pid, flush=True)
            time.sleep(0.3)  # let the child build its threads before the caller reads it
            sys.exit(0)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
    main()
