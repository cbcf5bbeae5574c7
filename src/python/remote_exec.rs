//! Running a Python script in a live CPython 3.14+ process with the interpreter's own
//! remote-execution protocol (PEP 768, what `sys.remote_exec(pid, path)` does), located
//! through the `debugger_support` section of `_Py_DebugOffsets`:
//!
//! 1. the interpreter must allow it: `PyInterpreterState.config.remote_debug` is 1 (0 when
//!    started with `PYTHON_DISABLE_REMOTE_DEBUG` or `-X disable-remote-debug`);
//! 2. one thread state is chosen (the main thread's, or the one with a given native id);
//! 3. the script's path, NUL-terminated, goes into its `debugger_script_path` buffer (shorter
//!    than `debugger_script_path_size`), then its `debugger_pending_call` is set to 1, then
//!    `_PY_EVAL_PLEASE_STOP_BIT` is set in its `eval_breaker`;
//! 4. at its next eval-breaker check (loop back edges, calls) the thread clears the flag,
//!    copies the path and runs the file (`_PyRunRemoteDebugger`, called at the end of
//!    `_Py_HandlePending`, both in `Python/ceval_gil.c`). The sender's side of the same steps
//!    is `send_exec_to_proc_handle` in `Python/remote_debugging.c`.
//!
//! Optionally it waits for the flag to fall back to 0; if it does not in time, the request is
//! withdrawn so that nothing runs later unasked. The target is never stopped.
//!
//! Owns: those three writes and their withdrawal. Must not touch: any other byte of the
//! target (writes go through the bounded [`RemoteMemory::write`]); the script and where it
//! lives (see `attach::placement`).

use super::spy::PythonSpy;
use crate::attach::namespaces::ThreadIdMap;
use crate::attach::stop;
use crate::attach::{MemoryError, ReadMemory, RemoteMemory};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;

/// `_PY_EVAL_PLEASE_STOP_BIT` (`Include/internal/pycore_ceval.h`, 3.14 and 3.15): the event
/// bit that makes a thread run `_Py_HandlePending`, which ends in `_PyRunRemoteDebugger`.
const PLEASE_STOP_BIT: u8 = 1 << 5;

/// Most thread states walked when looking one up by native id (garbage must not loop).
const MAX_THREADS: usize = 4096;

/// How often the pending flag is read while waiting.
const POLL: Duration = Duration::from_millis(2);

/// Which thread runs the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecThread {
    /// The main thread, as `sys.remote_exec` does.
    #[default]
    Main,
    /// The thread with this native id, as the target numbers it (`threading.get_native_id()`;
    /// inside a container, the container's id).
    Native(u64),
}

/// How to send the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RemoteExecOptions {
    /// The thread that runs it.
    pub thread: ExecThread,
    /// Wait this long for the thread to take the request (withdrawing it if it does not);
    /// `None` returns as soon as it is sent.
    pub wait: Option<Duration>,
}

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecOutcome {
    /// Sent; not waited for (the file must stay in place until the script reports back).
    Sent {
        /// The chosen thread's native id (the target's own numbering).
        thread: u64,
    },
    /// The thread took it (cleared the flag) and runs the script right then: it opens the
    /// file just after, so keep the file in place until the script reports back.
    Taken {
        /// The chosen thread's native id.
        thread: u64,
        /// How long after sending.
        after: Duration,
    },
}

