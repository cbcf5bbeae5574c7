"""Log a process's memory and CPU use as JSON inside ordinary log lines, every few seconds, from a
background thread; and read such logs back as a table or gnuplot files.

A log line looks like (JSON at the end, after a marker)::

    2020-11-16 10:36:39,392 - process.py#293 - 14052 - (ProcMon   ) - INFO     - ProcessLoggingThread-JSON {"timestamp": "2020-11-16 10:36:39.392076", "memory_info": {"rss": 209616896, ...}, "cpu_times": {...}, "elapsed_time": 0.60, "pid": 14052, "label": "..."}

Use::

    with process.log_process(interval=0.5, log_level=logging.INFO):
        process.add_message_to_queue('Loading')   # appears as "label" in the next record
        ...

or the decorator :py:func:`log_process_dec`. ``pmt process`` writes the same lines for another process.

Where the numbers come from: on Linux, ``/proc/PID/stat`` and ``/proc/PID/statm`` are read
directly (the same numbers psutil reports; ``memory_info`` has psutil's Linux fields plus
``pfaults``, all page faults, and ``pageins``, major faults, so that summaries work on Linux).
Elsewhere psutil is used if it is installed.

Command line: ``python -m pymemtrace.process [-p PID] [-i SECONDS]`` logs a process;
``python -m pymemtrace.process LOG`` summarises a log; ``... LOG DIR`` writes gnuplot files.
"""
import argparse
import contextlib
import datetime
import functools
import json
import logging
import os
import queue
import re
import sys
import threading
import time
import typing

from pymemtrace.util import gnuplot
from pymemtrace.util.gnuplot import create_gnuplot_dat  # noqa: F401 (0.4.0's name in this module)

logger = logging.getLogger(__file__)

#: Marker that identifies the log lines carrying JSON.
LOGGER_PREFIX = 'ProcessLoggingThread-JSON'
#: Marker of the first record.
LOGGER_PREFIX_START = f'{LOGGER_PREFIX}-START'
#: Marker of the last record.
LOGGER_PREFIX_STOP = f'{LOGGER_PREFIX}-STOP'
#: Finds the JSON in a log line; group 1 is ``-START``, ``-STOP`` or None, group 2 the JSON.
RE_LOG_LINE = re.compile(rf'^.+?{LOGGER_PREFIX}(-START|-STOP)?\s*(.+)$')
#: Format of the ``timestamp`` value, e.g. ``2019-06-07 11:57:58.390921``.
DATETIME_NOW_FORMAT = '%Y-%m-%d %H:%M:%S.%f'
#: Key of the local time of the record.
KEY_TIMESTAMP = 'timestamp'
#: Key of the seconds since the process started.
KEY_ELAPSED_TIME = 'elapsed_time'
#: Key of the message attached to the record.
KEY_LABEL = 'label'
#: Key of the process ID.
KEY_PROCESS_ID = 'pid'
#: The keys of psutil's ``Process.as_dict()``.
PSUTIL_PROCESS_AS_DICT_KEYS = [
    'cmdline', 'connections', 'cpu_percent', 'cpu_times', 'create_time', 'cwd', 'environ', 'exe', 'gids',
    'memory_full_info', 'memory_info', 'memory_percent', 'name', 'nice', 'num_ctx_switches', 'num_fds',
    'num_threads', 'open_files', 'pid', 'ppid', 'status', 'terminal', 'threads', 'uids', 'username',
]
#: gnuplot script; ``GNUPLOT_PLT.format(name=..., extension='png', labels='...')``.
GNUPLOT_PLT = """set grid
set title "Memory and CPU Usage." font ",14"
set xlabel "Elapsed Time (s)"
set ylabel "Memory Usage (Mb)"
set y2label "CPU Usage (%), Page Faults (10,000/s)"
set y2tics
set pointsize 1
set datafile separator whitespace
set datafile missing "NaN"
set terminal {extension} size 1000,700
set output "{name}.{extension}"
{labels}
plot "{name}.dat" using 1:($2 / 1024**2) axes x1y1 title "RSS (Mb), left axis" with lines lt 1 lw 2, \\
    "{name}.dat" using 1:($3 / 10000) axes x1y2 title "Page Faults (10,000/s), right axis" with lines lt 3 lw 1, \\
    "{name}.dat" using 1:5 axes x1y2 title "Mean CPU (%), right axis" with lines lt 2 lw 1, \\
    "{name}.dat" using 1:6 axes x1y2 title "Instantaneous CPU (%), right axis" with lines lt 7 lw 1
reset
"""


