//! One assigned input partition: its customers, its event-time clock and
//! inactivity timers, and the batch of work it has open.
//!
//! A [`PartitionTask`] turns messages into outputs (alerts, dead letters) and
//! closed batches (those outputs plus the state records of the customers the
//! batch changed). It does no I/O: the pipeline sends what it returns.
//!
//! The clock: the watermark is the newest accepted event time less the
//! allowed lateness. Events stamped further ahead of the wall clock than the
//! allowed skew are dead-lettered and never move it. While the partition is
//! fetched successfully, caught up and quiet for `idle_timeout_secs` (the
//! idle rule), the clock follows the wall clock; never during an outage, a
//! fetch error, a restore or while a backlog is read. The clock is written to
//! the changelog with the customers' states, so a restart resumes it.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use prometheus::IntGauge;
use rustc_hash::FxHashSet;

use crate::config::WorkerConfig;
use churn_core::alert::{ALERT_SCHEMA_VERSION, Alert};
use churn_core::changelog::{
    DELETION_POSITION_KEY, PartitionClock, WATERMARK_KEY, encode_clock, encode_position,
    encode_state,
};
use rdkafka::message::{Header, OwnedHeaders};

use crate::telemetry::Metrics;
use churn_core::engine::{
    AlertDecision, AlertKind, ApplyOutcome, CustomerIndex, CustomerStore, StreamClock, TimerFiring,
};
use churn_core::event::check_not_in_future;
use churn_core::input::{DecodeError, HeaderLookup, InputFormat, MessageContext};
use churn_core::model::RiskModel;

use crate::kafka::{OutputKind, OutputRecord};
use crate::sink::LogLimiter;
use crate::telemetry::LocalMetrics;

/// A batch closes once its first event is this old, even if neither full nor
/// drained: under a steady backlog, latency stays bounded by this plus one
/// acknowledgement rather than by the time to fill `batch_size`.
const MAX_BATCH_AGE: Duration = Duration::from_millis(10);

/// What the HTTP API and the pipeline share about one partition.
pub struct PartitionData {
    /// The partition's customers.
    pub store: CustomerStore,
    /// The partition's event-time clock: newest accepted event time and the
    /// watermark (timers up to it have fired; events before it are late).
    pub clock: StreamClock,
    /// The model `store` is held for (its per-type counters are indices into
    /// this model's event types): swapped together with the store's
    /// conversion on a reload, so a reader never pairs one with the other's.
    pub model: Arc<RiskModel>,
    /// The shadow model and its own customers' states, if one is configured.
    pub shadow: Option<ShadowScorer>,
}

/// A second model scored beside the live one, with states of its own (its
/// half-lives, event types and alert decisions may all differ). It is
/// never written to the changelog: a restore seeds it from the restored
/// live states, converted as a reload to it would convert them, so after a
/// restart the shadow shows what switching to it then would do.
pub struct ShadowScorer {
    /// The shadow model.
    pub model: Arc<RiskModel>,
    /// Its customers, held for `model`.
    pub store: CustomerStore,
}

/// Settings every partition shares, read from the configuration once.
pub struct PartitionSettings {
    /// How message values become events (`[input]`).
    input: InputFormat,
    dead_letter_topic: String,
    /// Where shadow alerts are published (`None`: only counted).
    shadow_alerts_topic: Option<String>,
    lateness_ms: i64,
    max_skew_ms: i64,
    idle_after: Duration,
    batch_size: usize,
    eviction_horizon_ms: Option<i64>,
    eviction_interval: Duration,
}

impl PartitionSettings {
    /// From the worker configuration.
    pub fn new(config: &WorkerConfig) -> Self {
        let days = config.engine.eviction_horizon_days;
        PartitionSettings {
            input: config.input.decoder.clone(),
            dead_letter_topic: config.topics.dead_letter.clone(),
            shadow_alerts_topic: config.topics.shadow_alerts.clone(),
            lateness_ms: config.engine.allowed_lateness_ms(),
            max_skew_ms: config.engine.max_future_skew_ms(),
            idle_after: Duration::from_secs(config.engine.idle_timeout_secs),
            batch_size: config.pipeline.batch_size.max(1),
            eviction_horizon_ms: (days > 0.0).then_some((days * 86_400_000.0) as i64),
            eviction_interval: Duration::from_secs(config.engine.eviction_interval_secs),
        }
    }
}

