//! Hardware watchpoints on a target's memory (`pmt heap --diff`: who grows a container): a
//! perf breakpoint event (`PERF_TYPE_BREAKPOINT`, `HW_BREAKPOINT_W`, 8 bytes) per watched
//! address and thread, each running the `pmt_watch` program of the in-kernel stack object
//! ([`super::kernel_stacks`]), which walks the writing thread's Python stack in the kernel and
//! counts the write per (address, stack) in `PMT_WATCH_HITS`.
//!
//! Owns: opening and closing the breakpoint events, seeding and reading the hit tables.
//! Must not touch: which addresses are worth watching or what they mean (`heap`), decoding
//! stacks (`python`).
//!
//! A watched size field names its holder ([`WatchedObject`]): once a write finds the holder
//! freed (its type pointer changed, its reference count 0, or a container that is tracked from
//! creation to dealloc found untracked), the program stops charging writes to stacks and only
//! counts them ([`Watchpoints::gone_writes`]): the memory now belongs to whatever reused it.
//!
//! The events are opened with `inherit`, so threads a watched thread starts later are watched
//! too. They are fds owned by this process: detaching closes them, and the kernel closes them
//! (removing the breakpoints from every thread, inherited ones included) however this process
//! ends. A breakpoint event with a BPF program sends the target no signal: the target only
//! pays a debug trap per write.

use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::programs::PerfEvent;
use aya::programs::perf_event::{
    BreakpointConfig, PerfBreakpointLength, PerfBreakpointType, PerfEventConfig, PerfEventLinkId,
    PerfEventScope, SamplePolicy,
};

use super::kernel_stacks::{
    BpfLayout, CaptureOptions, KernelStacks, RawStack, Tallies, WATCH_PROGRAM,
};
use super::malloc::{MallocError, MallocOptions};

/// `struct watch_key` in the C.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WatchKey {
    addr: u64,
    stack: u64,
}

// SAFETY: `repr(C)`, two u64, no padding.
unsafe impl aya::Pod for WatchKey {}

/// `struct watch_count` in the C.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct WatchCount {
    writes: u64,
    grew: u64,
    added: u64,
    removed: u64,
}

// SAFETY: `repr(C)`, four u64, no padding.
unsafe impl aya::Pod for WatchCount {}

/// `struct watch_identity` in the C.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct WatchIdentity {
    object: u64,
    r#type: u64,
    type_at: u64,
    gc_next_at: u64,
    gone: u64,
}

// SAFETY: `repr(C)`, five u64, no padding.
unsafe impl aya::Pod for WatchIdentity {}

/// The object a watched size field belongs to, as the program checks it at each write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchedObject {
    /// Its address (where its reference count lies).
    pub address: u64,
    /// Its type pointer's address.
    pub type_at: u64,
    /// The type pointer it holds while the object lives.
    pub type_pointer: u64,
    /// Where its GC link (`_gc_next`) lies, for a container the collector tracks from its
    /// creation to its dealloc (a list, a deque): 0 there means it is not this object.
    pub gc_link_at: Option<u64>,
}

/// The writes one stack made to one watched address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchHit {
    /// The watched address.
    pub address: u64,
    /// The writing thread's stack id (0: no Python stack could be read).
    pub stack: u64,
    /// Writes to the address.
    pub writes: u64,
    /// Writes that made the value larger.
    pub grew: u64,
    /// What those added, summed.
    pub added: u64,
    /// What the others took away, summed.
    pub removed: u64,
}

/// Why one address could not be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// Every debug register of a thread is taken (4 on x86, shared with debuggers).
    #[error(
        "thread {tid} has no free hardware breakpoint slot (a debugger, or other watchpoints, use them)"
    )]
    NoSlot {
        /// The thread.
        tid: u32,
    },
    /// The kernel refused the event for another reason.
    #[error("cannot watch thread {tid}: {detail}")]
    Refused {
        /// The thread.
        tid: u32,
        /// The kernel's reason.
        detail: String,
    },
}

