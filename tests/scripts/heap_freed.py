"""pmt heap --diff's freed-holder test program: grow() appends to HOLD, a module list, about
every millisecond for 2 s after READY; then HOLD is dropped (the list is freed) and reuse()
keeps making and filling short lists, the first of which takes the freed list's memory (the
list free list hands back the last list freed): writes to the watched size field that are
no longer HOLD's."""

import time

HOLD = list(range(2000))


def grow(until):
    while time.monotonic() < until:
        HOLD.append(len(HOLD))
        time.sleep(0.001)


def reuse():
    while True:
        scratch = []
        for i in range(50):
            scratch.append(i)
        del scratch
        time.sleep(0.001)


print("READY", flush=True)
grow(time.monotonic() + 2.0)
del HOLD
reuse()
