//! The asyncio task each thread runs now, as a `<task NAME>` root frame for sampled stacks
//! (`pmt-sample --async`): each tick, on 3.14+, one word of each thread state
//! (`asyncio_running_task`, at `_asyncio`'s offsets); on 3.11–3.13, asyncio's
//! `_current_tasks` dict (running loop → running task) and each loop's thread. A task's
//! name and coroutine are decoded once per task (kept while its name object and coroutine
//! stay the same), so a tick costs a few reads from pages the stack read fetches anyway.
//!
//! A stack captured where it could not be decoded (in the kernel at a page fault, by the
//! allocation hook) has no thread state to ask: it is rooted at the task seen running the
//! coroutine its outermost task frame runs, or at `<task (any) FUNCTION>` when several tasks
//! were seen running it ([`TaskRoots::root_of_captured`]); the spy
//! reads the whole task lists (`PythonSpy::read_tasks`, as `pmt dump --async` does) when
//! such a stack runs a coroutine no task was seen running, and hands them to
//! [`TaskRoots::learn`]. A stack read at a tick goes to its thread's running task when that
//! task's coroutine is on it (the two are read a moment apart), else likewise.
//!
//! Owns: the per-tick running-task lookup, its caches, the root frames. Must not touch:
//! reading whole task lists (`asyncio.rs`, `asyncio_registries.rs`, whose task layouts and
//! name decoding it reuses), stack reading, or how samples are charged.

use super::asyncio::{AsyncioOffsets, CoroutineLayout, ThreadTasks, task_name};
use super::asyncio_registries::{TaskFields, loop_thread, task_name_and_coro};
use super::code::CodeCache;
use super::debug_offsets::DebugOffsets;
use super::layout::Layout;
use super::objects::{DecodeError, dict_items};
use super::threads::{RawThread, module_global};
use super::{CodeInfo, Frame};
use crate::attach::{PageCache, ReadMemory};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How soon a table or registry not found yet (asyncio not imported yet) is looked for
/// again: for the first second (a launched program imports asyncio soon), then doubling after
/// each miss up to [`LOOKUP_AT_MOST_EVERY`] (a program that never imports asyncio costs a
/// lookup every 2 s).
const LOOKUP_EVERY: Duration = Duration::from_millis(100);
const LOOKUP_STEADY_FOR: Duration = Duration::from_secs(1);
const LOOKUP_AT_MOST_EVERY: Duration = Duration::from_secs(2);
/// The most tasks whose names are kept; past it the cache starts afresh.
const MAX_KNOWN_TASKS: usize = 4096;
/// How often at most the whole task lists are read to learn which task runs one code object.
const TASK_READ_EVERY: Duration = Duration::from_millis(250);

/// Where the running tasks are found.
#[derive(Debug)]
enum Source {
    /// 3.14+: each thread state's running task, once `_asyncio`'s table is found.
    ThreadStates(Option<AsyncioOffsets>),
    /// 3.11–3.13: `asyncio.tasks._current_tasks`, once asyncio is imported.
    CurrentTasks {
        fields: TaskFields,
        dict: Option<u64>,
    },
}

/// A task whose name and coroutine were decoded.
#[derive(Debug)]
struct KnownTask {
    name_object: u64,
    coro: u64,
    root: Frame,
    /// The code object its coroutine runs.
    code: Option<Arc<CodeInfo>>,
}

/// Each thread's running task, tick after tick.
#[derive(Debug)]
pub struct TaskRoots {
    source: Source,
    coroutines: CoroutineLayout,
    next_lookup: Instant,
    lookup_every: Duration,
    created: Instant,
    tasks: HashMap<u64, KnownTask>,
    /// The task seen running each coroutine code object, for stacks that cannot ask their
    /// thread (see [`CodeRoot`]).
    by_code: HashMap<Arc<CodeInfo>, CodeRoot>,
    /// This tick's running tasks (root frame, coroutine code), by `threading.get_ident()`.
    current: HashMap<u64, (Frame, Option<Arc<CodeInfo>>)>,
    /// The thread each running loop runs in (3.11–3.13; a loop runs in one thread while it
    /// runs, and only running loops have a current task).
    loop_threads: HashMap<u64, u64>,
    /// The pages the last tick's lookup read, fetched in one batch at the next (the stack
    /// reader's own page cache is full with a deep stack's pages), and their buffers.
    pages: Vec<u64>,
    spare_pages: Vec<Box<[u8]>>,
    /// Lookups so far.
    ticks: u64,
    /// When the task lists were last read to learn which task runs a code object.
    tried: HashMap<Arc<CodeInfo>, Instant>,
}

