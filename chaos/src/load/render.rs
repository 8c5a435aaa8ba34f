//! The load report as text, and its plots.

use super::LoadReport;
use crate::report::{self, fmt_ms, fmt_opt, LatencyStats, Recorder};

pub(super) fn write_plots(
    report_path: &std::path::Path,
    recorder: &Recorder,
) -> anyhow::Result<Vec<String>> {
    let stem = report_path.file_stem().map_or_else(
        || "quiver-chaos".into(),
        |s| s.to_string_lossy().into_owned(),
    );
    let dir = report_path.parent().unwrap_or(std::path::Path::new(""));
    let over_time = dir.join(format!("{stem}-latency-over-time.svg"));
    let distribution = dir.join(format!("{stem}-latency-distribution.svg"));
    crate::plot::latency_over_time(&over_time, "latency over time", &recorder.timeline())?;
    crate::plot::latency_distribution(&distribution, "latency distribution", recorder.overall())?;
    Ok(vec![
        over_time.display().to_string(),
        distribution.display().to_string(),
    ])
}

pub fn render(r: &LoadReport) -> String {
    let mut out = format!(
        "\nquiver-chaos load at {}: {} {} clients{}, mix {}, {} vectors × {} ({}), {:.1} s\n\n",
        r.commit,
        r.mode,
        r.clients,
        r.target_rate
            .map_or(String::new(), |t| format!(", target {t:.0}/s")),
        r.mix,
        r.vectors,
        r.dimension,
        r.metric,
        r.duration_s
    );
    let header = [
        "operation",
        "requests",
        "errors",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
    ];
    let row = |name: &str, requests: u64, errors: u64, l: &LatencyStats| {
        vec![
            name.to_owned(),
            requests.to_string(),
            errors.to_string(),
            fmt_ms(l.p50_ms),
            fmt_ms(l.p90_ms),
            fmt_ms(l.p99_ms),
            fmt_ms(l.p999_ms),
            fmt_ms(l.max_ms),
        ]
    };
    let mut rows: Vec<Vec<String>> = r
        .operations
        .iter()
        .map(|(name, s)| row(name, s.requests, s.errors, &s.latency))
        .collect();
    rows.push(row("all", r.requests, r.errors, &r.latency));
    out.push_str(&report::render_table(&header, &rows));
    out.push_str(&format!(
        "\nthroughput {:.0} req/s   ingest {:.0} vectors/s   recall@{} plain {} ({} queries)   filtered {} ({} queries)\n",
        r.throughput_rps,
        r.ingest_vectors_per_s,
        r.top_k,
        fmt_opt(r.recall.plain, 4),
        r.recall.plain_queries,
        fmt_opt(r.recall.filtered, 4),
        r.recall.filtered_queries,
    ));
    if r.errors_by_type.is_empty() {
        out.push_str("errors: none\n");
    } else {
        out.push_str("errors by type:\n");
        for (t, n) in &r.errors_by_type {
            let sample = r.error_samples.get(t).map(String::as_str).unwrap_or("");
            out.push_str(&format!("  {t}: {n}   e.g. {sample}\n"));
        }
    }
    if let Some(rss) = r.server_peak_rss_kib {
        out.push_str(&format!(
            "server peak RSS (VmHWM): {:.1} MiB\n",
            rss as f64 / 1024.0
        ));
    }
    out
}
