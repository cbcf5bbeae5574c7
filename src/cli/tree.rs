//! `pmt tree`: monitor a process and all its descendants as they come and go, per process and
//! in total, with pymemtrace `process_tree.py`'s columns, table and JSON; then summarise.

use crate::attach::stop;
use crate::cli::monitor_common::{Target, check_output_path, print_written};
use crate::monitor::record::to_python_json;
use crate::monitor::tree::{ColumnFlags, TableWriter, TreeMonitor, TreeSnapshot, snapshot_json};
use crate::output::plot::MemoryPlot;
use anyhow::Context;
use clap::Args;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Track the resource use of a process and all its child processes, every INTERVAL seconds
/// (the columns and options of pymemtrace's `process_tree.py`), with a total per tick.
///
/// Examples: `pmt tree --pid 1234 -a`; `pmt tree -i 0.1 --json tree.json --plot tree.svg -- make -j4`.
#[derive(Debug, Args)]
pub struct TreeArgs {
    /// PID of the root process.
    #[arg(short, long)]
    pub pid: Option<i32>,
    /// Seconds between samples.
    #[arg(short, long, default_value_t = 1.0)]
    pub interval: f64,
    /// Stop after this many seconds (default: until the root exits or Ctrl-C).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Accepted for compatibility with `process_tree.py` (this tool logs nothing else).
    #[arg(
        short = 'l',
        long = "log_level",
        visible_alias = "log-level",
        default_value_t = 20
    )]
    pub log_level: u32,
    /// String to use as separator such as "|"; default: an aligned table.
    #[arg(long, default_value = "")]
    pub sep: String,
    /// Omit the first sample (diffs are cleaner).
    #[arg(short = '1', long)]
    pub omit_first: bool,
    /// USS: memory freed if the process ended now.
    #[arg(short, long)]
    pub uss: bool,
    /// Page faults.
    #[arg(short = 'g', long)]
    pub page_faults: bool,
    /// User and system CPU time.
    #[arg(short, long)]
    pub cpu_times: bool,
    /// Context switches (millions).
    #[arg(short = 'x', long)]
    pub context_switches: bool,
    /// Number of threads.
    #[arg(short, long)]
    pub threads: bool,
    /// Status.
    #[arg(short, long)]
    pub status: bool,
    /// Number of open files.
    #[arg(short = 'f', long)]
    pub open_files: bool,
    /// Number of network connections (TCP/UDP).
    #[arg(short = 'n', long)]
    pub net_connections: bool,
    /// Command line of each process (verbose).
    #[arg(long)]
    pub cmdline: bool,
    /// Typical data: the same as -cfgstn.
    #[arg(short, long)]
    pub all: bool,
    /// Do not print the per-tick table (only the summary).
    #[arg(short, long)]
    pub quiet: bool,
    /// Also write each tick to FILE as a JSON list of nested process records.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw total RSS and CPU over time to FILE (SVG).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Command to launch and monitor with its descendants (instead of --pid).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl TreeArgs {
    fn flags(&self) -> ColumnFlags {
        ColumnFlags {
            uss: self.uss,
            page_faults: self.page_faults,
            cpu_times: self.cpu_times,
            context_switches: self.context_switches,
            threads: self.threads,
            status: self.status,
            open_files: self.open_files,
            net_connections: self.net_connections,
            cmdline: self.cmdline,
            all: self.all,
        }
    }
}

