//! Shared by the eBPF malloc counter tests: finding CPython interpreters, deciding whether
//! eBPF can run here, and driving workload scripts over stdin/stdout.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};

use pymemtrace::memory::malloc::{MallocCounters, MallocError, MallocOptions};

/// A CPython interpreter to test against (labels as in `tests/common`: `3.12`, `system3.11`,
/// `sid3.14`).
pub type Python = crate::common::Interpreter;

/// Every interpreter `tests/common` knows that is here; a missing one listed in
/// `PMT_REQUIRE_PYTHONS` fails the test.
pub fn pythons() -> Vec<Python> {
    let found: Vec<Python> = crate::common::LABELS
        .iter()
        .filter_map(|label| crate::common::interpreter_or_skip(label))
        .collect();
    if found.is_empty() {
        eprintln!("SKIP: no CPython 3.6+ found here");
    }
    found
}

/// Whether `python` is one of Debian's builds (static, stripped, pymalloc inlined).
pub fn is_debian(python: &Python) -> bool {
    python.label.starts_with("system") || python.label.starts_with("sid")
}

/// Whether eBPF counters can be attached here. `false` prints why (a skip); with
/// `PMT_REQUIRE_EBPF=1` an unavailable eBPF fails the test instead.
pub fn ebpf_usable(probe_error: Option<&MallocError>) -> bool {
    let Some(error) = probe_error else {
        return true;
    };
    let environmental = matches!(
        error,
        MallocError::NotPermitted { .. }
            | MallocError::NoKernelSupport { .. }
            | MallocError::NotBuilt
    );
    if std::env::var("PMT_REQUIRE_EBPF").as_deref() == Ok("1") || !environmental {
        panic!("eBPF malloc counters unavailable: {error}");
    }
    eprintln!("SKIP: eBPF malloc counters unavailable here: {error}");
    false
}

/// A running workload script with its stdin (to release it) and stdout (to read its lines).
pub struct Workload {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: BufReader<ChildStdout>,
}

impl Workload {
    /// Starts `tests/workloads/SCRIPT` under `python` and waits for its "ready" line.
    pub fn start(python: &Python, script: &str, args: &[&str]) -> Workload {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/workloads")
            .join(script);
        let mut child = python
            .command()
            .arg(&path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.path.display()));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut workload = Workload {
            child,
            stdin,
            stdout,
        };
        let line = workload.line();
        assert_eq!(
            line.trim(),
            "ready",
            "{}: unexpected first line",
            python.label
        );
        workload
    }

    /// The target's pid.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    /// Reads one line of the workload's stdout.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("workload stdout");
        line
    }

    /// Sends the "go" line.
    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(b"go\n").expect("workload stdin");
        stdin.flush().expect("workload stdin");
    }

    /// Closes stdin (the workload exits) and reaps it.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }

    /// Kills the workload with SIGKILL and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the workload's JSON line naming its threads' kernel ids.
pub fn thread_ids(workload: &mut Workload) -> serde_json::Map<String, serde_json::Value> {
    let line = workload.line();
    match serde_json::from_str::<serde_json::Value>(&line) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => panic!("expected a JSON object of thread ids, got {line:?}"),
    }
}

/// The thread id named `name` in the workload's JSON line.
pub fn tid(ids: &serde_json::Map<String, serde_json::Value>, name: &str) -> u32 {
    ids.get(name)
        .and_then(serde_json::Value::as_u64)
        .and_then(|t| u32::try_from(t).ok())
        .unwrap_or_else(|| panic!("no thread id {name} in {ids:?}"))
}

/// Attaches to the workload; `None` when eBPF is unavailable here (the test then skips).
pub fn attach(workload: &Workload, options: &MallocOptions) -> Option<MallocCounters> {
    match MallocCounters::attach(workload.pid(), options) {
        Ok(c) => Some(c),
        Err(e) => {
            ebpf_usable(Some(&e));
            None
        }
    }
}
