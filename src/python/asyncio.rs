//! asyncio tasks read out of process (CPython 3.14+): the `_asyncio` module publishes
//! `_Py_AsyncioModuleDebugOffsets` in an ELF section named `.AsyncioDebug` (of the `_asyncio`
//! extension, or of the interpreter where the module is built in); each thread state keeps a
//! linked list of the native tasks created in it (`asyncio_tasks_head`) and the task it runs
//! (`asyncio_running_task`); the interpreter keeps the tasks of threads that have exited.
//! A task's coroutine stack is its coroutine's frame and, while it is suspended in an `await`
//! of another coroutine, that one's, and so on (the awaited object is on top of the suspended
//! frame's value stack). Nothing here pauses the target or knows about outputs.
//!
//! The per-version knowledge here is the shape of the offsets table (13 words, the same in
//! 3.14 and 3.15, transcribed from `Modules/_asynciomodule.c`) and the generator frame states
//! of `Include/internal/pycore_frame.h`, which changed between 3.14 and 3.15. Following a
//! coroutine's await chain and reading a set ([`CoroutineLayout`]) also serve 3.11–3.13,
//! whose tasks `asyncio_registries.rs` finds.

use super::code::{CodeCache, InstructionPosition};
use super::debug_offsets::DebugOffsets;
use super::frames::STACKREF_TAG_BITS;
use super::layout::Layout;
use super::objects::{DecodeError, field_u64, read_int, read_str};
use super::{CodeInfo, Frame};
use crate::attach::ReadMemory;
use std::collections::HashSet;
use std::sync::Arc;

/// The ELF section `_asyncio` puts its offsets table in.
pub const SECTION: &str = ".AsyncioDebug";

/// The most tasks one list is followed for; a longer (or cyclic) list is garbage.
const MAX_TASKS: usize = 1 << 20;
/// The most coroutines one task's await chain is followed through.
const MAX_AWAIT_DEPTH: usize = 1024;
/// The most slots of an `awaited_by` set's table read.
const MAX_SET_SLOTS: u64 = 1 << 16;
/// `Py_TPFLAGS_LONG_SUBCLASS`.
const TPFLAGS_LONG_SUBCLASS: u64 = 1 << 24;

/// `_Py_AsyncioModuleDebugOffsets` as the target publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncioOffsets {
    /// `sizeof(TaskObj)`.
    pub task_size: u64,
    /// `TaskObj.task_name`.
    pub task_name: u64,
    /// `TaskObj.task_awaited_by`: a task, a set of tasks, or NULL.
    pub task_awaited_by: u64,
    /// `TaskObj.task_is_task` (a `char`).
    pub task_is_task: u64,
    /// `TaskObj.task_awaited_by_is_set` (a `char`).
    pub task_awaited_by_is_set: u64,
    /// `TaskObj.task_coro`.
    pub task_coro: u64,
    /// `TaskObj.task_node`: the task's link in its thread's list.
    pub task_node: u64,
    /// `PyInterpreterState.asyncio_tasks_head`.
    pub interp_tasks_head: u64,
    /// `_PyThreadStateImpl.asyncio_running_loop`.
    pub tstate_running_loop: u64,
    /// `_PyThreadStateImpl.asyncio_running_task`.
    pub tstate_running_task: u64,
    /// `_PyThreadStateImpl.asyncio_tasks_head`.
    pub tstate_tasks_head: u64,
}

/// How many bytes the table has.
pub const TABLE_BYTES: usize = 13 * 8;

