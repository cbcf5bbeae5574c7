"""Checks a generated CPython layout against the running interpreter itself.

Run by tests/layouts_live.rs as `python layout_probe.py '<layout as JSON>'`. Every offset is
used to read this process's own memory with ctypes, and the value read is compared with what
the interpreter reports through its Python API (id(), len(), __basicsize__, threading...).
Prints one line per failed check and exits 1 if any failed; stays Python 3.6 compatible.
"""

import ctypes
import json
import sys
import threading
import time

L = json.loads(sys.argv[1])
MINOR = sys.version_info[1]
failures = []


def ptr(addr):
    return ctypes.c_void_p.from_address(addr).value or 0


def u64(addr):
    return ctypes.c_uint64.from_address(addr).value


def i64(addr):
    return ctypes.c_int64.from_address(addr).value


def u32(addr):
    return ctypes.c_uint32.from_address(addr).value


def i32(addr):
    return ctypes.c_int32.from_address(addr).value


def i8(addr):
    return ctypes.c_int8.from_address(addr).value


def u8(addr):
    return ctypes.c_uint8.from_address(addr).value


def check(what, got, expected):
    if got != expected:
        failures.append("{}: read {!r}, expected {!r}".format(what, got, expected))


def check_true(what, ok, detail=""):
    if not ok:
        failures.append("{}: failed {}".format(what, detail))


api = ctypes.pythonapi
api.PyThreadState_Get.restype = ctypes.c_void_p
api.PyThreadState_Get.argtypes = []


def thread_states(interp):
    states = []
    ts = ptr(interp + L["interp_threads_head"])
    while ts and len(states) < 1000:
        states.append(ts)
        ts = ptr(ts + L["tstate_next"])
    return states


def check_threads_and_runtime():
    tstate = api.PyThreadState_Get()
    interp = ptr(tstate + L["tstate_interp"])
    check_true("PyThreadState.interp", interp != 0)
    check_true("interpreter's thread list holds this thread", tstate in thread_states(interp))
    check("PyInterpreterState.next (single interpreter)", ptr(interp + L["interp_next"]), 0)
    check("interpreter modules", ptr(interp + L["interp_modules"]), id(sys.modules))
    check("PyThreadState.thread_id", u64(tstate + L["tstate_thread_id"]), threading.get_ident())
    if L["tstate_native_thread_id"] is not None:
        check(
            "PyThreadState.native_thread_id",
            u64(tstate + L["tstate_native_thread_id"]),
            threading.get_native_id(),
        )

    runtime = None
    if L["runtime_interpreters_head"] is not None:
        runtime = ctypes.addressof(ctypes.c_char.in_dll(api, "_PyRuntime"))
        check("_PyRuntime.interpreters.head", ptr(runtime + L["runtime_interpreters_head"]), interp)
    if L["runtime_tstate_current"] is not None:
        check("_PyRuntime.gilstate.tstate_current", ptr(runtime + L["runtime_tstate_current"]), tstate)

    gil = None
    if L["runtime_gil"] is not None:
        gil = runtime + L["runtime_gil"]
    if L["interp_gil_ptr"] is not None:
        gil = ptr(interp + L["interp_gil_ptr"])
    if gil is None:
        return
    # Make the GIL change hands: a spinning thread takes it while this one sleeps.
    stop = []
    spinner_state = []

    def spin():
        spinner_state.append(api.PyThreadState_Get())
        while not stop:
            pass

    spinner = threading.Thread(target=spin)
    spinner.start()
    time.sleep(0.05)
    holders = set(thread_states(interp))
    last = ptr(gil + L["gil_last_holder"])
    locked = i32(gil + L["gil_locked"])
    stop.append(True)
    spinner.join()
    check("_gil_runtime_state.locked while holding the GIL", locked, 1)
    check_true(
        "_gil_runtime_state.last_holder is a thread of this interpreter",
        last in holders and last != 0,
        "({:#x} not in {})".format(last, [hex(h) for h in holders]),
    )


