//! speedscope's JSON file format (<https://www.speedscope.app/file-format-schema.json>): the
//! frames shared by every profile, and one `sampled` profile per thread whose samples are the
//! thread's stacks (frame indices, root first) weighed by one metric, in the metric's unit
//! (`bytes`, or `none` for sample and call counts). Per (thread, stack), the weight is the one
//! [`Profile::weights`] gives, so the weights of all profiles add up to the folded total.
//!
//! Owns: the speedscope layout. Must not touch: how weights were aggregated.

use crate::profile::{Profile, StackWeight, ThreadInfo};
use crate::sample::{Metric, Unit};
use serde::Serialize;
use std::collections::HashMap;
use std::io::{self, Write};

/// The `$schema` every speedscope file names.
pub const SCHEMA: &str = "https://www.speedscope.app/file-format-schema.json";

#[derive(Serialize)]
struct FileJson {
    #[serde(rename = "$schema")]
    schema: &'static str,
    shared: SharedJson,
    profiles: Vec<SampledProfileJson>,
    name: String,
    #[serde(rename = "activeProfileIndex")]
    active_profile_index: usize,
    exporter: String,
}

#[derive(Serialize)]
struct SharedJson {
    frames: Vec<FrameJson>,
}

#[derive(Serialize)]
struct FrameJson {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u32>,
}

#[derive(Serialize)]
struct SampledProfileJson {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    unit: &'static str,
    #[serde(rename = "startValue")]
    start_value: u64,
    #[serde(rename = "endValue")]
    end_value: u64,
    samples: Vec<Vec<usize>>,
    weights: Vec<u64>,
}

/// speedscope's `ValueUnit` for a metric's values.
fn value_unit(metric: Metric) -> &'static str {
    match metric.unit() {
        Unit::Bytes => "bytes",
        _ => "none",
    }
}

/// The shared frame table: the profile's frames (same indices as frame ids), then one
/// placeholder frame per distinct label of stacks without Python frames.
struct FrameTable {
    frames: Vec<FrameJson>,
    placeholders: HashMap<String, usize>,
}

impl FrameTable {
    fn new(profile: &Profile) -> FrameTable {
        let frames = profile
            .frames()
            .iter()
            .map(|f| FrameJson {
                name: f.to_string(),
                file: Some(f.filename.clone()),
                line: Some(f.line),
            })
            .collect();
        FrameTable {
            frames,
            placeholders: HashMap::new(),
        }
    }

    /// The frame indices of a weight's stack, root first.
    fn stack(&mut self, weight: &StackWeight<'_>) -> Vec<usize> {
        if weight.frames.is_empty() {
            let label = weight.thread.empty_stack_label();
            let next = self.frames.len();
            let index = *self.placeholders.entry(label.clone()).or_insert(next);
            if index == next {
                self.frames.push(FrameJson {
                    name: label,
                    file: None,
                    line: None,
                });
            }
            return vec![index];
        }
        weight.frames.iter().map(|&id| id as usize).collect()
    }
}

/// The name of a thread's profile: the thread's label, after its process's
/// (`process PID: CMD · thread NAME (TID)`) in a `--subprocesses` profile.
fn profile_name(profile: &Profile, thread: &ThreadInfo) -> String {
    match profile.process_of(thread) {
        Some(process) => format!("{} · {}", process.label(), thread.label()),
        None => thread.label(),
    }
}

