//! The interpreters and thread states of a target: walking `PyInterpreterState` and
//! `PyThreadState` lists, finding each thread's innermost frame, which thread holds the GIL,
//! and `threading.Thread` names from `threading._active`.

use super::layout::Layout;
use super::objects::{
    DecodeError, dict_get_str, dict_items, dict_values_header, field_u64, keys_items, read_str,
    read_u64_int, span_of,
};
use crate::attach::ReadMemory;
use std::collections::HashMap;

/// The most interpreters and threads per interpreter the walker follows.
const MAX_INTERPRETERS: usize = 256;
const MAX_THREADS: usize = 16384;

/// `struct pthread.tid` in glibc on x86_64: how 3.6 and 3.7, which do not record the kernel
/// thread id, are mapped to one (each candidate is checked against `/proc/PID/task`).
pub const GLIBC_PTHREAD_TID_OFFSET: u64 = 0x2d0;

/// One `PyThreadState` as read from the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawThread {
    /// Address of the `PyThreadState`.
    pub tstate: u64,
    /// Address of its interpreter.
    pub interp: u64,
    /// `thread_id` (`pthread_t`).
    pub thread_id: u64,
    /// `native_thread_id` where the version has it.
    pub native_id: Option<u32>,
    /// The innermost frame (0 when the thread runs no Python code).
    pub first_frame: u64,
    /// `base_frame` (3.15+): the sentinel frame a whole chain of this thread ends at.
    pub base_frame: Option<u64>,
}

/// Every thread state of every interpreter, starting at the first interpreter `interp_head`.
pub fn thread_states(
    mem: &impl ReadMemory,
    layout: &Layout,
    interp_head: u64,
) -> Result<Vec<RawThread>, DecodeError> {
    let span = span_of(&[
        layout.tstate_next,
        layout.tstate_interp,
        layout.tstate_frame,
        layout.tstate_thread_id,
        layout.tstate_native_thread_id.unwrap_or(0),
        layout.tstate_base_frame.unwrap_or(0),
    ]);
    let mut buf = vec![0u8; span];
    let mut threads = Vec::new();
    let mut interp = interp_head;
    let mut interps = 0usize;
    while interp != 0 {
        interps += 1;
        if interps > MAX_INTERPRETERS {
            return Err(DecodeError::invalid("interpreter list", interp_head));
        }
        let mut tstate = mem.read_u64(interp.wrapping_add(layout.interp_threads_head))?;
        while tstate != 0 {
            if threads.len() >= MAX_THREADS {
                return Err(DecodeError::invalid("thread list", interp));
            }
            mem.read(tstate, &mut buf)?;
            let first_frame = frame_from_field(mem, layout, field_u64(&buf, layout.tstate_frame))?;
            threads.push(RawThread {
                tstate,
                interp,
                thread_id: field_u64(&buf, layout.tstate_thread_id),
                native_id: layout
                    .tstate_native_thread_id
                    .map(|at| field_u64(&buf, at) as u32),
                first_frame,
                base_frame: layout.tstate_base_frame.map(|at| field_u64(&buf, at)),
            });
            tstate = field_u64(&buf, layout.tstate_next);
        }
        interp = mem.read_u64(interp.wrapping_add(layout.interp_next))?;
    }
    Ok(threads)
}

/// The innermost frame of the thread state at `tstate`, read now.
pub fn current_frame(
    mem: &impl ReadMemory,
    layout: &Layout,
    tstate: u64,
) -> Result<u64, DecodeError> {
    let field = mem.read_u64(tstate.wrapping_add(layout.tstate_frame))?;
    frame_from_field(mem, layout, field)
}

/// The innermost frame from the thread state's frame member: the frame itself, or (3.11,
/// 3.12) the `_PyCFrame` that points to it.
fn frame_from_field(
    mem: &impl ReadMemory,
    layout: &Layout,
    field: u64,
) -> Result<u64, DecodeError> {
    match layout.cframe_current_frame {
        Some(current_at) if field != 0 => Ok(mem.read_u64(field.wrapping_add(current_at))?),
        Some(_) => Ok(0),
        None => Ok(field),
    }
}

/// Where a version keeps the thread state that holds the GIL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GilLocation {
    /// A global `PyThreadState *` (3.6: `_PyThreadState_Current`; 3.7–3.11:
    /// `_PyRuntime.gilstate.tstate_current`).
    Current(u64),
    /// Each interpreter's `ceval.gil` pointer to its lock state (3.12+).
    PerInterpreter,
    /// Not known for this target.
    Unknown,
}

