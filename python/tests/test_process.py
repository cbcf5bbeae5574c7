"""Tests of pymemtrace.process: the log line format, reading logs back, the background thread,
the context manager / decorator / add_message_to_queue, and pymemtrace 0.4.0's documented examples."""
import io
import json
import logging
import os
import random
import subprocess
import sys
import time

import pytest

from pymemtrace import process

LOG_FORMAT = '%(asctime)s - %(filename)s#%(lineno)d - %(process)5d - (%(threadName)-10s) - %(levelname)-8s - %(message)s'

# Lines as pymemtrace 0.4.0 writes them on macOS (from its documentation).
MACOS_LOG = """\
2020-11-16 10:36:38,886 - ex_process.py#19 - 14052 - (MainThread) - INFO     - Demonstration of logging a process
2020-11-16 10:36:38,887 - process.py#289 - 14052 - (ProcMon   ) - INFO     - ProcessLoggingThread-JSON-START {"timestamp": "2020-11-16 10:36:38.887407", "memory_info": {"rss": 11403264, "vms": 4376133632, "pfaults": 3417, "pageins": 0}, "cpu_times": {"user": 0.07780156, "system": 0.01763538, "children_user": 0.0, "children_system": 0.0}, "elapsed_time": 0.09744381904602051, "pid": 14052}
2020-11-16 10:36:39,392 - process.py#293 - 14052 - (ProcMon   ) - INFO     - ProcessLoggingThread-JSON {"timestamp": "2020-11-16 10:36:39.392076", "memory_info": {"rss": 209616896, "vms": 4574580736, "pfaults": 51809, "pageins": 0}, "cpu_times": {"user": 0.123138272, "system": 0.080602592, "children_user": 0.0, "children_system": 0.0}, "elapsed_time": 0.6022598743438721, "pid": 14052, "label": "String of 198,180,864 bytes"}
2020-11-16 10:36:39,892 - process.py#289 - 14052 - (ProcMon   ) - INFO     - ProcessLoggingThread-JSON-STOP {"timestamp": "2020-11-16 10:36:39.892747", "memory_info": {"rss": 209620992, "vms": 4574580736, "pfaults": 51810, "pageins": 0}, "cpu_times": {"user": 0.123503456, "system": 0.080648712, "children_user": 0.0, "children_system": 0.0}, "elapsed_time": 1.1028308868408203, "pid": 14052}
"""

# A line as psutil on Linux makes it (no pfaults): 0.4.0's summary raised KeyError on it.
LINUX_PSUTIL_LINE = (
    '2026-03-21 12:39:35,035 - process.py#288 - 82965 - (ProcMon   ) - INFO     - ProcessLoggingThread-JSON '
    '{"timestamp": "2026-03-21 12:39:35.035089", "memory_info": {"rss": 22712320, "vms": 34986401792, '
    '"shared": 1, "text": 2, "lib": 0, "data": 3, "dirty": 0}, "cpu_times": {"user": 1.06, "system": 1.05, '
    '"children_user": 0.0, "children_system": 0.0, "iowait": 0.0}, "elapsed_time": 2.5, "pid": 82965}\n'
)


@pytest.mark.parametrize('marker, expected', [('-START', '-START'), ('', None), ('-STOP', '-STOP')])
def test_re_log_line(marker, expected):
    line = f'2019-10-14 17:44:46,955 - 24098 - INFO - process.py - ProcessLoggingThread-JSON{marker} {{"pid": 1}}'
    match = process.RE_LOG_LINE.match(line)
    assert match is not None
    assert match.group(1) == expected
    assert json.loads(match.group(2)) == {'pid': 1}


def test_extract_json_from_documented_log():
    records = process.extract_json(io.StringIO(MACOS_LOG))
    assert len(records) == 3
    assert records[1]['label'] == 'String of 198,180,864 bytes'
    assert records[1]['timestamp'].microsecond == 392076
    assert process.extract_labels_from_json(records) == [records[1]]


def test_extract_json_as_table():
    records = process.extract_json(io.StringIO(MACOS_LOG))
    table, t_min, t_max, rss_min, rss_max = process.extract_json_as_table(records)
    assert list(table) == [14052]
    rows = table[14052]
    assert ' '.join(rows[0]) == (
        '#t(s)                 RSS PageFaults/s         User    Mean_CPU%    Inst_CPU% Timestamp                     PID Label'
    )
    assert ' '.join(rows[2]) == (
        '0.6             209616896      95860.7          0.1        20.4%         9.0% 2020-11-16T10:36:39.392076'
        '  14052 # String of 198,180,864 bytes'
    )
    assert len(rows) == 4
    assert t_min[14052] == pytest.approx(0.0974438, rel=1e-6)
    assert t_max[14052] == pytest.approx(1.10283, rel=1e-5)
    assert (rss_min[14052], rss_max[14052]) == (11403264, 209620992)


def test_summary_does_not_fail_without_pfaults(tmp_path, capsys):
    log = tmp_path / 'linux.log'
    log.write_text(LINUX_PSUTIL_LINE)
    process.write_log_to_stdout(str(log))
    out = capsys.readouterr().out
    assert ' PID: 82965 '.center(75, '-') in out
    assert '    22712320          0.0' in out


