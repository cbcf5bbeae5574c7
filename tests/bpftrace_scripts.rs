//! The bpftrace scripts in `dtrace/` run against real CPython processes with known work and
//! report it: allocator totals and callers (malloc_by_caller.bt), per-thread allocator
//! counters (malloc_per_thread.bt), Python calls from the USDT probes (py_calls.bt), and the
//! per-call malloc/free log of py_malloc_free.bt as `pymemtrace.util.dtrace_log_analyse` reads it.
//!
//! Needs root and bpftrace; skips with a reason elsewhere, fails when `PMT_REQUIRE_EBPF=1`.

mod common;
mod malloc_support;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use malloc_support::{Python, Workload, pythons, thread_ids, tid};
use object::Object;

const GIB: f64 = (1u64 << 30) as f64;

fn bpftrace_usable() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let present = Command::new("bpftrace")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if root && present {
        return true;
    }
    let why = if present {
        "not root"
    } else {
        "bpftrace not installed"
    };
    assert!(
        std::env::var("PMT_REQUIRE_EBPF").as_deref() != Ok("1"),
        "bpftrace scripts cannot run: {why}"
    );
    eprintln!("SKIP: bpftrace scripts cannot run: {why}");
    false
}

/// A bpftrace script running (under a 60 s SIGINT watchdog) with line-buffered output.
struct Trace {
    child: Child,
    stdout: BufReader<ChildStdout>,
    head: String,
}

impl Trace {
    /// Starts `dtrace/SCRIPT` and waits for its BEGIN line (probes attached by then).
    fn start(script: &str, pre_args: &[&str], args: &[&str]) -> Trace {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("dtrace")
            .join(script);
        let mut child = Command::new("timeout")
            .args(["-s", "INT", "60", "bpftrace", "-B", "line"])
            .args(pre_args)
            .arg(&path)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bpftrace");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = stdout.read_line(&mut line).expect("bpftrace stdout");
            assert!(n > 0, "bpftrace {script} ended before tracing: {head}");
            head.push_str(&line);
            if line.contains("Ctrl-C to stop") {
                break;
            }
        }
        Trace {
            child,
            stdout,
            head,
        }
    }

    /// Waits for bpftrace to exit (it does when the target exits) and returns its output.
    fn finish(mut self) -> String {
        let mut rest = String::new();
        self.stdout
            .read_to_string(&mut rest)
            .expect("bpftrace output");
        let status = self.child.wait().expect("bpftrace status");
        assert!(status.success(), "bpftrace exited with {status}: {rest}");
        self.head + &rest
    }
}

/// The value of a `@name: N` line.
fn scalar(output: &str, name: &str) -> u64 {
    let prefix = format!("@{name}: ");
    output
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} line in:\n{output}"))
}

/// The value of a `@name[KEY]: N` line.
fn keyed(output: &str, name: &str, key: &str) -> u64 {
    let prefix = format!("@{name}[{key}]: ");
    output
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} line in:\n{output}"))
}

fn test_pythons() -> Vec<Python> {
    pythons()
        .into_iter()
        .filter(|p| p.label == "system3.11" || p.label == "3.12")
        .collect()
}

#[test]
fn malloc_by_caller_reports_known_totals() {
    if !bpftrace_usable() {
        return;
    }
    for python in test_pythons() {
        let mut workload = Workload::start(&python, "malloc_ground_truth.py", &[]);
        let pid = workload.pid().to_string();
        let trace = Trace::start("malloc_by_caller.bt", &[], &[&pid]);
        workload.go();
        thread_ids(&mut workload);
        workload.finish();
        let output = trace.finish();
        let bytes = scalar(&output, "total_bytes");
        let calls = scalar(&output, "total_calls");
        let frees = scalar(&output, "frees");
        eprintln!(
            "{}: {calls} calls, {bytes} bytes, {frees} frees",
            python.label
        );
        let expected = GIB + 10.0 * (1u64 << 20) as f64;
        assert!(
            (bytes as f64 - expected).abs() < 0.10 * expected,
            "{}: {bytes} bytes, expected 1 GiB + 10 MiB ±10%",
            python.label
        );
        assert!(calls >= 257, "{}: {calls} calls", python.label);
        assert!(frees >= 256, "{}: {frees} frees", python.label);
        assert!(
            output.contains("[4M, 8M)"),
            "{}: the size histogram shows the 4 MiB blocks:\n{output}",
            python.label
        );
        assert!(
            output.contains("top callers by bytes requested"),
            "{}: callers listed",
            python.label
        );
    }
}

