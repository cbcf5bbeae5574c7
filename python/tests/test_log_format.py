"""Profile/Trace log names and every line type, as pymemtrace 0.4.0 writes them."""

import datetime
import os
import platform
import sys

import pytest

from logparse import parse_name, read_profile_log
from pymemtrace import cMemLeak, cPyMemTrace

TRACERS = [(cPyMemTrace.Profile, "P"), (cPyMemTrace.Trace, "T")]


def make_strings(count, size):
    kept = []
    for _ in range(count):
        kept.append(" " * size)
    return kept


@pytest.mark.parametrize("cls,letter", TRACERS)
def test_default_name_and_full_log(cls, letter, tmp_path):
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    with cls(message="opening line") as tracer:
        path = tracer.log_file_path()
        make_strings(4, 1024 ** 2)
        tracer.write_message_to_log("in the middle")
    after = datetime.datetime.now(datetime.timezone.utc)
    assert os.path.dirname(path) == str(tmp_path)
    name = parse_name(os.path.basename(path))
    assert name["kind"] == letter
    assert name["pid"] == os.getpid()
    assert name["depth"] == 0
    assert name["version"] == sys.version.split()[0]
    assert name["version"].startswith(platform.python_version()[:4])
    stamp = datetime.datetime.strptime(name["date"] + name["time"], "%Y%m%d%H%M%S")
    stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    assert before <= stamp <= after, "file name date/time must be UTC"

    log = read_profile_log(path)
    assert log.opening == "opening line"
    first = log.events("FRST:")[0]
    assert (first.event, first.d_event, first.what) == (0, 0, "LINE")
    assert first.function == "test_default_name_and_full_log"
    assert first.d_rss == first.rss > 0
    assert "in the middle" in log.messages()
    last = log.events("LAST:")[0]
    assert last.what == "LINE" and last.function == "test_default_name_and_full_log"
    nexts = log.events("NEXT:")
    assert nexts, "1 MiB strings must move RSS by more than a page"
    for event in nexts:
        assert abs(event.d_rss) >= 4096 or event.event == 1
    numbers = [e.event for e in log.events() if e.text.startswith(("NEXT", "LAST"))]
    assert numbers == sorted(numbers)
    clocks = [e.clock for e in log.events()]
    assert clocks == sorted(clocks)


@pytest.mark.parametrize("cls,letter", TRACERS)
def test_every_event_with_trigger_zero(cls, letter, tmp_path):
    path = tmp_path / "every.log"
    with cls(0, filepath=str(path)):
        make_strings(3, 10)
    log = read_profile_log(path)
    assert not log.events("PREV:"), "no event is skipped with d_rss_trigger=0"
    nexts = log.events("NEXT:")
    assert [e.event for e in nexts] == list(range(1, len(nexts) + 1))
    assert all(e.d_event == 1 for e in nexts)
    whats = {e.what for e in nexts}
    if cls is cPyMemTrace.Profile:
        assert {"CALL", "RETURN", "C_CALL", "C_RETURN"} <= whats
        assert "LINE" not in whats
        calls = [e for e in nexts if e.what == "CALL" and e.function == "make_strings"]
        assert len(calls) == 1
        c_calls = {e.function for e in nexts if e.what == "C_CALL"}
        assert "append" in c_calls
    else:
        assert {"CALL", "LINE", "RETURN"} <= whats
        assert not whats & {"C_CALL", "C_RETURN"}
        lines = [e.line for e in nexts if e.what == "LINE" and e.function == "make_strings"]
        first_line = make_strings.__code__.co_firstlineno
        assert first_line + 1 in lines and first_line + 3 in lines
    # dRSS is relative to the previous written event.
    for a, b in zip(nexts, nexts[1:]):
        assert b.d_rss == b.rss - a.rss


