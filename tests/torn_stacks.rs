//! A running target moves under the reader. With a generator resumed and suspended millions
//! of times a second, every stack read must still be whole (its outermost frame the module's,
//! never a generator's cut from its caller) and the thread must be missing from only a few
//! reads. Every CPython here.

mod common;

use pymemtrace::python::{PythonSpy, SpyOptions};
use std::time::Duration;

const READS: usize = 2000;

fn check(label: &str) {
    let Some(interp) = common::interpreter_or_skip(label) else {
        return;
    };
    let mut target = common::start(&interp, &common::script("hot_generator.py"), &[]);
    target.wait_for_line("READY", Duration::from_secs(30));
    let mut spy = PythonSpy::attach(target.pid(), &SpyOptions::default()).expect("attach");
    let mut seen = 0usize;
    let mut in_generator = 0usize;
    for _ in 0..READS {
        std::thread::sleep(Duration::from_micros(100));
        let stacks = spy.read_stacks().expect("read");
        let Some(main) = stacks.first() else {
            continue;
        };
        seen += 1;
        let outermost = main.frames.last().expect("a running thread has frames");
        assert_eq!(
            outermost.code.function,
            "<module>",
            "{label}: a cut stack: {:?}",
            main.frames
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        );
        if main.frames[0].code.function.contains("genexpr") {
            in_generator += 1;
        }
    }
    assert!(
        seen * 100 >= READS * 97,
        "{label}: the thread was in only {seen} of {READS} reads"
    );
    assert!(
        in_generator > 0,
        "{label}: the generator was never seen running"
    );
}

macro_rules! per_version {
    ($($name:ident => $label:expr),* $(,)?) => {
        $(#[test] fn $name() { check($label); })*
    };
}

per_version! {
    whole_stacks_cpython_3_6 => "3.6",
    whole_stacks_cpython_3_7 => "3.7",
    whole_stacks_cpython_3_8 => "3.8",
    whole_stacks_cpython_3_9 => "3.9",
    whole_stacks_cpython_3_10 => "3.10",
    whole_stacks_cpython_3_11 => "3.11",
    whole_stacks_cpython_3_12 => "3.12",
    whole_stacks_cpython_3_13 => "3.13",
    whole_stacks_debian_system_3_11 => "system3.11",
    whole_stacks_debian_sid_3_13 => "sid3.13",
    whole_stacks_debian_sid_3_14 => "sid3.14",
    whole_stacks_debian_sid_3_15 => "sid3.15",
}
