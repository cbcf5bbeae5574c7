//! The `heap` view (SPEC §2.5): pmt's allocation hook loaded into launched interpreters,
//! sampling allocations by bytes and pairing them with their frees, so that memory is charged
//! to the code that still holds it, beside code that churns through far more.

mod common;

use common::{Interpreter, interpreter_or_skip, read_folded, run, sampler, script};
use std::time::{Duration, Instant};

/// What the stacks through `function` weigh, and the total.
fn share(folded: &[(Vec<String>, u64)], functions: &[&str]) -> (u64, u64) {
    let through = |stack: &Vec<String>| {
        stack.iter().any(|f| {
            functions
                .iter()
                .any(|name| f.starts_with(&format!("{name} (")))
        })
    };
    let part = folded
        .iter()
        .filter(|(s, _)| through(s))
        .map(|(_, w)| w)
        .sum();
    (part, folded.iter().map(|(_, w)| w).sum())
}

/// Keepers beside churn of dicts, lists and tuples: the keepers hold ≥ 90% of what the loop
/// holds at the peak; churn, whose objects are freed within an iteration, holds only what is
/// in flight at the peak (≤ 10%); `heap` is the default metric. `shapes` are the kept shapes
/// of heap_leak_churn.py: before 3.13 only objects CPython does not recycle (instances,
/// strings kept by a worker thread); from 3.13 on, whose reference tracer shows objects taken
/// from and given back to free lists, all four (dicts and tuples of floats too).
/// With `--heap-free-lists off` (`free_lists` false), the hook installs no reference tracer
/// and says so in its state (the JSON's `heap_free_lists` tally, read from the target).
fn keepers_hold_the_heap(interp: &Interpreter, shapes: &str, free_lists: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let folded = dir.path().join("heap.folded");
    let json = dir.path().join("heap.json");
    let mut command = sampler();
    command
        .args(["--heap-sample-bytes", "32768", "--collapsed"])
        .arg(&folded)
        .arg("--json")
        .arg(&json)
        .args(["--heap-free-lists", if free_lists { "on" } else { "off" }])
        .arg("--")
        .args(interp.argv())
        .arg(script("heap_leak_churn.py"))
        .args(["4", "--keep", shapes]);
    let output = run(command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}: {stderr}", interp.label);
    assert!(
        stderr.contains("(folded heap)"),
        "{}: {stderr}",
        interp.label
    );
    assert!(
        stderr.contains("the default metric, since the allocation hook ran"),
        "{stderr}"
    );
    // A program that ends is not taken for one replaced by exec (the hook's state is read
    // between two reads of stacks too, while the process exits).
    assert!(!stderr.contains("replaced"), "{stderr}");
    let folded = read_folded(&folded);
    let keepers: Vec<String> = shapes.split(',').map(|s| format!("keep_{s}")).collect();
    let keepers: Vec<&str> = keepers.iter().map(String::as_str).collect();
    let (kept, _) = share(&folded, &keepers);
    let (churned, _) = share(&folded, &["churn"]);
    let (loop_total, all) = share(&folded, &["main", "keep_strings"]);
    assert!(
        kept as f64 >= 0.9 * loop_total as f64,
        "{}: keepers {kept} of {loop_total} held by the loop ({all} in all)\n{stderr}",
        interp.label
    );
    assert!(
        (churned as f64) <= 0.10 * loop_total as f64,
        "{}: churn {churned} of {loop_total}\n{stderr}",
        interp.label
    );
    // 50 strings and 50 instances an iteration, a few MiB in two seconds.
    assert!(kept > 1 << 20, "{}: {kept}", interp.label);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("JSON output")).expect("JSON");
    assert_eq!(
        json["summary"]["tallies"]["heap_free_lists"],
        u64::from(free_lists),
        "{}: {stderr}",
        interp.label
    );
    assert_eq!(
        stderr.contains("objects recycled through free lists not followed"),
        !free_lists,
        "{stderr}"
    );
}

macro_rules! keepers_tests {
    ($($name:ident => $label:expr, $shapes:expr, $free_lists:expr;)*) => {$(
        #[test]
        fn $name() {
            if let Some(interp) = interpreter_or_skip($label) {
                keepers_hold_the_heap(&interp, $shapes, $free_lists);
            }
        }
    )*};
}

const NOT_RECYCLED: &str = "items,strings";
const ALL_SHAPES: &str = "dicts,tuples,items,strings";