/// What every partition reads while it works: settings, model and metrics.
pub struct TaskContext<'a> {
    /// Shared settings.
    pub settings: &'a PartitionSettings,
    /// The model.
    pub model: &'a RiskModel,
    /// The shared registry.
    pub metrics: &'a Metrics,
    /// The pipeline thread's hot-path metrics.
    pub local: &'a LocalMetrics,
}

/// One consumed message, as a partition sees it.
pub struct InputMessage<'a> {
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Message key, if any.
    pub key: Option<&'a [u8]>,
    /// Message value (empty if none).
    pub payload: &'a [u8],
    /// Message timestamp (Unix milliseconds), if it has one: an input
    /// mapping may read the event time from it.
    pub timestamp_ms: Option<i64>,
    /// Message headers: an input mapping may read the event time from one.
    pub headers: Option<&'a rdkafka::message::BorrowedHeaders>,
}

/// Kafka headers as the input layer looks them up.
struct KafkaHeaders<'a>(&'a rdkafka::message::BorrowedHeaders);

impl HeaderLookup for KafkaHeaders<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        use rdkafka::message::Headers;
        self.0.iter().find(|h| h.key == name).and_then(|h| h.value)
    }
}

/// A batch's state records in one buffer: each is a key followed by its
/// value (empty for a tombstone).
#[derive(Default)]
pub struct Snapshots {
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

    /// Records held.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Appends a record: the key, then whatever `value` writes (nothing: a tombstone).
    fn push(&mut self, key: &[u8], value: impl FnOnce(&mut Vec<u8>)) {
        self.bytes.extend_from_slice(key);
        let key_end = self.bytes.len() as u32;
        value(&mut self.bytes);
        self.ends.push((key_end, self.bytes.len() as u32));
    }

    /// (key, value) of every record, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut start = 0;
        self.ends.iter().map(move |&(key_end, end)| {
            let (k, e) = (key_end as usize, end as usize);
            let record = (&self.bytes[start..k], &self.bytes[k..e]);
            start = e;
            record
        })
    }
}

/// What a batch caused, handed to the pipeline when it closes.
pub struct ClosedBatch {
    /// Last input offset the batch covers (`None`: timers only).
    pub last_offset: Option<i64>,
    /// Dead letters, to send now.
    pub outputs: Vec<(OutputKind, OutputRecord)>,
    /// Alerts, to send now.
    pub alerts: AlertBuffer,
    /// Shadow alerts, to send now to the shadow topic (empty without one).
    pub shadow_alerts: AlertBuffer,
    /// State records of a flush (empty if the close did not flush), to send
    /// once the ledger releases them.
    pub snapshots: Snapshots,
    /// When each of its messages was received.
    pub received: Vec<Instant>,
}

enum Status {
    /// Waiting for the changelog restore of this epoch.
    Restoring { since: Instant },
    /// Restored and processing.
    Live,
}

/// One assigned partition; see the module documentation.
pub struct PartitionTask {
    id: i32,
    epoch: u64,
    data: Arc<RwLock<PartitionData>>,
    status: Status,
    dirty: FxHashSet<CustomerIndex>,
    open_last_offset: Option<i64>,
    open_outputs: Vec<(OutputKind, OutputRecord)>,
    open_alerts: AlertBuffer,
    open_shadow_alerts: AlertBuffer,
    open_received: Vec<Instant>,
    last_message_at: Instant,
    /// Since when the partition is known to be fetched and caught up.
    caught_up_since: Option<Instant>,
    /// Earliest offset dropped while restoring, to seek back to on resume.
    rewind_to: Option<i64>,
    evict_due: bool,
    last_eviction: Instant,
    /// The clock as last put in a batch's state records.
    written_clock: Option<PartitionClock>,
    /// Customers erased since the last flush: their tombstones lead the
    /// next flush's state records.
    erased: Vec<String>,
    /// Next offset to read from the deletion topic's partition of the same
    /// number, and the one last put in a flush (after its tombstones).
    deletion_position: Option<i64>,
    written_deletion_position: Option<i64>,
    firings: Vec<TimerFiring>,
    shadow_firings: Vec<TimerFiring>,
    /// The dirty customers in store order, reused across closes.
    sorted_dirty: Vec<CustomerIndex>,
    misrouted_log: LogLimiter,
    /// Created with the partition's first watermark: until then there is
    /// none to report (the clock's "nothing yet" is i64::MIN, which would
    /// read as −9.2e15 seconds).
    watermark_gauge: Option<IntGauge>,
    idle_gauge: IntGauge,
}

