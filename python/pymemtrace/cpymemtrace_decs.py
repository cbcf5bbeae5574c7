"""Decorators that run a function inside a ``cPyMemTrace`` Profile, Trace or
ReferenceTracing context manager; the decorator's arguments are the constructor's.

Each call of the decorated function makes a new tracer, so decorated functions may call one
another: every call writes its own log file, stacked as nested ``with`` blocks are.
"""

import functools
import sys

from pymemtrace import cPyMemTrace


def _run_inside(tracer_class, dec_args, dec_kwargs):
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with tracer_class(*dec_args, **dec_kwargs):
                return fn(*args, **kwargs)

        return wrapper

    return decorate


def profile(*dec_args, **dec_kwargs):
    """Decorator: call the function within a ``cPyMemTrace.Profile(*dec_args, **dec_kwargs)``."""
    return _run_inside(cPyMemTrace.Profile, dec_args, dec_kwargs)


def trace(*dec_args, **dec_kwargs):
    """Decorator: call the function within a ``cPyMemTrace.Trace(*dec_args, **dec_kwargs)``."""
    return _run_inside(cPyMemTrace.Trace, dec_args, dec_kwargs)


if sys.version_info >= (3, 13):

    def reference_tracing(*dec_args, **dec_kwargs):
        """Decorator: call the function within a
        ``cPyMemTrace.ReferenceTracing(*dec_args, **dec_kwargs)`` (Python 3.13+)."""
        return _run_inside(cPyMemTrace.ReferenceTracing, dec_args, dec_kwargs)
