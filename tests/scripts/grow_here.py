"""Grows by --mb MiB in `grow_here`, 1 MiB at a time with a short pause after each, so a
sampler finds the growth on `grow_here`'s stack. Prints `ready`, waits --start-delay, grows,
prints `done`, then lingers."""

import sys
import time


def grow_here(kept, mb, pause):
    for _ in range(mb):
        kept.append(bytearray(1 << 20))
        time.sleep(pause)


def main():
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    mb = int(args.get("--mb", "30"))
    pause = float(args.get("--pause", "0.02"))
    print("ready")
    sys.stdout.flush()
    time.sleep(float(args.get("--start-delay", "1.0")))
    kept = []
    grow_here(kept, mb, pause)
    print("done")
    sys.stdout.flush()
    time.sleep(float(args.get("--linger", "0.3")))


if __name__ == "__main__":
    main()
