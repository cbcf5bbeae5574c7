#!/usr/bin/env python3
"""Whose is the memory, on real programs? pmt-sample --metric rss against memray's high-water mark.

Workloads (bench/workloads/real/) run real work in PyPI packages nobody here wrote: a pandas pipeline
on a ~200 MB CSV, a networkx graph of 1.2M edges, mypy checking two installed packages. Each runs
under `memray run` (the reference: what each stack holds at memray's high-water mark) and under
pmt-sample, launched and attached by pid, once per attribution mode. Both sides are keyed by the
innermost frame in the workload's package (`pandas/core/reshape/concat.py:concat_compat`; anything
without such a frame is `<other>`), normalised, and compared by total-variation distance.

With --heap it compares the live-heap view instead: `pmt-sample --metric heap` (the allocation hook,
launched: the target's CPython is 3.13, whose reference tracer the hook needs to see objects recycled
through free lists) against `memray run --trace-python-allocators` (every Python allocation, free lists
aside), keyed the same way; the packages are installed into bench/.venv-real-3.13 (pyenv's 3.13).
`memray run` imports its own modules before it tracks and runs the workload, which then finds
them imported; so that pmt-sample's run does the same work, its workload first imports the
modules memray's had (common.preimport, PMT_BENCH_PREIMPORT), and what that allocates is left out
of pmt-sample's side (memray never tracked it). --runs N launches pmt-sample N times against the
one memray run (each a row; sampling makes each run differ).

With --slowdown it instead times the pandas workload side by side: no profiler, pmt-sample in each
mode, memray run; best of --repeat runs, interleaved.

The packages and memray are installed from PyPI into bench/.venv-real (CPython 3.12 from pyenv);
the CSV is generated once into bench/.data-real. Both are git-ignored.

Writes bench/results/attribution_vs_memray.md (or attribution_vs_memray_heap.md, slowdown_vs_memray.md).
Usage: python3 bench/attribution_vs_memray.py [--modes default|ticks,kernel] [--workloads pandas,networkx,mypy]
           [--pmt-bin DIR] [--out FILE] [--heap [--heap-sample-bytes N] [--runs N]] [--slowdown [--repeat N]]
"""

import argparse
import glob
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, "bench/.venv-real")
# --heap: the live-heap view against memray --trace-python-allocators, on CPython 3.13.
HEAP = {"on": False, "venv": os.path.join(ROOT, "bench/.venv-real-3.13"), "python": "3.13",
        "sample_bytes": None}
REAL = os.path.join(ROOT, "bench/workloads/real")
RESULTS = os.path.join(ROOT, "bench/results")
# Pinned so that a rerun profiles the same code. mypy from its sdist: interpreted, so its frames are
# Python frames (the wheel is compiled with mypyc and shows none).
PINS = ["pandas==3.1.1", "numpy==2.5.5", "networkx==3.7", "memray==1.20.0"]
SOURCE_PINS = ["mypy==2.4.1"]
# name: (workload file, the package whose frames key the memory, needs --prepare first)
WORKLOADS = {
    "pandas": ("pandas_pipeline.py", "pandas", True),
    "networkx": ("networkx_graph.py", "networkx", False),
    "mypy": ("mypy_check.py", "mypy", False),
}
OTHER = "<other>"
RATE = 1000
# memray's options timed by --slowdown: the reference runs with none (see the results file)
MEMRAY_VARIANTS = [[], ["--native"], ["--trace-python-allocators"]]
TOP = 8


def fail(message):
    sys.exit("attribution_vs_memray: " + message)


SHORT = {ROOT + "/": "./"}  # and the private copy of pmt-sample: `pmt-sample` (snapshot())


def rel(text):
    """Command text with this checkout's path shortened to `.`."""
    for long, short in SHORT.items():
        text = text.replace(long, short)
    return text


# ---- setup ---------------------------------------------------------------------------------------

def pyenv_python(minor="3.12"):
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        root = os.path.expanduser("~/.pyenv")
    found = sorted(glob.glob(os.path.join(root, "versions/%s.*/bin/python" % minor)))
    if not found:
        fail("no CPython %s under %s/versions (pyenv install %s) to make %s with" % (minor, root, minor, rel(venv())))
    return found[-1]


def venv():
    return HEAP["venv"] if HEAP["on"] else VENV


