"""Allocation-heavy workload for bench/malloc_counters.py; times itself.

Each round makes objects that go to libc malloc (bytearrays of 1-5 KiB, lists of 200 items)
and objects that pymalloc serves (small dicts, strings, tuples). Prints one JSON line:
{"elapsed": seconds of the timed part, "cpu": CPU seconds of it, "rounds": N}.

Usage: alloc_heavy.py [ROUNDS] [--wait]   (--wait: print "ready" and wait for a stdin line
before the timed part, so a tracer can attach to the pid first)
"""
import json
import sys
import time

args = [a for a in sys.argv[1:] if not a.startswith("--")]
ROUNDS = int(args[0]) if args else 1000000
if "--wait" in sys.argv:
    print("ready", flush=True)
    sys.stdin.readline()

start, cpu = time.perf_counter(), time.process_time()
kept = []
for i in range(ROUNDS):
    block = bytearray(1024 + (i % 64) * 64)
    items = [i] * 200
    record = {"id": i, "name": str(i) * 3, "pair": (i, i + 1)}
    kept.append((block, items, record))
    if len(kept) > 256:
        kept.clear()
elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
print(json.dumps({"elapsed": elapsed, "cpu": cpu, "rounds": ROUNDS}), flush=True)
if "--wait" in sys.argv:
    sys.stdin.read()
