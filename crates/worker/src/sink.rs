//! The output sink: owns the producer, the failure policy, retries with
//! backoff and the in-flight bound.
//!
//! Every record the pipeline produces (alerts, dead letters, state records)
//! goes through [`OutputSink`]. A record is *settled* when the broker
//! acknowledges it or when the failure policy gives up on it (counted in
//! `events_dropped_total`); only then does the pipeline count it done. A
//! record is never retried forever without the partition moving on unless the
//! cause is one waiting can fix (a broker or leader away), and a fault that
//! waiting cannot fix (authorisation, unknown topic, fenced) stops the worker
//! with a message naming the topic. The table is in docs/operations.md.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, PurgeConfig};

use crate::telemetry::Metrics;

use super::kafka::{Delivery, DeliveryContext, DeliveryTag, OutputKind, OutputRecord};

/// What the failure policy does with a record that could not be produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Waiting can fix it (timeouts, a broker or leader away, a full queue):
    /// send again with exponential backoff; the partition holds its offsets.
    Retriable,
    /// The broker will never take this record as it is (too large, invalid):
    /// a dead letter is truncated and sent again; anything else is dropped
    /// and counted, and the partition moves on.
    RecordRejected,
    /// Nothing this process can do fixes it (authorisation, unknown topic,
    /// fenced producer): stop with an error naming the topic.
    Fatal,
}

/// Classifies a produce error (at enqueue or in a delivery report).
pub fn classify(error: &KafkaError) -> FailureClass {
    use RDKafkaErrorCode as C;
    let Some(code) = error.rdkafka_error_code() else {
        return FailureClass::Retriable;
    };
    match code {
        C::MessageSizeTooLarge
        | C::InvalidMessageSize
        | C::InvalidMessage
        | C::InvalidRecord
        | C::MessageBatchTooLarge
        | C::BadMessage => FailureClass::RecordRejected,
        C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication
        | C::UnknownTopic
        | C::UnknownTopicOrPartition
        | C::UnknownPartition
        | C::InvalidTopic
        | C::InvalidRequiredAcks
        | C::ProducerFenced
        | C::InvalidProducerEpoch
        | C::Fatal
        | C::InvalidArgument => FailureClass::Fatal,
        _ => FailureClass::Retriable,
    }
}

/// A fault that stops the worker.
#[derive(Debug, Clone)]
pub struct SinkFatal {
    /// The topic the record was for.
    pub topic: String,
    /// The producer's error.
    pub cause: String,
    /// Its librdkafka code (a missing ACL is told apart by it).
    pub code: Option<RDKafkaErrorCode>,
    /// Exactly-once: the `transactional.id` of a producer fenced or failed
    /// in a transactional call (then `topic` is empty).
    pub transactional_id: Option<String>,
}

/// A record the sink is done with, for the pipeline's ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The broker acknowledged it.
    Acked(DeliveryTag),
    /// The failure policy gave up on it (counted in `events_dropped_total`).
    Dropped(DeliveryTag),
}

impl Settled {
    /// The record's tag.
    pub fn tag(&self) -> DeliveryTag {
        match self {
            Settled::Acked(t) | Settled::Dropped(t) => *t,
        }
    }
}

struct Retry {
    not_before: Instant,
    attempts: u32,
    tag: DeliveryTag,
    record: OutputRecord,
}

/// Lets one log line through per interval and counts what it held back.
#[derive(Debug, Default)]
pub struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// `Some(n)` if a line may be logged now (`n` lines were held back since
    /// the last one), `None` if this one is to be held back.
    pub fn allow(&mut self, every: Duration) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < every) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// How long enqueueing may wait on a full local queue before the record is
/// put aside as a retry (so a stuck broker never blocks the pipeline thread).
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(100);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Bytes kept free for the key, headers and record overhead when a dead
/// letter is truncated to fit `message.max.bytes`.
const TRUNCATION_HEADROOM: usize = 4096;
/// Below this a truncated dead letter tells nothing: drop it instead.
const MIN_TRUNCATED_PAYLOAD: usize = 64;