def ensure_venv():
    """bench/.venv-real (or, with --heap, bench/.venv-real-3.13) with the pinned packages; returns
    its python."""
    python = os.path.join(venv(), "bin/python")
    stamp = os.path.join(venv(), "pins.txt")
    wanted = " ".join(PINS + SOURCE_PINS)
    if os.path.exists(stamp) and open(stamp).read() == wanted:
        return python
    print("installing %s into %s" % (wanted, rel(venv())), flush=True)
    steps = [[pyenv_python(HEAP["python"] if HEAP["on"] else "3.12"), "-m", "venv", venv()],
             [python, "-m", "pip", "install", "-q"] + PINS,
             [python, "-m", "pip", "install", "-q", "--no-binary", "mypy"] + SOURCE_PINS]
    for step in steps:
        if subprocess.run(step).returncode != 0:
            fail("could not set up %s: `%s` failed" % (rel(venv()), rel(shlex.join(step))))
    with open(stamp, "w") as f:
        f.write(wanted)
    return python


def pmt_sample_of(bin_dir, modes):
    path = os.path.join(bin_dir, "pmt-sample")
    if not os.access(path, os.X_OK):
        fail("no pmt-sample in %s (cargo build --release, or pass --pmt-bin DIR)" % bin_dir)
    if any(mode not in ("default", "free-lists-off") for mode in modes):
        usage = subprocess.run([path, "--help"], capture_output=True, text=True).stdout
        if "--attribution" not in usage:
            fail("%s has no --attribution option; run with --modes default" % path)
    return path


def snapshot(pmt_sample, scratch):
    """A private copy of pmt-sample, so a rebuild during the run cannot mix two builds; returns
    (its path, a line naming the build)."""
    copy = os.path.join(scratch, "pmt-sample")
    shutil.copy2(pmt_sample, copy)
    SHORT[copy] = "pmt-sample"
    digest = hashlib.sha256(open(copy, "rb").read()).hexdigest()[:12]
    version = subprocess.run([copy, "--version"], capture_output=True, text=True).stdout.strip()
    built = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(os.path.getmtime(pmt_sample)))
    return copy, "`pmt-sample` is a copy of %s (%s, built %s, sha256 %s…)" % (pmt_sample, version, built, digest)


def mode_args(mode):
    """`default` is pmt-sample with no --attribution flag (its own choice); `free-lists-off`
    is the default with `--heap-free-lists off` (with --heap: recycled objects left to whoever
    allocated their memory, as an allocator hook alone, memray's included, sees them)."""
    if mode == "free-lists-off":
        return ["--heap-free-lists", "off"]
    return [] if mode == "default" else ["--attribution", mode]


def prepare(python, workloads):
    for name in workloads:
        script, _, needs_prepare = WORKLOADS[name]
        if needs_prepare and subprocess.run([python, os.path.join(REAL, script), "--prepare"],
                                            stdout=subprocess.DEVNULL).returncode != 0:
            fail("preparing the %s workload's input failed (%s --prepare)" % (name, script))


# ---- keying: the innermost frame in the package ----------------------------------------------------

def package_file(filename, package):
    """`pandas/core/frame.py` for a file of the package under site-packages, else None."""
    marker = "/site-packages/"
    at = filename.rfind(marker)
    if at < 0:
        return None
    inside = filename[at + len(marker):]
    return inside if inside.startswith(package + "/") else None


def key_of(frames, package):
    """frames: (function, filename) pairs, innermost first. The function is reduced to its bare name
    (`DataFrame.__init__` -> `__init__`): memray reports co_name, pmt-sample the qualified name."""
    for function, filename in frames:
        inside = package_file(filename, package)
        if inside:
            return "%s:%s" % (inside, function.rsplit(".", 1)[-1])
    return OTHER


def add(weights, key, value):
    weights[key] = weights.get(key, 0) + value


def normalised(weights):
    total = sum(weights.values()) or 1
    return {key: value / total for key, value in weights.items()}


def tvd(p, q):
    return 0.5 * sum(abs(p.get(key, 0.0) - q.get(key, 0.0)) for key in set(p) | set(q))


# ---- the reference: memray's high-water mark --------------------------------------------------------