impl PartitionTask {
    /// A newly assigned partition, waiting for its restore.
    pub fn new(
        id: i32,
        epoch: u64,
        settings: &PartitionSettings,
        metrics: &Metrics,
        model: Arc<RiskModel>,
        shadow: Option<Arc<RiskModel>>,
    ) -> Self {
        let label = id.to_string();
        PartitionTask {
            id,
            epoch,
            data: Arc::new(RwLock::new(PartitionData {
                store: CustomerStore::new(),
                clock: StreamClock::new(settings.lateness_ms),
                model,
                shadow: shadow.map(|model| ShadowScorer {
                    model,
                    store: CustomerStore::new(),
                }),
            })),
            status: Status::Restoring {
                since: Instant::now(),
            },
            dirty: FxHashSet::default(),
            open_last_offset: None,
            open_outputs: Vec::new(),
            open_alerts: AlertBuffer::default(),
            open_shadow_alerts: AlertBuffer::default(),
            open_received: Vec::new(),
            last_message_at: Instant::now(),
            caught_up_since: None,
            rewind_to: None,
            evict_due: false,
            last_eviction: Instant::now(),
            written_clock: None,
            erased: Vec::new(),
            deletion_position: None,
            written_deletion_position: None,
            firings: Vec::new(),
            shadow_firings: Vec::new(),
            sorted_dirty: Vec::new(),
            misrouted_log: LogLimiter::default(),
            watermark_gauge: None,
            idle_gauge: metrics
                .partition_idle_rule_active
                .with_label_values(&[&label]),
        }
    }

    /// Makes the restore's install seek back to `offset` at least
    /// (exactly-once: a rewind to the last committed offset after an abort).
    pub fn rewind_to(&mut self, offset: i64) {
        self.rewind_to = Some(self.rewind_to.map_or(offset, |r| r.min(offset)));
    }

    /// Assignment epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The data the HTTP API reads.
    pub fn data(&self) -> Arc<RwLock<PartitionData>> {
        Arc::clone(&self.data)
    }

    /// Whether the partition is restored and processing.
    pub fn is_live(&self) -> bool {
        matches!(self.status, Status::Live)
    }

    /// Whether the open batch holds anything.
    pub fn has_open_work(&self) -> bool {
        self.open_last_offset.is_some()
            || !self.open_outputs.is_empty()
            || !self.open_alerts.is_empty()
            || !self.open_shadow_alerts.is_empty()
            || !self.erased.is_empty()
    }

    /// Moves the partition's customers from model `old` to `new` (see
    /// [`CustomerStore::adopt_model`]); between batches, so every batch is
    /// scored by one model.
    pub fn adopt_model(
        &mut self,
        old: &RiskModel,
        new: &Arc<RiskModel>,
        new_shadow: Option<&Arc<RiskModel>>,
    ) {
        if let Ok(mut data) = self.data.write() {
            let data = &mut *data;
            let watermark = data.clock.watermark_ms;
            // A restoring partition's store is empty; its restore is converted when installed.
            if self.is_live() {
                data.store.adopt_model(old, new, watermark);
            }
            data.model = Arc::clone(new);
            if let (Some(shadow), Some(new_shadow)) = (&mut data.shadow, new_shadow)
                && !Arc::ptr_eq(&shadow.model, new_shadow)
            {
                shadow
                    .store
                    .adopt_model(&shadow.model, new_shadow, watermark);
                shadow.model = Arc::clone(new_shadow);
            }
        }
    }

    /// Forgets a customer on request (erasure): its state and pending
    /// timer go at once; a tombstone follows with the next flush. Returns
    /// whether this partition held it.
    pub fn erase(&mut self, customer_id: &str) -> bool {
        let Ok(mut data) = self.data.write() else {
            return false;
        };
        let Some(customer) = data.store.find(customer_id) else {
            return false;
        };
        // Its slot may be reused: it must not be written as a changed customer.
        self.dirty.remove(&customer);
        data.store.remove(customer_id);
        if let Some(shadow) = &mut data.shadow {
            shadow.store.remove(customer_id);
        }
        self.erased.push(customer_id.to_string());
        true
    }

    /// Next offset to read from the deletion topic's partition of this
    /// number (`None`: none was ever applied: read it from the beginning).
    pub fn deletion_position(&self) -> Option<i64> {
        self.deletion_position
    }

