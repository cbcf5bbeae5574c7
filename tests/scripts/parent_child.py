"""A Python parent with a Python child: the parent starts itself again with `--child`, waits
until the child is ready, prints `ready` and waits in `parent_waits`; the child waits in
`child_waits`. Both live until killed (the child exits when its parent's pipe closes)."""

import subprocess
import sys
import time


def child_waits():
    print("ready", flush=True)
    while sys.stdin.read(1):
        pass


def parent_waits(child):
    print("ready", flush=True)
    while child.poll() is None:
        time.sleep(0.05)


def main():
    if sys.argv[1:] == ["--child"]:
        child_waits()
        return
    child = subprocess.Popen(
        [sys.executable, __file__, "--child"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    child.stdout.readline()
    parent_waits(child)


if __name__ == "__main__":
    main()
