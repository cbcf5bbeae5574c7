#!/usr/bin/env python3
"""Whose is the growth? pmt-sample --metric rss vs austin -m on the ground-truth workload with a
CPU-only bystander thread (bench/workloads/retain_sites.py --bystander).

austin -m charges each sample's RSS delta to the thread it is sampling when the delta is seen;
pmt-sample shares it by per-thread page faults. Reported: the share of growth charged to the
bystander thread (it allocates nothing) and to the transient site (`churn`), and the split between
the two retaining sites against the workload's own in-process measurement.

Writes bench/results/attribution_vs_austin.md.
Usage: python3 bench/attribution_vs_austin.py [--python PATH] [--austin /opt/peers/bin/austin]
"""

import argparse
import json
import os
import shutil
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SITES = ("retain_buffers", "retain_small_objects", "churn")


def site_of(frames):
    for site in SITES:
        if any(f.startswith(site + " (") or (":" + site + ":") in f or f.startswith(site + ";") for f in frames):
            return site
    return "other"


def start(python):
    target = subprocess.Popen([python, os.path.join(ROOT, "bench/workloads/retain_sites.py"), "--bystander", "--start-delay", "1.5"],
                              stdout=subprocess.PIPE, text=True)
    assert target.stdout.readline().strip() == "ready"
    return target


def truth_of(target):
    rest = target.stdout.read()
    target.wait()
    line = next(l for l in rest.splitlines() if l.startswith("truth "))
    return json.loads(line[len("truth "):])


def run_pmt(python, out):
    target = start(python)
    subprocess.run([os.path.join(ROOT, "target/release/pmt-sample"), "--pid", str(target.pid), "--threads",
                    "--collapsed", out], check=True, stderr=subprocess.DEVNULL)
    truth = truth_of(target)
    by_site, by_thread = {}, {}
    for line in open(out):
        stack, weight = line.rstrip("\n").rsplit(" ", 1)
        frames = stack.split(";")
        w = int(weight)
        by_site[site_of(frames)] = by_site.get(site_of(frames), 0) + w
        thread = "bystander" if frames[0].startswith("thread bystander") else "other"
        by_thread[thread] = by_thread.get(thread, 0) + w
    return truth, by_site, by_thread


def run_austin(python, austin, out):
    target = start(python)
    subprocess.run([austin, "-m", "-i", "10000", "-p", str(target.pid), "-o", out], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    truth = truth_of(target)
    by_site, by_thread = {}, {}
    for line in open(out, errors="replace"):
        if line.startswith("#") or not line.startswith("P"):
            continue
        stack, _, value = line.rstrip("\n").rpartition(" ")
        try:
            delta = int(value)
        except ValueError:
            continue
        if delta <= 0:
            continue
        frames = stack.split(";")
        py_frames = [f.split(":")[1] + " (" for f in frames[2:] if f.count(":") >= 2]
        site = site_of(py_frames)
        by_site[site] = by_site.get(site, 0) + delta
        thread = "bystander" if any(f.startswith("burn (") for f in py_frames) else "other"
        by_thread[thread] = by_thread.get(thread, 0) + delta
    return truth, by_site, by_thread


def row(name, truth, by_site, by_thread):
    total = sum(by_site.values()) or 1
    retained = (by_site.get("retain_buffers", 0) + by_site.get("retain_small_objects", 0)) or 1
    t_ret = truth["retain_buffers"] + truth["retain_small_objects"]
    return "| %s | %.1f %% | %.1f %% | %.3f (truth %.3f) | %.0f MiB |" % (
        name, 100.0 * by_thread.get("bystander", 0) / total, 100.0 * by_site.get("churn", 0) / total,
        by_site.get("retain_buffers", 0) / retained, truth["retain_buffers"] / t_ret, total / 2**20)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--python", default="/root/.pyenv/versions/3.11.7/bin/python3.11")
    parser.add_argument("--austin", default=shutil.which("austin") or "/opt/peers/bin/austin")
    args = parser.parse_args()
    scratch = "/tmp/pmt_attr_%d" % os.getpid()
    os.makedirs(scratch, exist_ok=True)
    rows = [row("pmt-sample --metric rss (100 Hz)", *run_pmt(args.python, os.path.join(scratch, "pmt.folded")))]
    if os.path.exists(args.austin):
        rows.append(row("austin -m (100 Hz)", *run_austin(args.python, args.austin, os.path.join(scratch, "austin.txt"))))
    else:
        rows.append("| austin -m | not installed | | | |")
    path = os.path.join(ROOT, "bench/results/attribution_vs_austin.md")
    with open(path, "w") as f:
        f.write("# Whose is the growth: pmt-sample vs austin -m\n\n")
        f.write("Written by `python3 bench/attribution_vs_austin.py` on %s, target %s running "
                "`bench/workloads/retain_sites.py --bystander` (a second thread only burns CPU).\n\n"
                % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), args.python))
        f.write("For austin, growth is the sum of its positive RSS deltas; for pmt-sample, the `rss` weights. "
                "Truth: the workload's own RSS measurement around each site call.\n\n")
        f.write("| profiler | bystander thread's share | transient site's share | retain_buffers : retained | growth charged |\n")
        f.write("|---|---|---|---|---|\n")
        f.write("\n".join(rows) + "\n")
    print(open(path).read())


if __name__ == "__main__":
    main()
