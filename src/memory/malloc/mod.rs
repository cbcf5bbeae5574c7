//! eBPF allocator counters: calls and requested bytes of a target's allocator, per thread.
//!
//! Owns the BPF object built from `dtrace/bpf/malloc_counters.bpf.c` (see `build.rs`), its
//! loading, the uprobes on the target's libc (and, optionally, CPython's object allocator), and
//! the per-thread totals the sampler reads each tick. It knows nothing of stacks or outputs.
//!
//! Design: one BPF hash map keyed by kernel thread id, each value six `u64` counters updated
//! with atomic adds by the thread that owns the key, so concurrent threads never share an
//! entry and a reader never sees a torn or decreasing counter. [`MallocCounters::read`] is one
//! iteration of that map. Counters are cumulative since attach; callers take deltas.
//!
//! The uprobes are perf-event links (no tracefs entries are created): they are detached when
//! [`MallocCounters`] is dropped, and by the kernel when this process dies, however it dies.
//! Detaching takes about 0.1 s per probe (the kernel waits for an RCU grace period each).
//!
//! Cost to the target: one trap per probed call, about 1 µs here (`bench/results/malloc_counters.md`).
//! Each probe sits on the first instruction of its function that the kernel can emulate
//! (see `targets.rs`), which avoids a second, single-step trap per call.
//!
//! How the sampler uses it (`--metric malloc-bytes` / `malloc-count`):
//!
//! ```no_run
//! use std::collections::HashMap;
//! use pymemtrace::memory::malloc::{AllocTotals, MallocCounters, MallocOptions};
//!
//! # fn main() -> Result<(), pymemtrace::memory::malloc::MallocError> {
//! let pid = 1234;
//! let mut counters = MallocCounters::attach(pid, &MallocOptions::default())?;
//! let mut previous: HashMap<u32, AllocTotals> = HashMap::new();
//! // every tick:
//! for (tid, now) in counters.read()? {
//!     let before = previous.insert(tid, now).unwrap_or_default();
//!     let (bytes, calls) = (now.bytes - before.bytes, now.calls - before.calls);
//!     // charge `bytes` / `calls` to thread `tid`'s current Python stack
//!     # let _ = (bytes, calls);
//! }
//! # Ok(())
//! # }
//! ```

mod batch;
mod targets;

use std::collections::HashMap;
use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use aya::programs::UProbe;
use aya::programs::uprobe::{UProbeAttachLocation, UProbeScope};
use aya::{Ebpf, EbpfLoader};

use crate::attach::proc_files::read_status;

pub use targets::PythonAllocatorProbes;

/// The BPF object (committed, see `dtrace/bpf/build.sh`), or an empty one on an architecture it
/// is not built for.
#[cfg(not(pmt_no_bpf))]
static BPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/malloc_counters.bpf.o"));
#[cfg(pmt_no_bpf)]
static BPF_OBJECT: &[u8] = &[];

/// What to count besides libc's allocator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MallocOptions {
    /// Also count CPython's object allocator (`PyObject_Malloc`, `PyMem_Malloc` families), so
    /// small objects served by pymalloc count too. Costs more: these calls are very frequent.
    /// Where the interpreter keeps pymalloc's own symbols (`_PyObject_Malloc`..., pyenv builds)
    /// every call is seen; where it exports only the wrappers and inlines them (Debian's
    /// stripped python3.11), only calls through the exported symbols (extension modules) are,
    /// which [`MallocCounters::python_probes`] reports.
    pub python_allocators: bool,
    /// Also probe the free functions (`free`, `PyObject_Free`...) so [`AllocTotals::frees`]
    /// counts. Off, frees stay 0 and free-heavy code pays half the probe hits: the
    /// `malloc-bytes`/`malloc-count` metrics do not need frees.
    pub frees: bool,
}

/// Cumulative allocator totals of one thread since attach.
///
/// `calls`/`bytes` count both layers: every libc allocation call, plus (with
/// [`MallocOptions::python_allocators`]) every CPython allocator request of at most 512 bytes,
/// which pymalloc serves without libc. Larger CPython requests reach libc and are counted
/// there only, so no byte is counted twice. `realloc` counts as a call of its new size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocTotals {
    /// Allocation calls (malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign, and
    /// pymalloc-served CPython requests).
    pub calls: u64,
    /// Bytes requested by those calls.
    pub bytes: u64,
    /// `free` calls with a non-NULL pointer (libc), plus CPython allocator frees; 0 unless
    /// [`MallocOptions::frees`].
    pub frees: u64,
    /// The part of `calls` made through CPython's allocator.
    pub python_calls: u64,
    /// The part of `bytes` requested through CPython's allocator.
    pub python_bytes: u64,
    /// The part of `frees` made through CPython's allocator (this includes frees of large
    /// blocks that libc `free` sees as well).
    pub python_frees: u64,
}