    /// Applies the deletion-topic record at `offset` (erasing the customer
    /// if held); its position is written with the next flush, after the
    /// tombstone. A record at or before the position applied is a re-read
    /// and changes nothing. Returns whether a customer was erased.
    pub fn erase_from_topic(&mut self, customer_id: &str, offset: i64) -> bool {
        if self.deletion_position.is_some_and(|next| offset < next) {
            return false;
        }
        self.deletion_position = Some(offset.saturating_add(1));
        self.erase(customer_id)
    }

    /// Installs a restored store and clock; returns the offset to seek back
    /// to (if messages were dropped while restoring).
    pub fn install_restore(
        &mut self,
        mut store: CustomerStore,
        clock: PartitionClock,
        restored_with: &RiskModel,
        deletion_position: Option<i64>,
    ) -> (Option<Duration>, Option<i64>) {
        self.deletion_position = deletion_position;
        self.written_deletion_position = deletion_position;
        if let Ok(mut data) = self.data.write() {
            let data = &mut *data;
            if !std::ptr::eq(restored_with, &*data.model) {
                // The model was reloaded while the changelog was read.
                store.adopt_model(restored_with, &data.model, clock.watermark_ms);
            }
            if let Some(shadow) = &mut data.shadow {
                // Never on the changelog: seeded as a reload to it would convert.
                let mut seeded = store.clone();
                seeded.adopt_model(&data.model, &shadow.model, clock.watermark_ms);
                shadow.store = seeded;
            }
            data.store = store;
            data.clock.max_event_ms = clock.max_event_ms;
            data.clock.watermark_ms = clock.watermark_ms;
        }
        let waited = match self.status {
            Status::Restoring { since } => Some(since.elapsed()),
            Status::Live => None,
        };
        self.status = Status::Live;
        self.written_clock = Some(clock);
        self.last_message_at = Instant::now();
        self.caught_up_since = None;
        (waited, self.rewind_to.take())
    }

    /// Records whether the partition is fetched and caught up, as the
    /// consumer's statistics (or an error) just told.
    pub fn set_caught_up(&mut self, caught_up: bool, now: Instant) {
        if !caught_up || !self.is_live() {
            self.caught_up_since = None;
        } else if self.caught_up_since.is_none() {
            self.caught_up_since = Some(now);
        }
    }