/// The thread state holding the GIL of `interp`, if any.
pub fn gil_holder(
    mem: &impl ReadMemory,
    layout: &Layout,
    location: GilLocation,
    interp: u64,
) -> Option<u64> {
    match location {
        GilLocation::Current(addr) => mem.read_u64(addr).ok().filter(|t| *t != 0),
        GilLocation::PerInterpreter => {
            let gil = mem
                .read_u64(interp.wrapping_add(layout.interp_gil_ptr?))
                .ok()?;
            let locked = mem.read_u32(gil.wrapping_add(layout.gil_locked?)).ok()?;
            let holder = mem
                .read_u64(gil.wrapping_add(layout.gil_last_holder?))
                .ok()?;
            (locked != 0 && holder != 0).then_some(holder)
        }
        GilLocation::Unknown => None,
    }
}

/// `Py_TPFLAGS_INLINE_VALUES` (3.13+).
const TPFLAGS_INLINE_VALUES: u64 = 1 << 2;
/// `Py_TPFLAGS_MANAGED_DICT` (3.11+).
const TPFLAGS_MANAGED_DICT: u64 = 1 << 4;

/// `sys.modules[module].name` of interpreter `interp`, if the module is imported and has it.
pub fn module_global(
    mem: &impl ReadMemory,
    layout: &Layout,
    interp: u64,
    module: &str,
    name: &str,
) -> Result<Option<u64>, DecodeError> {
    let modules = mem.read_u64(interp.wrapping_add(layout.interp_modules))?;
    if modules == 0 {
        return Ok(None);
    }
    let Some(module) = dict_get_str(mem, layout, modules, module)? else {
        return Ok(None);
    };
    let module_dict = mem.read_u64(module.wrapping_add(layout.module_dict))?;
    dict_get_str(mem, layout, module_dict, name)
}

/// Thread names by `threading.get_ident()`, from `sys.modules['threading']._active`.
/// Empty when the threading module was never imported.
pub fn thread_names(
    mem: &impl ReadMemory,
    layout: &Layout,
    interp: u64,
) -> Result<HashMap<u64, String>, DecodeError> {
    let mut names = HashMap::new();
    let Some(active) = module_global(mem, layout, interp, "threading", "_active")? else {
        return Ok(names);
    };
    for (key, thread) in dict_items(mem, layout, active)? {
        let Ok(ident) = read_u64_int(mem, layout, key) else {
            continue;
        };
        if let Ok(Some(name)) = instance_attribute(mem, layout, thread, "_name")
            && let Ok(name) = read_str(mem, layout, name)
        {
            names.insert(ident, name);
        }
    }
    Ok(names)
}

/// Looks up an attribute in an instance's `__dict__`, wherever the version keeps it.
pub fn instance_attribute(
    mem: &impl ReadMemory,
    layout: &Layout,
    obj: u64,
    name: &str,
) -> Result<Option<u64>, DecodeError> {
    let ty = mem.read_u64(obj.wrapping_add(layout.object_type))?;
    let flags = mem.read_u64(ty.wrapping_add(layout.type_flags))?;
    let managed = layout.capabilities().managed_dicts && flags & TPFLAGS_MANAGED_DICT != 0;
    if !managed {
        let offset = mem.read_u64(ty.wrapping_add(layout.type_dictoffset))? as i64;
        if offset <= 0 {
            return Ok(None);
        }
        let dict = mem.read_u64(obj.wrapping_add(offset as u64))?;
        return if dict == 0 {
            Ok(None)
        } else {
            dict_get_str(mem, layout, dict, name)
        };
    }
    // The managed dict pointer sits three words before the object (3.11+).
    let dict_or_values = mem.read_u64(obj.wrapping_sub(24))?;
    let values = match layout.version {
        (3, 11) if dict_or_values == 0 => mem.read_u64(obj.wrapping_sub(32))?,
        (3, 12) if dict_or_values & 1 == 1 => dict_or_values.wrapping_add(1),
        (3, 13..) if dict_or_values == 0 && flags & TPFLAGS_INLINE_VALUES != 0 => {
            let basic_size = mem.read_u64(ty.wrapping_add(layout.type_basicsize))?;
            obj.wrapping_add(basic_size)
                .wrapping_add(dict_values_header(layout))
        }
        _ if dict_or_values != 0 => return dict_get_str(mem, layout, dict_or_values, name),
        _ => return Ok(None),
    };
    let Some(cached_keys_at) = layout.heaptype_cached_keys else {
        return Ok(None);
    };
    let keys = mem.read_u64(ty.wrapping_add(cached_keys_at))?;
    for (key, value) in keys_items(mem, layout, keys, Some(values))? {
        if read_str(mem, layout, key).is_ok_and(|k| k == name) {
            return Ok(Some(value));
        }
    }
    Ok(None)
}
