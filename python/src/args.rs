//! Constructor arguments of `Profile`, `Trace`, `ReferenceTracing` and `ReferenceTracingSimple`,
//! parsed by CPython's own `PyArg_ParseTupleAndKeywords` with the formats pymemtrace 0.4.0's
//! C types declare, so that a bad argument raises the very `TypeError` text 0.4.0 raises on the
//! same interpreter ("function takes at most 3 arguments (4 given)", "argument 1 must be str,
//! not int", "this function got an unexpected keyword argument 'x'"); PyO3's own signature
//! parsing words these differently.
//!
//! Owns: the argument formats and keyword lists. Must not: validate values beyond their types
//! (the tracers do that).

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::ffi::{CStr, c_char, c_int};
use std::ptr;

/// Keyword list as `PyArg_ParseTupleAndKeywords` takes it (null-terminated).
#[cfg(Py_3_13)]
type Keywords = *const *const c_char;
#[cfg(not(Py_3_13))]
type Keywords = *mut *mut c_char;

fn keyword_array<const N: usize>(names: [&'static CStr; N]) -> Vec<*const c_char> {
    names
        .iter()
        .map(|n| n.as_ptr())
        .chain(std::iter::once(ptr::null()))
        .collect()
}

fn kwargs_ptr(kwargs: Option<&Bound<'_, PyDict>>) -> *mut ffi::PyObject {
    kwargs.map_or(ptr::null_mut(), |k| k.as_ptr())
}

/// A `char *` from an `s` format: UTF-8 without NUL, borrowed from an argument.
///
/// # Safety
/// `text` null or a NUL-terminated string that lives as long as the call's arguments.
unsafe fn owned_text(text: *const c_char) -> Option<String> {
    (!text.is_null()).then(|| {
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    })
}

/// A borrowed `O` argument as an owned reference; None when absent or `None`.
///
/// # Safety
/// GIL held; `obj` null or a borrowed reference from the call's arguments.
unsafe fn optional_object<'py>(
    py: Python<'py>,
    obj: *mut ffi::PyObject,
) -> Option<Bound<'py, PyAny>> {
    if obj.is_null() {
        return None;
    }
    let bound = unsafe { Bound::from_borrowed_ptr(py, obj) };
    (!bound.is_none()).then_some(bound)
}

/// `Profile(d_rss_trigger=-1, message=None, filepath=None)` and `Trace(...)`.
pub struct TracerArgs<'py> {
    pub d_rss_trigger: i32,
    pub message: Option<String>,
    pub filepath: Option<Bound<'py, PyAny>>,
}

/// Parses `Profile`/`Trace` arguments (format `|isO`, as 0.4.0's `|isO&`).
pub fn tracer_args<'py>(
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<TracerArgs<'py>> {
    let py = args.py();
    let mut keywords = keyword_array([c"d_rss_trigger", c"message", c"filepath"]);
    let mut d_rss_trigger: c_int = -1;
    let mut message: *const c_char = ptr::null();
    let mut filepath: *mut ffi::PyObject = ptr::null_mut();
    // SAFETY: GIL held; the format's three conversions match the three out-pointers; the
    // keyword array is null-terminated and outlives the call.
    let ok = unsafe {
        ffi::PyArg_ParseTupleAndKeywords(
            args.as_ptr(),
            kwargs_ptr(kwargs),
            c"|isO".as_ptr(),
            keywords.as_mut_ptr() as Keywords,
            &mut d_rss_trigger as *mut c_int,
            &mut message as *mut *const c_char,
            &mut filepath as *mut *mut ffi::PyObject,
        )
    };
    if ok == 0 {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: the pointers were filled from (and are borrowed from) `args`/`kwargs`.
    Ok(TracerArgs {
        d_rss_trigger,
        message: unsafe { owned_text(message) },
        filepath: unsafe { optional_object(py, filepath) },
    })
}

