"""pmt heap's test of the built-in types it follows by their own layout: each holds objects
that nothing else holds, and the script says, for every holder pmt must name, its retention
path, its item count and what it retains (`sys.getsizeof` of it and of everything only it
holds, counted here by hand from the objects the script made), prints `EXPECT <json>` and
`READY`, and sleeps while pmt reads it.

- an `OrderedDict` and a subclass of it (a dict with its own node list, which
  `sys.getsizeof` counts);
- a `types.SimpleNamespace` (its attribute dict) and a `types.MappingProxyType` (the
  mapping it shows);
- a `types.GenericAlias` (3.9+; its `__args__`);
- aware `datetime.datetime` and `datetime.time` objects and instances of a subclass of
  `datetime.datetime`, each with a `datetime.timezone` of its own (its offset and name);
- a suspended coroutine and a suspended async generator, each holding a list in a local;
- exceptions kept with their tracebacks (a built-in `ValueError` and a class deriving from
  `Exception`), whose frames outlived their calls and hold a list in a local; built-in
  exceptions holding a list in a member of their own type (`OSError.filename`,
  `StopIteration.value`, 3.11+ `ExceptionGroup.exceptions`); a frame kept by
  `sys._getframe()` after its call returned; the frames the thread still runs;
- a `types.UnionType` (3.10+; `typing.Union` from 3.14) of a `GenericAlias` holding a list;
- `zoneinfo.ZoneInfo` objects (3.9+) read from TZif data made here (no system time zone
  database needed, and no cache keeps them), each with its own key, file repr, offset and
  name; and an instance of a class deriving from `ZoneInfo`, holding a list in an attribute;
- a `collections.defaultdict` (a C type deriving from `dict`, adding its `default_factory`)
  whose factory is a closure holding a list;
- a struct sequence (`os.stat_result`, a built-in subclass of `tuple` until 3.11) holding
  lists in a visible field and in a field past its length (`st_atime`);
- instances of a class deriving from `str` (not compact: their characters are allocated
  apart), ASCII and not;
- strings, plain and of that subclass, whose UTF-8 (and, before 3.12, `wchar_t`) forms the
  C API made (called through ctypes), which `sys.getsizeof` counts;
- a `slice` holding a list in each of its members.

The script also counts, with `gc.get_objects()` (and, from 3.11 on, the frame object of the
module's running frame, which the collector does not track), the objects and the bytes
(`sys.getsizeof`) of the types it makes there, and prints them as `TYPES <json>`.

A holder reached through a generator-like object's frame is named `X local v` from 3.11 on,
where the frame is embedded, and `X.cr_frame local v` before, where it is an object.
"""

import collections
import datetime
import gc
import json
import sys
import time
import types

ITEMS = 400


def strings(tag):
    """Strings no one else holds (no single characters, which CPython shares)."""
    return ["%s-%d" % (tag, i) for i in range(ITEMS)]


def size_of(*objects):
    return sum(sys.getsizeof(o) for o in objects)


EXPECT = []


def expect(path, items, retained_bytes):
    EXPECT.append({"path": path, "items": items, "bytes": retained_bytes})


def ordered(kind, tag):
    od = kind(("%s-%d" % (tag, i), 10**6 + i) for i in range(ITEMS))
    return od, size_of(od, *od.keys(), *od.values())


class Ordered(collections.OrderedDict):
    pass


ORDERED, _bytes = ordered(collections.OrderedDict, "ordered")
expect("__main__.ORDERED", ITEMS, _bytes)
SUBORDERED, _bytes = ordered(Ordered, "subordered")
expect("__main__.SUBORDERED", ITEMS, _bytes)

NAMESPACE = types.SimpleNamespace(rows=strings("namespace"))
expect("__main__.NAMESPACE.rows", ITEMS, size_of(NAMESPACE.rows, *NAMESPACE.rows))

PROXY = types.MappingProxyType({"rows": strings("proxy")})
expect("__main__.PROXY.<mapping>['rows']", ITEMS, size_of(PROXY["rows"], *PROXY["rows"]))

if sys.version_info >= (3, 9):
    ALIAS = types.GenericAlias(list, (strings("alias"),))
    _rows = ALIAS.__args__[0]
    expect("__main__.ALIAS.__args__[0]", ITEMS, size_of(_rows, *_rows))


def zone(i):
    # A non-zero offset: `timezone(timedelta(0))` is the shared UTC singleton.
    return datetime.timezone(datetime.timedelta(minutes=i + 1), "zone-%d" % i)


def zone_size(value):
    tz = value.tzinfo
    return size_of(value, tz, tz.utcoffset(None), tz.tzname(None))


