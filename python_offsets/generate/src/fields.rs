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

/// `source()` in the versions where `present`, else `None`.
fn when(present: bool, source: impl FnOnce() -> Option<Source>) -> Option<Source> {
    if present { source() } else { None }
}

/// The type that holds `PyDictKeysObject` members for this version.
fn dict_keys(minor: u8) -> &'static str {
    if dict_keys_from_facts(minor) {
        "pmt_fact_dictkeysobject"
    } else {
        "_dictkeysobject"
    }
}

/// The struct of a generator: a typedef of an unnamed struct until 3.13, `struct
/// _PyGenObject` (in the internal headers) from 3.14 on.
fn gen_struct(minor: u8) -> &'static str {
    if minor >= 14 {
        "_PyGenObject"
    } else {
        "PyGenObject"
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
    field!(runtime_interpreters_head, true, |m| when(m >= 7, || off(
        "_PyRuntimeState.interpreters.head"
    ))),
    field!(runtime_tstate_current, true, |m| when(
        (7..=11).contains(&m),
        || off("_PyRuntimeState.gilstate.tstate_current")
    )),
    field!(runtime_gil, true, |m| when((7..=11).contains(&m), || off(
        "_PyRuntimeState.ceval.gil"
    ))),
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
    field!(interp_gil_ptr, true, |m| when(m >= 12, || off(
        "PyInterpreterState.ceval.gil"
    ))),
    // struct _gil_runtime_state
    field!(gil_last_holder, true, |m| when(m >= 7, || off(
        "_gil_runtime_state.last_holder"
    ))),
    field!(gil_locked, true, |m| when(m >= 7, || off(
        "_gil_runtime_state.locked"
    ))),
    // PyThreadState
    field!(tstate_next, false, |_m| off("PyThreadState.next")),
    field!(tstate_interp, false, |_m| off("PyThreadState.interp")),
    field!(tstate_frame, false, |m| match m {
        ..=10 => off("PyThreadState.frame"),
        11 | 12 => off("PyThreadState.cframe"),
        _ => off("PyThreadState.current_frame"),
    }),
    field!(cframe_current_frame, true, |m| when(
        (11..=12).contains(&m),
        || off("_PyCFrame.current_frame")
    )),
    field!(tstate_thread_id, false, |_m| off("PyThreadState.thread_id")),
    field!(tstate_base_frame, true, |m| when(m >= 15, || off(
        "PyThreadState.base_frame"
    ))),
    field!(tstate_native_thread_id, true, |m| when(m >= 11, || off(
        "PyThreadState.native_thread_id"
    ))),
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
    field!(frame_lineno, true, |m| when(m <= 10, || off(
        "PyFrameObject.f_lineno"
    ))),
    field!(frame_localsplus, false, |m| if m <= 10 {
        off("PyFrameObject.f_localsplus")
    } else {
        off("_PyInterpreterFrame.localsplus")
    }),
    field!(frame_is_entry, true, |m| when(m == 11, || off(
        "_PyInterpreterFrame.is_entry"
    ))),
    field!(frame_owner, true, |m| when(m >= 11, || off(
        "_PyInterpreterFrame.owner"
    ))),
    field!(frame_size, true, |m| when(m >= 11, || size(
        "_PyInterpreterFrame"
    ))),
    // data stack
    field!(tstate_datastack_chunk, true, |m| when(m >= 11, || off(
        "PyThreadState.datastack_chunk"
    ))),
    field!(stack_chunk_size, true, |m| when(m >= 11, || off(
        "_PyStackChunk.size"
    ))),
    field!(stack_chunk_previous, true, |m| when(m >= 11, || off(
        "_PyStackChunk.previous"
    ))),
    // PyCodeObject
    field!(code_filename, false, |_m| off("PyCodeObject.co_filename")),
    field!(code_name, false, |_m| off("PyCodeObject.co_name")),
    field!(code_qualname, true, |m| when(m >= 11, || off(
        "PyCodeObject.co_qualname"
    ))),
    field!(code_firstlineno, false, |_m| off(
        "PyCodeObject.co_firstlineno"
    )),
    field!(code_localnames, false, |m| if m <= 10 {
        off("PyCodeObject.co_varnames")
    } else {
        off("PyCodeObject.co_localsplusnames")
    }),
    field!(code_nlocals, false, |m| if m <= 10 {
        off("PyCodeObject.co_nlocals")
    } else {
        off("PyCodeObject.co_nlocalsplus")
    }),
    field!(code_localkinds, true, |m| when(m >= 11, || off(
        "PyCodeObject.co_localspluskinds"
    ))),
    field!(code_flags, false, |_m| off("PyCodeObject.co_flags")),
    field!(code_linetable, false, |m| if m <= 9 {
        off("PyCodeObject.co_lnotab")
    } else {
        off("PyCodeObject.co_linetable")
    }),
    field!(code_code, true, |m| when(m <= 10, || off(
        "PyCodeObject.co_code"
    ))),
    field!(code_code_adaptive, true, |m| when(m >= 11, || off(
        "PyCodeObject.co_code_adaptive"
    ))),
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
    field!(tuple_items, false, |_m| off("PyTupleObject.ob_item")),
    field!(float_value, false, |_m| off("PyFloatObject.ob_fval")),
    // bytes and str
    field!(bytes_sval, false, |_m| off("PyBytesObject.ob_sval")),
    field!(unicode_state, false, |_m| off("PyASCIIObject.state")),
    field!(unicode_length, false, |_m| off("PyASCIIObject.length")),
    field!(unicode_ascii_size, false, |_m| size("PyASCIIObject")),
    field!(unicode_compact_size, false, |_m| size(
        "PyCompactUnicodeObject"
    )),
    field!(unicode_utf8_length, false, |_m| off(
        "PyCompactUnicodeObject.utf8_length"
    )),
    field!(unicode_utf8, false, |_m| off("PyCompactUnicodeObject.utf8")),
    field!(unicode_wstr, true, |m| when(m <= 11, || off("PyASCIIObject.wstr"))),
    field!(unicode_wstr_length, true, |m| when(m <= 11, || off(
        "PyCompactUnicodeObject.wstr_length"
    ))),
    field!(unicode_data, false, |_m| off("PyUnicodeObject.data")),
    // slice
    field!(slice_start, false, |_m| off("PySliceObject.start")),
    field!(slice_stop, false, |_m| off("PySliceObject.stop")),
    field!(slice_step, false, |_m| off("PySliceObject.step")),
    // int
    field!(long_digit, false, |m| if m <= 11 {
        off("PyLongObject.ob_digit")
    } else {
        off("PyLongObject.long_value.ob_digit")
    }),
    field!(long_lv_tag, true, |m| when(m >= 12, || off(
        "PyLongObject.long_value.lv_tag"
    ))),
    // dict
    field!(dict_used, false, |_m| off("PyDictObject.ma_used")),
    field!(dict_keys, false, |_m| off("PyDictObject.ma_keys")),
    field!(dict_values, false, |_m| off("PyDictObject.ma_values")),
    field!(dictkeys_size, true, |m| when(m <= 10, || off(&format!(
        "{}.dk_size",
        dict_keys(m)
    )))),
    field!(dictkeys_log2_size, true, |m| when(m >= 11, || off(
        "_dictkeysobject.dk_log2_size"
    ))),
    field!(dictkeys_log2_index_bytes, true, |m| when(m >= 11, || off(
        "_dictkeysobject.dk_log2_index_bytes"
    ))),
    field!(dictkeys_kind, true, |m| when(m >= 11, || off(
        "_dictkeysobject.dk_kind"
    ))),
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
    field!(dict_unicode_entry_size, true, |m| when(m >= 11, || size(
        "PyDictUnicodeEntry"
    ))),
    field!(module_dict, false, |m| if module_from_facts(m) {
        off("pmt_fact_PyModuleObject.md_dict")
    } else {
        off("PyModuleObject.md_dict")
    }),
    // the garbage collector's lists (pmt heap)
    field!(gc_head_size, false, |_m| size("PyGC_Head")),
    field!(gc_generation_size, false, |m| if m == 6 {
        size("pmt_fact_gc_generation")
    } else {
        size("gc_generation")
    }),
    field!(runtime_gc, true, |m| when((7..=8).contains(&m), || off(
        "_PyRuntimeState.gc"
    ))),
    field!(interp_gc, true, |m| when(m >= 9, || off(
        "PyInterpreterState.gc"
    ))),
    field!(gcstate_generations, true, |m| when(m >= 7, || off(
        "_gc_runtime_state.generations"
    ))),
    field!(gcstate_generation0, true, |m| when(
        (7..=13).contains(&m),
        || off("_gc_runtime_state.generation0")
    )),
    field!(gcstate_permanent, true, |m| when(m >= 7, || off(
        "_gc_runtime_state.permanent_generation"
    ))),
    // containers (pmt heap)
    field!(list_items, false, |_m| off("PyListObject.ob_item")),
    field!(set_used, false, |_m| off("PySetObject.used")),
    field!(set_mask, false, |_m| off("PySetObject.mask")),
    field!(set_table, false, |_m| off("PySetObject.table")),
    field!(set_entry_size, false, |_m| size("setentry")),
    field!(type_itemsize, false, |_m| off("PyTypeObject.tp_itemsize")),
    field!(type_dict, false, |_m| off("PyTypeObject.tp_dict")),
    field!(type_members, false, |_m| off("PyTypeObject.tp_members")),
    field!(type_base, false, |_m| off("PyTypeObject.tp_base")),
    field!(type_bases, false, |_m| off("PyTypeObject.tp_bases")),
    field!(type_traverse, false, |_m| off("PyTypeObject.tp_traverse")),
    field!(type_weaklistoffset, false, |_m| off(
        "PyTypeObject.tp_weaklistoffset"
    )),
    field!(type_mro, false, |_m| off("PyTypeObject.tp_mro")),
    field!(heaptype_qualname, false, |_m| off(
        "PyHeapTypeObject.ht_qualname"
    )),
    field!(member_def_size, false, |_m| size("PyMemberDef")),
    field!(member_def_type, false, |_m| off("PyMemberDef.type_")),
    field!(member_def_offset, false, |_m| off("PyMemberDef.offset")),
    field!(func_code, false, |_m| off("PyFunctionObject.func_code")),
    field!(func_globals, false, |_m| off(
        "PyFunctionObject.func_globals"
    )),
    field!(func_defaults, false, |_m| off(
        "PyFunctionObject.func_defaults"
    )),
    field!(func_kwdefaults, false, |_m| off(
        "PyFunctionObject.func_kwdefaults"
    )),
    field!(func_closure, false, |_m| off(
        "PyFunctionObject.func_closure"
    )),
    field!(func_dict, false, |_m| off("PyFunctionObject.func_dict")),
    field!(func_qualname, false, |_m| off(
        "PyFunctionObject.func_qualname"
    )),
    field!(func_module, false, |_m| off("PyFunctionObject.func_module")),
    field!(cell_ref, false, |_m| off("PyCellObject.ob_ref")),
    field!(method_func, false, |_m| off("PyMethodObject.im_func")),
    field!(method_self, false, |_m| off("PyMethodObject.im_self")),
    field!(deque_leftblock, false, |_m| off(
        "pmt_fact_dequeobject.leftblock"
    )),
    field!(deque_rightblock, false, |_m| off(
        "pmt_fact_dequeobject.rightblock"
    )),
    field!(deque_leftindex, false, |_m| off(
        "pmt_fact_dequeobject.leftindex"
    )),
    field!(deque_rightindex, false, |_m| off(
        "pmt_fact_dequeobject.rightindex"
    )),
    field!(deque_block_data, false, |_m| off(
        "pmt_fact_deque_block.data"
    )),
    field!(deque_block_right, false, |_m| off(
        "pmt_fact_deque_block.rightlink"
    )),
    field!(code_freevars, true, |m| when(m <= 10, || off(
        "PyCodeObject.co_freevars"
    ))),
    // what a code object references and what `sys.getsizeof` counts of it (pmt heap)
    field!(code_consts, false, |_m| off("PyCodeObject.co_consts")),
    field!(code_names, false, |_m| off("PyCodeObject.co_names")),
    field!(code_cellvars, true, |m| when(m <= 10, || off(
        "PyCodeObject.co_cellvars"
    ))),
    field!(code_cell2arg, true, |m| when(m <= 10, || off(
        "PyCodeObject.co_cell2arg"
    ))),
    field!(code_exceptiontable, true, |m| when(m >= 11, || off(
        "PyCodeObject.co_exceptiontable"
    ))),
    field!(code_cached_code, true, |m| when(m == 11, || off(
        "PyCodeObject._co_code"
    ))),
    field!(code_cached, true, |m| when(m >= 12, || off(
        "PyCodeObject._co_cached"
    ))),
    field!(code_cached_size, true, |m| when(m >= 12, || size(
        "_PyCoCached"
    ))),
    field!(code_extra, false, |_m| off("PyCodeObject.co_extra")),
    field!(code_opcache, true, |m| when((8..=10).contains(&m), || off(
        "PyCodeObject.co_opcache"
    ))),
    field!(code_opcache_size, true, |m| when(
        (8..=10).contains(&m),
        || off("PyCodeObject.co_opcache_size")
    )),
    field!(opcache_entry_size, true, |m| when(
        (8..=10).contains(&m),
        || size("_PyOpcache")
    )),
    // what `sys.getsizeof` counts of a type object (pmt heap)
    field!(type_size, false, |_m| size("PyTypeObject")),
    field!(heaptype_size, false, |_m| size("PyHeapTypeObject")),
    // the fixed references of small built-in objects (pmt heap)
    field!(property_get, false, |_m| off(
        "pmt_fact_propertyobject.prop_get"
    )),
    field!(property_set, false, |_m| off(
        "pmt_fact_propertyobject.prop_set"
    )),
    field!(property_del, false, |_m| off(
        "pmt_fact_propertyobject.prop_del"
    )),
    field!(property_doc, false, |_m| off(
        "pmt_fact_propertyobject.prop_doc"
    )),
    field!(property_name, true, |m| when(m >= 10, || off(
        "pmt_fact_propertyobject.prop_name"
    ))),
    field!(classmethod_callable, false, |_m| off(
        "pmt_fact_classmethod.cm_callable"
    )),
    field!(classmethod_dict, false, |_m| off(
        "pmt_fact_classmethod.cm_dict"
    )),
    field!(staticmethod_callable, false, |_m| off(
        "pmt_fact_staticmethod.sm_callable"
    )),
    field!(staticmethod_dict, false, |_m| off(
        "pmt_fact_staticmethod.sm_dict"
    )),
    field!(cfunction_self, false, |_m| off("PyCFunctionObject.m_self")),
    field!(cfunction_module, false, |_m| off(
        "PyCFunctionObject.m_module"
    )),
    field!(cmethod_class, true, |m| when(m >= 9, || off(
        "PyCMethodObject.mm_class"
    ))),
    field!(method_wrapper_descr, false, |_m| off(
        "pmt_fact_wrapperobject.descr"
    )),
    // bindgen names the C member `self` as `self_` (a Rust keyword).
    field!(method_wrapper_self, false, |_m| off(
        "pmt_fact_wrapperobject.self_"
    )),
    field!(descr_type, false, |_m| off("PyDescrObject.d_type")),
    field!(descr_name, false, |_m| off("PyDescrObject.d_name")),
    field!(descr_qualname, false, |_m| off("PyDescrObject.d_qualname")),
    field!(weakref_callback, false, |_m| off(
        "_PyWeakReference.wr_callback"
    )),
    // generators, coroutines, async generators (pmt heap)
    field!(gen_frame, true, |m| when(m <= 10, || off(
        "PyGenObject.gi_frame"
    ))),
    field!(gen_code, true, |m| when(m <= 11, || off(
        "PyGenObject.gi_code"
    ))),
    field!(gen_name, false, |m| off(&format!(
        "{}.gi_name",
        gen_struct(m)
    ))),
    field!(gen_qualname, false, |m| off(&format!(
        "{}.gi_qualname",
        gen_struct(m)
    ))),
    field!(gen_origin_or_finalizer, true, |m| when(m >= 11, || off(
        &format!("{}.gi_origin_or_finalizer", gen_struct(m))
    ))),
    field!(gen_frame_state, true, |m| when(m >= 11, || off(&format!(
        "{}.gi_frame_state",
        gen_struct(m)
    )))),
    field!(gen_iframe, true, |m| when(m >= 11, || off(&format!(
        "{}.gi_iframe",
        gen_struct(m)
    )))),
    field!(coro_origin, true, |m| when((7..=10).contains(&m), || off(
        "PyCoroObject.cr_origin"
    ))),
    field!(asyncgen_finalizer, true, |m| when(m <= 10, || off(
        "PyAsyncGenObject.ag_finalizer"
    ))),
    field!(code_stacksize, false, |_m| off("PyCodeObject.co_stacksize")),
    // what a frame holds: ≤3.10 the frame object itself, 3.11+ its interpreter frame
    field!(frame_globals, false, |m| if m <= 10 {
        off("PyFrameObject.f_globals")
    } else {
        off("_PyInterpreterFrame.f_globals")
    }),
    field!(frame_builtins, false, |m| if m <= 10 {
        off("PyFrameObject.f_builtins")
    } else {
        off("_PyInterpreterFrame.f_builtins")
    }),
    field!(frame_locals, false, |m| if m <= 10 {
        off("PyFrameObject.f_locals")
    } else {
        off("_PyInterpreterFrame.f_locals")
    }),
    field!(frame_func, true, |m| match m {
        ..=10 => None,
        11 => off("_PyInterpreterFrame.f_func"),
        _ => off("_PyInterpreterFrame.f_funcobj"),
    }),
    field!(frame_object, true, |m| when(m >= 11, || off(
        "_PyInterpreterFrame.frame_obj"
    ))),
    // frame objects (`struct _frame`; ≤3.10 the frame itself, 3.11+ a view of an
    // interpreter frame that it owns once the call returned)
    field!(frameobject_back, false, |_m| off("_frame.f_back")),
    field!(frameobject_trace, false, |_m| off("_frame.f_trace")),
    field!(frameobject_frame, true, |m| when(m >= 11, || off(
        "_frame.f_frame"
    ))),
    field!(frameobject_data, true, |m| when(m >= 11, || off(
        "_frame._f_frame_data"
    ))),
    field!(frameobject_extra_locals, true, |m| when(m >= 13, || off(
        "_frame.f_extra_locals"
    ))),
    field!(frameobject_locals_cache, true, |m| when(m >= 13, || off(
        "_frame.f_locals_cache"
    ))),
    field!(frameobject_overwritten_locals, true, |m| when(m >= 14, || off(
        "_frame.f_overwritten_fast_locals"
    ))),
    // tracebacks and exceptions
    field!(traceback_next, false, |_m| off("_traceback.tb_next")),
    field!(traceback_frame, false, |_m| off("_traceback.tb_frame")),
    field!(exception_dict, false, |_m| off("PyBaseExceptionObject.dict")),
    field!(exception_args, false, |_m| off("PyBaseExceptionObject.args")),
    field!(exception_notes, true, |m| when(m >= 11, || off(
        "PyBaseExceptionObject.notes"
    ))),
    field!(exception_traceback, false, |_m| off(
        "PyBaseExceptionObject.traceback"
    )),
    field!(exception_context, false, |_m| off(
        "PyBaseExceptionObject.context"
    )),
    field!(exception_cause, false, |_m| off("PyBaseExceptionObject.cause")),
    // `types.UnionType` (3.10–3.13) / `typing.Union` (3.14+)
    field!(union_args, true, |m| when(m >= 10, || off(
        "pmt_fact_unionobject.args"
    ))),
    field!(union_hashable_args, true, |m| when(m >= 14, || off(
        "pmt_fact_unionobject.hashable_args"
    ))),
    field!(union_unhashable_args, true, |m| when(m >= 14, || off(
        "pmt_fact_unionobject.unhashable_args"
    ))),
    field!(union_parameters, true, |m| when(m >= 10, || off(
        "pmt_fact_unionobject.parameters"
    ))),
    // `zoneinfo.ZoneInfo` (3.9+)
    field!(zoneinfo_key, true, |m| when(m >= 9, || off(
        "pmt_fact_zoneinfo.key"
    ))),
    field!(zoneinfo_file_repr, true, |m| when(m >= 9, || off(
        "pmt_fact_zoneinfo.file_repr"
    ))),
    field!(zoneinfo_num_ttinfos, true, |m| when(m >= 9, || off(
        "pmt_fact_zoneinfo.num_ttinfos"
    ))),
    field!(zoneinfo_ttinfos, true, |m| when(m >= 9, || off(
        "pmt_fact_zoneinfo._ttinfos"
    ))),
    field!(zoneinfo_rule_std, true, |m| when(m >= 9, || off(
        "pmt_fact_zoneinfo.tzrule_after.std"
    ))),
    field!(zoneinfo_rule_dst, true, |m| when(m >= 9, || off(
        "pmt_fact_zoneinfo.tzrule_after.dst"
    ))),
    field!(ttinfo_size, true, |m| when(m >= 9, || size("pmt_fact_ttinfo"))),
    field!(ttinfo_utcoff, true, |m| when(m >= 9, || off(
        "pmt_fact_ttinfo.utcoff"
    ))),
    field!(ttinfo_dstoff, true, |m| when(m >= 9, || off(
        "pmt_fact_ttinfo.dstoff"
    ))),
    field!(ttinfo_tzname, true, |m| when(m >= 9, || off(
        "pmt_fact_ttinfo.tzname"
    ))),
    // built-in containers and datetime objects (pmt heap)
    field!(odict_fast_nodes_size, false, |_m| off(
        "pmt_fact_odictobject.od_fast_nodes_size"
    )),
    field!(odict_first, false, |_m| off(
        "pmt_fact_odictobject.od_first"
    )),
    field!(odict_inst_dict, false, |_m| off(
        "pmt_fact_odictobject.od_inst_dict"
    )),
    field!(odict_node_size, false, |_m| size("pmt_fact_ODictNode")),
    field!(namespace_dict, false, |_m| off(
        "pmt_fact_namespaceobject.ns_dict"
    )),
    field!(mappingproxy_mapping, false, |_m| off(
        "pmt_fact_mappingproxyobject.mapping"
    )),
    field!(generic_alias_origin, true, |m| when(m >= 9, || off(
        "pmt_fact_gaobject.origin"
    ))),
    field!(generic_alias_args, true, |m| when(m >= 9, || off(
        "pmt_fact_gaobject.args"
    ))),
    field!(generic_alias_parameters, true, |m| when(m >= 9, || off(
        "pmt_fact_gaobject.parameters"
    ))),
    field!(datetime_hastzinfo, false, |_m| off(
        "PyDateTime_DateTime.hastzinfo"
    )),
    field!(datetime_tzinfo, false, |_m| off(
        "PyDateTime_DateTime.tzinfo"
    )),
    field!(time_hastzinfo, false, |_m| off("PyDateTime_Time.hastzinfo")),
    field!(time_tzinfo, false, |_m| off("PyDateTime_Time.tzinfo")),
    field!(timezone_offset, false, |_m| off("pmt_fact_timezone.offset")),
    field!(timezone_name, false, |_m| off("pmt_fact_timezone.name")),
];
