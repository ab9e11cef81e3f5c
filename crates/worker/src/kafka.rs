//! librdkafka client configuration and the producer's delivery context.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryResult, ProducerContext};

use crate::config::WorkerConfig;
use churn_core::engine::AlertKind;

/// Base consumer configuration: the user's pass-through properties, then the
/// properties the worker's delivery guarantee depends on.
pub fn consumer_config(config: &WorkerConfig, group_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("statistics.interval.ms", "5000");
    c.set("auto.offset.reset", "earliest");
    // librdkafka stops fetching for this long once its local queue holds
    // `queued.min.messages`; the default (1 s) leaves a fast pipeline idle
    // after it drains the queue. See docs/performance.md.
    c.set("fetch.queue.backoff.ms", "20");
    for (k, v) in &config.kafka.consumer {
        c.set(k, v);
    }
    c.set("bootstrap.servers", &config.kafka.bootstrap_servers);
    c.set("group.id", group_id);
    // Offsets are stored by the worker once what an event caused is acknowledged;
    // librdkafka commits the stored offsets in the background. Under
    // exactly-once, offsets are committed only inside the producers'
    // transactions (`send_offsets_to_transaction`).
    c.set("enable.auto.offset.store", "false");
    c.set(
        "enable.auto.commit",
        if config.processing.exactly_once() {
            "false"
        } else {
            "true"
        },
    );
    c.set(
        "group.protocol",
        config.kafka.rebalance_protocol.group_protocol(),
    );
    if let Some(strategy) = config.kafka.rebalance_protocol.assignment_strategy() {
        c.set("partition.assignment.strategy", strategy);
    }
    c
}

/// Configuration of a plain assigned reader (the changelog restore, the
/// deletion and membership topics): the consumer's settings, with the
/// worker's own group id but never joining it or committing. librdkafka
/// cannot assign partitions without a group id, and with one it looks up
/// the group's coordinator: another id (`<group>-restore`) needs an ACL of
/// its own, and a restore without one was refused and retried forever
/// (tests/real_broker/security.rs). With `kafka.group_id` the worker needs
/// READ on that one group only. The classic protocol and no static
/// membership: a reader sends no heartbeat and takes no member's place.
pub fn reader_config(config: &WorkerConfig) -> ClientConfig {
    let mut c = consumer_config(config, &config.kafka.group_id);
    for key in [
        "group.instance.id",
        "group.protocol",
        "partition.assignment.strategy",
    ] {
        c.remove(key);
    }
    c.set("enable.auto.commit", "false");
    c
}

/// Producer configuration: idempotent, acks from all replicas, then the
/// user's pass-through properties.
pub fn producer_config(config: &WorkerConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("linger.ms", "5");
    c.set(
        "queue.buffering.max.messages",
        (config.pipeline.max_in_flight.max(1000) * 2).to_string(),
    );
    for (k, v) in &config.kafka.producer {
        c.set(k, v);
    }
    // Set last, so nothing above can weaken them (the configuration also
    // refuses these keys with a message naming them).
    c.set("enable.idempotence", "true");
    c.set("acks", "all");
    c.set("bootstrap.servers", &config.kafka.bootstrap_servers);
    c
}

/// The producer of pipeline thread `thread` under `processing.guarantee =
/// "exactly_once"`: [`producer_config`] made transactional. Its
/// `transactional.id` is stable across restarts of this instance (see
/// [`transactional_id`]), so `init_transactions` fences a crashed
/// predecessor and aborts its open transaction.
pub fn transactional_producer_config(
    config: &WorkerConfig,
    instance: &str,
    thread: usize,
) -> ClientConfig {
    let mut c = producer_config(config);
    c.set(
        "transactional.id",
        transactional_id(config, instance, thread),
    );
    c.set(
        "transaction.timeout.ms",
        config.processing.transaction_timeout_ms.to_string(),
    );
    c
}

