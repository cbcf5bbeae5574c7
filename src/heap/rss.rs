//! Where a process's resident memory is: its RSS split into Python objects, free space in
//! pymalloc's pools, the rest of the C heap, thread stacks, mapped files and other, read from
//! `/proc/PID/smaps` (per region, so the parts and the total come from one read), the
//! kernel's stack pointers of the threads, the objects the walk found, and pymalloc's pool
//! headers in the target's memory.
//!
//! How each part is computed (all resident bytes; they add up to `rss` exactly):
//! - `rss`: the sum of every region's `Rss` in `smaps`.
//! - `mapped_files`: regions backed by a file (the interpreter, libraries, data files; also
//!   the objects CPython keeps in its binary's data, such as static types).
//! - `thread_stacks`: the `[stack]` region, and each private anonymous region that holds a
//!   thread's stack pointer (from `/proc/PID/task/TID/syscall`; a thread running at that
//!   moment has none, and its stack stays in the C heap: `threads_unplaced` counts them). A
//!   region larger than [`MAX_STACK_REGION`] is not taken for a stack (the kernel merged it
//!   with other memory).
//! - The other private anonymous regions (`[heap]`, `mmap`ed memory) are the C heap, split in
//!   three: `python_objects`, the shallow bytes of the objects the walk found whose address is
//!   in them; `pymalloc_free`, the space pymalloc has carved into blocks in its pools and that
//!   no block uses now, summed over every pool header found at pool-aligned addresses of
//!   those regions (a pool's size class, block count and high-water mark, checked against
//!   each other; regions over 16 GiB, and over 64 MiB but less than an eighth resident, are
//!   reservations and not scanned); `c_heap_other`, the rest (C extensions' and the interpreter's own `malloc`s,
//!   malloc's free lists, pool headers, objects the walk did not find). Objects and free
//!   space are capped by what the regions hold, so `c_heap_other` is never negative.
//! - `other`: shared memory and the kernel's pseudo-regions (`[vdso]`, `[vvar]`).

use crate::attach::ReadMemory;
use crate::attach::process::{Backing, RegionKind, ResidentRegion};
use crate::python::PythonVersion;
use serde::Serialize;

/// The largest region taken for a thread's stack (glibc's default stack is 8 MiB).
pub const MAX_STACK_REGION: u64 = 64 << 20;
/// The largest region scanned for pool headers (larger ones are reservations, mostly empty).
const MAX_SCANNED_REGION: u64 = 16 << 30;
/// The size past which a region less than an eighth resident is not scanned for pools.
const SPARSE_REGION: u64 = 64 << 20;
/// A pool header's size, on every 64-bit CPython 3.6–3.15 (`POOL_OVERHEAD`).
const POOL_HEADER: u64 = 48;
/// pymalloc's largest block.
const SMALL_REQUEST_THRESHOLD: u64 = 512;
/// Pool headers read per `process_vm_readv`.
const BATCH: usize = 1024;

/// Where the RSS is, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RssBreakdown {
    /// Resident bytes of the whole process.
    pub rss: u64,
    /// Objects the walk found, in the C heap.
    pub python_objects: u64,
    /// Carved but unused space in pymalloc's pools.
    pub pymalloc_free: u64,
    /// The rest of the C heap.
    pub c_heap_other: u64,
    /// Thread stacks.
    pub thread_stacks: u64,
    /// File-backed regions.
    pub mapped_files: u64,
    /// Shared memory and the kernel's pseudo-regions.
    pub other: u64,
    /// pymalloc pools found.
    pub pools: u64,
    /// Threads whose stack could not be placed (running when read).
    pub threads_unplaced: u64,
}

