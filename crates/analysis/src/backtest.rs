//! `backtest`: how well a model ranks customers who then churned.
//!
//! Events strictly before the cutoff are replayed through the engine (later
//! ones are ignored and counted, so the whole history can be fed in without
//! leaking the future), every labelled customer is scored at the cutoff, and
//! the scores are compared with the labels. Metric definitions:
//! [`super::metrics`] and `docs/analysis.md`.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use serde::Serialize;

use super::alerts::{
    ThresholdRow, labelled_peaks, replay_with_peaks, threshold_for_precision, threshold_for_rate,
    threshold_table,
};
use super::labels::Labels;
use super::metrics::{
    self, CalibrationBin, ScoreGroup, TopShare, calibration_deciles, groups_descending,
};
use churn_core::engine::{CustomerStore, Factor};
use churn_core::event::format_timestamp_ms;
use churn_core::model::RiskModel;
use churn_core::offline::{BadLine, ReplayError, ReplayStats};

/// The shares of customers, in percent, whose precision, recall and lift are reported.
pub const TOP_PERCENTS: [u32; 3] = [1, 5, 10];

/// Errors that stop a backtest.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The replay stopped.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    /// Serialising the JSON summary failed.
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// A labelled customer and their score at the cutoff.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredCustomer {
    /// The customer.
    pub customer_id: String,
    /// Risk score (0–100) at the cutoff; `None` when the customer has no event
    /// before it (ranked below every scored customer).
    pub risk_score: Option<f64>,
    /// The label: churned after the cutoff.
    pub churned: bool,
    /// The customer's segment at the cutoff (0: the default segment, also
    /// for a customer without events and for a model without segments).
    pub segment: u8,
}

impl ScoredCustomer {
    /// The value ranked by: the risk score, or −∞ for a customer without events.
    pub fn ranking_score(&self) -> f64 {
        self.risk_score.unwrap_or(f64::NEG_INFINITY)
    }
}

/// Customers at or above the model's at-risk threshold at the cutoff.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertVolume {
    /// The model's `alert.at_risk_threshold` (with segments: the default
    /// segment's; each customer is counted at its own segment's threshold).
    pub threshold: f64,
    /// Labelled customers scoring at or above it.
    pub customers: u64,
    /// Their share of all labelled customers.
    pub share: Option<f64>,
    /// How many of them churned.
    pub churned: u64,
    /// churned / customers.
    pub precision: Option<f64>,
    /// churned / all churned customers.
    pub recall: Option<f64>,
}

/// One factor's weight and its points among churned and retained customers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FactorSummary {
    /// Factor name as in reasons (`trend`, `event:complaint`, …).
    pub factor: String,
    /// The model's points per unit of the factor's value (inactivity: 1, its
    /// points being the steps').
    pub weight: f64,
    /// Scored customers for whom the factor's value is not zero.
    pub customers: u64,
    /// Mean points among scored customers who churned.
    pub mean_points_churned: Option<f64>,
    /// Mean points among scored customers who stayed.
    pub mean_points_retained: Option<f64>,
}

/// The figures of one segment (a model with `[segments]`): its customers
/// at the cutoff, ranked among themselves and counted at the segment's own
/// at-risk threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentFigures {
    /// The segment's name (the default segment's included).
    pub segment: String,
    /// Labelled customers in it at the cutoff (those without events are in
    /// the default segment).
    pub labelled: u64,
    /// Of them, churned.
    pub churned: u64,
    /// Of them, with at least one event before the cutoff.
    pub scored: u64,
    /// Share of its labelled customers who churned.
    pub base_rate: Option<f64>,
    /// ROC AUC within the segment.
    pub roc_auc: Option<f64>,
    /// Average precision within the segment.
    pub pr_auc: Option<f64>,
    /// Customers at or above the segment's `at_risk_threshold`; recall is
    /// against the segment's churned customers.
    pub alerts: AlertVolume,
}

