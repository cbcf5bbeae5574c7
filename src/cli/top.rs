//! `pmt top`: a live terminal view of a run (ratatui): per function (or line) the memory
//! growth of the last few seconds, what it holds now, allocator bytes when counted, CPU
//! share; the RSS as a sparkline; keys to sort, switch to lines and quit. On quit, the
//! outputs asked for are written like `pmt-sample`'s. Fits an 80x24 terminal.
//!
//! Owns: the command line of `pmt top`, the screen and the keys.
//! Must not touch: how the run is assembled ([`crate::run`]) or what the rows hold
//! ([`crate::run::live`]).

use super::output_args::OutputArgs;
use super::run_args::{RunArgs, start_run};
use super::unsampled::UnsampledChildren;
use crate::attach::stop;
use crate::output::format_bytes;
use crate::output::frames::{project_root_of, short_path};
use crate::profile::{Profile, TargetInfo};
use crate::run::live::{Filter, LiveTable, Row, SortKey};
use crate::run::{MallocMode, RunObserver};
use crate::sample::{Metric, ProcessIdentity, Sample};
use crate::sampler::SamplerStats;
use anyhow::bail;
use clap::Args;
use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Paragraph, Row as TableRow, Sparkline, Table, Wrap};
use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Watch which functions grow memory now.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  pmt top --pid 1234
  pmt top --lines --sort held -- python3 app.py
  pmt top --subprocesses --process 4321 -- gunicorn app:app
  pmt top --pid 1234 --flame grow.svg     (written when you press q)

Keys: q quit (and write the outputs asked for), s next sort key, l per line / per function.")]
pub struct TopArgs {
    /// What to sample and how.
    #[command(flatten)]
    pub run: RunArgs,
    /// Rows per line instead of per function.
    #[arg(long)]
    pub lines: bool,
    /// Sort by: growth (memory growth in the window), held (memory held now), heap (Python
    /// heap held now, where the allocation hook runs), malloc (allocator bytes in the window),
    /// cpu (CPU share in the window).
    #[arg(long, default_value = "growth", value_parser = parse_sort)]
    pub sort: SortKey,
    /// Seconds of the sliding window that growth, allocator bytes and CPU share cover.
    #[arg(long, default_value_t = 3.0, value_name = "SECS")]
    pub window: f64,
    /// Show only this thread (kernel thread id or name).
    #[arg(long, value_name = "TID|NAME")]
    pub thread: Option<String>,
    /// With --subprocesses: show only this process.
    #[arg(long, value_name = "PID", requires = "subprocesses")]
    pub process: Option<i32>,
    /// Files written when the view ends, as `pmt-sample` writes them.
    #[command(flatten)]
    pub outputs: OutputArgs,
}

fn parse_sort(text: &str) -> Result<SortKey, String> {
    SortKey::ALL
        .into_iter()
        .find(|k| k.name() == text)
        .ok_or_else(|| format!("unknown sort key {text:?}: use growth, held, heap, malloc or cpu"))
}

/// Runs the subcommand.
pub fn run(args: TopArgs) -> anyhow::Result<()> {
    if !std::io::stdout().is_terminal() {
        bail!("pmt top needs a terminal on stdout; use pmt-sample to write files instead");
    }
    if !(args.window.is_finite() && args.window > 0.0) {
        bail!(
            "--window must be a positive number of seconds, not {}",
            args.window
        );
    }
    let required = args.sort == SortKey::Malloc || args.run.python_allocators;
    let malloc = MallocMode::for_metric(
        args.outputs.metric.unwrap_or(Metric::Rss),
        if required {
            MallocMode::Required
        } else {
            MallocMode::IfAvailable
        },
    );
    let mut options = args.run.options(malloc)?;
    options.quiet_child = true;
    let (run, outputs, options) = start_run(options, &args.outputs)?;
    let unsampled = UnsampledChildren::new(run.target().pid, run.is_tree());
    let terminal = match ratatui::try_init() {
        Ok(terminal) => terminal,
        Err(err) => {
            outputs.discard();
            return Err(anyhow::Error::new(err).context("cannot take over the terminal"));
        }
    };
    let mut view = TopView {
        terminal,
        table: LiveTable::new(
            Duration::from_secs_f64(args.window),
            args.lines,
            Filter {
                thread: args.thread.clone(),
                process: args.process,
            },
        ),
        sort: args.sort,
        malloc: run.counts_allocations(),
        processes: run.is_tree(),
        tasks: options.tasks,
        target: run.target().clone(),
        notes: run.notes().join("; "),
        rate: run.rate_hz(),
        last_draw: None,
        draw_error: None,
        unsampled,
        children_looked_at: Instant::now(),
    };
    let mut finished = run.sample(stop::flag(), &mut view);
    let draw_error = view.draw_error.take();
    let mut unsampled = view.unsampled;
    drop(view.terminal);
    ratatui::restore();
    let written = args
        .outputs
        .write(outputs, &finished.profile, Some(finished.started));
    let note = finished.stop_target();
    let stats = &finished.stats;
    eprintln!(
        "pmt top: stopped after {:.1} s: {}{}; {} samples, {} read errors",
        stats.elapsed.as_secs_f64(),
        stats.stop.map_or("interrupted", |s| s.describe()),
        note.map(|n| format!("; {n}")).unwrap_or_default(),
        stats.samples,
        stats.read_errors
    );
    if let Some(err) = draw_error {
        eprintln!("pmt top: the screen could not be drawn: {err}");
    }
    unsampled.look_again();
    if let Some(line) = unsampled.describe() {
        eprintln!("pmt top: {line}");
    }
    let written = written?;
    if !written.is_empty() {
        eprintln!("  wrote: {}", written.join(", "));
    }
    Ok(())
}

