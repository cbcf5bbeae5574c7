//! [`PythonSpy`]: attaching to a CPython process (finding the interpreter in the executable or
//! `libpythonX.Y.so`, detecting its version, choosing its layout) and reading every thread's
//! stack. The one entry point the rest of the program uses to see Python state.

use super::asyncio::{
    AsyncioOffsets, CoroutineLayout, SECTION, TABLE_BYTES, TaskReader, ThreadTasks,
};
use super::asyncio_registries::{self, TaskFields};
use super::code::{CodeCache, CodeKind, InstructionPosition};
use super::debug_offsets::{DebugOffsets, Header, Schema};
use super::frames::{Chain, walk_frames};
use super::layout::Layout;
use super::layouts::{SUPPORTED, layout_for};
use super::locals::frame_locals;
use super::objects::{DecodeError, read_str};
use super::task_roots::TaskRoots;
use super::threads::{
    GLIBC_PTHREAD_TID_OFFSET, GilLocation, RawThread, current_frame, gil_holder, module_global,
    thread_names, thread_states,
};
use super::version::PythonVersion;
use super::{CapturedFrame, CodeInfo, Frame, ThreadStack};
use crate::attach::elf::{LoadedElf, load_symbols, section_address};
use crate::attach::roles::name_in_trees;
use crate::attach::{
    MappedFile, MemoryError, PageCache, ProcessError, ReadMemory, RemoteMemory, TargetProcess,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// How to read the target.
#[derive(Debug, Clone, Default)]
pub struct SpyOptions {
    /// Pause each thread (ptrace) while reading it, for consistent stacks at the cost of
    /// stopping the target briefly. Default: read while it runs.
    pub blocking: bool,
    /// Ask the OS whether each thread is running, to fill [`ThreadStack::idle`]
    /// (one `/proc` read per thread).
    pub thread_state: bool,
    /// Also read each frame's simple local values ([`ThreadStack::locals`]).
    pub locals: bool,
    /// How many times in all a thread's frames are read before its stack is reported
    /// unreadable (0 means the default, [`FRAME_READ_TRIES`]). A one-off dump can afford
    /// more than a sampler ticking 1000 times a second.
    pub read_tries: usize,
    /// Root each stack at the asyncio task its thread runs (a `<task NAME>` frame outermost;
    /// CPython 3.11+): see `task_roots`.
    pub tasks: bool,
    /// When a read finds some thread torn on every try, read once more with every thread
    /// paused ([`PythonSpy::pause_all`]), for that read only. For a one-off read (`pmt
    /// dump`), never for a sampler: a thread that a free-running reader cannot copy whole
    /// (a deep recursion changing faster than its frames are copied, on a core of its own)
    /// is still reported whole.
    pub pause_when_torn: bool,
}

/// Why attaching to or reading a process failed. Each message is one line that says what to do.
#[derive(Debug, Error)]
pub enum SpyError {
    /// The process cannot be inspected (missing, permissions).
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// No CPython interpreter was found in the process.
    #[error("process {pid} ({command}) is not a Python process{hint}")]
    NotPython {
        /// The process.
        pid: i32,
        /// Its command line.
        command: String,
        /// Which descendants are Python, if any.
        hint: String,
    },
    /// The interpreter's version has no layout here.
    #[error(
        "process {pid} runs CPython {version}, which is not supported; supported versions: {supported}"
    )]
    Unsupported {
        /// The process.
        pid: i32,
        /// The version found.
        version: String,
        /// The supported versions, comma separated.
        supported: String,
    },
    /// The process exited.
    #[error("process {0} has exited")]
    Exited(i32),
    /// The interpreter's state could not be read (torn read, garbage).
    #[error("cannot read the interpreter state of process {pid}: {source}")]
    Read {
        /// The process.
        pid: i32,
        /// What failed.
        source: DecodeError,
    },
    /// The interpreter's asyncio tasks cannot be read by this version of pmt.
    #[error(
        "process {pid} runs CPython {version}: --async reads asyncio tasks of CPython 3.11 to 3.15 only (not supported on this version)"
    )]
    AsyncUnsupported {
        /// The process.
        pid: i32,
        /// The version found.
        version: String,
    },
    /// `--blocking` could not pause the target.
    #[error("cannot pause process {pid} for a blocking read: {message}")]
    Pause {
        /// The process.
        pid: i32,
        /// What ptrace said.
        message: String,
    },
}

impl SpyError {
    /// Whether the error means the target is gone.
    pub fn process_exited(&self) -> bool {
        match self {
            SpyError::Process(err) => err.process_exited(),
            _ => matches!(
                self,
                SpyError::Exited(_)
                    | SpyError::Read {
                        source: DecodeError::Memory(MemoryError::ProcessGone),
                        ..
                    }
            ),
        }
    }
}

/// Where the first interpreter is found.
#[derive(Debug, Clone, Copy)]
enum InterpreterRoot {
    /// `_PyRuntime.interpreters.head` (3.7+).
    Runtime(u64),
    /// The `interp_head` variable (3.6).
    InterpHead(u64),
}

/// How far a copy of the interpreter has come: of several mapped into one process, the one
/// furthest along is the one that runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Liveness {
    /// No interpreter (a library loaded but never initialised), or it could not be read.
    Uninitialised,
    /// An interpreter, but no thread state yet (starting or finishing).
    Interpreter,
    /// An interpreter with at least one thread.
    Threads,
}

/// Symbols looked up in the interpreter's ELF file.
const WANTED_SYMBOLS: &[&str] = &[
    "_PyRuntime",
    "interp_head",
    "_PyThreadState_Current",
    "Py_Version",
    "_PyGC_generation0",
];

