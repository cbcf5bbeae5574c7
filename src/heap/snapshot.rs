//! The model of one heap snapshot: live objects by type, the holders that retain the most with
//! their retention paths, what was not followed, and what the read cost. Built from the
//! walker's graph and its dominators; every report (text, JSON, flamegraph, pprof) reads
//! this model and nothing else.

use super::dominators::Dominators;
use super::names::path_of;
use super::reader::ReadStats;
use super::rss::RssBreakdown;
use super::types::Kind;
use super::walker::{Graph, Label, NO_NODE};
use crate::attach::ReadMemory;
use crate::python::layout::Layout;
use serde::Serialize;
use std::collections::HashMap;

/// One type's live objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TypeStats {
    /// `module.QualName` for classes, the built-in name otherwise.
    pub name: String,
    /// Objects found.
    pub count: u64,
    /// Their shallow bytes.
    pub bytes: u64,
    /// How many of them were on the collector's lists (what `gc.get_objects()` returns).
    pub tracked: u64,
}

/// A container that retains memory, named by its retention path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    /// Its retention path from a root (`__main__.KEEP`).
    pub path: String,
    /// The same path as steps, root first, each named by the path up to it
    /// (`["__main__", "__main__.KEEP"]`).
    pub steps: Vec<String>,
    /// The index in [`Snapshot::holders`] of the nearest listed holder that dominates it
    /// (whose retained size includes this one's); `None` for a holder no other listed holder
    /// contains.
    pub within: Option<usize>,
    /// Its type.
    pub type_name: String,
    /// `len()` of it.
    pub items: u64,
    /// Bytes freed if it went (itself and all it alone keeps).
    pub retained_bytes: u64,
    /// Objects freed if it went.
    pub retained_objects: u64,
    /// Its address in the target.
    pub address: u64,
    /// Where its size lies (`ob_size` of a list or deque, `ma_used` of a dict, `used` of a
    /// set), as an offset from [`Holder::address`]: what a watchpoint watches. `None` for a
    /// tuple, which does not grow.
    #[serde(skip)]
    pub size_field: Option<u64>,
    /// Its type object's address: with [`Holder::address`], what tells it from an object
    /// that reuses its memory once it is freed.
    #[serde(skip)]
    pub type_address: u64,
    /// Whether it stays on the collector's lists from its creation to its dealloc (a list,
    /// a deque), so that one found untracked at its address is not it.
    #[serde(skip)]
    pub always_tracked: bool,
}

/// What the walk could not follow, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NotFollowed {
    /// References to something that was not a readable object.
    pub bad_references: u64,
    /// Containers whose contents could not be read.
    pub unreadable_containers: u64,
    /// Instances whose `__dict__` at a negative offset could not be placed.
    pub instance_dicts: u64,
    /// Collector lists that did not read back to their head.
    pub torn_gc_lists: u64,
    /// Objects of types whose references pmt does not know, by type name, most first.
    pub objects_by_type: Vec<(String, u64)>,
    /// Whether the walk stopped at its object limit.
    pub truncated: bool,
}

/// One snapshot of a process's Python heap.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    /// The target.
    pub pid: i32,
    /// Its CPython version.
    pub python_version: String,
    /// Objects found (tracked by the collector, or reached from a root or a tracked object).
    pub objects: u64,
    /// Their shallow bytes.
    pub bytes: u64,
    /// Objects on the collector's lists.
    pub tracked_objects: u64,
    /// Objects reached from the roots (modules, thread frames).
    pub reached_objects: u64,
    /// Bytes of the objects no root reaches (garbage awaiting collection, or held only from
    /// C code).
    pub unreached_bytes: u64,
    /// Live objects by type, most bytes first.
    pub types: Vec<TypeStats>,
    /// The containers retaining the most, most retained bytes first.
    pub holders: Vec<Holder>,
    /// What was not followed.
    pub not_followed: NotFollowed,
    /// `process_vm_readv` calls made.
    pub read_calls: u64,
    /// Bytes copied from the target.
    pub read_bytes: u64,
    /// The most bytes pmt kept of the target's memory at once.
    pub peak_cached_bytes: u64,
    /// Seconds the snapshot took.
    pub seconds: f64,
    /// Where the process's RSS is (`None` where `/proc/PID/smaps` could not be read).
    pub rss: Option<RssBreakdown>,
    /// With `--blocking`: how long the target was paused, in seconds.
    pub paused_seconds: Option<f64>,
}