/// Owns the producer; see the module documentation.
pub struct OutputSink {
    producer: BaseProducer<DeliveryContext>,
    metrics: Metrics,
    retries: VecDeque<Retry>,
    /// Records handed to librdkafka and not yet reported.
    enqueued: usize,
    max_in_flight: usize,
    max_message_bytes: usize,
    fatal: Option<SinkFatal>,
    retry_log: LogLimiter,
    /// Records given up on outside [`OutputSink::serve`], reported at its next call.
    dropped_at_enqueue: Vec<Settled>,
    /// What each enqueued record is (tag, explicit partition), by the slot
    /// its delivery report names.
    slots: Vec<(DeliveryTag, Option<i32>)>,
    free_slots: Vec<usize>,
    /// The reports of the last serve, kept for their allocation.
    report_buffer: Vec<Delivery>,
    /// `processing.guarantee = "exactly_once"`: the producer is transactional.
    transactional: bool,
    /// Exactly-once: a delivery failed inside the open transaction, which
    /// librdkafka has therefore made abortable (the cause, for the log).
    abort_needed: Option<String>,
    /// Records handed to librdkafka so far (tells a transaction whether it
    /// holds any output).
    sent: u64,
}

/// How a transactional call's error is handled (exactly-once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionFailure {
    /// The same call may be made again (a timeout, a coordinator moving).
    Retriable,
    /// The transaction must be aborted; the producer stays usable.
    Abortable,
    /// The producer is fenced by a newer instance with its transactional
    /// id, or failed for good: stop.
    Fatal,
}

/// Classifies the error of `init_transactions`, `send_offsets_to_transaction`,
/// `commit_transaction` or `abort_transaction`, as librdkafka flags it.
pub fn classify_transaction(error: &KafkaError) -> TransactionFailure {
    use RDKafkaErrorCode as C;
    if let KafkaError::Transaction(e) = error {
        if e.is_fatal() {
            return TransactionFailure::Fatal;
        }
        if e.txn_requires_abort() {
            return TransactionFailure::Abortable;
        }
        if e.is_retriable() {
            return TransactionFailure::Retriable;
        }
    }
    match error.rdkafka_error_code() {
        Some(
            C::ProducerFenced
            | C::InvalidProducerEpoch
            | C::TransactionalIdAuthorizationFailed
            | C::Fatal,
        ) => TransactionFailure::Fatal,
        _ => TransactionFailure::Abortable,
    }
}

impl OutputSink {
    /// A sink around `producer`. `max_message_bytes` is the producer's
    /// `message.max.bytes`.
    pub fn new(
        producer: BaseProducer<DeliveryContext>,
        metrics: Metrics,
        max_in_flight: usize,
        max_message_bytes: usize,
    ) -> Self {
        OutputSink {
            producer,
            metrics,
            retries: VecDeque::new(),
            enqueued: 0,
            max_in_flight,
            max_message_bytes,
            fatal: None,
            retry_log: LogLimiter::default(),
            dropped_at_enqueue: Vec::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            report_buffer: Vec::new(),
            transactional: false,
            abort_needed: None,
            sent: 0,
        }
    }

    /// Makes the sink transactional (exactly-once): `init_transactions`
    /// fences any earlier producer with the same `transactional.id` and
    /// aborts its open transaction, then the first transaction begins.
    pub fn init_transactions(&mut self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.init_transactions(timeout)?;
        self.producer.begin_transaction()?;
        self.transactional = true;
        Ok(())
    }

    /// Whether the producer is transactional.
    pub fn is_transactional(&self) -> bool {
        self.transactional
    }

    /// Exactly-once: why the open transaction must be aborted, if it must.
    pub fn abort_needed(&self) -> Option<&str> {
        self.abort_needed.as_deref()
    }

