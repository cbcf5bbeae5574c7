#!/usr/bin/env python3
"""Soak benchmark (issues #21 and #22): a long `pmt-sample --pid POOL --subprocesses` attach to a
pool that recycles its workers every few seconds under load, watching what must stay flat.

The pool is bench/workloads/recycling_pool.py (4 workers, each replaced after 40 tasks of ~50 ms:
a new worker about every 0.6 s, each living ~2.5 s; every fifth task in a short-lived thread).
pmt-sample attaches to the pool's master with `--subprocesses` (default metric and attribution,
an aggregated `--collapsed` output, or with --json the timeline of every sample) for --minutes.
Every --every seconds, and at the end, the benchmark prints and records:
- pmt-sample's own RSS (VmRSS), and its peak (VmHWM);
- the occupancy of every in-kernel table pmt-sample has loaded (each BPF hash/LRU map: keys
  counted with the bpf(2) syscall, the maps found through /proc/PID/fdinfo of pmt-sample; per-CPU
  arrays and the ring buffer have a fixed size and are listed as such);
- the load average and how many workers the pool has started so far.
At the end it reads pmt-sample's summary (its in-kernel tallies: events, lost, without a thread
state, processes seen/attached/missed, children followed) and says whether pmt-sample's RSS stayed
within 10 MiB after the first minute (#21) and whether each table's occupancy is flat (the last
readings no higher than the first minute's peak plus a margin: 64 keys or 10%) (#22).

Writes bench/results/soak.md (or --out).
Usage: nice -n 10 python3 bench/soak.py [--minutes 30] [--every 60] [--python PATH]
Needs root (eBPF) and a release build: cargo build --release.
"""

import argparse
import ctypes
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time

from proctree import descendants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PMT = os.path.join(ROOT, "target", "release", "pmt-sample")
POOL = os.path.join(ROOT, "bench", "workloads", "recycling_pool.py")

# bpf(2) on x86-64 and the commands used (include/uapi/linux/bpf.h).
SYS_BPF = 321
BPF_MAP_GET_NEXT_KEY = 4
BPF_MAP_GET_FD_BY_ID = 14
BPF_OBJ_GET_INFO_BY_FD = 15
MAP_TYPES = {1: "hash", 2: "array", 5: "percpu hash", 6: "percpu array", 9: "lru hash",
             10: "lru percpu hash", 27: "ring buffer"}
HASHES = {1, 5, 9, 10}

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


class MapInfo(ctypes.Structure):  # the start of struct bpf_map_info
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("key_size", ctypes.c_uint32), ("value_size", ctypes.c_uint32),
                ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
                ("name", ctypes.c_char * 16)]


