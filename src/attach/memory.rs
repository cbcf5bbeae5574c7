//! Reading another process's memory: the [`ReadMemory`] trait every decoder reads through, its
//! live implementation over `process_vm_readv` (one syscall may fill many buffers), and a
//! byte-slice implementation for tests and fuzzing. The one write to a target's memory is
//! [`RemoteMemory::write`] (`process_vm_writev`, bounded, whole or failed), which only the
//! remote-execution protocol (`python::remote_exec`) calls.

use thiserror::Error;

/// Why a read of the target's memory failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MemoryError {
    /// The address range is not mapped (a torn read, a stale pointer, or garbage).
    #[error("address {addr:#x} (+{len} bytes) is not readable in the target")]
    BadAddress {
        /// First byte asked for.
        addr: u64,
        /// How many bytes were asked for.
        len: usize,
    },
    /// The process no longer exists.
    #[error("the target process has exited")]
    ProcessGone,
    /// The kernel refused the read.
    #[error(
        "permission denied reading the target's memory: run as root, or give pmt CAP_SYS_PTRACE, or set kernel.yama.ptrace_scope=0"
    )]
    PermissionDenied,
    /// A length read from the target is implausible (garbage in a size field).
    #[error("implausible size {len} at {addr:#x}")]
    ImplausibleSize {
        /// Where the object lives.
        addr: u64,
        /// The size it claims.
        len: u64,
    },
    /// Any other OS error.
    #[error("reading the target's memory failed: {0}")]
    Os(String),
}

/// Random access to a target's memory. Implementations must never panic on any address.
pub trait ReadMemory {
    /// Fills `buf` with the bytes at `addr`, or fails without a partial result.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError>;

    /// Fills each `(addr, buffer)` pair; one syscall where the implementation can.
    fn read_many(&self, requests: &mut [(u64, &mut [u8])]) -> Result<(), MemoryError> {
        for (addr, buf) in requests.iter_mut() {
            self.read(*addr, buf)?;
        }
        Ok(())
    }

    /// Reads `len` bytes at `addr` into a new vector.
    fn read_vec(&self, addr: u64, len: usize) -> Result<Vec<u8>, MemoryError> {
        let mut buf = vec![0u8; len];
        self.read(addr, &mut buf)?;
        Ok(buf)
    }

    /// Reads a little-endian `u64` (also pointers and `Py_ssize_t`).
    fn read_u64(&self, addr: u64) -> Result<u64, MemoryError> {
        let mut buf = [0u8; 8];
        self.read(addr, &mut buf)?;
        Ok(u64::from_le_bytes(buf))
    }

    /// Reads a little-endian `u32`.
    fn read_u32(&self, addr: u64) -> Result<u32, MemoryError> {
        let mut buf = [0u8; 4];
        self.read(addr, &mut buf)?;
        Ok(u32::from_le_bytes(buf))
    }

    /// Reads one byte.
    fn read_u8(&self, addr: u64) -> Result<u8, MemoryError> {
        let mut buf = [0u8; 1];
        self.read(addr, &mut buf)?;
        Ok(buf[0])
    }
}

/// The memory of a live process, read with `process_vm_readv`.
#[derive(Debug, Clone, Copy)]
pub struct RemoteMemory {
    pid: i32,
}

/// The most buffers one `process_vm_readv` call takes (`IOV_MAX`).
const IOV_MAX: usize = 1024;

/// The most bytes [`RemoteMemory::write`] writes at once: the protocol that writes (a script
/// path, a flag, a word) never needs more, and a larger request is a bug, not a write.
pub const MAX_WRITE: usize = 4096;

impl RemoteMemory {
    /// Memory of process `pid`. Nothing is checked until the first read.
    pub fn new(pid: i32) -> Self {
        RemoteMemory { pid }
    }

