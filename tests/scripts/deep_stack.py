"""Recurses 5,000 deep, deeper than the reader follows, then sleeps at the bottom. Prints
READY."""

import sys
import time

sys.setrecursionlimit(20000)


def bottom():
    print("READY", flush=True)
    time.sleep(3600)


def down(n):
    if n:
        down(n - 1)
    else:
        bottom()


down(5000)
