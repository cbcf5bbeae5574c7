//! Decoding CPython objects read from the target: `str`, `bytes`, `int`, and `dict` entries.
//! Every length comes from the target and is bounded before use; garbage yields an error,
//! never a panic or an unbounded allocation.

use super::layout::Layout;
use crate::attach::{MemoryError, ReadMemory};
use thiserror::Error;

/// Why a structure read from the target could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The memory could not be read.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The bytes read do not look like the expected object.
    #[error("not a valid {what} at {addr:#x}")]
    Invalid {
        /// What was expected there.
        what: &'static str,
        /// Where.
        addr: u64,
    },
}

impl DecodeError {
    /// An `Invalid` error for `what` at `addr`.
    pub fn invalid(what: &'static str, addr: u64) -> Self {
        DecodeError::Invalid { what, addr }
    }
}

/// The longest string (in characters) or bytes object (in bytes) the reader will copy.
pub const MAX_OBJECT_LEN: u64 = 1 << 20;

fn le_u64(bytes: &[u8], offset: u64) -> Option<u64> {
    let start = usize::try_from(offset).ok()?;
    let raw = bytes.get(start..start.checked_add(8)?)?;
    Some(u64::from_le_bytes(raw.try_into().ok()?))
}

fn le_u32(bytes: &[u8], offset: u64) -> Option<u32> {
    let start = usize::try_from(offset).ok()?;
    let raw = bytes.get(start..start.checked_add(4)?)?;
    Some(u32::from_le_bytes(raw.try_into().ok()?))
}

/// How many bytes to copy so that 8-byte members at all `offsets` are in the copy.
pub fn span_of(offsets: &[u64]) -> usize {
    offsets.iter().max().map_or(8, |m| *m as usize + 8)
}

/// A little-endian `u64` at `offset` of a copied structure (0 if out of range).
pub fn field_u64(bytes: &[u8], offset: u64) -> u64 {
    le_u64(bytes, offset).unwrap_or(0)
}

/// A little-endian `u32` at `offset` of a copied structure (0 if out of range).
pub fn field_u32(bytes: &[u8], offset: u64) -> u32 {
    le_u32(bytes, offset).unwrap_or(0)
}

/// A byte at `offset` of a copied structure (0 if out of range).
pub fn field_u8(bytes: &[u8], offset: u64) -> u8 {
    usize::try_from(offset)
        .ok()
        .and_then(|o| bytes.get(o).copied())
        .unwrap_or(0)
}

/// Reads a `str` object.
pub fn read_str(mem: &impl ReadMemory, layout: &Layout, addr: u64) -> Result<String, DecodeError> {
    if addr == 0 {
        return Err(DecodeError::invalid("str", addr));
    }
    let header = mem.read_vec(addr, layout.unicode_compact_size as usize)?;
    let length = field_u64(&header, layout.unicode_length);
    let state = field_u32(&header, layout.unicode_state);
    let kind = (state >> 2) & 7;
    let compact = (state >> 5) & 1 == 1;
    let ascii = (state >> 6) & 1 == 1;
    if !compact || length > MAX_OBJECT_LEN || !matches!(kind, 1 | 2 | 4) || (ascii && kind != 1) {
        return Err(DecodeError::invalid("str", addr));
    }
    let data_at = if ascii {
        layout.unicode_ascii_size
    } else {
        layout.unicode_compact_size
    };
    let data = mem.read_vec(
        addr.wrapping_add(data_at),
        (length * u64::from(kind)) as usize,
    )?;
    let text = match kind {
        1 if ascii => String::from_utf8(data).map_err(|_| DecodeError::invalid("str", addr))?,
        1 => data.iter().map(|&b| char::from(b)).collect(),
        2 => data
            .chunks_exact(2)
            .map(|c| {
                char::from_u32(u32::from(u16::from_le_bytes([c[0], c[1]]))).unwrap_or('\u{fffd}')
            })
            .collect(),
        _ => data
            .chunks_exact(4)
            .map(|c| {
                char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]])).unwrap_or('\u{fffd}')
            })
            .collect(),
    };
    Ok(text)
}

/// Reads the contents of a `bytes` object.
pub fn read_bytes(
    mem: &impl ReadMemory,
    layout: &Layout,
    addr: u64,
) -> Result<Vec<u8>, DecodeError> {
    if addr == 0 {
        return Err(DecodeError::invalid("bytes", addr));
    }
    let size = mem.read_u64(addr.wrapping_add(layout.var_size))?;
    if size > MAX_OBJECT_LEN {
        return Err(DecodeError::invalid("bytes", addr));
    }
    Ok(mem.read_vec(addr.wrapping_add(layout.bytes_sval), size as usize)?)
}

/// Reads a non-negative `int` that fits in 64 bits (thread idents).
pub fn read_u64_int(mem: &impl ReadMemory, layout: &Layout, addr: u64) -> Result<u64, DecodeError> {
    u64::try_from(read_int(mem, layout, addr)?).map_err(|_| DecodeError::invalid("int", addr))
}

