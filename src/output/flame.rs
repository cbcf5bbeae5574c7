//! SVG flamegraphs drawn by inferno from the folded stacks of one metric, titled with the metric,
//! its unit and total, the target and the run's length. Frames read as [`FrameStyle`] says
//! (import frames folded away, short paths by default); where a label is shortened, its
//! tooltip carries the full text. Drawn root at the bottom, or at the top as an icicle.

use super::collapsed::{self, FoldOptions};
use super::frames::{FrameLabels, FrameStyle};
use super::{format_value, shorten_middle};
use crate::profile::Profile;
use crate::sample::{Metric, Unit};
use std::borrow::Cow;
use std::io::{self, Write};

/// What to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlameOptions {
    /// The metric and whether threads are root frames.
    pub fold: FoldOptions,
    /// How frames read.
    pub style: FrameStyle,
    /// Root at the top (an icicle graph) instead of the bottom.
    pub icicle: bool,
}

impl From<FoldOptions> for FlameOptions {
    fn from(fold: FoldOptions) -> FlameOptions {
        FlameOptions {
            fold,
            style: FrameStyle::READABLE,
            icicle: false,
        }
    }
}

/// What happened when drawing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlameOutcome {
    /// A flamegraph of the metric was written.
    Drawn,
    /// Nothing was charged to the metric: the SVG written says so instead.
    Empty,
}

/// Draws the flamegraph of `options.fold.metric` into `out`.
pub fn write(
    profile: &Profile,
    options: impl Into<FlameOptions>,
    mut out: impl Write,
) -> io::Result<FlameOutcome> {
    let options = options.into();
    let metric = options.fold.metric;
    let labels = FrameLabels::new(profile, options.style);
    let folded = collapsed::fold_labelled(profile, options.fold, &labels);
    let lines: Vec<String> = folded
        .iter()
        .map(|(stack, weight)| format!("{stack} {weight}"))
        .collect();
    let total: u64 = folded.iter().map(|(_, w)| w).sum();
    let mut inferno_options = inferno::flamegraph::Options::default();
    inferno_options.title = title(metric);
    inferno_options.subtitle = Some(subtitle(profile, metric, total));
    inferno_options.name_type = "Frame:".to_string();
    let (count_name, factor) = display_unit(metric, total);
    inferno_options.count_name = count_name.to_string();
    inferno_options.factor = factor;
    inferno_options.hash = true;
    if options.icicle {
        inferno_options.direction = inferno::flamegraph::Direction::Inverted;
    }
    let mut svg = Vec::new();
    let outcome = match inferno::flamegraph::from_lines(
        &mut inferno_options,
        lines.iter().map(String::as_str),
        &mut svg,
    ) {
        Ok(()) => FlameOutcome::Drawn,
        Err(err) if total == 0 && err.kind() == io::ErrorKind::InvalidData => FlameOutcome::Empty,
        Err(err) => return Err(err),
    };
    match String::from_utf8(svg) {
        Ok(text) => out.write_all(with_full_titles(&text, &labels).as_bytes())?,
        Err(err) => out.write_all(err.as_bytes())?,
    }
    Ok(outcome)
}

/// `svg` with each frame's tooltip (`<title>LABEL (WEIGHT, PCT)</title>`) naming the frame's
/// full text where its label was shortened.
fn with_full_titles(svg: &str, labels: &FrameLabels) -> String {
    const OPEN: &str = "<title>";
    const CLOSE: &str = "</title>";
    let mut out = String::with_capacity(svg.len() + svg.len() / 4);
    let mut rest = svg;
    while let Some(start) = rest.find(OPEN) {
        let (head, tail) = rest.split_at(start + OPEN.len());
        out.push_str(head);
        let Some(end) = tail.find(CLOSE) else {
            rest = tail;
            break;
        };
        out.push_str(&retitle(&tail[..end], labels));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// One tooltip's escaped text with the full frame text in place of its label.
fn retitle<'a>(escaped: &'a str, labels: &FrameLabels) -> Cow<'a, str> {
    let text = unescape_xml(escaped);
    let Some(split) = text.rfind(" (") else {
        return Cow::Borrowed(escaped);
    };
    match labels.full_text(&text[..split]) {
        Some(full) => Cow::Owned(escape_xml(&format!("{full}{}", &text[split..]))),
        None => Cow::Borrowed(escaped),
    }
}

