"""Benchmark: slowdown of a call-heavy workload under this project's cPyMemTrace Profile/Trace
beside pymemtrace 0.4.0's own, in the same run, and whether both write the same log lines.
Ours runs twice: as it is (RSS source ``rss_source()``: kmem:rss_stat perf events where
available) and with ``PYMEMTRACE_RSS=statm`` (statm re-read on every event: the figure before
the rss_stat watcher).

Usage: python3 bench/exact_overhead.py [--python /path/to/python3.X] [--repeats N]
Writes bench/results/exact_overhead.md. Builds two venvs under bench/ (git-ignored):
``.venv-exact`` (``pip install .`` of this repository) and ``.venv-ref`` (pymemtrace 0.4.0 from
$PMT_REF_SRC, else target/seed/pymemtrace-0.4.0, downloaded there with ``pip download`` if
missing, with ``-Werror`` removed from its setup.py).
Where ``perf`` is installed it then profiles our Profile() run, before and after, and writes
where the time goes.
"""

import argparse
import glob
import os
import platform
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORKLOAD = os.path.join(HERE, "exact_workload.py")
MODES = ["none", "profile", "trace", "profile0", "trace0"]


def sh(*args, **kwargs):
    print("+", " ".join(args), file=sys.stderr)
    subprocess.run(args, check=True, **kwargs)


def make_venv(python, path, packages):
    if not os.path.exists(os.path.join(path, "bin", "python")):
        sh(python, "-m", "venv", path)
    sh(os.path.join(path, "bin", "python"), "-m", "pip", "install", "-q", *packages)
    return os.path.join(path, "bin", "python")


def build_exact(python):
    venv = os.path.join(HERE, ".venv-exact")
    py = make_venv(python, venv, ["maturin>=1.5,<2"])
    env = dict(os.environ, PATH=os.path.join(venv, "bin") + os.pathsep + os.environ["PATH"])
    sh(py, "-m", "pip", "install", "-q", "--no-build-isolation", "--force-reinstall", "--no-deps", REPO, env=env)
    return py


def reference_source(python):
    """pymemtrace 0.4.0's sdist unpacked under target/seed (as python/seed_suite.sh leaves it)."""
    seed = os.path.join(REPO, "target", "seed")
    source = os.path.join(seed, "pymemtrace-0.4.0")
    if not os.path.isdir(source):
        os.makedirs(seed, exist_ok=True)
        sh(python, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "pymemtrace==0.4.0", "-d", seed)
        sh("tar", "-xzf", os.path.join(seed, "pymemtrace-0.4.0.tar.gz"), "-C", seed)
    return source


def where_time_goes(py, log_dir, env):
    """perf's split of our Profile() run by shared object, and its top symbols ([] without perf)."""
    if shutil.which("perf") is None:
        return []
    data = os.path.join(log_dir, "perf.data")
    subprocess.run(["perf", "record", "-q", "-o", data, py, WORKLOAD, "profile", "1", log_dir],
                   check=True, capture_output=True, cwd=log_dir, env=dict(os.environ, **env))
    lines = []
    for sort, limit in (("dso", 5), ("dso,sym", 8)):
        out = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", sort, "--stdio", "-g", "none"],
                             check=True, capture_output=True, text=True).stdout
        rows = [line.strip() for line in out.splitlines() if line.strip() and not line.startswith("#")]
        lines.append(f"perf report --sort {sort} (top {limit}):")
        lines.append("")
        lines += ["    " + " ".join(row.split()) for row in rows[:limit]]
        lines.append("")
    return lines


def build_reference(python):
    venv = os.path.join(HERE, ".venv-ref")
    py = make_venv(python, venv, ["setuptools", "wheel", "psutil"])
    source = os.environ.get("PMT_REF_SRC") or reference_source(py)
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "pymemtrace-0.4.0")
        shutil.copytree(source, copy)
        setup = os.path.join(copy, "setup.py")
        with open(setup) as file:
            text = file.read()
        with open(setup, "w") as file:
            file.write(text.replace("'-Werror',", ""))
        sh(py, "-m", "pip", "install", "-q", "--no-build-isolation", "--force-reinstall", "--no-deps", copy)
    return py


