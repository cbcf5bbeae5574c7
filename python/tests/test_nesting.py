"""Stacked Profile/Trace context managers: depth, file names, suspend/resume annotations."""

import os

import pytest

from logparse import parse_name, read_profile_log
from pymemtrace import cPyMemTrace

CASES = [
    (cPyMemTrace.Profile, cPyMemTrace.profile_wrapper_depth, "profile"),
    (cPyMemTrace.Trace, cPyMemTrace.trace_wrapper_depth, "trace"),
]


def busy():
    return [str(i) for i in range(50)]


@pytest.mark.parametrize("cls,depth,noun", CASES)
def test_three_levels(cls, depth, noun):
    assert depth() == 0
    with cls(0, message="level 0") as t0:
        assert depth() == 1
        busy()
        with cls(0, message="level 1") as t1:
            assert depth() == 2
            assert t0.log_file_path() == t1.log_file_path(), "path of the head of the stack"
            with cls(message="level 2") as t2:
                assert depth() == 3
                busy()
                p2 = t2.log_file_path()
            assert depth() == 2
            p1 = t1.log_file_path()
            busy()
        assert depth() == 1
        busy()
        p0 = t0.log_file_path()
    assert depth() == 0
    names = [parse_name(os.path.basename(p)) for p in (p0, p1, p2)]
    assert [n["depth"] for n in names] == [0, 1, 2]
    assert names[1]["ordinal"] == names[0]["ordinal"] + 1
    assert names[2]["ordinal"] == names[1]["ordinal"] + 1

    outer = read_profile_log(p0)
    messages = outer.messages()
    assert messages[0] == f"Detaching this {noun} file wrapper. New file:"
    assert messages[1] == p1
    assert messages[2] == f"Re-attaching this {noun} file wrapper."
    # While level 1 runs, level 0 records nothing: no event between detach and re-attach.
    kinds = [kind for kind, _ in outer.records]
    detach = kinds.index("MSG:")
    assert kinds[detach + 1] == "MSG:" and kinds[detach + 2] == "MSG:"
    middle = read_profile_log(p1)
    assert middle.opening == "level 1"
    assert middle.messages()[1] == p2
    inner = read_profile_log(p2)
    assert inner.messages() == []
    assert any(e.function == "busy" for e in outer.events("NEXT:"))


def test_profile_and_trace_stack_independently():
    with cPyMemTrace.Profile() as p:
        with cPyMemTrace.Trace() as t:
            assert cPyMemTrace.profile_wrapper_depth() == 1
            assert cPyMemTrace.trace_wrapper_depth() == 1
            assert parse_name(os.path.basename(t.log_file_path()))["depth"] == 0
        assert cPyMemTrace.trace_wrapper_depth() == 0
        assert p.log_file_path() is not None


def test_reentering_an_active_tracer_is_refused():
    with cPyMemTrace.Profile() as p:
        with pytest.raises(RuntimeError):
            p.__enter__()
        assert cPyMemTrace.profile_wrapper_depth() == 1
    # It can be used again once it has exited: a new log file.
    first = p.trace_file_wrapper.log_file_path
    with p:
        assert p.log_file_path() != first
    assert cPyMemTrace.profile_wrapper_depth() == 0


def test_out_of_order_exit_keeps_the_stack_consistent(tmp_path):
    outer = cPyMemTrace.Profile(0, filepath=str(tmp_path / "outer.log"))
    inner = cPyMemTrace.Profile(0, filepath=str(tmp_path / "inner.log"))
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)
    assert cPyMemTrace.profile_wrapper_depth() == 1
    assert inner.log_file_path() == str(tmp_path / "inner.log")
    inner.__exit__(None, None, None)
    assert cPyMemTrace.profile_wrapper_depth() == 0
    read_profile_log(tmp_path / "outer.log")
    read_profile_log(tmp_path / "inner.log")
    with pytest.raises(RuntimeError):
        inner.__exit__(None, None, None)
