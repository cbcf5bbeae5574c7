//! asyncio tasks of CPython 3.11–3.13 read as objects: these versions publish no offsets for
//! asyncio, so the tasks are found where asyncio itself keeps them, in `sys.modules
//! ['asyncio.tasks']`: `_all_tasks` (3.11) or `_scheduled_tasks` (3.12, 3.13), weak sets of
//! the tasks, and `_eager_tasks` (3.12, 3.13), a set; `_current_tasks` maps each running
//! loop to its running task. A C `_asyncio.Task` is read from its struct (below), a task of
//! the pure-Python fallback from its instance dict. A task's thread is its loop's
//! (`_thread_id` of a running loop). Who awaits a task is not recorded before 3.14; it is found from what
//! each task waits on (`_fut_waiter`): a task, or a `gather`'s future (its `_children`); and
//! from a task group's done callback on its children (the group's `_parent_task`).

use super::asyncio::{CoroutineLayout, Task, ThreadTasks, task_name};
use super::code::CodeCache;
use super::layout::Layout;
use super::locals::type_name;
use super::objects::{DecodeError, dict_items, field_u32, field_u64, read_str, read_u64_int};
use super::threads::{instance_attribute, module_global};
use crate::attach::ReadMemory;
use std::collections::{HashMap, HashSet};

/// The most items of one list or tasks of one registry read.
const MAX_ITEMS: u64 = 1 << 20;
/// `PyWeakReference.wr_object` (3.11–3.13).
const WEAKREF_OBJECT: u64 = 16;
/// `PyMethodObject.im_self` (3.11–3.13).
const METHOD_SELF: u64 = 24;

/// Where the C `TaskObj` keeps what is read, as the DWARF of `_asyncio` in CPython 3.11.7,
/// 3.12.1 and 3.13.0 describes it (x86_64).
#[derive(Debug, Clone, Copy)]
pub struct TaskFields {
    event_loop: u64,
    callback0: u64,
    callbacks: u64,
    state: u64,
    fut_waiter: u64,
    coro: u64,
    name: u64,
    /// The registries of `asyncio.tasks` that hold tasks weakly (a `WeakSet`) and strongly
    /// (a `set`).
    weak_registry: &'static str,
    strong_registry: Option<&'static str>,
}

impl TaskFields {
    /// The fields of `version`, if it is one of 3.11–3.13.
    pub fn of(version: (u8, u8)) -> Option<TaskFields> {
        let (state, fut_waiter, weak_registry, strong_registry) = match version {
            (3, 11) => (88, 128, "_all_tasks", None),
            (3, 12) => (88, 128, "_scheduled_tasks", Some("_eager_tasks")),
            (3, 13) => (96, 112, "_scheduled_tasks", Some("_eager_tasks")),
            _ => return None,
        };
        Some(TaskFields {
            event_loop: 16,
            callback0: 24,
            callbacks: 40,
            state,
            fut_waiter,
            coro: fut_waiter + 8,
            name: fut_waiter + 16,
            weak_registry,
            strong_registry,
        })
    }
}

/// One task as found, before it is placed in a thread.
struct Found {
    task: Task,
    event_loop: u64,
    fut_waiter: u64,
    callbacks: Vec<u64>,
}

