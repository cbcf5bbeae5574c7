//! `pmt heap`: a snapshot of a CPython process's heap read out of process. The walker finds
//! objects on the collector's lists and follows references from the roots by per-type
//! knowledge; dominators give retained sizes; names give retention paths. Emits a
//! [`Snapshot`] model (and the growth between two, [`SnapshotDiff`]), and the same as a
//! [`crate::profile::Profile`] of held memory by retention path for the output registry
//! ([`held_profile`], [`growth_profile`]); and who grew the holders that grow, by hardware
//! watchpoints on their sizes ([`who_grew`]); knows no output format. Reads the target through
//! [`crate::python::PythonSpy`]'s discovery and layouts, never writes to it.

mod diff;
mod dominators;
mod held;
mod names;
mod reader;
mod rss;
mod snapshot;
mod types;
mod walker;
mod watch;

pub use diff::{HolderGrowth, SnapshotDiff, TypeGrowth, diff};
pub use held::{UNLISTED, UNREACHED, growth_profile, held_profile};
pub use rss::RssBreakdown;
pub use snapshot::{Holder, NotFollowed, Snapshot, TypeStats};
pub use watch::{GrownBy, WatchOptions, WatchedHolder, WhoGrew, who_grew};

use crate::attach::process::{resident_regions, stack_pointers};
use crate::attach::{MemoryError, ReadMemory, RemoteMemory};
use crate::python::layout::Layout;
use crate::python::locals::{LocalSlot, local_slots};
use crate::python::objects::{DecodeError, dict_items, read_str};
use crate::python::{PythonSpy, SpyError, ThreadStack};
use reader::BlockReader;
use std::time::Instant;
use thiserror::Error;
use walker::{GcLists, Root, Walker};

/// How to take a snapshot.
#[derive(Debug, Clone)]
pub struct HeapOptions {
    /// How many holders to name.
    pub holders: usize,
    /// The most bytes of the target's memory kept at once while walking.
    pub max_cached_bytes: u64,
    /// Pause the target while its memory is read (stacks, collector lists, the walk, the
    /// RSS breakdown); retained sizes and names are then computed with it running again
    /// (names from the memory copied during the pause, where it is still held).
    pub blocking: bool,
    /// Also list every container that is an attribute of a module or a class, however
    /// little it holds (after the top `holders`): the first snapshot of a diff, whose holders
    /// are the ones whose growth can be watched.
    pub named_containers: bool,
}

impl Default for HeapOptions {
    fn default() -> Self {
        HeapOptions {
            holders: 20,
            max_cached_bytes: 1 << 30,
            blocking: false,
            named_containers: false,
        }
    }
}

/// Why a snapshot could not be taken.
#[derive(Debug, Error)]
pub enum HeapError {
    /// Attaching or reading the interpreter failed.
    #[error(transparent)]
    Spy(#[from] SpyError),
    /// The target exited while its heap was read.
    #[error("process {0} exited while its heap was read; nothing was reported")]
    Exited(i32),
    /// The interpreter's collector or modules could not be found.
    #[error(
        "cannot find the Python heap of process {pid}: {source}; the interpreter may be starting or shutting down, try again"
    )]
    Layout {
        /// The target.
        pid: i32,
        /// What failed.
        source: DecodeError,
    },
}

