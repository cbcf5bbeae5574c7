//! `pmt heap` against real interpreters: every CPython here runs `tests/scripts/heap_holders.py`
//! (a small-object leak kept in a module list, a class-attribute dict, a deque in a closure, a
//! module set, a thread's local list and a suspended generator's local list, beside churn). The snapshot must name each holder by
//! the path a Python user writes, with its item count within 1%, and its counts of objects on
//! the collector's lists must agree with `gc.get_objects()` run in the target itself.

mod common;

use prost::Message;
use pymemtrace::output::pprof::proto;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
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

/// The suspended generator's local list: through its frame object up to 3.10, in the frame
/// embedded in it from 3.11 on.
fn generator_holder(snap: &Value) -> &'static str {
    let minor = snap["python_version"]
        .as_str()
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok())
        .expect("the target's version");
    if minor <= 10 {
        "__main__.PENDING.gi_frame local rows"
    } else {
        "__main__.PENDING local rows"
    }
}

/// Starts the program and returns it with its `gc.get_objects()` counts by type.
fn start(interp: &common::Interpreter) -> (common::Target, HashMap<String, u64>) {
    let script = common::script("heap_holders.py");
    let mut target = common::start(interp, &script, &[&ITEMS.to_string()]);
    let counts = serde_json::from_value(target.wait_for_json("COUNTS ", Duration::from_secs(60)))
        .expect("counts by type name");
    target.wait_for_line("READY", Duration::from_secs(30));
    (target, counts)
}

fn snapshot(label: &str, pid: i32) -> Value {
    let pid = pid.to_string();
    let (snap, text) = common::pmt_heap_json(label, &["--holders", "30", "--pid", &pid]);
    assert!(text.contains("__main__.KEEP"), "{label}: report:\n{text}");
    snap
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
    for wanted in HOLDERS.iter().copied().chain([generator_holder(&snap)]) {
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
    let pprof = dir.path().join("growth.pb.gz");
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
        .arg("--pprof")
        .arg(&pprof)
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
    // The pprof carries the growth: GROW gained bytes and at least a dict per item gained;
    // STEADY gained nothing.
    let stacks = read_pprof(&pprof);
    let (bytes, objects) = cumulative(&stacks, "__main__;__main__.GROW");
    assert!(
        bytes > 0 && objects >= gained as i64,
        "GROW gained {bytes} bytes, {objects} objects: {stacks:?}"
    );
    assert_eq!(cumulative(&stacks, "__main__;__main__.STEADY"), (0, 0));
}

/// `--diff` names who grew a holder: the watchpoint on `KEEP`'s size charges its appends to
/// `remember()` at the line that appends, called from `handle()` in a worker thread, with as
/// many items added as writes (one fewer at most). On every interpreter, one 2-second window
/// each.
fn check_who_grew(label: &str) {
    let Some(interp) = common::interpreter_or_skip(label) else {
        return;
    };
    let script = common::script("heap_watch.py");
    let line = *common::lines_starting(&script, "KEEP.append")
        .first()
        .expect("the appending line");
    let mut target = common::start(&interp, &script, &[]);
    target.wait_for_line("READY", Duration::from_secs(30));
    let pid = target.pid().to_string();
    let (diff, text) =
        common::pmt_heap_json(label, &["--diff", "2", "--holders", "5", "--pid", &pid]);
    let who = &diff["growth"]["who_grew"];
    let keep = common::holder(&who["holders"], "__main__.KEEP")
        .unwrap_or_else(|| panic!("{label}: KEEP not watched: {who:#}"));
    assert!(keep["refused"].is_null(), "{label}: {keep:#}");
    let top = &keep["grown_by"][0];
    let stack: Vec<&str> = top["stack"]
        .as_array()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        stack.len() >= 2
            && stack[0].starts_with("remember (")
            && stack[0].ends_with(&format!("heap_watch.py:{line})"))
            && stack[1].starts_with("handle ("),
        "{label}: KEEP grown by {stack:?}: {who:#}"
    );
    let writes = top["writes"].as_u64().unwrap_or(0);
    let added = top["added"].as_u64().unwrap_or(0);
    // Each append adds one item; a write in the microseconds between setting the breakpoints
    // and reading the size they start from adds none.
    assert!(
        writes > 0 && added <= writes && added + 1 >= writes,
        "{label}: {writes} writes, {added} added: {top}"
    );
    assert!(
        text.contains("grown by remember ("),
        "{label}: report:\n{text}"
    );
}