def bpf(cmd, attr):
    ret = libc.syscall(SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return ret


def map_ids(pid):
    """The ids of the BPF maps process `pid` holds open."""
    ids = set()
    fdinfo = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(fdinfo):
        try:
            with open(os.path.join(fdinfo, fd)) as f:
                text = f.read()
        except OSError:
            continue
        m = re.search(r"^map_id:\s*(\d+)", text, re.M)
        if m:
            ids.add(int(m.group(1)))
    return sorted(ids)


def map_occupancy(map_id):
    """(name, kind, keys or None, max_entries) of BPF map `map_id`."""
    attr = (ctypes.c_uint32 * 4)(map_id, 0, 0, 0)
    fd = bpf(BPF_MAP_GET_FD_BY_ID, attr)
    try:
        info = MapInfo()
        attr = (ctypes.c_uint64 * 2)()
        ctypes.memmove(attr, (ctypes.c_uint32 * 2)(fd, ctypes.sizeof(info)), 8)
        attr[1] = ctypes.addressof(info)
        bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
        name = info.name.decode(errors="replace")
        kind = MAP_TYPES.get(info.type, f"type {info.type}")
        if info.type not in HASHES:
            return name, kind, None, info.max_entries
        key = ctypes.create_string_buffer(info.key_size)
        next_key = ctypes.create_string_buffer(info.key_size)
        attr = (ctypes.c_uint64 * 3)()
        ctypes.memmove(attr, (ctypes.c_uint32 * 1)(fd), 4)
        attr[1] = 0  # first key
        attr[2] = ctypes.addressof(next_key)
        count = 0
        while True:
            try:
                bpf(BPF_MAP_GET_NEXT_KEY, attr)
            except OSError:
                break  # ENOENT: no more keys
            count += 1
            ctypes.memmove(key, next_key, info.key_size)
            attr[1] = ctypes.addressof(key)
            if count > info.max_entries * 2:
                break  # keys changing under the walk; a full walk was made
        return name, kind, count, info.max_entries
    finally:
        os.close(fd)


def tables(pid):
    out = {}
    for map_id in map_ids(pid):
        try:
            name, kind, keys, size = map_occupancy(map_id)
        except OSError:
            continue
        out[name] = (kind, keys, size)
    return out


def status(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def mib(n):
    return "?" if n is None else f"{n / (1 << 20):.1f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--every", type=float, default=60.0, help="seconds between readings")
    parser.add_argument("--python", default=os.path.join(
        os.popen("pyenv root 2>/dev/null").read().strip() or "/root/.pyenv", "versions", "3.12.1",
        "bin", "python3"))
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--tasks-per-child", type=int, default=40)
    parser.add_argument("--json", action="store_true",
                        help="write the --json timeline (every sample) instead of --collapsed")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "soak.md"))
    args = parser.parse_args()
    if not os.path.exists(PMT):
        sys.exit("bench/soak.py: build first: cargo build --release")
    seconds = args.minutes * 60
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()
    pool = subprocess.Popen([args.python, POOL, "--workers", str(args.workers),
                             "--tasks-per-child", str(args.tasks_per_child)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    assert pool.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    tmp = tempfile.mkdtemp(prefix="pmt-soak-")
    output = ["--json", os.path.join(tmp, "soak.json")] if args.json else \
        ["--collapsed", os.path.join(tmp, "soak.folded")]
    err_path = os.path.join(tmp, "pmt.stderr")
    with open(err_path, "w") as err:
        pmt = subprocess.Popen([PMT, "--pid", str(pool.pid), "--subprocesses", "--duration",
                                str(seconds)] + output,
                               stdout=subprocess.DEVNULL, stderr=err)
    t0 = time.monotonic()
    workers_seen = set()
    readings = []  # (t, rss, hwm, tables, load, workers seen)
    rss_trace = []  # (t, rss) every 5 s while sampling
    writing = []  # RSS while pmt-sample writes its output, after the duration
    next_reading = 0.0
    try:
        while pmt.poll() is None:
            t = time.monotonic() - t0
            workers_seen |= descendants(pool.pid)
            rss = status(pmt.pid, "VmRSS")
            if rss is not None and t < seconds:
                rss_trace.append((t, rss))
            elif rss is not None:
                # Past the duration pmt-sample writes its output: not the attach's footprint.
                writing.append(rss)
            if t >= next_reading and t < seconds:
                occupancy = tables(pmt.pid)
                reading = (t, rss, status(pmt.pid, "VmHWM"), occupancy, os.getloadavg()[0],
                           len(workers_seen))
                readings.append(reading)
                print(f"{t / 60:5.1f} min  pmt RSS {mib(rss)} MiB (peak {mib(reading[2])})  "
                      f"load {reading[4]:.1f}  workers started {len(workers_seen)}  " +
                      "  ".join(f"{n} {k}/{s}" for n, (kind, k, s) in sorted(occupancy.items())
                                if k is not None), flush=True)
                next_reading += args.every
            time.sleep(5.0)
    finally:
        if pmt.poll() is None:
            pmt.send_signal(signal.SIGINT)
        pmt.wait()
        os.killpg(pool.pid, signal.SIGKILL)
        pool.wait()
    load_after = os.getloadavg()
    with open(err_path) as f:
        # One line per process sampled (thousands) is left out.
        summary = "".join(line for line in f
                          if not re.match(r"^ +\d+ +\d+ samples", line))

    # Verdicts.
    after_first = [r for t, r in rss_trace if t >= 60]
    first = [r for t, r in rss_trace if t < 60]
    rss_spread = (max(after_first) - min(after_first)) if after_first else None
    rss_flat = rss_spread is not None and rss_spread <= 10 << 20
    growth_per_worker = "not measured"
    if len(after_first) >= 2 and len(readings) >= 3:
        later = [r for r in readings if r[0] >= 60]
        if len(later) >= 2 and later[-1][5] > later[0][5]:
            per = (later[-1][1] - later[0][1]) / (later[-1][5] - later[0][5])
            growth_per_worker = f"{per / 1024:.0f} KiB per worker started ({later[0][5]} -> {later[-1][5]} workers)"
    names = sorted({n for r in readings for n, v in r[3].items() if v[1] is not None})
    # The first readings with the tables loaded (up to 90 s) against the last three.
    first_minute = [r for r in readings if r[0] <= 90 and r[3]] or readings[1:2]
    last = readings[-3:]
    flat = {}
    for n in names:
        peak_first = max(r[3].get(n, (0, 0, 0))[1] or 0 for r in first_minute)
        peak_last = max(r[3].get(n, (0, 0, 0))[1] or 0 for r in last)
        verdict = "flat" if peak_last <= max(peak_first + 64, peak_first * 1.1) else "GROWING"
        size = max(r[3].get(n, (0, 0, 0))[2] or 0 for r in readings)
        if verdict == "GROWING" and n == "PMT_STACKS" and peak_last < 0.75 * size:
            # pmt-sample empties the stack table for reuse at 75% of its size.
            verdict = "growing, bounded: recycled at 75%% of %d" % size
        flat[n] = (peak_first, peak_last, verdict)

    lines = [
        "# Soak: a long --subprocesses attach to a pool that recycles its workers",
        "",
        f"Run {started} on {platform.node()} ({os.cpu_count()} cores, shared), "
        f"{platform.python_version()} driver, pool on {args.python}; bench/soak.py --minutes "
        f"{args.minutes:g} --every {args.every:g} (run under nice: "
        f"{os.getpriority(os.PRIO_PROCESS, 0)}). Load average before {load_before[0]:.2f} "
        f"{load_before[1]:.2f} {load_before[2]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f} "
        f"{load_after[2]:.2f}.",
        "",
        f"Pool: bench/workloads/recycling_pool.py, {args.workers} workers, maxtasksperchild "
        f"{args.tasks_per_child}: {len(workers_seen)} worker processes started while attached "
        f"(one every {seconds / max(1, len(workers_seen)):.2f} s).",
        f"`pmt-sample --pid POOL --subprocesses --duration {seconds:g} "
        f"{'--json' if args.json else '--collapsed'} FILE` (default metric and attribution"
        f"{'; the JSON timeline keeps every sample' if args.json else ''}).",
        "",
        "| minute | pmt RSS MiB | peak MiB | load | workers started | " +
        " | ".join(names) + " |",
        "|---|---|---|---|---|" + "---|" * len(names),
    ]
    for t, rss, hwm, occupancy, load, seen in readings:
        cells = [f"{occupancy[n][1]}/{occupancy[n][2]}" if n in occupancy else "-" for n in names]
        lines.append(f"| {t / 60:.1f} | {mib(rss)} | {mib(hwm)} | {load:.1f} | {seen} | " +
                     " | ".join(cells) + " |")
    fixed = sorted({(n, v[0], v[2]) for r in readings for n, v in r[3].items() if v[1] is None})
    lines += [
        "",
        "Fixed-size tables (not counted): " +
        ", ".join(f"{n} ({kind}, {size})" for n, kind, size in fixed) + ".",
        "",
        f"pmt-sample RSS: first minute {mib(min(first) if first else None)}-"
        f"{mib(max(first) if first else None)} MiB; after it "
        f"{mib(min(after_first) if after_first else None)}-"
        f"{mib(max(after_first) if after_first else None)} MiB (spread {mib(rss_spread)} MiB: "
        f"{'flat within 10 MiB' if rss_flat else 'NOT flat within 10 MiB'}); "
        f"RSS samples every 5 s while sampling: {len(rss_trace)}; growth after the first minute "
        f"{growth_per_worker}.",
        "",
        f"While writing its output after the duration: RSS up to {mib(max(writing) if writing else None)} MiB "
        f"(VmHWM at the last reading {mib(readings[-1][2] if readings else None)} MiB).",
        "",
        "Tables (peak of the readings up to 90 s -> peak of the last three readings): " +
        "; ".join(f"{n} {a} -> {b} ({verdict})" for n, (a, b, verdict) in flat.items()) + ".",
        "",
        "pmt-sample's summary:",
        "",
        "```",
        summary.strip(),
        "```",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
