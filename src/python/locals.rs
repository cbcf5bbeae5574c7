//! A frame's local variables for `pmt dump --locals`: names from the code object, values from
//! the frame's local slots, shown only for a few plain types (`None`, `bool`, `int`, `float`,
//! `str`, `bytes`), bounded in length; any other value by its type name and address. It only
//! reads the target's memory: no repr, no attribute lookup, nothing of the target runs.

use super::frames::STACKREF_TAG_BITS;
use super::layout::Layout;
use super::objects::{DecodeError, read_bytes, read_int, read_str};
use crate::attach::ReadMemory;

/// The most locals shown for one frame.
const MAX_LOCALS: u64 = 256;
/// The most characters of a `str` (or bytes of a `bytes`) shown.
const MAX_SHOWN: usize = 64;
/// `CO_FAST_LOCAL` / `CO_FAST_HIDDEN` in `co_localspluskinds` (3.11+).
const CO_FAST_LOCAL: u8 = 0x20;
const CO_FAST_HIDDEN: u8 = 0x10;
/// 3.14+ local slots are `_PyStackRef`s: low bits `11` mark a small int kept in the slot,
/// other low bits tag a reference.
const STACKREF_INT_TAG: u64 = 3;

/// One local variable of a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// The variable's name.
    pub name: String,
    /// A safe rendering of its value (`5`, `'text'`, `<list at 0x7f…>`).
    pub value: String,
}

/// What one local variable's slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalSlot {
    /// A reference to the object at this address.
    Object(u64),
    /// A small int kept in the slot itself (3.14+ tagged `_PyStackRef`).
    SmallInt(i64),
}

/// The bound local variables (arguments included) of the frame at `frame` running `code`.
pub fn frame_locals(
    mem: &impl ReadMemory,
    layout: &Layout,
    frame: u64,
    code: u64,
) -> Result<Vec<Local>, DecodeError> {
    Ok(local_slots(mem, layout, frame, code)?
        .into_iter()
        .map(|(name, slot)| Local {
            name,
            value: match slot {
                LocalSlot::SmallInt(value) => value.to_string(),
                LocalSlot::Object(object) => show(mem, layout, object),
            },
        })
        .collect())
}

/// The name and slot of each bound local variable (arguments included) of the frame at
/// `frame` running `code`; unbound ones are left out.
pub fn local_slots(
    mem: &impl ReadMemory,
    layout: &Layout,
    frame: u64,
    code: u64,
) -> Result<Vec<(String, LocalSlot)>, DecodeError> {
    let names = mem.read_u64(code.wrapping_add(layout.code_localnames))?;
    let count = u64::from(mem.read_u32(code.wrapping_add(layout.code_nlocals))?);
    let listed = mem.read_u64(names.wrapping_add(layout.var_size))?;
    if count > MAX_LOCALS || listed > MAX_LOCALS || count > listed {
        return Err(DecodeError::invalid("local variable names", names));
    }
    let kinds = match layout.code_localkinds {
        Some(at) => Some(read_bytes(
            mem,
            layout,
            mem.read_u64(code.wrapping_add(at))?,
        )?),
        None => None,
    };
    let stackrefs = layout.capabilities().tagged_stack_refs;
    let mut locals = Vec::new();
    for i in 0..count {
        if let Some(kinds) = &kinds {
            let kind = kinds.get(i as usize).copied().unwrap_or(0);
            if kind & CO_FAST_LOCAL == 0 || kind & CO_FAST_HIDDEN != 0 {
                continue;
            }
        }
        let name_at = names.wrapping_add(layout.tuple_items + 8 * i);
        let name = read_str(mem, layout, mem.read_u64(name_at)?)?;
        let slot = mem.read_u64(frame.wrapping_add(layout.frame_localsplus + 8 * i))?;
        if let Some(value) = decode_slot(slot, stackrefs) {
            locals.push((name, value));
        }
    }
    // The frame still runs `code` once its slots are read: a frame returned from and reused
    // by another call meanwhile (the process runs on) would give that call's values these
    // names.
    let now = mem.read_u64(frame.wrapping_add(layout.frame_code))? & !STACKREF_TAG_BITS;
    if now != code {
        return Err(DecodeError::invalid(
            "frame (reused by another call while its locals were read)",
            frame,
        ));
    }
    Ok(locals)
}

/// What the local slot word `slot` holds (`None`: unbound); `stackrefs` when slots are tagged
/// `_PyStackRef`s (3.14+).
pub fn decode_slot(slot: u64, stackrefs: bool) -> Option<LocalSlot> {
    if stackrefs && slot & STACKREF_INT_TAG == STACKREF_INT_TAG {
        return Some(LocalSlot::SmallInt((slot as i64) >> 2));
    }
    let object = if stackrefs {
        slot & !STACKREF_INT_TAG
    } else {
        slot
    };
    (object != 0).then_some(LocalSlot::Object(object))
}

