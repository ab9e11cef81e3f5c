//! The pipeline core: assigned partitions, the acknowledgement ledger and
//! the output sink, wired together.
//!
//! Every message is parsed, applied to its partition's store and scored on
//! a pipeline thread by its [`PartitionTask`]. Work is grouped per
//! partition into batches. A batch closes (after `batch_size` messages, once
//! its first message is 10 ms old, when the consumer runs dry, or on the
//! once-a-second tick) by firing due inactivity timers; its alerts and dead
//! letters are sent at once, and its events' latency is observed when they
//! (and every earlier batch's) are acknowledged.
//!
//! State is written by flushes, not per batch: the store is the cache.
//! Customers changed since the last flush are only marked; a flush (every
//! `state.flush_interval_ms`, once the previous flush's records are
//! acknowledged, and always on revoke and shutdown) snapshots them once
//! each. The work recorded since the last flush is one ledger batch, which
//! the flush seals; then, as the [`AckLedger`] decides:
//!
//! 1. its state records are sent once all its outputs and every earlier
//!    flush's state records are acknowledged: one flush in flight per
//!    partition, so a record re-sent after a failure can never land after a
//!    newer record for the same customer;
//! 2. its offset is stored once it and every earlier flush are fully
//!    acknowledged, so committed offsets always match a flushed state.
//!
//! After a crash, events after the restored state's offsets are applied again
//! and re-publish the same alert ids. Failures follow the policy of
//! [`super::sink`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::BaseProducer;
use rdkafka::{Offset, TopicPartitionList};
use rustc_hash::FxHashMap;

use rdkafka::message::OwnedHeaders;

use crate::config::WorkerConfig;
use crate::telemetry::Metrics;
use churn_core::engine::AlertKind;
use churn_core::model::RiskModel;

use crate::clock::wall_clock_ms;
use crate::commands::{Command, CommandQueue, EraseOutcome, ModelSet};
use crate::directory::PartitionDirectory;
use crate::error::WorkerError;
use crate::kafka::{DeliveryContext, DeliveryTag, OutputKind};
use crate::ledger::{AckLedger, BatchId};
use crate::partition::{
    InputMessage, PartitionBacklog, PartitionSettings, PartitionTask, Step, TaskContext,
    alert_headers,
};
use crate::registry::ModelRegistry;
use crate::restore::Restored;
use crate::sink::{OutputSink, Settled, SinkFatal, TransactionFailure, classify_transaction};
use crate::telemetry::LocalMetrics;

pub use crate::partition::PartitionData;

/// How many times `pipeline.max_in_flight` the unacknowledged work may reach
/// when state records waiting behind their partition's in-flight batch are
/// counted too. Bounding those as tightly as the producer's queue made the
/// pipeline wait on acknowledgements it did not need (measured: worker/bare
/// 25 % instead of 29-33 % in `churn-scorer bench`).
const WAITING_STATE_FACTOR: usize = 4;

/// Exactly-once (`processing.guarantee = "exactly_once"`): how this core's
/// transactions are committed.
struct Transactions {
    /// The producer's `transactional.id` (for the log and a fatal error).
    transactional_id: String,
    input_topic: String,
    /// Bound of each transactional call, and of a commit's drain.
    call_timeout: Duration,
    /// [`OutputSink::sent`] when the open transaction began: it holds
    /// output if the count moved.
    sent_at_begin: u64,
    /// Aborts since the last commit: a poison record aborts every attempt,
    /// and after [`MAX_ABORTS_IN_A_ROW`] the worker stops instead.
    aborts_in_a_row: u32,
    /// A fault that stops the worker (fenced, or an abort that failed).
    fatal: Option<SinkFatal>,
}

/// How long start-up retries `init_transactions` while the transaction
/// coordinator is not available (a new cluster creates its transaction
/// state topic on first use).
const INIT_TRANSACTIONS_WAIT: Duration = Duration::from_secs(60);

/// Aborts in a row (no commit between them) after which a pipeline thread
/// stops: the same output failing each time cannot be fixed by rewinding.
const MAX_ABORTS_IN_A_ROW: u32 = 5;

/// How a transaction commit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitResult {
    /// Committed (or nothing to commit).
    Committed,
    /// Aborted; the core's partitions are being rewound to the last commit
    /// (restores requested, partitions paused).
    Aborted,
    /// The worker must stop ([`Core::fatal`] says why).
    Fatal,
}

/// One pipeline thread's [`Core`], shared with the group thread (rebalance
/// callbacks, statistics, restores), which must not be starved of the lock
/// by the pipeline thread's tight loop.
pub struct CoreHandle {
    core: Mutex<Core>,
    /// Set while the group thread waits for the lock: the pipeline thread
    /// then steps aside after its current burst.
    wanted: AtomicBool,
    /// Requests from other threads (reload, erasure) and the thread to wake;
    /// also registered with the [`ModelRegistry`](crate::registry::ModelRegistry).
    queue: Arc<CommandQueue>,
}

impl CoreHandle {
    /// Wraps a core.
    pub fn new(core: Core) -> Self {
        CoreHandle {
            core: Mutex::new(core),
            wanted: AtomicBool::new(false),
            queue: Arc::new(CommandQueue::default()),
        }
    }

