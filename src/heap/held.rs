//! A heap snapshot (or the growth between two) as a [`Profile`] of memory held by retention
//! path, so that the output registry writes it as pprof (`inuse_space`, `inuse_objects`) and
//! as a flamegraph like any other profile. Each listed holder is a stack of its path's steps,
//! root first, each step named by the path up to it (`__main__` → `__main__.KEEP`), weighed by what it retains apart from the other listed
//! holders within it (their own stacks carry that), so that no byte is counted twice and a
//! frame's total is what the holders under it retain. What no listed holder retains is two
//! more stacks: `<not reached from a root>` (garbage awaiting the collector, or objects held
//! only by C code) and `<in no listed holder>` (the rest), so the total is the whole heap
//! the walk found.
//!
//! Owns: the mapping from snapshots to held weights. Must not touch: the walk, or any file
//! format (the output registry writes the profile).

use super::snapshot::Snapshot;
use crate::profile::{Profile, TargetInfo};
use std::collections::HashMap;

/// The stack of the objects no root reaches.
pub const UNREACHED: &str = "<not reached from a root>";
/// The stack of the reached objects no listed holder retains.
pub const UNLISTED: &str = "<in no listed holder>";

/// Per stack (root-first steps): `(bytes, objects)` held, each object counted once.
fn exclusive(snapshot: &Snapshot) -> Vec<(Vec<String>, u64, u64)> {
    let mut own: Vec<(u64, u64)> = snapshot
        .holders
        .iter()
        .map(|h| (h.retained_bytes, h.retained_objects))
        .collect();
    let (mut top_bytes, mut top_objects) = (0u64, 0u64);
    for holder in &snapshot.holders {
        match holder.within.and_then(|i| own.get_mut(i)) {
            Some(outer) => {
                outer.0 = outer.0.saturating_sub(holder.retained_bytes);
                outer.1 = outer.1.saturating_sub(holder.retained_objects);
            }
            None => {
                top_bytes += holder.retained_bytes;
                top_objects += holder.retained_objects;
            }
        }
    }
    let mut stacks: Vec<(Vec<String>, u64, u64)> = snapshot
        .holders
        .iter()
        .zip(own)
        .map(|(h, (bytes, objects))| (h.steps.clone(), bytes, objects))
        .collect();
    let unreached_objects = snapshot.objects.saturating_sub(snapshot.reached_objects);
    stacks.push((
        vec![UNREACHED.to_string()],
        snapshot.unreached_bytes,
        unreached_objects,
    ));
    stacks.push((
        vec![UNLISTED.to_string()],
        snapshot
            .bytes
            .saturating_sub(snapshot.unreached_bytes)
            .saturating_sub(top_bytes),
        snapshot
            .reached_objects
            .saturating_sub(top_objects)
            .min(snapshot.objects),
    ));
    stacks
}

fn target_of(snapshot: &Snapshot, command: &str) -> TargetInfo {
    TargetInfo {
        pid: snapshot.pid,
        command: command.to_string(),
        python_version: Some(snapshot.python_version.clone()),
    }
}

/// What each listed holder of `snapshot` retains, by retention path (`command`: the target's
/// command line, for titles).
pub fn held_profile(snapshot: &Snapshot, command: &str) -> Profile {
    let mut profile = Profile::snapshot(target_of(snapshot, command));
    for (steps, bytes, objects) in exclusive(snapshot) {
        profile.add_held(&steps, bytes, objects);
    }
    profile
}

/// What each stack of [`held_profile`] gained from `before` to `after` (a stack missing from
/// `before` gained all it holds): only gains, since a profile's weights are not negative; a
/// holder that shrank weighs nothing.
pub fn growth_profile(before: &Snapshot, after: &Snapshot, command: &str) -> Profile {
    let earlier: HashMap<Vec<String>, (u64, u64)> = exclusive(before)
        .into_iter()
        .map(|(steps, bytes, objects)| (steps, (bytes, objects)))
        .collect();
    let mut profile = Profile::snapshot(target_of(after, command));
    for (steps, bytes, objects) in exclusive(after) {
        let (was_bytes, was_objects) = earlier.get(&steps).copied().unwrap_or((0, 0));
        let (bytes, objects) = (
            bytes.saturating_sub(was_bytes),
            objects.saturating_sub(was_objects),
        );
        if bytes > 0 || objects > 0 {
            profile.add_held(&steps, bytes, objects);
        }
    }
    profile
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::Holder;
    use crate::sample::Metric;

    fn holder(path: &str, within: Option<usize>, bytes: u64, objects: u64) -> Holder {
        Holder {
            path: path.to_string(),
            steps: path
                .match_indices('.')
                .map(|(at, _)| path[..at].to_string())
                .chain([path.to_string()])
                .collect(),
            within,
            type_name: "list".to_string(),
            items: objects,
            retained_bytes: bytes,
            retained_objects: objects,
            address: 0,
            size_field: None,
            type_address: 0,
            always_tracked: false,
        }
    }

    fn snapshot(holders: Vec<Holder>) -> Snapshot {
        Snapshot {
            pid: 7,
            python_version: "3.12.1".into(),
            objects: 1000,
            bytes: 100_000,
            reached_objects: 900,
            unreached_bytes: 5_000,
            holders,
            ..Snapshot::default()
        }
    }

    fn weights(profile: &Profile) -> HashMap<String, (u64, u64)> {
        profile
            .weights()
            .iter()
            .map(|w| {
                (
                    profile.stack_text(w, false).join(";"),
                    (
                        w.values.get(Metric::Heap),
                        w.values.get(Metric::HeapObjects),
                    ),
                )
            })
            .collect()
    }

    #[test]
    fn nested_holders_are_counted_once_and_the_total_is_the_heap() {
        let s = snapshot(vec![
            holder("__main__.KEEP", None, 60_000, 500),
            holder("__main__.KEEP.inner", Some(0), 10_000, 100),
            holder("app.SEEN", None, 20_000, 200),
        ]);
        let profile = held_profile(&s, "python3 app.py");
        let w = weights(&profile);
        assert_eq!(w["__main__;__main__.KEEP"], (50_000, 400));
        assert_eq!(
            w["__main__;__main__.KEEP;__main__.KEEP.inner"],
            (10_000, 100)
        );
        assert_eq!(w["app;app.SEEN"], (20_000, 200));
        assert_eq!(w[UNREACHED], (5_000, 100));
        assert_eq!(w[UNLISTED], (15_000, 200));
        assert_eq!(profile.total(Metric::Heap), s.bytes);
        assert_eq!(profile.total(Metric::HeapObjects), s.objects);
    }

    #[test]
    fn growth_is_what_each_path_gained() {
        let before = snapshot(vec![holder("__main__.KEEP", None, 60_000, 500)]);
        let mut after = snapshot(vec![
            holder("__main__.KEEP", None, 90_000, 800),
            holder("__main__.NEW", None, 1_000, 10),
        ]);
        after.bytes = 131_000;
        after.objects = 1310;
        after.reached_objects = 1210;
        let w = weights(&growth_profile(&before, &after, "python3 app.py"));
        assert_eq!(w["__main__;__main__.KEEP"], (30_000, 300));
        assert_eq!(w["__main__;__main__.NEW"], (1_000, 10));
        assert!(!w.contains_key(UNLISTED), "{w:?}");
    }
}
