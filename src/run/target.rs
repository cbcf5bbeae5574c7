//! The process a run samples: attached by pid, or launched from a command line and attached
//! once its interpreter is up; and, for a launched one, stopping it at the end of the run
//! (we started it, so it does not outlive the run).
//!
//! Owns: launching, the attach-retry while a launcher execs Python, reaping or stopping the
//! child. Must not touch: sampling or outputs.

use super::RunError;
use crate::python::{PythonSpy, SpyError, SpyOptions};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The process being sampled, and whether we launched it.
#[derive(Debug)]
pub struct Target {
    /// Its pid.
    pub pid: i32,
    /// Its command line.
    pub command: String,
    child: Option<Child>,
}

impl Target {
    /// A process that is already running.
    pub fn existing(pid: i32, command: String) -> Target {
        Target {
            pid,
            command,
            child: None,
        }
    }

    /// Launches `command` (program first); with `quiet`, its standard streams go to
    /// `/dev/null` (a full-screen view owns the terminal).
    pub fn launch(command: &[String], quiet: bool) -> Result<Target, RunError> {
        let (program, rest) = command.split_first().ok_or(RunError::NothingToLaunch)?;
        let mut launcher = Command::new(program);
        launcher.args(rest);
        if quiet {
            launcher
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        }
        let child = launcher.spawn().map_err(|source| RunError::Launch {
            program: program.clone(),
            source,
        })?;
        Ok(Target {
            pid: child.id() as i32,
            command: command.join(" "),
            child: Some(child),
        })
    }

    /// Retries attaching to a freshly launched command for a few seconds: it may still be a
    /// launcher (a shell, pyenv's shim) about to exec Python, or an interpreter still loading.
    /// Once attached, waits (within the same few seconds) for the interpreter to have a thread:
    /// a static interpreter's symbols are there from `exec`, before the dynamic loader has
    /// mapped libc, which the malloc counters probe.
    pub fn attach_when_ready(
        &mut self,
        options: &SpyOptions,
        stop: &AtomicBool,
    ) -> Result<PythonSpy, RunError> {
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            let last: SpyError = match PythonSpy::attach(self.pid, options) {
                Ok(mut spy) => {
                    while Instant::now() < give_up && !stop.load(Ordering::Relaxed) {
                        match spy.read_stacks() {
                            Ok(stacks) if !stacks.is_empty() => break,
                            Err(err) if err.process_exited() => break,
                            _ => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                    return Ok(spy);
                }
                Err(err) => err,
            };
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(RunError::ExitedBeforeAttach {
                    command: self.command.clone(),
                    status: status.to_string(),
                });
            }
            let retryable = matches!(last, SpyError::NotPython { .. } | SpyError::Read { .. });
            if !retryable || Instant::now() >= give_up || stop.load(Ordering::Relaxed) {
                return Err(last.into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Reaps a launched command that exited (waiting up to `grace` for one that is exiting),
    /// or stops one still running. Returns a note for the summary; `None` for an attached
    /// process, which is left alone.
    pub fn stop(&mut self, grace: Duration) -> Option<String> {
        let child = self.child.as_mut()?;
        let exiting = Instant::now() + grace;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(format!("{} exited ({status})", self.command));
            }
            if Instant::now() >= exiting {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: kill(2) on the pid of our own unreaped child cannot hit another process.
        unsafe {
            libc::kill(self.pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(format!("stopped {} with SIGTERM ({status})", self.command));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Killing and reaping can only fail if the child is already gone.
        let _ = child.kill();
        let _ = child.wait();
        self.child = None;
        Some(format!("killed {} (it ignored SIGTERM)", self.command))
    }
}

impl Drop for Target {
    /// A launched command never outlives the run, even one that failed to start.
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop(Duration::ZERO);
        }
    }
}
