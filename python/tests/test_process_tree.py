"""pymemtrace.process_tree: a live tree of real processes, its command lines as 0.4.0 documents
them (``python -m pymemtrace.process_tree`` and ``python .../pymemtrace/process_tree.py``), its
JSON, and its errors; plus ``python -m pymemtrace.process -p PID`` on another process."""
import json
import os
import subprocess
import sys
import threading
import time

import pytest

import pymemtrace
from pymemtrace import process_tree

PACKAGE_DIR = os.path.dirname(pymemtrace.__file__)

#: A parent with two sleeping children, each holding 32 MiB; prints the children's PIDs.
TREE_TARGET = r"""
import subprocess, sys, time
code = "b = bytearray(32 * 1024 ** 2); import time; time.sleep(30)"
kids = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
print(" ".join(str(k.pid) for k in kids), flush=True)
time.sleep(30)
"""


@pytest.fixture
def tree_target():
    parent = subprocess.Popen([sys.executable, '-c', TREE_TARGET], stdout=subprocess.PIPE, text=True)
    kids = [int(pid) for pid in parent.stdout.readline().split()]
    time.sleep(0.5)  # the children allocate their buffers
    yield parent.pid, kids
    for pid in kids:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    parent.kill()
    parent.wait()


def run_tree(args, timeout=60):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize('form', ['module', 'path'])
def test_documented_command_line_lists_the_whole_tree(tree_target, tmp_path, form):
    pid, kids = tree_target
    json_path = tmp_path / 'tree.json'
    start = [sys.executable, '-m', 'pymemtrace.process_tree'] if form == 'module' else \
        [sys.executable, os.path.join(PACKAGE_DIR, 'process_tree.py')]
    result = run_tree(start + ['-p', str(pid), '-a', '-u', '-i', '0.3', '--samples', '2', '--json', str(json_path)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('CMD: ')
    lines = result.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith('Time(s)'))
    lines = lines[at - 1:]
    header = lines[1].split()
    for title in ('Time(s)', 'PID', 'Name', 'RSS(MB)', 'dRSS(MB)', 'USS(MB)', 'PFaults', 'CPU(%)',
                  'User(s)', 'Sys(s)', 'Thrds', 'Status', 'Files', 'Net'):
        assert title in header
    rows = [line.split() for line in lines[2:] if line.strip() and not line.startswith(('Bye', 'Parent'))]
    pids = [int(row[0]) if i % 3 else int(row[1]) for i, row in enumerate(rows)]
    assert pids == [pid, *sorted(kids)] * 2
    records = json.loads(json_path.read_text())
    assert len(records) == 2
    root = records[-1]
    assert root['pid'] == pid and root['name'].startswith('python')
    assert sorted(child['pid'] for child in root['children']) == sorted(kids)
    for child in root['children']:
        assert child['RSS'] > 32 * 1024 ** 2
        assert child['USS'] > 32 * 1024 ** 2
        assert child['Thrds'] == 1
        assert child['Status'] == 'sleeping'
        assert child['children'] == []


def test_separator_and_omit_first(tree_target):
    pid, kids = tree_target
    result = run_tree([sys.executable, '-m', 'pymemtrace.process_tree', '-p', str(pid), '--sep', '|', '-1',
                       '-i', '0.2', '--samples', '2'])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith('Time(s)')) - 1:]
    assert lines[1] == 'Time(s)|PID|Name|RSS(MB)|dRSS(MB)|CPU(%)|dCPU(%)'
    rows = [line.split('|') for line in lines[2:5]]
    assert [int(row[1]) for row in rows] == [pid, *sorted(kids)]
    # The first sample was only loaded (-1), so the diffs are against it: about zero.
    for row in rows:
        assert abs(float(row[4].replace('\x1b[31m', '').replace('\x1b[32m', '').replace('\x1b[0m', ''))) < 1.0


def test_tree_ends_with_its_root(tmp_path):
    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(0.8)'])
    result = run_tree([sys.executable, '-m', 'pymemtrace.process_tree', '-p', str(child.pid), '-i', '0.2'])
    child.wait()
    assert result.returncode == 0, result.stderr
    assert f'Parent process {child.pid} is not running.' in result.stdout


def test_no_such_process():
    result = run_tree([sys.executable, '-m', 'pymemtrace.process_tree', '-p', '999999999'])
    assert result.returncode == 1
    assert result.stderr.strip() == 'process_tree: no process with PID 999999999'


def test_bad_interval():
    result = run_tree([sys.executable, '-m', 'pymemtrace.process_tree', '-i', '0'])
    assert result.returncode == 1
    assert '--interval must be more than 0' in result.stderr


def test_api_on_this_process():
    tree = process_tree.ProcessTree(os.getpid())
    tree.update_children()
    columns = [process_tree.COLUMNS['rss'], process_tree.COLUMNS['threads']]
    record = tree.as_json(columns)
    assert record['pid'] == os.getpid()
    assert record['RSS'] > 0 and record['Thrds'] >= 1


@pytest.mark.parametrize('form', ['module', 'path'])
def test_documented_process_command_line_on_another_process(tmp_path, form):
    target = subprocess.Popen([sys.executable, '-c', 'b = bytearray(16 * 1024 ** 2); import time; time.sleep(1.5)'])
    start = [sys.executable, '-m', 'pymemtrace.process'] if form == 'module' else \
        [sys.executable, os.path.join(PACKAGE_DIR, 'process.py')]
    # Reap the target as soon as it exits (a zombie still has its /proc entry).
    reaper = threading.Thread(target=target.wait)
    reaper.start()
    result = subprocess.run(start + ['-p', str(target.pid), '-i', '0.25'], capture_output=True, text=True,
                            timeout=60)
    reaper.join()
    assert result.returncode == 0, result.stderr
    log = tmp_path / 'process.log'
    log.write_text(result.stderr + result.stdout)
    with open(log) as stream:
        from pymemtrace import process
        records = process.extract_json(stream)
    assert len(records) >= 3
    assert {r['pid'] for r in records} == {target.pid}
    assert max(r['memory_info']['rss'] for r in records) > 16 * 1024 ** 2