def frame_probe():
    """Checks the frame this function runs in, as the thread state sees it.

    The first reads are written inline: calling a Python helper would push its own frame.
    """
    f = sys._getframe()
    code = f.f_code
    tstate = api.PyThreadState_Get()
    if MINOR <= 10:
        frame = ctypes.c_void_p.from_address(tstate + L["tstate_frame"]).value
        before = f.f_lasti
        lasti = ctypes.c_int32.from_address(frame + L["frame_lasti"]).value
        after = f.f_lasti
        check("PyThreadState.frame", frame, id(f))
        check("PyFrameObject.f_back", ptr(frame + L["frame_back"]), id(f.f_back))
        check("PyFrameObject.f_code", ptr(frame + L["frame_code"]), id(code))
        # f_lasti counts bytes up to 3.9 and code units in 3.10; the attribute counts bytes.
        units = 2 if MINOR == 10 else 1
        check_true(
            "PyFrameObject.f_lasti", before <= lasti * units <= after, (before, lasti, after)
        )
        # f_lineno is only kept up to date while tracing: it starts at co_firstlineno up to
        # 3.9 and at 0 in 3.10.
        lineno = code.co_firstlineno if MINOR <= 9 else 0
        check("PyFrameObject.f_lineno", i32(frame + L["frame_lineno"]), lineno)
        return
    if L["cframe_current_frame"] is not None:
        cframe = ctypes.c_void_p.from_address(tstate + L["tstate_frame"]).value
        iframe = ctypes.c_void_p.from_address(cframe + L["cframe_current_frame"]).value
    else:
        iframe = ctypes.c_void_p.from_address(tstate + L["tstate_frame"]).value
    instr = ctypes.c_void_p.from_address(iframe + L["frame_lasti"]).value
    check("_PyInterpreterFrame code", ptr(iframe + L["frame_code"]), id(code))
    previous = ptr(iframe + L["frame_back"])
    check("_PyInterpreterFrame.previous code", ptr(previous + L["frame_code"]), id(f.f_back.f_code))
    check("_PyInterpreterFrame.owner (FRAME_OWNED_BY_THREAD)", u8(iframe + L["frame_owner"]), 0)
    start = id(code) + L["code_code_adaptive"]
    check_true(
        "_PyInterpreterFrame instruction pointer lies in co_code_adaptive",
        start <= instr < start + len(code.co_code),
        (start, instr),
    )
    chunk = ptr(tstate + L["tstate_datastack_chunk"])
    size = u64(chunk + L["stack_chunk_size"])
    check_true(
        "frame lives in the thread's current _PyStackChunk",
        chunk < iframe and iframe + L["frame_size"] <= chunk + size,
        (chunk, size, iframe),
    )
    previous_chunk = ptr(chunk + L["stack_chunk_previous"])
    check_true("_PyStackChunk.previous", previous_chunk == 0 or previous_chunk > 4096)


def check_code():
    code = frame_probe.__code__
    at = id(code)
    check("co_filename", ptr(at + L["code_filename"]), id(code.co_filename))
    check("co_name", ptr(at + L["code_name"]), id(code.co_name))
    if L["code_qualname"] is not None:
        check("co_qualname", ptr(at + L["code_qualname"]), id(code.co_qualname))
    check("co_firstlineno", i32(at + L["code_firstlineno"]), code.co_firstlineno)
    table = code.co_lnotab if MINOR <= 9 else code.co_linetable
    check("co_lnotab / co_linetable", ptr(at + L["code_linetable"]), id(table))
    if L["code_code"] is not None:
        check("co_code", ptr(at + L["code_code"]), id(code.co_code))
    if L["code_code_adaptive"] is not None:
        # tp_basicsize of code objects is offsetof(PyCodeObject, co_code_adaptive).
        check("co_code_adaptive", L["code_code_adaptive"], type(code).__basicsize__)
    check("co_consts", ptr(at + L["code_consts"]), id(code.co_consts))
    check("co_names", ptr(at + L["code_names"]), id(code.co_names))
    if L["code_cellvars"] is not None:
        check("co_cellvars", ptr(at + L["code_cellvars"]), id(code.co_cellvars))
    if L["code_exceptiontable"] is not None:
        check("co_exceptiontable", ptr(at + L["code_exceptiontable"]), id(code.co_exceptiontable))
    kept = code.co_code
    if L["code_cached_code"] is not None:
        check("_co_code", ptr(at + L["code_cached_code"]), id(kept))
    if L["code_cached"] is not None:
        # _PyCoCached opens with _co_code, which reading co_code filled.
        check("_co_cached->_co_code", ptr(ptr(at + L["code_cached"])), id(kept))
    # type.__sizeof__: sizeof(PyTypeObject) for a built-in type; type's own basic size is
    # sizeof(PyHeapTypeObject).
    check("sizeof(PyTypeObject)", L["type_size"], type.__sizeof__(int))
    check("sizeof(PyHeapTypeObject)", L["heaptype_size"], type.__basicsize__)


