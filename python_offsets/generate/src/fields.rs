//! Which C member (or size) each field of `pymemtrace::python::layout::Layout` is, per
//! CPython minor version. This mirrors the field docs of `src/python/layout.rs`.

use crate::headers::{dict_keys_from_facts, module_from_facts};

/// Where one `Layout` number comes from.
pub enum Source {
    /// `offsetof` of a member path, `Type.member.member…`.
    Offset(String),
    /// `sizeof` of a type.
    Size(&'static str),
}

/// One field of `Layout`.
pub struct Field {
    /// The Rust field name.
    pub name: &'static str,
    /// Whether the field is an `Option<u64>` (else a plain `u64` every version must have).
    pub optional: bool,
    /// The source for CPython 3.`minor`, `None` where the version has no such member.
    pub source: fn(u8) -> Option<Source>,
}

fn off(path: &str) -> Option<Source> {
    Some(Source::Offset(path.to_string()))
}

fn size(ty: &'static str) -> Option<Source> {
    Some(Source::Size(ty))
}

/// The type that holds `PyDictKeysObject` members for this version.
fn dict_keys(minor: u8) -> &'static str {
    if dict_keys_from_facts(minor) {
        "pmt_fact_dictkeysobject"
    } else {
        "_dictkeysobject"
    }
}

macro_rules! field {
    ($name:ident, $optional:expr, |$m:ident| $body:expr) => {
        Field {
            name: stringify!($name),
            optional: $optional,
            source: |$m: u8| $body,
        }
    };
}

