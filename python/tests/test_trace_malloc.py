"""Tests of pymemtrace.trace_malloc, including pymemtrace 0.4.0's documented examples."""
import logging
import sys
import tracemalloc

import pytest

from pymemtrace import trace_malloc


def test_documented_example_adding_1mb_strings():
    """docs/source/examples/trace_malloc.rst 'Adding 1Mb Strings'."""
    list_of_strings = []
    with trace_malloc.TraceMalloc('filename') as tm:
        for i in range(8):
            list_of_strings.append(' ' * 1024 ** 2)
    assert tm.memory_start > 0
    assert tm.memory_finish >= tm.memory_start
    assert tm.diff == pytest.approx(8 * 1024 ** 2, abs=64 * 1024)
    this_file = [s for s in tm.statistics if s.traceback[0].filename == __file__]
    assert len(this_file) == 1
    assert this_file[0].size_diff == pytest.approx(8 * 1024 ** 2, abs=64 * 1024)
    assert str(this_file[0]).startswith(f'{__file__}:0: size=')


def test_net_statistics_as_documented_and_as_method():
    with trace_malloc.TraceMalloc('lineno') as tm:
        data = [bytes(1000) for _ in range(100)]
    assert data
    net = tm.net_statistics
    assert all(s.traceback[0].filename != tracemalloc.__file__ for s in net)
    assert list(tm.net_statistics()) == list(net)
    assert len(net) <= len(tm.statistics)
    lines = [s for s in net if s.traceback[0].filename == __file__]
    assert lines and lines[0].traceback[0].lineno > 0


@pytest.mark.parametrize('granularity', trace_malloc.TraceMalloc.ALLOWED_GRANULARITY)
def test_granularities(granularity):
    with trace_malloc.TraceMalloc(granularity) as tm:
        data = b'y' * (256 * 1024)
    assert tm.diff == pytest.approx(256 * 1024, abs=16 * 1024)
    assert data


def test_bad_granularity():
    with pytest.raises(ValueError):
        trace_malloc.TraceMalloc('function')


def test_tracing_is_left_as_found():
    assert not tracemalloc.is_tracing()
    with trace_malloc.TraceMalloc():
        assert tracemalloc.is_tracing()
    assert not tracemalloc.is_tracing()
    tracemalloc.start()
    try:
        with trace_malloc.TraceMalloc():
            pass
        assert tracemalloc.is_tracing()
    finally:
        tracemalloc.stop()


def test_tracing_starts_when_made_as_in_040():
    assert not tracemalloc.is_tracing()
    tm = trace_malloc.TraceMalloc()
    assert tracemalloc.is_tracing()
    with tm:
        pass
    assert not tracemalloc.is_tracing()


def test_trace_off(monkeypatch):
    monkeypatch.setattr(trace_malloc.TraceMalloc, 'TRACE_ON', False)
    with trace_malloc.TraceMalloc() as tm:
        pass
    assert tm.diff == -sys.maxsize - 1
    assert tm.tracemalloc_memory_usage is None


def create_string(size):
    return ' ' * size


@trace_malloc.trace_malloc_log(logging.INFO)
def example_decorator_for_documentation(list_of_strings):
    for i in range(8):
        list_of_strings.append(create_string(1024 ** 2))


def test_documented_example_decorator(caplog):
    """docs/source/examples/trace_malloc.rst 'Using trace_malloc as a Decorator'."""
    caplog.set_level(logging.INFO)
    list_of_strings = []
    example_decorator_for_documentation(list_of_strings)
    assert len(list_of_strings) == 8
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    prefix, _, rest = messages[0].partition('TraceMalloc memory delta: ')
    number, _, name = rest.partition(' for ')
    assert name == '"example_decorator_for_documentation()"'
    assert int(number.replace(',', '')) == pytest.approx(8 * 1024 ** 2, abs=64 * 1024)
    assert ',' in number
