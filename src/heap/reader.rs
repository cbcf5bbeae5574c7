//! [`BlockReader`]: the target's memory as one heap snapshot reads it. Objects sit packed in
//! pymalloc's arenas and malloc's heap, so the walker's many small reads are served from
//! 64 KiB blocks, each fetched with one `process_vm_readv` the first time it is touched, and
//! big reads (a long list's item array) go straight to the target. It owns the cache and its
//! bound; it knows nothing of objects. Never writes to the target.

use crate::attach::{MemoryError, ReadMemory};
use rustc_hash::FxHashMap as HashMap;
use std::cell::{Cell, RefCell};

/// Bytes fetched at once.
const BLOCK: u64 = 64 * 1024;

/// What the reader did, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// `process_vm_readv` calls made.
    pub syscalls: u64,
    /// Bytes copied from the target.
    pub bytes: u64,
    /// The most bytes the block cache held at once.
    pub peak_cached: u64,
}

/// A caching reader over `inner` that keeps at most `max_cached` bytes of blocks (when full,
/// it starts again empty: a snapshot's reads move forward through the heap).
pub struct BlockReader<'m, M: ReadMemory> {
    inner: &'m M,
    blocks: RefCell<HashMap<u64, Option<Box<[u8]>>>>,
    max_cached: u64,
    cached: Cell<u64>,
    stats: Cell<ReadStats>,
}

impl<'m, M: ReadMemory> BlockReader<'m, M> {
    /// An empty reader over `inner`.
    pub fn new(inner: &'m M, max_cached: u64) -> Self {
        BlockReader {
            inner,
            blocks: RefCell::new(HashMap::default()),
            max_cached,
            cached: Cell::new(0),
            stats: Cell::new(ReadStats::default()),
        }
    }

    /// What the reader did so far.
    pub fn stats(&self) -> ReadStats {
        self.stats.get()
    }

    fn count(&self, bytes: u64) {
        let mut stats = self.stats.get();
        stats.syscalls += 1;
        stats.bytes += bytes;
        stats.peak_cached = stats.peak_cached.max(self.cached.get());
        self.stats.set(stats);
    }

    /// Copies from the block at `base` into `buf` (which must lie inside it); `false` when
    /// the block is not readable whole.
    fn copy_from_block(&self, base: u64, addr: u64, buf: &mut [u8]) -> Result<bool, MemoryError> {
        let mut blocks = self.blocks.borrow_mut();
        if !blocks.contains_key(&base) {
            if self.cached.get() + BLOCK > self.max_cached {
                blocks.clear();
                self.cached.set(0);
            }
            let mut bytes = vec![0u8; BLOCK as usize].into_boxed_slice();
            let read = self.inner.read(base, &mut bytes);
            self.count(BLOCK);
            let entry = match read {
                Ok(()) => {
                    self.cached.set(self.cached.get() + BLOCK);
                    Some(bytes)
                }
                Err(MemoryError::BadAddress { .. }) => None,
                Err(other) => return Err(other),
            };
            blocks.insert(base, entry);
        }
        match blocks.get(&base) {
            Some(Some(bytes)) => {
                let start = (addr - base) as usize;
                match bytes.get(start..start + buf.len()) {
                    Some(src) => {
                        buf.copy_from_slice(src);
                        Ok(true)
                    }
                    None => Ok(false),
                }
            }
            _ => Ok(false),
        }
    }
}

impl<M: ReadMemory> ReadMemory for BlockReader<'_, M> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let len = buf.len() as u64;
        let Some(end) = addr.checked_add(len) else {
            return Err(MemoryError::BadAddress {
                addr,
                len: buf.len(),
            });
        };
        if len == 0 {
            return Ok(());
        }
        let first = addr & !(BLOCK - 1);
        let last = (end - 1) & !(BLOCK - 1);
        if len <= BLOCK / 4 {
            if first == last {
                if self.copy_from_block(first, addr, buf)? {
                    return Ok(());
                }
            } else {
                let split = (last - addr) as usize;
                let (low, high) = buf.split_at_mut(split);
                if self.copy_from_block(first, addr, low)?
                    && self.copy_from_block(last, last, high)?
                {
                    return Ok(());
                }
            }
        }
        // Big reads, and small ones in blocks that could not be read whole (the edge of a
        // mapping), go to the target directly.
        self.count(len);
        self.inner.read(addr, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::SliceMemory;

    #[test]
    fn reads_across_blocks_and_at_mapping_edges_match_the_target() {
        let mut mem = SliceMemory::new();
        let bytes: Vec<u8> = (0..3 * BLOCK).map(|i| (i % 251) as u8).collect();
        mem.map(0x10000, bytes.clone());
        // A mapping that ends inside a block.
        mem.map(0x100000, vec![7u8; 100]);
        let reader = BlockReader::new(&mem, BLOCK * 2);
        for addr in [0x10000u64, 0x10000 + BLOCK - 3, 0x10000 + 2 * BLOCK + 17] {
            let mut buf = [0u8; 8];
            reader.read(addr, &mut buf).expect("readable");
            let at = (addr - 0x10000) as usize;
            assert_eq!(&buf[..], &bytes[at..at + 8]);
        }
        assert_eq!(reader.read_u64(0x100000).expect("edge"), 0x0707070707070707);
        assert!(reader.read_u64(0x100000 + 96).is_err());
        assert!(reader.read_u64(u64::MAX - 3).is_err());
        assert!(reader.stats().peak_cached <= BLOCK * 2);
    }
}
