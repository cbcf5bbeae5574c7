#!/usr/bin/env python3
"""Another way to let the heap view see recycled objects, measured: CPython's free lists
switched off, beside the reference tracer the hook uses (CPython 3.14+).

The hook follows objects that CPython recycles through its free lists (ints, floats, tuples,
lists, dicts, ...) with a reference tracer, which CPython calls at every object's creation and
destruction: on small-object code that call alone costs more than the 1.10x the issue asks
for (bench/results/heap_hook_cost-sid3.14.md). The alternative weighed here: switch the free
lists off while hooked, so that every such object goes through the allocator the hook already
wraps. From 3.14 every free list is one `struct _Py_freelist {freelist, size}` in the
interpreter's `_Py_freelists`, and `size == -1` means disabled (what CPython itself sets at
finalisation): pops find nothing, pushes are refused, and the object is allocated and freed.

Runs, interleaved, best of --repeat, in the chroot (Debian sid's python3.X, whose internal
headers python3.X-dev installs; its gcc compiles `offsetof(PyInterpreterState,
object_state.freelists)`, the size of `_Py_freelists` and where `object_stack_chunks` is,
which the GC's own stacks use and which is left alone):
- bare;
- an empty reference tracer (bench/empty_hooks.rs): the floor under the hook's way;
- free lists off;
- pass-through allocator wrappers (bench/empty_hooks.rs) and free lists off: the floor under
  the other way (the hook would at least wrap the allocator the objects now go through).
The workloads are bench/heap_hook_cost.py's: int arithmetic, recycled objects, small objects.
Writes bench/results/free_lists_off_floor-sidX.Y.md.

Usage: python3 bench/free_lists_off_floor.py [--root /srv/pmt-sid] [--python python3.14] [--repeat 5]
"""

import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import heap_hook_cost  # noqa: E402  (its workloads and timing)

ROOT = heap_hook_cost.ROOT

OFFSETS_C = r"""
#define Py_BUILD_CORE 1
#include <Python.h>
#include "internal/pycore_interp.h"
#include "internal/pycore_freelist_state.h"
#include <stddef.h>
#include <stdio.h>
int main(void) {
    printf("%zu %zu %zu\n", offsetof(PyInterpreterState, object_state.freelists),
           sizeof(struct _Py_freelists) / sizeof(struct _Py_freelist),
           offsetof(struct _Py_freelists, object_stack_chunks) / sizeof(struct _Py_freelist));
    return 0;
}
"""

WRAPPER = """
import ctypes, runpy, sys
offset, count, skip = map(int, sys.argv[3].split(","))
hooks = sys.argv[2].split(",")
library = ctypes.PyDLL(sys.argv[1])
for hook in hooks:
    if hook in ("tracer", "allocators"):
        if getattr(library, "pmt_bench_install_" + {"tracer": "empty_tracer",
                   "allocators": "pass_through_allocators"}[hook])() != 0:
            sys.exit("cannot install the empty %s" % hook)
if "freelists-off" in hooks:
    get = ctypes.pythonapi.PyInterpreterState_Get
    get.restype = ctypes.c_void_p
    lists = (ctypes.c_ssize_t * (2 * count)).from_address(get() + offset)
    # Each list emptied (what it held stays allocated: a few KiB) and disabled.
    for i in range(count):
        if i != skip:
            lists[2 * i], lists[2 * i + 1] = 0, -1
sys.argv = sys.argv[4:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default="/srv/pmt-sid")
    parser.add_argument("--python", default="python3.14")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    chroot = ["chroot", args.root]
    version = subprocess.run(chroot + [args.python, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    if tuple(map(int, version.split(".")[:2])) < (3, 14):
        sys.exit("%s is %s: the free lists are one struct from 3.14 on" % (args.python, version))
    tmp = tempfile.mkdtemp(prefix="pmt-bench-")
    if not os.path.exists(os.path.join(args.root, tmp.lstrip("/"))):
        sys.exit("%s does not see the host's %s: bind-mount /tmp into it" % (args.root, tmp))
    source = os.path.join(tmp, "offsets.c")
    with open(source, "w") as f:
        f.write(OFFSETS_C)
    includes = subprocess.run(chroot + [args.python + "-config", "--includes"],
                              capture_output=True, text=True)
    if includes.returncode != 0:
        sys.exit("%s has no %s-config: apt-get install %s-dev in the chroot"
                 % (args.root, args.python, args.python))
    program = os.path.join(tmp, "offsets")
    subprocess.run(chroot + ["gcc"] + includes.stdout.split() + [source, "-o", program], check=True)
    offsets = ",".join(subprocess.run(chroot + [program], capture_output=True, text=True,
                                      check=True).stdout.split())
    library = heap_hook_cost.build_empty_hooks(tmp)
    wrapper = os.path.join(tmp, "wrapper.py")
    with open(wrapper, "w") as f:
        f.write(WRAPPER)
    scripts = {}
    for name, text in (("ints.py", heap_hook_cost.INTS_SCRIPT),
                       ("recycled.py", heap_hook_cost.RECYCLED_SCRIPT)):
        scripts[name] = os.path.join(tmp, name)
        with open(scripts[name], "w") as f:
            f.write(text)
    workloads = {
        "int arithmetic (%d iterations)" % heap_hook_cost.INTS: [scripts["ints.py"]],
        "recycled objects, four per iteration (%d)" % heap_hook_cost.RECYCLED:
            [scripts["recycled.py"]],
        "small objects (alloc_heavy.py 300000)":
            [os.path.join(ROOT, "bench", "workloads", "alloc_heavy.py"), "300000"],
    }
    variants = {
        "bare": "none",
        "an empty reference tracer (the hook's way, its floor)": "tracer",
        "free lists off": "freelists-off",
        "pass-through allocator wrappers and free lists off (the other way, its floor)":
            "allocators,freelists-off",
    }
    load_before = " ".join("%.2f" % x for x in os.getloadavg())
    results = heap_hook_cost.best_of(workloads, variants, args.repeat, lambda name, script: (
        chroot + [args.python, wrapper, library, variants[name], offsets] + script))
    lines = [
        "# Free lists off vs the reference tracer: two ways to see recycled objects",
        "",
        "`python3 bench/free_lists_off_floor.py --root %s --python %s --repeat %d` on Python %s "
        "(2 cores), interleaved runs, best of %d; the CPU seconds of each workload's timed part; "
        "machine load %s (before) and %s (after). `_Py_freelists` at %s: offset in "
        "`PyInterpreterState`, lists, index of `object_stack_chunks` (left alone)."
        % (args.root, args.python, args.repeat, version, args.repeat, load_before,
           " ".join("%.2f" % x for x in os.getloadavg()), offsets),
        "",
    ]
    for workload, best in results.items():
        lines += heap_hook_cost.slowdown_table(workload, best)
    text = "\n".join(lines)
    out = os.path.join(ROOT, "bench", "results",
                       "free_lists_off_floor-sid%s.md" % ".".join(version.split(".")[:2]))
    with open(out, "w") as f:
        f.write(text)
    print(text)
    print("wrote", out)


if __name__ == "__main__":
    main()
