//! What subscribers would have received: the at-risk alerts of a whole
//! history replayed as the live worker reads it, measured against outcomes.
//!
//! A backtest at a cutoff ranks customers; this measures the alerts
//! themselves — how many customers ever get one (each costs an e-mail, a
//! discount or a call), and how many of those alerted from some moment on
//! really left — and finds the thresholds that reach a target precision or
//! a target alert volume.

use std::collections::HashSet;

use serde::Serialize;

use crate::labels::Labels;
use churn_core::engine::{AlertKind, ApplyOutcome, CustomerStore};
use churn_core::model::RiskModel;
use churn_core::offline::{ReplayError, ReplayStats, TimeLimit, replay_alerts, replay_each_with};

/// Alert figures of one replayed history.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertQuality {
    /// Labelled customers.
    pub customers: u64,
    /// Labelled customers who churned.
    pub churned: u64,
    /// At-risk alerts sent, to labelled customers.
    pub at_risk_alerts: u64,
    /// Share of labelled customers who got at least one at-risk alert.
    pub ever_alerted: f64,
    /// Labelled customers with an at-risk alert at or after the window start.
    pub alerted_in_window: u64,
    /// Of those, the share who churned.
    pub precision: Option<f64>,
    /// Share of churned customers with an at-risk alert at or after the window start.
    pub recall: Option<f64>,
}

/// Replays `lines` (time-ordered JSON lines) through the engine exactly as
/// one partition of the live worker with `lateness_ms`, and measures the
/// at-risk alerts against `labels`: precision and recall of the customers
/// alerted at or after `window_from_ms`.
pub fn alert_quality<'a>(
    model: &RiskModel,
    lines: impl IntoIterator<Item = &'a [u8]>,
    labels: &Labels,
    lateness_ms: i64,
    window_from_ms: i64,
) -> AlertQuality {
    let mut ever: HashSet<String> = HashSet::new();
    let mut in_window: HashSet<String> = HashSet::new();
    let mut at_risk_alerts = 0;
    for alert in replay_alerts(model, lines, lateness_ms) {
        if alert.decision.kind != AlertKind::AtRisk || labels.get(&alert.customer_id).is_none() {
            continue;
        }
        at_risk_alerts += 1;
        if alert.decision.event_time_ms >= window_from_ms {
            in_window.insert(alert.customer_id.clone());
        }
        ever.insert(alert.customer_id);
    }
    let customers = labels.len() as u64;
    let churned = labels.sorted().iter().filter(|(_, c)| *c).count() as u64;
    let true_alerts = in_window
        .iter()
        .filter(|id| labels.get(id) == Some(true))
        .count() as u64;
    let ratio = |n: u64, d: u64| (d > 0).then(|| n as f64 / d as f64);
    AlertQuality {
        customers,
        churned,
        at_risk_alerts,
        ever_alerted: ratio(ever.len() as u64, customers).unwrap_or(0.0),
        alerted_in_window: in_window.len() as u64,
        precision: ratio(true_alerts, in_window.len() as u64),
        recall: ratio(true_alerts, churned),
    }
}

/// Length of the window over which alert volume is measured.
pub const VOLUME_WINDOW_MS: i64 = 30 * 86_400_000;

/// Replays `input` (JSON lines) strictly before `cutoff_ms` into a new store,
/// as [`churn_core::offline::replay`] does, and also returns each customer's
/// highest risk score in the [`VOLUME_WINDOW_MS`] before the cutoff.
///
/// Risk only rises while a customer is silent, so the highest score over a
/// stretch of silence is the one just before the next event (or at the
/// cutoff): scoring each customer just before and just after each of its
/// events in the window, and at the cutoff, finds the peak exactly. A
/// threshold at or below a customer's peak is one the customer would have
/// crossed in that month — an alert, cooldown and hysteresis aside.
pub fn replay_with_peaks(
    format: &churn_core::input::InputFormat,
    model: &RiskModel,
    input: impl std::io::BufRead,
    cutoff_ms: i64,
    strict: bool,
    on_bad_line: impl FnMut(&churn_core::offline::BadLine),
) -> Result<(CustomerStore, ReplayStats, Vec<f64>), ReplayError> {
    let window_start = cutoff_ms.saturating_sub(VOLUME_WINDOW_MS);
    let mut store = CustomerStore::new();
    let mut peaks: Vec<f64> = Vec::new();
    let stats = replay_each_with(
        format,
        input,
        TimeLimit::Before(cutoff_ms),
        model.event_time_bounds(),
        strict,
        on_bad_line,
        |event| {
            let in_window = event.timestamp_ms >= window_start;
            let before = match store.find(&event.customer_id) {
                Some(c) if in_window => Some(store.state(c).risk(model, event.timestamp_ms)),
                _ => None,
            };
            if let ApplyOutcome::Scored {
                customer,
                risk_score,
                ..
            } = store.apply(model, event, None, false)
            {
                let i = customer as usize;
                if peaks.len() <= i {
                    peaks.resize(i + 1, f64::NEG_INFINITY);
                }
                if in_window {
                    peaks[i] = peaks[i].max(risk_score).max(before.unwrap_or(0.0));
                }
            }
        },
    )?;
    for (i, peak) in peaks.iter_mut().enumerate() {
        let state = store.state(i as u32);
        if state.events() > 0 {
            *peak = peak.max(state.risk(model, cutoff_ms));
        }
    }
    Ok((store, stats, peaks))
}

