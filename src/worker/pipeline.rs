//! The pipeline: partitions, batches, outputs and offset storing.
//!
//! Every message is parsed, applied to its partition's [`CustomerStore`] and
//! scored on the pipeline thread. Work is grouped per partition into batches.
//! A batch closes (after `batch_size` messages, or once its first message is
//! 20 ms old, or when the consumer runs dry, or on the idle tick)
//! by firing due inactivity timers and snapshotting the customers it changed.
//! Its offsets are stored only after, in this order:
//!
//! 1. its alerts and dead letters are acknowledged by the broker;
//! 2. its state snapshots, produced once every earlier batch's snapshots
//!    have been produced, are acknowledged.
//!
//! So a state record on the changelog never includes an event whose alerts
//! are not yet safe, and an offset is never committed before the state that
//! includes its event is safe: after a crash, events after the restored
//! state's offsets are applied again and re-publish the same alert ids.
//!
//! Hot-path costs are kept per batch rather than per event: metrics are
//! counted locally and published at every offset store, a batch's state
//! records share one buffer, and every delivery report waiting is acted on at
//! each service (see `docs/performance.md`).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use prometheus::IntGauge;
use prometheus::local::{LocalHistogram, LocalIntCounter};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::alert::{ALERT_SCHEMA_VERSION, Alert};
use crate::changelog::encode_state;
use crate::config::WorkerConfig;
use crate::engine::{ApplyOutcome, CustomerIndex, CustomerStore, TimerFiring};
use crate::event::parse_event;
use crate::model::RiskModel;
use crate::telemetry::Metrics;

use super::WorkerShared;
use super::kafka::{Delivery, DeliveryContext, DeliveryTag, OutputKind, OutputRecord};
use super::restore::Restored;

/// A batch closes once its first event is this old, even if neither full nor
/// drained: under a steady backlog, latency stays bounded by this plus one
/// acknowledgement rather than by the time to fill `batch_size`.
const MAX_BATCH_AGE: Duration = Duration::from_millis(20);

/// What the HTTP API and the pipeline share about one partition.
pub struct PartitionData {
    /// The partition's customers.
    pub store: CustomerStore,
    /// Newest event time seen (ms).
    pub max_event_ms: Option<i64>,
    /// Event-time watermark: timers up to it have fired; events before it are late.
    pub watermark_ms: i64,
}

enum Status {
    /// Waiting for the changelog restore of this epoch.
    Restoring { since: Instant },
    /// Restored and processing.
    Live,
}

struct PendingBatch {
    seq: u64,
    /// Highest input offset in the batch (`None`: timers only).
    last_offset: Option<i64>,
    /// Alerts and dead letters not yet acknowledged.
    outputs_pending: u32,
    /// State snapshots, produced once `outputs_pending` is 0 and earlier batches' are out.
    snapshots: Option<Snapshots>,
    /// State records not yet acknowledged.
    state_pending: u32,
    /// When each event of the batch was received.
    received: Vec<Instant>,
}

/// A batch's state records in one buffer: each is a customer id (the key)
/// followed by its encoded state (the value; empty for a tombstone).
#[derive(Default)]
struct Snapshots {
    bytes: Vec<u8>,
    /// (end of key, end of value) in `bytes`; each record starts where the previous ended.
    ends: Vec<(u32, u32)>,
}

impl Snapshots {
    fn with_capacity(records: usize) -> Self {
        Snapshots {
            bytes: Vec::with_capacity(records * 112),
            ends: Vec::with_capacity(records),
        }
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Appends a record: the key, then whatever `value` writes (nothing: a tombstone).
    fn push(&mut self, key: &str, value: impl FnOnce(&mut Vec<u8>)) {
        self.bytes.extend_from_slice(key.as_bytes());
        let key_end = self.bytes.len() as u32;
        value(&mut self.bytes);
        self.ends.push((key_end, self.bytes.len() as u32));
    }

    /// (key, value) of every record, in order.
    fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut start = 0;
        self.ends.iter().map(move |&(key_end, end)| {
            let (k, e) = (key_end as usize, end as usize);
            let record = (&self.bytes[start..k], &self.bytes[k..e]);
            start = e;
            record
        })
    }
}