keepers_tests! {
    keepers_hold_the_heap_3_8 => "3.8", NOT_RECYCLED, true;
    keepers_hold_the_heap_3_12 => "3.12", NOT_RECYCLED, true;
    keepers_hold_the_heap_system_3_11 => "system3.11", NOT_RECYCLED, true;
    keepers_hold_the_heap_3_13 => "3.13", ALL_SHAPES, true;
    keepers_hold_the_heap_sid_3_14 => "sid3.14", ALL_SHAPES, true;
    keepers_hold_the_heap_sid_3_15 => "sid3.15", ALL_SHAPES, true;
    keepers_without_free_lists_sid_3_14 => "sid3.14", NOT_RECYCLED, false;
}

/// pmt-sample killed mid-run: the launched target runs on, unharmed, to its normal end (the
/// hook notices its owner is gone and puts the allocators back).
#[test]
fn the_target_outlives_a_killed_sampler() {
    let Some(interp) = interpreter_or_skip("3.12") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("target.out");
    let mut child = sampler()
        .args(["--heap-sample-bytes", "16384", "--collapsed"])
        .arg(dir.path().join("x.folded"))
        .arg("--")
        .args(interp.argv())
        .arg(script("heap_leak_churn.py"))
        .arg("3")
        .stdout(std::fs::File::create(&out).expect("output file"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("pmt-sample starts");
    std::thread::sleep(Duration::from_millis(1200));
    child.kill().expect("kill pmt-sample");
    let _ = child.wait();
    let give_up = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&out)
        .unwrap_or_default()
        .contains("kept")
        && Instant::now() < give_up
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let printed = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        printed.starts_with("kept\n"),
        "the target did not run to its end after pmt-sample was killed: {printed:?}"
    );
}

