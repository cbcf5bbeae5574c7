//! Reading CPython interpreter state out of process: discovery, version detection, layouts,
//! frame walking and code-object decoding; and, the one writer, asking a 3.14+ interpreter
//! to run a script (`remote_exec`, PEP 768). Nothing here knows about sampling or outputs.

pub mod asyncio;
pub mod asyncio_registries;
mod call_sites;
pub mod capabilities;
pub mod code;
pub mod debug_offsets;
pub mod frames;
pub mod layout;
pub mod layouts;
pub mod locals;
pub mod objects;
pub mod remote_exec;
pub mod spy;
mod task_roots;
pub mod threads;
pub mod version;

pub use spy::{ImageChange, PythonSpy, SpyError, SpyOptions, WalkRoot, python_descendants};
pub use task_roots::TASK_FRAME_PREFIX;
pub use version::PythonVersion;

use std::fmt;
use std::sync::Arc;

/// What a code object tells about a function: decoded once, shared by every frame that runs it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CodeInfo {
    /// `co_qualname` where the version has it (3.11+), else `co_name`.
    pub function: String,
    /// `co_filename`.
    pub filename: String,
    /// `co_firstlineno`.
    pub first_line: u32,
}

/// One frame of a chain captured where it could not be decoded (in the kernel, at a page
/// fault or an allocation), to be decoded later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapturedFrame {
    /// The code object's address.
    pub code: u64,
    /// `f_lasti` before 3.11, else the frame's instruction pointer.
    pub position: u64,
    /// The code object's tag when captured ([`code::tag_window`]).
    pub tag: u64,
}

/// One Python frame of a thread's stack.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    /// The function the frame runs.
    pub code: Arc<CodeInfo>,
    /// The line being executed (0 if it could not be decoded).
    pub line: u32,
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_frame(f, &self.code.function, &self.code.filename, self.line)
    }
}

impl Frame {
    /// The frame's text with its file written as `path` (a shorter form of its filename).
    pub fn text_with_path(&self, path: &str) -> String {
        struct Text<'a>(&'a Frame, &'a str);
        impl fmt::Display for Text<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_frame(f, &self.0.code.function, self.1, self.0.line)
            }
        }
        Text(self, path).to_string()
    }
}

/// `function (path/to/file.py:LINE)`, the frame text of every output; a frame pmt made up to
/// stand for something else (no file) is its name alone.
pub fn write_frame(
    f: &mut fmt::Formatter<'_>,
    function: &str,
    filename: &str,
    line: u32,
) -> fmt::Result {
    if filename.is_empty() {
        return f.write_str(function);
    }
    write!(f, "{function} ({filename}:{line})")
}

/// One Python thread as seen at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadStack {
    /// `threading.get_ident()` of the thread (its `pthread_t`).
    pub thread_id: u64,
    /// The kernel thread id, where it could be found.
    pub native_id: Option<u32>,
    /// `threading.Thread.name`, where it could be read.
    pub name: Option<String>,
    /// Whether this thread held the GIL at the time of the read.
    pub holds_gil: bool,
    /// Whether the OS reported the thread as not running (sleeping or waiting).
    pub idle: bool,
    /// The Python frames, innermost first (empty when `read_error` is set).
    pub frames: Vec<Frame>,
    /// Each frame's local variables, parallel to `frames`, when they were asked for
    /// (`SpyOptions::locals`); empty otherwise.
    pub locals: Vec<Vec<locals::Local>>,
    /// The stack was deeper than the reader follows (`frames::MAX_FRAMES`): `frames` are
    /// its innermost ones, the outermost are left out.
    pub cut: bool,
    /// Why the stack could not be read whole, when every try found it torn or unreadable:
    /// the thread is still reported, with no frames.
    pub read_error: Option<String>,
}