class Point:
    def __init__(self):
        self.x = 1
        self.y = 2


def check_objects():
    items = [1, 2, 3]
    check("ob_type", ptr(id(items) + L["object_type"]), id(list))
    check("ob_size", i64(id(items) + L["var_size"]), 3)
    for t in (int, Point):
        at = id(t)
        check("tp_name", ctypes.string_at(ptr(at + L["type_name"])), t.__name__.encode())
        check("tp_flags", u64(at + L["type_flags"]), t.__flags__)
        check("tp_basicsize", i64(at + L["type_basicsize"]), t.__basicsize__)
        check("tp_dictoffset", i64(at + L["type_dictoffset"]), t.__dictoffset__)
    point = Point()
    cached = ptr(id(Point) + L["heaptype_cached_keys"])
    check_true("ht_cached_keys of a class with instance attributes", cached != 0)
    values = ptr(id(point.__dict__) + L["dict_values"])
    check_true("ma_values of an instance's split dict", values != 0)
    if MINOR <= 10:
        check("split dict shares ht_cached_keys", ptr(id(point.__dict__) + L["dict_keys"]), cached)

    data = b"layout probe"
    check("ob_sval", ctypes.string_at(id(data) + L["bytes_sval"], len(data)), data)

    ascii_text = "".join(["hel", "lo"])
    state = u32(id(ascii_text) + L["unicode_state"])
    check("str length", i64(id(ascii_text) + L["unicode_length"]), 5)
    check("ascii str kind/compact/ascii bits", ((state >> 2) & 7, (state >> 5) & 1, (state >> 6) & 1), (1, 1, 1))
    check("ascii str data", ctypes.string_at(id(ascii_text) + L["unicode_ascii_size"], 5), b"hello")
    latin = "".join(["h\xe9l", "lo"])
    state = u32(id(latin) + L["unicode_state"])
    check("latin-1 str kind/compact/ascii bits", ((state >> 2) & 7, (state >> 5) & 1, (state >> 6) & 1), (1, 1, 0))
    check("compact str data", ctypes.string_at(id(latin) + L["unicode_compact_size"], 5), latin.encode("latin-1"))

    number = int("123456")
    check("ob_digit[0]", u32(id(number) + L["long_digit"]), 123456)
    if L["long_lv_tag"] is not None:
        check("lv_tag digit count", u64(id(number) + L["long_lv_tag"]) >> 3, 1)
    else:
        check("int ob_size", i64(id(number) + L["var_size"]), 1)

    module = sys.modules["json"]
    check("md_dict", ptr(id(module) + L["module_dict"]), id(module.__dict__))


def entries_of(keys):
    """Address of the entry table and log2 of the table size of a dict's keys object."""
    if L["dictkeys_size"] is not None:
        size = i64(keys + L["dictkeys_size"])
        log2 = size.bit_length() - 1
        index_bytes = size * (1 if size <= 0xFF else 2 if size <= 0xFFFF else 4)
    else:
        log2 = u8(keys + L["dictkeys_log2_size"])
        index_bytes = 1 << u8(keys + L["dictkeys_log2_index_bytes"])
    return keys + L["dictkeys_indices"] + index_bytes, log2


