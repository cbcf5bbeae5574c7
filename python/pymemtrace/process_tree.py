"""Log the resource use of a process **and** all its descendants, every few seconds.

Each interval prints one row per process of the tree (children indented under their parent,
by PID), with the chosen columns and, for most, the change since the previous row of that
process (red when it grew, green when it fell). ``--json FILE`` also writes every sample as a
JSON list of trees (``process_time``, ``pid``, ``name``, the columns, ``children``).

Command line (as pymemtrace 0.4.0's)::

    python -m pymemtrace.process_tree -p PID [-i SECONDS] [--sep SEP] [-1] [-u] [-g] [-c] [-x]
        [-t] [-s] [-f] [-n] [--cmdline] [-a] [--json FILE]

On Linux the numbers are read from ``/proc`` (no psutil needed); ``pmt tree`` does the same
from outside Python.
"""
import argparse
import dataclasses
import json
import logging
import os
import sys
import time
import typing

logger = logging.getLogger(__name__)

RED = '\x1b[31m'
GREEN = '\x1b[32m'
DENIED = '\x1b[43m\x1b[30m'
RESET = '\x1b[0m'

_PAGE = os.sysconf('SC_PAGE_SIZE')
_TICKS = float(os.sysconf('SC_CLK_TCK'))
_STATES = {
    'R': 'running', 'S': 'sleeping', 'D': 'disk-sleep', 'T': 'stopped', 't': 'tracing-stop',
    'Z': 'zombie', 'X': 'dead', 'I': 'idle', 'P': 'parked', 'W': 'waking', 'K': 'wake-kill',
}


class Proc:
    """One process as ``/proc/PID`` describes it; methods raise ProcessLookupError once it is gone
    and PermissionError where the caller may not read it."""

    def __init__(self, pid: int):
        self.pid = pid
        self._last_cpu: typing.Optional[typing.Tuple[float, float]] = None
        self._create_time = _boot_time() + int(self._stat()[19]) / _TICKS

    def _read(self, name: str) -> str:
        try:
            with open(f'/proc/{self.pid}/{name}', 'rb') as file:
                return file.read().decode('utf-8', 'replace')
        except FileNotFoundError:
            raise ProcessLookupError(f'process {self.pid} has exited') from None

    def _stat(self) -> typing.List[str]:
        """The fields of ``/proc/PID/stat`` after the command name (index 0 is the state)."""
        text = self._read('stat')
        return text[text.rindex(')') + 2:].split()

    def is_running(self) -> bool:
        try:
            return self._stat()[0] not in ('Z', 'X') and self.create_time() == self._create_time
        except (ProcessLookupError, ValueError):
            return False

    def create_time(self) -> float:
        return _boot_time() + int(self._stat()[19]) / _TICKS

    def parent(self) -> int:
        return int(self._stat()[1])

    def name(self) -> str:
        return self._read('comm').rstrip('\n')

    def cmdline(self) -> typing.List[str]:
        return [arg for arg in self._read('cmdline').split('\0') if arg]

    def exec_time(self) -> float:
        """Seconds since the process started."""
        return time.time() - self._create_time

    def rss(self) -> int:
        return int(self._read('statm').split()[1]) * _PAGE

    def uss(self) -> int:
        """Private (unshared) memory, bytes; -1 where ``smaps_rollup`` may not be read."""
        try:
            text = self._read('smaps_rollup')
        except PermissionError:
            return -1
        kib = 0
        for line in text.splitlines():
            if line.startswith(('Private_Clean:', 'Private_Dirty:', 'Private_Hugetlb:')):
                kib += int(line.split()[1])
        return kib * 1024

    def page_faults(self) -> int:
        fields = self._stat()
        return int(fields[7]) + int(fields[9])

    def cpu_times(self) -> typing.Tuple[float, float]:
        fields = self._stat()
        return int(fields[11]) / _TICKS, int(fields[12]) / _TICKS

    def cpu_percent(self) -> float:
        """CPU use since the previous call (0.0 on the first), percent of one CPU."""
        now = time.monotonic()
        busy = sum(self.cpu_times())
        previous, self._last_cpu = self._last_cpu, (now, busy)
        if previous is None or now <= previous[0]:
            return 0.0
        return 100.0 * (busy - previous[1]) / (now - previous[0])

    def context_switches(self) -> int:
        total = 0
        for line in self._read('status').splitlines():
            if line.startswith(('voluntary_ctxt_switches:', 'nonvoluntary_ctxt_switches:')):
                total += int(line.split()[1])
        return total

    def num_threads(self) -> int:
        return int(self._stat()[17])

    def status(self) -> str:
        state = self._stat()[0]
        return _STATES.get(state, state)

    def _fd_targets(self) -> typing.List[str]:
        directory = f'/proc/{self.pid}/fd'
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            raise ProcessLookupError(f'process {self.pid} has exited') from None
        targets = []
        for name in names:
            try:
                targets.append(os.readlink(os.path.join(directory, name)))
            except OSError:
                continue
        return targets

    def num_open_files(self) -> int:
        """Open regular files (as psutil's ``open_files()`` counts them)."""
        return sum(1 for target in self._fd_targets() if target.startswith('/') and os.path.isfile(target))

    def num_net_connections(self) -> int:
        """Open inet sockets (TCP and UDP, v4 and v6)."""
        sockets = {t[8:-1] for t in self._fd_targets() if t.startswith('socket:[')}
        if not sockets:
            return 0
        count = 0
        for table in ('tcp', 'tcp6', 'udp', 'udp6'):
            try:
                lines = self._read(f'net/{table}').splitlines()[1:]
            except (ProcessLookupError, PermissionError):
                continue
            count += sum(1 for line in lines if len(line.split()) > 9 and line.split()[9] in sockets)
        return count


