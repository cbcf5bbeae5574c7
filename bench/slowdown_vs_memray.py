#!/usr/bin/env python3
"""Target slowdown on the pandas workload: no profiler, pmt-sample in each mode, memray run, side by
side in one run. The same as `python3 bench/attribution_vs_memray.py --slowdown` (see there); named
so that `bash bench/run.sh slowdown_vs_memray` runs it.

Writes bench/results/slowdown_vs_memray.md.
Usage: python3 bench/slowdown_vs_memray.py [--modes default|ticks,kernel] [--repeat N] [--pmt-bin DIR]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attribution_vs_memray  # noqa: E402

if __name__ == "__main__":
    attribution_vs_memray.main(extra=["--slowdown"])
