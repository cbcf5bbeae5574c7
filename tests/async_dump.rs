//! `pmt dump --async` against real interpreters: `tests/scripts/async_tasks.py` runs a task
//! group, a gather, a task awaiting a task through nested coroutines, an eager task and a loop
//! in a second thread, and the dump must list those tasks with their names, awaited_by edges and
//! coroutine stacks (functions and lines), on every interpreter from 3.11 (3.14+ read from
//! the interpreter's task lists, 3.11–3.13 from asyncio's registries); 1,000 more tasks must
//! all be listed; on 3.10 `--async` must refuse in one line.
//!
//! `pmt-sample --async`: `tests/scripts/async_two_tasks.py` runs two named tasks that take
//! turns spinning and allocating in their own functions; every sample of each function must
//! be rooted at its task (`<task NAME>`, under the thread root), on CPU samples (stacks read
//! at ticks) and on allocations (stacks captured by the allocation hook), on 3.12 (tasks
//! found through `_current_tasks`) and sid 3.14 (through the thread states); on 3.10 it must
//! refuse in one line.

mod common;

use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Line numbers of `# @name` markers in the script.
fn markers() -> HashMap<String, u64> {
    let text = std::fs::read_to_string(common::script("async_tasks.py")).expect("the script");
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let name = line.split("# @").nth(1)?;
            Some((name.trim().to_string(), i as u64 + 1))
        })
        .collect()
}

/// Runs the script with `many` extra tasks on `label` and returns the `--async --json` dump
/// and the text one, or `None` when the interpreter is missing.
fn dump(label: &str, many: usize) -> Option<(Value, String)> {
    let interp = common::interpreter_or_skip(label)?;
    let many = many.to_string();
    let mut target = common::start(&interp, &common::script("async_tasks.py"), &[&many]);
    target.wait_for_line("ready", Duration::from_secs(30));
    let pid = target.pid().to_string();
    let output = common::run({
        let mut command = common::pmt();
        command.args(["dump", "--pid", &pid, "--async", "--json"]);
        command
    });
    assert!(output.status.success(), "pmt dump --async --json failed");
    let json: Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    let output = common::run({
        let mut command = common::pmt();
        command.args(["dump", "--pid", &pid, "--async"]);
        command
    });
    assert!(output.status.success(), "pmt dump --async failed");
    Some((json, String::from_utf8_lossy(&output.stdout).into_owned()))
}

fn tasks_of<'a>(dump: &'a Value, thread: &str) -> &'a Vec<Value> {
    dump["threads"]
        .as_array()
        .and_then(|threads| threads.iter().find(|t| t["name"] == thread))
        .and_then(|t| t["tasks"].as_array())
        .unwrap_or_else(|| panic!("no tasks for thread {thread} in {dump:#}"))
}

fn task<'a>(tasks: &'a [Value], name: &str) -> &'a Value {
    tasks
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no task {name} in {tasks:#?}"))
}

