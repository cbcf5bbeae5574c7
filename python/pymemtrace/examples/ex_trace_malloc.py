"""trace_malloc: the net Python allocation of a block, its largest sites, and the decorator."""
import logging
import sys

from pymemtrace import trace_malloc


def create_strings(count: int, length: int) -> list:
    return [' ' * length for _ in range(count)]


@trace_malloc.trace_malloc_log(logging.INFO)
def example_decorated() -> int:
    return len(create_strings(1024, 1024))


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(levelname)-8s - %(message)s')
    kept = []
    with trace_malloc.TraceMalloc('filename') as tm:
        kept.extend(create_strings(1024, 1024))
    print(f'TraceMalloc memory delta: {tm.diff:,d}')
    for stat in tm.net_statistics()[:5]:
        print(f'    {stat}')
    example_decorated()
    return 0


if __name__ == '__main__':
    sys.exit(main())
