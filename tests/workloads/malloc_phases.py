"""Phases with known allocator work, for `pmt-sample --metric malloc-*` (tests/sample_malloc.rs).

Usage: malloc_phases.py N. Sleeps 1.5 s (pmt-sample attaches meanwhile), then:
  churn_gib()       256 x (libc malloc of 4 MiB, then free): 1 GiB in 256 calls
  ten_mib()         bytearray(10 MiB): one 10 MiB request
  small_objects(N)  N instances of a small class (pymalloc)
Each phase ends with a short sleep inside its function, so the sampler's last interval of the
phase is charged while the function is still on the stack.
"""
import ctypes
import sys
import time

N = int(sys.argv[1])
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
kept = []


class Small(object):
    __slots__ = ("value",)


def churn_gib():
    for _ in range(256):
        libc.free(libc.malloc(4 << 20))
        time.sleep(0.001)
    time.sleep(0.1)


def ten_mib():
    kept.append(bytearray(10 << 20))
    time.sleep(0.1)


def small_objects(n):
    kept.extend(Small() for _ in range(n))
    time.sleep(0.1)


time.sleep(1.5)
churn_gib()
ten_mib()
small_objects(N)