    /// The core's command queue (registered for reloads and erasures).
    pub fn queue(&self) -> Arc<CommandQueue> {
        Arc::clone(&self.queue)
    }

    /// Queues a command for the pipeline thread and wakes it.
    pub fn send(&self, command: Command) {
        self.queue.send(command);
    }

    /// The queued commands (from the pipeline thread).
    pub fn take_commands(&self) -> Vec<Command> {
        self.queue.take()
    }

    /// Locks the core from the pipeline thread that owns it; a poisoned lock
    /// means a panic on another thread holding it.
    pub fn lock(&self) -> Result<MutexGuard<'_, Core>, WorkerError> {
        self.core.lock().map_err(|_| WorkerError::PipelineStopped)
    }

    /// Locks the core from another thread, asking the pipeline thread to
    /// step aside.
    pub fn lock_from_outside(&self) -> Result<MutexGuard<'_, Core>, WorkerError> {
        self.wanted.store(true, Ordering::Release);
        let guard = self.lock();
        self.wanted.store(false, Ordering::Release);
        guard
    }

    /// Lets a waiting group thread take the lock (called between bursts,
    /// without the lock held).
    pub fn step_aside(&self) {
        let mut spins = 0;
        while self.wanted.load(Ordering::Acquire) && spins < 1000 {
            std::thread::yield_now();
            spins += 1;
        }
    }

    /// Records the pipeline thread (once, from that thread).
    pub fn set_thread(&self, thread: Thread) {
        self.queue.set_thread(thread);
    }

    /// Wakes the pipeline thread if it is waiting for messages.
    pub fn wake(&self) {
        self.queue.wake();
    }
}

/// The pipeline thread that owns `partition` among `threads`: partitions
/// are dealt out round-robin, so each thread owns a disjoint, fixed share.
pub fn owner_of(partition: i32, threads: usize) -> usize {
    usize::try_from(partition).unwrap_or(0) % threads.max(1)
}

/// A partition whose restore should start.
pub struct RestoreRequest {
    /// Input partition.
    pub partition: i32,
    /// Its assignment epoch.
    pub epoch: u64,
}

struct Owned {
    task: PartitionTask,
    backlog: PartitionBacklog,
    last_flush: Instant,
}

/// The pipeline's state, shared with the consumer's rebalance callbacks.
pub struct Core {
    model: Arc<RiskModel>,
    /// The shadow model, if any (swapped with `model` on a reload).
    shadow: Option<Arc<RiskModel>>,
    /// Where shadow alerts go (`None`: they are only counted).
    shadow_alerts_topic: Option<String>,
    metrics: Metrics,
    /// Read for the current models when a restore is installed.
    registry: Arc<ModelRegistry>,
    /// Where this core's partitions are registered for readiness and lookups.
    directory: Arc<PartitionDirectory>,
    settings: PartitionSettings,
    state_topic: String,
    max_in_flight: usize,
    flush_interval: Duration,
    alerts_topic: String,
    /// Headers of each alert kind, copied into every alert record.
    alert_headers: Vec<(AlertKind, OwnedHeaders)>,
    /// Partition ids, reused by the calls that visit every partition.
    ids: Vec<i32>,
    sink: OutputSink,
    ledger: AckLedger,
    partitions: FxHashMap<i32, Owned>,
    next_epoch: u64,
    /// Restores to start (taken by the run loop, which owns the restore threads).
    pub restore_requests: Vec<RestoreRequest>,
    offsets_to_store: Vec<(i32, i64)>,
    local: LocalMetrics,
    settled: Vec<Settled>,
    releasable: Vec<BatchId>,
    ledger_offsets: Vec<(i32, i64)>,
    /// Once shutdown has begun, every drain (including the revoke the
    /// consumer's close runs) shares its one deadline.
    shutdown_deadline: Option<Instant>,
    /// The wall clock at an instant, re-read every tick: each message's wall
    /// time is derived from its receive instant without another clock read.
    wall_base: (Instant, i64),
    /// Exactly-once only (`None`: at-least-once, offsets are stored).
    transactions: Option<Transactions>,
}

impl Core {
    /// A pipeline core with no partitions yet.
    pub fn new(
        config: &WorkerConfig,
        models: ModelSet,
        metrics: Metrics,
        registry: Arc<ModelRegistry>,
        directory: Arc<PartitionDirectory>,
        producer: BaseProducer<DeliveryContext>,
    ) -> Self {
        let max_message_bytes = config
            .kafka
            .producer
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let max_in_flight = config.pipeline.max_in_flight.max(1);
        Core {
            local: LocalMetrics::new(&metrics),
            sink: OutputSink::new(producer, metrics.clone(), max_in_flight, max_message_bytes),
            settings: PartitionSettings::new(config),
            state_topic: config.topics.state.clone(),
            max_in_flight,
            flush_interval: Duration::from_millis(config.state.flush_interval_ms),
            alerts_topic: config.topics.alerts.clone(),
            alert_headers: AlertKind::ALL
                .iter()
                .map(|&k| (k, alert_headers(k)))
                .collect(),
            ids: Vec::new(),
            model: models.live,
            shadow: models.shadow,
            shadow_alerts_topic: config.topics.shadow_alerts.clone(),
            metrics,
            registry,
            directory,
            ledger: AckLedger::new(),
            partitions: FxHashMap::default(),
            next_epoch: 1,
            restore_requests: Vec::new(),
            offsets_to_store: Vec::new(),
            settled: Vec::new(),
            releasable: Vec::new(),
            ledger_offsets: Vec::new(),
            shutdown_deadline: None,
            wall_base: (Instant::now(), wall_clock_ms()),
            transactions: None,
        }
    }

