//! The pipeline thread: the consumer loop, changelog restores, and the
//! bounded shutdown.
//!
//! Shutdown guarantee: from the moment it is asked to stop, the thread
//! returns within `shutdown.drain_timeout_secs` + 10 s whatever the brokers
//! do: the drain runs once against one deadline (a revoke during the close
//! shares it), the commit is asynchronous with a deadline, the consumer is
//! closed on a thread of its own with a deadline, and the producer is
//! flushed with one. It returns `Ok` only if everything was drained and
//! committed.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::BaseProducer;
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;
use crate::model::RiskModel;
use crate::telemetry::Metrics;

use super::group::{CommitOutcome, GroupContext, commit_with_deadline, store_offsets};
use super::kafka::{self, DeliveryContext};
use super::pipeline::{Core, set_paused};
use super::restore::{Restored, restore_partition};
use super::sink::LogLimiter;
use super::{WorkerError, WorkerShared};

/// Budgets of the steps after the drain: 7 s in all, leaving room within the
/// promised 10 s for the process itself to wind down.
const COMMIT_WAIT: Duration = Duration::from_secs(2);
const LEAVE_WAIT: Duration = Duration::from_secs(1);
const CLOSE_WAIT: Duration = Duration::from_millis(2500);
const FLUSH_WAIT: Duration = Duration::from_millis(1500);

/// What the run loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoopState {
    /// Messages are flowing: poll without waiting.
    Busy,
    /// Nothing to read: wait in the poll (briefly while acknowledgements are due).
    Idle,
    /// Too much unacknowledged work: serve acknowledgements instead of reading.
    Backpressured,
}

/// Why the loop ended.
enum Stop {
    /// Shutdown was requested.
    Requested,
    /// The output sink hit a fault waiting cannot fix.
    Fatal { topic: String, cause: String },
}

/// Locks the core; a poisoned lock means a panic on the pipeline thread.
fn lock(core: &Mutex<Core>) -> Result<std::sync::MutexGuard<'_, Core>, WorkerError> {
    core.lock().map_err(|_| WorkerError::PipelineStopped)
}

struct RestoreDone {
    partition: i32,
    epoch: u64,
    result: Result<Restored, WorkerError>,
}

/// The changelog restores in progress, each on a thread of its own.
struct Restores {
    tx: mpsc::Sender<RestoreDone>,
    rx: mpsc::Receiver<RestoreDone>,
    running: usize,
    retry: Vec<(Instant, i32, u64)>,
}

impl Restores {
    fn new() -> Self {
        let (tx, rx) = mpsc::channel();
        Restores {
            tx,
            rx,
            running: 0,
            retry: Vec::new(),
        }
    }