/// Reads an `int` of at most three 30-bit digits (any value below 2^90 in magnitude).
pub fn read_int(mem: &impl ReadMemory, layout: &Layout, addr: u64) -> Result<i128, DecodeError> {
    let (ndigits, negative) = match layout.long_lv_tag {
        Some(tag_at) => {
            let tag = mem.read_u64(addr.wrapping_add(tag_at))?;
            (tag >> 3, tag & 3 == 2)
        }
        None => {
            let size = mem.read_u64(addr.wrapping_add(layout.var_size))? as i64;
            (size.unsigned_abs(), size < 0)
        }
    };
    if ndigits > 3 {
        return Err(DecodeError::invalid("int", addr));
    }
    let mut digits = [0u8; 12];
    let digits = &mut digits[..(ndigits as usize) * 4];
    mem.read(addr.wrapping_add(layout.long_digit), digits)?;
    let mut value: i128 = 0;
    for (i, chunk) in digits.chunks_exact(4).enumerate() {
        let digit = i128::from(u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
        value |= digit << (30 * i as u32);
    }
    Ok(if negative { -value } else { value })
}

/// The most entries of one dict the reader will look at.
const MAX_DICT_ENTRIES: u64 = 1 << 16;

/// The `(key, value)` object pointers of a dict, in insertion order (deleted slots skipped).
pub fn dict_items(
    mem: &impl ReadMemory,
    layout: &Layout,
    dict: u64,
) -> Result<Vec<(u64, u64)>, DecodeError> {
    let keys = mem.read_u64(dict.wrapping_add(layout.dict_keys))?;
    let values = mem.read_u64(dict.wrapping_add(layout.dict_values))?;
    keys_items(
        mem,
        layout,
        keys,
        (values != 0).then(|| values.wrapping_add(dict_values_header(layout))),
    )
}

/// Bytes before the first value pointer of a `PyDictValues` (3.13 added a header).
pub fn dict_values_header(layout: &Layout) -> u64 {
    if layout.capabilities().dict_values_header {
        8
    } else {
        0
    }
}

/// The items of a dict keys object; `values` is the split-table values array, if any.
pub fn keys_items(
    mem: &impl ReadMemory,
    layout: &Layout,
    keys: u64,
    values: Option<u64>,
) -> Result<Vec<(u64, u64)>, DecodeError> {
    keys_items_bounded(mem, layout, keys, values, MAX_DICT_ENTRIES, u64::MAX)
}

/// [`keys_items`] of a table of up to `max_entries` entries (a bigger one is invalid), whose
/// values array (if split) holds at most `values_capacity` pointers: entries past it (keys
/// shared with instances made later) have no value here.
pub fn keys_items_bounded(
    mem: &impl ReadMemory,
    layout: &Layout,
    keys: u64,
    values: Option<u64>,
    max_entries: u64,
    values_capacity: u64,
) -> Result<Vec<(u64, u64)>, DecodeError> {
    if keys == 0 {
        return Err(DecodeError::invalid("dict keys", keys));
    }
    let header = mem.read_vec(keys, layout.dictkeys_indices as usize)?;
    let nentries = field_u64(&header, layout.dictkeys_nentries);
    let (index_bytes, entry_size, entry_key_at) = match (
        layout.dictkeys_size,
        layout.dictkeys_log2_index_bytes,
        layout.dictkeys_kind,
    ) {
        (Some(size_at), _, _) => {
            let size = field_u64(&header, size_at);
            if size > max_entries * 2 {
                return Err(DecodeError::invalid("dict keys", keys));
            }
            let width = match size {
                0..=0xff => 1,
                0x100..=0xffff => 2,
                _ => 4,
            };
            (size * width, layout.dict_entry_size, 8)
        }
        (None, Some(log2_index_at), Some(kind_at)) => {
            let log2 = field_u8(&header, log2_index_at);
            if log2 > 24 {
                return Err(DecodeError::invalid("dict keys", keys));
            }
            let general = field_u8(&header, kind_at) == 0;
            match (general, layout.dict_unicode_entry_size) {
                (false, Some(unicode_size)) => (1u64 << log2, unicode_size, 0),
                _ => (1u64 << log2, layout.dict_entry_size, 8),
            }
        }
        _ => return Err(DecodeError::invalid("dict keys", keys)),
    };
    if nentries > max_entries {
        return Err(DecodeError::invalid("dict keys", keys));
    }
    let entries_at = keys
        .wrapping_add(layout.dictkeys_indices)
        .wrapping_add(index_bytes);
    let entries = mem.read_vec(entries_at, (nentries * entry_size) as usize)?;
    let with_values = nentries.min(values_capacity);
    let value_ptrs = match values {
        Some(values) => Some(mem.read_vec(values, (with_values * 8) as usize)?),
        None => None,
    };
    let mut items = Vec::new();
    let readable = if value_ptrs.is_some() {
        with_values
    } else {
        nentries
    };
    for i in 0..readable {
        let key = field_u64(&entries, i * entry_size + entry_key_at);
        let value = match &value_ptrs {
            Some(v) => field_u64(v, i * 8),
            None => field_u64(&entries, i * entry_size + entry_key_at + 8),
        };
        if key != 0 && value != 0 {
            items.push((key, value));
        }
    }
    Ok(items)
}

/// Looks up a `str` key in a dict by comparing the keys' text (no hashing needed).
pub fn dict_get_str(
    mem: &impl ReadMemory,
    layout: &Layout,
    dict: u64,
    wanted: &str,
) -> Result<Option<u64>, DecodeError> {
    for (key, value) in dict_items(mem, layout, dict)? {
        if read_str(mem, layout, key).is_ok_and(|k| k == wanted) {
            return Ok(Some(value));
        }
    }
    Ok(None)
}
