//! The allocation hook (`heap_hook/`, SPEC §2.5) as pmt sees it: the library's bytes (built by
//! the build script and embedded here), the layout of its shared state (one definition,
//! `heap_hook/src/state.rs`, compiled on both sides), and [`HookReader`], which finds the
//! loaded hook in a target and reads what it sampled out of process, as per-stack deltas.
//!
//! Owns: finding the hook's state in the target, reading and validating it, the deltas.
//! Must not touch: getting the hook into the target (`run::heap_capture`), decoding frames
//! (`python`), charging (`sampler::heap`).

#[path = "../../heap_hook/src/state.rs"]
mod state;

use state::CHANGES;
pub use state::{FrameEntry, HeapState, HookLayout, LIBRARY_NAME, OPT_FREE_LISTS, StackEntry};

use crate::attach::memory::{ReadMemory, RemoteMemory};
use crate::attach::process::{mapped_files, readable_path};
use crate::python::CapturedFrame;

/// The name pmt's private directories for the hook start with (`pmt-heap-…` when launching,
/// `pmt-PID-…` when placed into a running target).
pub const LOADER_DIRS: [&str; 2] = ["pmt-heap-", "pmt-"];

/// Whether `path` is one of pmt's hook files (its loader, the library) in a target: pmt's own
/// code, not the program's.
pub fn is_loader_file(path: &str) -> bool {
    let mut parts = path.rsplit('/');
    let (Some(file), Some(dir)) = (parts.next(), parts.next()) else {
        return false;
    };
    (file == "sitecustomize.py" || file == "pmt_heap_loader.py" || file == LIBRARY_NAME)
        && LOADER_DIRS.iter().any(|prefix| dir.starts_with(prefix))
}

/// The loader's function: its frames run pmt's code in the target.
pub const LOADER_FUNCTION: &str = "_pmt_heap_load";

/// Whether a frame runs pmt's hook loader: one of its files, or its function wherever the
/// target compiled it from (`<string>` for a script run by PEP 768's remote execution).
pub fn is_loader_frame(function: &str, filename: &str) -> bool {
    function == LOADER_FUNCTION || is_loader_file(filename)
}

/// The hook library, for the target's architecture.
pub const LIBRARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libpmt_heap_hook.so"));

/// Why the hook's state cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// Its memory could not be read (the process exited, most likely).
    #[error("cannot read the allocation hook's state in process {pid}: {message}")]
    Read {
        /// The target.
        pid: i32,
        /// What failed.
        message: String,
    },
    /// What is there is not a hook state this pmt understands.
    #[error("the allocation hook in process {pid} is not one this pmt can read ({what})")]
    Foreign {
        /// The target.
        pid: i32,
        /// What did not match.
        what: String,
    },
}

/// Where a process's hook state lies, once the library is loaded. The library stays mapped
/// after the run that placed it has removed its file (the maps then say `(deleted)`): a later
/// run finds it there, and reads its symbols from pmt's own copy when the image mapped is that
/// copy (its first page compared; a library of another pmt build is not read).
pub fn find_state(pid: i32) -> Option<u64> {
    let files = mapped_files(pid).ok()?;
    let deleted = format!("{LIBRARY_NAME} (deleted)");
    let file = files.iter().find(|f| {
        f.path
            .file_name()
            .is_some_and(|n| n == LIBRARY_NAME || *n == *deleted)
    })?;
    let base = file.base?;
    let wanted = [state::STATE_SYMBOL];
    let read_path = readable_path(pid, &file.path, Some(file.inode));
    let symbols = match crate::attach::elf::load_symbols(&file.path, &read_path, base, &wanted) {
        Ok(elf) => elf.symbols,
        Err(_) => {
            let mut first = vec![0u8; LIBRARY.len().min(4096)];
            RemoteMemory::new(pid).read(base, &mut first).ok()?;
            if first[..] != LIBRARY[..first.len()] {
                return None;
            }
            crate::attach::elf::relocated_symbols(&file.path, LIBRARY, base, &wanted).ok()?
        }
    };
    symbols.get(state::STATE_SYMBOL).copied()
}

/// What one stack of sampled allocations did since the previous read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackDelta {
    /// The stack's index in the hook's table (stable while the generation lasts).
    pub index: u32,
    /// The allocating thread's kernel id (in the target's PID namespace).
    pub tid: u32,
    /// Estimated bytes allocated.
    pub alloc_bytes: u64,
    /// Estimated allocations.
    pub alloc_count: u64,
    /// Estimated bytes of this stack's allocations freed.
    pub freed_bytes: u64,
}