#[test]
fn malloc_per_thread_matches_known_threads() {
    if !bpftrace_usable() {
        return;
    }
    for python in test_pythons() {
        let mut workload = Workload::start(&python, "malloc_ground_truth.py", &[]);
        let pid = workload.pid().to_string();
        let trace = Trace::start("malloc_per_thread.bt", &[], &[&pid]);
        workload.go();
        let ids = thread_ids(&mut workload);
        workload.finish();
        let output = trace.finish();
        let churn = tid(&ids, "churn").to_string();
        let bytes = keyed(&output, "bytes", &churn);
        let calls = keyed(&output, "calls", &churn);
        eprintln!(
            "{}: churn thread {calls} calls, {bytes} bytes",
            python.label
        );
        assert!(
            (bytes as f64 - GIB).abs() < 0.10 * GIB,
            "{}: churn {bytes} bytes",
            python.label
        );
        assert!(
            (calls as f64 - 256.0).abs() <= 0.05 * 256.0,
            "{}: churn {calls} calls",
            python.label
        );
    }
}

/// Whether the ELF file has USDT (stapsdt) notes.
fn has_usdt(path: &Path) -> bool {
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    object::File::parse(&*data)
        .map(|f| f.section_by_name(".note.stapsdt").is_some())
        .unwrap_or(false)
}

/// The interpreters with USDT probes that bpftrace can attach to; None (after saying why) when
/// bpftrace cannot run or no interpreter here has them.
fn usdt_pythons() -> Option<Vec<Python>> {
    if !bpftrace_usable() {
        return None;
    }
    let with_usdt: Vec<Python> = pythons()
        .into_iter()
        // Debian sid's interpreters (in their chroot) carry USDT notes too, but Debian 12's
        // bpftrace 0.17 attaches none of them ("No probes to attach"), by either path.
        .filter(|p| p.root.is_none() && has_usdt(&p.path))
        .collect();
    if with_usdt.is_empty() {
        eprintln!("SKIP: no CPython here has USDT probes (built --with-dtrace)");
        return None;
    }
    Some(with_usdt)
}

#[test]
fn py_calls_counts_python_functions_from_usdt() {
    let Some(with_usdt) = usdt_pythons() else {
        return;
    };
    for python in with_usdt {
        let mut workload = Workload::start(&python, "py_calls.py", &[]);
        let pid = workload.pid().to_string();
        let binary = python.path.to_string_lossy().into_owned();
        let trace = Trace::start("py_calls.bt", &["-p", &pid], &[&binary, &pid]);
        workload.go();
        assert_eq!(workload.line().trim(), "done");
        workload.finish();
        let output = trace.finish();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workloads/py_calls.py");
        let key = format!("{}, leaf, 9", script.display());
        let leaf = keyed(&output, "calls", &key);
        let outer = keyed(
            &output,
            "calls",
            &format!("{}, outer, 13", script.display()),
        );
        eprintln!("{}: leaf {leaf} calls, outer {outer}", python.label);
        assert_eq!(leaf, 5000, "{}: leaf() calls", python.label);
        assert_eq!(outer, 1, "{}: outer() calls", python.label);
        assert!(
            output.contains(&format!("@ns[{}, outer]: ", script.display())),
            "{}: inclusive time of outer() listed:\n{output}",
            python.label
        );
    }
}

/// The 1-based number of the line of `script` that contains `text`.
fn line_of(script: &Path, text: &str) -> usize {
    let source = std::fs::read_to_string(script).expect("workload source");
    source
        .lines()
        .position(|l| l.contains(text))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{text:?} not in {}", script.display()))
}

