//! Alerts as published on the alerts topic (`docs/alerts.md`,
//! `docs/schemas/alert.schema.json`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::engine::{AlertDecision, AlertKind, Explanation};
use crate::event::format_timestamp_ms;
use crate::model::{RiskModel, default_label};

/// Version of the alert JSON; also sent in the `schema_version` header.
/// Version 2: reasons carry a `label`, numbers are rounded to one decimal,
/// `base` is not a reason, `previous_score` may be null, and a `recovered`
/// alert lists the factors that lowered the risk first.
pub const ALERT_SCHEMA_VERSION: u32 = 2;

/// Namespace of alert ids (UUID v5), fixed forever so ids stay stable across releases.
const ALERT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c1f_3a52_93d4_4c59_a1de_0b5e_8e4f_2c71);

/// One factor's points in an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertReason {
    /// Factor code (`inactivity`, `event:complaint`, …), stable for machines.
    pub factor: String,
    /// The factor in words, for people (the model file's `label` or a default).
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
    /// The label of a factor code.
    fn factor_label(&self, factor: &str) -> String;
    /// The name of a segment index, or `None` for a model without segments.
    fn alert_segment_name(&self, _segment: u8) -> Option<&str> {
        None
    }
}

impl AlertModel for RiskModel {
    fn alert_model_version(&self) -> &str {
        self.version()
    }
    fn factor_label(&self, factor: &str) -> String {
        self.label(factor)
    }
    fn alert_segment_name(&self, segment: u8) -> Option<&str> {
        self.segment_name(segment)
    }
}

impl AlertModel for str {
    fn alert_model_version(&self) -> &str {
        self
    }
    fn factor_label(&self, factor: &str) -> String {
        default_label(factor)
    }
}

impl<T: AlertModel + ?Sized> AlertModel for &T {
    fn alert_model_version(&self) -> &str {
        (**self).alert_model_version()
    }
    fn factor_label(&self, factor: &str) -> String {
        (**self).factor_label(factor)
    }
    fn alert_segment_name(&self, segment: u8) -> Option<&str> {
        (**self).alert_segment_name(segment)
    }
}

impl<T: AlertModel + ?Sized> AlertModel for std::sync::Arc<T> {
    fn alert_model_version(&self) -> &str {
        (**self).alert_model_version()
    }
    fn factor_label(&self, factor: &str) -> String {
        (**self).factor_label(factor)
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
            .map(|r| AlertReason {
                label: model.factor_label(&r.factor),
                factor: r.factor.clone(),
                points: round1(r.points),
            })
            .filter(|r| r.points != 0.0)
            .collect();
        // The explanation lists the largest points first; a recovery is
        // explained by what lowered the risk, so it leads with the most negative.
        if decision.kind == AlertKind::Recovered {
            reasons.sort_by(|a, b| a.points.total_cmp(&b.points).then(a.factor.cmp(&b.factor)));
        } else {
            reasons.sort_by(|a, b| b.points.total_cmp(&a.points).then(a.factor.cmp(&b.factor)));
        }
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
