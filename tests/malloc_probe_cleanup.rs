//! The eBPF allocator counters leave nothing behind: after a drop, after SIGKILL of the
//! target, and after SIGKILL of the attaching process, the target's code is restored (no
//! breakpoint byte at `malloc`), no `pmt_*` BPF program stays loaded, and no uprobe event is
//! left in tracefs. Also: without privileges, attaching fails with one clear line.

mod common;
mod malloc_support;

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::{eventually, pmt_programs};
use malloc_support::{Python, Workload, ebpf_usable, pythons};
use object::{Object, ObjectSection, ObjectSymbol};
use pymemtrace::memory::malloc::{MallocCounters, MallocOptions};

/// The checks count BPF programs machine-wide: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const INT3: u8 = 0xcc;

fn python() -> Option<Python> {
    let all = pythons();
    all.iter()
        .find(|p| p.label == "3.12")
        .or(all.first())
        .cloned()
}

/// tracefs's uprobe_events (mounting tracefs first if needed).
fn uprobe_events() -> String {
    let dir = "/sys/kernel/tracing";
    let file = format!("{dir}/uprobe_events");
    if !std::path::Path::new(&file).exists() {
        let mounted = Command::new("mount")
            .args(["-t", "tracefs", "nodev", dir])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(mounted, "cannot mount tracefs at {dir}");
    }
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Address of libc's `malloc` in `pid`, and the byte the libc file has there.
fn malloc_site(pid: i32) -> (u64, u8) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("target maps");
    let libc_path = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("libc.so"))
        })
        .expect("target maps libc")
        .to_string();
    let data = std::fs::read(format!("/proc/{pid}/root{libc_path}")).expect("read libc");
    let file = object::File::parse(&*data).expect("libc is ELF");
    let symbol = file
        .dynamic_symbols()
        .find(|s| s.name() == Ok("malloc"))
        .expect("libc exports malloc");
    let section = file
        .section_by_index(symbol.section_index().expect("malloc has a section"))
        .expect("section");
    let (section_offset, _) = section.file_range().expect("section in file");
    let file_offset = symbol.address() - section.address() + section_offset;
    let original = data[usize::try_from(file_offset).expect("offset fits")];
    for line in maps.lines().filter(|l| l.ends_with(&libc_path)) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (start, end) = fields[0].split_once('-').expect("range");
        let start = u64::from_str_radix(start, 16).expect("hex");
        let end = u64::from_str_radix(end, 16).expect("hex");
        let map_offset = u64::from_str_radix(fields[2], 16).expect("hex");
        if file_offset >= map_offset && file_offset < map_offset + (end - start) {
            return (start + file_offset - map_offset, original);
        }
    }
    panic!("malloc's offset {file_offset:#x} is not mapped in {pid}");
}

/// The byte at `address` in the target's memory as it runs (breakpoints included).
fn code_byte(pid: i32, address: u64) -> u8 {
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("open target memory");
    mem.seek(SeekFrom::Start(address)).expect("seek");
    let mut byte = [0u8];
    mem.read_exact(&mut byte).expect("read target code");
    byte[0]
}

fn driver_path() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/PROFILE/deps");
    let driver = profile_dir.join("examples/malloc_counters");
    assert!(
        driver.exists(),
        "{} missing: build it with `cargo build --release --examples` (`cargo test --all-targets` does)",
        driver.display()
    );
    driver
}

/// Starts the example driver on `pid` and waits for its "attached" line; `None` (skip) when
/// eBPF is unavailable here.
fn start_driver(pid: i32) -> Option<Child> {
    let mut child = Command::new(driver_path())
        .args(["--pid", &pid.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the driver");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr piped"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("driver stderr");
    if line.starts_with("attached") {
        return Some(child);
    }
    let _ = child.wait();
    assert!(
        std::env::var("PMT_REQUIRE_EBPF").as_deref() != Ok("1"),
        "driver failed: {line}"
    );
    eprintln!("SKIP: driver could not attach: {line}");
    None
}

/// The baseline state: no programs of ours, and tracefs's uprobe events.
fn baseline() -> String {
    assert_eq!(pmt_programs(), 0, "pmt_ programs loaded before the test");
    uprobe_events()
}

#[test]
fn drop_detaches_every_probe() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(python) = python() else { return };
    let events_before = baseline();
    let workload = Workload::start(&python, "idle.py", &[]);
    let (address, original) = malloc_site(workload.pid());
    let options = MallocOptions {
        python_allocators: true,
        frees: true,
    };
    let counters = match MallocCounters::attach(workload.pid(), &options) {
        Ok(c) => c,
        Err(e) => {
            ebpf_usable(Some(&e));
            workload.kill();
            return;
        }
    };
    assert_eq!(code_byte(workload.pid(), address), INT3, "malloc is probed");
    assert!(pmt_programs() > 0);
    drop(counters);
    assert_eq!(
        code_byte(workload.pid(), address),
        original,
        "malloc restored"
    );
    assert_eq!(pmt_programs(), 0, "programs unloaded");
    assert_eq!(uprobe_events(), events_before, "no uprobe event left");
    workload.finish();
}

#[test]
fn target_killed_driver_exits_and_cleans_up() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(python) = python() else { return };
    let events_before = baseline();
    let workload = Workload::start(&python, "idle.py", &[]);
    let Some(driver) = start_driver(workload.pid()) else {
        workload.kill();
        return;
    };
    std::thread::sleep(Duration::from_millis(300));
    workload.kill();
    let output = driver.wait_with_output().expect("driver exits by itself");
    assert!(output.status.success(), "driver status {}", output.status);
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("driver prints JSON totals");
    let calls: u64 = report["threads"]
        .as_object()
        .map(|t| t.values().filter_map(|v| v["calls"].as_u64()).sum())
        .unwrap_or(0);
    assert!(
        calls >= 10,
        "the idle workload mallocs every 10 ms: {report}"
    );
    assert!(eventually(|| pmt_programs() == 0), "programs unloaded");
    assert_eq!(uprobe_events(), events_before, "no uprobe event left");
}

#[test]
fn driver_killed_leaves_target_unprobed() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(python) = python() else { return };
    let events_before = baseline();
    let workload = Workload::start(&python, "idle.py", &[]);
    let pid = workload.pid();
    let (address, original) = malloc_site(pid);
    let Some(mut driver) = start_driver(pid) else {
        workload.kill();
        return;
    };
    assert_eq!(code_byte(pid, address), INT3, "malloc is probed");
    driver.kill().expect("SIGKILL the driver");
    let _ = driver.wait();
    assert!(
        eventually(|| code_byte(pid, address) == original),
        "malloc restored in the still-running target"
    );
    assert!(eventually(|| pmt_programs() == 0), "programs unloaded");
    assert_eq!(uprobe_events(), events_before, "no uprobe event left");
    std::thread::sleep(Duration::from_millis(100));
    let mut workload = workload;
    assert!(
        workload.child.try_wait().expect("target status").is_none(),
        "the target keeps running"
    );
    workload.finish();
}

#[test]
fn unprivileged_attach_fails_with_one_clear_line() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(python) = python() else { return };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: needs root to drop to an unprivileged user");
        return;
    }
    let workload = Workload::start(&python, "idle.py", &[]);
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(driver_path())
        .args(["--pid", &workload.pid().to_string()])
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("run setpriv (util-linux)");
    workload.finish();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let first = stderr.lines().next().unwrap_or("");
    assert!(
        first.contains("need root or CAP_BPF+CAP_PERFMON") && first.contains("run as root"),
        "unexpected message: {stderr}"
    );
    assert_eq!(pmt_programs(), 0);
}