@pytest.mark.parametrize("cls,letter", TRACERS)
def test_positive_trigger_skips_and_prev_repeats_last_line(cls, letter, tmp_path):
    path = tmp_path / "trigger.log"
    with cls(8 * 1024 ** 2, filepath=str(path)):
        blocks = []
        for _ in range(3):
            blocks.append(cMemLeak.CMalloc(16 * 1024 ** 2))
            make_strings(20, 10)
        del blocks
    log = read_profile_log(path)
    nexts = log.events("NEXT:")
    assert len(nexts) >= 3
    for event in nexts[1:]:
        assert abs(event.d_rss) >= 8 * 1024 ** 2
    # Each PREV repeats the line written just before it (0.4.0 behaviour).
    previous_text = None
    for kind, record in log.records:
        if kind == "PREV:":
            assert record.text[5:] == previous_text
        if kind in ("FRST:", "NEXT:"):
            previous_text = record.text[5:]
        if kind == "MSG:":
            previous_text = None


def test_negative_trigger_is_page_size(tmp_path):
    with cPyMemTrace.Profile(-5, filepath=str(tmp_path / "p.log")) as profiler:
        assert profiler.trace_file_wrapper.d_rss_trigger == os.sysconf("SC_PAGE_SIZE")
    with cPyMemTrace.Profile(0, filepath=str(tmp_path / "q.log")) as profiler:
        assert profiler.trace_file_wrapper.d_rss_trigger == 0


def test_ordinal_is_shared_by_profile_and_trace():
    with cPyMemTrace.Profile() as p:
        first = parse_name(os.path.basename(p.log_file_path()))
    with cPyMemTrace.Trace() as t:
        second = parse_name(os.path.basename(t.log_file_path()))
    with cPyMemTrace.Profile() as p:
        third = parse_name(os.path.basename(p.log_file_path()))
    assert second["ordinal"] == first["ordinal"] + 1
    assert third["ordinal"] == second["ordinal"] + 1
    if sys.version_info >= (3, 13):
        with cPyMemTrace.ReferenceTracing() as r:
            fourth = parse_name(os.path.basename(r.log_file_path()))
        assert fourth["ordinal"] == third["ordinal"] + 1
        assert fourth["kind"] == "O"


def test_log_file_path_is_none_outside_the_with():
    profiler = cPyMemTrace.Profile()
    assert profiler.log_file_path() is None
    with profiler:
        path = profiler.log_file_path()
        assert os.path.isfile(path)
    assert profiler.log_file_path() is None
    assert profiler.trace_file_wrapper.log_file_path == path


def test_filepath_accepts_pathlike_and_bytes(tmp_path):
    with cPyMemTrace.Trace(filepath=tmp_path / "a.log") as t:
        assert t.log_file_path() == str(tmp_path / "a.log")
    with cPyMemTrace.Trace(filepath=os.fsencode(tmp_path / "b.log")) as t:
        assert t.log_file_path() == str(tmp_path / "b.log")
    read_profile_log(tmp_path / "a.log")
    read_profile_log(tmp_path / "b.log")


def test_utf8_names_and_messages(tmp_path):
    path = tmp_path / "ünïcode.log"
    namespace = {}
    exec(compile("def grün():\n    return 'x' * 10\n", str(tmp_path / "dätei.py"), "exec"), namespace)
    with cPyMemTrace.Profile(0, message="Grüße ✓", filepath=str(path)) as profiler:
        namespace["grün"]()
        profiler.write_message_to_log("naïve ✓")
    log = read_profile_log(path)
    assert log.opening == "Grüße ✓"
    assert "naïve ✓" in log.messages()
    calls = [e for e in log.events("NEXT:") if e.function == "grün"]
    assert calls and calls[0].file.endswith("dätei.py")


def test_module_functions():
    assert cPyMemTrace.rss() > 0
    assert cPyMemTrace.rss_peak() >= cPyMemTrace.rss() // 2
    with open("/proc/self/statm") as statm:
        resident = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    assert abs(cPyMemTrace.rss() - resident) < 16 * 1024 ** 2
    assert cPyMemTrace.profile_wrapper_depth() == 0
    assert cPyMemTrace.trace_wrapper_depth() == 0
