//! `pmt process` and `pmt tree` against real processes: a child that grows by a known amount,
//! a tree whose children come and go, JSON round trips, the SVG plot, and bad targets.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const MIB: f64 = 1024.0 * 1024.0;

fn pmt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pmt"))
}

/// A real CPython: Debian's, else the first `python3` on PATH.
fn python() -> PathBuf {
    let system = Path::new("/usr/bin/python3");
    if system.exists() {
        return system.to_path_buf();
    }
    PathBuf::from("python3")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("pmt runs");
    assert!(
        out.status.success(),
        "pmt failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The JSON of every `ProcessLoggingThread-JSON` line, with its marker suffix.
fn log_records(stdout: &str) -> Vec<(String, serde_json::Value)> {
    stdout
        .lines()
        .filter_map(|line| {
            let at = line.find("ProcessLoggingThread-JSON")?;
            let rest = &line[at + "ProcessLoggingThread-JSON".len()..];
            let (marker, json) = rest.split_once(' ')?;
            Some((marker.to_string(), serde_json::from_str(json).ok()?))
        })
        .collect()
}

#[test]
fn process_log_shows_known_growth_and_json_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("records.json");
    let gnuplot = dir.path().join("gp");
    // Sleep, then allocate 64 MiB of written bytes (not lazily zeroed), hold, exit.
    let script = "import time\ntime.sleep(1.0)\nb = b'x' * (64 << 20)\ntime.sleep(1.2)\n";
    let out = run(pmt()
        .args(["process", "-i", "0.1", "--json"])
        .arg(&json)
        .arg("--gnuplot")
        .arg(&gnuplot)
        .arg("--")
        .arg(python())
        .args(["-c", script]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let records = log_records(&stdout);
    assert!(records.len() >= 15, "too few records:\n{stdout}");
    assert_eq!(records[0].0, "-START");
    let rss = |r: &serde_json::Value| r["memory_info"]["rss"].as_f64().expect("rss");
    let age = |r: &serde_json::Value| r["elapsed_time"].as_f64().expect("elapsed_time");
    let before = records
        .iter()
        .filter(|(_, r)| (0.5..0.95).contains(&age(r)))
        .map(|(_, r)| rss(r))
        .fold(0.0, f64::max);
    let peak = records.iter().map(|(_, r)| rss(r)).fold(0.0, f64::max);
    assert!(before > 0.0, "no record before the allocation:\n{stdout}");
    let growth = (peak - before) / MIB;
    assert!(
        (62.0..70.0).contains(&growth),
        "expected ~64 MiB growth, saw {growth:.1} MiB"
    );
    for (_, record) in &records {
        for key in [
            "timestamp",
            "memory_info",
            "cpu_times",
            "elapsed_time",
            "pid",
        ] {
            assert!(record.get(key).is_some(), "{key} missing in {record}");
        }
        assert!(record["memory_info"]["pfaults"].is_u64());
    }
    // The JSON file holds exactly the records of the log lines.
    let text = std::fs::read_to_string(&json).expect("json written");
    let from_file: Vec<serde_json::Value> = serde_json::from_str(&text).expect("valid JSON list");
    let from_log: Vec<serde_json::Value> = records.into_iter().map(|(_, r)| r).collect();
    assert_eq!(from_file, from_log);
    // The summary table and gnuplot files, as pymemtrace's process.py writes them.
    assert!(stdout.contains("#t(s)                 RSS PageFaults/s"));
    assert!(stdout.contains("has exited."));
    let pid = from_log[0]["pid"].as_i64().expect("pid");
    let dat = std::fs::read_to_string(gnuplot.join(format!("pmt_process_{pid}.dat"))).expect("dat");
    assert_eq!(dat.lines().count(), from_log.len() + 1);
    assert!(dat.starts_with("#t(s)"));
    let plt = std::fs::read_to_string(gnuplot.join(format!("pmt_process_{pid}.plt"))).expect("plt");
    assert!(plt.contains(&format!("plot \"pmt_process_{pid}.dat\"")));
}

#[test]
fn process_by_pid_writes_start_and_stop_and_a_valid_plot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svg = dir.path().join("rss.svg");
    let mut child = Command::new(python())
        .args(["-c", "import time\nb = []\nfor i in range(30):\n    b.append(b'y' * (1 << 20))\n    time.sleep(0.05)\ntime.sleep(5)"])
        .spawn()
        .expect("python runs");
    let out = run(pmt()
        .args(["process", "-i", "0.1", "--duration", "1.5", "-a", "--plot"])
        .arg(&svg)
        .arg("--pid")
        .arg(child.id().to_string()));
    let _ = child.kill();
    let _ = child.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let records = log_records(&stdout);
    assert_eq!(records.first().map(|r| r.0.as_str()), Some("-START"));
    assert_eq!(records.last().map(|r| r.0.as_str()), Some("-STOP"));
    let last = &records.last().expect("records").1;
    assert_eq!(last["status"], "sleeping");
    assert_eq!(last["num_threads"], 1);
    assert!(last["memory_full_info"]["uss"].as_i64().expect("uss") > 0);
    assert!(
        last["cmdline"][0]
            .as_str()
            .expect("cmdline")
            .contains("python")
    );

    let text = std::fs::read_to_string(&svg).expect("svg written");
    let doc = roxmltree::Document::parse(&text).expect("the plot is valid XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(|t| t.trim().to_string()))
        .collect();
    for wanted in [
        "RSS (MiB)",
        "CPU (%)",
        "Time (s)",
        "start",
        "stop",
        "RSS (MiB), left axis",
    ] {
        assert!(
            texts.iter().any(|t| t == wanted),
            "{wanted:?} not in the plot's texts {texts:?}"
        );
    }
    let series: Vec<usize> = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .map(|n| {
            n.attribute("points")
                .unwrap_or("")
                .split_whitespace()
                .count()
        })
        .filter(|points| *points >= records.len())
        .collect();
    assert!(
        series.len() >= 2,
        "expected RSS and CPU polylines of {} points, got {series:?}",
        records.len()
    );
}

fn assert_one_line_error(out: &Output, wanted: &str) {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.lines().count(),
        1,
        "expected one line, got:\n{stderr}"
    );
    assert!(stderr.starts_with("pmt: error: "), "{stderr}");
    assert!(stderr.contains(wanted), "{wanted:?} not in {stderr}");
}

#[test]
fn bad_or_exited_pid_is_one_clear_error() {
    let mut child = Command::new(python())
        .args(["-c", "pass"])
        .spawn()
        .expect("python runs");
    let gone = child.id();
    child.wait().expect("reaped");
    for sub in ["process", "tree"] {
        for pid in ["2147483600".to_string(), gone.to_string()] {
            let out = pmt().args([sub, "--pid", &pid]).output().expect("pmt runs");
            assert_one_line_error(&out, &format!("no process with PID {pid}"));
        }
        let out = pmt().args([sub]).output().expect("pmt runs");
        assert_one_line_error(&out, "give --pid PID or -- CMD");
        let out = pmt()
            .args([sub, "--", "/bin/true"])
            .output()
            .expect("pmt runs");
        if !out.status.success() {
            // /bin/true may end before the first sample; then that is the one line said.
            assert_one_line_error(
                &out,
                "the command ended before the first sample (exit status: 0)",
            );
        }
        let out = pmt()
            .args([sub, "--", "/no/such/program"])
            .output()
            .expect("pmt runs");
        assert_one_line_error(&out, "cannot run \"/no/such/program\"");
        let out = pmt()
            .args([sub, "--json", "/no/such/folder/x.json", "--pid", "1"])
            .output()
            .expect("pmt runs");
        assert_one_line_error(&out, "folder /no/such/folder does not exist");
    }
}

/// Parent starts three children 0.3 s apart (each writes 24 MiB; the second starts a
/// grandchild), they exit 0.5 s apart, then the parent lingers and exits.
const TREE_SCRIPT: &str = r#"
import subprocess, sys, time
grand = "import time\nb = b'g' * (8 << 20)\ntime.sleep(1.0)\n"
child = "import subprocess, sys, time\nb = b'c' * (24 << 20)\n"
child += "p = subprocess.Popen([sys.executable, '-c', sys.argv[2]]) if sys.argv[1] == '1' else None\n"
child += "time.sleep(float(sys.argv[3]))\np and p.wait()\n"
procs = []
for i in range(3):
    procs.append(subprocess.Popen([sys.executable, "-c", child, str(i), grand, str(1.2 + 0.2 * i)]))
    time.sleep(0.3)
for p in procs:
    p.wait()
time.sleep(0.6)
"#;

fn count_nodes(node: &serde_json::Value) -> (usize, usize) {
    let children = node["children"].as_array().cloned().unwrap_or_default();
    let mut count = 1;
    let mut depth = 0;
    for child in &children {
        let (c, d) = count_nodes(child);
        count += c;
        depth = depth.max(d + 1);
    }
    (count, depth)
}

#[test]
fn tree_tracks_children_coming_and_going() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("tree.json");
    let svg = dir.path().join("tree.svg");
    let out = run(pmt()
        .args(["tree", "-i", "0.1", "-a", "--json"])
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .arg("--")
        .arg(python())
        .args(["-c", TREE_SCRIPT]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("CMD: "), "{stdout}");
    assert!(stdout.contains("Time(s)     PID Name                      RSS(MB) dRSS(MB)"));
    assert!(
        stdout.contains("5 processes seen, at most 5 at once, 4 left the tree"),
        "summary wrong:\n{stdout}"
    );
    assert!(stdout.contains("Parent process"));

    let text = std::fs::read_to_string(&json).expect("json written");
    let records: Vec<serde_json::Value> = serde_json::from_str(&text).expect("valid JSON list");
    assert!(records.len() >= 20, "{} records", records.len());
    let mut most = 0;
    let mut deepest = 0;
    let mut peak_total = 0.0f64;
    for record in &records {
        let (count, depth) = count_nodes(record);
        assert_eq!(record["total"]["processes"].as_u64(), Some(count as u64));
        fn sum_rss(node: &serde_json::Value) -> f64 {
            node["RSS"].as_f64().unwrap_or(0.0)
                + node["children"]
                    .as_array()
                    .map(|c| c.iter().map(sum_rss).sum())
                    .unwrap_or(0.0)
        }
        assert_eq!(record["total"]["RSS"].as_f64(), Some(sum_rss(record)));
        for key in [
            "process_time",
            "pid",
            "name",
            "RSS",
            "PFaults",
            "CPU",
            "User",
            "Sys",
            "Thrds",
            "Status",
            "Files",
            "Net",
        ] {
            assert!(record.get(key).is_some(), "{key} missing");
        }
        most = most.max(count);
        deepest = deepest.max(depth);
        peak_total = peak_total.max(record["total"]["RSS"].as_f64().unwrap_or(0.0));
    }
    assert_eq!(most, 5, "root + 3 children + 1 grandchild at once");
    assert_eq!(deepest, 2);
    assert!(
        peak_total / MIB > 3.0 * 24.0 + 8.0,
        "peak total {:.1} MiB",
        peak_total / MIB
    );
    assert_eq!(
        count_nodes(records.last().expect("records")).0,
        1,
        "children gone at the end"
    );

    let svg_text = std::fs::read_to_string(&svg).expect("svg written");
    let doc = roxmltree::Document::parse(&svg_text).expect("valid XML");
    assert!(
        doc.descendants()
            .any(|n| n.has_tag_name("text") && n.text().map(str::trim) == Some("exited"))
    );
}

#[test]
fn tree_sep_and_omit_first() {
    let mut child = Command::new(python())
        .args(["-c", "import time; time.sleep(3)"])
        .stdout(Stdio::null())
        .spawn()
        .expect("python runs");
    // Let the interpreter finish starting, so its RSS is steady.
    std::thread::sleep(std::time::Duration::from_millis(700));
    let out = run(pmt()
        .args([
            "tree",
            "--sep",
            "|",
            "-1",
            "-c",
            "-i",
            "0.2",
            "--duration",
            "0.9",
            "--pid",
        ])
        .arg(child.id().to_string()));
    let _ = child.kill();
    let _ = child.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[1],
        "Time(s)|PID|Name|RSS(MB)|dRSS(MB)|CPU(%)|dCPU(%)|User(s)|Sys(s)"
    );
    let rows: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains(&format!("|{}|", child.id())))
        .collect();
    assert!((3..=5).contains(&rows.len()), "{stdout}");
    // With the first sample omitted, the first shown diff of RSS is a true difference (0.0).
    let first: Vec<&str> = rows[0].split('|').collect();
    assert_eq!(first.len(), 9, "{}", rows[0]);
    assert_eq!(first[4], "+0.0");
}

