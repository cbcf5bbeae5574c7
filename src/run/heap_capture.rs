//! Gets the allocation hook (`memory::heap_hook`, SPEC §2.5) into a run's targets: the
//! private directory that holds the library and its loader, how a launched interpreter loads
//! it at start-up (`sitecustomize` through `PYTHONPATH`, undone before the program runs), and
//! the layout each process's hook walks its frames with (written once pmt has attached, so the
//! hook only ever walks with offsets pmt checked on that very process).
//!
//! Owns: the loader's text, the directory's contents, the environment of a launched command.
//! Must not touch: how the hook samples, how its state is read or charged.

use std::path::{Path, PathBuf};

use crate::attach::placement::{FileSpec, Placement, PlacementError};
use crate::memory::heap_hook::{self, HookLayout, LIBRARY, LIBRARY_NAME};
use crate::python::PythonSpy;
use crate::python::remote_exec::{ExecThread, RemoteExecError, RemoteExecOptions, remote_exec};
use std::time::Duration;

/// The default mean bytes between two allocation samples of a thread.
pub const DEFAULT_SAMPLE_BYTES: u64 = 256 * 1024;

/// How long a launched interpreter waits at start-up for pmt to hand over its layout.
const LAUNCH_WAIT_S: f64 = 5.0;

/// Why the hook cannot be prepared.
#[derive(Debug, thiserror::Error)]
pub enum HeapHookError {
    /// The private directory or its files could not be written.
    #[error("cannot prepare the allocation hook in {path}: {source}")]
    Write {
        /// Where.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The files could not be placed where the running target can read them.
    #[error("cannot place the allocation hook for process {pid}: {source}")]
    Placement {
        /// The target.
        pid: i32,
        /// What failed.
        source: PlacementError,
    },
    /// The running target did not run the loader.
    #[error("the allocation hook was not loaded into process {pid}: {source}")]
    RemoteExec {
        /// The target.
        pid: i32,
        /// What failed.
        source: RemoteExecError,
    },
    /// The target's CPython cannot be asked to load it.
    #[error(
        "no heap view when attaching to CPython {version} (process {pid}): the allocation hook is loaded into a running interpreter from 3.14 on (PEP 768); launch the program under pmt-sample (pmt-sample -- CMD) for the heap view; memory is charged by rss"
    )]
    TooOld {
        /// The target.
        pid: i32,
        /// Its version.
        version: String,
    },
}

/// How the hook samples, as a run asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookOptions {
    /// Mean bytes between two sampled allocations of a thread.
    pub sample_bytes: u64,
    /// Follow objects recycled through CPython's free lists (3.13+, a reference tracer).
    pub free_lists: bool,
}

impl HookOptions {
    /// The options word the hook's install takes.
    fn flags(self) -> u32 {
        if self.free_lists {
            heap_hook::OPT_FREE_LISTS
        } else {
            0
        }
    }
}

/// The hook's files, placed for one run, and what a loader must be told.
#[derive(Debug)]
pub struct HeapLoader {
    /// The directory on pmt's side.
    dir: PathBuf,
    /// How the hook samples.
    hook: HookOptions,
    /// Whether launched children load the hook too (`--subprocesses`).
    children: bool,
}

