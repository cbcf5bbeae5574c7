"""Snapshots of ``sys._debugmallocstats()`` (CPython's small-object allocator report, written by C
code to the process's stderr) decomposed into Python objects, and the significant differences
between two snapshots, in the layout of the original report with signed values.

Example::

    with debug_malloc_stats.DiffSysDebugMallocStats() as malloc_diff:
        strings = [' ' * (i * 8) for i in range(1, 9)]
    print(malloc_diff.diff())

The report has four parts: per size class pools and blocks; arenas; bytes in blocks, pools and
overheads; free lists of some types (dict, float, list, tuple...). Pool size and pool header size
differ between CPython versions (4 KiB pools before 3.12, 16 KiB from 3.12): they are read from
each report and kept in :py:data:`POOL_SIZE` and :py:data:`POOL_OVERHEAD`.
"""
import io
import re
import sys
import typing

from pymemtrace import redirect_stdout


def get_debugmallocstats() -> bytes:
    """Run ``sys._debugmallocstats()`` and return what it wrote to C stderr."""
    stream = io.BytesIO()
    with redirect_stdout.stderr_redirector(stream):
        sys._debugmallocstats()
    return stream.getvalue()


#: Bytes per pool; updated from the ``N unused pools * SIZE bytes`` line of each snapshot read.
POOL_SIZE = 4096

#: Bytes of header per pool; updated from ``# bytes lost to pool headers`` / total pools of each snapshot read.
POOL_OVERHEAD = 48


class DebugMallocStat(typing.NamedTuple):
    """One size class line of the report::

        class   size   num pools   blocks in use  avail blocks
            0     16           2             297           209
    """
    block_class: int
    size: int
    num_pools: int
    blocks_in_use: int
    avail_blocks: int

    @property
    def allocated_bytes(self) -> int:
        """Bytes in blocks in use."""
        return self.blocks_in_use * self.size

    @property
    def available_bytes(self) -> int:
        """Bytes in free blocks of this class's pools."""
        return self.avail_blocks * self.size

    @property
    def pool_header_bytes(self) -> int:
        """Bytes of pool headers."""
        return self.num_pools * POOL_OVERHEAD

    @property
    def quantization(self) -> int:
        """Bytes lost at the end of each pool because the block size does not divide it."""
        return self.num_pools * ((POOL_SIZE - POOL_OVERHEAD) % self.size)

    def __repr__(self) -> str:
        return (
            f'{self.block_class:5d}  {self.size:5d}  {self.num_pools:10d}'
            f'  {self.blocks_in_use:14d}  {self.avail_blocks:12d}'
        )


def diff_debug_malloc_stat(a: DebugMallocStat, b: DebugMallocStat) -> str:
    """The change from ``a`` to ``b`` of one size class, as a line like the report's with signs."""
    if a.block_class != b.block_class:
        raise ValueError(f'a.block_class != b.block_class: {a.block_class} != {b.block_class}')
    if a.size != b.size:
        raise ValueError(f'a.size != b.size: {a.size} != {b.size}')
    return (
        f'{a.block_class:5d}  {a.size:5d}  {b.num_pools - a.num_pools:+10d}'
        f'  {b.blocks_in_use - a.blocks_in_use:+14d}  {b.avail_blocks - a.avail_blocks:+12d}'
    )


#: A size class line: five integers.
RE_DEBUG_MALLOC_STATS_LINE = re.compile(rb'^\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$')

#: ``18 arenas * 262144 bytes/arena     =            4,718,592``
RE_DEBUG_MALLOC_ARENAS_SUMMARY_LINE = re.compile(rb'^(\d+) arenas \* (\d+) bytes/arena\s+=\s+(.+)$')

#: ``63 unused pools * 4096 bytes       =              258,048``
RE_DEBUG_MALLOC_POOLS_SUMMARY_LINE = re.compile(rb'^(\d+) unused pools \* (\d+) bytes\s+=\s+(.+)$')

#: ``   34 free 2-sized PyTupleObjects * 40 bytes each =                1,360``
RE_DEBUG_MALLOC_TYPE_LINE = re.compile(rb'^\s*(\d+) free (.+?) \* (\d+) bytes each =\s+(.+)$')

#: ``Small block threshold = 512, in 32 size classes.``
RE_DEBUG_MALLOC_HEADER_LINE = re.compile(rb'^Small block threshold = (\d+), in (\d+) size classes\.$')


def last_value_as_int(line: bytes) -> int:
    """The integer after ``=`` in a line such as ``b'# arenas allocated total  =  2,033'``."""
    return int(line.split(b'=')[-1].replace(b',', b'').strip())


