//! `--subprocesses`: sampling a process and its descendants as they appear and exit
//! (multiprocessing pools, pre-fork servers, a launcher's Python children).
//!
//! Owns: asking the attach layer's [`ProcessTree`] follower for the root's descendants (at
//! every tick when it follows the kernel's process events, which cost one `recv` when nothing
//! happened; else every [`DISCOVER_INTERVAL`] from the children lists; once a member's parent
//! has exited, its own descendants), attaching a [`PythonSpy`] to each new Python process
//! (retrying one whose interpreter is still starting for [`ATTACH_PATIENCE`], skipping
//! non-Python ones such as shells), ticking one [`Sampler`] per process on the run's clock,
//! tagging each process's samples with its [`ProcessIdentity`], and per-process statistics.
//! Must not touch: how stacks and counters are read, and attribution: each process's own
//! [`Sampler`] charges its RSS growth within that process only.

use super::kernel::InKernelStats;
use super::{
    Attribution, ProcessStats, SampleSink, Sampler, SamplerError, SamplerOptions, SamplerStats,
    Ticker, TreeTallies, process_gone, run_ticks,
};
use crate::attach::roles::role_of;
use crate::attach::{ProcessTree, TargetProcess, descendant_pids};
use crate::memory::heap_hook::HookTallies;
use crate::python::{PythonSpy, SpyError, SpyOptions};
use crate::sample::{ProcessIdentity, Sample};
use std::collections::{HashMap, HashSet};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// How often the root's descendants are listed again without process events, and how often
/// a descendant not yet readable is retried.
pub const DISCOVER_INTERVAL: Duration = Duration::from_millis(100);

/// How many processes that could not be sampled are named one line each.
const SKIPPED_LISTED: usize = 20;

/// The role of a forked child charged after it exited, before it could be attached to.
pub const EXITED_UNATTACHED: &str = "forked child, exited before it was attached";

/// How long a new descendant that is not (yet) a readable Python process is retried: a launcher
/// about to exec Python, or an interpreter still loading. After that it is skipped until its
/// executable changes.
pub const ATTACH_PATIENCE: Duration = Duration::from_secs(2);

/// Prepares each process's [`Sampler`] as it is attached, for example by adding
/// [`super::CounterSource`]s for it; an error is noted in [`ProcessTreeSampler::skipped`] and
/// the process is sampled without them.
pub type AttachHook = Box<dyn FnMut(&mut Sampler<PythonSpy>, i32) -> Result<(), String>>;

/// A descendant that is not being sampled.
#[derive(Debug)]
enum Candidate {
    /// Not Python yet: retried at each discovery until `since` + [`ATTACH_PATIENCE`].
    Pending { since: Duration },
    /// Not Python (or not readable): retried only if its executable changes (an exec).
    Skipped { exe: Option<PathBuf> },
}

/// One sampled process.
struct Member {
    identity: ProcessIdentity,
    sampler: Sampler<PythonSpy>,
    /// Index into the run's [`SamplerStats::processes`].
    slot: usize,
}

/// Hands a process's samples on, tagged with the process.
struct Tagged<'a> {
    sink: &'a mut dyn SampleSink,
    process: &'a ProcessIdentity,
}

impl SampleSink for Tagged<'_> {
    fn record(&mut self, sample: Sample) {
        self.sink.record_process(self.process, sample);
    }
}

/// Samples every Python process of a tree rooted at one process, on one clock.
///
/// Each tick samples every live member (its own RSS, per-thread counters and stacks) and hands
/// each member's [`Sample`] to [`SampleSink::record_process`]. The run ends when the root has
/// exited and no member is left (or on duration / stop flag). [`SamplerStats::samples`] counts
/// ticks that sampled at least one process; [`SamplerStats::processes`] has each process's own
/// figures, kept after it exits.
pub struct ProcessTreeSampler {
    root: i32,
    options: SamplerOptions,
    spy_options: SpyOptions,
    members: Vec<Member>,
    tree: ProcessTree,
    candidates: HashMap<i32, Candidate>,
    /// Members that exited while the tree may still list them (not yet reaped): not new.
    exited_members: HashSet<i32>,
    /// When the tree is next read without events, and pending processes retried.
    next_discovery: Duration,
    skipped: Vec<String>,
    /// Processes skipped past the first [`SKIPPED_LISTED`].
    skipped_more: u64,
    /// What members that exited had charged, by kind of attribution.
    exited_attribution: Attribution,
    exited_counter_errors: u64,
    /// Ticks of members that exited that needed no stack read.
    exited_stacks_unchanged: u64,
    /// What members that exited charged in the kernel.
    exited_in_kernel: Option<InKernelStats>,
    exited_heap: Option<HookTallies>,
    on_attach: Option<AttachHook>,
    stats: SamplerStats,
}

