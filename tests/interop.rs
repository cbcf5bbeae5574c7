//! Interop outputs against a real CPython process, each read back by an independent reader:
//! `--speedscope` validated against speedscope's own file-format JSON schema (from its npm
//! package) and checked for what the schema cannot say (frame indices in range, weights),
//! `--pprof` decoded by protoc-generated Python code (`profile_pb2` from `proto/profile.proto`,
//! in a venv `tests/interop/setup_venv.sh` makes), `--pyroscope` pushes received by a stand-in
//! ingest server on 127.0.0.1, and `pmt report` re-rendering a saved timeline to the same
//! folded stacks as the live run.

mod common;

use common::{repo, run, sampler, serial};

use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The interpreter the live runs use: the newest CPython found.
fn interpreter() -> Option<common::Interpreter> {
    ["3.12", "3.13", "3.11", "3.10", "system3.11"]
        .iter()
        .find_map(|label| common::find(label))
}

/// The decoder venv's python (made once per test run).
fn decoder_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let output = Command::new("bash")
            .arg(repo().join("tests/interop/setup_venv.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("running tests/interop/setup_venv.sh");
        assert!(
            output.status.success(),
            "tests/interop/setup_venv.sh failed: the pprof decoder needs protobuf and grpcio-tools from PyPI"
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        PathBuf::from(stdout.lines().last().expect("the venv's python").trim())
    })
}

/// A command running the decoder venv's python with the generated module importable.
fn decoder(script: &str) -> Command {
    let python = decoder_python();
    let gen_dir = repo().join("target/interop-venv/gen");
    let scripts = repo().join("tests/interop");
    let mut command = Command::new(python);
    command
        .arg(scripts.join(script))
        .env(
            "PYTHONPATH",
            format!("{}:{}", gen_dir.display(), scripts.display()),
        )
        .env("PYTHONDONTWRITEBYTECODE", "1");
    command
}

