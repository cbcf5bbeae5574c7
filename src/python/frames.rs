//! Walking one thread's chain of frames: `PyFrameObject` (≤3.10) or `_PyInterpreterFrame`
//! (3.11+), innermost first, skipping the C-stack shim frames of 3.12+. Bounded: a cyclic or
//! garbage chain ends in an error, never a hang.

use super::Frame;
use super::code::{CodeCache, InstructionPosition};
use super::layout::Layout;
use super::objects::{DecodeError, field_u8, field_u32, field_u64, span_of};
use crate::attach::ReadMemory;

/// The deepest chain the walker follows before calling it garbage.
pub const MAX_FRAMES: usize = 4096;

/// `_PyInterpreterFrame.owner` of a shim frame that belongs to the C stack (3.12+).
const FRAME_OWNED_BY_CSTACK: u8 = 3;

/// The frames of the chain starting at `first`, innermost first.
///
/// A chain whose outermost frame runs a generator's (or coroutine's) code was cut while
/// being read: a generator that yields unlinks its frame from its caller, and a thread's
/// outermost frame is never a generator's. That is an error, for the caller to read again.
pub fn walk_frames(
    mem: &impl ReadMemory,
    layout: &Layout,
    codes: &mut CodeCache,
    first: u64,
) -> Result<Vec<Frame>, DecodeError> {
    let interpreter_frames = layout.version >= (3, 11);
    let span = span_of(&[
        layout.frame_back,
        layout.frame_code,
        layout.frame_lasti,
        layout.frame_owner.unwrap_or(0),
    ]);
    let mut buf = vec![0u8; span];
    let mut frames = Vec::new();
    let mut addr = first;
    let mut visited = 0usize;
    let mut outermost_is_generator = false;
    while addr != 0 {
        visited += 1;
        if visited > MAX_FRAMES {
            return Err(DecodeError::invalid(
                "frame chain (too deep or cyclic)",
                first,
            ));
        }
        mem.read(addr, &mut buf)?;
        let back = field_u64(&buf, layout.frame_back);
        let code = field_u64(&buf, layout.frame_code);
        let owner = layout.frame_owner.map(|at| field_u8(&buf, at));
        if owner == Some(FRAME_OWNED_BY_CSTACK) && layout.version >= (3, 12) {
            addr = back;
            continue;
        }
        let position = if interpreter_frames {
            InstructionPosition::Pointer(field_u64(&buf, layout.frame_lasti))
        } else {
            InstructionPosition::Lasti(field_u32(&buf, layout.frame_lasti) as i32)
        };
        let (code, line, generator) = codes.frame(mem, layout, code, position)?;
        outermost_is_generator = generator;
        frames.push(Frame { code, line });
        addr = back;
    }
    if outermost_is_generator {
        return Err(DecodeError::invalid(
            "frame chain (cut at a generator that yielded)",
            first,
        ));
    }
    Ok(frames)
}