    /// Handles one message; returns true if the open batch is now full.
    pub fn process(
        &mut self,
        cx: &TaskContext<'_>,
        msg: &InputMessage<'_>,
        received: Instant,
        wall_clock_ms: i64,
    ) -> bool {
        let TaskContext {
            settings,
            model,
            metrics,
            local,
        } = *cx;
        if !self.is_live() {
            // Fetched before the pause took effect: read it again once restored.
            self.rewind_to = Some(self.rewind_to.map_or(msg.offset, |r| r.min(msg.offset)));
            return false;
        }
        // Counted here, once processed: a message dropped while restoring is
        // read again and must not count twice.
        local.events_consumed.inc();
        self.last_message_at = received;
        let headers = msg.headers.map(KafkaHeaders);
        let message = MessageContext {
            key: msg.key,
            timestamp_ms: msg.timestamp_ms,
            headers: headers.as_ref().map(|h| h as &dyn HeaderLookup),
        };
        let parsed = settings
            .input
            .decode(msg.payload, &message)
            .and_then(|event| {
                let Some(event) = event else { return Ok(None) };
                check_not_in_future(event.timestamp_ms, wall_clock_ms, settings.max_skew_ms)
                    .map(|()| Some(event))
                    .map_err(DecodeError::from)
            });
        match parsed {
            // Left out by the input mapping's include/exclude lists: read,
            // neither applied nor dead-lettered.
            Ok(None) => {}
            Err(error) => self.reject(cx, msg, &error),
            Ok(Some(event)) => {
                if msg.key != Some(event.customer_id.as_bytes()) {
                    metrics.events_misrouted.inc();
                    if let Some(held_back) = self.misrouted_log.allow(Duration::from_secs(10)) {
                        tracing::warn!(
                            partition = self.id,
                            offset = msg.offset,
                            customer_id = %event.customer_id,
                            key = %msg.key.map_or("(none)".into(), String::from_utf8_lossy),
                            similar_not_logged = held_back,
                            "message key is not the event's customer_id: that customer's \
                             state may be split across partitions (see docs/events.md)"
                        );
                    }
                }
                let Ok(mut guard) = self.data.write() else {
                    return false;
                };
                // Judged against the partition's newest accepted event, by
                // the model's bounds, as the offline replay judges it.
                if let Err(error) = model
                    .event_time_bounds()
                    .check(event.timestamp_ms, guard.clock.max_event_ms)
                {
                    drop(guard);
                    self.reject(cx, msg, &DecodeError::from(error));
                    return self.add_to_batch(settings, msg.offset, received);
                }
                let data = &mut *guard;
                self.firings.clear();
                let clock_before = data.clock;
                let (outcome, late) = data.store.apply_in_stream(
                    model,
                    &mut data.clock,
                    &event,
                    Some(msg.offset),
                    &mut self.firings,
                );
                let shadow_decision = data.shadow.as_mut().and_then(|shadow| {
                    // Its own copy of the clock: it moves exactly as the live one did.
                    let mut clock = clock_before;
                    self.shadow_firings.clear();
                    let (outcome, _) = shadow.store.apply_in_stream(
                        &shadow.model,
                        &mut clock,
                        &event,
                        Some(msg.offset),
                        &mut self.shadow_firings,
                    );
                    match outcome {
                        ApplyOutcome::Scored {
                            customer, decision, ..
                        } => decision.map(|d| (customer, d)),
                        ApplyOutcome::Duplicate => None,
                    }
                });
                push_firing_alerts(
                    cx,
                    &data.store,
                    &self.firings,
                    &mut self.dirty,
                    &mut self.open_alerts,
                );
                if let Some(shadow) = &data.shadow {
                    let publish = settings.shadow_alerts_topic.is_some();
                    let live = &data.store;
                    for firing in &self.shadow_firings {
                        if let Some(decision) = &firing.decision {
                            shadow_decided(
                                metrics,
                                shadow,
                                live,
                                firing.customer,
                                decision,
                                publish.then_some(&mut self.open_shadow_alerts),
                            );
                        }
                    }
                    if let Some((customer, decision)) = &shadow_decision {
                        shadow_decided(
                            metrics,
                            shadow,
                            live,
                            *customer,
                            decision,
                            publish.then_some(&mut self.open_shadow_alerts),
                        );
                    }
                    count_live_agreement(metrics, shadow, &data.store, &self.firings);
                }
                match outcome {
                    ApplyOutcome::Duplicate => local.events_duplicate.inc(),
                    ApplyOutcome::Scored {
                        customer,
                        risk_score,
                        decision,
                    } => {
                        if late {
                            local.events_late.inc();
                        }
                        local.risk_score.observe(risk_score);
                        self.dirty.insert(customer);
                        if let Some(decision) = decision {
                            if let Some(shadow) = &data.shadow
                                && decision.kind == AlertKind::AtRisk
                            {
                                live_opened(metrics, shadow, data.store.id(customer));
                            }
                            self.open_alerts
                                .push(model, &data.store, customer, &decision);
                        }
                    }
                }
            }
        }
        self.add_to_batch(settings, msg.offset, received)
    }

    /// Dead-letters a message that is not an acceptable event.
    fn reject(&mut self, cx: &TaskContext<'_>, msg: &InputMessage<'_>, error: &DecodeError) {
        cx.metrics
            .events_invalid
            .with_label_values(&[error.reason()])
            .inc();
        let record = dead_letter(&cx.settings.dead_letter_topic, msg, error);
        self.open_outputs
            .push((OutputKind::DeadLetter(error.reason()), record));
    }

    /// Counts the message at `offset` in the open batch; returns true if
    /// the batch is now full (or old enough to close).
    fn add_to_batch(
        &mut self,
        settings: &PartitionSettings,
        offset: i64,
        received: Instant,
    ) -> bool {
        self.open_last_offset = Some(offset);
        self.open_received.push(received);
        self.open_received.len() >= settings.batch_size
            || self
                .open_received
                .first()
                .is_some_and(|&first| received.duration_since(first) >= MAX_BATCH_AGE)
    }