/// The hex SHA-256 of the library, which the loader checks before loading it.
fn library_digest() -> String {
    use sha2::Digest;
    sha2::Sha256::digest(LIBRARY)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The loader: imported as `sitecustomize` by a launched interpreter (it takes itself out of
/// `sys.path` and runs the environment's own `sitecustomize`, if there is one, in its place), it
/// waits for the layout pmt writes for this process, checks the library's digest on an open
/// descriptor, loads that very file and installs the hook. It never raises.
fn loader_text(dir: &str, hook: HookOptions, owner: u32, wait_s: f64, launch: bool) -> String {
    format!(
        r#"# Written by pymemtrace's pmt for one run: loads its allocation-sampling hook.
def {function}(dir={dir:?}, digest={digest:?}, sample_bytes={sample_bytes}, owner={owner},
                   options={options}, wait_s={wait_s}, launch={launch}):
    import os
    import sys
    if launch:
        # Imported as sitecustomize through PYTHONPATH: leave no trace of that.
        while dir in sys.path:
            sys.path.remove(dir)
        if os.environ.get("PMT_HEAP_CHILDREN") != "1":
            old = os.environ.pop("PMT_HEAP_OLD_PYTHONPATH", None)
            if old is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = old
        # The environment's own sitecustomize, if any, runs as it would have.
        import importlib.machinery
        import importlib.util
        spec = importlib.machinery.PathFinder.find_spec("sitecustomize", sys.path)
        if spec is not None and spec.loader is not None:
            module = importlib.util.module_from_spec(spec)
            sys.modules["sitecustomize"] = module
            spec.loader.exec_module(module)
        if sys.version_info < (3, 8):
            return  # the hook is for 3.8+
        if os.environ.get("PMT_HEAP_CHILDREN") != "1" and os.getppid() != owner:
            return  # a grandchild (under a shell) pmt does not follow: no layout will come
    import time
    layout_path = os.path.join(dir, "layout.%d" % os.getpid())
    deadline = time.monotonic() + wait_s
    while not os.path.exists(layout_path):
        if time.monotonic() > deadline:
            return
        time.sleep(0.002)
    with open(layout_path, "rb") as f:
        layout = f.read()
    import ctypes
    import hashlib
    lib = getattr(sys, "_pmt_heap_hook", None)  # loaded by an earlier run: installed again
    if lib is not None:
        if getattr(sys, "_pmt_heap_hook_digest", None) == digest:
            lib.pmt_heap_install(layout, len(layout), sample_bytes, owner, options)
        return  # else another pmt build's: its layout is not this one's, and two hooks do not mix
    fd = os.open(os.path.join(dir, "{library}"), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        if hashlib.sha256(b"".join(chunks)).hexdigest() != digest:
            return
        lib = ctypes.PyDLL("/proc/self/fd/%d" % fd)
    finally:
        os.close(fd)
    install = lib.pmt_heap_install
    install.restype = ctypes.c_int
    install.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64, ctypes.c_uint32,
                        ctypes.c_uint32]
    sys._pmt_heap_hook = lib
    sys._pmt_heap_hook_digest = digest
    install(layout, len(layout), sample_bytes, owner, options)


try:
    {function}()
except Exception:
    pass
del {function}
"#,
        digest = library_digest(),
        library = LIBRARY_NAME,
        function = heap_hook::LOADER_FUNCTION,
        launch = if launch { "True" } else { "False" },
        sample_bytes = hook.sample_bytes,
        options = hook.flags(),
    )
}

fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> HeapHookError + '_ {
    move |source| HeapHookError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to a new file `path` with `mode`, failing if anything is there.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), HeapHookError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(write_error(path))?;
    file.write_all(bytes).map_err(write_error(path))
}

impl HeapLoader {
    /// Places the hook and its loader for a command pmt launches: a fresh directory only its
    /// owner can enter (the launched command runs as pmt does).
    pub fn for_launch(hook: HookOptions, children: bool) -> Result<HeapLoader, HeapHookError> {
        let base = std::env::temp_dir();
        let dir = loop {
            let name = format!(
                "pmt-heap-{}-{:08x}",
                std::process::id(),
                rand_word() & 0xffff_ffff
            );
            let dir = base.join(name);
            use std::os::unix::fs::DirBuilderExt;
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(write_error(&dir)(e)),
            }
        };
        let loader = HeapLoader {
            dir,
            hook,
            children,
        };
        let dir_text = loader.dir.to_string_lossy().to_string();
        write_new(&loader.dir.join(LIBRARY_NAME), LIBRARY, 0o500)?;
        let text = loader_text(&dir_text, hook, std::process::id(), LAUNCH_WAIT_S, true);
        write_new(&loader.dir.join("sitecustomize.py"), text.as_bytes(), 0o400)?;
        Ok(loader)
    }

    /// The environment a launched command gets so that its interpreters load the loader.
    pub fn launch_environment(&self) -> Vec<(String, String)> {
        let dir = self.dir.to_string_lossy().to_string();
        let mut env = Vec::new();
        match std::env::var("PYTHONPATH") {
            Ok(old) if !old.is_empty() => {
                env.push(("PYTHONPATH".into(), format!("{dir}:{old}")));
                env.push(("PMT_HEAP_OLD_PYTHONPATH".into(), old));
            }
            _ => env.push(("PYTHONPATH".into(), dir)),
        }
        if self.children {
            env.push(("PMT_HEAP_CHILDREN".into(), "1".into()));
        }
        env
    }

    /// How the hook samples.
    pub fn hook_options(&self) -> HookOptions {
        self.hook
    }

    /// Hands process `pid` (attached as `spy`) its walk layout, which its loader waits for.
    pub fn hand_over_layout(&self, pid: i32, spy: &PythonSpy) -> Result<(), HeapHookError> {
        let bytes = layout_of(spy);
        let name = format!("layout.{pid}");
        let partial = self.dir.join(format!(".{name}.partial"));
        let _ = std::fs::remove_file(&partial);
        write_new(&partial, &bytes, 0o400)?;
        let path = self.dir.join(&name);
        std::fs::rename(&partial, &path).map_err(write_error(&path))
    }
}