/// `(function, line)` of each frame of a task's stack, innermost first.
fn stack(task: &Value) -> Vec<(String, u64)> {
    task["stack"]
        .as_array()
        .expect("a stack")
        .iter()
        .map(|f| {
            (
                f["function"].as_str().unwrap_or_default().to_string(),
                f["line"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

fn functions(task: &Value) -> Vec<String> {
    stack(task).into_iter().map(|(f, _)| f).collect()
}

fn awaited_by(task: &Value) -> Vec<u64> {
    task["awaited_by"]
        .as_array()
        .expect("awaited_by")
        .iter()
        .filter_map(Value::as_u64)
        .collect()
}

fn check(label: &str) {
    let Some((dump, text)) = dump(label, 0) else {
        return;
    };
    let lines = markers();
    let main = tasks_of(&dump, "MainThread");
    let id = |name: &str| task(main, name)["id"].as_u64().expect("an id");
    assert!(
        main.iter().all(|t| t["running"] == false),
        "every task is suspended: {main:#?}"
    );

    // A task awaiting a task, through nested coroutines.
    let inner = task(main, "inner");
    assert_eq!(awaited_by(inner), vec![id("awaiter")]);
    assert_eq!(
        stack(inner)[1..],
        [
            ("leaf".to_string(), lines["leaf-wait"]),
            ("deep".to_string(), lines["deep-await"]),
            ("inner_body".to_string(), lines["inner-await"]),
        ]
    );
    assert_eq!(functions(inner)[0], "Event.wait");
    assert_eq!(
        stack(task(main, "awaiter")),
        [("awaiter".to_string(), lines["awaiter-await"])]
    );

    // gather: its two (unnamed) children are awaited by the gathering task.
    assert_eq!(
        stack(task(main, "gatherer")),
        [("gatherer".to_string(), lines["gather"])]
    );
    let gathered: Vec<&Value> = main
        .iter()
        .filter(|t| functions(t).last().is_some_and(|f| f == "gathered"))
        .collect();
    assert_eq!(gathered.len(), 2, "two gathered tasks in {main:#?}");
    for child in gathered {
        assert!(
            child["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("Task-"))
        );
        assert_eq!(awaited_by(child), vec![id("gatherer")]);
        assert_eq!(functions(child), ["Event.wait", "leaf", "gathered"]);
    }

    // TaskGroup: the owner waits in the group's __aexit__, awaited by nobody; its children
    // are awaited by it.
    let owner = task(main, "group-owner");
    let owner_stack = functions(owner);
    assert_eq!(owner_stack.last().map(String::as_str), Some("group_owner"));
    assert!(
        owner_stack.iter().any(|f| f == "TaskGroup.__aexit__"),
        "{owner_stack:?}"
    );
    assert!(awaited_by(owner).is_empty());
    for name in ["group-child-1", "group-child-2"] {
        let child = task(main, name);
        assert_eq!(awaited_by(child), vec![id("group-owner")]);
        assert_eq!(functions(child), ["Event.wait", "leaf", "deep"]);
    }
    assert_eq!(
        stack(task(main, "main")).last(),
        Some(&("main".to_string(), lines["main-wait"]))
    );

    // An eager task (3.12+), suspended like any other.
    let minor: u32 = label
        .rsplit('.')
        .next()
        .and_then(|m| m.parse().ok())
        .expect("label ends in a minor version");
    if minor >= 12 {
        let eager = task(main, "eager");
        assert_eq!(functions(eager), ["Event.wait", "leaf", "deep"]);
        assert!(awaited_by(eager).is_empty());
    }

    // A task of the pure-Python fallback (read from its instance dict on 3.11–3.13).
    if minor <= 13 {
        let python = task(main, "python-task");
        assert_eq!(functions(python), ["Event.wait", "leaf", "deep"]);
    }

    // The second thread's loop and its tasks.
    let other = tasks_of(&dump, "loop-thread");
    assert_eq!(other.len(), 2, "{other:#?}");
    let worker = task(other, "thread-worker");
    assert_eq!(functions(worker), ["Event.wait", "leaf"]);
    let thread_main = other
        .iter()
        .find(|t| t["name"] != "thread-worker")
        .expect("the thread's main task");
    assert_eq!(
        stack(thread_main),
        [("thread_main".to_string(), lines["thread-await"])]
    );
    assert_eq!(
        awaited_by(worker),
        vec![thread_main["id"].as_u64().unwrap()]
    );

    // Text: the tree puts each task under the one awaiting it.
    let awaiter_at = text.find("task \"awaiter\"").expect("awaiter in the text");
    let inner_line = text[awaiter_at..]
        .lines()
        .find(|l| l.contains("task \"inner\""))
        .expect("inner under awaiter");
    let awaiter_line = text[awaiter_at..].lines().next().unwrap_or_default();
    let indent = |l: &str| l.len() - l.trim_start().len();
    assert!(indent(inner_line) > indent(awaiter_line), "{text}");
}

#[test]
fn task_trees_on_3_11() {
    check("3.11");
}

#[test]
fn task_trees_on_3_12() {
    check("3.12");
}

#[test]
fn task_trees_on_3_13() {
    check("3.13");
}

#[test]
fn task_trees_on_system_3_11() {
    check("system3.11");
}

#[test]
fn task_trees_on_sid_3_13() {
    check("sid3.13");
}

#[test]
fn task_trees_on_sid_3_14() {
    check("sid3.14");
}

#[test]
fn task_trees_on_sid_3_15() {
    check("sid3.15");
}

#[test]
fn a_thousand_tasks_are_all_listed() {
    for label in ["3.12", "sid3.14", "sid3.15"] {
        let Some((dump, _)) = dump(label, 1000) else {
            continue;
        };
        let main = tasks_of(&dump, "MainThread");
        let many: HashSet<u64> = main
            .iter()
            .filter(|t| t["name"].as_str().is_some_and(|n| n.starts_with("many-")))
            .map(|t| t["id"].as_u64().expect("an id"))
            .collect();
        assert_eq!(many.len(), 1000, "{label}");
        let names: HashSet<&str> = main.iter().filter_map(|t| t["name"].as_str()).collect();
        assert!((0..1000).all(|i| names.contains(format!("many-{i}").as_str())));
        assert!(
            main.iter()
                .filter(|t| t["name"].as_str().is_some_and(|n| n.starts_with("many-")))
                .all(|t| functions(t) == ["Event.wait", "leaf"]),
            "{label}"
        );
    }
}

#[test]
fn on_3_10_async_is_refused_in_one_line() {
    let Some(interp) = common::interpreter_or_skip("3.10") else {
        return;
    };
    let mut target = common::start_code(
        &interp,
        "import asyncio\n\nasync def main():\n    print('ready', flush=True)\n    await asyncio.sleep(3600)\n\nasyncio.run(main())\n",
    );
    target.wait_for_line("ready", Duration::from_secs(30));
    let output = common::pmt()
        .args(["dump", "--pid", &target.pid().to_string(), "--async"])
        .output()
        .expect("running pmt");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("3.10") && stderr.contains("--async") && stderr.contains("not supported"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
    let output = common::sampler()
        .args([
            "--pid",
            &target.pid().to_string(),
            "--async",
            "--duration",
            "1",
        ])
        .output()
        .expect("running pmt-sample");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("3.10") && stderr.contains("--async"),
        "{stderr}"
    );
}

/// The weight of the folded stacks through `function`, and the part of it whose stacks are
/// rooted (under the thread root) at `<task TASK>` and at no other task.
fn rooted(folded: &[(Vec<String>, u64)], function: &str, task: &str) -> (u64, u64) {
    let through: Vec<&(Vec<String>, u64)> = folded
        .iter()
        .filter(|(frames, _)| {
            frames
                .iter()
                .any(|f| f.starts_with(&format!("{function} (")))
        })
        .collect();
    let all = through.iter().map(|(_, w)| w).sum();
    let under = through
        .iter()
        .filter(|(frames, _)| {
            frames
                .first()
                .is_some_and(|f| f.starts_with("thread MainThread"))
                && frames
                    .get(1)
                    .is_some_and(|f| *f == format!("<task {task}>"))
                && frames.iter().filter(|f| f.starts_with("<task ")).count() == 1
        })
        .map(|(_, w)| w)
        .sum();
    (all, under)
}

/// Samples `async_two_tasks.py` launched under `label` with `--async` and checks that each
/// task's function is under its task, for CPU samples and sampled allocations.
fn samples_rooted_at_tasks(label: &str) {
    let Some(interp) = common::interpreter_or_skip(label) else {
        return;
    };
    let _serial = common::serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let timeline = dir.path().join("t.json");
    let output = common::run({
        let mut command = common::sampler();
        command
            .args(["--async", "--rate", "200", "--json"])
            .arg(&timeline)
            .arg("--")
            .args(interp.argv())
            .arg(common::script("async_two_tasks.py"))
            .arg("2");
        command
    });
    assert!(
        output.status.success(),
        "pmt-sample --async failed on {label}"
    );
    for metric in ["cpu", "heap-alloc"] {
        let folded = dir.path().join(format!("{metric}.folded"));
        let output = common::run({
            let mut command = common::pmt();
            command
                .args(["report", "--threads", "--metric", metric, "--collapsed"])
                .arg(&folded)
                .arg(&timeline);
            command
        });
        assert!(output.status.success(), "pmt report failed");
        let stacks = common::read_folded(&folded);
        for (function, task) in [("alpha_work", "alpha"), ("beta_work", "beta")] {
            let (all, under) = rooted(&stacks, function, task);
            assert!(
                all > 0,
                "{label} {metric}: no samples of {function}: {stacks:?}"
            );
            assert!(
                under as f64 >= 0.95 * all as f64,
                "{label} {metric}: {under} of {all} of {function} under <task {task}>: {stacks:?}"
            );
        }
    }
}

#[test]
fn samples_are_rooted_at_their_task_on_3_12() {
    samples_rooted_at_tasks("3.12");
}

#[test]
fn samples_are_rooted_at_their_task_on_sid_3_14() {
    samples_rooted_at_tasks("sid3.14");
}
