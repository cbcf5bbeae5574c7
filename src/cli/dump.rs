//! `pmt dump`: every thread's Python stack, once, as text or JSON; with `--subprocesses`, of
//! every Python process in the tree under the pid (the pid itself may be a launcher).

use crate::attach::{ProcessTree, TargetProcess};
use crate::python::asyncio::{Task, ThreadTasks};
use crate::python::frames::MAX_FRAMES;
use crate::python::{Frame, PythonSpy, SpyError, SpyOptions, ThreadStack};
use anyhow::Context;
use clap::Args;
use serde::Serialize;
use std::io::Write;

/// How many times `pmt dump` reads a thread whose stack it finds torn.
const DUMP_READ_TRIES: usize = 50;

/// Print every thread's Python stack once, with the interpreter version and RSS.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// PID of the Python process.
    #[arg(short, long)]
    pub pid: i32,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Pause the process while reading it (consistent stacks; the target stops briefly).
    /// By default it is read while it runs, and paused only for one more read if a thread
    /// stays torn for every try.
    #[arg(long, conflicts_with = "nonblocking")]
    pub blocking: bool,
    /// Never pause the process, not even for a thread that stays torn for every try (it is
    /// then listed with its error).
    #[arg(long)]
    pub nonblocking: bool,
    /// Show each frame's local variables: None, bool, int, float, str and bytes values
    /// (bounded), anything else by its type; read from memory, no target code runs.
    #[arg(long)]
    pub locals: bool,
    /// Dump the process and all its descendants as a tree (the pid may be a launcher: a
    /// shell, pyenv's shim, a venv script, a pre-fork server's master).
    #[arg(long)]
    pub subprocesses: bool,
    /// Also list every asyncio task of every thread's event loop (CPython 3.11+): its name,
    /// id (the task object's address), whether it runs, its coroutine stack and the tasks
    /// awaiting it, as a tree per thread.
    #[arg(long = "async")]
    pub async_tasks: bool,
}

#[derive(Serialize)]
struct DumpJson<'a> {
    pid: i32,
    command: String,
    python_version: String,
    rss_bytes: Option<u64>,
    /// A thread stayed torn for every try while the process ran: the stacks were read again
    /// with the process paused (not with `--nonblocking`).
    paused_for_read: bool,
    threads: Vec<ThreadJson<'a>>,
    /// With `--async`: tasks of no live thread's loop (3.14+: left in the interpreter's list
    /// by threads that have exited; 3.11–3.13: of loops not running now).
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks_without_thread: Option<Vec<TaskJson<'a>>>,
}

#[derive(Serialize)]
struct ThreadJson<'a> {
    thread_id: u64,
    native_id: Option<u32>,
    name: Option<&'a str>,
    holds_gil: bool,
    idle: bool,
    frames: Vec<FrameJson<'a>>,
    /// The stack was deeper than the reader follows: `frames` are its innermost ones.
    cut: bool,
    /// Set when every try found the stack torn: the thread is reported without frames.
    read_error: Option<&'a str>,
    /// With `--async`: the asyncio tasks created in the thread.
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks: Option<Vec<TaskJson<'a>>>,
}

#[derive(Serialize)]
struct TaskJson<'a> {
    name: &'a str,
    /// The task object's address.
    id: u64,
    running: bool,
    awaited_by: &'a [u64],
    stack: Vec<FrameJson<'a>>,
}

#[derive(Serialize)]
struct FrameJson<'a> {
    function: &'a str,
    filename: &'a str,
    line: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    locals: Option<Vec<LocalJson<'a>>>,
}

#[derive(Serialize)]
struct LocalJson<'a> {
    name: &'a str,
    value: &'a str,
}

/// Runs the subcommand.
pub fn run(args: DumpArgs) -> anyhow::Result<()> {
    let options = SpyOptions {
        blocking: args.blocking,
        thread_state: true,
        // One dump: worth many tries for a whole stack of a thread that moves fast.
        read_tries: DUMP_READ_TRIES,
        locals: args.locals,
        tasks: false,
        pause_when_torn: !args.nonblocking,
    };
    if args.subprocesses {
        return run_tree(&args, &options);
    }
    let dump = ProcessDump::read(args.pid, &options, args.async_tasks)?;
    // Buffered: stdout is line-buffered, and a dump of many tasks is many lines.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.json {
        serde_json::to_writer_pretty(&mut out, &dump.json())?;
        writeln!(out)?;
    } else {
        dump.write_text(&mut out)?;
    }
    out.flush().context("writing the dump")?;
    Ok(())
}

/// One Python process read once.
struct ProcessDump {
    pid: i32,
    command: String,
    version: String,
    rss: Option<u64>,
    stacks: Vec<ThreadStack>,
    /// A thread stayed torn while the process ran, and the stacks were read again with it
    /// paused.
    paused: bool,
    /// With `--async`: each thread's tasks (`None` inside when `_asyncio` is not loaded).
    tasks: Option<Option<Vec<ThreadTasks>>>,
}