/// Watchpoints on one target. Dropping them removes every breakpoint.
pub struct Watchpoints {
    stacks: KernelStacks,
    hits: BpfHashMap<MapData, WatchKey, WatchCount>,
    last: BpfHashMap<MapData, u64, i64>,
    identity: BpfHashMap<MapData, u64, WatchIdentity>,
    /// The events, by the address they watch.
    links: Vec<(u64, PerfEventLinkId)>,
}

impl std::fmt::Debug for Watchpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchpoints")
            .field("events", &self.links.len())
            .finish_non_exhaustive()
    }
}

/// The OS error at the root of `error`, if any.
fn os_error(error: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.raw_os_error();
        }
        current = e.source();
    }
    None
}

impl Watchpoints {
    /// Loads the walker and the watchpoint program, and adds process `pid`, whose frames
    /// `layout` describes.
    pub fn load(pid: i32, layout: BpfLayout) -> Result<Watchpoints, MallocError> {
        let mut stacks = KernelStacks::load(CaptureOptions {
            pages: false,
            sample_bytes: None,
            watchpoints: true,
            time_period_ns: None,
        })?;
        stacks.add_process(pid, layout, &MallocOptions::default())?;
        let ebpf = stacks.ebpf_mut();
        let map = |ebpf: &mut aya::Ebpf, name: &str| {
            ebpf.take_map(name).ok_or_else(|| MallocError::Bpf {
                what: format!("BPF object lacks map {name}"),
            })
        };
        let hits = BpfHashMap::try_from(map(ebpf, "PMT_WATCH_HITS")?)
            .map_err(|e| MallocError::from_bpf("PMT_WATCH_HITS", &e))?;
        let last = BpfHashMap::try_from(map(ebpf, "PMT_WATCH_LAST")?)
            .map_err(|e| MallocError::from_bpf("PMT_WATCH_LAST", &e))?;
        let identity = BpfHashMap::try_from(map(ebpf, "PMT_WATCH_IDENTITY")?)
            .map_err(|e| MallocError::from_bpf("PMT_WATCH_IDENTITY", &e))?;
        Ok(Watchpoints {
            stacks,
            hits,
            last,
            identity,
            links: Vec::new(),
        })
    }

    /// Hands over the thread states of live Python threads: `(kernel tid, PyThreadState
    /// address)` (others are found by the walker).
    pub fn set_threads(&mut self, threads: &[(u32, u64)]) {
        self.stacks.set_threads(threads);
    }

    fn program(&mut self) -> Result<&mut PerfEvent, MallocError> {
        super::malloc::program_of(self.stacks.ebpf_mut(), WATCH_PROGRAM)
    }

    /// Watches the 8 bytes at `address` for writes by each thread of `tids` (and the threads
    /// they start). A thread that exited meanwhile is skipped; returns how many were watched.
    /// On any other refusal the address is left unwatched on every thread. Once watched,
    /// `read_now` is asked for the value the address holds, the "before" of the first write
    /// (read after the breakpoints are set, so that no write between goes uncounted).
    /// `owner` is the object the field belongs to: writes made once it is gone are not
    /// charged to stacks (`None`: every write is).
    pub fn watch(
        &mut self,
        address: u64,
        tids: &[u32],
        read_now: impl Fn() -> Option<i64>,
        owner: Option<WatchedObject>,
    ) -> Result<Result<usize, WatchError>, MallocError> {
        if let Some(owner) = owner {
            let identity = WatchIdentity {
                object: owner.address,
                r#type: owner.type_pointer,
                type_at: owner.type_at,
                gc_next_at: owner.gc_link_at.unwrap_or(0),
                gone: 0,
            };
            // A table that cannot take it leaves the field watched without the check.
            let _ = self.identity.insert(address, identity, 0);
        }
        let mut opened = Vec::new();
        let mut refused = None;
        for &tid in tids {
            let config = PerfEventConfig::Breakpoint(BreakpointConfig::Data {
                r#type: PerfBreakpointType::Write,
                address,
                length: PerfBreakpointLength::Len8,
            });
            let scope = PerfEventScope::OneProcess {
                pid: tid,
                cpu: None,
            };
            match self
                .program()?
                .attach(config, scope, SamplePolicy::Period(1), true)
            {
                Ok(link) => opened.push(link),
                Err(e) => match os_error(&e) {
                    Some(libc::ESRCH) => {}
                    Some(libc::ENOSPC) => {
                        refused = Some(WatchError::NoSlot { tid });
                        break;
                    }
                    _ => {
                        refused = Some(WatchError::Refused {
                            tid,
                            detail: MallocError::from_bpf("perf_event_open", &e).to_string(),
                        });
                        break;
                    }
                },
            }
        }
        if let Some(error) = refused {
            let program = self.program()?;
            for link in opened {
                // Detaching closes the event; one already gone needs nothing more.
                let _ = program.detach(link);
            }
            return Ok(Err(error));
        }
        let count = opened.len();
        self.links
            .extend(opened.into_iter().map(|link| (address, link)));
        if let Some(value) = read_now() {
            // A value the table cannot take only costs the first write's delta.
            let _ = self.last.insert(address, value, 0);
        }
        Ok(Ok(count))
    }

