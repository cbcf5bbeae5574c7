//! Heap attribution: what the allocation hook in the target sampled (`memory::heap_hook`), as
//! charges to the stacks that allocated. Each interval's estimated bytes and allocations go to
//! their stack as `heap-alloc` / `heap-alloc-count`, and the bytes of its sampled allocations
//! freed since as `heap-freed`, charged to the same (thread, stack): the profile's heap ledger
//! gives them back exactly, so what a stack still holds at the sustained peak is its `heap`.
//!
//! Owns: decoding each hook stack once, naming its thread, turning deltas into
//! [`ThreadSample`]s. Must not touch: reading the target (the reader does), tick timing, how
//! charges add up (`profile`).

use std::collections::HashMap;

use crate::memory::heap_hook::{HookError, HookReader, HookTallies, find_state};
use crate::python::{CodeInfo, Frame};
use crate::sample::{Metric, MetricValues, ThreadIdentity, ThreadSample};
use std::time::{Duration, Instant};

use super::kernel::{Decode, TickThread};

/// The frame that stands for samples whose stack the hook had no room for.
fn overflow_frame() -> Frame {
    Frame {
        code: std::sync::Arc::new(CodeInfo {
            function: "<stack not recorded: the allocation hook's stack table was full>"
                .to_string(),
            filename: String::new(),
            first_line: 0,
        }),
        line: 0,
    }
}

/// How soon a process whose hook has not been found yet is looked at again: at first (a
/// launched interpreter loads it at start-up), doubling after each miss up to
/// [`LOOKUP_AT_MOST_EVERY`] (a process that never loads it costs a maps read every 2 s).
const LOOKUP_EVERY: Duration = Duration::from_millis(50);
const LOOKUP_AT_MOST_EVERY: Duration = Duration::from_secs(2);

/// The heap attribution of one process.
#[derive(Debug)]
pub(crate) struct HeapAttribution {
    pid: i32,
    /// The hook's reader, once its library is found loaded.
    reader: Option<HookReader>,
    next_lookup: Instant,
    lookup_every: Duration,
    /// Each hook stack's thread and frames, decoded once: its frees are charged to the same
    /// (thread, stack) as its allocations, whatever is learnt of the thread later.
    stacks: HashMap<u32, (ThreadIdentity, Vec<Frame>)>,
    /// Each thread as last seen at a tick (its Python id and name), by kernel tid.
    threads: HashMap<u32, ThreadIdentity>,
    /// Reads that failed (the last error is in the sampler's statistics).
    pub(crate) errors: u64,
    /// Charges owed from a program the process replaced (`exec`): what its stacks still held,
    /// given back.
    pending: Vec<ThreadSample>,
    /// The last read of the hook brought nothing new (no stack, no change of a count).
    quiet: bool,
}

impl HeapAttribution {
    /// The attribution of process `pid`, whose hook is found once it is loaded.
    pub(crate) fn new(pid: i32) -> HeapAttribution {
        HeapAttribution {
            pid,
            reader: None,
            next_lookup: Instant::now(),
            lookup_every: LOOKUP_EVERY,
            stacks: HashMap::new(),
            threads: HashMap::new(),
            errors: 0,
            pending: Vec::new(),
            quiet: false,
        }
    }

    /// The process replaced its program (`exec`): its hook and everything it sampled are gone.
    /// What each stack still held is given back at the next charge, and the new program's
    /// hook (if it loads one) is looked for afresh.
    pub(crate) fn program_replaced(&mut self) {
        if let Some(reader) = self.reader.take() {
            let given_back = self.given_back(&reader.held());
            self.pending.extend(given_back);
        }
        self.stacks.clear();
        self.next_lookup = Instant::now();
        self.lookup_every = LOOKUP_EVERY;
    }

    /// Charges that give back what the stacks `held` (index, bytes) still held, as freed:
    /// the tables that counted it are gone (an `exec`, emptied tables).
    fn given_back(&self, held: &[(u32, u64)]) -> Vec<ThreadSample> {
        held.iter()
            .filter_map(|&(index, held)| {
                let (thread, frames) = self.stacks.get(&index)?;
                let mut values = MetricValues::default();
                values.add(Metric::HeapFreed, held);
                Some(ThreadSample {
                    thread: thread.clone(),
                    frames: frames.clone(),
                    values,
                })
            })
            .collect()
    }

    /// Whether the last read of the hook brought nothing new: a quiet process's hook need
    /// not be read at every tick between two stack reads (the sampler's choice).
    pub(crate) fn quiet(&self) -> bool {
        self.quiet && self.pending.is_empty()
    }

    /// The hook's tallies as last read.
    pub(crate) fn tallies(&self) -> Option<HookTallies> {
        self.reader.as_ref().map(HookReader::tallies)
    }

    /// The reader, looking for the hook (less and less often, see [`LOOKUP_EVERY`]) until it
    /// is found.
    fn reader(&mut self) -> Option<&mut HookReader> {
        if self.reader.is_none() && Instant::now() >= self.next_lookup {
            self.next_lookup = Instant::now() + self.lookup_every;
            self.lookup_every = (self.lookup_every * 2).min(LOOKUP_AT_MOST_EVERY);
            self.reader = find_state(self.pid).map(|at| HookReader::new(self.pid, at));
        }
        self.reader.as_mut()
    }

    /// The interval's charges: `tick_threads` are this tick's Python threads by kernel tid.
    pub(crate) fn charge(
        &mut self,
        tick_threads: &HashMap<u32, TickThread>,
        decode: &mut Decode<'_>,
    ) -> Result<Vec<ThreadSample>, HookError> {
        for (&tid, (identity, _)) in tick_threads {
            self.threads.insert(tid, identity.clone());
        }
        let pending = std::mem::take(&mut self.pending);
        let Some(reader) = self.reader() else {
            return Ok(pending);
        };
        let reading = match reader.read() {
            Ok(reading) => reading,
            Err(err) => {
                self.errors += 1;
                return Err(err);
            }
        };
        self.quiet = !reading.reset && reading.new_stacks.is_empty() && reading.deltas.is_empty();
        let mut charged = pending;
        if reading.reset {
            charged.extend(self.given_back(&reading.released));
            self.stacks.clear();
        }
        for (index, stack) in reading.new_stacks {
            let frames = if index == 0 {
                vec![overflow_frame()]
            } else {
                decode(&mut stack.frames.iter().copied())
            };
            let thread = self
                .threads
                .get(&stack.tid)
                .cloned()
                .unwrap_or(ThreadIdentity {
                    python_id: None,
                    native_id: Some(stack.tid),
                    name: None,
                });
            self.stacks.insert(index, (thread, frames));
        }
        charged.reserve(reading.deltas.len());
        for delta in reading.deltas {
            let mut values = MetricValues::default();
            values.add(Metric::HeapAlloc, delta.alloc_bytes);
            values.add(Metric::HeapAllocCount, delta.alloc_count);
            values.add(Metric::HeapFreed, delta.freed_bytes);
            let Some((thread, frames)) = self.stacks.get(&delta.index) else {
                continue;
            };
            charged.push(ThreadSample {
                thread: thread.clone(),
                frames: frames.clone(),
                values,
            });
        }
        Ok(charged)
    }
}