    /// Makes this core exactly-once: its producer (created with
    /// `transactional.id` = `transactional_id`) fences any earlier one with
    /// that id, aborting its open transaction, and begins the first
    /// transaction. From now on offsets are committed only by
    /// [`Core::commit`], in the transaction, and every commit flushes the
    /// state of every changed customer.
    pub fn init_transactions(
        &mut self,
        config: &WorkerConfig,
        transactional_id: String,
    ) -> Result<(), WorkerError> {
        let call_timeout = Duration::from_millis(config.processing.transaction_timeout_ms);
        // The coordinator may be loading, or the transaction state topic
        // still being created on a new cluster: retriable, for a while.
        let give_up = Instant::now() + INIT_TRANSACTIONS_WAIT;
        while let Err(e) = self.sink.init_transactions(call_timeout) {
            if classify_transaction(&e) != TransactionFailure::Retriable
                || Instant::now() >= give_up
            {
                return Err(WorkerError::TransactionFatal {
                    transactional_id,
                    cause: format!("could not be initialised: {e}"),
                });
            }
            tracing::warn!(%transactional_id, error = %e, "transactions not initialised yet; retrying");
            std::thread::sleep(Duration::from_millis(500));
        }
        self.flush_interval = Duration::from_millis(config.processing.commit_interval_ms);
        self.transactions = Some(Transactions {
            transactional_id,
            input_topic: config.topics.input.clone(),
            call_timeout,
            sent_at_begin: self.sink.sent(),
            aborts_in_a_row: 0,
            fatal: None,
        });
        Ok(())
    }

    /// Whether outputs and offsets are committed in transactions.
    pub fn is_transactional(&self) -> bool {
        self.transactions.is_some()
    }

