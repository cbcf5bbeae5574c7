"""Touches four kinds of pages and holds them all: 32 MiB of a file mapped shared
(`touch_file`), 32 MiB of anonymous memory (`touch_anonymous`), 64 MiB of anonymous memory
madvised MADV_HUGEPAGE (`touch_huge`, mapped as transparent huge pages where the kernel has
them), and 32 MiB allocated by `allocate_for_worker` and first written by a worker thread's
`fill` (the pages belong to the allocating line, as memray would charge them). Prints `huge pages: N` (the AnonHugePages bytes gained, from smaps_rollup), then `done`.
The in-kernel page ledger must show the file's pages under a `<file-backed pages>` leaf of
`touch_file` and charge each huge page whole to `touch_huge`. Prints `ready` and waits
--start-delay seconds first."""

import mmap
import os
import sys
import tempfile
import threading
import time

SIZE = 32 << 20
HUGE = 64 << 20
PAGE = mmap.PAGESIZE


def anon_huge_pages():
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1]) * 1024
    return 0


def touch_file(path):
    with open(path, "w+b") as f:
        f.truncate(SIZE)
        mapped = mmap.mmap(f.fileno(), SIZE)
    for offset in range(0, SIZE, PAGE):
        mapped[offset] = 1
    return mapped


def touch_anonymous():
    buf = bytearray(SIZE)
    for offset in range(0, SIZE, PAGE):
        buf[offset] = 1
    return buf


def touch_huge():
    mapped = mmap.mmap(-1, HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    mapped.madvise(mmap.MADV_HUGEPAGE)
    for offset in range(0, HUGE, PAGE):
        mapped[offset] = 1
    return mapped


def fill(buf):
    for offset in range(0, len(buf), PAGE):
        buf[offset] = 1


def allocate_for_worker():
    buf = bytearray(SIZE)  # calloc'd: no page is touched here
    worker = threading.Thread(target=fill, args=(buf,), name="filler")
    worker.start()
    worker.join()
    return buf


def main():
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    print("ready", flush=True)
    time.sleep(float(args.get("--start-delay", "1")))
    with tempfile.TemporaryDirectory() as tmp:
        before = anon_huge_pages()
        held = [touch_file(os.path.join(tmp, "mapped.bin")), touch_anonymous(), touch_huge(),
                allocate_for_worker()]
        print(f"huge pages: {anon_huge_pages() - before}", flush=True)
        time.sleep(0.5)
        print("done", flush=True)
        held[0].close()


if __name__ == "__main__":
    main()
