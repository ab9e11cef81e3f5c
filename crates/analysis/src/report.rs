//! The HTML report of a backtest: one self-contained file (inline CSS and
//! inline SVG charts drawn with plotters; no script, no network) that an
//! analyst can mail around or attach to a ticket.
//!
//! Charts: ROC curve, cumulative gain with the lift at the top shares,
//! calibration, score distribution by label, and mean points by factor.

use std::fmt::Write as _;

use plotters::prelude::*;

use super::backtest::{Backtest, BacktestSummary};
use super::metrics::{gain_points, roc_points};

/// Why a report could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// plotters failed to draw a chart.
    #[error("drawing chart {chart}: {message}")]
    Draw {
        /// Which chart.
        chart: &'static str,
        /// plotters' error.
        message: String,
    },
}

const CHURNED: RGBColor = RGBColor(214, 39, 40);
const RETAINED: RGBColor = RGBColor(31, 119, 180);
const REFERENCE: RGBColor = RGBColor(150, 150, 150);
const WIDTH: u32 = 960;
const HEIGHT: u32 = 480;

fn draw_err<E: std::fmt::Debug>(chart: &'static str) -> impl Fn(E) -> ReportError {
    move |e| ReportError::Draw {
        chart,
        message: format!("{e:?}"),
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".to_string(), |v| format!("{v:.digits$}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or("n/a".to_string(), |v| format!("{:.2}%", v * 100.0))
}

/// Drops curve points closer than `step` (in both coordinates) to the last
/// point kept, keeping the ends: a curve of 200,000 customers would otherwise
/// put 200,000 points into the SVG for a few hundred pixels.
fn thin(points: Vec<(f64, f64)>, step: f64) -> Vec<(f64, f64)> {
    let mut kept: Vec<(f64, f64)> = Vec::with_capacity(points.len().min(4096));
    let last = points.last().copied();
    for p in points {
        match kept.last() {
            Some(k) if (p.0 - k.0).abs() < step && (p.1 - k.1).abs() < step => {}
            _ => kept.push(p),
        }
    }
    if let Some(l) = last
        && kept.last() != Some(&l)
    {
        kept.push(l);
    }
    kept
}

/// Draws the ROC curve.
fn roc_svg(backtest: &Backtest) -> Result<String, ReportError> {
    let err = draw_err("roc");
    let points = thin(roc_points(&backtest.groups()), 1e-3);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let title = format!("ROC curve (AUC {})", opt(backtest.summary.roc_auc, 3));
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_desc("false-positive rate (retained customers flagged)")
            .y_desc("true-positive rate (churners flagged)")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(&err)?;
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                REFERENCE.stroke_width(1),
            ))
            .map_err(&err)?
            .label("random")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], REFERENCE));
        chart
            .draw_series(LineSeries::new(points, CHURNED.stroke_width(2)))
            .map_err(&err)?
            .label("model")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], CHURNED.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(REFERENCE)
            .draw()
            .map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