ZONED = [datetime.datetime(2020, 1, 1, tzinfo=zone(i)) for i in range(ITEMS)]
expect("__main__.ZONED", ITEMS, sys.getsizeof(ZONED) + sum(zone_size(v) for v in ZONED))
CLOCKS = [datetime.time(1, 2, tzinfo=zone(i)) for i in range(ITEMS)]
expect("__main__.CLOCKS", ITEMS, sys.getsizeof(CLOCKS) + sum(zone_size(v) for v in CLOCKS))


class Stamp(datetime.datetime):
    pass


STAMPS = [Stamp(2020, 1, 1, tzinfo=zone(i)) for i in range(ITEMS)]
expect("__main__.STAMPS", ITEMS, sys.getsizeof(STAMPS) + sum(zone_size(v) for v in STAMPS))


class Pause:
    def __await__(self):
        yield


async def waiting(rows):
    await Pause()


async def producing(rows):
    yield len(rows)


FRAME = "" if sys.version_info >= (3, 11) else ".cr_frame"
CORO = waiting(strings("coroutine"))
CORO.send(None)
# An equal list, built the same way: the same sizes.
_rows = strings("coroutine")
expect("__main__.CORO%s local rows" % FRAME, ITEMS, size_of(_rows, *_rows))

AGEN_FRAME = "" if sys.version_info >= (3, 11) else ".ag_frame"
AGEN = producing(strings("asyncgen"))
try:
    AGEN.__anext__().send(None)
except StopIteration:
    pass
_rows = strings("asyncgen")
expect("__main__.AGEN%s local rows" % AGEN_FRAME, ITEMS, size_of(_rows, *_rows))


def failing(rows):
    raise ValueError("kept")


class Kept(Exception):
    pass


def failing_kept(rows):
    raise Kept("kept")


def keep(fail, tag):
    """The exception `fail` raised: its traceback's frames (this call's and `fail`'s) outlive
    their calls."""
    try:
        fail(strings(tag))
    except Exception as error:
        return error


KEPT = [keep(failing, "traceback"), keep(failing_kept, "kept")]
for _i, _tag in enumerate(["traceback", "kept"]):
    _rows = strings(_tag)
    expect("__main__.KEPT[%d].__traceback__.tb_next.tb_frame local rows" % _i, ITEMS,
           size_of(_rows, *_rows))

ERRORS = [OSError(2, "missing", strings("oserror")), StopIteration(strings("stop"))]
for _path, _tag in [("[0].filename", "oserror"), ("[1].value", "stop")]:
    _rows = strings(_tag)
    expect("__main__.ERRORS" + _path, ITEMS, size_of(_rows, *_rows))
if sys.version_info >= (3, 11):
    GROUP = ExceptionGroup("group", [ValueError(strings("group"))])
    _rows = strings("group")
    expect("__main__.GROUP.exceptions[0].args[0]", ITEMS, size_of(_rows, *_rows))
del _path


def here(rows):
    return sys._getframe()


FRAMES = [here(strings("frame"))]
_rows = strings("frame")
expect("__main__.FRAMES[0] local rows", ITEMS, size_of(_rows, *_rows))

if sys.version_info >= (3, 10):
    UNION = int | types.GenericAlias(list, (strings("union"),))
    _rows = UNION.__args__[1].__args__[0]
    expect("__main__.UNION.__args__[1].__args__[0]", ITEMS, size_of(_rows, *_rows))


def make_factory(rows):
    def factory():
        # A new int each time (no small int the interpreter shares).
        return 10**6 + len(rows)

    return factory


DEFAULTS = collections.defaultdict(make_factory(strings("factory")))
for _i in range(ITEMS):
    DEFAULTS["default-%d" % _i]
_rows = strings("factory")
expect("<closure of __main__.make_factory.factory>.rows", ITEMS, size_of(_rows, *_rows))
# Its items, and its factory: the function, its closure and cell, and what the cell holds.
_factory = DEFAULTS.default_factory
_rows = _factory.__closure__[0].cell_contents
expect("__main__.DEFAULTS", ITEMS,
       size_of(DEFAULTS, *DEFAULTS.keys(), *DEFAULTS.values(), _factory, _factory.__closure__,
               *_factory.__closure__, _rows, *_rows))
del _factory

import os

STAT = os.stat_result((strings("stat"),) + (0,) * 9, {"st_atime": strings("atime")})
for _path, _tag in [("[0]", "stat"), (".st_atime", "atime")]:
    _rows = strings(_tag)
    expect("__main__.STAT" + _path, ITEMS, size_of(_rows, *_rows))


class Text(str):
    pass