/// XML text with the five predefined entities replaced by their characters.
fn unescape_xml(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// `text` as XML character data.
fn escape_xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `Memory flamegraph: rss (resident memory growth)`.
fn title(metric: Metric) -> String {
    let kind = match metric.unit() {
        Unit::Bytes | Unit::Calls | Unit::Objects => "Memory",
        Unit::Samples => "Time",
    };
    format!("{kind} flamegraph: {metric} ({})", metric.description())
}

/// Total, target, run length and attribution on one line.
fn subtitle(profile: &Profile, metric: Metric, total: u64) -> String {
    let target = &profile.target;
    let mut parts = vec![format!("total {}", format_value(metric, total))];
    let python = target
        .python_version
        .as_deref()
        .map(|v| format!(", Python {v}"))
        .unwrap_or_default();
    parts.push(format!(
        "{} (pid {}{python})",
        shorten_middle(&target.command, MAX_COMMAND_CHARS),
        target.pid
    ));
    if let Some(summary) = &profile.summary {
        parts.push(if summary.time_sampled_in_kernel() {
            format!(
                "{:.1} s, time sampled in the kernel at {:.0} Hz",
                summary.duration_s, summary.rate_hz
            )
        } else {
            format!(
                "{:.1} s, {} samples at {:.0} Hz",
                summary.duration_s,
                summary.samples,
                summary.achieved_rate()
            )
        });
        let note = summary.attribution_note();
        let length: usize = parts.iter().map(|p| p.chars().count() + 3).sum();
        if matches!(metric, Metric::Rss) && length + note.chars().count() <= MAX_SUBTITLE_CHARS {
            parts.push(note);
        }
    }
    parts.join(" · ")
}

/// The longest subtitle that fits the default 1200-pixel-wide image; past it, the
/// attribution note (also in the summary and the JSON) is left out.
const MAX_SUBTITLE_CHARS: usize = 160;
/// The most characters of the target's command line shown in the subtitle.
const MAX_COMMAND_CHARS: usize = 60;

/// The unit counts are shown in, and the factor from the metric's values to it: bytes stay
/// bytes below 1 MiB, are KiB below 10 GiB, MiB above.
fn display_unit(metric: Metric, total: u64) -> (&'static str, f64) {
    match metric.unit() {
        Unit::Bytes if total < (1 << 20) => ("bytes", 1.0),
        Unit::Bytes if total < (10 << 30) => ("KiB", 1.0 / 1024.0),
        Unit::Bytes => ("MiB", 1.0 / (1024.0 * 1024.0)),
        unit => (unit.name(), 1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_units_scale_with_the_total() {
        assert_eq!(display_unit(Metric::Rss, 1000), ("bytes", 1.0));
        assert_eq!(display_unit(Metric::Rss, 200 << 20).0, "KiB");
        assert_eq!(display_unit(Metric::RssRelease, 20 << 30).0, "MiB");
        assert_eq!(display_unit(Metric::Cpu, 5), ("samples", 1.0));
    }

    #[test]
    fn title_names_metric_and_meaning() {
        assert_eq!(
            title(Metric::Rss),
            "Memory flamegraph: rss (resident memory growth)"
        );
        assert_eq!(
            title(Metric::Wall),
            "Time flamegraph: wall (wall-clock samples)"
        );
    }
}

#[cfg(test)]
mod svg_tests {
    use super::*;
    use crate::profile::test_support::two_thread_profile;
    use quick_xml::events::Event;

    /// Every text node of the SVG, failing on malformed XML.
    fn svg_texts(svg: &[u8]) -> Vec<String> {
        let mut reader = quick_xml::Reader::from_reader(svg);
        let mut texts = Vec::new();
        let mut current = String::new();
        let mut buffer = Vec::new();
        loop {
            match reader
                .read_event_into(&mut buffer)
                .expect("well-formed XML")
            {
                Event::Text(text) => current.push_str(&text.xml10_content().expect("text")),
                Event::GeneralRef(reference) => {
                    current.push_str(match reference.as_ref() {
                        b"lt" => "<",
                        b"gt" => ">",
                        b"amp" => "&",
                        b"quot" => "\"",
                        b"apos" => "'",
                        _ => "?",
                    });
                }
                Event::Eof => break,
                _ => {
                    if !current.trim().is_empty() {
                        texts.push(std::mem::take(&mut current));
                    }
                    current.clear();
                }
            }
            buffer.clear();
        }
        texts
    }

    #[test]
    fn svg_is_xml_with_title_total_and_frames() {
        let profile = two_thread_profile();
        let mut svg = Vec::new();
        let options = FoldOptions {
            metric: Metric::Rss,
            threads: true,
        };
        assert_eq!(
            write(&profile, options, &mut svg).expect("draw"),
            FlameOutcome::Drawn
        );
        let all = svg_texts(&svg).join("\n");
        assert!(
            all.contains("Memory flamegraph: rss (resident memory growth)"),
            "{all}"
        );
        assert!(all.contains("total 4.0 MiB"), "{all}");
        assert!(
            all.contains("python3 app.py (pid 4242, Python 3.11.7)"),
            "{all}"
        );
        // Frames narrower than inferno's minimum width (0.1%) are pruned from the drawing.
        for frame in [
            "grow (app/file.py:7)",
            "thread MainThread (1)",
            "<module> (app/file.py:20)",
        ] {
            assert!(all.contains(frame), "{frame} missing from {all}");
        }
        assert!(all.contains("KiB"), "bytes are shown in KiB: {all}");
    }

    #[test]
    fn nothing_charged_still_writes_valid_svg() {
        let profile = two_thread_profile();
        let mut svg = Vec::new();
        let options = FoldOptions {
            metric: Metric::RssRelease,
            threads: false,
        };
        assert_eq!(
            write(&profile, options, &mut svg).expect("draw"),
            FlameOutcome::Empty
        );
        assert!(!svg_texts(&svg).is_empty());
    }
}

#[cfg(test)]
mod readable_tests {
    use super::*;
    use crate::profile::TargetInfo;
    use crate::python::{CodeInfo, Frame};
    use crate::sample::{MetricValues, Sample, ThreadIdentity, ThreadSample};
    use std::sync::Arc;
    use std::time::Duration;

    fn frame(function: &str, filename: &str, line: u32) -> Frame {
        Frame {
            code: Arc::new(CodeInfo {
                function: function.to_string(),
                filename: filename.to_string(),
                first_line: 1,
            }),
            line,
        }
    }

    /// `app.py` imports `big`, whose top level keeps 1 MiB, through the import machinery.
    fn import_profile() -> Profile {
        let mut profile = Profile::new(TargetInfo::default(), false);
        let stack = [
            frame("<module>", "/srv/app/big.py", 4),
            frame(
                "_call_with_frames_removed",
                "<frozen importlib._bootstrap>",
                241,
            ),
            frame("exec_module", "<frozen importlib._bootstrap_external>", 940),
            frame("_load", "<frozen importlib._bootstrap>", 1176),
            frame("<module>", "/srv/app/app.py", 1),
        ];
        for (ms, rss) in [(0, 1 << 20), (300, 0), (600, 0)] {
            let mut values = MetricValues::default();
            values.add(Metric::Rss, rss);
            profile.add(Sample {
                time: Duration::from_millis(ms),
                rss: Some(1 << 22),
                threads: vec![ThreadSample {
                    thread: ThreadIdentity {
                        python_id: Some(1),
                        native_id: Some(1),
                        name: Some("MainThread".to_string()),
                    },
                    frames: stack.to_vec(),
                    values,
                }],
            });
        }
        profile
    }

    fn draw(style: FrameStyle) -> String {
        let options = FlameOptions {
            fold: FoldOptions {
                metric: Metric::Rss,
                threads: false,
            },
            style,
            icicle: false,
        };
        let mut svg = Vec::new();
        write(&import_profile(), options, &mut svg).expect("draw");
        String::from_utf8(svg).expect("utf-8")
    }

    #[test]
    fn import_frames_fold_away_and_labels_are_short_with_full_tooltips() {
        let svg = draw(FrameStyle::READABLE);
        assert!(!svg.contains("importlib"), "{svg}");
        assert!(svg.contains("&lt;import system&gt;"), "{svg}");
        assert!(svg.contains("&lt;module&gt; (big.py:4)"), "{svg}");
        assert!(
            svg.contains("<title>&lt;module&gt; (/srv/app/big.py:4) (1,024 KiB, 100.00%)</title>"),
            "{svg}"
        );
        let options = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..roxmltree::ParsingOptions::default()
        };
        roxmltree::Document::parse_with_options(&svg, options).expect("well-formed SVG");
    }

    #[test]
    fn show_imports_keeps_the_machinery() {
        let svg = draw(FrameStyle {
            show_imports: true,
            full_paths: false,
        });
        assert!(svg.contains("exec_module (&lt;frozen importlib._bootstrap_external&gt;:940)"));
    }
}