impl AsyncioOffsets {
    /// Decodes the table's bytes (`TABLE_BYTES` of them), checking that the offsets are
    /// plausible (inside the structs whose sizes the table gives).
    pub fn parse(raw: &[u8], at: u64) -> Result<AsyncioOffsets, DecodeError> {
        if raw.len() < TABLE_BYTES {
            return Err(DecodeError::invalid("_Py_AsyncioModuleDebugOffsets", at));
        }
        let w = |i: u64| field_u64(raw, i * 8);
        let offsets = AsyncioOffsets {
            task_size: w(0),
            task_name: w(1),
            task_awaited_by: w(2),
            task_is_task: w(3),
            task_awaited_by_is_set: w(4),
            task_coro: w(5),
            task_node: w(6),
            interp_tasks_head: w(8),
            tstate_running_loop: w(10),
            tstate_running_task: w(11),
            tstate_tasks_head: w(12),
        };
        let (interp_size, tstate_size) = (w(7), w(9));
        let task_fields = [
            offsets.task_name,
            offsets.task_awaited_by,
            offsets.task_is_task,
            offsets.task_awaited_by_is_set,
            offsets.task_coro,
            offsets.task_node,
        ];
        let plausible = offsets.task_size > 0
            && offsets.task_size < 4096
            && task_fields.iter().all(|f| *f < offsets.task_size)
            && offsets.interp_tasks_head < interp_size
            && interp_size < (1 << 24)
            && [
                offsets.tstate_running_loop,
                offsets.tstate_running_task,
                offsets.tstate_tasks_head,
            ]
            .iter()
            .all(|f| *f < tstate_size)
            && tstate_size < (1 << 20);
        if !plausible {
            return Err(DecodeError::invalid("_Py_AsyncioModuleDebugOffsets", at));
        }
        Ok(offsets)
    }
}

/// One asyncio task as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// The task object's address (what pmt uses as the task's id).
    pub id: u64,
    /// `Task.get_name()`.
    pub name: String,
    /// Whether it is its thread's running task.
    pub running: bool,
    /// The ids of the tasks awaiting it.
    pub awaited_by: Vec<u64>,
    /// Its coroutine stack, innermost first.
    pub stack: Vec<Frame>,
    /// The address of its coroutine (0 if it has none).
    pub coro: u64,
}

/// The tasks created in one thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadTasks {
    /// `threading.get_ident()` of the thread, or `None` for the interpreter's list of the
    /// tasks of threads that have exited.
    pub thread_id: Option<u64>,
    /// Whether an event loop runs in the thread.
    pub loop_running: bool,
    /// Its tasks, in the order the list holds them (creation order).
    pub tasks: Vec<Task>,
}

/// Where a suspended coroutine's frame keeps the object it awaits (`SEND`'s receiver).
#[derive(Debug, Clone, Copy)]
enum AwaitedAt {
    /// 3.14+: `slot` words below the frame's `stackpointer` (a pointer at `offset`): 1 in
    /// 3.14; 2 in 3.15, whose `SEND` takes three stack items (two in 3.14;
    /// `pycore_opcode_metadata.h`).
    StackPointer { offset: u64, slot: u64 },
    /// 3.11–3.13: the top of the value stack, `localsplus[stacktop - 1]` (`int stacktop` at
    /// `stacktop`, `localsplus` at `localsplus`).
    StackTop { stacktop: u64, localsplus: u64 },
}

/// Where generators keep their frame and state, and how a suspended one's awaited object
/// and a set's entries are found.
#[derive(Debug, Clone, Copy)]
pub struct CoroutineLayout {
    gi_iframe: u64,
    gi_frame_state: u64,
    awaited_at: AwaitedAt,
    set_table: u64,
    set_mask: u64,
    /// `FRAME_EXECUTING`.
    executing: i8,
    /// States in which a generator's frame is suspended in a `yield from` / `await`.
    yield_from: (i8, i8),
    /// `FRAME_CLEARED` and `FRAME_COMPLETED` (finished: no frame).
    finished: (i8, i8),
}

