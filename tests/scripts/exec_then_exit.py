"""A program that replaces itself with exec, then ends through interpreter finalisation with
work still going on: the first program builds and keeps strings; the second (the same
interpreter, run again by os.execv) keeps 40,000 dicts in kept_after_exec, starts a daemon
thread that allocates until the interpreter stops it, allocates in an atexit handler, and
exits with status 3.

Usage: exec_then_exit.py
"""
import os, sys, threading, atexit, time
KEEP = []
def kept_after_exec():
    for i in range(40000):
        KEEP.append({"i": i, "s": "k%d" % i})
def churn_forever():
    while True:
        x = [str(i) for i in range(1000)]
if len(sys.argv) > 1 and sys.argv[1] == "--after-exec":
    kept_after_exec()
    threading.Thread(target=churn_forever, daemon=True).start()
    atexit.register(lambda: [bytearray(1000) for _ in range(1000)])
    time.sleep(1.0)
    sys.exit(3)
before = [str(i) * 10 for i in range(20000)]
time.sleep(0.5)
os.execv(sys.executable, [sys.executable, __file__, "--after-exec"])