    /// The idle rule and the eviction schedule, checked about once a second.
    /// Returns true if the batch should be closed now (the clock moved or an
    /// eviction is due).
    pub fn tick(&mut self, settings: &PartitionSettings, now: Instant, wall_clock_ms: i64) -> bool {
        if !self.is_live() {
            self.idle_gauge.set(0);
            return false;
        }
        let mut close = false;
        if settings.eviction_horizon_ms.is_some()
            && now.duration_since(self.last_eviction) >= settings.eviction_interval
        {
            self.last_eviction = now;
            self.evict_due = true;
            close = true;
        }
        // Silence counts only from when the partition was last seen caught up
        // and fetching: an outage or a backlog is not a customer's silence.
        let quiet = self
            .caught_up_since
            .map(|since| now.duration_since(since.max(self.last_message_at)));
        let active = quiet.is_some_and(|q| q >= settings.idle_after);
        self.idle_gauge.set(i64::from(active));
        if let (true, Some(quiet)) = (active, quiet)
            && let Ok(mut data) = self.data.write()
            && let Some(max) = data.clock.max_event_ms
        {
            let cap = wall_clock_ms.saturating_add(settings.max_skew_ms);
            let clock = max
                .saturating_add(i64::try_from(quiet.as_millis()).unwrap_or(i64::MAX))
                .min(cap);
            let wm = clock.saturating_sub(settings.lateness_ms);
            if wm > data.clock.watermark_ms {
                data.clock.watermark_ms = wm;
                close = true;
            }
        }
        close
    }

    /// Fires due timers and closes the open batch; with `flush`, also
    /// snapshots the customers changed since the last flush (and the clock,
    /// if it moved), so the snapshots cover every offset processed so far.
    /// Between flushes the changed customers only accumulate: a customer
    /// changed in many batches is written once. `None` if the partition is
    /// not live; the batch may be empty.
    pub fn close(&mut self, cx: &TaskContext<'_>, flush: bool) -> Option<ClosedBatch> {
        let TaskContext {
            settings,
            model,
            metrics,
            ..
        } = *cx;
        if !self.is_live() {
            return None;
        }
        let Ok(mut data) = self.data.write() else {
            return None;
        };
        let data = &mut *data;
        let watermark = data.clock.watermark_ms;
        self.firings.clear();
        data.store
            .fire_due_timers(model, watermark, &mut self.firings);
        push_firing_alerts(
            cx,
            &data.store,
            &self.firings,
            &mut self.dirty,
            &mut self.open_alerts,
        );
        if let Some(shadow) = &mut data.shadow {
            self.shadow_firings.clear();
            shadow
                .store
                .fire_due_timers(&shadow.model, watermark, &mut self.shadow_firings);
            let publish = settings.shadow_alerts_topic.is_some();
            for firing in &self.shadow_firings {
                if let Some(decision) = &firing.decision {
                    shadow_decided(
                        metrics,
                        shadow,
                        &data.store,
                        firing.customer,
                        decision,
                        publish.then_some(&mut self.open_shadow_alerts),
                    );
                }
            }
            count_live_agreement(metrics, shadow, &data.store, &self.firings);
        }
        if watermark != i64::MIN {
            let id = self.id;
            self.watermark_gauge
                .get_or_insert_with(|| {
                    metrics
                        .partition_watermark_seconds
                        .with_label_values(&[&id.to_string()])
                })
                .set(watermark.div_euclid(1000));
        }
        if !flush {
            return Some(ClosedBatch {
                last_offset: self.open_last_offset.take(),
                outputs: std::mem::take(&mut self.open_outputs),
                alerts: std::mem::take(&mut self.open_alerts),
                shadow_alerts: std::mem::take(&mut self.open_shadow_alerts),
                snapshots: Snapshots::default(),
                received: std::mem::take(&mut self.open_received),
            });
        }
        let mut snapshots = Snapshots::with_capacity(self.erased.len() + self.dirty.len() + 1);
        // First: a customer that came back after its erasure has a newer
        // state among the changed ones below.
        for id in self.erased.drain(..) {
            snapshots.push(id.as_bytes(), |_| {});
        }
        if let Some(horizon) = settings.eviction_horizon_ms
            && std::mem::take(&mut self.evict_due)
        {
            // Changes since the last snapshot are written first, then the tombstone.
            for &customer in &self.dirty {
                snapshots.push(data.store.id(customer).as_bytes(), |out| {
                    encode_state(model, data.store.state(customer), out)
                });
            }
            self.dirty.clear();
            let evicted = data.store.evict_silent(watermark, horizon);
            metrics.customers_evicted.inc_by(evicted.len() as u64);
            if let Some(shadow) = &mut data.shadow {
                for id in &evicted {
                    shadow.store.remove(id);
                }
            }
            for id in &evicted {
                snapshots.push(id.as_bytes(), |_| {});
            }
        }
        // In store order: neighbouring states share cache lines and pages.
        self.sorted_dirty.clear();
        self.sorted_dirty.extend(self.dirty.drain());
        self.sorted_dirty.sort_unstable();
        for &customer in &self.sorted_dirty {
            snapshots.push(data.store.id(customer).as_bytes(), |out| {
                encode_state(model, data.store.state(customer), out)
            });
        }
        let clock = PartitionClock {
            watermark_ms: data.clock.watermark_ms,
            max_event_ms: data.clock.max_event_ms,
        };
        if self.written_clock != Some(clock) {
            snapshots.push(WATERMARK_KEY, |out| encode_clock(&clock, out));
            self.written_clock = Some(clock);
        }
        // Last: the tombstones it covers come earlier in the same flush.
        if let Some(next) = self.deletion_position
            && self.written_deletion_position != Some(next)
        {
            snapshots.push(DELETION_POSITION_KEY, |out| encode_position(next, out));
            self.written_deletion_position = Some(next);
        }
        Some(ClosedBatch {
            last_offset: self.open_last_offset.take(),
            outputs: std::mem::take(&mut self.open_outputs),
            alerts: std::mem::take(&mut self.open_alerts),
            shadow_alerts: std::mem::take(&mut self.open_shadow_alerts),
            snapshots,
            received: std::mem::take(&mut self.open_received),
        })
    }