#[test]
fn who_grew_3_6() {
    check_who_grew("3.6");
}

#[test]
fn who_grew_3_7() {
    check_who_grew("3.7");
}

#[test]
fn who_grew_3_8() {
    check_who_grew("3.8");
}

#[test]
fn who_grew_3_9() {
    check_who_grew("3.9");
}

#[test]
fn who_grew_3_10() {
    check_who_grew("3.10");
}

#[test]
fn who_grew_3_11() {
    check_who_grew("3.11");
}

#[test]
fn who_grew_3_12() {
    check_who_grew("3.12");
}

#[test]
fn who_grew_3_13() {
    check_who_grew("3.13");
}

#[test]
fn who_grew_system_3_11() {
    check_who_grew("system3.11");
}

#[test]
fn who_grew_sid_3_13() {
    check_who_grew("sid3.13");
}

#[test]
fn who_grew_sid_3_14() {
    check_who_grew("sid3.14");
}

#[test]
fn who_grew_sid_3_15() {
    check_who_grew("sid3.15");
}

/// A module list that starts empty while 600 bigger ones fill the top of the holders: the
/// first snapshot lists it all the same (every module's and class's containers are), so
/// `--diff` watches it and charges its appends to `grow()` at the appending line.
#[test]
fn who_grew_from_empty_3_12() {
    let Some(interp) = common::interpreter_or_skip("3.12") else {
        return;
    };
    let script = common::script("heap_watch_empty.py");
    let line = *common::lines_starting(&script, "KEEP.append")
        .first()
        .expect("the appending line");
    let mut target = common::start(&interp, &script, &[]);
    target.wait_for_line("READY", Duration::from_secs(30));
    let pid = target.pid().to_string();
    let (diff, _) = common::pmt_heap_json("3.12", &["--diff", "2", "--pid", &pid]);
    let listed = |snapshot: &Value| {
        snapshot["holders"]
            .as_array()
            .and_then(|h| h.iter().position(|h| h["path"] == "__main__.KEEP"))
    };
    let before = &diff["before"];
    let at = listed(before).unwrap_or_else(|| panic!("KEEP not in the first snapshot"));
    // Past the 500 top holders: listed as a module's container, not for what it retained.
    assert!(at >= 500, "KEEP is holder {at} of the first snapshot");
    let who = &diff["growth"]["who_grew"];
    let keep = common::holder(&who["holders"], "__main__.KEEP")
        .unwrap_or_else(|| panic!("KEEP not watched: {who:#}"));
    let stack: Vec<&str> = keep["grown_by"][0]["stack"]
        .as_array()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        stack.first().is_some_and(
            |f| f.starts_with("grow (") && f.ends_with(&format!("heap_watch_empty.py:{line})"))
        ),
        "KEEP grown by {stack:?}: {who:#}"
    );
}

