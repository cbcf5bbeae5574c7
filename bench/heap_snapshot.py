#!/usr/bin/env python3
"""How long `pmt heap` takes, how much memory pmt uses and how long `--blocking` pauses the
target, on heaps of N small objects, beside what the in-process tools cost inside the target:
`gc.get_objects()` (alone, and counting its result by type), objgraph's `typestats()` and
guppy3's `hpy().heap()`, where they import.

The target keeps N/2 small containers in a module list (`KEEP`: half one-item lists, half
two-key dicts; N/4 of them on the collector's lists up to 3.13, which untrack a dict of ints
and strings, N/2 on 3.14) plus an int or a string each, so about N
objects in all, prints READY and waits. pmt runs under /usr/bin/time -v (wall time, peak RSS)
twice: reading live (the default) and with `--blocking` (the pause it reports). Then the
target runs each in-process tool on itself when told to, timing it and measuring its own peak
RSS growth meanwhile (VmHWM after `clear_refs` 5, less VmRSS before). The load average is
recorded before each measurement: the machine's 2 cores are shared with other work.
Results go to bench/results/heap_snapshot.md.

    python3 bench/heap_snapshot.py [--python PY]... [--objects N]... [--pmt PATH]
        [--tool-timeout SECS] [--root ROOT] [--out FILE]

`--root ROOT` runs the target (and PY, a path inside it) in that chroot, e.g. Debian sid's
python3.14 in the tests' chroot: `--root /srv/pmt-sid --python /opt/bench-heap-venv-3.14/bin/python`
(the script is written under /tmp, which that chroot shares with the host); pmt runs outside.

PY should have guppy3 and objgraph installed to measure them (a venv:
`python3.12 -m venv target/bench-heap-venv-3.12 &&
target/bench-heap-venv-3.12/bin/pip install guppy3 objgraph`); a tool that does not import
is reported as such. In the sid chroot: `chroot /srv/pmt-sid python3.14 -m venv
/opt/bench-heap-venv-3.14`, then its pip (`SSL_CERT_FILE`/`PIP_CERT` set to the host's CA bundle
copied in, as tests/packages/setup_venvs.sh does) installs guppy3 and objgraph.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

TARGET = r"""
import gc, sys, time
N = int(sys.argv[1])
KEEP = []
for i in range(N // 4):
    KEEP.append([i])
    KEEP.append({"id": i, "name": "row%d" % i})
gc.collect()


def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024


def gc_objects():
    objects = gc.get_objects()
    return "%d objects" % len(objects)


def gc_count():
    counts = {}
    for o in gc.get_objects():
        name = type(o).__name__
        counts[name] = counts.get(name, 0) + 1
    return "%d types" % len(counts)


def objgraph_typestats():
    import objgraph
    return "%d types" % len(objgraph.typestats())


def guppy_heap():
    from guppy import hpy
    heap = hpy().heap()
    return "%d objects" % heap.count


TOOLS = {"gc": gc_objects, "gc_count": gc_count, "objgraph": objgraph_typestats, "guppy": guppy_heap}
print("READY", flush=True)
for line in sys.stdin:
    name = line.strip()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = status("VmRSS")
        t0 = time.perf_counter()
        what = TOOLS[name]()
        seconds = time.perf_counter() - t0
        extra = max(0, status("VmHWM") - before)
        print("TOOL %s ok %.4f %d %s" % (name, seconds, extra, what), flush=True)
    except ImportError as e:
        print("TOOL %s missing 0 0 %s" % (name, e), flush=True)
    gc.collect()
"""

TOOLS = ["gc", "gc_count", "objgraph", "guppy"]


def time_v(command):
    """Runs `command` under /usr/bin/time -v: (wall seconds, CPU seconds, peak RSS MiB)."""
    timed = subprocess.run(
        ["/usr/bin/time", "-v", *command], capture_output=True, text=True, check=True
    )
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", timed.stderr)
    seconds = float(wall.group(1) or 0) * 3600 + float(wall.group(2)) * 60 + float(wall.group(3))
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", timed.stderr).group(1))
    cpu = sum(
        float(re.search(r"%s time \(seconds\): ([\d.]+)" % kind, timed.stderr).group(1))
        for kind in ("User", "System")
    )
    return seconds, cpu, rss_kib / 1024


def pmt_run(pmt, pid, tmp, blocking):
    out = os.path.join(tmp, "heap.json")
    command = [pmt, "heap", "--pid", str(pid), "--json", out]
    if blocking:
        command.append("--blocking")
    load = os.getloadavg()[0]
    seconds, cpu, rss_mib = time_v(command)
    with open(out) as f:
        snap = json.load(f)
    keep = next((h for h in snap["holders"] if h["path"] == "__main__.KEEP"), None)
    return {
        "load": load,
        "objects": snap["objects"],
        "tracked": snap["tracked_objects"],
        "seconds": seconds,
        "cpu_seconds": cpu,
        "walk_seconds": snap["seconds"],
        "rss_mib": rss_mib,
        "peak_cached_mib": snap["peak_cached_bytes"] / 2**20,
        "read_calls": snap["read_calls"],
        "paused": snap.get("paused_seconds"),
        "keep_items": keep["items"] if keep else None,
    }


def tool_run(target, name, timeout):
    load = os.getloadavg()[0]
    target.stdin.write(name + "\n")
    target.stdin.flush()
    deadline = time.monotonic() + timeout
    # The reply is awaited with a deadline: a tool that takes longer is reported as such.
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(target.stdout, selectors.EVENT_READ)
    while time.monotonic() < deadline:
        if sel.select(timeout=max(0.0, deadline - time.monotonic())):
            line = target.stdout.readline()
            if line.startswith("TOOL "):
                _, _, state, seconds, extra, what = line.rstrip("\n").split(" ", 5)
                return {
                    "load": load,
                    "state": state,
                    "seconds": float(seconds),
                    "extra_mib": int(extra) / 2**20,
                    "what": what,
                }
            if not line:
                break
    return {"load": load, "state": "timeout", "seconds": timeout, "extra_mib": 0, "what": ""}


def measure(python, n, pmt, timeout, root=None):
    # `chroot` execs the interpreter: the target's pid is the one Popen gives.
    chroot = ["chroot", root] if root else []
    version = subprocess.run(
        chroot + [python, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if root:
        version += " (chroot %s)" % root
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        script = os.path.join(tmp, "target.py")
        with open(script, "w") as f:
            f.write(TARGET)
        if root and not os.path.exists(os.path.join(root, script.lstrip("/"))):
            sys.exit("%s does not see the host's %s: bind-mount /tmp into it" % (root, tmp))
        target = subprocess.Popen(
            chroot + [python, script, str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert target.stdout.readline().strip() == "READY"
            live = pmt_run(pmt, target.pid, tmp, blocking=False)
            blocking = pmt_run(pmt, target.pid, tmp, blocking=True)
            tools = {}
            for name in TOOLS:
                tools[name] = tool_run(target, name, timeout)
                if tools[name]["state"] == "timeout":
                    break
        finally:
            target.kill()
            target.wait()
    return {"python": version, "n": n, "live": live, "blocking": blocking, "tools": tools}


def tool_cell(t):
    if t is None:
        return "not run"
    if t["state"] == "missing":
        return "not installed"
    if t["state"] == "timeout":
        return "> %.0f s (stopped)" % t["seconds"]
    return "%.2f s, +%.1f MiB (load %.1f)" % (t["seconds"], t["extra_mib"], t["load"])


def report(rows, command):
    lines = [
        "# `pmt heap` snapshot cost",
        "",
        "Written by `bench/heap_snapshot.py` on %s (%d CPUs shared with other work; the load"
        % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.cpu_count()),
        "average before each measurement is given).",
        "",
        "    " + command,
        "",
        "The target keeps N/2 small containers in `__main__.KEEP` (half `[i]`, half",
        '`{"id": i, "name": "row…"}`) and an int or a string each: about N objects, N/4 of them',
        "on the collector's lists (N/2 on 3.14, which no longer untracks dicts of ints and strings:",
        "the tracked column). `pmt heap` runs from outside under `/usr/bin/time -v` (the whole",
        "run: attach, walk, dominators, report; its CPU time, user + system, is less bent by the",
        "load than its wall time), reading live and then with `--blocking`",
        "(the target paused for the read: pmt's own measure of the pause). Then each in-process",
        "tool runs inside the target, timed there, with the target's peak RSS growth meanwhile.",
        "",
        "## pmt heap",
        "",
        "| CPython | N | objects found | tracked | pmt heap s (walk s) | CPU s | pmt peak RSS MiB | MiB per M objects | cache peak MiB | reads | KEEP items | load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        p = r["live"]
        lines.append(
            "| {} | {:,} | {:,} | {:,} | {:.2f} ({:.2f}) | {:.2f} | {:.0f} | {:.0f} | {:.0f} | {:,} | {} | {:.1f} |".format(
                r["python"],
                r["n"],
                p["objects"],
                p["tracked"],
                p["seconds"],
                p["walk_seconds"],
                p["cpu_seconds"],
                p["rss_mib"],
                p["rss_mib"] / (p["objects"] / 1e6),
                p["peak_cached_mib"],
                p["read_calls"],
                p["keep_items"],
                p["load"],
            )
        )
    lines += [
        "",
        "## pmt heap --blocking",
        "",
        "| CPython | N | target paused s | pmt heap s (walk s) | CPU s | pmt peak RSS MiB | load |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        b = r["blocking"]
        lines.append(
            "| {} | {:,} | {} | {:.2f} ({:.2f}) | {:.2f} | {:.0f} | {:.1f} |".format(
                r["python"],
                r["n"],
                "%.2f" % b["paused"] if b["paused"] is not None else "n/a",
                b["seconds"],
                b["walk_seconds"],
                b["cpu_seconds"],
                b["rss_mib"],
                b["load"],
            )
        )
    lines += [
        "",
        "## In-process, in the target (it runs the tool; its time and the target's extra peak RSS)",
        "",
        "| CPython | N | gc.get_objects() | + count by type | objgraph.typestats() | guppy3 hpy().heap() |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        t = r["tools"]
        lines.append(
            "| {} | {:,} | {} | {} | {} | {} |".format(
                r["python"], r["n"], *(tool_cell(t.get(name)) for name in TOOLS)
            )
        )
    guppy = [r["tools"].get("guppy") for r in rows]
    lines += [
        "",
        "What each counts: `gc.get_objects()` and objgraph list the collector's objects only",
        "(the tracked column); guppy3 and pmt also find the ints and strings they hold.",
    ]
    if any(g and g["state"] == "ok" for g in guppy):
        lines.append(
            "guppy3 found: "
            + "; ".join(
                "N=%s: %s" % (format(r["n"], ","), g["what"])
                for r, g in zip(rows, guppy)
                if g and g["state"] == "ok"
            )
            + "."
        )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", action="append", help="interpreter(s) to run the target")
    parser.add_argument(
        "--objects", action="append", type=int, help="N (default 1000000 and 10000000)"
    )
    parser.add_argument(
        "--pmt", default=os.path.join(os.path.dirname(__file__), "..", "target/release/pmt")
    )
    parser.add_argument(
        "--tool-timeout", type=float, default=600, help="seconds an in-process tool may take"
    )
    parser.add_argument("--root", help="a chroot to run the target in (PY is a path inside it)")
    parser.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(__file__), "results", "heap_snapshot.md"),
    )
    args = parser.parse_args()
    pythons = args.python or [sys.executable]
    sizes = args.objects or [1_000_000, 10_000_000]
    rows = []
    for py in pythons:
        for n in sizes:
            rows.append(measure(py, n, args.pmt, args.tool_timeout, args.root))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    command = "python3 bench/heap_snapshot.py " + " ".join(sys.argv[1:])
    text = report(rows, command.strip())
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
