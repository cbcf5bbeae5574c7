//! `Profile` (PyEval_SetProfile: Python and C call/return) and `Trace` (PyEval_SetTrace:
//! call/line/return/exception/opcode): context managers that stack, each writing its own log.
//!
//! Threads: the interpreter keeps one profile hook and one trace hook *per thread*, so a
//! `Profile`/`Trace` records only the thread that entered it; other threads run untraced and
//! are not written to its log. Each thread has its own stacks, so `profile_wrapper_depth()`
//! and `trace_wrapper_depth()` count the calling thread's tracers, and a tracer must be exited
//! in the thread that entered it (anything else is a RuntimeError, never a crash).
//!
//! Owns: the per-thread stacks and the hook. Must not: format log lines (see `tracefile`).

use crate::args::{dir_as_040, tracer_args};
use crate::frame::{FrameSite, callable_name, frame_site};
use crate::logname::{TracerKind, new_file_path};
use crate::rss_reader::current_rss;
use crate::tracefile::{TraceFileWrapper, message_text};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};
use std::cell::RefCell;
use std::os::raw::c_int;

thread_local! {
    static PROFILE_STACK: RefCell<Vec<Py<TraceFileWrapper>>> = const { RefCell::new(Vec::new()) };
    static TRACE_STACK: RefCell<Vec<Py<TraceFileWrapper>>> = const { RefCell::new(Vec::new()) };
}

fn with_stack<R>(kind: TracerKind, f: impl FnOnce(&mut Vec<Py<TraceFileWrapper>>) -> R) -> R {
    let stack = match kind {
        TracerKind::Profile => &PROFILE_STACK,
        _ => &TRACE_STACK,
    };
    stack.with(|cell| f(&mut cell.borrow_mut()))
}

/// Number of tracers of `kind` stacked in the calling thread.
pub fn depth(kind: TracerKind) -> usize {
    with_stack(kind, |stack| stack.len())
}

fn head(py: Python<'_>, kind: TracerKind) -> Option<Py<TraceFileWrapper>> {
    with_stack(kind, |stack| stack.last().map(|w| w.clone_ref(py)))
}

/// The hook the interpreter calls for every event (a `Py_tracefunc`).
unsafe extern "C" fn trace_event(
    obj: *mut ffi::PyObject,
    frame: *mut ffi::PyFrameObject,
    what: c_int,
    arg: *mut ffi::PyObject,
) -> c_int {
    // SAFETY: the interpreter calls hooks with the GIL held and passes back the object
    // registered by `install`, which is always a TraceFileWrapper kept alive by the hook.
    unsafe {
        let py = Python::assume_attached();
        let bound = Bound::from_borrowed_ptr(py, obj);
        let wrapper = bound.cast_unchecked::<TraceFileWrapper>().get();
        record_event(wrapper, frame, what, arg);
    }
    0
}

/// Counts one event on `wrapper`, writing it when the RSS rule says so.
///
/// # Safety
/// GIL held; `frame` null or valid; `arg` valid for C events.
unsafe fn record_event(
    wrapper: &TraceFileWrapper,
    frame: *mut ffi::PyFrameObject,
    what: c_int,
    arg: *mut ffi::PyObject,
) {
    let rss = current_rss();
    wrapper
        .lock()
        .on_event(what, rss, || unsafe { event_site(frame, what, arg) });
}

/// Where an event happened; C events are named after the called function.
///
/// # Safety
/// As `record_event`.
unsafe fn event_site(
    frame: *mut ffi::PyFrameObject,
    what: c_int,
    arg: *mut ffi::PyObject,
) -> FrameSite {
    unsafe {
        let mut site = frame_site(frame);
        if !frame.is_null()
            && matches!(
                what,
                ffi::PyTrace_C_CALL | ffi::PyTrace_C_EXCEPTION | ffi::PyTrace_C_RETURN
            )
        {
            site.function = callable_name(arg);
        }
        site
    }
}

