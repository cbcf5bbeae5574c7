//! Sets up in-kernel stacks for a run (`--attribution`): loads the capture once, and adds each
//! sampled process with the walk offsets of its interpreter.
//!
//! Owns only the glue between the reader's layout (`python`) and the BPF walker's
//! (`memory::kernel_stacks`). Must not touch how either works, or how charges are made.

use crate::memory::kernel_stacks::{BpfLayout, CaptureOptions, KernelStacks};
use crate::memory::malloc::{MallocError, MallocOptions};
use crate::python::PythonSpy;
use crate::sampler::Sampler;
use crate::sampler::kernel::{KernelCapture, SharedCapture};

/// Where memory is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttributionMode {
    /// In the kernel where eBPF is available, else at ticks (a note says why).
    #[default]
    Auto,
    /// In the kernel, or no run.
    Kernel,
    /// At ticks: to the stacks read at the end of each interval.
    Ticks,
}

/// The default mean number of bytes between two allocation samples of a thread.
pub const DEFAULT_SAMPLE_BYTES: u64 = 64 * 1024;

/// The walker's view of `spy`'s interpreter.
pub fn bpf_layout(spy: &PythonSpy) -> BpfLayout {
    let layout = spy.layout();
    let root = spy.walk_root();
    let capabilities = layout.capabilities();
    let offset = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    let mut flags = 0;
    if !capabilities.interpreter_frames {
        flags |= BpfLayout::F_FRAME_OBJECTS;
    }
    if layout.cframe_current_frame.is_some() {
        flags |= BpfLayout::F_CFRAME;
    }
    if capabilities.shim_frames {
        flags |= BpfLayout::F_SHIMS;
    }
    if capabilities.tagged_stack_refs {
        flags |= BpfLayout::F_TAGGED_CODE;
    }
    let native_id = match layout.tstate_native_thread_id {
        Some(at) => {
            flags |= BpfLayout::F_NATIVE_ID;
            at
        }
        None => root.pthread_tid_offset,
    };
    let (pidns_dev, pidns_ino) =
        crate::attach::namespaces::pid_namespace_of(spy.pid()).unwrap_or((0, 0));
    let (code_tag, code_tag_len) = crate::python::code::tag_window(layout);
    BpfLayout {
        interp_head: root.interp_head,
        pidns_dev,
        pidns_ino,
        flags,
        interp_threads_head: offset(layout.interp_threads_head),
        tstate_next: offset(layout.tstate_next),
        tstate_frame: offset(layout.tstate_frame),
        cframe_current_frame: offset(layout.cframe_current_frame.unwrap_or(0)),
        tstate_native_id: offset(native_id),
        tstate_thread_id: offset(layout.tstate_thread_id),
        frame_back: offset(layout.frame_back),
        frame_code: offset(layout.frame_code),
        frame_lasti: offset(layout.frame_lasti),
        frame_owner: offset(layout.frame_owner.unwrap_or(0)),
        first_shim_owner: 3,
        code_tag: offset(code_tag),
        code_tag_len: offset(code_tag_len),
    }
}

/// Loads the capture: time sampled at `time_hz` (each thread's stack once per `1/time_hz` of
/// CPU time, and as it leaves a CPU) when given, else page faults; allocation samples (mean
/// `sample_bytes`) when `allocations`.
pub fn load(
    allocations: bool,
    sample_bytes: u64,
    time_hz: Option<f64>,
) -> Result<SharedCapture, MallocError> {
    let stacks = KernelStacks::load(CaptureOptions {
        pages: time_hz.is_none(),
        sample_bytes: allocations.then_some(sample_bytes),
        watchpoints: false,
        time_period_ns: time_hz.map(|hz| (1e9 / hz).round().max(1.0) as u64),
    })?;
    Ok(KernelCapture::shared(stacks))
}

/// Whether `capture` samples time (not memory).
pub fn samples_time(capture: &SharedCapture) -> bool {
    capture
        .borrow_mut()
        .stacks()
        .options()
        .time_period_ns
        .is_some()
}

/// Adds `sampler`'s process to `capture` and makes the sampler charge by it.
pub fn add_process(
    capture: &SharedCapture,
    sampler: &mut Sampler<PythonSpy>,
    allocators: &MallocOptions,
) -> Result<(), MallocError> {
    let layout = bpf_layout(sampler.source());
    let pid = sampler.source().pid();
    let pages = {
        let mut capture = capture.borrow_mut();
        let stacks = capture.stacks();
        stacks.add_process(pid, layout, allocators)?;
        stacks.options().pages
    };
    sampler.use_kernel_stacks(capture.clone(), pages);
    Ok(())
}

/// One sentence on what the capture takes, for the run's notes.
pub fn describe(capture: &SharedCapture) -> String {
    let mut capture = capture.borrow_mut();
    let stacks = capture.stacks();
    let probes = stacks.probes().count();
    if let Some(period) = stacks.options().time_period_ns {
        return format!(
            "time sampled in the kernel: each thread's Python stack at every {} µs of its CPU time, and as it leaves a CPU (its wait charged to the stack it waits in)",
            period / 1000
        );
    }
    match stacks.options().sample_bytes {
        Some(bytes) => format!(
            "memory charged to Python stacks captured in the kernel at page faults and at allocations (one sample per {} KiB a thread allocates, {probes} allocator probes)",
            bytes / 1024
        ),
        None => "memory charged to Python stacks captured in the kernel at page faults".to_string(),
    }
}
