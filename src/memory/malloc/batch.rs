//! Reading the whole per-thread counter map in one `bpf(BPF_MAP_LOOKUP_BATCH)` call (kernel
//! 5.6+), instead of two syscalls per thread through aya's key-by-key iteration.
//!
//! Owns only that syscall; the caller falls back to iteration when it reports `Unsupported`.

use std::io;
use std::os::fd::RawFd;

/// `BPF_MAP_LOOKUP_BATCH` from the kernel's UAPI (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Kernel-internal "not supported" errno that bpf() can return.
const ENOTSUPP: i32 = 524;
/// Entries fetched per call.
const CHUNK: usize = 256;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Outcome of a batch read.
pub(crate) enum Batch<V> {
    /// Every entry of the map.
    Entries(Vec<(u32, V)>),
    /// This kernel cannot batch-read this map: iterate instead.
    Unsupported,
}

/// Reads every `(u32 key, V value)` of the hash map `fd`. `V` must be the map's exact value
/// type (plain data, `repr(C)`).
pub(crate) fn lookup_all<V: Copy + Default>(fd: RawFd) -> io::Result<Batch<V>> {
    let map_fd = u32::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut entries = Vec::new();
    let mut keys = vec![0u32; CHUNK];
    let mut values = vec![V::default(); CHUNK];
    // Hash maps use a bucket index as the batch token; 8 bytes leave room for any key size.
    let mut token_in = 0u64;
    let mut token_out = 0u64;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                std::ptr::addr_of_mut!(token_in) as u64
            },
            out_batch: std::ptr::addr_of_mut!(token_out) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` points at buffers of `CHUNK` keys and values of the map's sizes and at
        // 8-byte tokens, all alive for the call; the kernel writes only within them.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                std::ptr::addr_of_mut!(attr),
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let error = (ret < 0).then(io::Error::last_os_error);
        let got = (attr.count as usize).min(CHUNK);
        match error.as_ref().and_then(io::Error::raw_os_error) {
            None => {}
            Some(libc::ENOENT) => {
                entries.extend(
                    keys[..got]
                        .iter()
                        .copied()
                        .zip(values[..got].iter().copied()),
                );
                return Ok(Batch::Entries(entries));
            }
            Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP | libc::ENOSPC) => {
                return Ok(Batch::Unsupported);
            }
            Some(_) => return Err(error.unwrap_or_else(io::Error::last_os_error)),
        }
        entries.extend(
            keys[..got]
                .iter()
                .copied()
                .zip(values[..got].iter().copied()),
        );
        token_in = token_out;
        first = false;
    }
}
