//! SVG latency charts: publish→receive latency against percentile, one line per run, the
//! percentile axis spread in "nines" so the tail is visible.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

/// Highest x: a little past 99.99 % (4 nines), where the maximum is drawn.
const MAX_NINES: f64 = 4.3;

/// One line on the chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    /// (percentile 0..=100, latency ms).
    pub points: Vec<(f64, f64)>,
}

/// Percentile → x position: 90 % → 1, 99 % → 2, 99.9 % → 3; 100 % → MAX_NINES.
fn nines(percentile: f64) -> f64 {
    if percentile >= 100.0 {
        MAX_NINES
    } else {
        (-(1.0 - percentile / 100.0).log10()).min(MAX_NINES)
    }
}

fn nines_label(x: &f64) -> String {
    match x.round() as i64 {
        0 => "0%".to_owned(),
        1 => "90%".to_owned(),
        2 => "99%".to_owned(),
        3 => "99.9%".to_owned(),
        4 => "99.99%".to_owned(),
        _ => String::new(),
    }
}

/// A latency label with as many decimals as its size needs.
fn ms_label(ms: &f64) -> String {
    match *ms {
        v if v >= 10.0 => format!("{v:.0}"),
        v if v >= 1.0 => format!("{v:.1}"),
        v if v >= 0.1 => format!("{v:.2}"),
        v => format!("{v:.3}"),
    }
}

/// Draws `series` into an SVG file at `path`.
pub fn draw(path: &Path, title: &str, series: &[Series]) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("chart {}: {e}", path.display());
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.01f64, f64::max)
        * 1.5;
    let y_min = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| *v > 0.0)
        .fold(y_max, f64::min)
        .max(0.001)
        / 1.5;
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..MAX_NINES, (y_min..y_max).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("publish → receive latency (ms)")
        .x_labels(5)
        .x_label_formatter(&nines_label)
        .y_label_formatter(&ms_label)
        .draw()
        .map_err(|e| err(&e))?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points.iter().map(|&(p, ms)| (nines(p), ms.max(y_min))),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Percentiles map to nines and back to labels.
    #[test]
    fn nines_axis() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), MAX_NINES);
        assert_eq!(nines_label(&2.0), "99%");
        assert_eq!(ms_label(&100_000.0), "100000");
        assert_eq!(ms_label(&0.05), "0.050");
    }

    /// A chart with two series is written as SVG.
    #[test]
    fn chart_is_written() {
        let path = std::env::temp_dir().join(format!("sse-load-chart-{}.svg", std::process::id()));
        let series = vec![
            Series {
                label: "a".into(),
                points: vec![(0.0, 1.0), (99.0, 5.0), (100.0, 9.0)],
            },
            Series {
                label: "b".into(),
                points: vec![(0.0, 0.1), (100.0, 0.5)],
            },
        ];
        draw(&path, "t", &series).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    }
}