/// Site of the current Python frame (for `FRST:`/`LAST:`).
fn current_site() -> FrameSite {
    // SAFETY: GIL held by every caller (they hold a `Python` token); a borrowed frame.
    unsafe { frame_site(ffi::PyEval_GetFrame()) }
}

/// Sets (or clears, with `None`) this thread's hook of `kind`.
fn install(
    py: Python<'_>,
    kind: TracerKind,
    wrapper: Option<&Py<TraceFileWrapper>>,
) -> PyResult<()> {
    let (func, obj): (Option<ffi::Py_tracefunc>, *mut ffi::PyObject) = match wrapper {
        Some(w) => (Some(trace_event), w.as_ptr()),
        None => (None, std::ptr::null_mut()),
    };
    // SAFETY: GIL held; the interpreter takes its own reference to `obj`.
    unsafe {
        match kind {
            TracerKind::Profile => ffi::PyEval_SetProfile(func, obj),
            _ => ffi::PyEval_SetTrace(func, obj),
        }
    }
    match PyErr::take(py) {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Constructor arguments shared by `Profile` and `Trace`, and the file of the current run.
pub struct TracerCore {
    kind: TracerKind,
    d_rss_trigger: i32,
    message: Option<String>,
    filepath: Option<String>,
    wrapper: Option<Py<TraceFileWrapper>>,
    /// Keeps the RSS watcher counting from `enter` to `exit`.
    watch: Option<crate::rss_watch::Use>,
}

/// Converts a `filepath` argument (str, bytes or os.PathLike) to a path string.
pub fn path_argument(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    let py = obj.py();
    // SAFETY: GIL held; PyOS_FSPath returns a new reference or null with an exception set.
    let fspath = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyOS_FSPath(obj.as_ptr())) }
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "filepath must be str, bytes or os.PathLike, not {}",
                obj.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
    if let Ok(text) = fspath.cast::<PyString>() {
        let text = text.to_str()?;
        if text.contains('\0') {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "embedded null byte",
            ));
        }
        return Ok(text.to_owned());
    }
    let bytes = fspath.cast::<PyBytes>()?;
    let raw = bytes.as_bytes();
    if raw.contains(&0) {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "embedded null byte",
        ));
    }
    Ok(String::from_utf8_lossy(raw).into_owned())
}

