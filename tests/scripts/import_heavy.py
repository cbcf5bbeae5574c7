"""Prints `ready`, waits a little, then imports `heavy/heavy_module.py`, whose top level keeps
20 MiB: the growth happens under the import system's frames."""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "heavy"))
print("ready", flush=True)
time.sleep(0.3)
import heavy_module  # noqa: E402

time.sleep(0.4)
print(len(heavy_module.KEPT), flush=True)
