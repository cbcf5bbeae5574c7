"""Two threads: `keep_growing` keeps 1 MiB more every --pause seconds (up to --mb MiB, then
holds it), `spin` burns CPU without allocating. Prints `ready` once both run; lingers until
killed. `pmt top` must show `keep_growing` first by growth, `spin` first by CPU."""

import sys
import threading
import time


def spin(stop):
    x = 0
    while not stop.is_set():
        x = (x * 31 + 7) % 1000003


def keep_growing(kept, mb, pause):
    for _ in range(mb):
        kept.append(bytearray(1 << 20))
        time.sleep(pause)


def main():
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    mb = int(args.get("--mb", "400"))
    pause = float(args.get("--pause", "0.05"))
    stop = threading.Event()
    spinner = threading.Thread(target=spin, args=(stop,), name="spinner", daemon=True)
    spinner.start()
    kept = []
    print("ready")
    sys.stdout.flush()
    keep_growing(kept, mb, pause)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
