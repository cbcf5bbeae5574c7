"""pmt heap's numpy test: holders of numpy arrays, whose buffers lie outside the array objects.

- FEATURES: a module-level dict of eight float64 arrays of 1 MiB each (each owns its buffer);
- VIEW: every other element of a 4 MiB array that nothing else holds (the view owns no
  buffer; its `base` does, and keeps it);
- NAMES: an object array of 20,000 distinct strings (its buffer holds references);
- MATRIX: a Fortran-order 300 x 500 float64 array.

Prints `SIZES <json>`: per holder, what the program itself computes it holds (`sys.getsizeof`
of the container, its keys and arrays, which counts an owned buffer, and of the strings), and
the item counts; then `READY`, and sleeps while pmt reads it.
"""

import json
import sys
import time

import numpy as np

FEATURES = {"feature-%d" % i: np.full(131072, float(i)) for i in range(8)}
_whole = np.arange(524288, dtype=np.float64)
VIEW = _whole[::2]
del _whole
NAMES = np.array(["name-%06d" % i for i in range(20000)], dtype=object)
MATRIX = np.asfortranarray(np.ones((300, 500)))

sizes = {
    "FEATURES": sys.getsizeof(FEATURES)
    + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in FEATURES.items()),
    "VIEW": sys.getsizeof(VIEW) + sys.getsizeof(VIEW.base),
    "NAMES": sys.getsizeof(NAMES) + sum(sys.getsizeof(s) for s in NAMES),
    "MATRIX": sys.getsizeof(MATRIX),
    "items": {"FEATURES": len(FEATURES), "VIEW": VIEW.size, "NAMES": NAMES.size,
              "MATRIX": MATRIX.size},
}
print("SIZES " + json.dumps(sizes), flush=True)
print("READY", flush=True)
while True:
    time.sleep(1)
