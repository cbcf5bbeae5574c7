#!/usr/bin/env python3
"""Where does the CPU go, by the innermost Python function: pmt-sample's time sampled in the kernel
(`--metric cpu`, the default attribution) and by ticks (`--attribution ticks`) against py-spy, on
a real program nobody here wrote: mypy (interpreted, from its sdist) type-checking two packages
(bench/workloads/real/mypy_check.py), launched under each profiler in turn.

Weights are each sample's innermost Python function by its bare name (py-spy names a method by
its function name, pmt-sample by its qualified name); samples with no Python frame are left out.
py-spy runs twice, so that the distance between its own two runs shows what sampling noise
alone gives.

Writes bench/results/time_attribution.md.
Usage: python3 bench/time_attribution.py [--rate 1000] [--spy-rate 250]
Needs a release build (cargo build --release), bench/.venv (bash bench/run.sh installs py-spy)
and the 3.13 venv of attribution_vs_memray.py --heap (made on first use).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import attribution_vs_memray as avm

ROOT = avm.ROOT
SCRIPT = os.path.join(avm.REAL, "mypy_check.py")


def leaf_weights(folded):
    """Innermost function (bare name) -> samples, from a folded file (pmt-sample's or py-spy's raw)."""
    weights = {}
    with open(folded) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            function = stack.split(";")[-1].split(" (")[0]
            if not function or function == "<no Python frames>":
                continue
            avm.add(weights, function.rsplit(".", 1)[-1], int(count))
    return weights


def run(command, log):
    started = time.monotonic()
    with open(log, "w") as out:
        if subprocess.run(command, stdout=subprocess.DEVNULL, stderr=out).returncode != 0:
            avm.fail("`%s` failed: see %s" % (" ".join(command), log))
    return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=1000, help="pmt-sample's rate")
    parser.add_argument("--spy-rate", type=int, default=250, help="py-spy's rate (it keeps up at this one)")
    args = parser.parse_args()
    avm.HEAP["on"] = True
    python = avm.ensure_venv()
    pmt = os.path.join(ROOT, "target/release/pmt-sample")
    spy = shutil.which("py-spy", path=os.path.join(ROOT, "bench/.venv/bin")) or shutil.which("py-spy")
    if not os.access(pmt, os.X_OK) or not spy:
        avm.fail("needs target/release/pmt-sample (cargo build --release) and py-spy (bash bench/run.sh installs it)")
    scratch = tempfile.mkdtemp(prefix="pmt-time-attribution-")
    runs = {}
    for name, extra in [("pmt-sample (kernel)", []), ("pmt-sample --attribution ticks", ["--attribution", "ticks"])]:
        folded = os.path.join(scratch, "%d.folded" % len(runs))
        seconds = run([pmt, "--metric", "cpu", "--rate", str(args.rate), "--no-heap", "--collapsed", folded]
                      + extra + ["--", python, SCRIPT], folded + ".log")
        runs[name] = (leaf_weights(folded), seconds)
    for n in (1, 2):
        raw = os.path.join(scratch, "spy%d.txt" % n)
        seconds = run([spy, "record", "--rate", str(args.spy_rate), "--format", "raw", "-o", raw, "--", python, SCRIPT],
                      raw + ".log")
        runs["py-spy run %d" % n] = (leaf_weights(raw), seconds)
    shares = {name: avm.normalised(weights) for name, (weights, _) in runs.items()}
    reference = shares["py-spy run 1"]
    lines = ["# CPU by innermost Python function: in-kernel sampling, ticks and py-spy on mypy", "",
             "Written by `python3 bench/time_attribution.py --rate %d --spy-rate %d` on %s: mypy "
             "(interpreted) checking rich and markdown_it (`bench/workloads/real/mypy_check.py`) on %s, "
             "launched under each profiler in turn. Weights: each sample's innermost Python function by "
             "bare name; samples without Python frames left out. TVD: total-variation distance between "
             "two distributions (0: the same, 1: disjoint)." % (
                 args.rate, args.spy_rate, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 avm.python_version(python)),
             "", "| profiler | samples | run time | TVD to py-spy run 1 | TVD to py-spy run 2 |",
             "|---|---|---|---|---|"]
    for name, (weights, seconds) in runs.items():
        lines.append("| %s | %d | %.1f s | %.3f | %.3f |" % (
            name, sum(weights.values()), seconds, avm.tvd(shares[name], reference),
            avm.tvd(shares[name], shares["py-spy run 2"])))
    top = sorted(reference, key=reference.get, reverse=True)[:12]
    lines += ["", "The twelve heaviest functions by py-spy run 1, share of samples:", "",
              "| function | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for function in top:
        lines.append("| `%s` | " % function + " | ".join("%.1f%%" % (100 * shares[name].get(function, 0.0))
                                                      for name in runs) + " |")
    path = os.path.join(avm.RESULTS, "time_attribution.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print("wrote %s" % avm.rel(path))
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
