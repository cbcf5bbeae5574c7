//! pprof's `profile.proto` (gzipped on disk): one sample type per metric the profile recorded
//! (`rss`/`bytes`, `rss-release`/`bytes`, `cpu`/`count`, `wall`/`count`, and the allocator
//! metrics when they were charged or are the default type), one sample per (thread, stack) with its weights as
//! [`Profile::weights`] gives them, functions (name, file, first line), one location per frame
//! (its function and line), and labels naming each sample's thread and process. A
//! [`Profile::snapshot`] (`pmt heap`) has `inuse_space` and `inuse_objects` only, no thread
//! labels, and Go's `space`/`bytes` period type. The message
//! types are declared here with prost; `proto/profile.proto` is the definition they follow.
//!
//! Owns: the pprof encoding. Must not touch: how weights were aggregated.

use super::recorded_metrics;
use crate::profile::{Profile, ThreadInfo};
use crate::sample::{Metric, Unit};
use flate2::Compression;
use flate2::write::GzEncoder;
use prost::Message;
use std::collections::HashMap;
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The messages of `proto/profile.proto` that are written (`Mapping` never is: Python frames
/// have no binary to map to).
pub mod proto {
    /// The whole profile.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Profile {
        /// What each of a sample's values measures.
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        /// The samples.
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        /// The locations samples refer to.
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        /// The functions locations refer to.
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        /// Every string, referred to by index; the first is `""`.
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        /// When collection started, in nanoseconds since the epoch.
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        /// How long collection ran, in nanoseconds.
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        /// The kind of events between samples.
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        /// The number of events between samples.
        #[prost(int64, tag = "12")]
        pub period: i64,
        /// Free-form notes (string indices).
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        /// The preferred sample type (string index of its type).
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
    }

    /// A value's meaning and unit (string indices).
    #[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
    pub struct ValueType {
        /// The type, e.g. `rss`.
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        /// The unit, e.g. `bytes`.
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    /// One stack's values.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Sample {
        /// Location ids, leaf first.
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        /// One value per sample type.
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        /// Context: thread and process.
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    /// A key with a string or a number.
    #[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
    pub struct Label {
        /// The key (string index).
        #[prost(int64, tag = "1")]
        pub key: i64,
        /// A string value (string index).
        #[prost(int64, tag = "2")]
        pub str: i64,
        /// A numeric value.
        #[prost(int64, tag = "3")]
        pub num: i64,
        /// The unit of `num` (string index).
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }

    /// A place in the code: here, one Python frame.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Location {
        /// Nonzero id.
        #[prost(uint64, tag = "1")]
        pub id: u64,
        /// The function and line (one entry: Python frames are not inlined).
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
    }

    /// A function and a line in it.
    #[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
    pub struct Line {
        /// The function's id.
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        /// The line number.
        #[prost(int64, tag = "2")]
        pub line: i64,
    }

    /// A function.
    #[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
    pub struct Function {
        /// Nonzero id.
        #[prost(uint64, tag = "1")]
        pub id: u64,
        /// Its name (string index).
        #[prost(int64, tag = "2")]
        pub name: i64,
        /// Its name as the system knows it (string index).
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        /// Its source file (string index).
        #[prost(int64, tag = "4")]
        pub filename: i64,
        /// Its first line.
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }
}

/// The parts of a pprof profile that are not in the [`Profile`] model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PprofOptions {
    /// The preferred sample type (pprof's `default_sample_type`).
    pub default_metric: Metric,
    /// When sampling started (`time_nanos`), where known.
    pub start: Option<SystemTime>,
    /// How long the profile covers (`duration_nanos`), where known.
    pub duration: Option<Duration>,
    /// The sampling rate (`period`: nanoseconds between samples), where known.
    pub rate_hz: Option<f64>,
}

impl PprofOptions {
    /// The options of a whole run: duration and rate from the profile's summary.
    pub fn for_run(profile: &Profile, default_metric: Metric, start: Option<SystemTime>) -> Self {
        let summary = profile.summary.as_ref();
        PprofOptions {
            default_metric,
            start,
            duration: summary
                .filter(|s| s.duration_s.is_finite() && s.duration_s >= 0.0)
                .map(|s| Duration::from_secs_f64(s.duration_s)),
            rate_hz: summary.map(|s| s.rate_hz),
        }
    }
}