TEXTS = [Text("text-%d" % i) for i in range(ITEMS // 2)]
TEXTS += [Text("t\u00e9xt-\u20ac%d" % i) for i in range(ITEMS // 2)]
expect("__main__.TEXTS", ITEMS, size_of(TEXTS, *TEXTS))

# Strings whose UTF-8 form (and, on 3.6-3.11, wchar_t form) the C API made, as a C extension
# or the interpreter's argument parsing does: `sys.getsizeof` counts those buffers where they
# are not the characters themselves (not for compact ASCII strings' UTF-8, not for 4-byte
# characters' wchar_t). ASCII, 1-, 2- and 4-byte characters, plain and of a subclass of str.
import ctypes

ENCODED = []
_as_utf8 = ctypes.pythonapi.PyUnicode_AsUTF8
_as_utf8.restype = ctypes.c_void_p
_as_utf8.argtypes = [ctypes.py_object]
_as_wide = None
if sys.version_info < (3, 12):
    _as_wide = ctypes.pythonapi.PyUnicode_AsUnicode
    _as_wide.restype = ctypes.c_void_p
    _as_wide.argtypes = [ctypes.py_object]
for _i in range(ITEMS // 8):
    for _text in ["encoded-%d", "\u00e9ncoded-%d", "\u20acncoded-%d", "\U0001f600ncoded-%d"]:
        for _kind in (str, Text):
            _s = _kind(_text % _i)
            _as_utf8(_s)
            if _as_wide is not None and _i % 2:
                _as_wide(_s)
            ENCODED.append(_s)
expect("__main__.ENCODED", len(ENCODED), size_of(ENCODED, *ENCODED))
del _s, _kind, _text, _as_utf8, _as_wide

# A slice holding a list in each of its members, in a list (a list kept in a named member,
# `SLICES[0].start`, is not a holder of its own: pmt names no container held as an attribute
# outside a `__dict__`, as with `__defaults__` or `args`).
_slice = slice(strings("start"), strings("stop"), strings("step"))
SLICES = [_slice]
expect("__main__.SLICES", 1,
       size_of(SLICES, _slice, _slice.start, _slice.stop, _slice.step, *_slice.start,
               *_slice.stop, *_slice.step))
del _slice

ZONES = []
if sys.version_info >= (3, 9):
    import io
    import struct
    import zoneinfo

    def tzif(seconds, name):
        """A TZif (version 1) file of one local time type and no transitions."""
        counts = struct.pack(">6l", 0, 0, 0, 0, 1, len(name) + 1)
        return b"TZif" + b"\0" * 16 + counts + struct.pack(">lbb", seconds, 0, 0) + name + b"\0"

    class Zone(zoneinfo.ZoneInfo):
        pass

    _retained = 0
    for _i in range(ITEMS // 10):
        _file = io.BytesIO(tzif(3600 + _i, b"Z%03d" % _i))
        _zone = zoneinfo.ZoneInfo.from_file(_file, key="zone-%d" % _i)
        ZONES.append(_zone)
        # The zone, its key, the repr of its file, its offset and name; not its DST offset,
        # a zero timedelta the zones share with ZONE (and from 3.13 on with the datetime
        # module, whose own it is).
        _retained += size_of(_zone, _zone.key, repr(_file), _zone.utcoffset(None),
                             _zone.tzname(None))
    expect("__main__.ZONES", len(ZONES), sys.getsizeof(ZONES) + _retained)
    ZONE = Zone.from_file(io.BytesIO(tzif(7200, b"ZONE")), key="subclassed")
    ZONE.rows = strings("zone")
    _rows = ZONE.rows
    expect("__main__.ZONE.rows", ITEMS, size_of(_rows, *_rows))
    del _file, _zone, _retained
del _rows, _bytes, _i, _tag

# What the collector lists of the types made here, by the name pmt gives them.
COUNTED = {
    types.FrameType: "frame",
    types.TracebackType: "traceback",
    ValueError: "ValueError",
    Kept: "__main__.Kept",
    collections.defaultdict: "collections.defaultdict",
    Text: "__main__.Text",
    os.stat_result: "os.stat_result",
}
if sys.version_info >= (3, 9):
    COUNTED[zoneinfo.ZoneInfo] = "zoneinfo.ZoneInfo"
    COUNTED[Zone] = "__main__.Zone"
if sys.version_info >= (3, 10):
    COUNTED[type(UNION)] = type(UNION).__module__ + "." + type(UNION).__qualname__
TYPES = {}
# Those the collector does not track: the module's running frame's object (3.11+), zones
# (3.9–3.11, whose type is no container), strs of a subclass.
_objects = {id(_o): _o for _o in gc.get_objects() + [sys._getframe(), STAT] + ZONES + TEXTS
            + ENCODED}
if sys.version_info >= (3, 9):
    _objects[id(ZONE)] = ZONE

for _o in _objects.values():
    _name = COUNTED.get(type(_o))
    if _name is not None:
        _count, _bytes = TYPES.get(_name, (0, 0))
        TYPES[_name] = (_count + 1, _bytes + sys.getsizeof(_o))
del _objects, _o, _name, _count, _bytes

print("TYPES " + json.dumps(TYPES), flush=True)
print("EXPECT " + json.dumps(EXPECT), flush=True)
print("READY", flush=True)
while True:
    time.sleep(1)
