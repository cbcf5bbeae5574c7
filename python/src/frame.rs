//! Reading the file, line and function of a Python frame through the C API, for log lines.
//!
//! Owns: the per-version way to reach a frame's code object. Must not: run Python code or
//! create Python objects (the reference tracer calls it while its callback is suspended, and
//! profile hooks must stay cheap).

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;
use std::ffi::CStr;

/// The attribute names read from code objects, interned once at import so that reading a
/// frame's site creates no object (the C API gives no other way: `PyCodeObject` is opaque).
struct CodeAttributeNames {
    filename: Py<PyString>,
    name: Py<PyString>,
    /// 3.8 has no `PyFrame_GetCode`; its frames give their code as the `f_code` member.
    #[cfg(not(Py_3_9))]
    frame_code: Py<PyString>,
}

static CODE_ATTRIBUTE_NAMES: PyOnceLock<CodeAttributeNames> = PyOnceLock::new();

/// Interns the code-object attribute names; called once when the extension is imported.
pub fn init(py: Python<'_>) {
    CODE_ATTRIBUTE_NAMES.get_or_init(py, || CodeAttributeNames {
        filename: PyString::intern(py, "co_filename").unbind(),
        name: PyString::intern(py, "co_name").unbind(),
        #[cfg(not(Py_3_9))]
        frame_code: PyString::intern(py, "f_code").unbind(),
    });
}

/// Text of the `str` attribute `name` of `code` (a member read: no Python code runs).
///
/// # Safety
/// GIL held; `code` a valid code object.
unsafe fn code_text(code: *mut ffi::PyObject, name: &Py<PyString>) -> Option<String> {
    unsafe {
        let value = ffi::PyObject_GetAttr(code, name.as_ptr());
        if value.is_null() {
            ffi::PyErr_Clear();
            return None;
        }
        let text = str_text(value);
        ffi::Py_DECREF(value);
        text
    }
}

/// Placeholder file name when there is no frame (as pymemtrace 0.4.0 writes it).
pub const UNKNOWN_FILE: &str = "<UNKNOWN_FILE_NAME>";
/// Placeholder function name when there is no frame.
pub const UNKNOWN_FUNCTION: &str = "<UNKNOWN_FUNCTION_NAME>";

/// Where a frame is: file, line and function name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSite {
    /// `co_filename` of the frame's code.
    pub file: String,
    /// Current line number (0 without a frame).
    pub line: i32,
    /// `co_name` of the frame's code.
    pub function: String,
}

/// Text of a `str` object without creating objects, or `None` if it is not a `str`.
///
/// # Safety
/// The GIL must be held and `obj` must be null or a valid object pointer.
pub unsafe fn str_text(obj: *mut ffi::PyObject) -> Option<String> {
    unsafe {
        if obj.is_null() || ffi::PyUnicode_Check(obj) == 0 {
            return None;
        }
        let mut size: ffi::Py_ssize_t = 0;
        let data = ffi::PyUnicode_AsUTF8AndSize(obj, &mut size);
        if data.is_null() {
            // Lone surrogates cannot be encoded; say so instead of failing the event.
            ffi::PyErr_Clear();
            return Some(String::from("<non-UTF-8 name>"));
        }
        let bytes = std::slice::from_raw_parts(data.cast::<u8>(), usize::try_from(size).ok()?);
        Some(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// The code object of a frame as a new reference (null if none).
///
/// # Safety
/// GIL held; `frame` valid and non-null.
unsafe fn frame_code(frame: *mut ffi::PyFrameObject) -> *mut ffi::PyCodeObject {
    unsafe {
        #[cfg(Py_3_9)]
        {
            ffi::PyFrame_GetCode(frame)
        }
        #[cfg(not(Py_3_9))]
        {
            let Some(names) = CODE_ATTRIBUTE_NAMES.get(Python::assume_attached()) else {
                return std::ptr::null_mut();
            };
            let code = ffi::PyObject_GetAttr(frame.cast(), names.frame_code.as_ptr());
            if code.is_null() {
                ffi::PyErr_Clear();
            }
            code.cast()
        }
    }
}

/// File, line and function of `frame`; the placeholders when `frame` is null.
///
/// # Safety
/// GIL held; `frame` null or a valid frame.
pub unsafe fn frame_site(frame: *mut ffi::PyFrameObject) -> FrameSite {
    unsafe {
        if frame.is_null() {
            return FrameSite {
                file: UNKNOWN_FILE.to_string(),
                line: 0,
                function: UNKNOWN_FUNCTION.to_string(),
            };
        }
        let line = ffi::PyFrame_GetLineNumber(frame);
        let code = frame_code(frame);
        if code.is_null() {
            return FrameSite {
                file: UNKNOWN_FILE.to_string(),
                line,
                function: UNKNOWN_FUNCTION.to_string(),
            };
        }
        let names = CODE_ATTRIBUTE_NAMES.get(Python::assume_attached());
        let object = code.cast::<ffi::PyObject>();
        let file = names
            .and_then(|n| code_text(object, &n.filename))
            .unwrap_or_else(|| UNKNOWN_FILE.to_string());
        let function = names
            .and_then(|n| code_text(object, &n.name))
            .unwrap_or_else(|| UNKNOWN_FUNCTION.to_string());
        ffi::Py_DECREF(object);
        FrameSite {
            file,
            line,
            function,
        }
    }
}

/// The name of a called C function (`PyEval_GetFuncName`), for C_CALL/C_RETURN/C_EXCEPT.
///
/// # Safety
/// GIL held; `callable` a valid object.
pub unsafe fn callable_name(callable: *mut ffi::PyObject) -> String {
    unsafe {
        if callable.is_null() {
            return UNKNOWN_FUNCTION.to_string();
        }
        let name = ffi::PyEval_GetFuncName(callable);
        if name.is_null() {
            return UNKNOWN_FUNCTION.to_string();
        }
        CStr::from_ptr(name).to_string_lossy().into_owned()
    }
}