/// The BPF map value, field for field as `struct alloc_counts` in the BPF source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RawCounts {
    calls: u64,
    bytes: u64,
    frees: u64,
    py_calls: u64,
    py_bytes: u64,
    py_frees: u64,
}

// SAFETY: plain-old-data, `repr(C)`, six u64 and no padding.
unsafe impl aya::Pod for RawCounts {}

impl From<RawCounts> for AllocTotals {
    fn from(raw: RawCounts) -> Self {
        AllocTotals {
            calls: raw.calls.saturating_add(raw.py_calls),
            bytes: raw.bytes.saturating_add(raw.py_bytes),
            frees: raw.frees.saturating_add(raw.py_frees),
            python_calls: raw.py_calls,
            python_bytes: raw.py_bytes,
            python_frees: raw.py_frees,
        }
    }
}

/// One attached uprobe, for summaries ("what was counted").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachedProbe {
    /// The probed file, as opened through `/proc/PID/root`.
    pub path: PathBuf,
    /// The probed symbol.
    pub symbol: &'static str,
}

/// Why the allocator counters are unavailable. Each message says what to do; the other
/// metrics do not depend on these counters.
#[derive(Debug, thiserror::Error)]
pub enum MallocError {
    /// Not root and lacking CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN).
    #[error(
        "the eBPF probes (malloc counters, in-kernel stacks) need root or CAP_BPF+CAP_PERFMON ({detail}); run as root, or do without them: another --metric, --attribution ticks"
    )]
    NotPermitted {
        /// What was refused.
        detail: String,
    },
    /// The kernel has no uprobe perf events (CONFIG_UPROBE_EVENTS) or no BPF syscall.
    #[error(
        "malloc counters need a kernel with BPF and uprobes (CONFIG_BPF_SYSCALL, CONFIG_UPROBE_EVENTS): {detail}; use another --metric"
    )]
    NoKernelSupport {
        /// What is missing.
        detail: String,
    },
    /// This binary was built without the BPF object.
    #[error(
        "this build of pymemtrace has no eBPF object (its BPF programs are built for x86_64 and aarch64 only); use another --metric"
    )]
    NotBuilt,
    /// A frame member lies past the bytes the in-kernel walker reads of a frame.
    #[error(
        "the in-kernel stack walker reads a frame's first {window} bytes, but this interpreter's {field} is at offset {offset}: its stacks cannot be captured in the kernel; use --attribution ticks"
    )]
    LayoutOutOfWindow {
        /// The frame member.
        field: &'static str,
        /// Its offset.
        offset: u32,
        /// The walker's window.
        window: u32,
    },
    /// This build has no in-kernel stack object (it needs x86's page-fault tracepoints).
    #[error(
        "in-kernel stacks need the page-fault tracepoints of x86_64 kernels, and this build is for another architecture; use --attribution ticks"
    )]
    NoInKernelStacks,
    /// No such process.
    #[error("no process {pid}: check the PID")]
    NoSuchProcess {
        /// The PID asked for.
        pid: i32,
    },
    /// The target maps no libc with a `malloc` symbol.
    #[error(
        "process {pid} maps no libc with a malloc symbol (statically linked, or another allocator); malloc counters cannot attach, use another --metric"
    )]
    NoLibc {
        /// The target.
        pid: i32,
    },
    /// `--python-allocators` but no CPython allocator symbol in the target.
    #[error(
        "process {pid} has no CPython allocator symbols (PyObject_Malloc) in its executable or libpython; drop --python-allocators"
    )]
    NoPythonAllocator {
        /// The target.
        pid: i32,
    },
    /// The target's files could not be read.
    #[error("cannot inspect the target: {what}")]
    Target {
        /// What failed.
        what: String,
    },
    /// Loading, attaching or reading failed for another reason.
    #[error("eBPF malloc counters failed: {what}")]
    Bpf {
        /// What failed, with the kernel's reason.
        what: String,
    },
}