/// The layout of `spy`'s interpreter as its hook takes it.
fn layout_of(spy: &PythonSpy) -> Vec<u8> {
    let layout: HookLayout = heap_hook::hook_layout(&super::kernel_capture::bpf_layout(spy));
    heap_hook::layout_bytes(&layout)
}

/// How long a thread of a running target is given to take the request to run the loader.
const MAIN_THREAD_WAIT: Duration = Duration::from_millis(1000);
const OTHER_THREAD_WAIT: Duration = Duration::from_millis(300);

/// Loads the hook into the running interpreter of `spy` (CPython 3.14+) through its remote
/// execution protocol (PEP 768): the library and the layout are placed in a private directory
/// of the target's user inside its own root, the loader (which checks the library's digest on
/// the descriptor it loads) in another, and a thread that runs Python code is asked to run it
/// (the main thread first, then the others). The placements must be kept until the hook is
/// found loaded (the loader opens the files just after taking the request).
pub fn load_into_running(
    spy: &PythonSpy,
    hook: HookOptions,
) -> Result<Vec<Placement>, HeapHookError> {
    let pid = spy.pid();
    if !spy.layout().capabilities().remote_exec {
        return Err(HeapHookError::TooOld {
            pid,
            version: spy.version().to_string(),
        });
    }
    let placement_error = |source| HeapHookError::Placement { pid, source };
    let own_pid = crate::attach::proc_files::read_status(pid)
        .ok()
        .flatten()
        .and_then(|s| s.own_namespace_id())
        .unwrap_or(pid);
    let layout_name = format!("layout.{own_pid}");
    let layout = layout_of(spy);
    let library = Placement::create(
        pid,
        &[
            FileSpec::library(LIBRARY_NAME, LIBRARY),
            FileSpec::data(&layout_name, &layout),
        ],
    )
    .map_err(placement_error)?;
    // The owner check needs pmt's pid as the target sees it: in another PID namespace there is
    // none, and the hook then stays until the process ends (it samples only while read).
    let same_namespace = own_pid == pid;
    let owner = if same_namespace {
        std::process::id()
    } else {
        0
    };
    let dir = library.target_dir().to_string_lossy().to_string();
    let text = loader_text(&dir, hook, owner, 0.0, false);
    let loader = Placement::create(
        pid,
        &[FileSpec::data("pmt_heap_loader.py", text.as_bytes())],
    )
    .map_err(placement_error)?;
    let script = loader
        .file("pmt_heap_loader.py")
        .map(|f| f.target_path.clone())
        .unwrap_or_default();
    library.verify().map_err(placement_error)?;
    loader.verify().map_err(placement_error)?;
    let mut threads = vec![(ExecThread::Main, MAIN_THREAD_WAIT)];
    threads.extend(
        spy.thread_states()
            .iter()
            .map(|&(tid, _)| (ExecThread::Native(u64::from(tid)), OTHER_THREAD_WAIT)),
    );
    let mut last = None;
    for (thread, wait) in threads {
        let options = RemoteExecOptions {
            thread,
            wait: Some(wait),
        };
        match remote_exec(spy, &script, &options) {
            Ok(_) => return Ok(vec![library, loader]),
            Err(err @ RemoteExecError::NotTaken { .. }) => last = Some(err),
            Err(source) => return Err(HeapHookError::RemoteExec { pid, source }),
        }
    }
    match last {
        Some(source) => Err(HeapHookError::RemoteExec { pid, source }),
        None => Ok(vec![library, loader]),
    }
}

impl Drop for HeapLoader {
    /// The directory goes with the run (a loaded library stays mapped in its process).
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A random word for names (not for secrets: the directory is private by its mode).
fn rand_word() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loader_names_its_directory_digest_and_library() {
        let hook = HookOptions {
            sample_bytes: 4096,
            free_lists: false,
        };
        let text = loader_text("/tmp/pmt-heap-1-abc", hook, 42, 1.5, true);
        assert!(text.contains("dir=\"/tmp/pmt-heap-1-abc\""), "{text}");
        assert!(text.contains(&library_digest()));
        assert!(text.contains("sample_bytes=4096, owner=42,\n                   options=0,"));
        let free_lists = HookOptions {
            free_lists: true,
            ..hook
        };
        assert!(loader_text("/tmp/d", free_lists, 42, 1.5, true).contains("options=1,"));
        assert!(text.contains(LIBRARY_NAME));
        assert_eq!(library_digest().len(), 64);
    }
}