/// The rendering of the object at `addr`; never fails (an unreadable value says so).
fn show(mem: &impl ReadMemory, layout: &Layout, addr: u64) -> String {
    let type_name = type_name(mem, layout, addr).unwrap_or_else(|| "?".to_string());
    let plain = match type_name.as_str() {
        "NoneType" => Some("None".to_string()),
        "bool" => read_int(mem, layout, addr)
            .ok()
            .map(|v| if v == 0 { "False" } else { "True" }.to_string()),
        "int" => read_int(mem, layout, addr).ok().map(|v| v.to_string()),
        "float" => mem
            .read_u64(addr.wrapping_add(layout.float_value))
            .ok()
            .map(|bits| format!("{:?}", f64::from_bits(bits))),
        "str" => read_str(mem, layout, addr).ok().map(|text| {
            let shown: String = text.chars().take(MAX_SHOWN).collect();
            let more = if shown.len() < text.len() { "…" } else { "" };
            format!("{shown:?}{more}")
        }),
        "bytes" => read_bytes(mem, layout, addr).ok().map(|bytes| {
            let shown: String = bytes
                .iter()
                .take(MAX_SHOWN)
                .flat_map(|b| std::ascii::escape_default(*b))
                .map(char::from)
                .collect();
            let more = if bytes.len() > MAX_SHOWN { "…" } else { "" };
            format!("b\"{shown}\"{more}")
        }),
        _ => None,
    };
    plain.unwrap_or_else(|| format!("<{type_name} at {addr:#x}>"))
}

/// `tp_name` of the object's type, bounded.
pub fn type_name(mem: &impl ReadMemory, layout: &Layout, addr: u64) -> Option<String> {
    let ty = mem.read_u64(addr.wrapping_add(layout.object_type)).ok()?;
    let name = mem.read_u64(ty.wrapping_add(layout.type_name)).ok()?;
    let mut buf = [0u8; 64];
    for len in [64usize, 16] {
        if mem.read(name, &mut buf[..len]).is_ok() {
            let end = buf[..len].iter().position(|&b| b == 0)?;
            return std::str::from_utf8(&buf[..end]).ok().map(str::to_string);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::SliceMemory;
    use crate::python::layouts::{SUPPORTED, layout_for};

    /// A frame at 0x1000 whose code word says `running`, and a code object at 0x2000 with
    /// one local, `x`, bound to the object at 0x9000.
    fn frame_running(layout: &Layout, running: u64) -> SliceMemory {
        const BASE: u64 = 0x1000;
        let mut bytes = vec![0u8; 0x4000];
        let mut put = |at: u64, value: u64| {
            let at = (at - BASE) as usize;
            bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
        };
        let (frame, code, names, name, kinds) = (0x1000, 0x2000, 0x3000, 0x6000, 0x3800);
        put(frame + layout.frame_code, running);
        put(frame + layout.frame_localsplus, 0x9000);
        put(code + layout.code_localnames, names);
        put(code + layout.code_nlocals, 1);
        put(names + layout.var_size, 1);
        put(names + layout.tuple_items, name);
        if let Some(at) = layout.code_localkinds {
            put(code + at, kinds);
            put(kinds + layout.var_size, 1);
            put(kinds + layout.bytes_sval, u64::from(CO_FAST_LOCAL));
        }
        let mut mem = SliceMemory::new();
        mem.map(BASE, bytes);
        // `x` as a compact ASCII str.
        let mut text = vec![0u8; 0x100];
        let length = layout.unicode_length as usize;
        text[length..length + 8].copy_from_slice(&1u64.to_le_bytes());
        let state = layout.unicode_state as usize;
        text[state] = (1 << 2) | (1 << 5) | (1 << 6);
        text[layout.unicode_ascii_size as usize] = b'x';
        mem.map(name, text);
        mem
    }

    #[test]
    fn locals_of_a_frame_reused_while_read_are_not_named() {
        for &(major, minor) in SUPPORTED {
            let layout = layout_for(major, minor).expect("layout");
            let same = frame_running(layout, 0x2000);
            let slots = local_slots(&same, layout, 0x1000, 0x2000);
            assert_eq!(
                slots.map_err(|e| e.to_string()),
                Ok(vec![("x".to_string(), LocalSlot::Object(0x9000))]),
                "{major}.{minor}"
            );
            let reused = frame_running(layout, 0x2800);
            assert!(
                local_slots(&reused, layout, 0x1000, 0x2000).is_err(),
                "{major}.{minor}"
            );
        }
    }
}
