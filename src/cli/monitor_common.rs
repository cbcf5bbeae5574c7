//! What `pmt process` and `pmt tree` share: the target (a PID, or a command to launch and
//! reap), checking output paths before the run starts, and the output file list.

use crate::attach::child::LaunchedChild;
use crate::monitor::probe::ProbeError;
use std::path::{Path, PathBuf};

/// The process to monitor: given by PID, or launched by us (and waited for at the end).
#[derive(Debug)]
pub struct Target {
    /// Its PID.
    pub pid: i32,
    child: Option<LaunchedChild>,
}

impl Target {
    /// From `--pid PID` or `-- CMD ARGS...` (exactly one of them).
    pub fn from_args(pid: Option<i32>, command: &[String]) -> anyhow::Result<Target> {
        match (pid, command.is_empty()) {
            (Some(pid), true) => Ok(Target { pid, child: None }),
            (None, false) => {
                let child = LaunchedChild::spawn(command)?;
                Ok(Target {
                    pid: child.pid(),
                    child: Some(child),
                })
            }
            (Some(_), false) => anyhow::bail!("give either --pid PID or -- CMD, not both"),
            (None, true) => anyhow::bail!("nothing to monitor: give --pid PID or -- CMD [ARGS...]"),
        }
    }

    /// The error to report when monitoring could not start: for a launched command that has
    /// already ended, says so (and reaps it); otherwise `err` itself.
    pub fn explain_early_exit(&mut self, err: anyhow::Error) -> anyhow::Error {
        let gone = matches!(
            err.downcast_ref::<ProbeError>(),
            Some(ProbeError::NoSuchProcess { .. })
        );
        match (gone, self.child.as_mut()) {
            (true, Some(child)) => match child.wait() {
                Ok(status) => {
                    anyhow::anyhow!("the command ended before the first sample ({status})")
                }
                Err(_) => err,
            },
            _ => err,
        }
    }

    /// Waits for a launched command and describes how it ended; `None` for a `--pid` target.
    pub fn finish(&mut self) -> Option<String> {
        Some(match self.child.as_mut()?.wait() {
            Ok(status) => format!("command exited: {status}"),
            Err(err) => format!("command could not be waited for: {err}"),
        })
    }
}

/// Fails early, before monitoring, if `path`'s folder does not exist.
pub fn check_output_path(path: &Path, what: &str) -> anyhow::Result<()> {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        anyhow::bail!(
            "cannot write {what} {}: folder {} does not exist",
            path.display(),
            folder.display()
        );
    }
    Ok(())
}

/// Prints the files written, one per line, as the last lines of the summary.
pub fn print_written(files: &[PathBuf]) {
    for file in files {
        println!("wrote {}", file.display());
    }
}