impl ProcessDump {
    fn read(pid: i32, options: &SpyOptions, async_tasks: bool) -> Result<ProcessDump, SpyError> {
        let mut spy = PythonSpy::attach(pid, options)?;
        let stacks = spy.read_stacks()?;
        let tasks = if async_tasks {
            Some(spy.read_tasks()?)
        } else {
            None
        };
        Ok(ProcessDump {
            pid,
            command: spy.process().cmdline().unwrap_or_default(),
            version: spy.version().to_string(),
            rss: spy.process().rss_bytes().ok(),
            stacks,
            paused: spy.paused_reads() > 0,
            tasks,
        })
    }

    /// The tasks of thread `thread_id` (`None`: of no live thread's loop), when asked for.
    fn tasks_of(&self, thread_id: Option<u64>) -> Option<&[Task]> {
        let all = self.tasks.as_ref()?;
        let found = all
            .iter()
            .flatten()
            .find(|t| t.thread_id == thread_id)
            .map(|t| t.tasks.as_slice());
        Some(found.unwrap_or(&[]))
    }

    fn json(&self) -> DumpJson<'_> {
        DumpJson {
            pid: self.pid,
            command: self.command.clone(),
            python_version: self.version.clone(),
            rss_bytes: self.rss,
            paused_for_read: self.paused,
            threads: self
                .stacks
                .iter()
                .map(|stack| {
                    let mut json = thread_json(stack);
                    json.tasks = self
                        .tasks_of(Some(stack.thread_id))
                        .map(|tasks| tasks.iter().map(task_json).collect());
                    json
                })
                .collect(),
            tasks_without_thread: self
                .tasks_of(None)
                .map(|tasks| tasks.iter().map(task_json).collect()),
        }
    }

    fn write_text(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "Process {}: {}\nPython v{}{}",
            self.pid,
            self.command,
            self.version,
            self.rss
                .map(|r| format!(", RSS {}", human_bytes(r)))
                .unwrap_or_default()
        )?;
        if self.paused {
            writeln!(
                out,
                "(a thread's stack changed too fast to read while the process ran: read with it paused)"
            )?;
        }
        if matches!(self.tasks, Some(None)) {
            writeln!(out, "(asyncio is not imported: no tasks)")?;
        }
        for stack in &self.stacks {
            writeln!(out)?;
            write_thread(out, stack)?;
            if let Some(tasks) = self.tasks_of(Some(stack.thread_id))
                && !tasks.is_empty()
            {
                let running_loop = self
                    .tasks
                    .iter()
                    .flatten()
                    .flatten()
                    .any(|t| t.thread_id == Some(stack.thread_id) && t.loop_running);
                let state = if running_loop {
                    "its event loop is running"
                } else {
                    "no event loop running"
                };
                writeln!(out, "  asyncio tasks ({}, {state}):", tasks.len())?;
                write_task_tree(out, tasks)?;
            }
        }
        if let Some(tasks) = self.tasks_of(None)
            && !tasks.is_empty()
        {
            writeln!(
                out,
                "\nasyncio tasks of no live thread's loop ({}):",
                tasks.len()
            )?;
            write_task_tree(out, tasks)?;
        }
        Ok(())
    }
}

/// A process of the tree: its dump, or why there is none.
struct TreeNode {
    pid: i32,
    parent: Option<i32>,
    depth: usize,
    command: String,
    dump: Result<ProcessDump, String>,
}

#[derive(Serialize)]
struct TreeJson<'a> {
    pid: i32,
    parent: Option<i32>,
    command: &'a str,
    python: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dump: Option<DumpJson<'a>>,
}

/// The tree under `root`, parents before their children (depth first).
fn read_tree(root: i32, options: &SpyOptions, async_tasks: bool) -> anyhow::Result<Vec<TreeNode>> {
    let root_process = TargetProcess::open(root)?;
    let mut tree = ProcessTree::polling(root);
    tree.update(|_| None);
    let mut nodes = Vec::new();
    let mut pending = vec![(root, None, 0usize)];
    while let Some((pid, parent, depth)) = pending.pop() {
        let command = if pid == root {
            root_process.cmdline().unwrap_or_default()
        } else {
            match TargetProcess::open(pid) {
                Ok(process) => process.cmdline().unwrap_or_default(),
                // It exited while the tree was listed.
                Err(_) => continue,
            }
        };
        let dump = match ProcessDump::read(pid, options, async_tasks) {
            Ok(dump) => Ok(dump),
            Err(SpyError::NotPython { .. }) => Err("not Python".to_string()),
            Err(err) if err.process_exited() => continue,
            Err(err) => Err(err.to_string()),
        };
        nodes.push(TreeNode {
            pid,
            parent,
            depth,
            command,
            dump,
        });
        pending.extend(
            tree.children(pid)
                .iter()
                .rev()
                .map(|&c| (c, Some(pid), depth + 1)),
        );
    }
    Ok(nodes)
}