/// Every pending task of interpreter `interp`, per thread (`thread_id` of the thread whose
/// loop runs them; `None` for tasks of a loop not running now); `None` when asyncio is not
/// imported.
pub fn read(
    mem: &impl ReadMemory,
    layout: &Layout,
    coroutines: &CoroutineLayout,
    codes: &mut CodeCache,
    fields: &TaskFields,
    interp: u64,
) -> Result<Option<Vec<ThreadTasks>>, DecodeError> {
    let global = |name: &str| module_global(mem, layout, interp, "asyncio.tasks", name);
    let Some(weak) = global(fields.weak_registry)? else {
        return Ok(None);
    };
    let mut candidates = Vec::new();
    if let Some(data) = instance_attribute(mem, layout, weak, "data")? {
        for weakref in coroutines.set_members(mem, data)? {
            candidates.push(mem.read_u64(weakref.wrapping_add(WEAKREF_OBJECT))?);
        }
    }
    if let Some(name) = fields.strong_registry
        && let Some(strong) = global(name)?
    {
        candidates.extend(coroutines.set_members(mem, strong)?);
    }
    let running: HashSet<u64> = match global("_current_tasks")? {
        Some(current) => dict_items(mem, layout, current)?
            .into_iter()
            .map(|(_, task)| task)
            .collect(),
        None => HashSet::new(),
    };
    candidates.sort_unstable();
    candidates.dedup();
    let mut found = Vec::new();
    for object in candidates {
        if found.len() as u64 >= MAX_ITEMS {
            return Err(DecodeError::invalid(
                "asyncio task registry (too long)",
                weak,
            ));
        }
        if let Some(task) = read_task(mem, layout, coroutines, codes, fields, object, &running)? {
            found.push(task);
        }
    }
    link_awaiters(mem, layout, &mut found)?;
    // Each loop's thread, once.
    let mut threads: HashMap<u64, Option<u64>> = HashMap::new();
    let mut by_thread: Vec<ThreadTasks> = Vec::new();
    for task in found {
        let thread = match threads.get(&task.event_loop) {
            Some(thread) => *thread,
            None => {
                let thread = loop_thread(mem, layout, task.event_loop);
                threads.insert(task.event_loop, thread);
                thread
            }
        };
        match by_thread.iter_mut().find(|t| t.thread_id == thread) {
            Some(group) => group.tasks.push(task.task),
            None => by_thread.push(ThreadTasks {
                thread_id: thread,
                loop_running: thread.is_some(),
                tasks: vec![task.task],
            }),
        }
    }
    Ok(Some(by_thread))
}

/// The task at `object` if it is a pending task (else `None`: a dead weak reference, a
/// finished task).
fn read_task(
    mem: &impl ReadMemory,
    layout: &Layout,
    coroutines: &CoroutineLayout,
    codes: &mut CodeCache,
    fields: &TaskFields,
    object: u64,
    running: &HashSet<u64>,
) -> Result<Option<Found>, DecodeError> {
    if type_name(mem, layout, object).is_none_or(|name| !name.ends_with("Task")) {
        return Ok(None);
    }
    let attribute = |name: &str| {
        instance_attribute(mem, layout, object, name)
            .ok()
            .flatten()
            .unwrap_or(0)
    };
    // The pure-Python `Task` keeps its state in its instance dict; the C one in its struct.
    let python_coro = attribute("_coro");
    let (event_loop, callback0, callback_list, fut_waiter, coro, name, pending) =
        if python_coro != 0 {
            let state = attribute("_state");
            (
                attribute("_loop"),
                0,
                attribute("_callbacks"),
                attribute("_fut_waiter"),
                python_coro,
                attribute("_name"),
                // `_state` is a class attribute, `"PENDING"`, until the task finishes.
                state == 0 || read_str(mem, layout, state).is_ok_and(|s| s == "PENDING"),
            )
        } else {
            let raw = mem.read_vec(object, (fields.name + 8) as usize)?;
            let word = |at: u64| field_u64(&raw, at);
            (
                word(fields.event_loop),
                word(fields.callback0),
                word(fields.callbacks),
                word(fields.fut_waiter),
                word(fields.coro),
                word(fields.name),
                // STATE_PENDING is 0.
                field_u32(&raw, fields.state) == 0,
            )
        };
    // `asyncio.all_tasks()` leaves finished tasks out too.
    if !pending || coro == 0 || type_name(mem, layout, coro).as_deref() != Some("coroutine") {
        return Ok(None);
    }
    let mut callbacks = Vec::new();
    if callback0 != 0 {
        callbacks.push(callback0);
    }
    for entry in list_items(mem, layout, callback_list)? {
        // Each entry is a `(callback, context)` tuple.
        callbacks.push(mem.read_u64(entry.wrapping_add(layout.tuple_items))?);
    }
    Ok(Some(Found {
        task: Task {
            id: object,
            name: task_name(mem, layout, name)?,
            running: running.contains(&object),
            awaited_by: Vec::new(),
            stack: coroutines.coroutine_stack(mem, layout, codes, coro)?,
            coro,
        },
        event_loop,
        fut_waiter,
        callbacks,
    }))
}

