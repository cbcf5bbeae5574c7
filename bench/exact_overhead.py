"""Benchmark: slowdown of a call-heavy workload under this project's cPyMemTrace Profile/Trace
beside pymemtrace 0.4.0's own, in the same run, and whether both write the same log lines.

Usage: python3 bench/exact_overhead.py [--python /path/to/python3.X] [--repeats N]
Writes bench/results/exact_overhead.md. Builds two venvs under bench/ (git-ignored):
``.venv-exact`` (``pip install .`` of this repository) and ``.venv-ref`` (pymemtrace 0.4.0 from
$PMT_REF_SRC, else target/seed/pymemtrace-0.4.0, downloaded there with ``pip download`` if
missing, with ``-Werror`` removed from its setup.py).
Where ``perf`` is installed it then profiles our Profile() run and writes where the time goes.
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


def where_time_goes(py, log_dir):
    """perf's split of our Profile() run by shared object, and its top symbols ([] without perf)."""
    if shutil.which("perf") is None:
        return []
    data = os.path.join(log_dir, "perf.data")
    subprocess.run(["perf", "record", "-q", "-o", data, py, WORKLOAD, "profile", "1", log_dir],
                   check=True, capture_output=True, cwd=log_dir)
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


def measure(py, mode, repeats, log_dir):
    out = subprocess.run(
        [py, WORKLOAD, mode, str(repeats), log_dir], check=True, capture_output=True, text=True, cwd=log_dir
    )
    return float(out.stdout.strip())


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12.*/bin/python3.12")))[-1])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    exact = build_exact(args.python)
    reference = build_reference(args.python)
    results = {}
    pythons = {"exact": exact, "ref": reference}
    logs = {name: tempfile.mkdtemp(prefix=f"pmt-bench-{name}-") for name in pythons}
    # Interleaved, so both implementations see the same machine load; the untraced baseline
    # is cheap, so it gets more repeats.
    for mode in MODES:
        repeats = args.repeats * 5 if mode == "none" else args.repeats
        for name, py in pythons.items():
            results[(name, mode)] = measure(py, mode, repeats, logs[name])
            print(name, mode, results[(name, mode)], file=sys.stderr)
    # Same interpreter and workload in both venvs: one baseline, the faster of the two.
    baseline = min(results[("exact", "none")], results[("ref", "none")])
    same = {}
    for mode in ("profile0", "trace0"):
        a = normalised(os.path.join(logs["exact"], f"{mode}_0.log"))
        b = normalised(os.path.join(logs["ref"], f"{mode}_0.log"))
        same[mode] = (a == b, len(a), len(b), next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None))
    version = subprocess.run([args.python, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    rows = []
    for mode, label in (("profile", "Profile()"), ("trace", "Trace()"),
                        ("profile0", "Profile(0) (every event)"), ("trace0", "Trace(0) (every event)")):
        ours = results[("exact", mode)] / baseline
        theirs = results[("ref", mode)] / baseline
        rows.append(f"| {label} | {results[('ref', mode)]:.3f} s | {theirs:.1f}x | {results[('exact', mode)]:.3f} s "
                    f"| {ours:.1f}x | {results[('exact', mode)] / results[('ref', mode)]:.2f} |")
    text = [
        "# Exact mode overhead: cPyMemTrace Profile/Trace vs pymemtrace 0.4.0",
        "",
        f"Workload: `bench/exact_workload.py` (fib(23) + 150,000 dict updates), best of {args.repeats}, "
        f"CPython {version}, {platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs).",
        f"Baseline without tracing (best of {args.repeats * 5}): {baseline:.4f} s "
        f"(0.4.0 venv {results[('ref', 'none')]:.4f} s, ours {results[('exact', 'none')]:.4f} s); "
        "runs of the two implementations are interleaved.",
        "Command: `python3 bench/exact_overhead.py`",
        "",
        "| Tracer | 0.4.0 time | 0.4.0 slowdown | ours time | our slowdown | ours / 0.4.0 (time) |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "Same log content (every event, d_rss_trigger=0; Clock, RSS and dRSS columns set aside as they "
        "differ between any two runs):",
        "",
    ]
    for mode, (equal, n_ours, n_theirs, first) in same.items():
        verdict = "identical" if equal else f"DIFFERENT (first difference at line {first})"
        text.append(f"- {mode}: {verdict}; {n_ours} lines ours, {n_theirs} lines 0.4.0")
    text += [
        "",
        "Why it is faster: 0.4.0 opens, parses and closes `/proc/self/statm` on every event "
        "(a procfs path walk each time); we keep the file open and re-read it with `pread` at "
        "offset 0, which makes the kernel regenerate fresh values, so every event still sees the "
        "exact current RSS. The remaining cost is that one `pread` system call per event.",
        "",
        "Why not a tenth of 0.4.0's cost: the profile below puts most of a traced run in the kernel "
        "generating `/proc/self/statm` (seq_file formatting and the per-CPU RSS counter sum), and "
        "Linux offers no cheaper way to learn the current RSS: no vDSO value, no shared page, and "
        "page-fault counters (`getrusage`, perf events) are system calls too and miss frees and "
        "reclaim. Skipping reads (every Nth event, a timer, a polling thread) would log events "
        "late or not at all, so the logs would no longer be exact; that is not done. With our own "
        "code at a few percent, the ratio cannot fall much below the kernel's share of it.",
        "",
        "The machine is shared with other builds, so absolute times move between runs; the last "
        "column compares runs made back to back (interleaved) and is the steadier figure.",
    ]
    profile = where_time_goes(exact, logs["exact"])
    if profile:
        text += ["", "## Where the time goes (our Profile() run, `perf record`)", "", *profile]
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "exact_overhead.md"), "w") as file:
        file.write("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
