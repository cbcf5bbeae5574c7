//! The target process: spawn or attach, memory reads, maps, ELF symbols, threads, permissions.
//! Knows nothing of Python's data structures.
