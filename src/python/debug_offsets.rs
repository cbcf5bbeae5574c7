//! `_Py_DebugOffsets`: the table of struct offsets that CPython 3.13+ publishes at the start of
//! `_PyRuntime` (the `.PyRuntime` section) for out-of-process tools. Read from the target, it
//! fills a [`Layout`] and cross-checks the generated one.
//!
//! The per-version knowledge here is only the *shape* of that struct in each minor version:
//! which sections it has and which members each holds, in declaration order (every member is
//! a `uint64_t`), transcribed from `Include/internal/pycore_runtime.h` (3.13) and
//! `Include/internal/pycore_debug_offsets.h` (3.14+). A new version needs one more [`Schema`],
//! not a new reader. Nothing else in the program knows these positions.

use super::layout::Layout;
use super::version::PythonVersion;
use crate::attach::ReadMemory;
use crate::python::objects::DecodeError;

/// The 8 bytes that open `_Py_DebugOffsets`.
pub const COOKIE: &[u8; 8] = b"xdebugpy";

/// One section of the struct: its name and its members in declaration order.
type Section = (&'static str, &'static [&'static str]);

/// The shape of `_Py_DebugOffsets` in one CPython minor version (after the cookie, the
/// `version` and `free_threaded` words).
#[derive(Debug)]
pub struct Schema {
    /// The `(major, minor)` it describes (every final release of that minor).
    pub version: (u8, u8),
    /// Pre-releases of that minor whose table has this shape, as exact `PY_VERSION_HEX`
    /// values: a pre-release's table may differ from its final release's, so, as CPython's
    /// own remote-debugging code requires, only an exact match is read.
    pub prereleases: &'static [u64],
    sections: &'static [Section],
}

const RUNTIME: Section = (
    "runtime_state",
    &["size", "finalizing", "interpreters_head"],
);
const PYOBJECT: Section = ("pyobject", &["size", "ob_type"]);
const TUPLE: Section = ("tuple_object", &["size", "ob_item", "ob_size"]);
const LIST: Section = ("list_object", &["size", "ob_item", "ob_size"]);
const SET: Section = ("set_object", &["size", "used", "table", "mask"]);
const DICT: Section = ("dict_object", &["size", "ma_keys", "ma_values"]);
const FLOAT: Section = ("float_object", &["size", "ob_fval"]);
const LONG: Section = ("long_object", &["size", "lv_tag", "ob_digit"]);
const BYTES: Section = ("bytes_object", &["size", "ob_size", "ob_sval"]);
const GEN: Section = (
    "gen_object",
    &["size", "gi_name", "gi_iframe", "gi_frame_state"],
);
const LLIST: Section = ("llist_node", &["next", "prev"]);
const DEBUGGER: Section = (
    "debugger_support",
    &[
        "eval_breaker",
        "remote_debugger_support",
        "remote_debugging_enabled",
        "debugger_pending_call",
        "debugger_script_path",
        "debugger_script_path_size",
    ],
);
const THREAD_3_13: Section = (
    "thread_state",
    &[
        "size",
        "prev",
        "next",
        "interp",
        "current_frame",
        "thread_id",
        "native_thread_id",
        "datastack_chunk",
        "status",
    ],
);
const TYPE_3_13: Section = ("type_object", &["size", "tp_name", "tp_repr", "tp_flags"]);
const UNICODE_3_13: Section = (
    "unicode_object",
    &["size", "state", "length", "asciiobject_size"],
);
const GC_3_13: Section = ("gc", &["size", "collecting"]);
const INTERPRETER_3_14: Section = (
    "interpreter_state",
    &[
        "size",
        "id",
        "next",
        "threads_head",
        "threads_main",
        "gc",
        "imports_modules",
        "sysdict",
        "builtins",
        "ceval_gil",
        "gil_runtime_state",
        "gil_runtime_state_enabled",
        "gil_runtime_state_locked",
        "gil_runtime_state_holder",
        "code_object_generation",
        "tlbc_generation",
    ],
);
const FRAME_3_14: Section = (
    "interpreter_frame",
    &[
        "size",
        "previous",
        "executable",
        "instr_ptr",
        "localsplus",
        "owner",
        "stackpointer",
        "tlbc_index",
    ],
);
const CODE_3_14: Section = (
    "code_object",
    &[
        "size",
        "filename",
        "name",
        "qualname",
        "linetable",
        "firstlineno",
        "argcount",
        "localsplusnames",
        "localspluskinds",
        "co_code_adaptive",
        "co_tlbc",
    ],
);

/// Every shape known, oldest first.
pub const SCHEMAS: &[Schema] = &[
    Schema {
        version: (3, 13),
        prereleases: &[],
        sections: &[
            RUNTIME,
            (
                "interpreter_state",
                &[
                    "size",
                    "id",
                    "next",
                    "threads_head",
                    "gc",
                    "imports_modules",
                    "sysdict",
                    "builtins",
                    "ceval_gil",
                    "gil_runtime_state",
                    "gil_runtime_state_enabled",
                    "gil_runtime_state_locked",
                    "gil_runtime_state_holder",
                ],
            ),
            THREAD_3_13,
            (
                "interpreter_frame",
                &[
                    "size",
                    "previous",
                    "executable",
                    "instr_ptr",
                    "localsplus",
                    "owner",
                ],
            ),
            (
                "code_object",
                &[
                    "size",
                    "filename",
                    "name",
                    "qualname",
                    "linetable",
                    "firstlineno",
                    "argcount",
                    "localsplusnames",
                    "localspluskinds",
                    "co_code_adaptive",
                ],
            ),
            PYOBJECT,
            TYPE_3_13,
            TUPLE,
            LIST,
            DICT,
            FLOAT,
            LONG,
            BYTES,
            UNICODE_3_13,
            GC_3_13,
        ],
    },
    Schema {
        version: (3, 14),
        prereleases: &[],
        sections: &[
            RUNTIME,
            INTERPRETER_3_14,
            THREAD_3_13,
            FRAME_3_14,
            CODE_3_14,
            PYOBJECT,
            TYPE_3_13,
            TUPLE,
            LIST,
            SET,
            DICT,
            FLOAT,
            LONG,
            BYTES,
            UNICODE_3_13,
            GC_3_13,
            GEN,
            LLIST,
            DEBUGGER,
        ],
    },
    Schema {
        version: (3, 15),
        prereleases: &[],
        sections: &[
            RUNTIME,
            INTERPRETER_3_14,
            (
                "thread_state",
                &[
                    "size",
                    "prev",
                    "next",
                    "interp",
                    "current_frame",
                    "base_frame",
                    "last_profiled_frame",
                    "last_profiled_frame_seq",
                    "thread_id",
                    "native_thread_id",
                    "datastack_chunk",
                    "status",
                    "holds_gil",
                    "gil_requested",
                    "current_exception",
                    "exc_state",
                ],
            ),
            ("err_stackitem", &["exc_value"]),
            FRAME_3_14,
            CODE_3_14,
            PYOBJECT,
            (
                "type_object",
                &[
                    "size",
                    "tp_name",
                    "tp_repr",
                    "tp_flags",
                    "tp_basicsize",
                    "tp_dictoffset",
                ],
            ),
            ("heap_type_object", &["size", "ht_cached_keys"]),
            TUPLE,
            LIST,
            SET,
            DICT,
            FLOAT,
            LONG,
            BYTES,
            (
                "unicode_object",
                &[
                    "size",
                    "state",
                    "length",
                    "asciiobject_size",
                    "compactunicodeobject_size",
                ],
            ),
            (
                "gc",
                &[
                    "size",
                    "collecting",
                    "frame",
                    "generation_stats_size",
                    "generation_stats",
                ],
            ),
            GEN,
            LLIST,
            DEBUGGER,
        ],
    },
];

impl Schema {
    /// The shape for an interpreter of `version`, following CPython's rule: a final release
    /// matches its minor's shape, a pre-release only one that lists it exactly.
    pub fn for_version(version: &PythonVersion, hex: u64) -> Option<&'static Schema> {
        SCHEMAS.iter().find(|s| {
            s.version == (version.major, version.minor)
                && (version.suffix.is_empty() || s.prereleases.contains(&hex))
        })
    }

    /// Every `section.member` with its word index after the cookie, in declaration order.
    pub fn members(&self) -> impl Iterator<Item = (&'static str, &'static str, usize)> + '_ {
        let mut at = 2;
        self.sections.iter().flat_map(move |(section, members)| {
            let start = at;
            at += members.len();
            members
                .iter()
                .enumerate()
                .map(move |(i, member)| (*section, *member, start + i))
        })
    }

    /// How many words follow the cookie.
    pub fn words(&self) -> usize {
        2 + self.sections.iter().map(|(_, m)| m.len()).sum::<usize>()
    }

    /// The word index (after the cookie) of `section.member`.
    fn index(&self, section: &str, member: &str) -> Option<usize> {
        let mut at = 2;
        for (name, members) in self.sections {
            if *name == section {
                return members.iter().position(|m| *m == member).map(|i| at + i);
            }
            at += members.len();
        }
        None
    }
}