/// What went in and what was left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BacktestCounts {
    /// Labelled customers (accepted label rows).
    pub labelled: u64,
    /// Of them, churned.
    pub churned: u64,
    /// Of them, retained.
    pub retained: u64,
    /// Labelled customers with at least one event before the cutoff.
    pub scored: u64,
    /// Labelled customers without events before the cutoff: ranked last,
    /// left out of the Brier score and the calibration table.
    pub labelled_without_events: u64,
    /// Customers with events but no label: left out of every figure.
    pub unlabelled_with_events: u64,
    /// Events applied (strictly before the cutoff).
    pub events_applied: u64,
    /// Valid events at or after the cutoff, not applied.
    pub events_ignored_after_cutoff: u64,
    /// Event lines rejected, all reasons.
    pub event_lines_rejected: u64,
    /// Event lines rejected, by reason.
    pub event_lines_rejected_by_reason: BTreeMap<&'static str, u64>,
    /// Label rows rejected.
    pub label_rows_rejected: u64,
}

/// The default precision target of `backtest`.
pub const DEFAULT_TARGET_PRECISION: f64 = 0.6;
/// The default alert-volume target of `backtest` (share of customers per 30 days).
pub const DEFAULT_TARGET_RATE: f64 = 0.05;

/// Thresholds from data: volume and precision per at-risk threshold over
/// the month before the cutoff, and the thresholds that reach a target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdChoice {
    /// Every threshold from 1 to 99.5 in steps of 0.5 (empty when peaks were
    /// not measured, as for an in-sample fit report).
    pub table: Vec<ThresholdRow>,
    /// The precision aimed at.
    pub target_precision: f64,
    /// The lowest threshold reaching it, if any.
    pub for_precision: Option<ThresholdRow>,
    /// The monthly alert volume aimed at (share of labelled customers).
    pub target_rate: f64,
    /// The lowest threshold within it, if any.
    pub for_rate: Option<ThresholdRow>,
}

impl ThresholdChoice {
    fn new(table: Vec<ThresholdRow>) -> Self {
        let mut choice = ThresholdChoice {
            table,
            target_precision: DEFAULT_TARGET_PRECISION,
            for_precision: None,
            target_rate: DEFAULT_TARGET_RATE,
            for_rate: None,
        };
        choice.set_targets(DEFAULT_TARGET_PRECISION, DEFAULT_TARGET_RATE);
        choice
    }

    /// Chooses the thresholds for these targets.
    pub fn set_targets(&mut self, precision: f64, rate: f64) {
        self.target_precision = precision;
        self.target_rate = rate;
        self.for_precision = threshold_for_precision(&self.table, precision).cloned();
        self.for_rate = threshold_for_rate(&self.table, rate).cloned();
    }
}

/// Every figure of a backtest (the `--json` output).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BacktestSummary {
    /// ROC AUC over all labelled customers (those without events ranked last).
    pub roc_auc: Option<f64>,
    /// Average precision over all labelled customers.
    pub pr_auc: Option<f64>,
    /// Mean squared error of risk/100 against the label, scored customers only.
    pub brier: Option<f64>,
    /// Share of labelled customers who churned.
    pub base_rate: Option<f64>,
    /// Precision, recall and lift at the top 1, 5 and 10 %.
    pub top: Vec<TopShare>,
    /// Customers at the model's at-risk threshold (with segments: each at
    /// its own segment's).
    pub alerts: AlertVolume,
    /// The same figures per segment, in the model's segment order (the
    /// default segment first); absent for a model without segments.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<SegmentFigures>,
    /// Alert volume and precision per threshold over the month before the
    /// cutoff, and the thresholds reaching the targets (see
    /// [`BacktestSummary::set_targets`]).
    pub thresholds: ThresholdChoice,
    /// Deciles of predicted probability, scored customers only.
    pub calibration: Vec<CalibrationBin>,
    /// Factors with their weights and mean points by label.
    pub factors: Vec<FactorSummary>,
    /// Counts.
    pub counts: BacktestCounts,
    /// The cutoff (RFC 3339, UTC).
    pub cutoff: String,
    /// `model_version` of the model scored.
    pub model_version: String,
}

/// A backtest: its figures and the scored customers behind them (for reports).
#[derive(Debug, Clone)]
pub struct Backtest {
    /// The figures.
    pub summary: BacktestSummary,
    /// Every labelled customer, sorted by id.
    pub customers: Vec<ScoredCustomer>,
}

impl Backtest {
    /// Scores grouped for the curves, highest first.
    pub fn groups(&self) -> Vec<ScoreGroup> {
        groups_descending(&self.ranking())
    }

