//! The C translation unit bindgen reads for one CPython minor version: which of the
//! interpreter's installed headers hold the structs we need, with `Py_BUILD_CORE` defined for
//! the internal ones, plus the few structs that no installed header defines.

/// `Objects/dict-common.h` (3.6–3.10) is not installed with the headers. These are its
/// `PyDictKeyEntry` and `struct _dictkeysobject`, transcribed member for member (the lookup
/// function pointer is declared `void *`, same size). bindgen lays them out like any header.
/// 3.6 declares `dk_indices` as a union of small arrays; it starts at the same offset as the
/// flexible `char dk_indices[]` of 3.7–3.10.
const DICT_COMMON_3_6_TO_3_10: &str = "
typedef struct {
    Py_hash_t me_hash;
    PyObject *me_key;
    PyObject *me_value;
} pmt_fact_PyDictKeyEntry;

struct pmt_fact_dictkeysobject {
    Py_ssize_t dk_refcnt;
    Py_ssize_t dk_size;
    void *dk_lookup;
    Py_ssize_t dk_usable;
    Py_ssize_t dk_nentries;
    char dk_indices[];
};
";

/// `PyModuleObject` is private to `Objects/moduleobject.c` before 3.10 (3.10 moved it to
/// `internal/pycore_moduleobject.h`). Transcribed from that file; its layout is the same
/// in 3.6–3.9.
const MODULEOBJECT_3_6_TO_3_9: &str = "
typedef struct {
    PyObject_HEAD
    PyObject *md_dict;
    struct PyModuleDef *md_def;
    void *md_state;
    PyObject *md_weaklist;
    PyObject *md_name;
} pmt_fact_PyModuleObject;
";

/// `collections.deque` is private to `Modules/_collectionsmodule.c` in every version. Its
/// block and the first members of `dequeobject`, transcribed (later members differ between
/// versions and are not needed: only these prefixes are laid out). `BLOCKLEN` is 64 in
/// 3.6–3.15.
const DEQUE_ALL: &str = "
typedef struct pmt_fact_deque_block {
    struct pmt_fact_deque_block *leftlink;
    PyObject *data[64];
    struct pmt_fact_deque_block *rightlink;
} pmt_fact_deque_block;

typedef struct {
    PyObject_VAR_HEAD
    pmt_fact_deque_block *leftblock;
    pmt_fact_deque_block *rightblock;
    Py_ssize_t leftindex;
    Py_ssize_t rightindex;
} pmt_fact_dequeobject;
";

/// 3.6 keeps `struct gc_generation` in `Modules/gcmodule.c`; transcribed.
const GC_GENERATION_3_6: &str = "
struct pmt_fact_gc_generation {
    PyGC_Head head;
    int threshold;
    int count;
};
";

/// `property` (`Objects/descrobject.c`): private in every version; 3.10 added `prop_name`
/// (the attribute name `__set_name__` records). Transcribed in both forms.
const PROPERTY_3_6_TO_3_9: &str = "
typedef struct {
    PyObject_HEAD
    PyObject *prop_get;
    PyObject *prop_set;
    PyObject *prop_del;
    PyObject *prop_doc;
    int getter_doc;
} pmt_fact_propertyobject;
";

/// See [`PROPERTY_3_6_TO_3_9`].
const PROPERTY_3_10_ON: &str = "
typedef struct {
    PyObject_HEAD
    PyObject *prop_get;
    PyObject *prop_set;
    PyObject *prop_del;
    PyObject *prop_doc;
    PyObject *prop_name;
    int getter_doc;
} pmt_fact_propertyobject;
";

/// `classmethod` and `staticmethod` (`Objects/funcobject.c`) and `method-wrapper`'s
/// `wrapperobject` (`Objects/descrobject.c`): private, the same in 3.6–3.15. Transcribed.
const CALLABLE_WRAPPERS_ALL: &str = "
typedef struct {
    PyObject_HEAD
    PyObject *cm_callable;
    PyObject *cm_dict;
} pmt_fact_classmethod;

typedef struct {
    PyObject_HEAD
    PyObject *sm_callable;
    PyObject *sm_dict;
} pmt_fact_staticmethod;

typedef struct {
    PyObject_HEAD
    PyWrapperDescrObject *descr;
    PyObject *self;
} pmt_fact_wrapperobject;
";