/// Why a script could not be run in the target. Each message says what to do.
#[derive(Debug, Error)]
pub enum RemoteExecError {
    /// The interpreter predates PEP 768.
    #[error(
        "process {pid} runs CPython {version}; running code in it without a restart needs CPython 3.14 or newer (PEP 768 remote execution)"
    )]
    Unsupported {
        /// The target.
        pid: i32,
        /// Its version.
        version: String,
    },
    /// Remote execution was disabled when the target started.
    #[error(
        "process {pid} was started with remote debugging disabled (PYTHON_DISABLE_REMOTE_DEBUG set, or -X disable-remote-debug), so no code can be run in it; restart it without them to allow it"
    )]
    Disabled {
        /// The target.
        pid: i32,
    },
    /// The interpreter is shutting down.
    #[error("process {pid}'s interpreter is shutting down: it will run no more code")]
    Finalizing {
        /// The target.
        pid: i32,
    },
    /// The thread asked for is not a Python thread of the target.
    #[error("process {pid} has no Python {which}")]
    NoThread {
        /// The target.
        pid: i32,
        /// Which thread was asked for.
        which: String,
    },
    /// The path does not fit the interpreter's buffer.
    #[error(
        "the script path {path:?} is {len} bytes; the interpreter takes at most {max}: place it at a shorter path"
    )]
    PathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length.
        len: usize,
        /// The longest the buffer holds (without the NUL).
        max: usize,
    },
    /// Another debugger's request is still pending in that thread.
    #[error(
        "thread {thread} of process {pid} already has a remote-execution request pending (another debugger's); try again once it has run"
    )]
    Busy {
        /// The target.
        pid: i32,
        /// The thread's native id.
        thread: u64,
    },
    /// The thread did not take the request in time (or pmt was asked to stop first).
    #[error(
        "thread {thread} of process {pid} ran no Python code for {waited:.1?} ({doing}), so it did not take the request; {outcome}"
    )]
    NotTaken {
        /// The target.
        pid: i32,
        /// The thread's native id.
        thread: u64,
        /// How long it was waited for.
        waited: Duration,
        /// What the thread was doing, as the kernel says.
        doing: String,
        /// Whether the request was withdrawn for sure.
        outcome: &'static str,
    },
    /// The interpreter's debug offsets do not make sense.
    #[error("process {pid}'s debug offsets are implausible ({what}): nothing was written")]
    Implausible {
        /// The target.
        pid: i32,
        /// What is wrong.
        what: String,
    },
    /// Reading or writing the target's memory failed.
    #[error("process {pid}: {source}")]
    Memory {
        /// The target.
        pid: i32,
        /// What failed.
        source: MemoryError,
    },
}

/// Where the protocol's fields are in one target.
#[derive(Debug, Clone, Copy)]
struct Fields {
    finalizing: u64,
    threads_head: u64,
    threads_main: u64,
    tstate_next: u64,
    native_thread_id: u64,
    enabled: u64,
    eval_breaker: u64,
    pending_call: u64,
    script_path: u64,
    script_path_size: u64,
}

impl Fields {
    /// The fields from the target's `_Py_DebugOffsets`, each checked to lie inside its
    /// struct (the interpreter's and thread state's published sizes).
    fn of(spy: &PythonSpy) -> Result<Fields, RemoteExecError> {
        let pid = spy.pid();
        let unsupported = || RemoteExecError::Unsupported {
            pid,
            version: spy.version().to_string(),
        };
        if !spy.layout().capabilities().remote_exec {
            return Err(unsupported());
        }
        let offsets = spy.debug_offsets().ok_or_else(unsupported)?;
        let get =
            |section: &str, member: &str| offsets.get(section, member).ok_or_else(unsupported);
        let support = get("debugger_support", "remote_debugger_support")?;
        let fields = Fields {
            finalizing: get("runtime_state", "finalizing")?,
            threads_head: get("interpreter_state", "threads_head")?,
            threads_main: get("interpreter_state", "threads_main")?,
            tstate_next: get("thread_state", "next")?,
            native_thread_id: get("thread_state", "native_thread_id")?,
            enabled: get("debugger_support", "remote_debugging_enabled")?,
            eval_breaker: get("debugger_support", "eval_breaker")?,
            pending_call: support.saturating_add(get("debugger_support", "debugger_pending_call")?),
            script_path: support.saturating_add(get("debugger_support", "debugger_script_path")?),
            script_path_size: get("debugger_support", "debugger_script_path_size")?,
        };
        let interp_size = get("interpreter_state", "size")?;
        let tstate_size = get("thread_state", "size")?;
        let implausible = |what: &str| RemoteExecError::Implausible {
            pid,
            what: what.to_string(),
        };
        if fields.script_path_size == 0
            || fields.script_path_size > crate::attach::memory::MAX_WRITE as u64
        {
            return Err(implausible("debugger_script_path_size"));
        }
        if fields.enabled.saturating_add(4) > interp_size
            || fields.threads_main.saturating_add(8) > interp_size
        {
            return Err(implausible("interpreter_state members beyond its size"));
        }
        let path_end = fields.script_path.saturating_add(fields.script_path_size);
        if fields.eval_breaker.saturating_add(8) > tstate_size
            || fields.pending_call.saturating_add(4) > tstate_size
            || path_end > tstate_size
        {
            return Err(implausible(
                "debugger_support members beyond the thread state",
            ));
        }
        Ok(fields)
    }
}

