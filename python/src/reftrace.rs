//! `ReferenceTracing` and `ReferenceTracingSimple` (CPython 3.13+): log (or count) every object
//! creation and destruction through the interpreter's reference tracer (`PyRefTracer_SetTracer`).
//!
//! The interpreter has one reference tracer for the whole process, so a ReferenceTracing sees
//! objects made and freed by *every* thread; its File/Line/Function columns are those of the
//! thread that made or freed the object. Tracers stack process-wide: entering one suspends the
//! previous one (noted in both logs), exiting it resumes the previous one.
//!
//! The callback never creates Python objects while it is registered: frame and code objects
//! are skipped, builtin types are recognised by comparing type pointers, and the type-name
//! filters were turned into Rust sets at construction. Only then is the tracer unregistered
//! for the moment needed to read the current frame and write the line.
//!
//! Owns: the reference tracer registration and the `O` log format. Must not: touch the
//! profile/trace hooks.

use crate::args::{ReferenceTracingArgs, dir_as_040, no_args, reference_tracing_args};
use crate::frame::frame_site;
use crate::logfile::LogFile;
use crate::logname::{TracerKind, new_file_path, process_clock};
use crate::rss_reader::current_rss;
use crate::tracefile::message_text;
use crate::tracers::path_argument;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use std::collections::HashSet;
use std::ffi::{CStr, c_void};
use std::fs::File;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

type RefTracerFn = unsafe extern "C" fn(*mut ffi::PyObject, c_int, *mut c_void) -> c_int;

unsafe extern "C" {
    fn PyRefTracer_SetTracer(tracer: Option<RefTracerFn>, data: *mut c_void) -> c_int;
    fn PyRefTracer_GetTracer(data: *mut *mut c_void) -> Option<RefTracerFn>;
}

const REF_CREATE: c_int = 0;
const REF_DESTROY: c_int = 1;

/// Types never traced (frame, code) and the builtin types filtered unless `include_builtins`.
struct TypeTables {
    never: Vec<usize>,
    builtins: Vec<usize>,
    base_exception: usize,
    _keep: Vec<Py<PyAny>>,
}

static TYPE_TABLES: OnceLock<TypeTables> = OnceLock::new();

/// Python expressions naming the types pymemtrace 0.4.0 treats as builtins (its Py*_Check list).
const BUILTIN_TYPES: &str = r#"
import types, weakref, pickle, datetime, sys
class _Seq:
    def __getitem__(self, i):
        raise IndexError
def _locals_type():
    return type(sys._getframe().f_locals)
builtin_types = [
    float, int, bool, complex, str, bytes, bytearray, tuple, list, dict,
    type({}.keys()), type({}.values()), type({}.items()), frozenset, set, slice, range,
    types.MethodType, types.CellType, types.FunctionType, type(iter(_Seq())), type(iter(int, 1)),
    types.GeneratorType, types.FrameType, types.CodeType, types.ModuleType, BaseException,
    weakref.ReferenceType, weakref.ProxyType, weakref.CallableProxyType, types.TracebackType,
    types.BuiltinFunctionType, pickle.PickleBuffer, memoryview, _locals_type(),
    datetime.date, datetime.time, datetime.timedelta, datetime.tzinfo,
]
never_types = [types.FrameType, types.CodeType]
"#;

