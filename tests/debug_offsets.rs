//! CPython 3.13+ publishes `_Py_DebugOffsets` at the start of `_PyRuntime`. The reader reads
//! it through one table of the struct's shape per minor version (`debug_offsets::SCHEMAS`):
//! - the shape must be the C struct's: every member's offset and the struct's size, as gcc
//!   lays out the interpreter's own header, equal the table's word positions;
//! - live, the interpreter's values must agree member for member with the layout bindgen
//!   generated from the same version's headers, and fill a layout on their own.
//!
//! Every 3.13+ here: pyenv's 3.13 and Debian sid's 3.13, 3.14, 3.15.

mod common;

use common::Interpreter;
use pymemtrace::python::debug_offsets::Schema;
use pymemtrace::python::layouts::layout_for;
use pymemtrace::python::{PythonSpy, SpyOptions};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn minor_of(label: &str) -> u8 {
    label
        .rsplit('.')
        .next()
        .and_then(|m| m.parse().ok())
        .expect("label ends in a minor version")
}

/// The include directory of `interp`'s headers, as the interpreter's own root sees it.
fn include_dir(interp: &Interpreter, minor: u8) -> PathBuf {
    match &interp.root {
        Some(_) => PathBuf::from(format!("/usr/include/python3.{minor}")),
        None => interp
            .path
            .parent()
            .and_then(|bin| bin.parent())
            .expect("bin/pythonX.Y")
            .join(format!("include/python3.{minor}")),
    }
}

/// Compiles and runs, with gcc beside the interpreter (the chroot's for sid's), a program
/// printing `sizeof(_Py_DebugOffsets)` then the offset of every member of the schema.
fn c_layout(interp: &Interpreter, minor: u8, schema: &Schema) -> Vec<u64> {
    let include = include_dir(interp, minor);
    let header = if minor == 13 {
        "internal/pycore_runtime.h"
    } else {
        "internal/pycore_debug_offsets.h"
    };
    let mut program = format!(
        "#define Py_BUILD_CORE 1\n#include <Python.h>\n#include <stdio.h>\n#include <stddef.h>\n\
         #include \"{header}\"\nint main(void) {{\n\
         printf(\"%zu\\n\", sizeof(_Py_DebugOffsets));\n"
    );
    for (section, member, _) in schema.members() {
        program.push_str(&format!(
            "printf(\"%zu\\n\", offsetof(_Py_DebugOffsets, {section}.{member}));\n"
        ));
    }
    program.push_str("return 0;\n}\n");
    let dir = tempfile::tempdir_in("/tmp").expect("temp dir");
    let source = dir.path().join("shape.c");
    let binary = dir.path().join("shape");
    std::fs::write(&source, program).expect("writing the C program");
    let mut gcc = match &interp.root {
        Some(root) => {
            let mut c = Command::new("chroot");
            c.arg(root).arg("gcc");
            c
        }
        None => Command::new("gcc"),
    };
    let compiled = gcc
        .arg(format!("-I{}", include.display()))
        .arg(&source)
        .arg("-o")
        .arg(&binary)
        .output()
        .expect("running gcc");
    assert!(
        compiled.status.success(),
        "{}: gcc failed:\n{}",
        interp.label,
        String::from_utf8_lossy(&compiled.stderr)
    );
    let run = Command::new(&binary).output().expect("running the program");
    String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(|l| l.parse().expect("a number per line"))
        .collect()
}

fn check(label: &str) {
    let Some(interp) = common::interpreter_or_skip(label) else {
        return;
    };
    let minor = minor_of(label);
    let mut target = common::start_code(
        &interp,
        "import time; print('READY', flush=True); time.sleep(30)",
    );
    target.wait_for_line("READY", Duration::from_secs(30));
    let mut spy = PythonSpy::attach(target.pid(), &SpyOptions::default()).expect("attach");
    let debug = spy
        .debug_offsets()
        .expect("3.13+ publishes _Py_DebugOffsets")
        .clone();
    assert_eq!(
        debug.version >> 16,
        0x0300 | u64::from(minor),
        "{label}: version word"
    );
    assert!(!debug.free_threaded);

    // The table's shape is the C struct's.
    let schema = Schema::for_version(spy.version(), debug.version).expect("a known shape");
    let c = c_layout(&interp, minor, schema);
    assert_eq!(
        c[0],
        8 + 8 * schema.words() as u64,
        "{label}: sizeof(_Py_DebugOffsets)"
    );
    for ((section, member, index), offset) in schema.members().zip(&c[1..]) {
        assert_eq!(*offset, 8 + 8 * index as u64, "{label}: {section}.{member}");
    }

    // Live values agree with the generated layout, and fill one on their own.
    assert_eq!(
        spy.layout_differences(),
        &[] as &[&str],
        "{label}: the generated layout disagrees with the interpreter's own table"
    );
    let generated = *layout_for(3, minor).expect("generated layout");
    let mut scrambled = generated;
    scrambled.interp_threads_head += 8;
    scrambled.tstate_frame += 8;
    scrambled.frame_code += 8;
    scrambled.code_name += 8;
    let (rebuilt, differences) = debug.apply(&scrambled);
    assert_eq!(rebuilt, generated, "{label}");
    assert_eq!(differences.len(), 4, "{label}: {differences:?}");
    let stacks = spy.read_stacks().expect("read");
    assert_eq!(stacks.len(), 1);
    assert_eq!(stacks[0].frames[0].code.function, "<module>");
}

#[test]
fn debug_offsets_cpython_3_13() {
    check("3.13");
}

#[test]
fn debug_offsets_debian_sid_3_13() {
    check("sid3.13");
}

#[test]
fn debug_offsets_debian_sid_3_14() {
    check("sid3.14");
}

#[test]
fn debug_offsets_debian_sid_3_15() {
    check("sid3.15");
}
