//! `pmt process` and `pmt tree`: RSS monitors in the manner of pymemtrace 0.4.0's `process.py`
//! and `process_tree.py`.
//!
//! Owns reading the monitors' process counters ([`probe`]), the record and log formats
//! pymemtrace's tools read back ([`record`]), sampling one process ([`process`]) or a whole tree
//! ([`tree`]) and the gnuplot files ([`gnuplot`]). The `/proc` parsers, the process-tree
//! follower and the stop signal are the attach layer's ([`crate::attach`]), shared with the
//! sampler; it does not touch the Python sampler (`python`, `sampler`); the SVG plot is drawn
//! by [`crate::output::plot`].

pub mod gnuplot;
pub mod probe;
pub mod process;
pub mod record;
pub mod tree;
