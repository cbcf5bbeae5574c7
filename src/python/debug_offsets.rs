//! CPython 3.13's `_Py_DebugOffsets`: the table of struct offsets the interpreter itself
//! publishes at the start of `_PyRuntime` for out-of-process tools. Read from the target,
//! it fills a [`Layout`] and cross-checks the generated one.

use super::layout::Layout;
use crate::attach::ReadMemory;
use crate::python::objects::DecodeError;

/// The 8 bytes that open `_Py_DebugOffsets`.
pub const COOKIE: &[u8; 8] = b"xdebugpy";

/// The 3.13 `_Py_DebugOffsets` as 64-bit words after the cookie: version, free_threaded, then
/// each section (`size` first, then its members) in declaration order.
const WORDS: usize = 2 + 3 + 13 + 9 + 6 + 10 + 2 + 4 + 3 + 3 + 3 + 2 + 3 + 3 + 4 + 2;

/// What the interpreter published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugOffsets {
    /// `PY_VERSION_HEX` of the interpreter.
    pub version: u64,
    /// Whether it is a free-threaded build.
    pub free_threaded: bool,
    words: Vec<u64>,
}

/// Named positions in `words` (after the cookie).
mod at {
    pub const RUNTIME_INTERPRETERS_HEAD: usize = 2 + 2;
    const INTERP: usize = 5;
    pub const INTERP_NEXT: usize = INTERP + 2;
    pub const INTERP_THREADS_HEAD: usize = INTERP + 3;
    pub const INTERP_IMPORTS_MODULES: usize = INTERP + 5;
    pub const INTERP_CEVAL_GIL: usize = INTERP + 8;
    pub const INTERP_GIL_RUNTIME_STATE: usize = INTERP + 9;
    pub const INTERP_GIL_LOCKED: usize = INTERP + 11;
    pub const INTERP_GIL_HOLDER: usize = INTERP + 12;
    const TSTATE: usize = INTERP + 13;
    pub const TSTATE_NEXT: usize = TSTATE + 2;
    pub const TSTATE_INTERP: usize = TSTATE + 3;
    pub const TSTATE_CURRENT_FRAME: usize = TSTATE + 4;
    pub const TSTATE_THREAD_ID: usize = TSTATE + 5;
    pub const TSTATE_NATIVE_THREAD_ID: usize = TSTATE + 6;
    pub const TSTATE_DATASTACK_CHUNK: usize = TSTATE + 7;
    const FRAME: usize = TSTATE + 9;
    pub const FRAME_SIZE: usize = FRAME;
    pub const FRAME_PREVIOUS: usize = FRAME + 1;
    pub const FRAME_EXECUTABLE: usize = FRAME + 2;
    pub const FRAME_INSTR_PTR: usize = FRAME + 3;
    pub const FRAME_OWNER: usize = FRAME + 5;
    const CODE: usize = FRAME + 6;
    pub const CODE_FILENAME: usize = CODE + 1;
    pub const CODE_NAME: usize = CODE + 2;
    pub const CODE_QUALNAME: usize = CODE + 3;
    pub const CODE_LINETABLE: usize = CODE + 4;
    pub const CODE_FIRSTLINENO: usize = CODE + 5;
    pub const CODE_CO_CODE_ADAPTIVE: usize = CODE + 9;
    const PYOBJECT: usize = CODE + 10;
    pub const OBJECT_TYPE: usize = PYOBJECT + 1;
    const TYPE: usize = PYOBJECT + 2;
    pub const TYPE_NAME: usize = TYPE + 1;
    pub const TYPE_FLAGS: usize = TYPE + 3;
    const TUPLE: usize = TYPE + 4;
    const LIST: usize = TUPLE + 3;
    const DICT: usize = LIST + 3;
    pub const DICT_KEYS: usize = DICT + 1;
    pub const DICT_VALUES: usize = DICT + 2;
    const FLOAT: usize = DICT + 3;
    const LONG: usize = FLOAT + 2;
    pub const LONG_LV_TAG: usize = LONG + 1;
    pub const LONG_DIGIT: usize = LONG + 2;
    const BYTES: usize = LONG + 3;
    pub const BYTES_SIZE: usize = BYTES + 1;
    pub const BYTES_SVAL: usize = BYTES + 2;
    const UNICODE: usize = BYTES + 3;
    pub const UNICODE_STATE: usize = UNICODE + 1;
    pub const UNICODE_LENGTH: usize = UNICODE + 2;
    pub const UNICODE_ASCII_SIZE: usize = UNICODE + 3;
}

