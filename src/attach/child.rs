//! The one launched-child type: a command pmt starts (`-- CMD`), waited for until its program
//! is ready to read (a launcher may exec Python, an interpreter may still be loading), reaped
//! when it exits, and stopped with a grace period when the run ends first, so it never
//! outlives the run. The only signals pmt sends go to children it started.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a child is given to end after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// Why a command could not be launched.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// No command was given.
    #[error("nothing to launch: give a command after `--`")]
    Empty,
    /// The program could not be started.
    #[error("cannot run {program:?}: {source}; check it is installed and on PATH")]
    Spawn {
        /// The program.
        program: String,
        /// What exec said.
        source: std::io::Error,
    },
}

/// Why waiting for a launched child to become ready ended without it.
#[derive(Debug)]
pub enum NotReady<E> {
    /// It exited first.
    Exited(ExitStatus),
    /// The last attempt's error (not retryable, out of patience, or stopped).
    Failed(E),
}

/// A command started by pmt.
#[derive(Debug)]
pub struct LaunchedChild {
    pid: i32,
    command: String,
    child: Child,
}

impl LaunchedChild {
    /// Starts `argv` (program first), inheriting stdin, stdout and stderr.
    pub fn spawn(argv: &[String]) -> Result<LaunchedChild, LaunchError> {
        LaunchedChild::spawn_with(argv, false, &[])
    }

    /// Starts `argv` with `env` added to pmt's environment; with `quiet`, stdin, stdout and
    /// stderr on `/dev/null` (for a full-screen view that owns the terminal).
    pub fn spawn_with(
        argv: &[String],
        quiet: bool,
        env: &[(String, String)],
    ) -> Result<LaunchedChild, LaunchError> {
        let (program, args) = argv.split_first().ok_or(LaunchError::Empty)?;
        let mut command = Command::new(program);
        command.args(args);
        command.envs(env.iter().map(|(k, v)| (k, v)));
        if quiet {
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        }
        let child = command.spawn().map_err(|source| LaunchError::Spawn {
            program: program.clone(),
            source,
        })?;
        Ok(LaunchedChild {
            pid: i32::try_from(child.id()).unwrap_or(i32::MAX),
            command: argv.join(" "),
            child,
        })
    }

    /// Its PID.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Its command line, as given.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// How it ended, if it has (reaping it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Calls `attempt` with the PID until it succeeds, the child exits, `retryable` says an
    /// error is final, `patience` runs out or `stop` is raised.
    pub fn wait_until_ready<T, E>(
        &mut self,
        patience: Duration,
        stop: &AtomicBool,
        mut attempt: impl FnMut(i32) -> Result<T, E>,
        retryable: impl Fn(&E) -> bool,
    ) -> Result<T, NotReady<E>> {
        let give_up = Instant::now() + patience;
        loop {
            let err = match attempt(self.pid) {
                Ok(ready) => return Ok(ready),
                Err(err) => err,
            };
            if let Some(status) = self.exited() {
                return Err(NotReady::Exited(status));
            }
            if !retryable(&err) || Instant::now() >= give_up || stop.load(Ordering::Relaxed) {
                return Err(NotReady::Failed(err));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for it to end.
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait()
    }

    /// Reaps it if it has ended (waiting up to `grace` for one that is ending), or else stops
    /// it: SIGTERM, then SIGKILL after [`TERM_GRACE`]. Says what happened.
    pub fn stop(&mut self, grace: Duration) -> String {
        let ending = Instant::now() + grace;
        loop {
            if let Some(status) = self.exited() {
                return format!("{} exited ({status})", self.command);
            }
            if Instant::now() >= ending {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: kill(2) on the pid of our own unreaped child cannot hit another process.
        unsafe {
            libc::kill(self.pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + TERM_GRACE;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return format!("stopped {} with SIGTERM ({status})", self.command);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Killing and reaping can only fail if the child is already gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
        format!("killed {} (it ignored SIGTERM)", self.command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launches_waits_and_stops() {
        let argv = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let mut quick = LaunchedChild::spawn(&argv(&["true"])).expect("spawn");
        assert!(quick.stop(Duration::from_secs(5)).contains("exited"));
        let mut slow = LaunchedChild::spawn(&argv(&["sleep", "30"])).expect("spawn");
        let stop = AtomicBool::new(false);
        let ready = slow.wait_until_ready(
            Duration::from_millis(100),
            &stop,
            |_| Err::<(), _>("not yet"),
            |_| true,
        );
        assert!(matches!(ready, Err(NotReady::Failed("not yet"))));
        assert!(slow.stop(Duration::ZERO).contains("SIGTERM"));
        assert!(matches!(
            LaunchedChild::spawn(&argv(&["/nonexistent/program"])),
            Err(LaunchError::Spawn { .. })
        ));
        assert!(matches!(LaunchedChild::spawn(&[]), Err(LaunchError::Empty)));
    }
}
