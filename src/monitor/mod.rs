//! `pmt process` and `pmt tree`: RSS monitors in the manner of pymemtrace 0.4.0's `process.py`
//! and `process_tree.py`.
//!
//! Owns reading process counters from `/proc` ([`probe`]), the kernel's process events
//! ([`proc_events`]), the record and log formats
//! pymemtrace's tools read back ([`record`]), sampling one process ([`process`]) or a whole tree
//! ([`tree`]), the gnuplot files ([`gnuplot`]) and clean stopping on signals ([`stop`]).
//! It does not touch the Python sampler (`attach`, `python`, `sampler`); the SVG plot is drawn by
//! [`crate::output::plot`].

pub mod gnuplot;
pub mod probe;
pub mod proc_events;
pub mod process;
pub mod record;
pub mod stop;
pub mod tree;
