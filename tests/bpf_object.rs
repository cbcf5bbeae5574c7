//! The committed eBPF objects are what their source compiles to: `dtrace/bpf/build.sh`, run with
//! clang (installed by `.ci/setup`) into a scratch directory, writes the same bytes as the
//! committed `malloc_counters` (x86, arm64) and `memory_stacks` (x86 only) objects and the same stamps (source hash, clang version).

mod common;

use std::process::Command;

#[test]
fn clang_rebuilds_the_committed_bpf_objects_byte_for_byte() {
    let repo = common::repo();
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new("bash")
        .arg(repo.join("dtrace/bpf/build.sh"))
        .arg(dir.path())
        .output()
        .expect("running dtrace/bpf/build.sh");
    assert!(
        output.status.success(),
        "dtrace/bpf/build.sh failed (it needs clang, which .ci/setup installs): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for object in ["malloc_counters", "memory_stacks"] {
        let stamp_name = format!("{object}.stamp");
        let committed_stamp = std::fs::read_to_string(repo.join("dtrace/bpf").join(&stamp_name))
            .expect("the committed stamp");
        let stamp =
            std::fs::read_to_string(dir.path().join(&stamp_name)).expect("the rebuilt stamp");
        assert_eq!(
            stamp, committed_stamp,
            "{object}: the source or the clang version differs from the committed build: run `bash dtrace/bpf/build.sh` and commit"
        );
    }
    for name in [
        "malloc_counters.x86.bpf.o",
        "malloc_counters.arm64.bpf.o",
        "memory_stacks.x86.bpf.o",
    ] {
        let rebuilt = std::fs::read(dir.path().join(name)).expect("rebuilt object");
        let committed = std::fs::read(repo.join("dtrace/bpf").join(name)).expect("committed");
        assert!(
            rebuilt == committed,
            "{name}: clang's rebuild differs from the committed object ({} vs {} bytes): run `bash dtrace/bpf/build.sh` and commit",
            rebuilt.len(),
            committed.len()
        );
    }
}
