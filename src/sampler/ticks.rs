//! Tick-based attribution: charges what the counters moved between two successful ticks to
//! the stacks read at the second one.
//!
//! Owns: the per-thread baselines (page faults, CPU time) and the decayed fault activity kept
//! between ticks, the last stack of each Python thread (for threads that exit between ticks),
//! and the charging rules of every [`Metric`].
//! Must not touch: reading stacks or counters, tick timing and the run's other statistics
//! (the loop in `sampler`), and how charges add up (`profile`).
//!
//! Per interval between two successful ticks:
//! - `rss`: a growth of the process RSS is shared among the process's threads in proportion to
//!   their page-fault deltas; threads without Python frames keep their share (so a C library's
//!   thread is not blamed on Python code). When per-thread faults cannot be matched to Python
//!   threads (no kernel thread ids, or no fault moved), the whole growth goes to the thread
//!   holding the GIL, and the tick is counted as a GIL fallback. Faults of threads that exited
//!   between two samples (the process's count minus its live threads') go to the last stacks
//!   seen of the Python threads that vanished, else to a thread-less placeholder.
//! - `rss-release`: a decrease of RSS is shared among threads by their recent page-fault
//!   activity (faults decayed by 1/8 per interval: freeing does not fault, and memory is most
//!   often freed by the thread that made it), else equally among the Python threads on CPU,
//!   else given to the GIL holder.
//! - `cpu`: 1 for each Python thread the kernel had running (state `R`) or whose CPU time moved.
//! - `wall`: 1 for each Python thread.
//! - Further metrics come from [`super::CounterSource`]s: per-thread cumulative counters whose
//!   deltas are charged to the thread's stack.
//!
//! Samples carry these gross per-interval charges; `profile` decides how they add up (for
//! `rss`, the growth a stack still owned at the peak, so transient allocations cancel out).

use super::Attribution;
use crate::memory::thread_counters::{ThreadCounters, ThreadStat};
use crate::python::{Frame, ThreadStack};
use crate::sample::{
    Metric, MetricValues, Sample, ThreadIdentity, ThreadSample, split_proportionally,
};
use std::collections::HashMap;
use std::time::Duration;

/// What one successful tick read, for [`TickAttribution::charge`] to charge.
pub(crate) struct TickReadings<'a> {
    /// Time since sampling started.
    pub time: Duration,
    /// The process RSS, where it could be read.
    pub rss: Option<u64>,
    /// Every Python thread's stack.
    pub stacks: Vec<ThreadStack>,
    /// Each live kernel thread's cumulative counts.
    pub task_stats: &'a [(u32, ThreadStat)],
    /// The process-wide fault count (which keeps exited threads' faults), when it was read.
    pub process_faults: Option<u64>,
    /// Each counter source's metric and per-thread deltas since the previous successful tick.
    pub counter_deltas: &'a [(Metric, HashMap<u32, u64>)],
}

/// The per-thread baselines kept between ticks.
#[derive(Debug, Clone, Copy, Default)]
struct ThreadBaseline {
    faults: u64,
    cpu_ticks: u64,
}

/// A Python thread that vanished since the previous tick: who it was and its last stack.
type Vanished = (ThreadIdentity, Vec<Frame>);

/// The state tick-based attribution keeps from one successful tick to the next.
#[derive(Debug, Default)]
pub(crate) struct TickAttribution {
    /// Whether a tick was charged yet (the first tick's counts are only baselines).
    started: bool,
    prev_rss: Option<u64>,
    prev_threads: HashMap<u32, ThreadBaseline>,
    fault_activity: HashMap<u32, u64>,
    prev_process_faults: Option<u64>,
    live_faults_since_process: u64,
    last_stacks: HashMap<u32, Vanished>,
    /// RSS is charged elsewhere (in-kernel stacks): leave `rss` and `rss-release` alone.
    skip_rss: bool,
    /// Time is sampled elsewhere (in the kernel): leave `cpu` and `wall` alone.
    skip_time: bool,
}

/// The interval's per-thread fault deltas (plus [`EXITED_THREADS`]) and whether each kernel
/// thread was on CPU.
struct FaultDeltas {
    faults: Vec<(u32, u64)>,
    cpu_moved: HashMap<u32, bool>,
}

