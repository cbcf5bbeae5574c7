#!/usr/bin/env python3
"""Benchmark (issue #21): pmt-sample's own memory per GiB of target memory it charges, with
the in-kernel capture (the page ledger remembers every resident page's owner).

For each size S (GiB): a target (pyenv 3.12 by default) waits until pmt-sample is attached,
then touches S GiB in 64 MiB bytearrays (one page fault per 4 KiB page: transparent huge
pages are off for memory nobody madvises) and holds it. `pmt-sample --pid P --duration D
--collapsed FILE` (default metric and attribution: rss, kernel) samples it; its peak RSS is
its own `ru_maxrss` from wait4 (pmt-sample is this script's child, the target is not). Each
size runs --repeats times; the figure is the slope of pmt-sample's peak RSS over S between
the smallest and the largest size, against a run whose target touches nothing.

Writes bench/results/ledger_memory.md (or --out).
Usage: python3 bench/ledger_memory.py [--sizes 0,1,2,4] [--repeats 2] [--python PATH]
Needs root (eBPF) and a release build: cargo build --release.
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PMT = os.path.join(ROOT, "target", "release", "pmt-sample")
CHUNK = 64 << 20
PAGE = 4096

TARGET = r"""
import sys, time
gib = float(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
held = []
left = int(gib * (1 << 30))
while left > 0:
    chunk = bytearray(min(%(chunk)d, left))
    for at in range(0, len(chunk), %(page)d):
        chunk[at] = 1
    held.append(chunk)
    left -= len(chunk)
print("done", flush=True)
time.sleep(3600)
""" % {"chunk": CHUNK, "page": PAGE}


def one_run(python, gib, tmp):
    """pmt-sample's peak RSS (KiB) and its summary's first lines, for a target of `gib`."""
    target = subprocess.Popen([python, "-c", TARGET, str(gib)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert target.stdout.readline().strip() == "ready"
        duration = 6 + 4 * gib
        folded = os.path.join(tmp, "ledger.folded")
        pmt = subprocess.Popen([PMT, "--pid", str(target.pid), "--duration", str(duration),
                                "--collapsed", folded],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(2.0)  # attached, capture loaded
        target.stdin.write("go\n")
        target.stdin.flush()
        assert target.stdout.readline().strip() == "done"
        stderr = pmt.stderr.read()
        _, status, usage = os.wait4(pmt.pid, 0)
        pmt.returncode = os.waitstatus_to_exitcode(status)
        if pmt.returncode != 0:
            sys.exit("pmt-sample failed:\n" + stderr)
        charged = [l.strip() for l in stderr.splitlines() if "page faults (" in l][:1]
        return usage.ru_maxrss, charged
    finally:
        target.kill()
        target.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,1,2,4", help="GiB the target touches, comma-separated")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--python", default=os.path.expanduser("~/.pyenv/versions/3.12.1/bin/python3"))
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "ledger_memory.md"))
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="pmt-ledger-") as tmp:
        for repeat in range(args.repeats):
            for gib in sizes:
                peak, charged = one_run(args.python, gib, tmp)
                rows.append((gib, repeat + 1, peak, charged))
                print("%.1f GiB run %d: pmt-sample peak RSS %.1f MiB" % (gib, repeat + 1, peak / 1024),
                      flush=True)
    best = {gib: min(p for g, _, p, _ in rows if g == gib) for gib in sizes}
    low, high = min(sizes), max(sizes)
    slope = (best[high] - best[low]) / 1024 / (high - low)
    lines = [
        "# pmt-sample's own memory per GiB of target memory (kernel attribution)",
        "",
        "Run %s on %s (%d CPUs, load average %s); target %s. Command: `python3 bench/ledger_memory.py "
        "--sizes %s --repeats %d`." % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                       platform.node(), os.cpu_count(),
                                       " ".join(open("/proc/loadavg").read().split()[:3]),
                                       args.python, args.sizes, args.repeats),
        "",
        "The target touches S GiB (4 KiB pages) after pmt-sample has attached and holds it;",
        "pmt-sample's peak RSS is its own `ru_maxrss`.",
        "",
        "| target touches | run | pmt-sample peak RSS | its summary |",
        "| --- | --- | --- | --- |",
    ]
    for gib, repeat, peak, charged in rows:
        lines.append("| %.1f GiB | %d | %.1f MiB | %s |" % (gib, repeat, peak / 1024,
                                                          (charged or ["?"])[0][:160]))
    lines += ["", "pmt-sample's memory per GiB of target memory (least peak of each size, %.1f -> %.1f GiB): "
              "**%.1f MiB per GiB**." % (low, high, slope), ""]
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
