//! The membership topic (`topics.membership`): which instance owns which
//! input partition, so that any instance answers `/v1/customers/{id}`.
//!
//! Each instance publishes one record keyed by its advertised URL: the URL,
//! the input partitions it holds and its clock. It publishes again whenever
//! its assignment changes (checked on every turn of the group thread, so
//! within one poll of a rebalance callback), every third of
//! `lookup.claim_ttl_secs` in any case, and a tombstone on a clean shutdown.
//! Every instance reads the whole topic from the beginning with a consumer
//! of its own that joins no group, keeps the latest believed record per key
//! and derives [`PartitionOwners`]: a partition claimed by several records
//! (a crashed instance's record is never withdrawn) belongs to the latest
//! record on the topic, and a claim whose record's Kafka timestamp is older
//! than the lifetime owns nothing. A record is believed only if its URL
//! matches `lookup.peer_urls` and its timestamp is not from the future
//! (see [`crate::ownership`] and the threat model in docs/operations.md).
//! Both the reading and the publishing run on the group thread with
//! zero-wait polls; nothing here blocks a tokio worker.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::config::WorkerConfig;
use crate::telemetry::Metrics;

use crate::clock::wall_clock_ms;
use crate::directory::PartitionDirectory;
use crate::error::WorkerError;
use crate::ownership::{Claim, MemberClaim, PartitionOwners, PeerUrlPattern, check_claim};
use crate::sink::LogLimiter;

/// Records read per step at most, so the group thread keeps polling the group.
const MAX_PER_STEP: usize = 1024;
/// Wait before a claim whose delivery failed is sent again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long a metadata request for the membership topic may take at start.
const METADATA_WAIT: Duration = Duration::from_secs(10);
/// How far a claim's record timestamp may be ahead of this instance's clock
/// (clock drift between hosts); further ahead, the claim is not believed.
const MAX_CLAIM_AHEAD_MS: i64 = 60_000;
/// How often expiry is applied to the claims read.
const RESOLVE_EVERY: Duration = Duration::from_secs(1);

/// Delivery results of the claims, by sequence number.
#[derive(Default)]
pub(super) struct ClaimDeliveries {
    reports: Mutex<Vec<(u64, bool)>>,
}

impl ClientContext for ClaimDeliveries {}

impl ProducerContext for ClaimDeliveries {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: Self::DeliveryOpaque) {
        if let Ok(mut reports) = self.reports.lock() {
            reports.push((*seq, result.is_ok()));
        }
    }
}

/// The claim this instance has sent and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    /// Waiting for the broker's acknowledgement.
    Pending { seq: u64, partitions: Vec<i32> },
    /// Acknowledged.
    Acked { partitions: Vec<i32>, at: Instant },
    /// Failed: sent again once `retry_at` has passed.
    Failed { retry_at: Instant },
}

/// Publishes this instance's claim and reads everyone's (on the group thread).
pub(super) struct MembershipReader {
    consumer: BaseConsumer,
    producer: BaseProducer<ClaimDeliveries>,
    topic: String,
    url: String,
    group_id: String,
    input_partitions: usize,
    claims: BTreeMap<String, Claim>,
    allowed: Vec<PeerUrlPattern>,
    claim_ttl: Duration,
    resolved_at: Option<Instant>,
    sent: Option<Sent>,
    seq: u64,
    bad_records: LogLimiter,
    errors: LogLimiter,
}

