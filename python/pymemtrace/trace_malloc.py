"""Wrappers around :py:mod:`tracemalloc`: snapshots of Python's allocations before and after a
block, their differences by file, line or traceback, and the net difference with tracemalloc's
own memory taken out (its cost compensation).

Example::

    with trace_malloc.TraceMalloc('filename') as tm:
        data = [' ' * 1024 ** 2 for _ in range(8)]
    print(tm.diff)                  # about 8 MiB
    for stat in tm.net_statistics:  # also callable: tm.net_statistics()
        print(stat)

Tracing is started when a :py:class:`TraceMalloc` is made (as in pymemtrace 0.4.0, so the first
snapshot already sees what the ``with`` statement itself allocates, and the statistics have the
entries 0.4.0's have), and stopped again on exit by the :py:class:`TraceMalloc` that started it
(0.4.0 left it on for the rest of the process).
"""
import functools
import logging
import sys
import tracemalloc
import typing


class StatisticList(list):
    """A list of :py:class:`tracemalloc.StatisticDiff` that can also be called (returning itself),
    so that both ``tm.net_statistics`` (as documented) and ``tm.net_statistics()`` (as 0.4.0 defined it) work."""

    def __call__(self) -> 'StatisticList':
        return self


class TraceMalloc:
    """Context manager: tracemalloc snapshots on entry and exit, compared by ``statistics_granularity``."""

    #: Set to False to make every TraceMalloc (and :py:func:`trace_malloc_log`) do nothing.
    TRACE_ON = True
    #: The ``key_type`` values of :py:meth:`tracemalloc.Snapshot.compare_to`.
    ALLOWED_GRANULARITY = ('filename', 'lineno', 'traceback')

    def __init__(self, statistics_granularity: str = 'lineno'):
        if statistics_granularity not in self.ALLOWED_GRANULARITY:
            raise ValueError(
                f'statistics_granularity must be in {self.ALLOWED_GRANULARITY} not {statistics_granularity!r}'
            )
        self.statistics_granularity = statistics_granularity
        self.tracemalloc_snapshot_start: typing.Optional[tracemalloc.Snapshot] = None
        self.tracemalloc_snapshot_finish: typing.Optional[tracemalloc.Snapshot] = None
        self.memory_start: typing.Optional[int] = None
        self.memory_finish: typing.Optional[int] = None
        self.statistics: typing.List[tracemalloc.StatisticDiff] = []
        self._diff: typing.Optional[int] = None
        self._started_tracing = False
        if self.TRACE_ON and not tracemalloc.is_tracing():
            tracemalloc.start()
            self._started_tracing = True

    def __enter__(self) -> 'TraceMalloc':
        if self.TRACE_ON:
            if not tracemalloc.is_tracing():
                tracemalloc.start()
                self._started_tracing = True
            self.tracemalloc_snapshot_start = tracemalloc.take_snapshot()
            self.memory_start = tracemalloc.get_tracemalloc_memory()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb) -> bool:
        if self.TRACE_ON and self.tracemalloc_snapshot_start is not None:
            self.tracemalloc_snapshot_finish = tracemalloc.take_snapshot()
            self.memory_finish = tracemalloc.get_tracemalloc_memory()
            self.statistics = self.tracemalloc_snapshot_finish.compare_to(
                self.tracemalloc_snapshot_start, self.statistics_granularity
            )
            self._diff = None
            if self._started_tracing:
                tracemalloc.stop()
                self._started_tracing = False
        return False

    @property
    def tracemalloc_memory_usage(self) -> typing.Optional[int]:
        """Growth of tracemalloc's own memory between the snapshots, or None when not traced."""
        if self.TRACE_ON and self.memory_start is not None and self.memory_finish is not None:
            return self.memory_finish - self.memory_start
        return None

    @property
    def diff(self) -> int:
        """Net bytes allocated in the block by Python, less tracemalloc's own growth.
        ``-sys.maxsize - 1`` when tracing is off."""
        usage = self.tracemalloc_memory_usage
        if usage is None:
            return -sys.maxsize - 1
        if self._diff is None:
            self._diff = sum(stat.size_diff for stat in self.statistics) - usage
        return self._diff

    @property
    def net_statistics(self) -> StatisticList:
        """The statistics less those of the tracemalloc module itself."""
        return StatisticList(
            stat for stat in self.statistics if stat.traceback[0].filename != tracemalloc.__file__
        )


def trace_malloc_log(log_level: int):
    """Decorator: log, at ``log_level``, the net Python memory the decorated function allocated::

        TraceMalloc memory delta: 8,389,548 for "example()"

    Does nothing when ``TraceMalloc.TRACE_ON`` is False."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if not TraceMalloc.TRACE_ON:
                return fn(*args, **kwargs)
            with TraceMalloc() as tm:
                result = fn(*args, **kwargs)
            logging.log(log_level, f'TraceMalloc memory delta: {tm.diff:,d} for "{fn.__name__}()"')
            return result

        return wrapper

    return decorate