fn run_tree(args: &DumpArgs, options: &SpyOptions) -> anyhow::Result<()> {
    let nodes = read_tree(args.pid, options, args.async_tasks)?;
    // Buffered: stdout is line-buffered, and a dump of many tasks is many lines.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.json {
        let processes: Vec<TreeJson<'_>> = nodes
            .iter()
            .map(|node| TreeJson {
                pid: node.pid,
                parent: node.parent,
                command: &node.command,
                python: node.dump.is_ok(),
                error: node.dump.as_ref().err().map(String::as_str),
                dump: node.dump.as_ref().ok().map(ProcessDump::json),
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &serde_json::json!({ "processes": processes }))?;
        writeln!(out)?;
    } else {
        writeln!(out, "Process tree of {}:", args.pid)?;
        for node in &nodes {
            let what = match &node.dump {
                Ok(dump) => format!("Python {}", dump.version),
                Err(why) => why.clone(),
            };
            let indent = "  ".repeat(node.depth.saturating_sub(1));
            let branch = if node.depth == 0 { "" } else { "└ " };
            writeln!(
                out,
                "{indent}{branch}{} {} [{what}]",
                node.pid, node.command
            )?;
        }
        for dump in nodes.iter().filter_map(|n| n.dump.as_ref().ok()) {
            writeln!(out)?;
            dump.write_text(&mut out)?;
        }
    }
    out.flush().context("writing the dump")?;
    if nodes.iter().all(|n| n.dump.is_err()) {
        anyhow::bail!(
            "no Python process in the tree of process {} ({} processes looked at)",
            args.pid,
            nodes.len()
        );
    }
    Ok(())
}

fn thread_json(stack: &ThreadStack) -> ThreadJson<'_> {
    ThreadJson {
        thread_id: stack.thread_id,
        native_id: stack.native_id,
        name: stack.name.as_deref(),
        holds_gil: stack.holds_gil,
        idle: stack.idle,
        frames: stack
            .frames
            .iter()
            .enumerate()
            .map(|(i, f)| FrameJson {
                locals: stack.locals.get(i).map(|locals| {
                    locals
                        .iter()
                        .map(|l| LocalJson {
                            name: &l.name,
                            value: &l.value,
                        })
                        .collect()
                }),
                ..frame_json(f)
            })
            .collect(),
        cut: stack.cut,
        read_error: stack.read_error.as_deref(),
        tasks: None,
    }
}

fn frame_json(frame: &Frame) -> FrameJson<'_> {
    FrameJson {
        function: &frame.code.function,
        filename: &frame.code.filename,
        line: frame.line,
        locals: None,
    }
}

fn task_json(task: &Task) -> TaskJson<'_> {
    TaskJson {
        name: &task.name,
        id: task.id,
        running: task.running,
        awaited_by: &task.awaited_by,
        stack: task.stack.iter().map(frame_json).collect(),
    }
}

/// The tasks of one thread as a tree: each task under the tasks awaiting it (a task awaited
/// by several shows under each), the ones no task of the list awaits at the top.
fn write_task_tree(out: &mut impl Write, tasks: &[Task]) -> std::io::Result<()> {
    let known: std::collections::HashSet<u64> = tasks.iter().map(|t| t.id).collect();
    let mut path = Vec::new();
    for task in tasks
        .iter()
        .filter(|t| !t.awaited_by.iter().any(|id| known.contains(id)))
    {
        write_task(out, tasks, task, 0, &mut path)?;
    }
    Ok(())
}

fn write_task(
    out: &mut impl Write,
    tasks: &[Task],
    task: &Task,
    depth: usize,
    path: &mut Vec<u64>,
) -> std::io::Result<()> {
    let indent = "  ".repeat(depth + 2);
    let running = if task.running { " [running]" } else { "" };
    writeln!(
        out,
        "{indent}└ task \"{}\" {:#x}{running}",
        task.name, task.id
    )?;
    for frame in &task.stack {
        writeln!(out, "{indent}    {frame}")?;
    }
    if path.contains(&task.id) {
        return Ok(());
    }
    path.push(task.id);
    for child in tasks.iter().filter(|t| t.awaited_by.contains(&task.id)) {
        write_task(out, tasks, child, depth + 1, path)?;
    }
    path.pop();
    Ok(())
}

fn write_thread(out: &mut impl Write, stack: &ThreadStack) -> std::io::Result<()> {
    let mut flags = Vec::new();
    if stack.holds_gil {
        flags.push("gil");
    }
    flags.push(if stack.idle { "idle" } else { "active" });
    write!(out, "Thread {:#x}", stack.thread_id)?;
    if let Some(tid) = stack.native_id {
        write!(out, " (tid {tid})")?;
    }
    if let Some(name) = &stack.name {
        write!(out, " \"{name}\"")?;
    }
    writeln!(out, " [{}]", flags.join(", "))?;
    for (i, frame) in stack.frames.iter().enumerate() {
        writeln!(out, "    {frame}")?;
        for local in stack.locals.get(i).into_iter().flatten() {
            writeln!(out, "        {} = {}", local.name, local.value)?;
        }
    }
    if stack.cut {
        writeln!(
            out,
            "    … (outermost frames cut: the stack is deeper than {MAX_FRAMES} frames)"
        )?;
    }
    if let Some(error) = &stack.read_error {
        writeln!(out, "    (stack not read whole: {error})")?;
    }
    Ok(())
}

/// `1.5 MiB`-style sizes.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
