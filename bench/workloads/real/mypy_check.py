"""mypy (interpreted, installed with --no-binary mypy so its frames are Python frames) type-checking
two installed, typed packages, rich and markdown_it, with no cache.

Mostly small objects: memray's default reference charges each pymalloc arena whole to the stack
that made it, so it is coarse here (measured once: TVD 0.36 between memray's default and
--trace-python-allocators high-water marks; 0.06 on networkx). The third, optional workload.

    python mypy_check.py
"""

import common

PACKAGES = ("rich", "markdown_it")


def work():
    from mypy import api
    args = ["--cache-dir=/dev/null", "--no-error-summary"]
    for package in PACKAGES:
        args += ["-p", package]
    return api.run(args)


def main():
    common.run(work, lambda result: "mypy_check: %s, %d lines of findings, exit status %d" % (
        " ".join(PACKAGES), result[0].count("\n"), result[2]))


if __name__ == "__main__":
    main()
