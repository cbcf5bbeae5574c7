//! Memory counters of a target process, read from outside it: process RSS and per-thread
//! page-fault and CPU counters from `/proc`, and the eBPF allocator counters ([`malloc`]:
//! calls and bytes per thread, SPEC §2.3), and the in-kernel Python stacks taken at page faults
//! and sampled allocations ([`kernel_stacks`], SPEC §2.4), and at writes to watched addresses
//! ([`watchpoints`]: hardware breakpoints, for `pmt heap --diff`).
//!
//! Owns: opening and re-reading the kernel's counter files and turning their text into numbers;
//! loading, attaching and reading the eBPF probes.
//! Must not touch: Python stacks, sampling cadence, attribution of deltas to stacks (that is
//! `sampler`'s job), or any output format.

pub mod heap_hook;
pub mod kernel_stacks;
pub mod malloc;
pub mod rss;
pub mod thread_counters;
pub mod watchpoints;