fn quoted_cmdline(pid: i32) -> String {
    crate::monitor::probe::cmdline(pid)
        .unwrap_or_default()
        .iter()
        .map(|arg| {
            if arg.contains(' ') {
                format!("\"{arg}\"")
            } else {
                arg.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the subcommand.
pub fn run(args: TreeArgs) -> anyhow::Result<()> {
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
    let root = target.pid;
    let mut monitor = match TreeMonitor::new(root, args.flags().columns()) {
        Ok(monitor) => monitor,
        Err(err) => return Err(target.explain_early_exit(err.into())),
    };
    let mut json = match &args.json {
        Some(path) => {
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("cannot write {}", path.display()))?,
            );
            file.write_all(b"[\n")?;
            Some((path.clone(), file, 0usize))
        }
        None => None,
    };
    let mut writer = TableWriter::new(&args.sep, std::io::stdout().is_terminal());
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if !args.quiet {
        writeln!(out, "CMD: {}", quoted_cmdline(root))?;
        writeln!(out, "{}", writer.header(monitor.columns()))?;
    }
    let started = Instant::now();
    let interval = Duration::from_secs_f64(args.interval);
    let stop_at = args
        .duration
        .map(|d| started + Duration::from_secs_f64(d.max(0.0)));
    let mut plot = MemoryPlot {
        title: format!("pmt tree: PID {root} and descendants, total"),
        ..MemoryPlot::default()
    };
    let mut root_exited = false;
    // One tick's rows and table text, reused from tick to tick.
    let mut snapshot = TreeSnapshot::default();
    let mut text = String::new();
    let mut next = started;
    let mut first = true;
    loop {
        if !monitor.tick_into(&mut snapshot) {
            root_exited = true;
            break;
        }
        text.clear();
        if !args.quiet {
            writer.write_tick(&mut monitor, &snapshot, &mut text);
        }
        let omitted = first && args.omit_first;
        first = false;
        if !omitted {
            if !args.quiet {
                out.write_all(text.as_bytes())?;
                out.flush()?;
            }
            if let Some((_, file, count)) = &mut json {
                if *count > 0 {
                    file.write_all(b",\n")?;
                }
                let record = to_python_json(&snapshot_json(monitor.columns(), &snapshot), true)?;
                file.write_all(record.as_bytes())?;
                file.flush()?;
                *count += 1;
            }
            let cpu_index = monitor.columns().iter().position(|c| c.name() == "CPU");
            let cpu = cpu_index.and_then(|i| snapshot.totals.get(i).copied().flatten());
            plot.rss
                .push((snapshot.monitor_time, snapshot.total_rss() as f64));
            plot.cpu.push((snapshot.monitor_time, cpu.unwrap_or(0.0)));
        }
        if stop::requested() || stop_at.is_some_and(|at| Instant::now() >= at) {
            break;
        }
        next += interval;
        let deadline = match stop_at {
            Some(at) if at < next => at,
            _ => next,
        };
        if !stop::sleep_until(deadline, stop::flag()) {
            break;
        }
    }
    let ended = target.finish();
    out.flush()?;
    drop(out);
    let mut written = Vec::new();
    if let Some((path, mut file, _)) = json {
        file.write_all(b"\n]\n")?;
        file.flush()
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    if let Some(path) = &args.plot {
        if let (Some((t0, _)), Some((t1, _))) = (plot.rss.first(), plot.rss.last()) {
            let (t0, t1) = (*t0, *t1);
            plot.marks.push((t0, "start".into()));
            plot.marks.push((
                t1,
                if root_exited {
                    "exited".into()
                } else {
                    "stop".into()
                },
            ));
        }
        plot.write_svg(path)?;
        written.push(path.clone());
    }
    print_summary(&monitor, root, root_exited, started.elapsed().as_secs_f64());
    if let Some(ended) = ended {
        println!("{ended}");
    }
    print_written(&written);
    Ok(())
}

fn print_summary(monitor: &TreeMonitor, root: i32, root_exited: bool, seconds: f64) {
    let stats = monitor.stats();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    if root_exited {
        println!("Parent process {root} is not running.");
    }
    println!(
        "Summary: {} ticks over {seconds:.1} s; {} processes seen, at most {} at once, {} left the tree; \
         peak total RSS {:.1} MiB",
        stats.ticks,
        stats.seen.len(),
        stats.max_alive,
        stats.departed,
        mib(stats.peak_total_rss),
    );
    println!(
        "{:>7} {:<24} {:>9} {:>9} {:>12} {:>9}",
        "PID", "Name", "First(s)", "Last(s)", "PeakRSS(MB)", "CPU(s)"
    );
    for (pid, seen) in &stats.seen {
        println!(
            "{pid:>7} {:<24} {:>9.1} {:>9.1} {:>12.1} {:>9.2}",
            format!("\"{}\"", seen.name),
            seen.first_seen,
            seen.last_seen,
            mib(seen.peak_rss),
            seen.cpu_seconds,
        );
    }
}
