//! In-kernel time sampling turned into `cpu` and `wall` samples: an on-CPU sample is one of
//! each; an interval a thread spent off CPUs is `wall` samples at the sampling period.
//!
//! Owns: which part of an off-CPU interval is still to charge (an interval is charged in parts
//! while it lasts, from the open intervals user space reads, and its end comes later in an
//! event: each thread keeps the time it is charged up to), and the nanoseconds short of a
//! whole period carried to the thread's next interval.
//! Must not touch: whose stack an interval is charged to (`sampler::kernel`), the events
//! themselves (`memory::kernel_stacks`).

use std::collections::HashMap;

/// What each thread's off-CPU time was charged up to.
#[derive(Debug)]
pub(crate) struct TimeLedger {
    period_ns: u64,
    /// Thread -> (charged up to, nanoseconds short of a whole period).
    threads: HashMap<u32, (u64, u64)>,
}

impl TimeLedger {
    /// A ledger for samples `period_ns` apart (one per period of a thread's time).
    pub(crate) fn new(period_ns: u64) -> Self {
        TimeLedger {
            period_ns: period_ns.max(1),
            threads: HashMap::new(),
        }
    }

    /// The `wall` samples of thread `tid` off CPUs from `from` to `to` (nanoseconds of one
    /// clock), for the part of that time not charged before.
    pub(crate) fn off_cpu(&mut self, tid: u32, from: u64, to: u64) -> u64 {
        let (until, short) = self.threads.entry(tid).or_default();
        let start = from.max(*until);
        if to <= start {
            return 0;
        }
        *until = to;
        let total = *short + (to - start);
        *short = total % self.period_ns;
        total / self.period_ns
    }

    /// Forgets thread `tid` (it is gone).
    pub(crate) fn forget(&mut self, tid: u32) {
        self.threads.remove(&tid);
    }
}

#[cfg(test)]
mod tests {
    use super::TimeLedger;

    #[test]
    fn an_interval_charged_in_parts_counts_once_and_short_periods_carry_over() {
        let mut ledger = TimeLedger::new(1_000);
        // Open since 10_000: charged up to 12_500 while it lasts (2 samples, 500 ns short).
        assert_eq!(ledger.off_cpu(7, 10_000, 12_500), 2);
        // Its end arrives: only 12_500..14_000 is new, plus the 500 carried.
        assert_eq!(ledger.off_cpu(7, 10_000, 14_000), 2);
        // The same end again, or an end before what was charged: nothing.
        assert_eq!(ledger.off_cpu(7, 10_000, 14_000), 0);
        assert_eq!(ledger.off_cpu(7, 10_000, 13_000), 0);
        // The next interval, another thread beside it.
        assert_eq!(ledger.off_cpu(7, 20_000, 20_999), 0);
        assert_eq!(ledger.off_cpu(7, 21_000, 21_001), 1);
        assert_eq!(ledger.off_cpu(8, 0, 5_000), 5);
        ledger.forget(7);
        assert_eq!(ledger.off_cpu(7, 0, 999), 0);
    }
}