/// The sample type's name: Go's and Pyroscope's names for the heap metrics (`inuse_space`,
/// `inuse_objects`, `alloc_space`, `alloc_objects`), else the metric's own.
pub fn type_name(metric: Metric) -> &'static str {
    match metric {
        Metric::Heap => "inuse_space",
        Metric::HeapObjects => "inuse_objects",
        Metric::HeapAlloc => "alloc_space",
        Metric::HeapAllocCount => "alloc_objects",
        other => other.name(),
    }
}

/// pprof's unit name of a metric's values.
pub fn unit_name(metric: Metric) -> &'static str {
    match metric.unit() {
        Unit::Bytes => "bytes",
        _ => "count",
    }
}

/// The string table under construction.
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Strings {
        let mut strings = Strings::default();
        strings.add("");
        strings
    }

    fn add(&mut self, text: &str) -> i64 {
        if let Some(&index) = self.index.get(text) {
            return index;
        }
        let index = self.table.len() as i64;
        self.table.push(text.to_string());
        self.index.insert(text.to_string(), index);
        index
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The process a thread belongs to: its pid and the root-frame text `process PID: CMD` (its
/// own process in a `--subprocesses` profile, else the sampled target).
fn process_of(profile: &Profile, thread: &ThreadInfo) -> (i32, String) {
    if let Some(process) = profile.process_of(thread) {
        return (process.pid, process.label());
    }
    let target = &profile.target;
    (
        target.pid,
        format!("process {}: {}", target.pid, target.command),
    )
}

/// The metrics that become sample types, in [`Metric::ALL`] order: those `profile` recorded,
/// plus `default_metric`.
pub fn sample_metrics(profile: &Profile, default_metric: Metric) -> Vec<Metric> {
    let recorded = recorded_metrics(profile);
    Metric::ALL
        .into_iter()
        .filter(|m| *m != Metric::HeapFreed)
        .filter(|m| *m == default_metric || recorded.contains(m))
        .collect()
}

/// Builds the profile message.
pub fn build(profile: &Profile, options: &PprofOptions) -> proto::Profile {
    let metrics = sample_metrics(profile, options.default_metric);
    // Memory held at one moment: no threads, no sampling period (Go's heap profiles' `space`).
    let snapshot = profile.is_snapshot();
    let mut strings = Strings::new();
    let sample_type = metrics
        .iter()
        .map(|&m| proto::ValueType {
            r#type: strings.add(type_name(m)),
            unit: strings.add(unit_name(m)),
        })
        .collect();
    let mut functions: Vec<proto::Function> = Vec::new();
    let mut function_ids: HashMap<(String, String, u32), u64> = HashMap::new();
    let mut function_id = |strings: &mut Strings, name: &str, file: &str, first_line: u32| {
        let key = (name.to_string(), file.to_string(), first_line);
        if let Some(&id) = function_ids.get(&key) {
            return id;
        }
        let id = functions.len() as u64 + 1;
        let name = strings.add(name);
        functions.push(proto::Function {
            id,
            name,
            // No system name: a Python name is not a mangled symbol, and pprof demangles
            // (and so empties `<module>` or cuts `<…>` and `(…)` from) a function whose system
            // name is its name.
            system_name: 0,
            filename: strings.add(file),
            start_line: i64::from(first_line),
        });
        function_ids.insert(key, id);
        id
    };
    let mut locations: Vec<proto::Location> = profile
        .frames()
        .iter()
        .enumerate()
        .map(|(index, frame)| proto::Location {
            id: index as u64 + 1,
            line: vec![proto::Line {
                function_id: function_id(
                    &mut strings,
                    &frame.function,
                    &frame.filename,
                    frame.first_line,
                ),
                line: i64::from(frame.line),
            }],
        })
        .collect();
    let mut placeholders: HashMap<String, u64> = HashMap::new();
    let mut samples = Vec::new();
    for weight in profile.weights() {
        if metrics.iter().all(|&m| weight.values.get(m) == 0) {
            continue;
        }
        let location_id: Vec<u64> = if weight.frames.is_empty() {
            let label = weight.thread.empty_stack_label();
            let id = match placeholders.get(&label) {
                Some(&id) => id,
                None => {
                    let id = locations.len() as u64 + 1;
                    let function = function_id(&mut strings, &label, "", 0);
                    locations.push(proto::Location {
                        id,
                        line: vec![proto::Line {
                            function_id: function,
                            line: 0,
                        }],
                    });
                    placeholders.insert(label, id);
                    id
                }
            };
            vec![id]
        } else {
            weight
                .frames
                .iter()
                .rev()
                .map(|&f| u64::from(f) + 1)
                .collect()
        };
        let (pid, process) = process_of(profile, weight.thread);
        let mut label = vec![
            proto::Label {
                key: strings.add("process"),
                str: strings.add(&process),
                ..Default::default()
            },
            proto::Label {
                key: strings.add("pid"),
                num: i64::from(pid),
                ..Default::default()
            },
        ];
        if !snapshot {
            label.insert(
                0,
                proto::Label {
                    key: strings.add("thread"),
                    str: strings.add(&weight.thread.label()),
                    ..Default::default()
                },
            );
        }
        if let Some(tid) = weight.thread.native_id {
            label.push(proto::Label {
                key: strings.add("thread_id"),
                num: i64::from(tid),
                ..Default::default()
            });
        }
        samples.push(proto::Sample {
            location_id,
            value: metrics
                .iter()
                .map(|&m| saturating_i64(weight.values.get(m)))
                .collect(),
            label,
        });
    }
    let target = &profile.target;
    let mut comment = vec![strings.add(&format!(
        "pymemtrace {}: {} (pid {}{})",
        env!("CARGO_PKG_VERSION"),
        target.command,
        target.pid,
        target
            .python_version
            .as_deref()
            .map(|v| format!(", Python {v}"))
            .unwrap_or_default()
    ))];
    if let Some(summary) = &profile.summary {
        comment.push(strings.add(&summary.attribution_note()));
    }
    let period = options
        .rate_hz
        .filter(|r| r.is_finite() && *r > 0.0)
        .map_or(0, |r| (1e9 / r).round() as i64);
    let period_type = Some(if snapshot {
        proto::ValueType {
            r#type: strings.add("space"),
            unit: strings.add("bytes"),
        }
    } else {
        proto::ValueType {
            r#type: strings.add("wall"),
            unit: strings.add("nanoseconds"),
        }
    });
    let default_sample_type = strings.add(type_name(options.default_metric));
    proto::Profile {
        sample_type,
        sample: samples,
        location: locations,
        function: functions,
        time_nanos: options
            .start
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        duration_nanos: options
            .duration
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        period_type,
        period,
        comment,
        default_sample_type,
        string_table: strings.table,
    }
}

/// The profile's pprof bytes, gzipped as pprof files are on disk.
pub fn encode_gzipped(profile: &Profile, options: &PprofOptions) -> io::Result<Vec<u8>> {
    let bytes = build(profile, options).encode_to_vec();
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&bytes)?;
    gz.finish()
}

/// Writes the gzipped pprof profile.
pub fn write(profile: &Profile, options: &PprofOptions, mut out: impl Write) -> io::Result<()> {
    out.write_all(&encode_gzipped(profile, options)?)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::collapsed::{FoldOptions, fold};
    use crate::profile::test_support::two_thread_profile;
    use flate2::read::GzDecoder;
    use std::io::Read;

    fn decoded(profile: &Profile) -> proto::Profile {
        let options = PprofOptions::for_run(profile, Metric::Rss, Some(SystemTime::now()));
        let gz = encode_gzipped(profile, &options).expect("encode");
        let mut bytes = Vec::new();
        GzDecoder::new(gz.as_slice())
            .read_to_end(&mut bytes)
            .expect("gzip");
        proto::Profile::decode(bytes.as_slice()).expect("decode")
    }

    #[test]
    fn sample_types_follow_the_recorded_metrics_and_totals_match_folding() {
        let profile = two_thread_profile();
        let pprof = decoded(&profile);
        let strings = &pprof.string_table;
        assert_eq!(strings[0], "");
        let types: Vec<(&str, &str)> = pprof
            .sample_type
            .iter()
            .map(|t| {
                (
                    strings[t.r#type as usize].as_str(),
                    strings[t.unit as usize].as_str(),
                )
            })
            .collect();
        assert_eq!(
            types,
            [
                ("rss", "bytes"),
                ("rss-release", "bytes"),
                ("cpu", "count"),
                ("wall", "count")
            ]
        );
        for (index, metric) in recorded_metrics(&profile).into_iter().enumerate() {
            let total: i64 = pprof.sample.iter().map(|s| s.value[index]).sum();
            let folded: u64 = fold(
                &profile,
                FoldOptions {
                    metric,
                    threads: false,
                },
            )
            .iter()
            .map(|(_, w)| w)
            .sum();
            assert_eq!(total as u64, folded, "{metric}");
        }
        assert_eq!(strings[pprof.default_sample_type as usize], "rss");
    }

    #[test]
    fn heap_metrics_take_go_and_pyroscope_names() {
        assert_eq!(type_name(Metric::Heap), "inuse_space");
        assert_eq!(type_name(Metric::HeapObjects), "inuse_objects");
        assert_eq!(type_name(Metric::HeapAlloc), "alloc_space");
        assert_eq!(type_name(Metric::HeapAllocCount), "alloc_objects");
        assert_eq!(unit_name(Metric::HeapObjects), "count");
        assert_eq!(type_name(Metric::Rss), "rss");
        let profile = two_thread_profile();
        assert!(!sample_metrics(&profile, Metric::Heap).contains(&Metric::HeapFreed));
    }

    #[test]
    fn locations_functions_and_labels_hold_together() {
        let profile = two_thread_profile();
        let pprof = decoded(&profile);
        let strings = &pprof.string_table;
        let grow = pprof
            .function
            .iter()
            .find(|f| strings[f.name as usize] == "grow")
            .expect("grow");
        assert_eq!(strings[grow.filename as usize], "app/file.py");
        assert_eq!(grow.start_line, 1);
        let leaf_of_main = pprof
            .sample
            .iter()
            .find(|s| {
                s.label.iter().any(|l| {
                    strings[l.key as usize] == "thread"
                        && strings[l.str as usize] == "thread MainThread (1)"
                })
            })
            .expect("MainThread sample");
        assert_eq!(leaf_of_main.location_id.len(), 3);
        let leaf = pprof
            .location
            .iter()
            .find(|l| l.id == leaf_of_main.location_id[0])
            .expect("leaf location");
        assert_eq!(leaf.line[0].function_id, grow.id);
        assert_eq!(leaf.line[0].line, 7);
        for label in &leaf_of_main.label {
            match strings[label.key as usize].as_str() {
                "pid" => assert_eq!(label.num, 4242),
                "thread_id" => assert_eq!(label.num, 1),
                "process" => {
                    assert_eq!(strings[label.str as usize], "process 4242: python3 app.py")
                }
                "thread" => {}
                other => panic!("unexpected label {other}"),
            }
        }
        let placeholder = pprof
            .function
            .iter()
            .find(|f| strings[f.name as usize] == "<non-Python thread jemalloc_bg>");
        assert!(
            placeholder.is_some(),
            "stacks without frames have a placeholder"
        );
    }

    #[test]
    fn a_snapshot_has_the_two_inuse_types_and_no_threads() {
        let mut profile = Profile::snapshot(crate::profile::TargetInfo {
            pid: 9,
            command: "python3 app.py".into(),
            python_version: Some("3.12.1".into()),
        });
        let path = ["__main__".to_string(), "__main__.KEEP".to_string()];
        profile.add_held(&path, 4096, 40);
        let options = PprofOptions {
            default_metric: Metric::Heap,
            start: None,
            duration: None,
            rate_hz: None,
        };
        let mut bytes = Vec::new();
        GzDecoder::new(
            encode_gzipped(&profile, &options)
                .expect("encode")
                .as_slice(),
        )
        .read_to_end(&mut bytes)
        .expect("gzip");
        let pprof = proto::Profile::decode(bytes.as_slice()).expect("decode");
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
        assert_eq!(s[pprof.default_sample_type as usize], "inuse_space");
        assert_eq!(pprof.sample.len(), 1);
        assert_eq!(pprof.sample[0].value, [4096, 40]);
        assert!(
            pprof.sample[0]
                .label
                .iter()
                .all(|l| s[l.key as usize] != "thread")
        );
        let names: Vec<&str> = pprof.sample[0]
            .location_id
            .iter()
            .map(|&id| {
                let function = pprof.location[id as usize - 1].line[0].function_id;
                s[pprof.function[function as usize - 1].name as usize].as_str()
            })
            .collect();
        assert_eq!(names, ["__main__.KEEP", "__main__"]);
    }

    #[test]
    fn each_process_labels_its_own_samples() {
        let profile = crate::profile::test_support::two_process_profile();
        let pprof = decoded(&profile);
        let strings = &pprof.string_table;
        let mut pids: Vec<i64> = pprof
            .sample
            .iter()
            .flat_map(|s| &s.label)
            .filter(|l| strings[l.key as usize] == "pid")
            .map(|l| l.num)
            .collect();
        pids.sort_unstable();
        pids.dedup();
        assert_eq!(pids, [10, 11]);
        assert!(strings.iter().any(|s| s == "process 11: python3 keeper.py"));
    }
}
