//! The process a run samples: attached by pid, or launched from a command line
//! ([`crate::attach::child::LaunchedChild`]) and attached once its interpreter is up; a
//! launched one is stopped at the end of the run (we started it, so it does not outlive it).
//!
//! Owns: which process the run is about and the wait for a launched interpreter. Must not
//! touch: sampling or outputs.

use super::RunError;
use crate::attach::child::{LaunchedChild, NotReady};
use crate::python::{PythonSpy, SpyError, SpyOptions};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a launched command is given to become an attachable interpreter with a thread.
const PATIENCE: Duration = Duration::from_secs(10);

/// The process being sampled, and whether we launched it.
#[derive(Debug)]
pub struct Target {
    /// Its pid.
    pub pid: i32,
    /// Its command line.
    pub command: String,
    child: Option<LaunchedChild>,
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

    /// Launches `command` (program first) with `env` added to its environment; with `quiet`,
    /// its standard streams go to `/dev/null` (a full-screen view owns the terminal).
    pub fn launch(
        command: &[String],
        quiet: bool,
        env: &[(String, String)],
    ) -> Result<Target, RunError> {
        let child = LaunchedChild::spawn_with(command, quiet, env)?;
        Ok(Target {
            pid: child.pid(),
            command: child.command().to_string(),
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
        let give_up = Instant::now() + PATIENCE;
        let Some(child) = self.child.as_mut() else {
            return Ok(PythonSpy::attach(self.pid, options)?);
        };
        let attached = child.wait_until_ready(
            PATIENCE,
            stop,
            |pid| PythonSpy::attach(pid, options),
            |err: &SpyError| matches!(err, SpyError::NotPython { .. } | SpyError::Read { .. }),
        );
        match attached {
            Ok(mut spy) => {
                while Instant::now() < give_up && !stop.load(Ordering::Relaxed) {
                    match spy.read_stacks() {
                        Ok(stacks) if !stacks.is_empty() => break,
                        Err(err) if err.process_exited() => break,
                        _ => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                Ok(spy)
            }
            Err(NotReady::Exited(status)) => Err(RunError::ExitedBeforeAttach {
                command: self.command.clone(),
                status: status.to_string(),
            }),
            Err(NotReady::Failed(err)) => Err(err.into()),
        }
    }

    /// Reaps a launched command that exited (waiting up to `grace` for one that is exiting),
    /// or stops one still running. Returns a note for the summary; `None` for an attached
    /// process, which is left alone.
    pub fn stop(&mut self, grace: Duration) -> Option<String> {
        let note = self.child.as_mut()?.stop(grace);
        self.child = None;
        Some(note)
    }
}

impl Drop for Target {
    /// A launched command never outlives the run, even one that failed to start.
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}