/// `<group>-<instance>-<thread>`: one transactional producer per pipeline
/// thread of each instance of the group.
pub fn transactional_id(config: &WorkerConfig, instance: &str, thread: usize) -> String {
    format!("{}-{instance}-{thread}", config.kafka.group_id)
}

/// This instance's identity in its transactional ids: `processing.instance_id`,
/// else the host name (stable for a StatefulSet's pod, and for a process
/// restarted on the same machine).
pub fn instance_identity(config: &WorkerConfig) -> String {
    if !config.processing.instance_id.is_empty() {
        return config.processing.instance_id.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if host.is_empty() {
        "churn-scorer".to_string()
    } else {
        host
    }
}

/// What an output message is, for metrics and ack accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// An alert on the alerts topic.
    Alert(AlertKind),
    /// A shadow model's alert on the shadow alerts topic.
    ShadowAlert(AlertKind),
    /// A dead letter, with its reason label.
    DeadLetter(&'static str),
    /// A state record on the changelog.
    State,
}

/// Identifies the input batch an output belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryTag {
    /// Input partition.
    pub partition: i32,
    /// Assignment epoch of that partition (acks from before a revoke are stale).
    pub epoch: u64,
    /// Ledger batch sequence number within the partition.
    pub seq: u64,
    /// The closed batch (step) within the partition whose outputs these are
    /// (state records: unused, 0).
    pub step: u64,
    /// What was sent.
    pub kind: OutputKind,
}

/// An output message owned by the worker (for retries).
#[derive(Debug, Clone)]
pub struct OutputRecord {
    /// Destination topic.
    pub topic: String,
    /// Explicit partition, if any (state records go to their input partition).
    pub partition: Option<i32>,
    /// Message key (`None`: no key, as the input message had none).
    pub key: Option<Vec<u8>>,
    /// Message value (`None` is a tombstone).
    pub payload: Option<Vec<u8>>,
    /// Headers, as (name, value).
    pub headers: Vec<(String, Vec<u8>)>,
}

impl OutputRecord {
    /// Headers in librdkafka's form.
    pub fn owned_headers(&self) -> OwnedHeaders {
        let mut h = OwnedHeaders::new_with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            h = h.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        h
    }
}

/// A delivery report, as collected by [`DeliveryContext`]. Records are
/// identified by the slot the sink gave them (an integer opaque, so that
/// producing a record allocates nothing on the Rust side).
#[derive(Debug)]
pub enum Delivery {
    /// The broker acknowledged the message in this slot.
    Acked(usize),
    /// Delivery failed after librdkafka's own retries; the sink decides what
    /// happens to the record (see [`super::sink::FailureClass`]). The
    /// record's explicit partition is the sink's to fill in.
    Failed(usize, KafkaError, Box<OutputRecord>),
}

/// Collects delivery reports; they are acted on by the pipeline at points of
/// its choosing, never inside librdkafka's callback.
#[derive(Default)]
pub struct DeliveryContext {
    /// Reports not yet taken.
    pub reports: Mutex<Vec<Delivery>>,
    /// Reports made so far (tells the pipeline whether a poll served any).
    pub reported: AtomicU64,
    /// Created at, for log context.
    pub started: Option<Instant>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, slot: Self::DeliveryOpaque) {
        let report = match result {
            Ok(_) => Delivery::Acked(slot),
            Err((err, msg)) => {
                let headers = msg
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| (x.key.to_string(), x.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                Delivery::Failed(
                    slot,
                    err.clone(),
                    Box::new(OutputRecord {
                        topic: msg.topic().to_string(),
                        partition: None,
                        key: msg.key().map(<[u8]>::to_vec),
                        payload: msg.payload().map(<[u8]>::to_vec),
                        headers,
                    }),
                )
            }
        };
        if let Ok(mut reports) = self.reports.lock() {
            reports.push(report);
        }
        self.reported.fetch_add(1, Ordering::Relaxed);
    }
}
