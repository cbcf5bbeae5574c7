"""ReferenceTracing and ReferenceTracingSimple (CPython 3.13+: PyRefTracer)."""

import gc
import os
import sys
import threading

import pytest

from logparse import parse_name, read_ref_log

pytestmark = pytest.mark.skipif(sys.version_info < (3, 13), reason="PyRefTracer is CPython 3.13+")

from pymemtrace import cPyMemTrace  # noqa: E402


class BytesWrapper:
    def __init__(self, length):
        self.bytes = b" " * length


class Other:
    pass


def exercise():
    kept = [BytesWrapper(1024 ** 2) for _ in range(4)]
    others = [Other() for _ in range(3)]
    # Freed by C code (list.clear): CPython 3.13.0 reports no PyRefTracer_DESTROY for objects
    # whose last reference the bytecode itself drops (`del x`, a discarded `pop()`).
    kept.clear()
    return others


def test_log_lines_and_builtins_filtered_by_default():
    with cPyMemTrace.ReferenceTracing(message="hello") as tracer:
        exercise()
        tracer.write_message_to_log("a message")
        path = tracer.log_file_path()
    assert tracer.log_file_path() == path
    name = parse_name(os.path.basename(path))
    assert (name["kind"], name["depth"], name["pid"]) == ("O", 0, os.getpid())
    log = read_ref_log(path)
    assert log.opening == "hello"
    assert "a message" in log.messages
    new = [r for r in log.records if r.row == "NEW:" and r.type == "BytesWrapper"]
    gone = [r for r in log.records if r.row == "DEL:" and r.type == "BytesWrapper"]
    assert len(new) == 4 and len(gone) == 4
    assert {r.address for r in new} == {r.address for r in gone}
    assert all(r.function == "exercise" for r in new)
    assert all(r.file.endswith("test_reference_tracing.py") for r in new)
    assert all(r.refcnt >= 0 for r in log.records)
    assert not log.types() & {"int", "str", "bytes", "list", "tuple", "dict", "frame", "code"}
    assert tracer.count_new() == len([r for r in log.records if r.row == "NEW:"])
    assert tracer.count_del() == len([r for r in log.records if r.row == "DEL:"])


def test_include_builtins():
    with cPyMemTrace.ReferenceTracing(include_builtins=True) as tracer:
        exercise()
    log = read_ref_log(tracer.log_file_path())
    assert {"BytesWrapper", "bytes", "list"} <= log.types()
    assert not log.types() & {"frame", "code"}, "frame and code objects are never traced"


def test_include_and_exclude_names(tmp_path):
    with cPyMemTrace.ReferenceTracing(include_tp_names=["BytesWrapper"], filepath=tmp_path / "i.log"):
        exercise()
    assert read_ref_log(tmp_path / "i.log").types() == {"BytesWrapper"}
    with cPyMemTrace.ReferenceTracing(exclude_tp_names=("BytesWrapper",), filepath=tmp_path / "e.log"):
        exercise()
    types = read_ref_log(tmp_path / "e.log").types()
    assert "BytesWrapper" not in types and "Other" in types
    with cPyMemTrace.ReferenceTracing(
        include_tp_names=["BytesWrapper", "Other"], exclude_tp_names=["BytesWrapper"],
        filepath=tmp_path / "both.log",
    ):
        exercise()
    assert read_ref_log(tmp_path / "both.log").types() == {"Other"}, "exclude wins over include"


class Cycle:
    def __init__(self):
        self.me = self


def make_cycles():
    for _ in range(3):
        Cycle()


def test_gc_collect_on_exit(tmp_path):
    gc.collect()
    gc.disable()
    try:
        with cPyMemTrace.ReferenceTracing(include_tp_names=["Cycle"], filepath=tmp_path / "gc.log"):
            make_cycles()
        with cPyMemTrace.ReferenceTracing(
            include_tp_names=["Cycle"], gc_collect_on_exit=-1, filepath=tmp_path / "nogc.log"
        ):
            make_cycles()
    finally:
        gc.enable()
        gc.collect()
    with_gc = read_ref_log(tmp_path / "gc.log").records
    without = read_ref_log(tmp_path / "nogc.log").records
    assert [r.row for r in with_gc].count("DEL:") == 3
    assert [r.row for r in without].count("DEL:") == 0