/// The parts of a snapshot computed from the graph (the caller adds the identity and costs).
pub struct Summary {
    /// See [`Snapshot::types`].
    pub types: Vec<TypeStats>,
    /// See [`Snapshot::holders`].
    pub holders: Vec<Holder>,
    /// See [`Snapshot::not_followed`].
    pub not_followed: NotFollowed,
    /// `(objects, bytes, tracked, reached, unreached bytes)`.
    pub totals: (u64, u64, u64, u64, u64),
}

impl Snapshot {
    /// A snapshot from its parts.
    pub fn new(
        pid: i32,
        python_version: String,
        summary: Summary,
        read: ReadStats,
        seconds: f64,
    ) -> Snapshot {
        let (objects, bytes, tracked_objects, reached_objects, unreached_bytes) = summary.totals;
        Snapshot {
            pid,
            python_version,
            objects,
            bytes,
            tracked_objects,
            reached_objects,
            unreached_bytes,
            types: summary.types,
            holders: summary.holders,
            not_followed: summary.not_followed,
            read_calls: read.syscalls,
            read_bytes: read.bytes,
            peak_cached_bytes: read.peak_cached,
            seconds,
            rss: None,
            paused_seconds: None,
        }
    }
}

/// The most containers named by a module's or class's attribute that a snapshot lists beside
/// the top holders (see [`summarize`]).
const MAX_NAMED_CONTAINERS: usize = 5_000;

/// Types, holders and what was not followed, from the graph and its dominators; the top
/// `holders` containers get their retention paths read. With `named`, every list, dict, set
/// and deque that is an attribute of a module or a class (`app.KEEP`, `app.Cache.entries`) is
/// listed too, after them and however little it holds (up to [`MAX_NAMED_CONTAINERS`]): a
/// leak into a container that was empty at the first snapshot of a diff can then be watched.
pub fn summarize(
    mem: &impl ReadMemory,
    layout: &Layout,
    graph: &Graph,
    dominators: &Dominators,
    holders: usize,
    named: bool,
) -> Summary {
    let mut per_type: Vec<TypeStats> = (0..graph.types.len())
        .map(|t| TypeStats {
            name: graph.types.get(t as u32).name.clone(),
            count: 0,
            bytes: 0,
            tracked: 0,
        })
        .collect();
    let mut totals = (0u64, 0u64, 0u64, 0u64, 0u64);
    for node in 1..graph.len() {
        let stats = &mut per_type[graph.type_of[node] as usize];
        let shallow = graph.shallow[node];
        stats.count += 1;
        stats.bytes += shallow;
        totals.0 += 1;
        totals.1 += shallow;
        if graph.tracked[node] {
            stats.tracked += 1;
            totals.2 += 1;
        }
        if dominators.idom[node] != NO_NODE {
            totals.3 += 1;
        } else {
            totals.4 += shallow;
        }
    }
    per_type.retain(|t| t.count > 0);
    per_type.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(b.count.cmp(&a.count)));

    let mut candidates: Vec<u32> = (1..graph.len() as u32)
        .filter(|&n| is_holder(graph, dominators, n))
        .collect();
    candidates.sort_by(|&a, &b| {
        dominators.retained_bytes[b as usize].cmp(&dominators.retained_bytes[a as usize])
    });
    candidates.truncate(holders);
    if named {
        let top: std::collections::HashSet<u32> = candidates.iter().copied().collect();
        let mut attributes: Vec<u32> = (1..graph.len() as u32)
            .filter(|&n| !top.contains(&n) && is_named_container(graph, dominators, n))
            .collect();
        attributes.sort_by(|&a, &b| {
            dominators.retained_bytes[b as usize].cmp(&dominators.retained_bytes[a as usize])
        });
        attributes.truncate(MAX_NAMED_CONTAINERS);
        candidates.extend(attributes);
    }
    let listed: HashMap<u32, usize> = candidates
        .iter()
        .enumerate()
        .map(|(index, &n)| (n, index))
        .collect();
    let holders = candidates
        .iter()
        .map(|&n| {
            let path = path_of(mem, layout, graph, n);
            let info = graph.types.get(graph.type_of[n as usize]);
            let kind = info.kind;
            Holder {
                path: path.text,
                steps: path.steps,
                within: listed_dominator(dominators, &listed, n),
                type_name: graph.types.get(graph.type_of[n as usize]).name.clone(),
                items: graph.items[n as usize],
                retained_bytes: dominators.retained_bytes[n as usize],
                retained_objects: dominators.retained_objects[n as usize],
                address: graph.addrs[n as usize],
                size_field: size_field(layout, kind),
                type_address: info.address,
                always_tracked: matches!(kind, Kind::List | Kind::Deque),
            }
        })
        .collect();

    let u = &graph.unfollowed;
    let mut objects_by_type: Vec<(String, u64)> = u
        .by_type
        .iter()
        .map(|(t, n)| (graph.types.get(*t).name.clone(), *n))
        .collect();
    objects_by_type.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Summary {
        types: per_type,
        holders,
        not_followed: NotFollowed {
            bad_references: u.bad_references,
            unreadable_containers: u.unreadable_containers,
            instance_dicts: u.instance_dicts,
            torn_gc_lists: u.torn_gc_lists,
            objects_by_type,
            truncated: u.truncated,
        },
        totals,
    }
}

