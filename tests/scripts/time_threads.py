"""Ground truth for time sampling: three Python threads whose time is known. The main thread
waits in `main_wait` from before any profiler attaches; `spin` burns CPU; `nap` sleeps in short
naps (it is off CPU almost all the time and switches often). Prints the process's CPU ticks
source (the spinning thread's kernel id) and READY."""
import threading
import time


def spin(started):
    started.set()
    x = 0
    while True:
        x += 1


def nap():
    while True:
        time.sleep(0.005)


def main_wait():
    time.sleep(3600)


started = threading.Event()
threading.Thread(target=spin, args=(started,), daemon=True).start()
threading.Thread(target=nap, daemon=True).start()
started.wait()
print("READY", flush=True)
main_wait()
