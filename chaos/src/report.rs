//! Measurement and reporting: HDR latency histograms per operation and per second of the run,
//! errors by exception type, and the summary structs that become the JSON report and the table.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::exact::RecallSum;

/// Latencies are recorded in microseconds, 1 µs .. 10 min, 3 significant digits.
const HIGHEST_MICROS: u64 = 600_000_000;
/// Longest timeline we keep (one window per second).
pub const MAX_TIMELINE_WINDOWS: usize = 24 * 3600;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, 3).expect("valid histogram bounds")
}

fn micros(latency: Duration) -> u64 {
    (latency.as_micros() as u64).clamp(1, HIGHEST_MICROS)
}

/// How a request failed. Throttling (HTTP 429) is expected under overload and tolerated by the
/// smoke checks; everything else is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `x-amzn-ErrorType` of the answer, or a `Chaos…` name for failures seen by the client.
    pub error_type: String,
    pub status: Option<u16>,
    pub message: String,
}

impl Failure {
    pub fn is_throttling(&self) -> bool {
        self.status == Some(429)
            || matches!(
                self.error_type.as_str(),
                "ThrottlingException" | "TooManyRequestsException"
            )
    }
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyStats {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencyStats {
    pub fn from_histogram(h: &Histogram<u64>) -> LatencyStats {
        if h.is_empty() {
            return LatencyStats::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        LatencyStats {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// One second of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct WindowStats {
    pub second: u64,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OperationStats {
    pub requests: u64,
    pub errors: u64,
    pub latency: LatencyStats,
}

/// Collects every outcome of a run. Successful and failed requests both enter the latency
/// histograms (a failure still cost the client that long).
#[derive(Debug, Clone)]
pub struct Recorder {
    overall: Histogram<u64>,
    per_operation: BTreeMap<&'static str, (Histogram<u64>, u64)>,
    timeline: Vec<(Histogram<u64>, u64)>,
    errors: BTreeMap<String, u64>,
    error_samples: BTreeMap<String, String>,
    throttled: u64,
    failed: u64,
    pub recall_plain: RecallSum,
    pub recall_filtered: RecallSum,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            overall: new_histogram(),
            per_operation: BTreeMap::new(),
            timeline: Vec::new(),
            errors: BTreeMap::new(),
            error_samples: BTreeMap::new(),
            throttled: 0,
            failed: 0,
            recall_plain: RecallSum::default(),
            recall_filtered: RecallSum::default(),
        }
    }
}

impl Recorder {
    /// Records one request that completed `completed_at` after the start of the run.
    pub fn record(
        &mut self,
        operation: &'static str,
        completed_at: Duration,
        latency: Duration,
        failure: Option<&Failure>,
    ) {
        let value = micros(latency);
        self.overall.saturating_record(value);
        let (hist, errors) = self
            .per_operation
            .entry(operation)
            .or_insert_with(|| (new_histogram(), 0));
        hist.saturating_record(value);
        let second = (completed_at.as_secs() as usize).min(MAX_TIMELINE_WINDOWS - 1);
        while self.timeline.len() <= second {
            self.timeline.push((new_histogram(), 0));
        }
        self.timeline[second].0.saturating_record(value);
        if let Some(failure) = failure {
            *errors += 1;
            self.timeline[second].1 += 1;
            *self.errors.entry(failure.error_type.clone()).or_default() += 1;
            self.error_samples
                .entry(failure.error_type.clone())
                .or_insert_with(|| truncate(&failure.message, 300));
            if failure.is_throttling() {
                self.throttled += 1;
            } else {
                self.failed += 1;
            }
        }
    }

    pub fn requests(&self) -> u64 {
        self.overall.len()
    }

    pub fn errors(&self) -> u64 {
        self.throttled + self.failed
    }

    /// Errors other than throttling.
    pub fn non_throttling_errors(&self) -> u64 {
        self.failed
    }

    pub fn overall(&self) -> &Histogram<u64> {
        &self.overall
    }

    pub fn latency(&self) -> LatencyStats {
        LatencyStats::from_histogram(&self.overall)
    }

    pub fn errors_by_type(&self) -> BTreeMap<String, u64> {
        self.errors.clone()
    }

    pub fn error_samples(&self) -> BTreeMap<String, String> {
        self.error_samples.clone()
    }

    pub fn operations(&self) -> BTreeMap<String, OperationStats> {
        self.per_operation
            .iter()
            .map(|(name, (hist, errors))| {
                (
                    (*name).to_owned(),
                    OperationStats {
                        requests: hist.len(),
                        errors: *errors,
                        latency: LatencyStats::from_histogram(hist),
                    },
                )
            })
            .collect()
    }

    pub fn timeline(&self) -> Vec<WindowStats> {
        self.timeline
            .iter()
            .enumerate()
            .map(|(second, (hist, errors))| {
                let stats = LatencyStats::from_histogram(hist);
                WindowStats {
                    second: second as u64,
                    requests: hist.len(),
                    errors: *errors,
                    p50_ms: stats.p50_ms,
                    p99_ms: stats.p99_ms,
                    max_ms: stats.max_ms,
                }
            })
            .collect()
    }

    pub fn merge(&mut self, other: &Recorder) {
        let _ = self.overall.add(&other.overall);
        for (name, (hist, errors)) in &other.per_operation {
            let entry = self
                .per_operation
                .entry(name)
                .or_insert_with(|| (new_histogram(), 0));
            let _ = entry.0.add(hist);
            entry.1 += errors;
        }
        while self.timeline.len() < other.timeline.len() {
            self.timeline.push((new_histogram(), 0));
        }
        for (mine, theirs) in self.timeline.iter_mut().zip(&other.timeline) {
            let _ = mine.0.add(&theirs.0);
            mine.1 += theirs.1;
        }
        for (t, n) in &other.errors {
            *self.errors.entry(t.clone()).or_default() += n;
        }
        for (t, m) in &other.error_samples {
            self.error_samples.entry(t.clone()).or_insert(m.clone());
        }
        self.throttled += other.throttled;
        self.failed += other.failed;
        self.recall_plain.merge(other.recall_plain);
        self.recall_filtered.merge(other.recall_filtered);
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// A plain-text table with right-aligned columns after the first.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (c, cell) in row.iter().enumerate().take(columns) {
            widths[c] = widths[c].max(cell.chars().count());
        }
    }
    let format_row = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c == 0 {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = format_row(header.to_vec());
    out.push('\n');
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (columns - 1)));
    out.push('\n');
    for row in rows {
        out.push_str(&format_row(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

pub fn fmt_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

pub fn fmt_opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// The commit a run measures, for its report: `git describe --always --dirty` of the current
/// directory's repository (a `-dirty` suffix: uncommitted changes were measured), or "unknown"
/// outside a repository.
pub fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Prints a run's table, writes its JSON report to `path`, and lists its failures. Returns
/// whether the run passed.
pub fn publish<R: Serialize>(
    path: &std::path::Path,
    rendered: &str,
    report: &R,
    failures: &[String],
) -> anyhow::Result<bool> {
    use anyhow::Context;
    println!("{rendered}");
    std::fs::write(path, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("report: {}", path.display());
    for failure in failures {
        eprintln!("FAILED: {failure}");
    }
    Ok(failures.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(error_type: &str, status: u16) -> Failure {
        Failure {
            error_type: error_type.into(),
            status: Some(status),
            message: "m".into(),
        }
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut r = Recorder::default();
        for ms in 1..=1000u64 {
            r.record(
                "QueryVectors",
                Duration::from_millis(ms),
                Duration::from_millis(ms),
                None,
            );
        }
        let s = r.latency();
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p90_ms - 900.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_ms - 990.0).abs() < 1.0, "{s:?}");
        assert!((s.max_ms - 1000.0).abs() < 1.0, "{s:?}");
        let timeline = r.timeline();
        assert_eq!(timeline.len(), 2);
        assert_eq!(timeline[0].requests, 999);
        assert_eq!(timeline[1].requests, 1);
    }

    #[test]
    fn errors_are_counted_by_type_and_throttling_is_separate() {
        let mut r = Recorder::default();
        let t = Duration::from_millis(5);
        r.record(
            "PutVectors",
            t,
            t,
            Some(&failure("ThrottlingException", 429)),
        );
        r.record(
            "PutVectors",
            t,
            t,
            Some(&failure("ServiceUnavailableException", 503)),
        );
        r.record(
            "PutVectors",
            t,
            t,
            Some(&failure("ServiceUnavailableException", 503)),
        );
        r.record("GetVectors", t, t, None);
        assert_eq!(r.requests(), 4);
        assert_eq!(r.errors(), 3);
        assert_eq!(r.non_throttling_errors(), 2);
        assert_eq!(r.errors_by_type()["ServiceUnavailableException"], 2);
        let ops = r.operations();
        assert_eq!(ops["PutVectors"].errors, 3);
        assert_eq!(ops["GetVectors"].requests, 1);
        assert_eq!(r.timeline()[0].errors, 3);

        let mut total = Recorder::default();
        total.merge(&r);
        total.merge(&r);
        assert_eq!(total.requests(), 8);
        assert_eq!(total.non_throttling_errors(), 4);
        assert_eq!(total.errors_by_type()["ThrottlingException"], 2);
    }

    #[test]
    fn table_aligns_columns() {
        let table = render_table(
            &["name", "qps"],
            &[
                vec!["faiss".into(), "1000".into()],
                vec!["quiver".into(), "5".into()],
            ],
        );
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "name     qps");
        assert_eq!(lines[2], "faiss   1000");
        assert_eq!(lines[3], "quiver     5");
        assert_eq!(fmt_ms(1.234), "1.23");
        assert_eq!(fmt_ms(123.4), "123");
    }
}