impl ProcessTreeSampler {
    /// Prepares to sample `root` (if it is Python) and its Python descendants. The root may be
    /// a launcher (a shell, pyenv's shim, a venv entry script).
    pub fn new(
        root: i32,
        options: SamplerOptions,
        spy_options: SpyOptions,
    ) -> Result<ProcessTreeSampler, SamplerError> {
        if !(options.rate_hz.is_finite() && (0.1..=100_000.0).contains(&options.rate_hz)) {
            return Err(SamplerError::BadRate(options.rate_hz));
        }
        TargetProcess::open(root)?;
        Ok(ProcessTreeSampler {
            root,
            options,
            spy_options,
            members: Vec::new(),
            tree: ProcessTree::follow(root),
            candidates: HashMap::new(),
            exited_members: HashSet::new(),
            next_discovery: Duration::ZERO,
            skipped: Vec::new(),
            skipped_more: 0,
            exited_attribution: Attribution::default(),
            exited_counter_errors: 0,
            exited_stacks_unchanged: 0,
            exited_in_kernel: None,
            exited_heap: None,
            on_attach: None,
            stats: SamplerStats::default(),
        })
    }

    /// Samples until the duration elapses, `stop` is raised, or the root and every sampled
    /// process have exited; returns the run's statistics.
    pub fn run(&mut self, stop: &AtomicBool, sink: &mut dyn SampleSink) -> SamplerStats {
        let options = self.options;
        run_ticks(self, options, stop, sink)
    }

    /// Calls `hook` on each process's sampler when the process is attached.
    pub fn on_attach(&mut self, hook: AttachHook) {
        self.on_attach = Some(hook);
    }

    /// Descendants that could not be sampled for a reason other than not being Python
    /// (permissions, an unsupported version), one line each for the first
    /// [`SKIPPED_LISTED`], then one line counting the rest.
    pub fn skipped(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.skipped.iter().take(SKIPPED_LISTED).cloned().collect();
        if self.skipped_more > 0 {
            lines.push(format!(
                "and {} more processes not sampled or not hooked, for reasons like these",
                self.skipped_more
            ));
        }
        lines
    }

    /// Notes why a process could not be sampled (or hooked); past the first
    /// [`SKIPPED_LISTED`], only counted.
    fn skip(&mut self, line: String) {
        if self.skipped.len() < SKIPPED_LISTED {
            self.skipped.push(line);
        } else {
            self.skipped_more += 1;
        }
    }

    /// Whether the tree is followed through the kernel's process events (rather than polled).
    pub fn uses_events(&self) -> bool {
        self.tree.uses_events()
    }

    /// Brings the tree up to date (each tick with events, every [`DISCOVER_INTERVAL`]
    /// without) and attaches to new processes when it changed or a retry is due.
    fn follow_tree(&mut self, time: Duration) {
        let due = time >= self.next_discovery;
        if due {
            self.next_discovery = time + DISCOVER_INTERVAL;
        }
        if self.tree.uses_events() || due {
            let update = self.tree.update(|_| None);
            if due || update.changed || !update.renamed.is_empty() {
                self.discover(time);
            }
        }
    }