class _ProcReader:
    """Reads one process's memory and CPU numbers from Linux ``/proc``."""

    def __init__(self, pid: int):
        self.pid = pid
        self._ticks = float(os.sysconf('SC_CLK_TCK'))
        self._page = os.sysconf('SC_PAGE_SIZE')
        with open('/proc/stat') as stat:
            boot = [line.split()[1] for line in stat if line.startswith('btime ')]
        if not boot:
            raise RuntimeError('/proc/stat has no btime line')
        # Fails now (FileNotFoundError) if the process does not exist.
        self._create_time = float(boot[0]) + int(self._stat()[19]) / self._ticks

    def _stat(self) -> typing.List[str]:
        with open(f'/proc/{self.pid}/stat', 'rb') as file:
            text = file.read().decode('utf-8', 'replace')
        return text[text.rindex(')') + 2:].split()

    def memory_info(self) -> typing.Dict[str, int]:
        fields = self._stat()
        with open(f'/proc/{self.pid}/statm') as file:
            size, resident, shared, text, lib, data, dirty = (int(v) * self._page for v in file.read().split()[:7])
        minflt, majflt = int(fields[7]), int(fields[9])
        return {
            'rss': resident, 'vms': size, 'shared': shared, 'text': text, 'lib': lib, 'data': data,
            'dirty': dirty, 'pfaults': minflt + majflt, 'pageins': majflt,
        }

    def cpu_times(self) -> typing.Dict[str, float]:
        fields = self._stat()
        seconds = [int(fields[i]) / self._ticks for i in (11, 12, 13, 14)]
        iowait = int(fields[39]) / self._ticks if len(fields) > 39 else 0.0
        return {
            'user': seconds[0], 'system': seconds[1], 'children_user': seconds[2], 'children_system': seconds[3],
            'iowait': iowait,
        }

    def create_time(self) -> float:
        return self._create_time


class _PsutilReader:
    """Reads one process's numbers with psutil (non-Linux platforms)."""

    def __init__(self, pid: int):
        import psutil  # Only needed where /proc is not available.
        self.pid = pid
        self._process = psutil.Process(pid)

    def memory_info(self) -> typing.Dict[str, int]:
        return dict(self._process.memory_info()._asdict())

    def cpu_times(self) -> typing.Dict[str, float]:
        return dict(self._process.cpu_times()._asdict())

    def create_time(self) -> float:
        return self._process.create_time()


def _reader(pid: int) -> typing.Union[_ProcReader, _PsutilReader]:
    if sys.platform.startswith('linux') and os.path.isdir('/proc/self'):
        try:
            return _ProcReader(pid)
        except FileNotFoundError:
            raise ProcessLookupError(f'No process with PID {pid}') from None
    try:
        return _PsutilReader(pid)
    except ImportError:
        raise ImportError('pymemtrace.process needs psutil on this platform: pip install psutil') from None


def parse_timestamp(s: str) -> datetime.datetime:
    """Parse a ``timestamp`` value such as ``'2019-06-07 11:57:58.390921'``."""
    return datetime.datetime.strptime(s, DATETIME_NOW_FORMAT)


