//! `pmt dump` against real interpreters: every CPython here runs `tests/scripts/known_stack.py`
//! (recursion of known depth, a generator, an asyncio task, a method, a lambda, named threads,
//! non-ASCII function and file names, a line above 2^16) and the dump must show exactly
//! those frames, lines, names, GIL holder and idle states.

mod common;

use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// Filler lines before the non-ASCII module's function, so that its lines exceed 2^16.
const FILLER_LINES: u32 = 70_000;

/// Writes `модуль_ü.py` into `dir`; returns the line of its `time.sleep` call.
fn write_module(dir: &Path) -> u32 {
    let mut text = "#\n".repeat(FILLER_LINES as usize);
    text.push_str("import time\n\n\ndef функция(ready):\n    ready()\n    time.sleep(3600)\n");
    std::fs::write(dir.join("модуль_ü.py"), text).expect("writing the module");
    FILLER_LINES + 6
}

/// Line numbers of `# @name` markers in the script.
fn markers(script: &Path) -> HashMap<String, u32> {
    let text = std::fs::read_to_string(script).expect("reading the script");
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let name = line.split("# @").nth(1)?;
            Some((name.trim().to_string(), i as u32 + 1))
        })
        .collect()
}

fn minor_of(label: &str) -> u32 {
    label
        .rsplit('.')
        .next()
        .and_then(|m| m.parse().ok())
        .expect("label ends in a minor version")
}

/// `(function, file name, line)` of a JSON frame, the file reduced to its last component.
fn frame(value: &Value) -> (String, String, u64) {
    let file = value["filename"].as_str().unwrap_or_default();
    let base = Path::new(file)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    (
        value["function"].as_str().unwrap_or_default().to_string(),
        base,
        value["line"].as_u64().unwrap_or_default(),
    )
}

fn thread_named<'a>(dump: &'a Value, name: &str) -> &'a Value {
    dump["threads"]
        .as_array()
        .and_then(|threads| threads.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("no thread named {name} in {dump:#}"))
}

fn check(label: &str) {
    let Some(interp) = common::interpreter_or_skip(label) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let sleep_line = write_module(dir.path());
    let script = common::script("known_stack.py");
    let at = markers(&script);
    let dir_arg = dir.path().to_string_lossy().to_string();
    let mut target = common::start(&interp, &script, &[&dir_arg]);
    target.wait_for_line("READY", Duration::from_secs(60));
    // READY is printed just before the main thread's sleep call.
    std::thread::sleep(Duration::from_millis(300));

    let dump = run_dump(label, target.pid(), false);
    check_dump(label, &dump, &at, sleep_line, target.pid());
    check_locals(label, target.pid());
    // The same with the target paused for the read; afterwards no thread is left stopped.
    let paused = run_dump(label, target.pid(), true);
    check_dump(label, &paused, &at, sleep_line, target.pid());
    let tasks = std::fs::read_dir(format!("/proc/{}/task", target.pid())).expect("tasks");
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .next();
        assert_ne!(
            state,
            Some("t"),
            "{label}: a thread was left stopped by --blocking"
        );
    }
}

