//! The target's resident set size from `/proc/PID/statm`, read through the attach layer's
//! [`ProcFile`] (a descriptor opened once, one `pread` per read) and its `statm` parser.

use crate::attach::proc_files::{ProcFile, StatmFields, is_gone, page_size};
use std::io;
use std::path::PathBuf;

/// Why the RSS of a process could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RssError {
    /// `/proc/PID/statm` could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file did not hold the expected fields.
    #[error("unexpected contents in {path}: {text:?}")]
    Parse {
        /// The file that was read.
        path: PathBuf,
        /// What it held.
        text: String,
    },
}

impl RssError {
    /// Whether the error means the process is gone (its `/proc` entry vanished).
    pub fn process_exited(&self) -> bool {
        match self {
            RssError::Io { source, .. } => is_gone(source),
            RssError::Parse { .. } => false,
        }
    }
}

/// Reads one process's resident set size, in bytes.
#[derive(Debug)]
pub struct RssCounter {
    file: ProcFile,
    page_size: u64,
}

impl RssCounter {
    /// Opens `/proc/PID/statm` of `pid`.
    pub fn open(pid: i32) -> Result<RssCounter, RssError> {
        let file = ProcFile::of_process(pid, "statm").map_err(|source| RssError::Io {
            path: PathBuf::from(format!("/proc/{pid}/statm")),
            source,
        })?;
        Ok(RssCounter {
            file,
            page_size: page_size(),
        })
    }

    /// The current resident set size in bytes.
    pub fn read(&mut self) -> Result<u64, RssError> {
        let page_size = self.page_size;
        let unparsed = match self.file.read() {
            Ok(text) => match StatmFields::parse(text) {
                Some(statm) => return Ok(statm.resident * page_size),
                None => String::from_utf8_lossy(text).into_owned(),
            },
            Err(source) => {
                return Err(RssError::Io {
                    path: self.file.path().to_path_buf(),
                    source,
                });
            }
        };
        Err(RssError::Parse {
            path: self.file.path().to_path_buf(),
            text: unparsed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_rss_counts_a_touched_mapping() {
        let mut rss = RssCounter::open(std::process::id() as i32).expect("open own statm");
        // A fresh anonymous mapping: its pages cannot already be resident (a heap block could
        // reuse memory another test just freed).
        let len = 64usize << 20;
        // SAFETY: a private anonymous mapping of `len` bytes, unmapped below.
        let block = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(block, libc::MAP_FAILED);
        // SAFETY: `block` is a writable mapping of `len` bytes.
        unsafe { std::ptr::write_bytes(block.cast::<u8>(), 1, len) };
        let during = rss.read().expect("read");
        // SAFETY: unmapping the mapping made above.
        unsafe { libc::munmap(block, len) };
        // Other tests of this binary allocate and free at the same time, so the change of the
        // process-wide figure is not ours alone; but while the mapping is touched, RSS holds
        // at least all of its pages, whatever the others do.
        assert!(
            during >= len as u64,
            "RSS {during} while {len} bytes were resident"
        );
    }

    #[test]
    fn missing_process_is_an_exit() {
        let err = RssCounter::open(i32::MAX).expect_err("no such pid");
        assert!(err.process_exited(), "{err}");
    }
}