    /// The target's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Checks that the kernel lets us read (and so write: both need ptrace-attach rights,
    /// `PTRACE_MODE_ATTACH_REALCREDS`) the target's memory, with a one-byte read at `addr`.
    /// An unmapped `addr` still answers the question: the kernel checks the right first.
    pub fn check_access(&self, addr: u64) -> Result<(), MemoryError> {
        match self.read(addr, &mut [0u8; 1]) {
            Ok(()) | Err(MemoryError::BadAddress { .. }) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// Writes `bytes` at `addr` in the target, all of them or fail: at most [`MAX_WRITE`]
    /// bytes, refused before any syscall when longer. A write stopped short by an unmapped
    /// page is reported as [`MemoryError::BadAddress`] (the bytes before it were written;
    /// callers order their writes so that such a prefix is inert).
    pub fn write(&self, addr: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        if bytes.len() > MAX_WRITE {
            return Err(MemoryError::ImplausibleSize {
                addr,
                len: bytes.len() as u64,
            });
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let local = libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as usize as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        // SAFETY: the local iovec points into `bytes`, which outlives the call and is only
        // read by the kernel; the remote iovec is only an address in the other process.
        let written = unsafe { libc::process_vm_writev(self.pid, &local, 1, &remote, 1, 0) };
        if written < 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            return Err(self.error_for(errno, addr, bytes.len()));
        }
        if written as usize != bytes.len() {
            return Err(MemoryError::BadAddress {
                addr: addr.wrapping_add(written as u64),
                len: bytes.len() - written as usize,
            });
        }
        Ok(())
    }

    fn error_for(&self, errno: i32, addr: u64, len: usize) -> MemoryError {
        match errno {
            libc::EFAULT | libc::EIO | libc::EINVAL => MemoryError::BadAddress { addr, len },
            libc::ESRCH => MemoryError::ProcessGone,
            libc::EPERM | libc::EACCES => MemoryError::PermissionDenied,
            other => MemoryError::Os(std::io::Error::from_raw_os_error(other).to_string()),
        }
    }
}

impl ReadMemory for RemoteMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.read_many(&mut [(addr, buf)])
    }

    fn read_many(&self, requests: &mut [(u64, &mut [u8])]) -> Result<(), MemoryError> {
        for chunk in requests.chunks_mut(IOV_MAX) {
            let mut local = Vec::with_capacity(chunk.len());
            let mut remote = Vec::with_capacity(chunk.len());
            let mut total = 0usize;
            for (addr, buf) in chunk.iter_mut() {
                if buf.is_empty() {
                    continue;
                }
                local.push(libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: buf.len(),
                });
                remote.push(libc::iovec {
                    iov_base: *addr as usize as *mut libc::c_void,
                    iov_len: buf.len(),
                });
                total += buf.len();
            }
            if local.is_empty() {
                continue;
            }
            // SAFETY: every local iovec points into a live, exclusively borrowed buffer of the
            // stated length; the remote iovecs are only addresses in the other process.
            let got = unsafe {
                libc::process_vm_readv(
                    self.pid,
                    local.as_ptr(),
                    local.len() as libc::c_ulong,
                    remote.as_ptr(),
                    remote.len() as libc::c_ulong,
                    0,
                )
            };
            if got < 0 {
                let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                let (addr, len) = chunk.first().map(|(a, b)| (*a, b.len())).unwrap_or((0, 0));
                return Err(self.error_for(errno, addr, len));
            }
            if got as usize != total {
                // A partial read stops at the first unreadable buffer: name it.
                let mut seen = 0usize;
                for (addr, buf) in chunk.iter() {
                    seen += buf.len();
                    if seen > got as usize {
                        return Err(MemoryError::BadAddress {
                            addr: *addr,
                            len: buf.len(),
                        });
                    }
                }
                return Err(MemoryError::BadAddress {
                    addr: 0,
                    len: total,
                });
            }
        }
        Ok(())
    }
}

/// A fake address space made of byte regions: for tests and for fuzzing the decoders.
#[derive(Debug, Clone, Default)]
pub struct SliceMemory {
    regions: Vec<(u64, Vec<u8>)>,
}

impl SliceMemory {
    /// An empty address space: every read fails.
    pub fn new() -> Self {
        SliceMemory::default()
    }

    /// Maps `bytes` at `addr`.
    pub fn map(&mut self, addr: u64, bytes: Vec<u8>) {
        self.regions.push((addr, bytes));
    }
}

impl ReadMemory for SliceMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        for (start, bytes) in &self.regions {
            let Some(offset) = addr.checked_sub(*start) else {
                continue;
            };
            let Ok(offset) = usize::try_from(offset) else {
                continue;
            };
            if let Some(src) = offset
                .checked_add(buf.len())
                .and_then(|end| bytes.get(offset..end))
            {
                buf.copy_from_slice(src);
                return Ok(());
            }
        }
        Err(MemoryError::BadAddress {
            addr,
            len: buf.len(),
        })
    }
}

