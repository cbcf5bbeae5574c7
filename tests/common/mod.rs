//! Shared by the integration tests: finding real CPython interpreters, starting scripts
//! under them, and waiting for them to be ready. A version named in `PMT_REQUIRE_PYTHONS`
//! (CI sets it) must be present; any other missing version is skipped with a message.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A CPython to test against: a label (`3.11` for pyenv's, `system3.11` for Debian's,
/// `sid3.14` for Debian sid's in the chroot `.ci/sid_chroot.sh` makes) and its executable.
#[derive(Debug, Clone)]
pub struct Interpreter {
    pub label: String,
    /// The executable as the interpreter sees it (inside its root).
    pub path: PathBuf,
    /// The root directory it runs under (`chroot`), for sid's interpreters.
    pub root: Option<PathBuf>,
}

impl Interpreter {
    /// A command that runs this interpreter (inside its chroot for sid's: the chroot shares
    /// the host's `/tmp` and the repository at the same paths, so scripts and temporary files
    /// have one name on both sides, and the pid is the interpreter's own).
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.path);
        if let Some(root) = &self.root {
            let root = std::ffi::CString::new(root.as_os_str().as_encoded_bytes())
                .expect("a root path without NUL");
            let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
            let cwd = std::ffi::CString::new(cwd.as_os_str().as_encoded_bytes())
                .expect("a working directory without NUL");
            use std::os::unix::process::CommandExt;
            // SAFETY: chroot(2) and chdir(2) are async-signal-safe and only read the two
            // C strings, which outlive the closure.
            unsafe {
                command.pre_exec(move || {
                    if libc::chroot(root.as_ptr()) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if libc::chdir(cwd.as_ptr()) != 0 && libc::chdir(c"/".as_ptr()) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        command
    }

    /// The command line that runs this interpreter, for tools that launch it themselves
    /// (`pmt-sample -- …`).
    pub fn argv(&self) -> Vec<std::ffi::OsString> {
        match &self.root {
            Some(root) => vec![
                "chroot".into(),
                root.clone().into_os_string(),
                self.path.clone().into_os_string(),
            ],
            None => vec![self.path.clone().into_os_string()],
        }
    }

    /// The executable's path on the host (through the chroot for sid's).
    pub fn host_path(&self) -> PathBuf {
        match &self.root {
            Some(root) => root.join(self.path.strip_prefix("/").unwrap_or(&self.path)),
            None => self.path.clone(),
        }
    }
}

/// The Debian sid chroot (`PMT_SID_ROOT`, default `/srv/pmt-sid`), made by `.ci/sid_chroot.sh`.
pub fn sid_root() -> PathBuf {
    PathBuf::from(std::env::var("PMT_SID_ROOT").unwrap_or_else(|_| "/srv/pmt-sid".into()))
}

/// Mounts into the sid chroot, once per test process and idempotently across processes:
/// `/proc`, `/dev`, the host's `/tmp` and this repository at their own paths.
fn prepare_sid_root(root: &Path) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
        let mounted = |p: &Path| {
            Command::new("mountpoint")
                .arg("-q")
                .arg(p)
                .status()
                .is_ok_and(|s| s.success())
        };
        let mount = |args: &[&std::ffi::OsStr], at: &Path| {
            std::fs::create_dir_all(at).expect("making a mount point in the sid chroot");
            let ok = Command::new("mount")
                .args(args)
                .arg(at)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "mounting {args:?} at {} failed", at.display());
        };
        let proc_at = inside(Path::new("/proc"));
        if !mounted(&proc_at) {
            mount(&["-t".as_ref(), "proc".as_ref(), "proc".as_ref()], &proc_at);
        }
        for dir in [Path::new("/dev"), Path::new("/tmp"), &repo()] {
            let at = inside(dir);
            let covered = dir.starts_with("/tmp") && dir != Path::new("/tmp");
            if covered || same_directory(dir, &at) {
                continue;
            }
            // A bind mount left by an earlier run whose directory was since deleted and made
            // anew (a fresh clone at the same path) shows the old, empty directory: replace it.
            if mounted(&at) {
                let _ = Command::new("umount").arg("-l").arg(&at).status();
            }
            mount(&["--bind".as_ref(), dir.as_os_str()], &at);
            assert!(
                same_directory(dir, &at),
                "{} is not {} after mounting it",
                at.display(),
                dir.display()
            );
        }
    });
}

