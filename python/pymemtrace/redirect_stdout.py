"""Capture what a block of code writes to the process's standard output or error, at the file
descriptor level, so that output from C code (``printf``, ``fprintf(stderr, ...)``, such as
``sys._debugmallocstats()``) is captured as well as Python's ``print``.

Usage::

    stream = io.BytesIO()
    with redirect_stdout.stderr_redirector(stream):
        sys._debugmallocstats()
    text = stream.getvalue()

Unlike pymemtrace 0.4.0 this works when ``sys.stdout``/``sys.stderr`` are not real files (under
pytest, IDEs...), never closes the original ``sys.stdout``, and restores everything when the
block raises.
"""
import contextlib
import ctypes
import io
import os
import sys
import tempfile
import typing

try:
    _LIBC: typing.Optional[ctypes.CDLL] = ctypes.CDLL(None)
except OSError:  # pragma: no cover - platforms without a C library handle
    _LIBC = None


def _c_stream(*names: str) -> typing.Optional[ctypes.c_void_p]:
    for name in names:
        try:
            return ctypes.c_void_p.in_dll(_LIBC, name)
        except (ValueError, TypeError):
            continue
    return None


#: The C library, as pymemtrace 0.4.0 names it (None where it cannot be loaded).
libc = _LIBC
#: The C ``stdout`` and ``stderr`` ``FILE*`` variables, as pymemtrace 0.4.0 names them (None if not found).
c_stdout = _c_stream('stdout', '__stdoutp')
c_stderr = _c_stream('stderr', '__stderrp')


def _flush_c_streams() -> None:
    """``fflush(NULL)``: flush every C ``FILE*`` buffer (stdout is block-buffered when redirected)."""
    if _LIBC is not None:
        _LIBC.fflush(None)


def _flush_python_stream(stream: typing.Any) -> None:
    flush = getattr(stream, 'flush', None)
    if flush is not None:
        try:
            flush()
        except (ValueError, OSError):
            pass


@contextlib.contextmanager
def _redirect_fd(fd: int, attribute: str, stream: typing.BinaryIO) -> typing.Iterator[None]:
    """Point ``fd`` (and ``sys.<attribute>``) at a temporary file for the block, then restore
    them and copy what was written into ``stream``."""
    python_stream = getattr(sys, attribute)
    _flush_python_stream(python_stream)
    _flush_c_streams()
    saved_fd = os.dup(fd)
    capture = tempfile.TemporaryFile(mode='w+b')
    replacement = None
    try:
        os.dup2(capture.fileno(), fd)
        encoding = getattr(python_stream, 'encoding', None) or 'utf-8'
        replacement = io.TextIOWrapper(
            os.fdopen(os.dup(fd), 'wb', buffering=0), encoding=encoding, errors='backslashreplace', write_through=True,
        )
        setattr(sys, attribute, replacement)
        yield
    finally:
        if replacement is not None:
            _flush_python_stream(replacement)
        _flush_c_streams()
        setattr(sys, attribute, python_stream)
        if replacement is not None:
            replacement.close()
        os.dup2(saved_fd, fd)
        os.close(saved_fd)
        capture.seek(0, io.SEEK_SET)
        stream.write(capture.read())
        capture.close()


@contextlib.contextmanager
def stdout_redirector(stream: typing.BinaryIO) -> typing.Iterator[None]:
    """Redirect Python and C standard output to the binary ``stream`` for the ``with`` block."""
    with _redirect_fd(1, 'stdout', stream):
        yield


@contextlib.contextmanager
def stderr_redirector(stream: typing.BinaryIO) -> typing.Iterator[None]:
    """Redirect Python and C standard error to the binary ``stream`` for the ``with`` block."""
    with _redirect_fd(2, 'stderr', stream):
        yield
