//! The run's source policy, written once for single-process and tree runs: which memory
//! sources a run has (in-kernel stacks, the allocator counters of the tick path, the
//! allocation hook), what each run requires and what falls back, and what is said about it.
//!
//! - In-kernel stacks (`--attribution`): `kernel` requires them (a process that cannot be
//!   added fails the run, or with `--subprocesses` is named in the summary as sampled without
//!   them); `auto` falls back to ticks with a note; `ticks` never loads them.
//! - Allocator counters (`malloc-*`): with in-kernel stacks, the capture counts allocations;
//!   without, uprobe counters are attached per process, required or not as the metric says.
//! - The allocation hook (`heap-*`): loaded at start-up into launched interpreters; when
//!   attaching, only from CPython 3.14 on (PEP 768), else a note says how to get the view.
//!
//! Owns: that policy and its notes. Must not touch: how each source works.

use std::cell::RefCell;

use super::heap_capture::{HeapLoader, HookOptions};
use super::{AttributionMode, MallocMode, RunError, RunOptions, TargetSpec, kernel_capture};
use crate::memory::malloc::{MallocError, MallocOptions};
use crate::python::PythonSpy;
use crate::sampler::Sampler;
use crate::sampler::kernel::SharedCapture;

/// The sources of one run, shared by the samplers of its processes.
pub(super) struct Sources {
    attribution: AttributionMode,
    malloc_mode: MallocMode,
    malloc: Option<MallocOptions>,
    /// In-kernel stacks (dropped in a single-process run whose process could not be added).
    capture: RefCell<Option<SharedCapture>>,
    /// The allocation hook's files, for launched interpreters.
    heap: Option<HeapLoader>,
    /// Attaching with the hook (3.14+): how it samples, and the files placed in
    /// each target, kept while the run lasts.
    heap_attach: Option<HookOptions>,
    placements: RefCell<Vec<crate::attach::placement::Placement>>,
    tree: bool,
}

/// What adding one process gave it.
pub(super) struct Added {
    /// Lines for the summary.
    pub notes: Vec<String>,
    /// Whether allocator counters feed its `malloc-*` metrics.
    pub counts_allocations: bool,
}

fn no_kernel_stacks(err: &MallocError, time: bool) -> String {
    if time {
        format!(
            "no in-kernel time sampling ({err}): time is sampled by reading stacks at each tick"
        )
    } else {
        format!("no in-kernel stacks ({err}): memory is charged to the stacks read at each tick")
    }
}

/// What the hook does, for the notes.
fn heap_line(hook: HookOptions, how: &str) -> String {
    format!(
        "Python heap sampled in the target by pmt's allocation hook (one sample per {} KiB a thread allocates{}{how})",
        hook.sample_bytes / 1024,
        if hook.free_lists {
            ""
        } else {
            "; objects recycled through free lists not followed: --heap-free-lists off"
        }
    )
}

impl Sources {
    /// Loads what must be loaded before the target starts (the in-kernel capture, the hook's
    /// files), as `options` ask.
    pub(super) fn prepare(
        options: &RunOptions,
        notes: &mut Vec<String>,
    ) -> Result<Sources, RunError> {
        let malloc = (options.malloc != MallocMode::Off).then_some(MallocOptions {
            python_allocators: options.python_allocators,
            frees: false,
        });
        // A run that weighs time samples it in the kernel, unless it roots stacks at asyncio
        // tasks: the task a thread runs is read from its thread state at a tick, and a stack
        // captured in the kernel can name only a task that alone runs its coroutine. Any
        // other run charges memory there.
        let time_in_kernel = options.weighs_time && !options.tasks;
        let capture = if options.attribution == AttributionMode::Ticks
            || (options.weighs_time
                && options.tasks
                && options.attribution == AttributionMode::Auto)
        {
            None
        } else {
            let time_hz = time_in_kernel.then(|| options.rate_hz.unwrap_or(super::DEFAULT_RATE_HZ));
            match kernel_capture::load(malloc.is_some(), options.sample_bytes, time_hz) {
                Ok(capture) => Some(capture),
                Err(err) if options.attribution == AttributionMode::Auto => {
                    notes.push(no_kernel_stacks(&err, options.weighs_time));
                    None
                }
                Err(err) => return Err(err.into()),
            }
        };
        let (heap, heap_attach) = match (options.heap, &options.target) {
            (None, _) => (None, None),
            (Some(hook), TargetSpec::Command(_)) => (
                Some(HeapLoader::for_launch(hook, options.subprocesses)?),
                None,
            ),
            (Some(hook), TargetSpec::Pid(_)) => (None, Some(hook)),
        };
        Ok(Sources {
            attribution: options.attribution,
            malloc_mode: options.malloc,
            malloc,
            capture: RefCell::new(capture),
            heap,
            heap_attach,
            placements: RefCell::new(Vec::new()),
            tree: options.subprocesses,
        })
    }