/// Whether two paths name the same directory (the same device and inode).
fn same_directory(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn pyenv_root() -> PathBuf {
    if let Ok(root) = std::env::var("PYENV_ROOT") {
        return PathBuf::from(root);
    }
    if let Ok(out) = Command::new("pyenv").arg("root").output()
        && out.status.success()
    {
        return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    }
    PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".pyenv")
}

/// Finds the interpreter for `label` (`3.6` … `3.13`, `system3.11`, or `sid3.13` … `sid3.15`).
pub fn find(label: &str) -> Option<Interpreter> {
    if let Some(minor) = label.strip_prefix("system") {
        let path = PathBuf::from(format!("/usr/bin/python{minor}"));
        return path.exists().then(|| Interpreter {
            label: label.to_string(),
            path,
            root: None,
        });
    }
    if let Some(minor) = label.strip_prefix("sid") {
        let root = sid_root();
        let interp = Interpreter {
            label: label.to_string(),
            path: PathBuf::from(format!("/usr/bin/python{minor}")),
            root: Some(root.clone()),
        };
        if !interp.host_path().exists() {
            return None;
        }
        prepare_sid_root(&root);
        return Some(interp);
    }
    let versions = pyenv_root().join("versions");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&versions)
        .ok()?
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.starts_with(&format!("{label}."))
                && name[label.len() + 1..].chars().all(|c| c.is_ascii_digit())
        })
        .map(|e| e.path().join("bin").join(format!("python{label}")))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop().map(|path| Interpreter {
        label: label.to_string(),
        path,
        root: None,
    })
}

/// Whether CI requires `label` to be present.
pub fn required(label: &str) -> bool {
    std::env::var("PMT_REQUIRE_PYTHONS")
        .unwrap_or_default()
        .split_whitespace()
        .any(|l| l == label)
}

/// The interpreter for `label`, or `None` after printing why the test is skipped. Panics if
/// the version is required but missing.
pub fn interpreter_or_skip(label: &str) -> Option<Interpreter> {
    match find(label) {
        Some(interp) => Some(interp),
        None if required(label) => {
            panic!("CPython {label} is required by PMT_REQUIRE_PYTHONS but was not found")
        }
        None => {
            eprintln!("skipped: CPython {label} is not installed here");
            None
        }
    }
}

/// Every label the tests know.
pub const LABELS: &[&str] = &[
    "3.6",
    "3.7",
    "3.8",
    "3.9",
    "3.10",
    "3.11",
    "3.12",
    "3.13",
    "system3.11",
    "sid3.13",
    "sid3.14",
    "sid3.15",
];

/// A child process that is killed when dropped.
pub struct Target {
    pub child: Child,
    pub stdout: BufReader<std::process::ChildStdout>,
}

impl Target {
    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Reads stdout lines until `pick` takes one (panics after `timeout`, or when the target
    /// exits first, naming `what` it waited for).
    fn read_until<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .stdout
                .read_line(&mut line)
                .expect("reading the target's stdout");
            assert!(n > 0, "target exited before printing {what:?}");
            if let Some(found) = pick(line.trim_end()) {
                return found;
            }
            assert!(
                start.elapsed() < timeout,
                "target did not print {what:?} in time"
            );
        }
    }

    /// Reads stdout lines until one starts with `prefix` and returns the JSON after it
    /// (panics after `timeout`).
    pub fn wait_for_json(&mut self, prefix: &str, timeout: Duration) -> serde_json::Value {
        self.read_until(prefix, timeout, |line| {
            let json = line.strip_prefix(prefix)?;
            Some(serde_json::from_str(json).expect("JSON after the prefix"))
        })
    }

    /// Reads stdout lines until one equals `marker` (panics after `timeout`).
    pub fn wait_for_line(&mut self, marker: &str, timeout: Duration) {
        self.read_until(marker, timeout, |line| (line == marker).then_some(()))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `interp` on `script` with `args`, stdout piped.
pub fn start(interp: &Interpreter, script: &Path, args: &[&str]) -> Target {
    let mut child = interp
        .command()
        .arg(script)
        .args(args)
        .env("PYTHONIOENCODING", "utf-8")
        .env("LC_ALL", "C.UTF-8")
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the interpreter");
    let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    Target { child, stdout }
}

/// Starts `interp -c code`, stdout piped.
pub fn start_code(interp: &Interpreter, code: &str) -> Target {
    let mut child = interp
        .command()
        .args(["-c", code])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the interpreter");
    let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    Target { child, stdout }
}

/// Path of a file under `tests/scripts/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("scripts")
        .join(name)
}