struct Partition {
    epoch: u64,
    data: Arc<RwLock<PartitionData>>,
    status: Status,
    pending: VecDeque<PendingBatch>,
    /// The open batch.
    open: PendingBatch,
    dirty: FxHashSet<CustomerIndex>,
    next_seq: u64,
    open_messages: usize,
    last_message_at: Instant,
    last_stored: Option<i64>,
    /// Earliest offset dropped while restoring, to seek back to on resume.
    rewind_to: Option<i64>,
    /// Evict silent customers at the next batch close.
    evict_due: bool,
    last_eviction: Instant,
    /// `received` vectors of finished batches, reused.
    spare_received: Vec<Vec<Instant>>,
    /// This partition's watermark gauge, once set.
    watermark_gauge: Option<IntGauge>,
}

impl Partition {
    fn new(epoch: u64, data: Arc<RwLock<PartitionData>>) -> Self {
        Partition {
            epoch,
            data,
            status: Status::Restoring {
                since: Instant::now(),
            },
            pending: VecDeque::new(),
            open: empty_batch(0),
            dirty: FxHashSet::default(),
            next_seq: 1,
            open_messages: 0,
            last_message_at: Instant::now(),
            last_stored: None,
            rewind_to: None,
            evict_due: false,
            last_eviction: Instant::now(),
            spare_received: Vec::new(),
            watermark_gauge: None,
        }
    }

    /// Closes the open batch (the caller has filled in its snapshots) and opens the next.
    fn rotate(&mut self) -> PendingBatch {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut next = empty_batch(seq);
        next.received = self.spare_received.pop().unwrap_or_default();
        self.open_messages = 0;
        std::mem::replace(&mut self.open, next)
    }

    fn batch_mut(&mut self, seq: u64) -> Option<&mut PendingBatch> {
        if self.open.seq == seq {
            return Some(&mut self.open);
        }
        self.pending.iter_mut().find(|b| b.seq == seq)
    }
}

fn empty_batch(seq: u64) -> PendingBatch {
    PendingBatch {
        seq,
        last_offset: None,
        outputs_pending: 0,
        snapshots: None,
        state_pending: 0,
        received: Vec::new(),
    }
}

/// A partition whose restore should start.
pub struct RestoreRequest {
    /// Input partition.
    pub partition: i32,
    /// Its assignment epoch.
    pub epoch: u64,
}

/// The pipeline's state, shared with the consumer's rebalance callbacks.
pub struct Core {
    config: WorkerConfig,
    model: Arc<RiskModel>,
    metrics: Metrics,
    shared: Arc<WorkerShared>,
    producer: BaseProducer<DeliveryContext>,
    partitions: FxHashMap<i32, Partition>,
    retries: VecDeque<(DeliveryTag, OutputRecord)>,
    in_flight: usize,
    next_epoch: u64,
    lateness_ms: i64,
    eviction_horizon_ms: Option<i64>,
    /// Restores to start (taken by the run loop, which owns the restore threads).
    pub restore_requests: Vec<RestoreRequest>,
    firings: Vec<TimerFiring>,
    offsets_to_store: Vec<(i32, i64)>,
    /// Hot-path metrics, published by [`Core::flush_metrics`].
    local: LocalMetrics,
    scratch_ids: Vec<i32>,
    scratch_customers: Vec<CustomerIndex>,
}

/// Metrics updated for every event, accumulated on the pipeline thread and
/// added to the shared registry in bulk (at every offset store and tick).
struct LocalMetrics {
    events_consumed: LocalIntCounter,
    events_late: LocalIntCounter,
    events_duplicate: LocalIntCounter,
    risk_score: LocalHistogram,
    processing_latency: LocalHistogram,
    inactivity_timers_fired: LocalIntCounter,
    state_changelog_records: LocalIntCounter,
}

impl LocalMetrics {
    fn new(m: &Metrics) -> Self {
        LocalMetrics {
            events_consumed: m.events_consumed.local(),
            events_late: m.events_late.local(),
            events_duplicate: m.events_duplicate.local(),
            risk_score: m.risk_score.local(),
            processing_latency: m.processing_latency.local(),
            inactivity_timers_fired: m.inactivity_timers_fired.local(),
            state_changelog_records: m.state_changelog_records.local(),
        }
    }

    fn flush(&self) {
        self.events_consumed.flush();
        self.events_late.flush();
        self.events_duplicate.flush();
        self.risk_score.flush();
        self.processing_latency.flush();
        self.inactivity_timers_fired.flush();
        self.state_changelog_records.flush();
    }
}

