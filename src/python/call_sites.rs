//! Which instructions of a code object can push a Python frame directly (3.11+: the
//! evaluation loop calls without C code between, so the caller stays suspended at that
//! instruction): per-version opcode tables and the walk over a code object's bytecode that
//! finds the instruction an instruction pointer is in. Owns no memory reads; `code.rs` caches
//! the bytecode and `frames.rs` asks.
//!
//! Opcode numbers (specialised and instrumented forms included) and inline cache sizes are
//! fixed within a minor version; they are CPython's own (`dis._all_opmap`,
//! `opcode._inline_cache_entries`, each specialisation sized as its family).

/// Inline cache entries after each 3.11 opcode; `UNKNOWN` for numbers no instruction has.
const CACHES_3_11: [u8; 256] = {
    let mut caches = [UNKNOWN; 256];
    let known: &[u8] = &[
        0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 1, 4, 4, 4, 4, 4, 4, 4, 4, 4, 2, 2, 2, 2,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 0, 0, 0, 5, 5, 0, 0, 0, 0, 0, 0, 5, 10, 10, 10,
        10, 1, 0, 10, 10, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 1, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0, 0, 1, 0, 0, 5, 0,
        0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 4, 4, 0, 0, 0, 4, 4, 10, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1, 4, 0, 0, 0, 0, 0, 1,
        1, 1, 1,
    ];
    let mut op = 0;
    while op < known.len() {
        caches[op] = known[op];
        op += 1;
    }
    caches
};

/// 3.11 opcodes whose instruction can push a frame directly: the CALL and BINARY_SUBSCR
/// families (`BINARY_SUBSCR_GETITEM`).
const CALLERS_3_11: &[u8] = &[17, 18, 19, 20, 21, 22, 23, 24, 25, 171];

