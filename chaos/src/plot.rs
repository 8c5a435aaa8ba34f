//! SVG plots of a run: latency over time (p50/p99/max per second) and the latency distribution
//! (share of requests per log-spaced latency bucket).

use std::path::Path;

use anyhow::anyhow;
use hdrhistogram::Histogram;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::report::WindowStats;

const SIZE: (u32, u32) = (960, 540);

pub fn latency_over_time(path: &Path, title: &str, timeline: &[WindowStats]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let seconds = timeline.len().max(1) as f64;
    let top = timeline.iter().map(|w| w.p99_ms).fold(1.0f64, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..seconds, 0f64..top)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("latency (ms)")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let series = |pick: fn(&WindowStats) -> f64| {
        timeline
            .iter()
            .filter(|w| w.requests > 0)
            .map(move |w| (w.second as f64 + 0.5, pick(w).min(top)))
            .collect::<Vec<_>>()
    };
    let lines = vec![
        ("p50", BLUE, series(|w| w.p50_ms)),
        ("p99", RED, series(|w| w.p99_ms)),
        (
            "max (clipped)",
            RGBColor(160, 160, 160),
            series(|w| w.max_ms),
        ),
    ];
    draw_lines(&mut chart, lines)?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// A named, colored line of `(x, y)` points.
pub type Line<'n> = (&'n str, RGBColor, Vec<(f64, f64)>);

/// Draws each line with a legend entry, then the legend.
pub fn draw_lines<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    lines: Vec<Line<'_>>,
) -> anyhow::Result<()> {
    for (name, color, points) in lines {
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Log-spaced buckets (10 per decade) from 10 µs: `(upper bound ms, share of requests %)`.
pub fn distribution_buckets(hist: &Histogram<u64>) -> Vec<(f64, f64)> {
    if hist.is_empty() {
        return Vec::new();
    }
    let total = hist.len() as f64;
    let mut out = Vec::new();
    let mut lower = 0u64;
    let mut upper_f = 10.0f64;
    let max = hist.max();
    while lower <= max && out.len() < 200 {
        let upper = upper_f.ceil() as u64;
        let count = hist.count_between(lower, upper.saturating_sub(1).max(lower));
        out.push((upper as f64 / 1000.0, 100.0 * count as f64 / total));
        lower = upper;
        upper_f *= 10f64.powf(0.1);
    }
    out
}

pub fn latency_distribution(path: &Path, title: &str, hist: &Histogram<u64>) -> anyhow::Result<()> {
    let buckets = distribution_buckets(hist);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let x_max = buckets.last().map_or(1.0, |b| b.0).max(0.1);
    let y_max = buckets.iter().map(|b| b.1).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0.01f64..x_max).log_scale(), 0f64..y_max)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("% of requests")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series(LineSeries::new(
            buckets.iter().map(|&(x, y)| (x.max(0.01), y)),
            BLUE.stroke_width(2),
        ))
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::new_histogram;

    #[test]
    fn buckets_cover_every_request_and_plots_render() {
        let mut h = new_histogram();
        for v in [50u64, 120, 800, 800, 5_000, 90_000] {
            h.record(v).unwrap();
        }
        let buckets = distribution_buckets(&h);
        let share: f64 = buckets.iter().map(|b| b.1).sum();
        assert!((share - 100.0).abs() < 1e-6, "{share}");
        let dir = tempfile::tempdir().unwrap();
        let timeline = vec![
            WindowStats {
                second: 0,
                requests: 3,
                errors: 0,
                p50_ms: 1.0,
                p99_ms: 4.0,
                max_ms: 5.0,
            },
            WindowStats {
                second: 1,
                requests: 3,
                errors: 1,
                p50_ms: 2.0,
                p99_ms: 6.0,
                max_ms: 90.0,
            },
        ];
        latency_over_time(&dir.path().join("t.svg"), "t", &timeline).unwrap();
        latency_distribution(&dir.path().join("d.svg"), "d", &h).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("d.svg")).unwrap();
        assert!(svg.starts_with("<svg"));
    }
}
