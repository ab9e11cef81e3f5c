//! The live worker: a consumer-group member that scores customer events and
//! publishes alerts, dead letters and state, plus the HTTP server.
//!
//! Threads: the pipeline runs on a dedicated thread (librdkafka's blocking
//! polls and callbacks never run on tokio workers); changelog restores run on
//! threads of their own so live partitions keep flowing; tokio runs HTTP and
//! signal handling. See `ARCHITECTURE.md` and `docs/operations.md`.

mod kafka;
pub mod pipeline;
mod restore;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::Statistics;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::BaseProducer;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;
use crate::engine::{Explanation, Features};
use crate::event::format_timestamp_ms;
use crate::model::RiskModel;
use crate::offline::band;
use crate::telemetry::Metrics;

pub use pipeline::PartitionData;
pub use restore::restore_partition;

/// The consumer configuration the worker's pipeline uses (the benchmark's
/// bare consumer reads with the same settings).
pub(crate) fn consumer_client_config(
    config: &WorkerConfig,
    group_id: &str,
) -> rdkafka::ClientConfig {
    kafka::consumer_config(config, group_id)
}

use pipeline::{Core, set_paused};

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
    /// A changelog restore made no progress.
    #[error("restore of partition {partition} made no progress for 60 s")]
    RestoreStalled {
        /// Input partition.
        partition: i32,
    },
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(#[from] std::io::Error),
    /// The pipeline thread panicked or vanished.
    #[error("pipeline thread stopped unexpectedly")]
    PipelineStopped,
}

struct SharedPartition {
    data: Arc<RwLock<PartitionData>>,
    live: bool,
}

/// What the HTTP server reads from the running worker.
pub struct WorkerShared {
    model: Arc<RiskModel>,
    metrics: Metrics,
    partitions: RwLock<BTreeMap<i32, SharedPartition>>,
    joined: AtomicBool,
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
    pub reasons: Vec<crate::engine::Reason>,
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
}

impl WorkerShared {
    /// A handle with no partitions.
    pub fn new(model: Arc<RiskModel>, metrics: Metrics) -> Arc<Self> {
        Arc::new(WorkerShared {
            model,
            metrics,
            partitions: RwLock::new(BTreeMap::new()),
            joined: AtomicBool::new(false),
        })
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The model in use.
    pub fn model(&self) -> &RiskModel {
        &self.model
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
        let partitions = self.partitions.read().ok()?;
        for (&p, shared) in partitions.iter() {
            let Ok(data) = shared.data.read() else {
                continue;
            };
            let Some(state) = data.store.get(customer_id) else {
                continue;
            };
            let as_of = as_of_ms
                .unwrap_or(data.watermark_ms)
                .max(state.last_event_ms());
            let Explanation {
                risk_score,
                points,
                reasons,
            } = state.explain(&self.model, as_of);
            return Some(CustomerView {
                customer_id: customer_id.to_string(),
                partition: p,
                as_of: format_timestamp_ms(as_of),
                risk_score,
                band: band(&self.model, risk_score),
                points,
                reasons,
                features: state.features(&self.model, as_of),
                last_event_at: format_timestamp_ms(state.last_event_ms()),
                events: state.events(),
                alert_open: state.alert_open(),
                model_version: self.model.version().to_string(),
            });
        }
        None
    }
}

/// The consumer's context: rebalance handling and statistics.
struct GroupContext {
    core: Arc<Mutex<Core>>,
    shared: Arc<WorkerShared>,
    metrics: Metrics,
    input_topic: String,
    drain_timeout: Duration,
}

impl GroupContext {
    fn input_partitions(&self, tpl: &rdkafka::TopicPartitionList) -> Vec<i32> {
        tpl.elements()
            .iter()
            .filter(|e| e.topic() == self.input_topic)
            .map(|e| e.partition())
            .collect()
    }
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.input_topic) else {
            return;
        };
        let owned: Vec<i32> = self
            .shared
            .partition_status()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        for (p, stats) in &topic.partitions {
            if *p >= 0 && owned.contains(p) && stats.consumer_lag >= 0 {
                self.metrics
                    .consumer_lag
                    .with_label_values(&[&p.to_string()])
                    .set(stats.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let partitions = self.input_partitions(tpl);
            tracing::info!(?partitions, "partitions revoked: draining");
            let Ok(mut core) = self.core.lock() else {
                return;
            };
            let deadline = Instant::now() + self.drain_timeout;
            if !core.drain(&partitions, deadline) {
                tracing::warn!(
                    ?partitions,
                    "drain timed out; uncommitted events will be re-read by the next owner"
                );
            }
            store_offsets(consumer, &self.input_topic, core.take_offsets());
            commit(consumer);
            core.forget(&partitions);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions = self.input_partitions(tpl);
                tracing::info!(?partitions, "partitions assigned: restoring state");
                for &p in &partitions {
                    if let Err(e) = set_paused(consumer, &self.input_topic, p, true) {
                        tracing::warn!(partition = p, error = %e, "cannot pause partition during restore");
                    }
                }
                if let Ok(mut core) = self.core.lock() {
                    core.assign(&partitions);
                }
                self.shared.joined.store(true, Ordering::Release);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance error"),
        }
    }
}

fn store_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    offsets: Vec<(i32, i64)>,
) {
    for (p, offset) in offsets {
        if let Err(e) = consumer.store_offset(topic, p, offset) {
            tracing::debug!(partition = p, offset, error = %e, "offset not stored (partition no longer assigned)");
        }
    }
}