def measure(py, env, mode, repeats, log_dir):
    out = subprocess.run(
        [py, WORKLOAD, mode, str(repeats), log_dir], check=True, capture_output=True, text=True, cwd=log_dir,
        env=dict(os.environ, **env),
    )
    return float(out.stdout.strip())


def rss_source(py, env):
    code = "from pymemtrace import _pymemtrace; print(_pymemtrace.rss_source())"
    return subprocess.run([py, "-c", code], check=True, capture_output=True, text=True,
                          env=dict(os.environ, **env)).stdout.strip()


def normalised(path):
    """Log lines without Clock, RSS and dRSS (which differ from run to run)."""
    lines = []
    with open(path, encoding="utf-8", errors="replace") as file:
        for line in file:
            tokens = line.split()
            if tokens and tokens[0] in ("FRST:", "NEXT:", "PREV:", "LAST:") and len(tokens) >= 9:
                tokens = tokens[:3] + tokens[4:-2]
            elif tokens and tokens[0] == "MSG:":
                tokens = tokens[:3] + tokens[4:]
            lines.append(" ".join(tokens))
    return lines


# Page faults of another process: ns per fresh page written, best of 7 (256 MiB each time).
FAULTS = """import mmap, time
size = 256 << 20
pages = size // mmap.PAGESIZE
best = float("inf")
for _ in range(7):
    area = mmap.mmap(-1, size)
    view = memoryview(area)
    start = time.perf_counter()
    view[::mmap.PAGESIZE] = bytes(pages)
    best = min(best, time.perf_counter() - start)
    view.release()
    area.close()
print(best / pages * 1e9)
"""
# Holds a Profile() open (so the watcher's events are enabled) until stdin closes.
HOLDER = ("import sys\nfrom pymemtrace import cPyMemTrace\nwith cPyMemTrace.Profile():\n"
          "    print('tracing', flush=True)\n    sys.stdin.read()\n")