impl MallocError {
    fn from_proc(pid: i32, source: io::Error) -> Self {
        match source.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::InvalidInput => {
                MallocError::NoSuchProcess { pid }
            }
            io::ErrorKind::PermissionDenied => MallocError::NotPermitted {
                detail: format!("cannot read /proc/{pid}"),
            },
            _ => MallocError::Target {
                what: format!("/proc/{pid}: {source}"),
            },
        }
    }

    /// Classifies an aya error by the OS error at its root.
    pub(crate) fn from_bpf(what: &str, error: &(dyn std::error::Error + 'static)) -> Self {
        let mut chain = String::new();
        let mut errno = None;
        let mut current = Some(error);
        while let Some(e) = current {
            if !chain.is_empty() {
                chain.push_str(": ");
            }
            chain.push_str(&e.to_string());
            if let Some(io) = e.downcast_ref::<io::Error>() {
                errno = errno.or(io.raw_os_error());
            }
            current = e.source();
        }
        let detail = format!("{what}: {chain}");
        match errno {
            Some(libc::EPERM) | Some(libc::EACCES) => MallocError::NotPermitted { detail },
            Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => MallocError::NoKernelSupport { detail },
            _ => MallocError::Bpf { what: detail },
        }
    }
}

/// The allocator entry points of process `pid` to probe: libc's, and with
/// `options.python_allocators` CPython's (and how those are probed).
pub(crate) fn probe_sites(
    pid: i32,
    options: &MallocOptions,
) -> Result<(Vec<targets::ProbeSite>, Option<PythonAllocatorProbes>), MallocError> {
    let mut sites = targets::libc_sites(pid, options.frees)?;
    let mut python = None;
    if options.python_allocators {
        let (more, kind) = targets::python_sites(pid, options.frees)?;
        sites.extend(more);
        python = Some(kind);
    }
    Ok((sites, python))
}

/// Program `name` of `ebpf`, as its kind `P` (a tracepoint, uprobe or perf-event program).
pub(crate) fn program_of<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P, MallocError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| MallocError::Bpf {
            what: format!("BPF object lacks program {name}"),
        })?
        .try_into()
        .map_err(|e| MallocError::from_bpf(name, &e))
}

/// Attaches each site's program of `ebpf` (loading it the first time) to process `tgid`.
pub(crate) fn attach_uprobes(
    ebpf: &mut Ebpf,
    tgid: NonZeroU32,
    sites: &[targets::ProbeSite],
) -> Result<Vec<AttachedProbe>, MallocError> {
    let mut probes = Vec::with_capacity(sites.len());
    for site in sites {
        let program: &mut UProbe = program_of(ebpf, site.program)?;
        if program.fd().is_err() {
            program
                .load()
                .map_err(|e| MallocError::from_bpf(&format!("loading {}", site.program), &e))?;
        }
        program
            .attach(
                UProbeAttachLocation::AbsoluteOffset(site.offset),
                &site.path,
                UProbeScope::OneProcess(tgid),
            )
            .map_err(|e| {
                let what = format!("attaching to {} in {}", site.symbol, site.path.display());
                MallocError::from_bpf(&what, &e)
            })?;
        probes.push(AttachedProbe {
            path: site.path.clone(),
            symbol: site.symbol,
        });
    }
    Ok(probes)
}

/// The process (thread group) that `pid` belongs to: `pid` itself, or its process when `pid`
/// names a thread.
pub(crate) fn thread_group(pid: i32) -> Result<NonZeroU32, MallocError> {
    let status = read_status(pid).map_err(|source| MallocError::from_proc(pid, source))?;
    status
        .and_then(|status| u32::try_from(status.tgid).ok())
        .and_then(NonZeroU32::new)
        .ok_or(MallocError::NoSuchProcess { pid })
}

/// Checks the privileges and kernel features the counters need, before touching BPF.
fn check_environment() -> Result<(), MallocError> {
    if BPF_OBJECT.is_empty() {
        return Err(MallocError::NotBuilt);
    }
    check_privileges()?;
    let uprobe_pmu = "/sys/bus/event_source/devices/uprobe/type";
    if !std::path::Path::new(uprobe_pmu).exists() {
        return Err(MallocError::NoKernelSupport {
            detail: format!("{uprobe_pmu} is missing"),
        });
    }
    Ok(())
}

