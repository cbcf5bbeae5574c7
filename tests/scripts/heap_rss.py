"""pmt heap's RSS test program: holds a 50 MiB bytes object, and leaves pymalloc's pools half
empty (100,000 small dicts made, every other one freed). Prints READY."""

import time

BIG = b"x" * (50 << 20)
HALF = [{"i": i} for i in range(100_000)]
del HALF[::2]

print("READY", flush=True)
while True:
    time.sleep(1)
