//! Bad input gets one clear line on stderr and a non-zero exit: a dead pid, a process that
//! is not Python, a launcher whose child is Python, an unsupported CPython, and a user
//! without the right to read the target.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Runs `pmt dump --pid PID` and returns its output; it must fail with one `pmt: error:` line.
fn dump_error(pid: u32, runner: Option<&[&str]>) -> String {
    let pmt = env!("CARGO_BIN_EXE_pmt");
    let pid = pid.to_string();
    let args = ["dump", "--pid", pid.as_str()];
    let out: Output = match runner {
        Some(prefix) => Command::new(prefix[0])
            .args(&prefix[1..])
            .arg(pmt)
            .args(args)
            .output(),
        None => Command::new(pmt).args(args).output(),
    }
    .expect("running pmt");
    assert!(!out.status.success(), "pmt dump succeeded unexpectedly");
    assert!(out.stdout.is_empty(), "nothing on stdout on failure");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr: {stderr:?}");
    assert!(lines[0].starts_with("pmt: error: "), "{stderr:?}");
    stderr
}

#[test]
fn dead_pid() {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait");
    let err = dump_error(pid, None);
    assert!(err.contains(&format!("no process with pid {pid}")), "{err}");
}

#[test]
fn not_python() {
    let mut child = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let err = dump_error(child.id(), None);
    let _ = child.kill();
    let _ = child.wait();
    assert!(err.contains("is not a Python process"), "{err}");
    assert!(err.contains("sleep 30"), "names the command: {err}");
}

#[test]
fn launcher_names_its_python_child() {
    let Some(interp) = common::interpreter_or_skip("3.12") else {
        return;
    };
    // A shell that waits for its Python child instead of exec'ing it.
    let command = format!(
        "'{}' -c 'import time; print(\"READY\", flush=True); time.sleep(30)'; true",
        interp.path.display()
    );
    let mut shell = Command::new("bash")
        .args(["-c", &command])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn bash");
    let mut target = common::Target {
        stdout: std::io::BufReader::new(shell.stdout.take().expect("stdout")),
        child: shell,
    };
    target.wait_for_line("READY", Duration::from_secs(30));
    let err = dump_error(target.pid() as u32, None);
    assert!(err.contains("is not a Python process"), "{err}");
    assert!(err.contains("its Python descendants are"), "{err}");
    assert!(
        err.contains("time.sleep(30)"),
        "names the Python child: {err}"
    );
}

#[test]
fn unsupported_version_is_named() {
    let Some(interp) = common::find("2.7") else {
        eprintln!("skipped: no CPython 2.7 here to show an unsupported version");
        return;
    };
    let mut target = common::start_code(
        &interp,
        "import sys, time; print('READY'); sys.stdout.flush(); time.sleep(30)",
    );
    target.wait_for_line("READY", Duration::from_secs(30));
    let err = dump_error(target.pid() as u32, None);
    assert!(err.contains("runs CPython 2.7"), "{err}");
    assert!(err.contains("not supported"), "{err}");
    assert!(
        err.contains("3.6, 3.7, 3.8, 3.9, 3.10, 3.11, 3.12, 3.13"),
        "lists the supported: {err}"
    );
}

#[test]
fn permission_denied_says_what_is_needed() {
    let Some(interp) = common::interpreter_or_skip("3.12") else {
        return;
    };
    if !nix_is_root() {
        eprintln!("skipped: needs root to run pmt as another user");
        return;
    }
    let mut target = common::start_code(
        &interp,
        "import time; print('READY', flush=True); time.sleep(30)",
    );
    target.wait_for_line("READY", Duration::from_secs(30));
    let err = dump_error(
        target.pid() as u32,
        Some(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]),
    );
    assert!(err.contains("permission denied"), "{err}");
    assert!(err.contains("CAP_SYS_PTRACE"), "{err}");
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