/// Asks the target of `spy` to run the Python file at `script` (a path as the target sees
/// it, readable by it: see `attach::placement`). On CPython 3.14+ only.
pub fn remote_exec(
    spy: &PythonSpy,
    script: &Path,
    options: &RemoteExecOptions,
) -> Result<ExecOutcome, RemoteExecError> {
    let pid = spy.pid();
    let fields = Fields::of(spy)?;
    let path = script.as_os_str().as_bytes();
    let max = fields.script_path_size as usize - 1;
    if path.len() > max || path.contains(&0) {
        return Err(RemoteExecError::PathTooLong {
            path: script.to_path_buf(),
            len: path.len(),
            max,
        });
    }
    let mem = RemoteMemory::new(pid);
    let memory = |source| RemoteExecError::Memory { pid, source };
    let (tstate, thread) = chosen_thread(spy, &mem, &fields, options.thread)?;

    // The order is the protocol's and makes every prefix inert: the path is only read once
    // the flag is 1, and the flag is only looked at once the event bit is set.
    let mut with_nul = path.to_vec();
    with_nul.push(0);
    mem.write(tstate + fields.script_path, &with_nul)
        .map_err(memory)?;
    mem.write(tstate + fields.pending_call, &1i32.to_le_bytes())
        .map_err(memory)?;
    let sent = Instant::now();
    if let Err(source) = set_please_stop(&mem, tstate + fields.eval_breaker) {
        // Without the bit the thread would still take the request at some later event:
        // withdraw it instead (the target may also be gone, and this fails harmlessly).
        let _ = withdraw(&mem, tstate, &fields);
        return Err(memory(source));
    }
    let Some(wait) = options.wait else {
        return Ok(ExecOutcome::Sent { thread });
    };
    while sent.elapsed() < wait && !stop::requested() {
        if mem.read_u32(tstate + fields.pending_call).map_err(memory)? == 0 {
            return Ok(ExecOutcome::Taken {
                thread,
                after: sent.elapsed(),
            });
        }
        std::thread::sleep(POLL);
    }
    let doing = if stop::requested() {
        "pmt was asked to stop before it did".to_string()
    } else {
        what_thread_does(spy, thread)
    };
    let withdrawn = withdraw(&mem, tstate, &fields).map_err(memory)?;
    Err(RemoteExecError::NotTaken {
        pid,
        thread,
        waited: sent.elapsed(),
        doing,
        outcome: if withdrawn {
            "the request was withdrawn and the script will not run"
        } else {
            "it took the request just as it was being withdrawn, so the script may still run"
        },
    })
}

