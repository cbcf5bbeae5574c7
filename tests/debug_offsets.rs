//! CPython 3.13 publishes `_Py_DebugOffsets` at the start of `_PyRuntime`: the reader uses
//! them, and they must agree with the bindgen-generated 3.13 layout member for member.

mod common;

use pymemtrace::python::layouts::layout_for;
use pymemtrace::python::{PythonSpy, SpyOptions};
use std::time::Duration;

#[test]
fn debug_offsets_agree_with_generated_layout() {
    let Some(interp) = common::interpreter_or_skip("3.13") else {
        return;
    };
    let mut target = common::start_code(
        &interp,
        "import time; print('READY', flush=True); time.sleep(30)",
    );
    target.wait_for_line("READY", Duration::from_secs(30));
    let mut spy = PythonSpy::attach(target.pid(), &SpyOptions::default()).expect("attach");
    let debug = spy
        .debug_offsets()
        .expect("3.13 publishes _Py_DebugOffsets")
        .clone();
    assert_eq!(debug.version >> 16, 0x030d, "version field is 3.13");
    assert!(!debug.free_threaded);
    assert_eq!(
        spy.layout_differences(),
        &[] as &[&str],
        "generated layout disagrees"
    );
    // Every member the interpreter publishes fills the layout on its own: starting from a
    // layout with those members scrambled gives back the generated one.
    let generated = *layout_for(3, 13).expect("3.13 layout");
    let mut scrambled = generated;
    scrambled.interp_threads_head += 8;
    scrambled.tstate_frame += 8;
    scrambled.frame_code += 8;
    scrambled.code_name += 8;
    let (rebuilt, differences) = debug.apply(&scrambled);
    assert_eq!(rebuilt, generated);
    assert_eq!(differences.len(), 4, "{differences:?}");
    let stacks = spy.read_stacks().expect("read");
    assert_eq!(stacks.len(), 1);
    assert_eq!(stacks[0].frames[0].code.function, "<module>");
}
