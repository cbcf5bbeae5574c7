"""A target program to watch from outside: grows and trims a list of strings three times, with
pauses (``pmt-sample -- python -m pymemtrace.examples.example``, or ``process_tree -p PID``)."""
import sys
import time


def make_list_strings(count: int) -> list:
    strings = [' ' * 1024 for _ in range(count)]
    time.sleep(0.25)
    return strings


def trim_list(strings: list, length: int) -> list:
    del strings[length:]
    time.sleep(0.15)
    return strings


def main() -> int:
    for _ in range(3):
        strings = make_list_strings(10 * 1024)
        time.sleep(0.5)
        trim_list(strings, 128)
        time.sleep(0.2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