impl TickAttribution {
    /// The frames last charged to kernel thread `tid`, if it is a Python thread seen before.
    pub(crate) fn previous_frames(&self, tid: u32) -> Option<&[Frame]> {
        self.last_stacks
            .get(&tid)
            .map(|(_, frames)| frames.as_slice())
    }

    /// Builds the tick's sample: charges the interval's deltas to the threads' stacks, and
    /// counts in `counts` how RSS growth was charged. `threads` are the per-thread counters,
    /// where they could be opened (they name the kernel threads Python does not know).
    /// Leaves `rss` and `rss-release` to another attribution.
    pub(crate) fn skip_rss(&mut self) {
        self.skip_rss = true;
    }

    /// Leaves `cpu` and `wall` to in-kernel time sampling (which thread was on a CPU still
    /// picks who gets RSS growth without per-thread faults).
    pub(crate) fn skip_time(&mut self) {
        self.skip_time = true;
    }

    pub(crate) fn charge(
        &mut self,
        tick: TickReadings<'_>,
        threads: Option<&ThreadCounters>,
        counts: &mut Attribution,
    ) -> Sample {
        let TickReadings {
            time,
            rss,
            stacks,
            task_stats,
            process_faults,
            counter_deltas,
        } = tick;
        let deltas = self.fault_deltas(task_stats, process_faults);
        let vanished = self.take_vanished(&stacks);
        self.decay_fault_activity(&deltas.faults);
        let (growth, release) = if self.skip_rss {
            (0, 0)
        } else {
            self.rss_change(rss)
        };

        let gil_holder = stacks.iter().position(|s| s.holds_gil);
        let has_faults = threads.is_some() && stacks.iter().any(|s| s.native_id.is_some());
        let unmatched = unmatched_fallback(&stacks);
        let mut samples = self.thread_samples(stacks, &deltas.cpu_moved, counter_deltas);
        let fallback = gil_holder
            .or_else(|| samples.iter().position(|s| s.values.get(Metric::Cpu) > 0))
            .or(if samples.is_empty() { None } else { Some(0) });
        let others = Others {
            unmatched,
            vanished: &vanished,
            threads,
        };
        if growth > 0 {
            let total_faults: u64 = deltas.faults.iter().map(|(_, f)| f).sum();
            if has_faults && total_faults > 0 {
                counts.by_faults += 1;
                if charge_by_faults(Metric::Rss, growth, &mut samples, &deltas.faults, &others) {
                    counts.unmatched_guessed += 1;
                }
            } else if let Some(index) = fallback {
                counts.by_gil += 1;
                samples[index].values.add(Metric::Rss, growth);
            } else {
                counts.uncharged += 1;
            }
        }
        if release > 0 {
            self.charge_release(
                release,
                &mut samples,
                &deltas,
                has_faults,
                fallback,
                &others,
            );
        }
        if self.skip_time {
            for sample in &mut samples {
                sample.values.0[Metric::Cpu.index()] = 0;
                sample.values.0[Metric::Wall.index()] = 0;
            }
        }
        Sample {
            time,
            rss,
            threads: samples,
        }
    }

