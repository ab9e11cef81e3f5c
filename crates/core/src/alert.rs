//! Alerts as published on the alerts topic (`docs/alerts.md`,
//! `docs/schemas/alert.schema.json`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::engine::{AlertDecision, AlertKind, Explanation, Reason};
use crate::event::format_timestamp_ms;
use crate::model::{Quantities, RiskModel, default_label, fill_label};

/// Version of the alert JSON; also sent in the `schema_version` header.
/// Version 2: reasons carry a `label`, numbers are rounded to one decimal,
/// `base` is not a reason, `previous_score` may be null, and a `recovered`
/// alert lists the factors that lowered the risk first. Version 3 adds
/// `summary` (a version 2 reader that ignores unknown fields is unaffected)
/// and fills the labels' placeholders with the reasons' quantities.
pub const ALERT_SCHEMA_VERSION: u32 = 3;

/// Most sentences in an alert's `summary`.
pub const SUMMARY_SENTENCES: usize = 3;

/// Namespace of alert ids (UUID v5), fixed forever so ids stay stable across releases.
const ALERT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c1f_3a52_93d4_4c59_a1de_0b5e_8e4f_2c71);

/// One factor's points in an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertReason {
    /// Factor code (`inactivity`, `event:complaint`, …), stable for machines.
    pub factor: String,
    /// The factor in words with its quantities, for people (the model
    /// file's `label` or a default, placeholders filled).
    pub label: String,
    /// Points it contributed, rounded to one decimal (negative lowered the risk).
    pub points: f64,
}

/// An alert message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Always [`ALERT_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Deterministic id: the same customer, kind, event time and model give the same id.
    pub alert_id: String,
    /// `at_risk` or `recovered`.
    pub kind: String,
    /// The customer (also the message key).
    pub customer_id: String,
    /// Risk score (0–100) that triggered the alert, rounded to one decimal.
    pub risk_score: f64,
    /// Risk score at the customer's previous scoring (one decimal); `None`
    /// (JSON null) when the customer had not been scored before.
    pub previous_score: Option<f64>,
    /// The threshold crossed.
    pub threshold: f64,
    /// Total points behind `risk_score` (one decimal), including the model's
    /// base points, which are not listed among the reasons.
    pub points: f64,
    /// For people: the labels of at most [`SUMMARY_SENTENCES`] reasons that
    /// point the alert's way (`at_risk`: raised the risk, largest first;
    /// `recovered`: lowered it, largest reduction first). Empty in alerts
    /// of schema version 2.
    #[serde(default)]
    pub summary: Vec<String>,
    /// Every factor but the base whose rounded points are not zero: for
    /// `at_risk` the largest risk first, for `recovered` the largest
    /// reduction first.
    pub reasons: Vec<AlertReason>,
    /// Event time of the scoring (RFC 3339, UTC).
    pub event_time: String,
    /// `model_version` of the model that scored.
    pub model_version: String,
    /// What triggered the decision: `event`, `inactivity` or
    /// `late_activity` (a late event showed an inactivity alert was false).
    #[serde(default)]
    pub cause: String,
    /// The customer's segment when the alert was decided (its thresholds
    /// are the ones crossed); `None` (JSON null) when the model has no
    /// `[segments]`. Not part of the alert id.
    #[serde(default)]
    pub segment: Option<String>,
}

/// What an alert needs from the model: its version and the factors' labels.
///
/// [`RiskModel`] gives the model file's labels; a bare version string (`&str`)
/// gives the built-in default labels.
pub trait AlertModel {
    /// The model version copied into the alert (and its id).
    fn alert_model_version(&self) -> &str;
    /// The label of a factor code, filled with a reason's quantities.
    fn reason_label(&self, factor: &str, quantities: &Quantities) -> String;
    /// The name of a segment index, or `None` for a model without segments.
    fn alert_segment_name(&self, _segment: u8) -> Option<&str> {
        None
    }
}

impl AlertModel for RiskModel {
    fn alert_model_version(&self) -> &str {
        self.version()
    }
    fn reason_label(&self, factor: &str, quantities: &Quantities) -> String {
        RiskModel::reason_label(self, factor, quantities)
    }
    fn alert_segment_name(&self, segment: u8) -> Option<&str> {
        self.segment_name(segment)
    }
}

impl AlertModel for str {
    fn alert_model_version(&self) -> &str {
        self
    }
    fn reason_label(&self, factor: &str, quantities: &Quantities) -> String {
        fill_label(&default_label(factor), quantities)
    }
}

impl<T: AlertModel + ?Sized> AlertModel for &T {
    fn alert_model_version(&self) -> &str {
        (**self).alert_model_version()
    }
    fn reason_label(&self, factor: &str, quantities: &Quantities) -> String {
        (**self).reason_label(factor, quantities)
    }
    fn alert_segment_name(&self, segment: u8) -> Option<&str> {
        (**self).alert_segment_name(segment)
    }
}

