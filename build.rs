//! Build script: compiles the eBPF allocator counters (`dtrace/bpf/malloc_counters.bpf.c`)
//! with clang into `$OUT_DIR/malloc_counters.bpf.o`, which `src/memory/malloc` embeds.
//!
//! Needs only clang (no libbpf headers). `PMT_CLANG` names another compiler. Without clang the
//! crate still builds: the `pmt_no_bpf` cfg is set and the malloc counters report, at run time,
//! that this build has no eBPF object.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const BPF_SOURCE: &str = "dtrace/bpf/malloc_counters.bpf.c";

fn main() {
    println!("cargo::rerun-if-changed={BPF_SOURCE}");
    println!("cargo::rerun-if-env-changed=PMT_CLANG");
    println!("cargo::rustc-check-cfg=cfg(pmt_no_bpf)");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out_dir.join("malloc_counters.bpf.o");
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        _ => {
            println!("cargo::warning=eBPF malloc counters are built for x86_64 and aarch64 only");
            println!("cargo::rustc-cfg=pmt_no_bpf");
            return;
        }
    };
    let clang = env::var("PMT_CLANG").unwrap_or_else(|_| "clang".to_string());
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf"])
        .arg(format!("-D__TARGET_ARCH_{arch}"))
        .args(["-c", BPF_SOURCE, "-o"])
        .arg(&object)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{clang} failed to compile {BPF_SOURCE}: {s}"),
        Err(e) => {
            println!(
                "cargo::warning=eBPF malloc counters disabled: cannot run `{clang}` ({e}); install clang and rebuild"
            );
            println!("cargo::rustc-cfg=pmt_no_bpf");
        }
    }
}