def extract_json(istream: typing.TextIO) -> typing.List[typing.Dict[str, typing.Any]]:
    """The records of the log lines in ``istream`` (timestamps parsed to datetimes); other lines are skipped."""
    records = []
    for line in istream:
        match = RE_LOG_LINE.match(line.rstrip('\n'))
        if match:
            try:
                record = json.loads(match.group(2))
            except ValueError:
                continue
            if KEY_TIMESTAMP in record:
                record[KEY_TIMESTAMP] = parse_timestamp(record[KEY_TIMESTAMP])
            records.append(record)
    return records


def extract_labels_from_json(json_data: typing.List[typing.Dict[str, typing.Any]]) \
        -> typing.List[typing.Dict[str, typing.Any]]:
    """The records that carry a ``label``."""
    return [record for record in json_data if KEY_LABEL in record]


def _page_faults(record: typing.Dict[str, typing.Any]) -> int:
    """All page faults so far: ``pfaults`` (macOS and pymemtrace-rs), else 0 (psutil on Linux has none)."""
    return record['memory_info'].get('pfaults', 0)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else 0.0


def extract_json_as_table(json_data: typing.List[typing.Dict[str, typing.Any]]) \
        -> typing.Tuple[
            typing.Dict[int, typing.List[typing.List[str]]],
            typing.Dict[int, float], typing.Dict[int, float], typing.Dict[int, float], typing.Dict[int, float],
        ]:
    """Tables for gnuplot ``.dat`` files, one per PID, and per PID: t min, t max, RSS min, RSS max.

    A row: time, RSS, page faults/s, user CPU, mean CPU %, instantaneous CPU %, timestamp, PID, label.
    """
    header = [
        f'{"#t(s)":12}', f'{"RSS":>12}', f'{"PageFaults/s":>12}', f'{"User":>12}', f'{"Mean_CPU%":>12}',
        f'{"Inst_CPU%":>12}', f'{"Timestamp":<26}', f'{"PID":>6}', 'Label',
    ]
    tables: typing.Dict[int, typing.List[typing.List[str]]] = {}
    previous: typing.Dict[int, typing.Tuple[float, float, int]] = {}
    t_min: typing.Dict[int, float] = {}
    t_max: typing.Dict[int, float] = {}
    rss_min: typing.Dict[int, float] = {}
    rss_max: typing.Dict[int, float] = {}
    for record in json_data:
        pid = record[KEY_PROCESS_ID]
        if pid not in tables:
            tables[pid] = [header[:]]
            previous[pid] = (0.0, 0.0, 0)
            t_min[pid], t_max[pid] = sys.float_info.max, sys.float_info.min
            rss_min[pid], rss_max[pid] = sys.float_info.max, sys.float_info.min
        prev_user, prev_elapsed, prev_faults = previous[pid]
        elapsed = record[KEY_ELAPSED_TIME]
        user = record['cpu_times']['user']
        faults = _page_faults(record)
        rss = record['memory_info']['rss']
        timestamp = record[KEY_TIMESTAMP]
        if isinstance(timestamp, str):
            timestamp = parse_timestamp(timestamp)
        tables[pid].append([
            f'{elapsed:<12.1f}',
            f'{rss:12d}',
            f'{_ratio(faults - prev_faults, elapsed - prev_elapsed):12.1f}',
            f'{user:12.1f}',
            f'{_ratio(user, elapsed):12.1%}',
            f'{_ratio(user - prev_user, elapsed - prev_elapsed):12.1%}',
            f'{timestamp.strftime("%Y-%m-%dT%H:%M:%S.%f"):26}',
            f'{pid:6d}',
            f'# {record.get(KEY_LABEL, "")}',
        ])
        previous[pid] = (user, elapsed, faults)
        t_min[pid], t_max[pid] = min(elapsed, t_min[pid]), max(elapsed, t_max[pid])
        rss_min[pid], rss_max[pid] = min(rss, rss_min[pid]), max(rss, rss_max[pid])
    return tables, t_min, t_max, rss_min, rss_max