_BOOT_TIME: typing.List[float] = []


def _boot_time() -> float:
    if not _BOOT_TIME:
        with open('/proc/stat') as stat:
            _BOOT_TIME.extend(float(line.split()[1]) for line in stat if line.startswith('btime '))
    return _BOOT_TIME[0]


def children_of() -> typing.Dict[int, typing.List[int]]:
    """Every process's children, from each ``/proc/PID/stat``'s parent field."""
    children: typing.Dict[int, typing.List[int]] = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat', 'rb') as file:
                text = file.read().decode('utf-8', 'replace')
        except OSError:
            continue
        parent = int(text[text.rindex(')') + 2:].split()[1])
        children.setdefault(parent, []).append(int(entry))
    return children


@dataclasses.dataclass
class Column:
    """One column of the summary: what it reads, its scale and units, and how it is written."""

    name: str
    getter: typing.Callable[[Proc], typing.Any]
    scale: float
    units: str
    width: int
    format: str
    diff_format: typing.Optional[str]

    def title(self, prefix: str = '') -> str:
        return f'{prefix}{self.name}({self.units})' if self.units else f'{prefix}{self.name}'


def _cmdline_text(proc: Proc) -> str:
    return ' '.join(proc.cmdline())


#: Every column, in the order they are written; ``--all`` is ``-cfgstn``.
COLUMNS = {
    'rss': Column('RSS', Proc.rss, 1 / 1024 ** 2, 'MB', 8, '8,.1f', '+8,.1f'),
    'uss': Column('USS', Proc.uss, 1 / 1024 ** 2, 'MB', 8, '8,.1f', '+8,.1f'),
    'page_faults': Column('PFaults', Proc.page_faults, 1, '', 12, '12,d', '+12,d'),
    'cpu': Column('CPU', Proc.cpu_percent, 1, '%', 8, '8.1f', '+8.1f'),
    'user': Column('User', lambda p: p.cpu_times()[0], 1, 's', 8, '8,.3f', None),
    'sys': Column('Sys', lambda p: p.cpu_times()[1], 1, 's', 8, '8,.3f', None),
    'context_switches': Column('Ctx', Proc.context_switches, 1e-6, 'm', 8, '8,.1f', '8,.1f'),
    'threads': Column('Thrds', Proc.num_threads, 1, '', 6, '6,d', '+6,d'),
    'status': Column('Status', Proc.status, 1, '', 10, '>10s', '>10s'),
    'open_files': Column('Files', Proc.num_open_files, 1, '', 6, '>6d', '>6d'),
    'net_connections': Column('Net', Proc.num_net_connections, 1, '', 6, '>6d', '>6d'),
    'cmdline': Column('CmdLine', _cmdline_text, 1, '', 0, 's', None),
}


def _scaled(value: typing.Any, column: Column) -> typing.Any:
    return value if isinstance(value, str) else value * column.scale