impl Core {
    /// A pipeline core with no partitions yet.
    pub fn new(
        config: WorkerConfig,
        model: Arc<RiskModel>,
        metrics: Metrics,
        shared: Arc<WorkerShared>,
        producer: BaseProducer<DeliveryContext>,
    ) -> Self {
        let lateness_ms = i64::try_from(config.engine.allowed_lateness_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        let days = config.engine.eviction_horizon_days;
        let eviction_horizon_ms = (days > 0.0).then_some((days * 86_400_000.0) as i64);
        Core {
            local: LocalMetrics::new(&metrics),
            scratch_ids: Vec::new(),
            scratch_customers: Vec::new(),
            config,
            model,
            metrics,
            shared,
            producer,
            partitions: FxHashMap::default(),
            retries: VecDeque::new(),
            in_flight: 0,
            next_epoch: 1,
            lateness_ms,
            eviction_horizon_ms,
            restore_requests: Vec::new(),
            firings: Vec::new(),
            offsets_to_store: Vec::new(),
        }
    }

    /// Whether outputs awaiting acknowledgement exceed the configured bound.
    pub fn backpressured(&self) -> bool {
        self.in_flight >= self.config.pipeline.max_in_flight
    }

    /// Whether outputs are waiting to be acknowledged (or sent again).
    pub fn awaiting_acks(&self) -> bool {
        self.in_flight > 0 || !self.retries.is_empty()
    }

    /// Whether any partition is still restoring.
    pub fn restoring(&self) -> bool {
        self.partitions
            .values()
            .any(|p| matches!(p.status, Status::Restoring { .. }))
    }

    /// Handles one consumed message.
    pub fn process(&mut self, msg: &BorrowedMessage<'_>) {
        let received = Instant::now();
        self.local.events_consumed.inc();
        let partition_id = msg.partition();
        let Some(partition) = self.partitions.get_mut(&partition_id) else {
            // Revoked while the message was in flight: the next owner reads it.
            return;
        };
        let offset = msg.offset();
        if !matches!(partition.status, Status::Live) {
            // Fetched before the pause took effect: read it again once restored.
            partition.rewind_to = Some(partition.rewind_to.map_or(offset, |r| r.min(offset)));
            return;
        }
        partition.last_message_at = received;
        let payload = msg.payload().unwrap_or_default();
        let (epoch, seq) = (partition.epoch, partition.open.seq);
        let tag = |kind| DeliveryTag {
            partition: partition_id,
            epoch,
            seq,
            kind,
        };
        let model = &*self.model;
        // At most one output per event: a dead letter or an alert.
        let mut output: Option<(DeliveryTag, OutputRecord)> = None;
        match parse_event(payload) {
            Err(error) => {
                let reason = error.reason();
                self.metrics
                    .events_invalid
                    .with_label_values(&[reason])
                    .inc();
                output = Some((
                    tag(OutputKind::DeadLetter(reason)),
                    OutputRecord {
                        topic: self.config.topics.dead_letter.clone(),
                        partition: None,
                        key: msg.key().unwrap_or_default().to_vec(),
                        payload: Some(payload.to_vec()),
                        headers: vec![
                            ("reason".into(), reason.as_bytes().to_vec()),
                            ("error".into(), error.to_string().into_bytes()),
                            ("source_topic".into(), msg.topic().as_bytes().to_vec()),
                            (
                                "source_partition".into(),
                                partition_id.to_string().into_bytes(),
                            ),
                            ("source_offset".into(), offset.to_string().into_bytes()),
                        ],
                    },
                ));
            }
            Ok(event) => {
                let Ok(mut data) = partition.data.write() else {
                    return;
                };
                let late = event.timestamp_ms < data.watermark_ms;
                match data.store.apply(model, &event, Some(offset), !late) {
                    ApplyOutcome::Duplicate => self.local.events_duplicate.inc(),
                    ApplyOutcome::Scored {
                        customer,
                        risk_score,
                        decision,
                    } => {
                        if late {
                            self.local.events_late.inc();
                        }
                        self.local.risk_score.observe(risk_score);
                        partition.dirty.insert(customer);
                        if let Some(decision) = decision {
                            let state = data.store.state(customer);
                            let explanation = state.explain(model, decision.event_time_ms);
                            let alert =
                                Alert::new(&event.customer_id, &decision, &explanation, model);
                            output = Some((
                                tag(OutputKind::Alert(decision.kind)),
                                alert_record(&self.config.topics.alerts, &alert),
                            ));
                        }
                    }
                }
                if data.max_event_ms.is_none_or(|m| event.timestamp_ms > m) {
                    data.max_event_ms = Some(event.timestamp_ms);
                    let wm = event.timestamp_ms.saturating_sub(self.lateness_ms);
                    data.watermark_ms = data.watermark_ms.max(wm);
                }
            }
        }
        partition.open.last_offset = Some(offset);
        partition.open.received.push(received);
        partition.open.outputs_pending += u32::from(output.is_some());
        partition.open_messages += 1;
        let full = partition.open_messages >= self.config.pipeline.batch_size
            || partition
                .open
                .received
                .first()
                .is_some_and(|&first| received.duration_since(first) >= MAX_BATCH_AGE);
        if let Some((tag, record)) = output {
            self.send(tag, record);
        }
        if full {
            self.close_batch(partition_id);
        }
    }

    /// Closes every partition's open batch.
    pub fn close_all_batches(&mut self) {
        let mut ids = std::mem::take(&mut self.scratch_ids);
        ids.clear();
        ids.extend(self.partitions.keys().copied());
        for &p in &ids {
            self.close_batch(p);
        }
        self.scratch_ids = ids;
    }

    /// Advances idle partitions' clocks with the wall clock, so inactivity
    /// timers fire even when a partition receives nothing.
    pub fn idle_tick(&mut self) {
        let idle_after = Duration::from_secs(self.config.engine.idle_timeout_secs);
        let ids: Vec<i32> = self.partitions.keys().copied().collect();
        for p in ids {
            let Some(partition) = self.partitions.get_mut(&p) else {
                continue;
            };
            if !matches!(partition.status, Status::Live) {
                continue;
            }
            if self.eviction_horizon_ms.is_some()
                && partition.last_eviction.elapsed()
                    >= Duration::from_secs(self.config.engine.eviction_interval_secs)
            {
                partition.last_eviction = Instant::now();
                partition.evict_due = true;
                self.close_batch(p);
                continue;
            }
            let idle = partition.last_message_at.elapsed();
            if idle < idle_after {
                continue;
            }
            if let Ok(mut data) = partition.data.write()
                && let Some(max) = data.max_event_ms
            {
                let clock = max.saturating_add(i64::try_from(idle.as_millis()).unwrap_or(i64::MAX));
                let wm = clock.saturating_sub(self.lateness_ms);
                data.watermark_ms = data.watermark_ms.max(wm);
            }
            self.close_batch(p);
        }
    }

    /// Fires due timers, snapshots changed customers and queues the batch.
    fn close_batch(&mut self, partition_id: i32) {
        let model = Arc::clone(&self.model);
        let Some(partition) = self.partitions.get_mut(&partition_id) else {
            return;
        };
        if !matches!(partition.status, Status::Live) {
            return;
        }
        let mut outputs: Vec<(DeliveryTag, OutputRecord)> = Vec::new();
        let snapshots = {
            let Ok(mut data) = partition.data.write() else {
                return;
            };
            let watermark = data.watermark_ms;
            self.firings.clear();
            data.store
                .fire_due_timers(&model, watermark, &mut self.firings);
            for firing in &self.firings {
                self.local.inactivity_timers_fired.inc();
                self.local.risk_score.observe(firing.risk_score);
                partition.dirty.insert(firing.customer);
                if let Some(decision) = firing.decision {
                    let id = data.store.id(firing.customer);
                    let explanation = data
                        .store
                        .state(firing.customer)
                        .explain(&model, decision.event_time_ms);
                    let alert = Alert::new(id, &decision, &explanation, &*model);
                    outputs.push((
                        DeliveryTag {
                            partition: partition_id,
                            epoch: partition.epoch,
                            seq: partition.open.seq,
                            kind: OutputKind::Alert(decision.kind),
                        },
                        alert_record(&self.config.topics.alerts, &alert),
                    ));
                }
            }
            let mut snapshots = Snapshots::with_capacity(partition.dirty.len());
            if let Some(horizon) = self.eviction_horizon_ms
                && std::mem::take(&mut partition.evict_due)
            {
                // Changes since the last snapshot are written first, then the tombstone.
                for &customer in &partition.dirty {
                    snapshots.push(data.store.id(customer), |out| {
                        encode_state(&model, data.store.state(customer), out)
                    });
                }
                partition.dirty.clear();
                let evicted = data.store.evict_silent(watermark, horizon);
                self.metrics.customers_evicted.inc_by(evicted.len() as u64);
                for id in &evicted {
                    snapshots.push(id.as_str(), |_| {});
                }
            }
            // In store order: neighbouring states share cache lines and pages.
            let mut dirty = std::mem::take(&mut self.scratch_customers);
            dirty.clear();
            dirty.extend(partition.dirty.drain());
            dirty.sort_unstable();
            for &customer in &dirty {
                snapshots.push(data.store.id(customer), |out| {
                    encode_state(&model, data.store.state(customer), out)
                });
            }
            self.scratch_customers = dirty;
            partition
                .watermark_gauge
                .get_or_insert_with(|| {
                    self.metrics
                        .partition_watermark_seconds
                        .with_label_values(&[&partition_id.to_string()])
                })
                .set(watermark.div_euclid(1000));
            snapshots
        };
        let nothing =
            partition.open.last_offset.is_none() && outputs.is_empty() && snapshots.is_empty();
        if nothing {
            return;
        }
        partition.open.outputs_pending += outputs.len() as u32;
        partition.open.snapshots = Some(snapshots);
        let closed = partition.rotate();
        partition.pending.push_back(closed);
        for (tag, record) in outputs {
            self.send(tag, record);
        }
        self.advance(partition_id);
    }

    /// Produces one output; on a full local queue, serves deliveries until it fits.
    fn send(&mut self, tag: DeliveryTag, record: OutputRecord) {
        self.in_flight += 1;
        let result = self.enqueue(
            tag,
            &record.topic,
            record.partition,
            &record.key,
            record.payload.as_deref(),
            || Some(record.owned_headers()),
        );
        if let Err(e) = result {
            self.enqueue_failed(tag, e, record);
        }
    }

    /// Produces one state record (an empty value is a tombstone) to the
    /// input partition's number on the state topic, straight from the batch's
    /// buffer; as [`Core::send`] otherwise.
    fn send_state(&mut self, tag: DeliveryTag, key: &[u8], value: &[u8]) {
        self.in_flight += 1;
        let payload = (!value.is_empty()).then_some(value);
        let topic = &self.config.topics.state;
        if let Err(e) = self.enqueue(tag, topic, Some(tag.partition), key, payload, || None) {
            let record = OutputRecord {
                topic: topic.clone(),
                partition: Some(tag.partition),
                key: key.to_vec(),
                payload: payload.map(<[u8]>::to_vec),
                headers: Vec::new(),
            };
            self.enqueue_failed(tag, e, record);
        }
    }

    /// Hands a record to librdkafka, serving deliveries while its local queue
    /// is full. Any other error is returned.
    fn enqueue(
        &self,
        tag: DeliveryTag,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: Option<&[u8]>,
        headers: impl Fn() -> Option<rdkafka::message::OwnedHeaders>,
    ) -> Result<(), KafkaError> {
        loop {
            let mut base = BaseRecord::with_opaque_to(topic, Box::new((tag, partition))).key(key);
            if let Some(h) = headers() {
                base = base.headers(h);
            }
            if let Some(payload) = payload {
                base = base.payload(payload);
            }
            if let Some(p) = partition {
                base = base.partition(p);
            }
            match self.producer.send(base) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Not retriable by waiting (e.g. message too large): count it and retry
    /// later, so the offset is never stored past an output not delivered.
    fn enqueue_failed(&mut self, tag: DeliveryTag, error: KafkaError, record: OutputRecord) {
        self.metrics.producer_errors.inc();
        tracing::error!(topic = %record.topic, %error, "cannot enqueue output; will retry");
        self.in_flight -= 1;
        self.retries.push_back((tag, record));
    }

    /// Serves producer callbacks and acts on delivery reports.
    pub fn serve_deliveries(&mut self, wait: Duration) {
        self.producer.poll(wait);
        // A zero-wait poll serves a single event (one produce response's
        // delivery reports): go on while polls still yield reports.
        for _ in 0..10_000 {
            let before = self.producer.context().reported.load(Ordering::Relaxed);
            self.producer.poll(Duration::ZERO);
            if self.producer.context().reported.load(Ordering::Relaxed) == before {
                break;
            }
        }
        let reports = match self.producer.context().reports.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(_) => return,
        };
        let mut touched = std::mem::take(&mut self.scratch_ids);
        touched.clear();
        for report in reports {
            match report {
                Delivery::Acked(tag) => {
                    self.in_flight = self.in_flight.saturating_sub(1);
                    self.count_output(tag.kind);
                    if let Some(p) = self.partitions.get_mut(&tag.partition)
                        && p.epoch == tag.epoch
                        && let Some(batch) = p.batch_mut(tag.seq)
                    {
                        match tag.kind {
                            OutputKind::State => batch.state_pending -= 1,
                            _ => batch.outputs_pending -= 1,
                        }
                        if !touched.contains(&tag.partition) {
                            touched.push(tag.partition);
                        }
                    }
                }
                Delivery::Failed(tag, error, record) => {
                    self.in_flight = self.in_flight.saturating_sub(1);
                    self.metrics.producer_errors.inc();
                    tracing::warn!(topic = %record.topic, %error, "delivery failed; retrying");
                    self.retries.push_back((tag, *record));
                }
            }
        }
        if !self.retries.is_empty() {
            let retries: Vec<_> = self.retries.drain(..).collect();
            for (tag, record) in retries {
                let live = self
                    .partitions
                    .get(&tag.partition)
                    .is_some_and(|p| p.epoch == tag.epoch);
                if live {
                    self.send(tag, record);
                }
            }
        }
        for &p in &touched {
            self.advance(p);
        }
        self.scratch_ids = touched;
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
            OutputKind::State => self.local.state_changelog_records.inc(),
        }
    }

    /// Releases state snapshots in batch order and pops finished batches.
    fn advance(&mut self, partition_id: i32) {
        let Some(partition) = self.partitions.get_mut(&partition_id) else {
            return;
        };
        let epoch = partition.epoch;
        let mut to_send: Vec<(u64, Snapshots)> = Vec::new();
        for batch in partition.pending.iter_mut() {
            if batch.outputs_pending > 0 {
                break;
            }
            if let Some(snapshots) = batch.snapshots.take() {
                batch.state_pending += snapshots.len() as u32;
                to_send.push((batch.seq, snapshots));
            }
        }
        let mut store_up_to = None;
        let now = Instant::now();
        while let Some(front) = partition.pending.front() {
            if front.outputs_pending > 0 || front.state_pending > 0 || front.snapshots.is_some() {
                break;
            }
            let mut done = partition.pending.pop_front().expect("front exists");
            for t in &done.received {
                self.local
                    .processing_latency
                    .observe(now.duration_since(*t).as_secs_f64());
            }
            if done.last_offset.is_some() {
                store_up_to = done.last_offset;
            }
            if partition.spare_received.len() < 4 {
                done.received.clear();
                partition.spare_received.push(done.received);
            }
        }
        if let Some(offset) = store_up_to
            && partition.last_stored.is_none_or(|s| offset > s)
        {
            partition.last_stored = Some(offset);
            self.offsets_to_store.push((partition_id, offset));
        }
        for (seq, snapshots) in to_send {
            let tag = DeliveryTag {
                partition: partition_id,
                epoch,
                seq,
                kind: OutputKind::State,
            };
            for (key, value) in snapshots.iter() {
                self.send_state(tag, key, value);
            }
        }
    }

    /// Offsets ready to be stored (last fully handled offset per partition).
    /// Publishes the hot-path metrics too, so they are never behind the
    /// offsets by more than the pipeline's current step.
    pub fn take_offsets(&mut self) -> Vec<(i32, i64)> {
        self.flush_metrics();
        std::mem::take(&mut self.offsets_to_store)
    }

    /// Adds the locally accumulated metrics to the shared registry.
    pub fn flush_metrics(&self) {
        self.local.flush();
    }

    /// Whether every batch of these partitions is fully acknowledged.
    fn drained(&self, partitions: &[i32]) -> bool {
        partitions.iter().all(|p| {
            self.partitions
                .get(p)
                .is_none_or(|p| p.pending.is_empty() && p.open.last_offset.is_none())
        })
    }

    /// Closes the batches of `partitions` and waits (up to `deadline`) until
    /// all their outputs are acknowledged and offsets stored.
    pub fn drain(&mut self, partitions: &[i32], deadline: Instant) -> bool {
        for &p in partitions {
            self.close_batch(p);
        }
        while !self.drained(partitions) {
            if Instant::now() >= deadline {
                return false;
            }
            self.serve_deliveries(Duration::from_millis(20));
        }
        true
    }

    /// Starts tracking newly assigned partitions; their restores are requested.
    pub fn assign(&mut self, partitions: &[i32]) {
        for &p in partitions {
            let epoch = self.next_epoch;
            self.next_epoch += 1;
            let data = Arc::new(RwLock::new(PartitionData {
                store: CustomerStore::new(),
                max_event_ms: None,
                watermark_ms: i64::MIN,
            }));
            self.partitions
                .insert(p, Partition::new(epoch, Arc::clone(&data)));
            self.shared.insert_partition(p, data, false);
            self.restore_requests.push(RestoreRequest {
                partition: p,
                epoch,
            });
        }
        self.metrics
            .partitions_assigned
            .set(self.partitions.len() as i64);
    }

    /// Installs a finished restore if the partition is still ours in that epoch.
    /// Returns `None` if it is not, else the offset to seek back to (if any)
    /// before the caller resumes the partition.
    pub fn install_restore(
        &mut self,
        partition_id: i32,
        epoch: u64,
        restored: Restored,
    ) -> Option<Option<i64>> {
        let partition = self.partitions.get_mut(&partition_id)?;
        if partition.epoch != epoch {
            return None;
        }
        let customers = restored.store.len();
        let max_event = restored.store.iter().map(|(_, s)| s.last_event_ms()).max();
        if let Ok(mut data) = partition.data.write() {
            data.store = restored.store;
            data.max_event_ms = max_event;
            data.watermark_ms = max_event.map_or(i64::MIN, |m| m.saturating_sub(self.lateness_ms));
        }
        if let Status::Restoring { since } = partition.status {
            tracing::info!(
                partition = partition_id,
                customers,
                records = restored.records,
                undecodable = restored.undecodable,
                restore_ms = restored.elapsed.as_millis() as u64,
                waited_ms = since.elapsed().as_millis() as u64,
                "partition restored"
            );
        }
        partition.status = Status::Live;
        partition.last_message_at = Instant::now();
        self.metrics
            .state_restore_seconds
            .observe(restored.elapsed.as_secs_f64());
        self.metrics
            .state_restored_customers
            .inc_by(customers as u64);
        let rewind = partition.rewind_to.take();
        self.shared.set_partition_live(partition_id);
        self.update_customer_gauge();
        Some(rewind)
    }

    /// Forgets revoked partitions (after [`Core::drain`]).
    pub fn forget(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.partitions.remove(p);
            self.shared.remove_partition(*p);
            self.metrics
                .consumer_lag
                .remove_label_values(&[&p.to_string()])
                .ok();
            self.metrics
                .partition_watermark_seconds
                .remove_label_values(&[&p.to_string()])
                .ok();
        }
        self.metrics
            .partitions_assigned
            .set(self.partitions.len() as i64);
        self.update_customer_gauge();
    }

    /// Sets `customers_tracked`.
    pub fn update_customer_gauge(&self) {
        let total: usize = self
            .partitions
            .values()
            .filter_map(|p| p.data.read().ok().map(|d| d.store.len()))
            .sum();
        self.metrics.customers_tracked.set(total as i64);
    }

    /// Partitions currently tracked.
    pub fn partition_ids(&self) -> Vec<i32> {
        self.partitions.keys().copied().collect()
    }

    /// Flushes the producer (bounded) and reports what could not be delivered.
    pub fn flush_producer(&mut self, timeout: Duration) -> usize {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "producer flush did not complete");
        }
        self.serve_deliveries(Duration::ZERO);
        self.producer.in_flight_count().max(0) as usize
    }
}

fn alert_record(topic: &str, alert: &Alert) -> OutputRecord {
    OutputRecord {
        topic: topic.to_string(),
        partition: None,
        key: alert.customer_id.as_bytes().to_vec(),
        payload: Some(alert.to_json()),
        headers: vec![
            (
                "schema_version".into(),
                ALERT_SCHEMA_VERSION.to_string().into_bytes(),
            ),
            ("kind".into(), alert.kind.as_bytes().to_vec()),
            ("content-type".into(), b"application/json".to_vec()),
        ],
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
