"""pmt heap --blocking's test program: keeps N small dicts (argument, default 200,000) in
KEEP, prints READY, then wakes every millisecond, so that it is seen to run (its context
switches count up) once pmt lets it go."""

import sys
import time

KEEP = [{"i": i} for i in range(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)]

print("READY", flush=True)
while True:
    time.sleep(0.001)