/// Root, or the capabilities that loading BPF programs needs.
pub(crate) fn check_privileges() -> Result<(), MallocError> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 && !has_bpf_capabilities() {
        return Err(MallocError::NotPermitted {
            detail: format!("running as uid {euid} without those capabilities"),
        });
    }
    Ok(())
}

/// CAP_SYS_ADMIN, or CAP_BPF and CAP_PERFMON, in this process's effective set.
fn has_bpf_capabilities() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let own = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    let Ok(Some(status)) = read_status(own) else {
        return false;
    };
    let effective = status.cap_eff;
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// Allocator counters attached to one process. Dropping it detaches every probe.
pub struct MallocCounters {
    counts: BpfHashMap<MapData, u32, RawCounts>,
    // The fd of `counts`' map, for batch reads; owned by `counts`.
    counts_fd: std::os::fd::RawFd,
    // Set once the kernel refused a batch read: iterate from then on.
    batch_unsupported: bool,
    lost: Array<MapData, u64>,
    probes: Vec<AttachedProbe>,
    python_probes: Option<PythonAllocatorProbes>,
    // Owns the programs and their links: dropping it closes the perf-event fds, which removes
    // the uprobes (about 0.1 s each: the kernel waits for an RCU grace period per probe).
    _ebpf: Ebpf,
}

impl std::fmt::Debug for MallocCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MallocCounters")
            .field("probes", &self.probes)
            .field("python_probes", &self.python_probes)
            .finish_non_exhaustive()
    }
}

impl MallocCounters {
    /// Loads the BPF programs and attaches them to process `pid`'s allocator entry points.
    ///
    /// libc is the one the target maps (found through `/proc/PID/maps`, opened through
    /// `/proc/PID/root`). With `options.python_allocators`, CPython's allocator in the target's
    /// libpython or executable is probed too.
    pub fn attach(pid: i32, options: &MallocOptions) -> Result<MallocCounters, MallocError> {
        check_environment()?;
        let tgid = thread_group(pid)?;
        let pid = i32::try_from(tgid.get()).map_err(|_| MallocError::NoSuchProcess { pid })?;
        let (sites, python_probes) = probe_sites(pid, options)?;

        let target_tgid = tgid.get();
        // In a sidecar the target's ids are the sidecar's PID namespace's, not the kernel's.
        let (pidns_dev, pidns_ino) =
            crate::attach::namespaces::reader_pid_namespace().unwrap_or((0, 0));
        let mut ebpf = EbpfLoader::new()
            .override_global("TARGET_TGID", &target_tgid, true)
            .override_global("PIDNS_DEV", &pidns_dev, true)
            .override_global("PIDNS_INO", &pidns_ino, true)
            .load(BPF_OBJECT)
            .map_err(|e| MallocError::from_bpf("loading the BPF object", &e))?;
        let probes = attach_uprobes(&mut ebpf, tgid, &sites)?;

        let counts_map = ebpf
            .take_map("ALLOC_COUNTS")
            .ok_or_else(|| MallocError::Bpf {
                what: "BPF object lacks map ALLOC_COUNTS".to_string(),
            })?;
        let counts_fd = match &counts_map {
            aya::maps::Map::HashMap(data) => data.fd().as_fd().as_raw_fd(),
            _ => {
                return Err(MallocError::Bpf {
                    what: "ALLOC_COUNTS is not a hash map".to_string(),
                });
            }
        };
        let counts = BpfHashMap::try_from(counts_map)
            .map_err(|e| MallocError::from_bpf("ALLOC_COUNTS", &e))?;
        let lost = ebpf
            .take_map("ALLOC_LOST")
            .ok_or_else(|| MallocError::Bpf {
                what: "BPF object lacks map ALLOC_LOST".to_string(),
            })
            .and_then(|m| {
                Array::try_from(m).map_err(|e| MallocError::from_bpf("ALLOC_LOST", &e))
            })?;
        Ok(MallocCounters {
            counts,
            counts_fd,
            batch_unsupported: false,
            lost,
            probes,
            python_probes,
            _ebpf: ebpf,
        })
    }

