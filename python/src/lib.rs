//! The `pymemtrace._pymemtrace` extension module: the compiled half of the `pymemtrace` Python
//! package. It carries two submodules that the package re-exports under pymemtrace 0.4.0's
//! names, `pymemtrace.cPyMemTrace` (Profile, Trace, ReferenceTracing and helpers) and
//! `pymemtrace.cMemLeak` (deliberate allocations), plus `run_cli` for the console scripts.

mod args;
mod cli;
mod frame;
mod logfile;
mod logname;
mod memleak;
#[cfg(Py_3_13)]
mod reftrace;
mod rss_reader;
mod rss_watch;
mod tracefile;
mod tracers;

use logname::TracerKind;
use pyo3::prelude::*;

/// Return the current RSS in bytes.
#[pyfunction(name = "rss")]
fn current_rss() -> u64 {
    rss_reader::current_rss()
}

/// Where trace events get the RSS from: "rss_stat" (kmem:rss_stat perf events say when it
/// changed; /proc/self/statm is re-read only then) or "statm (REASON)" (re-read on every event).
#[pyfunction]
fn rss_source() -> String {
    rss_watch::source()
}

/// /proc/self/statm's RSS in bytes, read now (never a cached value), for tests.
#[pyfunction]
fn rss_statm() -> u64 {
    rss_reader::read_statm()
}

/// Return the peak RSS in bytes.
#[pyfunction]
fn rss_peak() -> u64 {
    rss_reader::peak_rss()
}

/// Return the depth of the profile wrapper stack (of the calling thread).
#[pyfunction]
fn profile_wrapper_depth() -> usize {
    tracers::depth(TracerKind::Profile)
}

/// Return the depth of the trace wrapper stack (of the calling thread).
#[pyfunction]
fn trace_wrapper_depth() -> usize {
    tracers::depth(TracerKind::Trace)
}

const CPYMEMTRACE_DOC: &str = "Memory tracers that log RSS as Python runs.\n\n\
Profile and Trace attach to the interpreter and write a log line whenever the RSS changes \
(or for every event); ReferenceTracing (Python 3.13+) logs object creation and destruction.";

fn cpymemtrace_module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let module = PyModule::new(py, "pymemtrace.cPyMemTrace")?;
    module.setattr("__doc__", CPYMEMTRACE_DOC)?;
    module.add_class::<tracers::Profile>()?;
    module.add_class::<tracers::Trace>()?;
    module.add_function(wrap_pyfunction!(current_rss, &module)?)?;
    module.add_function(wrap_pyfunction!(rss_peak, &module)?)?;
    module.add_function(wrap_pyfunction!(profile_wrapper_depth, &module)?)?;
    module.add_function(wrap_pyfunction!(trace_wrapper_depth, &module)?)?;
    #[cfg(Py_3_13)]
    reftrace::register_module(&module)?;
    // pymemtrace 0.4.0's module has no `__all__` (PyO3 keeps one of what it adds).
    module.delattr("__all__")?;
    Ok(module)
}

fn cmemleak_module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let module = PyModule::new(py, "pymemtrace.cMemLeak")?;
    module.setattr(
        "__doc__",
        "Objects that allocate memory through a chosen allocator and hold it until deleted.",
    )?;
    memleak::register(&module)?;
    Ok(module)
}

/// The extension module.
#[pymodule]
fn _pymemtrace(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    frame::init(py);
    module.add("cPyMemTrace", cpymemtrace_module(py)?)?;
    module.add("cMemLeak", cmemleak_module(py)?)?;
    module.add_function(wrap_pyfunction!(cli::run_cli, module)?)?;
    module.add_function(wrap_pyfunction!(rss_source, module)?)?;
    module.add_function(wrap_pyfunction!(rss_statm, module)?)?;
    Ok(())
}
