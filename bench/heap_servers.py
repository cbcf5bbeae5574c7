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

With --cost, instead: what each part costs the server (bare; pmt-sample's stack reads; its
in-kernel page-fault capture; the hook; and, launched, `memray run` with and without
--trace-python-allocators when memray is in the venv; for gunicorn, the floor under the hook:
the server with bench/empty_hooks.rs's empty reference tracer (3.13+) and pass-through
allocator wrappers installed): latency p50/p99, the server's CPU per request, pmt-sample's own
CPU.

Usage: python3 bench/heap_servers.py [--server gunicorn|gthread|uvicorn] [--venv DIR] [--root ROOT] [--attach] [--seconds S] [--cost [--repeat N]]
(DIR: a venv with gunicorn, flask, uvicorn and fastapi for the Python to test: by default
 target/pkg-venv-3.12, which tests/packages/setup_venvs.sh makes; with --root, DIR is inside the
 chroot ROOT, e.g. /opt/pmt-pkgs-3.14 in Debian sid's chroot. For memray's rows, pip install
 memray into it.)
Writes bench/results/heap_servers[-attach][-cost]-VERSION.md.
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

from heap_hook_cost import EMPTY_HOOKS_WRAPPER, build_empty_hooks
from proctree import descendants

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


def run(args, leak, metric, tmp, extra=(), memray=None, floor=None):
    """One server run: metric None runs it without pmt-sample (with `memray` a list of
    `memray run` options, under memray instead; with `floor` (bench/empty_hooks.rs's library,
    its wrapper and the hooks to install), with those empty hooks installed in the master
    before the server starts, which its forked workers inherit). Returns the latencies,
    failures, the folded profile's totals per process, pmt-sample's stderr, pmt-sample's CPU
    seconds and the server's (all its processes') CPU seconds during the measured load."""
    port = free_port()
    env = dict(os.environ, LEAK="1" if leak else "0")
    apps = os.path.join(ROOT, "bench", "workloads", "servers")
    command = SERVERS[args.server](os.path.join(args.venv, "bin"), port, apps)
    if memray is not None:
        command = [os.path.join(args.venv, "bin", "python"), "-m", "memray", "run", "-q",
                   "--follow-fork", "-o", os.path.join(tmp, "memray-%d.bin" % port)] + memray + [
                       "-m", os.path.basename(command[0])] + command[1:]
    if floor is not None:
        library, wrapper, hooks = floor
        command = [os.path.join(args.venv, "bin", "python"), wrapper, library, hooks] + command
    server = ([] if not args.root else ["chroot", args.root]) + command
    folded = os.path.join(tmp, "%s-%s.folded" % (metric, "leak" if leak else "control"))
    pmt = [PMT, "--subprocesses", "--metric", metric or "heap", "--collapsed", folded] + (
        args.pmt_args.split() if args.pmt_args else []) + list(extra)
    sampler = None
    launched = bool(metric and not args.attach)
    if launched:
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
        # Launched, the server is pmt-sample's child: its CPU is counted below pmt-sample.
        pmt_pid = (sampler or proc).pid
        server_cpu = -tree_cpu_seconds(proc.pid, skip_root=launched)
        cpu = -cpu_seconds(pmt_pid) if metric else None
        latencies, failures = load(port, args.seconds)
        server_cpu += tree_cpu_seconds(proc.pid, skip_root=launched)
        if metric:
            cpu += cpu_seconds(pmt_pid)
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
    return latencies, failures, dict(per_worker), stderr, cpu, server_cpu


