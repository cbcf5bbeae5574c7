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
    /// The wanted symbols that the file defines, at their address in the target.
    pub symbols: HashMap<String, u64>,
    /// NUL-terminated strings of read-only data that `rodata_filter` accepted.
    pub strings: Vec<String>,
}

/// Parses `file` (read through `read_path`), loaded in the target with its ELF header at
/// `base`, and relocates the symbols named in `wanted`. Strings in `.rodata` for which
/// `rodata_filter` returns true are kept too.
pub fn load_symbols(
    path: &Path,
    read_path: &Path,
    base: u64,
    wanted: &[&str],
    rodata_filter: impl Fn(&str) -> bool,
) -> Result<LoadedElf, ElfError> {
    let data = std::fs::read(read_path).map_err(|e| ElfError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let file = object::File::parse(&*data).map_err(|e| ElfError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    // Shared objects and PIE executables are linked at (about) 0 and loaded at `base`;
    // non-PIE executables are loaded where they were linked.
    let bias = match file.kind() {
        ObjectKind::Executable => 0,
        _ => {
            let first_load = file.segments().map(|s| s.address()).min().unwrap_or(0) & !0xfff;
            base.wrapping_sub(first_load)
        }
    };
    let mut symbols = HashMap::new();
    for symbol in file.symbols().chain(file.dynamic_symbols()) {
        if symbol.is_undefined() || symbol.address() == 0 {
            continue;
        }
        if let Ok(name) = symbol.name()
            && wanted.contains(&name)
        {
            symbols
                .entry(name.to_string())
                .or_insert(symbol.address().wrapping_add(bias));
        }
    }
    let mut strings = Vec::new();
    if let Some(rodata) = file.section_by_name(".rodata")
        && let Ok(bytes) = rodata.data()
    {
        for raw in bytes.split(|b| *b == 0) {
            if raw.len() < 64
                && let Ok(text) = std::str::from_utf8(raw)
                && rodata_filter(text)
            {
                strings.push(text.to_string());
            }
        }
    }
    Ok(LoadedElf {
        path: path.to_path_buf(),
        symbols,
        strings,
    })
}
