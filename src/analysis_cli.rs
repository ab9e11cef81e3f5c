//! The analysts' subcommands, `backtest` and `fit`: argument parsing and file
//! handling around `churn_analysis` (kept out of `main.rs` so that the
//! other subcommands' code stays apart).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use churn_analysis::backtest::{evaluate_store, run_backtest_with, write_json, write_text};
use churn_analysis::fit::{
    AlertTarget, FitOptions, describe, in_sample_notes, model_toml, run_fit,
};
use churn_analysis::labels::{Labels, read_labels};
use churn_analysis::report::render_html;
use churn_core::event::parse_date_arg;
use churn_core::offline::BadLine;

use crate::load_model;

#[derive(clap::Args)]
pub struct BacktestArgs {
    /// Model file (TOML); the built-in default model when omitted.
    #[arg(long)]
    model: Option<PathBuf>,
    /// JSON-lines events, or `-` for standard input. Events at or after the cutoff are ignored.
    #[arg(long)]
    events: String,
    /// Labels CSV: `customer_id,churned` (1 = churned), header optional.
    #[arg(long)]
    labels: PathBuf,
    /// Score at this moment (2025-06-01 = midnight UTC, or RFC 3339); only events strictly before it are used.
    #[arg(long)]
    cutoff: String,
    /// Print the lowest at-risk threshold whose alerts in the month before
    /// the cutoff reach this precision (share of alerted customers who churned).
    #[arg(long, default_value_t = churn_analysis::backtest::DEFAULT_TARGET_PRECISION)]
    alert_precision: f64,
    /// Print the lowest at-risk threshold that alerts at most this share of
    /// customers per 30 days.
    #[arg(long, default_value_t = churn_analysis::backtest::DEFAULT_TARGET_RATE)]
    alert_rate: f64,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML report with charts to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Stop with an error at the first bad event line.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    input: crate::input_cli::InputArgs,
}

#[derive(clap::Args)]
pub struct FitArgs {
    /// JSON-lines events (a file: it is read twice).
    #[arg(long)]
    events: PathBuf,
    /// Labels CSV: `customer_id,churned` (1 = churned), header optional.
    #[arg(long)]
    labels: PathBuf,
    /// Fit on the state at this moment (2025-06-01 = midnight UTC, or RFC 3339); only events strictly before it are used.
    #[arg(long)]
    cutoff: String,
    /// Where to write the fitted model (TOML).
    #[arg(long)]
    out: PathBuf,
    /// Model to start from (structure, half-lives, alert thresholds); the built-in default when omitted.
    #[arg(long)]
    base: Option<PathBuf>,
    /// Cross-validation folds for choosing the penalty.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Seed of the fold assignment.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Fit an event type's points only if at least this many labelled customers produced it.
    #[arg(long, default_value_t = 20)]
    min_support: u64,
    /// Half-life in days of event types the base model does not name.
    #[arg(long, default_value_t = 30.0)]
    half_life_days: f64,
    /// `model_version` of the fitted model; default `fit-<cutoff date>`.
    #[arg(long)]
    model_version: Option<String>,
    /// L2 penalties to cross-validate (standardised units), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = churn_analysis::fit::DEFAULT_LAMBDAS)]
    lambdas: Vec<f64>,
    /// Half-lives (days) tried for each fitted event type, comma-separated;
    /// each type keeps the one with the best cross-validated AUC.
    #[arg(long, value_delimiter = ',', default_values_t = churn_analysis::fit::DEFAULT_HALF_LIFE_GRID)]
    half_life_grid: Vec<f64>,
    /// Keep the base model's half-lives (no search; faster).
    #[arg(long)]
    keep_half_lives: bool,
    /// Choose the largest penalty within one standard error of the best
    /// cross-validated AUC (smoother weights) instead of the best.
    #[arg(long)]
    one_standard_error: bool,
    /// Set the alert thresholds so that the customers alerted in the month
    /// before the cutoff churned at least this often (e.g. 0.6).
    #[arg(long, conflicts_with = "alert_rate")]
    alert_precision: Option<f64>,
    /// Set the alert thresholds so that at most this share of customers is
    /// alerted per 30 days (e.g. 0.05).
    #[arg(long)]
    alert_rate: Option<f64>,
    /// Also write an HTML report of the fitted model on the customers it was fitted on (in-sample).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Stop with an error at the first bad event line.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    input: crate::input_cli::InputArgs,
}