    /// (ranking score, churned) of every labelled customer.
    pub fn ranking(&self) -> Vec<(f64, bool)> {
        self.customers
            .iter()
            .map(|c| (c.ranking_score(), c.churned))
            .collect()
    }
}

/// Replays `events` strictly before `cutoff_ms` and scores every labelled
/// customer at the cutoff. Bad event lines go to `on_bad_line` (or stop the
/// run with `strict`).
pub fn run_backtest(
    model: &RiskModel,
    events: impl BufRead,
    labels: &Labels,
    cutoff_ms: i64,
    strict: bool,
    on_bad_line: impl FnMut(&BadLine),
) -> Result<Backtest, BacktestError> {
    run_backtest_with(
        &churn_core::input::InputFormat::Churn,
        model,
        events,
        labels,
        cutoff_ms,
        strict,
        on_bad_line,
    )
}

/// As [`run_backtest`], with event lines read in the input format `format`.
pub fn run_backtest_with(
    format: &churn_core::input::InputFormat,
    model: &RiskModel,
    events: impl BufRead,
    labels: &Labels,
    cutoff_ms: i64,
    strict: bool,
    on_bad_line: impl FnMut(&BadLine),
) -> Result<Backtest, BacktestError> {
    let (store, stats, peaks) =
        replay_with_peaks(format, model, events, cutoff_ms, strict, on_bad_line)?;
    Ok(evaluate_store(
        model,
        &store,
        labels,
        cutoff_ms,
        &stats,
        Some(&peaks),
    ))
}

/// Running sums of one factor's points.
#[derive(Default, Clone, Copy)]
struct FactorSums {
    weight: f64,
    nonzero: u64,
    churned: f64,
    retained: f64,
}

/// Scores the labelled customers of a replayed store at the cutoff and
/// computes every figure.
pub fn evaluate_store(
    model: &RiskModel,
    store: &CustomerStore,
    labels: &Labels,
    cutoff_ms: i64,
    stats: &ReplayStats,
    peaks: Option<&[f64]>,
) -> Backtest {
    let mut customers = Vec::with_capacity(labels.len());
    let mut factors: BTreeMap<Factor, FactorSums> = BTreeMap::new();
    for (id, churned) in labels.sorted() {
        let state = store.get(id);
        let segment = state.map_or(0, |s| s.segment());
        let risk_score = state.map(|state| {
            for fv in state.factor_values(model, cutoff_ms) {
                let sums = factors.entry(fv.factor).or_default();
                sums.weight = fv.weight;
                if fv.value != 0.0 {
                    sums.nonzero += 1;
                }
                if churned {
                    sums.churned += fv.weight * fv.value;
                } else {
                    sums.retained += fv.weight * fv.value;
                }
            }
            state.risk(model, cutoff_ms)
        });
        customers.push(ScoredCustomer {
            customer_id: id.to_string(),
            risk_score,
            churned,
            segment,
        });
    }
    let unlabelled = store
        .iter()
        .filter(|(id, _)| labels.get(id).is_none())
        .count() as u64;
    let mut summary = summarise(
        model, &customers, factors, cutoff_ms, stats, labels, unlabelled,
    );
    if let Some(peaks) = peaks {
        summary.thresholds =
            ThresholdChoice::new(threshold_table(&labelled_peaks(store, peaks, labels)));
    }
    Backtest { summary, customers }
}

