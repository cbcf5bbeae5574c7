//! Folded stacks, the input of every flamegraph tool: one line per unique stack,
//! `root;…;leaf WEIGHT`, root first, integer weights of one metric (as
//! [`Profile::weights`] defines them), sorted by stack.

use super::frames::{FrameLabels, FrameStyle};
use crate::profile::Profile;
use crate::sample::Metric;
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
    fold_labelled(
        profile,
        options,
        &FrameLabels::new(profile, FrameStyle::EXACT),
    )
}

/// Like [`fold`], with stacks labelled by `labels` (short paths, the import system folded into
/// one frame): stacks that then read the same are merged, so the total is unchanged.
pub fn fold_labelled(
    profile: &Profile,
    options: FoldOptions,
    labels: &FrameLabels,
) -> Vec<(String, u64)> {
    let mut folded: BTreeMap<String, u64> = BTreeMap::new();
    for weight in profile.weights() {
        let value = weight.values.get(options.metric);
        if value == 0 {
            continue;
        }
        let mut stack = String::new();
        for (i, frame) in profile
            .stack_labels(&weight, options.threads, |ids| labels.stack(ids))
            .iter()
            .enumerate()
        {
            if i > 0 {
                stack.push(';');
            }
            push_sanitized(&mut stack, frame);
        }
        *folded.entry(stack).or_default() += value;
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
#[cfg(test)]
fn sanitize_frame(frame: &str) -> String {
    let mut out = String::new();
    push_sanitized(&mut out, frame);
    out
}

/// Appends `frame`'s text made safe for the folded format (as it mostly is: then as it is).
fn push_sanitized(out: &mut String, frame: &str) {
    if !frame.contains([';', '\n', '\r']) {
        out.push_str(frame);
        return;
    }
    out.extend(frame.chars().map(|c| match c {
        ';' => ',',
        '\n' | '\r' => ' ',
        c => c,
    }));
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

#[cfg(test)]
mod fold_tests {
    use super::*;
    use crate::profile::test_support::two_thread_profile;

    #[test]
    fn same_frames_on_two_threads_merge_without_threads() {
        let profile = two_thread_profile();
        let folded = fold(
            &profile,
            FoldOptions {
                metric: Metric::Rss,
                threads: false,
            },
        );
        let grow = "<module> (app/file.py:20);main (app/file.py:3);grow (app/file.py:7)";
        assert_eq!(
            folded,
            vec![
                (grow.to_string(), 4 * (1 << 20) + 2 * 512),
                ("<non-Python thread jemalloc_bg>".to_string(), 400),
                ("wait (app/file.py:2)".to_string(), 2 * 512),
            ]
        );
    }

    #[test]
    fn threads_become_root_frames() {
        let profile = two_thread_profile();
        let mut out = Vec::new();
        write(
            &profile,
            FoldOptions {
                metric: Metric::Wall,
                threads: true,
            },
            &mut out,
        )
        .expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        let expected = "\
thread MainThread (1);<module> (app/file.py:20);main (app/file.py:3);grow (app/file.py:7) 4
thread worker (2);<module> (app/file.py:20);main (app/file.py:3);grow (app/file.py:7) 2
thread worker (2);wait (app/file.py:2) 2
";
        assert_eq!(text, expected, "the non-Python thread has no wall samples");
    }

    #[test]
    fn a_metric_with_nothing_charged_folds_to_nothing() {
        let profile = two_thread_profile();
        let options = FoldOptions {
            metric: Metric::RssRelease,
            threads: true,
        };
        assert!(fold(&profile, options).is_empty());
    }
}