class ProcessTree:
    """A process and, recursively, its children (ordered by PID), with each one's previous values."""

    INDENT = '  '

    def __init__(self, proc: typing.Union[int, Proc]):
        self.proc = proc if isinstance(proc, Proc) else Proc(proc)
        self.children: typing.List['ProcessTree'] = []
        self.previous_values: typing.Dict[str, typing.Any] = {}

    def update_children(self, table: typing.Optional[typing.Dict[int, typing.List[int]]] = None) -> None:
        """Adds new children, drops exited ones, recursively."""
        table = children_of() if table is None else table
        pids = set(table.get(self.proc.pid, []))
        self.children = [c for c in self.children if c.proc.pid in pids and c.proc.is_running()]
        known = {c.proc.pid for c in self.children}
        for pid in sorted(pids - known):
            try:
                self.children.append(ProcessTree(pid))
            except (ProcessLookupError, ValueError):
                continue
        self.children.sort(key=lambda tree: tree.proc.pid)
        for child in self.children:
            child.update_children(table)

    @staticmethod
    def write_header(columns: typing.Sequence[Column], sep: str, ostream: typing.TextIO = sys.stdout) -> None:
        """The row of column titles (a diff column is titled ``d<NAME>``)."""
        if sep:
            cells = ['Time(s)', 'PID', 'Name']
            for column in columns:
                cells.append(column.title())
                if column.diff_format is not None:
                    cells.append(column.title('d'))
            ostream.write(sep.join(cells) + '\n')
            return
        row = f'{"Time(s)":8s}  {"PID":>5s} {"Name":24s}'
        for column in columns:
            row += f' {column.title():>{column.width}s}'
            if column.diff_format is not None:
                row += f' {column.title("d"):>{column.width}s}'
        ostream.write(row + '\n')

    def read(self, columns: typing.Sequence[Column]) -> typing.Dict[str, typing.Any]:
        """Current value of every column (ProcessLookupError if the process has gone)."""
        return {column.name: column.getter(self.proc) for column in columns}

    def load_previous(self, columns: typing.Sequence[Column]) -> None:
        """Takes the current values as the previous ones (``--omit-first``), recursively."""
        try:
            self.previous_values.update(self.read(columns))
        except (PermissionError, ProcessLookupError):
            pass
        for child in self.children:
            child.load_previous(columns)

    def _diff_cell(self, value: typing.Any, column: Column, sep: str) -> str:
        previous = self.previous_values.get(column.name)
        if isinstance(value, str):
            changed = value != previous
            text = format(value if changed else '', column.diff_format)
            colour = RED if changed else GREEN
        else:
            delta = value - (previous if previous is not None else 0)
            text = format(delta * column.scale, column.diff_format)
            colour = RED if delta > 0 else GREEN if delta < 0 else ''
        text = text.strip() if sep else text
        return f'{colour}{text}{RESET}' if colour else text

    def write_summary(self, depth: int, columns: typing.Sequence[Column], sep: str,
                      ostream: typing.TextIO = sys.stdout) -> None:
        """Writes this process's row and its descendants' rows."""
        try:
            name = f'"{self.proc.name()}"'
            when = self.proc.exec_time()
        except ProcessLookupError:
            return
        if sep:
            cells = [f'{when:.1f}' if depth == 0 else '', str(self.proc.pid), name]
        else:
            prefix = f'{when:8.1f}' if depth == 0 else f'{"":8s}'
            cells = [f'{prefix} {self.INDENT * depth} {self.proc.pid:5d} {name:24}']
        try:
            values = self.read(columns)
        except PermissionError:
            cells.append(f'{DENIED}ACCESS DENIED{RESET}')
            values = None
        except ProcessLookupError:
            return
        if values is not None:
            for column in columns:
                value = values[column.name]
                text = format(_scaled(value, column), column.format)
                cells.append(text.strip() if sep else text)
                if column.diff_format is not None:
                    cells.append(self._diff_cell(value, column, sep))
            self.previous_values.update(values)
        ostream.write((sep if sep else ' ').join(cells) + '\n')
        for child in self.children:
            child.write_summary(depth + 1, columns, sep, ostream)

    def as_json(self, columns: typing.Sequence[Column]) -> typing.Dict[str, typing.Any]:
        """This tree's current values as a JSON-ready dict (gone or unreadable children left out)."""
        record = {'process_time': self.proc.exec_time(), 'pid': self.proc.pid, 'name': self.proc.name()}
        record.update(self.read(columns))
        kids = []
        for child in self.children:
            try:
                kids.append(child.as_json(columns))
            except (PermissionError, ProcessLookupError):
                continue
        record['children'] = kids
        return record


def _quoted_command(proc: Proc) -> str:
    return ' '.join(f'"{arg}"' if ' ' in arg else arg for arg in proc.cmdline())


