//! Who grows a holder (`pmt heap --diff`): between the two snapshots, hardware watchpoints on
//! the size fields of the holders that grow fastest, each write charged to the writing
//! thread's Python stack captured in the kernel ([`crate::memory::watchpoints`]).
//!
//! Owns: choosing the holders (those of the first snapshot whose size grew most over a short
//! first part of the window), watching them on every thread for the rest of it, and the
//! model of what was seen ([`WhoGrew`]). Must not touch: the breakpoints themselves
//! (`memory`), how stacks are decoded (`python`), output formats.
//!
//! A holder freed while watched is noticed at the first write after (its memory reused by
//! another object: [`crate::memory::watchpoints::WatchedObject`]) and at the end of the
//! window: writes from then on are not charged to it, and it says it went ([`WatchedHolder::gone`]).
//!
//! Watchpoints are few: x86 has 4 debug registers per thread, shared with debuggers. A
//! holder that cannot be watched on some thread is watched on none, and says why.

use super::snapshot::{Holder, Snapshot};
use crate::attach::{ReadMemory, RemoteMemory};
use crate::memory::kernel_stacks::BpfLayout;
use crate::memory::watchpoints::{WatchHit, WatchedObject, Watchpoints};
use crate::python::layout::Layout;
use crate::python::{CapturedFrame, Frame, PythonSpy};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// How to watch.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// The most holders watched at once (each takes a debug register of every thread).
    pub holders: usize,
    /// How long the sizes are compared first, to choose the holders.
    pub probe: Duration,
    /// When watching ends.
    pub until: Instant,
    /// Writes after which a holder is no longer watched (each costs the writing thread a
    /// debug trap and a stack walk, about 20 µs in a VM): what was seen by then is a sample
    /// of who writes, and a hot loop is not slowed for the whole window.
    pub max_writes: u64,
}

/// How often the writes are counted against [`WatchOptions::max_writes`].
const BUDGET_CHECK: Duration = Duration::from_millis(100);

/// The writes one Python stack made to a watched holder's size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrownBy {
    /// The writing thread's Python stack, innermost frame first (empty: no Python stack could
    /// be read, such as a thread Python does not know); in JSON as `function (file:line)`.
    #[serde(serialize_with = "frames_as_text")]
    pub stack: Vec<Frame>,
    /// Writes to the size.
    pub writes: u64,
    /// Writes that made it larger (appends, inserts of a new key).
    pub grew: u64,
    /// Items those writes added.
    pub added: u64,
    /// Items the other writes took away.
    pub removed: u64,
}

/// Frames as the text every output writes them in, `function (path/to/file.py:LINE)`.
fn frames_as_text<S: serde::Serializer>(
    frames: &[Frame],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(frames.iter().map(ToString::to_string))
}

/// One holder chosen for watching.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WatchedHolder {
    /// Its retention path in the first snapshot.
    pub path: String,
    /// Its type.
    pub type_name: String,
    /// Its address.
    pub address: u64,
    /// Items it gained over the choosing part of the window.
    pub grew_while_choosing: u64,
    /// Threads whose writes were watched (at the start; threads they started were followed).
    pub threads: usize,
    /// Why it was not watched, if it was not.
    pub refused: Option<String>,
    /// Seconds it was watched, when it reached [`WatchOptions::max_writes`] before the
    /// window ended (then no longer watched).
    pub stopped_at_budget: Option<f64>,
    /// The stacks that wrote its size, most writes first.
    pub grown_by: Vec<GrownBy>,
    /// Set when it was freed while watched: how many writes to its memory came after (made
    /// by whatever reused it; charged to no stack, and it was no longer watched).
    pub gone: Option<u64>,
}

impl WatchedHolder {
    /// All writes seen.
    pub fn writes(&self) -> u64 {
        self.grown_by.iter().map(|g| g.writes).sum()
    }
}

/// Who grew the holders that grew.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WhoGrew {
    /// Seconds the holders' sizes were compared to choose which to watch.
    pub choosing_seconds: f64,
    /// Holders of the first snapshot whose size grew meanwhile.
    pub holders_that_grew: usize,
    /// Seconds the chosen ones were watched.
    pub watched_seconds: f64,
    /// The chosen holders, most growth first.
    pub holders: Vec<WatchedHolder>,
    /// Why nothing was watched (no eBPF, no holder grew...).
    pub unavailable: Option<String>,
    /// Hits not counted because the in-kernel table was full.
    pub hits_not_counted: u64,
}

impl WhoGrew {
    fn nothing(choosing_seconds: f64, holders_that_grew: usize, why: String) -> WhoGrew {
        WhoGrew {
            choosing_seconds,
            holders_that_grew,
            watched_seconds: 0.0,
            holders: Vec::new(),
            unavailable: Some(why),
            hits_not_counted: 0,
        }
    }