    /// Records handed to librdkafka so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Exactly-once: adds `offsets` to the open transaction as the group's
    /// consumed offsets, then commits it and begins the next one.
    pub fn commit_transaction(
        &mut self,
        offsets: &rdkafka::TopicPartitionList,
        group: &rdkafka::consumer::ConsumerGroupMetadata,
        timeout: Duration,
    ) -> Result<(), KafkaError> {
        if offsets.count() > 0 {
            self.producer
                .send_offsets_to_transaction(offsets, group, timeout)?;
        }
        self.producer.commit_transaction(timeout)?;
        self.producer.begin_transaction()
    }

    /// Exactly-once: aborts the open transaction (librdkafka purges what it
    /// still holds of it), forgets every record of it, and begins the next.
    pub fn abort_transaction(&mut self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.abort_transaction(timeout)?;
        // The purged records' reports: none of them is to be retried.
        self.producer.poll(Duration::ZERO);
        if let Ok(mut r) = self.producer.context().reports.lock() {
            r.clear();
        }
        self.retries.clear();
        self.dropped_at_enqueue.clear();
        self.enqueued = 0;
        self.slots.clear();
        self.free_slots.clear();
        self.abort_needed = None;
        self.producer.begin_transaction()
    }

    fn take_slot(&mut self, tag: DeliveryTag, partition: Option<i32>) -> usize {
        match self.free_slots.pop() {
            Some(i) => {
                self.slots[i] = (tag, partition);
                i
            }
            None => {
                self.slots.push((tag, partition));
                self.slots.len() - 1
            }
        }
    }

    /// The record in `slot`, whose report just came; the slot is free again.
    fn release_slot(&mut self, slot: usize) -> Option<(DeliveryTag, Option<i32>)> {
        let entry = *self.slots.get(slot)?;
        self.free_slots.push(slot);
        Some(entry)
    }

    /// The producer (for metadata look-ups at start).
    pub fn producer(&self) -> &BaseProducer<DeliveryContext> {
        &self.producer
    }

    /// Records not settled yet: enqueued or waiting to be sent again.
    pub fn unsettled(&self) -> usize {
        self.enqueued + self.retries.len()
    }

    /// Whether unsettled records exceed the in-flight bound.
    pub fn backpressured(&self) -> bool {
        self.unsettled() >= self.max_in_flight
    }

    /// A fault that must stop the worker, once one has happened.
    pub fn fatal(&self) -> Option<&SinkFatal> {
        self.fatal.as_ref()
    }

    /// Sends an owned record (alerts and dead letters).
    pub fn send(&mut self, tag: DeliveryTag, record: OutputRecord) {
        self.send_attempt(tag, record, 0);
    }

    /// Sends a state record straight from a borrowed buffer; the bytes are
    /// copied only if the record has to be kept for a retry.
    pub fn send_borrowed(
        &mut self,
        tag: DeliveryTag,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: Option<&[u8]>,
    ) {
        if let Err(e) = self.enqueue(tag, topic, partition, Some(key), payload, None) {
            let record = OutputRecord {
                topic: topic.to_string(),
                partition,
                key: Some(key.to_vec()),
                payload: payload.map(<[u8]>::to_vec),
                headers: Vec::new(),
            };
            self.failed(tag, e, record, 0, None);
        }
    }

    /// Sends a record straight from borrowed key and payload with a copy of
    /// `headers` (alerts); the bytes are copied only if the record has to be
    /// kept for a retry.
    pub fn send_with_headers(
        &mut self,
        tag: DeliveryTag,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: &rdkafka::message::OwnedHeaders,
    ) {
        use rdkafka::message::Headers;
        let result = self.enqueue(
            tag,
            topic,
            None,
            Some(key),
            Some(payload),
            Some(headers.clone()),
        );
        if let Err(e) = result {
            let record = OutputRecord {
                topic: topic.to_string(),
                partition: None,
                key: Some(key.to_vec()),
                payload: Some(payload.to_vec()),
                headers: headers
                    .iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect(),
            };
            self.failed(tag, e, record, 0, None);
        }
    }

