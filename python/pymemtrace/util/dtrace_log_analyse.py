"""Reconciles per-call malloc and free lines of a DTrace (or bpftrace) log of a Python process.

Each line names the process, the Python file and line running, the function, and the call::

     77633  cmn_cmd_opts.py:141  -> set_log_level malloc(560) pntr 0x7fca83ef4240
     77633       process.py:268  -> _get_process_data free(0x7fca83c00620)

The repository's ``dtrace/py_malloc_free.bt`` (bpftrace, Linux) and ``dtrace/py_malloc_free.d``
(DTrace, macOS/illumos) write such logs; pymemtrace 0.4.0's ``toolkit/py_flow_malloc_free.d``
did too.

Pairing every ``free(p)`` with the ``malloc`` that returned ``p`` gives what is still
allocated at the end, the peak bytes outstanding, and counts of calls; lines that cannot be
read or paired are counted, not fatal. Reading stops at ``dtrace:::END``; blank lines,
``dtrace:::BEGIN``, comment lines (starting with ``#``, as the scripts' first and last lines)
and bpftrace's ``Attaching N probes...`` are skipped.

Command line (as pymemtrace 0.4.0's)::

    python -m pymemtrace.util.dtrace_log_analyse [-l LEVEL] LOG_PATH
"""

import argparse
import dataclasses
import logging
import re
import sys
import time
import typing

logger = logging.getLogger(__name__)

# "PID FILE:LINE -> FUNCTION malloc(SIZE) pntr 0xADDRESS": groups pid, file, line, function, size, address.
RE_MALLOC = re.compile(
    r"^\s*(\d+)\s+(\S.*?):(\d+)\s+->\s+(\S.*?)?\s*\bmalloc\((\d+)\)\s+pntr\s+(0x[0-9a-fA-F]+)\s*$"
)
# "PID [FILE]:LINE -> [FUNCTION] free(0xADDRESS)": groups pid, file, line, function, address.
RE_FREE = re.compile(r"^\s*(\d+)\s+(\S.*?)?:(\d+)\s+->\s+(\S.*?)?\s*\bfree\((0x[0-9a-fA-F]+)\)\s*$")
# Lines whose site is garbled (DTrace truncates long strings) but whose call can be read.
RE_MALLOC_CALL = re.compile(r"\bmalloc\((\d+)\)\s+pntr\s+(0x[0-9a-fA-F]+)\s*$")
RE_FREE_CALL = re.compile(r"\bfree\((0x[0-9a-fA-F]+)\)\s*$")

BEGIN = "dtrace:::BEGIN"
END = "dtrace:::END"
# What bpftrace writes to stdout before the script's own output.
RE_BPFTRACE_ATTACHING = re.compile(r"^Attaching \d+ probes?\.\.\.$")


def is_skipped(text: str) -> bool:
    """Whether a line is no call and no failure: blank, BEGIN, a comment, bpftrace's banner."""
    stripped = text.strip()
    return (not stripped or stripped == BEGIN or stripped.startswith("#")
            or RE_BPFTRACE_ATTACHING.match(stripped) is not None)


@dataclasses.dataclass
class DTraceMallocCall:
    """One ``malloc`` line (unknown site columns are -1 or empty)."""

    log_line: int
    process: int
    file: str
    line: int
    function: typing.Optional[str]
    size: int
    pointer: int


@dataclasses.dataclass
class DTraceFreeCall:
    """One ``free`` line (unknown site columns are -1 or empty)."""

    log_line_num: int
    process: int
    file: typing.Optional[str]
    line: int
    function: typing.Optional[str]
    pointer: int


class DTraceMallocs:
    """The allocations still outstanding, by pointer, and the totals of a log."""

    def __init__(self):
        self.malloc_dict: typing.Dict[int, DTraceMallocCall] = {}
        self.count_mallocs = 0
        self.count_frees_non_null = 0
        self.count_frees_null = 0
        self.count_lines = 0
        self.total_bytes_malloced = 0
        self.total_bytes_freed = 0
        self.total_bytes_outstanding = 0
        self.max_malloc = 0
        self.max_allocations = 0
        self.max_bytes_outstanding = 0
        self.failed_to_add_malloc = 0
        self.failed_to_add_free = 0
        self.failed_to_parse_line = 0

    def __len__(self) -> int:
        """Allocations outstanding."""
        return len(self.malloc_dict)

    def add_malloc(self, call: DTraceMallocCall) -> None:
        """Records an allocation (a pointer already outstanding is counted as a failure)."""
        self.count_lines += 1
        earlier = self.malloc_dict.get(call.pointer)
        if earlier is not None:
            logger.error("malloc at 0x%012x on line %d: still outstanding from line %d",
                         call.pointer, call.log_line, earlier.log_line)
            self.failed_to_add_malloc += 1
            return
        self.malloc_dict[call.pointer] = call
        self.count_mallocs += 1
        self.total_bytes_malloced += call.size
        self.total_bytes_outstanding += call.size
        self.max_malloc = max(self.max_malloc, call.size)
        self.max_allocations = max(self.max_allocations, len(self.malloc_dict))
        self.max_bytes_outstanding = max(self.max_bytes_outstanding, self.total_bytes_outstanding)

    def add_free(self, call: DTraceFreeCall) -> None:
        """Records a free (of NULL, or of a pointer no malloc in the log returned)."""
        self.count_lines += 1
        if call.pointer == 0:
            self.count_frees_null += 1
            return
        made = self.malloc_dict.pop(call.pointer, None)
        if made is None:
            logger.error("free(0x%012x) on line %d: no malloc in the log returned it",
                         call.pointer, call.log_line_num)
            self.failed_to_add_free += 1
            return
        self.count_frees_non_null += 1
        self.total_bytes_freed += made.size
        self.total_bytes_outstanding -= made.size

    def str_failures(self) -> str:
        """One line counting what could not be read or paired."""
        return (
            f"Total lines: {self.count_lines + self.failed_to_parse_line:,d}"
            f" Failed parse lines: {self.failed_to_parse_line:,d}"
            f" Failed malloc: {self.failed_to_add_malloc:,d}"
            f" Failed free: {self.failed_to_add_free:,d}"
        )


