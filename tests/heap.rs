//! `pmt heap` against real interpreters: every CPython here runs `tests/scripts/heap_holders.py`
//! (a small-object leak kept in a module list, a class-attribute dict, a deque in a closure, a
//! module set and a thread's local list, beside churn). The snapshot must name each holder by
//! the path a Python user writes, with its item count within 1%, and its counts of objects on
//! the collector's lists must agree with `gc.get_objects()` run in the target itself.

mod common;

use serde_json::Value;
use std::collections::HashMap;
use std::io::BufRead;
use std::time::{Duration, Instant};

/// Items each holder keeps.
const ITEMS: u64 = 20_000;
/// How many of the target's most numerous tracked types are compared with `gc.get_objects()`.
const COMPARED_TYPES: usize = 20;

/// The holders the program makes, as `pmt heap` must name them.
const HOLDERS: &[&str] = &[
    "__main__.KEEP",
    "__main__.Registry.entries",
    "<closure of __main__.make_store.store>.seen",
    "__main__.SEEN",
    "thread worker: handler() local rows",
];

/// Starts the program and returns it with its `gc.get_objects()` counts by type.
fn start(interp: &common::Interpreter) -> (common::Target, HashMap<String, u64>) {
    let script = common::script("heap_holders.py");
    let mut target = common::start(interp, &script, &[&ITEMS.to_string()]);
    let started = Instant::now();
    let mut line = String::new();
    let counts = loop {
        line.clear();
        let n = target
            .stdout
            .read_line(&mut line)
            .expect("reading the target's stdout");
        assert!(n > 0, "the target exited before printing its counts");
        if let Some(json) = line.trim_end().strip_prefix("COUNTS ") {
            break serde_json::from_str(json).expect("counts are JSON");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no counts in time"
        );
    };
    target.wait_for_line("READY", Duration::from_secs(30));
    (target, counts)
}

fn snapshot(label: &str, pid: i32) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("heap.json");
    let out = common::pmt()
        .args([
            "heap",
            "--holders",
            "30",
            "--pid",
            &pid.to_string(),
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("running pmt heap");
    assert!(
        out.status.success(),
        "{label}: pmt heap failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("__main__.KEEP"), "{label}: report:\n{text}");
    serde_json::from_slice(&std::fs::read(&json).expect("reading the JSON")).expect("JSON")
}

fn within_one_percent(found: u64, wanted: u64, slack: u64) -> bool {
    found.abs_diff(wanted) <= (wanted / 100).max(slack)
}

fn check(label: &str) {
    let Some(interp) = common::interpreter_or_skip(label) else {
        return;
    };
    let (target, gc_counts) = start(&interp);
    let snap = snapshot(label, target.pid());
    drop(target);

    let holders = snap["holders"].as_array().expect("holders");
    for wanted in HOLDERS {
        let holder = holders
            .iter()
            .find(|h| h["path"] == *wanted)
            .unwrap_or_else(|| panic!("{label}: no holder {wanted} in {holders:#?}"));
        let items = holder["items"].as_u64().unwrap_or_default();
        assert!(
            within_one_percent(items, ITEMS, 0),
            "{label}: {wanted} holds {items} items, not {ITEMS}"
        );
        assert!(
            holder["retained_objects"].as_u64().unwrap_or_default() >= ITEMS,
            "{label}: {wanted} retains too little: {holder}"
        );
    }

    let tracked: HashMap<&str, u64> = snap["types"]
        .as_array()
        .expect("types")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or_default(),
                t["tracked"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let mut top: Vec<(&String, &u64)> = gc_counts.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut mismatches = Vec::new();
    for (name, &wanted) in top.into_iter().take(COMPARED_TYPES) {
        let found = tracked.get(name.as_str()).copied().unwrap_or(0);
        // The churn thread keeps at most 4 dicts and 5 lists alive at once.
        if !within_one_percent(found, wanted, 5) {
            mismatches.push(format!("{name}: pmt {found}, gc.get_objects() {wanted}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{label}: tracked counts differ from gc.get_objects():\n{}",
        mismatches.join("\n")
    );
    // A collector list that the churn thread keeps changing may stay torn through every
    // re-read on a loaded machine (seen once in 12 on 2 busy cores): it is counted, and the
    // counts above hold all the same.
    let not_followed = &snap["not_followed"];
    let torn = not_followed["torn_gc_lists"].as_u64().unwrap_or(u64::MAX);
    assert!(torn <= 2, "{label}: {not_followed}");
}

#[test]
fn heap_3_6() {
    check("3.6");
}

#[test]
fn heap_3_7() {
    check("3.7");
}

#[test]
fn heap_3_8() {
    check("3.8");
}

#[test]
fn heap_3_9() {
    check("3.9");
}

#[test]
fn heap_3_10() {
    check("3.10");
}

#[test]
fn heap_3_11() {
    check("3.11");
}

#[test]
fn heap_3_12() {
    check("3.12");
}

#[test]
fn heap_3_13() {
    check("3.13");
}

#[test]
fn heap_system_3_11() {
    check("system3.11");
}

#[test]
fn heap_sid_3_13() {
    check("sid3.13");
}

#[test]
fn heap_sid_3_14() {
    check("sid3.14");
}

#[test]
fn heap_sid_3_15() {
    check("sid3.15");
}

#[test]
fn a_process_that_is_gone_gives_one_line() {
    let out = common::pmt()
        .args(["heap", "--pid", "999999999"])
        .output()
        .expect("running pmt heap");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

/// `--diff`: of two holders, the one that keeps growing is named first, with the items it
/// gained; the steady one gained none. One version: the diff is computed from two snapshots
/// the tests above check on every version.
#[test]
fn diff_names_the_growing_holder() {
    let Some(interp) = common::interpreter_or_skip("3.12") else {
        return;
    };
    let mut target = common::start(&interp, &common::script("heap_grows.py"), &[]);
    target.wait_for_line("READY", Duration::from_secs(30));
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("diff.json");
    let out = common::pmt()
        .args([
            "heap",
            "--diff",
            "1",
            "--pid",
            &target.pid().to_string(),
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("running pmt heap --diff");
    assert!(
        out.status.success(),
        "pmt heap --diff failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let diff: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("reading the JSON")).expect("JSON");
    let holders = diff["growth"]["holders"].as_array().expect("holders");
    let first = &holders[0];
    assert_eq!(first["path"], "__main__.GROW", "{holders:#?}");
    let items = &first["items"];
    let before = items[0]
        .as_u64()
        .expect("GROW among the first snapshot's holders");
    let gained = items[1].as_u64().unwrap_or(0).saturating_sub(before);
    // One append per millisecond at most, in a second (a loaded machine appends fewer).
    assert!(
        (50..=1100).contains(&gained),
        "GROW gained {gained}: {first}"
    );
    let steady = holders
        .iter()
        .find(|h| h["path"] == "__main__.STEADY")
        .expect("STEADY among the holders");
    assert_eq!(steady["items"][0], steady["items"][1], "{steady}");
    let dicts = diff["growth"]["types"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "dict"))
        .expect("dict grew");
    assert!(
        dicts["count"][1].as_u64() > dicts["count"][0].as_u64(),
        "{dicts}"
    );
}
