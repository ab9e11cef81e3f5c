//! The live worker: a consumer-group member that scores customer events and
//! publishes alerts, dead letters and state, plus the HTTP server.
//!
//! Threads: the pipeline runs on a dedicated thread (librdkafka's blocking
//! polls and callbacks never run on tokio workers); changelog restores run on
//! threads of their own so live partitions keep flowing; tokio runs HTTP and
//! signal handling. See `ARCHITECTURE.md` and `docs/operations.md`.

pub mod config;
mod deletions;
pub mod forwarding;
mod group;
pub mod http;
mod kafka;
pub mod ledger;
pub mod membership;
mod partition;
pub mod partitioner;
pub mod pipeline;
mod restore;
mod run;
pub mod sink;
pub mod telemetry;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::producer::BaseProducer;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;
use crate::telemetry::Metrics;
use churn_core::engine::{Explanation, Features};
use churn_core::event::format_timestamp_ms;
use churn_core::model::{ModelError, RiskModel};

pub use membership::PartitionOwners;
use pipeline::{Command, CoreHandle};
pub use pipeline::{EraseOutcome, PartitionData};
pub use restore::restore_partition;
pub use run::run_pipeline;

/// The consumer configuration the worker's pipeline uses (the benchmark's
/// bare consumer reads with the same settings).
pub fn consumer_client_config(config: &WorkerConfig, group_id: &str) -> rdkafka::ClientConfig {
    kafka::consumer_config(config, group_id)
}

/// Milliseconds since the Unix epoch, from the system clock: the one place
/// the worker reads wall time (skew bound, idle rule, restored clocks).
pub(crate) fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Errors that stop the worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A Kafka client error.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A required topic does not exist.
    #[error(
        "topic `{topic}` does not exist. Create it, e.g.: kafka-topics.sh --create --topic {topic} \
         --partitions {partitions}{extra}"
    )]
    MissingTopic {
        /// Topic name.
        topic: String,
        /// Suggested partitions.
        partitions: i32,
        /// Extra flags for the suggestion.
        extra: &'static str,
    },
    /// The state topic's partition count differs from the input topic's.
    #[error(
        "state topic `{state}` has {state_partitions} partitions but input topic `{input}` has \
         {input_partitions}; they must match (state records go to their input partition's number)"
    )]
    PartitionMismatch {
        /// State topic.
        state: String,
        /// Its partitions.
        state_partitions: usize,
        /// Input topic.
        input: String,
        /// Its partitions.
        input_partitions: usize,
    },
    /// The deletion topic's partition count differs from the input topic's.
    #[error(
        "deletion topic `{deletion}` has {deletion_partitions} partitions but input topic \
         `{input}` has {input_partitions}; they must match (deletion partition p holds the \
         requests for input partition p's customers)"
    )]
    DeletionPartitionMismatch {
        /// Deletion topic.
        deletion: String,
        /// Its partitions.
        deletion_partitions: usize,
        /// Input topic.
        input: String,
        /// Its partitions.
        input_partitions: usize,
    },
    /// A changelog restore made no progress.
    #[error("restore of partition {partition} made no progress for 60 s")]
    RestoreStalled {
        /// Input partition.
        partition: i32,
    },
    /// The shadow model file is unreadable or not a valid model.
    #[error("shadow model file {} (configuration key `model.shadow_path`): {source}", path.display())]
    ShadowModel {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: ModelError,
    },
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(#[from] std::io::Error),
    /// The pipeline thread panicked or vanished.
    #[error("pipeline thread stopped unexpectedly")]
    PipelineStopped,
    /// An output could not be produced for a reason waiting cannot fix.
    #[error(
        "cannot produce to topic `{topic}`: {cause} (check that the topic exists and that the \
         worker's credentials may write to it)"
    )]
    OutputFatal {
        /// The topic.
        topic: String,
        /// The producer's error.
        cause: String,
    },
    /// Shutdown ended before everything was drained and committed.
    #[error(
        "shutdown incomplete (drained: {drained}, offsets committed: {committed}, outputs not \
         acknowledged: {unsettled}); the events concerned are re-read after restart"
    )]
    ShutdownIncomplete {
        /// Every batch acknowledged.
        drained: bool,
        /// The final offsets commit was confirmed.
        committed: bool,
        /// Outputs still not acknowledged at exit.
        unsettled: usize,
    },
}

