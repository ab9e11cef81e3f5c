//! Analysts' tools: measure a model against known outcomes (`backtest`),
//! fit a model's points to them (`fit`), and draw the results (`report`).
//!
//! Both commands replay events through the same engine the live worker runs
//! ([`churn_core::offline::replay`]), strictly before a cutoff, so that what is
//! measured or fitted is exactly what production would score, and no event
//! from after the cutoff can leak into a figure. See `docs/analysis.md`.

pub mod alerts;
pub mod backtest;
pub mod fit;
pub mod labels;
pub mod logistic;
pub mod metrics;
pub mod report;