/// The first words of the table, enough to choose its [`Schema`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `PY_VERSION_HEX` of the interpreter.
    pub version: u64,
    /// Whether it is a free-threaded build.
    pub free_threaded: bool,
}

impl Header {
    /// Reads the header at `runtime` (the address of `_PyRuntime`); `None` if the cookie is
    /// not there (the version predates it).
    pub fn read(mem: &impl ReadMemory, runtime: u64) -> Result<Option<Header>, DecodeError> {
        let raw = mem.read_vec(runtime, 24)?;
        if &raw[..8] != COOKIE {
            return Ok(None);
        }
        let word = |i: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&raw[8 + 8 * i..16 + 8 * i]);
            u64::from_le_bytes(bytes)
        };
        Ok(Some(Header {
            version: word(0),
            free_threaded: word(1) != 0,
        }))
    }
}

/// What the interpreter published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugOffsets {
    /// `PY_VERSION_HEX` of the interpreter.
    pub version: u64,
    /// Whether it is a free-threaded build.
    pub free_threaded: bool,
    schema: &'static Schema,
    words: Vec<u64>,
}

impl PartialEq for Schema {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
    }
}
impl Eq for Schema {}

impl DebugOffsets {
    /// Reads the whole table at `runtime` with the shape `schema`.
    pub fn read(
        mem: &impl ReadMemory,
        runtime: u64,
        schema: &'static Schema,
    ) -> Result<Self, DecodeError> {
        let raw = mem.read_vec(runtime, 8 + schema.words() * 8)?;
        if &raw[..8] != COOKIE {
            return Err(DecodeError::invalid("_Py_DebugOffsets cookie", runtime));
        }
        let words: Vec<u64> = raw[8..]
            .chunks_exact(8)
            .map(|c| {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(c);
                u64::from_le_bytes(bytes)
            })
            .collect();
        Ok(DebugOffsets {
            version: words[0],
            free_threaded: words[1] != 0,
            schema,
            words,
        })
    }

