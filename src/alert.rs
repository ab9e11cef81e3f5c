//! Alerts as published on the alerts topic (`docs/alerts.md`,
//! `docs/schemas/alert.schema.json`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::engine::{AlertDecision, Explanation};
use crate::event::format_timestamp_ms;

/// Version of the alert JSON; also sent in the `schema_version` header.
pub const ALERT_SCHEMA_VERSION: u32 = 1;

/// Namespace of alert ids (UUID v5), fixed forever so ids stay stable across releases.
const ALERT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c1f_3a52_93d4_4c59_a1de_0b5e_8e4f_2c71);

/// One factor's points in an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertReason {
    /// Factor name (`inactivity`, `event:complaint`, …).
    pub factor: String,
    /// Points it contributed.
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
    /// Risk score (0–100) that triggered the alert.
    pub risk_score: f64,
    /// Risk score at the customer's previous scoring.
    pub previous_score: f64,
    /// The threshold crossed.
    pub threshold: f64,
    /// Total points behind `risk_score`; the reasons' points add up to it.
    pub points: f64,
    /// Every non-zero factor, largest first.
    pub reasons: Vec<AlertReason>,
    /// Event time of the scoring (RFC 3339, UTC).
    pub event_time: String,
    /// `model_version` of the model that scored.
    pub model_version: String,
    /// What triggered the decision: `event`, `inactivity` or
    /// `late_activity` (a late event showed an inactivity alert was false).
    #[serde(default)]
    pub cause: String,
}

impl Alert {
    /// Builds the alert for a decision, with the explanation of the same score.
    pub fn new(
        customer_id: &str,
        decision: &AlertDecision,
        explanation: &Explanation,
        model_version: &str,
    ) -> Self {
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
            risk_score: decision.risk_score,
            previous_score: decision.previous_score,
            threshold: decision.threshold,
            points: explanation.points,
            reasons: explanation
                .reasons
                .iter()
                .map(|r| AlertReason {
                    factor: r.factor.clone(),
                    points: r.points,
                })
                .collect(),
            event_time: format_timestamp_ms(decision.event_time_ms),
            model_version: model_version.to_string(),
            cause: decision.cause.as_str().to_string(),
        }
    }

    /// The JSON bytes published.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("alerts serialize")
    }
}

/// UUID v5 of (customer, kind, event time, model version).
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