impl TaskRoots {
    /// The lookup for an interpreter of `version`, or `None` when pmt cannot read its tasks.
    pub fn new(version: (u8, u8), debug: Option<&DebugOffsets>) -> Option<TaskRoots> {
        let (source, coroutines) = match TaskFields::of(version) {
            Some(fields) => (
                Source::CurrentTasks { fields, dict: None },
                CoroutineLayout::registries(version)?,
            ),
            None => (
                Source::ThreadStates(None),
                CoroutineLayout::of(version, debug?)?,
            ),
        };
        Some(TaskRoots {
            source,
            coroutines,
            next_lookup: Instant::now(),
            lookup_every: LOOKUP_EVERY,
            created: Instant::now(),
            tasks: HashMap::new(),
            by_code: HashMap::new(),
            current: HashMap::new(),
            tried: HashMap::new(),
            pages: Vec::new(),
            spare_pages: Vec::new(),
            ticks: 0,
            loop_threads: HashMap::new(),
        })
    }

    /// Whether the `_asyncio` table is still to be looked for now (3.14+, not found yet,
    /// not looked for lately); the caller hands what it finds to [`TaskRoots::found_offsets`].
    pub fn wants_offsets(&mut self) -> bool {
        matches!(self.source, Source::ThreadStates(None)) && self.lookup_due()
    }

    /// The `_asyncio` table, once found.
    pub fn found_offsets(&mut self, offsets: AsyncioOffsets) {
        self.source = Source::ThreadStates(Some(offsets));
    }

    fn lookup_due(&mut self) -> bool {
        lookup_due(&mut self.next_lookup, &mut self.lookup_every, self.created)
    }

    /// Finds the task each of `threads` runs now; a thread whose task cannot be read gets
    /// none (the next tick tries again).
    pub fn refresh(
        &mut self,
        mem: &impl ReadMemory,
        layout: &Layout,
        codes: &mut CodeCache,
        threads: &[RawThread],
    ) {
        let spare = std::mem::take(&mut self.spare_pages);
        // A cache keeps every page it was given, used or not: every so often a lookup reads
        // only what it needs, so that the pages of a lookup that read more (the first one,
        // a registry looked up, a task's code decoded) are not fetched at every tick after.
        self.ticks += 1;
        let prefetch: &[u64] = if self.ticks.is_multiple_of(RELEARN_PAGES_EVERY) {
            &[]
        } else {
            &self.pages
        };
        let cache = PageCache::prefetched_reusing(mem, prefetch, spare);
        self.refresh_from(&cache, layout, codes, threads);
        self.pages = cache.page_addresses();
        self.spare_pages = cache.into_buffers();
    }

    fn refresh_from(
        &mut self,
        mem: &impl ReadMemory,
        layout: &Layout,
        codes: &mut CodeCache,
        threads: &[RawThread],
    ) {
        self.current.clear();
        let running = match &mut self.source {
            Source::ThreadStates(None) => return,
            Source::ThreadStates(Some(offsets)) => {
                let at = offsets.tstate_running_task;
                let fields = (offsets.task_name, offsets.task_coro);
                threads
                    .iter()
                    .filter_map(|raw| {
                        let task = mem.read_u64(raw.tstate.wrapping_add(at)).ok()?;
                        if task == 0 {
                            return None;
                        }
                        let name = mem.read_u64(task.wrapping_add(fields.0)).ok()?;
                        let coro = mem.read_u64(task.wrapping_add(fields.1)).ok()?;
                        Some((raw.thread_id, task, name, coro))
                    })
                    .collect::<Vec<_>>()
            }
            Source::CurrentTasks { fields, dict } => {
                let fields = *fields;
                if dict.is_none()
                    && lookup_due(&mut self.next_lookup, &mut self.lookup_every, self.created)
                {
                    *dict = threads.first().and_then(|raw| {
                        module_global(mem, layout, raw.interp, "asyncio.tasks", "_current_tasks")
                            .ok()
                            .flatten()
                    });
                }
                let Some(current) = *dict else {
                    return;
                };
                let Ok(items) = dict_items(mem, layout, current) else {
                    // Not a dict any more (the module was torn down): look it up again.
                    *dict = None;
                    return;
                };
                if self.loop_threads.len() > items.len() + 64 {
                    self.loop_threads.clear();
                }
                let loops = &mut self.loop_threads;
                items
                    .into_iter()
                    .filter_map(|(event_loop, task)| {
                        let thread = match loops.get(&event_loop) {
                            Some(thread) => *thread,
                            None => {
                                let thread = loop_thread(mem, layout, event_loop)?;
                                loops.insert(event_loop, thread);
                                thread
                            }
                        };
                        let (name, coro) = task_name_and_coro(mem, layout, &fields, task).ok()?;
                        Some((thread, task, name, coro))
                    })
                    .collect()
            }
        };
        for (thread, task, name, coro) in running {
            if let Ok(running) = self.root_of_task(mem, layout, codes, task, name, coro) {
                self.current.insert(thread, running);
            }
        }
    }

