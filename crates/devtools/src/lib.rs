//! churn-scorer's development tools, behind the binary's default `devtools`
//! feature so the production image builds without them:
//!
//! - [`broker`]: the embedded development broker (librdkafka's mock cluster);
//! - [`demo`]: the one-command tour (broker, worker, a live generated feed);
//! - [`bench`]: the end-to-end benchmark against a bare consumer, kcat and a
//!   Python worker, on the embedded broker or an external cluster;
//! - [`external`]: an external cluster the benchmark uses (reachability
//!   with a deadline, topics of its own created and deleted by admin API).
//!
//! None of this is on the worker's code path: the worker crate does not
//! depend on this one.

pub mod bench;
pub mod broker;
pub mod demo;
pub mod external;