    /// Removes the breakpoints on `address` (closing their events); its counts stay readable.
    pub fn unwatch(&mut self, address: u64) {
        let (gone, kept) = std::mem::take(&mut self.links)
            .into_iter()
            .partition(|(at, _)| *at == address);
        self.links = kept;
        self.detach(gone);
    }

    /// Removes every breakpoint (closing its event); the counts stay readable.
    pub fn unwatch_all(&mut self) {
        let links = std::mem::take(&mut self.links);
        self.detach(links);
    }

    fn detach(&mut self, links: Vec<(u64, PerfEventLinkId)>) {
        if let Ok(program) = self.program() {
            for (_, link) in links {
                // Detaching closes the event; one already gone needs nothing more.
                let _ = program.detach(link);
            }
        }
    }

    /// The hits counted so far, per (address, stack).
    pub fn hits(&self) -> Vec<WatchHit> {
        self.hits
            .iter()
            .filter_map(Result::ok)
            .map(|(key, count)| WatchHit {
                address: key.addr,
                stack: key.stack,
                writes: count.writes,
                grew: count.grew,
                added: count.added,
                removed: count.removed,
            })
            .collect()
    }

    /// How many writes to `address` were seen after its owner went (`None`: it has not gone,
    /// as far as the writes showed, or no owner was given).
    pub fn gone_writes(&self, address: u64) -> Option<u64> {
        let identity = self.identity.get(&address, 0).ok()?;
        (identity.gone > 0).then_some(identity.gone)
    }

    /// The stack recorded under `id`, if it is stored.
    pub fn stack(&self, id: u64) -> Option<RawStack> {
        self.stacks.stack(id)
    }

    /// The walker's tallies.
    pub fn tallies(&self) -> Tallies {
        self.stacks.tallies()
    }
}

impl Drop for Watchpoints {
    fn drop(&mut self) {
        // Dropping the object would close the events too; this makes the order explicit:
        // breakpoints first, then the program and tables.
        self.unwatch_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// The C source the object is built from.
    const SOURCE: &str = include_str!("../../dtrace/bpf/memory_stacks.bpf.c");

    #[test]
    fn the_hit_tables_match_the_c_structs() {
        let body = |name: &str| -> Vec<String> {
            let start = SOURCE
                .find(&format!("struct {name} {{"))
                .expect("the struct in the C");
            let end = start + SOURCE[start..].find("};").expect("its end");
            SOURCE[start..end]
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let line = line.trim();
                    let rest = line.strip_prefix("__u64 ")?;
                    rest.split(';').next().map(str::to_string)
                })
                .collect()
        };
        assert_eq!(body("watch_key"), ["addr", "stack"]);
        assert_eq!(size_of::<WatchKey>(), 16);
        assert_eq!(offset_of!(WatchKey, stack), 8);
        assert_eq!(body("watch_count"), ["writes", "grew", "added", "removed"]);
        assert_eq!(size_of::<WatchCount>(), 32);
        assert_eq!(offset_of!(WatchCount, removed), 24);
        assert_eq!(
            body("watch_identity"),
            ["object", "type", "type_at", "gc_next_at", "gone"]
        );
        assert_eq!(size_of::<WatchIdentity>(), 40);
        assert_eq!(offset_of!(WatchIdentity, gone), 32);
    }
}
