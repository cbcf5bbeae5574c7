"""Prints "ready", then mallocs and frees 64 KiB every 10 ms until stdin closes or it is killed."""
import ctypes
import sys
import threading
import time

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
done = threading.Event()


def wait_stdin():
    sys.stdin.read()
    done.set()


threading.Thread(target=wait_stdin, daemon=True).start()
print("ready", flush=True)
while not done.is_set():
    libc.free(libc.malloc(64 << 10))
    time.sleep(0.01)
