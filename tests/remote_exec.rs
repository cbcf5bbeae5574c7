//! Running a script in a live CPython 3.14+ (PEP 768) from outside, with the script placed
//! for the target by `attach::placement`: Debian sid's 3.14 and 3.15 run in their chroot as
//! an unprivileged user, pmt attaches from the host.
//! - a target looping in Python runs the script (it writes a marker file from inside the
//!   target), keeps running and exits normally;
//! - a target started with remote debugging disabled is refused with a clear error and is
//!   left unharmed;
//! - a worker thread chosen by native id runs it while the main thread is blocked, and a
//!   native id no Python thread has is refused;
//! - a target whose main thread is blocked in a syscall does not take the request in time:
//!   the error says where it waits, the request is withdrawn, and when the thread runs Python
//!   again the script does not run;
//! - versions before 3.14 get an error naming their version.

mod common;

use common::{Interpreter, Target};
use pymemtrace::attach::placement::{FileSpec, Placement};
use pymemtrace::python::remote_exec::{
    ExecOutcome, ExecThread, RemoteExecError, RemoteExecOptions, remote_exec,
};
use pymemtrace::python::{PythonSpy, SpyOptions};
use std::io::{BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// The target's user (a bare uid: no account is needed).
const TARGET_UID: u32 = 64201;

const READY: Duration = Duration::from_secs(20);

/// Files of one test case in the shared `/tmp` (the chroot's `/tmp` is the host's).
struct Files {
    marker: PathBuf,
    stop: PathBuf,
}

impl Files {
    fn new(case: &str) -> Files {
        let stem = format!("/tmp/pmt-remote-exec-{case}-{}", std::process::id());
        let files = Files {
            marker: PathBuf::from(format!("{stem}.marker")),
            stop: PathBuf::from(format!("{stem}.stop")),
        };
        files.clean();
        files
    }

    fn clean(&self) {
        let _ = std::fs::remove_file(&self.marker);
        let _ = std::fs::remove_file(&self.stop);
    }

    /// The script run in the target: writes the target's pid and the running thread's
    /// native id to the marker.
    fn loader(&self) -> Vec<u8> {
        format!(
            "import os, threading\n\
             with open({marker:?}, 'w') as f:\n    \
                 f.write(f'{{os.getpid()}} {{threading.get_native_id()}}')\n",
            marker = self.marker.display().to_string()
        )
        .into_bytes()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        self.clean();
    }
}

/// Starts `interp -c code` as [`TARGET_UID`] (inside its chroot), stdin and stdout piped,
/// with `extra` arguments before `-c` and `env` set.
fn start_as_user(interp: &Interpreter, extra: &[&str], env: &[(&str, &str)], code: &str) -> Target {
    let mut command = interp.command();
    // SAFETY: setgroups, setgid and setuid are async-signal-safe; this closure runs after the
    // chroot one `Interpreter::command` registered.
    unsafe {
        command.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(TARGET_UID) != 0
                || libc::setuid(TARGET_UID) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .args(extra)
        .args(["-c", code])
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the interpreter");
    let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    Target { child, stdout }
}

/// A target that prints `ready`, loops in Python until the marker or the stop file shows up
/// (or 60 s pass), loops on a little longer, prints `done` and exits 0.
fn looping_target(files: &Files) -> String {
    format!(
        "import os, time\n\
         print('ready', flush=True)\n\
         deadline = time.monotonic() + 60\n\
         while time.monotonic() < deadline and not (os.path.exists({marker:?}) or os.path.exists({stop:?})):\n    \
             sum(range(100))\n    \
             time.sleep(0.002)\n\
         for _ in range(50):\n    \
             sum(range(100))\n    \
             time.sleep(0.002)\n\
         print('done', flush=True)\n",
        marker = files.marker.display().to_string(),
        stop = files.stop.display().to_string(),
    )
}

/// Waits for `done` and a clean exit.
fn finishes_normally(mut target: Target) {
    target.wait_for_line("done", READY);
    let status = target.child.wait().expect("waiting for the target");
    assert!(
        status.success(),
        "the target did not exit normally: {status}"
    );
}

fn placed_loader(pid: i32, files: &Files) -> Placement {
    let placement = Placement::create(pid, &[FileSpec::data("loader.py", &files.loader())])
        .expect("placing the loader");
    placement.verify().expect("the loader is as placed");
    placement
}

fn runs_a_placed_script(label: &str) {
    let Some(interp) = common::interpreter_or_skip(label) else {
        return;
    };
    let files = Files::new(label);
    let mut target = start_as_user(&interp, &[], &[], &looping_target(&files));
    target.wait_for_line("ready", READY);
    let pid = target.pid();
    let spy = PythonSpy::attach(pid, &SpyOptions::default()).expect("attaching");
    let placement = placed_loader(pid, &files);
    let loader = placement.file("loader.py").expect("placed");
    let options = RemoteExecOptions {
        thread: ExecThread::Main,
        wait: Some(Duration::from_secs(10)),
    };
    let outcome = remote_exec(&spy, &loader.target_path, &options).expect("remote exec");
    let ExecOutcome::Taken { thread, after } = outcome else {
        panic!("waited for, so taken or an error: {outcome:?}");
    };
    eprintln!("{label}: the main thread took the request after {after:?}");
    assert_eq!(thread, pid as u64, "the main thread's native id is the pid");
    finishes_normally(target);
    let marker = std::fs::read_to_string(&files.marker).expect("the script wrote its marker");
    assert_eq!(
        marker,
        format!("{pid} {pid}"),
        "run by the target's main thread"
    );
}

#[test]
fn a_placed_script_runs_in_a_target_looping_in_python_sid3_14() {
    runs_a_placed_script("sid3.14");
}

#[test]
fn a_placed_script_runs_in_a_target_looping_in_python_sid3_15() {
    runs_a_placed_script("sid3.15");
}

/// Starts `label` with remote debugging disabled by `args` or `env`: the request is refused
/// with the error that says so, and the target runs on and exits normally without the script.
fn refused_and_unharmed(label: &str, args: &[&str], env: &[(&str, &str)]) {
    let Some(interp) = common::interpreter_or_skip(label) else {
        return;
    };
    let files = Files::new(&format!("disabled-{label}"));
    let mut target = start_as_user(&interp, args, env, &looping_target(&files));
    target.wait_for_line("ready", READY);
    let pid = target.pid();
    let spy = PythonSpy::attach(pid, &SpyOptions::default()).expect("attaching");
    let placement = placed_loader(pid, &files);
    let loader = placement.file("loader.py").expect("placed");
    let options = RemoteExecOptions {
        thread: ExecThread::Main,
        wait: Some(Duration::from_secs(2)),
    };
    let err = remote_exec(&spy, &loader.target_path, &options).expect_err("refused");
    assert!(
        matches!(err, RemoteExecError::Disabled { pid: p } if p == pid),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("started with remote debugging disabled"),
        "{err}"
    );
    std::fs::write(&files.stop, b"").expect("asking the target to stop");
    finishes_normally(target);
    assert!(
        !files.marker.exists(),
        "{label}: the script must not have run"
    );
}

#[test]
fn a_target_started_with_remote_debugging_disabled_is_refused_and_unharmed() {
    refused_and_unharmed("sid3.14", &[], &[("PYTHON_DISABLE_REMOTE_DEBUG", "1")]);
    refused_and_unharmed("sid3.15", &["-X", "disable-remote-debug"], &[]);
}

#[test]
fn a_request_to_a_thread_blocked_in_a_syscall_is_withdrawn_and_never_runs() {
    let Some(interp) = common::interpreter_or_skip("sid3.14") else {
        return;
    };
    let files = Files::new("blocked");
    // The main thread blocks reading stdin, then loops in Python for a while (where a request
    // still pending would run), then exits.
    let code = "import os, time\n\
                print('ready', flush=True)\n\
                os.read(0, 1)\n\
                for _ in range(100):\n    \
                    sum(range(100))\n    \
                    time.sleep(0.002)\n\
                print('done', flush=True)\n";
    let mut target = start_as_user(&interp, &[], &[], code);
    target.wait_for_line("ready", READY);
    let pid = target.pid();
    let spy = PythonSpy::attach(pid, &SpyOptions::default()).expect("attaching");
    let placement = placed_loader(pid, &files);
    let loader = placement.file("loader.py").expect("placed");
    let options = RemoteExecOptions {
        thread: ExecThread::Main,
        wait: Some(Duration::from_millis(500)),
    };
    let err = remote_exec(&spy, &loader.target_path, &options).expect_err("not taken");
    eprintln!("{err}");
    match &err {
        RemoteExecError::NotTaken { doing, outcome, .. } => {
            assert!(doing.contains("blocked in the kernel"), "{doing}");
            assert!(
                outcome.contains("withdrawn and the script will not run"),
                "{outcome}"
            );
        }
        other => panic!("expected NotTaken, got {other}"),
    }
    let mut stdin = target.child.stdin.take().expect("piped stdin");
    stdin.write_all(b"x").expect("unblocking the target");
    drop(stdin);
    finishes_normally(target);
    assert!(!files.marker.exists(), "a withdrawn request must not run");
}

#[test]
fn a_script_runs_in_a_chosen_thread_while_the_main_thread_is_blocked() {
    let Some(interp) = common::interpreter_or_skip("sid3.14") else {
        return;
    };
    let files = Files::new("worker");
    // The main thread blocks reading stdin (as a server's waits in accept or select) while a
    // worker thread loops in Python until the marker shows up.
    let code = format!(
        "import os, threading, time\n\
         def work():\n    \
             while not os.path.exists({marker:?}):\n        \
                 sum(range(100))\n        \
                 time.sleep(0.002)\n    \
             print('done', flush=True)\n\
         worker = threading.Thread(target=work)\n\
         worker.start()\n\
         print(worker.native_id, flush=True)\n\
         print('ready', flush=True)\n\
         os.read(0, 1)\n\
         worker.join()\n",
        marker = files.marker.display().to_string()
    );
    let mut target = start_as_user(&interp, &[], &[], &code);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut target.stdout, &mut line).expect("the worker's id");
    let worker: u64 = line.trim().parse().expect("a native thread id");
    target.wait_for_line("ready", READY);
    let pid = target.pid();
    let spy = PythonSpy::attach(pid, &SpyOptions::default()).expect("attaching");
    let placement = placed_loader(pid, &files);
    let loader = placement.file("loader.py").expect("placed");
    let no_such_thread = RemoteExecOptions {
        thread: ExecThread::Native(u64::from(u32::MAX)),
        wait: None,
    };
    let err = remote_exec(&spy, &loader.target_path, &no_such_thread).expect_err("no thread");
    assert!(matches!(err, RemoteExecError::NoThread { .. }), "{err}");
    let options = RemoteExecOptions {
        thread: ExecThread::Native(worker),
        wait: Some(Duration::from_secs(10)),
    };
    let outcome = remote_exec(&spy, &loader.target_path, &options).expect("remote exec");
    assert!(
        matches!(outcome, ExecOutcome::Taken { thread, .. } if thread == worker),
        "{outcome:?}"
    );
    target.wait_for_line("done", READY);
    let mut stdin = target.child.stdin.take().expect("piped stdin");
    stdin.write_all(b"x").expect("unblocking the main thread");
    drop(stdin);
    let status = target.child.wait().expect("waiting for the target");
    assert!(
        status.success(),
        "the target did not exit normally: {status}"
    );
    let marker = std::fs::read_to_string(&files.marker).expect("the script wrote its marker");
    assert_eq!(
        marker,
        format!("{pid} {worker}"),
        "run by the worker thread"
    );
}

#[test]
fn versions_before_3_14_are_named_in_the_refusal() {
    for label in ["sid3.13", "3.12"] {
        let Some(interp) = common::interpreter_or_skip(label) else {
            continue;
        };
        let mut target = common::start(&interp, &common::script("sleeper.py"), &[]);
        target.wait_for_line("ready", READY);
        let spy = PythonSpy::attach(target.pid(), &SpyOptions::default()).expect("attaching");
        let err = remote_exec(
            &spy,
            std::path::Path::new("/tmp/unused.py"),
            &RemoteExecOptions::default(),
        )
        .expect_err("refused");
        let minor = label.trim_start_matches("sid");
        assert!(matches!(err, RemoteExecError::Unsupported { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("CPython {minor}")) && text.contains("3.14 or newer"),
            "{text}"
        );
    }
}
