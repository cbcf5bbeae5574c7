//! The Profile/Trace log file: its lines (`SOF`, `HDR:`, `FRST:`, `NEXT:`, `PREV:`, `MSG:`,
//! `LAST:`, `EOF`), the event counter, and the `d_rss_trigger` rule that decides which events
//! are written. This is `cpyTraceFileWrapper` in pymemtrace 0.4.0, with the same columns.
//!
//! The rule, per event: `dRSS` = RSS now - RSS of the last written event. When
//! `|dRSS| >= d_rss_trigger` (and it is not event 0, which `FRST:` covers), the line last
//! composed is repeated as `PREV:` if events were skipped since, then the event is written as
//! `NEXT:`. A `MSG:` line also becomes the "line last composed", as in 0.4.0.
//!
//! Owns: the file and the counters. Must not: install or remove hooks (see `tracers`).

use crate::frame::FrameSite;
use crate::logfile::LogFile;
use crate::logname::process_clock;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use std::fmt::Write as _;
use std::fs::File;
use std::sync::{Mutex, MutexGuard};

/// Event names of `PyTrace_CALL` (0) to `PyTrace_OPCODE` (7) as written in the What column.
const WHAT_STRINGS: [&str; 8] = [
    "CALL", "EXCEPT", "LINE", "RETURN", "C_CALL", "C_EXCEPT", "C_RETURN", "OPCODE",
];

/// `What` text of a trace event number.
pub fn what_text(what: i32) -> &'static str {
    usize::try_from(what)
        .ok()
        .and_then(|index| WHAT_STRINGS.get(index))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// Mutable state of one log file.
#[derive(Debug)]
pub struct TraceFileState {
    log: LogFile,
    /// Events seen so far (the next event's number).
    pub event_number: u64,
    /// Number of the event last written.
    pub previous_event_number: u64,
    /// RSS at the latest event.
    pub rss: u64,
    /// RSS of the event last written.
    pub last_reported_rss: u64,
    /// Resolved trigger in bytes (0 = every event).
    pub d_rss_trigger: i64,
    /// The line last composed (without its row type), repeated by `PREV:`.
    pub event_text: String,
}

impl TraceFileState {
    fn put(&mut self, text: &str) {
        self.log.put(text);
    }

    /// Whether the file is still open (never in a `fork()` child).
    pub fn is_open(&mut self) -> bool {
        self.log.is_open()
    }

    fn compose_event(&mut self, what: i32, site: &FrameSite, rss: u64) {
        let d_rss = rss as i64 - self.last_reported_rss as i64;
        self.event_text.clear();
        // Writing into a String cannot fail.
        let _ = write!(
            self.event_text,
            "{:<12} +{:<6} {:<12.6} {:<8} {:<80} {:>4} {:<32} {:>12} {:>12}",
            self.event_number,
            self.event_number.wrapping_sub(self.previous_event_number) as i64,
            process_clock(),
            what_text(what),
            site.file,
            site.line,
            site.function,
            rss,
            d_rss
        );
    }

    fn write_event_line(&mut self, row: &str, what: i32, site: &FrameSite, rss: u64) {
        self.compose_event(what, site, rss);
        self.put_line(row);
    }

    /// Writes `row`, the line last composed, and a newline.
    fn put_line(&mut self, row: &str) {
        let text = std::mem::take(&mut self.event_text);
        self.put(row);
        self.put(&text);
        self.put("\n");
        self.event_text = text;
    }

    /// Handles one trace event: decides from RSS whether to write it, then counts it.
    /// `site` is only asked for when a line is written.
    pub fn on_event(&mut self, what: i32, rss: u64, site: impl FnOnce() -> FrameSite) {
        if self.log.abandoned_after_fork() {
            return;
        }
        let d_rss = rss as i64 - self.last_reported_rss as i64;
        if self.event_number != 0 && d_rss.abs() >= self.d_rss_trigger {
            if self.event_number - self.previous_event_number > 1 {
                self.put_line("PREV: ");
            }
            self.write_event_line("NEXT: ", what, &site(), rss);
            self.previous_event_number = self.event_number;
            self.last_reported_rss = rss;
        }
        self.event_number += 1;
        self.rss = rss;
    }

    /// Writes `MSG:  <Event> +<dEvent> <Clock> # <message>`.
    pub fn write_message(&mut self, message: &str) {
        self.event_text = format!(
            "{:<12} +{:<6} {:<12.6}",
            self.event_number,
            self.event_number.wrapping_sub(self.previous_event_number) as i64,
            process_clock()
        );
        let line = format!("MSG:  {} # {message}\n", self.event_text);
        self.put(&line);
    }

    /// Writes `text` and a newline verbatim (not in the log format).
    pub fn write_raw(&mut self, text: &str) {
        let line = format!("{text}\n");
        self.put(&line);
    }

    /// Writes `LAST:` and `EOF`, then closes the file; reports the first write error.
    pub fn close(&mut self, site: &FrameSite, rss: u64) -> std::io::Result<()> {
        if !self.is_open() {
            return Ok(());
        }
        self.write_event_line("LAST: ", pyo3::ffi::PyTrace_LINE, site, rss);
        self.put("EOF\n");
        self.log.close()
    }
}

impl Drop for TraceFileState {
    fn drop(&mut self) {
        if self.is_open() {
            self.put("EOF\n");
            // Dropped with its tracer: there is no one left to report a write error to.
            let _ = self.log.close();
        }
    }
}