/// Reads `log` with `pymemtrace.util.dtrace_log_analyse` (the package's pure-Python modules
/// from python/, under `python`): its command line's output, and one line per known call:
/// `malloc SIZE FILE LINE FUNCTION 0xPOINTER` or `free FILE LINE FUNCTION 0xPOINTER`.
fn analyse(python: &Python, log: &Path, sizes: &[u64], pointers: &[String]) -> (String, String) {
    let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let cli = python
        .command()
        .env("PYTHONPATH", &package)
        .args(["-m", "pymemtrace.util.dtrace_log_analyse"])
        .arg(log)
        .output()
        .expect("run dtrace_log_analyse");
    assert!(
        cli.status.success(),
        "dtrace_log_analyse failed: {}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let code = "import sys\n\
        from pymemtrace.util import dtrace_log_analyse as d\n\
        sizes = [int(s) for s in sys.argv[2].split(',')]\n\
        pointers = [int(p, 16) for p in sys.argv[3].split(',')]\n\
        for n, text in enumerate(open(sys.argv[1], encoding='latin-1'), 1):\n\
        \x20   m = d.match_malloc_line(text.rstrip('\\n'), n)\n\
        \x20   if m is not None and m.size in sizes:\n\
        \x20       print('malloc', m.size, m.file, m.line, m.function, hex(m.pointer))\n\
        \x20   f = d.match_free_line(text.rstrip('\\n'), n)\n\
        \x20   if f is not None and f.pointer in pointers:\n\
        \x20       print('free', f.file, f.line, f.function, hex(f.pointer))\n";
    let calls = python
        .command()
        .env("PYTHONPATH", &package)
        .args(["-c", code])
        .arg(log)
        .arg(
            sizes
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
        )
        .arg(pointers.join(","))
        .output()
        .expect("run the dtrace_log_analyse API");
    assert!(
        calls.status.success(),
        "dtrace_log_analyse API failed: {}",
        String::from_utf8_lossy(&calls.stderr)
    );
    (
        String::from_utf8_lossy(&cli.stdout).into_owned(),
        String::from_utf8_lossy(&calls.stdout).into_owned(),
    )
}

/// The number after `NAME:` in dtrace_log_analyse's summary (digits with `,` separators).
fn summary_value(summary: &str, name: &str) -> u64 {
    let prefix = format!("{name}:");
    summary
        .lines()
        .find_map(|l| l.trim().strip_prefix(&prefix))
        .and_then(|v| v.trim().replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{summary}"))
}

#[test]
fn py_malloc_free_log_is_read_by_dtrace_log_analyse() {
    let Some(with_usdt) = usdt_pythons() else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workloads/malloc_free_sites.py");
    let file = script.display().to_string();
    let malloc_line = line_of(&script, "libc.malloc(123457)");
    let free_line = line_of(&script, "libc.free(pointer)");
    let realloc_line = line_of(&script, "libc.realloc(old, 200000)");
    let dir = tempfile::tempdir().expect("temporary directory");
    for python in with_usdt {
        let mut workload = Workload::start(&python, "malloc_free_sites.py", &[]);
        let pid = workload.pid().to_string();
        let binary = python.path.to_string_lossy().into_owned();
        let trace = Trace::start("py_malloc_free.bt", &["-p", &pid], &[&binary, &pid]);
        workload.go();
        let block = workload.line().trim().to_owned();
        let moved = workload.line();
        let [_, old, new] = moved.split_whitespace().collect::<Vec<_>>()[..] else {
            panic!("expected 'realloc OLD NEW', got {moved:?}");
        };
        let (old, new) = (old.to_owned(), new.to_owned());
        assert_eq!(workload.line().trim(), "done");
        workload.finish();
        let output = trace.finish();
        // The log is what the script writes, up to its END line; bpftrace 0.17 may print maps
        // after it that its END had asked to clear (see the script's comment).
        let end = output
            .find("# end of trace\n")
            .unwrap_or_else(|| panic!("{}: no END line in the log:\n{output}", python.label));
        let output = output[..end + "# end of trace\n".len()].to_string();
        let log = dir.path().join(format!("{}.log", python.label));
        std::fs::write(&log, &output).expect("write the log");
        let pointers = [block.clone(), old.clone(), new.clone()];
        let (summary, calls) = analyse(&python, &log, &[123457, 1000, 200000], &pointers);
        eprintln!("{}:\n{summary}{calls}", python.label);
        let expected = [
            format!("malloc 123457 {file} {malloc_line} allocate {block}"),
            format!("free {file} {free_line} release {block}"),
            format!("malloc 1000 {file} {} grow {old}", realloc_line - 1),
            // realloc is written as the free of the old block and the malloc of the new one.
            format!("free {file} {realloc_line} grow {old}"),
            format!("malloc 200000 {file} {realloc_line} grow {new}"),
            format!("free {file} {} grow {new}", realloc_line + 2),
        ];
        for call in &expected {
            assert!(
                calls.lines().any(|l| l == call),
                "{}: {call:?} not read from the log:\n{calls}\nlog:\n{output}",
                python.label
            );
        }
        assert!(
            summary_value(&summary, "Maximum malloc") >= 200_000,
            "{summary}"
        );
        assert!(
            summary_value(&summary, "Count frees non-null") >= 3,
            "{summary}"
        );
        let unread: Vec<&str> = output
            .lines()
            .filter(|l| !l.starts_with('#') && !l.contains(" malloc(") && !l.contains(" free("))
            .collect();
        assert!(
            summary.contains("Failed parse lines: 0 Failed malloc: 0"),
            "{}: every line of the script's log is read, no malloc pointer doubled:\n{summary}\n\
             lines that are no call: {unread:#?}",
            python.label
        );
    }
}