MEMRAY_READER = r"""
import json, sys, memray
reader = memray.FileReader(sys.argv[1])
records = [(r.size, [(f, file) for f, file, _ in r.stack_trace()])
           for r in reader.get_high_watermark_allocation_records(merge_threads=True)]
json.dump({"peak": reader.metadata.peak_memory, "records": records}, sys.stdout)
"""


def modules_file(scratch, package):
    """Where the memray run's workload lists the modules imported when it started (common.py)."""
    return os.path.join(scratch, "memray-%s-modules.txt" % package)


def memray_weights(python, script, package, scratch):
    """Runs the workload under memray; returns (bytes by key, memray's peak, the command)."""
    out = os.path.join(scratch, "memray-%s.bin" % package)
    command = [python, "-m", "memray", "run", "-q", "-f"] + (
        ["--trace-python-allocators"] if HEAP["on"] else []) + ["-o", out, script]
    run_checked(command, os.path.join(scratch, "memray-%s.log" % package),
                dict(os.environ, PMT_BENCH_MODULES_OUT=modules_file(scratch, package)))
    read = subprocess.run([python, "-c", MEMRAY_READER, out], capture_output=True, text=True)
    if read.returncode != 0:
        fail("reading %s with memray.FileReader failed: %s" % (out, read.stderr.strip().splitlines()[-1:]))
    data = json.loads(read.stdout)
    os.remove(out)
    weights = {}
    for size, frames in data["records"]:
        add(weights, key_of(frames, package), size)
    return weights, data["peak"], command


def run_checked(command, log, env=None):
    with open(log, "w") as f:
        status = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if status != 0:
        fail("`%s` exited with status %d (output in %s)" % (rel(shlex.join(command)), status, log))


# ---- ours: pmt-sample, launched and attached ----------------------------------------------------------

def pmt_options(mode, out):
    sampling = ["--heap-sample-bytes", str(HEAP["sample_bytes"])] if HEAP["sample_bytes"] else []
    return ["--rate", str(RATE), "--metric", "heap" if HEAP["on"] else "rss"] + sampling + mode_args(mode) + [
        "--json", out + ".json", "--collapsed", out + ".folded"]


def pmt_launch(pmt_sample, python, script, mode, out, preimport=None):
    """preimport: a file of module names for the workload to import first (common.preimport)."""
    command = [pmt_sample] + pmt_options(mode, out) + ["--", python, script]
    run_checked(command, out + ".log", dict(os.environ, PMT_BENCH_PREIMPORT=preimport) if preimport else None)
    return (["env", "PMT_BENCH_PREIMPORT=" + preimport] if preimport else []) + command