    /// Starts requested restores and installs finished ones.
    fn step(
        &mut self,
        core: &Mutex<Core>,
        consumer: &BaseConsumer<GroupContext>,
        config: &WorkerConfig,
        model: &Arc<RiskModel>,
        metrics: &Metrics,
    ) -> Result<(), WorkerError> {
        let mut c = lock(core)?;
        if c.restore_requests.is_empty() && self.running == 0 && self.retry.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let mut requests: Vec<(i32, u64)> = c
            .restore_requests
            .drain(..)
            .map(|r| (r.partition, r.epoch))
            .collect();
        drop(c);
        self.retry.retain(|&(at, p, e)| {
            let due = at <= now;
            if due {
                requests.push((p, e));
            }
            !due
        });
        for (partition, epoch) in requests {
            let tx = self.tx.clone();
            let config = config.clone();
            let model = Arc::clone(model);
            let progress = metrics
                .partition_restore_progress
                .with_label_values(&[&partition.to_string()]);
            let spawned = std::thread::Builder::new()
                .name(format!("restore-{partition}"))
                .spawn(move || {
                    let result = restore_partition(&config, &model, partition, &progress);
                    let _ = tx.send(RestoreDone {
                        partition,
                        epoch,
                        result,
                    });
                });
            if spawned.is_ok() {
                self.running += 1;
            } else {
                self.retry
                    .push((now + Duration::from_secs(1), partition, epoch));
            }
        }
        let input = &config.topics.input;
        while let Ok(done) = self.rx.try_recv() {
            self.running = self.running.saturating_sub(1);
            match done.result {
                Ok(restored) => {
                    let installed =
                        lock(core)?.install_restore(done.partition, done.epoch, restored);
                    let Some(rewind) = installed else {
                        continue;
                    };
                    if let Some(offset) = rewind
                        && let Err(e) = consumer.seek(
                            input,
                            done.partition,
                            rdkafka::Offset::Offset(offset),
                            Duration::from_secs(5),
                        )
                    {
                        tracing::error!(partition = done.partition, error = %e, "seek after restore failed");
                    }
                    if let Err(e) = set_paused(consumer, input, done.partition, false) {
                        tracing::error!(partition = done.partition, error = %e, "resume failed");
                    }
                }
                Err(e) => {
                    tracing::error!(partition = done.partition, error = %e, "state restore failed; retrying in 5 s");
                    self.retry.push((
                        Instant::now() + Duration::from_secs(5),
                        done.partition,
                        done.epoch,
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Runs the pipeline on the current (dedicated) thread until `shutdown`.
pub fn run_pipeline(
    config: WorkerConfig,
    model: Arc<RiskModel>,
    metrics: Metrics,
    shared: Arc<WorkerShared>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let producer: BaseProducer<DeliveryContext> =
        kafka::producer_config(&config).create_with_context(DeliveryContext::default())?;
    if !super::preflight(&config, &producer, &shutdown)? {
        tracing::info!("stopped before joining the group");
        return Ok(());
    }
    let input_topic = config.topics.input.clone();
    let drain_timeout = Duration::from_secs(config.shutdown.drain_timeout_secs);
    let core = Arc::new(Mutex::new(Core::new(
        &config,
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
        commit_log: Default::default(),
    };
    let consumer: BaseConsumer<GroupContext> =
        kafka::consumer_config(&config, &config.kafka.group_id).create_with_context(context)?;
    consumer.subscribe(&[&input_topic])?;
    tracing::info!(topic = %input_topic, group = %config.kafka.group_id, "subscribed");

    let mut restores = Restores::new();
    let mut state = LoopState::Idle;
    let mut awaiting_acks = false;
    let mut since_serve = 0_u32;
    let mut since_cancel_check = 0_u32;
    let mut last_tick = Instant::now();
    let mut consumer_errors = LogLimiter::default();

    let stop = loop {
        // The token takes a lock: while busy, look every 64 messages (well under a millisecond).
        if state != LoopState::Busy || since_cancel_check >= 64 {
            since_cancel_check = 0;
            if shutdown.is_cancelled() {
                break Stop::Requested;
            }
        }
        since_cancel_check += 1;
        // Restore requests come from rebalance callbacks: while busy, look
        // every 64 messages (the core's lock is not free).
        if state != LoopState::Busy
            || since_cancel_check == 1
            || restores.running > 0
            || !restores.retry.is_empty()
        {
            restores.step(&core, &consumer, &config, &model, &metrics)?;
        }

        state = match state {
            LoopState::Backpressured => {
                let mut c = lock(&core)?;
                c.close_all_batches();
                c.serve_deliveries(Duration::from_millis(10));
                let offsets = c.take_offsets();
                let still = c.backpressured();
                drop(c);
                store_offsets(&consumer, &input_topic, offsets);
                // Keep the group session alive while waiting.
                if let Some(Ok(msg)) = consumer.poll(Duration::ZERO) {
                    lock(&core)?.process(&msg);
                }
                if still {
                    LoopState::Backpressured
                } else {
                    LoopState::Idle
                }
            }
            LoopState::Busy | LoopState::Idle => {
                let timeout = match (state, awaiting_acks) {
                    (LoopState::Busy, _) => Duration::ZERO,
                    (_, true) => Duration::from_millis(1),
                    (_, false) => Duration::from_millis(100),
                };
                match consumer.poll(timeout) {
                    Some(Ok(msg)) => {
                        let mut c = lock(&core)?;
                        c.process(&msg);
                        since_serve += 1;
                        if c.backpressured() {
                            LoopState::Backpressured
                        } else {
                            LoopState::Busy
                        }
                    }
                    Some(Err(e)) => {
                        if let Some(held_back) = consumer_errors.allow(Duration::from_secs(10)) {
                            tracing::warn!(error = %e, similar_not_logged = held_back, "consumer error");
                        }
                        lock(&core)?.fetch_failed();
                        LoopState::Idle
                    }
                    None => {
                        lock(&core)?.close_all_batches();
                        since_serve = u32::MAX;
                        LoopState::Idle
                    }
                }
            }
        };

        if since_serve >= 512 {
            since_serve = 0;
            let mut c = lock(&core)?;
            c.serve_deliveries(Duration::ZERO);
            let offsets = c.take_offsets();
            awaiting_acks = c.awaiting_acks();
            if c.backpressured() {
                state = LoopState::Backpressured;
            }
            let fatal = c.fatal();
            drop(c);
            store_offsets(&consumer, &input_topic, offsets);
            if let Some(f) = fatal {
                break Stop::Fatal {
                    topic: f.topic,
                    cause: f.cause,
                };
            }
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            let mut c = lock(&core)?;
            c.tick();
            awaiting_acks = c.awaiting_acks();
            if c.backpressured() {
                state = LoopState::Backpressured;
            }
        }
    };

    let outcome = shut_down(&core, consumer, &input_topic, drain_timeout)?;
    match stop {
        Stop::Fatal { topic, cause } => Err(WorkerError::OutputFatal { topic, cause }),
        Stop::Requested if outcome.clean() => {
            tracing::info!("worker stopped: everything drained and committed");
            Ok(())
        }
        Stop::Requested => {
            tracing::error!(
                drained = outcome.drained,
                committed = outcome.committed,
                unsettled = outcome.unsettled,
                "worker stopped with work not drained or not committed; those events will be \
                 re-read after restart"
            );
            Err(WorkerError::ShutdownIncomplete {
                drained: outcome.drained,
                committed: outcome.committed,
                unsettled: outcome.unsettled,
            })
        }
    }
}

struct ShutdownOutcome {
    drained: bool,
    committed: bool,
    unsettled: usize,
}

impl ShutdownOutcome {
    fn clean(&self) -> bool {
        self.drained && self.committed && self.unsettled == 0
    }
}

/// Drains once, commits, leaves the group and flushes, each with a deadline
/// (see the module documentation).
fn shut_down(
    core: &Mutex<Core>,
    consumer: BaseConsumer<GroupContext>,
    input_topic: &str,
    drain_timeout: Duration,
) -> Result<ShutdownOutcome, WorkerError> {
    tracing::info!("shutting down: draining in-flight work");
    let deadline = Instant::now() + drain_timeout;
    let drained = {
        let mut c = lock(core)?;
        c.begin_shutdown(deadline);
        let all = c.partition_ids();
        let drained = c.drain(&all, deadline);
        if !drained {
            tracing::warn!("drain timed out; unacknowledged events will be re-read after restart");
        }
        let offsets = c.take_offsets();
        drop(c);
        store_offsets(&consumer, input_topic, offsets);
        drained
    };

    let committed = match commit_with_deadline(&consumer, COMMIT_WAIT) {
        CommitOutcome::Committed => true,
        CommitOutcome::TimedOut => {
            tracing::warn!(
                "final offset commit not confirmed within {} s",
                COMMIT_WAIT.as_secs()
            );
            false
        }
        CommitOutcome::Failed(cause) => {
            tracing::warn!(%cause, "final offset commit failed");
            false
        }
    };

    consumer.unsubscribe();
    let leave_until = Instant::now() + LEAVE_WAIT;
    while Instant::now() < leave_until && !lock(core)?.partition_ids().is_empty() {
        consumer.poll(Duration::from_millis(50));
    }
    // A consumer that cannot reach its coordinator can block in close.
    let (closed_tx, closed_rx) = mpsc::channel();
    let closer = std::thread::Builder::new()
        .name("consumer-close".into())
        .spawn(move || {
            drop(consumer);
            let _ = closed_tx.send(());
        });
    if closer.is_ok() && closed_rx.recv_timeout(CLOSE_WAIT).is_err() {
        tracing::warn!(
            "consumer did not close within {} s; leaving it behind",
            CLOSE_WAIT.as_secs()
        );
    }
    let unsettled = lock(core)?.flush_producer(FLUSH_WAIT);
    Ok(ShutdownOutcome {
        drained,
        committed,
        unsettled,
    })
}
