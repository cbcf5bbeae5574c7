//! Charges of threads the in-kernel walker could not place yet, held until their stack is known.
//!
//! A thread's first page faults may come before its interpreter has linked or bound its thread
//! state (a new thread before it runs Python, a process pmt has not read yet): the walker
//! finds no thread state and the event carries no stack. Charged at once, such an event would go
//! to whatever stack the thread has at the tick (by then perhaps far from where the memory was
//! taken), or, for a thread the tick's read does not name, to no Python frames at all. Instead
//! its owner is held: a stand-in owner per thread (and what backs the pages), whose charges are
//! set aside until the thread's first event with a captured stack names it (its first known
//! stack, the closest to when the memory was taken), or, after [`HOLD_LIMIT`] or when more
//! than [`MAX_HELD_THREADS`] threads are held, or when the process is done, to its stack at the
//! tick (else no Python frames), as before.
//!
//! A thread is known (its events without a stack are not held) when this tick's read names it or
//! one of its events carried a stack since the previous tick: state that lives one tick, so that
//! it stays as small as the live threads however many come and go.
//!
//! Owns: which threads are held, their stand-in owners (indices the caller interns), what
//! those took meanwhile, and when each is due. Must not touch: owners' frames, the page ledger,
//! BPF, time (the caller says what time it is).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::page_ledger::Charges;

/// How long a thread's charges are held at most, waiting for its first known stack.
pub(crate) const HOLD_LIMIT: Duration = Duration::from_millis(500);

/// How many threads' charges are held at most (the oldest are let go first).
pub(crate) const MAX_HELD_THREADS: usize = 256;

/// One held thread: since when, its stand-in owners and the charges they took.
#[derive(Debug)]
pub(crate) struct Held {
    since: Instant,
    /// The stand-in owners (one per kind of backing), in the order they were held.
    pub(crate) owners: Vec<u32>,
    /// What they took while held.
    pub(crate) charges: Charges,
}

/// What holding did, for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HoldFigures {
    /// Threads whose events were held.
    pub(crate) threads_held: u64,
    /// Of them, charged to their first known stack.
    pub(crate) placed: u64,
    /// Of them, let go to their stack at the tick (or none) after the limit, or at the end.
    pub(crate) let_go: u64,
}

/// The held threads of one process.
#[derive(Debug, Default)]
pub(crate) struct UnknownThreads {
    held: HashMap<u32, Held>,
    /// Stand-in owner -> its thread.
    owner_thread: HashMap<u32, u32>,
    /// Threads known since the previous tick (see the module's comment).
    known: HashSet<u32>,
    /// Threads the previous tick's read named.
    known_at_tick: HashSet<u32>,
    figures: HoldFigures,
}

impl UnknownThreads {
    /// Whether an event of `tid` without a stack is to be held.
    pub(crate) fn holds(&self, tid: u32) -> bool {
        self.held.contains_key(&tid)
            || !(self.known.contains(&tid) || self.known_at_tick.contains(&tid))
    }

    /// Notes stand-in `owner` for `tid` (held from `now` if it is not held yet).
    pub(crate) fn hold(&mut self, tid: u32, owner: u32, now: Instant) {
        let held = self.held.entry(tid).or_insert_with(|| {
            self.figures.threads_held += 1;
            Held {
                since: now,
                owners: Vec::new(),
                charges: Charges::new(),
            }
        });
        if !held.owners.contains(&owner) {
            held.owners.push(owner);
        }
        self.owner_thread.insert(owner, tid);
    }

    /// `tid` had an event with a stack: it is known, and what it held (if anything) is to be
    /// charged to that stack.
    pub(crate) fn placed(&mut self, tid: u32) -> Option<Held> {
        self.known.insert(tid);
        let held = self.release(tid)?;
        self.figures.placed += 1;
        Some(held)
    }

    /// Moves what the stand-in owners took from the interval's `charges` into their threads'
    /// held charges.
    pub(crate) fn set_aside(&mut self, charges: &mut Charges) {
        if self.owner_thread.is_empty() {
            return;
        }
        for (&owner, &tid) in &self.owner_thread {
            if let Some(values) = charges.remove(&owner)
                && let Some(held) = self.held.get_mut(&tid)
            {
                held.charges.entry(owner).or_default().add_all(&values);
            }
        }
    }

    /// Starts a tick's events: the threads its read named (`tick_tids`) are known until the
    /// next, and those placed during the previous tick's events no longer are.
    pub(crate) fn begin_tick(&mut self, tick_tids: impl IntoIterator<Item = u32>) {
        self.known.clear();
        self.known_at_tick.clear();
        self.known_at_tick.extend(tick_tids);
    }