/// Fills each task's `awaited_by`: the tasks whose `_fut_waiter` is it, or a gather's
/// future with it among its `_children`; and a task group's parent task for the tasks the
/// group's done callback (`TaskGroup._on_task_done`, a bound method) is on.
fn link_awaiters(
    mem: &impl ReadMemory,
    layout: &Layout,
    found: &mut [Found],
) -> Result<(), DecodeError> {
    let index: HashMap<u64, usize> = found
        .iter()
        .enumerate()
        .map(|(i, f)| (f.task.id, i))
        .collect();
    let mut edges: Vec<(usize, u64)> = Vec::new();
    for awaiter in found.iter() {
        let waiter = awaiter.fut_waiter;
        if waiter == 0 {
            continue;
        }
        if let Some(&awaited) = index.get(&waiter) {
            edges.push((awaited, awaiter.task.id));
        } else if let Ok(Some(children)) = instance_attribute(mem, layout, waiter, "_children") {
            for child in list_items(mem, layout, children)? {
                if let Some(&awaited) = index.get(&child) {
                    edges.push((awaited, awaiter.task.id));
                }
            }
        }
    }
    for (i, task) in found.iter().enumerate() {
        for &callback in &task.callbacks {
            if type_name(mem, layout, callback).as_deref() != Some("method") {
                continue;
            }
            let owner = mem.read_u64(callback.wrapping_add(METHOD_SELF))?;
            if let Ok(Some(parent)) = instance_attribute(mem, layout, owner, "_parent_task")
                && parent != task.task.id
                && index.contains_key(&parent)
            {
                edges.push((i, parent));
            }
        }
    }
    for (awaited, by) in edges {
        let list = &mut found[awaited].task.awaited_by;
        if !list.contains(&by) {
            list.push(by);
        }
    }
    Ok(())
}

/// The items of the list at `list` (none if it is `NULL` or not a list).
fn list_items(mem: &impl ReadMemory, layout: &Layout, list: u64) -> Result<Vec<u64>, DecodeError> {
    if list == 0 || type_name(mem, layout, list).as_deref() != Some("list") {
        return Ok(Vec::new());
    }
    let len = mem.read_u64(list.wrapping_add(layout.var_size))?;
    if len > MAX_ITEMS {
        return Err(DecodeError::invalid("list", list));
    }
    let items = mem.read_u64(list.wrapping_add(layout.list_items))?;
    if len == 0 {
        return Ok(Vec::new());
    }
    let bytes = mem.read_vec(items, (len * 8) as usize)?;
    Ok(bytes.chunks_exact(8).map(|c| field_u64(c, 0)).collect())
}

/// The `threading.get_ident()` of the thread running `event_loop` (its `_thread_id`, set
/// while it runs), if it runs.
pub(crate) fn loop_thread(mem: &impl ReadMemory, layout: &Layout, event_loop: u64) -> Option<u64> {
    let ident = instance_attribute(mem, layout, event_loop, "_thread_id").ok()??;
    if type_name(mem, layout, ident).as_deref() != Some("int") {
        return None;
    }
    read_u64_int(mem, layout, ident).ok()
}

/// The name object and coroutine of the task at `task`, a C `_asyncio.Task` or a task of the
/// pure-Python fallback.
pub(crate) fn task_name_and_coro(
    mem: &impl ReadMemory,
    layout: &Layout,
    fields: &TaskFields,
    task: u64,
) -> Result<(u64, u64), DecodeError> {
    if let Ok(Some(coro)) = instance_attribute(mem, layout, task, "_coro") {
        let name = instance_attribute(mem, layout, task, "_name")?.unwrap_or(0);
        return Ok((name, coro));
    }
    Ok((
        mem.read_u64(task.wrapping_add(fields.name))?,
        mem.read_u64(task.wrapping_add(fields.coro))?,
    ))
}