    /// Each kernel thread's faults since the previous tick and whether it was on CPU; updates
    /// the baselines. Faults of threads that exited since the process-wide count was last read
    /// are added under [`EXITED_THREADS`].
    fn fault_deltas(
        &mut self,
        task_stats: &[(u32, ThreadStat)],
        process_faults: Option<u64>,
    ) -> FaultDeltas {
        let mut faults: Vec<(u32, u64)> = Vec::with_capacity(task_stats.len());
        let mut cpu_moved: HashMap<u32, bool> = HashMap::with_capacity(task_stats.len());
        let mut next_baselines = HashMap::with_capacity(task_stats.len());
        // A thread first seen after the first sample started during the run: all its
        // faults are new. At the first sample, counts are only baselines.
        let first_sample = !self.started;
        self.started = true;
        for &(tid, stat) in task_stats {
            let prev = self.prev_threads.get(&tid).copied();
            let delta = match prev {
                Some(p) => stat.faults.saturating_sub(p.faults),
                None if first_sample => 0,
                None => stat.faults,
            };
            let moved = prev.is_some_and(|p| stat.cpu_ticks > p.cpu_ticks);
            faults.push((tid, delta));
            cpu_moved.insert(tid, stat.running() || moved);
            next_baselines.insert(
                tid,
                ThreadBaseline {
                    faults: stat.faults,
                    cpu_ticks: stat.cpu_ticks,
                },
            );
        }
        self.prev_threads = next_baselines;
        self.live_faults_since_process += faults.iter().map(|(_, f)| f).sum::<u64>();
        if let Some(now) = process_faults {
            if let Some(before) = self.prev_process_faults {
                let exited = now
                    .saturating_sub(before)
                    .saturating_sub(self.live_faults_since_process);
                if exited > 0 {
                    faults.push((EXITED_THREADS, exited));
                }
            }
            self.prev_process_faults = Some(now);
            self.live_faults_since_process = 0;
        }
        FaultDeltas { faults, cpu_moved }
    }

    /// The last stacks of the Python threads seen at the previous tick that are not in
    /// `stacks`, by kernel thread id; forgets every last stack (this tick's are kept anew).
    fn take_vanished(&mut self, stacks: &[ThreadStack]) -> Vec<Vanished> {
        let alive: Vec<u32> = stacks.iter().filter_map(|s| s.native_id).collect();
        let mut gone: Vec<(u32, Vanished)> = self
            .last_stacks
            .drain()
            .filter(|(tid, _)| !alive.contains(tid))
            .collect();
        gone.sort_by_key(|(tid, _)| *tid);
        gone.into_iter().map(|(_, last)| last).collect()
    }

    /// Decays each thread's fault activity by 1/8 and adds this interval's faults.
    fn decay_fault_activity(&mut self, faults: &[(u32, u64)]) {
        let mut activity = HashMap::with_capacity(faults.len());
        for &(tid, delta) in faults {
            let before = self.fault_activity.get(&tid).copied().unwrap_or(0);
            activity.insert(tid, before - before / 8 + delta);
        }
        self.fault_activity = activity;
    }

    /// The RSS growth and release since the previous read RSS.
    fn rss_change(&mut self, rss: Option<u64>) -> (u64, u64) {
        let change = match (self.prev_rss, rss) {
            (Some(before), Some(now)) => (now.saturating_sub(before), before.saturating_sub(now)),
            _ => (0, 0),
        };
        if rss.is_some() {
            self.prev_rss = rss;
        }
        change
    }

    /// One sample per Python thread with its `wall`, `cpu` and counter-source charges; keeps
    /// each one's stack as its last.
    fn thread_samples(
        &mut self,
        stacks: Vec<ThreadStack>,
        cpu_moved: &HashMap<u32, bool>,
        counter_deltas: &[(Metric, HashMap<u32, u64>)],
    ) -> Vec<ThreadSample> {
        let samples: Vec<ThreadSample> = stacks
            .into_iter()
            .map(|stack| {
                let mut values = MetricValues::default();
                values.add(Metric::Wall, 1);
                let on_cpu = stack
                    .native_id
                    .and_then(|tid| cpu_moved.get(&tid).copied())
                    .unwrap_or(!stack.idle);
                if on_cpu {
                    values.add(Metric::Cpu, 1);
                }
                if let Some(tid) = stack.native_id {
                    for (metric, deltas) in counter_deltas {
                        if let Some(&delta) = deltas.get(&tid) {
                            values.add(*metric, delta);
                        }
                    }
                }
                ThreadSample {
                    thread: ThreadIdentity {
                        python_id: Some(stack.thread_id),
                        native_id: stack.native_id,
                        name: stack.name,
                    },
                    frames: stack.frames,
                    values,
                }
            })
            .collect();
        for sample in &samples {
            if let (Some(_), Some(tid)) = (sample.thread.python_id, sample.thread.native_id) {
                self.last_stacks
                    .insert(tid, (sample.thread.clone(), sample.frames.clone()));
            }
        }
        samples
    }