def pmt_attach(pmt_sample, python, script, mode, out):
    """Starts the workload gated (common.run), attaches by pid, then lets it go once pmt-sample
    says it is sampling, so the attached run sees the same program as the launched one."""
    env = dict(os.environ, PMT_BENCH_GATE="1")
    target = subprocess.Popen([python, script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    if target.stdout.readline().strip() != "ready":
        fail("%s did not reach its start gate" % script)
    command = [pmt_sample, "--pid", str(target.pid)] + pmt_options(mode, out)
    with open(out + ".log", "w") as log:
        sampler = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        if not sampling(out + ".log", sampler):
            for process in (target, sampler):
                process.kill()
            fail("pmt-sample did not start sampling (log %s)" % (out + ".log"))
        target.stdin.write("go\n")
        target.stdin.close()
        target.stdout.read()
        status = (target.wait(), sampler.wait())
    if status != (0, 0):
        fail("attached run failed: workload status %d, pmt-sample status %d (log %s)" % (status + (out + ".log",)))
    return command


def sampling(log, sampler, timeout=20.0):
    """Whether pmt-sample says it is sampling within the timeout."""
    deadline = time.monotonic() + timeout
    while "sampling process" not in open(log).read():
        if sampler.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


PREIMPORT = os.path.join(REAL, "common.py")


def pmt_weights(out, package):
    """rss (or heap) bytes by key from the folded stacks (root first; frames `function (file:line)`),
    the summary, and the bytes left out: those under common.preimport (see the docstring)."""
    weights, left_out = {}, 0
    for line in open(out + ".folded"):
        stack, _, weight = line.rstrip("\n").rpartition(" ")
        frames = []
        for frame in reversed(stack.split(";")):
            function, _, where = frame.rpartition(" (")
            frames.append((function, where[:-1].rpartition(":")[0]) if function else (frame, ""))
        if ("preimport", PREIMPORT) in frames:
            left_out += int(weight)
            continue
        add(weights, key_of(frames, package), int(weight))
    summary = json.load(open(out + ".json"))["summary"]
    return weights, summary, left_out


# ---- the comparison ---------------------------------------------------------------------------------

def compare(name, python, pmt_sample, modes, scratch, runs=1):
    """One workload: memray once, pmt-sample launched and attached per mode (with --heap: launched,
    `runs` times)."""
    script, package, _ = WORKLOADS[name]
    path = os.path.join(REAL, script)
    print("%s: memray run ..." % name, flush=True)
    weights, peak, command = memray_weights(python, path, package, scratch)
    result = {"name": name, "script": script, "memray": normalised(weights), "memray_peak": peak,
              "commands": [("memray", command)], "runs": []}
    for mode in modes:
        preimport = modules_file(scratch, package)
        hows = [("launched" + (" #%d" % i if runs > 1 else ""),
                 lambda *a: pmt_launch(*a, preimport=preimport)) for i in range(1, runs + 1)] if HEAP["on"] else [
            ("launched", pmt_launch), ("attached", pmt_attach)]
        for how, runner in hows:
            label = "%s, %s" % (mode, how)
            print("%s: pmt-sample %s ..." % (name, label), flush=True)
            out = os.path.join(scratch, "pmt-%s-%s-%s" % (name, mode, how.replace(" #", "-")))
            command = runner(pmt_sample, python, path, mode, out)
            ours, summary, left_out = pmt_weights(out, package)
            result["runs"].append({"label": label, "shares": normalised(ours), "charged": sum(ours.values()),
                                   "summary": summary, "left_out": left_out})
            result["commands"].append(("pmt-sample " + label, command))
    return result


def mib(n):
    return "%.0f MiB" % (n / 2**20)


def workload_section(result):
    memray, runs = result["memray"], result["runs"]
    lines = ["## %s (`bench/workloads/real/%s`)" % (result["name"], result["script"]), "",
             "memray's high-water mark: %s." % mib(result["memray_peak"]), "",
             "| pmt-sample run | TVD to memray | %s charged | samples/s (asked %d) | attribution |"
             % ("heap" if HEAP["on"] else "rss", RATE),
             "|---|---|---|---|---|"]
    for run in runs:
        s = run["summary"]
        lines.append("| %s | **%.2f** | %s | %.0f | %s |" % (run["label"], tvd(run["shares"], memray),
                                                      mib(run["charged"]), s["achieved_rate_hz"], s["attribution"]))
    if len(runs) > 1:
        distances = [tvd(run["shares"], memray) for run in runs]
        lines += ["", "TVD over the %d runs: mean %.2f, %.2f to %.2f." % (
            len(runs), sum(distances) / len(distances), min(distances), max(distances))]
    if any(run.get("left_out") for run in runs):
        lines += ["", "Left out of pmt-sample's side (allocated by `common.preimport`, importing the "
                  "modules memray's launcher had imported before it tracked): %s." % ", ".join(
                      mib(run["left_out"]) for run in runs)]
    columns = [memray] + [run["shares"] for run in runs]
    keys = sorted(set().union(*columns), key=lambda k: -max(c.get(k, 0.0) for c in columns))[:TOP]
    lines += ["", "Top %d keys (by the largest share either side):" % TOP, "",
              "| key | memray | " + " | ".join(run["label"] for run in runs) + " |",
              "|---|" + "---|" * len(columns)]
    for key in keys:
        lines.append("| `%s` | " % key + " | ".join("%.1f %%" % (100 * c.get(key, 0.0)) for c in columns) + " |")
    lines += ["", "Commands:", ""] + ["    %s: %s" % (what, rel(shlex.join(c))) for what, c in result["commands"]]
    return lines + [""]


def machine_note(context):
    return ("Written by `%s` on %s; %s. Machine: %d cores, shared with other builders and loaded "
            "(load average %.1f before the run, %.1f after); wall times and sampling rates vary with "
            "that load." % (rel(shlex.join(["python3"] + sys.argv)), context["started"], context["build"],
                            os.cpu_count(), context["load_before"], os.getloadavg()[0]))


def write_results(args, name, lines):
    path = args.out or os.path.join(RESULTS, name)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print("wrote %s" % rel(path))


def attribution(args, python, pmt_sample, scratch, context):
    results = [compare(name, python, pmt_sample, args.modes, scratch, args.runs) for name in args.workloads]
    if HEAP["on"]:
        lines = ["# Who holds the Python heap on real programs: pmt-sample --metric heap vs memray "
                 "--trace-python-allocators", "", machine_note(context), "",
                 "Target: CPython %s in `%s` with %s, %s (interpreted, from its sdist). Reference: "
                 "`memray run --trace-python-allocators`, its high-water-mark records "
                 "(`get_high_watermark_allocation_records(merge_threads=True)`): every allocation "
                 "through Python's allocators live at the peak, to the stack that made it. Ours: "
                 "`pmt-sample --rate %d --metric heap`, launched: the folded `heap` weights (sampled "
                 "allocations still held at the sustained peak, one per `--heap-sample-bytes` "
                 "(256 KiB unless the commands below say otherwise), to the stack that made them); its "
                 "workload first imports the modules `memray run` had imported before it started "
                 "tracking (`PMT_BENCH_PREIMPORT`, the list the memray run's workload wrote), and what "
                 "that allocates is left out. Both keyed by the innermost frame in the workload's package, "
                 "`file-in-package:function` (bare function name), the rest `%s`; TVD = ½ Σ|p − q| "
                 "over the keys." % (python_version(python), rel(venv()), ", ".join(PINS),
                                     SOURCE_PINS[0], RATE, OTHER), ""]
        for result in results:
            lines += workload_section(result)
        write_results(args, "attribution_vs_memray_heap%s.md" % (
            "_%d" % args.heap_sample_bytes if args.heap_sample_bytes else ""), lines)
        return
    lines = ["# Whose is the memory on real programs: pmt-sample --metric rss vs memray's high-water mark", "",
             machine_note(context), "",
             "Target: CPython %s in `bench/.venv-real` with %s, %s (interpreted, from its sdist). "
             "Reference: `memray run` with its default options, its high-water-mark records "
             "(`get_high_watermark_allocation_records(merge_threads=True)`), what a memray user gets: the "
             "allocations that reach the C library (pymalloc's arenas among them, each whole to the stack "
             "that made it), the memory RSS is made of, where pmt-sample sees their pages as they are first "
             "touched; `--trace-python-allocators` would weigh live Python objects instead and slows the "
             "target more; `--native` adds only native frames, which the keying does not use. "
             "Ours: `pmt-sample --rate %d --metric rss`, the folded `rss` weights (growth still held at the "
             "sustained peak), launched and attached by pid (the workload waits at a gate until pmt-sample "
             "samples, so both see the same program). Both keyed by the innermost frame in the workload's "
             "package, `file-in-package:function` (bare function name), the rest `%s`; TVD = ½ Σ|p − q| "
             "over the keys." % (python_version(python), ", ".join(PINS), SOURCE_PINS[0], RATE, OTHER), ""]
    for result in results:
        lines += workload_section(result)
    write_results(args, "attribution_vs_memray.md", lines)


def python_version(python):
    return subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                          capture_output=True, text=True).stdout.strip()


# ---- slowdown -----------------------------------------------------------------------------------------

def slowdown_configs(python, pmt_sample, modes, script, scratch):
    configs = [("no profiler", [python, script])]
    for mode in modes:
        out = os.path.join(scratch, "slow-%s" % mode)
        configs.append(("pmt-sample (%s)" % mode, [pmt_sample] + pmt_options(mode, out) + ["--", python, script]))
    for options in MEMRAY_VARIANTS:
        configs.append((" ".join(["memray run"] + options), [python, "-m", "memray", "run", "-q", "-f"] + options + [
            "-o", os.path.join(scratch, "slow.bin"), script]))
    return configs


def timed(command, log):
    """(the workload's own elapsed seconds, the command's wall seconds)."""
    start = time.perf_counter()
    run_checked(command, log)
    wall = time.perf_counter() - start
    elapsed = [line.split()[1] for line in open(log) if line.startswith("elapsed ")]
    if not elapsed:
        fail("no `elapsed` line from the workload in %s" % log)
    return float(elapsed[-1]), wall


def attribution_of(command):
    """The summary's `attribution` of a pmt-sample command's --json output, else empty."""
    if "--json" not in command:
        return ""
    return json.load(open(command[command.index("--json") + 1]))["summary"]["attribution"]


def slowdown(args, python, pmt_sample, scratch, context):
    name = args.workloads[0]
    script, _, _ = WORKLOADS[name]
    configs = slowdown_configs(python, pmt_sample, args.modes, os.path.join(REAL, script), scratch)
    times = {label: [] for label, _ in configs}
    for round_ in range(args.repeat):
        for label, command in configs:
            print("round %d/%d: %s ..." % (round_ + 1, args.repeat, label), flush=True)
            times[label].append(timed(command, os.path.join(scratch, "slow.log")))
    base = min(t for t, _ in times["no profiler"])
    lines = ["# Target slowdown on the %s workload: pmt-sample vs memray run" % name, "",
             machine_note(context), "",
             "`bench/workloads/real/%s` on CPython %s; the configurations take turns, %d rounds. "
             "Elapsed is the workload's own time from its start to its end (startup of the interpreter "
             "and of the profiler excluded), wall is the whole command's (pmt-sample's output writing and "
             "memray's included). Best of %d." % (script, python_version(python), args.repeat, args.repeat), "",
             "| configuration | best elapsed | slowdown | best wall | elapsed of every run | pmt-sample's attribution (last run) |",
             "|---|---|---|---|---|---|"]
    for label, command in configs:
        best = min(t for t, _ in times[label])
        lines.append("| %s | %.2f s | %.2fx | %.2f s | %s | %s |" % (
            label, best, best / base, min(w for _, w in times[label]), ", ".join("%.2f" % t for t, _ in times[label]),
            attribution_of(command)))
    lines += ["", "Commands:", ""] + ["    %s: %s" % (label, rel(shlex.join(c))) for label, c in configs]
    write_results(args, "slowdown_vs_memray.md", lines + [""])


# ---- main -----------------------------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", default="default",
                        help="pmt-sample attribution modes, comma-separated: `default` (no --attribution flag), "
                             "values of --attribution (ticks, kernel), or with --heap `free-lists-off` "
                             "(--heap-free-lists off)")
    parser.add_argument("--workloads", default=None,
                        help="comma-separated, of %s (default: all; with --slowdown: pandas)" % ",".join(WORKLOADS))
    parser.add_argument("--pmt-bin", default=os.path.join(ROOT, "target/release"),
                        help="directory holding pmt-sample (default: this checkout's target/release)")
    parser.add_argument("--slowdown", action="store_true", help="time the workload instead of comparing attribution")
    parser.add_argument("--out", help="the results file (default: bench/results/attribution_vs_memray.md, "
                                      "or slowdown_vs_memray.md)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds for --slowdown (best of)")
    parser.add_argument("--heap", action="store_true",
                        help="compare --metric heap with memray --trace-python-allocators (CPython 3.13)")
    parser.add_argument("--runs", type=int, default=1,
                        help="with --heap: pmt-sample runs against the one memray run (default 1)")
    parser.add_argument("--heap-sample-bytes", type=int,
                        help="with --heap: pmt-sample's --heap-sample-bytes (default: its own)")
    args = parser.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    args.workloads = (args.workloads or ("pandas" if args.slowdown else ",".join(WORKLOADS))).split(",")
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        fail("unknown workload %s (known: %s)" % (", ".join(unknown), ", ".join(WORKLOADS)))
    return args


def main(extra=()):
    args = parse_args(sys.argv[1:] + list(extra))
    HEAP["on"] = args.heap
    HEAP["sample_bytes"] = args.heap_sample_bytes
    context = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_before": os.getloadavg()[0]}
    pmt_sample = pmt_sample_of(args.pmt_bin, args.modes)
    python = ensure_venv()
    prepare(python, args.workloads)
    scratch = "/tmp/pmt_memray_%d" % os.getpid()
    os.makedirs(scratch, exist_ok=True)
    print("scratch: %s" % scratch, flush=True)
    pmt_sample, context["build"] = snapshot(pmt_sample, scratch)
    (slowdown if args.slowdown else attribution)(args, python, pmt_sample, scratch, context)


if __name__ == "__main__":
    main()