def invoke_gnuplot(log_path: str, gnuplot_dir: str) -> int:
    """Write ``<log name>_<pid>.dat`` and ``.plt`` into ``gnuplot_dir`` for each PID of the log at
    ``log_path`` and run gnuplot on them if it is installed. Returns gnuplot's exit code (0 if it is not installed)."""
    with open(log_path) as istream:
        json_data = extract_json(istream)
    table, _t_min, _t_max, rss_min, rss_max = extract_json_as_table(json_data)
    labels = extract_labels_from_json(json_data)
    result = 0
    for pid in table:
        name = f'{os.path.basename(log_path)}_{pid}'
        y_value = (0.5 * (rss_max[pid] - rss_min[pid])) / 1024 ** 2
        label_lines = []
        for label in labels:
            t_value = label[KEY_ELAPSED_TIME]
            label_lines.append(f'set arrow from {t_value},{y_value} to {t_value},0 lt -1 lw 1')
            label_lines.append(
                f'set label "{label[KEY_LABEL]}" at {t_value},{y_value * 1.025} left font ",10" rotate by 90 noenhanced front'
            )
        plt = GNUPLOT_PLT.format(name=name, extension='png', labels='\n'.join(label_lines))
        result = gnuplot.invoke_gnuplot(gnuplot_dir, name, table[pid], plt)
        if result:
            break
    return result


def write_log_to_stdout(log_path: str) -> None:
    """Print each PID's table of the log at ``log_path`` between centred rulers."""
    with open(log_path) as istream:
        json_data = extract_json(istream)
    table = extract_json_as_table(json_data)[0]
    for pid in table:
        print(f' PID: {pid} '.center(75, '-'))
        for row in table[pid]:
            print(' '.join(row))
        print(f' PID: {pid} DONE '.center(75, '-'))


#: The threads of the active ``log_process`` blocks, innermost last (for :py:func:`add_message_to_queue`).
_ACTIVE: typing.List['ProcessLoggingThread'] = []
_ACTIVE_LOCK = threading.Lock()


class ProcessLoggingThread(threading.Thread):
    """A thread that logs the data of process ``pid`` (-1: this process) every ``interval`` seconds at ``log_level``."""

    def __init__(self, group=None, target=None, name=None, daemon=None,
                 interval=1.0, log_level=logging.INFO, pid=-1):
        if name is None:
            name = 'ProcMon'
        super().__init__(group=group, target=target, name=name, daemon=daemon)
        if interval <= 0:
            raise ValueError(f'interval must be > 0, not {interval!r}')
        self._interval = interval
        self._log_level = log_level
        self._pid = os.getpid() if pid == -1 else pid
        self._reader = _reader(self._pid)
        #: Messages waiting to be written as the ``label`` of the next record(s).
        self.process_queue: 'queue.Queue[str]' = queue.Queue()
        self._run = True
        self._stop_event = threading.Event()
        self._write_lock = threading.Lock()

    def add_message_to_queue(self, msg: str) -> None:
        """Attach ``msg`` as the ``label`` of the next record."""
        self.process_queue.put(msg)

    def _get_process_data(self, **kwargs) -> typing.Dict[str, typing.Any]:
        record: typing.Dict[str, typing.Any] = {
            KEY_TIMESTAMP: datetime.datetime.now().strftime(DATETIME_NOW_FORMAT),
            'memory_info': self._reader.memory_info(),
            'cpu_times': self._reader.cpu_times(),
        }
        record[KEY_ELAPSED_TIME] = time.time() - self._reader.create_time()
        record[KEY_PROCESS_ID] = self._pid
        record.update(kwargs)
        return record

    def _write_to_log(self, prefix: str) -> None:
        with self._write_lock:
            if not self._run:
                return
            try:
                messages = []
                while True:
                    try:
                        messages.append(self.process_queue.get_nowait())
                    except queue.Empty:
                        break
                if not messages:
                    logger.log(self._log_level, f'{prefix} {json.dumps(self._get_process_data())}')
                for msg in messages:
                    logger.log(self._log_level, f'{prefix} {json.dumps(self._get_process_data(label=msg))}')
            except (FileNotFoundError, ProcessLookupError):
                logger.log(self._log_level, f'Process {self._pid} has exited.')
                self._run = False
                self._stop_event.set()

    def run(self) -> None:
        """Write the START record, then a record every interval until :py:meth:`join`."""
        self._write_to_log(LOGGER_PREFIX_START)
        while not self._stop_event.wait(self._interval):
            self._write_to_log(LOGGER_PREFIX)

    def join(self, *args, **kwargs) -> None:
        """Write the STOP record, stop the thread and wait for it."""
        self._write_to_log(LOGGER_PREFIX_STOP)
        with self._write_lock:
            self._run = False
        self._stop_event.set()
        super().join(*args, **kwargs)


