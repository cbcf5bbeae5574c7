"""N small Python objects made in one thread, for the --python-allocators test.

Usage: small_objects.py N. Prints "ready", waits for a line on stdin, then a thread creates N
instances of a small class (each one pymalloc allocation) and keeps them, and another thread
makes N // 100 ctypes buffers of 100 bytes (an extension module calling CPython's exported
allocator); prints {"objects": tid, "extension": tid} and waits for stdin to close.
"""
import ctypes
import json
import sys
import threading

N = int(sys.argv[1])
SYS_GETTID = 186  # x86_64


def native_id():
    if hasattr(threading, "get_native_id"):
        return threading.get_native_id()
    return ctypes.CDLL(None).syscall(SYS_GETTID)


class Small(object):
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


tids = {}
kept = []


def make_objects():
    tids["objects"] = native_id()
    kept.extend(Small(i) for i in range(N))


def make_buffers():
    tids["extension"] = native_id()
    kept.extend(ctypes.create_string_buffer(100) for _ in range(N // 100))


print("ready", flush=True)
sys.stdin.readline()
for target in (make_objects, make_buffers):
    t = threading.Thread(target=target)
    t.start()
    t.join()
print(json.dumps(tids), flush=True)
sys.stdin.read()
