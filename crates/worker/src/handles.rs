//! The worker's shared handles, bundled: what the HTTP server, the binary,
//! the demo and tests reach a running worker through. Each concern is its
//! own handle (mini-redis style): code takes only the ones it needs.

use std::sync::Arc;

use churn_core::model::RiskModel;

use crate::directory::PartitionDirectory;
use crate::lookups::Lookups;
use crate::registry::ModelRegistry;
use crate::telemetry::Metrics;

/// One worker's handles.
#[derive(Clone)]
pub struct WorkerHandles {
    /// The models in use and their reloads.
    pub registry: Arc<ModelRegistry>,
    /// Assigned partitions, readiness, ownership.
    pub directory: Arc<PartitionDirectory>,
    /// Customer lookups and erasure requests.
    pub lookups: Lookups,
    /// The metrics registry.
    pub metrics: Metrics,
}

impl WorkerHandles {
    /// Handles scoring with `model`, no partitions.
    pub fn new(model: Arc<RiskModel>, metrics: Metrics) -> Self {
        let registry = ModelRegistry::new(model, metrics.clone());
        let directory = PartitionDirectory::new();
        let lookups = Lookups::new(Arc::clone(&directory), Arc::clone(&registry));
        WorkerHandles {
            registry,
            directory,
            lookups,
            metrics,
        }
    }
}