def check_dicts():
    one, two = int("1001"), int("1002")
    table = {"alpha": one, "beta": two}
    check("ma_used", i64(id(table) + L["dict_used"]), 2)
    check("ma_values of a combined dict", ptr(id(table) + L["dict_values"]), 0)
    keys = ptr(id(table) + L["dict_keys"])
    check("dk_nentries", i64(keys + L["dictkeys_nentries"]), 2)
    entries, log2 = entries_of(keys)
    check("dk_size / dk_log2_size of a small dict", log2, 3)
    if L["dictkeys_kind"] is not None:
        check("dk_kind of a str-keyed dict (DICT_KEYS_UNICODE)", u8(keys + L["dictkeys_kind"]), 1)
        step = L["dict_unicode_entry_size"]
        check("second PyDictUnicodeEntry key", ptr(entries + step), id("beta"))
        check("second PyDictUnicodeEntry value", ptr(entries + step + 8), id(two))
    else:
        step = L["dict_entry_size"]
        check("second PyDictKeyEntry key", ptr(entries + step + 8), id("beta"))
        check("second PyDictKeyEntry value", ptr(entries + step + 16), id(two))

    general = {one: "x", two: "y"}
    keys = ptr(id(general) + L["dict_keys"])
    entries, _ = entries_of(keys)
    if L["dictkeys_kind"] is not None:
        check("dk_kind of an int-keyed dict (DICT_KEYS_GENERAL)", u8(keys + L["dictkeys_kind"]), 0)
    step = L["dict_entry_size"]
    check("second PyDictKeyEntry hash", i64(entries + step), hash(two))
    check("second PyDictKeyEntry key", ptr(entries + step + 8), id(two))
    check("second PyDictKeyEntry value", ptr(entries + step + 16), id(general[two]))


def check_small_objects():
    """The fixed references pmt heap follows in property, classmethod, staticmethod, built-in
    functions and methods, method-wrappers, descriptors and weak references."""
    import weakref

    def fget(self):
        return 1

    def fset(self, value):
        pass

    def fdel(self):
        pass

    class Holder:
        prop = property(fget, fset, fdel, "the doc")

    prop = Holder.__dict__["prop"]
    at = id(prop)
    check("property.prop_get", ptr(at + L["property_get"]), id(fget))
    check("property.prop_set", ptr(at + L["property_set"]), id(fset))
    check("property.prop_del", ptr(at + L["property_del"]), id(fdel))
    check("property.prop_doc", ptr(at + L["property_doc"]), id(prop.__doc__))
    if L["property_name"] is not None:
        check("property.prop_name", ptr(at + L["property_name"]), id("prop"))
    for kind, callable_at, dict_at in (
        (classmethod, "classmethod_callable", "classmethod_dict"),
        (staticmethod, "staticmethod_callable", "staticmethod_dict"),
    ):
        wrapped = kind(fget)
        wrapped.marker = 1
        check(kind.__name__ + " callable", ptr(id(wrapped) + L[callable_at]), id(fget))
        check(kind.__name__ + " __dict__", ptr(id(wrapped) + L[dict_at]), id(wrapped.__dict__))
    items = []
    append = items.append
    check("PyCFunctionObject.m_self", ptr(id(append) + L["cfunction_self"]), id(items))
    check("PyCFunctionObject.m_module", ptr(id(len) + L["cfunction_module"]), id(len.__module__))
    if L["cmethod_class"] is not None:
        # A method of a heap type defined in C that takes its defining class (3.12+ here).
        import io

        method = io.BytesIO().getbuffer
        if type(method).__name__ == "builtin_method":
            check("PyCMethodObject.mm_class", ptr(id(method) + L["cmethod_class"]), id(io.BytesIO))
    wrapper = items.__len__
    check("wrapperobject.descr", ptr(id(wrapper) + L["method_wrapper_descr"]),
          id(list.__dict__["__len__"]))
    check("wrapperobject.self", ptr(id(wrapper) + L["method_wrapper_self"]), id(items))
    descr = str.__dict__["join"]
    qualname = descr.__qualname__
    check("PyDescrObject.d_type", ptr(id(descr) + L["descr_type"]), id(str))
    check("PyDescrObject.d_name", ptr(id(descr) + L["descr_name"]), id(descr.__name__))
    check("PyDescrObject.d_qualname", ptr(id(descr) + L["descr_qualname"]), id(qualname))
    ref = weakref.ref(Holder, fdel)
    check("PyWeakReference.wr_callback", ptr(id(ref) + L["weakref_callback"]), id(fdel))


