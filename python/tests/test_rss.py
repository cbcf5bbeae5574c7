"""RSS growth of a known allocation shows in dRSS at the right event and line."""

import pytest

from logparse import read_profile_log
from pymemtrace import cMemLeak, cPyMemTrace

SIZE = 64 * 1024 ** 2


def growth_events(log):
    """NEXT events whose dRSS is a growth of about SIZE. The first NEXT repeats the whole RSS as
    its dRSS (as pymemtrace 0.4.0 writes it), which is no growth: it is left out, or a process
    whose RSS already exceeds 0.9 * SIZE would count it."""
    return [e for e in log.events("NEXT:") if e.d_rss >= SIZE * 0.9 and e.d_rss != e.rss]


def allocate(cls):
    block = cls(SIZE)
    return block


@pytest.mark.parametrize("block_cls", [cMemLeak.CMalloc, cMemLeak.PyRawMalloc, cMemLeak.PyMalloc])
def test_trace_charges_growth_to_the_next_line(block_cls, tmp_path):
    path = tmp_path / "t.log"
    with cPyMemTrace.Trace(filepath=str(path)):
        block = allocate(block_cls)
        del block
    log = read_profile_log(path)
    first = allocate.__code__.co_firstlineno
    growth = growth_events(log)
    assert len(growth) == 1, open(path).read()
    event = growth[0]
    # The line after the allocation is the first event that sees the new pages.
    assert (event.what, event.function, event.line) == ("LINE", "allocate", first + 2)
    # The release shows at the next event after `del` (LAST: when none follows, as on 3.8).
    shrink = [e for e in log.events("NEXT:") + log.events("LAST:") if e.d_rss <= -SIZE * 0.9]
    assert len(shrink) == 1
    assert shrink[0].function == "test_trace_charges_growth_to_the_next_line"


def test_profile_charges_growth_to_the_return(tmp_path):
    path = tmp_path / "p.log"
    with cPyMemTrace.Profile(filepath=str(path)):
        block = allocate(cMemLeak.CMalloc)
        del block
    log = read_profile_log(path)
    growth = growth_events(log)
    assert len(growth) == 1, open(path).read()
    event = growth[0]
    assert (event.what, event.function) == ("RETURN", "allocate")
    assert event.line == allocate.__code__.co_firstlineno + 2
    # Skipped events are announced by the PREV line before the NEXT.
    index = [r for _, r in log.records].index(event)
    assert log.records[index - 1][0] in ("PREV:", "NEXT:", "FRST:", "PREV-MSG")


def test_memleak_objects_hold_resident_memory():
    before = cPyMemTrace.rss()
    # Above glibc's largest mmap threshold (32 MiB), so each block is fresh pages.
    size = 48 * 1024 ** 2
    blocks = [cls(size) for cls in (cMemLeak.CMalloc, cMemLeak.PyRawMalloc, cMemLeak.PyMalloc)]
    during = cPyMemTrace.rss()
    assert during - before >= 3 * size * 0.9
    assert [b.size for b in blocks] == [size] * 3
    assert all(b.buffer for b in blocks)
    del blocks
    assert cPyMemTrace.rss() < during - 2 * size
    assert cMemLeak.CMalloc(0).size == 1
    with pytest.raises(ValueError):
        cMemLeak.CMalloc(-1)
    with pytest.raises(TypeError):
        cMemLeak.PyMalloc("big")
    with pytest.raises(TypeError):
        cMemLeak.PyRawMalloc()