    /// Takes the tree as last followed and attaches to the Python processes not sampled yet.
    fn discover(&mut self, time: Duration) {
        let mut pids = Vec::new();
        if !process_gone(self.root) {
            pids.push(self.root);
        }
        pids.extend(self.tree.descendants());
        // Members whose parent exited are no longer under the root: follow their children too.
        let orphans: Vec<i32> = self
            .members
            .iter()
            .map(|m| m.identity.pid)
            .filter(|pid| !pids.contains(pid))
            .collect();
        for orphan in orphans {
            for pid in descendant_pids(orphan) {
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
        self.candidates.retain(|pid, _| pids.contains(pid));
        self.exited_members.retain(|pid| pids.contains(pid));
        for pid in pids {
            if self.exited_members.contains(&pid)
                || self.members.iter().any(|m| m.identity.pid == pid)
            {
                continue;
            }
            let retry = match self.candidates.get(&pid) {
                None => {
                    self.tallies().seen += 1;
                    self.candidates
                        .insert(pid, Candidate::Pending { since: time });
                    true
                }
                Some(Candidate::Pending { .. }) => true,
                Some(Candidate::Skipped { exe }) if *exe != executable(pid) => {
                    // It exec'd: as patient with the new program as with a new process.
                    self.candidates
                        .insert(pid, Candidate::Pending { since: time });
                    true
                }
                Some(Candidate::Skipped { .. }) => false,
            };
            if retry {
                self.try_attach(pid, time);
            }
        }
    }

    /// Attaches to `pid` and makes it a member, or keeps it pending, or skips it.
    fn try_attach(&mut self, pid: i32, time: Duration) {
        let err = match PythonSpy::attach(pid, &self.spy_options) {
            Ok(spy) => {
                self.candidates.remove(&pid);
                self.add_member(spy, time);
                return;
            }
            Err(err) => err,
        };
        if err.process_exited() {
            self.candidates.remove(&pid);
            self.tallies().missed += 1;
            return;
        }
        let starting = matches!(err, SpyError::NotPython { .. } | SpyError::Read { .. });
        if let (true, Some(Candidate::Pending { since })) = (starting, self.candidates.get(&pid))
            && time.saturating_sub(*since) < ATTACH_PATIENCE
        {
            return;
        }
        if matches!(err, SpyError::NotPython { .. }) {
            self.tallies().not_python += 1;
        } else {
            self.tallies().failed += 1;
            self.skip(format!("process {pid} not sampled: {err}"));
        }
        self.candidates.insert(
            pid,
            Candidate::Skipped {
                exe: executable(pid),
            },
        );
    }

    fn add_member(&mut self, mut spy: PythonSpy, time: Duration) {
        let pid = spy.pid();
        // A forked child has the code objects its parent made before the fork at the same
        // addresses (an exec'd one has none of them, which the checks of each code object tell).
        if let Ok(Some(stat)) = crate::attach::proc_files::read_stat(pid) {
            spy.set_fork_parent(stat.ppid);
        }
        let identity = ProcessIdentity {
            pid,
            command: spy.process().cmdline().unwrap_or_default(),
            python_version: Some(spy.version().to_string()),
            role: role_of(pid, self.root).map(|role| role.to_string()),
        };
        let mut sampler = match Sampler::new(spy, pid, self.options) {
            Ok(sampler) => sampler,
            Err(err) => {
                // The process exited between attaching and opening its counters, or its
                // /proc files are unreadable: it is not sampled.
                if process_gone(pid) {
                    self.tallies().missed += 1;
                } else {
                    self.tallies().failed += 1;
                    self.skip(format!("process {pid} not sampled: {err}"));
                }
                return;
            }
        };
        if let Some(hook) = &mut self.on_attach
            && let Err(err) = hook(&mut sampler, pid)
        {
            self.skip(format!("process {pid}: {err}"));
        }
        self.tallies().attached += 1;
        self.stats.processes.push(ProcessStats {
            process: identity.clone(),
            samples: 0,
            read_errors: 0,
            execs: 0,
            first: time,
            last: time,
            exited: false,
        });
        self.members.push(Member {
            identity,
            sampler,
            slot: self.stats.processes.len() - 1,
        });
    }

    /// Children that exited before they could be attached to (a short-lived task on a loaded
    /// machine) are still charged what the kernel captured of them from their first page, when
    /// their parent is sampled: one sample each, tagged with the child, its stacks decoded with
    /// the parent's code objects.
    fn charge_exited_children(&mut self, time: Duration, sink: &mut dyn SampleSink) {
        let Some(capture) = self
            .members
            .iter()
            .find_map(|m| m.sampler.kernel.as_ref().map(|k| k.capture().clone()))
        else {
            return;
        };
        let unclaimed = capture.borrow().exited_unclaimed();
        for (child, parent) in unclaimed {
            let (Ok(child), Ok(parent)) = (i32::try_from(child), i32::try_from(parent)) else {
                continue;
            };
            self.charge_exited_child(child, parent, time, sink);
        }
    }

    fn charge_exited_child(
        &mut self,
        pid: i32,
        parent: i32,
        time: Duration,
        sink: &mut dyn SampleSink,
    ) {
        let Some(member) = self.members.iter_mut().find(|m| m.identity.pid == parent) else {
            return;
        };
        let Some((threads, in_kernel)) = member.sampler.charge_exited_child(pid) else {
            return;
        };
        let parent = member.identity.clone();
        let identity = ProcessIdentity {
            pid,
            command: parent.command,
            python_version: parent.python_version,
            role: Some(EXITED_UNATTACHED.to_string()),
        };
        if !threads.is_empty() {
            sink.record_process(
                &identity,
                Sample {
                    time,
                    rss: None,
                    threads,
                },
            );
        }
        add_in_kernel(&mut self.exited_in_kernel, Some(&in_kernel));
        sink.process_exited(&identity);
        self.tallies().charged_unattached += 1;
        self.stats.processes.push(ProcessStats {
            process: identity,
            samples: 0,
            read_errors: 0,
            execs: 0,
            first: time,
            last: time,
            exited: true,
        });
    }

    fn tallies(&mut self) -> &mut TreeTallies {
        self.stats.tree.get_or_insert_with(TreeTallies::default)
    }

    /// Adds up the members' figures into the run's.
    fn total_up(&mut self) {
        self.stats.read_errors = self.stats.processes.iter().map(|p| p.read_errors).sum();
        self.stats.execs = self.stats.processes.iter().map(|p| p.execs).sum();
        self.stats.stacks_unchanged = self.exited_stacks_unchanged
            + self
                .members
                .iter()
                .map(|m| m.sampler.stats.stacks_unchanged)
                .sum::<u64>();
        self.stats.rss = self
            .members
            .iter()
            .filter_map(|m| m.sampler.stats.rss)
            .reduce(|a, b| a + b);
        let mut attribution = self.exited_attribution;
        let mut counter_errors = self.exited_counter_errors;
        let mut in_kernel = self.exited_in_kernel;
        let mut heap = self.exited_heap;
        for member in &self.members {
            add_attribution(&mut attribution, &member.sampler.stats.attribution);
            counter_errors += member.sampler.stats.counter_errors;
            add_in_kernel(&mut in_kernel, member.sampler.stats.in_kernel.as_ref());
            add_heap(&mut heap, member.sampler.stats.heap.as_ref());
        }
        self.stats.in_kernel = in_kernel;
        self.stats.heap = heap;
        self.stats.attribution = attribution;
        self.stats.counter_errors = counter_errors;
    }
}

fn add_in_kernel(total: &mut Option<InKernelStats>, part: Option<&InKernelStats>) {
    if let Some(part) = part {
        total.get_or_insert_with(InKernelStats::default).add(part);
    }
}

fn add_heap(total: &mut Option<HookTallies>, part: Option<&HookTallies>) {
    if let Some(part) = part {
        let total = total.get_or_insert_with(HookTallies::default);
        total.samples += part.samples;
        total.live_samples += part.live_samples;
        total.stacks_full += part.stacks_full;
        total.table_full += part.table_full;
        total.no_thread_state += part.no_thread_state;
        total.sample_bytes = part.sample_bytes;
        total.free_lists = part.free_lists;
        total.table_bytes += part.table_bytes;
    }
}

fn add_attribution(total: &mut Attribution, part: &Attribution) {
    total.by_faults += part.by_faults;
    total.by_gil += part.by_gil;
    total.uncharged += part.uncharged;
    total.unmatched_guessed += part.unmatched_guessed;
}

impl Ticker for ProcessTreeSampler {
    fn tick(&mut self, time: Duration, sink: &mut dyn SampleSink) -> bool {
        self.follow_tree(time);
        let mut sampled = false;
        let mut index = 0;
        while index < self.members.len() {
            let Member {
                identity,
                sampler,
                slot,
            } = &mut self.members[index];
            let exited = sampler.tick(
                time,
                &mut Tagged {
                    sink,
                    process: identity,
                },
            );
            let stats = &mut self.stats.processes[*slot];
            let before = stats.samples;
            stats.samples = sampler.stats.samples;
            stats.read_errors = sampler.stats.read_errors;
            stats.execs = sampler.stats.execs;
            stats.last = time;
            sampled |= stats.samples > before;
            if let Some(error) = sampler.stats.last_error.take() {
                self.stats.last_error = Some(format!("process {}: {error}", identity.pid));
            }
            if exited {
                Ticker::finish(sampler);
                stats.exited = true;
                add_attribution(&mut self.exited_attribution, &sampler.stats.attribution);
                self.exited_counter_errors += sampler.stats.counter_errors;
                self.exited_stacks_unchanged += sampler.stats.stacks_unchanged;
                add_in_kernel(&mut self.exited_in_kernel, sampler.stats.in_kernel.as_ref());
                add_heap(&mut self.exited_heap, sampler.stats.heap.as_ref());
                sink.process_exited(identity);
                self.exited_members.insert(identity.pid);
                self.members.remove(index);
            } else {
                index += 1;
            }
        }
        self.charge_exited_children(time, sink);
        if sampled {
            self.stats.samples += 1;
        }
        self.total_up();
        self.members.is_empty() && process_gone(self.root)
    }

    fn stats_mut(&mut self) -> &mut SamplerStats {
        &mut self.stats
    }

    fn ticks_at_the_end(&self) -> bool {
        self.members.iter().any(|m| m.sampler.ticks_at_the_end())
    }

    /// Idle when every member is, and no process waits to be attached to (a new child's
    /// first faults, captured from its fork, make the ring readable).
    fn idle_fds(&self) -> Option<Vec<RawFd>> {
        let pending = self
            .candidates
            .values()
            .any(|c| matches!(c, Candidate::Pending { .. }));
        if self.members.is_empty() || pending {
            return None;
        }
        let mut fds = Vec::new();
        for member in &self.members {
            for fd in member.sampler.idle_fds()? {
                if !fds.contains(&fd) {
                    fds.push(fd);
                }
            }
        }
        Some(fds)
    }

    fn finish(&mut self) {
        for member in &mut self.members {
            Ticker::finish(&mut member.sampler);
        }
        self.total_up();
    }
}

/// The executable of `pid`, to notice an exec.
fn executable(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}