    /// Removes this partition's per-partition metric series.
    pub fn remove_metrics(&self, metrics: &Metrics) {
        let label = self.id.to_string();
        for vec in [
            &metrics.consumer_lag,
            &metrics.partition_watermark_seconds,
            &metrics.partition_idle_rule_active,
        ] {
            vec.remove_label_values(&[&label]).ok();
        }
        metrics
            .partition_restore_progress
            .remove_label_values(&[&label])
            .ok();
    }
}

/// Counts fired timers and queues their alerts. Only a firing that decided
/// something marks its customer for a state record: one that decided
/// nothing changes only what a restore recomputes (the restored timer fires
/// the same steps again, deciding nothing again, since the watermark is
/// restored too), so writing it would cost a record for nothing.
fn push_firing_alerts(
    cx: &TaskContext<'_>,
    store: &CustomerStore,
    firings: &[TimerFiring],
    dirty: &mut FxHashSet<CustomerIndex>,
    alerts: &mut AlertBuffer,
) {
    for firing in firings {
        cx.local.inactivity_timers_fired.inc();
        cx.local.risk_score.observe(firing.risk_score);
        if let Some(decision) = firing.decision {
            dirty.insert(firing.customer);
            alerts.push(cx.model, store, firing.customer, &decision);
        }
    }
}

/// Counts a live at-risk alert against the shadow's view of the customer.
fn live_opened(metrics: &Metrics, shadow: &ShadowScorer, customer_id: &str) {
    let other = if shadow
        .store
        .get(customer_id)
        .is_some_and(|s| s.alert_open())
    {
        "open"
    } else {
        "not_open"
    };
    metrics
        .shadow_alert_agreement
        .with_label_values(&["live", other])
        .inc();
}

/// Counts the live at-risk alerts among `firings` (see [`live_opened`]).
fn count_live_agreement(
    metrics: &Metrics,
    shadow: &ShadowScorer,
    live: &CustomerStore,
    firings: &[TimerFiring],
) {
    for firing in firings {
        if firing.decision.is_some_and(|d| d.kind == AlertKind::AtRisk) {
            live_opened(metrics, shadow, live.id(firing.customer));
        }
    }
}

/// Counts a shadow decision (and its agreement with the live model, for an
/// at-risk one) and, when shadow alerts are published, serialises it.
fn shadow_decided(
    metrics: &Metrics,
    shadow: &ShadowScorer,
    live: &CustomerStore,
    customer: CustomerIndex,
    decision: &AlertDecision,
    publish: Option<&mut AlertBuffer>,
) {
    metrics
        .shadow_alerts
        .with_label_values(&[decision.kind.as_str()])
        .inc();
    if decision.kind == AlertKind::AtRisk {
        let id = shadow.store.id(customer);
        let other = if live.get(id).is_some_and(|s| s.alert_open()) {
            "open"
        } else {
            "not_open"
        };
        metrics
            .shadow_alert_agreement
            .with_label_values(&["shadow", other])
            .inc();
    }
    if let Some(buffer) = publish {
        buffer.push(&shadow.model, &shadow.store, customer, decision);
    }
}

/// A batch's alerts, serialised into one buffer that is reused from batch
/// to batch: each is its key (the customer id) followed by its JSON.
#[derive(Default)]
pub struct AlertBuffer {
    bytes: Vec<u8>,
    /// (kind, end of key, end of value) in `bytes`; each starts where the previous ended.
    ends: Vec<(AlertKind, u32, u32)>,
}