impl MembershipReader {
    /// A reader if `topics.membership` is set; checks that the topic exists.
    /// `http.advertised_url` is set by [`super::Worker::bind`].
    pub(super) fn new(
        config: &WorkerConfig,
        input_partitions: usize,
        metrics: &Metrics,
    ) -> Result<Option<Self>, WorkerError> {
        let Some(topic) = &config.topics.membership else {
            return Ok(None);
        };
        // Nobody is known to own anything until the first claims are read.
        metrics
            .lookup_partitions_without_owner
            .set(i64::try_from(input_partitions).unwrap_or(i64::MAX));
        let url = config.http.advertised_url.clone().unwrap_or_default();
        let mut client = super::kafka::reader_config(config);
        // A plain assigned reader of the whole topic, from the beginning every start.
        client.set("enable.auto.commit", "false");
        client.set("enable.partition.eof", "false");
        let consumer: BaseConsumer = client.create()?;
        let metadata = consumer.fetch_metadata(Some(topic), METADATA_WAIT)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(WorkerError::MissingTopic {
                topic: topic.clone(),
                partitions: 1,
                extra: " --config cleanup.policy=compact",
            });
        }
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        // The worker's producer settings (security, acks=all, idempotence):
        // a claim is small and rare, its delivery matters.
        let producer: BaseProducer<ClaimDeliveries> =
            super::kafka::producer_config(config).create_with_context(ClaimDeliveries::default())?;
        tracing::info!(topic = %topic, %url, "reading and publishing the membership");
        Ok(Some(MembershipReader {
            consumer,
            producer,
            topic: topic.clone(),
            url,
            group_id: config.kafka.group_id.clone(),
            input_partitions,
            claims: BTreeMap::new(),
            allowed: config.lookup.peer_url_patterns(),
            claim_ttl: Duration::from_secs(config.lookup.claim_ttl_secs),
            resolved_at: None,
            sent: None,
            seq: 0,
            bad_records: LogLimiter::default(),
            errors: LogLimiter::default(),
        }))
    }

    /// Reads new claims (updating the shared [`PartitionOwners`], with
    /// expired claims left out), then publishes this instance's claim if its
    /// partitions changed or it is due for renewal.
    pub(super) fn step(&mut self, directory: &PartitionDirectory, metrics: &Metrics) {
        let changed = self.read(metrics);
        if changed
            || self
                .resolved_at
                .is_none_or(|at| at.elapsed() >= RESOLVE_EVERY)
        {
            self.resolved_at = Some(Instant::now());
            let ttl_ms = i64::try_from(self.claim_ttl.as_millis()).unwrap_or(i64::MAX);
            let owners = PartitionOwners::resolve(
                self.claims.values(),
                self.input_partitions,
                wall_clock_ms().saturating_sub(ttl_ms),
            );
            metrics
                .lookup_partitions_without_owner
                .set(i64::try_from(owners.unowned().len()).unwrap_or(i64::MAX));
            directory.set_partition_owners(owners);
        }
        self.publish(directory);
    }

    /// Applies the records fetched; whether any claim changed.
    fn read(&mut self, metrics: &Metrics) -> bool {
        let mut changed = false;
        for _ in 0..MAX_PER_STEP {
            match self.consumer.poll(Duration::ZERO) {
                Some(Ok(msg)) => {
                    let Some(key) = msg.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                        skip(
                            &mut self.bad_records,
                            &self.topic,
                            &msg,
                            "without a UTF-8 key",
                        );
                        continue;
                    };
                    let Some(payload) = msg.payload() else {
                        // A tombstone: that instance left cleanly.
                        changed |= self.claims.remove(key).is_some();
                        continue;
                    };
                    match serde_json::from_slice::<MemberClaim>(payload) {
                        Ok(claim) if claim.url == key && claim.group_id == self.group_id => {
                            // The record's Kafka timestamp, never the payload's
                            // claim time, decides how long the claim lives.
                            let timestamp_ms = msg.timestamp().to_millis().unwrap_or(i64::MIN);
                            match check_claim(
                                &claim.url,
                                timestamp_ms,
                                &self.allowed,
                                wall_clock_ms(),
                                MAX_CLAIM_AHEAD_MS,
                            ) {
                                Ok(()) => {
                                    self.claims.insert(
                                        key.to_string(),
                                        Claim {
                                            url: claim.url,
                                            partitions: claim.partitions,
                                            position: msg.offset(),
                                            timestamp_ms,
                                        },
                                    );
                                    changed = true;
                                }
                                Err(why) => {
                                    metrics.membership_claims_rejected.inc();
                                    // A rejected claim also ends the key's
                                    // earlier, believed one: it is that
                                    // record's latest word.
                                    changed |= self.claims.remove(key).is_some();
                                    skip(
                                        &mut self.bad_records,
                                        &self.topic,
                                        &msg,
                                        &format!("not believed ({why})"),
                                    );
                                }
                            }
                        }
                        Ok(claim) if claim.url == key => {}
                        Ok(_) => skip(
                            &mut self.bad_records,
                            &self.topic,
                            &msg,
                            "whose key is not its url",
                        ),
                        Err(_) => skip(
                            &mut self.bad_records,
                            &self.topic,
                            &msg,
                            "that is not a membership claim",
                        ),
                    }
                }
                Some(Err(e)) => {
                    if let Some(held_back) = self.errors.allow(Duration::from_secs(10)) {
                        tracing::warn!(topic = %self.topic, error = %e, similar_not_logged = held_back, "membership topic error");
                    }
                    break;
                }
                None => break,
            }
        }
        changed
    }
}

