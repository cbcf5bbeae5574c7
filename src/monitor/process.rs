//! Sampling one process (`pmt process`): turns the `/proc` counters of [`probe`](super::probe)
//! into [`ProcessRecord`]s, the extras chosen by [`Extras`].

use crate::attach::proc_files::KernelUnits;
use crate::monitor::probe::{self, ProbeError, ProcessProbe};
use crate::monitor::record::{
    CpuTimes, CtxSwitches, FullMemoryInfo, LocalTime, MemoryInfo, ProcessRecord,
};
use std::time::SystemTime;

/// Optional data added to each record (each costs extra `/proc` reads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extras {
    /// USS, PSS and swap (`smaps_rollup`).
    pub uss: bool,
    /// Voluntary and involuntary context switches.
    pub context_switches: bool,
    /// Number of threads.
    pub threads: bool,
    /// Status (`running`, `sleeping`…).
    pub status: bool,
    /// Number of open regular files.
    pub open_files: bool,
    /// Number of TCP/UDP sockets.
    pub net_connections: bool,
    /// The command line.
    pub cmdline: bool,
}

/// Reads one process and makes [`ProcessRecord`]s of it.
#[derive(Debug)]
pub struct ProcessSampler {
    probe: ProcessProbe,
    units: KernelUnits,
    extras: Extras,
}

impl ProcessSampler {
    /// Opens process `pid`. Fails with a clear error when it does not exist or cannot be read.
    pub fn open(pid: i32, extras: Extras) -> Result<ProcessSampler, ProbeError> {
        let units = KernelUnits::read().map_err(|source| ProbeError::Io {
            path: "/proc/stat".into(),
            source,
        })?;
        let mut probe = ProcessProbe::open(pid, true)?;
        let stat = probe.stat()?;
        if stat.has_exited() {
            return Err(ProbeError::NoSuchProcess { pid });
        }
        Ok(ProcessSampler {
            probe,
            units,
            extras,
        })
    }

    /// The PID sampled.
    pub fn pid(&self) -> i32 {
        self.probe.pid()
    }

    /// Takes one record now, or `None` when the process has exited (or is a zombie).
    pub fn sample(&mut self, label: Option<String>) -> Result<Option<ProcessRecord>, ProbeError> {
        let stat = match self.probe.stat() {
            Ok(stat) if !stat.has_exited() => stat,
            Ok(_) | Err(ProbeError::NoSuchProcess { .. }) => return Ok(None),
            Err(err) => return Err(err),
        };
        let statm = match self.probe.statm() {
            Ok(statm) => statm,
            Err(ProbeError::NoSuchProcess { .. }) => return Ok(None),
            Err(err) => return Err(err),
        };
        let now = SystemTime::now();
        let units = self.units;
        let page = units.page_size;
        let secs = |ticks: u64| ticks as f64 / units.ticks_per_second;
        let wall = now
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let create_time = units.boot_time + secs(stat.starttime);
        let pid = stat.pid;
        let extras = self.extras;
        let or_minus_one = |r: Result<usize, ProbeError>| r.map(|n| n as i64).unwrap_or(-1);
        Ok(Some(ProcessRecord {
            timestamp: LocalTime::from_system_time(now).record_timestamp(),
            memory_info: MemoryInfo {
                rss: statm.resident * page,
                vms: statm.size * page,
                shared: statm.shared * page,
                text: statm.text * page,
                lib: statm.lib * page,
                data: statm.data * page,
                dirty: statm.dirty * page,
                pfaults: stat.minflt + stat.majflt,
                pageins: stat.majflt,
            },
            cpu_times: CpuTimes {
                user: secs(stat.utime),
                system: secs(stat.stime),
                children_user: secs(stat.cutime),
                children_system: secs(stat.cstime),
                iowait: secs(stat.blkio_ticks),
            },
            elapsed_time: wall - create_time,
            pid,
            memory_full_info: extras.uss.then(|| match probe::full_memory(pid) {
                Ok(full) => FullMemoryInfo {
                    uss: full.uss as i64,
                    pss: full.pss as i64,
                    swap: full.swap as i64,
                },
                Err(_) => FullMemoryInfo {
                    uss: -1,
                    pss: -1,
                    swap: -1,
                },
            }),
            num_ctx_switches: if extras.context_switches {
                probe::context_switches(pid).ok().map(|c| CtxSwitches {
                    voluntary: c.voluntary,
                    involuntary: c.involuntary,
                })
            } else {
                None
            },
            num_threads: extras.threads.then_some(stat.num_threads),
            status: extras.status.then(|| stat.status().to_string()),
            num_open_files: extras
                .open_files
                .then(|| or_minus_one(probe::open_file_count(pid))),
            num_net_connections: extras
                .net_connections
                .then(|| or_minus_one(probe::inet_connection_count(pid))),
            cmdline: if extras.cmdline {
                probe::cmdline(pid).ok()
            } else {
                None
            },
            label,
        }))
    }
}
