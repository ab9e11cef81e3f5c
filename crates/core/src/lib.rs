//! churn-core: the scoring engine of churn-scorer, with no Kafka, clock or I/O.
//!
//! Events in, per-customer state, scores with reasons, alert decisions:
//!
//! - [`event`]: the event schema and its parser, with stable error reasons;
//! - [`input`]: input formats: the native parser, or any JSON through a mapping;
//! - [`model`]: the model file (`ModelSpec`) and the validated `RiskModel`;
//! - [`engine`]: per-customer state, scoring, timers and alert decisions;
//! - [`alert`]: the alert message subscribers read and its deterministic id;
//! - [`changelog`]: the binary encoding of state the worker persists;
//! - [`offline`]: the replay loop that `score`, `backtest` and `fit` share.
//!
//! The live worker (`churn-worker`), the analysis tools (`churn-analysis`)
//! and the command line run this crate's code unchanged, so a score computed
//! offline equals the one the worker publishes for the same events.
//!
//! It is not a Kafka client, an async runtime or a metrics registry: this
//! crate depends on none of them, and reads no clock.
//!
//! # Example: score a customer's events
//!
//! ```
//! use churn_core::engine::{ApplyOutcome, CustomerStore};
//! use churn_core::event::{parse_event, parse_timestamp_ms};
//! use churn_core::model::RiskModel;
//!
//! let model = RiskModel::default_model();
//! let mut store = CustomerStore::new();
//! let lines = [
//!     r#"{"customer_id":"c1","event_type":"login","timestamp":"2025-03-01T10:00:00Z"}"#,
//!     r#"{"customer_id":"c1","event_type":"purchase","timestamp":"2025-03-02T10:00:00Z","amount":42.5}"#,
//!     r#"{"customer_id":"c1","event_type":"support_ticket","timestamp":"2025-03-03T10:00:00Z"}"#,
//! ];
//! for line in lines {
//!     let event = parse_event(line.as_bytes()).expect("a valid event");
//!     // No input offset (not from Kafka); this event may open an alert.
//!     let outcome = store.apply(&model, &event, None, true);
//!     assert!(matches!(outcome, ApplyOutcome::Scored { .. }));
//! }
//! let state = store.get("c1").expect("c1 was seen");
//! // Scores are a pure function of the state and the time asked about.
//! let soon = parse_timestamp_ms("2025-03-04T00:00:00Z").unwrap();
//! let later = parse_timestamp_ms("2025-06-01T00:00:00Z").unwrap();
//! let (now_risk, later_risk) = (state.risk(&model, soon), state.risk(&model, later));
//! assert!((0.0..=100.0).contains(&now_risk));
//! assert!(later_risk > now_risk, "three months of silence raise the risk");
//! // Every point is explained: the reasons add up to the score's points.
//! let explanation = state.explain(&model, later);
//! assert!(!explanation.reasons.is_empty());
//! ```
//!
//! Malformed input is a typed error with a stable reason label, never a
//! panic:
//!
//! ```
//! use churn_core::event::parse_event;
//!
//! let error = parse_event(br#"{"customer_id":"c1","timestamp":"2025-03-01T10:00:00Z"}"#)
//!     .unwrap_err();
//! assert_eq!(error.reason(), "missing_field");
//! ```

#![warn(missing_docs)]

pub mod alert;
pub mod changelog;
pub mod engine;
pub mod event;
pub mod input;
pub mod model;
pub mod offline;