impl AlertBuffer {
    /// Alerts held.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether no alert is held.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Empties the buffer, keeping its allocations.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// Serialises the alert `decision` about `customer` at the end.
    fn push(
        &mut self,
        model: &RiskModel,
        store: &CustomerStore,
        customer: CustomerIndex,
        decision: &AlertDecision,
    ) {
        let explanation = store.state(customer).explain(model, decision.event_time_ms);
        let alert = Alert::new(store.id(customer), decision, &explanation, model);
        let start = self.bytes.len();
        self.bytes.extend_from_slice(alert.customer_id.as_bytes());
        let key_end = self.bytes.len() as u32;
        if serde_json::to_writer(&mut self.bytes, &alert).is_err() {
            // Writing to a Vec cannot fail; never leave half an alert behind.
            self.bytes.truncate(start);
            return;
        }
        self.ends
            .push((decision.kind, key_end, self.bytes.len() as u32));
    }

    /// (kind, key, JSON) of every alert, in order.
    pub fn iter(&self) -> impl Iterator<Item = (AlertKind, &[u8], &[u8])> {
        let mut start = 0;
        self.ends.iter().map(move |&(kind, key_end, end)| {
            let (k, e) = (key_end as usize, end as usize);
            let alert = (kind, &self.bytes[start..k], &self.bytes[k..e]);
            start = e;
            alert
        })
    }
}

/// The headers of an alert of `kind`, built once per kind and copied per record.
pub fn alert_headers(kind: AlertKind) -> OwnedHeaders {
    let schema = ALERT_SCHEMA_VERSION.to_string();
    OwnedHeaders::new_with_capacity(3)
        .insert(Header {
            key: "schema_version",
            value: Some(schema.as_bytes()),
        })
        .insert(Header {
            key: "kind",
            value: Some(kind.as_str().as_bytes()),
        })
        .insert(Header {
            key: "content-type",
            value: Some(b"application/json".as_slice()),
        })
}

impl PartitionTask {
    /// Hands back a sent alert buffer, so the next batch reuses its allocations.
    pub fn recycle_alerts(&mut self, mut buffer: AlertBuffer) {
        if self.open_alerts.bytes.capacity() == 0 {
            buffer.clear();
            self.open_alerts = buffer;
        }
    }
}

/// The dead letter of a message that is not an event. Its `reason` header is
/// the reason label, followed for a mapped input format by the source that
/// failed (`missing_field: /userId`); the metric label stays the bare label.
fn dead_letter(topic: &str, msg: &InputMessage<'_>, error: &DecodeError) -> OutputRecord {
    OutputRecord {
        topic: topic.to_string(),
        partition: None,
        // A message without a key keeps having none.
        key: msg.key.map(<[u8]>::to_vec),
        payload: Some(msg.payload.to_vec()),
        headers: vec![
            (
                "reason".into(),
                error.reason_with_source().into_owned().into_bytes(),
            ),
            ("error".into(), error.to_string().into_bytes()),
            ("source_topic".into(), msg.topic.as_bytes().to_vec()),
            (
                "source_partition".into(),
                msg.partition.to_string().into_bytes(),
            ),
            ("source_offset".into(), msg.offset.to_string().into_bytes()),
        ],
    }
}

/// Flushes whose state records wait for the ledger, and the closed batches
/// whose outputs are not all acknowledged yet.
#[derive(Default)]
pub struct PartitionBacklog {
    /// (ledger batch seq, its state records), oldest first.
    pub waiting_state: VecDeque<(u64, Snapshots)>,
    /// Closed batches, oldest first, until their outputs and every earlier
    /// batch's are acknowledged.
    pub steps: VecDeque<Step>,
    /// Number of the next closed batch.
    pub next_step: u64,
}

/// One closed batch of a partition, awaiting its outputs' acknowledgements.
pub struct Step {
    /// Its number (consecutive per assignment).
    pub step: u64,
    /// Outputs not yet settled.
    pub pending: u32,
    /// When each of its messages was received.
    pub received: Vec<Instant>,
}

impl PartitionTask {
    /// Hands back a drained receive-time buffer, so the next batch reuses its
    /// allocation.
    pub fn recycle_received(&mut self, mut buffer: Vec<Instant>) {
        if self.open_received.capacity() == 0 {
            buffer.clear();
            self.open_received = buffer;
        }
    }
}