impl CoroutineLayout {
    /// The layout of a 3.14+ interpreter `version` from its own `_Py_DebugOffsets`, or `None`
    /// when its table lacks a member needed.
    pub fn of(version: (u8, u8), debug: &DebugOffsets) -> Option<CoroutineLayout> {
        // pycore_frame.h: 3.14 counts suspended states below FRAME_EXECUTING (0); 3.15
        // renumbered them from 0 and added a locked variant of FRAME_SUSPENDED_YIELD_FROM.
        let (executing, yield_from, finished, slot) = match version {
            (3, 14) => (0, (-1, -1), (1, 4), 1),
            (3, 15) => (4, (2, 3), (5, 5), 2),
            _ => return None,
        };
        Some(CoroutineLayout {
            gi_iframe: debug.get("gen_object", "gi_iframe")?,
            gi_frame_state: debug.get("gen_object", "gi_frame_state")?,
            awaited_at: AwaitedAt::StackPointer {
                offset: debug.get("interpreter_frame", "stackpointer")?,
                slot,
            },
            set_table: debug.get("set_object", "table")?,
            set_mask: debug.get("set_object", "mask")?,
            executing,
            yield_from,
            finished,
        })
    }

    /// The layout of 3.11–3.13, which publish no generator offsets: `PyGenObject`,
    /// `_PyInterpreterFrame` and `PySetObject` as the DWARF of CPython 3.11.7, 3.12.1 and
    /// 3.13.0 describe them (x86_64, default build). Frame states (pycore_frame.h):
    /// FRAME_EXECUTING is 0, a frame suspended in an `await` is -1 (FRAME_SUSPENDED in
    /// 3.11–3.12, FRAME_SUSPENDED_YIELD_FROM in 3.13), FRAME_COMPLETED 1, FRAME_CLEARED 4.
    pub fn registries(version: (u8, u8)) -> Option<CoroutineLayout> {
        let (gi_frame_state, gi_iframe) = match version {
            (3, 11) => (75, 80),
            (3, 12) | (3, 13) => (67, 72),
            _ => return None,
        };
        Some(CoroutineLayout {
            gi_iframe,
            gi_frame_state,
            awaited_at: AwaitedAt::StackTop {
                stacktop: 64,
                localsplus: 72,
            },
            set_table: 40,
            set_mask: 32,
            executing: 0,
            yield_from: (-1, -1),
            finished: (1, 4),
        })
    }

    /// The keys of the set at `set` (`setentry { key; hash; }`; a deleted slot's hash is -1).
    pub fn set_members(&self, mem: &impl ReadMemory, set: u64) -> Result<Vec<u64>, DecodeError> {
        let table = mem.read_u64(set.wrapping_add(self.set_table))?;
        let mask = mem.read_u64(set.wrapping_add(self.set_mask))?;
        if table == 0 || mask >= MAX_SET_SLOTS {
            return Err(DecodeError::invalid("set", set));
        }
        let bytes = mem.read_vec(table, ((mask + 1) * 16) as usize)?;
        Ok(bytes
            .chunks_exact(16)
            .filter_map(|entry| {
                let key = field_u64(entry, 0);
                let hash = field_u64(entry, 8) as i64;
                (key != 0 && hash != -1).then_some(key)
            })
            .collect())
    }

    /// The frames of coroutine `coro` and of the coroutines it awaits, innermost first.
    pub fn coroutine_stack(
        &self,
        mem: &impl ReadMemory,
        layout: &Layout,
        codes: &mut CodeCache,
        coro: u64,
    ) -> Result<Vec<Frame>, DecodeError> {
        let mut frames = Vec::new();
        let mut seen = HashSet::new();
        let coro_type = mem.read_u64(coro.wrapping_add(layout.object_type))?;
        let mut current = coro;
        while frames.len() < MAX_AWAIT_DEPTH && seen.insert(current) {
            let state = mem.read_u8(current.wrapping_add(self.gi_frame_state))? as i8;
            if state == self.finished.0 || state == self.finished.1 {
                break;
            }
            let frame = current.wrapping_add(self.gi_iframe);
            let code = mem.read_u64(frame.wrapping_add(layout.frame_code))? & !STACKREF_TAG_BITS;
            let ip = mem.read_u64(frame.wrapping_add(layout.frame_lasti))?;
            let (info, line, _) =
                codes.frame(mem, layout, code, InstructionPosition::Pointer(ip))?;
            frames.push(Frame { code: info, line });
            if state == self.executing || (state != self.yield_from.0 && state != self.yield_from.1)
            {
                break;
            }
            let slot = match self.awaited_at {
                AwaitedAt::StackPointer { offset, slot } => {
                    let top = mem.read_u64(frame.wrapping_add(offset))?;
                    if top == 0 {
                        break;
                    }
                    top.wrapping_sub(8 * slot)
                }
                AwaitedAt::StackTop {
                    stacktop,
                    localsplus,
                } => {
                    let depth = mem.read_u32(frame.wrapping_add(stacktop))? as i32;
                    if depth < 1 {
                        break;
                    }
                    frame
                        .wrapping_add(localsplus)
                        .wrapping_add(8 * (depth as u64 - 1))
                }
            };
            let awaited = mem.read_u64(slot)? & !STACKREF_TAG_BITS;
            // Only a coroutine has a frame to follow; anything else awaited (a future, a
            // task's iterator) ends the chain.
            if awaited == 0 || mem.read_u64(awaited.wrapping_add(layout.object_type))? != coro_type
            {
                break;
            }
            current = awaited;
        }
        frames.reverse();
        Ok(frames)
    }