/// How often the screen is redrawn.
const REFRESH: Duration = Duration::from_secs(1);

/// The screen, fed by the run.
struct TopView {
    terminal: DefaultTerminal,
    table: LiveTable,
    sort: SortKey,
    malloc: bool,
    /// Several processes are sampled: a process column.
    processes: bool,
    /// Stacks are rooted at asyncio tasks: a task column.
    tasks: bool,
    target: TargetInfo,
    notes: String,
    rate: f64,
    last_draw: Option<Instant>,
    draw_error: Option<std::io::Error>,
    /// The target's Python children, when it is sampled alone: named above the table.
    unsampled: UnsampledChildren,
    children_looked_at: Instant,
}

/// How often a target sampled alone is looked at for new Python children.
const CHILDREN_EVERY: Duration = Duration::from_secs(5);

impl RunObserver for TopView {
    fn sample(&mut self, process: Option<&ProcessIdentity>, sample: &Sample) {
        self.table.record(process, sample);
    }

    fn progress(&mut self, stats: &SamplerStats, profile: &Profile) {
        let keyed = self.keys();
        let due = self.last_draw.is_none_or(|t| t.elapsed() >= REFRESH);
        if due {
            self.table.roll();
        }
        if (due || keyed) && self.draw_error.is_none() {
            self.last_draw = Some(Instant::now());
            if let Err(err) = self.draw(stats, profile) {
                self.draw_error = Some(err);
            }
        }
    }
}

impl TopView {
    /// Handles the keys pressed since the last call; returns whether the view changed.
    fn keys(&mut self) -> bool {
        let mut changed = false;
        while matches!(event::poll(Duration::ZERO), Ok(true)) {
            let Ok(Event::Key(key)) = event::read() else {
                continue;
            };
            if key.kind != KeyEventKind::Press {
                continue;
            }
            match key.code {
                KeyCode::Char('q') | KeyCode::Esc => stop::flag().store(true, Ordering::SeqCst),
                KeyCode::Char('c')
                    if key
                        .modifiers
                        .contains(ratatui::crossterm::event::KeyModifiers::CONTROL) =>
                {
                    stop::flag().store(true, Ordering::SeqCst)
                }
                KeyCode::Char('s') => self.sort = self.sort.next(),
                KeyCode::Char('l') => {
                    self.table.by_line = !self.table.by_line;
                    self.table.clear_window();
                }
                _ => continue,
            }
            changed = true;
        }
        changed
    }

    fn draw(&mut self, stats: &SamplerStats, profile: &Profile) -> std::io::Result<()> {
        let rows = self.table.rows(profile, self.sort);
        let ticks = self.table.ticks().max(1);
        let window = self.table.window().as_secs_f64();
        let header = format!(
            "pmt top · pid {} · RSS {} · {:.0} s · {:.0}/{} Hz · Python {} · {}",
            self.target.pid,
            format_bytes(self.table.rss()),
            stats.elapsed.as_secs_f64(),
            stats.achieved_rate(),
            self.rate,
            python_versions(&self.target, profile),
            self.target.command,
        );
        let rss: Vec<u64> = self.table.rss_history().collect();
        let malloc = self.malloc;
        let sort = self.sort;
        let by_line = self.table.by_line;
        let notes = self.notes.clone();
        if self.children_looked_at.elapsed() >= CHILDREN_EVERY {
            self.children_looked_at = Instant::now();
            self.unsampled.look_again();
        }
        let hint = self.unsampled.describe();
        let project = project_root_of(profile.frames());
        let columns = Columns {
            malloc,
            processes: self.processes,
            tasks: self.tasks,
            heap: profile.has_heap(),
            ticks,
            window,
            sort,
        };
        self.terminal.draw(|frame| {
            let hint_rows = if hint.is_some() { 2 } else { 0 };
            let [top, spark, hint_area, body, foot] = Layout::vertical([
                Constraint::Length(1),
                Constraint::Length(3),
                Constraint::Length(hint_rows),
                Constraint::Min(3),
                Constraint::Length(1),
            ])
            .areas(frame.area());
            if let Some(hint) = &hint {
                frame.render_widget(
                    Paragraph::new(hint.as_str()).wrap(Wrap { trim: true }),
                    hint_area,
                );
            }
            frame.render_widget(
                Paragraph::new(header).style(Style::new().add_modifier(Modifier::BOLD)),
                top,
            );
            let spark_width = usize::from(spark.width.saturating_sub(2));
            let recent = &rss[rss.len().saturating_sub(spark_width)..];
            let low = recent.iter().copied().min().unwrap_or(0);
            let shown: Vec<u64> = recent.iter().map(|r| r - low + 1).collect();
            frame.render_widget(
                Sparkline::default()
                    .block(Block::bordered().title(format!(
                        "RSS, one point a second (from {})",
                        format_bytes(low)
                    )))
                    .data(&shown),
                spark,
            );
            frame.render_widget(table(&rows, &project, columns), body);
            let foot_text = format!(
                "q quit  s sort: {}  l {}  window {window:.0} s{}",
                sort.name(),
                if by_line { "per line" } else { "per function" },
                if notes.is_empty() {
                    String::new()
                } else {
                    format!("  · {notes}")
                }
            );
            frame.render_widget(Paragraph::new(Line::from(foot_text)), foot);
        })?;
        Ok(())
    }
}

