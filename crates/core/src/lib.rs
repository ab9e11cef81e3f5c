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

pub mod alert;
pub mod changelog;
pub mod engine;
pub mod event;
pub mod input;
pub mod model;
pub mod offline;
