"""process.log_process: log this process's memory and CPU every half second while it makes and
frees lists of strings, with a label on each step."""
import logging
import random
import sys
import time

from pymemtrace import process


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format='%(asctime)s - %(filename)s#%(lineno)d - %(process)5d - %(levelname)-8s - %(message)s')
    with process.log_process(interval=0.5, log_level=logging.INFO):
        for step in range(4):
            process.add_message_to_queue(f'Step {step}')
            strings = [' ' * random.randint(1024, 64 * 1024) for _ in range(512)]
            time.sleep(0.6)
            del strings
            time.sleep(0.2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