    /// The published value of `section.member`, if this version's table has it.
    pub fn get(&self, section: &str, member: &str) -> Option<u64> {
        self.schema
            .index(section, member)
            .and_then(|i| self.words.get(i).copied())
    }

    /// `base` with every member the interpreter published replaced by its own value, and the
    /// names of the members where the two disagreed.
    pub fn apply(&self, base: &Layout) -> (Layout, Vec<&'static str>) {
        let mut layout = *base;
        let mut differences = Vec::new();
        let gil_state = self
            .get("interpreter_state", "gil_runtime_state")
            .unwrap_or(0);
        macro_rules! set {
            ($field:ident, $section:literal . $member:literal) => {
                set!(@ $field, self.get($section, $member), |v| v)
            };
            (some $field:ident, $section:literal . $member:literal) => {
                set!(@ $field, self.get($section, $member), Some)
            };
            (some $field:ident, $value:expr) => {
                set!(@ $field, $value, Some)
            };
            (@ $field:ident, $value:expr, $wrap:expr) => {{
                if let Some(value) = $value {
                    let value = $wrap(value);
                    if layout.$field != value {
                        differences.push(stringify!($field));
                        layout.$field = value;
                    }
                }
            }};
        }
        set!(some runtime_interpreters_head, "runtime_state"."interpreters_head");
        set!(interp_next, "interpreter_state"."next");
        set!(interp_threads_head, "interpreter_state"."threads_head");
        set!(interp_modules, "interpreter_state"."imports_modules");
        set!(some interp_gil_ptr, "interpreter_state"."ceval_gil");
        set!(
            some gil_locked,
            self.get("interpreter_state", "gil_runtime_state_locked")
                .map(|v| v.wrapping_sub(gil_state))
        );
        set!(
            some gil_last_holder,
            self.get("interpreter_state", "gil_runtime_state_holder")
                .map(|v| v.wrapping_sub(gil_state))
        );
        set!(tstate_next, "thread_state"."next");
        set!(tstate_interp, "thread_state"."interp");
        set!(tstate_frame, "thread_state"."current_frame");
        set!(some tstate_base_frame, "thread_state"."base_frame");
        set!(tstate_thread_id, "thread_state"."thread_id");
        set!(some tstate_native_thread_id, "thread_state"."native_thread_id");
        set!(some tstate_datastack_chunk, "thread_state"."datastack_chunk");
        set!(some frame_size, "interpreter_frame"."size");
        set!(frame_back, "interpreter_frame"."previous");
        set!(frame_code, "interpreter_frame"."executable");
        set!(frame_lasti, "interpreter_frame"."instr_ptr");
        set!(some frame_owner, "interpreter_frame"."owner");
        set!(frame_localsplus, "interpreter_frame"."localsplus");
        set!(code_filename, "code_object"."filename");
        set!(code_name, "code_object"."name");
        set!(some code_qualname, "code_object"."qualname");
        set!(code_linetable, "code_object"."linetable");
        set!(code_firstlineno, "code_object"."firstlineno");
        set!(code_localnames, "code_object"."localsplusnames");
        set!(some code_localkinds, "code_object"."localspluskinds");
        set!(some code_code_adaptive, "code_object"."co_code_adaptive");
        set!(object_type, "pyobject"."ob_type");
        set!(type_name, "type_object"."tp_name");
        set!(type_flags, "type_object"."tp_flags");
        set!(type_basicsize, "type_object"."tp_basicsize");
        set!(type_dictoffset, "type_object"."tp_dictoffset");
        set!(some heaptype_cached_keys, "heap_type_object"."ht_cached_keys");
        set!(tuple_items, "tuple_object"."ob_item");
        set!(float_value, "float_object"."ob_fval");
        set!(dict_keys, "dict_object"."ma_keys");
        set!(dict_values, "dict_object"."ma_values");
        set!(some long_lv_tag, "long_object"."lv_tag");
        set!(long_digit, "long_object"."ob_digit");
        set!(var_size, "bytes_object"."ob_size");
        set!(bytes_sval, "bytes_object"."ob_sval");
        set!(unicode_state, "unicode_object"."state");
        set!(unicode_length, "unicode_object"."length");
        set!(unicode_ascii_size, "unicode_object"."asciiobject_size");
        set!(unicode_compact_size, "unicode_object"."compactunicodeobject_size");
        set!(some interp_gc, "interpreter_state"."gc");
        set!(list_items, "list_object"."ob_item");
        set!(set_used, "set_object"."used");
        set!(set_mask, "set_object"."mask");
        set!(set_table, "set_object"."table");
        (layout, differences)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_have_the_sizes_of_their_c_structs() {
        // sizeof(_Py_DebugOffsets) / 8 - 1 (the cookie), counted from each version's header.
        let words: Vec<((u8, u8), usize)> =
            SCHEMAS.iter().map(|s| (s.version, s.words())).collect();
        assert_eq!(words, vec![((3, 13), 72), ((3, 14), 94), ((3, 15), 110)]);
    }

    #[test]
    fn members_are_found_where_the_headers_declare_them() {
        let v13 = &SCHEMAS[0];
        assert_eq!(v13.index("runtime_state", "interpreters_head"), Some(4));
        assert_eq!(v13.index("interpreter_state", "threads_head"), Some(8));
        assert_eq!(v13.index("thread_state", "current_frame"), Some(22));
        let v15 = &SCHEMAS[2];
        assert_eq!(v15.index("thread_state", "base_frame"), Some(26));
        assert_eq!(v13.index("thread_state", "base_frame"), None);
        assert_eq!(v15.index("no_such_section", "size"), None);
    }

    #[test]
    fn prereleases_need_an_exact_shape() {
        let final_release = PythonVersion::from_hex(0x030e0af0).expect("3.14.10");
        assert!(Schema::for_version(&final_release, 0x030e0af0).is_some());
        let alpha = PythonVersion::from_hex(0x030f00a3).expect("3.15.0a3");
        assert!(Schema::for_version(&alpha, 0x030f00a3).is_none());
        let unknown = PythonVersion::from_hex(0x031000f0).expect("3.16.0");
        assert!(Schema::for_version(&unknown, 0x031000f0).is_none());
    }
}
