//! The records `pmt process` writes and the text formats pymemtrace 0.4.0's `process.py`
//! reads back: the JSON of one sample (key names and order as `ProcessLoggingThread` writes them),
//! the log line that carries it, Python-style JSON text, local timestamps, and the per-PID
//! summary table (`process.py LOGFILE`), which is also the gnuplot `.dat` table.
//!
//! It reads no process and draws nothing.

use serde::{Deserialize, Serialize};
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

/// The marker in a log line that pymemtrace's `process.py` looks for.
pub const LOGGER_PREFIX: &str = "ProcessLoggingThread-JSON";

/// Which of the three log markers a record is written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The first record: `ProcessLoggingThread-JSON-START`.
    Start,
    /// Every record in between: `ProcessLoggingThread-JSON`.
    Tick,
    /// The record taken when monitoring stops: `ProcessLoggingThread-JSON-STOP`.
    Stop,
}

impl Phase {
    /// The marker text for this phase.
    pub fn prefix(self) -> &'static str {
        match self {
            Phase::Start => "ProcessLoggingThread-JSON-START",
            Phase::Tick => LOGGER_PREFIX,
            Phase::Stop => "ProcessLoggingThread-JSON-STOP",
        }
    }
}

/// `memory_info`: psutil's Linux fields (bytes) plus `pfaults` (all page faults, minor + major)
/// and `pageins` (major faults), the fields pymemtrace's summary and gnuplot output read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MemoryInfo {
    /// Resident set size.
    pub rss: u64,
    /// Virtual memory size.
    pub vms: u64,
    /// Resident shared memory.
    #[serde(default)]
    pub shared: u64,
    /// Text (code).
    #[serde(default)]
    pub text: u64,
    /// Library (0 on Linux 2.6+).
    #[serde(default)]
    pub lib: u64,
    /// Data + stack.
    #[serde(default)]
    pub data: u64,
    /// Dirty pages (0 on Linux 2.6+).
    #[serde(default)]
    pub dirty: u64,
    /// Page faults since the process started (minor + major).
    pub pfaults: u64,
    /// Major page faults (pages read in) since the process started.
    pub pageins: u64,
}

/// `cpu_times`, seconds, as psutil reports them on Linux.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CpuTimes {
    /// User CPU.
    pub user: f64,
    /// System CPU.
    pub system: f64,
    /// User CPU of waited-for children.
    pub children_user: f64,
    /// System CPU of waited-for children.
    pub children_system: f64,
    /// Time waiting for block I/O.
    #[serde(default)]
    pub iowait: f64,
}

/// `memory_full_info` subset, bytes (`--uss`); -1 where the kernel refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FullMemoryInfo {
    /// Unique set size.
    pub uss: i64,
    /// Proportional set size.
    pub pss: i64,
    /// Swapped out.
    pub swap: i64,
}

/// `num_ctx_switches` (`--context-switches`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CtxSwitches {
    /// Voluntary switches.
    pub voluntary: u64,
    /// Involuntary switches.
    pub involuntary: u64,
}

/// One sample of one process, in the JSON shape pymemtrace 0.4.0's `process.py` logs, plus
/// optional extras named as psutil's `Process.as_dict()` names them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Local time, `YYYY-MM-DD HH:MM:SS.ffffff`.
    pub timestamp: String,
    /// Memory.
    pub memory_info: MemoryInfo,
    /// CPU.
    pub cpu_times: CpuTimes,
    /// Seconds since the process started (wall clock).
    pub elapsed_time: f64,
    /// Process ID.
    pub pid: i32,
    /// `--uss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_full_info: Option<FullMemoryInfo>,
    /// `--context-switches`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_ctx_switches: Option<CtxSwitches>,
    /// `--threads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_threads: Option<u64>,
    /// `--status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `--open-files`: the number of regular files open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_open_files: Option<i64>,
    /// `--net-connections`: the number of TCP/UDP sockets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_net_connections: Option<i64>,
    /// `--cmdline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<Vec<String>>,
    /// A message attached to this sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Formats `value` as Python's `repr(float)` does: shortest round-trip digits, exponent form