/// The pprof file decoded by `read_pprof.py`; fails on any broken reference it found.
fn read_pprof(path: &Path) -> Value {
    let output = decoder("read_pprof.py")
        .arg(path)
        .output()
        .expect("running read_pprof.py");
    assert!(
        output.status.success(),
        "read_pprof.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).expect("read_pprof.py's JSON");
    assert_eq!(
        summary["problems"],
        serde_json::json!([]),
        "the pprof holds together"
    );
    summary
}

/// The total weight of a folded file.
fn folded_total(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .expect("reading the folded output")
        .lines()
        .map(|line| {
            let (_, weight) = line.rsplit_once(' ').expect("`stack weight` line");
            weight.parse::<u64>().expect("integer weight")
        })
        .sum()
}

/// Validates a speedscope file against speedscope's JSON schema (`check_speedscope.py`), checks
/// what the schema cannot (frame indices in range, one weight per sample, spans), and returns
/// the sum of all weights.
fn check_speedscope(path: &Path, unit: &str) -> u64 {
    let schema = repo().join("target/interop-venv/gen/speedscope-file-format-schema.json");
    let output = decoder("check_speedscope.py")
        .arg(&schema)
        .arg(path)
        .output()
        .expect("running check_speedscope.py");
    assert!(
        output.status.success(),
        "not a valid speedscope file: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let doc: Value =
        serde_json::from_slice(&std::fs::read(path).expect("reading the speedscope file"))
            .expect("speedscope JSON");
    assert_eq!(
        doc["$schema"],
        "https://www.speedscope.app/file-format-schema.json"
    );
    let frames = doc["shared"]["frames"].as_array().expect("shared.frames");
    for frame in frames {
        assert!(frame["name"].is_string(), "every frame has a name: {frame}");
        if let Some(line) = frame.get("line") {
            assert!(line.is_u64(), "line is a number: {frame}");
        }
    }
    let profiles = doc["profiles"].as_array().expect("profiles");
    assert!(!profiles.is_empty());
    if let Some(active) = doc.get("activeProfileIndex") {
        assert!((active.as_u64().expect("index") as usize) < profiles.len());
    }
    let mut sum = 0;
    for profile in profiles {
        assert_eq!(profile["type"], "sampled");
        assert!(profile["name"].is_string());
        assert_eq!(profile["unit"], unit);
        let samples = profile["samples"].as_array().expect("samples");
        let weights = profile["weights"].as_array().expect("weights");
        assert_eq!(samples.len(), weights.len(), "one weight per sample");
        for stack in samples {
            for index in stack.as_array().expect("a stack is an array") {
                let index = index.as_u64().expect("frame index") as usize;
                assert!(index < frames.len(), "frame index {index} out of range");
            }
        }
        let weights: u64 = weights.iter().map(|w| w.as_u64().expect("weight")).sum();
        let start = profile["startValue"].as_u64().expect("startValue");
        let end = profile["endValue"].as_u64().expect("endValue");
        assert_eq!(end - start, weights, "the profile spans its weights");
        sum += weights;
    }
    sum
}

/// Runs `pmt report` on `timeline` with `args`.
fn report(timeline: &Path, args: &[&str]) {
    let mut command = common::pmt();
    command.arg("report").arg(timeline).args(args);
    let output = run(command);
    assert!(output.status.success(), "pmt report failed");
}

#[test]
fn speedscope_pprof_and_report_read_back() {
    let Some(interp) = interpreter() else {
        eprintln!("skipped: no CPython found");
        return;
    };
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = |name: &str| dir.path().join(name);
    let mut command = sampler();
    command
        .arg("--no-heap")
        .arg("--collapsed")
        .arg(out("live.folded"))
        .arg("--speedscope")
        .arg(out("live.speedscope.json"))
        .arg("--pprof")
        .arg(out("live.pb.gz"))
        .arg("--json")
        .arg(out("live.json"))
        .arg("--")
        .arg(&interp.path)
        .arg(common::script("grow_here.py"))
        .args(["--mb", "20", "--start-delay", "0.3"]);
    let output = run(command);
    assert!(output.status.success(), "pmt-sample failed");

    let rss_total = folded_total(&out("live.folded"));
    assert!(rss_total >= 10 << 20, "the growth was seen: {rss_total}");
    assert_eq!(
        check_speedscope(&out("live.speedscope.json"), "bytes"),
        rss_total,
        "speedscope weights add up to the folded total"
    );

    let pprof = read_pprof(&out("live.pb.gz"));
    let types: Vec<(String, String)> =
        serde_json::from_value(pprof["sample_types"].clone()).expect("sample types");
    let expected: Vec<(String, String)> = [
        ("rss", "bytes"),
        ("rss-release", "bytes"),
        ("cpu", "count"),
        ("wall", "count"),
    ]
    .iter()
    .map(|(t, u)| (t.to_string(), u.to_string()))
    .collect();
    assert_eq!(types, expected);
    assert_eq!(pprof["default_sample_type"], "rss");
    for key in ["thread", "thread_id", "pid", "process"] {
        assert!(
            pprof["label_keys"]
                .as_array()
                .expect("label keys")
                .iter()
                .any(|k| k == key),
            "label {key} missing: {}",
            pprof["label_keys"]
        );
    }
    let grow = pprof["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .find(|f| f["name"] == "grow_here")
        .expect("grow_here is a function");
    assert!(
        grow["filename"]
            .as_str()
            .is_some_and(|f| f.ends_with("grow_here.py"))
    );
    assert_eq!(grow["start_line"], 9, "grow_here starts at line 9");
    // 20 Hz: the default where memory is charged in the kernel.
    assert!(pprof["period"].as_i64() == Some(50_000_000), "20 Hz");

    // Per metric: the pprof total equals the folded total `pmt report` writes for it, and
    // the speedscope of that metric adds up to it too.
    for (metric, unit) in [
        ("rss", "bytes"),
        ("rss-release", "bytes"),
        ("cpu", "none"),
        ("wall", "none"),
    ] {
        let folded = out(&format!("{metric}.folded"));
        let speedscope = out(&format!("{metric}.speedscope.json"));
        report(
            &out("live.json"),
            &[
                "--metric",
                metric,
                "--collapsed",
                folded.to_str().expect("path"),
                "--speedscope",
                speedscope.to_str().expect("path"),
            ],
        );
        let total = folded_total(&folded);
        assert_eq!(pprof["totals"][metric].as_u64(), Some(total), "{metric}");
        assert_eq!(check_speedscope(&speedscope, unit), total, "{metric}");
    }
    assert!(pprof["totals"]["wall"].as_u64() > Some(0));

    // The re-rendered outputs of the run's metric are the live ones.
    assert_eq!(
        std::fs::read_to_string(out("rss.folded")).expect("re-rendered folded"),
        std::fs::read_to_string(out("live.folded")).expect("live folded"),
        "pmt report writes the same folded stacks as the live run"
    );
    assert_eq!(
        std::fs::read(out("rss.speedscope.json")).expect("re-rendered speedscope"),
        std::fs::read(out("live.speedscope.json")).expect("live speedscope"),
    );
    report(
        &out("live.json"),
        &[
            "--pprof",
            out("report.pb.gz").to_str().expect("path"),
            "--flame",
            out("report.svg").to_str().expect("path"),
        ],
    );
    let again = read_pprof(&out("report.pb.gz"));
    assert_eq!(again["totals"], pprof["totals"]);
    assert_eq!(again["sample_types"], pprof["sample_types"]);
    assert!(
        std::fs::read_to_string(out("report.svg"))
            .expect("svg")
            .contains("grow_here")
    );
}

#[test]
fn report_refuses_a_missing_timeline_and_no_outputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = run({
        let mut command = common::pmt();
        command
            .arg("report")
            .arg(dir.path().join("missing.json"))
            .arg("--collapsed")
            .arg(dir.path().join("x"));
        command
    });
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot open") && stderr.contains("missing.json"),
        "{stderr}"
    );
    let output = run({
        let mut command = common::pmt();
        command.arg("report").arg(dir.path().join("missing.json"));
        command
    });
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("nothing to write"));
}

