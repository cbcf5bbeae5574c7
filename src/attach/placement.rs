//! Placing files (a shared library, a loader script) where a target process can read them
//! and no other local user can change them: a fresh private directory inside the target's own
//! filesystem view (`/proc/PID/root/...`, so chroots and containers see it at a path of their
//! own), owned by the target's effective uid/gid, mode 0700, its files 0400 or 0500. Removed
//! again when the [`Placement`] is dropped, unless asked to stay.
//!
//! Everything is done relative to directory descriptors opened with `O_NOFOLLOW`, one path
//! component at a time, so no symlink planted by another user is ever followed, and each
//! directory on the way must be one that only root or the target's user can rename entries
//! in (owned by one of them, and not group/other-writable unless sticky). Owner, mode, size
//! and SHA-256 are checked after creation and again by [`Placement::verify`] just before use.
//!
//! Owns: the private directory and the files in it. Must not touch: anything else in the
//! target's filesystem, and the target's memory (the ptrace-rights check only reads one byte).

use super::memory::{MemoryError, RemoteMemory};
use super::proc_files::read_status;
use super::process::{ProcessError, TargetProcess};
use sha2::{Digest, Sha256};
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use thiserror::Error;

/// Where a private directory may go, as the target sees it, in order of preference: the
/// first that exists, is safe, writable and (for a library) not mounted `noexec` is used.
const BASES: &[&str] = &["/tmp", "/dev/shm", "/var/tmp"];

/// How many fresh names are tried when one is taken.
const NAME_TRIES: usize = 8;

/// Why files could not be placed (or no longer hold what was placed).
#[derive(Debug, Error)]
pub enum PlacementError {
    /// The target cannot be opened, or pmt may not ptrace it (and so will not give it code).
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// No candidate directory in the target's filesystem can hold private files.
    #[error(
        "no directory in process {pid}'s filesystem can hold private files for it ({tried}): give it a writable /tmp{exec} owned by root"
    )]
    NoBase {
        /// The target.
        pid: i32,
        /// Each candidate and why it was passed over.
        tried: String,
        /// ", mounted without noexec," when a library needs to be mapped executable.
        exec: &'static str,
    },
    /// A file name that is not a single plain path component.
    #[error("cannot place a file named {0:?}: a name must be one path component")]
    BadName(String),
    /// A filesystem operation failed.
    #[error("placing files for process {pid}: {what} failed: {source}")]
    Io {
        /// The target.
        pid: i32,
        /// What was being done, with the path.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A placed file or its directory is not what was placed.
    #[error(
        "{path} is not what pmt placed there ({why}): something changed it, so it will not be used"
    )]
    Changed {
        /// The path on the host.
        path: PathBuf,
        /// What differs.
        why: String,
    },
}

/// One file to place: its name in the private directory and its bytes.
#[derive(Debug, Clone, Copy)]
pub struct FileSpec<'a> {
    /// A single path component.
    pub name: &'a str,
    /// The contents.
    pub bytes: &'a [u8],
    /// Mode 0500 (a shared library to be mapped executable) rather than 0400.
    pub executable: bool,
}

impl<'a> FileSpec<'a> {
    /// A shared library: mode 0500, and the directory must be on a mount without `noexec`.
    pub fn library(name: &'a str, bytes: &'a [u8]) -> Self {
        FileSpec {
            name,
            bytes,
            executable: true,
        }
    }

    /// A file only read (a script): mode 0400.
    pub fn data(name: &'a str, bytes: &'a [u8]) -> Self {
        FileSpec {
            name,
            bytes,
            executable: false,
        }
    }

    fn mode(&self) -> u32 {
        if self.executable { 0o500 } else { 0o400 }
    }
}

/// One placed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedFile {
    /// Its name in the directory.
    pub name: String,
    /// Its path for pmt (through `/proc/PID/root`).
    pub host_path: PathBuf,
    /// Its path as the target sees it (to give to the target).
    pub target_path: PathBuf,
    /// SHA-256 of its contents, lower-case hex.
    pub sha256: String,
    mode: u32,
    len: u64,
}

