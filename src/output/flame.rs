//! SVG flamegraphs drawn by inferno from the folded stacks of one metric, titled with the metric,
//! its unit and total, the target and the run's length.

use super::collapsed::{self, FoldOptions};
use super::format_value;
use crate::profile::Profile;
use crate::sampler::{Metric, Unit};
use std::io::{self, Write};

/// What happened when drawing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlameOutcome {
    /// A flamegraph of the metric was written.
    Drawn,
    /// Nothing was charged to the metric: the SVG written says so instead.
    Empty,
}

/// Draws the flamegraph of `options.metric` into `out`.
pub fn write(profile: &Profile, options: FoldOptions, out: impl Write) -> io::Result<FlameOutcome> {
    let folded = collapsed::fold(profile, options);
    let lines: Vec<String> = folded
        .iter()
        .map(|(stack, weight)| format!("{stack} {weight}"))
        .collect();
    let total: u64 = folded.iter().map(|(_, w)| w).sum();
    let mut inferno_options = inferno::flamegraph::Options::default();
    inferno_options.title = title(options.metric);
    inferno_options.subtitle = Some(subtitle(profile, options.metric, total));
    inferno_options.name_type = "Frame:".to_string();
    let (count_name, factor) = display_unit(options.metric, total);
    inferno_options.count_name = count_name.to_string();
    inferno_options.factor = factor;
    inferno_options.hash = true;
    match inferno::flamegraph::from_lines(
        &mut inferno_options,
        lines.iter().map(String::as_str),
        out,
    ) {
        Ok(()) => Ok(FlameOutcome::Drawn),
        Err(err) if total == 0 && err.kind() == io::ErrorKind::InvalidData => {
            Ok(FlameOutcome::Empty)
        }
        Err(err) => Err(err),
    }
}

/// `Memory flamegraph: rss (resident memory growth)`.
fn title(metric: Metric) -> String {
    let kind = match metric.unit() {
        Unit::Bytes | Unit::Calls => "Memory",
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
    parts.push(format!("{} (pid {}{python})", target.command, target.pid));
    if let Some(summary) = &profile.summary {
        parts.push(format!(
            "{:.1} s, {} samples at {:.0} Hz",
            summary.duration_s,
            summary.samples,
            summary.achieved_rate()
        ));
        if matches!(metric, Metric::Rss) {
            parts.push(summary.attribution_note());
        }
    }
    parts.join(" · ")
}

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
        assert_eq!(title(Metric::Wall), "Time flamegraph: wall (wall-clock samples)");
    }
}