def test_suspend_resume_and_nesting(tmp_path):
    assert cPyMemTrace.reference_tracing_wrapper_depth() == 0
    with cPyMemTrace.ReferenceTracing(include_tp_names=["Other"], filepath=tmp_path / "0.log") as t0:
        t0.suspend()
        Other()
        t0.resume()
        with cPyMemTrace.ReferenceTracing(include_tp_names=["Other"], filepath=tmp_path / "1.log") as t1:
            assert cPyMemTrace.reference_tracing_wrapper_depth() == 2
            with pytest.raises(RuntimeError):
                t0.suspend()
            Other()
        assert cPyMemTrace.reference_tracing_wrapper_depth() == 1
        Other()
    assert cPyMemTrace.reference_tracing_wrapper_depth() == 0
    outer = read_ref_log(tmp_path / "0.log")
    assert outer.messages == [
        "Suspending reference tracing.",
        "Resuming reference tracing.",
        "Detaching this Reference Tracing file wrapper. New file:",
        str(tmp_path / "1.log"),
        "Re-attaching this trace file wrapper.",
    ]
    assert [r.row for r in outer.records].count("NEW:") == 1
    inner = read_ref_log(tmp_path / "1.log")
    assert [r.row for r in inner.records].count("NEW:") == 1
    assert t1.log_file_path() == str(tmp_path / "1.log")


def test_bad_arguments():
    with pytest.raises(TypeError) as err:
        cPyMemTrace.ReferenceTracing(d_rss_trigger=0)
    assert "d_rss_trigger" in str(err.value)
    with pytest.raises(TypeError):
        cPyMemTrace.ReferenceTracing(21)
    with pytest.raises(TypeError):
        cPyMemTrace.ReferenceTracing("m", "f", False, [], [], 2, "one more")
    with pytest.raises(TypeError):
        cPyMemTrace.ReferenceTracing(include_tp_names=42)
    with pytest.raises(TypeError):
        cPyMemTrace.ReferenceTracing(exclude_tp_names="int")
    with pytest.raises(TypeError):
        cPyMemTrace.ReferenceTracing(exclude_tp_names=[1, 2])
    with pytest.raises(ValueError):
        cPyMemTrace.ReferenceTracing(gc_collect_on_exit=3)
    with pytest.raises(OSError):
        with cPyMemTrace.ReferenceTracing(filepath="/nonexistent-dir/x.log"):
            pass
    assert cPyMemTrace.reference_tracing_wrapper_depth() == 0
    with pytest.raises(RuntimeError):
        cPyMemTrace.ReferenceTracing().__exit__(None, None, None)
    tracer = cPyMemTrace.ReferenceTracing()
    with tracer:
        pass
    with pytest.raises(OSError):
        tracer.write_message_to_log("late")


def test_exception_inside_the_with_and_other_threads(tmp_path):
    def in_thread():
        Other()

    with pytest.raises(ZeroDivisionError):
        with cPyMemTrace.ReferenceTracing(include_tp_names=["Other"], filepath=tmp_path / "x.log"):
            thread = threading.Thread(target=in_thread)
            thread.start()
            thread.join()
            1 / 0
    assert cPyMemTrace.reference_tracing_wrapper_depth() == 0
    records = read_ref_log(tmp_path / "x.log").records
    assert [r.function for r in records if r.row == "NEW:"] == ["in_thread"], "all threads are traced"


def test_pytest_assertion_rewriting_inside():
    with cPyMemTrace.ReferenceTracing(include_builtins=True):
        with pytest.raises(AssertionError):
            assert ["a", "b", "c"] == ["a", "b", "c", "d"]


def test_simple_counts():
    with cPyMemTrace.ReferenceTracingSimple() as simple:
        assert cPyMemTrace.reference_tracing_simple_wrapper_depth() == 1
        [Other() for _ in range(100)]
        simple.suspend()
        suspended_at = simple.count_new()
        [Other() for _ in range(100)]
        assert simple.count_new() == suspended_at
        simple.resume()
    assert simple.count_new() >= 100
    assert simple.count_del() >= 100
    assert cPyMemTrace.reference_tracing_simple_wrapper_depth() == 0


def test_log_of_a_tracer_never_exited_is_flushed_at_exit(tmp_path):
    import subprocess

    code = (
        "from pymemtrace import cPyMemTrace\n"
        "class Leaky: pass\n"
        f"t = cPyMemTrace.ReferenceTracing(include_tp_names=['Leaky'], filepath={str(tmp_path / 'x.log')!r})\n"
        "t.__enter__()\n"
        "kept = [Leaky() for _ in range(5)]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    with open(tmp_path / "x.log", encoding="utf-8") as file:
        text = file.read()
    assert text.count("NEW:") == 5
