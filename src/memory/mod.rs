//! Memory counters of a target process, read from outside it: process RSS and per-thread
//! page-fault and CPU counters from `/proc` (eBPF malloc counters join here too).
//!
//! Owns: opening and re-reading the kernel's counter files and turning their text into numbers.
//! Must not touch: Python stacks, sampling cadence, attribution of deltas to stacks (that is
//! `sampler`'s job), or any output format.

pub mod rss;
pub mod thread_counters;
