#!/usr/bin/env python3
"""Issue #22's task-runner case, many times: how many forked children are not charged their memory.

Runs `PMT --subprocesses --attribution kernel --json` over tests/scripts/fork_runner.py (each child
keeps 8 MiB in keep() for 0.2 s) RUNS times with CHILDREN children, and counts the children not
listed in the timeline or charged less than 8 MiB under keep (printing where their bytes went).
Usage: python3 bench/forked_children.py PMT "PYTHON COMMAND" RUNS CHILDREN [extra pmt-sample args]
  e.g. python3 bench/forked_children.py target/release/pmt-sample "chroot /srv/pmt-sid /usr/bin/python3.14" 20 30
(the runner is copied to /tmp so that a chroot'ed interpreter sees it at the same path).
"""
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    pmt, python, runs, children = sys.argv[1], sys.argv[2].split(), int(sys.argv[3]), int(sys.argv[4])
    extra = sys.argv[5:]
    scratch = tempfile.mkdtemp(prefix="pmt-forks-", dir="/tmp")
    runner = os.path.join(scratch, "fork_runner.py")
    shutil.copy(os.path.join(ROOT, "tests", "scripts", "fork_runner.py"), runner)
    total = missed = 0
    for r in range(runs):
        out = os.path.join(scratch, f"run{r}.json")
        p = subprocess.run([pmt, "--subprocesses", "--attribution", "kernel", "--json", out, *extra, "--",
                            *python, runner, str(children)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if p.returncode:
            print(f"run {r}: pmt-sample failed: {p.stderr.strip()[-500:]}")
            continue
        doc = json.load(open(out))
        names = [[doc["frames"][i]["function"] for i in s] for s in doc["stacks"]]
        procs = doc["processes"]
        kept = collections.Counter()
        other = collections.defaultdict(collections.Counter)
        for s in doc["samples"]:
            pi = s.get("process")
            if pi is None:
                continue
            for t in s["threads"]:
                d = t["deltas"][0]
                if d <= 0:
                    continue
                if "keep" in names[t["stack"]]:
                    kept[pi] += d
                else:
                    other[pi][";".join(names[t["stack"]][-3:])] += d
        listed = len(procs) - 1
        if listed != children:
            print(f"run {r}: {listed} children listed of {children}", flush=True)
            missed += max(0, children - listed)
            total += max(0, children - listed)
        for pi in range(1, len(procs)):
            total += 1
            if kept[pi] < 8 << 20:
                missed += 1
                print(f"run {r} child {procs[pi]['pid']}: keep {kept[pi] >> 10} KiB; elsewhere",
                      {k: v >> 10 for k, v in other[pi].most_common(4)}, flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"{missed} of {total} children missed ({runs} runs x {children})")


if __name__ == "__main__":
    main()