/// One Profile/Trace log file (pymemtrace 0.4.0's `cpyTraceFileWrapper`): reachable from a
/// `Profile`/`Trace` as `trace_file_wrapper`, and the object handed to the interpreter's hook.
#[pyclass(frozen, module = "cPyMemTrace", name = "cpyTraceFileWrapper")]
pub struct TraceFileWrapper {
    path: String,
    state: Mutex<TraceFileState>,
}

impl TraceFileWrapper {
    /// Opens `path` for writing and writes the opening message, `SOF`, `HDR:` and `FRST:`.
    pub fn create(
        path: String,
        d_rss_trigger: i32,
        message: Option<&str>,
        site: &FrameSite,
        rss: u64,
    ) -> PyResult<Self> {
        let file = File::create(&path)
            .map_err(|err| PyOSError::new_err(format!("Can not open log file {path}: {err}")))?;
        let trigger = if d_rss_trigger < 0 {
            crate::rss_reader::page_size() as i64
        } else {
            i64::from(d_rss_trigger)
        };
        let mut state = TraceFileState {
            log: LogFile::new(file),
            event_number: 0,
            previous_event_number: 0,
            rss: 0,
            last_reported_rss: 0,
            d_rss_trigger: trigger,
            event_text: String::new(),
        };
        if let Some(message) = message {
            state.write_raw(message);
        }
        state.put("SOF\n");
        let header = format!(
            "HDR: {:<12} {:<6}  {:<12} {:<8} {:<80} {:>4} {:<32} {:>12} {:>12}\n",
            "Event", "dEvent", "Clock", "What", "File", "Line", "Function", "RSS", "dRSS"
        );
        state.put(&header);
        state.write_event_line("FRST: ", pyo3::ffi::PyTrace_LINE, site, rss);
        Ok(TraceFileWrapper {
            path,
            state: Mutex::new(state),
        })
    }

    /// The path of the log file.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The state, even if a panic poisoned the lock (the counters stay usable).
    pub fn lock(&self) -> MutexGuard<'_, TraceFileState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes a `MSG:` line, or fails when the file is closed.
    pub fn message(&self, message: &str) -> PyResult<()> {
        let mut state = self.lock();
        if !state.is_open() {
            return Err(PyOSError::new_err("Log file is closed."));
        }
        state.write_message(message);
        Ok(())
    }
}

/// The text of a `str` argument, or pymemtrace 0.4.0's ValueError for anything else.
pub fn message_text(method: &str, obj: &Bound<'_, PyAny>) -> PyResult<String> {
    match obj.cast::<pyo3::types::PyString>() {
        Ok(text) => Ok(text.to_str()?.to_owned()),
        Err(_) => Err(PyValueError::new_err(format!(
            "{method}() requires a single string, not type {}",
            obj.get_type().name()?
        ))),
    }
}

#[pymethods]
impl TraceFileWrapper {
    /// The path to the log file being written.
    #[getter]
    fn log_file_path(&self) -> &str {
        &self.path
    }

    /// The current event number.
    #[getter]
    fn event_number(&self) -> u64 {
        self.lock().event_number
    }

    /// The RSS in bytes at the latest event.
    #[getter]
    fn rss(&self) -> u64 {
        self.lock().rss
    }

    /// The delta RSS trigger in bytes (0: every event).
    #[getter]
    fn d_rss_trigger(&self) -> i64 {
        self.lock().d_rss_trigger
    }

    /// The number of the event last written.
    #[getter]
    fn previous_event_number(&self) -> u64 {
        self.lock().previous_event_number
    }

    /// The line last composed.
    #[getter]
    fn event_text(&self) -> String {
        self.lock().event_text.clone()
    }

    /// Write any string and a newline to the log file. Not in the log file format.
    fn write_to_log(&self, text: &Bound<'_, PyAny>) -> PyResult<()> {
        let text = message_text("write_to_log", text)?;
        let mut state = self.lock();
        if !state.is_open() {
            return Err(PyOSError::new_err("Log file is closed."));
        }
        state.write_raw(&text);
        Ok(())
    }

    /// Write a string as a `MSG:` line to the log file.
    fn write_message_to_log(&self, text: &Bound<'_, PyAny>) -> PyResult<()> {
        let text = message_text("write_message_to_log", text)?;
        self.message(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(trigger: i64) -> TraceFileState {
        TraceFileState {
            log: LogFile::closed(),
            event_number: 1,
            previous_event_number: 0,
            rss: 0,
            last_reported_rss: 1000,
            d_rss_trigger: trigger,
            event_text: String::new(),
        }
    }

    fn site() -> FrameSite {
        FrameSite {
            file: "f.py".into(),
            line: 3,
            function: "g".into(),
        }
    }

    #[test]
    fn small_changes_are_skipped_and_counted() {
        let mut s = state(4096);
        s.on_event(0, 2000, || unreachable!("no line is written"));
        assert_eq!((s.event_number, s.previous_event_number), (2, 0));
        s.on_event(3, 1000 + 4096, site);
        assert_eq!((s.event_number, s.previous_event_number), (3, 2));
        assert_eq!(s.last_reported_rss, 5096);
        assert!(s.event_text.starts_with("2            +2      "));
        assert!(s.event_text.ends_with("        5096         4096"));
    }

    #[test]
    fn decreases_trigger_too() {
        let mut s = state(4096);
        s.on_event(0, 1000 + 8192, site);
        s.on_event(0, 1000, site);
        assert_eq!(s.last_reported_rss, 1000);
        assert!(s.event_text.ends_with("        1000        -8192"));
    }

    #[test]
    fn what_names() {
        assert_eq!(what_text(4), "C_CALL");
        assert_eq!(what_text(9), "UNKNOWN");
    }
}