def _check_found(obj: object, names: typing.Sequence[str]) -> None:
    missing = [name for name in names if not hasattr(obj, name)]
    if missing:
        raise ValueError(f'Can not find required attributes {tuple(names)}, missing {missing}')


def _printone(label: str, value: int, signed: bool = False) -> str:
    """A ``label = value`` line as CPython's ``printone()`` lays it out (value right-aligned in 20)."""
    number = f'{value:+,d}' if signed else f'{value:,d}'
    return f'{label:<34s} = {number:>20s}'


class DebugMallocArenas:
    """The arena lines: allocated total, reclaimed, high-water mark, allocated now, and the arena size."""

    def __init__(self, debug_malloc: bytes):
        for line in debug_malloc.splitlines():
            if line.startswith(b'# arenas allocated total'):
                self.ntimes_arena_allocated = last_value_as_int(line)
            elif line.startswith(b'# arenas highwater mark'):
                self.narenas_highwater = last_value_as_int(line)
            elif line.startswith(b'# arenas allocated current'):
                self.narenas = last_value_as_int(line)
            else:
                match = RE_DEBUG_MALLOC_ARENAS_SUMMARY_LINE.match(line)
                if match:
                    self.arena_size = int(match.group(2))
        _check_found(self, ('ntimes_arena_allocated', 'narenas_highwater', 'narenas', 'arena_size'))

    @property
    def arenas_reclaimed(self) -> int:
        """Arenas freed back to the system."""
        return self.ntimes_arena_allocated - self.narenas

    @property
    def arenas_total(self) -> int:
        """Bytes in arenas now."""
        return self.narenas * self.arena_size

    def __repr__(self) -> str:
        return '\n'.join([
            _printone('# arenas allocated total', self.ntimes_arena_allocated),
            _printone('# arenas reclaimed', self.arenas_reclaimed),
            _printone('# arenas highwater mark', self.narenas_highwater),
            _printone('# arenas allocated current', self.narenas),
            _printone(f'{self.narenas} arenas * {self.arena_size} bytes/arena', self.arenas_total),
        ])


class DebugMallocPoolsBlocks:
    """The block and pool byte counts: allocated and available blocks, unused pools, pool headers,
    quantization and arena alignment losses."""

    _PREFIXES = {
        b'# bytes in allocated blocks': 'allocated_bytes',
        b'# bytes in available blocks': 'available_bytes',
        b'# bytes lost to pool headers': 'pool_header_bytes',
        b'# bytes lost to quantization': 'quantization',
        b'# bytes lost to arena alignment': 'arena_alignment',
    }

    def __init__(self, debug_malloc: bytes):
        for line in debug_malloc.splitlines():
            for prefix, name in self._PREFIXES.items():
                if line.startswith(prefix):
                    setattr(self, name, last_value_as_int(line))
                    break
            else:
                match = RE_DEBUG_MALLOC_POOLS_SUMMARY_LINE.match(line)
                if match:
                    self.numfreepools = int(match.group(1))
                    self.pool_size = int(match.group(2))
        _check_found(self, tuple(self._PREFIXES.values()) + ('numfreepools', 'pool_size'))

    @property
    def unused_pool_total(self) -> int:
        """Bytes in unused pools."""
        return self.numfreepools * self.pool_size

    @property
    def total(self) -> int:
        """The report's ``Total``: the sum of the parts."""
        return (
            self.allocated_bytes + self.available_bytes + self.unused_pool_total
            + self.pool_header_bytes + self.quantization + self.arena_alignment
        )

    def pool_overhead(self, num_pools: int) -> int:
        """Header bytes per pool: pool header bytes divided by ``num_pools`` (0 if there are none)."""
        return self.pool_header_bytes // num_pools if num_pools else 0

    def __repr__(self) -> str:
        return '\n'.join([
            _printone('# bytes in allocated blocks', self.allocated_bytes),
            _printone('# bytes in available blocks', self.available_bytes),
            _printone(f'{self.numfreepools} unused pools * {self.pool_size} bytes', self.unused_pool_total),
            _printone('# bytes lost to pool headers', self.pool_header_bytes),
            _printone('# bytes lost to quantization', self.quantization),
            _printone('# bytes lost to arena alignment', self.arena_alignment),
            _printone('Total', self.total),
        ])


class DebugTypeStat(typing.NamedTuple):
    """One free-list line: ``4 free PyCFunctionObjects * 56 bytes each =  224``."""
    free_count: int
    object_type: str
    bytes_each: int
    bytes_total: int

    def __repr__(self) -> str:
        lhs = f'{self.free_count} free {self.object_type} * {self.bytes_each} bytes each'
        return f'{lhs:>48s} = {self.bytes_total:>20,d}'


