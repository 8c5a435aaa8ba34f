//! What a chaos run prints and writes: the summary table, the JSON report and an SVG timeline
//! (successful and failed operations per second, fault windows shaded).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;
use serde::Serialize;

use super::checker::{CheckReport, OpCounts};
use super::history::{Fault, Op, Outcome, Phase};

#[derive(Debug, Clone, Serialize)]
pub struct KindSummary {
    pub faults: usize,
    pub ops: OpCounts,
    pub availability: f64,
    pub median_recovery_ms: u64,
    pub max_recovery_ms: u64,
}

/// Availability and recovery per fault kind.
pub fn by_kind(check: &CheckReport) -> BTreeMap<String, KindSummary> {
    let mut grouped: BTreeMap<String, Vec<&super::checker::FaultReport>> = BTreeMap::new();
    for fault in &check.faults {
        grouped.entry(fault.kind.clone()).or_default().push(fault);
    }
    grouped
        .into_iter()
        .map(|(kind, faults)| {
            let mut ops = OpCounts::default();
            for f in &faults {
                ops.ok += f.ops.ok;
                ops.fail += f.ops.fail;
                ops.info += f.ops.info;
            }
            let mut recoveries: Vec<u64> = faults.iter().map(|f| f.recovery_ms).collect();
            recoveries.sort_unstable();
            let summary = KindSummary {
                faults: faults.len(),
                availability: ops.availability(),
                ops,
                median_recovery_ms: recoveries[recoveries.len() / 2],
                max_recovery_ms: recoveries.last().copied().unwrap_or(0),
            };
            (kind, summary)
        })
        .collect()
}

pub fn render(check: &CheckReport, listed_all: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\noperations        ok      fail      info");
    for (kind, counts) in &check.ops {
        let _ = writeln!(
            out,
            "  {kind:<10} {:>8} {:>9} {:>9}",
            counts.ok, counts.fail, counts.info
        );
    }
    let _ = writeln!(
        out,
        "keys written {}, acknowledged {}, deletes acknowledged {}",
        check.keys_written, check.acknowledged_writes, check.acknowledged_deletes
    );
    let _ = writeln!(
        out,
        "\nfault kind                 n  availability  recovery p50 / max"
    );
    for (kind, s) in by_kind(check) {
        let _ = writeln!(
            out,
            "  {kind:<22} {:>3}  {:>11.1}%  {:>7.1} s / {:.1} s",
            s.faults,
            s.availability * 100.0,
            s.median_recovery_ms as f64 / 1000.0,
            s.max_recovery_ms as f64 / 1000.0
        );
    }
    let _ = writeln!(
        out,
        "  {:<22} {:>3}  {:>11.1}%",
        "(no fault in place)",
        "",
        check.availability_without_faults * 100.0
    );
    let _ = writeln!(out, "\nchecks");
    for (name, count) in check.violations() {
        let _ = writeln!(out, "  {name:<14} {count}");
    }
    let _ = writeln!(
        out,
        "  final recall   {} (at least {})",
        check
            .final_recall
            .map_or("n/a (no probes)".to_owned(), |r| format!("{r:.4}")),
        check.min_final_recall
    );
    if !listed_all {
        let _ = writeln!(
            out,
            "  (the final listing did not complete: keys nobody wrote may have gone unseen)"
        );
    }
    for (name, set) in [
        ("lost", &check.lost),
        ("resurrected", &check.resurrected),
        ("phantom", &check.phantom),
        ("stale read", &check.stale_reads),
        ("probe miss", &check.probe_misses),
    ] {
        for v in set.examples.iter().take(5) {
            let op = v.op.map_or(String::new(), |id| format!(" (op {id})"));
            let _ = writeln!(out, "  {name}: {}{op}: {}", v.key, v.detail);
        }
    }
    let _ = writeln!(
        out,
        "\n{}",
        if check.valid {
            "VALID: no violation"
        } else {
            "INVALID"
        }
    );
    out
}

/// Successful and failed (fail + info) workload operations per second of the run.
pub fn per_second(ops: &[Op]) -> Vec<(u64, u64)> {
    let mut seconds: Vec<(u64, u64)> = Vec::new();
    for op in ops.iter().filter(|op| op.phase == Phase::Workload) {
        let s = (op.invoke_ms / 1000) as usize;
        if s >= crate::report::MAX_TIMELINE_WINDOWS {
            continue;
        }
        if seconds.len() <= s {
            seconds.resize(s + 1, (0, 0));
        }
        if op.outcome == Outcome::Ok {
            seconds[s].0 += 1;
        } else {
            seconds[s].1 += 1;
        }
    }
    seconds
}

pub fn timeline_svg(path: &Path, title: &str, ops: &[Op], faults: &[Fault]) -> anyhow::Result<()> {
    let seconds = per_second(ops);
    let root = SVGBackend::new(path, (1200, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let width = seconds.len().max(1) as f64;
    let top = seconds
        .iter()
        .map(|(ok, failed)| (*ok).max(*failed))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..width, 0f64..top)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds since start (shaded: a fault in place)")
        .y_desc("operations per second")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series(faults.iter().map(|f| {
            Rectangle::new(
                [
                    (f.start_ms as f64 / 1000.0, 0.0),
                    ((f.end_ms as f64 / 1000.0).min(width), top),
                ],
                RGBColor(255, 200, 120).mix(0.35).filled(),
            )
        }))
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series(faults.iter().map(|f| {
            Text::new(
                f.kind.clone(),
                (f.start_ms as f64 / 1000.0, top * 0.97),
                ("sans-serif", 11),
            )
        }))
        .map_err(|e| anyhow!("{e}"))?;
    let series = |pick: fn(&(u64, u64)) -> u64| -> Vec<(f64, f64)> {
        seconds
            .iter()
            .enumerate()
            .map(|(s, w)| (s as f64 + 0.5, pick(w) as f64))
            .collect()
    };
    let lines = vec![
        ("ok", BLUE, series(|w| w.0)),
        ("failed or unknown", RED, series(|w| w.1)),
    ];
    crate::plot::draw_lines(&mut chart, lines)?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
