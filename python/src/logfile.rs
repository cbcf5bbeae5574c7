//! One tracer's log file: buffered writes that remember the first error, and a file that is
//! closed for good in a `fork()` child (its inherited buffer holds the parent's unwritten
//! lines, which only the parent may write).
//!
//! Owns: the file and its first write error. Must not: know any line format.

use std::fs::File;
use std::io::{BufWriter, Write};

/// A log file of Profile/Trace or ReferenceTracing.
#[derive(Debug)]
pub struct LogFile {
    file: Option<BufWriter<File>>,
    write_error: Option<std::io::Error>,
    fork_generation: u64,
}

impl LogFile {
    /// Writes to `file` through a 64 KiB buffer.
    pub fn new(file: File) -> Self {
        Self::with(Some(BufWriter::with_capacity(64 * 1024, file)))
    }

    /// A log with no file (writes go nowhere), for tests of line composition.
    #[cfg(test)]
    pub fn closed() -> Self {
        Self::with(None)
    }

    fn with(file: Option<BufWriter<File>>) -> Self {
        LogFile {
            file,
            write_error: None,
            fork_generation: crate::rss_reader::fork_generation(),
        }
    }

    /// In a `fork()` child, drops the inherited file and its buffer without writing them and
    /// reports true: this log is closed for the child.
    pub fn abandoned_after_fork(&mut self) -> bool {
        if self.fork_generation == crate::rss_reader::fork_generation() {
            return false;
        }
        if let Some(file) = self.file.take() {
            // `into_parts` hands back the parent's unwritten lines without writing them.
            drop(file.into_parts());
        }
        true
    }

    /// Whether the file is still open (never in a `fork()` child).
    pub fn is_open(&mut self) -> bool {
        !self.abandoned_after_fork() && self.file.is_some()
    }

    /// Whether a file is held (without the `fork()` check).
    #[cfg(Py_3_13)]
    pub fn has_file(&self) -> bool {
        self.file.is_some()
    }

    /// Appends `text`; the first failure is kept for [`LogFile::close`].
    pub fn put(&mut self, text: &str) {
        if let Some(file) = self.file.as_mut()
            && let Err(err) = file.write_all(text.as_bytes())
        {
            self.write_error.get_or_insert(err);
        }
    }

    /// Writes the buffered lines out (not in a `fork()` child); a failure is kept.
    #[cfg(Py_3_13)]
    pub fn flush(&mut self) {
        if self.abandoned_after_fork() {
            return;
        }
        if let Some(file) = self.file.as_mut()
            && let Err(err) = file.flush()
        {
            self.write_error.get_or_insert(err);
        }
    }

    /// Flushes and closes the file; reports the first write error.
    pub fn close(&mut self) -> std::io::Result<()> {
        let flushed = self.file.take().map_or(Ok(()), |mut file| file.flush());
        match self.write_error.take() {
            Some(err) => Err(err),
            None => flushed,
        }
    }
}
