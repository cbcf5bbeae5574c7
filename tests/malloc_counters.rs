//! Ground truth for the eBPF allocator counters (`pymemtrace::memory::malloc`): real CPython
//! processes whose threads do known allocator work, counted per thread.
//!
//! Needs root (or CAP_BPF+CAP_PERFMON); skips with a reason elsewhere, fails when
//! `PMT_REQUIRE_EBPF=1`.

mod common;
mod malloc_support;

use malloc_support::{Workload, attach, pythons, thread_ids, tid};
use pymemtrace::memory::malloc::{MallocOptions, PythonAllocatorProbes};

const GIB: f64 = (1u64 << 30) as f64;
const MIB: f64 = (1u64 << 20) as f64;

fn within(actual: u64, expected: f64, tolerance: f64) -> bool {
    (actual as f64 - expected).abs() <= expected * tolerance
}

#[test]
fn libc_counters_match_known_work_per_thread() {
    for python in pythons() {
        let mut workload = Workload::start(&python, "malloc_ground_truth.py", &[]);
        let options = MallocOptions {
            python_allocators: false,
            frees: true,
        };
        let Some(mut counters) = attach(&workload, &options) else {
            workload.kill();
            return;
        };
        workload.go();
        let ids = thread_ids(&mut workload);
        let totals = counters.read().expect("reading the counters");
        workload.finish();

        let get = |name: &str| totals.get(&tid(&ids, name)).copied().unwrap_or_default();
        let (churn, ten, cpu) = (get("churn"), get("ten_mib"), get("cpu"));
        let all_bytes: u64 = totals.values().map(|t| t.bytes).sum();
        eprintln!(
            "{}: churn {} calls {} bytes {} frees; ten_mib {} bytes; cpu {} bytes; process {} bytes",
            python.label, churn.calls, churn.bytes, churn.frees, ten.bytes, cpu.bytes, all_bytes
        );
        assert!(
            within(churn.bytes, GIB, 0.10),
            "{}: churn thread counted {} bytes, expected 1 GiB ±10%",
            python.label,
            churn.bytes
        );
        assert!(
            within(churn.calls, 256.0, 0.05),
            "{}: churn thread counted {} calls, expected 256 ±5%",
            python.label,
            churn.calls
        );
        assert!(
            churn.frees >= 256,
            "{}: churn thread counted {} frees, expected at least 256",
            python.label,
            churn.frees
        );
        assert!(
            within(ten.bytes, 10.0 * MIB, 0.10),
            "{}: ten_mib thread counted {} bytes, expected 10 MiB ±10%",
            python.label,
            ten.bytes
        );
        assert!(
            (cpu.bytes as f64) < 0.02 * all_bytes as f64,
            "{}: CPU-only thread counted {} of {} bytes, expected under 2%",
            python.label,
            cpu.bytes,
            all_bytes
        );
        assert_eq!(churn.python_calls, 0, "no Python layer without the option");
    }
}

#[test]
fn python_allocators_count_small_objects() {
    const N: u64 = 100_000;
    let options = MallocOptions {
        python_allocators: true,
        frees: false,
    };
    for python in pythons() {
        let mut workload = Workload::start(&python, "small_objects.py", &[&N.to_string()]);
        let Some(mut counters) = attach(&workload, &options) else {
            workload.kill();
            return;
        };
        workload.go();
        let ids = thread_ids(&mut workload);
        let totals = counters.read().expect("reading the counters");
        workload.finish();

        let objects = totals
            .get(&tid(&ids, "objects"))
            .copied()
            .unwrap_or_default();
        let extension = totals
            .get(&tid(&ids, "extension"))
            .copied()
            .unwrap_or_default();
        let kind = counters.python_probes();
        eprintln!(
            "{}: {:?} probes, objects thread {} python calls ({} bytes), {} libc calls; \
             extension thread {} python calls",
            python.label,
            kind,
            objects.python_calls,
            objects.python_bytes,
            objects.calls - objects.python_calls,
            extension.python_calls
        );
        // ctypes buffers: an extension module calling the exported allocator, seen either way.
        assert!(
            extension.python_calls >= N / 100,
            "{}: {} Python allocator calls for {} ctypes buffers",
            python.label,
            extension.python_calls,
            N / 100
        );
        match kind {
            Some(PythonAllocatorProbes::Implementation) => assert!(
                objects.python_calls >= N,
                "{}: {} Python allocator calls for {N} objects",
                python.label,
                objects.python_calls
            ),
            // Stripped builds whose interpreter inlines pymalloc into its own code (Debian's
            // python3.11): only calls through the exported symbols are visible (the extension
            // thread above), and the counters say so.
            Some(PythonAllocatorProbes::ExportedOnly) => assert!(
                malloc_support::is_debian(&python),
                "{}: expected pymalloc's implementation symbols in a pyenv build",
                python.label
            ),
            None => panic!(
                "{}: python_probes() empty with python_allocators",
                python.label
            ),
        }
        assert_eq!(objects.frees, 0, "no free probes unless asked for");
        assert!(
            objects.python_bytes <= objects.python_calls * 512,
            "the Python layer counts only requests pymalloc serves (at most 512 bytes)"
        );
    }
}
