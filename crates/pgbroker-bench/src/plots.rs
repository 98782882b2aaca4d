//! SVG plots for the report, drawn with plotters.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e}")
}

fn finite_max(values: impl Iterator<Item = f64>) -> f64 {
    values.filter(|v| v.is_finite()).fold(0.0, f64::max)
}

/// Grouped bars: one group per system, one bar per series (e.g. write and
/// read rates), system names under the groups.
pub fn bars(path: &Path, title: &str, y_label: &str, systems: &[String], series: &[(&str, Vec<f64>)]) -> Result<()> {
    let root = SVGBackend::new(path, (820, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let top = finite_max(series.iter().flat_map(|(_, v)| v.iter().copied())).max(1.0) * 1.15;
    let n = systems.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..n as f64, -top * 0.08..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(y_label)
        .y_label_formatter(&|y| if *y < 0.0 { String::new() } else { format!("{y:.0}") })
        .draw()
        .map_err(err)?;
    let width = 0.8 / series.len().max(1) as f64;
    for (k, (name, values)) in series.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        chart
            .draw_series(values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, v)| {
                let x0 = i as f64 + 0.1 + width * k as f64;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.95, *v)], color.filled())
            }))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .draw_series(
            systems
                .iter()
                .enumerate()
                .map(|(i, s)| Text::new(s.clone(), (i as f64 + 0.12, -top * 0.03), ("sans-serif", 14))),
        )
        .map_err(err)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Lines on log-scale y: one per name, over labelled x positions 0, 1, ...
pub fn lines(path: &Path, title: &str, y_label: &str, x_names: &[&str], lines: &[(String, Vec<f64>)]) -> Result<()> {
    let root = SVGBackend::new(path, (820, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let top = finite_max(lines.iter().flat_map(|(_, v)| v.iter().copied())).max(1.0) * 2.0;
    let last = x_names.len().saturating_sub(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.2f64..last + 0.2, (0.05f64..top).log_scale())
        .map_err(err)?;
    let names: Vec<String> = x_names.iter().map(|s| (*s).to_string()).collect();
    chart
        .configure_mesh()
        .x_labels(x_names.len() * 5)
        .x_label_formatter(&|x| {
            (0..names.len())
                .find(|k| (*k as f64 - x).abs() < 1e-6)
                .map(|k| names[k].clone())
                .unwrap_or_default()
        })
        .y_desc(y_label)
        .draw()
        .map_err(err)?;
    let series = lines
        .iter()
        .map(|(name, values)| {
            let points = values.iter().enumerate().map(|(i, v)| (i as f64, *v)).collect();
            (name.as_str(), points)
        })
        .collect();
    draw_lines(&mut chart, series)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Lines over a numeric x axis (rate or time), y on a log scale.
pub fn xy(path: &Path, title: &str, x_label: &str, y_label: &str, lines: &[(String, Vec<(f64, f64)>)]) -> Result<()> {
    let root = SVGBackend::new(path, (820, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let xs = || lines.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x));
    let ys = || lines.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y));
    let (x_top, y_top) = (finite_max(xs()).max(1.0) * 1.05, finite_max(ys()).max(1.0));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_top, (0.05f64..y_top * 2.0).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(err)?;
    let series = lines
        .iter()
        .map(|(name, points)| (name.as_str(), points.clone()))
        .collect();
    draw_lines(&mut chart, series)?;
    root.present().map_err(err)?;
    Ok(())
}

/// A chart with f64 x (linear or log scale) and log-scale f64 y.
type LogChart<'a, 'b, X> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, LogCoord<f64>>>;

/// Draws each named line with its points marked (points that cannot be
/// shown on a log scale are left out), then the legend.
fn draw_lines<'a, 'b: 'a, X: Ranged<ValueType = f64>>(
    chart: &mut LogChart<'a, 'b, X>,
    lines: Vec<(&str, Vec<(f64, f64)>)>,
) -> Result<()> {
    for (k, (name, points)) in lines.into_iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        let points: Vec<(f64, f64)> = points
            .into_iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite() && *y > 0.0)
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        chart
            .draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(err)?;
    Ok(())
}

/// Lines with both axes on a log scale (a knob swept over orders of
/// magnitude); points that cannot be shown on a log scale are left out.
pub fn loglog(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let root = SVGBackend::new(path, (820, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let shown = |(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && *x > 0.0 && *y > 0.0;
    let all: Vec<(f64, f64)> = lines
        .iter()
        .flat_map(|(_, p)| p.iter().copied())
        .filter(shown)
        .collect();
    let range = |v: Vec<f64>| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        if lo.is_finite() && hi > 0.0 {
            (lo / 2.0, hi * 2.0)
        } else {
            (0.1, 10.0)
        }
    };
    let (x0, x1) = range(all.iter().map(|p| p.0).collect());
    let (y0, y1) = range(all.iter().map(|p| p.1).collect());
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
        .map_err(err)?;
    let short = |v: &f64| {
        if *v >= 1.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        }
    };
    chart
        .configure_mesh()
        .x_label_formatter(&short)
        .y_label_formatter(&short)
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(err)?;
    let series = lines
        .iter()
        .map(|(name, points)| (name.as_str(), points.iter().copied().filter(shown).collect()))
        .collect();
    draw_lines(&mut chart, series)?;
    root.present().map_err(err)?;
    Ok(())
}
