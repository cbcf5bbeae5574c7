//! Feeds the sampler's `malloc-bytes` and `malloc-count` metrics from the eBPF allocator
//! counters (`memory::malloc`).
//!
//! Owns only the glue: one [`MallocCounters`] shared by the two metrics' counter sources, read
//! once per tick whichever source asks first. Must not touch how the counters work or how the
//! sampler charges deltas.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::memory::malloc::{AllocTotals, MallocCounters, MallocError, MallocOptions};
use crate::sample::Metric;
use crate::sampler::{CounterError, CounterSource, Sampler, StackSource};

/// The counters and their latest read, shared by both metrics' sources.
struct SharedReads {
    counters: MallocCounters,
    snapshot: HashMap<u32, AllocTotals>,
    /// Incremented at each read of the BPF map.
    generation: u64,
}

/// One metric's view of the shared counters.
struct MallocSource {
    shared: Rc<RefCell<SharedReads>>,
    metric: Metric,
    /// The generation this source last used: when it is the current one, this source's tick
    /// comes after the snapshot was used, so the map is read again.
    seen: u64,
}

impl CounterSource for MallocSource {
    fn metric(&self) -> Metric {
        self.metric
    }

    fn read(&mut self, totals: &mut HashMap<u32, u64>) -> Result<(), CounterError> {
        let mut shared = self.shared.borrow_mut();
        if self.seen == shared.generation {
            shared.snapshot = shared
                .counters
                .read()
                .map_err(|e| CounterError(e.to_string()))?;
            shared.generation += 1;
        }
        self.seen = shared.generation;
        let pick = |t: &AllocTotals| match self.metric {
            Metric::MallocCount => t.calls,
            _ => t.bytes,
        };
        totals.extend(shared.snapshot.iter().map(|(tid, t)| (*tid, pick(t))));
        Ok(())
    }
}

/// Attaches the allocator counters to `pid` and adds the `malloc-bytes` and `malloc-count`
/// sources to `sampler`; returns the counters' description for the progress line.
pub fn add_malloc_sources<S: StackSource>(
    sampler: &mut Sampler<S>,
    pid: i32,
    options: &MallocOptions,
) -> Result<String, MallocError> {
    let counters = MallocCounters::attach(pid, options)?;
    let mut description = format!("{} allocator probes", counters.probes().len());
    if let Some(kind) = counters.python_probes() {
        description.push_str(match kind {
            crate::memory::malloc::PythonAllocatorProbes::Implementation => ", pymalloc included",
            crate::memory::malloc::PythonAllocatorProbes::ExportedOnly => {
                ", pymalloc through its exported functions only (the interpreter inlines the rest)"
            }
        });
    }
    let shared = Rc::new(RefCell::new(SharedReads {
        counters,
        snapshot: HashMap::new(),
        generation: 0,
    }));
    for metric in [Metric::MallocBytes, Metric::MallocCount] {
        sampler.add_counter(Box::new(MallocSource {
            shared: Rc::clone(&shared),
            metric,
            seen: 0,
        }));
    }
    Ok(description)
}