@contextlib.contextmanager
def log_process(*args, **kwargs) -> typing.Iterator[ProcessLoggingThread]:
    """Log process data at regular intervals during the ``with`` block; yields the thread.
    Arguments are those of :py:class:`ProcessLoggingThread` (``interval``, ``log_level``, ``pid``...)."""
    thread = ProcessLoggingThread(*args, **kwargs)
    if kwargs.get('daemon') is None and len(args) < 4:
        # Never keep the interpreter alive for the logger if the block is abandoned.
        thread.daemon = True
    thread.start()
    with _ACTIVE_LOCK:
        _ACTIVE.append(thread)
    try:
        yield thread
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.remove(thread)
        thread.join()


def add_message_to_queue(msg: str) -> None:
    """Attach ``msg`` as the ``label`` of the next record of the innermost active :py:func:`log_process`.
    RuntimeError if none is active."""
    with _ACTIVE_LOCK:
        if not _ACTIVE:
            raise RuntimeError('add_message_to_queue() needs an active process.log_process() block')
        thread = _ACTIVE[-1]
    thread.add_message_to_queue(msg)


def log_process_dec(*dec_args, **dec_kwargs):
    """Decorator: run the function inside ``log_process(*dec_args, **dec_kwargs)``."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with log_process(*dec_args, **dec_kwargs):
                return fn(*args, **kwargs)

        return wrapper

    return decorate


def add_process_logger_to_argument_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``--log-process SECONDS`` (0.0: off) to ``parser``."""
    parser.add_argument(
        '--log-process', default=0.0, type=float,
        help='Log process data such as memory usage as an INFO line every LOG_PROCESS seconds.'
             ' 0.0 means no process data is logged. [default: %(default)s]',
    )


def main(argv: typing.Optional[typing.Sequence[str]] = None) -> int:
    """Command line: log a process, or summarise a log (``LOG``), or write gnuplot files (``LOG DIR``)."""
    parser = argparse.ArgumentParser(
        prog='process.py',
        description='Log a process\'s memory use, or summarise such a log to stdout or to gnuplot files.',
    )
    parser.add_argument('-i', '--interval', type=float, default=1.0,
                        help='Logging interval in seconds [default: %(default)s]')
    parser.add_argument('-p', '--pid', type=int, default=-1, help='PID to monitor, -1 is this [default: %(default)s]')
    parser.add_argument('-l', '--log_level', type=int, dest='log_level', default=20,
                        help='Log Level (debug=10, info=20, warning=30, error=40, critical=50) [default: %(default)s]')
    parser.add_argument('path_in', type=str, nargs='?', help='A log file to read.')
    parser.add_argument('path_out', type=str, nargs='?', help='Directory for the gnuplot files.')
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format='%(asctime)s - %(filename)s#%(lineno)d - %(process)5d - (%(threadName)-10s) - %(levelname)-8s - %(message)s',
    )
    if args.path_in and args.path_out:
        return invoke_gnuplot(args.path_in, args.path_out)
    if args.path_in:
        write_log_to_stdout(args.path_in)
        return 0
    with log_process(interval=args.interval, log_level=args.log_level, pid=args.pid) as thread:
        try:
            while thread.is_alive():
                time.sleep(0.5)
        except KeyboardInterrupt:
            print('KeyboardInterrupt!')
    return 0


if __name__ == '__main__':
    sys.exit(main())