/// The target's Python version, or those of the processes sampled so far (`--subprocesses`).
fn python_versions(target: &TargetInfo, profile: &Profile) -> String {
    target
        .python_version
        .clone()
        .or_else(|| profile.process_versions())
        .unwrap_or_else(|| "?".to_string())
}

/// The process column's width: a pid and a role (`12345 worker 12`).
const PROCESS_WIDTH: u16 = 16;
/// The task column's width.
const TASK_WIDTH: u16 = 14;

/// `text` in at most `width` characters (cut with `…`).
fn cut(text: &str, width: u16) -> String {
    let width = usize::from(width);
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// What the table's columns show.
#[derive(Debug, Clone, Copy)]
struct Columns {
    /// An allocator-bytes column.
    malloc: bool,
    /// A held-Python-heap column (the allocation hook ran).
    heap: bool,
    /// A process column (`--subprocesses`).
    processes: bool,
    /// A task column (`--async`).
    tasks: bool,
    /// Ticks in the window (the CPU share's denominator).
    ticks: u64,
    /// The window, in seconds.
    window: f64,
    /// The sort key, marked in its header.
    sort: SortKey,
}

/// The rows as a table widget: figures right-aligned in narrow columns, the frame last so that
/// it gets what is left of the width.
fn table(rows: &[Row], project: &str, columns: Columns) -> Table<'static> {
    let Columns {
        malloc,
        heap,
        processes,
        tasks,
        ticks,
        window,
        sort,
    } = columns;
    let mark = |key: SortKey, text: String| {
        if key == sort {
            format!("{text}▼")
        } else {
            text
        }
    };
    let mut heads = vec![
        mark(SortKey::Growth, format!("+{window:.0}s")),
        mark(SortKey::Held, "held".to_string()),
    ];
    if heap {
        heads.push(mark(SortKey::Heap, "heap".to_string()));
    }
    if malloc {
        heads.push(mark(SortKey::Malloc, "malloc".to_string()));
    }
    heads.push(mark(SortKey::Cpu, "cpu%".to_string()));
    if processes {
        heads.push("process".to_string());
    }
    if tasks {
        heads.push("task".to_string());
    }
    heads.push("function (file:line)".to_string());
    let mut widths = vec![Constraint::Length(10), Constraint::Length(10)];
    if heap {
        widths.push(Constraint::Length(10));
    }
    if malloc {
        widths.push(Constraint::Length(10));
    }
    widths.push(Constraint::Length(5));
    if processes {
        widths.push(Constraint::Length(PROCESS_WIDTH));
    }
    if tasks {
        widths.push(Constraint::Length(TASK_WIDTH));
    }
    widths.push(Constraint::Min(20));
    let body = rows.iter().map(|row| {
        let mut cells = vec![
            Cell::from(format!("{:>9}", format_bytes(row.window.get(Metric::Rss)))),
            Cell::from(format!("{:>9}", format_bytes(row.held))),
        ];
        if heap {
            cells.push(Cell::from(format!("{:>9}", format_bytes(row.heap))));
        }
        if malloc {
            cells.push(Cell::from(format!(
                "{:>9}",
                format_bytes(row.window.get(Metric::MallocBytes))
            )));
        }
        let cpu = 100.0 * row.window.get(Metric::Cpu) as f64 / ticks as f64;
        cells.push(Cell::from(format!("{cpu:>4.0}")));
        if processes {
            let process = row.key.process.as_deref().unwrap_or("");
            cells.push(Cell::from(cut(process, PROCESS_WIDTH)));
        }
        if tasks {
            let task = row.key.task.as_deref().unwrap_or("");
            cells.push(Cell::from(cut(task, TASK_WIDTH)));
        }
        let place = match (row.key.filename.as_str(), row.key.line) {
            ("", _) => String::new(),
            (file, Some(line)) => format!(" ({}:{line})", short_path(file, project)),
            (file, None) => format!(" ({})", short_path(file, project)),
        };
        cells.push(Cell::from(format!("{}{place}", row.key.function)));
        TableRow::new(cells)
    });
    Table::new(body, widths).header(
        TableRow::new(heads.into_iter().map(Cell::from))
            .style(Style::new().add_modifier(Modifier::REVERSED)),
    )
}