    /// Charges an RSS decrease: by recent fault activity where threads faulted, else equally
    /// among the Python threads on CPU, else to `fallback`.
    fn charge_release(
        &self,
        release: u64,
        samples: &mut Vec<ThreadSample>,
        deltas: &FaultDeltas,
        has_faults: bool,
        fallback: Option<usize>,
        others: &Others<'_>,
    ) {
        let activity: Vec<(u32, u64)> = deltas
            .faults
            .iter()
            .map(|&(tid, _)| (tid, self.fault_activity.get(&tid).copied().unwrap_or(0)))
            .collect();
        if has_faults && activity.iter().any(|&(_, a)| a > 0) {
            charge_by_faults(Metric::RssRelease, release, samples, &activity, others);
            return;
        }
        let on_cpu: Vec<usize> = (0..samples.len())
            .filter(|&i| samples[i].values.get(Metric::Cpu) > 0)
            .collect();
        let receivers = if on_cpu.is_empty() {
            fallback.into_iter().collect()
        } else {
            on_cpu
        };
        let shares = split_proportionally(release, &vec![1; receivers.len()]);
        for (index, share) in receivers.into_iter().zip(shares) {
            samples[index].values.add(Metric::RssRelease, share);
        }
    }
}

/// Who receives fault-weighted charges of kernel threads that match no Python thread.
struct Others<'a> {
    /// A Python thread (index into the samples) whose kernel id is unknown: it may be that
    /// thread (see [`unmatched_fallback`]).
    unmatched: Option<usize>,
    /// The Python threads that vanished since the previous tick, for [`EXITED_THREADS`].
    vanished: &'a [Vanished],
    /// The per-thread counters, which name the other kernel threads.
    threads: Option<&'a ThreadCounters>,
}

/// Shares `amount` of `metric` among the process's threads by `weights` (per kernel thread).
/// A kernel thread that matches no Python thread's id is charged to `others.unmatched` when
/// there is one, else gets a sample of its own, without frames. Returns whether anything went
/// to `others.unmatched`.
fn charge_by_faults(
    metric: Metric,
    amount: u64,
    samples: &mut Vec<ThreadSample>,
    weights: &[(u32, u64)],
    others: &Others<'_>,
) -> bool {
    let mut guessed = false;
    let shares = split_proportionally(amount, &weights.iter().map(|&(_, w)| w).collect::<Vec<_>>());
    for (&(tid, _), share) in weights.iter().zip(shares) {
        if share == 0 {
            continue;
        }
        if tid == EXITED_THREADS {
            charge_exited(metric, share, samples, others.vanished);
            continue;
        }
        if let Some(sample) = samples
            .iter_mut()
            .find(|s| s.thread.python_id.is_some() && s.thread.native_id == Some(tid))
        {
            sample.values.add(metric, share);
            continue;
        }
        if let Some(index) = others.unmatched {
            samples[index].values.add(metric, share);
            guessed = true;
            continue;
        }
        let mut values = MetricValues::default();
        values.add(metric, share);
        let name = others.threads.and_then(|t| t.name(tid)).map(str::to_string);
        samples.push(ThreadSample {
            thread: ThreadIdentity {
                python_id: None,
                native_id: Some(tid),
                name,
            },
            frames: Vec::new(),
            values,
        });
    }
    guessed
}

/// The pseudo kernel thread id of faults taken by threads that exited between two samples
/// (the process's count minus its live threads'); no real thread has id 0.
const EXITED_THREADS: u32 = 0;

/// Charges `amount` taken by threads that exited since the previous sample to the last stacks
/// of the Python threads that vanished, equally; without any, to a thread without ids.
fn charge_exited(
    metric: Metric,
    amount: u64,
    samples: &mut Vec<ThreadSample>,
    vanished: &[Vanished],
) {
    if vanished.is_empty() {
        let mut values = MetricValues::default();
        values.add(metric, amount);
        samples.push(ThreadSample {
            thread: ThreadIdentity {
                python_id: None,
                native_id: None,
                name: Some("exited between samples".to_string()),
            },
            frames: Vec::new(),
            values,
        });
        return;
    }
    let shares = split_proportionally(amount, &vec![1; vanished.len()]);
    for ((thread, frames), share) in vanished.iter().zip(shares) {
        let mut values = MetricValues::default();
        values.add(metric, share);
        samples.push(ThreadSample {
            thread: thread.clone(),
            frames: frames.clone(),
            values,
        });
    }
}