    fn send_attempt(&mut self, tag: DeliveryTag, record: OutputRecord, attempts: u32) {
        let headers = (!record.headers.is_empty()).then(|| record.owned_headers());
        let result = self.enqueue(
            tag,
            &record.topic,
            record.partition,
            record.key.as_deref(),
            record.payload.as_deref(),
            headers,
        );
        if let Err(e) = result {
            self.failed(tag, e, record, attempts, None);
        }
    }

    /// Hands a record to librdkafka, serving delivery reports while its local
    /// queue is full, for at most [`QUEUE_FULL_WAIT`].
    fn enqueue(
        &mut self,
        tag: DeliveryTag,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: Option<rdkafka::message::OwnedHeaders>,
    ) -> Result<(), KafkaError> {
        let started = Instant::now();
        let slot = self.take_slot(tag, partition);
        loop {
            let mut base = BaseRecord::with_opaque_to(topic, slot);
            if let Some(key) = key {
                base = base.key(key);
            }
            if let Some(h) = headers.clone() {
                base = base.headers(h);
            }
            if let Some(payload) = payload {
                base = base.payload(payload);
            }
            if let Some(p) = partition {
                base = base.partition(p);
            }
            match self.producer.send(base) {
                Ok(()) => {
                    self.enqueued += 1;
                    self.sent += 1;
                    return Ok(());
                }
                Err((e @ KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if started.elapsed() >= QUEUE_FULL_WAIT {
                        self.free_slots.push(slot);
                        return Err(e);
                    }
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => {
                    self.free_slots.push(slot);
                    return Err(e);
                }
            }
        }
    }

    /// Applies the failure policy to a record that was not produced.
    fn failed(
        &mut self,
        tag: DeliveryTag,
        error: KafkaError,
        mut record: OutputRecord,
        attempts: u32,
        settled: Option<&mut Vec<Settled>>,
    ) {
        self.metrics.producer_errors.inc();
        let class = match (classify(&error), tag.kind) {
            // A shadow model is an experiment: a shadow topic it may not
            // write (or that was deleted) drops its alerts, counted and
            // logged, and never stops or stalls the live alerts.
            (FailureClass::Fatal, OutputKind::ShadowAlert(_)) => FailureClass::RecordRejected,
            (class, _) => class,
        };
        match class {
            FailureClass::Retriable => {
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1 << attempts.min(10))
                    .min(MAX_BACKOFF);
                if let Some(held_back) = self.retry_log.allow(Duration::from_secs(10)) {
                    tracing::warn!(
                        topic = %record.topic,
                        %error,
                        retry_in_ms = backoff.as_millis() as u64,
                        similar_failures_not_logged = held_back,
                        "output not delivered; retrying (offsets of its partition are held)"
                    );
                }
                self.retries.push_back(Retry {
                    not_before: Instant::now() + backoff,
                    attempts: attempts.saturating_add(1),
                    tag,
                    record,
                });
            }
            FailureClass::RecordRejected => {
                if matches!(tag.kind, OutputKind::DeadLetter(_)) && self.truncate(&mut record) {
                    tracing::warn!(
                        topic = %record.topic,
                        %error,
                        "dead letter rejected; sending it truncated"
                    );
                    self.retries.push_back(Retry {
                        not_before: Instant::now(),
                        attempts: attempts.saturating_add(1),
                        tag,
                        record,
                    });
                    return;
                }
                let reason = match tag.kind {
                    OutputKind::Alert(_) => "alert_rejected",
                    OutputKind::ShadowAlert(_) => "shadow_alert_rejected",
                    OutputKind::DeadLetter(_) => "dead_letter_rejected",
                    OutputKind::State => "state_rejected",
                };
                self.metrics
                    .events_dropped
                    .with_label_values(&[reason])
                    .inc();
                tracing::error!(
                    topic = %record.topic,
                    %error,
                    reason,
                    "output rejected by the broker and dropped; its partition moves on"
                );
                let drop = Settled::Dropped(tag);
                match settled {
                    Some(out) => out.push(drop),
                    None => self.dropped_at_enqueue.push(drop),
                }
            }
            FailureClass::Fatal => {
                tracing::error!(topic = %record.topic, %error, "fatal output error: stopping");
                if self.fatal.is_none() {
                    self.fatal = Some(SinkFatal {
                        topic: record.topic.clone(),
                        cause: error.to_string(),
                        code: error.rdkafka_error_code(),
                        transactional_id: None,
                    });
                }
                // Kept so that nothing it caused is committed.
                self.retries.push_back(Retry {
                    not_before: Instant::now() + MAX_BACKOFF,
                    attempts,
                    tag,
                    record,
                });
            }
        }
    }

    /// Shortens a rejected dead letter's payload; false if there is nothing
    /// worth sending left.
    fn truncate(&self, record: &mut OutputRecord) -> bool {
        let Some(payload) = record.payload.as_mut() else {
            return false;
        };
        let fit = self.max_message_bytes.saturating_sub(TRUNCATION_HEADROOM);
        // Already within the producer's limit: the broker's topic limit is
        // lower and unknown here, so shrink by a factor until it fits.
        let target = if payload.len() > fit {
            fit
        } else {
            payload.len() / 4
        };
        if target < MIN_TRUNCATED_PAYLOAD {
            return false;
        }
        if !record.headers.iter().any(|(k, _)| k == "original_size") {
            record.headers.push(("truncated".into(), b"true".to_vec()));
            record.headers.push((
                "original_size".into(),
                payload.len().to_string().into_bytes(),
            ));
        }
        payload.truncate(target);
        true
    }

    /// Serves producer callbacks, applies the failure policy to failed
    /// deliveries, re-sends due retries of records still `is_live`, and
    /// appends every record now settled to `settled`.
    pub fn serve(
        &mut self,
        wait: Duration,
        is_live: impl Fn(&DeliveryTag) -> bool,
        settled: &mut Vec<Settled>,
    ) {
        settled.append(&mut self.dropped_at_enqueue);
        self.producer.poll(wait);
        // A zero-wait poll serves one event (one produce response's reports):
        // go on while polls still yield reports.
        for _ in 0..10_000 {
            let before = self.producer.context().reported.load(Ordering::Relaxed);
            self.producer.poll(Duration::ZERO);
            if self.producer.context().reported.load(Ordering::Relaxed) == before {
                break;
            }
        }
        let mut reports = std::mem::take(&mut self.report_buffer);
        if let Ok(mut r) = self.producer.context().reports.lock() {
            std::mem::swap(&mut *r, &mut reports);
        }
        for report in reports.drain(..) {
            self.enqueued = self.enqueued.saturating_sub(1);
            match report {
                Delivery::Acked(slot) => {
                    if let Some((tag, _)) = self.release_slot(slot) {
                        settled.push(Settled::Acked(tag));
                    }
                }
                Delivery::Failed(slot, error, mut record) => {
                    let Some((tag, partition)) = self.release_slot(slot) else {
                        continue;
                    };
                    // Purged by a revoke: the next owner re-reads its events.
                    if !is_live(&tag) {
                        continue;
                    }
                    record.partition = partition;
                    // In a transaction a failed delivery makes the whole
                    // transaction abortable: sending the record again
                    // cannot help, the abort rewinds (unless it is fatal).
                    if self.transactional && classify(&error) != FailureClass::Fatal {
                        self.metrics.producer_errors.inc();
                        if self.abort_needed.is_none() {
                            tracing::warn!(topic = %record.topic, %error, "output not delivered inside a transaction: aborting it");
                            self.abort_needed = Some(format!("{}: {error}", record.topic));
                        }
                        continue;
                    }
                    self.failed(tag, error, *record, 0, Some(settled));
                }
            }
        }
        self.report_buffer = reports;
        if self.retries.is_empty() || self.fatal.is_some() {
            return;
        }
        let now = Instant::now();
        let mut due = Vec::new();
        self.retries.retain_mut(|r| {
            if !is_live(&r.tag) {
                return false;
            }
            if r.not_before <= now {
                due.push((
                    r.tag,
                    std::mem::replace(&mut r.record, empty_record()),
                    r.attempts,
                ));
                return false;
            }
            true
        });
        for (tag, record, attempts) in due {
            self.send_attempt(tag, record, attempts);
        }
        settled.append(&mut self.dropped_at_enqueue);
    }

    /// Forgets records of partitions no longer owned: the queued ones are
    /// purged from librdkafka so that none of them can land after the next
    /// owner's. Purging is producer-wide: records of live partitions come
    /// back as failed deliveries and are sent again in order.
    pub fn purge(&mut self) {
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
    }

    /// Waits up to `timeout` for every enqueued record to be reported, then
    /// returns how many records are still not settled.
    pub fn flush(&mut self, timeout: Duration, settled: &mut Vec<Settled>) -> usize {
        let deadline = Instant::now() + timeout;
        while self.enqueued > 0 && Instant::now() < deadline {
            self.serve(Duration::from_millis(20), |_| true, settled);
        }
        self.unsettled()
    }
}

fn empty_record() -> OutputRecord {
    OutputRecord {
        topic: String::new(),
        partition: None,
        key: None,
        payload: None,
        headers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(c: RDKafkaErrorCode) -> FailureClass {
        classify(&KafkaError::MessageProduction(c))
    }

    #[test]
    fn waiting_fixes_timeouts_and_absent_brokers() {
        for c in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::RequestTimedOut,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::LeaderNotAvailable,
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::NotEnoughReplicas,
            RDKafkaErrorCode::PurgeQueue,
            RDKafkaErrorCode::PurgeInflight,
        ] {
            assert_eq!(code(c), FailureClass::Retriable, "{c:?}");
        }
    }

    #[test]
    fn records_the_broker_will_never_take_are_rejected_not_retried() {
        for c in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::InvalidMessageSize,
            RDKafkaErrorCode::InvalidRecord,
            RDKafkaErrorCode::MessageBatchTooLarge,
            RDKafkaErrorCode::InvalidMessage,
        ] {
            assert_eq!(code(c), FailureClass::RecordRejected, "{c:?}");
        }
    }

