"""pmt heap's real-program test: networkx builds a graph, runs algorithms on it, and the
program holds the results; then it counts its own objects by type, as `gc.get_objects()` and
`sys.getsizeof` see them, prints `COUNTS <json>` and `READY`, and sleeps while pmt reads it.

The counts are of the objects on the collector's lists (what `gc.get_objects()` returns):
objects the collector does not track (str, int, float, and dicts and tuples it untracked)
are not listed by it, so they are not compared here. Code objects are not tracked either:
they are counted apart (`code`), as the code of every function on those lists and the code
nested in its constants, which pmt reaches only by following functions into their code.
Type objects the collector lists are classes; built-in types, which it does not track, all
have `sys.getsizeof(int)`'s size.

Two lists are held only through objects pmt follows by fixed members: one in the closure of
a property's getter (`Settings.rows` → `fget`), one in the closure of a weak reference's
callback (`WATCH` → `__callback__`; its referent, a weak reference, is not followed). A
suspended generator (`BATCHES`) holds a list in its frame. Subclasses of set, deque and
weakref.ref (`TAGS`, `RING`, a WeakValueDictionary's references) are read as their bases.
"""

import collections
import gc
import json
import sys
import time
import weakref

import networkx as nx

GRAPH = nx.gnm_random_graph(3000, 12000, seed=19)
for node, data in GRAPH.nodes(data=True):
    data["label"] = "node-%d" % node
    data["weight"] = node % 7
for u, v, data in GRAPH.edges(data=True):
    data["weight"] = (u * v) % 11 + 1
PATHS = nx.single_source_dijkstra_path(GRAPH, 0)
COMPONENTS = [sorted(c) for c in nx.connected_components(GRAPH)]
TREE = nx.minimum_spanning_tree(GRAPH)
CORE = nx.core_number(GRAPH)
DIGRAPH = nx.bfs_tree(GRAPH, 0)


def make_getter(rows):
    def get(self):
        return rows

    return get


def make_callback(pending):
    def forget(ref):
        pending.clear()

    return forget


class Settings:
    rows = property(make_getter([float(i) for i in range(30000)]))


WATCH = weakref.ref(Settings, make_callback([str(i) for i in range(30000)]))


def batches(nodes):
    pending = sorted(nodes)
    while pending:
        yield pending[:100]
        del pending[:100]


# A suspended generator: pmt sizes it from its code and follows its frame's locals.
BATCHES = batches(GRAPH.nodes)
next(BATCHES)



# Subclasses of built-ins no type flag marks, read as their base: a set, a deque (whose
# blocks `sys.getsizeof` counts) and the weak references of a WeakValueDictionary
# (`weakref.KeyedRef`, whose callback is followed).
class Tags(set):
    pass


class Ring(collections.deque):
    pass


TAGS = Tags("tag-%d" % i for i in range(2000))
RING = Ring((u, v) for u, v in list(GRAPH.edges)[:1500])
BY_NODE = weakref.WeakValueDictionary()
for name in ("Graph", "DiGraph", "MultiGraph"):
    BY_NODE[name] = getattr(nx, name)


def type_name(t):
    if t.__module__ == "builtins":
        return t.__qualname__
    return t.__module__ + "." + t.__qualname__


def own_code():
    """How many code objects the functions on the collector's lists hold (their `__code__`
    and the code objects nested in its constants), and the sum of their `sys.getsizeof`."""
    seen = {}
    todo = [f.__code__ for f in gc.get_objects() if type(f) is type(own_code)]
    while todo:
        code = todo.pop()
        if id(code) in seen:
            continue
        seen[id(code)] = sys.getsizeof(code)
        todo.extend(c for c in code.co_consts if type(c) is type(code))
    return {"count": len(seen), "bytes": sum(seen.values())}


def main():
    gc.collect()
    counts = {}
    sizes = {}
    # A plain dict, not a Counter (its isinstance checks would add to the ABCs' caches).
    for o in gc.get_objects():
        name = type_name(type(o))
        counts[name] = counts.get(name, 0) + 1
        sizes[name] = sizes.get(name, 0) + sys.getsizeof(o)
    del o
    code = own_code()
    print(
        "COUNTS "
        + json.dumps(
            {
                "counts": counts,
                "sizes": sizes,
                "code": code,
                # Every built-in (static) type has this size; the collector tracks none.
                "static_type_size": sys.getsizeof(int),
            }
        ),
        flush=True,
    )
    print("READY", flush=True)
    while True:
        time.sleep(1)


main()