    /// How many holders were watched.
    pub fn watched(&self) -> usize {
        self.holders.iter().filter(|h| h.refused.is_none()).count()
    }

    /// The watched holder named `path`, if any.
    pub fn holder(&self, path: &str) -> Option<&WatchedHolder> {
        self.holders.iter().find(|h| h.path == path)
    }
}

/// The holders of `before` worth watching: those whose size grew since the snapshot, most
/// items gained first, at most `n` (one per address), with what they gained; and how many
/// grew.
fn choose<'a>(
    mem: &impl ReadMemory,
    before: &'a Snapshot,
    n: usize,
) -> (usize, Vec<(&'a Holder, u64)>) {
    let mut grew: Vec<(&Holder, u64)> = before
        .holders
        .iter()
        .filter_map(|h| {
            let field = h.size_field?;
            let now = mem.read_u64(h.address.wrapping_add(field)).ok()?;
            (now > h.items && now - h.items < 1 << 40).then_some((h, now - h.items))
        })
        .collect();
    grew.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.path.cmp(&b.0.path)));
    let mut seen = std::collections::HashSet::new();
    grew.retain(|(h, _)| seen.insert(h.address));
    let count = grew.len();
    grew.truncate(n);
    (count, grew)
}

/// Chooses the holders of `before` that grow, watches them on every thread of `spy`'s
/// process until `options.until` (or until `stop` is raised), and says who wrote their sizes.
/// The breakpoints are removed before this returns.
pub fn who_grew(
    spy: &mut PythonSpy,
    layout: BpfLayout,
    before: &Snapshot,
    options: &WatchOptions,
    stop: &AtomicBool,
) -> WhoGrew {
    let probe_end = (Instant::now() + options.probe).min(options.until);
    let probe_start = Instant::now();
    crate::attach::stop::sleep_until(probe_end, stop);
    let remote = RemoteMemory::new(spy.pid());
    let (grew, chosen) = choose(&remote, before, options.holders);
    let choosing = probe_start.elapsed().as_secs_f64();
    if chosen.is_empty() {
        return WhoGrew::nothing(
            choosing,
            grew,
            format!("no holder's size grew in the first {choosing:.1} s"),
        );
    }
    let mut watch = match Watchpoints::load(spy.pid(), layout) {
        Ok(watch) => watch,
        Err(err) => return WhoGrew::nothing(choosing, grew, err.to_string()),
    };
    // The thread states the snapshot read; threads not among them are found by the walker.
    watch.set_threads(spy.thread_states());
    let tids = spy.process().thread_ids().unwrap_or_default();
    let mut holders = Vec::new();
    let mut fields = Vec::new();
    let mut owners_watched = Vec::new();
    let owners: Vec<WatchedObject> = chosen
        .iter()
        .map(|(holder, _)| owner(spy.layout(), holder))
        .collect();
    for ((holder, gained), owner) in chosen.into_iter().zip(owners) {
        let field = holder.address.wrapping_add(holder.size_field.unwrap_or(0));
        let now = || remote.read_u64(field).ok().map(|v| v as i64);
        let (threads, refused) = match watch.watch(field, &tids, now, Some(owner)) {
            Ok(Ok(threads)) => (threads, None),
            Ok(Err(refused)) => (0, Some(refused.to_string())),
            Err(err) => (0, Some(err.to_string())),
        };
        fields.push(field);
        holders.push(WatchedHolder {
            path: holder.path.clone(),
            type_name: holder.type_name.clone(),
            address: holder.address,
            grew_while_choosing: gained,
            threads,
            refused,
            stopped_at_budget: None,
            grown_by: Vec::new(),
            gone: None,
        });
        owners_watched.push(owner);
    }
    let watch_start = Instant::now();
    let mut watching: Vec<usize> = (0..holders.len())
        .filter(|&i| holders[i].refused.is_none())
        .collect();
    loop {
        let next = (Instant::now() + BUDGET_CHECK).min(options.until);
        if !crate::attach::stop::sleep_until(next, stop) || next >= options.until {
            break;
        }
        let hits = watch.hits();
        watching.retain(|&i| {
            // A holder that went is no longer watched: its memory is another object's.
            if watch.gone_writes(fields[i]).is_some() {
                watch.unwatch(fields[i]);
                return false;
            }
            let writes: u64 = hits
                .iter()
                .filter(|h| h.address == fields[i])
                .map(|h| h.writes)
                .sum();
            if writes < options.max_writes {
                return true;
            }
            watch.unwatch(fields[i]);
            holders[i].stopped_at_budget = Some(watch_start.elapsed().as_secs_f64());
            false
        });
        if watching.is_empty() {
            break;
        }
    }
    watch.unwatch_all();
    let watched_seconds = watch_start.elapsed().as_secs_f64();
    let hits = watch.hits();
    for ((holder, field), owner) in holders.iter_mut().zip(fields).zip(owners_watched) {
        holder.grown_by = grown_by(spy, &watch, &hits, field);
        if holder.refused.is_none() {
            holder.gone = watch
                .gone_writes(field)
                .or_else(|| (!still_there(&remote, &owner)).then_some(0));
        }
    }
    WhoGrew {
        choosing_seconds: choosing,
        holders_that_grew: grew,
        watched_seconds,
        holders,
        unavailable: None,
        hits_not_counted: watch.tallies().watch_full,
    }
}

