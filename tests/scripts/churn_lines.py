"""A churn site and a CPU burner on the next line: `churn` allocates a 4 MiB buffer on one
line and spins on the next before dropping it, --rounds times (default 60). Allocation-time
stacks must put the buffers' bytes on the allocating line, not on the spin after it. Prints
`ready` and waits --start-delay seconds first, holds what the allocator kept for 0.5 s, prints
`done` at the end."""

import sys
import time


def spin(n):
    x = 0
    for i in range(n):
        x = (x * 31 + i) % 1000003
    return x


def churn(rounds):
    for _ in range(rounds):
        buf = bytearray(4 << 20)  # ALLOCATING LINE
        spin(100_000)
        del buf


def main():
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    print("ready", flush=True)
    time.sleep(float(args.get("--start-delay", "1")))
    churn(int(args.get("--rounds", "60")))
    # What the allocator keeps after the last free stays resident: hold it past the sampler's
    # 250 ms sustained-peak window, so that the peak is after the churn, not before it.
    time.sleep(0.5)
    print("done", flush=True)


if __name__ == "__main__":
    main()
