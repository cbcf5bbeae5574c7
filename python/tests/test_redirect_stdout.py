"""Tests of pymemtrace.redirect_stdout: Python and C output captured, under pytest too."""
import ctypes
import io
import os
import sys

import pytest

from pymemtrace import redirect_stdout

LIBC = ctypes.CDLL(None)


def test_stdout_python_c_and_fd_writes():
    stream = io.BytesIO()
    with redirect_stdout.stdout_redirector(stream):
        print('from print')
        LIBC.printf(b'from printf\n')
        # C stdout is block-buffered here unless Python runs unbuffered (-u, PYTHONUNBUFFERED):
        # flush it so the order of the lines does not depend on how the test is run.
        LIBC.fflush(None)
        os.write(1, b'from fd 1\n')
    assert stream.getvalue().decode().splitlines() == ['from print', 'from printf', 'from fd 1']


def test_stderr_python_and_c():
    stream = io.BytesIO()
    with redirect_stdout.stderr_redirector(stream):
        print('to stderr', file=sys.stderr)
        sys._debugmallocstats()
    text = stream.getvalue().decode('ascii', 'replace')
    assert text.startswith('to stderr\n')
    assert 'Small block threshold' in text


def test_streams_restored_after_exception(capfd):
    before = sys.stdout
    stream = io.BytesIO()
    with pytest.raises(ZeroDivisionError):
        with redirect_stdout.stdout_redirector(stream):
            print('inside')
            1 / 0
    assert sys.stdout is before
    assert stream.getvalue() == b'inside\n'
    print('after')
    os.write(1, b'after fd\n')
    out = capfd.readouterr().out
    assert 'after\n' in out and 'after fd\n' in out and 'inside' not in out


def test_nested_redirections():
    outer, inner = io.BytesIO(), io.BytesIO()
    with redirect_stdout.stdout_redirector(outer):
        print('outer 1')
        with redirect_stdout.stdout_redirector(inner):
            print('inner')
        print('outer 2')
    assert inner.getvalue() == b'inner\n'
    assert outer.getvalue() == b'outer 1\nouter 2\n'


def test_module_names_of_0_4_0():
    assert redirect_stdout.libc is not None
    assert redirect_stdout.c_stdout is not None and redirect_stdout.c_stdout.value
    assert redirect_stdout.c_stderr is not None and redirect_stdout.c_stderr.value
