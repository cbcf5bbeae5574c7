//! Walking one thread's chain of frames: `PyFrameObject` (≤3.10) or `_PyInterpreterFrame`
//! (3.11+), innermost first, skipping the shim frames of 3.12+ that belong to the C stack or
//! the interpreter. Bounded: a cyclic or garbage chain ends in an error, never a hang.
//!
//! A running target changes its chain while it is read, so a walk also checks that what it
//! read is whole, where the version makes that checkable, and fails (for the caller to read
//! again) when it is not:
//! - the outermost frame of a thread never runs a generator's code (a generator that yields
//!   unlinks its frame from its caller);
//! - 3.15: the chain ends at the thread's own `base_frame`;
//! - 3.12–3.14: the chain ends at a shim frame (each evaluation loop starts with one);
//! - 3.11: the chain ends at an entry frame (`is_entry`);
//! - 3.11+: a frame that called the one below it directly (no C code between) is suspended
//!   in that call: its instruction pointer is in an instruction that calls (`call_sites.rs`),
//!   and (3.11–3.13) it saved its stack pointer, which a running frame clears. A chain is read
//!   frame by frame while the target runs, so a recursion that returned to a frame and went
//!   deeper again leaves, above the frames read before, a caller that is running (on a line
//!   it cannot call from), newly pushed, or popped (its memory as it returned): torn.
//!
//! An innermost interpreter frame without code is being pushed or popped; the walk starts
//! below it. A frame running the interpreter's own code (3.13+: the shim under a Python
//! `__init__`) is checked as a caller but left out of the stack.
//!
//! Before 3.11 frames are objects: a frame freed under the reader (onto a free list, or kept
//! as its code's zombie frame) has a reference count of 0, so a chain through one is torn.
//! A frame that calls another is referenced twice, by whoever runs it and by its callee's
//! `f_back`; a caller read with one reference was running (or newly made) when read: torn.
//! Nothing in a frame says it is the first, so the reader also compares the outermost frame
//! with the one earlier reads of the thread found (see `spy.rs`).

use super::Frame;
use super::call_sites::may_call;
use super::code::{CodeCache, CodeKind, InstructionPosition};
use super::layout::Layout;
use super::objects::{DecodeError, field_u8, field_u32, field_u64, span_of};
use crate::attach::ReadMemory;

/// The most frames (Python and shim) the walker follows: a deeper chain is returned cut, its
/// innermost frames only ([`Chain::cut`]).
pub const MAX_FRAMES: usize = 4096;

/// `_PyInterpreterFrame.owner` values from which on a frame is a shim, not Python code:
/// `FRAME_OWNED_BY_CSTACK` (3 in 3.12–3.13, 4 in 3.14) and `FRAME_OWNED_BY_INTERPRETER`
/// (3 in 3.14+).
const FIRST_SHIM_OWNER: u8 = 3;

/// Low bits of a `_PyStackRef` (3.14+: `_PyInterpreterFrame.f_executable`, a frame's slots)
/// that tag the reference rather than address the object.
pub(crate) const STACKREF_TAG_BITS: u64 = 3;

/// `PyObject.ob_refcnt`: the first word of every object (non-debug builds).
const REFCNT_OFFSET: u64 = 0;

/// Offset of `int stacktop` in a 3.11–3.13 `_PyInterpreterFrame` (right after the
/// instruction pointer): the frame's saved stack depth, which a running frame sets to -1
/// (`_PyFrame_GetStackPointer`). 3.14 keeps a pointer there that only debug builds clear.
fn stacktop_offset(layout: &Layout) -> Option<u64> {
    matches!(layout.version, (3, 11..=13)).then(|| layout.frame_lasti + 8)
}

/// A thread's frames as one walk found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// The Python frames, innermost first.
    pub frames: Vec<Frame>,
    /// The address of the outermost Python frame (0 for an empty chain): stable for a
    /// thread's life, so a reader can tell a cut chain on versions that mark no first frame.
    pub outermost: u64,
    /// `(frame, code object)` addresses of each Python frame, innermost first, when the walk
    /// was asked to keep them (to read locals).
    pub addresses: Vec<(u64, u64)>,
    /// The chain was deeper than [`MAX_FRAMES`]: `frames` are its innermost ones.
    pub cut: bool,
}