    /// The root frame of the task at `task`, decoded on first sight.
    fn root_of_task(
        &mut self,
        mem: &impl ReadMemory,
        layout: &Layout,
        codes: &mut CodeCache,
        task: u64,
        name_object: u64,
        coro: u64,
    ) -> Result<(Frame, Option<Arc<CodeInfo>>), DecodeError> {
        if let Some(known) = self.tasks.get(&task)
            && known.name_object == name_object
            && known.coro == coro
        {
            return Ok((known.root.clone(), known.code.clone()));
        }
        let name = task_name(mem, layout, name_object)?;
        let root = root_frame(&name);
        let code = match coro {
            0 => None,
            coro => Some(self.coroutines.code_of(mem, layout, codes, coro)?),
        };
        if let Some(code) = &code {
            self.note_code(code, &name);
        }
        if self.tasks.len() >= MAX_KNOWN_TASKS {
            self.tasks.clear();
            self.by_code.clear();
        }
        self.tasks.insert(
            task,
            KnownTask {
                name_object,
                coro,
                root: root.clone(),
                code: code.clone(),
            },
        );
        Ok((root, code))
    }

    /// Whether the task lists may be read now to learn which task runs coroutine code
    /// `code` (not read lately for it); saying yes counts as reading them.
    pub fn task_read_due(&mut self, code: Arc<CodeInfo>) -> bool {
        if self.tried.len() >= MAX_KNOWN_TASKS {
            self.tried.clear();
        }
        let last = self.tried.get(&code);
        let due = last.is_none_or(|at| at.elapsed() >= TASK_READ_EVERY);
        if due {
            self.tried.insert(code, Instant::now());
        }
        due
    }

    /// Learns the coroutine of each task read whole (the outermost frame of its stack).
    pub fn learn(&mut self, threads: &[ThreadTasks]) {
        for task in threads.iter().flat_map(|t| &t.tasks) {
            if let Some(frame) = task.stack.last() {
                self.note_code(&frame.code, &task.name);
            }
        }
    }

    /// Notes that task `name` runs coroutine `code`. A task with asyncio's default name
    /// (`Task-N`) counts as one of several: such tasks are made by the dozen (a server's
    /// per-request tasks), and a stack captured in one cannot tell which.
    fn note_code(&mut self, code: &Arc<CodeInfo>, name: &str) {
        let any = || root_frame(&format!("(any) {}", code.function));
        if default_name(name) {
            let root = CodeRoot {
                name: None,
                root: any(),
            };
            self.by_code.insert(code.clone(), root);
            return;
        }
        match self.by_code.get_mut(code) {
            None => {
                let root = CodeRoot {
                    name: Some(name.to_string()),
                    root: root_frame(name),
                };
                self.by_code.insert(code.clone(), root);
            }
            Some(known) if known.name.as_deref().is_some_and(|n| n != name) => {
                known.name = None;
                known.root = any();
            }
            Some(_) => {}
        }
    }