/// The Python thread (index into `stacks`) to charge for kernel threads that match no
/// Python thread: among the Python threads without a kernel id, the GIL holder, else one
/// that is not idle, else the first; `None` when every Python thread's kernel id is known.
fn unmatched_fallback(stacks: &[ThreadStack]) -> Option<usize> {
    let unknown = || {
        stacks
            .iter()
            .enumerate()
            .filter(|(_, s)| s.native_id.is_none())
    };
    unknown()
        .find(|(_, s)| s.holds_gil)
        .or_else(|| unknown().find(|(_, s)| !s.idle))
        .or_else(|| unknown().next())
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::tests::own_thread;

    /// Tick-based attribution over this process's thread counters, and what it counted.
    struct Charger {
        ticks: TickAttribution,
        threads: ThreadCounters,
        counts: Attribution,
    }

    impl Charger {
        fn new() -> Charger {
            Charger {
                ticks: TickAttribution::default(),
                threads: ThreadCounters::open(std::process::id() as i32).expect("thread counters"),
                counts: Attribution::default(),
            }
        }

        fn attribute(
            &mut self,
            time: Duration,
            rss: Option<u64>,
            stacks: Vec<ThreadStack>,
            task_stats: &[(u32, ThreadStat)],
            process_faults: Option<u64>,
            counter_deltas: &[(Metric, HashMap<u32, u64>)],
        ) -> Sample {
            let tick = TickReadings {
                time,
                rss,
                stacks,
                task_stats,
                process_faults,
                counter_deltas,
            };
            self.ticks
                .charge(tick, Some(&self.threads), &mut self.counts)
        }
    }

    #[test]
    fn without_thread_ids_growth_goes_to_the_gil_holder() {
        let holder = ThreadStack {
            native_id: None,
            ..own_thread("holder")
        };
        let waiter = ThreadStack {
            thread_id: 2,
            native_id: None,
            holds_gil: false,
            idle: true,
            ..own_thread("waiter")
        };
        let mut charger = Charger::new();
        charger.ticks.prev_rss = Some(1000);
        let sample = charger.attribute(
            Duration::ZERO,
            Some(5096),
            vec![waiter, holder],
            &[],
            None,
            &[],
        );
        let rss: Vec<u64> = sample
            .threads
            .iter()
            .map(|t| t.values.get(Metric::Rss))
            .collect();
        assert_eq!(rss, [0, 4096]);
        assert_eq!(charger.counts.by_gil, 1);
        let cpu: Vec<u64> = sample
            .threads
            .iter()
            .map(|t| t.values.get(Metric::Cpu))
            .collect();
        assert_eq!(cpu, [0, 1]);
    }

    #[test]
    fn growth_follows_fault_deltas_including_non_python_threads() {
        let a = ThreadStack {
            native_id: Some(101),
            ..own_thread("a")
        };
        let b = ThreadStack {
            thread_id: 2,
            native_id: Some(102),
            ..own_thread("b")
        };
        let mut charger = Charger::new();
        let stat = |faults| ThreadStat {
            state: b'S',
            faults,
            cpu_ticks: 0,
        };
        let baseline = [(101, stat(0)), (102, stat(0)), (103, stat(0))];
        charger.attribute(
            Duration::ZERO,
            Some(0),
            vec![a.clone(), b.clone()],
            &baseline,
            None,
            &[],
        );
        let later = [(101, stat(300)), (102, stat(0)), (103, stat(100))];
        let sample = charger.attribute(Duration::ZERO, Some(4000), vec![a, b], &later, None, &[]);
        let rss: Vec<(Option<u64>, Option<u32>, u64)> = sample
            .threads
            .iter()
            .map(|t| {
                (
                    t.thread.python_id,
                    t.thread.native_id,
                    t.values.get(Metric::Rss),
                )
            })
            .collect();
        assert_eq!(
            rss,
            [
                (Some(1), Some(101), 3000),
                (Some(2), Some(102), 0),
                (None, Some(103), 1000)
            ]
        );
        assert_eq!(charger.counts.by_faults, 1);
    }

    #[test]
    fn release_follows_recent_faults_not_cpu() {
        let allocator = ThreadStack {
            native_id: Some(201),
            idle: true,
            holds_gil: false,
            ..own_thread("allocator")
        };
        let burner = ThreadStack {
            thread_id: 2,
            native_id: Some(202),
            idle: false,
            holds_gil: true,
            ..own_thread("burner")
        };
        let mut charger = Charger::new();
        let stat = |faults, state| ThreadStat {
            state,
            faults,
            cpu_ticks: 0,
        };
        let stacks = || vec![allocator.clone(), burner.clone()];
        charger.attribute(
            Duration::ZERO,
            Some(0),
            stacks(),
            &[(201, stat(0, b'S')), (202, stat(0, b'R'))],
            None,
            &[],
        );
        charger.attribute(
            Duration::ZERO,
            Some(8192),
            stacks(),
            &[(201, stat(2, b'S')), (202, stat(0, b'R'))],
            None,
            &[],
        );
        let sample = charger.attribute(
            Duration::ZERO,
            Some(0),
            stacks(),
            &[(201, stat(2, b'S')), (202, stat(0, b'R'))],
            None,
            &[],
        );
        let release: Vec<u64> = sample
            .threads
            .iter()
            .map(|t| t.values.get(Metric::RssRelease))
            .collect();
        assert_eq!(release, [8192, 0], "the burner is on CPU but never faulted");
    }

    #[test]
    fn faults_of_exited_threads_go_to_their_last_stack() {
        let main = ThreadStack {
            native_id: Some(301),
            ..own_thread("serve")
        };
        let handler = ThreadStack {
            thread_id: 2,
            native_id: Some(302),
            ..own_thread("handler")
        };
        let stat = |faults| ThreadStat {
            state: b'S',
            faults,
            cpu_ticks: 0,
        };
        let mut charger = Charger::new();
        let both = [(301, stat(10)), (302, stat(5))];
        charger.attribute(
            Duration::ZERO,
            Some(0),
            vec![main.clone(), handler],
            &both,
            Some(15),
            &[],
        );
        // The handler exited after taking 90 more faults; the main thread took 30.
        let sample = charger.attribute(
            Duration::ZERO,
            Some(12_000),
            vec![main.clone()],
            &[(301, stat(40))],
            Some(135),
            &[],
        );
        let charged: Vec<(&str, u64)> = sample
            .threads
            .iter()
            .map(|t| {
                (
                    t.frames[0].code.function.as_str(),
                    t.values.get(Metric::Rss),
                )
            })
            .collect();
        assert_eq!(charged, [("serve", 3_000), ("handler", 9_000)]);
        // Later exits with no Python thread vanished go to a placeholder without ids.
        let sample = charger.attribute(
            Duration::ZERO,
            Some(16_000),
            vec![main],
            &[(301, stat(40))],
            Some(175),
            &[],
        );
        let placeholder = &sample.threads[1];
        assert_eq!(placeholder.thread.python_id, None);
        assert_eq!(placeholder.thread.native_id, None);
        assert_eq!(placeholder.values.get(Metric::Rss), 4_000);
    }

    #[test]
    fn release_goes_to_threads_on_cpu() {
        let busy = ThreadStack {
            native_id: None,
            idle: false,
            ..own_thread("busy")
        };
        let idle = ThreadStack {
            thread_id: 2,
            native_id: None,
            idle: true,
            holds_gil: false,
            ..own_thread("idle")
        };
        let mut charger = Charger::new();
        charger.ticks.prev_rss = Some(10_000);
        let sample = charger.attribute(
            Duration::ZERO,
            Some(2_000),
            vec![busy, idle],
            &[],
            None,
            &[],
        );
        let release: Vec<u64> = sample
            .threads
            .iter()
            .map(|t| t.values.get(Metric::RssRelease))
            .collect();
        assert_eq!(release, [8_000, 0]);
    }
}
