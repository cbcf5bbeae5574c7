//! The target's resident set size from `/proc/PID/statm`, read with `pread` on a descriptor
//! opened once, so that a read costs one system call and no path lookup.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
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
            RssError::Io { source, .. } => {
                source.raw_os_error() == Some(libc::ESRCH)
                    || source.kind() == io::ErrorKind::NotFound
            }
            RssError::Parse { .. } => false,
        }
    }
}

/// Reads one process's resident set size, in bytes.
#[derive(Debug)]
pub struct RssCounter {
    file: File,
    path: PathBuf,
    page_size: u64,
    buffer: Vec<u8>,
}

impl RssCounter {
    /// Opens `/proc/PID/statm` of `pid`.
    pub fn open(pid: i32) -> Result<RssCounter, RssError> {
        let path = PathBuf::from(format!("/proc/{pid}/statm"));
        let file = File::open(&path).map_err(|source| RssError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(RssCounter {
            file,
            path,
            page_size: page_size(),
            buffer: vec![0; 128],
        })
    }

    /// The current resident set size in bytes.
    pub fn read(&mut self) -> Result<u64, RssError> {
        let len = self
            .file
            .read_at(&mut self.buffer, 0)
            .map_err(|source| RssError::Io {
                path: self.path.clone(),
                source,
            })?;
        let text = &self.buffer[..len];
        parse_statm_resident_pages(text)
            .map(|pages| pages * self.page_size)
            .ok_or_else(|| RssError::Parse {
                path: self.path.clone(),
                text: String::from_utf8_lossy(text).into_owned(),
            })
    }
}

/// The second field of `statm` (resident pages).
fn parse_statm_resident_pages(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    text.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// The kernel's page size in bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 on error, handled below.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resident_field() {
        assert_eq!(
            parse_statm_resident_pages(b"5713 1201 887 1 0 390 0\n"),
            Some(1201)
        );
        assert_eq!(parse_statm_resident_pages(b"5713"), None);
        assert_eq!(parse_statm_resident_pages(b"5713 x 1"), None);
    }

    #[test]
    fn own_rss_grows_when_memory_is_touched() {
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
        let before = rss.read().expect("read");
        // SAFETY: `block` is a writable mapping of `len` bytes.
        unsafe { std::ptr::write_bytes(block.cast::<u8>(), 1, len) };
        let after = rss.read().expect("read");
        // SAFETY: unmapping the mapping made above.
        unsafe { libc::munmap(block, len) };
        assert!(
            after >= before + (60 << 20),
            "RSS grew by {} only",
            after.saturating_sub(before)
        );
    }

    #[test]
    fn missing_process_is_an_exit() {
        let err = RssCounter::open(i32::MAX).expect_err("no such pid");
        assert!(err.process_exited(), "{err}");
    }
}
