//! `pmt heap --pid PID`: one snapshot of a Python process's heap, read out of process, as a
//! text report (live objects by type, the holders that retain the most, what was not
//! followed) and, with `--json FILE`, the whole snapshot model; with `--diff SECS`, two
//! snapshots and the growth between them, by type and by holder, with who wrote the sizes of
//! the holders that grew (`--watch`: hardware watchpoints, `heap::who_grew`). `--pprof` and
//! `--flame` write what each holder retains (or, with `--diff`, gained) by retention path,
//! through the output registry.

use crate::heap::{
    HeapError, HeapOptions, RssBreakdown, Snapshot, SnapshotDiff, WatchOptions, WatchedHolder,
    WhoGrew, diff, growth_profile, held_profile, take_snapshot, who_grew,
};
use crate::output::format::{Format, Outputs, RenderOptions};
use crate::output::format_bytes;
use crate::output::frames::{FrameStyle, project_root, short_path};
use crate::profile::Profile;
use crate::python::{PythonSpy, SpyOptions};
use crate::sample::Metric;
use anyhow::Context;
use clap::Args;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How many holders each snapshot of `--diff` names, to match the second's with the first's.
const DIFF_HOLDERS: usize = 500;
/// How many holders a snapshot names for `--pprof` and `--flame` (the report shows
/// `--holders` of them).
const PROFILE_HOLDERS: usize = 200;

/// What is held and who holds it: live objects by type, and the containers that retain the
/// most, named by their path from a module or a class (`__main__.KEEP`). Reads the target's
/// memory only; no code runs in it.
#[derive(Debug, Args)]
pub struct HeapArgs {
    /// PID of the Python process.
    #[arg(short, long)]
    pub pid: i32,
    /// How many types to list.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// How many holders to name.
    #[arg(long, default_value_t = 10)]
    pub holders: usize,
    /// Also write the snapshot (every type, the holders, what was not followed) as JSON;
    /// with `--diff`, both snapshots and the growth.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Take a second snapshot SECS seconds after the first and report what grew in between,
    /// by type and by holder (holders matched by their path).
    #[arg(long, value_name = "SECS")]
    pub diff: Option<f64>,
    /// Write a gzipped pprof profile: `inuse_space` (bytes) and `inuse_objects` (count) of
    /// the top 200 holders by retention path as the stack (`__main__` → `__main__.KEEP`),
    /// for `go tool pprof` and Pyroscope; with `--diff`, what each gained.
    #[arg(long, value_name = "FILE")]
    pub pprof: Option<PathBuf>,
    /// Write an SVG flamegraph of retained bytes by retention path; with `--diff`, of the
    /// bytes gained.
    #[arg(long, value_name = "FILE.svg")]
    pub flame: Option<PathBuf>,
    /// Pause the target while its memory is read, for a consistent snapshot, and say for how
    /// long; it is resumed after the read, on any error, and by the kernel if pmt is killed.
    #[arg(long)]
    pub blocking: bool,
    /// With `--diff`: watch the sizes of up to N holders that grow (the fastest over the first
    /// fifth of the window, at most 1 s, among the top holders and every container that is
    /// a module's or class's attribute) with hardware watchpoints on every thread for the
    /// rest of it, and name the Python stacks that wrote them (needs root or
    /// CAP_BPF+CAP_PERFMON; x86 threads have 4 watchpoints). 0: do not watch.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub watch: usize,
    /// Stop watching a holder after this many writes to its size (each costs the writing
    /// thread a debug trap and an in-kernel stack walk, ~20 µs here): enough to say who
    /// writes, without slowing a hot loop for the whole window.
    #[arg(long, value_name = "N", default_value_t = 50_000)]
    pub watch_writes: u64,
    /// Print file paths whole in the stacks that grew a holder (by default they are
    /// package-relative, e.g. `fastapi/routing.py`, as in pmt-sample's summary; `--json`
    /// keeps them whole).
    #[arg(long)]
    pub full_paths: bool,
}

impl HeapArgs {
    fn output_requests(&self) -> Vec<(Format, PathBuf)> {
        let mut requests = Vec::new();
        if let Some(path) = &self.flame {
            requests.push((Format::Flame, path.clone()));
        }
        if let Some(path) = &self.pprof {
            requests.push((Format::Pprof, path.clone()));
        }
        requests
    }
}

/// `err`, after removing the output files this run created (still empty).
fn failed(outputs: Outputs, err: HeapError) -> anyhow::Error {
    outputs.discard();
    err.into()
}