/// A private directory of files placed for one target; removed on drop unless
/// [`Placement::leave_on_drop`] was called.
#[derive(Debug)]
pub struct Placement {
    pid: i32,
    /// The base directory (such as the target's `/tmp`), which holds `dir_name`.
    base: OwnedFd,
    /// The private directory itself.
    dir: OwnedFd,
    dir_name: String,
    host_dir: PathBuf,
    target_dir: PathBuf,
    uid: u32,
    gid: u32,
    files: Vec<PlacedFile>,
    keep: bool,
}

/// SHA-256 of `bytes` as lower-case hex (what a loader compares a library against).
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Placement {
    /// Places `files` in a fresh private directory for process `pid`. Refuses a process that
    /// pmt could not already ptrace (the same right its memory reads need).
    pub fn create(pid: i32, files: &[FileSpec<'_>]) -> Result<Placement, PlacementError> {
        for spec in files {
            if spec.name.is_empty()
                || spec.name == "."
                || spec.name == ".."
                || spec.name.contains(['/', '\0'])
            {
                return Err(PlacementError::BadName(spec.name.to_string()));
            }
        }
        check_ptrace_rights(pid)?;
        let status = read_status(pid)
            .ok()
            .flatten()
            .ok_or(ProcessError::ExitedWhileAttaching(pid))?;
        let (uid, gid) = (status.uid.1, status.gid.1);
        let io = |what: String| move |source| PlacementError::Io { pid, what, source };
        let root = open_at(None, &format!("/proc/{pid}/root"), libc::O_PATH, true)
            .map_err(io(format!("opening /proc/{pid}/root")))?;
        let exec = files.iter().any(|f| f.executable);
        let (base, base_path) = choose_base(pid, &root, uid, exec)?;
        let (dir, dir_name) = make_private_dir(pid, &base, &base_path)?;
        let target_dir = PathBuf::from(&base_path).join(&dir_name);
        let host_dir = PathBuf::from(format!("/proc/{pid}/root{}", target_dir.display()));
        let mut placement = Placement {
            pid,
            base,
            dir,
            dir_name,
            host_dir,
            target_dir,
            uid,
            gid,
            files: Vec::new(),
            keep: false,
        };
        for spec in files {
            placement.write_file(spec)?;
        }
        placement.hand_over()?;
        placement.verify()?;
        Ok(placement)
    }

    /// The directory, for pmt (through `/proc/PID/root`).
    pub fn host_dir(&self) -> &std::path::Path {
        &self.host_dir
    }

    /// The directory as the target sees it.
    pub fn target_dir(&self) -> &std::path::Path {
        &self.target_dir
    }

    /// The placed files, in the order given.
    pub fn files(&self) -> &[PlacedFile] {
        &self.files
    }

    /// The placed file named `name`.
    pub fn file(&self, name: &str) -> Option<&PlacedFile> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Leaves the directory and its files in place when dropped.
    pub fn leave_on_drop(&mut self) {
        self.keep = true;
    }

    /// Checks that the directory is still at its name, owned by the target's user with mode
    /// 0700, and that every file in it is as placed: owner, mode, size and SHA-256. Call it
    /// just before the target is told to use the files.
    pub fn verify(&self) -> Result<(), PlacementError> {
        let changed = |path: &std::path::Path, why: String| PlacementError::Changed {
            path: path.to_path_buf(),
            why,
        };
        let dir_stat =
            fstat(self.dir.as_fd()).map_err(|e| changed(&self.host_dir, e.to_string()))?;
        check_stat(&dir_stat, libc::S_IFDIR, self.uid, self.gid, 0o700)
            .map_err(|why| changed(&self.host_dir, why))?;
        let named = stat_at(self.base.as_fd(), &self.dir_name)
            .map_err(|e| changed(&self.host_dir, e.to_string()))?;
        if (named.st_dev, named.st_ino) != (dir_stat.st_dev, dir_stat.st_ino) {
            return Err(changed(
                &self.host_dir,
                "another directory took its name".into(),
            ));
        }
        for file in &self.files {
            let fd = open_at(Some(self.dir.as_fd()), &file.name, libc::O_RDONLY, false)
                .map_err(|e| changed(&file.host_path, e.to_string()))?;
            let stat = fstat(fd.as_fd()).map_err(|e| changed(&file.host_path, e.to_string()))?;
            check_stat(&stat, libc::S_IFREG, self.uid, self.gid, file.mode)
                .map_err(|why| changed(&file.host_path, why))?;
            if stat.st_size as u64 != file.len || stat.st_nlink != 1 {
                return Err(changed(&file.host_path, "its size or links changed".into()));
            }
            let mut bytes = Vec::with_capacity(file.len as usize);
            File::from(fd)
                .read_to_end(&mut bytes)
                .map_err(|e| changed(&file.host_path, e.to_string()))?;
            if sha256_hex(&bytes) != file.sha256 {
                return Err(changed(&file.host_path, "its contents changed".into()));
            }
        }
        Ok(())
    }

    /// Gives the directory to the target's user, mode 0700. Only now: until here it was
    /// root's alone, and nobody else could look in or add anything.
    fn hand_over(&self) -> Result<(), PlacementError> {
        let dir_fd = self.dir.as_raw_fd();
        // SAFETY: fchown and fchmod only act on a descriptor we own.
        let rc = unsafe {
            if libc::fchown(dir_fd, self.uid, self.gid) != 0 {
                -1
            } else {
                libc::fchmod(dir_fd, 0o700)
            }
        };
        if rc != 0 {
            return Err(PlacementError::Io {
                pid: self.pid,
                what: format!("handing {} to uid {}", self.host_dir.display(), self.uid),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Creates one file (exclusively, without following links), writes it, gives it to the
    /// target's user with its final mode, and checks what was made.
    fn write_file(&mut self, spec: &FileSpec<'_>) -> Result<(), PlacementError> {
        let host_path = self.host_dir.join(spec.name);
        let pid = self.pid;
        let io = |what: &str| {
            let what = format!("{what} {}", host_path.display());
            move |source| PlacementError::Io { pid, what, source }
        };
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
        let fd =
            open_at(Some(self.dir.as_fd()), spec.name, flags, false).map_err(io("creating"))?;
        let mut file = File::from(fd);
        file.write_all(spec.bytes).map_err(io("writing"))?;
        let raw = file.as_raw_fd();
        // SAFETY: fchown and fchmod only act on a descriptor we own.
        let rc = unsafe {
            if libc::fchown(raw, self.uid, self.gid) != 0 {
                -1
            } else {
                libc::fchmod(raw, spec.mode())
            }
        };
        if rc != 0 {
            return Err(io("setting the owner and mode of")(
                std::io::Error::last_os_error(),
            ));
        }
        let stat = fstat(file.as_fd()).map_err(io("checking"))?;
        check_stat(&stat, libc::S_IFREG, self.uid, self.gid, spec.mode()).map_err(|why| {
            PlacementError::Changed {
                path: host_path.clone(),
                why,
            }
        })?;
        self.files.push(PlacedFile {
            name: spec.name.to_string(),
            target_path: self.target_dir.join(spec.name),
            host_path,
            sha256: sha256_hex(spec.bytes),
            mode: spec.mode(),
            len: spec.bytes.len() as u64,
        });
        Ok(())
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        // Best effort, through the descriptors (the target may have exited, taking
        // /proc/PID/root with it): a directory the target's user added files to stays.
        for file in &self.files {
            if let Ok(name) = CString::new(file.name.as_str()) {
                // SAFETY: unlinkat reads a NUL-terminated name relative to a descriptor we own.
                unsafe { libc::unlinkat(self.dir.as_raw_fd(), name.as_ptr(), 0) };
            }
        }
        if let Ok(name) = CString::new(self.dir_name.as_str()) {
            // SAFETY: as above.
            unsafe { libc::unlinkat(self.base.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) };
        }
    }
}

/// Refuses a process that pmt could not already ptrace: it must open as every attach does
/// ([`TargetProcess::open`]: its memory map readable), and its memory must be readable with
/// `process_vm_readv`, which needs the right to ptrace-attach to it.
fn check_ptrace_rights(pid: i32) -> Result<(), ProcessError> {
    let process = TargetProcess::open(pid)?;
    let first = process
        .maps()
        .map_err(ProcessError::while_attaching)?
        .first()
        .map_or(0, |m| m.start);
    match RemoteMemory::new(pid).check_access(first) {
        Ok(()) => Ok(()),
        Err(MemoryError::PermissionDenied) => Err(ProcessError::denied(pid)),
        Err(MemoryError::ProcessGone) => Err(ProcessError::ExitedWhileAttaching(pid)),
        Err(other) => Err(ProcessError::Proc {
            pid,
            message: other.to_string(),
        }),
    }
}

/// The first of [`BASES`] under the target's root that is safe and usable, opened, with its
/// path as the target sees it.
fn choose_base(
    pid: i32,
    root: &OwnedFd,
    uid: u32,
    exec: bool,
) -> Result<(OwnedFd, String), PlacementError> {
    let mut tried = Vec::new();
    for base in BASES {
        match open_safe_dir(root, base, uid) {
            Ok(fd) => match usable(&fd, exec) {
                Ok(()) => return Ok((fd, (*base).to_string())),
                Err(why) => tried.push(format!("{base}: {why}")),
            },
            Err(why) => tried.push(format!("{base}: {why}")),
        }
    }
    Err(PlacementError::NoBase {
        pid,
        tried: tried.join("; "),
        exec: if exec {
            ", mounted without noexec,"
        } else {
            ""
        },
    })
}

/// Opens `path` below `root` one component at a time without following links, checking
/// that each directory on the way is one no other user can rename entries in.
fn open_safe_dir(root: &OwnedFd, path: &str, uid: u32) -> Result<OwnedFd, String> {
    let stat = fstat(root.as_fd()).map_err(|e| e.to_string())?;
    safe_dir(&stat, uid).map_err(|why| format!("the root directory {why}"))?;
    let mut current = root.try_clone().map_err(|e| e.to_string())?;
    for component in path.split('/').filter(|c| !c.is_empty()) {
        let next = open_at(Some(current.as_fd()), component, libc::O_PATH, false).map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR) {
                format!("{component} is not a plain directory")
            } else {
                e.to_string()
            }
        })?;
        let stat = fstat(next.as_fd()).map_err(|e| e.to_string())?;
        safe_dir(&stat, uid).map_err(|why| format!("{component} {why}"))?;
        current = next;
    }
    Ok(current)
}

/// Whether a directory is owned by root or `uid` and no one else can rename or remove its
/// entries (not group/other-writable, or sticky as `/tmp` is).
fn safe_dir(stat: &libc::stat, uid: u32) -> Result<(), String> {
    if stat.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err("is not a directory".into());
    }
    if stat.st_uid != 0 && stat.st_uid != uid {
        return Err(format!("is owned by uid {}", stat.st_uid));
    }
    if stat.st_mode & 0o022 != 0 && stat.st_mode & libc::S_ISVTX == 0 {
        return Err("is writable by other users and not sticky".into());
    }
    Ok(())
}

/// Whether the filesystem under `fd` takes new files (and maps them executable if `exec`).
fn usable(fd: &OwnedFd, exec: bool) -> Result<(), String> {
    // SAFETY: statvfs is plain data, filled by the call.
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatvfs writes into `vfs` and reads a descriptor we own.
    if unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut vfs) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    if vfs.f_flag & libc::ST_RDONLY != 0 {
        return Err("mounted read-only".into());
    }
    if exec && vfs.f_flag & libc::ST_NOEXEC != 0 {
        return Err("mounted noexec".into());
    }
    Ok(())
}