/// `ReferenceTracing(message=None, filepath=None, include_builtins=False,
/// exclude_tp_names=None, include_tp_names=None, gc_collect_on_exit=2)`.
pub struct ReferenceTracingArgs<'py> {
    pub message: Option<String>,
    pub filepath: Option<Bound<'py, PyAny>>,
    pub include_builtins: bool,
    pub exclude_tp_names: Option<Bound<'py, PyAny>>,
    pub include_tp_names: Option<Bound<'py, PyAny>>,
    pub gc_collect_on_exit: i32,
}

/// Parses `ReferenceTracing` arguments (format `|sOpOOi`, as 0.4.0's `|sO&pOOi`).
pub fn reference_tracing_args<'py>(
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<ReferenceTracingArgs<'py>> {
    let py = args.py();
    let mut keywords = keyword_array([
        c"message",
        c"filepath",
        c"include_builtins",
        c"exclude_tp_names",
        c"include_tp_names",
        c"gc_collect_on_exit",
    ]);
    let mut message: *const c_char = ptr::null();
    let mut filepath: *mut ffi::PyObject = ptr::null_mut();
    let mut include_builtins: c_int = 0;
    let mut exclude: *mut ffi::PyObject = ptr::null_mut();
    let mut include: *mut ffi::PyObject = ptr::null_mut();
    let mut gc_collect_on_exit: c_int = 2;
    // SAFETY: as in `tracer_args`, six conversions for six out-pointers.
    let ok = unsafe {
        ffi::PyArg_ParseTupleAndKeywords(
            args.as_ptr(),
            kwargs_ptr(kwargs),
            c"|sOpOOi".as_ptr(),
            keywords.as_mut_ptr() as Keywords,
            &mut message as *mut *const c_char,
            &mut filepath as *mut *mut ffi::PyObject,
            &mut include_builtins as *mut c_int,
            &mut exclude as *mut *mut ffi::PyObject,
            &mut include as *mut *mut ffi::PyObject,
            &mut gc_collect_on_exit as *mut c_int,
        )
    };
    if ok == 0 {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: the pointers were filled from (and are borrowed from) `args`/`kwargs`.
    unsafe {
        Ok(ReferenceTracingArgs {
            message: owned_text(message),
            filepath: optional_object(py, filepath),
            include_builtins: include_builtins != 0,
            exclude_tp_names: optional_object(py, exclude),
            include_tp_names: optional_object(py, include),
            gc_collect_on_exit,
        })
    }
}

/// Checks that no argument was given (`ReferenceTracingSimple()`).
pub fn no_args(args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
    let mut keywords = keyword_array([]);
    // SAFETY: GIL held; an empty format takes no out-pointers.
    let ok = unsafe {
        ffi::PyArg_ParseTupleAndKeywords(
            args.as_ptr(),
            kwargs_ptr(kwargs),
            c"".as_ptr(),
            keywords.as_mut_ptr() as Keywords,
        )
    };
    if ok == 0 {
        return Err(PyErr::fetch(args.py()));
    }
    Ok(())
}

/// `dir()` of an exact-mode object as pymemtrace 0.4.0's static C types give it: what
/// `object.__dir__` lists, less the names a PyO3 heap type carries that 0.4.0's do not show
/// (`__module__`, which static types derive from their name) and extra attributes of ours that
/// 0.4.0 documents but does not list (`hidden`).
pub fn dir_as_040(obj: &Bound<'_, PyAny>, hidden: &[&str]) -> PyResult<Vec<String>> {
    let py = obj.py();
    let names = py
        .get_type::<pyo3::types::PyAny>()
        .getattr("__dir__")?
        .call1((obj,))?;
    let mut kept: Vec<String> = names
        .try_iter()?
        .map(|n| n.and_then(|n| n.extract::<String>()))
        .collect::<PyResult<_>>()?;
    kept.retain(|n| n != "__module__" && !hidden.contains(&n.as_str()));
    kept.sort();
    Ok(kept)
}
