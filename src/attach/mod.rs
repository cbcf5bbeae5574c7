//! The one kernel-facing layer: the target process (attach, memory reads and the one bounded
//! write, maps, ELF symbols, threads, permissions, namespaces, private files placed for it),
//! the `/proc` readers and parsers, the process-tree follower, launched children, and the
//! stop signal with its deadline sleep. Nothing else parses `/proc` or installs signal
//! handlers. Knows nothing of Python's data structures.

pub mod child;
pub mod elf;
pub mod memory;
pub mod namespaces;
pub mod placement;
pub mod proc_events;
pub mod proc_files;
pub mod process;
pub mod process_tree;
pub mod roles;
pub mod stop;

pub use memory::{MemoryError, PageCache, ReadMemory, RemoteMemory, SliceMemory};
pub use process::{MappedFile, ProcessError, TargetProcess};
pub use process_tree::{ProcessTree, descendant_pids};