/// Logs (at a bounded rate) a membership record that is skipped.
fn skip(
    limiter: &mut LogLimiter,
    topic: &str,
    msg: &rdkafka::message::BorrowedMessage<'_>,
    what: &str,
) {
    if let Some(held_back) = limiter.allow(Duration::from_secs(10)) {
        tracing::warn!(
            %topic,
            partition = msg.partition(),
            offset = msg.offset(),
            similar_not_logged = held_back,
            "membership record {what}: skipped"
        );
    }
}

impl MembershipReader {
    /// Sends this instance's claim when its partitions differ from the last
    /// one sent (or that one failed), one claim in flight at a time.
    fn publish(&mut self, directory: &PartitionDirectory) {
        self.producer.poll(Duration::ZERO);
        let reports: Vec<(u64, bool)> = self
            .producer
            .context()
            .reports
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        for (seq, ok) in reports {
            if let Some(Sent::Pending {
                seq: pending,
                partitions,
            }) = &self.sent
                && *pending == seq
            {
                self.sent = Some(if ok {
                    Sent::Acked {
                        partitions: partitions.clone(),
                        at: Instant::now(),
                    }
                } else {
                    tracing::warn!(topic = %self.topic, "membership claim not delivered; retrying");
                    Sent::Failed {
                        retry_at: Instant::now() + RETRY_AFTER,
                    }
                });
            }
        }
        let owned: Vec<i32> = directory
            .partition_status()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let due = match &self.sent {
            None => true,
            Some(Sent::Pending { .. }) => false,
            // Renewed every third of the lifetime, so it never expires
            // while this instance runs.
            Some(Sent::Acked { partitions, at }) => {
                *partitions != owned || at.elapsed() >= self.claim_ttl / 3
            }
            Some(Sent::Failed { retry_at }) => Instant::now() >= *retry_at,
        };
        if !due {
            return;
        }
        self.seq += 1;
        let claim = MemberClaim {
            url: self.url.clone(),
            group_id: self.group_id.clone(),
            partitions: owned.clone(),
            claimed_at_ms: wall_clock_ms(),
        };
        let Ok(payload) = serde_json::to_vec(&claim) else {
            return;
        };
        let record = BaseRecord::with_opaque_to(&self.topic, Box::new(self.seq))
            .key(self.url.as_bytes())
            .payload(&payload);
        self.sent = Some(match self.producer.send(record) {
            Ok(()) => {
                tracing::info!(topic = %self.topic, partitions = ?owned, "membership claim sent");
                Sent::Pending {
                    seq: self.seq,
                    partitions: owned,
                }
            }
            Err((e, _)) => {
                tracing::warn!(topic = %self.topic, error = %e, "membership claim not queued; retrying");
                Sent::Failed {
                    retry_at: Instant::now() + RETRY_AFTER,
                }
            }
        });
    }

    /// Withdraws this instance's claim (a tombstone), waiting at most `wait`
    /// for the acknowledgement. Without it, the partitions stay claimed by
    /// this instance until their new owners claim them.
    pub(super) fn withdraw(self, wait: Duration) {
        let record: BaseRecord<'_, [u8], [u8], Box<u64>> =
            BaseRecord::with_opaque_to(&self.topic, Box::new(0)).key(self.url.as_bytes());
        if let Err((e, _)) = self.producer.send(record) {
            tracing::warn!(topic = %self.topic, error = %e, "membership tombstone not sent");
            return;
        }
        if let Err(e) = self.producer.flush(wait) {
            tracing::warn!(topic = %self.topic, error = %e, "membership tombstone not confirmed");
        }
    }
}