    /// Where coroutine `coro`'s frame is (the frame a running task's stack ends at).
    pub fn frame_of(&self, coro: u64) -> u64 {
        coro.wrapping_add(self.gi_iframe)
    }

    /// The code object coroutine `coro` runs (what its task's frames start at).
    pub fn code_of(
        &self,
        mem: &impl ReadMemory,
        layout: &Layout,
        codes: &mut CodeCache,
        coro: u64,
    ) -> Result<Arc<CodeInfo>, DecodeError> {
        let frame = self.frame_of(coro);
        let code = mem.read_u64(frame.wrapping_add(layout.frame_code))? & !STACKREF_TAG_BITS;
        let (info, _, _) = codes.frame(mem, layout, code, InstructionPosition::Pointer(0))?;
        Ok(info)
    }
}

/// Everything a task read needs.
pub struct TaskReader<'a, M: ReadMemory> {
    /// The memory read.
    pub mem: &'a M,
    /// The interpreter's layout.
    pub layout: &'a Layout,
    /// The `_asyncio` table.
    pub offsets: AsyncioOffsets,
    /// Generator and set offsets.
    pub coroutines: CoroutineLayout,
    /// Code objects decoded so far.
    pub codes: &'a mut CodeCache,
}

impl<M: ReadMemory> TaskReader<'_, M> {
    /// The tasks of the thread state at `tstate` (thread `thread_id`).
    pub fn thread_tasks(
        &mut self,
        tstate: u64,
        thread_id: u64,
    ) -> Result<ThreadTasks, DecodeError> {
        let o = self.offsets;
        let running_loop = self
            .mem
            .read_u64(tstate.wrapping_add(o.tstate_running_loop))?;
        let running_task = self
            .mem
            .read_u64(tstate.wrapping_add(o.tstate_running_task))?;
        let tasks = self.list(tstate.wrapping_add(o.tstate_tasks_head), running_task)?;
        Ok(ThreadTasks {
            thread_id: Some(thread_id),
            loop_running: running_loop != 0,
            tasks,
        })
    }

    /// The interpreter's list: tasks whose thread has exited.
    pub fn interpreter_tasks(&mut self, interp: u64) -> Result<ThreadTasks, DecodeError> {
        let tasks = self.list(interp.wrapping_add(self.offsets.interp_tasks_head), 0)?;
        Ok(ThreadTasks {
            thread_id: None,
            loop_running: false,
            tasks,
        })
    }

    /// The tasks linked from the list head at `head` (`struct llist_node { next; prev; }`).
    fn list(&mut self, head: u64, running: u64) -> Result<Vec<Task>, DecodeError> {
        let mut tasks = Vec::new();
        let mut node = self.mem.read_u64(head)?;
        // A list never set up (no task was ever created in the thread) is all zeroes.
        while node != head && node != 0 {
            if tasks.len() >= MAX_TASKS {
                return Err(DecodeError::invalid("asyncio task list (too long)", head));
            }
            let task = node.wrapping_sub(self.offsets.task_node);
            tasks.push(self.task(task, task == running)?);
            node = self.mem.read_u64(node)?;
        }
        Ok(tasks)
    }

    fn task(&mut self, task: u64, running: bool) -> Result<Task, DecodeError> {
        let o = self.offsets;
        let raw = self.mem.read_vec(task, o.task_size as usize)?;
        let byte = |at: u64| raw.get(at as usize).copied().unwrap_or(0);
        if byte(o.task_is_task) == 0 {
            return Err(DecodeError::invalid("asyncio task (not a task)", task));
        }
        let name = task_name(self.mem, self.layout, field_u64(&raw, o.task_name))?;
        let awaited_by_obj = field_u64(&raw, o.task_awaited_by);
        let awaited_by = match awaited_by_obj {
            0 => Vec::new(),
            set if byte(o.task_awaited_by_is_set) != 0 => {
                self.coroutines.set_members(self.mem, set)?
            }
            one => vec![one],
        };
        let coro = field_u64(&raw, o.task_coro);
        let stack = if coro == 0 {
            Vec::new()
        } else {
            self.coroutines
                .coroutine_stack(self.mem, self.layout, self.codes, coro)?
        };
        Ok(Task {
            id: task,
            name,
            running,
            awaited_by,
            stack,
            coro,
        })
    }
}