/// (`1e-05`, `1e+16`) outside `1e-4 <= |v| < 1e16`, always a `.0` on whole numbers.
pub fn python_float(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let exp_form = format!("{value:e}");
    let (mantissa, exponent) = exp_form.split_once('e').unwrap_or((&exp_form, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if value == 0.0 || (-4..16).contains(&exponent) {
        let plain = format!("{value}");
        if plain.contains('.') {
            plain
        } else {
            format!("{plain}.0")
        }
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    }
}

/// serde_json formatter that writes what Python's `json.dumps` writes: `", "` and `": "`
/// separators (or, pretty, indent 2 as `json.dumps(indent=2)`), floats as Python's `repr`.
#[derive(Debug, Clone)]
pub struct PythonJsonFormatter {
    pretty: Option<serde_json::ser::PrettyFormatter<'static>>,
}

impl PythonJsonFormatter {
    /// One line, as `json.dumps(obj)`.
    pub fn compact() -> Self {
        PythonJsonFormatter { pretty: None }
    }

    /// Indented by two spaces, as `json.dumps(obj, indent=2)`.
    pub fn indent2() -> Self {
        PythonJsonFormatter {
            pretty: Some(serde_json::ser::PrettyFormatter::with_indent(b"  ")),
        }
    }
}

impl serde_json::ser::Formatter for PythonJsonFormatter {
    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        writer.write_all(python_float(value).as_bytes())
    }
    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        writer.write_all(python_float(f64::from(value)).as_bytes())
    }
    fn begin_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        match &mut self.pretty {
            Some(p) => p.begin_array(writer),
            None => writer.write_all(b"["),
        }
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        match &mut self.pretty {
            Some(p) => p.end_array(writer),
            None => writer.write_all(b"]"),
        }
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        match &mut self.pretty {
            Some(p) => p.begin_array_value(writer, first),
            None if first => Ok(()),
            None => writer.write_all(b", "),
        }
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        match &mut self.pretty {
            Some(p) => p.end_array_value(writer),
            None => Ok(()),
        }
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        match &mut self.pretty {
            Some(p) => p.begin_object(writer),
            None => writer.write_all(b"{"),
        }
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        match &mut self.pretty {
            Some(p) => p.end_object(writer),
            None => writer.write_all(b"}"),
        }
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        match &mut self.pretty {
            Some(p) => p.begin_object_key(writer, first),
            None if first => Ok(()),
            None => writer.write_all(b", "),
        }
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        match &mut self.pretty {
            Some(p) => p.begin_object_value(writer),
            None => writer.write_all(b": "),
        }
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        match &mut self.pretty {
            Some(p) => p.end_object_value(writer),
            None => Ok(()),
        }
    }
}

/// Serializes `value` as Python's `json.dumps` would (`indent2`: as `json.dumps(indent=2)`).
pub fn to_python_json<T: Serialize>(value: &T, indent2: bool) -> serde_json::Result<String> {
    let formatter = if indent2 {
        PythonJsonFormatter::indent2()
    } else {
        PythonJsonFormatter::compact()
    };
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    value.serialize(&mut serializer)?;
    // The formatter writes only the UTF-8 that serde_json hands it.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A broken-down local time with microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    /// Year, e.g. 2026.
    pub year: i32,
    /// Month 1-12.
    pub month: u32,
    /// Day 1-31.
    pub day: u32,
    /// Hour 0-23.
    pub hour: u32,
    /// Minute 0-59.
    pub minute: u32,
    /// Second 0-60.
    pub second: u32,
    /// Microsecond 0-999999.
    pub micros: u32,
}

impl LocalTime {
    /// Converts a wall-clock time to local time (the zone of `TZ` / `/etc/localtime`).
    pub fn from_system_time(time: SystemTime) -> LocalTime {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = libc::time_t::try_from(since.as_secs()).unwrap_or(0);
        // SAFETY: `tm` is plain data that localtime_r fills; both pointers are valid for the call.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let ok = !unsafe { libc::localtime_r(&secs, &mut tm) }.is_null();
        if !ok {
            return LocalTime {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0,
                micros: 0,
            };
        }
        let part = |v: libc::c_int| u32::try_from(v).unwrap_or(0);
        LocalTime {
            year: tm.tm_year + 1900,
            month: part(tm.tm_mon + 1),
            day: part(tm.tm_mday),
            hour: part(tm.tm_hour),
            minute: part(tm.tm_min),
            second: part(tm.tm_sec),
            micros: since.subsec_micros(),
        }
    }

    /// `YYYY-MM-DD HH:MM:SS.ffffff`, the `timestamp` of a record (Python's `str(datetime.now())`).
    pub fn record_timestamp(&self) -> String {
        format!(
            "{} {:02}:{:02}:{:02}.{:06}",
            self.date(),
            self.hour,
            self.minute,
            self.second,
            self.micros
        )
    }

    /// `YYYY-MM-DD HH:MM:SS,mmm`, the time at the start of a log line (Python logging's `asctime`).
    pub fn log_time(&self) -> String {
        format!(
            "{} {:02}:{:02}:{:02},{:03}",
            self.date(),
            self.hour,
            self.minute,
            self.second,
            self.micros / 1000
        )
    }