    #[test]
    fn authorisation_unknown_topics_and_fencing_are_fatal() {
        for c in [
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::ClusterAuthorizationFailed,
            RDKafkaErrorCode::UnknownTopic,
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::ProducerFenced,
            RDKafkaErrorCode::InvalidProducerEpoch,
            RDKafkaErrorCode::Fatal,
        ] {
            assert_eq!(code(c), FailureClass::Fatal, "{c:?}");
        }
    }

    #[test]
    fn fenced_transactional_producers_stop_and_other_transaction_errors_abort() {
        for c in [
            RDKafkaErrorCode::ProducerFenced,
            RDKafkaErrorCode::InvalidProducerEpoch,
            RDKafkaErrorCode::TransactionalIdAuthorizationFailed,
        ] {
            assert_eq!(
                classify_transaction(&KafkaError::MessageProduction(c)),
                TransactionFailure::Fatal,
                "{c:?}"
            );
        }
        for c in [
            RDKafkaErrorCode::InvalidTransactionTimeout,
            RDKafkaErrorCode::MessageTimedOut,
        ] {
            assert_eq!(
                classify_transaction(&KafkaError::MessageProduction(c)),
                TransactionFailure::Abortable,
                "{c:?}"
            );
        }
    }

    #[test]
    fn errors_without_a_code_are_retried() {
        assert_eq!(
            classify(&KafkaError::Canceled),
            FailureClass::Retriable,
            "no code: assume waiting helps"
        );
    }

    #[test]
    fn the_limiter_lets_one_line_through_per_interval_and_counts_the_rest() {
        let mut l = LogLimiter::default();
        assert_eq!(l.allow(Duration::from_secs(60)), Some(0));
        assert_eq!(l.allow(Duration::from_secs(60)), None);
        assert_eq!(l.allow(Duration::from_secs(60)), None);
        assert_eq!(l.allow(Duration::ZERO), Some(2));
    }
}