/// How many times one thread's frames are read, by default, before its stack is reported
/// unreadable. A recursion 0–20 deep changing depth every call is caught torn by about half
/// the tries on a busy machine (each caller checked to be in a call, `frames.rs`): 8 tries
/// left up to 1.5% of its reads unreadable on Debian's 3.11; 16 cost more only on torn reads.
pub const FRAME_READ_TRIES: usize = 16;

/// Where a version's asyncio tasks are read from.
enum TaskSource {
    /// 3.14+: the thread states' and interpreters' task lists, at `_asyncio`'s offsets.
    Lists(AsyncioOffsets),
    /// 3.11–3.13: asyncio's registries, read as objects.
    Registries(TaskFields),
}

/// How many times the asyncio task lists are read before a read that keeps finding them
/// changing is given up.
const TASK_READ_TRIES: usize = 5;

/// How often thread names are looked up again when an unnamed thread shows up.
const NAME_REFRESH: Duration = Duration::from_millis(500);

/// An attached CPython process.
#[derive(Debug)]
pub struct PythonSpy {
    process: TargetProcess,
    /// The program image attached to ([`TargetProcess::image_id`]): another one means the
    /// process has called `exec`.
    image: Option<(u64, u64)>,
    /// When attaching to a new image was last tried (it may not run Python yet).
    reattach_tried: Option<Instant>,
    mem: RemoteMemory,
    /// The memory of the process this one was forked from, where code objects made before the
    /// fork lie at the same addresses: captured stacks are decoded from it once this process
    /// has exited (its own memory is gone; its last page faults may not be decoded yet).
    fork_parent: Option<RemoteMemory>,
    version: PythonVersion,
    layout: Layout,
    layout_differences: Vec<&'static str>,
    debug_offsets: Option<DebugOffsets>,
    root: InterpreterRoot,
    gil: GilLocation,
    options: SpyOptions,
    codes: CodeCache,
    names: HashMap<u64, String>,
    names_read_at: Option<Instant>,
    native_ids: HashMap<u64, u32>,
    thread_errors: u64,
    torn_reads: u64,
    /// Reads made again with the target paused ([`SpyOptions::pause_when_torn`]).
    paused_reads: u64,
    /// The outermost frame each thread state's chain was last read whole with (before 3.11,
    /// where no frame says it is a thread's first): a chain ending elsewhere was cut.
    outermost: HashMap<u64, u64>,
    /// Pages the previous read used: most stay the same from one sample to the next, so
    /// they are fetched in one batched call before walking.
    last_pages: Vec<u64>,
    /// The page buffers of the last snapshot, read into by the next one.
    spare_pages: Vec<Box<[u8]>>,
    /// `(kernel tid, PyThreadState address)` of the threads the last read found.
    thread_states: Vec<(u32, u64)>,
    /// The `_PyGC_generation0` variable (3.6, whose collector state is file-static).
    gc_generation0: Option<u64>,
    /// `(frame, code object)` addresses of each frame of each stack the last read returned
    /// (when reading locals), parallel to it.
    frame_addresses: Vec<Vec<(u64, u64)>>,
    /// With [`SpyOptions::tasks`]: each thread's running asyncio task.
    task_roots: Option<TaskRoots>,
}

/// What [`PythonSpy::reattach_after_exec`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageChange {
    /// The program attached to still runs.
    Same,
    /// The process runs another program, with no interpreter to read yet (it is starting,
    /// or is not Python): its failed reads are not torn reads.
    Starting,
    /// The process runs another program, and the spy now reads it.
    Reattached,
}

/// What an in-kernel walker needs to follow this interpreter's frames itself: where the
/// interpreter list starts and the layout (see `memory::kernel_stacks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkRoot {
    /// Address of the pointer to the first interpreter.
    pub interp_head: u64,
    /// glibc's offset of the kernel tid in `struct pthread`, for versions whose thread state
    /// does not record it (the thread state's `thread_id` points to that struct).
    pub pthread_tid_offset: u64,
}

impl PythonSpy {
    /// Whether the process has replaced its program (`exec`) since this spy attached, and if
    /// so whether this spy now reads the new one: attached in its place, with the same
    /// options, once the new image runs an interpreter (tried at most every 50 ms).
    pub fn reattach_after_exec(&mut self) -> ImageChange {
        let now = self.process.image_id();
        if now.is_none() || now == self.image {
            return ImageChange::Same;
        }
        if self
            .reattach_tried
            .is_some_and(|at| at.elapsed() < Duration::from_millis(50))
        {
            return ImageChange::Starting;
        }
        self.reattach_tried = Some(Instant::now());
        match PythonSpy::attach(self.process.pid(), &self.options) {
            Ok(spy) => {
                *self = spy;
                ImageChange::Reattached
            }
            Err(_) => ImageChange::Starting,
        }
    }