/// The live model and the shadow model scored beside it, if any: swapped
/// together by a reload.
#[derive(Clone)]
pub struct ModelSet {
    /// The model whose alerts are published.
    pub live: Arc<RiskModel>,
    /// `model.shadow_path`: scored on every event too, its alerts only
    /// counted (and published to `topics.shadow_alerts`, if set).
    pub shadow: Option<Arc<RiskModel>>,
}

/// The models in use and the pipeline threads they are handed to, changed
/// together under one lock so a reload never misses a thread being started.
struct Control {
    model: Arc<RiskModel>,
    shadow: Option<Arc<RiskModel>>,
    /// The file a reload reads (`None`: the built-in model, nothing to reload).
    model_path: Option<PathBuf>,
    /// The shadow model's file, re-read with the model's on a reload.
    shadow_path: Option<PathBuf>,
    cores: Option<Arc<[CoreHandle]>>,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The worker runs the built-in model: there is no file to re-read.
    #[error("no model file configured (`model.path`): the built-in model cannot be reloaded")]
    NoModelFile,
    /// The file is unreadable or not a valid model; the previous model keeps scoring.
    #[error("model refused, the previous one ({kept}) keeps scoring: {source}")]
    Invalid {
        /// Version of the model still in use.
        kept: String,
        /// What is wrong with the file.
        source: ModelError,
    },
    /// The shadow model's file is unreadable or invalid; neither model is
    /// swapped (a reload changes both or neither).
    #[error(
        "shadow model refused (`model.shadow_path`); neither model was swapped, {kept} keeps \
         scoring: {source}"
    )]
    InvalidShadow {
        /// Version of the model still in use.
        kept: String,
        /// What is wrong with the file.
        source: ModelError,
    },
}

/// A model swapped in by [`WorkerShared::reload_model`].
pub struct Reloaded {
    /// Version of the model replaced.
    pub previous_version: String,
    /// Version of the model now in use.
    pub model_version: String,
    /// Version of the shadow model now in use, if any.
    pub shadow_version: Option<String>,
    /// One per pipeline thread, answered once its partitions score with the
    /// new model (empty before the pipeline has started).
    pub applied: Vec<tokio::sync::oneshot::Receiver<()>>,
}

/// Why an erasure could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// The pipeline is not running (starting or stopping).
    #[error("the pipeline is not running")]
    NotRunning,
}

struct SharedPartition {
    data: Arc<RwLock<PartitionData>>,
    live: bool,
}