/// Inline cache entries after each 3.12 opcode; `UNKNOWN` for numbers no instruction has and
/// for `INSTRUMENTED_INSTRUCTION` and `INSTRUMENTED_LINE`, which hide the opcode they stand for.
const CACHES_3_12: [u8; 256] = {
    let mut caches = [UNKNOWN; 256];
    let known: &[u8] = &[
        0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 1, 0, 0, 1, 1, 0, 1, 0, 1, 1, 1, 1, 1, 3, 3, 1, 0, 0, 3, 3,
        0, 0, 0, 0, 3, 0, 0, 0, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 0, 0, 0, 0, 0, 0, 0, 3, 1, 1, 1,
        1, 0, 1, 1, 1, 1, 1, 1, 0, 0, 9, 0, 9, 9, 0, 0, 9, 9, 9, 9, 9, 9, 9, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 1, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 1, 0, 0, 0, 4, 4, 4, 0, 0, 4, 0, 0, 0,
        0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 4, 0,
        0, 0, 0, 4, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, UNKNOWN, UNKNOWN, 3, 0, 0, 0, 0,
        0,
    ];
    let mut op = 0;
    while op < known.len() {
        caches[op] = known[op];
        op += 1;
    }
    // The instrumented forms (237–252), each sized as the instruction it instruments.
    let instrumented: [u8; 16] = [1, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
    let mut i = 0;
    while i < instrumented.len() {
        caches[237 + i] = instrumented[i];
        i += 1;
    }
    caches
};

/// 3.12 opcodes whose instruction can push a frame directly: the CALL, BINARY_SUBSCR,
/// LOAD_ATTR (properties, `__getattribute__`), SEND and FOR_ITER (generators) families,
/// CALL_FUNCTION_EX, and the instrumented CALL, CALL_FUNCTION_EX and FOR_ITER.
const CALLERS_3_12: &[u8] = &[
    19, 20, 21, 22, 23, 24, 25, 28, 29, 34, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 56, 62, 63,
    64, 65, 70, 72, 73, 76, 77, 78, 79, 80, 81, 82, 93, 106, 123, 142, 168, 171, 241, 244, 248,
];

/// A cache size no instruction has: the opcode is not known.
const UNKNOWN: u8 = u8::MAX;

/// `NB_SUBSCR`: the BINARY_OP argument of a subscript (3.14+, where BINARY_SUBSCR became a
/// BINARY_OP).
const NB_SUBSCR: u8 = 26;

/// Whether a 3.13+ frame whose `instr_ptr` is at `instruction` (opcode, argument) can be
/// suspended in a call to a Python frame; `None` for a version whose opcodes are not known
/// here. The byte read is what the code holds now, which a callee running the same code can
/// have specialised or despecialised since the call, so every form of a family counts:
/// - the families that push frames (CALL, CALL_KW, CALL_FUNCTION_EX, LOAD_ATTR, SEND,
///   FOR_ITER; BINARY_SUBSCR in 3.13, BINARY_OP on a subscript from 3.14), with their
///   specialisations and instrumented forms;
/// - ENTER_EXECUTOR, EXIT_INIT_CHECK (the shim under a Python `__init__`), and the
///   instrumentation that replaces any opcode (INSTRUMENTED_INSTRUCTION, INSTRUMENTED_LINE).
pub fn may_call(version: (u8, u8), instruction: [u8; 2]) -> Option<bool> {
    let [op, arg] = instruction;
    let subscript = arg == NB_SUBSCR;
    match version {
        (3, 13) => Some(matches!(
            op,
            5 | 13 | 53 | 54 | 57 | 70 | 72 | 82 | 104 | 157..=181 | 187..=202 | 208 | 243..=247 | 254
        )),
        (3, 14) => Some(match op {
            3 | 44 | 129..=142 => subscript,
            4
            | 11
            | 52
            | 55
            | 70
            | 80
            | 106
            | 143..=165
            | 171..=174
            | 177..=189
            | 197
            | 237
            | 238
            | 250..=252
            | 254
            | 255 => true,
            _ => false,
        }),
        (3, 15) => Some(match op {
            3 | 42 | 129..=143 => subscript,
            4
            | 11
            | 50
            | 53
            | 68
            | 79
            | 105
            | 144..=168
            | 174..=178
            | 183..=195
            | 202..=204
            | 236
            | 237
            | 249..=251
            | 253
            | 254 => true,
            _ => false,
        }),
        _ => None,
    }
}

/// Whether the instruction of a 3.11 or 3.12 code object `bytecode` (its inline
/// `co_code_adaptive`) that holds byte `offset` (a frame's `prev_instr`, which a frame
/// suspended in a call leaves on the call's last cache entry) can push a frame directly.
/// `None` when that cannot be told: another version, an opcode not known (instrumented
/// lines), or an offset past the bytecode.
pub fn in_call_instruction(version: (u8, u8), bytecode: &[u8], offset: u64) -> Option<bool> {
    let (caches, callers) = match version {
        (3, 11) => (&CACHES_3_11, CALLERS_3_11),
        (3, 12) => (&CACHES_3_12, CALLERS_3_12),
        _ => return None,
    };
    let unit = usize::try_from(offset / 2).ok()?;
    let mut at = 0usize;
    while at <= unit {
        let op = *bytecode.get(at * 2)?;
        let size = caches[usize::from(op)];
        if size == UNKNOWN {
            return None;
        }
        let end = at + usize::from(size);
        if unit <= end {
            return Some(callers.contains(&op));
        }
        at = end + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3.11 `rec(n)`: `if n: rec(n - 1)` as the interpreter lays it out (`co_code`).
    const REC_3_11: &[u8] = &[
        151, 0, 124, 0, 114, 20, 116, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 124, 0, 100, 1, 122, 10, 0,
        0, 166, 1, 0, 0, 171, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 100, 0, 83, 0, 100, 0, 83, 0,
    ];

    #[test]
    fn a_caller_is_in_its_call_and_nowhere_else() {
        // CALL and its 4 caches: bytes 30 to 39.
        for offset in 30..40 {
            assert_eq!(
                in_call_instruction((3, 11), REC_3_11, offset),
                Some(true),
                "{offset}"
            );
        }
        // RESUME, LOAD_FAST, the jump, LOAD_GLOBAL's cache, PRECALL, POP_TOP, the returns.
        for offset in [0, 2, 4, 16, 26, 28, 40, 44, 48] {
            assert_eq!(
                in_call_instruction((3, 11), REC_3_11, offset),
                Some(false),
                "{offset}"
            );
        }
        assert_eq!(in_call_instruction((3, 11), REC_3_11, 200), None);
        assert_eq!(in_call_instruction((3, 13), REC_3_11, 30), None);
    }

    #[test]
    fn instrumented_lines_cannot_be_told() {
        let bytecode = [254u8, 0, 171, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(in_call_instruction((3, 12), &bytecode, 8), None);
        let bytecode = [241u8, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert_eq!(in_call_instruction((3, 12), &bytecode, 6), Some(true));
        assert_eq!(in_call_instruction((3, 12), &bytecode, 8), Some(false));
    }
}
