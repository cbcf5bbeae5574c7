//! `pmt dump`: every thread's Python stack, once, as text or JSON.

use crate::python::{PythonSpy, SpyOptions, ThreadStack};
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
    #[arg(long)]
    pub blocking: bool,
}

#[derive(Serialize)]
struct DumpJson<'a> {
    pid: i32,
    command: String,
    python_version: String,
    rss_bytes: Option<u64>,
    threads: Vec<ThreadJson<'a>>,
}

#[derive(Serialize)]
struct ThreadJson<'a> {
    thread_id: u64,
    native_id: Option<u32>,
    name: Option<&'a str>,
    holds_gil: bool,
    idle: bool,
    frames: Vec<FrameJson<'a>>,
    /// Set when every try found the stack torn: the thread is reported without frames.
    read_error: Option<&'a str>,
}

#[derive(Serialize)]
struct FrameJson<'a> {
    function: &'a str,
    filename: &'a str,
    line: u32,
}

/// Runs the subcommand.
pub fn run(args: DumpArgs) -> anyhow::Result<()> {
    let options = SpyOptions {
        blocking: args.blocking,
        thread_state: true,
        // One dump: worth many tries for a whole stack of a thread that moves fast.
        read_tries: DUMP_READ_TRIES,
    };
    let mut spy = PythonSpy::attach(args.pid, &options)?;
    let stacks = spy.read_stacks()?;
    let rss = spy.process().rss_bytes().ok();
    let command = spy.process().cmdline().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if args.json {
        let dump = DumpJson {
            pid: args.pid,
            command,
            python_version: spy.version().to_string(),
            rss_bytes: rss,
            threads: stacks.iter().map(thread_json).collect(),
        };
        serde_json::to_writer_pretty(&mut out, &dump)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "Process {}: {}\nPython v{}{}",
            args.pid,
            command,
            spy.version(),
            rss.map(|r| format!(", RSS {}", human_bytes(r)))
                .unwrap_or_default()
        )?;
        for stack in &stacks {
            writeln!(out)?;
            write_thread(&mut out, stack)?;
        }
    }
    out.flush().context("writing the dump")?;
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
            .map(|f| FrameJson {
                function: &f.code.function,
                filename: &f.code.filename,
                line: f.line,
            })
            .collect(),
        read_error: stack.read_error.as_deref(),
    }
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
    for frame in &stack.frames {
        writeln!(out, "    {frame}")?;
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