/// What the HTTP server reads from the running worker.
pub struct WorkerShared {
    control: Mutex<Control>,
    metrics: Metrics,
    partitions: RwLock<BTreeMap<i32, SharedPartition>>,
    joined: AtomicBool,
    /// Who owns each input partition, from the membership topic (empty
    /// without one); replaced whole by the group thread.
    owners: RwLock<Arc<PartitionOwners>>,
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

impl WorkerShared {
    /// A handle with no partitions.
    pub fn new(model: Arc<RiskModel>, metrics: Metrics) -> Arc<Self> {
        Arc::new(WorkerShared {
            control: Mutex::new(Control {
                model,
                shadow: None,
                model_path: None,
                shadow_path: None,
                cores: None,
            }),
            metrics,
            partitions: RwLock::new(BTreeMap::new()),
            joined: AtomicBool::new(false),
            owners: RwLock::new(Arc::new(PartitionOwners::default())),
        })
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The control block. Its holders only swap pointers and queue
    /// commands, so a panic cannot leave it half-changed: a poisoned lock
    /// is used as is.
    fn control(&self) -> std::sync::MutexGuard<'_, Control> {
        self.control
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The model in use (the latest one reloaded).
    pub fn current_model(&self) -> Arc<RiskModel> {
        Arc::clone(&self.control().model)
    }

    /// The live and shadow models in use.
    pub fn current_models(&self) -> ModelSet {
        let control = self.control();
        ModelSet {
            live: Arc::clone(&control.model),
            shadow: control.shadow.clone(),
        }
    }

    /// Sets the file [`WorkerShared::reload_model`] re-reads.
    pub fn set_model_path(&self, path: Option<PathBuf>) {
        self.control().model_path = path;
    }

    /// Sets the shadow model and the file a reload re-reads for it (before
    /// the pipeline starts).
    pub fn set_shadow(&self, shadow: Option<(Arc<RiskModel>, PathBuf)>) {
        let mut control = self.control();
        self.metrics
            .set_shadow_model(shadow.as_ref().map(|(m, _)| m.version()));
        (control.shadow, control.shadow_path) = shadow.unzip();
    }

    /// Re-reads the model file (blocking I/O: call it off async workers).
    /// A valid model becomes the current one and is handed to every
    /// pipeline thread, which swaps it in between batches; an invalid one is
    /// refused and the previous model keeps scoring. Either way it is
    /// logged and counted in `model_reloads_total`.
    pub fn reload_model(&self) -> Result<Reloaded, ReloadError> {
        let path = self
            .control()
            .model_path
            .clone()
            .ok_or(ReloadError::NoModelFile)?;
        let shadow_path = self.control().shadow_path.clone();
        // Read and validated without the lock: restores and erasures go on.
        let loaded = RiskModel::load(&path);
        let loaded_shadow = shadow_path.as_deref().map(RiskModel::load);
        let mut control = self.control();
        let previous_version = control.model.version().to_string();
        let shadow = match loaded_shadow {
            None => None,
            Some(Ok(m)) => Some(Arc::new(m)),
            Some(Err(source)) => {
                self.metrics
                    .model_reloads
                    .with_label_values(&["invalid"])
                    .inc();
                tracing::error!(path = %shadow_path.as_deref().map_or_else(|| "none".into(), |p| p.display().to_string()), error = %source, kept = %previous_version, "model reload refused: the shadow model is invalid; neither model was swapped");
                return Err(ReloadError::InvalidShadow {
                    kept: previous_version,
                    source,
                });
            }
        };
        let model = match loaded {
            Ok(m) => Arc::new(m),
            Err(source) => {
                self.metrics
                    .model_reloads
                    .with_label_values(&["invalid"])
                    .inc();
                tracing::error!(path = %path.display(), error = %source, kept = %previous_version, "model reload refused; the previous model keeps scoring");
                return Err(ReloadError::Invalid {
                    kept: previous_version,
                    source,
                });
            }
        };
        control.model = Arc::clone(&model);
        control.shadow.clone_from(&shadow);
        let models = ModelSet {
            live: Arc::clone(&model),
            shadow,
        };
        let mut applied = Vec::new();
        if let Some(cores) = &control.cores {
            for core in cores.iter() {
                let (done, rx) = tokio::sync::oneshot::channel();
                core.send(Command::Reload {
                    models: models.clone(),
                    done,
                });
                applied.push(rx);
            }
        }
        drop(control);
        self.metrics.model_reloads.with_label_values(&["ok"]).inc();
        self.metrics.set_build_info(model.version());
        let shadow_version = models.shadow.as_ref().map(|m| m.version().to_string());
        self.metrics.set_shadow_model(shadow_version.as_deref());
        tracing::info!(path = %path.display(), previous = %previous_version, model_version = model.version(), shadow_version = shadow_version.as_deref().unwrap_or("none"), "model reloaded");
        Ok(Reloaded {
            previous_version,
            shadow_version,
            model_version: model.version().to_string(),
            applied,
        })
    }

    /// Asks every pipeline thread to erase `customer_id`; each answers with
    /// what it found (at most one holds the customer).
    pub fn erase_customer(
        &self,
        customer_id: &str,
    ) -> Result<Vec<tokio::sync::oneshot::Receiver<EraseOutcome>>, EraseError> {
        let control = self.control();
        let cores = control.cores.as_ref().ok_or(EraseError::NotRunning)?;
        Ok(cores
            .iter()
            .map(|core| {
                let (done, rx) = tokio::sync::oneshot::channel();
                core.send(Command::Erase {
                    customer_id: customer_id.to_string(),
                    done,
                });
                rx
            })
            .collect())
    }

    /// Builds the pipeline cores with the current model and registers them
    /// for reloads and erasures (under the lock a reload takes, so none is
    /// missed).
    fn start_cores(&self, build: impl FnOnce(ModelSet) -> Arc<[CoreHandle]>) -> Arc<[CoreHandle]> {
        let mut control = self.control();
        let cores = build(ModelSet {
            live: Arc::clone(&control.model),
            shadow: control.shadow.clone(),
        });
        control.cores = Some(Arc::clone(&cores));
        cores
    }

    /// Unregisters the cores (the pipeline is stopping).
    fn stop_cores(&self) {
        self.control().cores = None;
    }

    /// Ready: joined the group and every assigned partition is restored.
    pub fn is_ready(&self) -> bool {
        self.joined.load(Ordering::Acquire)
            && self
                .partitions
                .read()
                .is_ok_and(|m| m.values().all(|p| p.live))
    }

    /// Assigned partitions and whether each is live.
    pub fn partition_status(&self) -> Vec<(i32, bool)> {
        self.partitions
            .read()
            .map(|m| m.iter().map(|(p, s)| (*p, s.live)).collect())
            .unwrap_or_default()
    }

    /// Who owns each input partition, as the membership topic says (empty
    /// without `topics.membership`, or before its first record is read).
    pub fn partition_owners(&self) -> Arc<PartitionOwners> {
        self.owners
            .read()
            .map(|o| Arc::clone(&o))
            .unwrap_or_default()
    }

    fn set_partition_owners(&self, owners: PartitionOwners) {
        if let Ok(mut o) = self.owners.write() {
            *o = Arc::new(owners);
        }
    }

    fn partition_count(&self) -> usize {
        self.partitions.read().map_or(0, |m| m.len())
    }

    fn customer_count(&self) -> usize {
        self.partitions.read().map_or(0, |m| {
            m.values()
                .filter_map(|p| p.data.read().ok().map(|d| d.store.len()))
                .sum()
        })
    }

    fn set_joined(&self) {
        self.joined.store(true, Ordering::Release);
    }

    fn insert_partition(&self, p: i32, data: Arc<RwLock<PartitionData>>, live: bool) {
        if let Ok(mut m) = self.partitions.write() {
            m.insert(p, SharedPartition { data, live });
        }
    }

    fn set_partition_live(&self, p: i32) {
        if let Ok(mut m) = self.partitions.write()
            && let Some(s) = m.get_mut(&p)
        {
            s.live = true;
        }
    }

    fn remove_partition(&self, p: i32) {
        if let Ok(mut m) = self.partitions.write() {
            m.remove(&p);
        }
    }

    /// Scores one customer at `as_of_ms` (default: its partition's watermark).
    pub fn lookup(&self, customer_id: &str, as_of_ms: Option<i64>) -> Option<CustomerView> {
        self.lookup_with_model(customer_id, as_of_ms)
            .map(|(v, _)| v)
    }

    /// As [`WorkerShared::lookup`], with the model that scored it (its
    /// partition's, which a reload swaps together with the states).
    pub fn lookup_with_model(
        &self,
        customer_id: &str,
        as_of_ms: Option<i64>,
    ) -> Option<(CustomerView, Arc<RiskModel>)> {
        let partitions = self.partitions.read().ok()?;
        for (&p, shared) in partitions.iter() {
            let Ok(data) = shared.data.read() else {
                continue;
            };
            let Some(state) = data.store.get(customer_id) else {
                continue;
            };
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
            return Some((view, Arc::clone(model)));
        }
        None
    }
}

/// Checks the topics before joining: the input exists, and the state topic
/// exists with the same partition count. Returns the input topic's
/// partition count, or `None` if `shutdown` was requested while waiting for
/// the brokers.
fn preflight(
    config: &WorkerConfig,
    producer: &BaseProducer<kafka::DeliveryContext>,
    shutdown: &CancellationToken,
) -> Result<Option<usize>, WorkerError> {
    use rdkafka::producer::Producer;
    // None: shutdown was requested while waiting.
    let partitions_of = |topic: &str| -> Result<Option<usize>, WorkerError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if shutdown.is_cancelled() {
                return Ok(None);
            }
            match producer
                .client()
                .fetch_metadata(Some(topic), Duration::from_secs(5))
            {
                Ok(md) => {
                    let t = md.topics().iter().find(|t| t.name() == topic);
                    match t {
                        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                            return Ok(Some(t.partitions().len()));
                        }
                        _ => return Ok(Some(0)),
                    }
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, "waiting for the brokers");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let Some(input) = partitions_of(&config.topics.input)? else {
        return Ok(None);
    };
    if input == 0 {
        return Err(WorkerError::MissingTopic {
            topic: config.topics.input.clone(),
            partitions: 12,
            extra: "",
        });
    }
    let Some(state) = partitions_of(&config.topics.state)? else {
        return Ok(None);
    };
    if state == 0 {
        return Err(WorkerError::MissingTopic {
            topic: config.topics.state.clone(),
            partitions: input as i32,
            extra: " --config cleanup.policy=compact",
        });
    }
    if state != input {
        return Err(WorkerError::PartitionMismatch {
            state: config.topics.state.clone(),
            state_partitions: state,
            input: config.topics.input.clone(),
            input_partitions: input,
        });
    }
    if let Some(deletion) = &config.topics.deletion {
        let Some(count) = partitions_of(deletion)? else {
            return Ok(None);
        };
        if count == 0 {
            return Err(WorkerError::MissingTopic {
                topic: deletion.clone(),
                partitions: input as i32,
                extra: "",
            });
        }
        if count != input {
            return Err(WorkerError::DeletionPartitionMismatch {
                deletion: deletion.clone(),
                deletion_partitions: count,
                input: config.topics.input.clone(),
                input_partitions: input,
            });
        }
    }
    if let Some(shadow) = &config.topics.shadow_alerts {
        let Some(count) = partitions_of(shadow)? else {
            return Ok(None);
        };
        if count == 0 {
            return Err(WorkerError::MissingTopic {
                topic: shadow.clone(),
                partitions: input as i32,
                extra: "",
            });
        }
    }
    Ok(Some(input))
}

/// The worker, built from its configuration: an HTTP listener bound, the
/// model loaded, ready to [`run`](Worker::run).
pub struct Worker {
    config: WorkerConfig,
    metrics: Metrics,
    shared: Arc<WorkerShared>,
    listener: tokio::net::TcpListener,
}

impl Worker {
    /// Binds the HTTP address and prepares the pipeline.
    pub async fn bind(
        config: WorkerConfig,
        model: RiskModel,
        metrics: Metrics,
    ) -> Result<Self, WorkerError> {
        let model = Arc::new(model);
        metrics.set_build_info(model.version());
        let shared = WorkerShared::new(Arc::clone(&model), metrics.clone());
        shared.set_model_path(config.model.path.clone());
        if let Some(path) = &config.model.shadow_path {
            let shadow = RiskModel::load(path).map_err(|source| WorkerError::ShadowModel {
                path: path.clone(),
                source,
            })?;
            tracing::info!(path = %path.display(), model_version = shadow.version(), "shadow model loaded");
            shared.set_shadow(Some((Arc::new(shadow), path.clone())));
        }
        let addr = config
            .http_addr()
            .map_err(|e| WorkerError::Http(std::io::Error::other(e.to_string())))?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        // Known only now when `http.addr` asked for port 0; the membership
        // claim and loop detection use this one value.
        let mut config = config;
        config.http.advertised_url = Some(config.advertised_url(listener.local_addr()?));
        Ok(Worker {
            config,
            metrics,
            shared,
            listener,
        })
    }

    /// The address the HTTP server listens on.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The handle the HTTP server reads (also useful to tests and the demo).
    pub fn shared(&self) -> Arc<WorkerShared> {
        Arc::clone(&self.shared)
    }

    /// Runs the pipeline thread and the HTTP server until `shutdown` is
    /// cancelled (or the pipeline fails), then shuts both down gracefully.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let Worker {
            config,
            metrics,
            shared,
            listener,
        } = self;
        tracing::info!(addr = %listener.local_addr()?, "http listening");
        let router = crate::http::worker_router(Arc::clone(&shared), &config);
        let http_shutdown = shutdown.clone();
        let http = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
                .await
        });
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let pipeline_shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name("group".into())
            .spawn(move || {
                let result = run_pipeline(config, metrics, shared, pipeline_shutdown);
                let _ = done_tx.send(result);
            })?;
        let result = done_rx.await.unwrap_or(Err(WorkerError::PipelineStopped));
        shutdown.cancel();
        match http.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "http server error"),
            Err(e) => tracing::warn!(error = %e, "http task failed"),
        }
        result
    }
}
