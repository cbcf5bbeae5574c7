//! The target process: memory reads, maps, ELF symbols, threads, permissions.
//! Knows nothing of Python's data structures.

pub mod elf;
pub mod memory;
pub mod process;

pub use memory::{MemoryError, PageCache, ReadMemory, RemoteMemory, SliceMemory};
pub use process::{MappedFile, ProcessError, TargetProcess, children_of, descendant_pids};
