//! A program that embeds CPython 3.14 through `libpython3.14.so` (Debian sid's, in the chroot):
//! the interpreter is found in the shared library, not the executable; `pmt dump` reads its
//! stacks and `pmt-sample` charges its growth to the function that grew.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The embedding program: the interpreter's own main, called from our executable.
const PROGRAM: &str =
    "#include <Python.h>\nint main(int argc, char **argv) { return Py_BytesMain(argc, argv); }\n";

/// Builds the program with the chroot's gcc against libpython3.14; `None` (after a skip
/// message, or a panic if sid3.14 is required) when the chroot is not here.
fn build(dir: &Path) -> Option<(common::Interpreter, PathBuf)> {
    let interp = common::interpreter_or_skip("sid3.14")?;
    let root = interp
        .root
        .clone()
        .expect("sid's interpreters run in a chroot");
    std::fs::write(dir.join("embed.c"), PROGRAM).expect("writing the program");
    let flags = Command::new("chroot")
        .arg(&root)
        .args(["python3.14-config", "--cflags", "--embed", "--ldflags"])
        .output()
        .expect("python3.14-config");
    let flags = String::from_utf8_lossy(&flags.stdout).to_string();
    let binary = dir.join("embed");
    let compiled = Command::new("chroot")
        .arg(&root)
        .arg("gcc")
        .arg(dir.join("embed.c"))
        .arg("-o")
        .arg(&binary)
        .args(flags.split_whitespace())
        .output()
        .expect("running gcc in the chroot");
    assert!(
        compiled.status.success(),
        "building the embedding program failed:\n{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    Some((interp, binary))
}

#[test]
fn dump_and_sample_a_program_embedding_libpython_3_14() {
    let dir = tempfile::tempdir_in("/tmp").expect("temp dir");
    let Some((interp, binary)) = build(dir.path()) else {
        return;
    };
    let root = interp.root.clone().expect("chroot");
    let maps_say_libpython = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .unwrap_or_default()
            .contains("libpython3.14.so")
    };

    // Dump: a sleeping embedded interpreter.
    let embedded = common::Interpreter {
        label: "embedded3.14".into(),
        path: binary.clone(),
        root: Some(root.clone()),
    };
    let mut target = common::start(&embedded, &common::script("sleeper.py"), &[]);
    target.wait_for_line("ready", Duration::from_secs(30));
    assert!(maps_say_libpython(target.child.id()));
    let out = common::pmt()
        .args(["dump", "--json", "--pid", &target.pid().to_string()])
        .output()
        .expect("pmt dump");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(
        dump["python_version"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.14."),
        "{dump}"
    );
    let functions: Vec<&str> = dump["threads"][0]["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(|f| f["function"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(functions.last(), Some(&"<module>"), "{dump}");
    drop(target);

    // Sample: launched under pmt-sample, its growth lands on grow_here.
    let folded = dir.path().join("embed.folded");
    let mut command = common::sampler();
    command
        .args(["--rate", "200", "--metric", "rss", "--collapsed"])
        .arg(&folded)
        .args(["--", "chroot"])
        .arg(&root)
        .arg(&binary)
        .arg(common::script("grow_here.py"))
        .args(["--mb", "30", "--start-delay", "0.5"])
        .stdout(Stdio::null());
    let output = common::run(command);
    assert!(
        output.status.success(),
        "pmt-sample on the embedding program failed"
    );
    let stacks = common::read_folded(&folded);
    let grow: u64 = stacks
        .iter()
        .filter(|(frames, _)| frames.iter().any(|f| f.starts_with("grow_here (")))
        .map(|(_, w)| w)
        .sum();
    assert!(
        grow >= 25 << 20,
        "grow_here owns {grow} bytes of the 30 MiB it kept"
    );
}
