//! What each CPython version's runtime does differently, named once: every `3.N` fact the
//! readers and the kernel walker branch on is a field here, not a version comparison in their
//! files.
//!
//! Owns: the mapping from `(major, minor)` to those facts. Must not touch: layouts (offsets
//! are `layout`'s and `debug_offsets`'), reading memory.

/// The version facts the readers branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// 3.7+: the interpreters hang off `_PyRuntime` (before: the `interp_head` symbol).
    pub runtime_root: bool,
    /// 3.10+: pymalloc's pools are 16 KiB on 64-bit (arenas 1 MiB); before, 4 KiB.
    pub large_pools: bool,
    /// 3.10+: `f_lasti` counts code units (2 bytes each), not bytes.
    pub lasti_in_code_units: bool,
    /// 3.10+: a code object's line numbers are in `co_linetable` (before: `co_lnotab`).
    pub line_table: bool,
    /// 3.11+: frames are `_PyInterpreterFrame`s with code-object pointers and an instruction
    /// pointer (before: a chain of `PyFrameObject`s with an `int f_lasti`).
    pub interpreter_frames: bool,
    /// 3.11+: objects may keep their `__dict__` inline (`Py_TPFLAGS_MANAGED_DICT`).
    pub managed_dicts: bool,
    /// 3.12+: an object's weak reference list may live in the pre-header too
    /// (`Py_TPFLAGS_MANAGED_WEAKREF`), which `sys.getsizeof` then counts.
    pub managed_weakrefs: bool,
    /// 3.11+: a code object names its locals, cells and free variables in one
    /// `co_localsplusnames` tuple (before: `co_varnames`, `co_cellvars`, `co_freevars`).
    pub localsplus_names: bool,
    /// 3.11 and 3.12 only: `sys.getsizeof` of a built-in (static) type object adds its
    /// metatype's pre-header (3.13 leaves it off static types again).
    pub static_types_sized_with_pre_header: bool,
    /// 3.12+: frames owned by the C stack or the interpreter are shims, not Python code.
    pub shim_frames: bool,
    /// 3.13+: a `PyDictValues` has a header before its first value pointer.
    pub dict_values_header: bool,
    /// 3.13+: `_PyRuntime` starts with `_Py_DebugOffsets`; a frame's `instr_ptr` points at
    /// the instruction that is running (before: `prev_instr`, at the one before it).
    pub debug_offsets: bool,
    /// 3.14+: the remote-execution protocol (PEP 768) can run a script in the target.
    pub remote_exec: bool,
    /// 3.14+: `f_executable` and the frame's locals are tagged `_PyStackRef`s.
    pub tagged_stack_refs: bool,
    /// 3.15+: a generator's `gi_frame_state` counts up from `FRAME_CREATED = 0` to
    /// `FRAME_CLEARED = 5` (3.11–3.14: negative while created or suspended, 0 executing,
    /// `FRAME_COMPLETED = 1`, `FRAME_CLEARED = 4`).
    pub gen_frame_states_from_zero: bool,
}

impl Capabilities {
    /// The facts of CPython `major.minor`.
    pub fn of(version: (u8, u8)) -> Capabilities {
        let at_least = |minor: u8| version >= (3, minor);
        Capabilities {
            runtime_root: at_least(7),
            large_pools: at_least(10),
            lasti_in_code_units: at_least(10),
            line_table: at_least(10),
            interpreter_frames: at_least(11),
            managed_dicts: at_least(11),
            managed_weakrefs: at_least(12),
            localsplus_names: at_least(11),
            static_types_sized_with_pre_header: at_least(11) && !at_least(13),
            shim_frames: at_least(12),
            dict_values_header: at_least(13),
            debug_offsets: at_least(13),
            remote_exec: at_least(14),
            tagged_stack_refs: at_least(14),
            gen_frame_states_from_zero: at_least(15),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Capabilities;

    #[test]
    fn each_fact_starts_at_its_version() {
        let old = Capabilities::of((3, 6));
        assert!(!old.runtime_root && !old.interpreter_frames && !old.tagged_stack_refs);
        assert!(Capabilities::of((3, 7)).runtime_root);
        assert!(!Capabilities::of((3, 10)).interpreter_frames);
        let c311 = Capabilities::of((3, 11));
        assert!(c311.interpreter_frames && c311.managed_dicts && !c311.shim_frames);
        assert!(Capabilities::of((3, 12)).shim_frames);
        assert!(!c311.managed_weakrefs && Capabilities::of((3, 12)).managed_weakrefs);
        assert!(!Capabilities::of((3, 12)).dict_values_header);
        assert!(Capabilities::of((3, 13)).dict_values_header);
        assert!(
            Capabilities::of((3, 13)).debug_offsets && !Capabilities::of((3, 12)).debug_offsets
        );
        assert!(!Capabilities::of((3, 13)).tagged_stack_refs);
        assert!(!Capabilities::of((3, 13)).remote_exec && Capabilities::of((3, 14)).remote_exec);
        assert!(!Capabilities::of((3, 9)).large_pools && Capabilities::of((3, 10)).large_pools);
        assert!(!Capabilities::of((3, 9)).line_table && Capabilities::of((3, 10)).line_table);
        assert!(!Capabilities::of((3, 10)).localsplus_names && c311.localsplus_names);
        let sized = |minor| Capabilities::of((3, minor)).static_types_sized_with_pre_header;
        assert!(!sized(10) && sized(11) && sized(12) && !sized(13));
        assert!(Capabilities::of((3, 15)).tagged_stack_refs);
        assert!(
            !Capabilities::of((3, 14)).gen_frame_states_from_zero
                && Capabilities::of((3, 15)).gen_frame_states_from_zero
        );
    }
}