def diff_debug_type_stat(a: DebugTypeStat, b: DebugTypeStat) -> str:
    """The change from ``a`` to ``b`` of one free list, as a line like the report's with signs."""
    if a.object_type != b.object_type:
        raise ValueError(f'a.object_type != b.object_type: {a.object_type} != {b.object_type}')
    if a.bytes_each != b.bytes_each:
        raise ValueError(f'a.bytes_each != b.bytes_each: {a.bytes_each} != {b.bytes_each}')
    lhs = f'{b.free_count - a.free_count:+d} free {a.object_type} * {a.bytes_each} bytes each'
    return f'{lhs:>48s} = {b.bytes_total - a.bytes_total:>+20,d}'


class SysDebugMallocStats:
    """One snapshot of ``sys._debugmallocstats()``: ``malloc_stats`` (size classes with pools),
    ``arenas``, ``pools_blocks`` and ``type_stats`` (free lists). Pass the report's bytes to
    decompose a saved one; with none it takes a snapshot now."""

    def __init__(self, debug_malloc: bytes = b''):
        global POOL_SIZE, POOL_OVERHEAD
        self.malloc_stats: typing.List[DebugMallocStat] = []
        self.type_stats: typing.List[DebugTypeStat] = []
        self.type_map: typing.Dict[bytes, int] = {}
        if not debug_malloc:
            debug_malloc = get_debugmallocstats()
        for line in debug_malloc.splitlines():
            match = RE_DEBUG_MALLOC_STATS_LINE.match(line)
            if match:
                self.malloc_stats.append(DebugMallocStat(*(int(v) for v in match.groups())))
                continue
            match = RE_DEBUG_MALLOC_TYPE_LINE.match(line)
            if match:
                self.type_map[match.group(2)] = len(self.type_stats)
                self.type_stats.append(DebugTypeStat(
                    int(match.group(1)), match.group(2).decode('ascii', 'replace'), int(match.group(3)),
                    int(match.group(4).replace(b',', b'')),
                ))
                continue
            match = RE_DEBUG_MALLOC_HEADER_LINE.match(line)
            if match:
                self.small_block_threshold = int(match.group(1))
                self.size_classes = int(match.group(2))
        self.arenas = DebugMallocArenas(debug_malloc)
        self.pools_blocks = DebugMallocPoolsBlocks(debug_malloc)
        _check_found(self, ('small_block_threshold', 'size_classes'))
        POOL_SIZE = self.pools_blocks.pool_size
        overhead = self.pools_blocks.pool_overhead(sum(stat.num_pools for stat in self.malloc_stats))
        if overhead:
            POOL_OVERHEAD = overhead

    def object_types(self) -> typing.KeysView[bytes]:
        """The free-list type names present (bytes, e.g. ``b'PyDictObjects'``)."""
        return self.type_map.keys()

    def has_object_type(self, object_type: bytes) -> bool:
        """Whether the free list of ``object_type`` is in this snapshot."""
        return object_type in self.type_map

    def type_stat(self, object_type: bytes) -> DebugTypeStat:
        """The free-list line of ``object_type``; KeyError if absent."""
        return self.type_stats[self.type_map[object_type]]

    def __repr__(self) -> str:
        lines = [
            f'Small block threshold = {self.small_block_threshold}, in {self.size_classes} size classes.',
            '',
            'class   size   num pools   blocks in use  avail blocks',
            '-----   ----   ---------   -------------  ------------',
        ]
        lines.extend(repr(stat) for stat in self.malloc_stats)
        lines.extend(['', repr(self.arenas), '', repr(self.pools_blocks), ''])
        lines.extend(repr(stat) for stat in self.type_stats)
        lines.append('')
        return '\n'.join(lines)


def _signed_line(label: str, before: int, after: int) -> typing.List[str]:
    return [_printone(label, after - before, signed=True)] if after != before else []


