//! Output formats: one file per format. Readers of the models upstream; nothing here reaches back.

pub mod plot;