/// One stack as the hook recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookStack {
    /// The allocating thread's kernel id.
    pub tid: u32,
    /// Frames, innermost first.
    pub frames: Vec<CapturedFrame>,
    /// Whether outer frames were cut.
    pub truncated: bool,
}

/// What a read found.
#[derive(Debug, Default)]
pub struct HookReading {
    /// Stacks new since the previous read (index, stack), to decode once.
    pub new_stacks: Vec<(u32, HookStack)>,
    /// Stacks whose counters moved.
    pub deltas: Vec<StackDelta>,
    /// The tables were emptied since the previous read (a forked child's, or a reinstall):
    /// every stack index read before means nothing now.
    pub reset: bool,
    /// On a reset, what each stack read before still held (index, bytes): gone with the
    /// tables it was counted in, to be given back as freed.
    pub released: Vec<(u32, u64)>,
}

/// The hook's tallies, for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HookTallies {
    /// Allocations sampled.
    pub samples: u64,
    /// Sampled allocations not freed yet.
    pub live_samples: u64,
    /// Samples whose stack found no room in the stack table.
    pub stacks_full: u64,
    /// Samples the live table had no room for (counted as freed at once).
    pub table_full: u64,
    /// Samples made by a thread without a Python thread state.
    pub no_thread_state: u64,
    /// Mean bytes between samples.
    pub sample_bytes: u64,
    /// 1 where objects recycled through free lists are followed (`--heap-free-lists on`).
    pub free_lists: u64,
    /// Bytes of the hook's live-sample table in the target.
    pub table_bytes: u64,
}

/// Reads one process's hook state, tick after tick.
#[derive(Debug)]
pub struct HookReader {
    memory: RemoteMemory,
    pid: i32,
    /// The process's id in its own PID namespace, as the hook writes it in its state.
    own_pid: Option<u32>,
    state_addr: u64,
    generation: Option<u64>,
    known_stacks: usize,
    /// The hook's frame tree as far as it has been read (nodes are only appended).
    nodes: Vec<FrameEntry>,
    counters: Vec<[u64; 3]>,
    /// How far the hook's change log has been read (`None`: the whole table is read next).
    changes_seen: Option<u64>,
    tallies: HookTallies,
    scratch: Vec<u8>,
}

/// A failed read of process `pid`'s hook state.
fn read_error(pid: i32, e: crate::attach::MemoryError) -> HookError {
    HookError::Read {
        pid,
        message: e.to_string(),
    }
}

fn plain<T: Copy + Default>(bytes: &[u8]) -> T {
    let mut value = T::default();
    let n = size_of::<T>().min(bytes.len());
    // SAFETY: `T` is one of the state's `repr(C)` structs of integers (any bytes are a value);
    // at most `size_of::<T>()` bytes are copied into it.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&raw mut value).cast::<u8>(), n);
    }
    value
}

impl HookReader {
    /// A reader of the state at `state_addr` of process `pid`.
    pub fn new(pid: i32, state_addr: u64) -> HookReader {
        let own_pid = crate::attach::proc_files::read_status(pid)
            .ok()
            .flatten()
            .and_then(|status| status.own_namespace_id())
            .and_then(|id| u32::try_from(id).ok());
        HookReader {
            memory: RemoteMemory::new(pid),
            pid,
            own_pid,
            state_addr,
            generation: None,
            known_stacks: 0,
            nodes: Vec::new(),
            counters: Vec::new(),
            changes_seen: None,
            tallies: HookTallies::default(),
            scratch: Vec::new(),
        }
    }

    fn read_bytes(&mut self, addr: u64, len: usize) -> Result<(), HookError> {
        self.scratch.resize(len, 0);
        self.memory
            .read(addr, &mut self.scratch)
            .map_err(|e| read_error(self.pid, e))
    }

    /// The state as it is now (its magic and version checked); `None` before the hook has
    /// been installed for this pmt (one that a run before this one installed, left behind
    /// with what that run sampled, is not read: it is this run's once installed again).
    pub fn state(&mut self) -> Result<Option<HeapState>, HookError> {
        self.read_bytes(self.state_addr, size_of::<HeapState>())?;
        let state: HeapState = plain(&self.scratch);
        // Owner 0: installed from another PID namespace, which has no pid for this pmt.
        if state.magic != state::MAGIC
            || (state.owner_pid != 0 && state.owner_pid != std::process::id())
        {
            return Ok(None);
        }
        if state.version != state::VERSION {
            return Err(HookError::Foreign {
                pid: self.pid,
                what: format!(
                    "state version {}, this pmt reads {}",
                    state.version,
                    state::VERSION
                ),
            });
        }
        Ok(Some(state))
    }

