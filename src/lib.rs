//! pymemtrace: find which Python code makes a CPython process grow.
//!
//! Data flows one way: [`attach`] (the target process and its memory) →
//! [`python`] (stacks) + [`memory`] (counters) → [`sampler`] → [`profile`] → [`output`].

pub mod attach;
pub mod cli;
pub mod memory;
pub mod monitor;
pub mod output;
pub mod profile;
pub mod python;
pub mod run;
pub mod sampler;