    /// Finds the interpreter in process `pid` and prepares to read it. A process can map
    /// more than one copy of the interpreter (a static build that loads `libpythonX.Y.so`
    /// with `ctypes`, an extension linked against it): the one chosen is the first whose
    /// runtime has an interpreter with threads, else the first with an interpreter, else
    /// the first that could be attached to.
    pub fn attach(pid: i32, options: &SpyOptions) -> Result<PythonSpy, SpyError> {
        let process = TargetProcess::open(pid)?;
        let maps = process.maps().map_err(ProcessError::while_attaching)?;
        let exe = process.exe().map_err(ProcessError::while_attaching)?;
        let mut fallback: Option<(Liveness, PythonSpy)> = None;
        let mut first_error = None;
        for elf in find_interpreters(&process, &maps, &exe) {
            let process = TargetProcess::open(pid)?;
            match PythonSpy::attach_to(process, elf, &exe, options) {
                Ok(spy) => {
                    let liveness = spy.liveness();
                    if liveness == Liveness::Threads {
                        return Ok(spy);
                    }
                    if fallback.as_ref().is_none_or(|(best, _)| liveness > *best) {
                        fallback = Some((liveness, spy));
                    }
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match (fallback, first_error) {
            (Some((_, spy)), _) => Ok(spy),
            (None, Some(error)) => Err(error),
            (None, None) => Err(not_python(&process)),
        }
    }

    /// Prepares to read the interpreter in `elf`, one of the copies mapped into `process`.
    fn attach_to(
        process: TargetProcess,
        elf: LoadedElf,
        exe: &Path,
        options: &SpyOptions,
    ) -> Result<PythonSpy, SpyError> {
        let pid = process.pid();
        let mem = RemoteMemory::new(pid);
        let mut version = detect_version(&mem, &elf, exe).ok_or_else(|| not_python(&process))?;
        let unsupported = || SpyError::Unsupported {
            pid,
            version: version.to_string(),
            supported: supported_list(),
        };
        let runtime = elf.symbols.get("_PyRuntime").copied();
        let root = match (runtime, elf.symbols.get("interp_head")) {
            (Some(runtime), _)
                if crate::python::capabilities::Capabilities::of((
                    version.major,
                    version.minor,
                ))
                .runtime_root =>
            {
                InterpreterRoot::Runtime(runtime)
            }
            (_, Some(head)) => InterpreterRoot::InterpHead(*head),
            _ => return Err(unsupported()),
        };
        let (layout, layout_differences, debug_offsets) = choose_layout(&mem, runtime, &version)
            .map_err(|e| match e {
                LayoutChoice::Unsupported(why) => SpyError::Unsupported {
                    pid,
                    version: format!("{version}{why}"),
                    supported: supported_list(),
                },
                LayoutChoice::Read(source) => SpyError::Read { pid, source },
            })?;
        let root_interp = match root {
            InterpreterRoot::Runtime(runtime) => mem.read_u64(
                runtime.wrapping_add(layout.runtime_interpreters_head.unwrap_or_default()),
            ),
            InterpreterRoot::InterpHead(addr) => mem.read_u64(addr),
        };
        if version.micro.is_none()
            && let Ok(interp) = root_interp
            && interp != 0
            && let Some(exact) = sys_version(&mem, &layout, interp)
            && (exact.major, exact.minor) == (version.major, version.minor)
        {
            version = exact;
        }
        let gil = match (layout.runtime_tstate_current, runtime) {
            _ if layout.interp_gil_ptr.is_some() => GilLocation::PerInterpreter,
            (Some(current), Some(runtime)) => GilLocation::Current(runtime.wrapping_add(current)),
            _ => elf
                .symbols
                .get("_PyThreadState_Current")
                .map_or(GilLocation::Unknown, |a| GilLocation::Current(*a)),
        };
        let task_roots = if options.tasks {
            let minor = (version.major, version.minor);
            let roots = TaskRoots::new(minor, debug_offsets.as_ref());
            Some(roots.ok_or_else(|| SpyError::AsyncUnsupported {
                pid,
                version: version.to_string(),
            })?)
        } else {
            None
        };
        Ok(PythonSpy {
            task_roots,
            image: process.image_id(),
            reattach_tried: None,
            process,
            mem,
            fork_parent: None,
            version,
            layout,
            layout_differences,
            debug_offsets,
            root,
            gil,
            options: options.clone(),
            codes: CodeCache::new(),
            names: HashMap::new(),
            names_read_at: None,
            native_ids: HashMap::new(),
            thread_errors: 0,
            torn_reads: 0,
            paused_reads: 0,
            outermost: HashMap::new(),
            last_pages: Vec::new(),
            spare_pages: Vec::new(),
            thread_states: Vec::new(),
            gc_generation0: elf.symbols.get("_PyGC_generation0").copied(),
            frame_addresses: Vec::new(),
        })
    }

    /// How far this copy of the interpreter has come (see [`Liveness`]).
    fn liveness(&self) -> Liveness {
        let head = self.mem.read_u64(self.walk_root().interp_head);
        let Ok(interp) = head else {
            return Liveness::Uninitialised;
        };
        if interp == 0 {
            return Liveness::Uninitialised;
        }
        match self
            .mem
            .read_u64(interp.wrapping_add(self.layout.interp_threads_head))
        {
            Ok(tstate) if tstate != 0 => Liveness::Threads,
            Ok(_) => Liveness::Interpreter,
            Err(_) => Liveness::Uninitialised,
        }
    }

    /// `(kernel tid, PyThreadState address)` of each Python thread the last
    /// [`PythonSpy::read_stacks`] found with a known kernel id.
    pub fn thread_states(&self) -> &[(u32, u64)] {
        &self.thread_states
    }

    /// The address of `_PyRuntime` (3.7+), where `_Py_DebugOffsets` starts on 3.13+.
    pub fn runtime_address(&self) -> Option<u64> {
        match self.root {
            InterpreterRoot::Runtime(runtime) => Some(runtime),
            InterpreterRoot::InterpHead(_) => None,
        }
    }

    /// Where an in-kernel walker starts (with [`PythonSpy::layout`]).
    pub fn walk_root(&self) -> WalkRoot {
        let interp_head = match self.root {
            InterpreterRoot::Runtime(runtime) => {
                runtime.wrapping_add(self.layout.runtime_interpreters_head.unwrap_or_default())
            }
            InterpreterRoot::InterpHead(addr) => addr,
        };
        WalkRoot {
            interp_head,
            pthread_tid_offset: GLIBC_PTHREAD_TID_OFFSET,
        }
    }

    /// The first interpreter's `PyInterpreterState` address, read now (0 while the
    /// interpreter is not yet or no longer set up).
    pub fn main_interpreter(&self) -> Result<u64, SpyError> {
        self.mem
            .read_u64(self.walk_root().interp_head)
            .map_err(|e| self.read_error(e.into()))
    }

    /// The `(frame, code object)` addresses of each frame of each stack the last
    /// [`PythonSpy::read_stacks`] returned, parallel to it, innermost first (empty unless
    /// [`SpyOptions::locals`] is set).
    pub fn frame_addresses(&self) -> &[Vec<(u64, u64)>] {
        &self.frame_addresses
    }

    /// The address of `_PyRuntime` (3.7+).
    pub fn runtime(&self) -> Option<u64> {
        match self.root {
            InterpreterRoot::Runtime(runtime) => Some(runtime),
            InterpreterRoot::InterpHead(_) => None,
        }
    }

    /// The address of the `_PyGC_generation0` variable (3.6 only: a pointer to the first
    /// of the collector's generation lists).
    pub fn gc_generation0(&self) -> Option<u64> {
        self.gc_generation0
    }

    /// Decodes a stack an in-kernel walker recorded, innermost frame first. Code objects are
    /// decoded through the same cache as stack reads ([`CodeCache::checked_frame`]); one
    /// neither held with the captured tag nor readable as a code object with that tag now
    /// (freed since: another type, another tag) is left out, as is the interpreter's own code
    /// ([`CodeKind::Internal`]).
    pub fn decode_frames(&mut self, frames: impl Iterator<Item = CapturedFrame>) -> Vec<Frame> {
        let pointers = self.layout.capabilities().interpreter_frames;
        let mem = self.mem;
        let parent = self.fork_parent;
        // The outermost generator or coroutine frame's code (frames come innermost first).
        let mut coroutine = None;
        let mut decoded: Vec<Frame> = frames
            .filter_map(|frame| {
                let position = if pointers {
                    InstructionPosition::Pointer(frame.position)
                } else {
                    InstructionPosition::Lasti(frame.position as u32 as i32)
                };
                let mut checked = |mem: &RemoteMemory| {
                    self.codes
                        .checked_frame(mem, &self.layout, frame.code, position, frame.tag)
                };
                let (code, line, kind) = match checked(&mem) {
                    Ok(decoded) => decoded,
                    Err(DecodeError::Memory(MemoryError::ProcessGone)) => {
                        checked(parent.as_ref()?).ok()?
                    }
                    Err(_) => return None,
                };
                match kind {
                    CodeKind::Internal => return None,
                    CodeKind::Generator => coroutine = Some(code.clone()),
                    CodeKind::Plain => {}
                }
                Some(Frame { code, line })
            })
            .collect();
        if let Some(root) = self.captured_task_root(&decoded, coroutine) {
            decoded.push(root);
        }
        decoded
    }

    /// With [`SpyOptions::tasks`], the root of a captured stack (innermost first): the task
    /// last seen running its outermost task coroutine. A stack whose outermost generator or
    /// coroutine frame (`coroutine`) runs code no task is known to run has the task lists
    /// read (for one code, at most every so often) to learn the coroutines of tasks not
    /// caught running at a tick.
    fn captured_task_root(
        &mut self,
        frames: &[Frame],
        coroutine: Option<Arc<CodeInfo>>,
    ) -> Option<Frame> {
        let roots = self.task_roots.as_mut()?;
        if let Some(root) = roots.root_of_captured(frames) {
            return Some(root.clone());
        }
        if !roots.task_read_due(coroutine?) {
            return None;
        }
        let threads = self.read_tasks().ok().flatten()?;
        let roots = self.task_roots.as_mut()?;
        roots.learn(&threads);
        roots.root_of_captured(frames).cloned()
    }

    /// Says which process this one was forked from (see [`PythonSpy::decode_frames`]): the
    /// type and tag checks of each code object read there still apply.
    pub fn set_fork_parent(&mut self, ppid: i32) {
        self.fork_parent = Some(RemoteMemory::new(ppid));
    }

    /// The target's pid.
    pub fn pid(&self) -> i32 {
        self.process.pid()
    }

    /// The interpreter's exact version.
    pub fn version(&self) -> &PythonVersion {
        &self.version
    }

    /// The layout in use.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Members where the interpreter's own `_Py_DebugOffsets` (3.13+) disagreed with the
    /// generated layout (the interpreter's values are the ones used).
    pub fn layout_differences(&self) -> &[&'static str] {
        &self.layout_differences
    }

    /// The interpreter's own `_Py_DebugOffsets` (3.13+), when it publishes them.
    pub fn debug_offsets(&self) -> Option<&DebugOffsets> {
        self.debug_offsets.as_ref()
    }

    /// Thread stacks reported unreadable so far (every try found them torn or garbage).
    pub fn thread_read_errors(&self) -> u64 {
        self.thread_errors
    }

    /// Thread stacks found torn (or unreadable) and read again so far.
    pub fn torn_reads(&self) -> u64 {
        self.torn_reads
    }

    /// The target process.
    pub fn process(&self) -> &TargetProcess {
        &self.process
    }

    fn read_error(&self, source: DecodeError) -> SpyError {
        if matches!(source, DecodeError::Memory(MemoryError::ProcessGone))
            || !self.process.is_alive()
        {
            SpyError::Exited(self.pid())
        } else {
            SpyError::Read {
                pid: self.pid(),
                source,
            }
        }
    }

    /// Reads every Python thread's stack. A thread whose frames stay torn for every try is
    /// still reported, with its [`ThreadStack::read_error`] set, and counted in
    /// [`PythonSpy::thread_read_errors`].
    pub fn read_stacks(&mut self) -> Result<Vec<ThreadStack>, SpyError> {
        if self.last_pages.is_empty() && !self.options.blocking {
            // A first read fetches the pages of the threads' frames one at a time, decoding
            // code objects in between: too slow to catch a busy thread's chain whole. It
            // only learns those pages and code objects; the read reported is the next one,
            // of the same pages fetched in one batch.
            let thread_errors = self.thread_errors;
            self.read_stacks_once()?;
            self.thread_errors = thread_errors;
        }
        let before = self.thread_errors;
        let stacks = self.read_stacks_once()?;
        if !self.options.pause_when_torn
            || self.options.blocking
            || stacks.iter().all(|s| s.read_error.is_none())
        {
            return Ok(stacks);
        }
        // The target could not be paused (another tracer holds it): the free-running read
        // stands.
        let Ok(pause) = self.pause_all() else {
            return Ok(stacks);
        };
        let unpaused_errors = self.thread_errors;
        self.thread_errors = before;
        // Whether each thread is idle comes from the first read (a paused thread looks
        // stopped): the paused one reads only memory.
        let thread_state = std::mem::replace(&mut self.options.thread_state, false);
        let again = self.read_stacks_once();
        drop(pause);
        self.options.thread_state = thread_state;
        let mut again = match again {
            Ok(again) => again,
            Err(_) => {
                self.thread_errors = unpaused_errors;
                return Ok(stacks);
            }
        };
        self.paused_reads += 1;
        for stack in &mut again {
            if let Some(first) = stacks.iter().find(|s| s.thread_id == stack.thread_id) {
                stack.idle = first.idle;
            }
        }
        Ok(again)
    }

    /// Reads made again with the target paused because a thread stayed torn
    /// ([`SpyOptions::pause_when_torn`]).
    pub fn paused_reads(&self) -> u64 {
        self.paused_reads
    }

    fn read_stacks_once(&mut self) -> Result<Vec<ThreadStack>, SpyError> {
        // Scheduler states are taken before pausing: a paused thread always looks stopped.
        let os_states: HashMap<u32, char> = if self.options.thread_state {
            self.process.thread_states()
        } else {
            HashMap::new()
        };
        let _pause = self.pause()?;
        let mem = self.mem;
        let snapshot = PageCache::prefetched_reusing(
            &mem,
            &self.last_pages,
            std::mem::take(&mut self.spare_pages),
        );
        let head = match self.root {
            InterpreterRoot::Runtime(runtime) => snapshot.read_u64(
                runtime.wrapping_add(self.layout.runtime_interpreters_head.unwrap_or_default()),
            ),
            InterpreterRoot::InterpHead(addr) => snapshot.read_u64(addr),
        }
        .map_err(|e| self.read_error(e.into()))?;
        if head == 0 {
            return Ok(Vec::new());
        }
        let raws = thread_states(&snapshot, &self.layout, head).map_err(|e| self.read_error(e))?;
        if let Some(mut roots) = self.task_roots.take() {
            if roots.wants_offsets()
                && let Ok(Some(offsets)) = self.asyncio_offsets()
            {
                roots.found_offsets(offsets);
            }
            roots.refresh(&self.mem, &self.layout, &mut self.codes, &raws);
            self.task_roots = Some(roots);
        }
        let mut stacks = Vec::with_capacity(raws.len());
        self.thread_states.clear();
        let mut holders: HashMap<u64, Option<u64>> = HashMap::new();
        let mut pages = Vec::new();
        self.frame_addresses.clear();
        for raw in &raws {
            let (mut frames, locals, cut, read_error) = match self
                .frames_of(&snapshot, raw, &mut pages)
            {
                Ok(chain) => {
                    let locals = chain
                        .addresses
                        .iter()
                        .map(|&(frame, code)| {
                            frame_locals(&self.mem, &self.layout, frame, code).unwrap_or_default()
                        })
                        .collect();
                    self.frame_addresses.push(chain.addresses);
                    (chain.frames, locals, chain.cut, None)
                }
                Err(error) => {
                    if !self.process.is_alive() {
                        return Err(SpyError::Exited(self.pid()));
                    }
                    self.thread_errors += 1;
                    self.frame_addresses.push(Vec::new());
                    (Vec::new(), Vec::new(), false, Some(error.to_string()))
                }
            };
            if read_error.is_none()
                && let Some(root) = self
                    .task_roots
                    .as_ref()
                    .and_then(|roots| roots.root_of_thread(raw.thread_id, &frames))
            {
                frames.push(root.clone());
            }
            let holder = *holders
                .entry(raw.interp)
                .or_insert_with(|| gil_holder(&snapshot, &self.layout, self.gil, raw.interp));
            // The interpreter numbers threads in its own PID namespace (a container's).
            let native_id = raw
                .native_id
                .or_else(|| self.native_id_of(raw.thread_id))
                .and_then(|tid| self.process.host_tid(tid));
            if !self.names.contains_key(&raw.thread_id) {
                self.refresh_names(raw.interp);
            }
            if let Some(tid) = native_id {
                self.thread_states.push((tid, raw.tstate));
            }
            let idle = native_id
                .and_then(|tid| os_states.get(&tid))
                .is_some_and(|state| *state != 'R');
            stacks.push(ThreadStack {
                thread_id: raw.thread_id,
                native_id,
                name: self.names.get(&raw.thread_id).cloned(),
                holds_gil: holder == Some(raw.tstate),
                idle,
                frames,
                locals,
                cut,
                read_error,
            });
        }
        if self.outermost.len() > raws.len() {
            self.outermost
                .retain(|tstate, _| raws.iter().any(|r| r.tstate == *tstate));
        }
        pages.extend(snapshot.used_page_addresses());
        pages.sort_unstable();
        pages.dedup();
        self.last_pages = pages;
        self.spare_pages = snapshot.into_buffers();
        Ok(stacks)
    }

    /// With [`SpyOptions::blocking`], every thread of the target paused until the value is
    /// dropped.
    fn pause(&self) -> Result<Option<remoteprocess::Lock>, SpyError> {
        if !self.options.blocking {
            return Ok(None);
        }
        self.pause_all().map(Some)
    }

    /// Pauses every thread of the target (`PTRACE_SEIZE` and `PTRACE_INTERRUPT`, no signal
    /// sent) until the value is dropped. The kernel resumes the threads if pmt dies holding
    /// it. For a caller that reads more than stacks in one pause (`pmt heap --blocking`);
    /// the spy's own reads must then not pause ([`SpyOptions::blocking`] unset).
    pub fn pause_all(&self) -> Result<remoteprocess::Lock, SpyError> {
        remoteprocess::Process::new(self.pid())
            .and_then(|p| p.lock())
            .map_err(|e| SpyError::Pause {
                pid: self.pid(),
                message: e.to_string(),
            })
    }

    /// Every asyncio task of every thread, read now, per thread; tasks of no live thread
    /// (3.14+: created by a thread that has exited; 3.11–3.13: of a loop not running) come
    /// last when there are any. `None` when the target has not loaded asyncio (no task can
    /// exist). 3.14+ from the interpreter's own task lists (`asyncio.rs`), 3.11–3.13 from
    /// asyncio's registries (`asyncio_registries.rs`). A running task's stack is its
    /// thread's frames down to its coroutine's; a suspended one's, its chain of awaited
    /// coroutines. A list changing under the reader is read again, a few times.
    pub fn read_tasks(&mut self) -> Result<Option<Vec<ThreadTasks>>, SpyError> {
        let unsupported = || SpyError::AsyncUnsupported {
            pid: self.pid(),
            version: self.version.to_string(),
        };
        let minor = (self.version.major, self.version.minor);
        let (source, coroutines) = if let Some(fields) = TaskFields::of(minor) {
            let coroutines = CoroutineLayout::registries(minor).ok_or_else(unsupported)?;
            (TaskSource::Registries(fields), coroutines)
        } else {
            let coroutines = self
                .debug_offsets
                .as_ref()
                .and_then(|debug| CoroutineLayout::of(minor, debug))
                .ok_or_else(unsupported)?;
            let Some(offsets) = self.asyncio_offsets()? else {
                return Ok(None);
            };
            (TaskSource::Lists(offsets), coroutines)
        };
        let _pause = self.pause()?;
        let mut last_error = None;
        for _ in 0..TASK_READ_TRIES {
            match self.tasks_once(&source, &coroutines) {
                Ok(tasks) => return Ok(tasks),
                Err(error) => {
                    if !self.process.is_alive() {
                        return Err(SpyError::Exited(self.pid()));
                    }
                    last_error = Some(error);
                    std::thread::yield_now();
                }
            }
        }
        Err(self.read_error(last_error.unwrap_or(DecodeError::invalid("asyncio task list", 0))))
    }

    fn tasks_once(
        &mut self,
        source: &TaskSource,
        coroutines: &CoroutineLayout,
    ) -> Result<Option<Vec<ThreadTasks>>, DecodeError> {
        let mem = self.mem;
        let cache = PageCache::new(&mem);
        let head = cache.read_u64(self.walk_root().interp_head)?;
        if head == 0 {
            return Ok(Some(Vec::new()));
        }
        let raws = thread_states(&cache, &self.layout, head)?;
        let mut threads = match source {
            TaskSource::Lists(offsets) => {
                let mut reader = TaskReader {
                    mem: &cache,
                    layout: &self.layout,
                    offsets: *offsets,
                    coroutines: *coroutines,
                    codes: &mut self.codes,
                };
                let mut threads = Vec::with_capacity(raws.len());
                for raw in &raws {
                    threads.push(reader.thread_tasks(raw.tstate, raw.thread_id)?);
                }
                let mut interps: Vec<u64> = raws.iter().map(|r| r.interp).collect();
                interps.dedup();
                for interp in interps {
                    let orphans = reader.interpreter_tasks(interp)?;
                    if !orphans.tasks.is_empty() {
                        threads.push(orphans);
                    }
                }
                threads
            }
            TaskSource::Registries(fields) => {
                let Some(mut threads) = asyncio_registries::read(
                    &cache,
                    &self.layout,
                    coroutines,
                    &mut self.codes,
                    fields,
                    head,
                )?
                else {
                    return Ok(None);
                };
                // Tasks of a thread that is no longer there have no thread.
                for group in &mut threads {
                    if group
                        .thread_id
                        .is_some_and(|id| !raws.iter().any(|r| r.thread_id == id))
                    {
                        group.thread_id = None;
                    }
                }
                threads
            }
        };
        for group in &mut threads {
            let Some(raw) = raws.iter().find(|r| Some(r.thread_id) == group.thread_id) else {
                continue;
            };
            if let Some(task) = group.tasks.iter_mut().find(|t| t.running) {
                // The running coroutine's callees are on the thread's stack, not in an await
                // chain: its stack is the thread's frames down to the coroutine's.
                let until = coroutines.frame_of(task.coro);
                if let Ok(chain) = walk_frames(
                    &cache,
                    &self.layout,
                    &mut self.codes,
                    raw.first_frame,
                    raw.base_frame,
                    true,
                ) && let Some(at) = chain
                    .addresses
                    .iter()
                    .position(|(frame, _)| *frame == until)
                {
                    task.stack = chain.frames[..=at].to_vec();
                }
            }
        }
        Ok(Some(threads))
    }

    /// The `_asyncio` module's offsets table, from the first mapped file (the `_asyncio`
    /// extension, libpython, the executable) that has its section; `None` if none has.
    fn asyncio_offsets(&self) -> Result<Option<AsyncioOffsets>, SpyError> {
        let maps = self.process.maps().map_err(ProcessError::while_attaching)?;
        let exe = self.process.exe().map_err(ProcessError::while_attaching)?;
        let mut seen: Vec<&Path> = Vec::new();
        for mapped in &maps {
            let name = mapped
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("");
            let candidate =
                name.starts_with("_asyncio") || name.starts_with("libpython") || mapped.path == exe;
            if !candidate || seen.contains(&mapped.path.as_path()) {
                continue;
            }
            seen.push(&mapped.path);
            let base = mapped.base.unwrap_or(mapped.start);
            let read_path = self.process.file_path(&mapped.path);
            let Ok(Some(at)) = section_address(&mapped.path, &read_path, base, SECTION) else {
                continue;
            };
            let raw = self
                .mem
                .read_vec(at, TABLE_BYTES)
                .map_err(|e| self.read_error(e.into()))?;
            return AsyncioOffsets::parse(&raw, at)
                .map(Some)
                .map_err(|e| self.read_error(e));
        }
        Ok(None)
    }

    /// The frames of thread `raw`, whose innermost frame the snapshot saw. A running target
    /// moves under the reader: a walk that finds the chain torn is done again on a fresh
    /// snapshot (one batched read of the pages the reads so far used, so that the thread
    /// state and its frames are copied as close to one instant as the kernel allows), from
    /// the thread's innermost frame as it is then, up to the configured number of tries.
    /// `pages` collects the pages the retries used, for the next read's prefetch.
    fn frames_of(
        &mut self,
        snapshot: &PageCache<'_, RemoteMemory>,
        raw: &RawThread,
        pages: &mut Vec<u64>,
    ) -> Result<Chain, DecodeError> {
        let tries = match self.options.read_tries {
            0 => FRAME_READ_TRIES,
            n => n,
        };
        let mem = self.mem;
        let mut candidate = None;
        let mut result = self.whole_chain(snapshot, raw, raw.first_frame);
        for attempt in 1.. {
            let believed = match &result {
                Ok(chain) => self.believable(raw.tstate, chain, &mut candidate),
                Err(_) => false,
            };
            if believed {
                break;
            }
            if attempt >= tries {
                return Err(match result {
                    Err(error) => error,
                    Ok(_) => DecodeError::invalid(
                        "frame chain (cut: its outermost frame is not the thread's)",
                        raw.first_frame,
                    ),
                });
            }
            self.torn_reads += 1;
            // A target preempted in the middle of changing its chain keeps it torn until it
            // runs again: let it.
            std::thread::yield_now();
            let mut fresh_pages = snapshot.used_page_addresses();
            fresh_pages.extend_from_slice(pages);
            fresh_pages.sort_unstable();
            fresh_pages.dedup();
            let fresh = PageCache::prefetched(&mem, &fresh_pages);
            result = match current_frame(&fresh, &self.layout, raw.tstate) {
                Ok(first) => self.whole_chain(&fresh, raw, first),
                Err(error) => Err(error),
            };
            pages.extend(fresh.used_page_addresses());
        }
        let chain = result?;
        if self.anchors() && !chain.frames.is_empty() && !chain.cut {
            self.outermost.insert(raw.tstate, chain.outermost);
        }
        Ok(chain)
    }

    /// Whether a chain that the frames themselves call whole is the thread's, as far as its
    /// outermost frame tells (before 3.11): it ends where the thread's chain last ended, or
    /// two reads in a row (`candidate` keeps the first) end at the same new frame.
    fn believable(&self, tstate: u64, chain: &Chain, candidate: &mut Option<u64>) -> bool {
        if !self.anchors() || chain.frames.is_empty() || chain.cut {
            return true;
        }
        match self.outermost.get(&tstate) {
            None => true,
            Some(known) if *known == chain.outermost => true,
            Some(_) if *candidate == Some(chain.outermost) => true,
            Some(_) => {
                *candidate = Some(chain.outermost);
                false
            }
        }
    }

    /// One walk of `raw`'s chain from `first`, checked for wholeness as far as the frames
    /// themselves tell (see `frames.rs`).
    fn whole_chain(
        &mut self,
        mem: &impl ReadMemory,
        raw: &RawThread,
        first: u64,
    ) -> Result<Chain, DecodeError> {
        walk_frames(
            mem,
            &self.layout,
            &mut self.codes,
            first,
            raw.base_frame,
            self.options.locals,
        )
    }

    /// Whether this version's chains are checked against the thread's known outermost frame
    /// (before 3.11 no frame marks itself as a thread's first).
    fn anchors(&self) -> bool {
        !self.layout.capabilities().interpreter_frames
    }

    /// Looks up `threading` names again, at most every [`NAME_REFRESH`].
    fn refresh_names(&mut self, interp: u64) {
        if self
            .names_read_at
            .is_some_and(|at| at.elapsed() < NAME_REFRESH)
        {
            return;
        }
        self.names_read_at = Some(Instant::now());
        if let Ok(names) = thread_names(&self.mem, &self.layout, interp) {
            self.names.extend(names);
        }
    }

    /// The kernel thread id of a thread whose version does not record it (3.6, 3.7): glibc's
    /// `struct pthread` holds it, and the candidate must be one of the process's threads.
    fn native_id_of(&mut self, thread_id: u64) -> Option<u32> {
        if let Some(tid) = self.native_ids.get(&thread_id) {
            return Some(*tid);
        }
        let tid = self
            .mem
            .read_u32(thread_id.checked_add(GLIBC_PTHREAD_TID_OFFSET)?)
            .ok()?;
        let host = self.process.host_tid(tid)?;
        let known = self.process.thread_ids().ok()?;
        known.contains(&host).then(|| {
            self.native_ids.insert(thread_id, tid);
            tid
        })
    }
}

/// The supported `major.minor` versions, comma separated, for error messages.
fn supported_list() -> String {
    SUPPORTED
        .iter()
        .map(|(major, minor)| format!("{major}.{minor}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why no layout could be chosen.
enum LayoutChoice {
    /// The build or release is not one the reader can follow (the text qualifies the version).
    Unsupported(&'static str),
    /// The interpreter's own table could not be read.
    Read(DecodeError),
}

/// The layout for `version`: the generated table, and on 3.13+ the interpreter's own
/// `_Py_DebugOffsets` over it (a minor newer than every generated table, whose table shape
/// is known, starts from the newest generated table for the members the interpreter does
/// not describe).
fn choose_layout(
    mem: &RemoteMemory,
    runtime: Option<u64>,
    version: &PythonVersion,
) -> Result<(Layout, Vec<&'static str>, Option<DebugOffsets>), LayoutChoice> {
    let generated = layout_for(version.major, version.minor);
    let header = match runtime {
        Some(runtime)
            if crate::python::capabilities::Capabilities::of((version.major, version.minor))
                .debug_offsets =>
        {
            Header::read(mem, runtime).map_err(LayoutChoice::Read)?
        }
        _ => None,
    };
    let (Some(runtime), Some(header)) = (runtime, header) else {
        return generated
            .map(|layout| (*layout, Vec::new(), None))
            .ok_or(LayoutChoice::Unsupported(""));
    };
    if header.free_threaded {
        return Err(LayoutChoice::Unsupported(
            " (a free-threaded build, which is not supported yet)",
        ));
    }
    let schema = Schema::for_version(version, header.version).ok_or(if version.suffix.is_empty() {
        LayoutChoice::Unsupported("")
    } else {
        LayoutChoice::Unsupported(" (a pre-release, whose debug offsets are read only for the exact pre-release they were written for)")
    })?;
    let base = generated
        .or_else(|| {
            SUPPORTED
                .last()
                .and_then(|&(major, minor)| layout_for(major, minor))
        })
        .ok_or(LayoutChoice::Unsupported(""))?;
    let debug = DebugOffsets::read(mem, runtime, schema).map_err(LayoutChoice::Read)?;
    let (mut layout, differences) = debug.apply(base);
    layout.version = (version.major, version.minor);
    Ok((layout, differences, Some(debug)))
}

/// The ELF files holding an interpreter: each `libpythonX.Y.so` mapped, then the executable.
fn find_interpreters(process: &TargetProcess, maps: &[MappedFile], exe: &Path) -> Vec<LoadedElf> {
    let is_libpython = |m: &&MappedFile| {
        m.path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("libpython") && n.contains(".so"))
    };
    let mut seen: Vec<&Path> = Vec::new();
    let mut found = Vec::new();
    let candidates = maps
        .iter()
        .filter(is_libpython)
        .chain(maps.iter().filter(|m| m.path == exe));
    for mapped in candidates {
        if seen.contains(&mapped.path.as_path()) {
            continue;
        }
        seen.push(&mapped.path);
        let base = mapped.base.unwrap_or(mapped.start);
        let read_path = process.file_path(&mapped.path);
        let Ok(elf) = load_symbols(&mapped.path, &read_path, base, WANTED_SYMBOLS) else {
            continue;
        };
        if elf.symbols.contains_key("_PyRuntime") || elf.symbols.contains_key("interp_head") {
            found.push(elf);
        }
    }
    found
}

/// The Python processes among `pid`'s descendants (read now), with their command lines.
pub fn python_descendants(pid: i32) -> Vec<(i32, String)> {
    let Ok(process) = TargetProcess::open(pid) else {
        return Vec::new();
    };
    process
        .descendants()
        .into_iter()
        .filter(|(child, _)| is_python(*child))
        .collect()
}

/// Whether process `pid` maps a CPython interpreter.
fn is_python(pid: i32) -> bool {
    TargetProcess::open(pid).is_ok_and(|p| {
        let (Ok(maps), Ok(exe)) = (p.maps(), p.exe()) else {
            return false;
        };
        !find_interpreters(&p, &maps, &exe).is_empty()
    })
}

/// `X.Y` from a file name such as `libpython3.11.so.1.0`, `libpython3.6m.so` or `python3.9`.
fn version_from_name(path: &Path) -> Option<(u8, u8)> {
    let name = path.file_name()?.to_str()?;
    let rest = name
        .strip_prefix("libpython")
        .or_else(|| name.strip_prefix("python"))?;
    let mut parts = rest.split('.');
    let major: u8 = parts.next()?.parse().ok()?;
    let minor_text: String = parts
        .next()?
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    Some((major, minor_text.parse().ok()?))
}

/// The version as far as the files tell: `Py_Version` read from the target (3.11+, exact),
/// else `major.minor` from the library's or executable's name, else a `PY_VERSION` string
/// in the file's read-only data. [`sys_version`] completes a `major.minor` one.
fn detect_version(mem: &RemoteMemory, elf: &LoadedElf, exe: &Path) -> Option<PythonVersion> {
    if let Some(version) = elf
        .symbols
        .get("Py_Version")
        .and_then(|addr| mem.read_u64(*addr).ok())
        .and_then(PythonVersion::from_hex)
    {
        return Some(version);
    }
    match version_from_name(&elf.path).or_else(|| version_from_name(exe)) {
        Some((major, minor)) => Some(PythonVersion::minor_only(major, minor)),
        None => elf
            .rodata_strings(|s| PythonVersion::parse(s).is_some())
            .ok()?
            .iter()
            .find_map(|s| PythonVersion::parse(s)),
    }
}

/// The exact version from the target's `sys.version` (such as `3.9.18 (main, …) [GCC …]`).
fn sys_version(mem: &RemoteMemory, layout: &Layout, interp: u64) -> Option<PythonVersion> {
    let text = module_global(mem, layout, interp, "sys", "version").ok()??;
    let text = read_str(mem, layout, text).ok()?;
    PythonVersion::parse(text.split_whitespace().next()?)
}

fn not_python(process: &TargetProcess) -> SpyError {
    let pid = process.pid();
    if !process.is_alive() {
        return SpyError::Process(ProcessError::ExitedWhileAttaching(pid));
    }
    let command = process.cmdline().unwrap_or_default();
    let pythons = name_in_trees(&python_descendants(pid));
    let hint = if pythons.is_empty() {
        String::new()
    } else {
        format!(
            "; its Python descendants are {}: pass one of those to --pid, or sample them all with --subprocesses",
            pythons.join(", ")
        )
    };
    SpyError::NotPython { pid, command, hint }
}