impl RssBreakdown {
    /// The parts with their names, in report order; they sum to [`RssBreakdown::rss`].
    pub fn parts(&self) -> [(&'static str, u64); 6] {
        [
            ("Python objects", self.python_objects),
            ("pymalloc free space", self.pymalloc_free),
            ("rest of the C heap", self.c_heap_other),
            ("thread stacks", self.thread_stacks),
            ("mapped files", self.mapped_files),
            ("other", self.other),
        ]
    }
}

/// pymalloc's pool size of a CPython version.
#[derive(Debug, Clone, Copy)]
struct Pools {
    size: u64,
}

impl Pools {
    fn of(version: &PythonVersion) -> Pools {
        let caps = crate::python::capabilities::Capabilities::of((version.major, version.minor));
        Pools {
            size: if caps.large_pools { 16 << 10 } else { 4 << 10 },
        }
    }

    /// `(carved, used)` bytes of the pool whose header is `h`, or `None` if `h` is no pool
    /// header. The block size is `size - maxnextoffset`, which must be `szidx + 1` times the
    /// alignment (16 bytes, or 8 in builds before 3.8 that kept it).
    fn usage(self, h: &[u8]) -> Option<(u64, u64)> {
        let u32_at = |at: usize| {
            h.get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
                .map(u64::from)
        };
        let count = u32_at(0)?;
        let szidx = u32_at(36)?;
        let next_offset = u32_at(40)?;
        let max_next_offset = u32_at(44)?;
        let block = self.size.checked_sub(max_next_offset)?;
        let aligned = block == (szidx + 1) * 16 || block == (szidx + 1) * 8;
        if !aligned || block > SMALL_REQUEST_THRESHOLD {
            return None;
        }
        let capacity = (self.size - POOL_HEADER) / block;
        let valid = count <= capacity
            && next_offset >= POOL_HEADER + block
            && (next_offset - POOL_HEADER).is_multiple_of(block)
            && next_offset <= max_next_offset + block;
        if !valid {
            return None;
        }
        let carved = next_offset.min(self.size) - POOL_HEADER;
        let used = count * block;
        Some((carved.max(used), used))
    }
}

/// Whether the region is the C heap's: private, anonymous, writable.
fn is_c_heap(r: &ResidentRegion) -> bool {
    r.region.backing == Backing::Anonymous && r.kind == RegionKind::Writable
}

/// The breakdown of `regions` (in address order), given the threads' stack pointers, the
/// objects found (`(address, shallow bytes)`), and the target's memory for pool headers.
pub fn breakdown(
    mem: &impl ReadMemory,
    version: &PythonVersion,
    regions: &[ResidentRegion],
    stack_pointers: &[(u32, u64)],
    objects: impl Iterator<Item = (u64, u64)>,
) -> RssBreakdown {
    let mut b = RssBreakdown::default();
    let region_at = |addr: u64| {
        let i = regions.partition_point(|r| r.region.end <= addr);
        regions.get(i).filter(|r| r.region.start <= addr)
    };
    let mut stacks: Vec<u64> = Vec::new();
    for &(_, sp) in stack_pointers {
        match region_at(sp) {
            Some(r) if r.kind == RegionKind::MainStack => {}
            Some(r) if is_c_heap(r) && r.region.end - r.region.start <= MAX_STACK_REGION => {
                stacks.push(r.region.start)
            }
            _ => b.threads_unplaced += 1,
        }
    }
    stacks.sort_unstable();
    stacks.dedup();
    let is_stack = |r: &ResidentRegion| stacks.binary_search(&r.region.start).is_ok();
    let mut c_heap = 0u64;
    for r in regions {
        b.rss += r.rss;
        match (&r.region.backing, r.kind) {
            (_, RegionKind::MainStack) => b.thread_stacks += r.rss,
            (Backing::File(_), _) => b.mapped_files += r.rss,
            _ if is_c_heap(r) && is_stack(r) => b.thread_stacks += r.rss,
            _ if is_c_heap(r) => c_heap += r.rss,
            _ => b.other += r.rss,
        }
    }
    let mut found = 0u64;
    for (addr, bytes) in objects {
        if region_at(addr).is_some_and(|r| is_c_heap(r) && !is_stack(r)) {
            found += bytes;
        }
    }
    let (pools, free) = scan_pools(mem, Pools::of(version), regions, &is_stack);
    b.pools = pools;
    b.python_objects = found.min(c_heap);
    b.pymalloc_free = free.min(c_heap - b.python_objects);
    b.c_heap_other = c_heap - b.python_objects - b.pymalloc_free;
    b
}

/// `(pools, free bytes)` over every pool header at a pool-aligned address of the C heap's
/// resident regions.
fn scan_pools(
    mem: &impl ReadMemory,
    pools: Pools,
    regions: &[ResidentRegion],
    is_stack: &impl Fn(&ResidentRegion) -> bool,
) -> (u64, u64) {
    let (mut count, mut free) = (0u64, 0u64);
    let mut addrs: Vec<u64> = Vec::with_capacity(BATCH);
    let mut buffers = vec![[0u8; POOL_HEADER as usize]; BATCH];
    let mut flush = |addrs: &mut Vec<u64>, count: &mut u64, free: &mut u64| {
        let mut requests: Vec<(u64, &mut [u8])> = addrs
            .iter()
            .zip(buffers.iter_mut())
            .map(|(&a, b)| (a, &mut b[..]))
            .collect();
        if mem.read_many(&mut requests).is_err() {
            // A region unmapped since smaps was read: read the batch one by one.
            for (addr, buf) in requests.iter_mut() {
                if mem.read(*addr, buf).is_err() {
                    buf.fill(0);
                }
            }
        }
        for (_, header) in requests {
            if let Some((carved, used)) = pools.usage(header) {
                *count += 1;
                *free += carved - used;
            }
        }
        addrs.clear();
    };
    for r in regions {
        let size = r.region.end - r.region.start;
        // A large region mostly not resident is a reservation (another allocator's, a
        // runtime's): reading it through would map zero pages all over it for nothing.
        let sparse = size > SPARSE_REGION && r.rss.saturating_mul(8) < size;
        if !is_c_heap(r) || is_stack(r) || r.rss == 0 || size > MAX_SCANNED_REGION || sparse {
            continue;
        }
        let mut at = r.region.start.next_multiple_of(pools.size);
        while at + pools.size <= r.region.end {
            addrs.push(at);
            if addrs.len() == BATCH {
                flush(&mut addrs, &mut count, &mut free);
            }
            at += pools.size;
        }
    }
    if !addrs.is_empty() {
        flush(&mut addrs, &mut count, &mut free);
    }
    (count, free)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(count: u32, szidx: u32, next: u32, max_next: u32) -> Vec<u8> {
        let mut h = vec![0u8; 48];
        h[0..4].copy_from_slice(&count.to_le_bytes());
        h[36..40].copy_from_slice(&szidx.to_le_bytes());
        h[40..44].copy_from_slice(&next.to_le_bytes());
        h[44..48].copy_from_slice(&max_next.to_le_bytes());
        h
    }

    #[test]
    fn pool_headers_are_checked_and_measured() {
        let pools = Pools { size: 16 << 10 };
        // 64-byte blocks (szidx 3): 10 in use, 20 carved.
        let h = header(10, 3, 48 + 20 * 64, (16 << 10) - 64);
        assert_eq!(pools.usage(&h), Some((20 * 64, 10 * 64)));
        // Zeroed memory and inconsistent headers are no pools.
        assert_eq!(pools.usage(&[0u8; 48]), None);
        assert_eq!(pools.usage(&header(10, 3, 48 + 20 * 64, 4096 - 64)), None);
        assert_eq!(pools.usage(&header(10, 3, 50, (16 << 10) - 64)), None);
        assert_eq!(
            pools.usage(&header(1000, 3, 48 + 128, (16 << 10) - 64)),
            None
        );
    }
}
