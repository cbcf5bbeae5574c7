"""A process tree to watch with ``python -m pymemtrace.process_tree -p PID``: a pool of worker
processes that each make and drop large strings. Prints its PID first; ``--workers`` and
``--rounds`` set its size (the defaults take about ten seconds)."""
import argparse
import multiprocessing
import os
import random
import sys
import time


def sub_process(rounds: int) -> int:
    total = 0
    for _ in range(rounds):
        string = ' ' * random.randint(8 * 1024 ** 2, 64 * 1024 ** 2)
        total += len(string)
        time.sleep(0.5 + random.random() / 2)
        del string
        time.sleep(0.25)
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m pymemtrace.examples.ex_process_tree')
    parser.add_argument('--workers', type=int, default=4)
    parser.add_argument('--rounds', type=int, default=8)
    args = parser.parse_args(argv)
    print(f'PID: {os.getpid()}', flush=True)
    with multiprocessing.Pool(processes=args.workers) as pool:
        totals = pool.map(sub_process, [args.rounds] * args.workers)
    print(f'Bytes made: {sum(totals):,d}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
