//! Build script: embeds the committed eBPF objects (`dtrace/bpf/NAME.ARCH.bpf.o`, made
//! from `dtrace/bpf/NAME.bpf.c` by `dtrace/bpf/build.sh`: the allocator counters and the
//! in-kernel stacks) by copying the one for the target architecture to `$OUT_DIR/NAME.bpf.o`,
//! which `src/memory` embeds. So every build has eBPF, with or without clang.
//!
//! The in-kernel stacks are built for x86 only: they need the page-fault tracepoints
//! (`exceptions:page_fault_user`/`_kernel`), which only x86 kernels have, so an arm64 object
//! could never attach. On aarch64 the build sets `pmt_no_memory_stacks` and in-kernel
//! attribution says it is unavailable; the allocator counters (uprobes) work on both.
//!
//! A source changed since its objects were built fails the build with one line saying what to
//! run (the stamp records the source's hash); `tests/bpf_object.rs` checks in CI that clang
//! rebuilds the committed objects byte for byte. Only an architecture the C source does not
//! support (not x86_64 or aarch64) builds without eBPF, said in a warning.
//!
//! It also builds the allocation hook (`heap_hook/`, loaded into targets for the `heap`
//! metric) with `rustc` alone — it depends on nothing but the C library — into
//! `$OUT_DIR/libpmt_heap_hook.so`, which `src/memory/heap_hook.rs` embeds.

use std::env;
use std::path::PathBuf;

/// The BPF objects embedded, by name, with the architectures they are built for:
/// `dtrace/bpf/NAME.bpf.c` built into `dtrace/bpf/NAME.ARCH.bpf.o`, with
/// `dtrace/bpf/NAME.stamp` (the same list as `dtrace/bpf/build.sh`).
const OBJECTS: [(&str, &[&str]); 2] = [
    ("malloc_counters", &["x86", "arm64"]),
    ("memory_stacks", &["x86"]),
];
/// The header every BPF source includes; its bytes follow the source's in the stamp's hash.
const SHARED_HEADER: &str = "dtrace/bpf/pmt_bpf.h";

/// FNV-1a, 64 bits: the source hash `dtrace/bpf/build.sh` writes into the stamp.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| fail(&format!("cannot read {path}: {e}")))
}

/// Builds `heap_hook/src/lib.rs` into `$OUT_DIR/libpmt_heap_hook.so`.
fn build_heap_hook(out_dir: &std::path::Path) {
    println!("cargo::rerun-if-changed=heap_hook/src");
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let target = env::var("TARGET").unwrap_or_default();
    let output = out_dir.join("libpmt_heap_hook.so");
    let status = std::process::Command::new(rustc)
        .args(["--edition", "2024", "--crate-type", "cdylib"])
        .args(["--crate-name", "pmt_heap_hook", "--target", &target])
        .args([
            "-C",
            "opt-level=3",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
        ])
        .args(["-C", "codegen-units=1"])
        .arg("heap_hook/src/lib.rs")
        .arg("-o")
        .arg(&output)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!("building heap_hook/src/lib.rs failed ({status})")),
        Err(e) => fail(&format!("cannot run rustc to build heap_hook: {e}")),
    }
}

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    build_heap_hook(&out_dir);
    println!("cargo::rerun-if-changed={SHARED_HEADER}");
    println!("cargo::rustc-check-cfg=cfg(pmt_no_bpf)");
    println!("cargo::rustc-check-cfg=cfg(pmt_no_memory_stacks)");
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        _ => {
            println!("cargo::warning=eBPF programs are built for x86_64 and aarch64 only");
            println!("cargo::rustc-cfg=pmt_no_bpf");
            return;
        }
    };
    let header = read(SHARED_HEADER);
    for (name, arches) in OBJECTS {
        if !arches.contains(&arch) {
            println!("cargo::rustc-cfg=pmt_no_{name}");
            continue;
        }
        let source_path = format!("dtrace/bpf/{name}.bpf.c");
        let stamp_path = format!("dtrace/bpf/{name}.stamp");
        let object = format!("dtrace/bpf/{name}.{arch}.bpf.o");
        println!("cargo::rerun-if-changed={source_path}");
        println!("cargo::rerun-if-changed={stamp_path}");
        println!("cargo::rerun-if-changed={object}");
        let mut source = read(&source_path);
        source.extend_from_slice(&header);
        let stamp = std::fs::read_to_string(&stamp_path).unwrap_or_default();
        let built_from = stamp
            .lines()
            .find_map(|l| l.strip_prefix("source-fnv1a64: "))
            .unwrap_or("none");
        if built_from != format!("{:016x}", fnv1a64(&source)) {
            fail(&format!(
                "{source_path} or {SHARED_HEADER} changed since the BPF objects were built: run `bash dtrace/bpf/build.sh` (needs clang) and commit what it writes"
            ));
        }
        if let Err(e) = std::fs::copy(&object, out_dir.join(format!("{name}.bpf.o"))) {
            fail(&format!(
                "cannot copy {object}: {e}: run `bash dtrace/bpf/build.sh` (needs clang)"
            ));
        }
    }
}