/// Makes a fresh directory with a random name in `base` (root's, mode 0700 until the files
/// are in) and opens it, checking that what was opened is the directory just made.
fn make_private_dir(
    pid: i32,
    base: &OwnedFd,
    base_path: &str,
) -> Result<(OwnedFd, String), PlacementError> {
    let io = |what: String| move |source| PlacementError::Io { pid, what, source };
    for _ in 0..NAME_TRIES {
        let name = format!("pmt-{pid}-{}", random_hex()?);
        let c_name =
            CString::new(name.as_str()).map_err(|_| PlacementError::BadName(name.clone()))?;
        // SAFETY: mkdirat reads a NUL-terminated name relative to a descriptor we own.
        if unsafe { libc::mkdirat(base.as_raw_fd(), c_name.as_ptr(), 0o700) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EEXIST) {
                continue;
            }
            return Err(io(format!("making a directory in {base_path}"))(err));
        }
        let dir = open_at(Some(base.as_fd()), &name, libc::O_RDONLY, true)
            .map_err(io(format!("opening {base_path}/{name}")))?;
        let stat = fstat(dir.as_fd()).map_err(io(format!("checking {base_path}/{name}")))?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if stat.st_mode & libc::S_IFMT != libc::S_IFDIR
            || stat.st_uid != me
            || stat.st_mode & 0o077 != 0
        {
            return Err(PlacementError::Changed {
                path: PathBuf::from(format!("/proc/{pid}/root{base_path}/{name}")),
                why: "the directory just made was replaced".into(),
            });
        }
        return Ok((dir, name));
    }
    Err(io(format!("finding a free name in {base_path}"))(
        std::io::Error::from_raw_os_error(libc::EEXIST),
    ))
}

