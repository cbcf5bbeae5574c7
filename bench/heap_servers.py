#!/usr/bin/env python3
"""The heap view on a real pre-fork server under loopback load: gunicorn (2 sync workers)
serving bench/workloads/servers/leaky_flask.py, launched under `pmt-sample --subprocesses`
(the hook loads in the master and the workers inherit it), with a mixed load from a client
thread pool on 127.0.0.1; then the same with LEAK=0 (the no-leak control). Prints, per
worker, the leaking handler's share of its `heap`, what the control charges, and the requests'
latency p50/p99 with and without pmt-sample.

Usage: python3 bench/heap_servers.py [--venv DIR] [--seconds S]
(DIR: a venv with gunicorn and flask for the Python to test, e.g.
 python3.12 -m venv /tmp/srv && /tmp/srv/bin/pip install gunicorn flask)
Writes bench/results/heap_servers.md.
"""
import argparse
import collections
import concurrent.futures
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PMT = os.path.join(ROOT, "target", "release", "pmt-sample")
PATHS = ["/leak", "/json", "/floats", "/spin"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(port, seconds):
    """Mixed requests from 4 client threads; returns latencies (s) and failures."""
    end = time.monotonic() + seconds
    latencies, failures = [], 0

    def client(k):
        nonlocal failures
        i = k
        while time.monotonic() < end:
            path = PATHS[i % len(PATHS)]
            i += 1
            start = time.monotonic()
            try:
                urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10).read()
                latencies.append(time.monotonic() - start)
            except Exception:
                failures += 1

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(client, range(4)))
    return sorted(latencies), failures


def wait_up(port):
    for _ in range(200):
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/spin" % port, timeout=1).read()
            return
        except Exception:
            time.sleep(0.05)
    raise RuntimeError("server did not come up")


def run(venv, seconds, leak, under_pmt, tmp):
    port = free_port()
    env = dict(os.environ, LEAK="1" if leak else "0")
    server = [os.path.join(venv, "bin", "gunicorn"), "-w", "2", "-b", "127.0.0.1:%d" % port,
              "--chdir", os.path.join(ROOT, "bench", "workloads", "servers"), "leaky_flask:app"]
    folded = os.path.join(tmp, "heap-%s.folded" % ("leak" if leak else "control"))
    argv = ([PMT, "--subprocesses", "--collapsed", folded, "--"] if under_pmt else []) + server
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_up(port)
        time.sleep(1.0)
        latencies, failures = load(port, seconds)
        time.sleep(1.0)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=60)
    per_worker = collections.defaultdict(lambda: [0, 0])
    if under_pmt:
        with open(folded) as f:
            for line in f:
                stack, weight = line.rsplit(" ", 1)
                frames = stack.split(";")
                process = frames[0]
                per_worker[process][1] += int(weight)
                if any(fr.startswith("remember (") or fr.startswith("leak (") for fr in frames):
                    per_worker[process][0] += int(weight)
    return latencies, failures, dict(per_worker), stderr


def pct(values, p):
    return values[min(len(values) - 1, int(p * len(values)))] * 1000 if values else float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--venv", default="/tmp/srv312")
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="pmt-servers-")
    version = subprocess.run([os.path.join(args.venv, "bin", "python"), "--version"],
                             capture_output=True, text=True).stdout.strip()
    lines = ["# The heap view on gunicorn + Flask under loopback load", "",
             "`python3 bench/heap_servers.py --seconds %g` with %s, %s; 2 sync workers, 4 client"
             " threads cycling /leak, /json, /floats, /spin." % (args.seconds, version,
                                                                 time.strftime("%Y-%m-%d")), ""]
    bare, bare_failures, _, _ = run(args.venv, args.seconds, True, False, tmp)
    lines.append("- without pmt-sample: %d requests, %d failed, latency p50 %.1f ms, p99 %.1f ms"
                 % (len(bare), bare_failures, pct(bare, 0.5), pct(bare, 0.99)))
    for leak in (True, False):
        lat, failures, workers, stderr = run(args.venv, args.seconds, leak, True, tmp)
        lines.append("- under pmt-sample --subprocesses%s: %d requests, %d failed, latency p50"
                     " %.1f ms, p99 %.1f ms" % ("" if leak else " (LEAK=0 control)", len(lat),
                                                failures, pct(lat, 0.5), pct(lat, 0.99)))
        for process, (leaked, total) in sorted(workers.items()):
            lines.append("  - %s: heap %.1f MiB, of it under the leaking handler %.1f MiB (%.0f%%)"
                         % (process[:60], total / 2**20, leaked / 2**20,
                            100.0 * leaked / total if total else 0))
    text = "\n".join(lines) + "\n"
    with open(os.path.join(ROOT, "bench", "results", "heap_servers.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
