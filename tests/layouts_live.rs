//! The generated layouts against the real interpreters, independently of bindgen:
//! - every table is checked inside its own running CPython (`tests/probes/layout_probe.py`
//!   reads the process's own memory with ctypes at each offset and compares with what the
//!   Python API reports), including Debian's system `python3.11` against the v3_11 table;
//! - the 3.13 table is compared with the `_Py_DebugOffsets` initializer of that
//!   interpreter's `internal/pycore_runtime_init.h`, compiled by gcc.
//!
//! A missing interpreter is skipped with a message, unless `PMT_REQUIRE_PYTHONS` names it.

use std::path::{Path, PathBuf};
use std::process::Command;

use pymemtrace::python::layout::Layout;
use pymemtrace::python::layouts::{SUPPORTED, layout_for};
use serde_json::{Map, Value};

/// `$(pyenv root)`, without asking pyenv.
fn pyenv_root() -> PathBuf {
    std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".pyenv"))
}

/// The newest pyenv install directory of CPython 3.`minor`.
fn pyenv_prefix(minor: u8) -> Option<PathBuf> {
    let prefix = format!("3.{minor}.");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(pyenv_root().join("versions"))
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let patch = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((patch, e.path()))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

/// Whether `PMT_REQUIRE_PYTHONS` lists `name` (`3.11`, `system3.11`).
fn required(name: &str) -> bool {
    std::env::var("PMT_REQUIRE_PYTHONS")
        .map(|list| list.split_whitespace().any(|n| n == name))
        .unwrap_or(false)
}

fn missing(name: &str, what: &str) {
    assert!(
        !required(name),
        "{what} is missing but PMT_REQUIRE_PYTHONS requires {name}"
    );
    eprintln!("skipping {name}: {what} not found");
}

trait JsonValue {
    fn json(&self) -> Value;
}

impl JsonValue for u64 {
    fn json(&self) -> Value {
        Value::from(*self)
    }
}

impl JsonValue for Option<u64> {
    fn json(&self) -> Value {
        self.map_or(Value::Null, Value::from)
    }
}

macro_rules! layout_json {
    ($layout:expr; $($field:ident),* $(,)?) => {{
        let layout: &Layout = $layout;
        let mut map = Map::new();
        map.insert(
            "version".into(),
            Value::from(vec![layout.version.0, layout.version.1]),
        );
        $(map.insert(stringify!($field).into(), layout.$field.json());)*
        Value::Object(map)
    }};
}

fn to_json(layout: &Layout) -> Value {
    layout_json!(layout;
        runtime_interpreters_head, runtime_tstate_current, runtime_gil,
        interp_next, interp_threads_head, interp_modules, interp_gil_ptr,
        gil_last_holder, gil_locked,
        tstate_next, tstate_interp, tstate_frame, cframe_current_frame, tstate_thread_id,
        tstate_native_thread_id,
        frame_back, frame_code, frame_lasti, frame_lineno, frame_owner, frame_size,
        tstate_datastack_chunk, stack_chunk_size, stack_chunk_previous,
        code_filename, code_name, code_qualname, code_firstlineno, code_linetable, code_code,
        code_code_adaptive, code_consts, code_names, code_cellvars, code_exceptiontable,
        code_cached_code, code_cached, type_size, heaptype_size,
        object_type, var_size, type_name, type_flags, type_dictoffset, type_basicsize,
        heaptype_cached_keys,
        bytes_sval, unicode_state, unicode_length, unicode_ascii_size, unicode_compact_size,
        long_digit, long_lv_tag,
        dict_used, dict_keys, dict_values, dictkeys_size, dictkeys_log2_size,
        dictkeys_log2_index_bytes, dictkeys_kind, dictkeys_nentries, dictkeys_indices,
        dict_entry_size, dict_unicode_entry_size, module_dict,
        property_get, property_set, property_del, property_doc, property_name,
        classmethod_callable, classmethod_dict, staticmethod_callable, staticmethod_dict,
        cfunction_self, cfunction_module, cmethod_class, method_wrapper_descr,
        method_wrapper_self, descr_type, descr_name, descr_qualname, weakref_callback,
        gen_frame, gen_code, gen_name, gen_qualname, gen_frame_state, gen_iframe, coro_origin,
        code_stacksize, frame_globals, frame_builtins, frame_locals, frame_localsplus,
        code_nlocals, odict_fast_nodes_size, odict_first, odict_inst_dict, odict_node_size,
        namespace_dict, mappingproxy_mapping, generic_alias_origin, generic_alias_args,
        generic_alias_parameters, datetime_hastzinfo, datetime_tzinfo, time_hastzinfo,
        time_tzinfo, timezone_offset, timezone_name, frame_func, frame_object,
        frameobject_back, frameobject_trace, frameobject_frame, frameobject_data,
        traceback_next, traceback_frame, exception_dict, exception_args, exception_notes,
        exception_traceback, exception_context, exception_cause, union_args,
        union_hashable_args, union_unhashable_args, union_parameters, zoneinfo_key,
        zoneinfo_file_repr, zoneinfo_num_ttinfos, zoneinfo_ttinfos, zoneinfo_rule_std,
        zoneinfo_rule_dst, ttinfo_utcoff, ttinfo_dstoff, ttinfo_tzname, unicode_utf8_length,
        unicode_utf8, unicode_wstr, unicode_wstr_length, unicode_data, slice_start, slice_stop,
        slice_step, type_bases,
    )
}

/// Runs the probe in `python` with `layout`; panics with its report if a check failed.
fn probe(python: &Path, layout: &Layout) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probes/layout_probe.py");
    let output = Command::new(python)
        .arg(&script)
        .arg(to_json(layout).to_string())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} disagrees with the {:?} layout:\n{stdout}{stderr}",
        python.display(),
        layout.version
    );
    eprint!("{}: {stdout}", python.display());
}