/// Takes one snapshot of the heap of the process `spy` is attached to (which must read
/// locals: [`crate::python::SpyOptions::locals`], for the threads' frames as roots).
pub fn take_snapshot(spy: &mut PythonSpy, options: &HeapOptions) -> Result<Snapshot, HeapError> {
    let started = Instant::now();
    // Dropped (the target resumed) on every return, and by the kernel if pmt dies. The pause
    // is timed from before the first thread is stopped to after the last is resumed.
    let paused_at = Instant::now();
    let pause = if options.blocking {
        Some(spy.pause_all()?)
    } else {
        None
    };
    let stacks = spy.read_stacks()?;
    let pid = spy.pid();
    let layout = spy.layout();
    let remote = RemoteMemory::new(pid);
    let mem = BlockReader::new(&remote, options.max_cached_bytes);
    let gone = |e: &DecodeError| {
        matches!(e, DecodeError::Memory(MemoryError::ProcessGone)) || !spy.process().is_alive()
    };
    let fail = |source: DecodeError| {
        if gone(&source) {
            HeapError::Exited(pid)
        } else {
            HeapError::Layout { pid, source }
        }
    };
    let interp = spy.main_interpreter()?;
    if interp == 0 {
        return Err(fail(DecodeError::invalid("interpreter", interp)));
    }
    let lists =
        GcLists::locate(&mem, layout, interp, spy.runtime(), spy.gc_generation0()).map_err(fail)?;
    let mut roots = module_roots(&mem, layout, interp).map_err(fail)?;
    roots.extend(thread_roots(&mem, layout, &stacks, spy.frame_addresses()));
    let exited = |_| HeapError::Exited(pid);
    let mut walker = Walker::new(&mem, layout);
    walker.add_gc_lists(&lists).map_err(exited)?;
    let graph = walker.walk(roots).map_err(exited)?;
    let rss = resident_regions(pid).ok().map(|regions| {
        let objects = (1..graph.len()).map(|n| (graph.addrs[n], graph.shallow[n]));
        rss::breakdown(
            &remote,
            spy.version(),
            &regions,
            &stack_pointers(pid),
            objects,
        )
    });
    let paused = pause.map(|lock| {
        drop(lock);
        paused_at.elapsed().as_secs_f64()
    });
    let doms = dominators::dominators(graph.len(), &graph.edges, &graph.shallow);
    let summary = snapshot::summarize(
        &mem,
        layout,
        &graph,
        &doms,
        options.holders,
        options.named_containers,
    );
    if !spy.process().is_alive() {
        return Err(HeapError::Exited(pid));
    }
    let mut snapshot = Snapshot::new(
        pid,
        spy.version().to_string(),
        summary,
        mem.stats(),
        started.elapsed().as_secs_f64(),
    );
    snapshot.rss = rss;
    snapshot.paused_seconds = paused;
    Ok(snapshot)
}

/// Every module in `sys.modules`, `__main__` first, named by its key.
fn module_roots(
    mem: &impl ReadMemory,
    layout: &Layout,
    interp: u64,
) -> Result<Vec<Root>, DecodeError> {
    let modules = mem.read_u64(interp.wrapping_add(layout.interp_modules))?;
    let mut roots: Vec<Root> = dict_items(mem, layout, modules)?
        .into_iter()
        .filter_map(|(key, value)| {
            read_str(mem, layout, key)
                .ok()
                .map(|name| Root { name, addr: value })
        })
        .collect();
    roots.sort_by_key(|r| r.name != "__main__");
    Ok(roots)
}

/// Every local variable of every frame of every thread, named
/// `thread NAME: function() local VAR`, innermost frame first.
fn thread_roots(
    mem: &impl ReadMemory,
    layout: &Layout,
    stacks: &[ThreadStack],
    addresses: &[Vec<(u64, u64)>],
) -> Vec<Root> {
    let mut roots = Vec::new();
    for (stack, frames) in stacks.iter().zip(addresses) {
        let thread = stack
            .name
            .clone()
            .unwrap_or_else(|| stack.thread_id.to_string());
        for (frame, &(frame_addr, code)) in stack.frames.iter().zip(frames) {
            let Ok(slots) = local_slots(mem, layout, frame_addr, code) else {
                continue;
            };
            for (name, slot) in slots {
                if let LocalSlot::Object(addr) = slot {
                    roots.push(Root {
                        name: format!("thread {thread}: {}() local {name}", frame.code.function),
                        addr,
                    });
                }
            }
        }
    }
    roots
}