/// The stand-in ingest server, killed when dropped.
struct FakePyroscope {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl FakePyroscope {
    fn start(log: PathBuf) -> FakePyroscope {
        let mut child = decoder("fake_pyroscope.py")
            .arg(&log)
            .args(["--seconds", "60"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting fake_pyroscope.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("reading the port");
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .expect("`port N` line");
        FakePyroscope { child, port, log }
    }

    /// Every request received, in order.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }
}

impl Drop for FakePyroscope {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn pushes_reach_a_pyroscope_ingest_endpoint() {
    let Some(interp) = interpreter() else {
        eprintln!("skipped: no CPython found");
        return;
    };
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakePyroscope::start(dir.path().join("ingest.jsonl"));
    let pprof_path = dir.path().join("run.pb.gz");
    let mut command = sampler();
    command
        .args([
            "--no-heap",
            "--upload-interval",
            "1",
            "--duration",
            "3.5",
            "--app",
        ])
        .arg("pmt-test{env=ci,team=memory}")
        .arg("--pyroscope")
        .arg(format!("http://127.0.0.1:{}", server.port))
        .arg("--pprof")
        .arg(&pprof_path)
        .arg("--")
        .arg(&interp.path)
        .arg(common::script("grow_here.py"))
        .args(["--mb", "20", "--start-delay", "0.5", "--linger", "10"]);
    let output = run(command);
    assert!(output.status.success(), "pmt-sample failed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("warning"), "no push failed: {stderr}");

    let requests = server.requests();
    assert!(
        requests.len() >= 3,
        "pushes every second and at the end: {} requests",
        requests.len()
    );
    let mut wall = 0;
    let mut rss = 0;
    let mut previous_until = 0;
    for request in &requests {
        assert_eq!(request["path"], "/ingest");
        assert!(request.get("error").is_none(), "{request}");
        let query = &request["query"];
        assert_eq!(query["name"], "pmt-test{env=ci,team=memory}");
        assert_eq!(query["format"], "pprof");
        // The run's rate: 20 Hz, the default where memory is charged in the kernel.
        assert_eq!(query["sampleRate"], "20");
        assert_eq!(query["spyName"], "pymemtrace");
        assert_eq!(query["units"], "bytes");
        assert_eq!(query["aggregationType"], "sum");
        let from: u64 = query["from"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("from");
        let until: u64 = query["until"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("until");
        assert!(from <= until && until <= from + 2, "a window of about 1 s");
        assert!(from + 1 >= previous_until, "windows follow each other");
        previous_until = until;
        assert!(
            request["content_type"]
                .as_str()
                .is_some_and(|c| c.starts_with("multipart/form-data; boundary="))
        );
        let config: HashMap<String, Value> =
            serde_json::from_value(request["sample_type_config"].clone()).expect("config");
        assert_eq!(config["rss"]["units"], "bytes");
        assert_eq!(config["wall"]["units"], "samples");
        assert_eq!(config["rss"]["aggregation"], "sum");
        let profile = &request["profile"];
        assert_eq!(profile["problems"], serde_json::json!([]));
        assert_eq!(
            profile["sample_types"][0],
            serde_json::json!(["rss", "bytes"])
        );
        wall += profile["totals"]["wall"].as_u64().expect("wall total");
        rss += profile["totals"]["rss"].as_u64().expect("rss total");
    }
    let local = read_pprof(&pprof_path);
    assert_eq!(
        Some(wall),
        local["totals"]["wall"].as_u64(),
        "the windows pushed hold every sample of the run"
    );
    assert!(rss >= 10 << 20, "the growth was pushed: {rss}");
}

#[test]
fn a_failed_push_is_a_warning_and_outputs_are_written() {
    let Some(interp) = interpreter() else {
        eprintln!("skipped: no CPython found");
        return;
    };
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let folded = dir.path().join("run.folded");
    let mut command = sampler();
    command
        .args([
            "--no-heap",
            "--upload-interval",
            "0.5",
            "--duration",
            "1.5",
            "--app",
            "x",
        ])
        .arg("--pyroscope")
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("--collapsed")
        .arg(&folded)
        .arg("--")
        .arg(&interp.path)
        .arg(common::script("grow_here.py"))
        .args(["--mb", "10", "--start-delay", "0.2", "--linger", "5"]);
    let start = std::time::Instant::now();
    let output = run(command);
    assert!(
        output.status.success(),
        "a failed push does not fail the run"
    );
    assert!(start.elapsed() < Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warning: push to Pyroscope") && stderr.contains("failed"),
        "{stderr}"
    );
    assert!(folded_total(&folded) > 0, "the local output was written");
}

#[test]
fn pyroscope_options_are_checked_before_sampling() {
    let output = run({
        let mut command = sampler();
        command.args(["--pid", "1", "--pyroscope", "localhost:4040", "--app", "a"]);
        command
    });
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not a server URL"));
    let output = run({
        let mut command = sampler();
        command.args(["--pid", "1", "--pyroscope", "http://localhost:4040"]);
        command
    });
    assert!(!output.status.success(), "--pyroscope needs --app");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--app"));
}

#[test]
fn pprof_carries_the_allocator_metrics_when_recorded() {
    let Some(interp) = interpreter() else {
        eprintln!("skipped: no CPython found");
        return;
    };
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = |name: &str| dir.path().join(name);
    let mut command = sampler();
    command
        .args(["--metric", "malloc-bytes", "--pprof"])
        .arg(out("malloc.pb.gz"))
        .arg("--json")
        .arg(out("malloc.json"))
        .arg("--")
        .arg(&interp.path)
        .arg(common::script("grow_here.py"))
        .args(["--mb", "20", "--start-delay", "0.3"]);
    let output = run(command);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let unavailable = stderr.contains("CAP_BPF") || stderr.contains("no eBPF object");
        let required = std::env::var("PMT_REQUIRE_EBPF").as_deref() == Ok("1");
        assert!(unavailable && !required, "pmt-sample failed: {stderr}");
        eprintln!("SKIP: eBPF malloc counters unavailable here");
        return;
    }
    let pprof = read_pprof(&out("malloc.pb.gz"));
    let types = pprof["sample_types"].as_array().expect("sample types");
    for expected in [
        serde_json::json!(["malloc-bytes", "bytes"]),
        serde_json::json!(["malloc-count", "count"]),
        serde_json::json!(["rss", "bytes"]),
    ] {
        assert!(types.contains(&expected), "{expected} missing: {types:?}");
    }
    assert_eq!(pprof["default_sample_type"], "malloc-bytes");
    for metric in ["malloc-bytes", "malloc-count", "rss", "wall"] {
        let folded = out(&format!("{metric}.folded"));
        report(
            &out("malloc.json"),
            &[
                "--metric",
                metric,
                "--collapsed",
                folded.to_str().expect("path"),
            ],
        );
        assert_eq!(
            pprof["totals"][metric].as_u64(),
            Some(folded_total(&folded)),
            "{metric}"
        );
    }
    assert!(
        pprof["totals"]["malloc-bytes"].as_u64() >= Some(20 << 20),
        "the 20 MiB of bytearrays were counted"
    );
}

#[test]
fn a_server_that_never_answers_delays_the_end_by_one_timeout_at_most() {
    let Some(interp) = interpreter() else {
        eprintln!("skipped: no CPython found");
        return;
    };
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    // Accepts connections and never answers, for at most 30 s.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        listener.set_nonblocking(true).expect("nonblocking");
        while std::time::Instant::now() < deadline {
            if let Ok((stream, _)) = listener.accept() {
                held.push(stream);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let folded = dir.path().join("run.folded");
    let mut command = sampler();
    command
        .args(["--no-heap", "--duration", "1", "--app", "x"])
        .arg("--pyroscope")
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("--collapsed")
        .arg(&folded)
        .arg("--")
        .arg(&interp.path)
        .arg(common::script("grow_here.py"))
        .args(["--mb", "5", "--start-delay", "0.2", "--linger", "5"]);
    let start = std::time::Instant::now();
    let output = run(command);
    assert!(output.status.success());
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "one push timeout (5 s) at most: {:?}",
        start.elapsed()
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("warning: push to Pyroscope"), "{stderr}");
    assert!(folded_total(&folded) > 0, "the local output was written");
}