/// What tells `holder` from an object that reuses its memory.
fn owner(layout: &Layout, holder: &Holder) -> WatchedObject {
    WatchedObject {
        address: holder.address,
        type_at: holder.address.wrapping_add(layout.object_type),
        type_pointer: holder.type_address,
        gc_link_at: holder
            .always_tracked
            .then(|| holder.address.wrapping_sub(layout.gc_head_size)),
    }
}

/// Whether `owner` still lives at its address, by the checks the in-kernel program makes at
/// each write (`holder_gone` in dtrace/bpf/memory_stacks.bpf.c): its type pointer, a
/// reference count that is not 0 (its low 32 bits, the count in 3.12+), and, for a container
/// tracked from creation to dealloc, a GC link that is set.
fn still_there(mem: &impl ReadMemory, owner: &WatchedObject) -> bool {
    let refcnt = mem.read_u64(owner.address).map(|r| r as u32);
    let link = owner.gc_link_at.map(|at| mem.read_u64(at));
    mem.read_u64(owner.type_at).ok() == Some(owner.type_pointer)
        && refcnt.is_ok_and(|r| r != 0)
        && link.is_none_or(|l| l.is_ok_and(|l| l != 0))
}

/// The hits on `address` by decoded stack (ids that decode alike are merged), most writes
/// first.
fn grown_by(
    spy: &mut PythonSpy,
    watch: &Watchpoints,
    hits: &[WatchHit],
    address: u64,
) -> Vec<GrownBy> {
    let mut by_stack: HashMap<Vec<Frame>, GrownBy> = HashMap::new();
    for hit in hits.iter().filter(|h| h.address == address) {
        let stack = match (hit.stack != 0).then(|| watch.stack(hit.stack)).flatten() {
            Some(raw) => {
                spy.decode_frames(raw.frames().map(|(code, position, tag)| CapturedFrame {
                    code,
                    position,
                    tag,
                }))
            }
            None => Vec::new(),
        };
        let entry = by_stack.entry(stack.clone()).or_insert(GrownBy {
            stack,
            writes: 0,
            grew: 0,
            added: 0,
            removed: 0,
        });
        entry.writes += hit.writes;
        entry.grew += hit.grew;
        entry.added += hit.added;
        entry.removed += hit.removed;
    }
    let mut list: Vec<GrownBy> = by_stack.into_values().collect();
    list.sort_by(|a, b| b.writes.cmp(&a.writes).then(a.stack.cmp(&b.stack)));
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::SliceMemory;

    fn holder(path: &str, address: u64, items: u64, size_field: Option<u64>) -> Holder {
        Holder {
            path: path.into(),
            steps: vec![path.into()],
            within: None,
            type_name: "list".into(),
            items,
            retained_bytes: 0,
            retained_objects: 0,
            address,
            size_field,
            type_address: 0,
            always_tracked: false,
        }
    }

    #[test]
    fn the_holders_that_grew_most_are_chosen_once_each() {
        let holders = vec![
            holder("slow", 0x1000, 10, Some(16)),
            holder("fast", 0x2000, 10, Some(16)),
            holder("shrank", 0x3000, 10, Some(16)),
            holder("tuple", 0x4000, 10, None),
            holder("fast again", 0x2000, 10, Some(16)),
            holder("unreadable", 0x9000, 10, Some(16)),
            holder("garbage", 0x5000, 10, Some(16)),
        ];
        let mut mem = SliceMemory::new();
        let size = |n: u64| {
            let mut bytes = vec![0u8; 24];
            bytes[16..].copy_from_slice(&n.to_le_bytes());
            bytes
        };
        for (at, now) in [
            (0x1000, 12),
            (0x2000, 500),
            (0x3000, 3),
            (0x4000, 99),
            (0x5000, u64::MAX),
        ] {
            mem.map(at, size(now));
        }
        let snapshot = Snapshot {
            pid: 1,
            python_version: "3.12.1".into(),
            holders,
            ..Snapshot::default()
        };
        let (grew, chosen) = choose(&mem, &snapshot, 4);
        let names: Vec<(&str, u64)> = chosen.iter().map(|(h, n)| (h.path.as_str(), *n)).collect();
        assert_eq!(names, [("fast", 490), ("slow", 2)]);
        assert_eq!(grew, 2);
        let (_, one) = choose(&mem, &snapshot, 1);
        assert_eq!(one.len(), 1);
    }
}
