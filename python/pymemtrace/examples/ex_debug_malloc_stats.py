"""debug_malloc_stats: how pymalloc's arenas, pools and blocks change while strings of three
sizes (under, over and well over pymalloc's 512-byte limit) are made."""
import sys

from pymemtrace import debug_malloc_stats


def create_strings(count: int, length: int) -> list:
    return [' ' * length for _ in range(count)]


def main() -> int:
    for length in (256, 1024, 64 * 1024):
        with debug_malloc_stats.DiffSysDebugMallocStats() as diff:
            kept = create_strings(1024, length)
        print(f' strings of {length} bytes '.center(75, '-'))
        print(diff.diff())
        del kept
    return 0


if __name__ == '__main__':
    sys.exit(main())
