"""Known libc allocations at known Python lines, for dtrace/py_malloc_free.bt's test.

Prints "ready", waits for a line on stdin, then allocate() mallocs 123457 bytes (libc, through
ctypes) and prints the pointer in hex, release() frees it, and a realloc from 1000 to 200000
bytes is printed as "realloc OLD NEW"; prints "done" and waits for stdin to close.
"""
import ctypes
import sys

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.realloc.restype = ctypes.c_void_p
libc.realloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]


def allocate():
    return libc.malloc(123457)


def release(pointer):
    libc.free(pointer)


def grow():
    old = libc.malloc(1000)
    new = libc.realloc(old, 200000)
    print(f"realloc {old:#x} {new:#x}", flush=True)
    libc.free(new)


print("ready", flush=True)
sys.stdin.readline()
block = allocate()
print(f"{block:#x}", flush=True)
release(block)
grow()
print("done", flush=True)
sys.stdin.read()