/// Where a container of `kind` keeps its size, from its start.
fn size_field(layout: &Layout, kind: Kind) -> Option<u64> {
    match kind {
        Kind::List | Kind::Deque => Some(layout.var_size),
        Kind::Dict | Kind::OrderedDict => Some(layout.dict_used),
        Kind::Set => Some(layout.set_used),
        _ => None,
    }
}

/// The listed holder nearest above `n` in the dominator tree, by its index in the list.
fn listed_dominator(
    dominators: &Dominators,
    listed: &HashMap<u32, usize>,
    n: u32,
) -> Option<usize> {
    let mut at = dominators.idom[n as usize];
    while at != NO_NODE && at != 0 {
        if let Some(&index) = listed.get(&at) {
            return Some(index);
        }
        at = dominators.idom[at as usize];
    }
    None
}

/// Whether node `n` is a list, dict, set or deque held as an attribute of a module or a class
/// (a value of its namespace), reached from a root.
fn is_named_container(graph: &Graph, dominators: &Dominators, n: u32) -> bool {
    let kind_of = |n: u32| graph.types.get(graph.type_of[n as usize]).kind;
    let namespace = graph.parent[n as usize];
    if namespace == NO_NODE || namespace == 0 {
        return false;
    }
    let owner = graph.parent[namespace as usize];
    dominators.idom[n as usize] != NO_NODE
        && matches!(
            kind_of(n),
            Kind::List | Kind::Dict | Kind::OrderedDict | Kind::Set | Kind::Deque
        )
        && matches!(graph.label[n as usize], Label::Value(_))
        && graph.label[namespace as usize] == Label::Namespace
        && owner != NO_NODE
        && owner != 0
        && matches!(kind_of(owner), Kind::Module | Kind::Type)
}

/// Whether node `n` is a container (or a numpy array) worth naming as a holder: reached from
/// a root, not a namespace (a module's, class's or instance's `__dict__` is named by its owner).
fn is_holder(graph: &Graph, dominators: &Dominators, n: u32) -> bool {
    let kind = graph.types.get(graph.type_of[n as usize]).kind;
    dominators.idom[n as usize] != NO_NODE
        && matches!(
            kind,
            Kind::List
                | Kind::Tuple
                | Kind::Dict
                | Kind::OrderedDict
                | Kind::Set
                | Kind::Deque
                | Kind::NumpyArray
        )
        && !matches!(
            graph.label[n as usize],
            Label::Namespace | Label::Closure | Label::Attr(_)
        )
}