impl TracerCore {
    /// Checks and keeps the constructor arguments.
    pub fn new(
        kind: TracerKind,
        d_rss_trigger: i32,
        message: Option<String>,
        filepath: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        if message.as_deref().is_some_and(|m| m.contains('\0')) {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "embedded null character",
            ));
        }
        let filepath = filepath.map(path_argument).transpose()?;
        Ok(TracerCore {
            kind,
            d_rss_trigger,
            message,
            filepath,
            wrapper: None,
            watch: None,
        })
    }

    fn noun(&self) -> &'static str {
        match self.kind {
            TracerKind::Profile => "profile",
            _ => "trace",
        }
    }

    fn on_stack(&self, py: Python<'_>) -> bool {
        let Some(mine) = self.wrapper.as_ref() else {
            return false;
        };
        let _ = py;
        with_stack(self.kind, |stack| {
            stack.iter().any(|w| w.as_ptr() == mine.as_ptr())
        })
    }

    /// `__enter__`: opens a new log, suspends the previous tracer of this kind, installs the hook.
    pub fn enter(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.on_stack(py) {
            return Err(PyRuntimeError::new_err(format!(
                "This {} object is already active; create a new one to nest.",
                self.noun()
            )));
        }
        let depth = depth(self.kind);
        let path = match &self.filepath {
            Some(path) => path.clone(),
            None => new_file_path(self.kind, depth)
                .map_err(|err| PyOSError::new_err(format!("Can not name a log file: {err}")))?
                .to_string_lossy()
                .into_owned(),
        };
        if let Some(old) = head(py, self.kind) {
            let old = old.get();
            // Best effort: the only failure is a log closed in a fork() child.
            let _ = old.message(&format!(
                "Detaching this {} file wrapper. New file:",
                self.noun()
            ));
            let _ = old.message(&path);
        }
        self.watch = Some(crate::rss_watch::Use::begin());
        let wrapper = TraceFileWrapper::create(
            path,
            self.d_rss_trigger,
            self.message.as_deref(),
            &current_site(),
            current_rss(),
        )
        .inspect_err(|_| self.watch = None)?;
        let wrapper = Py::new(py, wrapper).inspect_err(|_| self.watch = None)?;
        with_stack(self.kind, |stack| stack.push(wrapper.clone_ref(py)));
        if let Err(err) = install(py, self.kind, Some(&wrapper)) {
            with_stack(self.kind, |stack| stack.pop());
            self.watch = None;
            return Err(err);
        }
        // SAFETY: GIL held; the current frame is borrowed for the call.
        unsafe {
            record_event(
                wrapper.get(),
                ffi::PyEval_GetFrame(),
                ffi::PyTrace_LINE,
                ffi::Py_None(),
            );
        }
        self.wrapper = Some(wrapper);
        Ok(())
    }

    /// `__exit__`: removes the hook, writes `LAST:`/`EOF`, and resumes the previous tracer.
    pub fn exit(&mut self, py: Python<'_>) -> PyResult<()> {
        let Some(mine) = self.wrapper.as_ref().map(|w| w.clone_ref(py)) else {
            return Err(PyRuntimeError::new_err(format!(
                "{}.__exit__ has no log file: __enter__ was not called.",
                if self.kind == TracerKind::Profile {
                    "Profile"
                } else {
                    "Trace"
                }
            )));
        };
        let position = with_stack(self.kind, |stack| {
            stack.iter().position(|w| w.as_ptr() == mine.as_ptr())
        });
        let Some(position) = position else {
            if !mine.get().lock().is_open() {
                return Err(PyRuntimeError::new_err(format!(
                    "This {} object has already exited.",
                    self.noun()
                )));
            }
            return Err(PyRuntimeError::new_err(format!(
                "This {} object was entered in another thread; exit it in that thread.",
                self.noun()
            )));
        };
        let was_head = position + 1 == depth(self.kind);
        if was_head {
            install(py, self.kind, None)?;
        }
        with_stack(self.kind, |stack| stack.remove(position));
        let closed = mine.get().lock().close(&current_site(), current_rss());
        self.watch = None;
        if was_head && let Some(previous) = head(py, self.kind) {
            install(py, self.kind, Some(&previous))?;
            let _ = previous
                .get()
                .message(&format!("Re-attaching this {} file wrapper.", self.noun()));
        }
        closed.map_err(|err| PyOSError::new_err(format!("Writing the log file failed: {err}")))
    }

    /// Path of the log at the head of this thread's stack while this tracer is on it, else None.
    pub fn log_file_path(&self, py: Python<'_>) -> Option<String> {
        if !self.on_stack(py) {
            return None;
        }
        head(py, self.kind).map(|w| w.get().path().to_owned())
    }

    fn open_wrapper(&self) -> PyResult<&Py<TraceFileWrapper>> {
        self.wrapper
            .as_ref()
            .ok_or_else(|| PyOSError::new_err("Log file is closed."))
    }

    /// `write_message_to_log()`.
    pub fn write_message_to_log(&self, text: &Bound<'_, PyAny>) -> PyResult<()> {
        let text = message_text("write_message_to_log", text)?;
        self.open_wrapper()?.get().message(&text)
    }

    /// `write_to_log()`.
    pub fn write_to_log(&self, text: &Bound<'_, PyAny>) -> PyResult<()> {
        let text = message_text("write_to_log", text)?;
        let wrapper = self.open_wrapper()?.get();
        let mut state = wrapper.lock();
        if !state.is_open() {
            return Err(PyOSError::new_err("Log file is closed."));
        }
        state.write_raw(&text);
        Ok(())
    }

    /// The wrapper of the current (or last) run.
    pub fn trace_file_wrapper(&self, py: Python<'_>) -> Option<Py<TraceFileWrapper>> {
        self.wrapper.as_ref().map(|w| w.clone_ref(py))
    }
}

