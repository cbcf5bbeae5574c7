"""Known Python calls, for the USDT script test (dtrace/py_calls.bt).

Prints "ready", waits for a line on stdin, calls leaf() 5000 times from outer() (called
once), prints "done" and waits for stdin to close.
"""
import sys


def leaf(i):
    return i * 2


def outer():
    total = 0
    for i in range(5000):
        total += leaf(i)
    return total


print("ready", flush=True)
sys.stdin.readline()
outer()
print("done", flush=True)
sys.stdin.read()
