//! `shmkit bench --plot FILE.svg`: every group as a horizontal bar chart, shmkit's rows in
//! blue, the reference in dark grey, the other peers in light grey, each bar labelled with
//! its figure and ratio. A group whose figures span more than 30× is drawn on a log scale.

use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, SegmentValue, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use shmkit::bench::suite::GroupResult;

use crate::bench_cmd::{better_word, num};

const SHMKIT: RGBColor = RGBColor(31, 119, 180);
const REFERENCE: RGBColor = RGBColor(90, 90, 90);
const PEER: RGBColor = RGBColor(170, 170, 170);
const COLUMNS: usize = 2;
const PANEL_WIDTH: u32 = 640;
const ROW_HEIGHT: u32 = 26;

/// Draws `results` into an SVG at `path`.
pub fn draw(path: &Path, title: &str, results: &[GroupResult]) -> Result<(), String> {
    let max_rows =
        results.iter().map(|g| g.rows.iter().filter(|r| r.median().is_some()).count()).max().unwrap_or(1);
    let panel_height = 90 + ROW_HEIGHT * max_rows.max(1) as u32;
    let grid_rows = results.len().div_ceil(COLUMNS).max(1);
    let size = (PANEL_WIDTH * COLUMNS as u32, 40 + panel_height * grid_rows as u32);
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let body = root.titled(title, ("sans-serif", 16)).map_err(|e| e.to_string())?;
    let panels = body.split_evenly((grid_rows, COLUMNS));
    for (g, area) in results.iter().zip(panels.iter()) {
        let values: Vec<f64> = g.rows.iter().filter_map(|r| r.median()).filter(|v| *v > 0.0).collect();
        let (lo, hi) = values.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if values.is_empty() {
            continue;
        }
        if hi / lo > 30.0 {
            panel(area, g, (lo / 2.0..hi * 4.0).log_scale())?;
        } else {
            panel(area, g, 0.0..hi * 1.35)?;
        }
    }
    root.present().map_err(|e| e.to_string())
}

/// One group's chart in `area`, its x axis `x`.
fn panel<X>(area: &DrawingArea<SVGBackend<'_>, Shift>, g: &GroupResult, x: X) -> Result<(), String>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let rows: Vec<_> = g.rows.iter().filter_map(|r| r.median().map(|m| (r, m))).collect();
    let n = rows.len() as i32;
    let reference = g.reference().map(|(name, _)| name);
    let caption = format!("{} ({}, {})", g.info.group, g.info.unit, better_word(g.info.better));
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(150)
        // n segments, one per row: the i32 range is inclusive.
        .build_cartesian_2d(x, (0..n - 1).into_segmented())
        .map_err(|e| e.to_string())?;
    // Row i is drawn in segment n - 1 - i: the first row (shmkit's) at the top.
    let slot = |i: usize| n - 1 - i as i32;
    let names: Vec<&str> = rows.iter().rev().map(|(r, _)| r.name).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(rows.len().max(1))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                usize::try_from(*i).ok().and_then(|i| names.get(i)).map_or(String::new(), |s| (*s).to_owned())
            }
            SegmentValue::Last => String::new(),
        })
        .x_labels(5)
        .x_label_formatter(&|v| num(*v))
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(|e| e.to_string())?;
    let floor = chart.x_range().start;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, (r, v))| {
            let color = if r.is_shmkit() {
                SHMKIT
            } else if Some(r.name) == reference {
                REFERENCE
            } else {
                PEER
            };
            let i = slot(i);
            let mut bar = Rectangle::new(
                [(floor, SegmentValue::Exact(i)), (*v, SegmentValue::Exact(i + 1))],
                color.filled(),
            );
            bar.set_margin(3, 3, 0, 0);
            bar
        }))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, (_, v))| {
            let label = match g.ratio(*v) {
                Some(q) => format!(" {}  ({q:.2}x)", num(*v)),
                None => format!(" {}", num(*v)),
            };
            Text::new(label, (*v, SegmentValue::CenterOf(slot(i))), ("sans-serif", 11))
        }))
        .map_err(|e| e.to_string())?;
    Ok(())
}