/// 16 random hex digits from the kernel.
fn random_hex() -> Result<String, PlacementError> {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if got != bytes.len() as isize {
        return Err(PlacementError::Io {
            pid: 0,
            what: "getting random bytes".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC [| O_DIRECTORY])` (mode 0600 when
/// creating); `dir` `None` opens an absolute path, following it (only `/proc/PID/root`).
fn open_at(
    dir: Option<BorrowedFd<'_>>,
    name: &str,
    flags: libc::c_int,
    directory: bool,
) -> std::io::Result<OwnedFd> {
    let c_name = CString::new(name).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut flags = flags | libc::O_CLOEXEC;
    if dir.is_some() {
        flags |= libc::O_NOFOLLOW;
    }
    if directory || flags & libc::O_PATH != 0 {
        flags |= libc::O_DIRECTORY;
    }
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: openat reads a NUL-terminated name; the returned descriptor is ours alone.
    let fd = unsafe { libc::openat(dirfd, c_name.as_ptr(), flags, 0o600 as libc::c_uint) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: BorrowedFd<'_>) -> std::io::Result<libc::stat> {
    // SAFETY: stat is plain data, filled by the call.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into `stat` and reads a borrowed, open descriptor.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
fn stat_at(dir: BorrowedFd<'_>, name: &str) -> std::io::Result<libc::stat> {
    let c_name = CString::new(name).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: stat is plain data, filled by the call.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat reads a NUL-terminated name and writes into `stat`.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c_name.as_ptr(),
            &mut stat,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat)
}

/// Whether `stat` is of the `kind` (`S_IFDIR`, `S_IFREG`), owner and permission bits wanted.
fn check_stat(stat: &libc::stat, kind: u32, uid: u32, gid: u32, mode: u32) -> Result<(), String> {
    if stat.st_mode & libc::S_IFMT != kind {
        return Err("its type changed".into());
    }
    if (stat.st_uid, stat.st_gid) != (uid, gid) {
        return Err(format!(
            "owned by {}:{}, not {uid}:{gid}",
            stat.st_uid, stat.st_gid
        ));
    }
    if stat.st_mode & 0o7777 != mode {
        return Err(format!("mode {:o}, not {mode:o}", stat.st_mode & 0o7777));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_bytes() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn only_directories_no_other_user_can_rename_entries_in_are_safe() {
        let dir = |uid: u32, mode: u32| {
            // SAFETY: stat is plain data; all zeroes is a valid value.
            let mut stat: libc::stat = unsafe { std::mem::zeroed() };
            stat.st_uid = uid;
            stat.st_mode = libc::S_IFDIR | mode;
            stat
        };
        let target = 1000;
        assert!(safe_dir(&dir(0, 0o755), target).is_ok());
        assert!(safe_dir(&dir(0, 0o1777), target).is_ok(), "/tmp");
        assert!(safe_dir(&dir(target, 0o700), target).is_ok());
        assert!(
            safe_dir(&dir(0, 0o777), target).is_err(),
            "writable, not sticky"
        );
        assert!(safe_dir(&dir(0, 0o775), target).is_err(), "group-writable");
        assert!(
            safe_dir(&dir(1001, 0o755), target).is_err(),
            "another user's"
        );
        let mut file = dir(0, 0o755);
        file.st_mode = libc::S_IFREG | 0o755;
        assert!(safe_dir(&file, target).is_err());
    }

    #[test]
    fn names_must_be_one_component() {
        let pid = std::process::id() as i32;
        for name in ["", ".", "..", "a/b", "a\0b"] {
            assert!(matches!(
                Placement::create(pid, &[FileSpec::data(name, b"x")]),
                Err(PlacementError::BadName(_))
            ));
        }
    }
}
