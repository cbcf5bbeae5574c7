//! Code objects: decoding name, qualified name, file and first line once per code object
//! (cached by address), and mapping an instruction offset to a source line with each
//! version's line table: `co_lnotab` (≤3.9), the PEP 626 `co_linetable` (3.10) and the
//! location table (3.11+).

use super::CodeInfo;
use super::call_sites;
use super::layout::Layout;
use super::objects::{DecodeError, field_u32, field_u64, read_bytes, read_str, span_of};
use crate::attach::ReadMemory;
use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

/// `CO_GENERATOR | CO_COROUTINE | CO_ITERABLE_COROUTINE | CO_ASYNC_GENERATOR`: code whose
/// frames are suspended and resumed.
const CO_GENERATOR_LIKE: u32 = 0x20 | 0x80 | 0x100 | 0x200;

/// `CO_NO_MONITORING_EVENTS` (3.13+): set only on the interpreter's own code objects.
const CO_NO_MONITORING_EVENTS: u32 = 0x200_0000;

/// What a code object's frames are to a stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeKind {
    /// A function's, a class body's or a module's.
    Plain,
    /// A generator's, a coroutine's or an async generator's: suspended and resumed.
    Generator,
    /// The interpreter's own (3.13+, flagged `CO_NO_MONITORING_EVENTS`): the shim frame
    /// under a Python `__init__` that checks it returned None. Not Python code: left out of
    /// stacks.
    Internal,
}

/// The most code objects kept decoded; the cache starts over past this.
const MAX_CACHED_CODES: usize = 1 << 16;

/// A decoded code object.
#[derive(Debug)]
struct CachedCode {
    /// `co_filename` and `co_name` pointers when decoded: if they differ later, the address
    /// now holds another code object and the entry is decoded again.
    fingerprint: (u64, u64),
    info: Arc<CodeInfo>,
    kind: CodeKind,
    linetable: Vec<u8>,
    /// Address of the first instruction (3.11+: inline in the code object).
    code_start: u64,
    /// Line per instruction byte offset, filled as offsets are seen.
    lines: HashMap<u64, u32>,
    /// The object's type pointer (`ob_type`).
    ob_type: u64,
    /// The inline bytecode (3.11, 3.12), read when a frame's caller check first needs it.
    bytecode: Option<Vec<u8>>,
    /// Whether the instruction at each byte offset seen can push a frame directly
    /// ([`call_sites::in_call_instruction`]).
    calls: HashMap<u64, Option<bool>>,
}

impl CachedCode {
    /// What it is, the line of `position` in it, and its kind.
    fn frame_at(
        &mut self,
        layout: &Layout,
        position: InstructionPosition,
    ) -> (Arc<CodeInfo>, u32, CodeKind) {
        let code = self;
        let offset = match position {
            InstructionPosition::Lasti(lasti) if lasti < 0 => None,
            InstructionPosition::Lasti(lasti) if layout.capabilities().lasti_in_code_units => {
                Some(lasti as u64 * 2)
            }
            InstructionPosition::Lasti(lasti) => Some(lasti as u64),
            InstructionPosition::Pointer(ptr) => ptr.checked_sub(code.code_start),
        };
        let line = match offset {
            None => code.info.first_line,
            Some(offset) => *code.lines.entry(offset).or_insert_with(|| {
                line_for_offset(
                    layout.version,
                    &code.linetable,
                    code.info.first_line,
                    offset,
                )
            }),
        };
        (code.info.clone(), line, code.kind)
    }
}

/// Where `ob_type` lies in every object of a supported (not free-threaded) build.
const OB_TYPE: u64 = 8;

/// Where `ob_size` lies in a variable-size object: for a 3.11+ code object, the length of
/// its inline bytecode in code units.
const OB_SIZE: u64 = 16;

/// The most bytecode read of one code object to check its callers (code units).
const MAX_CODE_UNITS: u64 = 1 << 20;

/// Where a code object's tag lies: (offset, length) of `co_filename` and `co_name` when they
/// are neighbours (every supported version), else of `co_filename` alone. The tag is the XOR
/// of the words there; a chain captured in the kernel records it per frame, so that a code
/// object freed before the chain is decoded is not mistaken for what took its memory.
pub fn tag_window(layout: &Layout) -> (u64, u64) {
    let (filename, name) = (layout.code_filename, layout.code_name);
    if filename.abs_diff(name) == 8 {
        (filename.min(name), 16)
    } else {
        (filename, 8)
    }
}

