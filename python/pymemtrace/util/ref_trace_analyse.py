"""Analyses a log written by ``cPyMemTrace.ReferenceTracing`` (Python 3.13+).

The log holds ``NEW:`` and ``DEL:`` rows (Clock, Address, RefCnt, Type, File, Line, Function,
RSS, dRSS) between ``SOF`` and ``EOF``. Pairing each ``DEL:`` with the ``NEW:`` at the same
address gives the objects still alive when tracing stopped (with where they were made), the
objects made and freed while tracing, deletions of objects made before tracing began
("untracked"), and per-type counts.

Command line (as pymemtrace 0.4.0's)::

    python -m pymemtrace.util.ref_trace_analyse [--full-path] [--ignore-untracked]
        [--ignore-historical] [-l LEVEL] LOG_PATH
"""

import argparse
import collections
import dataclasses
import logging
import os
import sys
import time
import typing

logger = logging.getLogger(__name__)

#: Rows that describe an object.
OBJECT_ROWS = ("NEW:", "DEL:")


@dataclasses.dataclass
class ObjectData:
    """One ``NEW:``/``DEL:`` row, its columns typed."""

    line_num: int
    clock: float
    address: int
    ref_cnt: int
    type: str
    file: str
    line: int
    function: str
    rss: int
    drss: int


def parse_object_row(line_num: int, line: str) -> ObjectData:
    """Reads one ``NEW:``/``DEL:`` row; the file column may hold spaces, the others do not.

    Raises ValueError, naming the line, when the row has too few columns or a column is not
    the number it should be.
    """
    tokens = line.split()
    if len(tokens) < 9 or tokens[0] not in OBJECT_ROWS:
        raise ValueError(f"Line {line_num}: not a NEW:/DEL: row with 9 columns: {line.rstrip()!r}")
    try:
        return ObjectData(
            line_num=line_num,
            clock=float(tokens[1]),
            address=int(tokens[2], 16),
            ref_cnt=int(tokens[3]),
            type=tokens[4],
            file=" ".join(tokens[5:-4]),
            line=int(tokens[-4]),
            function=tokens[-3],
            rss=int(tokens[-2]),
            drss=int(tokens[-1]),
        )
    except ValueError as err:
        raise ValueError(f"Line {line_num}: {err}: {line.rstrip()!r}") from None


class LogFileResult:
    """What a ReferenceTracing log says: live objects, freed pairs, per-type counts."""

    def __init__(self, ignore_untracked: bool):
        #: Do not report deletions of objects whose creation is not in the log.
        self.ignore_untracked = ignore_untracked
        #: Lines before ``SOF`` (the ``message`` given to ReferenceTracing).
        self.intro_message_lines: typing.List[str] = []
        #: The ``HDR:`` row's column names.
        self.header_columns: typing.List[str] = []
        #: Objects made and not freed, by address.
        self.live_objects: typing.Dict[int, ObjectData] = {}
        #: (NEW, DEL) pairs of freed objects, by address (an address is reused).
        self.prev_objects: typing.Dict[int, typing.List[typing.Tuple[ObjectData, ObjectData]]] = {}
        self.type_count_new: typing.Dict[str, int] = collections.defaultdict(int)
        self.type_count_del: typing.Dict[str, int] = collections.defaultdict(int)
        self.type_count_untracked: typing.Dict[str, int] = collections.defaultdict(int)
        self.count_new = 0
        self.count_del = 0
        self.count_msg = 0

    def add_new(self, line_num: int, line: str) -> None:
        """Records a ``NEW:`` row."""
        obj = parse_object_row(line_num, line)
        earlier = self.live_objects.get(obj.address)
        if earlier is not None:
            logger.error(
                "NEW: at 0x%012x (%s) on line %d while the %s from line %d was never deleted",
                obj.address, obj.type, line_num, earlier.type, earlier.line_num,
            )
        self.live_objects[obj.address] = obj
        self.type_count_new[obj.type] += 1
        self.count_new += 1

    def add_del(self, line_num: int, line: str) -> None:
        """Records a ``DEL:`` row, pairing it with the live object at its address."""
        obj = parse_object_row(line_num, line)
        made = self.live_objects.pop(obj.address, None)
        if made is not None:
            self.prev_objects.setdefault(obj.address, []).append((made, obj))
        else:
            self.type_count_untracked[obj.type] += 1
            if not self.ignore_untracked:
                logger.warning(
                    'DEL: on untracked object of type "%s" at 0x%012x RefCnt: %d on line %d',
                    obj.type, obj.address, obj.ref_cnt, line_num,
                )
        self.type_count_del[obj.type] += 1
        self.count_del += 1

    def add_msg(self, line_num: int, line: str) -> None:
        """Counts a ``MSG:`` row."""
        self.count_msg += 1

    def add_err(self, line_num: int, line: str) -> None:
        """Reports an ``ERR:`` row."""
        logger.error("Line %d %s", line_num, line.rstrip())

    def long_str_list(self, show_full_path: bool, ignore_historical: bool) -> typing.List[str]:
        """The analysis as lines of text: untracked, live and freed objects, type counts."""

        def where(obj: ObjectData) -> str:
            name = obj.file if show_full_path else os.path.basename(obj.file)
            return f"{name}#{obj.line}"

        lines = []
        if self.intro_message_lines:
            lines.append("Initial Message:")
            lines.extend(self.intro_message_lines)
        if not self.ignore_untracked:
            lines.append(f"Untracked Objects [{len(self.type_count_untracked)}]:")
            lines.append(f'{"Type":40} {"Count":>8}')
            for name in sorted(self.type_count_untracked):
                lines.append(f"{name:40} {self.type_count_untracked[name]:>8}")
        lines.append(f"Live Objects [{len(self.live_objects)}]:")
        for address in sorted(self.live_objects):
            obj = self.live_objects[address]
            lines.append(
                f"    0x{obj.address:012x} {obj.ref_cnt:4d} {obj.type:40} {obj.function:32} {where(obj)}"
            )
        lines.append(f"Previous Objects [{len(self.prev_objects)}]:")
        if not ignore_historical:
            for address in sorted(self.prev_objects):
                for made, freed in self.prev_objects[address]:
                    lines.append(
                        f"    0x{address:012x} {made.type:40} NEW: {where(made)} DEL: {where(freed)}"
                    )
        types = sorted(set(self.type_count_new) | set(self.type_count_del))
        lines.append(f"Type count [{len(types)}]:")
        lines.append(f'{"Type":40} {"New":>8} {"Del":>8} {"New - Del":>10}')
        for name in types:
            new, gone = self.type_count_new[name], self.type_count_del[name]
            lines.append(f"{name:40} {new:>8} {gone:>8} {new - gone:10}")
        return lines