def fault_cost(python, exact, log_dir):
    """ns per page fault of an unrelated process: without a tracer anywhere, while one of ours
    is active in another process (its kmem:rss_stat events enabled), and without again."""
    def faults():
        return float(subprocess.run([python, "-c", FAULTS], check=True, capture_output=True,
                                    text=True).stdout)
    before = faults()
    # In log_dir: the holder's Profile() writes its default-named log to its working directory.
    holder = subprocess.Popen([exact, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=log_dir)
    try:
        assert holder.stdout.readline().strip() == "tracing"
        during = faults()
    finally:
        holder.stdin.close()
        holder.wait()
    return before, during, faults()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12.*/bin/python3.12")))[-1])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    exact = build_exact(args.python)
    reference = build_reference(args.python)
    results = {}
    # name: (python, extra environment)
    runs = {"exact": (exact, {}), "statm": (exact, {"PYMEMTRACE_RSS": "statm"}), "ref": (reference, {})}
    sources = {name: rss_source(py, env) for name, (py, env) in runs.items() if name != "ref"}
    logs = {name: tempfile.mkdtemp(prefix=f"pmt-bench-{name}-") for name in runs}
    # Interleaved, so all runs see the same machine load; the untraced baseline is cheap, so it
    # gets more repeats.
    for mode in MODES:
        repeats = args.repeats * 5 if mode == "none" else args.repeats
        for name, (py, env) in runs.items():
            results[(name, mode)] = measure(py, env, mode, repeats, logs[name])
            print(name, mode, results[(name, mode)], file=sys.stderr)
    # Same interpreter and workload in both venvs: one baseline, the fastest untraced run.
    baseline = min(results[(name, "none")] for name in runs)
    same = {}
    for name in ("exact", "statm"):
        for mode in ("profile0", "trace0"):
            a = normalised(os.path.join(logs[name], f"{mode}_0.log"))
            b = normalised(os.path.join(logs["ref"], f"{mode}_0.log"))
            same[(name, mode)] = (a == b, len(a), len(b),
                                  next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None))
    costs = fault_cost(args.python, exact, logs["exact"]) if sources["exact"] == "rss_stat" else None
    version = subprocess.run([args.python, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    rows = []
    for mode, label in (("profile", "Profile()"), ("trace", "Trace()"),
                        ("profile0", "Profile(0) (every event)"), ("trace0", "Trace(0) (every event)")):
        ref = results[("ref", mode)]
        cells = [label, f"{ref:.3f} s", f"{ref / baseline:.1f}x"]
        for name in ("statm", "exact"):
            ours = results[(name, mode)]
            cells += [f"{ours:.3f} s", f"{ours / baseline:.1f}x", f"{ours / ref:.3f}"]
        rows.append("| " + " | ".join(cells) + " |")
    text = [
        "# Exact mode overhead: cPyMemTrace Profile/Trace vs pymemtrace 0.4.0",
        "",
        f"Workload: `bench/exact_workload.py` (fib(23) + 150,000 dict updates), best of {args.repeats}, "
        f"CPython {version}, {platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs).",
        f"Baseline without tracing (best of {args.repeats * 5}): {baseline:.4f} s "
        f"(0.4.0 venv {results[('ref', 'none')]:.4f} s, ours {results[('exact', 'none')]:.4f} s); "
        "the runs of 0.4.0 and of ours, before and after, are interleaved.",
        "Command: `python3 bench/exact_overhead.py`",
        "",
        f"- before: ours with `PYMEMTRACE_RSS=statm`, RSS source `{sources['statm']}`: "
        "`/proc/self/statm` re-read (`pread`) on every event.",
        f"- after: ours as installed, RSS source `{sources['exact']}`"
        + (": statm re-read only when a kmem:rss_stat perf event says an RSS counter of the "
           "process changed." if sources["exact"] == "rss_stat" else "."),
        "",
        "| Tracer | 0.4.0 time | 0.4.0 slowdown | before: time | slowdown | / 0.4.0 "
        "| after: time | slowdown | / 0.4.0 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "Same log content (every event, d_rss_trigger=0; Clock, RSS and dRSS columns set aside as they "
        "differ between any two runs):",
        "",
    ]
    for (name, mode), (equal, n_ours, n_theirs, first) in same.items():
        verdict = "identical" if equal else f"DIFFERENT (first difference at line {first})"
        label = "after" if name == "exact" else "before"
        text.append(f"- {mode}, {label}: {verdict}; {n_ours} lines ours, {n_theirs} lines 0.4.0")
    text += [
        "",
        "Why it is faster: 0.4.0 opens, parses and closes `/proc/self/statm` on every event "
        "(a procfs path walk each time). Before, we kept the file open and re-read it with `pread` "
        "at offset 0 on every event: one system call an event, most of a traced run in the kernel "
        "generating the file. After, every change of the process's RSS counters (by any thread, "
        "page fault, munmap/madvise/brk/mremap, MAP_POPULATE, reclaim, another process) fires the "
        "kernel's `kmem:rss_stat` tracepoint; one perf event per CPU, filtered in the kernel to "
        "this process's mm, appends a record to a ring whose head is a plain memory read. An event "
        "re-reads statm only when the sum of the heads moved since this thread last read it, so it "
        "still sees the exact current RSS, with no timer, no sampling and no polling thread.",
        "",
        "With every event written (Profile(0), Trace(0)) the cost is mostly composing and writing "
        "the lines (about 490,000 and 730,000 of them), so the watcher saves less there.",
        "",
    ]
    if costs is not None:
        text += [
            f"What the watcher costs other processes: while a tracer of ours is active, every change "
            f"of any process's RSS counters checks the kernel filter. A page fault of an unrelated "
            f"process (writing fresh pages of a 256 MiB mapping, best of 7): {costs[0]:.0f} ns "
            f"without any tracer, {costs[1]:.0f} ns while one of ours is active in another process, "
            f"{costs[2]:.0f} ns after it exited.",
            "",
        ]
    text += [
        "The machine is shared with other builds, so absolute times move between runs; the "
        "`/ 0.4.0` columns compare runs made back to back (interleaved) and are the steadier figures.",
    ]
    for name, label in (("statm", "before"), ("exact", "after")):
        profile = where_time_goes(exact, logs[name], runs[name][1])
        if profile:
            text += ["", f"## Where the time goes: our Profile() run {label} (RSS source "
                     f"`{sources[name]}`, `perf record`)", "", *profile]
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "exact_overhead.md"), "w") as file:
        file.write("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
