"""pmt heap's test program: a small-object leak held in four shapes beside churn.

- KEEP: a module-level list of small dicts;
- Registry.entries: a class-attribute dict of small lists;
- a deque in a closure (make_store's `seen`, appended to through STORE);
- SEEN: a module-level set of strings;
- rows: a local list of small dicts in the `worker` thread's handler();
- PENDING: a suspended generator whose local `rows` is a list of small dicts;
- a thread that keeps allocating and dropping a few small objects.

argv[1] is how many items each holder keeps. Once they are full the program counts
gc.get_objects() by type and prints `COUNTS <json>`, then `READY`, and sleeps.
"""

import collections
import gc
import json
import sys
import threading
import time

N = int(sys.argv[1])

KEEP = []


class Registry:
    entries = {}


def make_store():
    seen = collections.deque()

    def store(item):
        seen.append(item)

    return store


STORE = make_store()
SEEN = set()


def churn():
    # At most 4 tracked dicts and 5 lists alive at any instant (the test allows 5 per type),
    # and a few hundred untracked strings and ints made and dropped each round.
    while True:
        scratch = [{"x": j, "y": [j]} for j in range(4)]
        text = "".join([str(j) for j in range(300)])
        del scratch, text
        time.sleep(0.001)


def handler(ready):
    rows = [{"row": i} for i in range(N)]
    ready.set()
    while True:
        time.sleep(1)


def pending(n):
    rows = [{"pending": i} for i in range(n)]
    yield len(rows)
    yield rows


def type_name(t):
    if t.__module__ == "builtins":
        return t.__qualname__
    return t.__module__ + "." + t.__qualname__


def main():
    for i in range(N):
        KEEP.append({"id": i, "name": "row%d" % i})
        Registry.entries["key%d" % i] = [i, i + 1]
        STORE(("event", i))
        SEEN.add("seen-%d" % i)
    global PENDING
    PENDING = pending(N)
    next(PENDING)
    threading.Thread(target=churn, name="churn", daemon=True).start()
    ready = threading.Event()
    threading.Thread(target=handler, args=(ready,), name="worker", daemon=True).start()
    ready.wait()
    time.sleep(0.2)
    gc.collect()
    # A plain dict, not a Counter: Counter's isinstance(…, Mapping) would add weakrefs to
    # the ABCs' caches while counting.
    counts = {}
    for o in gc.get_objects():
        name = type_name(type(o))
        counts[name] = counts.get(name, 0) + 1
    # The loop variable would keep the last object listed (a holder, named by it).
    del o
    print("COUNTS " + json.dumps(counts), flush=True)
    print("READY", flush=True)
    while True:
        time.sleep(1)


main()
