//! Memory counters of a target process, read by the sampler each tick.
//!
//! Owns counter sources only (no stacks, no output formats): [`malloc`] holds the eBPF
//! allocator counters (calls and bytes per thread, SPEC §2.3).

pub mod malloc;