/// The `pmt` binary built for this test run.
pub fn pmt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pmt"))
}

/// The `pmt-sample` binary built for this test run.
pub fn sampler() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pmt-sample"))
}

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Live sampling tests run one at a time: attribution is charged per sampling interval, and a
/// machine crowded by parallel workloads delays ticks and blurs it.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds the one-at-a-time lock for a live sampling test.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `command`, shows its stderr in the test's output, and returns what it did.
pub fn run(mut command: Command) -> Output {
    let output = command.output().expect("running the command");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    output
}

/// A folded file as (frames root first, weight).
pub fn read_folded(path: &Path) -> Vec<(Vec<String>, u64)> {
    let text = std::fs::read_to_string(path).expect("reading the folded output");
    text.lines()
        .map(|line| {
            let (stack, weight) = line.rsplit_once(' ').expect("`stack weight` line");
            let weight = weight.parse().expect("integer weight");
            (stack.split(';').map(str::to_string).collect(), weight)
        })
        .collect()
}

/// Loaded BPF programs named like ours (`pmt_...`).
pub fn pmt_programs() -> usize {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("pmt_")))
        .count()
}

/// Polls `check` for up to five seconds.
pub fn eventually(check: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// The venv of PyPI packages (`tests/packages/setup_venvs.sh`) for `label` (`3.12`:
/// `target/pkg-venv-3.12`; `sid3.14`: `/opt/pmt-pkgs-3.14` in the chroot) as an interpreter,
/// or `None` after saying why the test is skipped; panics when `PMT_REQUIRE_PYTHONS` requires `label` and the venv or one of
/// `packages` is missing.
pub fn package_venv_or_skip(label: &str, packages: &[&str]) -> Option<Interpreter> {
    let interp = interpreter_or_skip(label)?;
    let minor = label.trim_start_matches("sid");
    let dir = match interp.root {
        Some(_) => PathBuf::from(format!("/opt/pmt-pkgs-{minor}")),
        None => repo().join(format!("target/pkg-venv-{minor}")),
    };
    let venv = Interpreter {
        label: label.to_string(),
        path: dir.join("bin/python"),
        root: interp.root.clone(),
    };
    let host_dir = venv
        .host_path()
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let site = host_dir.join(format!("lib/python{minor}/site-packages"));
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !site.join(p).is_dir())
        .collect();
    // Its python may be a link that only resolves inside the chroot: the venv's own file.
    let made = host_dir.join("pyvenv.cfg").is_file();
    if made && missing.is_empty() {
        return Some(venv);
    }
    let why = format!(
        "{label}: the venv {} with {} is missing{}: make it with `bash tests/packages/setup_venvs.sh` (tests/run.sh runs it)",
        host_dir.display(),
        packages.join(", "),
        if made {
            format!(" (it lacks {})", missing.join(", "))
        } else {
            String::new()
        },
    );
    if required(label) {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
    None
}

/// Runs `pmt heap ARGS --json FILE`: the JSON and the text report; panics, naming `label`,
/// when it fails.
pub fn pmt_heap_json(label: &str, args: &[&str]) -> (serde_json::Value, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("heap.json");
    let out = pmt()
        .arg("heap")
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("running pmt heap");
    assert!(
        out.status.success(),
        "{label}: pmt heap {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let value = serde_json::from_slice(&std::fs::read(&json).expect("reading the JSON"))
        .expect("the JSON parses");
    (value, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The holder whose retention path is `path` in a JSON list of holders (a snapshot's, the
/// growth's or those watched).
pub fn holder<'a>(holders: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    holders.as_array()?.iter().find(|h| h["path"] == path)
}

/// The line numbers (from 1) of `file`'s lines that start with `text` (after indentation).
pub fn lines_starting(file: &Path, text: &str) -> Vec<usize> {
    let source = std::fs::read_to_string(file).expect("reading the source");
    source
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with(text))
        .map(|(i, _)| i + 1)
        .collect()
}