fn type_tables(py: Python<'_>) -> PyResult<&'static TypeTables> {
    if let Some(tables) = TYPE_TABLES.get() {
        return Ok(tables);
    }
    let namespace = PyDict::new(py);
    let code = std::ffi::CString::new(BUILTIN_TYPES)?;
    py.run(&code, Some(&namespace), Some(&namespace))?;
    let pointers = |name: &str| -> PyResult<(Vec<usize>, Vec<Py<PyAny>>)> {
        let list = namespace
            .get_item(name)?
            .ok_or_else(|| PyRuntimeError::new_err("type table missing"))?;
        let list = list.cast::<PyList>()?;
        Ok((
            list.iter().map(|t| t.as_ptr() as usize).collect(),
            list.iter().map(|t| t.unbind()).collect(),
        ))
    };
    let (builtins, mut keep) = pointers("builtin_types")?;
    let (never, keep_never) = pointers("never_types")?;
    keep.extend(keep_never);
    let base_exception = py.get_type::<pyo3::exceptions::PyBaseException>();
    let tables = TypeTables {
        never,
        builtins,
        base_exception: base_exception.as_ptr() as usize,
        _keep: keep,
    };
    Ok(TYPE_TABLES.get_or_init(|| tables))
}

impl TypeTables {
    /// Whether `obj` is a frame or code object.
    ///
    /// # Safety
    /// GIL held; `obj` valid.
    unsafe fn never_traced(&self, obj: *mut ffi::PyObject) -> bool {
        let tp = unsafe { ffi::Py_TYPE(obj) } as usize;
        self.never.contains(&tp)
    }

    /// Whether `obj` is of a builtin type (or is an exception class). Creates no objects.
    ///
    /// # Safety
    /// GIL held; `obj` valid.
    unsafe fn is_builtin(&self, obj: *mut ffi::PyObject) -> bool {
        unsafe {
            let tp = ffi::Py_TYPE(obj);
            if self
                .builtins
                .iter()
                .any(|&t| ffi::PyType_IsSubtype(tp, t as *mut ffi::PyTypeObject) != 0)
            {
                return true;
            }
            ffi::PyType_Check(obj) != 0
                && ffi::PyType_IsSubtype(
                    obj.cast::<ffi::PyTypeObject>(),
                    self.base_exception as *mut ffi::PyTypeObject,
                ) != 0
        }
    }
}

/// Which types a ReferenceTracing writes.
struct TypeFilter {
    include_builtins: bool,
    exclude: Option<HashSet<Vec<u8>>>,
    include: Option<HashSet<Vec<u8>>>,
}

impl TypeFilter {
    fn wants_name(&self, name: &[u8]) -> bool {
        if self.exclude.as_ref().is_some_and(|set| set.contains(name)) {
            return false;
        }
        self.include.as_ref().is_none_or(|set| set.contains(name))
    }
}

/// The open log and counters of one ReferenceTracing.
struct RefLog {
    file: LogFile,
    rss: u64,
}

impl RefLog {
    fn put(&mut self, text: &str) {
        if self.file.abandoned_after_fork() {
            return;
        }
        self.file.put(text);
    }

    fn message(&mut self, message: &str) {
        let line = format!("MSG: {:>12.6} # {message}\n", process_clock());
        self.put(&line);
    }
}

/// What the callback reaches through its `data` pointer.
struct RefTraceShared {
    filter: TypeFilter,
    tables: &'static TypeTables,
    log: Mutex<RefLog>,
    count_new: AtomicU64,
    count_del: AtomicU64,
}

impl RefTraceShared {
    fn log(&self) -> MutexGuard<'_, RefLog> {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn data_ptr(self: &Arc<Self>) -> *mut c_void {
        Arc::as_ptr(self).cast_mut().cast()
    }
}

/// Process-wide stack of active ReferenceTracing logs; the last is registered.
static REF_STACK: Mutex<Vec<Arc<RefTraceShared>>> = Mutex::new(Vec::new());

fn ref_stack() -> MutexGuard<'static, Vec<Arc<RefTraceShared>>> {
    REF_STACK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

unsafe extern "C" fn on_reference_event(
    obj: *mut ffi::PyObject,
    event: c_int,
    data: *mut c_void,
) -> c_int {
    if obj.is_null() || data.is_null() || (event != REF_CREATE && event != REF_DESTROY) {
        return 0;
    }
    // SAFETY: `data` is the Arc registered with this callback; the stack keeps it alive while
    // it is registered. The interpreter calls reference tracers with the GIL held.
    unsafe {
        let shared = &*(data as *const RefTraceShared);
        if shared.tables.never_traced(obj) {
            return 0;
        }
        if !shared.filter.include_builtins && shared.tables.is_builtin(obj) {
            return 0;
        }
        let type_name = CStr::from_ptr((*ffi::Py_TYPE(obj)).tp_name).to_bytes();
        if !shared.filter.wants_name(type_name) {
            return 0;
        }
        let mut previous_data: *mut c_void = std::ptr::null_mut();
        let previous = PyRefTracer_GetTracer(&mut previous_data);
        PyRefTracer_SetTracer(None, std::ptr::null_mut());
        let site = frame_site(ffi::PyEval_GetFrame());
        let rss = current_rss();
        let row = if event == REF_CREATE {
            shared.count_new.fetch_add(1, Ordering::Relaxed);
            "NEW:"
        } else {
            shared.count_del.fetch_add(1, Ordering::Relaxed);
            "DEL:"
        };
        {
            let mut log = shared.log();
            let d_rss = rss as i64 - log.rss as i64;
            log.rss = rss;
            let line = format!(
                "{row} {:>12.6} {:>16} {:>16} {:<32} {:<80} {:>4} {:<40} {:>16} {:>16}\n",
                process_clock(),
                format!("{:#x}", obj as usize),
                ffi::Py_REFCNT(obj),
                String::from_utf8_lossy(type_name),
                site.file,
                site.line,
                site.function,
                rss,
                d_rss
            );
            log.put(&line);
        }
        PyRefTracer_SetTracer(previous, previous_data);
    }
    0
}

