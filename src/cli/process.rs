//! `pmt process`: log one process's memory and CPU every `--interval` seconds, as pymemtrace's
//! `process.py` does, then summarise; optional JSON, SVG plot and gnuplot files.

use crate::attach::stop;
use crate::cli::monitor_common::{Target, check_output_path, print_written};
use crate::monitor::gnuplot::write_gnuplot;
use crate::monitor::process::{Extras, ProcessSampler};
use crate::monitor::record::{Phase, ProcessRecord, log_line, summary_text, to_python_json};
use crate::output::plot::MemoryPlot;
use anyhow::Context;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Log a process's RSS, VMS, page faults, CPU… every INTERVAL seconds as pymemtrace's
/// `process.py` log lines (`... ProcessLoggingThread-JSON {...}`), then print a summary.
///
/// `python pymemtrace/process.py LOGFILE` (0.4.0) reads the log this writes.
/// Examples: `pmt process --pid 1234 -i 0.5 --plot rss.svg`; `pmt process --json out.json -- python3 app.py`.
#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// PID of the process to monitor.
    #[arg(short, long)]
    pub pid: Option<i32>,
    /// Seconds between samples.
    #[arg(short, long, default_value_t = 1.0)]
    pub interval: f64,
    /// Stop after this many seconds (default: until the process exits or Ctrl-C).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Log level named in each line (debug=10, info=20, warning=30, error=40, critical=50).
    #[arg(
        short = 'l',
        long = "log_level",
        visible_alias = "log-level",
        default_value_t = 20
    )]
    pub log_level: u32,
    /// Add USS, PSS and swap (`memory_full_info`).
    #[arg(short, long)]
    pub uss: bool,
    /// Add context switch counts (`num_ctx_switches`).
    #[arg(short = 'x', long)]
    pub context_switches: bool,
    /// Add the number of threads (`num_threads`).
    #[arg(short, long)]
    pub threads: bool,
    /// Add the status, e.g. `sleeping` (`status`).
    #[arg(short, long)]
    pub status: bool,
    /// Add the number of open regular files (`num_open_files`).
    #[arg(short = 'f', long)]
    pub open_files: bool,
    /// Add the number of TCP/UDP sockets (`num_net_connections`).
    #[arg(short = 'n', long)]
    pub net_connections: bool,
    /// Add the command line (`cmdline`).
    #[arg(long)]
    pub cmdline: bool,
    /// All of the above extras.
    #[arg(short, long)]
    pub all: bool,
    /// Do not print the log lines (only the summary).
    #[arg(short, long)]
    pub quiet: bool,
    /// Also write the records to FILE as a JSON list.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw RSS and CPU over time to FILE (SVG).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Write gnuplot `.dat` and `.plt` files (as pymemtrace's `process.py LOG DIR`) into DIR.
    #[arg(long, value_name = "DIR")]
    pub gnuplot: Option<PathBuf>,
    /// Command to launch and monitor until it exits (instead of --pid).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl ProcessArgs {
    fn extras(&self) -> Extras {
        let all = self.all;
        Extras {
            uss: self.uss || all,
            context_switches: self.context_switches || all,
            threads: self.threads || all,
            status: self.status || all,
            open_files: self.open_files || all,
            net_connections: self.net_connections || all,
            cmdline: self.cmdline || all,
        }
    }
}