#[test]
fn every_table_matches_its_running_interpreter() {
    for &(major, minor) in SUPPORTED {
        let layout = layout_for(major, minor).expect("supported version has a table");
        let name = format!("{major}.{minor}");
        let python = pyenv_prefix(minor).map(|p| p.join(format!("bin/python{name}")));
        match python.filter(|p| p.exists()) {
            Some(python) => probe(&python, layout),
            None => missing(&name, &format!("pyenv python{name}")),
        }
    }
}

#[test]
fn debian_system_python_3_11_matches_the_3_11_table() {
    let python = Path::new("/usr/bin/python3.11");
    if !python.exists() {
        return missing("system3.11", "/usr/bin/python3.11");
    }
    probe(python, layout_for(3, 11).expect("3.11 table"));
}

/// `_Py_DebugOffsets` member → the `Layout` number it must equal (relative to the GIL struct
/// for the two GIL members, which the debug offsets give from the interpreter state).
fn debug_offset_expectations(l: &Layout) -> Vec<(&'static str, u64)> {
    let gil = |member: Option<u64>| member.expect("3.13 has GIL members");
    vec![
        (
            "runtime_state.interpreters_head",
            l.runtime_interpreters_head.expect("3.13 has _PyRuntime"),
        ),
        ("interpreter_state.next", l.interp_next),
        ("interpreter_state.threads_head", l.interp_threads_head),
        ("interpreter_state.imports_modules", l.interp_modules),
        (
            "interpreter_state.ceval_gil",
            l.interp_gil_ptr.expect("3.13 has ceval.gil"),
        ),
        (
            "interpreter_state.gil_runtime_state_locked - d.interpreter_state.gil_runtime_state",
            gil(l.gil_locked),
        ),
        (
            "interpreter_state.gil_runtime_state_holder - d.interpreter_state.gil_runtime_state",
            gil(l.gil_last_holder),
        ),
        ("thread_state.next", l.tstate_next),
        ("thread_state.interp", l.tstate_interp),
        ("thread_state.current_frame", l.tstate_frame),
        ("thread_state.thread_id", l.tstate_thread_id),
        (
            "thread_state.native_thread_id",
            l.tstate_native_thread_id
                .expect("3.13 has native_thread_id"),
        ),
        (
            "thread_state.datastack_chunk",
            l.tstate_datastack_chunk.expect("3.13 has a data stack"),
        ),
        (
            "interpreter_frame.size",
            l.frame_size.expect("3.13 has _PyInterpreterFrame"),
        ),
        ("interpreter_frame.previous", l.frame_back),
        ("interpreter_frame.executable", l.frame_code),
        ("interpreter_frame.instr_ptr", l.frame_lasti),
        (
            "interpreter_frame.owner",
            l.frame_owner.expect("3.13 has owner"),
        ),
        ("code_object.filename", l.code_filename),
        ("code_object.name", l.code_name),
        (
            "code_object.qualname",
            l.code_qualname.expect("3.13 has co_qualname"),
        ),
        ("code_object.linetable", l.code_linetable),
        ("code_object.firstlineno", l.code_firstlineno),
        (
            "code_object.co_code_adaptive",
            l.code_code_adaptive.expect("3.13 has co_code_adaptive"),
        ),
        ("pyobject.ob_type", l.object_type),
        ("type_object.tp_name", l.type_name),
        ("type_object.tp_flags", l.type_flags),
        ("dict_object.ma_keys", l.dict_keys),
        ("dict_object.ma_values", l.dict_values),
        (
            "long_object.lv_tag",
            l.long_lv_tag.expect("3.13 has lv_tag"),
        ),
        ("long_object.ob_digit", l.long_digit),
        ("bytes_object.ob_size", l.var_size),
        ("bytes_object.ob_sval", l.bytes_sval),
        ("unicode_object.state", l.unicode_state),
        ("unicode_object.length", l.unicode_length),
        ("unicode_object.asciiobject_size", l.unicode_ascii_size),
    ]
}