/// A watched holder freed during the window: `HOLD` grows, is dropped, and short lists made
/// after take its memory and write its size field. The writes before it went are charged to
/// `grow()`; none of those after (`reuse()`'s) are, and the holder says it went. One 4-second
/// window per version.
fn check_freed_holder(label: &str) {
    let Some(interp) = common::interpreter_or_skip(label) else {
        return;
    };
    let mut target = common::start(&interp, &common::script("heap_freed.py"), &[]);
    target.wait_for_line("READY", Duration::from_secs(30));
    let pid = target.pid().to_string();
    let (diff, text) =
        common::pmt_heap_json(label, &["--diff", "4", "--holders", "5", "--pid", &pid]);
    let who = &diff["growth"]["who_grew"];
    let hold = common::holder(&who["holders"], "__main__.HOLD")
        .unwrap_or_else(|| panic!("{label}: HOLD not watched: {who:#}"));
    assert!(hold["refused"].is_null(), "{label}: {hold:#}");
    let grown_by = hold["grown_by"].as_array().expect("grown_by");
    let innermost = |g: &Value| g["stack"][0].as_str().unwrap_or("").to_string();
    assert!(
        grown_by.iter().all(|g| innermost(g).starts_with("grow (")),
        "{label}: writes after HOLD was freed were charged: {hold:#}"
    );
    let writes: u64 = grown_by.iter().filter_map(|g| g["writes"].as_u64()).sum();
    assert!(writes > 0, "{label}: no writes by grow(): {hold:#}");
    let after = hold["gone"].as_u64().unwrap_or(0);
    assert!(after > 0, "{label}: HOLD not seen gone: {hold:#}");
    assert!(
        text.contains("freed while watched"),
        "{label}: report:\n{text}"
    );
}

#[test]
fn freed_holder_3_12() {
    check_freed_holder("3.12");
}

#[test]
fn freed_holder_sid_3_14() {
    check_freed_holder("sid3.14");
}

