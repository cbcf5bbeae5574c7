"""pmt heap --diff's test program: GROW, a module list, gains a small dict every millisecond
while STEADY keeps its size. Prints READY once both exist. GROW starts with 2,000 dicts, so
that it is among the holders of the first snapshot however soon that is taken."""

import time

GROW = [{"n": -i} for i in range(1, 2001)]
STEADY = [{"i": i} for i in range(1000)]


def leak():
    i = 0
    print("READY", flush=True)
    while True:
        GROW.append({"n": i})
        i += 1
        time.sleep(0.001)


leak()
