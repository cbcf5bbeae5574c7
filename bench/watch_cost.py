#!/usr/bin/env python3
"""What `pmt heap --diff`'s watchpoints cost the target: a loop appending to 4 module lists
(one append to each per iteration, ROUND iterations per timed round) runs before and while
`pmt heap --diff SECS --watch N` watches N of the lists; the target's rounds that fall inside
the watched part of the window are compared with those before pmt started. Per write: the
extra time of a watched round over the writes it took. Results go to
bench/results/watch_cost.md.

    python3 bench/watch_cost.py [--python PY] [--secs S] [--pmt PATH]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROUND = 10000
PAUSE = 0.05

TARGET = r"""
import sys, time
A = []; B = []; C = []; D = []
ROUND = int(sys.argv[1])
PAUSE = float(sys.argv[2])
def grow():
    a, b, c, d = A.append, B.append, C.append, D.append
    for i in range(ROUND):
        i &= 255
        a(i); b(i); c(i); d(i)
print("READY", flush=True)
while True:
    t0 = time.time()
    grow()
    t1 = time.time()
    print("ROUND %.6f %.6f" % (t0, t1), flush=True)
    time.sleep(PAUSE)
"""


def run(python, pmt, secs, watch):
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "target.py")
        with open(script, "w") as f:
            f.write(TARGET)
        target = subprocess.Popen(
            [python, script, str(ROUND), str(PAUSE)], stdout=subprocess.PIPE, text=True
        )
        rounds = []

        def reader():
            for line in target.stdout:
                if line.startswith("ROUND "):
                    _, t0, t1 = line.split()
                    rounds.append((float(t0), float(t1)))

        try:
            assert target.stdout.readline().strip() == "READY"
            threading.Thread(target=reader, daemon=True).start()
            time.sleep(2)
            out = os.path.join(tmp, "diff.json")
            started = time.time()
            subprocess.run(
                [pmt, "heap", "--pid", str(target.pid), "--diff", str(secs),
                 "--watch", str(watch), "--watch-writes", "1000000000", "--json", out],
                capture_output=True, text=True, check=True,
            )
            with open(out) as f:
                diff = json.load(f)
        finally:
            target.kill()
            target.wait()
    who = diff["growth"].get("who_grew") or {}
    begin = started + diff["before"]["seconds"] + who.get("choosing_seconds", 0)
    end = begin + who.get("watched_seconds", 0)
    base = [t1 - t0 for t0, t1 in rounds if t1 < started]
    inside = [t1 - t0 for t0, t1 in rounds if t0 > begin and t1 < end]
    watched = [h for h in who.get("holders", []) if h.get("refused") is None]
    writes = sum(g["writes"] for h in watched for g in h["grown_by"])
    return statistics.median(base), (statistics.median(inside) if inside else None), len(watched), writes, who.get("watched_seconds", 0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--python", default=os.path.expanduser("~/.pyenv/versions/3.12.1/bin/python"))
    parser.add_argument("--secs", type=float, default=6)
    parser.add_argument("--pmt", default="target/release/pmt")
    args = parser.parse_args()
    version = subprocess.run([args.python, "-c", "import sys; print(sys.version.split()[0])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    lines = [
        "# Watchpoint cost (`pmt heap --diff --watch N`)",
        "",
        f"CPython {version}; a loop appending once to each of 4 module lists per iteration, "
        f"{ROUND:,} iterations ({4 * ROUND:,} appends of small cached ints) per timed round, {PAUSE * 1e3:g} ms apart "
        f"(so that the lists grow by a bounded amount); `pmt heap --diff "
        f"{args.secs:g} --watch N --watch-writes 1000000000` (no write budget; N of the lists watched on the target's one thread). "
        "Median round before pmt started vs while watched; per write: the extra time over the "
        "watched writes of a round. Written by `python3 bench/watch_cost.py`; run `uptime` beside "
        "it: the machine is shared.",
        "",
        "| watched | round before | round watched | slowdown | per watched write | writes counted |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n in (1, 2, 4):
        base, inside, watched, writes, _ = run(args.python, args.pmt, args.secs, n)
        if inside is None:
            lines.append(f"| {n} | {base * 1e3:.1f} ms | (no whole round) | | | {writes:,} |")
            continue
        per = (inside - base) / (watched * ROUND) if watched else 0
        lines.append(
            f"| {watched} | {base * 1e3:.1f} ms | {inside * 1e3:.1f} ms | {inside / base:.1f}x "
            f"| {per * 1e6:.2f} µs | {writes:,} |"
        )
        print(lines[-1], flush=True)
    os.makedirs("bench/results", exist_ok=True)
    with open("bench/results/watch_cost.md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote bench/results/watch_cost.md", file=sys.stderr)


if __name__ == "__main__":
    main()
