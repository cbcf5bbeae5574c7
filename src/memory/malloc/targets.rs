//! Where the allocator probes go: which files of the target map libc and CPython, and the
//! file offsets of their allocator symbols.
//!
//! Asks the attach layer for the target's mapped files and for a path to open each by (through
//! `/proc/PID/root` when the target is in another mount namespace or a chroot), reads the ELF
//! files; attaches nothing itself.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::attach::process::readable_path;

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

use super::MallocError;

/// One uprobe to attach: a symbol of a mapped file, and the BPF program that counts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProbeSite {
    /// The file as this process can open it (`/proc/PID/root/...`).
    pub path: PathBuf,
    /// The symbol probed.
    pub symbol: &'static str,
    /// Offset of the symbol's first instruction in the file.
    pub offset: u64,
    /// Name of the BPF program in `malloc_counters.bpf.c` (and `memory_stacks.bpf.c`).
    pub program: &'static str,
}

/// libc allocator entry points and the program that counts each.
const LIBC_SYMBOLS: [(&str, &str); 7] = [
    ("malloc", "pmt_malloc"),
    ("calloc", "pmt_calloc"),
    ("realloc", "pmt_realloc"),
    ("free", "pmt_free"),
    ("posix_memalign", "pmt_posix_memalign"),
    ("aligned_alloc", "pmt_aligned_alloc"),
    ("memalign", "pmt_aligned_alloc"),
];

/// CPython's pymalloc implementation functions (local symbols; present when the binary keeps
/// its symbol table, as pyenv builds do). Every PyObject_* and PyMem_* (non-raw) call reaches them.
const PYTHON_IMPL_SYMBOLS: [(&str, &str); 4] = [
    ("_PyObject_Malloc", "pmt_py_impl_malloc"),
    ("_PyObject_Calloc", "pmt_py_impl_calloc"),
    ("_PyObject_Realloc", "pmt_py_impl_realloc"),
    ("_PyObject_Free", "pmt_py_impl_free"),
];

/// CPython's exported allocator functions, used when the implementations are not in the
/// symbol table (stripped builds such as Debian's python3.11).
const PYTHON_EXPORTED_SYMBOLS: [(&str, &str); 8] = [
    ("PyObject_Malloc", "pmt_py_malloc"),
    ("PyObject_Calloc", "pmt_py_calloc"),
    ("PyObject_Realloc", "pmt_py_realloc"),
    ("PyObject_Free", "pmt_py_free"),
    ("PyMem_Malloc", "pmt_py_malloc"),
    ("PyMem_Calloc", "pmt_py_calloc"),
    ("PyMem_Realloc", "pmt_py_realloc"),
    ("PyMem_Free", "pmt_py_free"),
];

/// Which CPython allocator symbols were found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PythonAllocatorProbes {
    /// pymalloc's implementation functions (`_PyObject_Malloc`...): every call is seen.
    Implementation,
    /// Only the exported wrappers (`PyObject_Malloc`...): calls the compiler inlined inside
    /// the interpreter are not seen.
    ExportedOnly,
}

