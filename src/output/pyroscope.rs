//! Pushes to a Pyroscope server's `POST /ingest` endpoint: every `interval` the samples of the
//! window that just ended become a pprof profile (see [`super::pprof`]; its `rss` is the growth
//! the window kept at its sustained peak, every other metric what the window charged), sent as
//! `multipart/form-data` (`profile`, plus a `sample_type_config` naming each sample type's
//! units and `sum` aggregation) with the documented query parameters `name`, `from`, `until`,
//! `format=pprof`, `sampleRate`, `spyName`, `units` and `aggregationType`. Pushes run on a
//! background thread with a timeout; a failed push is a warning on stderr, never an error of
//! the run.
//!
//! Owns: the ingest request, windowing of samples, the upload thread.
//! Must not touch: sampling, or the run's own outputs.

use super::pprof::{self, PprofOptions};
use crate::profile::{Profile, TargetInfo};
use crate::sample::{Metric, ProcessIdentity, Sample, Unit};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `spyName` pushes carry.
pub const SPY_NAME: &str = "pymemtrace";

/// How long one push may take before it is abandoned.
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Windows waiting for the upload thread; more are dropped (and said so).
const QUEUE: usize = 4;

/// Why pushing is impossible or failed.
#[derive(Debug, thiserror::Error)]
pub enum PyroscopeError {
    /// The server URL is not an http(s) URL.
    #[error("--pyroscope {0:?} is not a server URL: give http://HOST:PORT (or https://…)")]
    BadUrl(String),
    /// The application name is empty.
    #[error("--app must name the application (e.g. myapp or myapp{{env=prod}})")]
    NoApp,
    /// The upload interval is not a positive number of seconds.
    #[error("--upload-interval must be a positive number of seconds, not {0}")]
    BadInterval(f64),
    /// The profile could not be encoded.
    #[error("cannot encode the profile: {0}")]
    Encode(#[from] std::io::Error),
    /// The request failed or the server refused it.
    #[error("{0}")]
    Http(#[from] ureq::Error),
}

/// Where and how to push.
#[derive(Debug, Clone, PartialEq)]
pub struct PyroscopeConfig {
    /// The ingest endpoint: the server URL with `/ingest`.
    pub ingest_url: String,
    /// The application name (`name`), labels in braces allowed.
    pub app: String,
    /// Seconds between pushes.
    pub interval: Duration,
    /// The sampling rate (`sampleRate`).
    pub rate_hz: f64,
    /// The metric whose unit is `units` and that is the profile's default sample type.
    pub metric: Metric,
}

impl PyroscopeConfig {
    /// Checks the command line's values: `server` is `http(s)://HOST[:PORT][/PATH]`, to which
    /// `/ingest` is added unless it already ends so.
    pub fn new(
        server: &str,
        app: &str,
        interval_s: f64,
        rate_hz: f64,
        metric: Metric,
    ) -> Result<PyroscopeConfig, PyroscopeError> {
        let trimmed = server.trim().trim_end_matches('/');
        let host = trimmed
            .strip_prefix("http://")
            .or_else(|| trimmed.strip_prefix("https://"));
        if host.is_none_or(|h| h.is_empty() || h.contains(char::is_whitespace)) {
            return Err(PyroscopeError::BadUrl(server.to_string()));
        }
        if app.trim().is_empty() {
            return Err(PyroscopeError::NoApp);
        }
        if !(interval_s.is_finite() && interval_s > 0.0) {
            return Err(PyroscopeError::BadInterval(interval_s));
        }
        let ingest_url = if trimmed.ends_with("/ingest") {
            trimmed.to_string()
        } else {
            format!("{trimmed}/ingest")
        };
        Ok(PyroscopeConfig {
            ingest_url,
            app: app.trim().to_string(),
            interval: Duration::from_secs_f64(interval_s),
            rate_hz,
            metric,
        })
    }
}

/// One ready-to-send push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestRequest {
    /// The query parameters, in order.
    pub query: Vec<(String, String)>,
    /// `multipart/form-data; boundary=…`.
    pub content_type: String,
    /// The form.
    pub body: Vec<u8>,
}

/// Pyroscope's unit name for a metric (`sample_type_config` supports samples, objects, bytes).
fn pyroscope_units(metric: Metric) -> &'static str {
    match metric.unit() {
        Unit::Bytes => "bytes",
        Unit::Calls | Unit::Objects => "objects",
        Unit::Samples => "samples",
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The `sample_type_config` form field: per sample type, its units, `sum` aggregation, a
/// display name, and `sampled: false` (values are what was measured, not to be scaled).
fn sample_type_config(metrics: &[Metric]) -> String {
    let config: serde_json::Map<String, serde_json::Value> = metrics
        .iter()
        .map(|&m| {
            let units = pyroscope_units(m);
            let value = serde_json::json!({
                "units": units,
                "aggregation": "sum",
                "display-name": format!("{}_{units}", m.name().replace('-', "_")),
                "sampled": false,
            });
            (m.name().to_string(), value)
        })
        .collect();
    serde_json::Value::Object(config).to_string()
}

/// A form-data boundary that occurs in none of `parts`.
fn boundary(parts: &[&[u8]]) -> String {
    let mut counter = 0u64;
    loop {
        let candidate = format!("pymemtrace-boundary-{counter:016x}");
        let needle = candidate.as_bytes();
        if !parts
            .iter()
            .any(|p| p.windows(needle.len()).any(|w| w == needle))
        {
            return candidate;
        }
        counter += 1;
    }
}

/// The push of `profile` (samples gathered from `from` to `until`).
pub fn ingest_request(
    profile: &Profile,
    config: &PyroscopeConfig,
    from: SystemTime,
    until: SystemTime,
) -> Result<IngestRequest, PyroscopeError> {
    let options = PprofOptions {
        default_metric: config.metric,
        start: Some(from),
        duration: until.duration_since(from).ok(),
        rate_hz: Some(config.rate_hz),
    };
    let pprof = pprof::encode_gzipped(profile, &options)?;
    let stc = sample_type_config(&pprof::sample_metrics(profile, config.metric));
    let boundary = boundary(&[&pprof, stc.as_bytes()]);
    let mut body = Vec::with_capacity(pprof.len() + stc.len() + 512);
    for (field, filename, content_type, content) in [
        (
            "profile",
            "profile.pprof",
            "application/octet-stream",
            pprof.as_slice(),
        ),
        (
            "sample_type_config",
            "sample_type_config.json",
            "application/json",
            stc.as_bytes(),
        ),
    ] {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; \
                 filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let from_s = unix_seconds(from);
    let until_s = unix_seconds(until).max(from_s);
    let query = vec![
        ("name".to_string(), config.app.clone()),
        ("from".to_string(), from_s.to_string()),
        ("until".to_string(), until_s.to_string()),
        ("format".to_string(), "pprof".to_string()),
        (
            "sampleRate".to_string(),
            format!("{}", config.rate_hz.round().max(1.0) as u64),
        ),
        ("spyName".to_string(), SPY_NAME.to_string()),
        (
            "units".to_string(),
            pyroscope_units(config.metric).to_string(),
        ),
        ("aggregationType".to_string(), "sum".to_string()),
    ];
    Ok(IngestRequest {
        query,
        content_type: format!("multipart/form-data; boundary={boundary}"),
        body,
    })
}

/// Sends one push; any status other than 2xx is an error.
pub fn push(agent: &ureq::Agent, url: &str, request: &IngestRequest) -> Result<(), PyroscopeError> {
    agent
        .post(url)
        .query_pairs(request.query.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .header("Content-Type", &request.content_type)
        .send(request.body.as_slice())?;
    Ok(())
}

/// What the pushes of a run came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadStats {
    /// Pushes the server accepted.
    pub sent: u64,
    /// Pushes that failed.
    pub failed: u64,
    /// Windows dropped because earlier pushes were still pending.
    pub dropped: u64,
}

/// One window's samples, on their way to the upload thread.
struct Window {
    profile: Profile,
    from: SystemTime,
    until: SystemTime,
}

/// Gathers samples into windows of [`PyroscopeConfig::interval`]; a background thread encodes
/// and pushes each window, so sampling never waits for the network.
pub struct Uploader {
    config: PyroscopeConfig,
    target: TargetInfo,
    /// Wall-clock time of sample time zero.
    origin: SystemTime,
    window: Profile,
    window_start: Duration,
    window_samples: u64,
    sender: Option<SyncSender<Window>>,
    worker: Option<JoinHandle<UploadStats>>,
    dropped: u64,
}

impl Uploader {
    /// Starts the upload thread. Sample times are taken as offsets from now.
    pub fn start(config: PyroscopeConfig, target: TargetInfo) -> Uploader {
        let (sender, receiver) = sync_channel(QUEUE);
        let worker_config = config.clone();
        let worker = std::thread::Builder::new()
            .name("pyroscope-push".to_string())
            .spawn(move || upload_loop(&worker_config, &receiver))
            .ok();
        if worker.is_none() {
            eprintln!(
                "pmt-sample: warning: cannot start the Pyroscope upload thread: nothing will be pushed"
            );
        }
        Uploader {
            window: Profile::new(target.clone(), false),
            config,
            target,
            origin: SystemTime::now(),
            window_start: Duration::ZERO,
            window_samples: 0,
            sender: worker.as_ref().map(|_| sender),
            worker,
            dropped: 0,
        }
    }

    /// Adds a sample; pushes the window when it has lasted the interval.
    pub fn record(&mut self, sample: &Sample) {
        let time = sample.time;
        self.window.add(sample.clone());
        self.window_samples += 1;
        if time.saturating_sub(self.window_start) >= self.config.interval {
            self.flush(time);
        }
    }

    /// Adds a sample of one of several processes (`--subprocesses`); pushes the window when
    /// it has lasted the interval.
    pub fn record_process(&mut self, process: &ProcessIdentity, sample: &Sample) {
        let time = sample.time;
        self.window.add_process_sample(process, sample.clone());
        self.window_samples += 1;
        if time.saturating_sub(self.window_start) >= self.config.interval {
            self.flush(time);
        }
    }

    /// Sends the current window (ending at sample time `end`) and starts the next.
    fn flush(&mut self, end: Duration) {
        let window = std::mem::replace(&mut self.window, Profile::new(self.target.clone(), false));
        let from = self.origin + self.window_start;
        let until = self.origin + end;
        self.window_start = end;
        self.window_samples = 0;
        let Some(sender) = &self.sender else {
            return;
        };
        let window = Window {
            profile: window,
            from,
            until,
        };
        match sender.try_send(window) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped += 1;
                eprintln!(
                    "pmt-sample: warning: Pyroscope pushes are falling behind: dropped the window ending {} s into the run",
                    end.as_secs()
                );
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Pushes what is left and waits for the pending pushes (each bounded by a timeout).
    pub fn finish(mut self, end: Duration) -> UploadStats {
        if self.window_samples > 0 {
            self.flush(end.max(self.window_start));
        }
        self.sender = None;
        let mut stats = self
            .worker
            .take()
            .and_then(|worker| worker.join().ok())
            .unwrap_or_default();
        stats.dropped = self.dropped;
        stats
    }

    /// The ingest URL pushes go to.
    pub fn url(&self) -> &str {
        &self.config.ingest_url
    }
}

/// The upload thread: encodes and sends each window, warns about failures.
fn upload_loop(config: &PyroscopeConfig, windows: &Receiver<Window>) -> UploadStats {
    let url = config.ingest_url.as_str();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(PUSH_TIMEOUT))
        .http_status_as_error(true)
        .build()
        .into();
    let mut stats = UploadStats::default();
    while let Ok(window) = windows.recv() {
        let result = ingest_request(&window.profile, config, window.from, window.until)
            .and_then(|request| push(&agent, url, &request));
        match result {
            Ok(()) => stats.sent += 1,
            Err(err) => {
                stats.failed += 1;
                eprintln!(
                    "pmt-sample: warning: push to Pyroscope {url} failed: {err} (local outputs are not affected)"
                );
            }
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::test_support::two_thread_profile;

    fn config() -> PyroscopeConfig {
        PyroscopeConfig::new(
            "http://127.0.0.1:4040/",
            "myapp{env=ci}",
            10.0,
            100.0,
            Metric::Rss,
        )
        .expect("config")
    }

    #[test]
    fn urls_and_options_are_checked() {
        assert_eq!(config().ingest_url, "http://127.0.0.1:4040/ingest");
        let given = PyroscopeConfig::new("https://p.example/ingest", "a", 1.0, 100.0, Metric::Cpu)
            .expect("config");
        assert_eq!(given.ingest_url, "https://p.example/ingest");
        for bad in ["localhost:4040", "ftp://x", "http://", ""] {
            assert!(
                matches!(
                    PyroscopeConfig::new(bad, "a", 1.0, 100.0, Metric::Rss),
                    Err(PyroscopeError::BadUrl(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            PyroscopeConfig::new("http://h", " ", 1.0, 100.0, Metric::Rss),
            Err(PyroscopeError::NoApp)
        ));
        assert!(matches!(
            PyroscopeConfig::new("http://h", "a", 0.0, 100.0, Metric::Rss),
            Err(PyroscopeError::BadInterval(_))
        ));
    }

    #[test]
    fn the_request_carries_every_documented_parameter_and_a_form() {
        let from = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let until = from + Duration::from_secs(10);
        let request =
            ingest_request(&two_thread_profile(), &config(), from, until).expect("request");
        let query: std::collections::HashMap<&str, &str> = request
            .query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(query["name"], "myapp{env=ci}");
        assert_eq!(query["from"], "1700000000");
        assert_eq!(query["until"], "1700000010");
        assert_eq!(query["format"], "pprof");
        assert_eq!(query["sampleRate"], "100");
        assert_eq!(query["spyName"], "pymemtrace");
        assert_eq!(query["units"], "bytes");
        let boundary = request
            .content_type
            .strip_prefix("multipart/form-data; boundary=")
            .expect("multipart");
        let body = String::from_utf8_lossy(&request.body);
        assert!(body.starts_with(&format!("--{boundary}\r\n")));
        assert!(body.ends_with(&format!("--{boundary}--\r\n")));
        assert!(body.contains("name=\"profile\""));
        assert!(body.contains("\"rss\":{\"aggregation\":\"sum\""), "{body}");
    }
}
