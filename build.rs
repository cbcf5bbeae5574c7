//! Build script: embeds the committed eBPF allocator counters (`dtrace/bpf/malloc_counters.
//! {x86,arm64}.bpf.o`, made from `dtrace/bpf/malloc_counters.bpf.c` by `dtrace/bpf/build.sh`)
//! by copying the one for the target architecture to `$OUT_DIR/malloc_counters.bpf.o`, which
//! `src/memory/malloc` embeds. So every build has eBPF, with or without clang.
//!
//! A source changed since its objects were built fails the build with one line saying what to
//! run (the stamp records the source's hash); `tests/bpf_object.rs` checks in CI that clang
//! rebuilds the committed objects byte for byte. Only an architecture the C source does not
//! support (not x86_64 or aarch64) builds without eBPF, said in a warning.

use std::env;
use std::path::PathBuf;

const BPF_SOURCE: &str = "dtrace/bpf/malloc_counters.bpf.c";
const STAMP: &str = "dtrace/bpf/malloc_counters.stamp";

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

fn main() {
    println!("cargo::rerun-if-changed={BPF_SOURCE}");
    println!("cargo::rerun-if-changed={STAMP}");
    println!("cargo::rustc-check-cfg=cfg(pmt_no_bpf)");
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        _ => {
            println!("cargo::warning=eBPF malloc counters are built for x86_64 and aarch64 only");
            println!("cargo::rustc-cfg=pmt_no_bpf");
            return;
        }
    };
    let object = format!("dtrace/bpf/malloc_counters.{arch}.bpf.o");
    println!("cargo::rerun-if-changed={object}");
    let source = std::fs::read(BPF_SOURCE)
        .unwrap_or_else(|e| fail(&format!("cannot read {BPF_SOURCE}: {e}")));
    let stamp = std::fs::read_to_string(STAMP).unwrap_or_default();
    let built_from = stamp
        .lines()
        .find_map(|l| l.strip_prefix("source-fnv1a64: "))
        .unwrap_or("none");
    if built_from != format!("{:016x}", fnv1a64(&source)) {
        fail(&format!(
            "{BPF_SOURCE} changed since its BPF objects were built: run `bash dtrace/bpf/build.sh` (needs clang) and commit what it writes"
        ));
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    if let Err(e) = std::fs::copy(&object, out_dir.join("malloc_counters.bpf.o")) {
        fail(&format!(
            "cannot copy {object}: {e}: run `bash dtrace/bpf/build.sh` (needs clang)"
        ));
    }
}