/// The thread state that will run the script and its native id, once the interpreter is
/// found running, allowing remote execution, and with no other request pending there.
fn chosen_thread(
    spy: &PythonSpy,
    mem: &RemoteMemory,
    fields: &Fields,
    which: ExecThread,
) -> Result<(u64, u64), RemoteExecError> {
    let pid = spy.pid();
    let memory = |source| RemoteExecError::Memory { pid, source };
    let runtime = spy
        .runtime_address()
        .ok_or_else(|| RemoteExecError::Unsupported {
            pid,
            version: spy.version().to_string(),
        })?;
    if mem.read_u64(runtime + fields.finalizing).map_err(memory)? != 0 {
        return Err(RemoteExecError::Finalizing { pid });
    }
    let interp = mem.read_u64(spy.walk_root().interp_head).map_err(memory)?;
    if interp == 0 {
        return Err(RemoteExecError::Finalizing { pid });
    }
    // `config.remote_debug` is a C int: 1 allows, anything else does not.
    if mem.read_u32(interp + fields.enabled).map_err(memory)? != 1 {
        return Err(RemoteExecError::Disabled { pid });
    }
    let tstate = thread_state(mem, fields, interp, which)
        .map_err(memory)?
        .ok_or_else(|| RemoteExecError::NoThread {
            pid,
            which: match which {
                ExecThread::Main => "main thread".to_string(),
                ExecThread::Native(tid) => format!("thread with native id {tid}"),
            },
        })?;
    let thread = mem
        .read_u64(tstate + fields.native_thread_id)
        .map_err(memory)?;
    if mem.read_u32(tstate + fields.pending_call).map_err(memory)? != 0 {
        return Err(RemoteExecError::Busy { pid, thread });
    }
    Ok((tstate, thread))
}

/// The chosen thread state's address, `None` when there is no such thread.
fn thread_state(
    mem: &RemoteMemory,
    fields: &Fields,
    interp: u64,
    which: ExecThread,
) -> Result<Option<u64>, MemoryError> {
    match which {
        ExecThread::Main => {
            Ok(Some(mem.read_u64(interp + fields.threads_main)?).filter(|&t| t != 0))
        }
        ExecThread::Native(tid) => {
            let mut tstate = mem.read_u64(interp + fields.threads_head)?;
            for _ in 0..MAX_THREADS {
                if tstate == 0 {
                    break;
                }
                if mem.read_u64(tstate + fields.native_thread_id)? == tid {
                    return Ok(Some(tstate));
                }
                tstate = mem.read_u64(tstate + fields.tstate_next)?;
            }
            Ok(None)
        }
    }
}

/// Sets `_PY_EVAL_PLEASE_STOP_BIT` in the eval breaker at `addr`. Only its low byte (the
/// event bits) is written: the bits above hold the instrumentation version, which the
/// target may bump meanwhile and must never see rolled back. CPython's own sender reads and
/// writes the whole word; an event bit the target sets between the read and the write is
/// lost either way (a window of microseconds, as in `sys.remote_exec`).
fn set_please_stop(mem: &RemoteMemory, addr: u64) -> Result<(), MemoryError> {
    let events = mem.read_u8(addr)?;
    mem.write(addr, &[events | PLEASE_STOP_BIT])
}

/// Withdraws a pending request: empties the path, then clears the flag if still set. `true`
/// when the script certainly will not run: a thread that takes the flag after the path was
/// emptied copies an empty path and runs nothing. `false` when the thread took it first.
fn withdraw(mem: &RemoteMemory, tstate: u64, fields: &Fields) -> Result<bool, MemoryError> {
    mem.write(tstate + fields.script_path, &[0])?;
    if mem.read_u32(tstate + fields.pending_call)? == 0 {
        return Ok(false);
    }
    mem.write(tstate + fields.pending_call, &0i32.to_le_bytes())?;
    Ok(true)
}

/// What the kernel says thread `native` (the target's numbering) is doing, for a message.
fn what_thread_does(spy: &PythonSpy, native: u64) -> String {
    let process = spy.process();
    let host = u32::try_from(native)
        .ok()
        .and_then(|tid| ThreadIdMap::new(spy.pid()).to_host(tid));
    let Some(host) = host else {
        return "it is no longer running".to_string();
    };
    let state = process.thread_states().get(&host).copied();
    match (state, process.thread_wait_channel(host)) {
        (Some('R'), _) => "it is running native code".to_string(),
        (_, Some(wchan)) => format!("it is blocked in the kernel, in {wchan}"),
        (Some(state), None) => format!("its kernel state is {state}"),
        (None, None) => "it is no longer running".to_string(),
    }
}
