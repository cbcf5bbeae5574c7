"""process.log_process_dec: the same logging as ``ex_process`` around one decorated function."""
import logging
import random
import sys
import time

from pymemtrace import process


@process.log_process_dec(interval=0.25, log_level=logging.INFO)
def example_process_decorator_basic() -> int:
    strings = []
    for _ in range(4):
        strings.extend(' ' * random.randint(1024, 32 * 1024) for _ in range(256))
        time.sleep(0.3)
    return len(strings)


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format='%(asctime)s - %(filename)s#%(lineno)d - %(process)5d - %(levelname)-8s - %(message)s')
    print(f'Made {example_process_decorator_basic()} strings')
    return 0


if __name__ == '__main__':
    sys.exit(main())