    /// Per stack index, the estimated bytes its sampled allocations still held at the last
    /// read (allocated less freed), where that is not nothing.
    pub fn held(&self) -> Vec<(u32, u64)> {
        self.counters
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let held = c[0].saturating_sub(c[2]);
                (held > 0).then_some((i as u32, held))
            })
            .collect()
    }

    /// The hook's tallies at the last read.
    pub fn tallies(&self) -> HookTallies {
        self.tallies
    }

    /// Starts again from an empty table: the next read reads every stack.
    fn forget_stacks(&mut self) {
        self.known_stacks = 0;
        self.nodes.clear();
        self.counters.clear();
        self.changes_seen = None;
    }

    /// The known stacks (below `known_stacks`) the change log names since the last read,
    /// each once, in order; `None` when the whole table must be read (the first read, or the
    /// ring went round since). Marks the log read up to `state.changes_written`.
    fn changed_stacks(&mut self, state: &HeapState) -> Result<Option<Vec<usize>>, HookError> {
        let written = state.changes_written;
        let seen = self.changes_seen.replace(written);
        let Some(seen) = seen.filter(|&seen| seen <= written && written - seen <= CHANGES as u64)
        else {
            return Ok(None);
        };
        if seen == written || state.changes_addr == 0 {
            return Ok(Some(Vec::new()));
        }
        let (from, to) = (
            (seen % CHANGES as u64) as usize,
            (written % CHANGES as u64) as usize,
        );
        let mut ring = vec![0u8; (written - seen) as usize * 4];
        let at = |i: usize| state.changes_addr + (i * 4) as u64;
        let read = if from < to {
            self.memory.read(at(from), &mut ring)
        } else {
            let (head, tail) = ring.split_at_mut((CHANGES - from) * 4);
            self.memory
                .read_many(&mut [(at(from), head), (at(0), tail)])
        };
        read.map_err(|e| read_error(self.pid, e))?;
        // The hook may have gone round the ring while it was read: then it cannot be trusted.
        let written_now = self
            .memory
            .read_u64(self.state_addr + std::mem::offset_of!(HeapState, changes_written) as u64)
            .map_err(|e| read_error(self.pid, e))?;
        if written_now.wrapping_sub(seen) > CHANGES as u64 {
            return Ok(None);
        }
        let mut indices: Vec<usize> = ring
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .filter(|&i| i < self.known_stacks)
            .collect();
        indices.sort_unstable();
        indices.dedup();
        Ok(Some(indices))
    }

    /// What the hook sampled since the previous read. Nothing in a forked child that has not
    /// run its fork handler yet: its tables are still the copy of its parent's, which the
    /// handler empties (and then writes the child's pid in the state).
    pub fn read(&mut self) -> Result<HookReading, HookError> {
        let mut reading = HookReading::default();
        let Some(state) = self.state()? else {
            return Ok(reading);
        };
        if self
            .own_pid
            .is_some_and(|own| state.pid != 0 && state.pid != own)
        {
            return Ok(reading);
        }
        self.tallies = HookTallies {
            samples: state.samples,
            live_samples: state.live_samples,
            stacks_full: state.stacks_full,
            table_full: state.table_full,
            no_thread_state: state.no_thread_state,
            sample_bytes: state.sample_bytes,
            free_lists: u64::from(state.options & OPT_FREE_LISTS != 0),
            table_bytes: state.table_bytes,
        };
        if self.generation != Some(state.generation) {
            reading.reset = self.generation.is_some();
            reading.released = self.held();
            self.generation = Some(state.generation);
            self.forget_stacks();
        }
        let len = usize::try_from(state.stacks_len)
            .unwrap_or(usize::MAX)
            .min(state::MAX_STACKS);
        if len < self.known_stacks {
            // Emptied between two reads without a generation change: cannot happen with a
            // well-behaved hook; start over rather than trust the old indices.
            reading.reset = true;
            reading.released.extend(self.held());
            self.forget_stacks();
        }
        // The stacks whose counters may have changed: those the change log names since the
        // last read, or all of them when it cannot say (first read, the ring went round).
        let changed = self.changed_stacks(&state)?;
        let entry_size = size_of::<StackEntry>();
        let known = self.known_stacks;
        let mut entries: Vec<(usize, StackEntry)> = Vec::new();
        let fresh_from = match changed {
            Some(indices) => {
                let mut buffers = vec![[0u8; size_of::<StackEntry>()]; indices.len()];
                let mut requests: Vec<(u64, &mut [u8])> = indices
                    .iter()
                    .zip(buffers.iter_mut())
                    .map(|(&i, b)| (state.stacks_addr + (i * entry_size) as u64, &mut b[..]))
                    .collect();
                self.memory
                    .read_many(&mut requests)
                    .map_err(|e| read_error(self.pid, e))?;
                entries.extend(indices.into_iter().zip(buffers.iter().map(|b| plain(b))));
                self.read_bytes(
                    state.stacks_addr + (known * entry_size) as u64,
                    (len - known) * entry_size,
                )?;
                known
            }
            None => {
                self.read_bytes(state.stacks_addr, len * entry_size)?;
                0
            }
        };
        entries.extend(
            self.scratch
                .chunks_exact(entry_size)
                .enumerate()
                .map(|(i, b)| (fresh_from + i, plain(b))),
        );
        // The frame tree's new nodes, in one read (published before the stacks that name
        // them), then the new stacks' frames from it.
        let frame_size = size_of::<FrameEntry>();
        let nodes_len = usize::try_from(state.frames_len)
            .unwrap_or(usize::MAX)
            .min(state::MAX_FRAMES);
        if nodes_len > self.nodes.len() {
            let from = self.nodes.len();
            self.read_bytes(
                state.frames_addr + (from * frame_size) as u64,
                (nodes_len - from) * frame_size,
            )?;
            self.nodes.extend(
                self.scratch
                    .chunks_exact(frame_size)
                    .map(plain::<FrameEntry>),
            );
        }
        for (index, entry) in entries.iter().filter(|(i, _)| *i >= known) {
            let depth = (entry.depth & !state::DEPTH_TRUNCATED) as usize;
            let mut frames = Vec::with_capacity(depth.min(state::MAX_DEPTH));
            let mut node = entry.first_frame;
            while frames.len() < depth.min(state::MAX_DEPTH) {
                let Some(f) = self.nodes.get(node as usize) else {
                    break;
                };
                frames.push(CapturedFrame {
                    code: f.code,
                    position: f.position,
                    tag: f.tag,
                });
                node = f.parent;
            }
            reading.new_stacks.push((
                *index as u32,
                HookStack {
                    tid: entry.tid,
                    frames,
                    truncated: entry.depth & state::DEPTH_TRUNCATED != 0,
                },
            ));
        }
        self.known_stacks = len;
        self.counters.resize(len, [0; 3]);
        for (index, entry) in entries {
            let now = [entry.alloc_bytes, entry.alloc_count, entry.freed_bytes];
            let before = std::mem::replace(&mut self.counters[index], now);
            if now == before {
                continue;
            }
            reading.deltas.push(StackDelta {
                index: index as u32,
                tid: entry.tid,
                alloc_bytes: now[0].saturating_sub(before[0]),
                alloc_count: now[1].saturating_sub(before[1]),
                freed_bytes: now[2].saturating_sub(before[2]),
            });
        }
        Ok(reading)
    }
}