fn load_labels(path: &Path) -> Result<Labels> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("opening labels file {}", path.display()))?;
    let mut stderr = std::io::stderr().lock();
    let labels = read_labels(BufReader::new(file), |bad| {
        let _ = writeln!(stderr, "labels line {}: {}", bad.line, bad.message);
    })
    .with_context(|| format!("reading labels file {}", path.display()))?;
    // Scoring against no labels prints only `n/a`: say what the file must hold.
    if labels.is_empty() {
        let stats = labels.stats();
        anyhow::bail!(
            "no usable label row in {} ({} lines read, {} rejected): expected a CSV \
             `customer_id,churned` with churned `1` or `0` (`true`/`false` also \
             accepted), one customer a row, header optional, e.g.\n  \
             customer_id,churned\n  cust-0000001,1\n  cust-0000002,0",
            path.display(),
            stats.lines_read,
            stats.rejected
        );
    }
    Ok(labels)
}

fn report_bad_line(bad: &BadLine) {
    eprintln!(
        "line {}: {}: {}",
        bad.line,
        bad.reason_with_source(),
        bad.error
    );
}

fn check_share(flag: &str, value: f64) -> Result<()> {
    anyhow::ensure!(
        value.is_finite() && value > 0.0 && value <= 1.0,
        "{flag} must be a share between 0 and 1 (0.6 for 60 %), got {value}"
    );
    Ok(())
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// `churn-scorer backtest`.
pub fn backtest(args: BacktestArgs) -> Result<()> {
    let model = load_model(args.model.as_ref())?;
    let cutoff_ms = parse_date_arg(&args.cutoff).map_err(|e| anyhow::anyhow!("--cutoff: {e}"))?;
    let labels = load_labels(&args.labels)?;
    let input: Box<dyn BufRead> = if args.events == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(&args.events)
            .with_context(|| format!("opening events file {}", args.events))?;
        Box::new(BufReader::with_capacity(1 << 20, file))
    };
    check_share("--alert-precision", args.alert_precision)?;
    check_share("--alert-rate", args.alert_rate)?;
    let format = args.input.format()?;
    let mut result = run_backtest_with(
        &format,
        &model,
        input,
        &labels,
        cutoff_ms,
        args.strict,
        report_bad_line,
    )?;
    result
        .summary
        .thresholds
        .set_targets(args.alert_precision, args.alert_rate);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        write_json(&result.summary, &mut out)?;
    } else {
        write_text(&result.summary, &mut out)?;
    }
    out.flush()?;
    if let Some(path) = &args.report {
        let title = format!("Backtest of {}", result.summary.model_version);
        let html = render_html(&result, &title, &[])?;
        write_file(path, &html)?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}

/// `churn-scorer fit`.
pub fn fit(args: FitArgs) -> Result<()> {
    let base = load_model(args.base.as_ref())?;
    let base_name = args
        .base
        .as_ref()
        .map_or("built-in default".to_string(), |p| p.display().to_string());
    let cutoff_ms = parse_date_arg(&args.cutoff).map_err(|e| anyhow::anyhow!("--cutoff: {e}"))?;
    let labels = load_labels(&args.labels)?;
    let mut options = FitOptions::new(cutoff_ms);
    options.folds = args.folds;
    options.seed = args.seed;
    options.min_support = args.min_support;
    options.default_half_life_days = args.half_life_days;
    options.model_version = args.model_version;
    options.lambdas = args.lambdas;
    options.strict = args.strict;
    options.one_standard_error = args.one_standard_error;
    options.input = args.input.format()?;
    anyhow::ensure!(
        args.half_life_grid
            .iter()
            .all(|h| h.is_finite() && *h > 0.0),
        "--half-life-grid: half-lives must be > 0 days"
    );
    options.half_life_grid = if args.keep_half_lives {
        Vec::new()
    } else {
        args.half_life_grid
    };
    options.alert_target = match (args.alert_precision, args.alert_rate) {
        (Some(p), _) => {
            check_share("--alert-precision", p)?;
            Some(AlertTarget::Precision(p))
        }
        (None, Some(r)) => {
            check_share("--alert-rate", r)?;
            Some(AlertTarget::Rate(r))
        }
        (None, None) => None,
    };
    let events = &args.events;
    let outcome = run_fit(
        || std::fs::File::open(events).map(|f| BufReader::with_capacity(1 << 20, f)),
        &labels,
        &base,
        &options,
        report_bad_line,
    )
    .with_context(|| format!("fitting on {}", events.display()))?;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    write_file(&args.out, &model_toml(&outcome, &today, &base_name)?)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in describe(&outcome.summary, &today, &base_name) {
        writeln!(out, "{line}")?;
    }
    writeln!(out, "model written to {}", args.out.display())?;
    if let Some(path) = &args.report {
        let result = evaluate_store(
            &outcome.model,
            &outcome.store,
            &labels,
            cutoff_ms,
            &outcome.replay_stats,
            None,
        );
        let title = format!("Fitted model {} (in-sample)", outcome.summary.model_version);
        let html = render_html(&result, &title, &in_sample_notes(&outcome.summary))?;
        write_file(path, &html)?;
        writeln!(out, "report written to {}", path.display())?;
    }
    Ok(())
}