fn summarise(
    model: &RiskModel,
    customers: &[ScoredCustomer],
    factors: BTreeMap<Factor, FactorSums>,
    cutoff_ms: i64,
    stats: &ReplayStats,
    labels: &Labels,
    unlabelled_with_events: u64,
) -> BacktestSummary {
    let ranking: Vec<(f64, bool)> = customers
        .iter()
        .map(|c| (c.ranking_score(), c.churned))
        .collect();
    let groups = groups_descending(&ranking);
    let probabilities: Vec<(f64, bool)> = customers
        .iter()
        .filter_map(|c| c.risk_score.map(|r| (r / 100.0, c.churned)))
        .collect();
    let labelled = customers.len() as u64;
    let churned = customers.iter().filter(|c| c.churned).count() as u64;
    let scored = probabilities.len() as u64;
    let scored_churned = probabilities.iter().filter(|p| p.1).count() as u64;
    let scored_retained = scored - scored_churned;

    let alerts = alert_volume(
        model,
        customers.iter(),
        model.alert_policy().at_risk_threshold,
    );
    let segments = model
        .segment_names()
        .iter()
        .enumerate()
        .map(|(i, name)| {
            // Validation bounds the segments to MAX_SEGMENTS (< 256).
            let segment = i as u8;
            let mine: Vec<&ScoredCustomer> =
                customers.iter().filter(|c| c.segment == segment).collect();
            let ranking: Vec<(f64, bool)> = mine
                .iter()
                .map(|c| (c.ranking_score(), c.churned))
                .collect();
            let groups = groups_descending(&ranking);
            let seg_churned = mine.iter().filter(|c| c.churned).count() as u64;
            SegmentFigures {
                segment: name.clone(),
                labelled: mine.len() as u64,
                churned: seg_churned,
                scored: mine.iter().filter(|c| c.risk_score.is_some()).count() as u64,
                base_rate: share(seg_churned, mine.len() as u64),
                roc_auc: metrics::roc_auc_of_groups(&groups),
                pr_auc: metrics::average_precision(&groups),
                alerts: alert_volume(
                    model,
                    mine.iter().copied(),
                    model.alert_policy_for(segment).at_risk_threshold,
                ),
            }
        })
        .collect();

    let factors = factors
        .into_iter()
        .filter(|(f, _)| *f != Factor::Base)
        .map(|(f, s)| FactorSummary {
            factor: f.name(model).to_string(),
            weight: s.weight,
            customers: s.nonzero,
            mean_points_churned: (scored_churned > 0).then(|| s.churned / scored_churned as f64),
            mean_points_retained: (scored_retained > 0)
                .then(|| s.retained / scored_retained as f64),
        })
        .collect();

    BacktestSummary {
        roc_auc: metrics::roc_auc_of_groups(&groups),
        pr_auc: metrics::average_precision(&groups),
        brier: metrics::brier(&probabilities),
        base_rate: share(churned, labelled),
        top: TOP_PERCENTS
            .iter()
            .map(|&p| metrics::top_share(&groups, p))
            .collect(),
        alerts,
        segments,
        thresholds: ThresholdChoice::new(Vec::new()),
        calibration: calibration_deciles(&probabilities),
        factors,
        counts: BacktestCounts {
            labelled,
            churned,
            retained: labelled - churned,
            scored,
            labelled_without_events: labelled - scored,
            unlabelled_with_events,
            events_applied: stats.accepted,
            events_ignored_after_cutoff: stats.ignored_after_limit,
            event_lines_rejected: stats.rejected_total(),
            event_lines_rejected_by_reason: stats.rejected.clone(),
            label_rows_rejected: labels.stats().rejected,
        },
        cutoff: format_timestamp_ms(cutoff_ms),
        model_version: model.version().to_string(),
    }
}

/// Customers at or above their segment's at-risk threshold at the cutoff,
/// among `customers`; `threshold` is the one reported.
fn alert_volume<'c>(
    model: &RiskModel,
    customers: impl Iterator<Item = &'c ScoredCustomer>,
    threshold: f64,
) -> AlertVolume {
    let (mut labelled, mut churned, mut alerted, mut alerted_churned) = (0, 0, 0, 0);
    for c in customers {
        labelled += 1;
        churned += u64::from(c.churned);
        let at = model.alert_policy_for(c.segment).at_risk_threshold;
        if c.risk_score.is_some_and(|r| r >= at) {
            alerted += 1;
            alerted_churned += u64::from(c.churned);
        }
    }
    AlertVolume {
        threshold,
        customers: alerted,
        share: share(alerted, labelled),
        churned: alerted_churned,
        precision: share(alerted_churned, alerted),
        recall: share(alerted_churned, churned),
    }
}

fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) => format!("{v:.digits$}"),
        None => "n/a".to_string(),
    }
}

/// Writes the summary as one JSON object and a newline.
pub fn write_json(summary: &BacktestSummary, out: &mut impl Write) -> Result<(), BacktestError> {
    serde_json::to_writer(&mut *out, summary)?;
    writeln!(out)?;
    Ok(())
}