    /// The root of the stack `frames` (innermost first) thread `thread_id` was read with
    /// at this tick: the task the thread runs, if its coroutine is on the stack (the stack
    /// and the running task are not read at one instant: a task switch in between leaves
    /// another task's frames), else as for a captured stack.
    pub fn root_of_thread(&self, thread_id: u64, frames: &[Frame]) -> Option<&Frame> {
        match self.current.get(&thread_id) {
            Some((root, Some(code))) if frames.iter().any(|f| f.code == *code) => Some(root),
            _ => self.root_of_captured(frames),
        }
    }

    /// The root of a stack captured elsewhere (innermost frame first), from the outermost of
    /// its frames that a task's coroutine runs (see [`CodeRoot`]).
    pub fn root_of_captured(&self, frames: &[Frame]) -> Option<&Frame> {
        frames
            .iter()
            .rev()
            .find_map(|frame| self.by_code.get(&frame.code))
            .map(|known| &known.root)
    }
}

/// The root given to stacks through a coroutine code object when their thread cannot say
/// which task ran them: the task that runs it, or, once several tasks were seen running it
/// (a server's per-request tasks) or it has asyncio's default name (`Task-N`),
/// `<task (any) FUNCTION>`: naming one of them would be a guess.
#[derive(Debug)]
struct CodeRoot {
    /// The one task seen running the code, `None` once there were several.
    name: Option<String>,
    root: Frame,
}

/// Whether `name` is one asyncio gives a task not named (`Task-N`).
fn default_name(name: &str) -> bool {
    name.strip_prefix("Task-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether a lookup is due now (at `next`); saying yes schedules the next one, `every` later,
/// and, once the lookups have gone on for [`LOOKUP_STEADY_FOR`] since `since`, doubles
/// `every` up to [`LOOKUP_AT_MOST_EVERY`].
fn lookup_due(next: &mut Instant, every: &mut Duration, since: Instant) -> bool {
    let now = Instant::now();
    if now < *next {
        return false;
    }
    *next = now + *every;
    if now.duration_since(since) >= LOOKUP_STEADY_FOR {
        *every = (*every * 2).min(LOOKUP_AT_MOST_EVERY);
    }
    true
}

/// Every how many lookups the pages to prefetch are learnt again (see [`TaskRoots::refresh`]).
const RELEARN_PAGES_EVERY: u64 = 64;

/// How a task's root frame starts (`<task NAME>`).
pub const TASK_FRAME_PREFIX: &str = "<task ";

/// The frame `<task NAME>`.
fn root_frame(name: &str) -> Frame {
    Frame {
        code: Arc::new(CodeInfo {
            function: format!("{TASK_FRAME_PREFIX}{name}>"),
            filename: String::new(),
            first_line: 0,
        }),
        line: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str) -> Frame {
        Frame {
            code: Arc::new(CodeInfo {
                function: function.to_string(),
                filename: "app.py".to_string(),
                first_line: 1,
            }),
            line: 2,
        }
    }

    #[test]
    fn a_captured_stack_goes_to_its_coroutine_s_task_or_to_any_when_several_run_it() {
        let mut roots = TaskRoots::new((3, 12), None).expect("3.12 is supported");
        let (handler, worker, leaf) = (frame("handle"), frame("worker"), frame("alloc"));
        roots.note_code(&worker.code, "worker-1");
        roots.note_code(&handler.code, "request 7");
        roots.note_code(&handler.code, "request 7");
        let stack = [leaf.clone(), worker.clone(), frame("Handle._run")];
        let root = roots.root_of_captured(&stack).expect("a root");
        assert_eq!(root.code.function, "<task worker-1>");
        // The outermost task coroutine decides.
        let nested = [leaf.clone(), worker.clone(), handler.clone()];
        let root = roots.root_of_captured(&nested).expect("a root");
        assert_eq!(root.code.function, "<task request 7>");
        roots.note_code(&handler.code, "request 8");
        let root = roots.root_of_captured(&nested).expect("a root");
        assert_eq!(root.code.function, "<task (any) handle>");
        // asyncio's default names say nothing of which task it was.
        let other = frame("serve");
        roots.note_code(&other.code, "Task-12");
        let root = roots
            .root_of_captured(&[leaf.clone(), other])
            .expect("a root");
        assert_eq!(root.code.function, "<task (any) serve>");
        assert!(roots.root_of_captured(&[leaf]).is_none());
    }
}