/// The body of `.debug_offsets = { ... }` in `pycore_runtime_init.h`, as plain C.
fn debug_offsets_initializer(header: &str) -> Option<String> {
    let start = header.find(".debug_offsets = {")? + ".debug_offsets = ".len();
    let mut depth = 0;
    for (i, c) in header[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(header[start..=start + i].replace("\\\n", "\n"));
                }
            }
            _ => {}
        }
    }
    None
}

#[test]
fn table_3_13_equals_the_interpreters_own_debug_offsets() {
    let Some(include) = pyenv_prefix(13).map(|p| p.join("include/python3.13")) else {
        return missing("3.13", "pyenv CPython 3.13 headers");
    };
    let header = std::fs::read_to_string(include.join("internal/pycore_runtime_init.h"))
        .expect("3.13 installs internal/pycore_runtime_init.h");
    let initializer =
        debug_offsets_initializer(&header).expect("pycore_runtime_init.h has .debug_offsets");
    let layout = layout_for(3, 13).expect("3.13 table");
    let expected = debug_offset_expectations(layout);

    let mut program = String::from(
        "#define Py_BUILD_CORE 1\n#include <Python.h>\n#include <stdio.h>\n\
         #include \"internal/pycore_runtime.h\"\n#include \"internal/pycore_frame.h\"\n\
         #define debug_cookie _Py_Debug_Cookie\n",
    );
    program.push_str(&format!(
        "static const _Py_DebugOffsets d = {initializer};\nint main(void) {{\n"
    ));
    for (member, _) in &expected {
        program.push_str(&format!(
            "    printf(\"%llu\\n\", (unsigned long long)(d.{member}));\n"
        ));
    }
    program.push_str("    return 0;\n}\n");

    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("debug_offsets.c");
    let binary = dir.path().join("debug_offsets");
    std::fs::write(&source, program).expect("write C program");
    let compiled = match Command::new("gcc")
        .arg(format!("-I{}", include.display()))
        .arg(&source)
        .arg("-o")
        .arg(&binary)
        .output()
    {
        Ok(out) => out,
        Err(e) => return missing("3.13", &format!("gcc ({e})")),
    };
    assert!(
        compiled.status.success(),
        "gcc failed:\n{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let run = Command::new(&binary).output().expect("run the C program");
    let values: Vec<u64> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(|l| l.parse().expect("a number per line"))
        .collect();
    assert_eq!(values.len(), expected.len());
    let mismatches: Vec<String> = expected
        .iter()
        .zip(&values)
        .filter(|((_, table), debug)| table != *debug)
        .map(|((member, table), debug)| {
            format!("{member}: table {table}, _Py_DebugOffsets {debug}")
        })
        .collect();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