impl<T: AlertModel + ?Sized> AlertModel for std::sync::Arc<T> {
    fn alert_model_version(&self) -> &str {
        (**self).alert_model_version()
    }
    fn reason_label(&self, factor: &str, quantities: &Quantities) -> String {
        (**self).reason_label(factor, quantities)
    }
    fn alert_segment_name(&self, segment: u8) -> Option<&str> {
        (**self).alert_segment_name(segment)
    }
}

/// Rounds to one decimal, as alerts print numbers (and never `-0.0`).
pub fn round1(x: f64) -> f64 {
    let r = (x * 10.0).round() / 10.0;
    if r == 0.0 { 0.0 } else { r }
}

impl Alert {
    /// Builds the alert for a decision, with the explanation of the same score.
    pub fn new(
        customer_id: &str,
        decision: &AlertDecision,
        explanation: &Explanation,
        model: &(impl AlertModel + ?Sized),
    ) -> Self {
        let model_version = model.alert_model_version();
        let mut reasons: Vec<AlertReason> = explanation
            .reasons
            .iter()
            .filter(|r| r.factor != "base")
            .filter(|r| round1(r.points) != 0.0)
            .map(|r| AlertReason {
                label: model.reason_label(&r.factor, &r.quantities),
                factor: r.factor.clone(),
                points: round1(r.points),
            })
            .collect();
        // The explanation lists the largest points first; a recovery is
        // explained by what lowered the risk, so it leads with the most negative.
        let recovered = decision.kind == AlertKind::Recovered;
        if recovered {
            reasons.sort_by(|a, b| a.points.total_cmp(&b.points).then(a.factor.cmp(&b.factor)));
        } else {
            reasons.sort_by(|a, b| b.points.total_cmp(&a.points).then(a.factor.cmp(&b.factor)));
        }
        let summary = reasons
            .iter()
            .take_while(|r| (r.points < 0.0) == recovered)
            .take(SUMMARY_SENTENCES)
            .map(|r| r.label.clone())
            .collect();
        Alert {
            schema_version: ALERT_SCHEMA_VERSION,
            alert_id: alert_id(
                customer_id,
                decision.kind.as_str(),
                decision.event_time_ms,
                model_version,
            ),
            kind: decision.kind.as_str().to_string(),
            customer_id: customer_id.to_string(),
            risk_score: round1(decision.risk_score),
            // A customer's first scoring compares with the engine's initial 0.
            previous_score: (decision.previous_score > 0.0)
                .then(|| round1(decision.previous_score)),
            threshold: round1(decision.threshold),
            points: round1(explanation.points),
            summary,
            reasons,
            event_time: format_timestamp_ms(decision.event_time_ms),
            model_version: model_version.to_string(),
            cause: decision.cause.as_str().to_string(),
            segment: model
                .alert_segment_name(decision.segment)
                .map(str::to_string),
        }
    }

    /// The JSON bytes published.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("alerts serialize")
    }
}

/// The summary of a score for people, as an at-risk alert at the same
/// moment gives it: the filled labels of at most [`SUMMARY_SENTENCES`]
/// reasons that raised the risk (points of at least 0.05), largest first.
/// `reasons` are an [`Explanation`]'s.
pub fn risk_summary(reasons: &[Reason], model: &(impl AlertModel + ?Sized)) -> Vec<String> {
    // Ordered as an alert orders its reasons: by rounded points, then code.
    let mut raising: Vec<&Reason> = reasons
        .iter()
        .filter(|r| r.factor != "base" && round1(r.points) > 0.0)
        .collect();
    raising.sort_by(|a, b| {
        round1(b.points)
            .total_cmp(&round1(a.points))
            .then(a.factor.cmp(&b.factor))
    });
    raising
        .into_iter()
        .take(SUMMARY_SENTENCES)
        .map(|r| model.reason_label(&r.factor, &r.quantities))
        .collect()
}

/// UUID v5 of (customer, kind, event time, model version). The segment is
/// left out on purpose: ids are subscribers' idempotency keys, and those of
/// models without segments must not change (a customer's segment at a
/// moment is fixed by the events anyway).
pub fn alert_id(customer_id: &str, kind: &str, event_time_ms: i64, model_version: &str) -> String {
    // Length-prefixed fields so that no two different tuples share a name.
    let name = format!(
        "{}:{customer_id}|{kind}|{event_time_ms}|{}:{model_version}",
        customer_id.len(),
        model_version.len()
    );
    Uuid::new_v5(&ALERT_ID_NAMESPACE, name.as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let a = alert_id("c1", "at_risk", 1000, "v1");
        assert_eq!(a, alert_id("c1", "at_risk", 1000, "v1"));
        assert_ne!(a, alert_id("c1", "recovered", 1000, "v1"));
        assert_ne!(a, alert_id("c1", "at_risk", 1001, "v1"));
        assert_ne!(a, alert_id("c2", "at_risk", 1000, "v1"));
        assert_ne!(a, alert_id("c1", "at_risk", 1000, "v2"));
        assert!(Uuid::parse_str(&a).is_ok());
    }
}