/// Files mapped executable by the target: the path it shows, and a path to open it by.
fn mapped_files(pid: i32) -> Result<Vec<(String, PathBuf)>, MallocError> {
    let files = crate::attach::process::mapped_files(pid).map_err(|err| MallocError::Target {
        what: err.to_string(),
    })?;
    Ok(files
        .into_iter()
        .filter(|file| file.executable)
        .map(|file| {
            let readable = readable_path(pid, &file.path, Some(file.inode));
            (file.path.to_string_lossy().into_owned(), readable)
        })
        .collect())
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn is_libc(path: &str) -> bool {
    let name = basename(path);
    name.starts_with("libc.so") || name.starts_with("libc-") || name.starts_with("ld-musl")
}

fn is_libpython(path: &str) -> bool {
    let name = basename(path);
    name.starts_with("libpython") && name.contains(".so")
}

/// File offsets of the wanted function symbols defined in an ELF file (symtab and dynsym).
fn symbol_offsets(path: &Path, wanted: &[&str]) -> Result<HashMap<String, u64>, MallocError> {
    let data = fs::read(path).map_err(|source| MallocError::Target {
        what: format!("cannot read {}: {source}", path.display()),
    })?;
    let file = object::File::parse(&*data).map_err(|e| MallocError::Target {
        what: format!("{} is not a readable ELF file: {e}", path.display()),
    })?;
    let mut found = HashMap::new();
    for symbol in file.symbols().chain(file.dynamic_symbols()) {
        if symbol.kind() != SymbolKind::Text || !symbol.is_definition() {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        if !wanted.contains(&name) || found.contains_key(name) {
            continue;
        }
        let Some(index) = symbol.section().index() else {
            continue;
        };
        let Ok(section) = file.section_by_index(index) else {
            continue;
        };
        let Some((section_offset, _)) = section.file_range() else {
            continue;
        };
        let Some(offset) = symbol
            .address()
            .checked_sub(section.address())
            .and_then(|o| o.checked_add(section_offset))
        else {
            continue;
        };
        let code = usize::try_from(offset)
            .ok()
            .and_then(|start| data.get(start..start.saturating_add(32)))
            .unwrap_or(&[]);
        found.insert(name.to_string(), offset + cheap_probe_skip(code));
    }
    Ok(found)
}

/// How many bytes past a function's entry its uprobe should sit so that the kernel can emulate
/// the probed instruction instead of single-stepping it out of line (a debug trap per hit, which
/// costs several microseconds in a VM and dominated the benchmark).
///
/// Only leading instructions that cannot branch and write no argument register (rdi, rsi, rdx)
/// nor rsp are skipped, so every call still crosses the probe with its arguments intact. The
/// probe moves only if it then lands on an instruction the kernel emulates (push, jcc, jmp,
/// call); otherwise it stays at the entry.
#[cfg(target_arch = "x86_64")]
fn cheap_probe_skip(code: &[u8]) -> u64 {
    let mut at = 0usize;
    for _ in 0..4 {
        let rest = code.get(at..).unwrap_or(&[]);
        if x86_emulated(rest) {
            return at as u64;
        }
        match x86_harmless_len(rest) {
            Some(len) => at += len,
            None => return 0,
        }
    }
    0
}

#[cfg(not(target_arch = "x86_64"))]
fn cheap_probe_skip(_code: &[u8]) -> u64 {
    0
}

/// push r64, jcc rel8/rel32, jmp rel8/rel32, call rel32: emulated by the x86 uprobe code.
#[cfg(target_arch = "x86_64")]
fn x86_emulated(code: &[u8]) -> bool {
    matches!(
        code,
        [0x50..=0x57, ..]
            | [0x41, 0x50..=0x57, ..]
            | [0x70..=0x7f, _, ..]
            | [0xeb, _, ..]
            | [0x0f, 0x80..=0x8f, _, _, _, _, ..]
            | [0xe8 | 0xe9, _, _, _, _, ..]
    )
}

/// Length of a leading instruction that only sets flags or writes a non-argument register, for
/// the few forms compilers put first in allocator functions; `None` for anything else.
#[cfg(target_arch = "x86_64")]
fn x86_harmless_len(code: &[u8]) -> Option<usize> {
    const ARGUMENT_OR_STACK: [u8; 4] = [7, 6, 2, 4]; // rdi, rsi, rdx, rsp
    match code {
        // endbr64
        [0xf3, 0x0f, 0x1e, 0xfa, ..] => Some(4),
        // test r64, r64 (register form): flags only
        [0x48 | 0x49 | 0x4c | 0x4d, 0x85, modrm, ..] if modrm >> 6 == 3 => Some(3),
        [0x85, modrm, ..] if modrm >> 6 == 3 => Some(2),
        // cmp byte [rip+disp32], imm8: flags only
        [0x80, 0x3d, _, _, _, _, _, ..] => Some(7),
        // lea r64, [base+disp8] into a non-argument register (no REX.R, no SIB)
        [0x48, 0x8d, modrm, _, ..]
            if modrm >> 6 == 1
                && modrm & 7 != 4
                && !ARGUMENT_OR_STACK.contains(&((modrm >> 3) & 7)) =>
        {
            Some(4)
        }
        _ => None,
    }
}

/// Whether `symbol` releases memory (probed only when frees are counted).
fn is_free(symbol: &str) -> bool {
    symbol.ends_with("free") || symbol.ends_with("Free")
}

/// Probe sites for `table`'s symbols present in `path` (free functions only with `frees`); two
/// names at one offset (aliases) get one probe, so no call is counted twice.
fn sites(
    path: &Path,
    table: &[(&'static str, &'static str)],
    offsets: &HashMap<String, u64>,
    frees: bool,
) -> Vec<ProbeSite> {
    let mut used = HashSet::new();
    table
        .iter()
        .filter(|(symbol, _)| frees || !is_free(symbol))
        .filter_map(|&(symbol, program)| {
            let offset = *offsets.get(symbol)?;
            used.insert(offset).then(|| ProbeSite {
                path: path.to_path_buf(),
                symbol,
                offset,
                program,
            })
        })
        .collect()
}

/// The libc allocator probe sites of process `pid` (with `free` when `frees`).
pub(crate) fn libc_sites(pid: i32, frees: bool) -> Result<Vec<ProbeSite>, MallocError> {
    let files = mapped_files(pid)?;
    let (_, path) = files
        .iter()
        .find(|(shown, _)| is_libc(shown))
        .ok_or(MallocError::NoLibc { pid })?;
    let names: Vec<&str> = LIBC_SYMBOLS.iter().map(|(s, _)| *s).collect();
    let offsets = symbol_offsets(path, &names)?;
    if !offsets.contains_key("malloc") {
        return Err(MallocError::NoLibc { pid });
    }
    Ok(sites(path, &LIBC_SYMBOLS, &offsets, frees))
}

/// The CPython allocator probe sites of process `pid` (with the free functions when `frees`):
/// in the libpython it maps, else in its executable.
pub(crate) fn python_sites(
    pid: i32,
    frees: bool,
) -> Result<(Vec<ProbeSite>, PythonAllocatorProbes), MallocError> {
    let files = mapped_files(pid)?;
    let mut candidates: Vec<PathBuf> = files
        .iter()
        .filter(|(shown, _)| is_libpython(shown))
        .map(|(_, readable)| readable.clone())
        .collect();
    // The executable, whichever mount namespace it is in.
    candidates.push(PathBuf::from(format!("/proc/{pid}/exe")));
    let names: Vec<&str> = PYTHON_IMPL_SYMBOLS
        .iter()
        .chain(PYTHON_EXPORTED_SYMBOLS.iter())
        .map(|(s, _)| *s)
        .collect();
    for path in candidates {
        let Ok(offsets) = symbol_offsets(&path, &names) else {
            continue;
        };
        if PYTHON_IMPL_SYMBOLS
            .iter()
            .all(|(s, _)| offsets.contains_key(*s))
        {
            let found = sites(&path, &PYTHON_IMPL_SYMBOLS, &offsets, frees);
            return Ok((found, PythonAllocatorProbes::Implementation));
        }
        if offsets.contains_key("PyObject_Malloc") {
            let found = sites(&path, &PYTHON_EXPORTED_SYMBOLS, &offsets, frees);
            return Ok((found, PythonAllocatorProbes::ExportedOnly));
        }
    }
    Err(MallocError::NoPythonAllocator { pid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_libc_and_libpython_names() {
        assert!(is_libc("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(is_libc("/lib/libc-2.31.so"));
        assert!(is_libc("/lib/ld-musl-x86_64.so.1"));
        assert!(!is_libc("/usr/lib/x86_64-linux-gnu/libcrypt.so.1"));
        assert!(is_libpython(
            "/root/.pyenv/versions/3.12.1/lib/libpython3.12.so.1.0"
        ));
        assert!(!is_libpython("/usr/bin/python3.11"));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn probes_skip_only_harmless_leading_instructions() {
        // glibc free: test rdi,rdi; je ... -> probe the je
        assert_eq!(
            cheap_probe_skip(&[0x48, 0x85, 0xff, 0x0f, 0x84, 1, 2, 3, 4]),
            3
        );
        // glibc malloc: push r12 first -> stay at entry
        assert_eq!(cheap_probe_skip(&[0x41, 0x54, 0x55]), 0);
        // glibc aligned_alloc: cmpb $0,(rip); je
        assert_eq!(cheap_probe_skip(&[0x80, 0x3d, 1, 2, 3, 4, 0, 0x74, 7]), 7);
        // _PyObject_Malloc: lea -1(%rsi),%rax; push rbx
        assert_eq!(cheap_probe_skip(&[0x48, 0x8d, 0x46, 0xff, 0x53]), 4);
        // lea into rdi would change an argument: stay at entry
        assert_eq!(cheap_probe_skip(&[0x48, 0x8d, 0x7e, 0xff, 0x53]), 0);
        // mov rdi,rbx (not whitelisted): stay at entry
        assert_eq!(cheap_probe_skip(&[0x48, 0x89, 0xfb, 0x53]), 0);
        assert_eq!(cheap_probe_skip(&[]), 0);
    }

    #[test]
    fn own_libc_has_probe_sites_without_aliases_twice() {
        let pid = i32::try_from(std::process::id()).expect("pid fits i32");
        let found = libc_sites(pid, true).expect("this test process maps libc");
        assert!(found.iter().any(|s| s.symbol == "malloc"));
        assert!(found.iter().any(|s| s.symbol == "free"));
        let without_frees = libc_sites(pid, false).expect("this test process maps libc");
        assert!(without_frees.iter().all(|s| !is_free(s.symbol)));
        assert_eq!(without_frees.len() + 1, found.len());
        let offsets: HashSet<u64> = found.iter().map(|s| s.offset).collect();
        assert_eq!(offsets.len(), found.len());
    }
}