def check_generators():
    """Where pmt heap finds a generator's name, code and frame (≤3.10 a frame object with its
    own globals, builtins and locals; 3.11+ embedded), and how big `gen.__sizeof__` says it is."""
    def counting(limit):
        kept = [limit]
        yield kept

    gen = counting(3)
    at = id(gen)
    check("gi_name", ptr(at + L["gen_name"]), id(gen.__name__))
    check("gi_qualname", ptr(at + L["gen_qualname"]), id(gen.__qualname__))
    code = gen.gi_code
    check("co_stacksize", i32(id(code) + L["code_stacksize"]), code.co_stacksize)
    if L["gen_code"] is not None:
        check("gi_code", ptr(at + L["gen_code"]), id(code))
    if L["gen_frame"] is not None:
        frame = gen.gi_frame
        check("gi_frame", ptr(at + L["gen_frame"]), id(frame))
        check("f_globals", ptr(id(frame) + L["frame_globals"]), id(frame.f_globals))
        check("f_builtins", ptr(id(frame) + L["frame_builtins"]), id(frame.f_builtins))
        check("f_code", ptr(id(frame) + L["frame_code"]), id(code))
        # The argument is the first local slot.
        check("f_localsplus[0]", ptr(id(frame) + L["frame_localsplus"]), id(3))
    else:
        frame = at + L["gen_iframe"]
        executable = ptr(frame + L["frame_code"])
        if MINOR >= 14:
            executable &= ~3  # a tagged _PyStackRef
        check("gi_iframe.f_code / f_executable", executable, id(code))
        created = -3 if MINOR in (13, 14) else (0 if MINOR >= 15 else -2)
        check("gi_frame_state (created)", i8(at + L["gen_frame_state"]), created)
        slots = i32(id(code) + L["code_nlocals"]) + code.co_stacksize
        check("gen.__sizeof__", L["gen_iframe"] + L["frame_localsplus"] + 8 * slots,
              gen.__sizeof__())
    if L["coro_origin"] is not None:
        import sys

        async def origin():
            pass

        sys.set_coroutine_origin_tracking_depth(1)
        coro = origin()
        sys.set_coroutine_origin_tracking_depth(0)
        check("cr_origin", ptr(id(coro) + L["coro_origin"]), id(coro.cr_origin))
        coro.close()


def check_containers():
    """Where pmt heap finds the references of an OrderedDict (and what its size counts), a
    SimpleNamespace, a mappingproxy, a GenericAlias (3.9+), an aware datetime and time, and a
    timezone."""
    import collections
    import datetime
    import types

    od = collections.OrderedDict((i, str(i)) for i in range(5))
    od.marker = 1
    at = id(od)
    check("od_inst_dict", ptr(at + L["odict_inst_dict"]), id(od.__dict__))
    check_true("od_first", ptr(at + L["odict_first"]) != 0)
    fast = i64(at + L["odict_fast_nodes_size"])
    # `odict.__sizeof__`: the dict's, its node index, and one node per item.
    check("odict.__sizeof__", od.__sizeof__(),
          dict(od).__sizeof__() - dict.__basicsize__ + type(od).__basicsize__
          + fast * 8 + len(od) * L["odict_node_size"])
    ns = types.SimpleNamespace(a=1)
    check("ns_dict", ptr(id(ns) + L["namespace_dict"]), id(ns.__dict__))
    mapping = {"k": 1}
    proxy = types.MappingProxyType(mapping)
    check("mappingproxy.mapping", ptr(id(proxy) + L["mappingproxy_mapping"]), id(mapping))
    if L["generic_alias_origin"] is not None:
        import typing

        T = typing.TypeVar("T")
        alias = list[T]
        parameters = alias.__parameters__
        check("gaobject.origin", ptr(id(alias) + L["generic_alias_origin"]), id(list))
        check("gaobject.args", ptr(id(alias) + L["generic_alias_args"]), id(alias.__args__))
        check("gaobject.parameters", ptr(id(alias) + L["generic_alias_parameters"]),
              id(parameters))
    zone = datetime.timezone(datetime.timedelta(hours=1), "zone")
    check("timezone.offset", ptr(id(zone) + L["timezone_offset"]), id(zone.utcoffset(None)))
    check("timezone.name", ptr(id(zone) + L["timezone_name"]), id(zone.tzname(None)))
    for value, has, tz in (
        (datetime.datetime(2020, 1, 1, tzinfo=zone), "datetime_hastzinfo", "datetime_tzinfo"),
        (datetime.time(1, 2, tzinfo=zone), "time_hastzinfo", "time_tzinfo"),
    ):
        name = type(value).__name__
        check(name + ".hastzinfo", u8(id(value) + L[has]), 1)
        check(name + ".tzinfo", ptr(id(value) + L[tz]), id(zone))
    naive = datetime.datetime(2020, 1, 1)
    check("naive datetime.hastzinfo", u8(id(naive) + L["datetime_hastzinfo"]), 0)