/// The tag ([`tag_window`]) of a code object whose `co_filename` and `co_name` are
/// `fingerprint`.
fn tag_of(layout: &Layout, (filename, name): (u64, u64)) -> u64 {
    match tag_window(layout) {
        (_, 16) => filename ^ name,
        _ => filename,
    }
}

/// Decoded code objects of one target, keyed by address.
#[derive(Debug, Default)]
pub struct CodeCache {
    codes: HashMap<u64, CachedCode>,
    /// The code type's address, as the code objects of frames read whole show it.
    code_type: Option<u64>,
}

/// Where the frame's instruction pointer is, in the form each version stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstructionPosition {
    /// `f_lasti` of a `PyFrameObject`: a byte offset (≤3.9) or a code-unit index (3.10);
    /// negative before the first instruction.
    Lasti(i32),
    /// A pointer into the code object's inline bytecode (3.11+).
    Pointer(u64),
}

impl CodeCache {
    /// An empty cache.
    pub fn new() -> Self {
        CodeCache::default()
    }

    /// Decodes (or finds) the code object at `addr`: what it is, the line of `position` in
    /// it, and its [`CodeKind`].
    pub fn frame(
        &mut self,
        mem: &impl ReadMemory,
        layout: &Layout,
        addr: u64,
        position: InstructionPosition,
    ) -> Result<(Arc<CodeInfo>, u32, CodeKind), DecodeError> {
        let decoded = self.decode(mem, layout, addr, position)?;
        if self.code_type.is_none() {
            self.code_type = self.codes.get(&addr).map(|code| code.ob_type);
        }
        Ok(decoded)
    }

    /// [`CodeCache::frame`] for an address not known to be a code object's (a chain captured
    /// where it could not be checked, as the kernel captures them at a page fault, and decoded
    /// later), with the tag ([`tag_window`]) it had when captured: a code object decoded
    /// before with that tag serves without a read; else it is refused unless the object there
    /// now has the type the code objects of frames read whole have, and that tag (else the
    /// code object was freed and its memory reused since).
    pub fn checked_frame(
        &mut self,
        mem: &impl ReadMemory,
        layout: &Layout,
        addr: u64,
        position: InstructionPosition,
        tag: u64,
    ) -> Result<(Arc<CodeInfo>, u32, CodeKind), DecodeError> {
        // A code object decoded before whose tag is the one captured: the captured frame
        // ran it, or one with the same file and name at the same address, which reading the
        // object now could not tell apart either (and a code object freed since capture is
        // still decoded as what it was).
        if let Some(code) = self.codes.get_mut(&addr)
            && tag_of(layout, code.fingerprint) == tag
        {
            return Ok(code.frame_at(layout, position));
        }
        let ob_type = mem.read_u64(addr.wrapping_add(OB_TYPE))?;
        let (at, len) = tag_window(layout);
        let words = mem.read_vec(addr.wrapping_add(at), len as usize)?;
        let now = field_u64(&words, 0) ^ field_u64(&words, 8);
        if self.code_type.is_some_and(|known| known != ob_type) || now != tag {
            return Err(DecodeError::invalid("code object", addr));
        }
        self.decode(mem, layout, addr, position)
    }

    fn decode(
        &mut self,
        mem: &impl ReadMemory,
        layout: &Layout,
        addr: u64,
        position: InstructionPosition,
    ) -> Result<(Arc<CodeInfo>, u32, CodeKind), DecodeError> {
        let fingerprint = (
            mem.read_u64(addr.wrapping_add(layout.code_filename))?,
            mem.read_u64(addr.wrapping_add(layout.code_name))?,
        );
        if self
            .codes
            .get(&addr)
            .is_none_or(|code| code.fingerprint != fingerprint)
        {
            if self.codes.len() >= MAX_CACHED_CODES {
                self.codes.clear();
            }
            let decoded = decode_code(mem, layout, addr)?;
            self.codes.insert(addr, decoded);
        }
        let code = self
            .codes
            .get_mut(&addr)
            .ok_or(DecodeError::invalid("code object", addr))?;
        Ok(code.frame_at(layout, position))
    }

    /// Address of the first instruction of the code object at `addr`, once decoded (3.11+,
    /// where frames point into the code object's inline bytecode).
    pub fn code_start(&self, addr: u64) -> Option<u64> {
        self.codes.get(&addr).map(|code| code.code_start)
    }