/// Built-in containers private to their C files, the same in 3.6–3.15 (3.9+ for
/// `GenericAlias`), transcribed: `collections.OrderedDict`'s `_odictobject` and its node
/// (`Objects/odictobject.c`), `types.SimpleNamespace` (`Objects/namespaceobject.c`),
/// `mappingproxy` (`Objects/descrobject.c`), the first members of `types.GenericAlias`'s
/// `gaobject` (`Objects/genericaliasobject.c`; 3.11 appended more), and `datetime.timezone`
/// (`Modules/_datetimemodule.c`). `datetime.datetime` and `datetime.time` come from the
/// installed `datetime.h`.
const CONTAINERS_ALL: &str = "
typedef struct {
    void *next;
    void *prev;
    PyObject *key;
    Py_hash_t hash;
} pmt_fact_ODictNode;

typedef struct {
    PyDictObject od_dict;
    pmt_fact_ODictNode *od_first;
    pmt_fact_ODictNode *od_last;
    pmt_fact_ODictNode **od_fast_nodes;
    Py_ssize_t od_fast_nodes_size;
    void *od_resize_sentinel;
    size_t od_state;
    PyObject *od_inst_dict;
    PyObject *od_weakreflist;
} pmt_fact_odictobject;

typedef struct {
    PyObject_HEAD
    PyObject *ns_dict;
} pmt_fact_namespaceobject;

typedef struct {
    PyObject_HEAD
    PyObject *mapping;
} pmt_fact_mappingproxyobject;

typedef struct {
    PyObject_HEAD
    PyObject *origin;
    PyObject *args;
    PyObject *parameters;
} pmt_fact_gaobject;

typedef struct {
    PyObject_HEAD
    PyObject *offset;
    PyObject *name;
} pmt_fact_timezone;
";

/// `unionobject` (`int | str`; `Objects/unionobject.c`, private): 3.10–3.13 its arguments and
/// parameters; 3.14 (where it became `typing.Union`) added the hashable and unhashable
/// arguments apart, and a weak reference list.
const UNION_3_10_TO_3_13: &str = "
typedef struct {
    PyObject_HEAD
    PyObject *args;
    PyObject *parameters;
} pmt_fact_unionobject;
";

const UNION_3_14_ON: &str = "
typedef struct {
    PyObject_HEAD
    PyObject *args;
    PyObject *hashable_args;
    PyObject *unhashable_args;
    PyObject *parameters;
    PyObject *weakreflist;
} pmt_fact_unionobject;
";

/// `zoneinfo.ZoneInfo` (3.9+, `Modules/_zoneinfo.c`, private; the same in 3.9–3.15): its
/// key and file repr, and the transition infos (`_ttinfo`: offset, DST offset and name
/// objects) it keeps in C arrays: one per distinct local time type, and the two of the rule
/// after the last transition (`_tzrule`; its transition rules are plain C data).
const ZONEINFO_3_9_ON: &str = "
typedef struct {
    PyObject *utcoff;
    PyObject *dstoff;
    PyObject *tzname;
    long utcoff_seconds;
} pmt_fact_ttinfo;

typedef struct {
    pmt_fact_ttinfo std;
    pmt_fact_ttinfo dst;
    int dst_diff;
    void *start;
    void *end;
    unsigned char std_only;
} pmt_fact_tzrule;

typedef struct {
    PyDateTime_TZInfo base;
    PyObject *key;
    PyObject *file_repr;
    PyObject *weakreflist;
    size_t num_transitions;
    size_t num_ttinfos;
    int64_t *trans_list_utc;
    int64_t *trans_list_wall[2];
    pmt_fact_ttinfo **trans_ttinfos;
    pmt_fact_ttinfo *ttinfo_before;
    pmt_fact_tzrule tzrule_after;
    pmt_fact_ttinfo *_ttinfos;
    unsigned char fixed_offset;
    unsigned char source;
} pmt_fact_zoneinfo;
";

/// Whether `Layout` needs a struct that `minor` only has in a transcribed form.
pub fn dict_keys_from_facts(minor: u8) -> bool {
    minor <= 10
}

/// See [`dict_keys_from_facts`].
pub fn module_from_facts(minor: u8) -> bool {
    minor <= 9
}