/// Writes the speedscope file of `metric`: one sampled profile per thread that has anything
/// charged to it (a single empty profile when nothing was).
pub fn write(profile: &Profile, metric: Metric, mut out: impl Write) -> io::Result<()> {
    let mut table = FrameTable::new(profile);
    let mut profiles: Vec<SampledProfileJson> = Vec::new();
    let mut current: Option<&ThreadInfo> = None;
    for weight in profile.weights() {
        let value = weight.values.get(metric);
        if value == 0 {
            continue;
        }
        let same_thread = current.is_some_and(|t| std::ptr::eq(t, weight.thread));
        if !same_thread {
            current = Some(weight.thread);
            profiles.push(SampledProfileJson {
                kind: "sampled",
                name: profile_name(profile, weight.thread),
                unit: value_unit(metric),
                start_value: 0,
                end_value: 0,
                samples: Vec::new(),
                weights: Vec::new(),
            });
        }
        let stack = table.stack(&weight);
        if let Some(last) = profiles.last_mut() {
            last.samples.push(stack);
            last.weights.push(value);
            last.end_value += value;
        }
    }
    if profiles.is_empty() {
        profiles.push(SampledProfileJson {
            kind: "sampled",
            name: format!("nothing was charged to {metric}"),
            unit: value_unit(metric),
            start_value: 0,
            end_value: 0,
            samples: Vec::new(),
            weights: Vec::new(),
        });
    }
    let active_profile_index = profiles
        .iter()
        .enumerate()
        .max_by_key(|(i, p)| (p.end_value, std::cmp::Reverse(*i)))
        .map_or(0, |(i, _)| i);
    let target = &profile.target;
    let doc = FileJson {
        schema: SCHEMA,
        shared: SharedJson {
            frames: table.frames,
        },
        profiles,
        name: format!(
            "{metric} ({}): {} (pid {})",
            metric.description(),
            target.command,
            target.pid
        ),
        active_profile_index,
        exporter: format!("pymemtrace {}", env!("CARGO_PKG_VERSION")),
    };
    serde_json::to_writer(&mut out, &doc).map_err(io::Error::other)?;
    out.write_all(b"\n")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::collapsed::{FoldOptions, fold};
    use crate::profile::test_support::two_thread_profile;
    use serde_json::Value;

    fn written(metric: Metric) -> Value {
        let mut json = Vec::new();
        write(&two_thread_profile(), metric, &mut json).expect("write");
        serde_json::from_slice(&json).expect("valid JSON")
    }

    #[test]
    fn one_sampled_profile_per_thread_with_frames_in_range() {
        let doc = written(Metric::Rss);
        assert_eq!(doc["$schema"], SCHEMA);
        let frames = doc["shared"]["frames"].as_array().expect("frames");
        let profiles = doc["profiles"].as_array().expect("profiles");
        let names: Vec<&str> = profiles.iter().filter_map(|p| p["name"].as_str()).collect();
        assert_eq!(
            names,
            [
                "thread MainThread (1)",
                "thread worker (2)",
                "thread jemalloc_bg (99)"
            ]
        );
        for p in profiles {
            assert_eq!(p["type"], "sampled");
            assert_eq!(p["unit"], "bytes");
            let samples = p["samples"].as_array().expect("samples");
            let weights = p["weights"].as_array().expect("weights");
            assert_eq!(samples.len(), weights.len());
            for stack in samples {
                for index in stack.as_array().expect("stack") {
                    let index = index.as_u64().expect("index") as usize;
                    assert!(index < frames.len(), "frame {index} out of range");
                }
            }
            let sum: u64 = weights.iter().filter_map(Value::as_u64).sum();
            assert_eq!(p["endValue"].as_u64(), Some(sum));
        }
        let placeholder = &profiles[2]["samples"][0][0];
        let index = placeholder.as_u64().expect("index") as usize;
        assert_eq!(frames[index]["name"], "<non-Python thread jemalloc_bg>");
        assert_eq!(doc["activeProfileIndex"], 0);
    }

    #[test]
    fn weights_add_up_to_the_folded_total() {
        for metric in Metric::ALL {
            let doc = written(metric);
            let sum: u64 = doc["profiles"]
                .as_array()
                .expect("profiles")
                .iter()
                .flat_map(|p| p["weights"].as_array().cloned().unwrap_or_default())
                .filter_map(|w| w.as_u64())
                .sum();
            let folded: u64 = fold(
                &two_thread_profile(),
                FoldOptions {
                    metric,
                    threads: false,
                },
            )
            .iter()
            .map(|(_, w)| w)
            .sum();
            assert_eq!(sum, folded, "{metric}");
        }
        assert_eq!(written(Metric::Wall)["profiles"][0]["unit"], "none");
    }

    #[test]
    fn nothing_charged_is_one_empty_profile() {
        let doc = written(Metric::RssRelease);
        let profiles = doc["profiles"].as_array().expect("profiles");
        assert_eq!(profiles.len(), 1);
        assert_eq!(profiles[0]["samples"].as_array().map(Vec::len), Some(0));
    }

    #[test]
    fn profiles_of_a_process_tree_name_their_process() {
        let mut json = Vec::new();
        let profile = crate::profile::test_support::two_process_profile();
        write(&profile, Metric::Wall, &mut json).expect("write");
        let doc: Value = serde_json::from_slice(&json).expect("json");
        let mut names: Vec<&str> = doc["profiles"]
            .as_array()
            .expect("profiles")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "process 10: python3 keeper.py · thread MainThread (7)",
                "process 11: python3 keeper.py · thread MainThread (7)"
            ]
        );
    }
}
