//! pymemtrace: find which Python code makes a CPython process grow.
//!
//! Data flows one way: [`attach`] (the target process and its memory) →
//! [`python`] (stacks) + [`memory`] (counters) → [`sampler`] → [`profile`] → [`output`].
//! [`heap`] (`pmt heap`'s object walker) reads objects through [`python`]'s layouts.
//! What passes from the sampler on (metrics, samples) is [`sample`]'s vocabulary.

pub mod attach;
pub mod cli;
pub mod heap;
pub mod memory;
pub mod monitor;
pub mod output;
pub mod profile;
pub mod python;
pub mod run;
pub mod sample;
pub mod sample_log;
pub mod sampler;
