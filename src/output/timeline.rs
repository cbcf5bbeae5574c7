//! The JSON timeline: every sample (time, RSS, and per thread its stack id and per-metric
//! deltas), the stack, frame and thread tables, and the run's summary — enough to re-render
//! every other output. [`read`] loads it back into a [`Profile`].
//!
//! Layout (`version` 1): `{"format": "pymemtrace-timeline", "version", "target", "metrics":
//! [{"name", "unit"}], "summary", "totals": {metric: total}, "threads": [{"python_id",
//! "native_id", "name", "process"}], "frames": [{"function", "filename", "line", "first_line"}],
//! "stacks": [[frame id, root first]], "samples": [{"t": seconds, "process", "rss": bytes,
//! "threads": [{"thread", "stack", "deltas": [one per metric, in "metrics" order]}]}],
//! "processes": [{"pid", "command", "python_version"}]}`. `first_line` (the function's first
//! line) may be missing from files written before it existed. `process` (an index into
//! `processes`) and `processes` are present only for `--subprocesses` runs, where each sample
//! is one process's and its `rss` that process's.

use crate::profile::{
    FrameInfo, ProcessInfo, Profile, ProfileError, RunSummary, TargetInfo, ThreadInfo,
    TimelineEntry, TimelineSample,
};
use crate::sample::{Metric, MetricValues, UnknownMetric};
use crate::sample_log::SampleLog;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};

const FORMAT: &str = "pymemtrace-timeline";
const VERSION: u32 = 1;