/// Every field of `Layout`, in declaration order.
pub const FIELDS: &[Field] = &[
    // _PyRuntimeState
    field!(runtime_interpreters_head, true, |m| (m >= 7)
        .then(|| off("_PyRuntimeState.interpreters.head"))
        .flatten()),
    field!(runtime_tstate_current, true, |m| (7..=11)
        .contains(&m)
        .then(|| off("_PyRuntimeState.gilstate.tstate_current"))
        .flatten()),
    field!(runtime_gil, true, |m| (7..=11)
        .contains(&m)
        .then(|| off("_PyRuntimeState.ceval.gil"))
        .flatten()),
    // PyInterpreterState
    field!(interp_next, false, |_m| off("PyInterpreterState.next")),
    field!(interp_threads_head, false, |m| if m <= 10 {
        off("PyInterpreterState.tstate_head")
    } else {
        off("PyInterpreterState.threads.head")
    }),
    field!(interp_modules, false, |m| if m <= 11 {
        off("PyInterpreterState.modules")
    } else {
        off("PyInterpreterState.imports.modules")
    }),
    field!(interp_gil_ptr, true, |m| (m >= 12)
        .then(|| off("PyInterpreterState.ceval.gil"))
        .flatten()),
    // struct _gil_runtime_state
    field!(gil_last_holder, true, |m| (m >= 7)
        .then(|| off("_gil_runtime_state.last_holder"))
        .flatten()),
    field!(gil_locked, true, |m| (m >= 7)
        .then(|| off("_gil_runtime_state.locked"))
        .flatten()),
    // PyThreadState
    field!(tstate_next, false, |_m| off("PyThreadState.next")),
    field!(tstate_interp, false, |_m| off("PyThreadState.interp")),
    field!(tstate_frame, false, |m| match m {
        ..=10 => off("PyThreadState.frame"),
        11 | 12 => off("PyThreadState.cframe"),
        _ => off("PyThreadState.current_frame"),
    }),
    field!(cframe_current_frame, true, |m| (11..=12)
        .contains(&m)
        .then(|| off("_PyCFrame.current_frame"))
        .flatten()),
    field!(tstate_thread_id, false, |_m| off("PyThreadState.thread_id")),
    field!(tstate_native_thread_id, true, |m| (m >= 11)
        .then(|| off("PyThreadState.native_thread_id"))
        .flatten()),
    // frames
    field!(frame_back, false, |m| if m <= 10 {
        off("PyFrameObject.f_back")
    } else {
        off("_PyInterpreterFrame.previous")
    }),
    field!(frame_code, false, |m| match m {
        ..=10 => off("PyFrameObject.f_code"),
        11 | 12 => off("_PyInterpreterFrame.f_code"),
        _ => off("_PyInterpreterFrame.f_executable"),
    }),
    field!(frame_lasti, false, |m| match m {
        ..=10 => off("PyFrameObject.f_lasti"),
        11 | 12 => off("_PyInterpreterFrame.prev_instr"),
        _ => off("_PyInterpreterFrame.instr_ptr"),
    }),
    field!(frame_lineno, true, |m| (m <= 10)
        .then(|| off("PyFrameObject.f_lineno"))
        .flatten()),
    field!(frame_owner, true, |m| (m >= 11)
        .then(|| off("_PyInterpreterFrame.owner"))
        .flatten()),
    field!(frame_size, true, |m| (m >= 11)
        .then(|| size("_PyInterpreterFrame"))
        .flatten()),
    // data stack
    field!(tstate_datastack_chunk, true, |m| (m >= 11)
        .then(|| off("PyThreadState.datastack_chunk"))
        .flatten()),
    field!(stack_chunk_size, true, |m| (m >= 11)
        .then(|| off("_PyStackChunk.size"))
        .flatten()),
    field!(stack_chunk_previous, true, |m| (m >= 11)
        .then(|| off("_PyStackChunk.previous"))
        .flatten()),
    // PyCodeObject
    field!(code_filename, false, |_m| off("PyCodeObject.co_filename")),
    field!(code_name, false, |_m| off("PyCodeObject.co_name")),
    field!(code_qualname, true, |m| (m >= 11)
        .then(|| off("PyCodeObject.co_qualname"))
        .flatten()),
    field!(code_firstlineno, false, |_m| off(
        "PyCodeObject.co_firstlineno"
    )),
    field!(code_linetable, false, |m| if m <= 9 {
        off("PyCodeObject.co_lnotab")
    } else {
        off("PyCodeObject.co_linetable")
    }),
    field!(code_code, true, |m| (m <= 10)
        .then(|| off("PyCodeObject.co_code"))
        .flatten()),
    field!(code_code_adaptive, true, |m| (m >= 11)
        .then(|| off("PyCodeObject.co_code_adaptive"))
        .flatten()),
    // generic objects
    field!(object_type, false, |_m| off("PyObject.ob_type")),
    field!(var_size, false, |_m| off("PyVarObject.ob_size")),
    field!(type_name, false, |_m| off("PyTypeObject.tp_name")),
    field!(type_flags, false, |_m| off("PyTypeObject.tp_flags")),
    field!(type_dictoffset, false, |_m| off(
        "PyTypeObject.tp_dictoffset"
    )),
    field!(type_basicsize, false, |_m| off("PyTypeObject.tp_basicsize")),
    field!(heaptype_cached_keys, true, |_m| off(
        "PyHeapTypeObject.ht_cached_keys"
    )),
    // bytes and str
    field!(bytes_sval, false, |_m| off("PyBytesObject.ob_sval")),
    field!(unicode_state, false, |_m| off("PyASCIIObject.state")),
    field!(unicode_length, false, |_m| off("PyASCIIObject.length")),
    field!(unicode_ascii_size, false, |_m| size("PyASCIIObject")),
    field!(unicode_compact_size, false, |_m| size(
        "PyCompactUnicodeObject"
    )),
    // int
    field!(long_digit, false, |m| if m <= 11 {
        off("PyLongObject.ob_digit")
    } else {
        off("PyLongObject.long_value.ob_digit")
    }),
    field!(long_lv_tag, true, |m| (m >= 12)
        .then(|| off("PyLongObject.long_value.lv_tag"))
        .flatten()),
    // dict
    field!(dict_used, false, |_m| off("PyDictObject.ma_used")),
    field!(dict_keys, false, |_m| off("PyDictObject.ma_keys")),
    field!(dict_values, false, |_m| off("PyDictObject.ma_values")),
    field!(dictkeys_size, true, |m| (m <= 10)
        .then(|| off(&format!("{}.dk_size", dict_keys(m))))
        .flatten()),
    field!(dictkeys_log2_size, true, |m| (m >= 11)
        .then(|| off("_dictkeysobject.dk_log2_size"))
        .flatten()),
    field!(dictkeys_log2_index_bytes, true, |m| (m >= 11)
        .then(|| off("_dictkeysobject.dk_log2_index_bytes"))
        .flatten()),
    field!(dictkeys_kind, true, |m| (m >= 11)
        .then(|| off("_dictkeysobject.dk_kind"))
        .flatten()),
    field!(dictkeys_nentries, false, |m| off(&format!(
        "{}.dk_nentries",
        dict_keys(m)
    ))),
    field!(dictkeys_indices, false, |m| off(&format!(
        "{}.dk_indices",
        dict_keys(m)
    ))),
    field!(dict_entry_size, false, |m| if dict_keys_from_facts(m) {
        size("pmt_fact_PyDictKeyEntry")
    } else {
        size("PyDictKeyEntry")
    }),
    field!(dict_unicode_entry_size, true, |m| (m >= 11)
        .then(|| size("PyDictUnicodeEntry"))
        .flatten()),
    field!(module_dict, false, |m| if module_from_facts(m) {
        off("pmt_fact_PyModuleObject.md_dict")
    } else {
        off("PyModuleObject.md_dict")
    }),
];
