"""A parent that starts a child and exits at 0.3 s; the orphaned child starts a grandchild at
0.6 s, which runs `grandchild_work` for 0.6 s. Everything has exited after about 1.3 s."""

import os
import time


def grandchild_work():
    end = time.monotonic() + 0.6
    while time.monotonic() < end:
        sum(range(1000))


def child():
    time.sleep(0.6)
    pid = os.fork()
    if pid == 0:
        grandchild_work()
        os._exit(0)
    os.waitpid(pid, 0)
    os._exit(0)


if os.fork() == 0:
    child()
time.sleep(0.3)