KEPT_ROWS = [1, 2]


def check_frames_and_exceptions():
    """Where pmt heap finds what an exception, its traceback and the frame of a call that
    returned hold (≤3.10 the frame object itself, 3.11+ the interpreter frame the frame object
    owns from then on), and how big `frame.__sizeof__` says that frame is."""
    def failing(rows):
        raise KeyError(rows)

    def tracing(*args):
        return None

    try:
        try:
            failing(KEPT_ROWS)
        except KeyError as cause:
            raise ValueError("wrapped") from cause
    except ValueError as caught:
        error = caught
    notes = error.__dict__
    check("PyBaseExceptionObject.dict", ptr(id(error) + L["exception_dict"]), id(notes))
    check("PyBaseExceptionObject.args", ptr(id(error) + L["exception_args"]), id(error.args))
    check("PyBaseExceptionObject.traceback", ptr(id(error) + L["exception_traceback"]),
          id(error.__traceback__))
    check("PyBaseExceptionObject.context", ptr(id(error) + L["exception_context"]),
          id(error.__context__))
    check("PyBaseExceptionObject.cause", ptr(id(error) + L["exception_cause"]),
          id(error.__cause__))
    if L["exception_notes"] is not None:
        error.add_note("a note")
        # `add_note` keeps `__notes__` in the exception's `__dict__`; the member (which the
        # collector visits) stays empty.
        check("PyBaseExceptionObject.notes", ptr(id(error) + L["exception_notes"]), 0)
        check_true("__notes__ in the exception's __dict__", "__notes__" in notes)
    tb = error.__cause__.__traceback__
    check("PyTracebackObject.tb_next", ptr(id(tb) + L["traceback_next"]), id(tb.tb_next))
    frame = tb.tb_next.tb_frame
    check("PyTracebackObject.tb_frame", ptr(id(tb.tb_next) + L["traceback_frame"]), id(frame))
    check("PyFrameObject.f_back", ptr(id(frame) + L["frameobject_back"]), id(frame.f_back))
    frame.f_trace = tracing
    check("PyFrameObject.f_trace", ptr(id(frame) + L["frameobject_trace"]), id(tracing))
    code = frame.f_code
    slots = i32(id(code) + L["code_nlocals"]) + code.co_stacksize
    if L["frameobject_data"] is None:
        check("f_globals", ptr(id(frame) + L["frame_globals"]), id(frame.f_globals))
        return
    owned = id(frame) + L["frameobject_data"]
    check("PyFrameObject.f_frame (its own data)", ptr(id(frame) + L["frameobject_frame"]), owned)
    check("_PyInterpreterFrame.owner (FRAME_OWNED_BY_FRAME_OBJECT)",
          u8(owned + L["frame_owner"]), 2)
    untag = ~3 if MINOR >= 14 else ~0
    check("f_code / f_executable", ptr(owned + L["frame_code"]) & untag, id(code))
    check("f_func / f_funcobj", ptr(owned + L["frame_func"]) & untag, id(failing))
    check("_PyInterpreterFrame.f_globals", ptr(owned + L["frame_globals"]), id(frame.f_globals))
    check("_PyInterpreterFrame.f_builtins", ptr(owned + L["frame_builtins"]),
          id(frame.f_builtins))
    check("_PyInterpreterFrame.frame_obj (none once owned)", ptr(owned + L["frame_object"]), 0)
    check("localsplus[0]", ptr(owned + L["frame_localsplus"]) & untag, id(KEPT_ROWS))
    check("frame.__sizeof__", L["frameobject_data"] + L["frame_localsplus"] + 8 * slots,
          frame.__sizeof__())