/// The per-segment section of the text output (nothing without segments).
fn write_segments(segments: &[SegmentFigures], out: &mut impl Write) -> Result<(), BacktestError> {
    if segments.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(out, "per segment (each at its own at-risk threshold):")?;
    writeln!(
        out,
        "segment               labelled  churned  ROC AUC  PR AUC  threshold  alerted  precision  recall"
    )?;
    for s in segments {
        writeln!(
            out,
            "{:<20}  {:>8}  {:>7}  {:>7}  {:>6}  {:>9.1}  {:>7}  {:>9}  {:>6}",
            s.segment,
            s.labelled,
            s.churned,
            fmt_opt(s.roc_auc, 4),
            fmt_opt(s.pr_auc, 4),
            s.alerts.threshold,
            s.alerts.customers,
            fmt_opt(s.alerts.precision, 4),
            fmt_opt(s.alerts.recall, 4)
        )?;
    }
    Ok(())
}

/// The thresholds-from-data section of the text output.
fn write_thresholds(t: &ThresholdChoice, out: &mut impl Write) -> Result<(), BacktestError> {
    if t.table.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(
        out,
        "at-risk threshold vs the month before the cutoff (customers whose risk reached it):"
    )?;
    writeln!(out, "threshold  customers  per 30 days  precision  recall")?;
    let row = |r: &ThresholdRow, out: &mut dyn Write| -> std::io::Result<()> {
        writeln!(
            out,
            "{:>9.1}  {:>9}  {:>10.2}%  {:>9}  {:>6}",
            r.threshold,
            r.customers,
            r.rate * 100.0,
            fmt_opt(r.precision, 4),
            fmt_opt(r.recall, 4)
        )
    };
    for r in t
        .table
        .iter()
        .filter(|r| super::alerts::SHOWN_THRESHOLDS.contains(&r.threshold))
    {
        row(r, out)?;
    }
    match &t.for_precision {
        Some(r) => writeln!(
            out,
            "for precision >= {}: at_risk_threshold = {} ({:.2}% of customers per 30 days, recall {})",
            t.target_precision,
            r.threshold,
            r.rate * 100.0,
            fmt_opt(r.recall, 4)
        )?,
        None => writeln!(
            out,
            "for precision >= {}: no threshold reaches it",
            t.target_precision
        )?,
    }
    match &t.for_rate {
        Some(r) => writeln!(
            out,
            "for at most {}% of customers per 30 days: at_risk_threshold = {} (precision {}, recall {})",
            t.target_rate * 100.0,
            r.threshold,
            fmt_opt(r.precision, 4),
            fmt_opt(r.recall, 4)
        )?,
        None => writeln!(
            out,
            "for at most {}% of customers per 30 days: no threshold is that quiet",
            t.target_rate * 100.0
        )?,
    }
    Ok(())
}

