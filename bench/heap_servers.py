#!/usr/bin/env python3
"""The heap view on a real pre-fork server under loopback load: gunicorn (2 sync or gthread
workers) serving bench/workloads/servers/leaky_flask.py, or uvicorn (2 workers) serving its
FastAPI twin leaky_fastapi.py, with a mixed load from a client thread pool on 127.0.0.1; then
the same with LEAK=0 (the no-leak control). pmt-sample either launches the
server (`--subprocesses`: the hook loads in the master, the workers inherit it) or, with
--attach, attaches to the running master as users do on a server (`--pid MASTER
--subprocesses`: on 3.14+ the hook is loaded into every process through PEP 768). Prints, per
worker, the leaking handler's share of its `heap` and of its `rss` (the first-touch view, for
comparison), what the control charges, and the requests' latency p50/p99 with and without
pmt-sample.

Usage: python3 bench/heap_servers.py [--server gunicorn|gthread|uvicorn] [--venv DIR] [--root ROOT] [--attach] [--seconds S]
(DIR: a venv with gunicorn, flask, uvicorn and fastapi for the Python to test, e.g.
 python3.12 -m venv /tmp/srv && /tmp/srv/bin/pip install gunicorn flask uvicorn fastapi; with --root, DIR is
 inside the chroot ROOT, e.g. Debian sid's python3.14 in the chroot .ci/setup makes.)
Writes bench/results/heap_servers[-attach]-VERSION.md.
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


def run(args, leak, metric, tmp):
    """One server run: metric None runs it without pmt-sample."""
    port = free_port()
    env = dict(os.environ, LEAK="1" if leak else "0")
    apps = os.path.join(ROOT, "bench", "workloads", "servers")
    server = ([] if not args.root else ["chroot", args.root]) + SERVERS[args.server](
        os.path.join(args.venv, "bin"), port, apps)
    folded = os.path.join(tmp, "%s-%s.folded" % (metric, "leak" if leak else "control"))
    pmt = [PMT, "--subprocesses", "--metric", metric or "heap", "--collapsed", folded] + (
        args.pmt_args.split() if args.pmt_args else [])
    sampler = None
    if metric and not args.attach:
        server = pmt + ["--"] + server
    proc = subprocess.Popen(server, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    stderr = ""
    try:
        wait_up(port)
        time.sleep(1.0)
        if args.attach:
            # A server one attaches to has been serving: its workers' lazy imports, thread
            # pools and caches are made, as they would be in production.
            load(port, WARM_UP_S)
        if metric and args.attach:
            sampler = subprocess.Popen(
                pmt + ["--pid", str(proc.pid), "--duration", str(args.seconds + 1.0)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(1.0)
        latencies, failures = load(port, args.seconds)
        if sampler:
            stderr = sampler.communicate(timeout=60)[1]
        time.sleep(1.0)
    finally:
        proc.terminate()
        server_err = proc.communicate(timeout=60)[1]
        if not sampler:
            stderr = server_err
    # process: [under the leaking handler, all, all but start-up (stacks through imports)]
    per_worker = collections.defaultdict(lambda: [0, 0, 0])
    if metric:
        with open(folded) as f:
            for line in f:
                stack, weight = line.rsplit(" ", 1)
                frames = stack.split(";")
                process = frames[0]
                per_worker[process][1] += int(weight)
                if not any("(<frozen importlib." in fr for fr in frames):
                    per_worker[process][2] += int(weight)
                if any(fr.startswith("remember (") or fr.startswith("leak (") for fr in frames):
                    per_worker[process][0] += int(weight)
    return latencies, failures, dict(per_worker), stderr


WARM_UP_S = 4.0

SERVERS = {
    "gunicorn": lambda bin, port, apps: [
        os.path.join(bin, "gunicorn"), "-w", "2", "-b", "127.0.0.1:%d" % port, "--chdir", apps,
        "leaky_flask:app"],
    "gthread": lambda bin, port, apps: [
        os.path.join(bin, "gunicorn"), "-w", "2", "--threads", "4", "-b", "127.0.0.1:%d" % port,
        "--chdir", apps, "leaky_flask:app"],
    "uvicorn": lambda bin, port, apps: [
        os.path.join(bin, "uvicorn"), "--workers", "2", "--port", str(port), "--app-dir", apps,
        "--log-level", "warning", "leaky_fastapi:app"],
}
DESCRIBED = {
    "gunicorn": "gunicorn + Flask, 2 sync workers",
    "gthread": "gunicorn + Flask, 2 gthread workers of 4 threads",
    "uvicorn": "uvicorn + FastAPI, 2 workers (plain-def handlers in the thread pool)",
}


def pct(values, p):
    return values[min(len(values) - 1, int(p * len(values)))] * 1000 if values else float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--venv", default="/tmp/srv312")
    parser.add_argument("--root", help="a chroot the venv lives in")
    parser.add_argument("--attach", action="store_true",
                        help="attach to the running master instead of launching the server")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--server", choices=sorted(SERVERS), default="gunicorn")
    parser.add_argument("--pmt-args", help="more pmt-sample options, e.g. '--attribution ticks'")
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="pmt-servers-")
    python = ([] if not args.root else ["chroot", args.root]) + [
        os.path.join(args.venv, "bin", "python"), "--version"]
    version = subprocess.run(python, capture_output=True, text=True).stdout.strip()
    how = ("attached by --pid MASTER after %g s of the same load (warm-up)" % WARM_UP_S
           if args.attach else "launched under pmt-sample")
    command = "python3 bench/heap_servers.py --server %s --seconds %g%s%s%s" % (
        args.server, args.seconds, " --attach" if args.attach else "",
        " --root %s --venv %s" % (args.root, args.venv) if args.root else "",
        " --pmt-args '%s'" % args.pmt_args if args.pmt_args else "")
    lines = ["# The heap view on %s under loopback load" % DESCRIBED[args.server], "",
             "`%s` with %s, %s; 4 client threads cycling /leak, /json, /floats, /spin;"
             " pmt-sample --subprocesses %s." % (command, version, time.strftime("%Y-%m-%d"),
                                                 how), ""]
    bare, bare_failures, _, _ = run(args, True, None, tmp)
    lines.append("- without pmt-sample: %d requests, %d failed, latency p50 %.1f ms, p99 %.1f ms"
                 % (len(bare), bare_failures, pct(bare, 0.5), pct(bare, 0.99)))
    for leak, metric in ((True, "heap"), (True, "rss"), (False, "heap")):
        lat, failures, workers, stderr = run(args, leak, metric, tmp)
        lines.append("- `--metric %s`%s: %d requests, %d failed, latency p50 %.1f ms, p99 %.1f ms"
                     % (metric, "" if leak else " (LEAK=0 control)", len(lat), failures,
                        pct(lat, 0.5), pct(lat, 0.99)))
        for process, (leaked, total, running) in sorted(workers.items()):
            lines.append("  - %s: %s %.1f MiB, of it under the leaking handler %.1f MiB (%.0f%%);"
                         " %.1f MiB not in start-up imports, %.0f%% of it the leak's"
                         % (process[:60], metric, total / 2**20, leaked / 2**20,
                            100.0 * leaked / total if total else 0, running / 2**20,
                            100.0 * leaked / running if running else 0))
        if not workers:
            summary = [l.strip() for l in stderr.splitlines() if l.strip().startswith(metric + ":")]
            lines.append("  - no stack charged anything (%s)" % (
                "; ".join(summary)[:300] if summary else stderr.strip()[-300:]))
    text = "\n".join(lines) + "\n"
    name = "heap_servers-%s%s%s-%s.md" % (args.server, "-attach" if args.attach else "",
                                        "-" + "".join(args.pmt_args.split()).strip("-")
                                        if args.pmt_args else "",
                                      version.split()[-1].rsplit(".", 1)[0])
    with open(os.path.join(ROOT, "bench", "results", name), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
