//! Growth between two snapshots of one process: by type (objects and shallow bytes) and by
//! holder (items and retained bytes; holders are matched by their retention path). A model
//! for the reports, computed from two [`Snapshot`]s only.

use super::snapshot::Snapshot;
use super::watch::WhoGrew;
use serde::Serialize;
use std::collections::HashMap;

/// How one type's live objects changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TypeGrowth {
    /// The type.
    pub name: String,
    /// Objects before and after.
    pub count: (u64, u64),
    /// Shallow bytes before and after.
    pub bytes: (u64, u64),
}

/// How one holder changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HolderGrowth {
    /// Its retention path.
    pub path: String,
    /// Its type.
    pub type_name: String,
    /// Items before (`None`: not among the first snapshot's holders) and after.
    pub items: (Option<u64>, u64),
    /// Retained bytes before (`None`: not among the first snapshot's holders) and after.
    pub retained_bytes: (Option<u64>, u64),
}

impl HolderGrowth {
    /// Retained bytes gained (all of them for a holder new in the second snapshot).
    pub fn grown_bytes(&self) -> i64 {
        self.retained_bytes.1 as i64 - self.retained_bytes.0.unwrap_or(0) as i64
    }
}

/// Growth between two snapshots.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotDiff {
    /// Seconds between the starts of the two snapshots.
    pub seconds: f64,
    /// Every type whose count or bytes changed, most bytes gained first.
    pub types: Vec<TypeGrowth>,
    /// The second snapshot's holders, most retained bytes gained first.
    pub holders: Vec<HolderGrowth>,
    /// Who wrote the sizes of the holders that grew, where they were watched (set by the
    /// caller that watched them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub who_grew: Option<WhoGrew>,
}

/// The growth from `before` to `after`, taken `seconds` apart.
pub fn diff(before: &Snapshot, after: &Snapshot, seconds: f64) -> SnapshotDiff {
    let mut by_name: HashMap<&str, TypeGrowth> = HashMap::new();
    for t in &before.types {
        by_name.insert(
            &t.name,
            TypeGrowth {
                name: t.name.clone(),
                count: (t.count, 0),
                bytes: (t.bytes, 0),
            },
        );
    }
    for t in &after.types {
        let entry = by_name.entry(&t.name).or_insert_with(|| TypeGrowth {
            name: t.name.clone(),
            count: (0, 0),
            bytes: (0, 0),
        });
        entry.count.1 = t.count;
        entry.bytes.1 = t.bytes;
    }
    let mut types: Vec<TypeGrowth> = by_name
        .into_values()
        .filter(|t| t.count.0 != t.count.1 || t.bytes.0 != t.bytes.1)
        .collect();
    let gained = |t: &TypeGrowth| t.bytes.1 as i64 - t.bytes.0 as i64;
    types.sort_by(|a, b| gained(b).cmp(&gained(a)).then(a.name.cmp(&b.name)));

    let earlier: HashMap<&str, (u64, u64)> = before
        .holders
        .iter()
        .map(|h| (h.path.as_str(), (h.items, h.retained_bytes)))
        .collect();
    let mut holders: Vec<HolderGrowth> = after
        .holders
        .iter()
        .map(|h| {
            let was = earlier.get(h.path.as_str());
            HolderGrowth {
                path: h.path.clone(),
                type_name: h.type_name.clone(),
                items: (was.map(|w| w.0), h.items),
                retained_bytes: (was.map(|w| w.1), h.retained_bytes),
            }
        })
        .collect();
    holders.sort_by_key(|h| std::cmp::Reverse(h.grown_bytes()));
    SnapshotDiff {
        seconds,
        types,
        holders,
        who_grew: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::{Holder, TypeStats};

    fn snapshot(types: &[(&str, u64, u64)], holders: &[(&str, u64, u64)]) -> Snapshot {
        Snapshot {
            pid: 1,
            python_version: "3.12.1".into(),
            types: types
                .iter()
                .map(|&(name, count, bytes)| TypeStats {
                    name: name.into(),
                    count,
                    bytes,
                    tracked: 0,
                })
                .collect(),
            holders: holders
                .iter()
                .map(|&(path, items, retained_bytes)| Holder {
                    path: path.into(),
                    steps: path.split('.').map(str::to_string).collect(),
                    within: None,
                    type_name: "list".into(),
                    items,
                    retained_bytes,
                    retained_objects: items,
                    address: 0,
                    size_field: None,
                    type_address: 0,
                    always_tracked: false,
                })
                .collect(),
            ..Snapshot::default()
        }
    }

    #[test]
    fn growth_is_matched_by_type_name_and_holder_path() {
        let before = snapshot(
            &[("dict", 10, 1000), ("str", 5, 100)],
            &[("__main__.KEEP", 10, 1000), ("__main__.OLD", 3, 300)],
        );
        let after = snapshot(
            &[("dict", 30, 3000), ("str", 5, 100), ("set", 1, 200)],
            &[("__main__.KEEP", 30, 3000), ("__main__.NEW", 1, 200)],
        );
        let d = diff(&before, &after, 2.0);
        let names: Vec<&str> = d.types.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["dict", "set"]);
        assert_eq!(d.types[0].count, (10, 30));
        assert_eq!(d.holders[0].path, "__main__.KEEP");
        assert_eq!(d.holders[0].items, (Some(10), 30));
        assert_eq!(d.holders[0].grown_bytes(), 2000);
        assert_eq!(d.holders[1].items, (None, 1));
    }
}