    /// Exactly-once: closes every partition's batch, flushes its state,
    /// waits for every output to be acknowledged (bounded by the
    /// transaction timeout), then commits the transaction with the
    /// partitions' offsets (`send_offsets_to_transaction` with the
    /// consumer's group metadata: KIP-447, so a member that lost the
    /// partitions cannot commit them) and begins the next. A transaction
    /// that cannot be committed is aborted and the core's partitions are
    /// rewound to the last committed offsets and state. Blocking: called on
    /// the pipeline thread, or on the group thread in a rebalance callback
    /// or the shutdown, never on a tokio worker.
    pub fn commit<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> CommitResult {
        let Some(t) = &self.transactions else {
            return CommitResult::Committed;
        };
        if t.fatal.is_some() {
            return CommitResult::Fatal;
        }
        let started = Instant::now();
        let deadline = started + t.call_timeout;
        let ids = self.partition_ids();
        let drained = self.drain(&ids, deadline);
        if self.sink.fatal().is_some() {
            return CommitResult::Fatal;
        }
        if let Some(cause) = self.sink.abort_needed() {
            let cause = cause.to_string();
            return self.abort_and_rewind(consumer, "output_failed", &cause);
        }
        if !drained {
            return self.abort_and_rewind(
                consumer,
                "timed_out",
                "outputs not acknowledged within the transaction timeout",
            );
        }
        let offsets = std::mem::take(&mut self.offsets_to_store);
        let Some(t) = &self.transactions else {
            return CommitResult::Committed;
        };
        if offsets.is_empty() && self.sink.sent() == t.sent_at_begin {
            return CommitResult::Committed;
        }
        let mut tpl = TopicPartitionList::new();
        for &(p, last) in &offsets {
            // Kafka's committed offset is the next one to read.
            if let Err(e) = tpl.add_partition_offset(&t.input_topic, p, Offset::Offset(last + 1)) {
                tracing::error!(partition = p, error = %e, "offset not added to the transaction");
            }
        }
        let Some(group) = consumer.group_metadata() else {
            return self.stop_transactions("has no consumer group metadata to commit offsets with");
        };
        let call_timeout = t.call_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Err(e) = self.sink.commit_transaction(&tpl, &group, left) else {
                break;
            };
            match classify_transaction(&e) {
                TransactionFailure::Fatal => {
                    return self.stop_transactions(&format!("was fenced or failed: {e}"));
                }
                TransactionFailure::Retriable if Instant::now() < deadline => {
                    tracing::warn!(error = %e, "transaction commit failed; retrying");
                    std::thread::sleep(Duration::from_millis(50).min(call_timeout));
                }
                _ => {
                    return self.abort_and_rewind(consumer, "commit_failed", &e.to_string());
                }
            }
        }
        let sent = self.sink.sent();
        if let Some(t) = &mut self.transactions {
            t.sent_at_begin = sent;
            t.aborts_in_a_row = 0;
        }
        self.metrics.transactions_committed.inc();
        self.metrics
            .transaction_duration
            .observe(started.elapsed().as_secs_f64());
        CommitResult::Committed
    }

    /// Aborts the open transaction and rewinds every partition of this core
    /// to its last committed offset and state: each is paused, forgotten and
    /// assigned anew (a new epoch, so nothing of the aborted transaction is
    /// acted on), its restore reads the committed changelog
    /// (`read_committed`) and its install seeks back to the committed offset.
    fn abort_and_rewind<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        reason: &'static str,
        cause: &str,
    ) -> CommitResult {
        let Some(t) = &mut self.transactions else {
            return CommitResult::Committed;
        };
        t.aborts_in_a_row += 1;
        let (aborts, call_timeout, topic) =
            (t.aborts_in_a_row, t.call_timeout, t.input_topic.clone());
        self.metrics
            .transactions_aborted
            .with_label_values(&[reason])
            .inc();
        tracing::warn!(
            reason,
            cause,
            aborts_in_a_row = aborts,
            "aborting the transaction; rewinding to the last commit"
        );
        if aborts > MAX_ABORTS_IN_A_ROW {
            return self.stop_transactions(&format!(
                "aborted {aborts} transactions in a row (last: {cause})"
            ));
        }
        let ids = self.partition_ids();
        for &p in &ids {
            if let Err(e) = set_paused(consumer, &topic, p, true) {
                tracing::warn!(partition = p, error = %e, "cannot pause partition for the rewind");
            }
        }
        // A timed-out abort is to be called again (librdkafka); while
        // leadership moves the coordinator may refuse it for a while too.
        let give_up = Instant::now() + call_timeout.saturating_mul(2);
        while let Err(e) = self.sink.abort_transaction(call_timeout) {
            if classify_transaction(&e) == TransactionFailure::Fatal || Instant::now() >= give_up {
                return self.stop_transactions(&format!("could not abort a transaction: {e}"));
            }
            tracing::warn!(error = %e, "transaction abort failed; retrying");
            std::thread::sleep(Duration::from_millis(200));
        }
        // Where each partition resumes: the last committed offset, or the
        // partition's start if none was ever committed.
        let mut tpl = TopicPartitionList::new();
        for &p in &ids {
            let _ = tpl.add_partition(&topic, p).set_offset(Offset::Invalid);
        }
        let committed = match consumer.committed_offsets(tpl, call_timeout) {
            Ok(c) => c,
            Err(e) => {
                return self.stop_transactions(&format!(
                    "aborted a transaction but cannot read the committed offsets to rewind to: {e}"
                ));
            }
        };
        self.offsets_to_store.clear();
        self.forget(&ids);
        self.assign(&ids);
        for &p in &ids {
            let offset = match committed.find_partition(&topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => consumer
                    .fetch_watermarks(&topic, p, call_timeout)
                    .map_or(0, |(low, _)| low),
            };
            if let Some(owned) = self.partitions.get_mut(&p) {
                owned.task.rewind_to(offset);
            }
        }
        let sent = self.sink.sent();
        if let Some(t) = &mut self.transactions {
            t.sent_at_begin = sent;
        }
        CommitResult::Aborted
    }

    fn stop_transactions(&mut self, cause: &str) -> CommitResult {
        if let Some(t) = &mut self.transactions
            && t.fatal.is_none()
        {
            tracing::error!(transactional_id = %t.transactional_id, cause, "exactly-once: stopping");
            t.fatal = Some(SinkFatal {
                topic: String::new(),
                cause: cause.to_string(),
                code: None,
                transactional_id: Some(t.transactional_id.clone()),
            });
        }
        CommitResult::Fatal
    }

    /// Carries out a command (on the pipeline thread, between bursts).
    pub fn execute(&mut self, command: Command) {
        match command {
            Command::Reload { models, done } => {
                self.adopt_model(models);
                let _ = done.send(());
            }
            Command::Erase { customer_id, done } => {
                let outcome = self.erase(&customer_id);
                let _ = done.send(outcome);
            }
            Command::EraseFromTopic {
                partition,
                epoch,
                customer_id,
                offset,
            } => {
                let Some(owned) = self.partitions.get_mut(&partition) else {
                    return;
                };
                // Revoked (and perhaps re-assigned) since it was read: the
                // next owner reads it again from the position it restores.
                if owned.task.epoch() != epoch || !owned.task.is_live() {
                    return;
                }
                if owned.task.erase_from_topic(&customer_id, offset) {
                    self.metrics.customers_erased.inc();
                    self.update_customer_gauge();
                }
            }
        }
    }

    /// Live partitions with their assignment epoch and the next offset to
    /// read from the deletion topic's partition of the same number.
    pub fn deletion_positions(&self) -> Vec<(i32, u64, Option<i64>)> {
        self.partitions
            .iter()
            .filter(|(_, o)| o.task.is_live())
            .map(|(&p, o)| (p, o.task.epoch(), o.task.deletion_position()))
            .collect()
    }

    /// Scores with `model` from now on: every partition's customers are
    /// converted (counters by type name, timers re-derived at the
    /// partition's watermark). Alerts already decided keep the model
    /// version they were decided with.
    fn adopt_model(&mut self, models: ModelSet) {
        let same_shadow = match (&self.shadow, &models.shadow) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (a, b) => a.is_none() && b.is_none(),
        };
        if Arc::ptr_eq(&self.model, &models.live) && same_shadow {
            return;
        }
        let old = std::mem::replace(&mut self.model, models.live);
        self.shadow = models.shadow;
        for owned in self.partitions.values_mut() {
            owned
                .task
                .adopt_model(&old, &self.model, self.shadow.as_ref());
        }
    }

    /// Erases a customer from every one of this core's partitions that
    /// holds it (one, unless its events were misrouted).
    fn erase(&mut self, customer_id: &str) -> EraseOutcome {
        let mut outcome = EraseOutcome::default();
        for (&p, owned) in self.partitions.iter_mut() {
            if !owned.task.is_live() {
                outcome.restoring = true;
            } else if owned.task.erase(customer_id) {
                outcome.erased.push(p);
            }
        }
        if !outcome.erased.is_empty() {
            self.metrics.customers_erased.inc();
            self.update_customer_gauge();
        }
        outcome
    }

    /// The producer, for metadata look-ups.
    pub fn producer(&self) -> &BaseProducer<DeliveryContext> {
        self.sink.producer()
    }

    /// Whether work awaiting acknowledgement exceeds the configured bound:
    /// records handed to the producer, or, at four times that, everything
    /// unacknowledged including state records still waiting for their turn
    /// (one batch of them is in flight per partition; the rest wait in
    /// memory, about 112 bytes each).
    pub fn backpressured(&self) -> bool {
        self.sink.backpressured()
            || self.ledger.unacknowledged()
                >= self.max_in_flight.saturating_mul(WAITING_STATE_FACTOR)
    }

    /// Whether outputs are waiting to be acknowledged (or sent again), or
    /// processed work waits for a state flush.
    pub fn awaiting_acks(&self) -> bool {
        self.ledger.unacknowledged() > 0
            || self.sink.unsettled() > 0
            || self.partitions.keys().any(|&p| self.ledger.has_unsealed(p))
    }

    /// A fault that must stop the worker, once one has happened.
    pub fn fatal(&self) -> Option<SinkFatal> {
        self.sink
            .fatal()
            .cloned()
            .or_else(|| self.transactions.as_ref().and_then(|t| t.fatal.clone()))
    }

    /// Handles one consumed message.
    pub fn process(&mut self, msg: &BorrowedMessage<'_>) {
        let received = Instant::now();
        if self.shutdown_deadline.is_some() {
            // Read after the final drain: the next owner (or restart) reads it.
            return;
        }
        let partition = msg.partition();
        let Some(owned) = self.partitions.get_mut(&partition) else {
            // Revoked while the message was in flight: the next owner reads it.
            return;
        };
        let input = InputMessage {
            topic: msg.topic(),
            partition,
            offset: msg.offset(),
            key: msg.key(),
            payload: msg.payload().unwrap_or_default(),
            timestamp_ms: msg.timestamp().to_millis(),
            headers: msg.headers(),
        };
        let cx = TaskContext {
            settings: &self.settings,
            model: &self.model,
            metrics: &self.metrics,
            local: &self.local,
        };
        let (base, base_ms) = self.wall_base;
        let wall = base_ms.saturating_add(
            i64::try_from(received.saturating_duration_since(base).as_millis()).unwrap_or(i64::MAX),
        );
        let full = owned.task.process(&cx, &input, received, wall);
        if full {
            self.close_batch(partition, false);
        }
    }

    /// Closes every partition's open batch (flushing those whose flush is due).
    pub fn close_all_batches(&mut self) {
        let mut ids = std::mem::take(&mut self.ids);
        ids.clear();
        ids.extend(self.partitions.keys().copied());
        for &p in &ids {
            self.close_batch(p, false);
        }
        self.ids = ids;
    }

    /// The idle rule and eviction schedule of every partition (about once a second).
    pub fn tick(&mut self) {
        let now = Instant::now();
        let wall = wall_clock_ms();
        self.wall_base = (now, wall);
        let mut ids = std::mem::take(&mut self.ids);
        ids.clear();
        ids.extend(self.partitions.keys().copied());
        for &p in &ids {
            // Closed whatever the clock did: a quiet partition's flush falls due too.
            if let Some(o) = self.partitions.get_mut(&p) {
                o.task.tick(&self.settings, now, wall);
            }
            self.close_batch(p, false);
        }
        self.ids = ids;
        self.update_customer_gauge();
        self.flush_metrics();
    }

    /// Records, per partition, whether it is fetched and caught up (from the
    /// consumer's statistics).
    pub fn set_caught_up(&mut self, updates: &[(i32, bool)]) {
        let now = Instant::now();
        for &(p, caught_up) in updates {
            if let Some(o) = self.partitions.get_mut(&p) {
                o.task.set_caught_up(caught_up, now);
            }
        }
    }

    /// A consumer error (e.g. brokers unreachable): no partition counts as
    /// caught up until the statistics say so again.
    pub fn fetch_failed(&mut self) {
        let now = Instant::now();
        for o in self.partitions.values_mut() {
            o.task.set_caught_up(false, now);
        }
    }

    /// Closes one partition's open batch and sends what it caused; flushes
    /// its state if `force_flush` or the flush is due (interval elapsed and
    /// the previous flush acknowledged: until then its customers keep
    /// coalescing).
    fn close_batch(&mut self, partition: i32, force_flush: bool) {
        let Some(owned) = self.partitions.get_mut(&partition) else {
            return;
        };
        let now = Instant::now();
        let flush = force_flush
            || (now.saturating_duration_since(owned.last_flush) >= self.flush_interval
                && !self.ledger.state_outstanding(partition));
        let cx = TaskContext {
            settings: &self.settings,
            model: &self.model,
            metrics: &self.metrics,
            local: &self.local,
        };
        let Some(closed) = owned.task.close(&cx, flush) else {
            return;
        };
        let outputs =
            (closed.outputs.len() + closed.alerts.len() + closed.shadow_alerts.len()) as u32;
        if closed.last_offset.is_some() || outputs > 0 {
            let Some(id) = self.ledger.record(partition, closed.last_offset, outputs) else {
                return;
            };
            let step = owned.backlog.next_step;
            owned.backlog.next_step += 1;
            owned.backlog.steps.push_back(Step {
                step,
                pending: outputs,
                received: closed.received,
            });
            for (kind, key, payload) in closed.alerts.iter() {
                let Some((_, headers)) = self.alert_headers.iter().find(|(k, _)| *k == kind) else {
                    continue;
                };
                self.sink.send_with_headers(
                    tag(id, step, OutputKind::Alert(kind)),
                    &self.alerts_topic,
                    key,
                    payload,
                    headers,
                );
            }
            owned.task.recycle_alerts(closed.alerts);
            if let Some(topic) = &self.shadow_alerts_topic {
                for (kind, key, payload) in closed.shadow_alerts.iter() {
                    let Some((_, headers)) = self.alert_headers.iter().find(|(k, _)| *k == kind)
                    else {
                        continue;
                    };
                    self.sink.send_with_headers(
                        tag(id, step, OutputKind::ShadowAlert(kind)),
                        topic,
                        key,
                        payload,
                        headers,
                    );
                }
            }
            for (kind, record) in closed.outputs {
                self.sink.send(tag(id, step, kind), record);
            }
            if outputs == 0 {
                settle_steps(owned, &self.local, now);
            }
        }
        if flush {
            owned.last_flush = now;
            let records = closed.snapshots.len() as u32;
            if let Some(id) = self.ledger.seal(partition, records)
                && !closed.snapshots.is_empty()
            {
                owned
                    .backlog
                    .waiting_state
                    .push_back((id.seq, closed.snapshots));
            }
        }
        self.advance();
    }

    /// Sends state records the ledger releases and collects storable offsets.
    fn advance(&mut self) {
        self.releasable.clear();
        self.ledger.releasable_state(&mut self.releasable);
        for &id in &self.releasable {
            let Some(owned) = self.partitions.get_mut(&id.partition) else {
                continue;
            };
            // Released in order, so the batch is at the front.
            while owned
                .backlog
                .waiting_state
                .front()
                .is_some_and(|(seq, _)| *seq < id.seq)
            {
                owned.backlog.waiting_state.pop_front();
            }
            let Some((_, snapshots)) = owned
                .backlog
                .waiting_state
                .pop_front_if(|(seq, _)| *seq == id.seq)
            else {
                continue;
            };
            for (key, value) in snapshots.iter() {
                let payload = (!value.is_empty()).then_some(value);
                self.sink.send_borrowed(
                    tag(id, 0, OutputKind::State),
                    &self.state_topic,
                    Some(id.partition),
                    key,
                    payload,
                );
            }
        }
        self.ledger_offsets.clear();
        self.ledger.take_offsets(&mut self.ledger_offsets);
        self.offsets_to_store
            .extend_from_slice(&self.ledger_offsets);
    }

    /// Serves producer callbacks and acts on what was settled.
    pub fn serve_deliveries(&mut self, wait: Duration) {
        let partitions = &self.partitions;
        let is_live = |t: &DeliveryTag| {
            partitions
                .get(&t.partition)
                .is_some_and(|o| o.task.epoch() == t.epoch)
        };
        self.settled.clear();
        self.sink.serve(wait, is_live, &mut self.settled);
        if self.settled.is_empty() {
            return;
        }
        let now = Instant::now();
        for i in 0..self.settled.len() {
            let settled = self.settled[i];
            let t = settled.tag();
            if let Settled::Acked(_) = settled {
                self.count_output(t.kind);
            }
            let id = BatchId {
                partition: t.partition,
                epoch: t.epoch,
                seq: t.seq,
            };
            if t.kind == OutputKind::State {
                self.ledger.state_acked(id);
                continue;
            }
            if self.ledger.output_acked(id)
                && let Some(owned) = self.partitions.get_mut(&t.partition)
                && owned.task.epoch() == t.epoch
            {
                let front = owned.backlog.steps.front().map_or(0, |s| s.step);
                let index = t
                    .step
                    .checked_sub(front)
                    .and_then(|i| usize::try_from(i).ok());
                if let Some(step) = index.and_then(|i| owned.backlog.steps.get_mut(i)) {
                    step.pending = step.pending.saturating_sub(1);
                    if step.pending == 0 {
                        settle_steps(owned, &self.local, now);
                    }
                }
            }
        }
        self.advance();
    }

    fn count_output(&self, kind: OutputKind) {
        match kind {
            OutputKind::Alert(k) => self
                .metrics
                .alerts_published
                .with_label_values(&[k.as_str()])
                .inc(),
            OutputKind::DeadLetter(reason) => {
                self.metrics.dead_letters.with_label_values(&[reason]).inc()
            }
            // Counted when decided (`shadow_alerts_total`).
            OutputKind::ShadowAlert(_) => {}
            OutputKind::State => self.local.state_changelog_records.inc(),
        }
    }

    /// Offsets ready to be stored (last fully handled offset per partition).
    /// Publishes the hot-path metrics too, so they are never behind the
    /// offsets by more than the pipeline's current step.
    pub fn take_offsets(&mut self) -> Vec<(i32, i64)> {
        self.flush_metrics();
        if self.transactions.is_some() {
            // Exactly-once: committed only in the transaction (`commit`).
            return Vec::new();
        }
        std::mem::take(&mut self.offsets_to_store)
    }

    /// Adds the locally accumulated metrics to the shared registry.
    pub fn flush_metrics(&self) {
        self.local.flush();
    }

    /// Starts the shutdown: from now on every drain ends by `deadline` and
    /// messages still consumed are left for the next reader.
    pub fn begin_shutdown(&mut self, deadline: Instant) {
        self.shutdown_deadline = Some(deadline);
    }

    /// Closes the batches of `partitions` and waits (up to `deadline`, or the
    /// shutdown's deadline if earlier) until all their work is acknowledged.
    /// Returns whether it was.
    pub fn drain(&mut self, partitions: &[i32], deadline: Instant) -> bool {
        let deadline = self.shutdown_deadline.map_or(deadline, |d| d.min(deadline));
        for &p in partitions {
            self.close_batch(p, true);
        }
        loop {
            let drained = partitions.iter().all(|&p| {
                self.ledger.is_drained(p)
                    && self
                        .partitions
                        .get(&p)
                        .is_none_or(|o| !o.task.has_open_work())
            });
            if drained {
                return true;
            }
            if Instant::now() >= deadline
                || self.sink.fatal().is_some()
                || self.sink.abort_needed().is_some()
            {
                return false;
            }
            self.serve_deliveries(Duration::from_millis(20));
        }
    }

    /// Starts tracking newly assigned partitions; their restores are requested.
    pub fn assign(&mut self, partitions: &[i32]) {
        for &p in partitions {
            let epoch = self.next_epoch;
            self.next_epoch += 1;
            let task = PartitionTask::new(
                p,
                epoch,
                &self.settings,
                &self.metrics,
                Arc::clone(&self.model),
                self.shadow.clone(),
            );
            self.directory.insert_partition(p, task.data(), false);
            self.ledger.assign(p, epoch);
            self.partitions.insert(
                p,
                Owned {
                    task,
                    backlog: PartitionBacklog::default(),
                    last_flush: staggered_start(p, self.flush_interval, Instant::now()),
                },
            );
            self.restore_requests.push(RestoreRequest {
                partition: p,
                epoch,
            });
        }
        self.metrics
            .partitions_assigned
            .set(self.directory.partition_count() as i64);
    }

    /// Installs a finished restore if the partition is still ours in that epoch.
    /// Returns `None` if it is not, else the offset to seek back to (if any)
    /// before the caller resumes the partition.
    pub fn install_restore(
        &mut self,
        partition: i32,
        epoch: u64,
        restored: Restored,
    ) -> Option<Option<i64>> {
        if self
            .partitions
            .get(&partition)
            .is_none_or(|o| o.task.epoch() != epoch)
        {
            return None;
        }
        // A reload this core has not carried out yet, but the restore was
        // read with: adopt it now (its command then changes nothing), so
        // the restored counters are not converted through the older model.
        let current = self.registry.current_models();
        if !Arc::ptr_eq(&current.live, &self.model) && Arc::ptr_eq(&current.live, &restored.model) {
            self.adopt_model(current);
        }
        let owned = self.partitions.get_mut(&partition)?;
        let customers = restored.store.len();
        let (waited, rewind) = owned.task.install_restore(
            restored.store,
            restored.clock,
            &restored.model,
            restored.deletion_position,
        );
        tracing::info!(
            partition,
            customers,
            records = restored.records,
            undecodable = restored.undecodable,
            watermark = %restored
                .clock
                .max_event_ms
                .map_or_else(|| "none".to_string(), |_| {
                    churn_core::event::format_timestamp_ms(restored.clock.watermark_ms)
                }),
            restore_ms = restored.elapsed.as_millis() as u64,
            waited_ms = waited.map_or(0, |w| w.as_millis() as u64),
            "partition restored"
        );
        self.metrics
            .state_restore_seconds
            .observe(restored.elapsed.as_secs_f64());
        self.metrics
            .state_restored_customers
            .inc_by(customers as u64);
        self.directory.set_partition_live(partition);
        self.update_customer_gauge();
        Some(rewind)
    }

    /// Forgets revoked partitions (after [`Core::drain`] and
    /// [`Core::take_offsets`]). Records of theirs still queued in the
    /// producer are purged, so none can land after the next owner's.
    pub fn forget(&mut self, partitions: &[i32]) {
        let undrained = partitions.iter().any(|&p| !self.ledger.is_drained(p));
        for p in partitions {
            self.ledger.revoke(*p);
            if let Some(owned) = self.partitions.remove(p) {
                owned.task.remove_metrics(&self.metrics);
            }
            self.directory.remove_partition(*p);
        }
        if undrained {
            tracing::warn!(
                ?partitions,
                "revoked with work unacknowledged: purging the producer's queue; \
                 the next owner re-reads those events"
            );
            self.sink.purge();
            // Reports of purged records of live partitions come back as
            // failures and are sent again; those of revoked ones are dropped.
            self.serve_deliveries(Duration::ZERO);
        }
        self.metrics
            .partitions_assigned
            .set(self.directory.partition_count() as i64);
        self.update_customer_gauge();
    }

    /// Sets `customers_tracked` (over every pipeline thread's partitions).
    pub fn update_customer_gauge(&self) {
        self.metrics
            .customers_tracked
            .set(self.directory.customer_count() as i64);
    }

    /// Partitions currently tracked.
    pub fn partition_ids(&self) -> Vec<i32> {
        self.partitions.keys().copied().collect()
    }

    /// Waits up to `timeout` for enqueued records; returns how many records
    /// are still not settled.
    pub fn flush_producer(&mut self, timeout: Duration) -> usize {
        let mut settled = Vec::new();
        let left = self.sink.flush(timeout, &mut settled);
        self.settled = settled;
        left
    }
}

