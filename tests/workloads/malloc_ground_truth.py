"""Threads with known allocator work, for the eBPF malloc counter tests.

Prints "ready", waits for a line on stdin, then runs three threads at once:
  churn    256 x (libc malloc of 4 MiB, then free): 1 GiB in 256 large calls
  ten_mib  bytearray(10 MiB): one 10 MiB request that CPython passes to libc malloc
  cpu      pure-Python arithmetic for 0.5 s: no libc allocation
then prints {"churn": tid, "ten_mib": tid, "cpu": tid} (kernel thread ids) and waits for
stdin to close before exiting.
"""
import ctypes
import json
import sys
import threading
import time

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
SYS_GETTID = 186  # x86_64


def native_id():
    if hasattr(threading, "get_native_id"):
        return threading.get_native_id()
    return libc.syscall(SYS_GETTID)


tids = {}
kept = []


def churn():
    tids["churn"] = native_id()
    for _ in range(256):
        libc.free(libc.malloc(4 << 20))


def ten_mib():
    tids["ten_mib"] = native_id()
    kept.append(bytearray(10 << 20))


def cpu():
    tids["cpu"] = native_id()
    end = time.monotonic() + 0.5
    x = 1
    while time.monotonic() < end:
        x = (x * 31 + 7) % 1000003


print("ready", flush=True)
sys.stdin.readline()
threads = [threading.Thread(target=f) for f in (churn, ten_mib, cpu)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(tids), flush=True)
sys.stdin.read()