    fn date(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Python logging's level names.
pub fn level_name(level: u32) -> String {
    match level {
        10 => "DEBUG".into(),
        20 => "INFO".into(),
        30 => "WARNING".into(),
        40 => "ERROR".into(),
        50 => "CRITICAL".into(),
        other => format!("Level {other}"),
    }
}

/// One log line in the layout of pymemtrace's examples
/// (`asctime - file#line - pid - (thread) - LEVEL - message`), the record's JSON at its end.
pub fn log_line(record: &ProcessRecord, phase: Phase, level: u32) -> serde_json::Result<String> {
    let json = to_python_json(record, false)?;
    let now = LocalTime::from_system_time(SystemTime::now()).log_time();
    Ok(format!(
        "{now} - pmt process - {:5} - ({:<10}) - {:<8} - {} {json}",
        std::process::id(),
        "ProcMon",
        level_name(level),
        phase.prefix()
    ))
}

/// Finds the record in a log line written by pymemtrace's `process.py` or `pmt process`.
pub fn parse_log_line(line: &str) -> Option<ProcessRecord> {
    let at = line.find(LOGGER_PREFIX)?;
    let rest = &line[at + LOGGER_PREFIX.len()..];
    let rest = rest
        .strip_prefix("-START")
        .or_else(|| rest.strip_prefix("-STOP"))
        .unwrap_or(rest);
    serde_json::from_str(rest.trim()).ok()
}

/// Python's `str.center(width, fill)`.
pub fn center(text: &str, width: usize, fill: char) -> String {
    let len = text.chars().count();
    if len >= width {
        return text.to_string();
    }
    let margin = width - len;
    let left = margin / 2 + (margin & width & 1);
    let fill_str = |n: usize| std::iter::repeat_n(fill, n).collect::<String>();
    format!("{}{text}{}", fill_str(left), fill_str(margin - left))
}

/// The per-PID table of pymemtrace's `process.py` summary and gnuplot `.dat` file: a header row
/// and one row per record (elapsed time, RSS, page faults/s, user CPU, mean and instantaneous
/// CPU %, timestamp, PID, label), every cell already formatted.
#[derive(Debug, Clone, PartialEq)]
pub struct PidTable {
    /// The PID.
    pub pid: i32,
    /// Header row, then data rows.
    pub rows: Vec<Vec<String>>,
    /// Smallest RSS seen.
    pub rss_min: u64,
    /// Largest RSS seen.
    pub rss_max: u64,
}

fn percent(value: f64) -> String {
    format!("{:>12}", format!("{:.1}%", value * 100.0))
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

/// Builds one [`PidTable`] per PID, in order of first appearance.
pub fn pid_tables(records: &[ProcessRecord]) -> Vec<PidTable> {
    let header: Vec<String> = vec![
        format!("{:<12}", "#t(s)"),
        format!("{:>12}", "RSS"),
        format!("{:>12}", "PageFaults/s"),
        format!("{:>12}", "User"),
        format!("{:>12}", "Mean_CPU%"),
        format!("{:>12}", "Inst_CPU%"),
        format!("{:<26}", "Timestamp"),
        format!("{:>6}", "PID"),
        "Label".to_string(),
    ];
    let mut tables: Vec<(PidTable, f64, f64, u64)> = Vec::new();
    for record in records {
        let index = match tables.iter().position(|(t, ..)| t.pid == record.pid) {
            Some(index) => index,
            None => {
                let table = PidTable {
                    pid: record.pid,
                    rows: vec![header.clone()],
                    rss_min: u64::MAX,
                    rss_max: 0,
                };
                tables.push((table, 0.0, 0.0, 0));
                tables.len() - 1
            }
        };
        let (table, prev_user, prev_elapsed, prev_faults) = &mut tables[index];
        let elapsed = record.elapsed_time;
        let user = record.cpu_times.user;
        let faults = record.memory_info.pfaults;
        let dt = elapsed - *prev_elapsed;
        let inst_faults = ratio(faults.saturating_sub(*prev_faults) as f64, dt);
        table.rows.push(vec![
            format!("{elapsed:<12.1}"),
            format!("{:12}", record.memory_info.rss),
            format!("{inst_faults:12.1}"),
            format!("{user:12.1}"),
            percent(ratio(user, elapsed)),
            percent(ratio(user - *prev_user, dt)),
            format!("{:26}", record.timestamp.replacen(' ', "T", 1)),
            format!("{:6}", record.pid),
            format!("# {}", record.label.as_deref().unwrap_or("")),
        ]);
        table.rss_min = table.rss_min.min(record.memory_info.rss);
        table.rss_max = table.rss_max.max(record.memory_info.rss);
        *prev_user = user;
        *prev_elapsed = elapsed;
        *prev_faults = faults;
    }
    tables.into_iter().map(|(table, ..)| table).collect()
}

/// The summary `process.py LOGFILE` prints: each PID's table between centred rulers.
pub fn summary_text(records: &[ProcessRecord]) -> String {
    let mut out = String::new();
    for table in pid_tables(records) {
        out.push_str(&center(&format!(" PID: {} ", table.pid), 75, '-'));
        out.push('\n');
        for row in &table.rows {
            out.push_str(&row.join(" "));
            out.push('\n');
        }
        out.push_str(&center(&format!(" PID: {} DONE ", table.pid), 75, '-'));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(elapsed: f64, rss: u64, user: f64, faults: u64) -> ProcessRecord {
        ProcessRecord {
            timestamp: "2026-03-21 13:07:51.567924".into(),
            memory_info: MemoryInfo {
                rss,
                vms: 2 * rss,
                pfaults: faults,
                ..MemoryInfo::default()
            },
            cpu_times: CpuTimes {
                user,
                ..CpuTimes::default()
            },
            elapsed_time: elapsed,
            pid: 83606,
            memory_full_info: None,
            num_ctx_switches: None,
            num_threads: None,
            status: None,
            num_open_files: None,
            num_net_connections: None,
            cmdline: None,
            label: None,
        }
    }

    #[test]
    fn floats_look_like_python_repr() {
        assert_eq!(python_float(0.0), "0.0");
        assert_eq!(python_float(3.0), "3.0");
        assert_eq!(python_float(0.28422032), "0.28422032");
        assert_eq!(python_float(1e-5), "1e-05");
        assert_eq!(python_float(1.5e16), "1.5e+16");
        assert_eq!(python_float(1e15), "1000000000000000.0");
        assert_eq!(python_float(-2.5e-7), "-2.5e-07");
    }

    #[test]
    fn record_json_has_python_separators_and_key_order() {
        let json = to_python_json(&record(0.5, 100, 0.25, 3), false).expect("serializes");
        assert!(json.starts_with(
            r#"{"timestamp": "2026-03-21 13:07:51.567924", "memory_info": {"rss": 100, "vms": 200,"#
        ));
        assert!(json.contains(r#""cpu_times": {"user": 0.25, "system": 0.0,"#));
        assert!(json.ends_with(r#""elapsed_time": 0.5, "pid": 83606}"#));
    }

    #[test]
    fn log_line_round_trips() {
        let mut rec = record(1.25, 4096, 0.5, 10);
        rec.label = Some("String of 1,024 bytes".into());
        for phase in [Phase::Start, Phase::Tick, Phase::Stop] {
            let line = log_line(&rec, phase, 20).expect("formats");
            assert!(line.contains(" - INFO     - "));
            assert_eq!(parse_log_line(&line), Some(rec.clone()));
        }
        assert_eq!(parse_log_line("unrelated line"), None);
    }

    #[test]
    fn parses_pymemtrace_macos_lines() {
        let line = r#"2020-11-16 10:36:39,392 - process.py#293 - 14052 - (ProcMon   ) - INFO     - ProcessLoggingThread-JSON {"timestamp": "2020-11-16 10:36:39.392076", "memory_info": {"rss": 209616896, "vms": 4574580736, "pfaults": 51809, "pageins": 0}, "cpu_times": {"user": 0.123138272, "system": 0.080602592, "children_user": 0.0, "children_system": 0.0}, "elapsed_time": 0.6022598743438721, "pid": 14052, "label": "String of 198,180,864 bytes"}"#;
        let rec = parse_log_line(line).expect("parses");
        assert_eq!(rec.memory_info.rss, 209616896);
        assert_eq!(rec.label.as_deref(), Some("String of 198,180,864 bytes"));
    }

    #[test]
    fn center_matches_python() {
        assert_eq!(
            center(" PID: 83606 ", 75, '-'),
            format!("{} PID: 83606 {}", "-".repeat(32), "-".repeat(31))
        );
        assert_eq!(
            center(" PID: 83606 DONE ", 75, '-'),
            format!("{} PID: 83606 DONE {}", "-".repeat(29), "-".repeat(29))
        );
    }

    #[test]
    fn summary_rows_match_pymemtrace_layout() {
        let records = [
            record(0.4, 18477056, 0.1524, 4842),
            record(0.9, 51056640, 0.198, 12716),
        ];
        let text = summary_text(&records);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "#t(s)                 RSS PageFaults/s         User    Mean_CPU%    Inst_CPU% Timestamp                     PID Label"
        );
        assert_eq!(
            lines[2],
            "0.4              18477056      12105.0          0.2        38.1%        38.1% 2026-03-21T13:07:51.567924  83606 # "
        );
        assert!(lines[3].starts_with(
            "0.9              51056640      15748.0          0.2        22.0%         9.1%"
        ));
        assert_eq!(lines.len(), 5);
    }
}