/// Draws precision, recall and monthly alert volume against the at-risk
/// threshold (from the month before the cutoff), with the model's threshold.
fn thresholds_svg(summary: &BacktestSummary) -> Result<String, ReportError> {
    let err = draw_err("thresholds");
    let table = &summary.thresholds.table;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Alerts by at-risk threshold (month before the cutoff)",
                ("sans-serif", 22),
            )
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..100.0, 0.0..1.0)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_desc("at-risk threshold")
            .y_desc("share")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(&err)?;
        let line = |f: &dyn Fn(&super::alerts::ThresholdRow) -> Option<f64>| -> Vec<(f64, f64)> {
            table
                .iter()
                .filter_map(|r| f(r).map(|v| (r.threshold, v)))
                .collect()
        };
        let at = summary.alerts.threshold;
        chart
            .draw_series(LineSeries::new(
                [(at, 0.0), (at, 1.0)],
                REFERENCE.stroke_width(1),
            ))
            .map_err(&err)?
            .label(format!("model's threshold ({at})"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], REFERENCE));
        for (name, color, values) in [
            ("precision", CHURNED, line(&|r| r.precision)),
            ("recall", RETAINED, line(&|r| r.recall)),
            ("alerted per 30 days", BLACK, line(&|r| Some(r.rate))),
        ] {
            chart
                .draw_series(LineSeries::new(values, color.stroke_width(2)))
                .map_err(&err)?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(REFERENCE)
            .draw()
            .map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

/// Draws the cumulative gain curve, marking the lift at the top shares.
fn gain_svg(backtest: &Backtest) -> Result<String, ReportError> {
    let err = draw_err("gain");
    let points = thin(gain_points(&backtest.groups()), 1e-3);
    let s = &backtest.summary;
    let base_rate = s.base_rate.unwrap_or(0.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let lift10 = s.top.iter().find(|t| t.percent == 10).and_then(|t| t.lift);
        let title = format!("Cumulative gain (lift at top 10% = {})", opt(lift10, 2));
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_desc("share of customers contacted, highest risk first")
            .y_desc("share of churners reached")
            .x_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(&err)?;
        if base_rate > 0.0 {
            chart
                .draw_series(LineSeries::new(
                    [(0.0, 0.0), (base_rate, 1.0), (1.0, 1.0)],
                    RETAINED.mix(0.5).stroke_width(1),
                ))
                .map_err(&err)?
                .label("perfect ranking")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RETAINED.mix(0.5)));
        }
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                REFERENCE.stroke_width(1),
            ))
            .map_err(&err)?
            .label("random")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], REFERENCE));
        chart
            .draw_series(LineSeries::new(points, CHURNED.stroke_width(2)))
            .map_err(&err)?
            .label("model")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], CHURNED.stroke_width(2)));
        let marks: Vec<(f64, f64, u32)> = s
            .top
            .iter()
            .filter_map(|t| {
                let x = t.customers as f64 / s.counts.labelled.max(1) as f64;
                Some((x, t.recall?, t.percent))
            })
            .collect();
        let lifts: Vec<String> = s
            .top
            .iter()
            .map(|t| format!("{}% {}", t.percent, opt(t.lift, 2)))
            .collect();
        chart
            .draw_series(marks.iter().map(|&(x, y, percent)| {
                EmptyElement::at((x, y))
                    + Circle::new((0, 0), 4, BLACK.filled())
                    + Text::new(
                        format!("{percent}%"),
                        (8, 2),
                        ("sans-serif", 13).into_font(),
                    )
            }))
            .map_err(&err)?
            .label(format!("lift at top {}", lifts.join(", ")))
            .legend(|(x, y)| Circle::new((x + 10, y), 4, BLACK.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(REFERENCE)
            .draw()
            .map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

/// Draws mean predicted probability against observed churn rate by decile.
fn calibration_svg(summary: &BacktestSummary) -> Result<String, ReportError> {
    let err = draw_err("calibration");
    let bins = &summary.calibration;
    let top = bins
        .iter()
        .flat_map(|b| [b.mean_predicted, b.observed_rate])
        .fold(0.0_f64, f64::max);
    // Zoom on the populated range, but keep the axes equal so the diagonal is the diagonal.
    let limit = ((top * 10.0).ceil() / 10.0).clamp(0.1, 1.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Calibration by decile (Brier {})", opt(summary.brier, 4)),
                ("sans-serif", 22),
            )
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..limit, 0.0..limit)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_desc("mean predicted probability (risk / 100)")
            .y_desc("observed churn rate")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(&err)?;
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (limit, limit)],
                REFERENCE.stroke_width(1),
            ))
            .map_err(&err)?
            .label("perfectly calibrated")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], REFERENCE));
        chart
            .draw_series(LineSeries::new(
                bins.iter().map(|b| (b.mean_predicted, b.observed_rate)),
                CHURNED.stroke_width(2),
            ))
            .map_err(&err)?
            .label("model, by decile")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], CHURNED.stroke_width(2)));
        chart
            .draw_series(
                bins.iter()
                    .map(|b| Circle::new((b.mean_predicted, b.observed_rate), 4, CHURNED.filled())),
            )
            .map_err(&err)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(REFERENCE)
            .draw()
            .map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