    /// Whether the instruction at `ptr` (a 3.11 or 3.12 frame's `prev_instr`) in the code
    /// object at `addr`, decoded already, can push a frame directly; `None` when that cannot
    /// be told (see [`call_sites::in_call_instruction`]). Reads the bytecode once per code
    /// object (specialising an instruction keeps its size, so boundaries do not move), and
    /// again to confirm a "no" it gave before.
    pub fn in_call(
        &mut self,
        mem: &impl ReadMemory,
        layout: &Layout,
        addr: u64,
        ptr: u64,
    ) -> Result<Option<bool>, DecodeError> {
        let Some(code) = self.codes.get_mut(&addr) else {
            return Ok(None);
        };
        let Some(offset) = ptr.checked_sub(code.code_start) else {
            return Ok(Some(false));
        };
        let cached = code.calls.get(&offset).copied();
        if let Some(known) = cached
            && known != Some(false)
        {
            return Ok(known);
        }
        // A "no" is checked on the bytecode as it is now: another code object at the same
        // address with the same names would otherwise keep a whole stack torn.
        if code.bytecode.is_none() || cached.is_some() {
            let units = mem.read_u64(addr.wrapping_add(OB_SIZE))?;
            if units > MAX_CODE_UNITS {
                return Err(DecodeError::invalid("code object (bytecode size)", addr));
            }
            code.bytecode = Some(mem.read_vec(code.code_start, units as usize * 2)?);
            code.calls.clear();
        }
        let bytecode = code.bytecode.as_deref().unwrap_or_default();
        let known = call_sites::in_call_instruction(layout.version, bytecode, offset);
        code.calls.insert(offset, known);
        Ok(known)
    }

    /// Forgets every decoded code object (after the target reloaded code, for instance).
    pub fn clear(&mut self) {
        self.codes.clear();
    }
}

fn decode_code(
    mem: &impl ReadMemory,
    layout: &Layout,
    addr: u64,
) -> Result<CachedCode, DecodeError> {
    let span = span_of(&[
        OB_TYPE,
        layout.code_filename,
        layout.code_name,
        layout.code_qualname.unwrap_or(0),
        layout.code_firstlineno,
        layout.code_flags,
        layout.code_linetable,
        layout.code_code.unwrap_or(0),
    ]);
    let raw = mem.read_vec(addr, span)?;
    let fingerprint = (
        field_u64(&raw, layout.code_filename),
        field_u64(&raw, layout.code_name),
    );
    let filename = read_str(mem, layout, fingerprint.0)?;
    let name_at = layout.code_qualname.unwrap_or(layout.code_name);
    let function = read_str(mem, layout, field_u64(&raw, name_at))?;
    let first_line = field_u32(&raw, layout.code_firstlineno);
    let linetable = read_bytes(mem, layout, field_u64(&raw, layout.code_linetable))?;
    let code_start = match (layout.code_code_adaptive, layout.code_code) {
        (Some(inline), _) => addr.wrapping_add(inline),
        (None, Some(code_at)) => field_u64(&raw, code_at).wrapping_add(layout.bytes_sval),
        (None, None) => 0,
    };
    let flags = field_u32(&raw, layout.code_flags);
    let kind = if layout.version >= (3, 13) && flags & CO_NO_MONITORING_EVENTS != 0 {
        CodeKind::Internal
    } else if flags & CO_GENERATOR_LIKE != 0 {
        CodeKind::Generator
    } else {
        CodeKind::Plain
    };
    Ok(CachedCode {
        kind,
        fingerprint,
        info: Arc::new(CodeInfo {
            function,
            filename,
            first_line,
        }),
        linetable,
        code_start,
        lines: HashMap::default(),
        ob_type: field_u64(&raw, OB_TYPE),
        bytecode: None,
        calls: HashMap::default(),
    })
}

/// The source line of the instruction at byte `offset`, from a version's line table.
pub fn line_for_offset(version: (u8, u8), table: &[u8], first_line: u32, offset: u64) -> u32 {
    match version {
        (3, minor) if minor <= 9 => lnotab_line(table, first_line, offset),
        (3, 10) => linetable_310_line(table, first_line, offset),
        _ => location_table_line(table, first_line, offset),
    }
}

/// `co_lnotab` (≤3.9): pairs of (bytecode increment, signed line increment).
fn lnotab_line(table: &[u8], first_line: u32, offset: u64) -> u32 {
    let mut line = i64::from(first_line);
    let mut addr: u64 = 0;
    for pair in table.chunks_exact(2) {
        addr += u64::from(pair[0]);
        if addr > offset {
            break;
        }
        line += i64::from(pair[1] as i8);
    }
    u32::try_from(line).unwrap_or(0)
}