/// The translation unit for CPython 3.`minor`.
pub fn wrapper(minor: u8) -> String {
    let mut c = String::new();
    if minor >= 7 {
        // The runtime, interpreter and GIL structs are internal from 3.7 on.
        c.push_str("#define Py_BUILD_CORE 1\n");
    }
    c.push_str(
        "#include <Python.h>\n#include <frameobject.h>\n#include <structmember.h>\n#include <datetime.h>\n",
    );
    if minor <= 10 {
        // 3.11 folded code.h into cpython/code.h, which Python.h includes.
        c.push_str("#include <code.h>\n");
    }
    let internal: &[&str] = match minor {
        // 3.6: everything needed is public; the GIL is file-static in Python/ceval_gil.h.
        6 => &[],
        7 => &["internal/pystate.h"],
        // `pycore_code.h` (3.8–3.10): `_PyOpcache`, the per-instruction cache a code object
        // allocates after enough calls.
        8 => &["internal/pycore_pystate.h", "internal/pycore_code.h"],
        9 => &[
            "internal/pycore_runtime.h",
            "internal/pycore_interp.h",
            "internal/pycore_code.h",
        ],
        10 => &[
            "internal/pycore_runtime.h",
            "internal/pycore_interp.h",
            "internal/pycore_moduleobject.h",
            "internal/pycore_code.h",
        ],
        11..=13 => &[
            "internal/pycore_runtime.h",
            "internal/pycore_interp.h",
            "internal/pycore_frame.h",
            "internal/pycore_code.h",
            "internal/pycore_dict.h",
            "internal/pycore_moduleobject.h",
        ],
        // 3.14 moved `_PyInterpreterFrame` to `pycore_interpframe_structs.h`
        // (`pycore_frame.h` keeps the frame object's `struct _frame`).
        _ => &[
            "internal/pycore_runtime.h",
            "internal/pycore_interp.h",
            "internal/pycore_interpframe.h",
            "internal/pycore_frame.h",
            "internal/pycore_code.h",
            "internal/pycore_dict.h",
            "internal/pycore_moduleobject.h",
        ],
    };
    for header in internal {
        c.push_str(&format!("#include <{header}>\n"));
    }
    if dict_keys_from_facts(minor) {
        c.push_str(DICT_COMMON_3_6_TO_3_10);
    }
    if module_from_facts(minor) {
        c.push_str(MODULEOBJECT_3_6_TO_3_9);
    }
    if minor == 6 {
        c.push_str(GC_GENERATION_3_6);
    }
    c.push_str(DEQUE_ALL);
    c.push_str(if minor <= 9 {
        PROPERTY_3_6_TO_3_9
    } else {
        PROPERTY_3_10_ON
    });
    c.push_str(CALLABLE_WRAPPERS_ALL);
    c.push_str(CONTAINERS_ALL);
    match minor {
        ..=9 => {}
        10..=13 => c.push_str(UNION_3_10_TO_3_13),
        _ => c.push_str(UNION_3_14_ON),
    }
    if minor >= 9 {
        c.push_str(ZONEINFO_3_9_ON);
    }
    c
}

/// The types bindgen must lay out (it follows their member types by itself).
pub const ROOT_TYPES: &[&str] = &[
    "_PyRuntimeState",
    "PyInterpreterState",
    "PyThreadState",
    "_gil_runtime_state",
    "_PyCFrame",
    "_PyStackChunk",
    "PyFrameObject",
    "_frame",
    "_PyInterpreterFrame",
    "PyCodeObject",
    "_PyCoCached",
    "_PyOpcache",
    "PyObject",
    "PyVarObject",
    "PyTypeObject",
    "PyHeapTypeObject",
    "PyBytesObject",
    "PyTupleObject",
    "PyFloatObject",
    "PyASCIIObject",
    "PyCompactUnicodeObject",
    "PyUnicodeObject",
    "PySliceObject",
    "PyLongObject",
    "PyDictObject",
    "_dictkeysobject",
    "PyDictKeysObject",
    "PyDictKeyEntry",
    "PyDictUnicodeEntry",
    "PyModuleObject",
    "PyGC_Head",
    "_gc_head",
    "gc_generation",
    "_gc_runtime_state",
    "PyListObject",
    "PySetObject",
    "setentry",
    "PyMemberDef",
    "PyFunctionObject",
    "PyCellObject",
    "PyMethodObject",
    "PyCFunctionObject",
    "PyCMethodObject",
    "PyDescrObject",
    "_PyWeakReference",
    "PyGenObject",
    "_PyGenObject",
    "PyCoroObject",
    "PyAsyncGenObject",
    "PyDateTime_DateTime",
    "PyDateTime_Time",
    "_traceback",
    "PyTracebackObject",
    "PyBaseExceptionObject",
    "pmt_fact_.*",
];