/// `pmt dump --locals`: each `recurse(n)` frame shows its own `n`, innermost 0 to outermost
/// 5, and the text form prints them under their frames.
fn check_locals(label: &str, pid: i32) {
    let out = common::pmt()
        .args(["dump", "--json", "--locals", "--pid", &pid.to_string()])
        .output()
        .expect("running pmt dump --locals");
    assert!(
        out.status.success(),
        "{label}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let main = thread_named(&dump, "MainThread");
    let ns: Vec<String> = main["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .filter(|f| f["function"] == "recurse")
        .map(|f| {
            let locals = f["locals"].as_array().expect("locals of each frame");
            assert_eq!(locals.len(), 1, "{label}: recurse has one local: {f}");
            assert_eq!(locals[0]["name"], "n", "{label}");
            locals[0]["value"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(
        ns,
        ["0", "1", "2", "3", "4", "5"],
        "{label}: recurse's n per frame"
    );
    let text = common::pmt()
        .args(["dump", "--locals", "--pid", &pid.to_string()])
        .output()
        .expect("running pmt dump --locals");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("\n        n = 3\n"), "{label}: {text}");
}

fn run_dump(label: &str, pid: i32, blocking: bool) -> Value {
    let mut args = vec!["dump".to_string(), "--json".to_string()];
    if blocking {
        args.push("--blocking".to_string());
    }
    args.extend(["--pid".to_string(), pid.to_string()]);
    let out = common::pmt()
        .args(&args)
        .output()
        .expect("running pmt dump");
    assert!(
        out.status.success(),
        "{label}: pmt dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("dump is JSON")
}

fn check_dump(label: &str, dump: &Value, at: &HashMap<String, u32>, sleep_line: u32, pid: i32) {
    let minor = minor_of(label);
    let qualified = minor >= 11;
    let version = dump["python_version"].as_str().unwrap_or_default();
    let wanted_prefix = format!("3.{minor}.");
    assert!(
        version.starts_with(&wanted_prefix),
        "{label}: version {version}"
    );

    // Main thread: exactly these frames, innermost first.
    let main = thread_named(dump, "MainThread");
    let got: Vec<_> = main["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(frame)
        .collect();
    let name = |plain: &str, qual: &str| if qualified { qual } else { plain }.to_string();
    let s = "known_stack.py".to_string();
    let mut expected = vec![
        (
            "функция".to_string(),
            "модуль_ü.py".to_string(),
            u64::from(sleep_line),
        ),
        ("gen".to_string(), s.clone(), u64::from(at["gen-yield"])),
        (
            "recurse".to_string(),
            s.clone(),
            u64::from(at["recurse-base"]),
        ),
    ];
    for _ in 0..5 {
        expected.push((
            "recurse".to_string(),
            s.clone(),
            u64::from(at["recurse-step"]),
        ));
    }
    expected.push((
        name("<lambda>", "K.method.<locals>.<lambda>"),
        s.clone(),
        u64::from(at["lambda"]),
    ));
    expected.push((
        name("method", "K.method"),
        s.clone(),
        u64::from(at["method"]),
    ));
    expected.push(("<module>".to_string(), s.clone(), u64::from(at["module"])));
    assert_eq!(got, expected, "{label}: main thread stack");
    assert_eq!(main["idle"], true, "{label}: sleeping main thread is idle");
    assert_eq!(
        main["holds_gil"], false,
        "{label}: sleeping main thread holds no GIL"
    );
    assert_eq!(main["native_id"].as_i64(), Some(i64::from(pid)));

    // Worker: the asyncio task's coroutines, asyncio's loop, then the thread's bootstrap.
    let worker = thread_named(dump, "worker-名前");
    let frames: Vec<_> = worker["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(frame)
        .collect();
    assert_eq!(
        frames[..2],
        [
            (
                "leaf_coro".to_string(),
                s.clone(),
                u64::from(at["worker-sleep"])
            ),
            (
                "task_coro".to_string(),
                s.clone(),
                u64::from(at["task-await"])
            ),
        ],
        "{label}: worker coroutines"
    );
    let run_at = frames
        .iter()
        .position(|f| f.0 == "worker_main")
        .unwrap_or_else(|| panic!("{label}: no worker_main in {frames:?}"));
    assert_eq!(frames[run_at].2, u64::from(at["worker-run"]));
    let full = |i: usize| {
        worker["frames"][i]["filename"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        (2..run_at).all(|i| full(i).contains("asyncio")),
        "{label}: frames between the task and worker_main are asyncio's: {frames:?}"
    );
    assert!(run_at > 2, "{label}: asyncio's loop frames are present");
    assert!(
        (run_at + 1..frames.len()).all(|i| frames[i].1 == "threading.py"),
        "{label}: the thread's bootstrap frames are threading's: {frames:?}"
    );
    assert_eq!(worker["idle"], true);

    // Spinner: running, holding the GIL, at its loop line.
    let spinner = thread_named(dump, "spinner");
    assert_eq!(
        frame(&spinner["frames"][0]),
        ("spin".to_string(), s.clone(), u64::from(at["spin"])),
        "{label}: spinner frame"
    );
    assert_eq!(
        spinner["holds_gil"], true,
        "{label}: the spinning thread holds the GIL"
    );
    assert_eq!(
        spinner["idle"], false,
        "{label}: the spinning thread is running"
    );
    assert_eq!(dump["threads"].as_array().map(Vec::len), Some(3));
    assert!(dump["rss_bytes"].as_u64().unwrap_or(0) > 1 << 20);
}

macro_rules! per_version {
    ($($name:ident => $label:expr),* $(,)?) => {
        $(#[test] fn $name() { check($label); })*
    };
}

per_version! {
    dump_cpython_3_6 => "3.6",
    dump_cpython_3_7 => "3.7",
    dump_cpython_3_8 => "3.8",
    dump_cpython_3_9 => "3.9",
    dump_cpython_3_10 => "3.10",
    dump_cpython_3_11 => "3.11",
    dump_cpython_3_12 => "3.12",
    dump_cpython_3_13 => "3.13",
    dump_debian_system_3_11 => "system3.11",
    dump_debian_sid_3_13 => "sid3.13",
    dump_debian_sid_3_14 => "sid3.14",
    dump_debian_sid_3_15 => "sid3.15",
}

/// A static build that loads its own `libpythonX.Y.so` (never initialised) with `ctypes`:
/// the dump reads the interpreter that runs, not the copy mapped beside it.
fn check_second_libpython(label: &str) {
    let Some(interp) = common::interpreter_or_skip(label) else {
        return;
    };
    let mut target = common::start(&interp, &common::script("second_libpython.py"), &[]);
    target.wait_for_line("READY", Duration::from_secs(30));
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", target.pid())).expect("maps");
    assert!(
        maps.contains("libpython"),
        "{label}: the script mapped a second libpython"
    );
    let dump = run_dump(label, target.pid(), false);
    let threads = dump["threads"].as_array().expect("threads");
    assert_eq!(threads.len(), 1, "{label}: the running thread: {dump}");
    let functions: Vec<String> = threads[0]["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(|f| frame(f).0)
        .collect();
    assert_eq!(functions, ["wait_here", "<module>"], "{label}: {dump}");
}

#[test]
fn second_libpython_debian_system_3_11() {
    check_second_libpython("system3.11");
}

#[test]
fn second_libpython_debian_sid() {
    for label in ["sid3.13", "sid3.14", "sid3.15"] {
        check_second_libpython(label);
    }
}

/// A stack deeper than the reader follows comes back cut: its innermost frames, marked.
fn check_deep_stack(label: &str) {
    let Some(interp) = common::interpreter_or_skip(label) else {
        return;
    };
    let mut target = common::start(&interp, &common::script("deep_stack.py"), &[]);
    target.wait_for_line("READY", Duration::from_secs(30));
    let dump = run_dump(label, target.pid(), false);
    let thread = &dump["threads"][0];
    assert!(thread["read_error"].is_null(), "{label}: {thread}");
    assert_eq!(thread["cut"], true, "{label}: the stack is marked cut");
    let functions: Vec<String> = thread["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(|f| frame(f).0)
        .collect();
    assert_eq!(
        functions.first().map(String::as_str),
        Some("bottom"),
        "{label}"
    );
    assert!(
        functions.len() >= 4000 && functions[1..].iter().all(|f| f == "down"),
        "{label}: {} frames, the innermost ones",
        functions.len()
    );
    let text = common::pmt()
        .args(["dump", "--pid", &target.pid().to_string()])
        .output()
        .expect("running pmt dump");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("outermost frames cut"), "{label}: {text}");
}

#[test]
fn deep_stack_is_cut_not_empty() {
    for label in [
        "3.6", "3.10", "3.11", "3.12", "sid3.13", "sid3.14", "sid3.15",
    ] {
        check_deep_stack(label);
    }
}
