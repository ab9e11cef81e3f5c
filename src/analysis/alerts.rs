//! What subscribers would have received: the at-risk alerts of a whole
//! history replayed as the live worker reads it, measured against outcomes.
//!
//! A backtest at a cutoff ranks customers; this measures the alerts
//! themselves — how many customers ever get one (each costs an e-mail, a
//! discount or a call), and how many of those alerted from some moment on
//! really left.

use std::collections::HashSet;

use crate::analysis::labels::Labels;
use crate::engine::AlertKind;
use crate::model::RiskModel;
use crate::offline::replay_alerts;

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