/// The frames of the chain starting at `first`, innermost first. `base_frame` is the
/// thread's `base_frame` (3.15+), where a whole chain ends; `keep_addresses` fills
/// [`Chain::addresses`].
pub fn walk_frames(
    mem: &impl ReadMemory,
    layout: &Layout,
    codes: &mut CodeCache,
    first: u64,
    base_frame: Option<u64>,
    keep_addresses: bool,
) -> Result<Chain, DecodeError> {
    let capabilities = layout.capabilities();
    let interpreter_frames = capabilities.interpreter_frames;
    let shims = capabilities.shim_frames;
    let tagged_code = capabilities.tagged_stack_refs;
    let frame_objects = !interpreter_frames;
    let stacktop = stacktop_offset(layout);
    let span = span_of(&[
        stacktop.unwrap_or(0),
        REFCNT_OFFSET,
        layout.frame_back,
        layout.frame_code,
        layout.frame_lasti,
        layout.frame_owner.unwrap_or(0),
        layout.frame_is_entry.unwrap_or(0),
    ]);
    let mut buf = vec![0u8; span];
    let mut chain = Chain {
        frames: Vec::new(),
        outermost: 0,
        addresses: Vec::new(),
        cut: false,
    };
    let mut addr = first;
    let mut visited = 0usize;
    let mut outermost_is_generator = false;
    // What the last frame visited (Python or shim) says about being a thread's first.
    let mut last = 0u64;
    let mut last_is_first = false;
    // The Python frame visited last was called by the next one directly (no C code between).
    let mut called_directly = false;
    // A cycle is found without a set of visited frames (Brent's method): the address at each
    // power-of-two step is kept, and a chain that comes back to it is cyclic (found within
    // twice its cycle's length past where the cycle starts).
    let mut checkpoint = 0u64;
    while addr != 0 {
        visited += 1;
        if visited > MAX_FRAMES {
            chain.cut = true;
            return Ok(chain);
        }
        if addr == checkpoint {
            return Err(DecodeError::invalid("frame chain (cyclic)", addr));
        }
        if visited.is_power_of_two() {
            checkpoint = addr;
        }
        mem.read(addr, &mut buf)?;
        if frame_objects {
            let refcnt = field_u64(&buf, REFCNT_OFFSET);
            if refcnt == 0 {
                return Err(DecodeError::invalid(
                    "frame chain (torn: it runs through a freed frame)",
                    addr,
                ));
            }
            // A caller is held by whoever runs it and by its callee's `f_back`.
            if refcnt < 2 && !chain.frames.is_empty() {
                return Err(DecodeError::invalid(
                    "frame chain (torn: a caller is not in a call)",
                    addr,
                ));
            }
        }
        let back = field_u64(&buf, layout.frame_back);
        let mut code = field_u64(&buf, layout.frame_code);
        let owner = layout.frame_owner.map(|at| field_u8(&buf, at));
        last = addr;
        last_is_first = layout
            .frame_is_entry
            .is_some_and(|at| field_u8(&buf, at) != 0);
        if shims && owner.is_some_and(|o| o >= FIRST_SHIM_OWNER) {
            last_is_first = true;
            called_directly = false;
            addr = back;
            continue;
        }
        if tagged_code {
            code &= !STACKREF_TAG_BITS;
        }
        if code == 0 && interpreter_frames && chain.frames.is_empty() {
            // The innermost frame is being pushed or popped (its code not set yet, or
            // cleared already): the stack is the one of the moment before or after.
            addr = back;
            continue;
        }
        let position = if interpreter_frames {
            InstructionPosition::Pointer(field_u64(&buf, layout.frame_lasti))
        } else {
            InstructionPosition::Lasti(field_u32(&buf, layout.frame_lasti) as i32)
        };
        let code_addr = code;
        let (code, line, kind) = codes.frame(mem, layout, code, position)?;
        if called_directly && interpreter_frames {
            let ptr = field_u64(&buf, layout.frame_lasti);
            let in_call = if capabilities.debug_offsets {
                // `instr_ptr` is at the instruction that made the call.
                let mut instruction = [0u8; 2];
                mem.read(ptr, &mut instruction)?;
                may_call(layout.version, instruction).unwrap_or(true)
            } else {
                // `prev_instr` is in (the caches of) the call. Where the instruction cannot
                // be told (instrumented lines), at least past the start: a frame not
                // started yet has it before the first instruction.
                match codes.in_call(mem, layout, code_addr, ptr)? {
                    Some(in_call) => in_call,
                    None => codes
                        .code_start(code_addr)
                        .is_some_and(|start| ptr >= start),
                }
            };
            let running = stacktop.is_some_and(|at| (field_u32(&buf, at) as i32) < 0);
            if running || !in_call {
                return Err(DecodeError::invalid(
                    "frame chain (torn: a caller is not in a call)",
                    addr,
                ));
            }
        }
        called_directly = !last_is_first;
        if kind == CodeKind::Internal {
            // A shim of the interpreter's own, called and calling like a Python frame.
            addr = back;
            continue;
        }
        if keep_addresses {
            chain.addresses.push((addr, code_addr));
        }
        outermost_is_generator = kind == CodeKind::Generator;
        chain.frames.push(Frame { code, line });
        chain.outermost = addr;
        addr = back;
    }
    if outermost_is_generator {
        return Err(DecodeError::invalid(
            "frame chain (cut at a generator that yielded)",
            first,
        ));
    }
    let ends_where_threads_start = match base_frame {
        Some(base) => last == base,
        None => !interpreter_frames || last_is_first,
    };
    if first != 0 && !ends_where_threads_start {
        return Err(DecodeError::invalid(
            "frame chain (cut: it ends at a frame no thread starts with)",
            first,
        ));
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::SliceMemory;
    use crate::python::layouts::layout_for;

    /// A fake target: one code object `rec` and frames placed by the test.
    struct Target {
        mem: SliceMemory,
        layout: &'static Layout,
        code: u64,
    }

    const CODE: u64 = 0x10_000;
    const NAME: u64 = 0x11_000;
    const TABLE: u64 = 0x12_000;
    const BYTECODE: u64 = 0x13_000;
    const FRAMES: u64 = 0x20_000;
    const FRAME_SIZE: u64 = 0x200;

    fn put(bytes: &mut [u8], at: u64, value: &[u8]) {
        let at = at as usize;
        bytes[at..at + value.len()].copy_from_slice(value);
    }

    impl Target {
        /// `bytecode` is the code object's instructions (3.11: inline, else a `bytes`).
        fn new(version: (u8, u8), bytecode: &[u8]) -> Target {
            let layout = layout_for(version.0, version.1).expect("a supported version");
            let mut mem = SliceMemory::new();
            let size = layout
                .unicode_compact_size
                .max(layout.unicode_ascii_size + 4);
            let mut name = vec![0u8; size as usize];
            put(&mut name, layout.unicode_length, &3u64.to_le_bytes());
            let state: u32 = (1 << 2) | (1 << 5) | (1 << 6); // kind 1, compact, ascii
            put(&mut name, layout.unicode_state, &state.to_le_bytes());
            put(&mut name, layout.unicode_ascii_size, b"rec");
            mem.map(NAME, name);
            let mut table = vec![0u8; layout.bytes_sval as usize];
            put(&mut table, layout.var_size, &0u64.to_le_bytes());
            mem.map(TABLE, table);
            let mut code = vec![0u8; 0x400];
            put(&mut code, 16, &(bytecode.len() as u64 / 2).to_le_bytes());
            for at in [layout.code_filename, layout.code_name] {
                put(&mut code, at, &NAME.to_le_bytes());
            }
            if let Some(at) = layout.code_qualname {
                put(&mut code, at, &NAME.to_le_bytes());
            }
            put(&mut code, layout.code_firstlineno, &11u32.to_le_bytes());
            put(&mut code, layout.code_linetable, &TABLE.to_le_bytes());
            match (layout.code_code_adaptive, layout.code_code) {
                (Some(inline), _) => put(&mut code, inline, bytecode),
                (None, Some(at)) => {
                    put(&mut code, at, &BYTECODE.to_le_bytes());
                    let mut bytes = vec![0u8; layout.bytes_sval as usize];
                    put(
                        &mut bytes,
                        layout.var_size,
                        &(bytecode.len() as u64).to_le_bytes(),
                    );
                    bytes.extend_from_slice(bytecode);
                    mem.map(BYTECODE, bytes);
                }
                (None, None) => {}
            }
            mem.map(CODE, code);
            Target {
                mem,
                layout,
                code: CODE,
            }
        }

        /// Frame `i` (innermost 0) calling nobody or called by frame `i + 1`, the last of
        /// `count`: `refcnt` (frame objects), instruction (`f_lasti`, or a byte offset in the
        /// bytecode for 3.11+) and saved stack depth (3.11+).
        fn frame(&mut self, i: u64, count: u64, refcnt: u64, instruction: u64, stacktop: i32) {
            let back = if i + 1 < count {
                FRAMES + (i + 1) * FRAME_SIZE
            } else {
                0
            };
            self.frame_to(i, back, i + 1 == count, refcnt, instruction, stacktop);
        }

        /// Frame `i` called by the frame at `back`; `entry`: a thread's first (3.11).
        fn frame_to(
            &mut self,
            i: u64,
            back: u64,
            entry: bool,
            refcnt: u64,
            instruction: u64,
            stacktop: i32,
        ) {
            let layout = self.layout;
            let mut frame = vec![0u8; FRAME_SIZE as usize];
            put(&mut frame, REFCNT_OFFSET, &refcnt.to_le_bytes());
            put(&mut frame, layout.frame_back, &back.to_le_bytes());
            put(&mut frame, layout.frame_code, &self.code.to_le_bytes());
            if let Some(inline) = layout.code_code_adaptive {
                let ptr = self.code + inline + instruction;
                put(&mut frame, layout.frame_lasti, &ptr.to_le_bytes());
                put(&mut frame, layout.frame_lasti + 8, &stacktop.to_le_bytes());
            } else {
                put(
                    &mut frame,
                    layout.frame_lasti,
                    &(instruction as u32).to_le_bytes(),
                );
            }
            if let Some(at) = layout.frame_is_entry {
                put(&mut frame, at, &[u8::from(entry)]);
            }
            self.mem.map(FRAMES + i * FRAME_SIZE, frame);
        }

        /// A shim frame (3.12+) at `i`, the last: where a thread's chain ends.
        fn shim(&mut self, i: u64) {
            let layout = self.layout;
            let mut frame = vec![0u8; FRAME_SIZE as usize];
            let at = layout.frame_owner.expect("3.12+");
            put(&mut frame, at, &[FIRST_SHIM_OWNER]);
            self.mem.map(FRAMES + i * FRAME_SIZE, frame);
        }

        fn walk(self) -> Result<Chain, DecodeError> {
            let mut codes = CodeCache::new();
            walk_frames(&self.mem, self.layout, &mut codes, FRAMES, None, false)
        }
    }

    /// 3.11's `rec(n)`, `if n: rec(n - 1)`: its CALL (and caches) is bytes 30 to 39, its
    /// returns at 44 and 48.
    const REC_3_11: &[u8] = &[
        151, 0, 124, 0, 114, 20, 116, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 124, 0, 100, 1, 122, 10, 0,
        0, 166, 1, 0, 0, 171, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 100, 0, 83, 0, 100, 0, 83, 0,
    ];

    /// A walk of `frames` (innermost first: reference count, instruction, saved stack depth)
    /// running `rec`.
    fn walk(
        version: (u8, u8),
        bytecode: &[u8],
        frames: &[(u64, u64, i32)],
    ) -> Result<Chain, DecodeError> {
        let mut target = Target::new(version, bytecode);
        // From 3.12 a thread's chain ends at a shim frame.
        let shim = target.layout.frame_is_entry.is_none() && target.layout.frame_owner.is_some();
        let count = frames.len() as u64 + u64::from(shim);
        for (i, (refcnt, instruction, stacktop)) in frames.iter().enumerate() {
            target.frame(i as u64, count, *refcnt, *instruction, *stacktop);
        }
        if shim {
            target.shim(count - 1);
        }
        target.walk()
    }

    #[test]
    fn a_caller_frame_object_with_one_reference_is_torn() {
        let whole = walk((3, 9), &[0; 16], &[(1, 2, 0), (2, 2, 0), (2, 2, 0)]);
        assert_eq!(whole.expect("whole").frames.len(), 3);
        // The middle frame was read running (its callee's `f_back` not holding it).
        let torn = walk((3, 9), &[0; 16], &[(1, 2, 0), (1, 2, 0), (2, 2, 0)]);
        let error = torn.expect_err("torn").to_string();
        assert!(error.contains("a caller is not in a call"), "{error}");
    }

    #[test]
    fn a_cyclic_chain_is_an_error_whatever_its_length() {
        for (count, back_to) in [(1, 0), (2, 0), (5, 1), (40, 3), (300, 299)] {
            let mut target = Target::new((3, 9), &[0; 16]);
            for i in 0..count - 1 {
                target.frame(i, count, 2, 2, 0);
            }
            // The outermost frame's `f_back` leads back into the chain.
            target.frame_to(count - 1, FRAMES + back_to * FRAME_SIZE, false, 2, 2, 0);
            let error = target.walk().expect_err("cyclic").to_string();
            assert!(
                error.contains("cyclic"),
                "{count} frames back to {back_to}: {error}"
            );
        }
    }

    #[test]
    fn a_3_11_caller_is_in_its_call_not_on_a_return() {
        let whole = walk((3, 11), REC_3_11, &[(0, 10, -1), (0, 38, 2), (0, 38, 2)]);
        assert_eq!(whole.expect("whole").frames.len(), 3);
        // A popped frame, its memory as its return left it, read as a caller.
        let torn = walk((3, 11), REC_3_11, &[(0, 10, -1), (0, 48, 0), (0, 38, 2)]);
        let error = torn.expect_err("torn").to_string();
        assert!(error.contains("a caller is not in a call"), "{error}");
        // A caller read while running.
        assert!(walk((3, 11), REC_3_11, &[(0, 10, -1), (0, 38, -1), (0, 38, 2)]).is_err());
    }

    #[test]
    fn a_3_14_caller_is_at_an_instruction_that_calls() {
        // A CALL at byte 4, a subscript at 12, an addition at 16, a specialised subscript at
        // 20 (BINARY_OP and its forms: a call only on a subscript, argument NB_SUBSCR).
        let mut bytecode = [0u8; 32];
        bytecode[4..6].copy_from_slice(&[52, 1]);
        bytecode[12..14].copy_from_slice(&[44, 26]);
        bytecode[16..18].copy_from_slice(&[130, 0]);
        bytecode[20..22].copy_from_slice(&[136, 26]);
        for (caller, whole) in [(4, true), (0, false), (12, true), (16, false), (20, true)] {
            let chain = walk((3, 14), &bytecode, &[(0, 0, 0), (0, caller, 0), (0, 4, 0)]);
            assert_eq!(chain.is_ok(), whole, "a caller at byte {caller}: {chain:?}");
        }
    }

    #[test]
    fn a_captured_frame_is_decoded_from_the_code_held_with_its_tag() {
        use crate::python::code::InstructionPosition;
        let target = Target::new((3, 12), REC_3_11);
        let layout = target.layout;
        let inline = layout.code_code_adaptive.expect("3.12 bytecode is inline");
        let at = InstructionPosition::Pointer(CODE + inline);
        // co_filename and co_name are both NAME here: the tag is their XOR.
        let tag = 0;
        let mut codes = CodeCache::new();
        let (code, _, _) = codes
            .checked_frame(&target.mem, layout, CODE, at, tag)
            .expect("a live code object with the captured tag");
        assert_eq!(code.function, "rec");
        // Freed since (nothing readable there now): still what the captured frame ran,
        // without a read.
        let gone = SliceMemory::new();
        let (again, _, _) = codes
            .checked_frame(&gone, layout, CODE, at, tag)
            .expect("held with the captured tag");
        assert!(std::sync::Arc::ptr_eq(&code, &again));
        // Another tag is another code object, which must be read: refused when it cannot be,
        // and when the object there now has another tag.
        assert!(codes.checked_frame(&gone, layout, CODE, at, 5).is_err());
        assert!(
            codes
                .checked_frame(&target.mem, layout, CODE, at, 5)
                .is_err()
        );
    }
}