/// A launched program that replaces itself (`os.execv`) and then exits through finalisation
/// with a daemon thread still allocating and an atexit handler that allocates: pmt reads the
/// new program (no read errors), its hook (loaded again with --subprocesses) charges what the
/// new program keeps, and the exit status is the program's.
fn exec_and_finalisation(label: &str) {
    let Some(interp) = interpreter_or_skip(label) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let folded = dir.path().join("heap.folded");
    let mut command = sampler();
    command
        .args(["--subprocesses", "--collapsed"])
        .arg(&folded)
        .arg("--")
        .args(interp.argv())
        .arg(script("exec_then_exit.py"));
    let output = run(command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{label}: {stderr}");
    assert!(
        stderr.contains("exited (exit status: 3)"),
        "{label}: {stderr}"
    );
    assert!(
        stderr.contains("1 program(s) replaced by exec"),
        "{label}: {stderr}"
    );
    assert!(stderr.contains(", 0 read errors,"), "{label}: {stderr}");
    let folded = read_folded(&folded);
    let (kept, all) = share(&folded, &["kept_after_exec"]);
    assert!(
        kept as f64 >= 0.6 * all as f64 && kept > 4 << 20,
        "{label}: kept_after_exec holds {kept} of {all}\n{stderr}"
    );
}

#[test]
fn exec_and_finalisation_3_12() {
    exec_and_finalisation("3.12");
}

#[test]
fn exec_and_finalisation_sid_3_14() {
    exec_and_finalisation("sid3.14");
}

/// Attached by `--pid` to a running CPython 3.14+, the hook is loaded through PEP 768: the
/// keepers (all four shapes: 3.14 has the reference tracer) hold the heap grown since
/// attaching, and the target runs on to its normal end.
///
/// Attached again once that run has ended (its files removed, the library still mapped):
/// the hook is installed again for the new run, which is charged the growth since it
/// attached, not what the first run's stacks counted (the keepers grow at a steady rate, so
/// the two equal runs charge about as much).
fn attach_loads_the_hook(label: &str) {
    let Some(interp) = interpreter_or_skip(label) else {
        return;
    };
    let mut target = common::start(
        &interp,
        &script("heap_leak_churn.py"),
        &["9", "--print-ready", "--keep", ALL_SHAPES],
    );
    target.wait_for_line("ready", Duration::from_secs(20));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut totals = Vec::new();
    for attach in ["first", "again"] {
        let folded = dir.path().join(format!("{attach}.folded"));
        let mut command = sampler();
        command
            .args(["--pid", &target.pid().to_string(), "--duration", "2.5"])
            .args(["--heap-sample-bytes", "32768", "--collapsed"])
            .arg(&folded);
        let output = run(command);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{label} {attach}: {stderr}");
        assert!(stderr.contains("PEP 768"), "{label} {attach}: {stderr}");
        assert!(
            stderr.contains("(folded heap)"),
            "{label} {attach}: {stderr}"
        );
        let folded = read_folded(&folded);
        let keepers = ["keep_dicts", "keep_tuples", "keep_items", "keep_strings"];
        let (kept, total) = share(&folded, &keepers);
        assert!(
            kept as f64 >= 0.9 * total as f64 && kept > 1 << 20,
            "{label} {attach}: keepers {kept} of {total}\n{stderr}"
        );
        totals.push(total as f64);
    }
    // Within 2x: the hook gets in sooner the second time (no library to load), which a
    // loaded machine stretches; the first run's counts taken over would add all it held.
    assert!(
        totals[1] < 2.0 * totals[0] && totals[0] < 2.0 * totals[1],
        "{label}: two equal attaches charged {totals:?} bytes"
    );
    target.wait_for_line("kept", Duration::from_secs(20));
}

#[test]
fn attach_loads_the_hook_sid_3_14() {
    attach_loads_the_hook("sid3.14");
}

#[test]
fn attach_loads_the_hook_sid_3_15() {
    attach_loads_the_hook("sid3.15");
}

/// Before 3.14 attaching says how to get the heap view and charges rss.
#[test]
fn attach_before_3_14_says_how_to_get_the_heap_view() {
    let Some(interp) = interpreter_or_skip("3.12") else {
        return;
    };
    let mut target = common::start(
        &interp,
        &script("heap_leak_churn.py"),
        &["3", "--print-ready"],
    );
    target.wait_for_line("ready", Duration::from_secs(20));
    let mut command = sampler();
    command.args(["--pid", &target.pid().to_string(), "--duration", "0.5"]);
    let output = run(command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("no heap view when attaching to CPython 3.12")
            && stderr.contains("pmt-sample -- CMD")
            && (stderr.contains("top stacks by rss") || stderr.contains("charged to rss"))
            && !stderr.contains("loaded through"),
        "{stderr}"
    );
}

/// A master that keeps ~30 MiB, then forks 2 workers that each keep ~3 MiB, sampled with
/// `--subprocesses` (launched, or attached before the master builds its table: then the
/// master's first stacks are its big ones): each worker's heap is its own ~3 MiB (its hook
/// starts with an empty table at the fork), none of what the master's stacks counted.
fn forked_workers_start_afresh(label: &str, attach: bool) {
    let Some(interp) = interpreter_or_skip(label) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let folded = dir.path().join("fork.folded");
    let mut command = sampler();
    command
        .args([
            "--subprocesses",
            "--heap-sample-bytes",
            "32768",
            "--collapsed",
        ])
        .arg(&folded);
    let mut target = None;
    if attach {
        let started = target.insert(common::start(
            &interp,
            &script("heap_fork.py"),
            &["--print-ready"],
        ));
        started.wait_for_line("ready", Duration::from_secs(20));
        command.args(["--pid", &started.pid().to_string()]);
    } else {
        command
            .arg("--")
            .args(interp.argv())
            .arg(script("heap_fork.py"));
    }
    let output = run(command);
    drop(target);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{label}: {stderr}");
    assert!(stderr.contains("(folded heap)"), "{label}: {stderr}");
    let mut workers = std::collections::BTreeMap::<String, (u64, u64)>::new();
    for (frames, weight) in read_folded(&folded) {
        if !frames[0].contains(": worker ") {
            continue;
        }
        let entry = workers.entry(frames[0].clone()).or_default();
        entry.0 += weight;
        if frames.iter().any(|f| f.starts_with("worker_keep (")) {
            entry.1 += weight;
        }
    }
    assert_eq!(
        workers.len(),
        2,
        "{label}: two workers: {workers:?}\n{stderr}"
    );
    for (root, (total, kept)) in &workers {
        // 300 bytearrays of 10,000 bytes: 2.9 MiB.
        assert!(
            (2 << 20..5 << 20).contains(total) && *kept as f64 >= 0.9 * *total as f64,
            "{label}: {root} charged {total} bytes, {kept} in worker_keep\n{stderr}"
        );
    }
}

#[test]
fn forked_workers_start_afresh_3_12() {
    forked_workers_start_afresh("3.12", false);
}

#[test]
fn forked_workers_start_afresh_attached_sid_3_14() {
    forked_workers_start_afresh("sid3.14", true);
}
