"""The process tree under a pid, as the benchmarks need it (imported by them: they run as
`python3 bench/NAME.py`, so this directory is on their path)."""
import os


def descendants(pid):
    """The pids of every living process below `pid` (from /proc/PID/task/*/children)."""
    found, queue = set(), [pid]
    while queue:
        parent = queue.pop()
        try:
            tasks = os.listdir("/proc/%d/task" % parent)
        except OSError:
            continue
        for task in tasks:
            try:
                with open("/proc/%d/task/%s/children" % (parent, task)) as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            found.update(kids)
            queue.extend(kids)
    return found
