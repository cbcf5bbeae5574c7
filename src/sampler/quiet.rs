//! Stacks that need no new read: when no thread of the target has been on a CPU since its
//! stacks were last read, no thread can have changed its frames (a thread's frame chain is
//! changed only by that thread, running), so the stacks read then are its stacks now.
//!
//! The evidence is the scheduler's: every thread off the CPU now (its state is not `R`), and
//! every thread's time on CPU and times switched in (`schedstat`) the same as just before
//! the last read. The kernel adds a run's time when the thread leaves the CPU, so a thread
//! that ran in between, however briefly, and went back to sleep shows more time; a thread
//! running now shows state `R`. A thread that came or went changes the set and forces a read.
//!
//! Owns: the scheduler statistics taken before the last stack read and the stacks it returned.
//! Must not touch: reading stacks or counters (`python`, `memory`), charging (`ticks`).

use crate::attach::proc_files::SchedStat;
use crate::memory::thread_counters::{ThreadCounters, ThreadStat};
use crate::python::ThreadStack;

/// The last stack read and the scheduler's figures just before it.
#[derive(Debug, Default)]
pub(crate) struct QuietThreads {
    /// Every thread's statistics just before the last read, when all were off the CPU then.
    before_read: Option<Vec<(u32, SchedStat)>>,
    /// What that read returned (only a read without torn stacks is kept).
    stacks: Option<Vec<ThreadStack>>,
    scratch: Vec<(u32, SchedStat)>,
    /// Whether `scratch` holds every thread's figures read this tick by
    /// [`QuietThreads::still_quiet`], for [`QuietThreads::unchanged_stacks`] to use.
    scratch_fresh: bool,
}

impl QuietThreads {
    /// Called before a tick's stack read, with the tick's per-thread counters (`task_stats`,
    /// every live thread of the process): the last read's stacks when no thread has run
    /// since; else `None`, and the statistics read now become the baseline of the read that
    /// follows.
    pub(crate) fn unchanged_stacks(
        &mut self,
        threads: &mut ThreadCounters,
        task_stats: &[(u32, ThreadStat)],
    ) -> Option<Vec<ThreadStack>> {
        if task_stats.is_empty() || task_stats.iter().any(|(_, stat)| stat.running()) {
            self.forget();
            return None;
        }
        let fresh = std::mem::take(&mut self.scratch_fresh);
        if !(fresh || threads.read_schedstats(&mut self.scratch))
            || self.scratch.len() != task_stats.len()
        {
            self.forget();
            return None;
        }
        if self.before_read.as_ref() == Some(&self.scratch)
            && let Some(stacks) = &self.stacks
        {
            return Some(stacks.clone());
        }
        let now = std::mem::take(&mut self.scratch);
        self.scratch = self.before_read.replace(now).unwrap_or_default();
        self.stacks = None;
        None
    }

    /// The last read's stacks, without reading the per-thread counters, when every thread's
    /// scheduler figures are still those taken before that read: its times switched in count
    /// a thread that is on a CPU now, so unchanged figures mean no thread has run since (and
    /// none came or went: a thread that went cannot be read, one that came was made by one
    /// that ran). `None` otherwise, the baseline kept for [`QuietThreads::unchanged_stacks`].
    pub(crate) fn still_quiet(&mut self, threads: &mut ThreadCounters) -> Option<Vec<ThreadStack>> {
        self.scratch_fresh = false;
        let (Some(before), Some(stacks)) = (&self.before_read, &self.stacks) else {
            return None;
        };
        if !threads.read_schedstats(&mut self.scratch) {
            return None;
        }
        if self.scratch != *before {
            // Read before the counters and the stacks, these figures serve as the next
            // read's baseline as well as figures read after them would: a thread that runs
            // in between shows in the next comparison.
            self.scratch_fresh = true;
            return None;
        }
        Some(stacks.clone())
    }

    /// Called after a successful stack read that followed [`QuietThreads::unchanged_stacks`]
    /// in the same tick.
    pub(crate) fn read(&mut self, stacks: &[ThreadStack]) {
        if self.before_read.is_some() && stacks.iter().all(|s| s.read_error.is_none()) {
            self.stacks = Some(stacks.to_vec());
        } else {
            self.forget();
        }
    }

    /// Drops the baseline: the next tick reads the stacks.
    pub(crate) fn forget(&mut self) {
        self.before_read = None;
        self.stacks = None;
        self.scratch_fresh = false;
    }
}