fn commit<C: ConsumerContext>(consumer: &BaseConsumer<C>) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {}
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(error = %e, "offset commit failed"),
    }
}

/// Checks the topics before joining: the input exists, and the state topic
/// exists with the same partition count.
fn preflight(
    config: &WorkerConfig,
    producer: &BaseProducer<kafka::DeliveryContext>,
) -> Result<(), WorkerError> {
    use rdkafka::producer::Producer;
    let partitions_of = |topic: &str| -> Result<usize, WorkerError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match producer
                .client()
                .fetch_metadata(Some(topic), Duration::from_secs(10))
            {
                Ok(md) => {
                    let t = md.topics().iter().find(|t| t.name() == topic);
                    match t {
                        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                            return Ok(t.partitions().len());
                        }
                        _ => return Ok(0),
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
    let input = partitions_of(&config.topics.input)?;
    if input == 0 {
        return Err(WorkerError::MissingTopic {
            topic: config.topics.input.clone(),
            partitions: 12,
            extra: "",
        });
    }
    let state = partitions_of(&config.topics.state)?;
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
    Ok(())
}

/// Locks the core; a poisoned lock means a panic on the pipeline thread.
fn lock(core: &Mutex<Core>) -> Result<std::sync::MutexGuard<'_, Core>, WorkerError> {
    core.lock().map_err(|_| WorkerError::PipelineStopped)
}

struct RestoreDone {
    partition: i32,
    epoch: u64,
    result: Result<restore::Restored, WorkerError>,
}

/// Runs the pipeline on the current (dedicated) thread until `shutdown`.
pub fn run_pipeline(
    config: WorkerConfig,
    model: Arc<RiskModel>,
    metrics: Metrics,
    shared: Arc<WorkerShared>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let producer: BaseProducer<kafka::DeliveryContext> =
        kafka::producer_config(&config).create_with_context(kafka::DeliveryContext::default())?;
    preflight(&config, &producer)?;
    let input_topic = config.topics.input.clone();
    let drain_timeout = Duration::from_secs(config.shutdown.drain_timeout_secs);
    let core = Arc::new(Mutex::new(Core::new(
        config.clone(),
        Arc::clone(&model),
        metrics.clone(),
        Arc::clone(&shared),
        producer,
    )));
    let context = GroupContext {
        core: Arc::clone(&core),
        shared: Arc::clone(&shared),
        metrics: metrics.clone(),
        input_topic: input_topic.clone(),
        drain_timeout,
    };
    let consumer: BaseConsumer<GroupContext> =
        kafka::consumer_config(&config, &config.kafka.group_id).create_with_context(context)?;
    consumer.subscribe(&[&input_topic])?;
    tracing::info!(topic = %input_topic, group = %config.kafka.group_id, "subscribed");

    let (restore_tx, restore_rx) = mpsc::channel::<RestoreDone>();
    let mut retry_restores: Vec<(Instant, i32, u64)> = Vec::new();
    let mut restores_running = 0_usize;
    // What the loop knows from its last look at the core (it looks whenever it
    // holds the lock, and after anything that may have run rebalance callbacks):
    // restore requests made, outputs over the in-flight bound, outputs awaiting acks.
    let mut check_restores = true;
    let mut backpressured = false;
    let mut awaiting_acks = false;
    let mut busy = false;
    let mut since_serve = 0_u32;
    let mut since_cancel_check = 0_u32;
    let mut last_tick = Instant::now();

    loop {
        // The token takes a lock: while busy, look every 64 messages (well under a millisecond).
        if !busy || since_cancel_check >= 64 {
            since_cancel_check = 0;
            if shutdown.is_cancelled() {
                break;
            }
        }
        since_cancel_check += 1;

        // Restores: start requested ones, install finished ones.
        if check_restores || restores_running > 0 || !retry_restores.is_empty() {
            check_restores = false;
            let mut c = lock(&core)?;
            let now = Instant::now();
            let mut requests: Vec<(i32, u64)> = c
                .restore_requests
                .drain(..)
                .map(|r| (r.partition, r.epoch))
                .collect();
            retry_restores.retain(|&(at, p, e)| {
                if at <= now {
                    requests.push((p, e));
                    false
                } else {
                    true
                }
            });
            drop(c);
            for (partition, epoch) in requests {
                let tx = restore_tx.clone();
                let config = config.clone();
                let model = Arc::clone(&model);
                let spawned = std::thread::Builder::new()
                    .name(format!("restore-{partition}"))
                    .spawn(move || {
                        let result = restore_partition(&config, &model, partition);
                        let _ = tx.send(RestoreDone {
                            partition,
                            epoch,
                            result,
                        });
                    });
                if spawned.is_ok() {
                    restores_running += 1;
                } else {
                    retry_restores.push((
                        Instant::now() + Duration::from_secs(1),
                        partition,
                        epoch,
                    ));
                }
            }
            while let Ok(done) = restore_rx.try_recv() {
                restores_running = restores_running.saturating_sub(1);
                match done.result {
                    Ok(restored) => {
                        let installed =
                            lock(&core)?.install_restore(done.partition, done.epoch, restored);
                        if let Some(rewind) = installed {
                            if let Some(offset) = rewind
                                && let Err(e) = consumer.seek(
                                    &input_topic,
                                    done.partition,
                                    rdkafka::Offset::Offset(offset),
                                    Duration::from_secs(10),
                                )
                            {
                                tracing::error!(partition = done.partition, error = %e, "seek after restore failed");
                            }
                            if let Err(e) =
                                set_paused(&consumer, &input_topic, done.partition, false)
                            {
                                tracing::error!(partition = done.partition, error = %e, "resume failed");
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(partition = done.partition, error = %e, "state restore failed; retrying in 5 s");
                        retry_restores.push((
                            Instant::now() + Duration::from_secs(5),
                            done.partition,
                            done.epoch,
                        ));
                    }
                }
            }
        }

        // Backpressure: wait for acknowledgements instead of reading more.
        if backpressured {
            let mut c = lock(&core)?;
            if c.backpressured() {
                c.close_all_batches();
                c.serve_deliveries(Duration::from_millis(10));
                let offsets = c.take_offsets();
                drop(c);
                store_offsets(&consumer, &input_topic, offsets);
                // Keep the group session alive while waiting.
                let polled = consumer.poll(Duration::ZERO);
                let mut c = lock(&core)?;
                if let Some(Ok(msg)) = polled {
                    c.process(&msg);
                }
                check_restores |= !c.restore_requests.is_empty();
                backpressured = c.backpressured();
                // Not consuming: look at the shutdown token every time round.
                busy = false;
                continue;
            }
            backpressured = false;
        }

        // While outputs await acknowledgement, an idle loop comes back every
        // millisecond to act on them (and store offsets) instead of sleeping in
        // the consumer for up to 100 ms.
        let timeout = if busy {
            Duration::ZERO
        } else if awaiting_acks {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(100)
        };
        match consumer.poll(timeout) {
            Some(Ok(msg)) => {
                let mut c = lock(&core)?;
                c.process(&msg);
                check_restores |= !c.restore_requests.is_empty();
                backpressured = c.backpressured();
                busy = true;
                since_serve += 1;
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "consumer error");
                busy = false;
                check_restores = true;
                backpressured = true;
            }
            None => {
                let mut c = lock(&core)?;
                c.close_all_batches();
                check_restores |= !c.restore_requests.is_empty();
                busy = false;
                since_serve = u32::MAX;
            }
        }
        if since_serve >= 512 {
            since_serve = 0;
            let mut c = lock(&core)?;
            c.serve_deliveries(Duration::ZERO);
            let offsets = c.take_offsets();
            backpressured = c.backpressured();
            awaiting_acks = c.awaiting_acks();
            drop(c);
            store_offsets(&consumer, &input_topic, offsets);
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            let mut c = lock(&core)?;
            c.idle_tick();
            c.update_customer_gauge();
            c.flush_metrics();
            backpressured = c.backpressured();
            awaiting_acks = c.awaiting_acks();
        }
    }

    // Graceful shutdown: finish in-flight work, store and commit, leave the group.
    tracing::info!("shutting down: draining in-flight work");
    let deadline = Instant::now() + drain_timeout;
    {
        let mut c = lock(&core)?;
        let all = c.partition_ids();
        if !c.drain(&all, deadline) {
            tracing::warn!("drain timed out; unacknowledged events will be re-read after restart");
        }
        let offsets = c.take_offsets();
        drop(c);
        store_offsets(&consumer, &input_topic, offsets);
    }
    commit(&consumer);
    consumer.unsubscribe();
    let leave_deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < leave_deadline && !lock(&core)?.partition_ids().is_empty() {
        consumer.poll(Duration::from_millis(50));
    }
    // A consumer that cannot reach its coordinator can block in close: give it a deadline.
    let (closed_tx, closed_rx) = mpsc::channel();
    std::thread::spawn(move || {
        drop(consumer);
        let _ = closed_tx.send(());
    });
    if closed_rx.recv_timeout(Duration::from_secs(10)).is_err() {
        tracing::warn!("consumer did not close within 10 s; exiting anyway");
    }
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    let undelivered = lock(&core)?.flush_producer(remaining);
    if undelivered > 0 {
        tracing::error!(
            undelivered,
            "outputs still undelivered at exit; their events will be re-read after restart"
        );
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// The worker, built from its configuration: an HTTP listener bound, the
/// model loaded, ready to [`run`](Worker::run).
pub struct Worker {
    config: WorkerConfig,
    model: Arc<RiskModel>,
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
        let addr = config
            .http_addr()
            .map_err(|e| WorkerError::Http(std::io::Error::other(e.to_string())))?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        Ok(Worker {
            config,
            model,
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
            model,
            metrics,
            shared,
            listener,
        } = self;
        tracing::info!(addr = %listener.local_addr()?, "http listening");
        let router = crate::http::router(Arc::clone(&shared), config.http.bearer_token.clone());
        let http_shutdown = shutdown.clone();
        let http = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
                .await
        });
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let pipeline_shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name("pipeline".into())
            .spawn(move || {
                let result = run_pipeline(config, model, metrics, shared, pipeline_shutdown);
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