/// Registers `shared`'s log (or nothing) as the interpreter's reference tracer.
fn register(shared: Option<&Arc<RefTraceShared>>) -> PyResult<()> {
    // SAFETY: GIL held by callers; the Arc outlives its registration (it is on the stack).
    let failed = unsafe {
        match shared {
            Some(s) => PyRefTracer_SetTracer(Some(on_reference_event), s.data_ptr()),
            None => PyRefTracer_SetTracer(None, std::ptr::null_mut()),
        }
    };
    if failed != 0 {
        return Err(PyRuntimeError::new_err("PyRefTracer_SetTracer() failed."));
    }
    Ok(())
}

fn registered_data() -> *mut c_void {
    let mut data: *mut c_void = std::ptr::null_mut();
    // SAFETY: valid out-pointer; GIL held by callers.
    unsafe { PyRefTracer_GetTracer(&mut data) };
    data
}

/// A set of type names from a sequence of str (a str itself is refused: it would match by substring).
fn name_set(argument: &str, obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<HashSet<Vec<u8>>>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(None);
    };
    let not_sequence = || {
        PyTypeError::new_err(format!(
            "{argument} must be a sequence of str, not type {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    };
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() {
        return Err(not_sequence());
    }
    // SAFETY: GIL held; PySequence_Check has no failure mode.
    if unsafe { ffi::PySequence_Check(obj.as_ptr()) } == 0 {
        return Err(not_sequence());
    }
    let mut names = HashSet::new();
    for item in obj.try_iter()? {
        let item = item?;
        let text = item.cast::<PyString>().map_err(|_| not_sequence())?;
        names.insert(text.to_str()?.as_bytes().to_vec());
    }
    Ok(Some(names))
}

/// Reference Tracing (Python 3.13+): logs every object creation (`NEW:`) and destruction
/// (`DEL:`) with its address, reference count, type, where it happened and the RSS.
///
/// Arguments (all optional):
///
/// - ``message``: a line written at the start of the log file.
/// - ``filepath``: the log file; by default
///   ``YYYYMMDD_HHMMSS_<ordinal>_<PID>_O_<depth>_PY<version>.log`` in the current directory.
/// - ``include_builtins``: also log builtin types (int, str, list, ...). Default False.
/// - ``exclude_tp_names``: a sequence of type names never to log (wins over include).
/// - ``include_tp_names``: a sequence of type names; only these are logged.
/// - ``gc_collect_on_exit``: generation passed to ``gc.collect()`` at ``__exit__`` before
///   tracing stops (default 2); -1 for none.
///
/// Frame and code objects are never logged. The tracer sees objects of every thread.
#[pyclass(module = "cPyMemTrace", name = "ReferenceTracing", subclass)]
pub struct ReferenceTracing {
    message: Option<String>,
    filepath: Option<String>,
    gc_collect_on_exit: i32,
    include_builtins: bool,
    exclude: Option<HashSet<Vec<u8>>>,
    include: Option<HashSet<Vec<u8>>>,
    path: Option<String>,
    shared: Option<Arc<RefTraceShared>>,
    /// Keeps the RSS watcher counting from `__enter__` to `__exit__`.
    watch: Option<crate::rss_watch::Use>,
}

impl ReferenceTracing {
    fn position(&self) -> Option<usize> {
        let mine = self.shared.as_ref()?;
        ref_stack().iter().position(|s| Arc::ptr_eq(s, mine))
    }

    fn head_only(&self, action: &str) -> PyResult<Arc<RefTraceShared>> {
        let mine = self
            .shared
            .as_ref()
            .filter(|_| self.position().is_some())
            .ok_or_else(|| {
                PyRuntimeError::new_err(format!(
                    "{action}() on a ReferenceTracing that is not active."
                ))
            })?;
        let is_head = ref_stack()
            .last()
            .is_some_and(|head| Arc::ptr_eq(head, mine));
        if !is_head {
            return Err(PyRuntimeError::new_err(format!(
                "{action}() on an outer ReferenceTracing while an inner one is active."
            )));
        }
        Ok(Arc::clone(mine))
    }

    fn gc_collect(&self, py: Python<'_>) -> PyResult<()> {
        if self.gc_collect_on_exit >= 0 {
            py.import("gc")?
                .call_method1("collect", (self.gc_collect_on_exit,))?;
        }
        Ok(())
    }
}

#[pymethods]
impl ReferenceTracing {
    #[new]
    #[pyo3(signature = (*args, **kwargs))]
    fn new(args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let ReferenceTracingArgs {
            message,
            filepath,
            include_builtins,
            exclude_tp_names,
            include_tp_names,
            gc_collect_on_exit,
        } = reference_tracing_args(args, kwargs)?;
        if !(-1..=2).contains(&gc_collect_on_exit) {
            return Err(PyValueError::new_err(format!(
                "gc_collect_on_exit must be -1, 0, 1, 2 not {gc_collect_on_exit}."
            )));
        }
        Ok(ReferenceTracing {
            message,
            filepath: filepath.as_ref().map(path_argument).transpose()?,
            gc_collect_on_exit,
            include_builtins,
            exclude: name_set("exclude_tp_names", exclude_tp_names.as_ref())?,
            include: name_set("include_tp_names", include_tp_names.as_ref())?,
            path: None,
            shared: None,
            watch: None,
        })
    }

    /// The names pymemtrace 0.4.0 lists (no `__module__`, as for its static types).
    fn __dir__(slf: &Bound<'_, Self>) -> PyResult<Vec<String>> {
        dir_as_040(slf.as_any(), &[])
    }

    fn __enter__(mut slf: PyRefMut<'_, Self>) -> PyResult<PyRefMut<'_, Self>> {
        let py = slf.py();
        if slf.position().is_some() {
            return Err(PyRuntimeError::new_err(
                "This ReferenceTracing object is already active; create a new one to nest.",
            ));
        }
        let tables = type_tables(py)?;
        let depth = ref_stack().len();
        let path = match &slf.filepath {
            Some(path) => path.clone(),
            None => new_file_path(TracerKind::ReferenceTracing, depth)
                .map_err(|err| PyOSError::new_err(format!("Can not name a log file: {err}")))?
                .to_string_lossy()
                .into_owned(),
        };
        let file = File::create(&path)
            .map_err(|err| PyOSError::new_err(format!("Can not open log file {path}: {err}")))?;
        register(None)?;
        let previous = ref_stack().last().cloned();
        if let Some(previous) = &previous {
            let mut log = previous.log();
            log.message("Detaching this Reference Tracing file wrapper. New file:");
            log.message(&path);
        }
        slf.watch = Some(crate::rss_watch::Use::begin());
        let mut log = RefLog {
            file: LogFile::new(file),
            rss: current_rss(),
        };
        if let Some(message) = &slf.message {
            log.put(&format!("{message}\n"));
        }
        log.put("SOF\n");
        log.put(&format!(
            "HDR: {:>12} {:>16} {:>16} {:<32} {:<80} {:>4} {:<40} {:>16} {:>16}\n",
            "Clock", "Address", "RefCnt", "Type", "File", "Line", "Function", "RSS", "dRSS"
        ));
        let shared = Arc::new(RefTraceShared {
            filter: TypeFilter {
                include_builtins: slf.include_builtins,
                exclude: slf.exclude.clone(),
                include: slf.include.clone(),
            },
            tables,
            log: Mutex::new(log),
            count_new: AtomicU64::new(0),
            count_del: AtomicU64::new(0),
        });
        ref_stack().push(Arc::clone(&shared));
        slf.shared = Some(Arc::clone(&shared));
        slf.path = Some(path);
        register(Some(&shared))?;
        Ok(slf)
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&mut self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        let Some(position) = self.position() else {
            return Err(PyRuntimeError::new_err(
                "ReferenceTracing.__exit__ on an object that is not active.",
            ));
        };
        let collected = if position + 1 == ref_stack().len() {
            self.gc_collect(py)
        } else {
            Ok(())
        };
        register(None)?;
        let mine = ref_stack().remove(position);
        let closed = {
            let mut log = mine.log();
            log.put("EOF\n");
            log.file.close()
        };
        self.watch = None;
        let head = ref_stack().last().cloned();
        if let Some(head) = head {
            if position == ref_stack().len() {
                head.log().message("Re-attaching this trace file wrapper.");
            }
            register(Some(&head))?;
        }
        collected?;
        closed.map_err(|err| PyOSError::new_err(format!("Writing the log file failed: {err}")))?;
        Ok(false)
    }

    /// Write a string as a message (a `MSG:` line) to the log file. Returns None.
    fn write_message_to_log(&self, text: &Bound<'_, PyAny>) -> PyResult<()> {
        let text = message_text("write_message_to_log", text)?;
        let shared = self
            .shared
            .as_ref()
            .ok_or_else(|| PyOSError::new_err("Log file is closed."))?;
        let mut log = shared.log();
        if !log.file.has_file() {
            return Err(PyOSError::new_err("Log file is closed."));
        }
        log.message(&text);
        Ok(())
    }

    /// The path of this tracer's log file (None before `__enter__`).
    fn log_file_path(&self) -> Option<String> {
        self.path.clone()
    }

    /// Suspend this (innermost) Reference Tracer; RuntimeError if an inner one is active.
    fn suspend(&self) -> PyResult<()> {
        let mine = self.head_only("suspend")?;
        if registered_data() != mine.data_ptr() {
            return Err(PyRuntimeError::new_err(
                "This ReferenceTracing is already suspended.",
            ));
        }
        mine.log().message("Suspending reference tracing.");
        register(None)
    }

    /// Resume this (innermost) Reference Tracer; RuntimeError if an inner one is active.
    fn resume(&self) -> PyResult<()> {
        let mine = self.head_only("resume")?;
        register(None)?;
        mine.log().message("Resuming reference tracing.");
        register(Some(&mine))
    }

    /// The count of objects created and logged by this tracer.
    fn count_new(&self) -> u64 {
        self.shared
            .as_ref()
            .map_or(0, |s| s.count_new.load(Ordering::Relaxed))
    }

    /// The count of objects destroyed and logged by this tracer.
    fn count_del(&self) -> u64 {
        self.shared
            .as_ref()
            .map_or(0, |s| s.count_del.load(Ordering::Relaxed))
    }
}

/// Counters of one ReferenceTracingSimple.
struct SimpleCounts {
    count_new: AtomicU64,
    count_del: AtomicU64,
}

static SIMPLE_STACK: Mutex<Vec<Arc<SimpleCounts>>> = Mutex::new(Vec::new());

fn simple_stack() -> MutexGuard<'static, Vec<Arc<SimpleCounts>>> {
    SIMPLE_STACK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

unsafe extern "C" fn on_simple_event(
    _obj: *mut ffi::PyObject,
    event: c_int,
    data: *mut c_void,
) -> c_int {
    if data.is_null() {
        return 0;
    }
    // SAFETY: `data` is the registered Arc, kept alive by the stack.
    let counts = unsafe { &*(data as *const SimpleCounts) };
    match event {
        REF_CREATE => counts.count_new.fetch_add(1, Ordering::Relaxed),
        REF_DESTROY => counts.count_del.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
    0
}

fn register_simple(counts: Option<&Arc<SimpleCounts>>) -> PyResult<()> {
    // SAFETY: GIL held; the Arc stays on the stack while registered.
    let failed = unsafe {
        match counts {
            Some(c) => {
                PyRefTracer_SetTracer(Some(on_simple_event), Arc::as_ptr(c).cast_mut().cast())
            }
            None => PyRefTracer_SetTracer(None, std::ptr::null_mut()),
        }
    };
    if failed != 0 {
        return Err(PyRuntimeError::new_err("PyRefTracer_SetTracer() failed."));
    }
    Ok(())
}

/// A Reference Tracer that only counts object creations and destructions (no log file).
#[pyclass(module = "cPyMemTrace", name = "ReferenceTracingSimple", subclass)]
pub struct ReferenceTracingSimple {
    counts: Arc<SimpleCounts>,
}

impl ReferenceTracingSimple {
    fn active_head(&self, action: &str) -> PyResult<()> {
        let stack = simple_stack();
        if stack
            .last()
            .is_some_and(|head| Arc::ptr_eq(head, &self.counts))
        {
            Ok(())
        } else {
            Err(PyRuntimeError::new_err(format!(
                "{action}() on a ReferenceTracingSimple that is not the active one."
            )))
        }
    }
}

#[pymethods]
impl ReferenceTracingSimple {
    #[new]
    #[pyo3(signature = (*args, **kwargs))]
    fn new(args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        no_args(args, kwargs)?;
        Ok(ReferenceTracingSimple {
            counts: Arc::new(SimpleCounts {
                count_new: AtomicU64::new(0),
                count_del: AtomicU64::new(0),
            }),
        })
    }

    /// The names pymemtrace 0.4.0 lists (no `__module__`, as for its static types).
    fn __dir__(slf: &Bound<'_, Self>) -> PyResult<Vec<String>> {
        dir_as_040(slf.as_any(), &[])
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyResult<PyRef<'_, Self>> {
        if simple_stack().iter().any(|c| Arc::ptr_eq(c, &slf.counts)) {
            return Err(PyRuntimeError::new_err(
                "This ReferenceTracingSimple is already active.",
            ));
        }
        simple_stack().push(Arc::clone(&slf.counts));
        register_simple(Some(&slf.counts))?;
        Ok(slf)
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        register_simple(None)?;
        let head = {
            let mut stack = simple_stack();
            let Some(position) = stack.iter().position(|c| Arc::ptr_eq(c, &self.counts)) else {
                return Err(PyRuntimeError::new_err(
                    "ReferenceTracingSimple.__exit__ on an object that is not active.",
                ));
            };
            stack.remove(position);
            stack.last().cloned()
        };
        register_simple(head.as_ref())?;
        Ok(false)
    }

    /// Suspend counting.
    fn suspend(&self) -> PyResult<()> {
        self.active_head("suspend")?;
        register_simple(None)
    }

    /// Resume counting.
    fn resume(&self) -> PyResult<()> {
        self.active_head("resume")?;
        register_simple(Some(&self.counts))
    }

    /// The count of objects created.
    fn count_new(&self) -> u64 {
        self.counts.count_new.load(Ordering::Relaxed)
    }

    /// The count of objects destroyed.
    fn count_del(&self) -> u64 {
        self.counts.count_del.load(Ordering::Relaxed)
    }
}

/// Flushes the logs of every active ReferenceTracing (run at interpreter exit, so a tracer
/// never exited still leaves its lines on disk).
#[pyfunction]
fn flush_reference_tracing_logs() {
    for shared in ref_stack().iter() {
        shared.log().file.flush();
    }
}

/// Return the depth of the Reference Tracing wrapper stack.
#[pyfunction]
fn reference_tracing_wrapper_depth() -> usize {
    ref_stack().len()
}

/// Return the depth of the Reference Tracing Simple wrapper stack.
#[pyfunction]
fn reference_tracing_simple_wrapper_depth() -> usize {
    simple_stack().len()
}

/// Adds the reference tracing classes and functions to `cPyMemTrace`.
pub fn register_module(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<ReferenceTracing>()?;
    module.add_class::<ReferenceTracingSimple>()?;
    module.add_function(wrap_pyfunction!(reference_tracing_wrapper_depth, module)?)?;
    module.add_function(wrap_pyfunction!(
        reference_tracing_simple_wrapper_depth,
        module
    )?)?;
    let flush = wrap_pyfunction!(flush_reference_tracing_logs, module)?;
    module
        .py()
        .import("atexit")?
        .call_method1("register", (flush,))?;
    Ok(())
}