    /// The held threads due at `now` (held for [`HOLD_LIMIT`], or the oldest beyond
    /// [`MAX_HELD_THREADS`]), let go oldest first, for the caller to charge as it would have
    /// without holding.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<(u32, Held)> {
        if self.held.is_empty() {
            return Vec::new();
        }
        let mut by_age: Vec<(Instant, u32)> = self
            .held
            .iter()
            .map(|(&tid, held)| (held.since, tid))
            .collect();
        by_age.sort_unstable();
        let over = by_age.len().saturating_sub(MAX_HELD_THREADS);
        let due: Vec<u32> = by_age
            .iter()
            .enumerate()
            .filter(|&(i, &(since, _))| {
                i < over || now.saturating_duration_since(since) >= HOLD_LIMIT
            })
            .map(|(_, &(_, tid))| tid)
            .collect();
        self.let_go(due)
    }

    /// Lets every held thread go (the process is done).
    pub(crate) fn let_go_all(&mut self) -> Vec<(u32, Held)> {
        let mut tids: Vec<(Instant, u32)> =
            self.held.iter().map(|(&tid, h)| (h.since, tid)).collect();
        tids.sort_unstable();
        self.let_go(tids.into_iter().map(|(_, tid)| tid).collect())
    }

    /// What holding did so far.
    pub(crate) fn figures(&self) -> HoldFigures {
        self.figures
    }

    /// Threads held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.held.len()
    }

    fn let_go(&mut self, tids: Vec<u32>) -> Vec<(u32, Held)> {
        tids.into_iter()
            .filter_map(|tid| {
                let held = self.release(tid)?;
                self.figures.let_go += 1;
                Some((tid, held))
            })
            .collect()
    }

    fn release(&mut self, tid: u32) -> Option<Held> {
        let held = self.held.remove(&tid)?;
        for owner in &held.owners {
            self.owner_thread.remove(owner);
        }
        Some(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Metric, MetricValues};

    fn rss(bytes: u64) -> MetricValues {
        let mut values = MetricValues::default();
        values.add(Metric::Rss, bytes);
        values
    }

    #[test]
    fn a_new_threads_charges_wait_for_its_first_known_stack() {
        let mut threads = UnknownThreads::default();
        let start = Instant::now();
        // Thread 7 is named by the tick; thread 9 is new.
        threads.begin_tick([7]);
        assert!(threads.due(start).is_empty());
        assert!(!threads.holds(7));
        assert!(threads.holds(9));
        threads.hold(9, 100, start);
        threads.hold(9, 101, start);
        threads.hold(9, 100, start);
        let mut charges = Charges::new();
        charges.insert(100, rss(8192));
        charges.insert(101, rss(4096));
        charges.insert(5, rss(4096));
        threads.set_aside(&mut charges);
        // The known owner's charge stays; the stand-ins' are held.
        assert_eq!(charges.len(), 1);
        assert_eq!(charges[&5].get(Metric::Rss), 4096);
        // Still held at the next tick, within the limit, even though more comes.
        threads.begin_tick([7]);
        assert!(threads.due(start + HOLD_LIMIT / 2).is_empty());
        assert!(threads.holds(9));
        let mut more = Charges::new();
        more.insert(100, rss(4096));
        threads.set_aside(&mut more);
        assert!(more.is_empty());
        // Its first event with a stack places what it held, once.
        let held = threads.placed(9).expect("thread 9 held charges");
        assert_eq!(held.owners, vec![100, 101]);
        assert_eq!(held.charges[&100].get(Metric::Rss), 12288);
        assert_eq!(held.charges[&101].get(Metric::Rss), 4096);
        assert!(threads.placed(9).is_none());
        // Known now: its events without a stack are no longer held, and the stand-ins'
        // later charges (pages they own given back) are the interval's.
        assert!(!threads.holds(9));
        let mut later = Charges::new();
        later.insert(100, rss(4096));
        threads.set_aside(&mut later);
        assert_eq!(later.len(), 1);
        assert_eq!(
            threads.figures(),
            HoldFigures {
                threads_held: 1,
                placed: 1,
                let_go: 0
            }
        );
    }

    #[test]
    fn held_threads_are_let_go_after_the_limit_or_beyond_the_bound() {
        let mut threads = UnknownThreads::default();
        let start = Instant::now();
        threads.hold(1, 10, start);
        threads.hold(2, 20, start + Duration::from_millis(100));
        let due = threads.due(start + HOLD_LIMIT);
        assert_eq!(due.iter().map(|(tid, _)| *tid).collect::<Vec<_>>(), vec![1]);
        assert_eq!(threads.len(), 1);
        // A thread not held and not named by the tick stays unknown; one named is known for
        // one tick only.
        assert!(threads.holds(3));
        threads.begin_tick([3]);
        assert!(!threads.holds(3));
        threads.begin_tick([]);
        assert!(threads.holds(3));
        // Beyond the bound the oldest go first, whatever their age.
        let mut threads = UnknownThreads::default();
        for tid in 0..(MAX_HELD_THREADS as u32 + 3) {
            threads.hold(tid, tid, start + Duration::from_micros(u64::from(tid)));
        }
        let due = threads.due(start + Duration::from_millis(1));
        assert_eq!(
            due.iter().map(|(tid, _)| *tid).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(threads.len(), MAX_HELD_THREADS);
        // At the end, every one goes, oldest first.
        let all = threads.let_go_all();
        assert_eq!(all.len(), MAX_HELD_THREADS);
        assert_eq!(all[0].0, 3);
        assert_eq!(threads.len(), 0);
        assert_eq!(threads.figures().let_go, MAX_HELD_THREADS as u64 + 3);
    }

    #[test]
    fn a_thread_placed_within_the_tick_stays_known_until_the_next() {
        let mut threads = UnknownThreads::default();
        let start = Instant::now();
        threads.hold(4, 40, start);
        assert!(threads.placed(4).is_some());
        assert!(!threads.holds(4));
        threads.begin_tick([]);
        assert!(threads.holds(4));
        assert_eq!(threads.figures().placed, 1);
    }
}
