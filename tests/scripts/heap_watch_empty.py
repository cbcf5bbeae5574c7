"""pmt heap --diff's test of a holder that starts empty: 600 module-level lists of 100 strings
(each retaining ~7 KiB) fill the top of the holders; KEEP, a module list, starts empty and
grow() appends None to it every 4 ms (8 bytes retained per item: KEEP would take ~3.5 s to
retain as much as one of those lists). Prints READY as KEEP starts to grow."""

import time

FILLER = [["item %d of %d" % (j, i) for j in range(100)] for i in range(600)]
KEEP = []


def grow():
    while True:
        KEEP.append(None)
        time.sleep(0.004)


print("READY", flush=True)
grow()