def process_file(file: typing.TextIO, ignore_untracked: bool) -> LogFileResult:
    """Reads an open ReferenceTracing log into a LogFileResult.

    With ``ignore_untracked`` deletions of objects made before tracing began are not reported.
    """
    result = LogFileResult(ignore_untracked=ignore_untracked)
    started = False
    handlers = {
        "NEW:": result.add_new,
        "DEL:": result.add_del,
        "MSG:": result.add_msg,
        "ERR:": result.add_err,
    }
    line_num = 0
    for line_num, line in enumerate(file, start=1):
        text = line.rstrip("\n")
        if text == "SOF":
            started = True
        elif text == "EOF":
            break
        elif not started:
            result.intro_message_lines.append(text)
        elif text.startswith("HDR:"):
            result.header_columns = text.split()
        else:
            handler = handlers.get(text[:4])
            if handler is None:
                logger.error('Line %d: Can not process line "%s"', line_num, text)
            else:
                handler(line_num, line)
    logger.info(
        "Lines: %d NEW: %d DEL: %d NEW - DEL: %d MSG: %d",
        line_num, result.count_new, result.count_del, result.count_new - result.count_del, result.count_msg,
    )
    return result


def process_file_path(file_path: str, ignore_untracked: bool) -> LogFileResult:
    """Reads the ReferenceTracing log at ``file_path`` into a LogFileResult."""
    with open(file_path, encoding="utf-8", errors="replace") as file:
        return process_file(file, ignore_untracked)


def main(argv: typing.Optional[typing.List[str]] = None) -> int:
    """The command line: prints the analysis of one log."""
    parser = argparse.ArgumentParser(
        prog="python -m pymemtrace.util.ref_trace_analyse",
        description="Reads a ReferenceTracing log and lists live objects, freed objects and counts by type.",
    )
    parser.add_argument("log_path", help="The ReferenceTracing log file.")
    parser.add_argument("--full-path", action="store_true", help="Show whole file paths, not base names.")
    parser.add_argument("--ignore-untracked", action="store_true",
                        help="Do not report deletions of objects made before tracing began.")
    parser.add_argument("--ignore-historical", action="store_true",
                        help="Do not list objects that were made and freed while tracing.")
    parser.add_argument("-l", "--log_level", type=int, dest="log_level", default=20,
                        help="Log level (debug=10, info=20, warning=30, error=40) [default: %(default)s]")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stdout,
                        format="%(asctime)s - %(filename)s#%(lineno)d - %(levelname)-8s - %(message)s")
    started = time.perf_counter()
    print(f"File path: {args.log_path}")
    try:
        result = process_file_path(args.log_path, args.ignore_untracked)
    except (OSError, ValueError) as err:
        print(f"ref_trace_analyse: {err}", file=sys.stderr)
        return 1
    print("\n".join(result.long_str_list(args.full_path, args.ignore_historical)))
    print(f"Process time: {time.perf_counter() - started:.3f} (s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