/// Page size the [`PageCache`] reads in.
const CACHE_PAGE: u64 = 4096;
/// Most pages one [`PageCache`] keeps.
const CACHE_PAGES: usize = 128;

/// One page a [`PageCache`] holds: its address, its bytes, and whether a read was served
/// from it.
type CachedPage = (u64, Box<[u8]>, bool);

/// A short-lived view of a target's memory that reads whole pages and serves later reads
/// from them: walking 50 frames that share a few pages costs a few syscalls instead of 50.
/// Made afresh for each snapshot (one stack read), so nothing stale outlives it (only its
/// page buffers are handed on, to be overwritten whole).
pub struct PageCache<'m, M: ReadMemory> {
    inner: &'m M,
    /// The pages held, oldest first.
    pages: std::cell::RefCell<Vec<CachedPage>>,
    /// Page buffers to read into before allocating new ones (handed over by the previous
    /// snapshot through [`PageCache::into_buffers`]; a buffer is only ever served from after
    /// a read filled it whole).
    spare: std::cell::RefCell<Vec<Box<[u8]>>>,
}

impl<'m, M: ReadMemory> PageCache<'m, M> {
    /// An empty cache over `inner`.
    pub fn new(inner: &'m M) -> Self {
        PageCache {
            inner,
            pages: std::cell::RefCell::new(Vec::new()),
            spare: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// A page buffer: a spare one, else a new one.
    fn buffer(&self) -> Box<[u8]> {
        self.spare
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| vec![0u8; CACHE_PAGE as usize].into_boxed_slice())
    }

    /// Every page buffer this cache holds, to read the next snapshot into
    /// ([`PageCache::prefetched_reusing`]).
    pub fn into_buffers(self) -> Vec<Box<[u8]>> {
        let mut buffers = self.spare.into_inner();
        buffers.extend(self.pages.into_inner().into_iter().map(|(_, b, _)| b));
        buffers
    }

    /// A cache that starts with `pages` (page addresses, such as the ones the previous
    /// snapshot used) read in one batched call; if any of them is unreadable, none is kept
    /// and pages are read on demand instead.
    pub fn prefetched(inner: &'m M, pages: &[u64]) -> Self {
        PageCache::prefetched_reusing(inner, pages, Vec::new())
    }

    /// [`PageCache::prefetched`], reading into the buffers `spare` (those of a previous
    /// cache) before allocating any.
    pub fn prefetched_reusing(inner: &'m M, pages: &[u64], spare: Vec<Box<[u8]>>) -> Self {
        let cache = PageCache::new(inner);
        *cache.spare.borrow_mut() = spare;
        let pages = &pages[..pages.len().min(CACHE_PAGES)];
        let mut buffers: Vec<Box<[u8]>> = pages.iter().map(|_| cache.buffer()).collect();
        let mut requests: Vec<(u64, &mut [u8])> = pages
            .iter()
            .zip(buffers.iter_mut())
            .map(|(page, buf)| (*page, &mut buf[..]))
            .collect();
        if inner.read_many(&mut requests).is_ok() {
            drop(requests);
            *cache.pages.borrow_mut() = pages
                .iter()
                .copied()
                .zip(buffers)
                .map(|(page, bytes)| (page, bytes, false))
                .collect();
        } else {
            drop(requests);
            cache.spare.borrow_mut().extend(buffers);
        }
        cache
    }

    /// The addresses of the pages this cache holds, oldest first.
    pub fn page_addresses(&self) -> Vec<u64> {
        self.pages
            .borrow()
            .iter()
            .map(|(page, _, _)| *page)
            .collect()
    }

    /// The addresses of the pages some read was served from, oldest first: what the next
    /// snapshot of the same structures needs prefetched (a page prefetched but not read, such
    /// as one a code object's first decode used, is left out, so it is not fetched forever).
    pub fn used_page_addresses(&self) -> Vec<u64> {
        self.pages
            .borrow()
            .iter()
            .filter(|(_, _, used)| *used)
            .map(|(page, _, _)| *page)
            .collect()
    }

    /// Copies `buf.len()` bytes at `addr` from cached (or newly read) pages; `false` if a
    /// page is not readable as a whole.
    fn read_cached(&self, addr: u64, buf: &mut [u8]) -> bool {
        let mut pages = self.pages.borrow_mut();
        let mut done = 0usize;
        while done < buf.len() {
            let at = addr + done as u64;
            let page = at & !(CACHE_PAGE - 1);
            let index = match pages.iter().position(|(p, _, _)| *p == page) {
                Some(i) => i,
                None => {
                    let mut bytes = self.buffer();
                    if self.inner.read(page, &mut bytes).is_err() {
                        self.spare.borrow_mut().push(bytes);
                        return false;
                    }
                    if pages.len() >= CACHE_PAGES {
                        let (_, evicted, _) = pages.remove(0);
                        self.spare.borrow_mut().push(evicted);
                    }
                    pages.push((page, bytes, false));
                    pages.len() - 1
                }
            };
            let offset = (at - page) as usize;
            let n = (buf.len() - done).min(CACHE_PAGE as usize - offset);
            let (_, bytes, used) = &mut pages[index];
            *used = true;
            buf[done..done + n].copy_from_slice(&bytes[offset..offset + n]);
            done += n;
        }
        true
    }
}

impl<M: ReadMemory> ReadMemory for PageCache<'_, M> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        if buf.len() as u64 <= CACHE_PAGE
            && addr.checked_add(buf.len() as u64).is_some()
            && self.read_cached(addr, buf)
        {
            return Ok(());
        }
        self.inner.read(addr, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_reading_into_spare_buffers_serves_only_what_it_read() {
        let page = CACHE_PAGE;
        let mut first = SliceMemory::new();
        first.map(page, vec![1u8; 3 * page as usize]);
        let cache = PageCache::prefetched(&first, &[page, 2 * page]);
        let mut buf = [0u8; 8];
        assert!(cache.read_cached(3 * page, &mut buf));
        let buffers = cache.into_buffers();
        assert_eq!(buffers.len(), 3);
        // The same pages now hold other bytes; one page is gone.
        let mut second = SliceMemory::new();
        second.map(page, vec![2u8; 2 * page as usize]);
        let cache = PageCache::prefetched_reusing(&second, &[page, 3 * page], buffers);
        assert!(
            cache.page_addresses().is_empty(),
            "a failed prefetch keeps nothing"
        );
        assert!(cache.read_cached(page + 5, &mut buf));
        assert_eq!(buf, [2u8; 8]);
        assert!(!cache.read_cached(3 * page, &mut buf));
        let cache = PageCache::prefetched_reusing(&second, &[page, 2 * page], cache.into_buffers());
        assert_eq!(cache.page_addresses(), vec![page, 2 * page]);
        assert!(cache.read_cached(2 * page - 4, &mut buf));
        assert_eq!(buf, [2u8; 8]);
    }

    #[test]
    fn only_pages_a_read_was_served_from_count_as_used() {
        let page = CACHE_PAGE;
        let mut mem = SliceMemory::new();
        mem.map(page, vec![1u8; 3 * page as usize]);
        let cache = PageCache::prefetched(&mem, &[page, 2 * page]);
        assert!(cache.used_page_addresses().is_empty());
        let mut buf = [0u8; 8];
        assert!(cache.read_cached(2 * page + 8, &mut buf));
        assert!(cache.read_cached(3 * page + 8, &mut buf));
        assert_eq!(cache.page_addresses(), vec![page, 2 * page, 3 * page]);
        assert_eq!(cache.used_page_addresses(), vec![2 * page, 3 * page]);
    }

    #[test]
    fn a_write_lands_whole_and_a_long_or_unmapped_one_is_refused() {
        // Our own process is a target like any other for process_vm_writev.
        let mem = RemoteMemory::new(std::process::id() as i32);
        let mut buffer = [0u8; 16];
        let addr = buffer.as_mut_ptr() as u64;
        mem.write(addr + 4, b"pmt")
            .expect("a write into a live buffer");
        // SAFETY: the kernel wrote into `buffer` behind the compiler's back; reading it through
        // a volatile pointer makes the read observe that write.
        let seen: Vec<u8> = (0..16)
            .map(|i| unsafe { std::ptr::read_volatile(buffer.as_ptr().add(i)) })
            .collect();
        assert_eq!(&seen[4..7], b"pmt");
        assert_eq!(seen[3], 0);
        assert_eq!(seen[7], 0);
        assert!(matches!(
            mem.write(addr, &[0u8; MAX_WRITE + 1]),
            Err(MemoryError::ImplausibleSize { .. })
        ));
        assert!(matches!(
            mem.write(8, b"x"),
            Err(MemoryError::BadAddress { .. })
        ));
        mem.check_access(8)
            .expect("an unmapped address still tells the right");
    }
}
