//! Output formats, one file each. The sampler's are readers of a [`crate::profile::Profile`]:
//! folded stacks ([`collapsed`]), SVG flamegraphs ([`flame`]), speedscope JSON
//! ([`speedscope`]), gzipped pprof ([`pprof`]), pushes to a Pyroscope server ([`pyroscope`],
//! pprof over HTTP), the JSON timeline ([`timeline`], which can also be read back into a
//! profile) and the memory-over-time plot ([`growth_plot`]), all behind one registry
//! ([`format`]); how frames read in pictures is [`frames`]. The monitors' RSS/CPU plots are
//! [`plot`]. Readers of the models upstream; nothing here reaches back.
//!
//! Owns: file formats and the text of values (units, human-readable bytes).
//! Must not touch: sampling, counters, or how stacks were aggregated.

pub mod collapsed;
pub mod flame;
pub mod format;
pub mod frames;
pub mod growth_plot;
pub mod plot;
pub mod pprof;
pub mod pyroscope;
pub mod speedscope;
pub mod timeline;

use crate::profile::Profile;
use crate::sample::{Metric, Unit};

/// The metrics the sampler charges on every run, whatever was charged to them.
const ALWAYS_RECORDED: [Metric; 4] = [Metric::Rss, Metric::RssRelease, Metric::Cpu, Metric::Wall];

/// The metrics `profile` recorded, in [`Metric::ALL`] order: those the sampler charges on
/// every run (none for a [`Profile::snapshot`], which no sampler made), plus any other (an
/// optional counter source's) that something was charged to.
pub fn recorded_metrics(profile: &Profile) -> Vec<Metric> {
    let weights = profile.weights();
    let always: &[Metric] = if profile.is_snapshot() {
        &[]
    } else {
        &ALWAYS_RECORDED
    };
    Metric::ALL
        .into_iter()
        .filter(|&metric| {
            always.contains(&metric) || weights.iter().any(|weight| weight.values.get(metric) > 0)
        })
        .collect()
}

/// `value` of `metric` for people: bytes as `12.3 MiB`, counts as `1234 samples`.
pub fn format_value(metric: Metric, value: u64) -> String {
    match metric.unit() {
        Unit::Bytes => format_bytes(value),
        unit => format!("{value} {}", unit.name()),
    }
}

/// Bytes in binary units with one decimal (`512 B`, `1.5 KiB`, `212.3 MiB`).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `text` cut to `max` characters with an ellipsis in the middle, keeping both ends (a
/// command line's program and last argument, a path's root and file).
pub fn shorten_middle(text: &str, max: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= max {
        return text.to_string();
    }
    let head = (max - 1) / 2;
    let tail = max - 1 - head;
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[chars.len() - tail..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_shortened_in_the_middle() {
        assert_eq!(shorten_middle("python3 x.py", 60), "python3 x.py");
        let long = format!("python3 {} --flag", "a".repeat(100));
        let short = shorten_middle(&long, 20);
        assert_eq!(short.chars().count(), 20);
        assert!(short.starts_with("python3 ") && short.ends_with("-flag") && short.contains('…'));
    }

    #[test]
    fn bytes_read_naturally() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(200 << 20), "200.0 MiB");
        assert_eq!(format_bytes(3 << 30), "3.0 GiB");
        assert_eq!(format_value(Metric::Wall, 12), "12 samples");
    }
}
