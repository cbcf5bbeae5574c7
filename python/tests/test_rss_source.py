"""The RSS that trace events see is /proc/self/statm's value at that moment, whichever source
is used: the kmem:rss_stat watcher (statm re-read only after a change, needs root or
CAP_PERFMON) or statm on every event (PYMEMTRACE_RSS=statm, or the watcher unavailable)."""

import mmap
import os
import subprocess
import sys
import threading

import pytest

from pymemtrace import _pymemtrace, cPyMemTrace

MB = 1024 ** 2
MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0x8000)
SOURCES = ["auto", "statm"]


def agrees_with_statm():
    """cPyMemTrace.rss() equals a fresh statm read just before or just after it."""
    before = _pymemtrace.rss_statm()
    ours = cPyMemTrace.rss()
    after = _pymemtrace.rss_statm()
    return ours in (before, after), (before, ours, after)


def check(step):
    ok, values = agrees_with_statm()
    assert ok, f"after {step}: statm, rss(), statm = {values}"


def touch(buffer, size):
    for offset in range(0, size, mmap.PAGESIZE):
        buffer[offset] = 1


def in_other_thread(work):
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def scenario():
    """Growth and release by page faults, munmap, MAP_POPULATE (no fault), madvise, another
    thread; each checked right after it happened."""
    check("start")
    block = bytearray(16 * MB)
    touch(block, len(block))
    check("faulting in 16 MiB")
    del block
    check("freeing it (munmap)")
    populated = mmap.mmap(-1, 8 * MB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_POPULATE)
    check("MAP_POPULATE of 8 MiB")
    if hasattr(populated, "madvise"):
        populated.madvise(mmap.MADV_DONTNEED)
        check("MADV_DONTNEED")
    populated.close()
    check("munmap")
    held = []
    in_other_thread(lambda: held.append(bytes(12 * MB)))
    check("another thread faulting in 12 MiB")
    in_other_thread(held.clear)
    check("another thread freeing it")


@pytest.mark.parametrize("source", SOURCES)
def test_every_event_sees_the_current_rss(source):
    code = "import test_rss_source as t, pymemtrace.cPyMemTrace as c\nwith c.Profile(0):\n    t.scenario()\nprint('ok')"
    env = dict(os.environ, PYMEMTRACE_RSS=source, PYTHONPATH=os.path.dirname(__file__))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_source_is_named():
    source = _pymemtrace.rss_source()
    if os.geteuid() == 0 and os.path.exists("/sys/kernel/tracing/events/kmem/rss_stat/id"):
        assert source == "rss_stat"
    else:
        assert source.startswith("statm (")


@pytest.mark.parametrize(
    "value, expected",
    [("statm", "statm (PYMEMTRACE_RSS=statm)"), ("fast", "statm (PYMEMTRACE_RSS=\"fast\" is neither auto nor statm)")],
)
def test_environment_forces_statm(value, expected):
    code = "from pymemtrace import _pymemtrace; print(_pymemtrace.rss_source())"
    env = dict(os.environ, PYMEMTRACE_RSS=value)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


def test_fork_child_sees_its_own_rss():
    with cPyMemTrace.Profile(0):
        check("before fork")
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                with cPyMemTrace.Profile(0):
                    scenario()
                status = 0
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        check("after the child exited")
    assert os.WEXITSTATUS(status) == 0