/// pymemtrace 0.4.0's own `process.py LOGFILE` reads the log `pmt process` writes. Needs the
/// 0.4.0 source (`PMT_PYMEMTRACE_040_SRC`, default /work/ref/pymemtrace-0.4.0) and a Python with
/// psutil (`PMT_PSUTIL_PYTHON`, default /opt/peers/bin/python); skipped with a message otherwise.
#[test]
fn pymemtrace_040_summarises_our_log() {
    let src = std::env::var("PMT_PYMEMTRACE_040_SRC")
        .unwrap_or_else(|_| "/work/ref/pymemtrace-0.4.0".into());
    let py = std::env::var("PMT_PSUTIL_PYTHON").unwrap_or_else(|_| "/opt/peers/bin/python".into());
    let script = Path::new(&src).join("pymemtrace/process.py");
    let has_psutil = Command::new(&py)
        .args(["-c", "import psutil"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !script.exists() || !has_psutil {
        eprintln!("SKIP: needs {} and psutil in {py}", script.display());
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("pmt.log");
    let out = run(pmt().args(["process", "-i", "0.1", "--", "/bin/sleep", "0.6"]));
    std::fs::write(&log, &out.stdout).expect("log written");
    let records = log_records(&String::from_utf8_lossy(&out.stdout));
    let pid = records[0].1["pid"].as_i64().expect("pid");
    let theirs = Command::new(&py)
        .arg(&script)
        .arg(&log)
        .env("PYTHONPATH", &src)
        .output()
        .expect("0.4.0 process.py runs");
    let text = String::from_utf8_lossy(&theirs.stdout);
    assert!(
        theirs.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&theirs.stderr)
    );
    assert!(text.contains(&format!(" PID: {pid} ")), "{text}");
    let rows = text
        .lines()
        .filter(|l| l.contains(&format!(" {pid} # ")))
        .count();
    assert_eq!(rows, records.len(), "{text}");
}

/// SIGTERM (as Ctrl-C's SIGINT) stops a monitor cleanly: exit 0 and every output complete.
#[test]
fn sigterm_flushes_outputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut target = Command::new(python())
        .args(["-c", "import time; time.sleep(10)"])
        .spawn()
        .expect("python runs");
    let mut monitors = Vec::new();
    for sub in ["process", "tree"] {
        let json = dir.path().join(format!("{sub}.json"));
        let svg = dir.path().join(format!("{sub}.svg"));
        let child = pmt()
            .args([
                sub,
                "-i",
                "0.1",
                "--pid",
                &target.id().to_string(),
                "--json",
            ])
            .arg(&json)
            .arg("--plot")
            .arg(&svg)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pmt runs");
        monitors.push((child, json, svg));
    }
    std::thread::sleep(std::time::Duration::from_millis(800));
    for (child, json, svg) in monitors {
        // SAFETY: kill(2) on our own child's PID.
        let sent = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert_eq!(sent, 0);
        let out = child.wait_with_output().expect("pmt exits");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&json).expect("json written");
        let records: Vec<serde_json::Value> = serde_json::from_str(&text).expect("complete JSON");
        assert!(records.len() >= 3, "{} records", records.len());
        let svg_text = std::fs::read_to_string(&svg).expect("svg written");
        roxmltree::Document::parse(&svg_text).expect("complete SVG");
    }
    let _ = target.kill();
    let _ = target.wait();
}