/// `co_linetable` (3.10): pairs of (bytecode length, signed line delta; -128 = no line).
fn linetable_310_line(table: &[u8], first_line: u32, offset: u64) -> u32 {
    let mut line = i64::from(first_line);
    let mut end: u64 = 0;
    for pair in table.chunks_exact(2) {
        end += u64::from(pair[0]);
        let delta = pair[1] as i8;
        let this_line = (delta != -128).then(|| {
            line += i64::from(delta);
            line
        });
        if pair[0] != 0 && offset < end {
            return this_line.and_then(|l| u32::try_from(l).ok()).unwrap_or(0);
        }
    }
    u32::try_from(line).unwrap_or(0)
}

/// Reads the 6-bit-chunk varint of a 3.11+ location table, zig-zag signed.
fn signed_varint(bytes: &[u8]) -> i64 {
    let mut value: u64 = 0;
    let mut shift = 0u32;
    for &b in bytes {
        value |= u64::from(b & 63) << shift;
        if b & 64 == 0 || shift >= 54 {
            break;
        }
        shift += 6;
    }
    if value & 1 == 1 {
        -((value >> 1) as i64)
    } else {
        (value >> 1) as i64
    }
}

/// The 3.11+ location table: entries that each start with a byte whose high bit is set,
/// giving a kind (bits 3-6) and a length in code units (bits 0-2, plus one); the kind says
/// how the line moves.
fn location_table_line(table: &[u8], first_line: u32, offset: u64) -> u32 {
    let target_unit = offset / 2;
    let mut line = i64::from(first_line);
    let mut unit: u64 = 0;
    let mut at = 0usize;
    while let Some(&first) = table.get(at) {
        let next = table[at + 1..]
            .iter()
            .position(|b| b & 0x80 != 0)
            .map_or(table.len(), |p| at + 1 + p);
        let kind = (first >> 3) & 15;
        line += match kind {
            13 | 14 => signed_varint(&table[at + 1..next]),
            11 => 1,
            12 => 2,
            _ => 0,
        };
        let length = u64::from(first & 7) + 1;
        if target_unit < unit + length {
            return if kind == 15 {
                0
            } else {
                u32::try_from(line).unwrap_or(0)
            };
        }
        unit += length;
        at = next;
    }
    u32::try_from(line).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_covers_file_and_name_on_every_supported_version() {
        for &(major, minor) in crate::python::layouts::SUPPORTED {
            let layout = crate::python::layouts::layout_for(major, minor).expect("layout");
            let (at, len) = tag_window(layout);
            assert_eq!(
                len, 16,
                "{major}.{minor}: co_filename and co_name are neighbours"
            );
            assert_eq!(at, layout.code_filename.min(layout.code_name));
        }
    }

    #[test]
    fn lnotab_walks_increments() {
        // Lines 10 (bytes 0-5), 11 (6-9), 13 (10-).
        let table = [6, 1, 4, 2];
        assert_eq!(lnotab_line(&table, 10, 0), 10);
        assert_eq!(lnotab_line(&table, 10, 5), 10);
        assert_eq!(lnotab_line(&table, 10, 6), 11);
        assert_eq!(lnotab_line(&table, 10, 12), 13);
    }

    #[test]
    fn lnotab_negative_increment() {
        let table = [4, 3, 4, 0xfe];
        assert_eq!(lnotab_line(&table, 5, 9), 6);
    }

    #[test]
    fn location_table_short_and_long_forms() {
        // Entry 1: code 13 (no column), 2 units, line +2. Entry 2: code 10 (one line, +0),
        // 1 unit, two column bytes. Entry 3: code 14 (long), 3 units, line +5.
        let table = [
            0x80 | (13 << 3) | 1,
            4, // svarint +2
            0x80 | (10 << 3),
            1,
            2,
            0x80 | (14 << 3) | 2,
            10, // svarint +5
            0,
            1,
            2,
        ];
        assert_eq!(location_table_line(&table, 100, 0), 102);
        assert_eq!(location_table_line(&table, 100, 2), 102);
        assert_eq!(location_table_line(&table, 100, 4), 102);
        assert_eq!(location_table_line(&table, 100, 6), 107);
        assert_eq!(location_table_line(&table, 100, 10), 107);
    }
}
