"""The decorators of pymemtrace.cpymemtrace_decs."""

import glob
import sys

import pytest

from logparse import parse_name, read_profile_log
from pymemtrace import cpymemtrace_decs, cPyMemTrace


def test_profile_and_trace_decorators(tmp_path):
    @cpymemtrace_decs.trace(0, message="inner")
    def inner():
        return [0] * 1000

    @cpymemtrace_decs.profile(d_rss_trigger=0, message="outer")
    def outer(x):
        assert cPyMemTrace.profile_wrapper_depth() == 1
        return inner(), x

    assert outer.__name__ == "outer"
    assert outer(5)[1] == 5
    logs = sorted(glob.glob(str(tmp_path / "*.log")))
    kinds = sorted(parse_name(path.rsplit("/", 1)[1])["kind"] for path in logs)
    assert kinds == ["P", "T"]
    for path in logs:
        log = read_profile_log(path)
        assert log.opening in ("inner", "outer")


def test_stacked_decorators_write_one_file_each(tmp_path):
    @cpymemtrace_decs.profile(message="inner")
    def inner():
        return cPyMemTrace.profile_wrapper_depth()

    @cpymemtrace_decs.profile(message="outer")
    def outer():
        return inner()

    assert outer() == 2
    depths = sorted(parse_name(p.rsplit("/", 1)[1])["depth"] for p in glob.glob(str(tmp_path / "*.log")))
    assert depths == [0, 1]


def test_decorator_propagates_exceptions():
    @cpymemtrace_decs.trace()
    def fails():
        raise ValueError("x")

    with pytest.raises(ValueError):
        fails()
    assert cPyMemTrace.trace_wrapper_depth() == 0


@pytest.mark.skipif(sys.version_info < (3, 13), reason="ReferenceTracing is CPython 3.13+")
def test_reference_tracing_decorator_mingled_with_trace(tmp_path):
    @cpymemtrace_decs.trace(message="Trace the inner function")
    def inner_function():
        return [bytes(10) for _ in range(3)]

    @cpymemtrace_decs.reference_tracing(message="Reference trace the outer function")
    def outer_function():
        return inner_function()

    assert len(outer_function()) == 3
    kinds = sorted(parse_name(p.rsplit("/", 1)[1])["kind"] for p in glob.glob(str(tmp_path / "*.log")))
    assert kinds == ["O", "T"]


def test_reference_tracing_decorator_exists_only_on_313():
    assert hasattr(cpymemtrace_decs, "reference_tracing") == (sys.version_info >= (3, 13))
