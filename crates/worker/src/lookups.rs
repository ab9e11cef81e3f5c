//! Lookups: one customer scored from its partition's state
//! (`GET /v1/customers/{id}`), and erasure requests handed to the pipeline
//! threads (`DELETE /v1/customers/{id}`).

use std::sync::Arc;

use serde::Serialize;

use churn_core::engine::{Explanation, Features};
use churn_core::event::format_timestamp_ms;
use churn_core::model::RiskModel;

use crate::commands::{Command, EraseOutcome};
use crate::directory::PartitionDirectory;
use crate::registry::ModelRegistry;

/// Why an erasure could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// The pipeline is not running (starting or stopping).
    #[error("the pipeline is not running")]
    NotRunning,
}

/// One customer, as `GET /v1/customers/{id}` returns it.
#[derive(Debug, Clone, Serialize)]
pub struct CustomerView {
    /// The customer.
    pub customer_id: String,
    /// Input partition holding it.
    pub partition: i32,
    /// Moment scored at (RFC 3339).
    pub as_of: String,
    /// 0–100, same meaning and value as `churn-scorer score` prints.
    pub risk_score: f64,
    /// `low`, `medium` or `high`.
    pub band: &'static str,
    /// Total points.
    pub points: f64,
    /// Factors, largest first.
    pub reasons: Vec<churn_core::engine::Reason>,
    /// The model's inputs.
    pub features: Features,
    /// Latest event time (RFC 3339).
    pub last_event_at: String,
    /// Events applied.
    pub events: u32,
    /// Whether an at-risk alert is open.
    pub alert_open: bool,
    /// Model version.
    pub model_version: String,
    /// The customer's segment (its thresholds set `band` and alerts);
    /// null when the model has no `[segments]`.
    pub segment: Option<String>,
    /// The same customer scored by the shadow model (`model.shadow_path`), if one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowView>,
}

/// A customer as the shadow model sees it (in [`CustomerView`]).
#[derive(Debug, Clone, Serialize)]
pub struct ShadowView {
    /// The shadow model's version.
    pub model_version: String,
    /// 0–100, by the shadow model, at the same `as_of`.
    pub risk_score: f64,
    /// `low`, `medium` or `high`, by the shadow model's thresholds (of the
    /// customer's segment in the shadow model).
    pub band: &'static str,
    /// Total points.
    pub points: f64,
    /// Factors, largest first.
    pub reasons: Vec<churn_core::engine::Reason>,
    /// The customer's segment in the shadow model (null without `[segments]` there).
    pub segment: Option<String>,
    /// Whether the shadow model holds an at-risk alert open for the customer.
    pub alert_open: bool,
}

/// Reads customers from the partition directory and sends erasures through
/// the model registry's command queues.
#[derive(Clone)]
pub struct Lookups {
    directory: Arc<PartitionDirectory>,
    registry: Arc<ModelRegistry>,
}

impl Lookups {
    /// Lookups over `directory`, erasures through `registry`.
    pub fn new(directory: Arc<PartitionDirectory>, registry: Arc<ModelRegistry>) -> Self {
        Lookups {
            directory,
            registry,
        }
    }

    /// Asks every pipeline thread to erase `customer_id`; each answers with
    /// what it found (at most one holds the customer).
    pub fn erase_customer(
        &self,
        customer_id: &str,
    ) -> Result<Vec<tokio::sync::oneshot::Receiver<EraseOutcome>>, EraseError> {
        self.registry
            .with_cores(|cores| {
                cores
                    .iter()
                    .map(|core| {
                        let (done, rx) = tokio::sync::oneshot::channel();
                        core.send(Command::Erase {
                            customer_id: customer_id.to_string(),
                            done,
                        });
                        rx
                    })
                    .collect()
            })
            .ok_or(EraseError::NotRunning)
    }

    /// Scores one customer at `as_of_ms` (default: its partition's watermark).
    pub fn lookup(&self, customer_id: &str, as_of_ms: Option<i64>) -> Option<CustomerView> {
        self.lookup_with_model(customer_id, as_of_ms)
            .map(|(v, _)| v)
    }

    /// As [`Lookups::lookup`], with the model that scored it (its
    /// partition's, which a reload swaps together with the states).
    pub fn lookup_with_model(
        &self,
        customer_id: &str,
        as_of_ms: Option<i64>,
    ) -> Option<(CustomerView, Arc<RiskModel>)> {
        self.directory.find_map(|p, data| {
            let state = data.store.get(customer_id)?;
            let as_of = as_of_ms
                .unwrap_or(data.clock.watermark_ms)
                .max(state.last_event_ms());
            let model = &data.model;
            let Explanation {
                risk_score,
                points,
                reasons,
            } = state.explain(model, as_of);
            let view = CustomerView {
                customer_id: customer_id.to_string(),
                partition: p,
                as_of: format_timestamp_ms(as_of),
                risk_score,
                band: model.band(state.segment(), risk_score),
                points,
                reasons,
                features: state.features(model, as_of),
                last_event_at: format_timestamp_ms(state.last_event_ms()),
                events: state.events(),
                alert_open: state.alert_open(),
                model_version: model.version().to_string(),
                segment: model.segment_name(state.segment()).map(str::to_string),
                shadow: data.shadow.as_ref().and_then(|shadow| {
                    let state = shadow.store.get(customer_id)?;
                    let model = &shadow.model;
                    let Explanation {
                        risk_score,
                        points,
                        reasons,
                    } = state.explain(model, as_of);
                    Some(ShadowView {
                        model_version: model.version().to_string(),
                        risk_score,
                        band: model.band(state.segment(), risk_score),
                        points,
                        reasons,
                        segment: model.segment_name(state.segment()).map(str::to_string),
                        alert_open: state.alert_open(),
                    })
                }),
            };
            Some((view, Arc::clone(model)))
        })
    }
}