/// The "last flush" a newly assigned partition starts from: partitions
/// assigned together would otherwise all flush in the same pass, each
/// thread encoding and producing every changed customer of all its
/// partitions at once (a pause of tens of milliseconds on a sparse stream,
/// and a queue of state records ahead of the next alerts). Spread over the
/// interval by the golden ratio, any set of partition numbers is evenly
/// spaced; each keeps its phase, since a flush restarts its own interval.
fn staggered_start(partition: i32, interval: Duration, now: Instant) -> Instant {
    const GOLDEN: f64 = 0.618_033_988_749_895;
    let phase = (f64::from(partition) * GOLDEN).fract();
    now.checked_sub(interval.mul_f64(phase)).unwrap_or(now)
}

fn tag(id: BatchId, step: u64, kind: OutputKind) -> DeliveryTag {
    DeliveryTag {
        partition: id.partition,
        epoch: id.epoch,
        seq: id.seq,
        step,
        kind,
    }
}

/// Retires the partition's oldest closed batches whose outputs, and every
/// earlier batch's, are all acknowledged: their events' processing latency
/// ends here (their state and offsets follow with the next flush).
fn settle_steps(owned: &mut Owned, local: &LocalMetrics, now: Instant) {
    while let Some(step) = owned.backlog.steps.pop_front_if(|s| s.pending == 0) {
        for &t in &step.received {
            local
                .processing_latency
                .observe(now.saturating_duration_since(t).as_secs_f64());
        }
        owned.task.recycle_received(step.received);
    }
}

