"""Messages in the log, and bad arguments: clear exceptions, never a crash."""

import sys

import pytest

from logparse import read_profile_log
from pymemtrace import cPyMemTrace

CLASSES = [cPyMemTrace.Profile, cPyMemTrace.Trace]


@pytest.mark.parametrize("cls", CLASSES)
def test_messages(cls, tmp_path):
    path = tmp_path / "m.log"
    with cls(message="first\nsecond", filepath=str(path)) as tracer:
        tracer.write_message_to_log("one line")
        tracer.write_message_to_log("two\nlines")
        tracer.trace_file_wrapper.write_message_to_log("through the wrapper")
        tracer.write_to_log("raw text")
    with open(path, encoding="utf-8") as file:
        text = file.read()
    assert text.startswith("first\nsecond\nSOF\n")
    assert "\nraw text\n" in text
    text = text.replace("raw text\n", "")
    log = read_profile_log_text(text)
    assert log.messages() == ["one line", "two\nlines", "through the wrapper"]
    msg_lines = [line for line in text.splitlines() if line.startswith("MSG:")]
    assert all(" # " in line for line in msg_lines)


def read_profile_log_text(text):
    from logparse import ProfileLog

    return ProfileLog(text)


@pytest.mark.parametrize("cls", CLASSES)
def test_message_after_exit_and_bad_message(cls):
    with cls() as tracer:
        with pytest.raises(ValueError):
            tracer.write_message_to_log(42)
    with pytest.raises(OSError) as err:
        tracer.write_message_to_log("late")
    assert err.value.args[0] == "Log file is closed."
    with pytest.raises(OSError):
        cls().write_message_to_log("never entered")


@pytest.mark.parametrize("cls", CLASSES)
def test_bad_keyword(cls):
    with pytest.raises(TypeError) as err:
        with cls(foo=0):
            pass
    assert "foo" in str(err.value)


@pytest.mark.parametrize("cls", CLASSES)
def test_bad_argument_types(cls):
    with pytest.raises(TypeError) as err:
        cls("foo")
    assert "str" in str(err.value)
    with pytest.raises(TypeError):
        cls(0, 12)
    with pytest.raises(TypeError):
        cls(0, "m", 3.5)
    with pytest.raises(OverflowError):
        cls(2 ** 40)


@pytest.mark.parametrize("cls", CLASSES)
def test_too_many_arguments(cls):
    with pytest.raises(TypeError):
        cls("foo", "bar", "baz", "stuff")
    with pytest.raises(TypeError):
        cls(0, "m", "f.log", "extra")


@pytest.mark.parametrize("cls", CLASSES)
def test_unwritable_log_file(cls, tmp_path):
    tracer = cls(filepath=str(tmp_path / "missing-dir" / "x.log"))
    with pytest.raises(OSError):
        with tracer:
            pass
    assert cPyMemTrace.profile_wrapper_depth() == 0
    assert cPyMemTrace.trace_wrapper_depth() == 0
    assert sys.getprofile() is None and sys.gettrace() is None


@pytest.mark.parametrize("cls", CLASSES)
def test_exit_without_enter(cls):
    with pytest.raises(RuntimeError):
        cls().__exit__(None, None, None)


@pytest.mark.parametrize("cls", CLASSES)
def test_exception_inside_the_with(cls, tmp_path):
    path = tmp_path / "e.log"

    def fail():
        raise KeyError("boom")

    with pytest.raises(KeyError):
        with cls(0, filepath=str(path)):
            fail()
    assert cPyMemTrace.profile_wrapper_depth() == 0
    assert cPyMemTrace.trace_wrapper_depth() == 0
    log = read_profile_log(path)
    whats = {e.what for e in log.events("NEXT:") if e.function == "fail"}
    if cls is cPyMemTrace.Trace:
        assert "EXCEPT" in whats
    assert "RETURN" in whats or "EXCEPT" in whats
    # The tracer still works after the exception.
    with cls() as again:
        pass
    assert again.log_file_path() is None


@pytest.mark.parametrize("cls", CLASSES)
def test_write_failure_is_reported_at_exit(cls):
    with pytest.raises(OSError) as err:
        with cls(0, filepath="/dev/full"):
            for _ in range(2000):
                len("x")
    assert "Writing the log file failed" in str(err.value)
    assert cPyMemTrace.profile_wrapper_depth() == 0 and cPyMemTrace.trace_wrapper_depth() == 0
    assert sys.getprofile() is None and sys.gettrace() is None