    /// What a launched command's environment needs (the hook's loader).
    pub(super) fn launch_environment(&self) -> Vec<(String, String)> {
        self.heap
            .as_ref()
            .map(HeapLoader::launch_environment)
            .unwrap_or_default()
    }

    /// Whether memory is charged to stacks captured in the kernel (for a single process:
    /// still, once it was added).
    pub(super) fn in_kernel(&self) -> bool {
        self.capture.borrow().is_some()
    }

    /// Whether time is sampled in the kernel (for a single process: still, once it was added).
    pub(super) fn samples_time(&self) -> bool {
        self.capture
            .borrow()
            .as_ref()
            .is_some_and(kernel_capture::samples_time)
    }

    /// Whether allocator counters feed `malloc-*` (with a tree: for each process added).
    pub(super) fn counts_allocations(&self) -> bool {
        self.malloc.is_some()
    }

    /// One line per source, for the run's notes.
    pub(super) fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(capture) = self.capture.borrow().as_ref() {
            lines.push(kernel_capture::describe(capture));
        }
        if let Some(heap) = &self.heap {
            lines.push(heap_line(heap.hook_options(), ""));
        }
        lines
    }

    /// Gives `sampler`'s process (`pid`) every source the run has, as the policy says.
    pub(super) fn add_process(
        &self,
        sampler: &mut Sampler<PythonSpy>,
        pid: i32,
    ) -> Result<Added, RunError> {
        let mut added = Added {
            notes: Vec::new(),
            counts_allocations: false,
        };
        let capture = self.capture.borrow().clone();
        let mut in_kernel = false;
        if let Some(capture) = capture {
            match kernel_capture::add_process(&capture, sampler, &self.malloc.unwrap_or_default()) {
                Ok(()) => {
                    in_kernel = true;
                    added.counts_allocations = self.malloc.is_some();
                }
                Err(err) if self.attribution == AttributionMode::Auto => {
                    added.notes.push(no_kernel_stacks(
                        &err,
                        kernel_capture::samples_time(&capture),
                    ));
                    if !self.tree {
                        self.capture.replace(None);
                    }
                }
                Err(err) => return Err(err.into()),
            }
        }
        if !in_kernel && let Some(malloc) = &self.malloc {
            match super::malloc_metrics::add_malloc_sources(sampler, pid, malloc) {
                Ok(description) => {
                    added.counts_allocations = true;
                    added
                        .notes
                        .push(format!("counting allocations with {description}"));
                }
                Err(err) if self.malloc_mode == MallocMode::IfAvailable => {
                    added.notes.push(format!("no allocator counters: {err}"));
                }
                Err(err) => return Err(err.into()),
            }
        }
        if let Some(heap) = &self.heap {
            heap.hand_over_layout(pid, sampler.source())?;
            sampler.use_heap_hook();
        } else if let Some(hook) = self.heap_attach {
            // Forked from a process this run gave the hook (a pre-fork server's worker): it
            // has it, sampling for this run. Anything else is (re)loaded.
            let already = crate::memory::heap_hook::find_state(pid)
                .and_then(|at| {
                    crate::memory::heap_hook::HookReader::new(pid, at)
                        .state()
                        .ok()
                        .flatten()
                })
                .is_some_and(|state| state.enabled == 1 && state.owner_pid == std::process::id());
            match already {
                true => sampler.use_heap_hook(),
                false => match super::heap_capture::load_into_running(sampler.source(), hook) {
                    Ok(placed) => {
                        self.placements.borrow_mut().extend(placed);
                        sampler.use_heap_hook();
                        if !self.tree {
                            added.notes.push(heap_line(
                                hook,
                                "; loaded through CPython's remote execution protocol, PEP 768",
                            ));
                        }
                    }
                    Err(err) => added.notes.push(err.to_string()),
                },
            }
        }
        Ok(added)
    }
}