def test_gnuplot_files(tmp_path):
    log = tmp_path / 'process.log'
    log.write_text(MACOS_LOG)
    out_dir = tmp_path / 'gnuplot'
    assert process.invoke_gnuplot(str(log), str(out_dir)) == 0
    dat = (out_dir / 'process.log_14052.dat').read_text()
    assert dat.splitlines()[0].startswith('#t(s)')
    assert len(dat.splitlines()) == 4
    plt = (out_dir / 'process.log_14052.plt').read_text()
    assert 'plot "process.log_14052.dat" using 1:($2 / 1024**2)' in plt
    assert 'set label "String of 198,180,864 bytes" at 0.6022598743438721' in plt


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


@pytest.fixture
def captured_log():
    handler = ListHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    process.logger.addHandler(handler)
    old_level = process.logger.level
    process.logger.setLevel(logging.DEBUG)
    yield handler.lines
    process.logger.removeHandler(handler)
    process.logger.setLevel(old_level)


def records_of(lines):
    return process.extract_json(io.StringIO('\n'.join(lines) + '\n'))


def test_log_process_sees_this_process_grow(captured_log):
    with process.log_process(interval=0.1, log_level=logging.INFO):
        time.sleep(0.35)
        process.add_message_to_queue('allocating 64 MiB')
        data = b'x' * (64 << 20)
        time.sleep(0.35)
    records = records_of(captured_log)
    assert 'ProcessLoggingThread-JSON-START' in captured_log[0]
    assert 'ProcessLoggingThread-JSON-STOP' in captured_log[-1]
    assert ' - (ProcMon   ) - INFO     - ' in captured_log[0]
    assert all(r['pid'] == os.getpid() for r in records)
    rss = [r['memory_info']['rss'] for r in records]
    assert (max(rss) - rss[0]) / 2 ** 20 == pytest.approx(64, abs=6)
    labelled = [r for r in records if 'label' in r]
    assert [r['label'] for r in labelled] == ['allocating 64 MiB']
    assert set(records[0]) >= {'timestamp', 'memory_info', 'cpu_times', 'elapsed_time', 'pid'}
    assert set(records[0]['cpu_times']) >= {'user', 'system', 'children_user', 'children_system'}
    assert len(data) == 64 << 20


def test_log_process_of_another_process(captured_log):
    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(5)'])
    try:
        with process.log_process(interval=0.1, log_level=logging.WARNING, pid=child.pid) as thread:
            time.sleep(0.25)
            thread.add_message_to_queue('child running')
    finally:
        child.kill()
        child.wait()
    records = records_of(captured_log)
    assert {r['pid'] for r in records} == {child.pid}
    assert any(r.get('label') == 'child running' for r in records)
    assert ' - WARNING  - ' in captured_log[0]


def test_no_such_process():
    with pytest.raises(ProcessLookupError):
        process.ProcessLoggingThread(pid=2 ** 31 - 100)


def test_add_message_outside_a_block_is_an_error():
    with pytest.raises(RuntimeError):
        process.add_message_to_queue('nobody listening')


def test_exception_inside_block_still_stops(captured_log):
    with pytest.raises(KeyError):
        with process.log_process(interval=0.05) as thread:
            raise KeyError('boom')
    assert not thread.is_alive()
    assert 'ProcessLoggingThread-JSON-STOP' in captured_log[-1]


def test_join_is_prompt_with_long_interval(captured_log):
    start = time.monotonic()
    with process.log_process(interval=30.0):
        pass
    assert time.monotonic() - start < 5.0
    assert len(records_of(captured_log)) == 2


def test_documented_example_process(captured_log):
    """docs/source/examples/process.rst 'Monitoring Your Python Process', smaller and faster."""
    logger = logging.getLogger(__file__)
    with process.log_process(interval=0.1, log_level=logger.getEffectiveLevel()):
        for i in range(3):
            size = random.randint(16, 16 + 32) * 1024 ** 2
            process.add_message_to_queue(f'String of {size:,d} bytes')
            s = ' ' * size
            time.sleep(0.15 + random.random() / 10)
            del s
            time.sleep(0.05 + random.random() / 20)
    records = records_of(captured_log)
    labels = [r['label'] for r in records if 'label' in r]
    assert len(labels) == 3
    assert all(label.startswith('String of ') for label in labels)


@process.log_process_dec(interval=0.1, log_level=logging.getLogger(__file__).getEffectiveLevel())
def example_process_decorator_basic():
    strings = []
    for i in range(3):
        strings.append(' ' * random.randint(4 * 1024 ** 2, 8 * 1024 ** 2))
        time.sleep(0.1)
    while strings:
        strings.pop()
        time.sleep(0.1)
    return 'done'


def test_documented_example_decorator(captured_log):
    """docs/source/examples/process.rst 'Using process as a Decorator'."""
    assert example_process_decorator_basic() == 'done'
    assert example_process_decorator_basic.__name__ == 'example_process_decorator_basic'
    assert 'ProcessLoggingThread-JSON-START' in captured_log[0]
    assert 'ProcessLoggingThread-JSON-STOP' in captured_log[-1]
    assert len(records_of(captured_log)) >= 5


def test_command_line_summary(tmp_path):
    log = tmp_path / 'ex.log'
    log.write_text(MACOS_LOG)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, '-m', 'pymemtrace.process', str(log)], capture_output=True, text=True, env=env, check=True,
    ).stdout
    assert ' PID: 14052 DONE '.center(75, '-') in out


def test_argument_parser_option():
    import argparse
    parser = argparse.ArgumentParser()
    process.add_process_logger_to_argument_parser(parser)
    assert parser.parse_args(['--log-process', '0.5']).log_process == 0.5
    assert parser.parse_args([]).log_process == 0.0
