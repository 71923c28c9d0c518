//! Pictures of the reports: SVG (no font needed) or PNG (needs a system font through
//! fontconfig), chosen by the file's extension.
//! - [`plot_ppl`]: perplexity against position (log x), one point per bucket;
//! - [`plot_passkey`]: accuracy per (length, depth) as a heatmap, green = retrieved;
//! - [`plot_phonebook`]: accuracy against phone book size;
//! - [`plot_report_file`]: the picture of a saved JSON report (`eval --out`), for reports made
//!   on a machine that could not draw (no fonts) or to redraw them later.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{EvalError, Result};
use crate::passkey::PasskeyReport;
use crate::phonebook::PhonebookReport;
use crate::ppl::PplReport;

const SIZE: (u32, u32) = (900, 560);

fn err(path: &Path) -> impl Fn(Box<dyn std::error::Error>) -> EvalError + '_ {
    move |e| EvalError::io(path, format!("drawing failed: {e}"))
}

/// Runs `draw` on an SVG or PNG drawing area at `path`.
fn with_area(
    path: &Path,
    draw: impl Fn(&DrawingArea<SVGBackend, Shift>) -> Result<(), Box<dyn std::error::Error>>,
    draw_png: impl Fn(&DrawingArea<BitMapBackend, Shift>) -> Result<(), Box<dyn std::error::Error>>,
) -> Result<()> {
    let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase());
    match ext.as_deref() {
        Some("svg") => {
            let area = SVGBackend::new(path, SIZE).into_drawing_area();
            draw(&area).map_err(err(path))?;
            area.present().map_err(|e| EvalError::io(path, e))
        }
        Some("png") => {
            let area = BitMapBackend::new(path, SIZE).into_drawing_area();
            draw_png(&area).map_err(err(path))?;
            area.present().map_err(|e| EvalError::io(path, e))
        }
        _ => Err(EvalError::io(
            path,
            "unknown picture type (use .svg or .png)",
        )),
    }
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw_ppl<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, r: &PplReport) -> DrawResult
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    // One point per bucket, at its geometric middle.
    let points: Vec<(f64, f64)> = r
        .buckets
        .iter()
        .map(|b| {
            (
                ((b.lo as f64) * (b.hi as f64 - 1.0).max(b.lo as f64)).sqrt(),
                b.perplexity,
            )
        })
        .collect();
    let x_max = points.iter().map(|p| p.0).fold(2.0, f64::max) * 1.5;
    let y_max = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption("perplexity by position", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0.8f64..x_max).log_scale(), 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("token position")
        .y_desc("perplexity")
        .draw()?;
    chart.draw_series(LineSeries::new(points.clone(), &BLUE))?;
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;
    Ok(())
}

pub fn plot_ppl(path: &Path, report: &PplReport) -> Result<()> {
    with_area(path, |a| draw_ppl(a, report), |a| draw_ppl(a, report))
}

fn draw_passkey<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, r: &PasskeyReport) -> DrawResult
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    let (nl, nd) = (r.lengths.len(), r.depths.len());
    let lengths = r.lengths.clone();
    let depths = r.depths.clone();
    let mut chart = ChartBuilder::on(area)
        .caption("passkey retrieval accuracy", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..nl as f64, 0f64..nd as f64)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("context length (tokens)")
        .y_desc("depth of the key")
        .x_labels(nl.max(1))
        .y_labels(nd.max(1))
        .x_label_formatter(&|x| {
            lengths
                .get(x.floor() as usize)
                .map(|l| l.to_string())
                .unwrap_or_default()
        })
        .y_label_formatter(&|y| {
            depths
                .get(y.floor() as usize)
                .map(|d| format!("{:.0}%", d * 100.0))
                .unwrap_or_default()
        })
        .draw()?;
    for (i, row) in r.accuracy.iter().enumerate() {
        for (j, &acc) in row.iter().enumerate() {
            // Red (0) to green (1).
            let color = RGBColor((255.0 * (1.0 - acc)) as u8, (200.0 * acc) as u8, 60);
            chart.draw_series(std::iter::once(Rectangle::new(
                [(i as f64, j as f64), (i as f64 + 1.0, j as f64 + 1.0)],
                color.filled(),
            )))?;
        }
    }
    Ok(())
}

pub fn plot_passkey(path: &Path, report: &PasskeyReport) -> Result<()> {
    with_area(
        path,
        |a| draw_passkey(a, report),
        |a| draw_passkey(a, report),
    )
}

fn draw_phonebook<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    r: &PhonebookReport,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    let points: Vec<(f64, f64)> = r
        .sizes
        .iter()
        .map(|s| (s.size as f64, s.accuracy))
        .collect();
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption("phonebook lookup accuracy", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..1.05)?;
    chart
        .configure_mesh()
        .x_desc("entries in the phone book")
        .y_desc("accuracy")
        .draw()?;
    chart.draw_series(LineSeries::new(points.clone(), &BLUE))?;
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;
    Ok(())
}

pub fn plot_phonebook(path: &Path, report: &PhonebookReport) -> Result<()> {
    with_area(
        path,
        |a| draw_phonebook(a, report),
        |a| draw_phonebook(a, report),
    )
}

/// Draws the picture of the JSON report at `report` (written by `eval ppl|passkey|phonebook
/// --out`) into `out`; returns which evaluation it was.
pub fn plot_report_file(report: &Path, out: &Path) -> Result<String> {
    let text = std::fs::read_to_string(report).map_err(|e| EvalError::io(report, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| EvalError::io(report, format!("not JSON: {e}")))?;
    let eval = json["meta"]["eval"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let results = json["results"].clone();
    let bad = |e: serde_json::Error| {
        EvalError::io(
            report,
            format!("not an `eval {eval}` report's results: {e}"),
        )
    };
    match eval.as_str() {
        "ppl" => plot_ppl(out, &serde_json::from_value(results).map_err(bad)?)?,
        "passkey" => plot_passkey(out, &serde_json::from_value(results).map_err(bad)?)?,
        "phonebook" => plot_phonebook(out, &serde_json::from_value(results).map_err(bad)?)?,
        other => {
            return Err(EvalError::io(
                report,
                format!(
                "a report of eval '{other}': pictures exist for ppl, passkey and phonebook reports"
            ),
            ))
        }
    }
    Ok(eval)
}