/// Runs the subcommand.
pub fn run(args: ProcessArgs) -> anyhow::Result<()> {
    if args.interval.is_nan() || args.interval <= 0.0 {
        anyhow::bail!(
            "--interval must be more than 0 seconds, not {}",
            args.interval
        );
    }
    for (path, what) in [(&args.json, "the JSON file"), (&args.plot, "the plot")] {
        if let Some(path) = path {
            check_output_path(path, what)?;
        }
    }
    stop::install_handlers().context("cannot install the SIGINT/SIGTERM handlers")?;
    let mut target = Target::from_args(args.pid, &args.command)?;
    let mut sampler = match ProcessSampler::open(target.pid, args.extras()) {
        Ok(sampler) => sampler,
        Err(err) => return Err(target.explain_early_exit(err.into())),
    };
    let program = match args.command.first() {
        Some(program) => program.clone(),
        None => crate::monitor::probe::cmdline(target.pid)
            .ok()
            .and_then(|c| c.first().cloned())
            .unwrap_or_default(),
    };
    let started = Instant::now();
    let interval = Duration::from_secs_f64(args.interval);
    let stop_at = args
        .duration
        .map(|d| started + Duration::from_secs_f64(d.max(0.0)));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut records: Vec<(f64, ProcessRecord)> = Vec::new();
    let mut exited = false;
    let mut phase = Phase::Start;
    let mut next = started;
    loop {
        let finishing = stop::requested() || stop_at.is_some_and(|at| Instant::now() >= at);
        if finishing && !records.is_empty() {
            phase = Phase::Stop;
        }
        let Some(record) = sampler.sample(None)? else {
            exited = true;
            break;
        };
        if !args.quiet {
            writeln!(out, "{}", log_line(&record, phase, args.log_level)?)?;
            out.flush()?;
        }
        records.push((started.elapsed().as_secs_f64(), record));
        if phase == Phase::Stop {
            break;
        }
        phase = Phase::Tick;
        next += interval;
        let deadline = match stop_at {
            Some(at) if at < next => at,
            _ => next,
        };
        stop::sleep_until(deadline, stop::flag());
    }
    let ended = target.finish();
    out.flush()?;
    drop(out);
    finish(&args, (sampler.pid(), &program), &records, exited, ended)
}

fn finish(
    args: &ProcessArgs,
    (pid, program): (i32, &str),
    records: &[(f64, ProcessRecord)],
    exited: bool,
    ended: Option<String>,
) -> anyhow::Result<()> {
    let plain: Vec<ProcessRecord> = records.iter().map(|(_, r)| r.clone()).collect();
    let mut written = Vec::new();
    if let Some(path) = &args.json {
        let text = to_python_json(&plain, true)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path.clone());
    }
    if let Some(path) = &args.plot {
        let mut plot = MemoryPlot {
            title: format!("pmt process: PID {pid} {program}")
                .trim_end()
                .to_string(),
            ..MemoryPlot::default()
        };
        let mut previous: Option<(f64, f64)> = None;
        for (t, record) in records {
            plot.rss.push((*t, record.memory_info.rss as f64));
            let cpu = record.cpu_times.user + record.cpu_times.system;
            let percent = match previous {
                Some((t0, cpu0)) if *t > t0 => 100.0 * (cpu - cpu0) / (t - t0),
                _ => 0.0,
            };
            plot.cpu.push((*t, percent));
            previous = Some((*t, cpu));
            if let Some(label) = &record.label {
                plot.marks.push((*t, label.clone()));
            }
        }
        if let (Some((first, _)), Some((last, _))) = (records.first(), records.last()) {
            plot.marks.push((*first, "start".into()));
            plot.marks.push((
                *last,
                if exited {
                    "exited".into()
                } else {
                    "stop".into()
                },
            ));
        }
        plot.write_svg(path)?;
        written.push(path.clone());
    }
    if let Some(dir) = &args.gnuplot {
        let files = write_gnuplot(dir, "pmt_process", &plain)
            .with_context(|| format!("cannot write gnuplot files into {}", dir.display()))?;
        written.extend(files);
    }
    print!("{}", summary_text(&plain));
    if exited {
        println!("Process {pid} has exited.");
    }
    if let Some(ended) = ended {
        println!("{ended}");
    }
    if let (Some((t0, first)), Some((t1, last))) = (records.first(), records.last()) {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let rss_max = plain.iter().map(|r| r.memory_info.rss).max().unwrap_or(0);
        let rss_min = plain.iter().map(|r| r.memory_info.rss).min().unwrap_or(0);
        println!(
            "PID {pid}: {} samples over {:.1} s; RSS {:.1} -> {:.1} MiB (change {:+.1} MiB, min {:.1}, max {:.1}); \
             CPU user {:.2} s, system {:.2} s; page faults {:+}",
            records.len(),
            t1 - t0,
            mib(first.memory_info.rss),
            mib(last.memory_info.rss),
            mib(last.memory_info.rss) - mib(first.memory_info.rss),
            mib(rss_min),
            mib(rss_max),
            last.cpu_times.user - first.cpu_times.user,
            last.cpu_times.system - first.cpu_times.system,
            last.memory_info.pfaults as i64 - first.memory_info.pfaults as i64,
        );
    }
    print_written(&written);
    Ok(())
}