def check_str_forms_and_slices():
    """Where pmt heap finds a str's UTF-8 and wchar_t forms and characters apart, a slice's
    members and a type's bases."""
    as_utf8 = api.PyUnicode_AsUTF8
    as_utf8.restype = ctypes.c_void_p
    as_utf8.argtypes = [ctypes.py_object]
    text = "".join(["\u20acur", "o"])
    check("no utf8 before PyUnicode_AsUTF8", ptr(id(text) + L["unicode_utf8"]), 0)
    utf8 = as_utf8(text)
    check("PyCompactUnicodeObject.utf8", ptr(id(text) + L["unicode_utf8"]), utf8)
    check("PyCompactUnicodeObject.utf8_length", i64(id(text) + L["unicode_utf8_length"]),
          len(text.encode("utf-8")))
    if L["unicode_wstr"] is not None:
        as_wide = api.PyUnicode_AsUnicode
        as_wide.restype = ctypes.c_void_p
        as_wide.argtypes = [ctypes.py_object]
        wide = as_wide(text)
        check("PyASCIIObject.wstr", ptr(id(text) + L["unicode_wstr"]), wide)
        check("PyCompactUnicodeObject.wstr_length", i64(id(text) + L["unicode_wstr_length"]),
              len(text))

    class Text(str):
        pass

    sub = Text("subclassed")
    check("PyUnicodeObject.data", ctypes.string_at(ptr(id(sub) + L["unicode_data"]), 10),
          b"subclassed")
    start, stop, step = [1], [2], [3]
    s = slice(start, stop, step)
    check("PySliceObject members", [ptr(id(s) + L[f]) for f in
                                    ("slice_start", "slice_stop", "slice_step")],
          [id(start), id(stop), id(step)])
    check("tp_bases", ptr(id(Text) + L["type_bases"]), id(Text.__bases__))


def check_union():
    """Where pmt heap finds the arguments of `int | str` (3.10+)."""
    if L["union_args"] is None:
        return
    import typing

    T = typing.TypeVar("T")
    union = int | list[T]
    args = union.__args__
    check("unionobject.args", ptr(id(union) + L["union_args"]), id(args))
    parameters = union.__parameters__
    check("unionobject.parameters", ptr(id(union) + L["union_parameters"]), id(parameters))
    if L["union_hashable_args"] is not None:
        hashable = ptr(id(union) + L["union_hashable_args"])
        check("unionobject.hashable_args (a frozenset)", type(ctypes.cast(
            hashable, ctypes.py_object).value), frozenset)
        check("unionobject.unhashable_args", ptr(id(union) + L["union_unhashable_args"]), 0)


def check_zoneinfo():
    """Where pmt heap finds a `zoneinfo.ZoneInfo`'s key, file repr and local time types
    (3.9+), read from TZif data made here."""
    if L["zoneinfo_key"] is None:
        return
    import io
    import struct
    import zoneinfo

    counts = struct.pack(">6l", 0, 0, 0, 0, 1, 4)
    data = b"TZif" + b"\0" * 16 + counts + struct.pack(">lbb", 3661, 0, 0) + b"ABC\0"
    zone = zoneinfo.ZoneInfo.from_file(io.BytesIO(data), key="probe")
    at = id(zone)
    check("ZoneInfo.key", ptr(at + L["zoneinfo_key"]), id(zone.key))
    check_true("ZoneInfo.file_repr", ptr(at + L["zoneinfo_file_repr"]) != 0)
    check("ZoneInfo.num_ttinfos", u64(at + L["zoneinfo_num_ttinfos"]), 1)
    first = ptr(at + L["zoneinfo_ttinfos"])
    std = at + L["zoneinfo_rule_std"]
    for where, info in (("_ttinfos[0]", first), ("tzrule_after.std", std)):
        check(where + ".utcoff", ptr(info + L["ttinfo_utcoff"]), id(zone.utcoffset(None)))
        check(where + ".dstoff", ptr(info + L["ttinfo_dstoff"]), id(zone.dst(None)))
        check(where + ".tzname", ptr(info + L["ttinfo_tzname"]), id(zone.tzname(None)))
    check("tzrule_after.dst (none for a fixed offset)", ptr(at + L["zoneinfo_rule_dst"]), 0)


def main():
    check("version", tuple(L["version"]), tuple(sys.version_info[:2]))
    check_threads_and_runtime()
    frame_probe()
    check_code()
    check_objects()
    check_dicts()
    check_small_objects()
    check_generators()
    check_containers()
    check_frames_and_exceptions()
    check_union()
    check_str_forms_and_slices()
    check_zoneinfo()
    for line in failures:
        print(line)
    if failures:
        sys.exit(1)
    print("ok: {} layout matches this interpreter".format(sys.version.split()[0]))


main()