def cpu_seconds(pid):
    """The user + system CPU time process `pid` has used so far (its own threads, not its
    children's); 0 once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid, skip_root=False):
    """The CPU time of `pid` and its living descendants (without `pid` itself with
    `skip_root`): the server's master and workers (chroot execs into the server, keeping
    the pid)."""
    pids = descendants(pid) | (set() if skip_root else {pid})
    return sum(cpu_seconds(p) for p in pids)


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
    parser.add_argument("--venv", default=os.path.join(ROOT, "target", "pkg-venv-3.12"))
    parser.add_argument("--root", help="a chroot the venv lives in")
    parser.add_argument("--attach", action="store_true",
                        help="attach to the running master instead of launching the server")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--server", choices=sorted(SERVERS), default="gunicorn")
    parser.add_argument("--pmt-args", help="more pmt-sample options, e.g. '--attribution ticks'")
    parser.add_argument("--cost", action="store_true",
                        help="instead of attribution, what each part costs the server: bare, "
                        "pmt-sample without and with the hook, at ticks and in the kernel, and "
                        "(launched) memray run with and without --trace-python-allocators")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of --cost's conditions")
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
    if args.cost:
        return cost(args, tmp, lines, version)
    bare, bare_failures, _, _, _, _ = run(args, True, None, tmp)
    lines.append("- without pmt-sample: %d requests, %d failed, latency p50 %.1f ms, p99 %.1f ms"
                 % (len(bare), bare_failures, pct(bare, 0.5), pct(bare, 0.99)))
    for leak, metric in ((True, "heap"), (True, "rss"), (False, "heap")):
        lat, failures, workers, stderr, cpu, _ = run(args, leak, metric, tmp)
        lines.append("- `--metric %s`%s: %d requests, %d failed, latency p50 %.1f ms, p99 %.1f ms;"
                     " pmt-sample used %.0f%% of a core"
                     % (metric, "" if leak else " (LEAK=0 control)", len(lat), failures,
                        pct(lat, 0.5), pct(lat, 0.99), 100.0 * cpu / args.seconds))
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
    write(args, lines, version, "")


def cost(args, tmp, lines, version):
    """The cost table: each condition's latency, the server's CPU per request, and
    pmt-sample's own CPU, in rounds so that a drift in the machine's load touches all."""
    conditions = [
        ("bare", None, (), None),
        ("pmt-sample --no-heap --attribution ticks (stack reads only)", "rss",
         ("--no-heap", "--attribution", "ticks"), None),
        ("pmt-sample --no-heap (page faults in the kernel)", "rss", ("--no-heap",), None),
        ("pmt-sample --attribution ticks (the hook, stack reads)", "heap",
         ("--attribution", "ticks"), None),
        ("pmt-sample (default: the hook, page faults in the kernel)", "heap", (), None),
        ("pmt-sample --heap-free-lists off", "heap", ("--heap-free-lists", "off"), None),
    ]
    memray = ([] if not args.root else ["chroot", args.root]) + [
        os.path.join(args.venv, "bin", "python"), "-c", "import memray"]
    if not args.attach and subprocess.run(memray, capture_output=True).returncode == 0:
        conditions += [("memray run --follow-fork", None, (), []),
                       ("memray run --follow-fork --trace-python-allocators", None, (),
                        ["--trace-python-allocators"])]
    floors = {}
    if args.server != "uvicorn":
        # The floor under the hook: what CPython spends calling any allocator wrapper and
        # (3.13+) any reference tracer. gunicorn forks its workers from the master, where the
        # wrapper installs them; uvicorn's workers are spawned, fresh interpreters.
        library = build_empty_hooks(tmp)
        wrapper = os.path.join(tmp, "empty_hooks.py")
        with open(wrapper, "w") as f:
            f.write(EMPTY_HOOKS_WRAPPER)
        python = ([] if not args.root else ["chroot", args.root]) + [
            os.path.join(args.venv, "bin", "python"), "-c",
            "import sys; sys.exit(sys.version_info < (3, 13))"]
        if subprocess.run(python).returncode == 0:
            floors["bare, an empty reference tracer installed"] = (library, wrapper, "tracer")
            floors["bare, an empty tracer and pass-through allocator wrappers installed"] = (
                library, wrapper, "allocators,tracer")
        else:
            floors["bare, pass-through allocator wrappers installed"] = (
                library, wrapper, "allocators")
        conditions += [(label, None, (), None) for label in floors]
    results = collections.defaultdict(list)
    for _ in range(args.repeat):
        for label, metric, extra, memray_options in conditions:
            lat, failures, _, _, cpu, server_cpu = run(args, True, metric, tmp, extra,
                                                       memray_options, floors.get(label))
            results[label].append((lat, failures, cpu, server_cpu))
    lines.append("Load average at the end: %.1f. Server CPU: all its processes' user + system"
                 " time over the measured %g s, per answered request (what the hook and the"
                 " in-kernel probes cost is spent there); pmt-sample's own CPU apart." % (
                     os.getloadavg()[0], args.seconds))
    lines += ["", "| condition | requests | failed | p50 ms | p99 ms | server CPU ms/request"
              " | vs bare | pmt-sample % of a core |", "|---|---|---|---|---|---|---|---|"]
    bare = None
    for label, *_ in conditions:
        runs = results[label]
        lat = sorted(x for r in runs for x in r[0])
        failures = sum(r[1] for r in runs)
        per_request = 1000.0 * sum(r[3] for r in runs) / max(1, len(lat))
        bare = bare or per_request
        pmt = [r[2] for r in runs if r[2] is not None]
        lines.append("| %s | %d | %d | %.1f | %.1f | %.2f | %.2fx | %s |" % (
            label, len(lat), failures, pct(lat, 0.5), pct(lat, 0.99), per_request,
            per_request / bare, "%.1f" % (100.0 * sum(pmt) / (len(pmt) * args.seconds))
            if pmt else "–"))
    write(args, lines, version, "-cost")


def write(args, lines, version, kind):
    text = "\n".join(lines) + "\n"
    name = "heap_servers-%s%s%s%s-%s.md" % (
        args.server, "-attach" if args.attach else "", kind,
        "-" + "".join(args.pmt_args.split()).strip("-") if args.pmt_args else "",
        version.split()[-1].rsplit(".", 1)[0])
    with open(os.path.join(ROOT, "bench", "results", name), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
