"""A small-object leak beside heavy churn, in four holder shapes: each iteration keeps a few
hundred small objects (dicts in a module-level list, tuples in a class-attribute dict,
instances in a deque held by a closure, strings in a module-level set) and builds and drops
thousands more. What is kept is allocated only by the `keep_*` functions.

Usage: heap_leak_churn.py [SECONDS] [--print-ready] [--keep SHAPES]
SHAPES is a comma-separated subset of dicts,tuples,items,strings (default: all four); strings
are kept by a worker thread (one per iteration). Dicts, tuples and the floats in them are
types CPython keeps free lists of: their objects are recycled from what churn() freed, not
allocated anew. Prints `ready` once started (for tests that attach), then `kept` and `iterations N`.
"""
import threading
import collections
import sys
import time

KEEP = []
SEEN = set()


class Registry:
    entries = {}


class Item:
    __slots__ = ("a", "b")

    def __init__(self, a, b):
        self.a = a
        self.b = b


def make_store():
    store = collections.deque()

    def remember(item):
        store.append(item)

    return remember, store


REMEMBER, STORE = make_store()


def keep_dicts(i):
    for j in range(50):
        KEEP.append({"i": i, "j": j, "name": "k%d_%d" % (i, j)})


def keep_tuples(i):
    for j in range(50):
        Registry.entries[(i, j)] = (i, j, float(i * j))


def keep_items(i):
    for j in range(50):
        REMEMBER(Item(i, "item-%d-%d" % (i, j)))


def keep_strings(i):
    for j in range(50):
        SEEN.add("seen-%d-%d-%s" % (i, j, "x" * (j % 7)))


def churn(i):
    rows = [{"a": k, "b": str(k), "c": [k, k + 1]} for k in range(2000)]
    text = ",".join(r["b"] for r in rows)
    pairs = [(k, k * 2.5) for k in range(2000)]
    return len(text) + len(pairs)


def keep_strings_in_a_thread(i):
    worker = threading.Thread(target=keep_strings, args=(i,), name="keeper")
    worker.start()
    worker.join()


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else 3.0
    shapes = "dicts,tuples,items,strings"
    if "--keep" in sys.argv:
        shapes = sys.argv[sys.argv.index("--keep") + 1]
    keepers = {
        "dicts": keep_dicts,
        "tuples": keep_tuples,
        "items": keep_items,
        "strings": keep_strings_in_a_thread,
    }
    chosen = [keepers[name] for name in shapes.split(",")]
    if "--print-ready" in sys.argv:
        print("ready", flush=True)
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        for keep in chosen:
            keep(i)
        churn(i)
        i += 1
    # Hold what was kept past the sustained-peak window.
    time.sleep(0.5)
    print("kept", flush=True)
    print("iterations %d" % i, flush=True)


if __name__ == "__main__":
    main()
