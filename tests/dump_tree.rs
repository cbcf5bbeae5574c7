//! `pmt dump --subprocesses` on every CPython here (sid's in their chroot): a shell (not Python) runs a Python parent
//! whose Python child it started; the dump is the tree, the shell marked not Python, each
//! Python process with its own whole stack and its parent.

mod common;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A shell running `parent_child.py` under `interp`, killed with its tree when dropped.
struct Shell {
    child: Child,
}

impl Drop for Shell {
    fn drop(&mut self) {
        // The Python processes go when the shell's process group does.
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) on the process group we created for this test.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn start_shell(interp: &common::Interpreter) -> Shell {
    use std::os::unix::process::CommandExt;
    let script = common::script("parent_child.py");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} '{}'; true",
            interp
                .argv()
                .iter()
                .map(|a| format!("'{}'", a.to_string_lossy()))
                .collect::<Vec<_>>()
                .join(" "),
            script.display()
        ))
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("starting sh");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the parent printed ready");
    assert_eq!(ready.trim(), "ready");
    Shell { child }
}

fn functions(process: &Value) -> Vec<String> {
    process["dump"]["threads"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["frames"].as_array().into_iter().flatten())
        .filter_map(|f| f["function"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn dump_subprocesses_shows_the_tree_on_every_interpreter() {
    let _serial = common::serial();
    for label in common::LABELS {
        let Some(interp) = common::interpreter_or_skip(label) else {
            continue;
        };
        let shell = start_shell(&interp);
        let shell_pid = shell.child.id() as i32;
        let mut command = common::pmt();
        command.args(["dump", "--subprocesses", "--json", "--pid"]);
        command.arg(shell_pid.to_string());
        let output = common::run(command);
        assert!(output.status.success(), "{label}: pmt dump --subprocesses");
        let tree: Value = serde_json::from_slice(&output.stdout).expect("JSON");
        let processes = tree["processes"].as_array().expect("processes");
        assert_eq!(processes.len(), 3, "{label}: sh, parent, child: {tree:#}");
        let (sh, parent, child) = (&processes[0], &processes[1], &processes[2]);
        assert_eq!(sh["pid"], shell_pid, "{label}");
        assert_eq!(sh["python"], false, "{label}");
        assert_eq!(sh["error"], "not Python", "{label}");
        assert_eq!(parent["parent"], shell_pid, "{label}");
        assert_eq!(child["parent"], parent["pid"], "{label}");
        for (process, waits) in [(parent, "parent_waits"), (child, "child_waits")] {
            assert_eq!(process["python"], true, "{label}");
            let found = functions(process);
            assert!(
                found.contains(&waits.to_string()) && found.contains(&"main".to_string()),
                "{label}: {waits} and main in {found:?}"
            );
            assert!(
                process["dump"]["python_version"].as_str().is_some_and(|v| {
                    v.starts_with(label.trim_start_matches("system").trim_start_matches("sid"))
                }),
                "{label}: {}",
                process["dump"]["python_version"]
            );
        }

        let mut text = common::pmt();
        text.args(["dump", "--subprocesses", "--pid"]);
        text.arg(shell_pid.to_string());
        let output = common::run(text);
        assert!(output.status.success());
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            text.starts_with(&format!("Process tree of {shell_pid}:")),
            "{text}"
        );
        assert!(text.contains("[not Python]"), "{text}");
        assert!(text.contains("child_waits"), "{text}");
        assert_eq!(
            text.matches("\nProcess ").count(),
            2,
            "two Python dumps: {text}"
        );
    }
}

#[test]
fn dump_subprocesses_without_python_says_so() {
    let mut sleeper = Command::new("sleep").arg("30").spawn().expect("sleep");
    let mut command = common::pmt();
    command.args(["dump", "--subprocesses", "--pid"]);
    command.arg(sleeper.id().to_string());
    let output = common::run(command);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no Python process in the tree"), "{stderr}");
}
