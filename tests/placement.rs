//! Files placed for a target (`attach::placement`), against real processes of other users:
//! the private directory and its files belong to the target's user with private modes, that
//! user can read them at the path the target is given, another unprivileged local user can
//! neither replace, alter, remove, rename nor add to them between placement and use, and pmt
//! refuses to place anything for a process it could not ptrace.
//!
//! The users are bare uids (no account is needed to run a process as one).

use pymemtrace::attach::ProcessError;
use pymemtrace::attach::placement::{FileSpec, Placement, PlacementError};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// The target's user.
const TARGET_UID: u32 = 64101;
/// Another local user, the attacker.
const OTHER_UID: u32 = 64102;

const LIBRARY: &[u8] = b"\x7fELF not really a library, but bytes to keep";
const LOADER: &[u8] = b"print('loader')\n";

/// A process of `uid` that waits (killed on drop).
struct Sleeper(Child);

impl Sleeper {
    fn start(uid: u32) -> Sleeper {
        let child = Command::new("sleep")
            .arg("60")
            .uid(uid)
            .gid(uid)
            .spawn()
            .expect("starting sleep as another user");
        Sleeper(child)
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `script` with `sh` as `uid`; its exit status and stderr.
fn sh_as(uid: u32, script: &str) -> (bool, String, Vec<u8>) {
    let out = Command::new("sh")
        .args(["-c", script])
        .uid(uid)
        .gid(uid)
        .current_dir("/")
        .output()
        .expect("running sh as another user");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.stdout,
    )
}

#[test]
fn placed_files_are_the_target_users_and_another_user_cannot_swap_them() {
    let target = Sleeper::start(TARGET_UID);
    let placement = Placement::create(
        target.pid(),
        &[
            FileSpec::library("libhook.so", LIBRARY),
            FileSpec::data("loader.py", LOADER),
        ],
    )
    .expect("placing files for a process we may ptrace");

    let dir = placement.target_dir().to_path_buf();
    assert!(
        dir.starts_with("/tmp") && dir.to_string_lossy().contains("/pmt-"),
        "{dir:?}"
    );
    assert_eq!(
        placement.host_dir(),
        std::path::Path::new(&format!("/proc/{}/root{}", target.pid(), dir.display()))
    );
    let meta = std::fs::symlink_metadata(placement.host_dir()).expect("the directory exists");
    assert!(meta.is_dir());
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (TARGET_UID, TARGET_UID, 0o700)
    );
    let lib = placement.file("libhook.so").expect("placed").clone();
    let loader = placement.file("loader.py").expect("placed").clone();
    for (file, mode) in [(&lib, 0o500), (&loader, 0o400)] {
        let meta = std::fs::symlink_metadata(&file.host_path).expect("the file exists");
        assert!(meta.is_file());
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (TARGET_UID, TARGET_UID, mode)
        );
        assert_eq!(file.target_path, dir.join(&file.name));
    }

    // The target's user reads them at the paths the target is given.
    let (ok, err, out) = sh_as(TARGET_UID, &format!("cat {}", loader.target_path.display()));
    assert!(ok, "the target's user cannot read its loader: {err}");
    assert_eq!(out, LOADER);

    // Another user tries every way to change what the target will load.
    let evil = "/tmp/pmt-placement-evil";
    std::fs::write(evil, b"import os; os.system('id')").expect("writing the attacker's file");
    let (lib_path, loader_path, dir_path) = (
        lib.target_path.display().to_string(),
        loader.target_path.display().to_string(),
        dir.display().to_string(),
    );
    let attempts = [
        format!("cp {evil} {loader_path}"),
        format!("printf x >> {loader_path}"),
        format!("rm -f {lib_path}"),
        format!("mv {evil} {lib_path}"),
        format!("ln -sf {evil} {dir_path}/loader.py"),
        format!("touch {dir_path}/extra"),
        format!("chmod 0777 {dir_path}"),
        format!("mv {dir_path} {dir_path}.moved"),
        format!("rm -rf {dir_path}"),
        format!("cat {lib_path}"),
    ];
    for attempt in &attempts {
        let (ok, err, _) = sh_as(OTHER_UID, attempt);
        assert!(!ok, "another user could `{attempt}`");
        assert!(
            err.contains("Permission denied") || err.contains("Operation not permitted"),
            "`{attempt}` failed for another reason: {err}"
        );
    }
    let _ = std::fs::remove_file(evil);

    placement.verify().expect("the files are as placed");
    assert_eq!(
        std::fs::read(&lib.host_path).expect("readable by pmt"),
        LIBRARY
    );
    assert_eq!(
        std::fs::read(&loader.host_path).expect("readable by pmt"),
        LOADER
    );
    let entries = std::fs::read_dir(placement.host_dir())
        .expect("listing")
        .count();
    assert_eq!(entries, 2, "nothing was added");

    // A change by anyone (here root, standing in for a successful attack) is caught.
    std::fs::write(&loader.host_path, b"print('swapped')\n").expect("root may write");
    assert!(matches!(
        placement.verify(),
        Err(PlacementError::Changed { .. })
    ));

    let host_dir = placement.host_dir().to_path_buf();
    drop(placement);
    assert!(!host_dir.exists(), "the directory is removed on drop");
}

#[test]
fn a_placement_left_on_drop_stays() {
    let target = Sleeper::start(TARGET_UID);
    let mut placement = Placement::create(target.pid(), &[FileSpec::data("loader.py", LOADER)])
        .expect("placing a file");
    placement.leave_on_drop();
    let dir = placement.host_dir().to_path_buf();
    drop(placement);
    assert_eq!(
        std::fs::read(dir.join("loader.py")).expect("still there"),
        LOADER
    );
    std::fs::remove_dir_all(&dir).expect("cleaning up");
}

#[test]
fn nothing_is_placed_for_a_process_pmt_could_not_ptrace() {
    let target = Sleeper::start(TARGET_UID);
    let pid = target.pid();
    // This thread alone becomes another unprivileged user (the raw syscalls change one
    // thread's credentials; glibc's wrappers would change every thread's).
    let result = std::thread::spawn(move || {
        // SAFETY: setresgid/setresuid take plain integers and affect only this thread.
        let dropped = unsafe {
            libc::syscall(libc::SYS_setresgid, OTHER_UID, OTHER_UID, OTHER_UID) == 0
                && libc::syscall(libc::SYS_setresuid, OTHER_UID, OTHER_UID, OTHER_UID) == 0
        };
        assert!(dropped, "dropping this thread's privileges");
        Placement::create(pid, &[FileSpec::data("loader.py", LOADER)]).map(|_| ())
    })
    .join()
    .expect("the unprivileged thread");
    match result {
        Err(PlacementError::Process(ProcessError::PermissionDenied(p))) => assert_eq!(p, pid),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