/// A task's name: a `str`, or (the default, formatted lazily) the task's number.
pub fn task_name(mem: &impl ReadMemory, layout: &Layout, name: u64) -> Result<String, DecodeError> {
    if name == 0 {
        return Ok(String::new());
    }
    let ty = mem.read_u64(name.wrapping_add(layout.object_type))?;
    let flags = mem.read_u64(ty.wrapping_add(layout.type_flags))?;
    if flags & TPFLAGS_LONG_SUBCLASS != 0 {
        return Ok(format!("Task-{}", read_int(mem, layout, name)?));
    }
    read_str(mem, layout, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::SliceMemory;

    fn table(words: [u64; 13]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn the_table_debian_sid_3_14_publishes_is_read_and_garbage_is_refused() {
        // The `.AsyncioDebug` section of Debian sid's `_asyncio.cpython-314-x86_64-linux-gnu.so`.
        let words = [
            168, 136, 96, 108, 109, 128, 152, 225864, 10880, 936, 864, 872, 880,
        ];
        let offsets = AsyncioOffsets::parse(&table(words), 0x1000).expect("a valid table");
        assert_eq!(offsets.task_name, 136);
        assert_eq!(offsets.task_awaited_by, 96);
        assert_eq!(offsets.task_coro, 128);
        assert_eq!(offsets.task_node, 152);
        assert_eq!(offsets.interp_tasks_head, 10880);
        assert_eq!(offsets.tstate_running_task, 872);
        assert_eq!(offsets.tstate_tasks_head, 880);
        // A member outside its struct, or a short table, is not a table.
        let mut bad = words;
        bad[6] = 400;
        assert!(AsyncioOffsets::parse(&table(bad), 0x1000).is_err());
        assert!(AsyncioOffsets::parse(&table(words)[..96], 0x1000).is_err());
    }

    #[test]
    fn a_set_gives_its_live_keys_only() {
        let layout = CoroutineLayout::registries((3, 12)).expect("3.12");
        let mut mem = SliceMemory::new();
        let set = 0x1000u64;
        let table_at = 0x2000u64;
        let mut object = vec![0u8; 48];
        object[32..40].copy_from_slice(&3u64.to_le_bytes()); // mask: 4 slots
        object[40..48].copy_from_slice(&table_at.to_le_bytes());
        mem.map(set, object);
        let slots: [(u64, i64); 4] = [(0xa0, 7), (0, 0), (0xdead, -1), (0xb0, 9)];
        let entries = slots
            .iter()
            .flat_map(|(key, hash)| key.to_le_bytes().into_iter().chain(hash.to_le_bytes()))
            .collect();
        mem.map(table_at, entries);
        assert_eq!(layout.set_members(&mem, set).unwrap(), vec![0xa0, 0xb0]);
    }
}