/// Writes the `--pprof`/`--flame` files of `profile`, and says so on stderr.
fn write_outputs(outputs: Outputs, profile: &Profile, started: SystemTime) -> anyhow::Result<()> {
    if outputs.is_empty() {
        return Ok(());
    }
    let options = RenderOptions {
        metric: Metric::Heap,
        threads: false,
        style: FrameStyle::READABLE,
        icicle: false,
        started: Some(started),
    };
    let (written, error) = outputs.write(profile, &options);
    if let Some(err) = error {
        return Err(err.into());
    }
    eprintln!("pmt heap: wrote {}", written.join(", "));
    Ok(())
}

#[derive(serde::Serialize)]
struct DiffJson<'a> {
    before: &'a Snapshot,
    after: &'a Snapshot,
    growth: &'a SnapshotDiff,
}

/// Runs the subcommand.
pub fn run(args: HeapArgs) -> anyhow::Result<()> {
    // Locals: the threads' frames are roots too.
    let spy_options = SpyOptions {
        locals: true,
        ..SpyOptions::default()
    };
    if let Some(secs) = args.diff
        && !(secs.is_finite() && secs >= 0.0)
    {
        anyhow::bail!("--diff takes a number of seconds, such as 10");
    }
    let mut spy = PythonSpy::attach(args.pid, &spy_options)?;
    let command = spy.process().cmdline().unwrap_or_default();
    let outputs = Outputs::open(&args.output_requests())?;
    report(&args, &mut spy, &command, outputs)
}

