"""Tests of pymemtrace.debug_malloc_stats: parsing saved and live reports, repr round trips,
differences, and pymemtrace 0.4.0's documented example."""
import re

import pytest

from pymemtrace import debug_malloc_stats as dms

# A CPython 3.8 report (abbreviated free lists), as sys._debugmallocstats() writes it.
REPORT_38 = b"""Small block threshold = 512, in 32 size classes.

class   size   num pools   blocks in use  avail blocks
-----   ----   ---------   -------------  ------------
    0     16           2             297           209
    1     32          10            1098           162
    2     48          30            2476            44
   31    512           3               9             12

# arenas allocated total           =                2,033
# arenas reclaimed                 =                2,015
# arenas highwater mark            =                   18
# arenas allocated current         =                   18
18 arenas * 262144 bytes/arena     =            4,718,592

# bytes in allocated blocks        =            4,280,848
# bytes in available blocks        =               70,368
63 unused pools * 4096 bytes       =              258,048
# bytes lost to pool headers       =               52,272
# bytes lost to quantization       =               57,056
# bytes lost to arena alignment    =                    0
Total                              =            4,718,592

       4 free PyCFunctionObjects * 56 bytes each =                  224
            9 free PyDictObjects * 48 bytes each =                  432
  34 free 2-sized PyTupleObjects * 40 bytes each =                1,360
"""

#: The documented layout: change of count and type right-aligned in 48, total change in 20.
DICT_PLUS_2 = f'{"+2 free PyDictObjects * 48 bytes each":>48} = {"+96":>20}'


def test_parse_saved_report():
    stats = dms.SysDebugMallocStats(REPORT_38)
    assert (stats.small_block_threshold, stats.size_classes) == (512, 32)
    assert stats.malloc_stats[0] == dms.DebugMallocStat(0, 16, 2, 297, 209)
    assert stats.malloc_stats[-1].block_class == 31
    assert stats.arenas.ntimes_arena_allocated == 2033
    assert stats.arenas.arenas_reclaimed == 2015
    assert stats.arenas.arenas_total == 4718592
    assert stats.pools_blocks.unused_pool_total == 258048
    assert stats.pools_blocks.total == 4718592
    assert stats.type_stat(b'2-sized PyTupleObjects') == dms.DebugTypeStat(34, '2-sized PyTupleObjects', 40, 1360)
    assert stats.has_object_type(b'PyDictObjects')
    assert not stats.has_object_type(b'PyFloatObjects')
    assert dms.POOL_SIZE == 4096


def test_repr_round_trips():
    stats = dms.SysDebugMallocStats(REPORT_38)
    again = dms.SysDebugMallocStats(repr(stats).encode())
    assert again.malloc_stats == stats.malloc_stats
    assert again.type_stats == stats.type_stats
    assert repr(again) == repr(stats)
    assert repr(stats.arenas).splitlines()[-1] == '18 arenas * 262144 bytes/arena     =            4,718,592'
    assert repr(stats.type_stats[0]) == '       4 free PyCFunctionObjects * 56 bytes each =                  224'


def test_line_diffs():
    a = dms.DebugMallocStat(1, 32, 10, 1098, 162)
    b = dms.DebugMallocStat(1, 32, 11, 1150, 236)
    assert dms.diff_debug_malloc_stat(a, b) == '    1     32          +1             +52           +74'
    with pytest.raises(ValueError):
        dms.diff_debug_malloc_stat(a, dms.DebugMallocStat(2, 48, 1, 1, 1))
    ta = dms.DebugTypeStat(9, 'PyDictObjects', 48, 432)
    tb = dms.DebugTypeStat(11, 'PyDictObjects', 48, 528)
    assert dms.diff_debug_type_stat(ta, tb) == DICT_PLUS_2


def test_diff_with_new_size_class_and_new_type():
    later = REPORT_38.replace(
        b'   31    512           3               9             12\n',
        b'   30    496           1               2              6\n   31    512           3               9             12\n',
    ).replace(b'            9 free PyDictObjects', b'           11 free PyDictObjects').replace(
        b'=                  432', b'=                  528'
    ) + b'           2 free PyFloatObjects * 24 bytes each =                   48\n'
    a, b = dms.SysDebugMallocStats(REPORT_38), dms.SysDebugMallocStats(later)
    lines = dms.diff_debugmallocstats(a, b)
    assert lines[:3] == [
        'class   size   num pools   blocks in use  avail blocks',
        '-----   ----   ---------   -------------  ------------',
        '   30    496          +1              +2            +6',
    ]
    assert DICT_PLUS_2 in lines
    assert '+' + repr(b.type_stat(b'PyFloatObjects')) in lines
    reverse = dms.diff_debugmallocstats(b, a)
    assert '-' + repr(b.type_stat(b'PyFloatObjects')) in reverse
    assert dms.diff_debugmallocstats(a, a) == []


def test_live_snapshot():
    raw = dms.get_debugmallocstats()
    assert raw.startswith(b'Small block threshold')
    stats = dms.SysDebugMallocStats()
    assert stats.malloc_stats
    assert stats.pools_blocks.total == stats.arenas.arenas_total
    assert dms.POOL_SIZE == stats.pools_blocks.pool_size
    assert dms.POOL_OVERHEAD > 0


def test_documented_example():
    """docs/source/examples/debug_malloc_stats.rst 'Adding Small Strings'."""
    list_of_strings = []
    with dms.DiffSysDebugMallocStats() as malloc_diff:
        for i in range(1, 9):
            list_of_strings.append(' ' * (i * 8))
        # Enough small objects to move the allocator's counts in any CPython version.
        keep = [str(i) * 3 for i in range(2000)]
    text = malloc_diff.diff()
    lines = text.splitlines()
    assert lines[0] == 'class   size   num pools   blocks in use  avail blocks'
    assert lines[1] == '-----   ----   ---------   -------------  ------------'
    allocated = [line for line in lines if line.startswith('# bytes in allocated blocks        = ')]
    assert len(allocated) == 1
    assert re.match(r'^# bytes in allocated blocks        = +\+[0-9,]+$', allocated[0])
    assert len(allocated[0]) == 34 + 3 + 20
    assert len(keep) == 2000


def test_diff_before_enter_or_exit():
    diff = dms.DiffSysDebugMallocStats()
    with pytest.raises(RuntimeError):
        diff.diff()
    with diff:
        with pytest.raises(RuntimeError):
            diff.diff()


def test_missing_sections_are_errors():
    with pytest.raises(ValueError):
        dms.SysDebugMallocStats(b'Small block threshold = 512, in 32 size classes.\n')
