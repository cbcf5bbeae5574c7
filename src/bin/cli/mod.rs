//! Command-line definitions of `pmt`'s subcommands. Each subcommand's work lives in the
//! library; these modules only parse arguments, call it, and report.

pub mod dump;
pub mod report;
pub mod sample;