/// The hook's walk layout from the in-kernel walker's (the same offsets: one walk recipe).
pub fn hook_layout(bpf: &crate::memory::kernel_stacks::BpfLayout) -> HookLayout {
    use crate::memory::kernel_stacks::BpfLayout as B;
    let mut flags = 0;
    for (from, to) in [
        (B::F_FRAME_OBJECTS, HookLayout::F_FRAME_OBJECTS),
        (B::F_CFRAME, HookLayout::F_CFRAME),
        (B::F_SHIMS, HookLayout::F_SHIMS),
        (B::F_TAGGED_CODE, HookLayout::F_TAGGED_CODE),
    ] {
        if bpf.flags & from != 0 {
            flags |= to;
        }
    }
    HookLayout {
        flags,
        tstate_frame: bpf.tstate_frame,
        cframe_current_frame: bpf.cframe_current_frame,
        frame_back: bpf.frame_back,
        frame_code: bpf.frame_code,
        frame_lasti: bpf.frame_lasti,
        frame_owner: bpf.frame_owner,
        first_shim_owner: bpf.first_shim_owner,
        code_tag: bpf.code_tag,
        code_tag_len: bpf.code_tag_len,
    }
}

/// The bytes of a layout as the loader hands them to the hook.
pub fn layout_bytes(layout: &HookLayout) -> Vec<u8> {
    let fields = [
        layout.flags,
        layout.tstate_frame,
        layout.cframe_current_frame,
        layout.frame_back,
        layout.frame_code,
        layout.frame_lasti,
        layout.frame_owner,
        layout.first_shim_owner,
        layout.code_tag,
        layout.code_tag_len,
    ];
    fields.iter().flat_map(|f| f.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_layout_is_what_both_sides_compile() {
        assert_eq!(size_of::<HookLayout>(), HookLayout::SIZE);
        assert_eq!(layout_bytes(&HookLayout::default()).len(), HookLayout::SIZE);
        assert_eq!(size_of::<StackEntry>(), 56);
        assert_eq!(size_of::<FrameEntry>(), 32);
        assert_eq!(std::mem::offset_of!(FrameEntry, parent), 24);
        assert_eq!(std::mem::offset_of!(HeapState, layout), 120);
        assert!(LIBRARY.starts_with(b"\x7fELF"));
    }

    /// A hook state in this process's own memory, read as a target's.
    struct OwnState {
        state: Box<HeapState>,
        stacks: Box<[StackEntry; 2]>,
    }

    impl OwnState {
        fn new() -> OwnState {
            let stacks = Box::new([StackEntry::default(); 2]);
            let state = Box::new(HeapState {
                magic: state::MAGIC,
                version: state::VERSION,
                pid: std::process::id(),
                generation: 1,
                stacks_len: 2,
                stacks_addr: stacks.as_ptr() as u64,
                ..HeapState::default()
            });
            OwnState { state, stacks }
        }

        fn reader(&self) -> HookReader {
            HookReader::new(std::process::id() as i32, &*self.state as *const _ as u64)
        }
    }

    #[test]
    fn emptied_tables_give_back_what_their_stacks_held() {
        let mut own = OwnState::new();
        own.stacks[1].alloc_bytes = 1000;
        own.stacks[1].alloc_count = 4;
        own.stacks[1].freed_bytes = 200;
        std::hint::black_box(&own);
        let mut reader = own.reader();
        let first = reader.read().expect("read");
        assert!(!first.reset && first.released.is_empty());
        assert_eq!(first.new_stacks.len(), 2);
        assert_eq!(reader.held(), vec![(1, 800)]);
        // A forked child's fork handler (or a reinstall) empties the tables.
        own.state.generation = 2;
        own.state.stacks_len = 1;
        own.stacks[1] = StackEntry::default();
        std::hint::black_box(&own);
        let second = reader.read().expect("read");
        assert!(second.reset);
        assert_eq!(second.released, vec![(1, 800)]);
        assert!(reader.held().is_empty());
    }

    #[test]
    fn a_copy_of_another_process_tables_is_not_read() {
        // What a forked child holds until its fork handler runs: its parent's tables.
        let mut own = OwnState::new();
        own.state.pid = std::process::id() + 1;
        own.stacks[1].alloc_bytes = 1000;
        std::hint::black_box(&own);
        let mut reader = own.reader();
        // The hook is there (a forked worker has it), but its tables are not the worker's.
        assert!(reader.state().expect("read").is_some());
        let reading = reader.read().expect("read");
        assert!(reading.new_stacks.is_empty() && reading.deltas.is_empty());
        assert_eq!(reader.tallies(), HookTallies::default());
        // Once the handler has run, the tables (emptied, its own) are read.
        own.state.pid = std::process::id();
        own.state.generation = 2;
        own.state.stacks_len = 1;
        own.stacks[1] = StackEntry::default();
        std::hint::black_box(&own);
        let reading = reader.read().expect("read");
        assert!(!reading.reset && reading.released.is_empty());
        assert_eq!(reading.new_stacks.len(), 1);
    }

    #[test]
    fn loader_files_are_told_from_the_programs() {
        assert!(is_loader_file("/tmp/pmt-heap-12-ab/sitecustomize.py"));
        assert!(is_loader_file("/tmp/pmt-12-abcd/libpmt_heap_hook.so"));
        assert!(!is_loader_file("/srv/app/sitecustomize.py"));
        assert!(!is_loader_file("/tmp/pmt-heap-12-ab/app.py"));
        assert!(is_loader_frame(LOADER_FUNCTION, "<string>"));
        assert!(!is_loader_frame("<module>", "<string>"));
    }
}