/// Histogram of risk scores, churned and retained side by side, each as a
/// share of its own class.
fn distribution_svg(backtest: &Backtest) -> Result<String, ReportError> {
    let err = draw_err("distribution");
    const BINS: usize = 20;
    let mut counts = [[0_u64; BINS]; 2];
    for c in &backtest.customers {
        if let Some(r) = c.risk_score {
            let b = ((r / 100.0 * BINS as f64) as usize).min(BINS - 1);
            counts[usize::from(c.churned)][b] += 1;
        }
    }
    let totals = [
        counts[0].iter().sum::<u64>().max(1) as f64,
        counts[1].iter().sum::<u64>().max(1) as f64,
    ];
    let shares: Vec<[f64; 2]> = (0..BINS)
        .map(|b| {
            [
                counts[0][b] as f64 / totals[0],
                counts[1][b] as f64 / totals[1],
            ]
        })
        .collect();
    let top = shares
        .iter()
        .flatten()
        .fold(0.0_f64, |a, &b| a.max(b))
        .max(0.01)
        * 1.1;
    let threshold = backtest.summary.alerts.threshold;
    let width = 100.0 / BINS as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Score distribution by outcome", ("sans-serif", 22))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..100.0, 0.0..top)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_desc("risk score at the cutoff")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("share of the group")
            .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(&err)?;
        for (class, color, label) in [(1, CHURNED, "churned"), (0, RETAINED, "retained")] {
            let offset = if class == 1 { 0.0 } else { width / 2.0 };
            chart
                .draw_series(shares.iter().enumerate().map(|(b, s)| {
                    let x0 = b as f64 * width + offset;
                    Rectangle::new(
                        [(x0, 0.0), (x0 + width / 2.0, s[class])],
                        color.mix(0.8).filled(),
                    )
                }))
                .map_err(&err)?
                .label(label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .draw_series(LineSeries::new(
                [(threshold, 0.0), (threshold, top)],
                BLACK.mix(0.6).stroke_width(1),
            ))
            .map_err(&err)?
            .label(format!("at-risk threshold {threshold}"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.6)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperMiddle)
            .background_style(WHITE.mix(0.9))
            .border_style(REFERENCE)
            .draw()
            .map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

/// Mean points of each factor among churned and retained customers.
fn factors_svg(summary: &BacktestSummary) -> Result<String, ReportError> {
    let err = draw_err("factors");
    let factors = &summary.factors;
    let n = factors.len().max(1);
    let values: Vec<[f64; 2]> = factors
        .iter()
        .map(|f| {
            [
                f.mean_points_churned.unwrap_or(0.0),
                f.mean_points_retained.unwrap_or(0.0),
            ]
        })
        .collect();
    let lo = values.iter().flatten().fold(0.0_f64, |a, &b| a.min(b));
    let hi = values.iter().flatten().fold(0.0_f64, |a, &b| a.max(b));
    let pad = ((hi - lo) * 0.05).max(0.5);
    let names: Vec<String> = factors.iter().map(|f| f.factor.clone()).collect();
    let rows = 3 * n as i32;
    let height = (140 + 30 * n as u32).max(260);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        // Three rows per factor: churned bar, retained bar, a gap; the first
        // factor on top. Its name sits on the line between its two bars.
        let label_of = |v: &i32| -> String {
            let slot = rows - 1 - *v;
            if slot % 3 == 0 {
                names.get((slot / 3) as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        let mut chart = ChartBuilder::on(&root)
            .caption("Mean points by factor and outcome", ("sans-serif", 22))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(200)
            .build_cartesian_2d((lo - pad)..(hi + pad), 0..rows + 1)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .y_labels(rows as usize + 1)
            .y_label_formatter(&label_of)
            .disable_y_mesh()
            .x_desc("mean points per customer (positive adds risk)")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(&err)?;
        for (class, color, label) in [(0, CHURNED, "churned"), (1, RETAINED, "retained")] {
            chart
                .draw_series(values.iter().enumerate().map(|(i, v)| {
                    // Bar `class` of factor i occupies one row, counting from the top.
                    let top_row = rows - 3 * i as i32 - class;
                    Rectangle::new(
                        [(0.0, top_row - 1), (v[class as usize], top_row)],
                        color.mix(0.85).filled(),
                    )
                }))
                .map_err(&err)?
                .label(label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0), (0.0, rows)],
                BLACK.stroke_width(1),
            ))
            .map_err(&err)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(REFERENCE)
            .draw()
            .map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

/// Renders the whole report. `title` heads the page; `notes` are extra
/// paragraphs (e.g. how the model was fitted).
pub fn render_html(
    backtest: &Backtest,
    title: &str,
    notes: &[String],
) -> Result<String, ReportError> {
    let s = &backtest.summary;
    let c = &s.counts;
    let mut h = String::with_capacity(256 * 1024);
    // `write!` into a String cannot fail.
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 24px auto; max-width: 1000px; color: #222; }}
h1 {{ font-size: 1.6em; margin-bottom: 0.2em; }}
h2 {{ font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; margin: 0.6em 0; }}
th, td {{ padding: 3px 10px; border-bottom: 1px solid #eee; text-align: right; }}
th {{ background: #f4f4f4; }}
td.name, th.name {{ text-align: left; font-family: monospace; }}
.figures td {{ font-size: 1.1em; }}
.chart {{ margin: 1em 0; }}
.chart svg {{ max-width: 100%; height: auto; }}
.note {{ color: #555; font-size: 0.92em; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p class="note">Model <b>{model}</b>, scored at the cutoff {cutoff} on events strictly before it.</p>
"#,
        title = escape_html(title),
        model = escape_html(&s.model_version),
        cutoff = escape_html(&s.cutoff),
    );
    for note in notes {
        let _ = writeln!(h, r#"<p class="note">{}</p>"#, escape_html(note));
    }
    let _ = write!(
        h,
        r#"<h2>Headline figures</h2>
<table class="figures">
<tr><th class="name">figure</th><th>value</th><th class="name">meaning</th></tr>
<tr><td class="name">ROC AUC</td><td>{auc}</td><td class="name">chance a churner outranks a retained customer</td></tr>
<tr><td class="name">PR AUC</td><td>{ap}</td><td class="name">average precision (base rate {base})</td></tr>
<tr><td class="name">Brier score</td><td>{brier}</td><td class="name">mean (risk/100 − outcome)², scored customers</td></tr>
</table>
<table>
<tr><th class="name">top share</th><th>customers</th><th>churned</th><th>precision</th><th>recall</th><th>lift</th></tr>
"#,
        auc = opt(s.roc_auc, 4),
        ap = opt(s.pr_auc, 4),
        base = pct(s.base_rate),
        brier = opt(s.brier, 4),
    );
    for t in &s.top {
        let _ = writeln!(
            h,
            r#"<tr><td class="name">top {}%</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            t.percent,
            t.customers,
            t.churned,
            pct(t.precision),
            pct(t.recall),
            opt(t.lift, 2)
        );
    }
    let a = &s.alerts;
    let _ = write!(
        h,
        r#"</table>
<p>At the alert threshold ({thr}): <b>{n}</b> customers ({share} of labelled), {churned} churned: precision {prec}, recall {rec}.</p>
<h2>Population</h2>
<table>
<tr><td class="name">labelled customers</td><td>{labelled}</td></tr>
<tr><td class="name">churned / retained</td><td>{pos} / {neg}</td></tr>
<tr><td class="name">scored (events before the cutoff)</td><td>{scored}</td></tr>
<tr><td class="name">labelled without events (ranked last)</td><td>{noev}</td></tr>
<tr><td class="name">with events but no label (excluded)</td><td>{unl}</td></tr>
<tr><td class="name">events applied</td><td>{applied}</td></tr>
<tr><td class="name">events ignored at or after the cutoff</td><td>{ignored}</td></tr>
<tr><td class="name">event lines rejected</td><td>{rej}</td></tr>
<tr><td class="name">label rows rejected</td><td>{lrej}</td></tr>
</table>
"#,
        thr = if s.segments.is_empty() {
            format!("risk ≥ {}", a.threshold)
        } else {
            "each segment's own".to_string()
        },
        n = a.customers,
        share = pct(a.share),
        churned = a.churned,
        prec = pct(a.precision),
        rec = pct(a.recall),
        labelled = c.labelled,
        pos = c.churned,
        neg = c.retained,
        scored = c.scored,
        noev = c.labelled_without_events,
        unl = c.unlabelled_with_events,
        applied = c.events_applied,
        ignored = c.events_ignored_after_cutoff,
        rej = c.event_lines_rejected,
        lrej = c.label_rows_rejected,
    );

    if !s.segments.is_empty() {
        let _ = writeln!(
            h,
            "<h2 id=\"segments\">Segments</h2>\n<table>\n<tr><th class=\"name\">segment</th><th>labelled</th><th>churned</th><th>ROC AUC</th><th>PR AUC</th><th>at-risk threshold</th><th>alerted</th><th>precision</th><th>recall</th></tr>"
        );
        for g in &s.segments {
            let _ = writeln!(
                h,
                "<tr><td class=\"name\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape_html(&g.segment),
                g.labelled,
                g.churned,
                opt(g.roc_auc, 4),
                opt(g.pr_auc, 4),
                g.alerts.threshold,
                g.alerts.customers,
                pct(g.alerts.precision),
                pct(g.alerts.recall)
            );
        }
        let _ = writeln!(
            h,
            "</table>\n<p class=\"note\">Each segment ranked among its own customers and alerted at its own threshold; the charts below cover every customer.</p>"
        );
    }

    let charts = [
        ("Ranking", roc_svg(backtest)?),
        ("Gain", gain_svg(backtest)?),
        ("Calibration", calibration_svg(s)?),
        ("Score distribution", distribution_svg(backtest)?),
        ("Factors", factors_svg(s)?),
    ];
    if !s.thresholds.table.is_empty() {
        let t = &s.thresholds;
        let _ = writeln!(
            h,
            "<h2 id=\"thresholds\">Thresholds</h2>\n<div class=\"chart\">{}</div>",
            thresholds_svg(s)?
        );
        let _ = writeln!(
            h,
            "<table>\n<tr><th>threshold</th><th>customers</th><th>per 30 days</th><th>precision</th><th>recall</th></tr>"
        );
        let chosen = [t.for_precision.as_ref(), t.for_rate.as_ref()];
        for r in t.table.iter().filter(|r| {
            super::alerts::SHOWN_THRESHOLDS.contains(&r.threshold)
                || chosen.iter().flatten().any(|c| c.threshold == r.threshold)
        }) {
            let _ = writeln!(
                h,
                "<tr><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                r.threshold,
                r.customers,
                pct(Some(r.rate)),
                pct(r.precision),
                pct(r.recall)
            );
        }
        let choice = |r: Option<&super::alerts::ThresholdRow>| {
            r.map_or("none reaches it".to_string(), |r| {
                format!("{:.1}", r.threshold)
            })
        };
        let _ = writeln!(
            h,
            "</table>\n<p>Lowest threshold with precision ≥ {}: <b>{}</b>; with at most {} of customers alerted per 30 days: <b>{}</b>.</p>",
            pct(Some(t.target_precision)),
            choice(t.for_precision.as_ref()),
            pct(Some(t.target_rate)),
            choice(t.for_rate.as_ref()),
        );
    }
    for (i, (heading, svg)) in charts.iter().enumerate() {
        let id = heading.to_lowercase().replace(' ', "-");
        let _ = writeln!(
            h,
            "<h2 id=\"{id}\">{heading}</h2>\n<div class=\"chart\">{svg}</div>"
        );
        if i == 2 {
            let _ = writeln!(
                h,
                "<table>\n<tr><th>decile</th><th>customers</th><th>mean predicted</th><th>observed rate</th><th>risk range</th></tr>"
            );
            for b in &s.calibration {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{:.2}%</td><td>{:.2}%</td><td>{:.1}–{:.1}</td></tr>",
                    b.decile,
                    b.customers,
                    b.mean_predicted * 100.0,
                    b.observed_rate * 100.0,
                    b.min_predicted * 100.0,
                    b.max_predicted * 100.0
                );
            }
            let _ = writeln!(h, "</table>");
        }
    }
    let _ = writeln!(
        h,
        "<table>\n<tr><th class=\"name\">factor</th><th>weight (points per unit)</th><th>customers with a value</th><th>mean points, churned</th><th>mean points, retained</th></tr>"
    );
    for f in &s.factors {
        let _ = writeln!(
            h,
            "<tr><td class=\"name\">{}</td><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape_html(&f.factor),
            f.weight,
            f.customers,
            opt(f.mean_points_churned, 3),
            opt(f.mean_points_retained, 3)
        );
    }
    let _ = writeln!(
        h,
        "</table>\n<p class=\"note\">The weights of inactivity and rhythm are 1: their points are the model's steps. Definitions of every figure: docs/analysis.md.</p>\n</body>\n</html>"
    );
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_the_ends_and_drops_near_duplicates() {
        let points: Vec<(f64, f64)> = (0..=10_000)
            .map(|i| (f64::from(i) / 1e4, f64::from(i) / 1e4))
            .collect();
        let t = thin(points, 1e-3);
        assert_eq!(t.first(), Some(&(0.0, 0.0)));
        assert_eq!(t.last(), Some(&(1.0, 1.0)));
        assert!(t.len() <= 1002, "{}", t.len());
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape_html(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