def diff_debugmallocstats(a_stats: SysDebugMallocStats, b_stats: SysDebugMallocStats) -> typing.List[str]:
    """The lines that differ between two snapshots, in the report's layout with ``+``/``-`` values.

    Size classes are matched by class number (a class that gained its first pool, or lost its last,
    is compared with zeros; 0.4.0 raised ValueError then). Free lists present in only one snapshot
    are shown whole, prefixed ``-`` (gone) or ``+`` (new)."""
    lines: typing.List[str] = []
    a_classes = {stat.block_class: stat for stat in a_stats.malloc_stats}
    b_classes = {stat.block_class: stat for stat in b_stats.malloc_stats}
    class_lines = []
    for block_class in sorted(set(a_classes) | set(b_classes)):
        a = a_classes.get(block_class)
        b = b_classes.get(block_class)
        if a is None and b is not None:
            a = DebugMallocStat(block_class, b.size, 0, 0, 0)
        if b is None and a is not None:
            b = DebugMallocStat(block_class, a.size, 0, 0, 0)
        if a is not None and b is not None and a != b:
            class_lines.append(diff_debug_malloc_stat(a, b))
    if class_lines:
        lines.append('class   size   num pools   blocks in use  avail blocks')
        lines.append('-----   ----   ---------   -------------  ------------')
        lines.extend(class_lines)

    a_ar, b_ar = a_stats.arenas, b_stats.arenas
    block = (
        _signed_line('# arenas allocated total', a_ar.ntimes_arena_allocated, b_ar.ntimes_arena_allocated)
        + _signed_line('# arenas reclaimed', a_ar.arenas_reclaimed, b_ar.arenas_reclaimed)
        + _signed_line('# arenas highwater mark', a_ar.narenas_highwater, b_ar.narenas_highwater)
        + _signed_line('# arenas allocated current', a_ar.narenas, b_ar.narenas)
    )
    if b_ar.narenas != a_ar.narenas:
        block.append(_printone(
            f'{b_ar.narenas - a_ar.narenas:+d} arenas * {a_ar.arena_size} bytes/arena',
            b_ar.arenas_total - a_ar.arenas_total, signed=True,
        ))
    if block:
        lines.append('')
        lines.extend(block)

    a_pb, b_pb = a_stats.pools_blocks, b_stats.pools_blocks
    block = (
        _signed_line('# bytes in allocated blocks', a_pb.allocated_bytes, b_pb.allocated_bytes)
        + _signed_line('# bytes in available blocks', a_pb.available_bytes, b_pb.available_bytes)
    )
    if b_pb.numfreepools != a_pb.numfreepools:
        block.append(_printone(
            f'{b_pb.numfreepools - a_pb.numfreepools} unused pools * {a_pb.pool_size} bytes',
            b_pb.unused_pool_total - a_pb.unused_pool_total, signed=True,
        ))
    block += (
        _signed_line('# bytes lost to pool headers', a_pb.pool_header_bytes, b_pb.pool_header_bytes)
        + _signed_line('# bytes lost to quantization', a_pb.quantization, b_pb.quantization)
        + _signed_line('# bytes lost to arena alignment', a_pb.arena_alignment, b_pb.arena_alignment)
        + _signed_line('Total', a_pb.total, b_pb.total)
    )
    if block:
        lines.append('')
        lines.extend(block)

    type_lines = []
    for object_type in sorted(set(a_stats.object_types()) | set(b_stats.object_types())):
        in_a = a_stats.has_object_type(object_type)
        in_b = b_stats.has_object_type(object_type)
        if in_a and in_b:
            if a_stats.type_stat(object_type) != b_stats.type_stat(object_type):
                type_lines.append(diff_debug_type_stat(a_stats.type_stat(object_type), b_stats.type_stat(object_type)))
        elif in_a:
            type_lines.append(f'-{a_stats.type_stat(object_type)!r}')
        else:
            type_lines.append(f'+{b_stats.type_stat(object_type)!r}')
    if type_lines:
        lines.append('')
        lines.extend(type_lines)
    return lines


class DiffSysDebugMallocStats:
    """Context manager: a :py:class:`SysDebugMallocStats` snapshot on entry and on exit;
    :py:meth:`diff` gives their significant differences as text."""

    def __init__(self):
        self.before: typing.Optional[SysDebugMallocStats] = None
        self.after: typing.Optional[SysDebugMallocStats] = None

    def __enter__(self) -> 'DiffSysDebugMallocStats':
        self.before = SysDebugMallocStats()
        self.after = None
        return self

    def __exit__(self, exc_type, exc_val, exc_tb) -> bool:
        self.after = SysDebugMallocStats()
        return False

    def diff(self) -> str:
        """The differing lines, joined by newlines. RuntimeError before entry or exit."""
        if self.before is None:
            raise RuntimeError('Context manager not entered.')
        if self.after is None:
            raise RuntimeError('Context manager not exited.')
        return '\n'.join(diff_debugmallocstats(self.before, self.after))


def main() -> int:
    """Print this interpreter's report, then the difference made by creating a few small objects."""
    print('sys._debugmallocstats()')
    print(get_debugmallocstats().decode('ascii', 'replace'))
    with DiffSysDebugMallocStats() as malloc_diff:
        kept = [{}, set(), (1, 2, 3)] + [tuple(range(4)) for _ in range(80)]
    print(f'POOL_SIZE {POOL_SIZE} POOL_OVERHEAD {POOL_OVERHEAD} ({len(kept)} objects kept)')
    print(malloc_diff.diff())
    return 0


if __name__ == '__main__':
    sys.exit(main())
