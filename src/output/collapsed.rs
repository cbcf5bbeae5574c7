//! Folded stacks, the input of every flamegraph tool: one line per unique stack,
//! `root;…;leaf WEIGHT`, root first, integer weights of one metric, sorted by stack.

use crate::profile::Profile;
use crate::sampler::Metric;
use std::collections::BTreeMap;
use std::io::{self, Write};

/// What to fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoldOptions {
    /// The metric whose totals are the weights.
    pub metric: Metric,
    /// Put `thread NAME (TID)` at the root of each stack.
    pub threads: bool,
}

/// The folded stacks of `profile`: (stack text, weight), sorted by stack text, zero weights
/// left out. Stacks that read the same (the same frames on different threads, without
/// `threads`) are merged.
pub fn fold(profile: &Profile, options: FoldOptions) -> Vec<(String, u64)> {
    let mut folded: BTreeMap<String, u64> = BTreeMap::new();
    for weight in profile.weights() {
        let value = weight.values.get(options.metric);
        if value == 0 {
            continue;
        }
        let frames: Vec<String> = profile
            .stack_text(&weight, options.threads)
            .iter()
            .map(|f| sanitize_frame(f))
            .collect();
        *folded.entry(frames.join(";")).or_default() += value;
    }
    folded.into_iter().collect()
}

/// Writes the folded stacks, one `stack weight` line each.
pub fn write(profile: &Profile, options: FoldOptions, mut out: impl Write) -> io::Result<()> {
    for (stack, weight) in fold(profile, options) {
        writeln!(out, "{stack} {weight}")?;
    }
    out.flush()
}

/// A frame's text made safe for the folded format: `;` separates frames and a line break ends
/// the record, so both are replaced.
fn sanitize_frame(frame: &str) -> String {
    frame
        .chars()
        .map(|c| match c {
            ';' => ',',
            '\n' | '\r' => ' ',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_never_leak_from_frame_text() {
        assert_eq!(sanitize_frame("f (a;b.py:1)"), "f (a,b.py:1)");
        assert_eq!(sanitize_frame("g\n (x.py:2)"), "g  (x.py:2)");
    }
}