/// Writes the summary as a human-readable table.
pub fn write_text(summary: &BacktestSummary, out: &mut impl Write) -> Result<(), BacktestError> {
    let c = &summary.counts;
    writeln!(
        out,
        "backtest of model {} at cutoff {}",
        summary.model_version, summary.cutoff
    )?;
    writeln!(
        out,
        "customers: labelled={} churned={} (base rate {}) scored={} labelled_without_events={} unlabelled_with_events={} (excluded)",
        c.labelled,
        c.churned,
        fmt_opt(summary.base_rate.map(|r| r * 100.0), 2) + "%",
        c.scored,
        c.labelled_without_events,
        c.unlabelled_with_events
    )?;
    writeln!(
        out,
        "events: applied={} ignored_after_cutoff={} rejected={}; label rows rejected={}",
        c.events_applied,
        c.events_ignored_after_cutoff,
        c.event_lines_rejected,
        c.label_rows_rejected
    )?;
    writeln!(out)?;
    writeln!(out, "ROC AUC        {}", fmt_opt(summary.roc_auc, 4))?;
    writeln!(out, "PR AUC (AP)    {}", fmt_opt(summary.pr_auc, 4))?;
    writeln!(
        out,
        "Brier score    {}  (risk/100 as probability, scored customers)",
        fmt_opt(summary.brier, 4)
    )?;
    writeln!(out)?;
    writeln!(out, "top   customers   churned  precision  recall    lift")?;
    for t in &summary.top {
        writeln!(
            out,
            "{:>3}%  {:>9}  {:>8.1}  {:>9}  {:>6}  {:>6}",
            t.percent,
            t.customers,
            t.churned,
            fmt_opt(t.precision, 4),
            fmt_opt(t.recall, 4),
            fmt_opt(t.lift, 2)
        )?;
    }
    let a = &summary.alerts;
    writeln!(out)?;
    let at = if summary.segments.is_empty() {
        format!("at risk >= {}", a.threshold)
    } else {
        "at each segment's at-risk threshold".to_string()
    };
    writeln!(
        out,
        "alerts {at}: {} customers ({}% of labelled), {} churned (precision {}, recall {})",
        a.customers,
        fmt_opt(a.share.map(|s| s * 100.0), 2),
        a.churned,
        fmt_opt(a.precision, 4),
        fmt_opt(a.recall, 4)
    )?;
    write_segments(&summary.segments, out)?;
    write_thresholds(&summary.thresholds, out)?;
    writeln!(out)?;
    writeln!(
        out,
        "calibration (deciles of predicted risk, scored customers)"
    )?;
    writeln!(
        out,
        "decile  customers  mean_predicted  observed_rate  risk_range"
    )?;
    for b in &summary.calibration {
        writeln!(
            out,
            "{:>6}  {:>9}  {:>14.4}  {:>13.4}  {:.1}-{:.1}",
            b.decile,
            b.customers,
            b.mean_predicted,
            b.observed_rate,
            b.min_predicted * 100.0,
            b.max_predicted * 100.0
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "factor                          weight  customers  mean_points_churned  mean_points_retained"
    )?;
    for f in &summary.factors {
        writeln!(
            out,
            "{:<30} {:>7.3}  {:>9}  {:>19}  {:>20}",
            f.factor,
            f.weight,
            f.customers,
            fmt_opt(f.mean_points_churned, 3),
            fmt_opt(f.mean_points_retained, 3)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, kind: &str, day: u32) -> String {
        format!(
            r#"{{"customer_id":"{id}","event_type":"{kind}","timestamp":"2024-01-{day:02}T00:00:00Z"}}"#
        )
    }

    #[test]
    fn scores_labelled_customers_and_counts_the_rest() {
        let events = [
            line("a", "complaint", 1),
            line("a", "payment_failed", 2),
            line("b", "purchase", 2),
            line("b", "login", 3),
            line("c", "login", 1),
            line("a", "purchase", 20),
            "{bad".to_string(),
        ]
        .join("\n");
        let labels = Labels::from_pairs([("a", true), ("b", false), ("z", true)]);
        let cutoff = churn_core::event::parse_timestamp_ms("2024-01-10T00:00:00Z").expect("valid");
        let mut bad = 0;
        let bt = run_backtest(
            &RiskModel::default_model(),
            events.as_bytes(),
            &labels,
            cutoff,
            false,
            |_| bad += 1,
        )
        .expect("backtest");
        let s = &bt.summary;
        assert_eq!(bad, 1);
        assert_eq!(s.counts.labelled, 3);
        assert_eq!(s.counts.scored, 2);
        assert_eq!(s.counts.labelled_without_events, 1);
        assert_eq!(s.counts.unlabelled_with_events, 1);
        assert_eq!(s.counts.events_ignored_after_cutoff, 1);
        assert_eq!(s.counts.event_lines_rejected, 1);
        // a (complaints) above b (purchases) above z (no events): a perfect
        // ranking but for z, a churner ranked last: 1 of 2 pairs won.
        assert_eq!(s.roc_auc, Some(0.5));
        let a = bt.customers[0].risk_score.expect("scored");
        let b = bt.customers[1].risk_score.expect("scored");
        assert!(a > b);
        assert!(
            s.factors
                .iter()
                .any(|f| f.factor == "event:complaint" && f.mean_points_churned > Some(0.0))
        );
        let mut text = Vec::new();
        write_text(s, &mut text).expect("in memory");
        let text = String::from_utf8(text).expect("utf-8");
        assert!(text.contains("ROC AUC        0.5000"), "{text}");
        let mut json = Vec::new();
        write_json(s, &mut json).expect("in memory");
        let v: serde_json::Value = serde_json::from_slice(&json).expect("json");
        assert_eq!(v["roc_auc"], serde_json::json!(0.5));
    }
}
