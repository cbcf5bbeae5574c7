"""Entry points of the ``pmt`` and ``pmt-sample`` console scripts: they run the Rust command
line (the same code as the standalone binaries) inside this process and exit with its code."""

import sys


def _run(program):
    from pymemtrace import _pymemtrace

    sys.exit(_pymemtrace.run_cli(program, [program] + sys.argv[1:]))


def pmt():
    """``pmt``: the pymemtrace command line."""
    _run("pmt")


def pmt_sample():
    """``pmt-sample``: the same program as ``pmt sample``."""
    _run("pmt-sample")