macro_rules! tracer_class {
    ($name:ident, $pyname:literal, $kind:expr, $doc:literal) => {
        #[doc = $doc]
        #[pyclass(module = "cPyMemTrace", name = $pyname, subclass)]
        pub struct $name {
            core: TracerCore,
        }

        #[pymethods]
        impl $name {
            #[new]
            #[pyo3(signature = (*args, **kwargs))]
            fn new(
                args: &Bound<'_, PyTuple>,
                kwargs: Option<&Bound<'_, PyDict>>,
            ) -> PyResult<Self> {
                let a = tracer_args(args, kwargs)?;
                Ok($name {
                    core: TracerCore::new($kind, a.d_rss_trigger, a.message, a.filepath.as_ref())?,
                })
            }

            /// The names pymemtrace 0.4.0 lists (`trace_file_wrapper`, which its documentation
            /// uses, is there but not listed, as in 0.4.0).
            fn __dir__(slf: &Bound<'_, Self>) -> PyResult<Vec<String>> {
                dir_as_040(slf.as_any(), &["trace_file_wrapper"])
            }

            fn __enter__(mut slf: PyRefMut<'_, Self>) -> PyResult<PyRefMut<'_, Self>> {
                let py = slf.py();
                slf.core.enter(py)?;
                Ok(slf)
            }

            #[pyo3(signature = (*_args))]
            fn __exit__(&mut self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
                self.core.exit(py)?;
                Ok(false)
            }

            /// Write any string to the existing log file with a newline. Returns None.
            /// Warning: this is not compatible with the log file format.
            fn write_to_log(&self, text: &Bound<'_, PyAny>) -> PyResult<()> {
                self.core.write_to_log(text)
            }

            /// Write a string as a message (a `MSG:` line) to the existing log file. Returns None.
            fn write_message_to_log(&self, text: &Bound<'_, PyAny>) -> PyResult<()> {
                self.core.write_message_to_log(text)
            }

            /// The path of the log file being written by the innermost tracer of this kind in
            /// this thread while this one is active; None before `__enter__` and after `__exit__`.
            fn log_file_path(&self, py: Python<'_>) -> Option<String> {
                self.core.log_file_path(py)
            }

            /// The log file object of the current (or last) run; None before `__enter__`.
            #[getter]
            fn trace_file_wrapper(&self, py: Python<'_>) -> Option<Py<TraceFileWrapper>> {
                self.core.trace_file_wrapper(py)
            }
        }
    };
}

tracer_class!(
    Profile,
    "Profile",
    TracerKind::Profile,
    "A context manager that attaches a profile function (PyEval_SetProfile) to this thread and \
logs Python and C calls and returns with the RSS.\n\n\
Arguments (all optional):\n\n\
- ``d_rss_trigger``: when an event is written: -1 (default) when RSS changed by at least a \
page since the last written event, 0 every event, n when it changed by at least n bytes.\n\
- ``message``: a line written at the start of the log file.\n\
- ``filepath``: the log file; by default \
``YYYYMMDD_HHMMSS_<ordinal>_<PID>_P_<depth>_PY<version>.log`` in the current directory.\n\n\
Only the thread that enters it is profiled."
);

tracer_class!(
    Trace,
    "Trace",
    TracerKind::Trace,
    "A context manager that attaches a trace function (PyEval_SetTrace) to this thread and logs \
Python call, line, return, exception and opcode events with the RSS (no C calls: use Profile).\n\n\
Arguments (all optional):\n\n\
- ``d_rss_trigger``: when an event is written: -1 (default) when RSS changed by at least a \
page since the last written event, 0 every event, n when it changed by at least n bytes.\n\
- ``message``: a line written at the start of the log file.\n\
- ``filepath``: the log file; by default \
``YYYYMMDD_HHMMSS_<ordinal>_<PID>_T_<depth>_PY<version>.log`` in the current directory.\n\n\
Only the thread that enters it is traced."
);