/// Pauses or resumes one partition of `topic`.
pub fn set_paused<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    paused: bool,
) -> Result<(), KafkaError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Invalid)?;
    if paused {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushes_of_partitions_assigned_together_are_spread_over_the_interval() {
        let interval = Duration::from_millis(1000);
        let now = Instant::now() + Duration::from_secs(10);
        // Any thread's share of 32 partitions (p mod 2 on two threads, p mod 4 on four).
        for (threads, thread) in [(1, 0), (2, 0), (2, 1), (4, 3)] {
            let mut phases: Vec<u128> = (0..32)
                .filter(|p| p % threads == thread)
                .map(|p| (now - staggered_start(p, interval, now)).as_millis())
                .collect();
            phases.sort_unstable();
            assert!(phases.iter().all(|&ms| ms < 1000));
            let count = phases.len() as u128;
            // No two flushes closer than a fraction of the even spacing, no gap
            // much wider than it.
            for pair in phases.windows(2) {
                let gap = pair[1] - pair[0];
                assert!(gap * count >= 250, "{threads}/{thread}: {phases:?}");
                assert!(gap * count <= 3000, "{threads}/{thread}: {phases:?}");
            }
        }
        assert_eq!(
            staggered_start(0, interval, now),
            now,
            "partition 0 flushes a full interval after assignment"
        );
    }
}
