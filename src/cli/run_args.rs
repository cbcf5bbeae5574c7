//! The options that say what to sample and how, shared by `pmt-sample` and `pmt top`
//! (declared once, flattened into both), and their mapping onto [`crate::run::RunOptions`].
//!
//! Owns: the names, help and checks of these options. Must not touch: sampling itself.

use super::output_args::OutputArgs;
use crate::attach::stop;
use crate::output::format::Outputs;
use crate::run::heap_capture::HookOptions;
use crate::run::{AttributionMode, MallocMode, Run, RunOptions, TargetSpec};
use anyhow::{Context, bail};
use clap::Args;
use std::time::Duration;

/// `--attribution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttributionArg {
    /// In the kernel where eBPF is available, else at ticks.
    Auto,
    /// In the kernel, or no run.
    Kernel,
    /// At the end of each sampling interval.
    Ticks,
}

/// An option's `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    /// On.
    On,
    /// Off.
    Off,
}

/// What to sample and how.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// PID of the Python process to attach to (no restart, no code change).
    #[arg(short, long, conflicts_with = "command")]
    pub pid: Option<i32>,
    /// Stack samples per second [default: 100; 20 where memory is charged to the stacks the
    /// kernel captures as it is acquired and no --metric weighing time is asked: what the
    /// kernel captured is then still charged at least 100 times a second, and the stacks read
    /// serve only the time columns and the names of threads].
    #[arg(short, long, value_name = "HZ")]
    pub rate: Option<f64>,
    /// Stop after this many seconds (default: until the target exits or Ctrl-C).
    #[arg(short, long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Also sample the target's descendant processes as they appear and exit (multiprocessing
    /// pools, pre-fork workers); each gets a root frame naming its pid and role (`process PID:
    /// master · CMD`, `process PID: worker N`, `spawn child`, `resource tracker`; else
    /// `process PID: CMD`) and its own RSS.
    /// The target may then be a launcher (a shell, pyenv's shim, a venv script).
    #[arg(long)]
    pub subprocesses: bool,
    /// With malloc-bytes / malloc-count: also count CPython's object allocator (pymalloc), so
    /// small objects count too. Slows the target more: these calls are very frequent.
    #[arg(long)]
    pub python_allocators: bool,
    /// Pause each thread while reading it (consistent stacks; the target stops briefly).
    #[arg(long, conflicts_with = "nonblocking")]
    pub blocking: bool,
    /// Read without pausing the target (the default).
    #[arg(long)]
    pub nonblocking: bool,
    /// Where memory is charged: `kernel` to the Python stack the kernel captures at each page
    /// fault and sampled allocation (eBPF; needs root or CAP_BPF+CAP_PERFMON), `ticks` to
    /// the stack read at the end of each sampling interval; `auto` is `kernel` where eBPF is
    /// available, else `ticks` (the summary says which). With `--metric wall` or `cpu`,
    /// which weigh time only, `auto` is `ticks` and no allocation hook is loaded.
    #[arg(long, value_enum, default_value_t = AttributionArg::Auto, value_name = "WHERE")]
    pub attribution: AttributionArg,
    /// With in-kernel stacks and malloc-bytes / malloc-count: the mean number of bytes a thread
    /// allocates between two stack samples (every call is still counted; 0 samples every call).
    #[arg(long, default_value_t = crate::run::kernel_capture::DEFAULT_SAMPLE_BYTES, value_name = "BYTES")]
    pub malloc_sample_bytes: u64,
    /// Mean bytes between two sampled allocations of a thread for the `heap` metric (the
    /// allocation hook loaded into launched interpreters, and attached ones from 3.14 on).
    /// Smaller is finer and costs the target more.
    #[arg(long, default_value_t = crate::run::heap_capture::DEFAULT_SAMPLE_BYTES, value_name = "BYTES")]
    pub heap_sample_bytes: u64,
    /// Whether the allocation hook follows objects CPython recycles through its free lists
    /// (ints, floats, tuples, lists, dicts; 3.13+, with a reference tracer), so that they are
    /// charged to the stack that made them, not to the one that first allocated their memory.
    /// `off` costs the target less on code that makes many short-lived ints and floats
    /// (bench/heap_hook_cost.py).
    #[arg(long, value_enum, default_value_t = OnOff::On, value_name = "ON|OFF")]
    pub heap_free_lists: OnOff,
    /// Do not load the allocation hook: no `heap` metric, and `rss` the default.
    #[arg(long)]
    pub no_heap: bool,
    /// Root each sample's stack at the asyncio task its thread runs, a `<task NAME>` frame
    /// (under the process and thread roots), so that memory and CPU show per task (CPython
    /// 3.11+). Stacks captured in the kernel or by the allocation hook go to the task seen
    /// running their task's coroutine, or to `<task (any) FUNCTION>` when several were (or
    /// it has asyncio's default name, `Task-N`).
    #[arg(long = "async")]
    pub async_tasks: bool,
    /// Command to launch and sample until it exits (after `--`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl RunArgs {
    /// The run these options ask for, counting the allocator as `malloc` says.
    pub fn options(&self, malloc: MallocMode) -> anyhow::Result<RunOptions> {
        let target = match (self.pid, self.command.is_empty()) {
            (Some(pid), _) => TargetSpec::Pid(pid),
            (None, false) => TargetSpec::Command(self.command.clone()),
            (None, true) => {
                bail!("nothing to sample: give --pid PID, or a command after `--` (see --help)")
            }
        };
        if self.python_allocators && malloc != MallocMode::Required {
            bail!("--python-allocators goes with --metric malloc-bytes or malloc-count");
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            bail!("--rate must be a positive number of samples per second, not {rate}");
        }
        let duration = match self.duration {
            Some(secs) if !(secs.is_finite() && secs > 0.0) => {
                bail!("--duration must be a positive number of seconds, not {secs}")
            }
            Some(secs) => Some(Duration::from_secs_f64(secs)),
            None => None,
        };
        Ok(RunOptions {
            target,
            rate_hz: self.rate,
            weighs_time: false,
            duration,
            malloc,
            python_allocators: self.python_allocators,
            subprocesses: self.subprocesses,
            blocking: self.blocking,
            keep_timeline: false,
            quiet_child: false,
            attribution: match self.attribution {
                AttributionArg::Auto => AttributionMode::Auto,
                AttributionArg::Kernel => AttributionMode::Kernel,
                AttributionArg::Ticks => AttributionMode::Ticks,
            },
            sample_bytes: self.malloc_sample_bytes,
            heap: (!self.no_heap).then_some(HookOptions {
                sample_bytes: self.heap_sample_bytes,
                free_lists: self.heap_free_lists == OnOff::On,
            }),
            tasks: self.async_tasks,
        })
    }
}

/// Installs the stop signals, opens the output files (so that an unwritable path fails before
/// sampling), and starts the run; a run that cannot start leaves no empty file behind.
pub fn start_run(
    mut options: RunOptions,
    outputs: &OutputArgs,
) -> anyhow::Result<(Run, Outputs, RunOptions)> {
    stop::install_handlers().context("cannot install the SIGINT/SIGTERM handlers")?;
    let files = outputs.open()?;
    options.keep_timeline = files.needs_timeline();
    match Run::start(&options, stop::flag()) {
        Ok(run) => Ok((run, files, options)),
        Err(err) => {
            files.discard();
            Err(err.into())
        }
    }
}