/// Alert volume and precision at one at-risk threshold, over the month
/// before the cutoff.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdRow {
    /// The at-risk threshold (0–100).
    pub threshold: f64,
    /// Labelled customers whose risk reached it in the month before the cutoff.
    pub customers: u64,
    /// Their share of all labelled customers: the alert volume per 30 days.
    pub rate: f64,
    /// Of them, the share who churned.
    pub precision: Option<f64>,
    /// Of the churned, the share among them.
    pub recall: Option<f64>,
}

/// The thresholds the text output and the report list (besides the chosen ones).
pub const SHOWN_THRESHOLDS: [f64; 8] = [50.0, 60.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0];

/// Every labelled customer's peak risk in the month before the cutoff (0
/// for a customer without events) with its label.
pub fn labelled_peaks(store: &CustomerStore, peaks: &[f64], labels: &Labels) -> Vec<(f64, bool)> {
    labels
        .sorted()
        .into_iter()
        .map(|(id, churned)| {
            let peak = store
                .find(id)
                .and_then(|c| peaks.get(c as usize).copied())
                .filter(|p| p.is_finite())
                .unwrap_or(0.0);
            (peak, churned)
        })
        .collect()
}

/// The figures of every threshold from 1 to 99.5 in steps of 0.5.
pub fn threshold_table(peaks: &[(f64, bool)]) -> Vec<ThresholdRow> {
    let mut sorted: Vec<(f64, bool)> = peaks.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let total = sorted.len() as u64;
    let churned_total = sorted.iter().filter(|p| p.1).count() as u64;
    let mut rows = Vec::new();
    let (mut k, mut alerted, mut churned) = (0, 0_u64, 0_u64);
    for step in (2..=199).rev() {
        let threshold = f64::from(step) / 2.0;
        while k < sorted.len() && sorted[k].0 >= threshold {
            alerted += 1;
            churned += u64::from(sorted[k].1);
            k += 1;
        }
        rows.push(ThresholdRow {
            threshold,
            customers: alerted,
            rate: if total > 0 {
                alerted as f64 / total as f64
            } else {
                0.0
            },
            precision: (alerted > 0).then(|| churned as f64 / alerted as f64),
            recall: (churned_total > 0).then(|| churned as f64 / churned_total as f64),
        });
    }
    rows.reverse();
    rows
}

/// The lowest threshold whose precision reaches `target` (the most churners
/// found at that precision), if any does.
pub fn threshold_for_precision(table: &[ThresholdRow], target: f64) -> Option<&ThresholdRow> {
    table
        .iter()
        .find(|r| r.customers > 0 && r.precision.is_some_and(|p| p >= target))
}

/// The lowest threshold whose monthly alert volume is at most `target`
/// (share of customers), if any is.
pub fn threshold_for_rate(table: &[ThresholdRow], target: f64) -> Option<&ThresholdRow> {
    table.iter().find(|r| r.rate <= target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_count_customers_at_or_above_and_pick_the_lowest_reaching_a_target() {
        // Peaks 90 (churned), 80 (retained), 80 (churned), 60 (churned), 10 (retained).
        let peaks = [
            (90.0, true),
            (80.0, false),
            (80.0, true),
            (60.0, true),
            (10.0, false),
        ];
        let table = threshold_table(&peaks);
        assert_eq!(table.len(), 198);
        let at = |t: f64| {
            table
                .iter()
                .find(|r| r.threshold == t)
                .expect("on the grid")
        };
        assert_eq!(at(80.0).customers, 3);
        assert_eq!(at(80.0).precision, Some(2.0 / 3.0));
        assert_eq!(at(80.0).recall, Some(2.0 / 3.0));
        assert_eq!(at(80.5).customers, 1);
        assert_eq!(at(60.0).rate, 0.8);
        assert_eq!(at(99.5).precision, None);
        // Precision 1 only above 80. From 10.5 to 60 the four highest are
        // alerted (3 churned, 0.75); at 1 all five (0.6).
        assert_eq!(
            threshold_for_precision(&table, 1.0).map(|r| r.threshold),
            Some(80.5)
        );
        assert_eq!(
            threshold_for_precision(&table, 0.7).map(|r| r.threshold),
            Some(10.5)
        );
        assert_eq!(
            threshold_for_rate(&table, 0.2).map(|r| r.threshold),
            Some(80.5)
        );
        assert_eq!(
            threshold_for_rate(&table, 0.0).map(|r| r.threshold),
            Some(90.5)
        );
    }
}