/// A `--pprof` file decoded with the project's own prost types: per stack (root-first function
/// names joined with `;`), its `inuse_space` and `inuse_objects`; checks the sample types.
fn read_pprof(path: &Path) -> HashMap<String, (i64, i64)> {
    let gz = std::fs::read(path).expect("reading the pprof");
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut bytes)
        .expect("the pprof is gzipped");
    let pprof = proto::Profile::decode(bytes.as_slice()).expect("the pprof decodes");
    let s = &pprof.string_table;
    let types: Vec<(&str, &str)> = pprof
        .sample_type
        .iter()
        .map(|t| (s[t.r#type as usize].as_str(), s[t.unit as usize].as_str()))
        .collect();
    assert_eq!(
        types,
        [("inuse_space", "bytes"), ("inuse_objects", "count")]
    );
    let name = |location: u64| {
        let location = pprof
            .location
            .iter()
            .find(|l| l.id == location)
            .expect("a sample's location exists");
        let function = pprof
            .function
            .iter()
            .find(|f| f.id == location.line[0].function_id)
            .expect("a location's function exists");
        s[function.name as usize].clone()
    };
    let mut stacks: HashMap<String, (i64, i64)> = HashMap::new();
    for sample in &pprof.sample {
        let stack: Vec<String> = sample.location_id.iter().rev().map(|&l| name(l)).collect();
        let entry = stacks.entry(stack.join(";")).or_default();
        entry.0 += sample.value[0];
        entry.1 += sample.value[1];
    }
    stacks
}

/// The sum over the stacks that start with `prefix` (root first, `;`-joined): a frame's
/// cumulative value, as `go tool pprof -top` shows it.
fn cumulative(stacks: &HashMap<String, (i64, i64)>, prefix: &str) -> (i64, i64) {
    stacks
        .iter()
        .filter(|(stack, _)| *stack == prefix || stack.starts_with(&format!("{prefix};")))
        .fold((0, 0), |sum, (_, v)| (sum.0 + v.0, sum.1 + v.1))
}

/// `--pprof` and `--flame`: the holder `__main__.STEADY` is the stack `__main__` →
/// `__main__.STEADY`, whose cumulative bytes and objects are what the JSON of the same
/// snapshot says it retains (a list of 1,000 dicts: at least 1,001 objects); the pprof's total
/// is the whole heap the walk found; the flamegraph names the holder.
fn check_profile_outputs(label: &str) {
    let Some(interp) = common::interpreter_or_skip(label) else {
        return;
    };
    let mut target = common::start(&interp, &common::script("heap_grows.py"), &[]);
    target.wait_for_line("READY", Duration::from_secs(30));
    let dir = tempfile::tempdir().expect("temp dir");
    let (json, pprof, svg) = (
        dir.path().join("heap.json"),
        dir.path().join("heap.pb.gz"),
        dir.path().join("heap.svg"),
    );
    let out = common::pmt()
        .args(["heap", "--pid", &target.pid().to_string(), "--json"])
        .arg(&json)
        .arg("--pprof")
        .arg(&pprof)
        .arg("--flame")
        .arg(&svg)
        .output()
        .expect("running pmt heap");
    drop(target);
    assert!(
        out.status.success(),
        "{label}: pmt heap failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snap: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("reading the JSON")).expect("JSON");
    let steady = snap["holders"]
        .as_array()
        .and_then(|h| h.iter().find(|h| h["path"] == "__main__.STEADY"))
        .unwrap_or_else(|| panic!("{label}: no __main__.STEADY in {snap}"));
    let stacks = read_pprof(&pprof);
    let (bytes, objects) = cumulative(&stacks, "__main__;__main__.STEADY");
    assert_eq!(
        bytes,
        steady["retained_bytes"].as_i64().unwrap_or(-1),
        "{label}: {stacks:?}"
    );
    assert_eq!(objects, steady["retained_objects"].as_i64().unwrap_or(-1));
    assert!(objects >= 1001, "{label}: STEADY retains {objects} objects");
    let total = stacks.values().fold((0, 0), |t, v| (t.0 + v.0, t.1 + v.1));
    assert_eq!(
        total,
        (
            snap["bytes"].as_i64().unwrap_or(-1),
            snap["objects"].as_i64().unwrap_or(-1)
        ),
        "{label}: the pprof's total is the heap"
    );
    let svg = std::fs::read_to_string(&svg).expect("reading the SVG");
    assert!(
        svg.contains("__main__.STEADY"),
        "{label}: the SVG names the holder"
    );
}

#[test]
fn pprof_and_flame_3_12() {
    check_profile_outputs("3.12");
}

#[test]
fn pprof_and_flame_sid_3_14() {
    check_profile_outputs("sid3.14");
}

/// Where the RSS is: the parts add up to the RSS, a 50 MiB bytes object is under Python
/// objects, and the half-emptied pools show as pymalloc free space.
fn check_rss(label: &str) {
    let Some(interp) = common::interpreter_or_skip(label) else {
        return;
    };
    let mut target = common::start(&interp, &common::script("heap_rss.py"), &[]);
    target.wait_for_line("READY", Duration::from_secs(30));
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("heap.json");
    let out = common::pmt()
        .args(["heap", "--pid", &target.pid().to_string(), "--json"])
        .arg(&json)
        .output()
        .expect("running pmt heap");
    drop(target);
    assert!(
        out.status.success(),
        "{label}: pmt heap failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Where the RSS is"), "{label}: {text}");
    let snap: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("reading the JSON")).expect("JSON");
    let rss = &snap["rss"];
    let part = |name: &str| {
        rss[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{label}: no {name} in {rss}"))
    };
    let parts = [
        "python_objects",
        "pymalloc_free",
        "c_heap_other",
        "thread_stacks",
        "mapped_files",
        "other",
    ];
    let sum: u64 = parts.iter().map(|p| part(p)).sum();
    assert_eq!(
        sum,
        part("rss"),
        "{label}: the parts add up to the RSS: {rss}"
    );
    assert!(part("python_objects") >= 50 << 20, "{label}: {rss}");
    assert!(part("pymalloc_free") >= 1 << 20, "{label}: {rss}");
    assert!(
        part("thread_stacks") > 0 && part("mapped_files") > 0,
        "{label}: {rss}"
    );
    // The whole process, as the kernel counts it at about the same time.
    assert!(part("rss") >= 55 << 20, "{label}: {rss}");
}

#[test]
fn rss_3_12() {
    check_rss("3.12");
}

#[test]
fn rss_3_6() {
    check_rss("3.6");
}

#[test]
fn rss_sid_3_14() {
    check_rss("sid3.14");
}

/// A line of `/proc/PID/status`, such as `TracerPid`.
fn status_field(pid: i32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

/// The target is let go and runs on: no tracer, not stopped, and its context switches count
/// up (it wakes every millisecond).
fn assert_runs_on(pid: i32) {
    assert_eq!(status_field(pid, "TracerPid").as_deref(), Some("0"));
    let state = status_field(pid, "State").unwrap_or_default();
    assert!(
        !state.starts_with('T') && !state.starts_with('t'),
        "{state}"
    );
    let switches = || {
        status_field(pid, "voluntary_ctxt_switches")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = switches();
    std::thread::sleep(Duration::from_millis(300));
    assert!(switches() > before + 10, "the target does not run on");
}

/// `--blocking`: the report says how long the target was paused, and it runs on after.
#[test]
fn blocking_pauses_and_resumes() {
    let Some(interp) = common::interpreter_or_skip("3.12") else {
        return;
    };
    let mut target = common::start(&interp, &common::script("heap_ticks.py"), &["50000"]);
    target.wait_for_line("READY", Duration::from_secs(30));
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("heap.json");
    let out = common::pmt()
        .args([
            "heap",
            "--blocking",
            "--pid",
            &target.pid().to_string(),
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("running pmt heap --blocking");
    assert!(
        out.status.success(),
        "pmt heap --blocking failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("The process was paused for"),
        "the report says the pause: {text}"
    );
    let snap: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("reading the JSON")).expect("JSON");
    let paused = snap["paused_seconds"].as_f64().unwrap_or(0.0);
    let seconds = snap["seconds"].as_f64().unwrap_or(0.0);
    assert!(
        paused > 0.0 && paused <= seconds,
        "{paused} s of {seconds} s"
    );
    assert!(text.contains("__main__.KEEP"), "{text}");
    assert_runs_on(target.pid());
}

/// Ctrl-C while the target is paused: pmt ends, and the target runs on.
#[test]
fn interrupted_blocking_read_resumes_the_target() {
    let Some(interp) = common::interpreter_or_skip("3.12") else {
        return;
    };
    let mut target = common::start(&interp, &common::script("heap_ticks.py"), &["400000"]);
    target.wait_for_line("READY", Duration::from_secs(60));
    let pid = target.pid();
    let paused = || status_field(pid, "TracerPid").as_deref() != Some("0");
    // The pause lasts a fraction of a second: on a loaded machine this thread may not run
    // again until it is over. Only a try whose signal was queued while pmt still held the
    // target counts (the target still traced right after `kill` returned).
    for _ in 0..5 {
        let mut command = common::pmt();
        command
            .args(["heap", "--blocking", "--pid", &pid.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // Ctrl-C as a terminal delivers it: a test run started in the background (where
        // SIGINT is ignored, and stays ignored across exec) must not make pmt deaf to it.
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut pmt = command.spawn().expect("starting pmt heap --blocking");
        let started = Instant::now();
        while !paused() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "pmt never paused the target"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        // SAFETY: signals pmt, the child this test started.
        unsafe {
            libc::kill(pmt.id() as i32, libc::SIGINT);
        }
        let landed = paused();
        let status = pmt.wait().expect("waiting for pmt");
        if landed {
            assert!(!status.success(), "pmt was interrupted: {status:?}");
            assert_runs_on(pid);
            return;
        }
        assert_runs_on(pid);
    }
    panic!("in 5 tries, no Ctrl-C reached pmt while the target was paused");
}
