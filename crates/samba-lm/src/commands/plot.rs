//! `samba-lm plot RUN`: the training loss and the validation curves of a run, from its
//! `metrics.jsonl`, as SVG (no font needed) or PNG (needs a system font through fontconfig).
//!
//! Left: training loss per step and validation loss at each length (nats per token).
//! Right: validation perplexity at 1x, 2x and 4x the training length.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use plotters::coord::Shift;
use plotters::prelude::*;
use samba_train::metrics::{read_metrics, Record, METRICS_FILE};

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// The run folder `samba-lm train --out` wrote (holding metrics.jsonl).
    #[arg(value_name = "RUN_DIR")]
    pub run: PathBuf,
    /// The picture to write, .svg or .png (default: RUN_DIR/curves.svg).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Width and height in pixels.
    #[arg(long, default_value_t = 1200)]
    pub width: u32,
    #[arg(long, default_value_t = 500)]
    pub height: u32,
}

/// The curves of a run: training loss, and per validation length (seq_len, [(step, loss)]).
struct Curves {
    train: Vec<(f64, f64)>,
    val: Vec<(usize, Vec<(f64, f64)>)>,
}

fn curves(records: &[Record]) -> Curves {
    let mut train = Vec::new();
    let mut val: Vec<(usize, Vec<(f64, f64)>)> = Vec::new();
    for r in records {
        match r {
            Record::Train { step, loss, .. } => train.push((*step as f64, *loss)),
            Record::Val { step, results } => {
                for res in results {
                    let at = match val.iter().position(|(len, _)| *len == res.seq_len) {
                        Some(i) => i,
                        None => {
                            val.push((res.seq_len, Vec::new()));
                            val.len() - 1
                        }
                    };
                    val[at].1.push((*step as f64, res.loss));
                }
            }
            Record::Skipped { .. } => {}
        }
    }
    val.sort_by_key(|(len, _)| *len);
    Curves { train, val }
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-3);
    (lo - pad, hi + pad)
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &Curves, title: &str) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing failed: {e:?}");
    root.fill(&WHITE).map_err(e)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(e)?;
    let panels = if c.val.is_empty() {
        vec![root]
    } else {
        let (a, b) = root.split_horizontally(root.dim_in_pixel().0 / 2);
        vec![a, b]
    };
    let last_step = c
        .train
        .iter()
        .chain(c.val.iter().flat_map(|(_, v)| v))
        .map(|p| p.0)
        .fold(1.0, f64::max);
    let palette = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN];

    // Loss panel.
    let (lo, hi) = range(
        c.train
            .iter()
            .chain(c.val.iter().flat_map(|(_, v)| v))
            .map(|p| p.1),
    );
    let mut chart = ChartBuilder::on(&panels[0])
        .caption("loss (nats per token)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..last_step, lo..hi)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(e)?;
    chart
        .draw_series(LineSeries::new(c.train.iter().copied(), BLACK.mix(0.6)))
        .map_err(e)?
        .label("train")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    for (i, (len, points)) in c.val.iter().enumerate() {
        let color = palette[i % palette.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(e)?
            .label(format!("validation @ {len}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;

    // Perplexity panel.
    if let Some(panel) = panels.get(1) {
        let (lo, hi) = range(c.val.iter().flat_map(|(_, v)| v).map(|p| p.1.exp()));
        let mut chart = ChartBuilder::on(panel)
            .caption(
                "validation perplexity by length (tokens)",
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..last_step, lo.max(0.0)..hi)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(e)?;
        for (i, (len, points)) in c.val.iter().enumerate() {
            let color = palette[i % palette.len()];
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|&(s, l)| (s, l.exp())),
                    color.stroke_width(2),
                ))
                .map_err(e)?
                .label(format!("{len}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&(s, l)| Circle::new((s, l.exp()), 3, color.filled())),
                )
                .map_err(e)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
    }
    panels[0].present().map_err(e)?;
    Ok(())
}

pub fn run(args: PlotArgs) -> Result<()> {
    let metrics = args.run.join(METRICS_FILE);
    if !metrics.is_file() {
        bail!(
            "{}: no such file; RUN_DIR must be a folder that `samba-lm train --out` wrote",
            metrics.display()
        );
    }
    let records = read_metrics(&metrics)?;
    let c = curves(&records);
    if c.train.is_empty() && c.val.is_empty() {
        bail!(
            "{}: no training or validation records yet",
            metrics.display()
        );
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.run.join("curves.svg"));
    let title = format!("{}", args.run.display());
    let size = (args.width, args.height);
    match extension(&out).as_deref() {
        Some("svg") => draw(SVGBackend::new(&out, size).into_drawing_area(), &c, &title)?,
        Some("png") => draw(
            BitMapBackend::new(&out, size).into_drawing_area(),
            &c,
            &title,
        )
        .context("drawing a PNG needs a system font (fontconfig); write .svg instead")?,
        _ => bail!("--out {}: write a .svg or a .png file", out.display()),
    }
    println!(
        "wrote {} ({} training steps, {} validation lengths)",
        out.display(),
        c.train.len(),
        c.val.len()
    );
    Ok(())
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
}