impl DebugOffsets {
    /// Reads the table at `runtime` (the address of `_PyRuntime`); `None` if the cookie is
    /// not there (the version predates it).
    pub fn read(mem: &impl ReadMemory, runtime: u64) -> Result<Option<Self>, DecodeError> {
        let raw = mem.read_vec(runtime, 8 + WORDS * 8)?;
        if &raw[..8] != COOKIE {
            return Ok(None);
        }
        let words: Vec<u64> = raw[8..]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        Ok(Some(DebugOffsets {
            version: words[0],
            free_threaded: words[1] != 0,
            words,
        }))
    }

    fn word(&self, index: usize) -> u64 {
        self.words.get(index).copied().unwrap_or(0)
    }

    /// `base` with every member the interpreter published replaced by its own value, and the
    /// names of the members where the two disagreed.
    pub fn apply(&self, base: &Layout) -> (Layout, Vec<&'static str>) {
        let mut layout = *base;
        let mut differences = Vec::new();
        let gil_state = self.word(at::INTERP_GIL_RUNTIME_STATE);
        macro_rules! set {
            ($field:ident, $value:expr) => {{
                let value: u64 = $value;
                if layout.$field != value {
                    differences.push(stringify!($field));
                    layout.$field = value;
                }
            }};
            (some $field:ident, $value:expr) => {{
                let value: Option<u64> = Some($value);
                if layout.$field != value {
                    differences.push(stringify!($field));
                    layout.$field = value;
                }
            }};
        }
        set!(some runtime_interpreters_head, self.word(at::RUNTIME_INTERPRETERS_HEAD));
        set!(interp_next, self.word(at::INTERP_NEXT));
        set!(interp_threads_head, self.word(at::INTERP_THREADS_HEAD));
        set!(interp_modules, self.word(at::INTERP_IMPORTS_MODULES));
        set!(some interp_gil_ptr, self.word(at::INTERP_CEVAL_GIL));
        set!(some gil_locked, self.word(at::INTERP_GIL_LOCKED).wrapping_sub(gil_state));
        set!(some gil_last_holder, self.word(at::INTERP_GIL_HOLDER).wrapping_sub(gil_state));
        set!(tstate_next, self.word(at::TSTATE_NEXT));
        set!(tstate_interp, self.word(at::TSTATE_INTERP));
        set!(tstate_frame, self.word(at::TSTATE_CURRENT_FRAME));
        set!(tstate_thread_id, self.word(at::TSTATE_THREAD_ID));
        set!(some tstate_native_thread_id, self.word(at::TSTATE_NATIVE_THREAD_ID));
        set!(some tstate_datastack_chunk, self.word(at::TSTATE_DATASTACK_CHUNK));
        set!(some frame_size, self.word(at::FRAME_SIZE));
        set!(frame_back, self.word(at::FRAME_PREVIOUS));
        set!(frame_code, self.word(at::FRAME_EXECUTABLE));
        set!(frame_lasti, self.word(at::FRAME_INSTR_PTR));
        set!(some frame_owner, self.word(at::FRAME_OWNER));
        set!(code_filename, self.word(at::CODE_FILENAME));
        set!(code_name, self.word(at::CODE_NAME));
        set!(some code_qualname, self.word(at::CODE_QUALNAME));
        set!(code_linetable, self.word(at::CODE_LINETABLE));
        set!(code_firstlineno, self.word(at::CODE_FIRSTLINENO));
        set!(some code_code_adaptive, self.word(at::CODE_CO_CODE_ADAPTIVE));
        set!(object_type, self.word(at::OBJECT_TYPE));
        set!(type_name, self.word(at::TYPE_NAME));
        set!(type_flags, self.word(at::TYPE_FLAGS));
        set!(dict_keys, self.word(at::DICT_KEYS));
        set!(dict_values, self.word(at::DICT_VALUES));
        set!(some long_lv_tag, self.word(at::LONG_LV_TAG));
        set!(long_digit, self.word(at::LONG_DIGIT));
        set!(var_size, self.word(at::BYTES_SIZE));
        set!(bytes_sval, self.word(at::BYTES_SVAL));
        set!(unicode_state, self.word(at::UNICODE_STATE));
        set!(unicode_length, self.word(at::UNICODE_LENGTH));
        set!(unicode_ascii_size, self.word(at::UNICODE_ASCII_SIZE));
        (layout, differences)
    }
}