    /// Cumulative totals per thread (kernel tid) since attach: one batch lookup of the BPF map
    /// (one syscall per 256 threads; key-by-key iteration on kernels before 5.6).
    /// Threads that made no counted call are absent; threads that exited keep their totals.
    pub fn read(&mut self) -> Result<HashMap<u32, AllocTotals>, MallocError> {
        if !self.batch_unsupported {
            match batch::lookup_all::<RawCounts>(self.counts_fd) {
                Ok(batch::Batch::Entries(entries)) => {
                    return Ok(entries
                        .into_iter()
                        .map(|(tid, raw)| (tid, AllocTotals::from(raw)))
                        .collect());
                }
                Ok(batch::Batch::Unsupported) => self.batch_unsupported = true,
                Err(e) => return Err(MallocError::from_bpf("reading ALLOC_COUNTS", &e)),
            }
        }
        self.read_by_key()
    }

    /// [`MallocCounters::read`] through aya's key-by-key iteration (two syscalls per thread).
    fn read_by_key(&self) -> Result<HashMap<u32, AllocTotals>, MallocError> {
        let mut totals = HashMap::new();
        for entry in self.counts.iter() {
            let (tid, raw) =
                entry.map_err(|e| MallocError::from_bpf("reading ALLOC_COUNTS", &e))?;
            totals.insert(tid, AllocTotals::from(raw));
        }
        Ok(totals)
    }

    /// Allocator calls not counted because the per-thread map was full (4096 threads, exited ones included).
    pub fn lost_events(&self) -> Result<u64, MallocError> {
        self.lost
            .get(&0, 0)
            .map_err(|e| MallocError::from_bpf("reading ALLOC_LOST", &e))
    }

    /// The probes attached, one per distinct allocator entry point.
    pub fn probes(&self) -> &[AttachedProbe] {
        &self.probes
    }

    /// How CPython's allocator is probed, if `python_allocators` was asked for.
    pub fn python_probes(&self) -> Option<PythonAllocatorProbes> {
        self.python_probes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_counts_combine_both_layers() {
        let raw = RawCounts {
            calls: 3,
            bytes: 300,
            frees: 2,
            py_calls: 5,
            py_bytes: 40,
            py_frees: 1,
        };
        let t = AllocTotals::from(raw);
        assert_eq!((t.calls, t.bytes, t.frees), (8, 340, 3));
        assert_eq!((t.python_calls, t.python_bytes, t.python_frees), (5, 40, 1));
    }

    #[test]
    fn batch_and_key_by_key_reads_agree() {
        let own = i32::try_from(std::process::id()).expect("pid fits i32");
        let mut counters = match MallocCounters::attach(own, &MallocOptions::default()) {
            Ok(c) => c,
            Err(e) if std::env::var("PMT_REQUIRE_EBPF").as_deref() != Ok("1") => {
                eprintln!("SKIP: eBPF malloc counters unavailable here: {e}");
                return;
            }
            Err(e) => panic!("eBPF malloc counters unavailable: {e}"),
        };
        let kept: Vec<Vec<u8>> = (0..100).map(|i| vec![0u8; 4096 + i]).collect();
        let batch = counters.read().expect("batch read");
        let by_key = counters.read_by_key().expect("key-by-key read");
        assert!(
            !counters.batch_unsupported,
            "this kernel batch-reads hash maps"
        );
        let total = |m: &HashMap<u32, AllocTotals>| m.values().map(|t| t.calls).sum::<u64>();
        assert!(total(&batch) >= kept.len() as u64);
        // Other test threads may allocate between the two reads: never fewer.
        assert!(total(&by_key) >= total(&batch));
        assert!(
            by_key
                .keys()
                .all(|tid| batch.contains_key(tid) || by_key[tid].calls > 0)
        );
    }

    #[test]
    fn raw_counts_matches_bpf_value_size() {
        assert_eq!(std::mem::size_of::<RawCounts>(), 6 * 8);
    }

    #[test]
    fn a_thread_id_resolves_to_its_process() {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            let _ = tid_tx.send(unsafe { libc::gettid() });
            let _ = done_rx.recv();
        });
        let tid = tid_rx.recv().expect("thread sends its id");
        let group = thread_group(tid).map(NonZeroU32::get).ok();
        let _ = done_tx.send(());
        thread.join().expect("thread ends");
        assert_ne!(u32::try_from(tid).ok(), Some(std::process::id()));
        assert_eq!(group, Some(std::process::id()));
    }

    #[test]
    fn missing_process_is_named() {
        let err = MallocCounters::attach(i32::MAX, &MallocOptions::default());
        let text = err
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!text.is_empty(), "attaching to a missing pid must fail");
    }
}