/// Takes the snapshots and writes every report of them (`outputs` already open).
fn report(
    args: &HeapArgs,
    spy: &mut PythonSpy,
    command: &str,
    outputs: Outputs,
) -> anyhow::Result<()> {
    let mut options = HeapOptions {
        holders: args.holders,
        blocking: args.blocking,
        ..HeapOptions::default()
    };
    if !outputs.is_empty() {
        options.holders = options.holders.max(PROFILE_HOLDERS);
    }
    let wall_start = SystemTime::now();
    let Some(secs) = args.diff else {
        let snapshot = match take_snapshot(spy, &options) {
            Ok(snapshot) => snapshot,
            Err(err) => return Err(failed(outputs, err)),
        };
        if let Some(path) = &args.json {
            write_json(path, &snapshot)?;
        }
        let mut out = std::io::stdout().lock();
        write_text(&mut out, &snapshot, args.top, args.holders)?;
        out.flush().context("writing the report")?;
        return write_outputs(outputs, &held_profile(&snapshot, command), wall_start);
    };
    options.holders = options.holders.max(DIFF_HOLDERS);
    let started = Instant::now();
    // A module's or class's container that was empty (or small) so far may be what grows.
    let first = HeapOptions {
        named_containers: args.watch > 0,
        ..options.clone()
    };
    let before = match take_snapshot(spy, &first) {
        Ok(snapshot) => snapshot,
        Err(err) => return Err(failed(outputs, err)),
    };
    // Ctrl-C or SIGTERM ends the window early: the watchpoints are removed and the second
    // snapshot is taken and reported.
    crate::attach::stop::install_handlers().context("installing the Ctrl-C handler")?;
    let until = started + Duration::from_secs_f64(secs);
    let watched = (args.watch > 0).then(|| {
        let options = WatchOptions {
            holders: args.watch,
            probe: Duration::from_secs_f64(secs / 5.0).min(Duration::from_secs(1)),
            until,
            max_writes: args.watch_writes.max(1),
        };
        let layout = crate::run::kernel_capture::bpf_layout(spy);
        who_grew(spy, layout, &before, &options, crate::attach::stop::flag())
    });
    crate::attach::stop::sleep_until(until, crate::attach::stop::flag());
    let after = match take_snapshot(spy, &options) {
        Ok(snapshot) => snapshot,
        Err(err) => return Err(failed(outputs, err)),
    };
    let mut growth = diff(
        &before,
        &after,
        started.elapsed().as_secs_f64() - after.seconds,
    );
    growth.who_grew = watched;
    if let Some(path) = &args.json {
        let both = DiffJson {
            before: &before,
            after: &after,
            growth: &growth,
        };
        write_json(path, &both)?;
    }
    let mut out = std::io::stdout().lock();
    write_text(&mut out, &after, args.top, args.holders)?;
    write_growth(&mut out, &growth, args.top, args.holders, args.full_paths)?;
    out.flush().context("writing the report")?;
    write_outputs(
        outputs,
        &growth_profile(&before, &after, command),
        wall_start,
    )
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let file = std::fs::File::create(path)
        .with_context(|| format!("cannot write {}: choose a writable path", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    serde_json::to_writer_pretty(&mut out, value)?;
    out.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `+1,234` / `-56`.
fn signed(n: i64) -> String {
    let sign = if n < 0 { "-" } else { "+" };
    format!("{sign}{}", grouped(n.unsigned_abs()))
}

fn signed_bytes(n: i64) -> String {
    let sign = if n < 0 { "-" } else { "+" };
    format!("{sign}{}", format_bytes(n.unsigned_abs()))
}

fn write_growth(
    out: &mut impl Write,
    d: &SnapshotDiff,
    top: usize,
    holders: usize,
    full_paths: bool,
) -> std::io::Result<()> {
    // The writers' files, package-relative as in pmt-sample's summary: the run's own files
    // relative to the directory they share.
    let project = match (&d.who_grew, full_paths) {
        (Some(who), false) => Some(project_root(who.holders.iter().flat_map(|h| {
            h.grown_by
                .iter()
                .flat_map(|g| g.stack.iter().map(|f| f.code.filename.as_str()))
        }))),
        _ => None,
    };
    let project = project.as_deref();
    writeln!(
        out,
        "\nGrowth over {:.1} s by type (most bytes gained first):",
        d.seconds
    )?;
    writeln!(out, "{:>12} {:>12}  type", "objects", "bytes")?;
    for t in d.types.iter().take(top) {
        writeln!(
            out,
            "{:>12} {:>12}  {}",
            signed(t.count.1 as i64 - t.count.0 as i64),
            signed_bytes(t.bytes.1 as i64 - t.bytes.0 as i64),
            t.name
        )?;
    }
    writeln!(
        out,
        "\nGrowth by holder (retained bytes gained, most first):"
    )?;
    if let Some(who) = &d.who_grew {
        write_who_grew_summary(out, who)?;
        // A holder freed while watched is not among the second snapshot's: its writes
        // before it went are shown here.
        for h in who.holders.iter().filter(|h| h.gone.is_some()) {
            if !d.holders.iter().any(|g| g.path == h.path) {
                writeln!(out, "{:>36}{} ({})", "", h.path, h.type_name)?;
                write_grown_by(out, h, project)?;
            }
        }
    }
    writeln!(
        out,
        "{:>12} {:>10} {:>10}  path (type)",
        "retained", "items", "now"
    )?;
    for h in d.holders.iter().take(holders) {
        let items = match h.items.0 {
            Some(was) => signed(h.items.1 as i64 - was as i64),
            None => "new".to_string(),
        };
        writeln!(
            out,
            "{:>12} {:>10} {:>10}  {} ({})",
            signed_bytes(h.grown_bytes()),
            items,
            grouped(h.items.1),
            h.path,
            h.type_name
        )?;
        if let Some(watched) = d.who_grew.as_ref().and_then(|w| w.holder(&h.path)) {
            write_grown_by(out, watched, project)?;
        }
    }
    Ok(())
}

/// How many holders were watched, for how long, and why not where none were.
fn write_who_grew_summary(out: &mut impl Write, who: &WhoGrew) -> std::io::Result<()> {
    if let Some(why) = &who.unavailable {
        return writeln!(out, "(who grew them: not watched: {why})");
    }
    let threads = who.holders.iter().map(|h| h.threads).max().unwrap_or(0);
    writeln!(
        out,
        "(who grew them: {} of the {} holders whose size grew in the first {:.1} s watched with hardware watchpoints on {} thread(s) for {:.1} s; threads started meanwhile were followed{})",
        who.watched(),
        who.holders_that_grew,
        who.choosing_seconds,
        threads,
        who.watched_seconds,
        if who.hits_not_counted > 0 {
            format!(
                "; {} writes not counted (table full)",
                grouped(who.hits_not_counted)
            )
        } else {
            String::new()
        }
    )
}

/// The stacks that wrote a watched holder's size, under its line; file paths short
/// ([`short_path`] against `project`) unless `project` is `None`.
fn write_grown_by(
    out: &mut impl Write,
    h: &WatchedHolder,
    project: Option<&str>,
) -> std::io::Result<()> {
    /// Stacks shown per holder, and frames per stack.
    const STACKS: usize = 5;
    const FRAMES: usize = 4;
    if let Some(why) = &h.refused {
        return writeln!(out, "{:>36}not watched: {why}", "");
    }
    if let Some(after) = h.gone {
        writeln!(
            out,
            "{:>36}freed while watched: {} later writes to its memory (another object's) not counted",
            "",
            grouped(after)
        )?;
    }
    if h.grown_by.is_empty() {
        return writeln!(out, "{:>36}watched: no writes to its size", "");
    }
    if let Some(seconds) = h.stopped_at_budget {
        writeln!(
            out,
            "{:>36}watched for {seconds:.1} s only: it reached the --watch-writes budget ({} writes)",
            "",
            grouped(h.writes())
        )?;
    }
    for g in h.grown_by.iter().take(STACKS) {
        let mut stack = if g.stack.is_empty() {
            "<no Python stack>".to_string()
        } else {
            g.stack
                .iter()
                .take(FRAMES)
                .map(|frame| match project {
                    Some(project) => {
                        frame.text_with_path(short_path(&frame.code.filename, project))
                    }
                    None => frame.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ← ")
        };
        if g.stack.len() > FRAMES {
            stack.push_str(" ← …");
        }
        let mut counts = format!("{} writes", grouped(g.writes));
        if g.added > 0 {
            counts.push_str(&format!(", +{} items", grouped(g.added)));
        }
        if g.removed > 0 {
            counts.push_str(&format!(", -{} items", grouped(g.removed)));
        }
        writeln!(out, "{:>36}grown by {stack}: {counts}", "")?;
    }
    if h.grown_by.len() > STACKS {
        writeln!(
            out,
            "{:>36}… and {} more stacks",
            "",
            h.grown_by.len() - STACKS
        )?;
    }
    Ok(())
}

/// The RSS section: each part with its share.
fn write_rss(out: &mut impl Write, rss: &RssBreakdown) -> std::io::Result<()> {
    writeln!(out, "\nWhere the RSS is ({}):", format_bytes(rss.rss))?;
    for (name, bytes) in rss.parts() {
        let share = if rss.rss > 0 {
            100.0 * bytes as f64 / rss.rss as f64
        } else {
            0.0
        };
        writeln!(out, "{:>12} {:>6.1}%  {name}", format_bytes(bytes), share)?;
    }
    let mut note = format!("{} pymalloc pools", grouped(rss.pools));
    if rss.threads_unplaced > 0 {
        note.push_str(&format!(
            "; {} threads were running, their stacks are counted in the C heap",
            rss.threads_unplaced
        ));
    }
    writeln!(out, "({note})")
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut text = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            text.push(',');
        }
        text.push(c);
    }
    text
}

fn write_text(
    out: &mut impl Write,
    s: &Snapshot,
    top: usize,
    holders: usize,
) -> std::io::Result<()> {
    writeln!(
        out,
        "Process {} (CPython {}): {} objects, {} shallow; {} tracked by the collector, {} reached from modules and threads; read in {:.2} s ({} reads, {} copied, at most {} held by pmt)",
        s.pid,
        s.python_version,
        grouped(s.objects),
        format_bytes(s.bytes),
        grouped(s.tracked_objects),
        grouped(s.reached_objects),
        s.seconds,
        grouped(s.read_calls),
        format_bytes(s.read_bytes),
        format_bytes(s.peak_cached_bytes),
    )?;
    match s.paused_seconds {
        Some(paused) => writeln!(
            out,
            "The process was paused for {:.3} s while it was read (--blocking).",
            paused
        )?,
        None => writeln!(
            out,
            "The process ran on while it was read: what changed meanwhile is seen as it was when copied (--blocking pauses it)."
        )?,
    }
    if let Some(rss) = &s.rss {
        write_rss(out, rss)?;
    }
    writeln!(out, "\nLive objects by type (top {top} by shallow bytes):")?;
    writeln!(
        out,
        "{:>12} {:>12} {:>12}  type",
        "objects", "bytes", "tracked"
    )?;
    for t in s.types.iter().take(top) {
        writeln!(
            out,
            "{:>12} {:>12} {:>12}  {}",
            grouped(t.count),
            format_bytes(t.bytes),
            grouped(t.tracked),
            t.name
        )?;
    }
    writeln!(out, "\nHolders (retained from the roots, most first):")?;
    writeln!(
        out,
        "{:>12} {:>12} {:>10}  path (type)",
        "retained", "objects", "items"
    )?;
    for h in s.holders.iter().take(holders) {
        writeln!(
            out,
            "{:>12} {:>12} {:>10}  {} ({})",
            format_bytes(h.retained_bytes),
            grouped(h.retained_objects),
            grouped(h.items),
            h.path,
            h.type_name
        )?;
    }
    if s.unreached_bytes > 0 {
        writeln!(
            out,
            "Not reached from any module or thread: {} (collectable cycles, or held only by C code)",
            format_bytes(s.unreached_bytes)
        )?;
    }
    let n = &s.not_followed;
    writeln!(
        out,
        "\nNot followed: {} references to unreadable objects, {} containers not readable whole, {} instance dicts not placed, {} collector lists torn{}",
        grouped(n.bad_references),
        grouped(n.unreadable_containers),
        grouped(n.instance_dicts),
        grouped(n.torn_gc_lists),
        if n.truncated {
            "; stopped at the object limit"
        } else {
            ""
        }
    )?;
    if !n.objects_by_type.is_empty() {
        let shown: Vec<String> = n
            .objects_by_type
            .iter()
            .take(8)
            .map(|(name, count)| format!("{name} {}", grouped(*count)))
            .collect();
        let total: u64 = n.objects_by_type.iter().map(|(_, c)| c).sum();
        writeln!(
            out,
            "Objects whose references pmt does not follow: {} ({}{})",
            grouped(total),
            shown.join(", "),
            if n.objects_by_type.len() > 8 {
                ", …"
            } else {
                ""
            }
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{WatchedHolder, grouped, write_grown_by};
    use crate::heap::GrownBy;
    use crate::python::{CodeInfo, Frame};
    use std::sync::Arc;

    fn frame(function: &str, filename: &str, line: u32) -> Frame {
        Frame {
            code: Arc::new(CodeInfo {
                function: function.into(),
                filename: filename.into(),
                first_line: 1,
            }),
            line,
        }
    }

    #[test]
    fn who_grew_a_holder_is_written_innermost_frame_first_with_its_counts() {
        let mut holder = WatchedHolder {
            path: "__main__.KEEP".into(),
            type_name: "list".into(),
            address: 0x1000,
            grew_while_choosing: 5,
            threads: 2,
            refused: None,
            stopped_at_budget: None,
            gone: None,
            grown_by: vec![
                GrownBy {
                    stack: vec![
                        frame("leak", "/srv/app/app.py", 57),
                        frame("handler", "/srv/app/app.py", 80),
                        frame(
                            "run_endpoint_function",
                            "/opt/venv/lib/python3.14/site-packages/fastapi/routing.py",
                            381,
                        ),
                    ],
                    writes: 12345,
                    grew: 12345,
                    added: 12345,
                    removed: 0,
                },
                GrownBy {
                    stack: Vec::new(),
                    writes: 3,
                    grew: 0,
                    added: 0,
                    removed: 3,
                },
            ],
        };
        let mut out = Vec::new();
        write_grown_by(&mut out, &holder, Some("/srv/app")).expect("written");
        let text = String::from_utf8(out).expect("UTF-8");
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        assert_eq!(
            lines,
            [
                "grown by leak (app.py:57) ← handler (app.py:80) ← run_endpoint_function (fastapi/routing.py:381): 12,345 writes, +12,345 items",
                "grown by <no Python stack>: 3 writes, -3 items",
            ]
        );
        // --full-paths, and the JSON, keep the files whole.
        let mut out = Vec::new();
        write_grown_by(&mut out, &holder, None).expect("written");
        let text = String::from_utf8(out).expect("UTF-8");
        assert!(
            text.contains("leak (/srv/app/app.py:57) ← handler (/srv/app/app.py:80)"),
            "{text}"
        );
        let json = serde_json::to_value(&holder.grown_by[0]).expect("JSON");
        assert_eq!(json["stack"][0], "leak (/srv/app/app.py:57)");
        holder.gone = Some(1500);
        let mut out = Vec::new();
        write_grown_by(&mut out, &holder, Some("/srv/app")).expect("written");
        let text = String::from_utf8(out).expect("UTF-8");
        assert_eq!(
            text.lines().next().map(str::trim),
            Some(
                "freed while watched: 1,500 later writes to its memory (another object's) not counted"
            )
        );
        holder.refused = Some("thread 7 has no free hardware breakpoint slot".into());
        let mut out = Vec::new();
        write_grown_by(&mut out, &holder, Some("/srv/app")).expect("written");
        let text = String::from_utf8(out).expect("UTF-8");
        assert_eq!(
            text.trim(),
            "not watched: thread 7 has no free hardware breakpoint slot"
        );
    }

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1234567), "1,234,567");
    }
}