def log_process(pid: int, interval: float, omit_first: bool, columns: typing.Sequence[Column], sep: str,
                json_path: str = '', ostream: typing.TextIO = sys.stdout,
                samples: typing.Optional[int] = None) -> int:
    """Logs the tree under ``pid`` every ``interval`` seconds until its root exits (or Ctrl-C, or
    ``samples`` samples). Returns 0, or 1 if there is no such process."""
    try:
        tree = ProcessTree(pid)
    except (ProcessLookupError, ValueError):
        print(f'process_tree: no process with PID {pid}', file=sys.stderr)
        return 1
    ostream.write(f'CMD: {_quoted_command(tree.proc)}\n')
    tree.write_header(columns, sep, ostream)
    records = []
    taken = 0
    try:
        while tree.proc.is_running() and (samples is None or taken < samples):
            started = time.monotonic()
            tree.update_children()
            if omit_first and taken == 0:
                tree.load_previous(columns)
            else:
                tree.write_summary(0, columns, sep, ostream)
                if json_path:
                    try:
                        records.append(tree.as_json(columns))
                    except (PermissionError, ProcessLookupError):
                        pass
            ostream.flush()
            taken += 1
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
        if not tree.proc.is_running():
            ostream.write(f'Parent process {pid} is not running.\n')
    except KeyboardInterrupt:
        ostream.write('KeyboardInterrupt!\n')
    if json_path:
        with open(json_path, 'w') as file:
            json.dump(records, file, indent=2)
            file.write('\n')
    return 0


def columns_from_arguments(args: argparse.Namespace) -> typing.List[Column]:
    """The columns the command-line flags ask for, in 0.4.0's order."""
    wanted = ['rss']
    if args.uss:
        wanted.append('uss')
    if args.page_faults or args.all:
        wanted.append('page_faults')
    wanted.append('cpu')
    if args.cpu_times or args.all:
        wanted += ['user', 'sys']
    if args.context_switches:
        wanted.append('context_switches')
    for flag, key in (('threads', 'threads'), ('status', 'status'), ('open_files', 'open_files'),
                      ('net_connections', 'net_connections')):
        if getattr(args, flag) or args.all:
            wanted.append(key)
    if args.cmdline:
        wanted.append('cmdline')
    return [COLUMNS[key] for key in wanted]


def main(argv: typing.Optional[typing.Sequence[str]] = None) -> int:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog='python -m pymemtrace.process_tree',
        description='Tracks the resource usage of a process and all of its child processes.',
    )
    parser.add_argument('-i', '--interval', type=float, default=1.0, help='Logging interval in seconds [default: %(default)s]')
    parser.add_argument('-p', '--pid', type=int, default=-1, help='PID to monitor, -1 is this process [default: %(default)s]')
    parser.add_argument('-l', '--log_level', type=int, dest='log_level', default=20,
                        help='Log level (debug=10, info=20, warning=30, error=40, critical=50) [default: %(default)s]')
    parser.add_argument('--sep', type=str, default='',
                        help='Separator between cells such as "|"; by default a table [default: "%(default)s"]')
    parser.add_argument('-1', '--omit-first', action='store_true', help='Omit the first sample (cleaner diffs).')
    parser.add_argument('-u', '--uss', action='store_true', help='USS: memory freed if the process ended now.')
    parser.add_argument('-g', '--page-faults', action='store_true', help='Number of page faults.')
    parser.add_argument('-c', '--cpu-times', action='store_true', help='User and system time.')
    parser.add_argument('-x', '--context-switches', action='store_true', help='Number of context switches.')
    parser.add_argument('-t', '--threads', action='store_true', help='Number of threads.')
    parser.add_argument('-s', '--status', action='store_true', help='The status.')
    parser.add_argument('-f', '--open-files', action='store_true', help='Number of open files.')
    parser.add_argument('-n', '--net-connections', action='store_true', help='Number of network connections.')
    parser.add_argument('--cmdline', action='store_true', help='The command line of each process (verbose).')
    parser.add_argument('-a', '--all', action='store_true', help='Typical data, the same as -cfgstn.')
    parser.add_argument('--json', type=str, default='', help='Also write the samples to this JSON file.')
    parser.add_argument('--samples', type=int, default=None, help='Stop after this many samples.')
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format='%(asctime)s - %(filename)s#%(lineno)d - %(process)5d - %(levelname)-8s - %(message)s')
    if not os.path.isdir('/proc/self'):
        print('process_tree: needs Linux /proc; use psutil-based tools elsewhere.', file=sys.stderr)
        return 1
    pid = os.getpid() if args.pid < 1 else args.pid
    if args.interval <= 0:
        print(f'process_tree: --interval must be more than 0, not {args.interval}', file=sys.stderr)
        return 1
    result = log_process(pid, args.interval, args.omit_first, columns_from_arguments(args), args.sep,
                         args.json, samples=args.samples)
    if result == 0:
        print('Bye, bye!')
    return result


if __name__ == '__main__':
    sys.exit(main())