def match_malloc_line(line: str, log_line: int) -> typing.Optional[DTraceMallocCall]:
    """The malloc call on ``line``, or None if it is not one."""
    m = RE_MALLOC.match(line)
    if m is not None:
        pid, file, lineno, function, size, pointer = m.groups()
        return DTraceMallocCall(log_line, int(pid), file, int(lineno), function, int(size), int(pointer, 16))
    m = RE_MALLOC_CALL.search(line)
    if m is not None:
        return DTraceMallocCall(log_line, -1, "", -1, "", int(m.group(1)), int(m.group(2), 16))
    return None


def match_free_line(line: str, log_line: int) -> typing.Optional[DTraceFreeCall]:
    """The free call on ``line``, or None if it is not one."""
    m = RE_FREE.match(line)
    if m is not None:
        pid, file, lineno, function, pointer = m.groups()
        return DTraceFreeCall(log_line, int(pid), file, int(lineno), function, int(pointer, 16))
    m = RE_FREE_CALL.search(line)
    if m is not None:
        return DTraceFreeCall(log_line, -1, "", -1, "", int(m.group(1), 16))
    return None


def read_dtrace_log_file(log_file: typing.TextIO) -> DTraceMallocs:
    """Reads an open log into a DTraceMallocs."""
    mallocs = DTraceMallocs()
    for log_line, line in enumerate(log_file, start=1):
        text = line.rstrip("\n")
        if is_skipped(text):
            continue
        if text == END:
            break
        call = match_malloc_line(text, log_line)
        if call is not None:
            mallocs.add_malloc(call)
            continue
        free = match_free_line(text, log_line)
        if free is not None:
            mallocs.add_free(free)
            continue
        logger.debug("Can not read line %d: %r", log_line, text)
        mallocs.failed_to_parse_line += 1
    return mallocs


def read_dtrace_log(log_path: str) -> DTraceMallocs:
    """Reads the log at ``log_path`` (any bytes: DTrace can truncate mid-character)."""
    with open(log_path, encoding="latin-1") as log_file:
        return read_dtrace_log_file(log_file)


def pprint_mallocs(mallocs: DTraceMallocs, st: typing.TextIO = sys.stdout) -> None:
    """Writes the summary of a log."""
    rows = [
        ("malloc count outstanding", len(mallocs)),
        ("Total bytes outstanding", mallocs.total_bytes_outstanding),
        ("Max bytes outstanding", mallocs.max_bytes_outstanding),
        ("Total bytes malloc'd", mallocs.total_bytes_malloced),
        ("Total bytes free'd", mallocs.total_bytes_freed),
        ("Maximum malloc", mallocs.max_malloc),
        ("Max allocations", mallocs.max_allocations),
        ("Count mallocs", mallocs.count_mallocs),
        ("Count frees non-null", mallocs.count_frees_non_null),
        ("Count frees null", mallocs.count_frees_null),
    ]
    st.write("DTraceMallocs:\n")
    for name, value in rows:
        st.write(f"{name:>24}: {value:12,d}\n")
    st.write(mallocs.str_failures() + "\n")


def main(argv: typing.Optional[typing.List[str]] = None) -> int:
    """The command line: prints the summary of one log."""
    parser = argparse.ArgumentParser(
        prog="python -m pymemtrace.util.dtrace_log_analyse",
        description="Reads a DTrace/bpftrace log of malloc and free calls and reports what is outstanding.",
    )
    parser.add_argument("-l", "--log_level", type=int, dest="log_level", default=20,
                        help="Log level (debug=10, info=20, warning=30, error=40) [default: %(default)s]")
    parser.add_argument("path_in", help="The log file.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stdout,
                        format="%(asctime)s - %(filename)s#%(lineno)d - %(levelname)-8s - %(message)s")
    started = time.perf_counter()
    try:
        result = read_dtrace_log(args.path_in)
    except OSError as err:
        print(f"dtrace_log_analyse: can not read {args.path_in}: {err.strerror}", file=sys.stderr)
        return 1
    pprint_mallocs(result)
    print(f"Process time: {time.perf_counter() - started:.3f} (s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
