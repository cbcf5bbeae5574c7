//! ELF files mapped by the target: finding named symbols (static and dynamic tables) and
//! turning their link-time addresses into addresses in the target, for PIE and non-PIE
//! executables and shared libraries alike. Also finds NUL-terminated strings in read-only data.

use object::{Object, ObjectKind, ObjectSection, ObjectSegment, ObjectSymbol};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why an ELF file could not be used.
#[derive(Debug, Error)]
pub enum ElfError {
    /// The file could not be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The file is not an ELF object we can parse.
    #[error("{path} is not a readable ELF file: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
}

/// The symbols of interest of one mapped ELF file, already relocated into the target.
#[derive(Debug, Clone)]
pub struct LoadedElf {
    /// The file, as the target sees it.
    pub path: PathBuf,
    /// Where the file is read from (through the target's root).
    read_path: PathBuf,
    /// The wanted symbols that the file defines, at their address in the target.
    pub symbols: HashMap<String, u64>,
}

fn read_error(path: &Path, err: impl ToString) -> ElfError {
    ElfError::Read {
        path: path.to_path_buf(),
        message: err.to_string(),
    }
}

/// Maps `read_path` read-only; the parser touches only the pages it needs.
fn map_file(path: &Path, read_path: &Path) -> Result<memmap2::Mmap, ElfError> {
    let file = std::fs::File::open(read_path).map_err(|e| read_error(path, e))?;
    // SAFETY: the mapping is private and read-only; a file truncated under us could fault,
    // which is the accepted risk of every mmap-based ELF reader (interpreters on disk are
    // not rewritten while they run).
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| read_error(path, e))
}

/// Parses `path` (read through `read_path`), loaded in the target with its ELF header at
/// `base`, and relocates the symbols named in `wanted` ([`relocated_symbols`]).
pub fn load_symbols(
    path: &Path,
    read_path: &Path,
    base: u64,
    wanted: &[&str],
) -> Result<LoadedElf, ElfError> {
    let data = map_file(path, read_path)?;
    let symbols = relocated_symbols(path, &data, base, wanted)?;
    Ok(LoadedElf {
        path: path.to_path_buf(),
        read_path: read_path.to_path_buf(),
        symbols,
    })
}

/// The `wanted` symbols of the ELF image `data` (of `path`, for errors), loaded with its ELF
/// header at `base`: the dynamic symbol table first, the (larger) static one only for names
/// still missing.
pub fn relocated_symbols(
    path: &Path,
    data: &[u8],
    base: u64,
    wanted: &[&str],
) -> Result<HashMap<String, u64>, ElfError> {
    let file = parse(path, data)?;
    let bias = load_bias(&file, base);
    let mut symbols = HashMap::new();
    collect_symbols(file.dynamic_symbols(), wanted, bias, &mut symbols);
    if symbols.len() < wanted.len() {
        collect_symbols(file.symbols(), wanted, bias, &mut symbols);
    }
    Ok(symbols)
}

/// Adds the `wanted` symbols of `table`, relocated by `bias`, to `found` (first one wins).
fn collect_symbols(
    table: object::SymbolIterator<'_, '_>,
    wanted: &[&str],
    bias: u64,
    found: &mut HashMap<String, u64>,
) {
    for symbol in table {
        if symbol.is_undefined() || symbol.address() == 0 {
            continue;
        }
        if let Ok(name) = symbol.name()
            && wanted.contains(&name)
        {
            found
                .entry(name.to_string())
                .or_insert(symbol.address().wrapping_add(bias));
        }
    }
}

impl LoadedElf {
    /// NUL-terminated strings of the file's `.rodata` that `accept` keeps (short ones only).
    pub fn rodata_strings(&self, accept: impl Fn(&str) -> bool) -> Result<Vec<String>, ElfError> {
        let data = map_file(&self.path, &self.read_path)?;
        let file = object::File::parse(&*data).map_err(|e| ElfError::Parse {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let mut strings = Vec::new();
        if let Some(rodata) = file.section_by_name(".rodata")
            && let Ok(bytes) = rodata.data()
        {
            for raw in bytes.split(|b| *b == 0) {
                if raw.len() < 64
                    && let Ok(text) = std::str::from_utf8(raw)
                    && accept(text)
                {
                    strings.push(text.to_string());
                }
            }
        }
        Ok(strings)
    }
}

/// `data`, the contents of `path`, parsed.
fn parse<'a>(path: &Path, data: &'a [u8]) -> Result<object::File<'a>, ElfError> {
    object::File::parse(data).map_err(|e| ElfError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The address in the target of section `name` of `path` (read through `read_path`), loaded
/// with its ELF header at `base`; `None` if the file has no such section.
pub fn section_address(
    path: &Path,
    read_path: &Path,
    base: u64,
    name: &str,
) -> Result<Option<u64>, ElfError> {
    let data = map_file(path, read_path)?;
    let file = parse(path, &data)?;
    let bias = load_bias(&file, base);
    Ok(file
        .section_by_name(name)
        .map(|section| section.address().wrapping_add(bias)))
}

/// What to add to a link-time address of `file`, loaded with its ELF header at `base`:
/// shared objects and PIE executables are linked at (about) 0 and loaded at `base`; non-PIE
/// executables are loaded where they were linked.
fn load_bias(file: &object::File<'_>, base: u64) -> u64 {
    match file.kind() {
        ObjectKind::Executable => 0,
        _ => {
            let first_load = file.segments().map(|s| s.address()).min().unwrap_or(0) & !0xfff;
            base.wrapping_sub(first_load)
        }
    }
}
