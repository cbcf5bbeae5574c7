//! `--pprof` read by the reader people use: `go tool pprof` (Debian's golang-go, installed by
//! `.ci/setup`). For a real run, every sample type's total that `-raw` lists and that `-top`
//! reports equals the folded total of that metric (`pmt report --metric M --collapsed`), and
//! `-top` by `rss` puts the growing function first.

mod common;

use std::path::Path;
use std::process::Command;

/// `go tool pprof ARGS FILE`, failing the test with what go said.
fn go_pprof(args: &[&str], file: &Path, scratch: &Path) -> String {
    let output = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .arg(file)
        .env("GOCACHE", scratch.join("gocache"))
        .env("GOPATH", scratch.join("gopath"))
        .env("PPROF_TMPDIR", scratch)
        .output()
        .expect("`go` is needed for this test: .ci/setup installs Debian's golang-go");
    assert!(
        output.status.success(),
        "go tool pprof {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `-raw`'s sample types (`rss/bytes[dflt] cpu/count …`) and the sum of each one's column.
fn raw_totals(raw: &str) -> Vec<(String, u64)> {
    let mut lines = raw.lines().skip_while(|l| l.trim() != "Samples:");
    lines.next();
    let header = lines.next().expect("the sample types line");
    let types: Vec<String> = header
        .split_whitespace()
        .map(|t| t.split('/').next().unwrap_or(t).to_string())
        .collect();
    let mut totals = vec![0u64; types.len()];
    for line in lines {
        let Some((values, _locations)) = line.split_once(':') else {
            continue;
        };
        let values: Vec<u64> = match values
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<Vec<u64>, _>>()
        {
            Ok(values) if values.len() == types.len() => values,
            _ => continue,
        };
        for (total, value) in totals.iter_mut().zip(values) {
            *total += value;
        }
    }
    types.into_iter().zip(totals).collect()
}

/// `-top`'s total: `Showing nodes accounting for …, …% of N<unit> total`.
fn top_total(top: &str) -> u64 {
    let line = top
        .lines()
        .find(|l| l.starts_with("Showing nodes accounting for"))
        .unwrap_or_else(|| panic!("no total in:\n{top}"));
    let total = line
        .rsplit(" of ")
        .next()
        .and_then(|t| t.strip_suffix(" total"))
        .unwrap_or_else(|| panic!("unexpected total line: {line}"));
    let digits: String = total.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number in {line}"))
}

/// The folded total of `metric` as `pmt report` writes it from the run's timeline.
fn folded_total(timeline: &Path, metric: &str, out: &Path) -> u64 {
    let mut command = common::pmt();
    command
        .arg("report")
        .arg(timeline)
        .args(["--metric", metric, "--collapsed"])
        .arg(out);
    let output = common::run(command);
    assert!(output.status.success(), "pmt report --metric {metric}");
    common::read_folded(out).iter().map(|(_, w)| w).sum()
}

#[test]
fn go_tool_pprof_totals_equal_the_folded_totals_of_every_metric() {
    let Some(interp) = ["3.12", "3.11", "3.13", "system3.11"]
        .into_iter()
        .find_map(common::find)
        .or_else(|| common::interpreter_or_skip("3.12"))
    else {
        return;
    };
    let _serial = common::serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let pprof = dir.path().join("run.pb.gz");
    let timeline = dir.path().join("run.json");
    let mut command = common::sampler();
    command
        .arg("--no-heap")
        .arg("--pprof")
        .arg(&pprof)
        .arg("--json")
        .arg(&timeline)
        .arg("--")
        .arg(&interp.path)
        .arg(common::script("grow_here.py"))
        .args(["--mb", "24", "--start-delay", "0.3"]);
    let output = common::run(command);
    assert!(output.status.success(), "pmt-sample failed");

    let raw = raw_totals(&go_pprof(&["-raw"], &pprof, dir.path()));
    let names: Vec<&str> = raw.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["rss", "rss-release", "cpu", "wall"], "sample types");
    for (metric, raw_total) in &raw {
        let top = go_pprof(
            &["-top", &format!("-sample_index={metric}"), "-unit=byte"],
            &pprof,
            dir.path(),
        );
        let folded = folded_total(
            &timeline,
            metric,
            &dir.path().join(format!("{metric}.folded")),
        );
        assert_eq!(*raw_total, folded, "{metric}: -raw total vs folded");
        assert_eq!(top_total(&top), folded, "{metric}: -top total vs folded");
    }
    let rss = raw.iter().find(|(n, _)| n == "rss").map_or(0, |(_, t)| *t);
    assert!(rss >= 12 << 20, "the growth was seen: {rss}");
    assert!(raw.iter().any(|(n, t)| n == "wall" && *t > 0));

    // By rss, the function that grew is the heaviest one, flat.
    let top = go_pprof(&["-top", "-sample_index=rss"], &pprof, dir.path());
    let first = top
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .nth(1)
        .unwrap_or_default();
    assert!(first.contains("grow_here"), "first by rss:\n{top}");
}