/// Why a timeline could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    /// Not JSON, or not this layout.
    #[error("not a pymemtrace timeline: {0}")]
    Json(#[from] serde_json::Error),
    /// Another format or version.
    #[error(
        "unsupported timeline format {format:?} version {version} (expected {FORMAT:?} version {VERSION})"
    )]
    Version {
        /// The file's `format`.
        format: String,
        /// The file's `version`.
        version: u32,
    },
    /// A metric this build does not know.
    #[error(transparent)]
    Metric(#[from] UnknownMetric),
    /// A sample's deltas do not match the metric list.
    #[error("sample {sample} has {found} deltas for {expected} metrics")]
    Deltas {
        /// The sample's index.
        sample: usize,
        /// How many it has.
        found: usize,
        /// How many metrics there are.
        expected: usize,
    },
    /// Ids that point nowhere.
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

#[derive(Serialize, Deserialize)]
struct TargetJson {
    pid: i32,
    command: String,
    python_version: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct MetricJson {
    name: String,
    unit: String,
}

#[derive(Serialize, Deserialize)]
struct SummaryJson {
    rate_hz: f64,
    duration_s: f64,
    ticks: u64,
    samples: u64,
    missed_ticks: u64,
    read_errors: u64,
    stop: String,
    growth_by_faults: u64,
    growth_by_gil: u64,
    #[serde(default)]
    growth_unmatched: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    in_kernel: Option<String>,
    /// Every tally of the capture and the process tree, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    tallies: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
    sample_cost_p50_us: Option<f64>,
    sample_cost_p99_us: Option<f64>,
    achieved_rate_hz: f64,
    attribution: String,
}

#[derive(Serialize, Deserialize)]
struct ThreadJson {
    python_id: Option<u64>,
    native_id: Option<u32>,
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    process: Option<u32>,
}

#[derive(Serialize, Deserialize)]
struct ProcessJson {
    pid: i32,
    command: String,
    python_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct FrameJson {
    function: String,
    filename: String,
    line: u32,
    #[serde(default)]
    first_line: u32,
}

#[derive(Serialize, Deserialize)]
struct EntryJson {
    thread: u32,
    stack: u32,
    deltas: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
struct SampleJson {
    t: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    process: Option<u32>,
    rss: Option<u64>,
    threads: Vec<EntryJson>,
}

/// The document; `S` is its samples: read into a `Vec`, written from the profile's log one
/// by one ([`SamplesOut`]), so a long timeline is never held twice in memory.
#[derive(Serialize, Deserialize)]
struct TimelineJson<S = Vec<SampleJson>> {
    format: String,
    version: u32,
    target: TargetJson,
    metrics: Vec<MetricJson>,
    summary: Option<SummaryJson>,
    totals: BTreeMap<String, u64>,
    threads: Vec<ThreadJson>,
    frames: Vec<FrameJson>,
    stacks: Vec<Vec<u32>>,
    samples: S,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    processes: Vec<ProcessJson>,
}

/// Writes `profile` as a timeline. A profile that kept no timeline writes an empty sample list.
pub fn write(profile: &Profile, mut out: impl Write) -> io::Result<()> {
    let doc = TimelineJson {
        format: FORMAT.to_string(),
        version: VERSION,
        target: TargetJson {
            pid: profile.target.pid,
            command: profile.target.command.clone(),
            python_version: profile.target.python_version.clone(),
        },
        metrics: Metric::ALL
            .iter()
            .map(|m| MetricJson {
                name: m.name().to_string(),
                unit: m.unit().name().to_string(),
            })
            .collect(),
        summary: profile.summary.as_ref().map(summary_json),
        totals: Metric::ALL
            .iter()
            .map(|&m| (m.name().to_string(), profile.total(m)))
            .collect(),
        threads: profile
            .threads()
            .iter()
            .map(|t| ThreadJson {
                python_id: t.python_id,
                native_id: t.native_id,
                name: t.name.clone(),
                process: t.process,
            })
            .collect(),
        frames: profile
            .frames()
            .iter()
            .map(|f| FrameJson {
                function: f.function.clone(),
                filename: f.filename.clone(),
                line: f.line,
                first_line: f.first_line,
            })
            .collect(),
        stacks: profile.stacks().to_vec(),
        samples: SamplesOut(profile.timeline()),
        processes: profile
            .processes()
            .iter()
            .map(|p| ProcessJson {
                pid: p.pid,
                command: p.command.clone(),
                python_version: p.python_version.clone(),
                role: p.role.clone(),
            })
            .collect(),
    };
    serde_json::to_writer(&mut out, &doc).map_err(io::Error::other)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// A profile's timeline samples, serialised as they are read back from its log.
struct SamplesOut<'a>(Option<&'a SampleLog>);

impl Serialize for SamplesOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let samples = self.0.into_iter().flat_map(SampleLog::iter);
        serializer.collect_seq(samples.map(|s| {
            SampleJson {
                t: s.time_s,
                process: s.process,
                rss: s.rss,
                threads: s
                    .entries
                    .iter()
                    .map(|e| EntryJson {
                        thread: e.thread,
                        stack: e.stack,
                        deltas: e.values.0.to_vec(),
                    })
                    .collect(),
            }
        }))
    }
}

fn summary_json(summary: &RunSummary) -> SummaryJson {
    SummaryJson {
        rate_hz: summary.rate_hz,
        duration_s: summary.duration_s,
        ticks: summary.ticks,
        samples: summary.samples,
        missed_ticks: summary.missed_ticks,
        read_errors: summary.read_errors,
        stop: summary.stop.clone(),
        growth_by_faults: summary.growth_by_faults,
        growth_by_gil: summary.growth_by_gil,
        growth_unmatched: summary.growth_unmatched,
        in_kernel: summary.in_kernel.clone(),
        tallies: summary.tallies.iter().cloned().collect(),
        warning: summary.warning.clone(),
        sample_cost_p50_us: summary.sample_cost_p50_us,
        sample_cost_p99_us: summary.sample_cost_p99_us,
        achieved_rate_hz: summary.achieved_rate(),
        attribution: summary.attribution_note(),
    }
}

/// Reads a timeline back into a profile whose totals are recomputed from its samples.
pub fn read(input: impl Read) -> Result<Profile, TimelineError> {
    let doc: TimelineJson = serde_json::from_reader(io::BufReader::new(input))?;
    if doc.format != FORMAT || doc.version != VERSION {
        return Err(TimelineError::Version {
            format: doc.format,
            version: doc.version,
        });
    }
    let metrics: Vec<Metric> = doc
        .metrics
        .iter()
        .map(|m| m.name.parse())
        .collect::<Result<_, _>>()?;
    let mut timeline = Vec::with_capacity(doc.samples.len());
    for (index, sample) in doc.samples.into_iter().enumerate() {
        let mut entries = Vec::with_capacity(sample.threads.len());
        for entry in sample.threads {
            if entry.deltas.len() != metrics.len() {
                return Err(TimelineError::Deltas {
                    sample: index,
                    found: entry.deltas.len(),
                    expected: metrics.len(),
                });
            }
            let mut values = MetricValues::default();
            for (&metric, &delta) in metrics.iter().zip(&entry.deltas) {
                values.add(metric, delta);
            }
            entries.push(TimelineEntry {
                thread: entry.thread,
                stack: entry.stack,
                values,
            });
        }
        timeline.push(TimelineSample {
            time_s: sample.t,
            process: sample.process,
            rss: sample.rss,
            entries,
        });
    }
    let summary = doc.summary.map(|s| RunSummary {
        rate_hz: s.rate_hz,
        duration_s: s.duration_s,
        ticks: s.ticks,
        samples: s.samples,
        missed_ticks: s.missed_ticks,
        read_errors: s.read_errors,
        stop: s.stop,
        growth_by_faults: s.growth_by_faults,
        growth_by_gil: s.growth_by_gil,
        growth_unmatched: s.growth_unmatched,
        in_kernel: s.in_kernel,
        tallies: s.tallies.into_iter().collect(),
        warning: s.warning,
        sample_cost_p50_us: s.sample_cost_p50_us,
        sample_cost_p99_us: s.sample_cost_p99_us,
    });
    let profile = Profile::from_timeline(
        TargetInfo {
            pid: doc.target.pid,
            command: doc.target.command,
            python_version: doc.target.python_version,
        },
        summary,
        doc.frames
            .into_iter()
            .map(|f| FrameInfo {
                function: f.function,
                filename: f.filename,
                line: f.line,
                first_line: f.first_line,
            })
            .collect(),
        doc.stacks,
        doc.threads
            .into_iter()
            .map(|t| ThreadInfo {
                python_id: t.python_id,
                native_id: t.native_id,
                name: t.name,
                process: t.process,
                // A run that keeps its timeline merges no processes.
                merged: false,
            })
            .collect(),
        timeline,
    )?
    .with_processes(
        doc.processes
            .into_iter()
            .map(|p| ProcessInfo {
                pid: p.pid,
                command: p.command,
                python_version: p.python_version,
                role: p.role,
                merged: 0,
            })
            .collect(),
    )?;
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::collapsed::{FoldOptions, fold};
    use crate::profile::test_support::{two_process_profile, two_thread_profile};

    #[test]
    fn read_back_timeline_folds_the_same() {
        let mut profile = two_thread_profile();
        profile.summary = Some(RunSummary {
            rate_hz: 100.0,
            duration_s: 0.04,
            samples: 4,
            ticks: 4,
            stop: "target exited".to_string(),
            ..RunSummary::default()
        });
        let mut json = Vec::new();
        write(&profile, &mut json).expect("write");
        let back = read(json.as_slice()).expect("read");
        for metric in Metric::ALL {
            for threads in [false, true] {
                let options = FoldOptions { metric, threads };
                assert_eq!(
                    fold(&back, options),
                    fold(&profile, options),
                    "{metric} {threads}"
                );
            }
        }
        assert_eq!(back.target, profile.target);
        assert_eq!(back.summary, profile.summary);
        assert_eq!(back.timeline(), profile.timeline());
    }

    #[test]
    fn processes_survive_the_round_trip() {
        let profile = two_process_profile();
        let mut json = Vec::new();
        write(&profile, &mut json).expect("write");
        let back = read(json.as_slice()).expect("read");
        assert_eq!(back.processes(), profile.processes());
        assert_eq!(back.timeline(), profile.timeline());
        for metric in Metric::ALL {
            let options = FoldOptions {
                metric,
                threads: true,
            };
            assert_eq!(fold(&back, options), fold(&profile, options), "{metric}");
        }
        let text = String::from_utf8(json).expect("utf-8");
        let broken = text.replace("\"process\":1", "\"process\":5");
        let err = read(broken.as_bytes()).expect_err("process 5 does not exist");
        assert!(
            matches!(
                err,
                TimelineError::Profile(ProfileError::BadProcess { process: 5, .. })
            ),
            "{err}"
        );
    }

    #[test]
    fn the_file_carries_samples_and_summary() {
        let profile = two_thread_profile();
        let mut json = Vec::new();
        write(&profile, &mut json).expect("write");
        let doc: serde_json::Value = serde_json::from_slice(&json).expect("json");
        assert_eq!(doc["format"], "pymemtrace-timeline");
        assert_eq!(doc["metrics"][0]["name"], "rss");
        assert_eq!(doc["metrics"][0]["unit"], "bytes");
        assert_eq!(doc["samples"].as_array().map(Vec::len), Some(5));
        assert_eq!(doc["samples"][1]["rss"], 1_004_096);
        assert_eq!(doc["samples"][0]["threads"][0]["deltas"][0], 1 << 20);
        assert_eq!(doc["totals"]["wall"], 8);
    }

    #[test]
    fn foreign_or_broken_files_are_refused() {
        let err = read(&b"{\"format\": \"other\"}"[..]).expect_err("not ours");
        assert!(matches!(err, TimelineError::Json(_)), "{err}");
        let profile = two_thread_profile();
        let mut json = Vec::new();
        write(&profile, &mut json).expect("write");
        let text = String::from_utf8(json).expect("utf-8");
        let renamed = text.replace("\"wall\"", "\"walltime\"");
        let err = read(renamed.as_bytes()).expect_err("unknown metric");
        assert!(err.to_string().contains("walltime"), "{err}");
        let newer = text.replace("\"version\":1", "\"version\":9");
        let err = read(newer.as_bytes()).expect_err("newer version");
        assert!(
            matches!(err, TimelineError::Version { version: 9, .. }),
            "{err}"
        );
    }
}
