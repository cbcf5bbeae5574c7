//! `pmt top` as a person uses it: in an 80x24 terminal (tmux), attached to a real CPython
//! process where one thread keeps growing memory and another burns CPU. Within 2 s of starting,
//! the growing function is the first row; `s` re-sorts; `q` exits 0 and the requested files
//! are written.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A private tmux server for one test, killed when dropped.
struct Tmux {
    socket: String,
    session: String,
}

impl Tmux {
    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.socket]);
        command
    }

    /// Starts `shell_command` in a detached 80x24 session.
    fn start(shell_command: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("pmt-top-test-{}", std::process::id()),
            session: "top".to_string(),
        };
        let status = tmux
            .command()
            .args([
                "new-session",
                "-d",
                "-s",
                &tmux.session,
                "-x",
                "80",
                "-y",
                "24",
            ])
            .arg(shell_command)
            .status()
            .expect("tmux is needed for this test (.ci/setup installs it)");
        assert!(status.success(), "tmux new-session failed");
        tmux
    }

    /// The screen's text now.
    fn screen(&self) -> String {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        let status = self
            .command()
            .args(["send-keys", "-t", &self.session, keys])
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

/// The first table row under the header line, if the table is on screen.
fn first_row(screen: &str) -> Option<&str> {
    let mut lines = screen.lines();
    lines.find(|l| l.contains("function (file:line)"))?;
    lines.next().filter(|l| !l.trim().is_empty())
}

/// Waits until `done(screen)` holds, up to `timeout`; returns the last screen and whether it held.
fn wait_screen(tmux: &Tmux, timeout: Duration, done: impl Fn(&str) -> bool) -> (String, bool) {
    let start = Instant::now();
    loop {
        let screen = tmux.screen();
        if done(&screen) {
            return (screen, true);
        }
        if start.elapsed() >= timeout {
            return (screen, false);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_file(path: &Path, timeout: Duration) -> Option<String> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.is_empty()
        {
            return Some(text);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn top_shows_the_growing_function_first_and_writes_outputs_on_q() {
    let _serial = common::serial();
    let Some(interp) = ["3.13", "3.12", "3.11", "system3.11"]
        .into_iter()
        .find_map(common::find)
        .or_else(|| common::interpreter_or_skip("3.12"))
    else {
        return;
    };
    let mut target = common::start(&interp, &common::script("grow_beside_spin.py"), &[]);
    target.wait_for_line("ready", Duration::from_secs(10));
    let dir = tempfile::tempdir().expect("temp dir");
    let flame = dir.path().join("top.svg");
    let collapsed = dir.path().join("top.folded");
    let exit = dir.path().join("exit");
    let shell = format!(
        "{} top --pid {} --flame {} --collapsed {}; echo $? > {}; sleep 30",
        env!("CARGO_BIN_EXE_pmt"),
        target.pid(),
        flame.display(),
        collapsed.display(),
        exit.display()
    );
    let started = Instant::now();
    let tmux = Tmux::start(&shell);
    let (screen, shown) = wait_screen(&tmux, Duration::from_secs(2), |s| {
        first_row(s).is_some_and(|row| row.contains("keep_growing"))
    });
    let took = started.elapsed();
    assert!(
        shown,
        "keep_growing was not the first row within 2 s:\n{screen}"
    );
    eprintln!("keep_growing first after {took:?}:\n{screen}");
    assert!(
        screen.lines().all(|l| l.chars().count() <= 80),
        "fits 80 columns"
    );
    assert!(
        screen.contains("RSS"),
        "the RSS sparkline is there:\n{screen}"
    );

    // `s` cycles growth → held → malloc → cpu: by CPU share the spinning thread's function
    // leads.
    tmux.keys("s");
    let (screen, by_held) = wait_screen(&tmux, Duration::from_secs(3), |s| {
        s.contains("s sort: held")
    });
    assert!(by_held, "s did not switch to sorting by held:\n{screen}");
    tmux.keys("s");
    tmux.keys("s");
    let (screen, by_cpu) = wait_screen(&tmux, Duration::from_secs(3), |s| {
        s.contains("s sort: cpu") && first_row(s).is_some_and(|r| r.contains("spin"))
    });
    assert!(by_cpu, "sorted by cpu, spin is not first:\n{screen}");

    tmux.keys("q");
    let status = wait_file(&exit, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("pmt top did not exit after q:\n{}", tmux.screen()));
    assert_eq!(status.trim(), "0", "exit status:\n{}", tmux.screen());
    let svg = std::fs::read_to_string(&flame).expect("the flamegraph was written");
    assert!(
        svg.contains("keep_growing"),
        "flamegraph names keep_growing"
    );
    let folded = common::read_folded(&collapsed);
    let growing: u64 = folded
        .iter()
        .filter(|(frames, _)| frames.iter().any(|f| f.starts_with("keep_growing ")))
        .map(|(_, w)| w)
        .sum();
    assert!(growing >= 10 << 20, "keep_growing holds {growing} bytes");
}

#[test]
fn top_without_a_terminal_says_so() {
    let output = common::run({
        let mut command = common::pmt();
        command.args(["top", "--pid", "1"]);
        command
    });
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("needs a terminal"), "{stderr}");
}

#[test]
fn top_with_subprocesses_names_each_row_s_process() {
    let _serial = common::serial();
    let Some(interp) = ["3.12", "3.13", "3.11"]
        .into_iter()
        .find_map(common::find)
        .or_else(|| common::interpreter_or_skip("3.12"))
    else {
        return;
    };
    let mut target = common::start(&interp, &common::script("fork_pool.py"), &["8"]);
    target.wait_for_line("READY", Duration::from_secs(10));
    let shell = format!(
        "{} top --subprocesses --sort cpu --pid {}; sleep 30",
        env!("CARGO_BIN_EXE_pmt"),
        target.pid(),
    );
    let tmux = Tmux::start(&shell);
    // Both workers spin in `work`: each has its own row, named by pid and role.
    let (screen, shown) = wait_screen(&tmux, Duration::from_secs(5), |s| {
        let rows: Vec<&str> = s.lines().filter(|l| l.contains(" work (")).collect();
        rows.len() >= 2 && rows.iter().all(|r| r.contains("worker"))
    });
    assert!(shown, "no row per worker process:\n{screen}");
    eprintln!("{screen}");
    assert!(screen.contains("process"), "a process column:\n{screen}");
    assert!(
        screen.lines().all(|l| l.chars().count() <= 80),
        "fits 80 columns:\n{screen}"
    );
    tmux.keys("q");
}

#[test]
fn top_on_a_master_alone_names_its_workers_and_subprocesses() {
    let _serial = common::serial();
    let Some(interp) = ["3.12", "3.13", "3.11"]
        .into_iter()
        .find_map(common::find)
        .or_else(|| common::interpreter_or_skip("3.12"))
    else {
        return;
    };
    let mut target = common::start(&interp, &common::script("fork_pool.py"), &["8"]);
    target.wait_for_line("READY", Duration::from_secs(10));
    let shell = format!(
        "{} top --pid {}; sleep 30",
        env!("CARGO_BIN_EXE_pmt"),
        target.pid(),
    );
    let tmux = Tmux::start(&shell);
    let (screen, shown) = wait_screen(&tmux, Duration::from_secs(5), |s| {
        let text = s.split_whitespace().collect::<Vec<_>>().join(" ");
        text.contains("not sampled")
            && text.contains("(worker 1)")
            && text.contains("(worker 2)")
            && text.contains("--subprocesses")
    });
    assert!(
        shown,
        "the workers and --subprocesses are not named:\n{screen}"
    );
    eprintln!("{screen}");
    assert!(
        screen.lines().all(|l| l.chars().count() <= 80),
        "fits 80 columns:\n{screen}"
    );
    tmux.keys("q");
}
