//! The decoders never panic, loop or allocate without bound on garbage: random bytes,
//! "pointer soup" (random words, many of them pointers back into the same memory, so chains
//! cycle and objects overlap), and truncated regions are fed to every decoder with every
//! version's layout. A process that exits while being read gives an error, not a crash.

mod common;

use proptest::prelude::*;
use pymemtrace::attach::SliceMemory;
use pymemtrace::python::code::{CodeCache, line_for_offset};
use pymemtrace::python::frames::walk_frames;
use pymemtrace::python::layouts::{SUPPORTED, layout_for};
use pymemtrace::python::locals::frame_locals;
use pymemtrace::python::objects::{dict_items, read_bytes, read_str, read_u64_int};
use pymemtrace::python::threads::{thread_names, thread_states};
use pymemtrace::python::{PythonSpy, SpyOptions};
use std::time::{Duration, Instant};

const BASE: u64 = 0x7f00_0000_0000;

/// `words` as memory at [`BASE`]: each word is either taken as is, or (when its low bit is
/// set) turned into a pointer into the region at an offset the word chooses.
fn pointer_soup(words: &[u64], size: usize) -> SliceMemory {
    let mut bytes = Vec::with_capacity(size);
    for word in words.iter().cycle().take(size / 8) {
        let value = if word & 1 == 1 {
            BASE + (word >> 1) % size as u64
        } else {
            *word
        };
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    let mut mem = SliceMemory::new();
    mem.map(BASE, bytes);
    mem
}

/// Runs every decoder from `start` in `mem` with every layout; all must return.
fn decode_everything(mem: &SliceMemory, start: u64) {
    for (major, minor) in SUPPORTED {
        let layout = layout_for(*major, *minor).expect("supported layout");
        let mut codes = CodeCache::new();
        let _ = walk_frames(mem, layout, &mut codes, start, None, true);
        let _ = frame_locals(mem, layout, start, start);
        let _ = read_str(mem, layout, start);
        let _ = read_bytes(mem, layout, start);
        let _ = read_u64_int(mem, layout, start);
        let _ = dict_items(mem, layout, start);
        let _ = thread_states(mem, layout, start);
        let _ = thread_names(mem, layout, start);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn pointer_soup_never_panics_or_hangs(
        words in proptest::collection::vec(any::<u64>(), 1..512),
        size in 64usize..16384,
        start in 0u64..16384,
    ) {
        let mem = pointer_soup(&words, size);
        let began = Instant::now();
        decode_everything(&mem, BASE + start % size as u64);
        prop_assert!(began.elapsed() < Duration::from_secs(5), "decoding garbage took too long");
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096), start in 0u64..4096) {
        let mut mem = SliceMemory::new();
        mem.map(BASE, bytes);
        decode_everything(&mem, BASE + start);
        decode_everything(&mem, start);
        decode_everything(&mem, u64::MAX - start);
    }

    #[test]
    fn line_tables_never_panic(table in proptest::collection::vec(any::<u8>(), 0..512), first in any::<u32>(), offset in any::<u64>()) {
        for (major, minor) in SUPPORTED {
            let _ = line_for_offset((*major, *minor), &table, first, offset);
        }
    }
}

/// A truncated copy of a real interpreter's frame chain: the reader stops with an error.
#[test]
fn truncated_regions_are_errors() {
    for (major, minor) in SUPPORTED {
        let layout = layout_for(*major, *minor).expect("layout");
        for len in [0usize, 1, 7, 8, 15, 16, 63, 64] {
            let mut mem = SliceMemory::new();
            mem.map(BASE, vec![0x41; len]);
            let mut codes = CodeCache::new();
            assert!(walk_frames(&mem, layout, &mut codes, BASE, None, false).is_err());
            assert!(read_str(&mem, layout, BASE).is_err());
        }
    }
}

/// Reading a process that exits while it is being read: every read either succeeds or says
/// the process exited; none panics, and the exit is reported.
#[test]
fn process_exiting_mid_read_is_an_error() {
    let Some(interp) = common::interpreter_or_skip("3.12") else {
        return;
    };
    let script = common::script("exit_soon.py");
    let mut target = common::start(&interp, &script, &[]);
    target.wait_for_line("READY", Duration::from_secs(30));
    let mut spy = PythonSpy::attach(target.pid(), &SpyOptions::default()).expect("attach");
    let began = Instant::now();
    let mut reads = 0u64;
    let error = loop {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "the target never exited"
        );
        match spy.read_stacks() {
            Ok(_) => reads += 1,
            Err(err) => break err,
        }
        if reads.is_multiple_of(64) {
            // Reap the child as soon as it exits, so that its pid disappears.
            let _ = target.child.try_wait();
        }
    };
    assert!(reads > 0, "no successful read before the exit");
    assert!(error.process_exited(), "unexpected error: {error}");
}
