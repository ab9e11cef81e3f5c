//! churn-scorer: live churn-risk scoring of customer event streams.
//!
//! The crate is a functional core with thin shells around it:
//!
//! - [`event`], [`model`], [`engine`] and [`alert`] are the pure core: events
//!   in, per-customer state, scores with reasons, alert decisions. No clock,
//!   no I/O, no Kafka.
//! - [`offline`] replays files through the core (`score`).
//! - [`analysis`] measures and fits models against churn labels (`backtest`,
//!   `fit`, HTML reports).
//! - [`telemetry`] defines every metric and the tracing setup.
//!
//! See `ARCHITECTURE.md` for the map of modules.

pub mod alert;
pub mod analysis;
pub mod bench;
pub mod broker;
pub mod changelog;
pub mod config;
pub mod demo;
pub mod engine;
pub mod event;
pub mod forwarding;
pub mod generate;
pub mod http;
pub mod model;
pub mod offline;
pub mod partitioner;
pub mod telemetry;
pub mod worker;
