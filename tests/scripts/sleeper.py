"""Prints `ready`, then sleeps in short naps until killed."""

import time

print("ready", flush=True)
while True:
    time.sleep(0.01)
