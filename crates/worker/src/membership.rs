//! The membership topic (`topics.membership`): which instance owns which
//! input partition, so that any instance answers `/v1/customers/{id}`.
//!
//! Each instance publishes one record keyed by its advertised URL: the URL,
//! the input partitions it holds and a claim time. It publishes again
//! whenever its assignment changes (checked on every turn of the group
//! thread, so within one poll of a rebalance callback), and a tombstone on a
//! clean shutdown. Every instance reads the whole topic from the beginning
//! with a consumer of its own that joins no group, keeps the latest record
//! per key and derives [`PartitionOwners`]: a partition claimed by several
//! records (a crashed instance's record is never withdrawn) belongs to the
//! newest claim. Claim times are Lamport-style: at least one more than any
//! claim already read, so a partition taken over from a crashed instance
//! is claimed later than the crashed instance's claim, whatever the clocks
//! say. Both the reading and the publishing run on the group thread with
//! zero-wait polls; nothing here blocks a tokio worker.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::config::WorkerConfig;
use crate::telemetry::Metrics;

use super::sink::LogLimiter;
use super::{WorkerError, WorkerShared, wall_clock_ms};

/// Records read per step at most, so the group thread keeps polling the group.
const MAX_PER_STEP: usize = 1024;
/// Wait before a claim whose delivery failed is sent again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long a metadata request for the membership topic may take at start.
const METADATA_WAIT: Duration = Duration::from_secs(10);

/// One instance's claim, the value of its membership record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberClaim {
    /// How the other instances reach it (`http.advertised_url`); also the key.
    pub url: String,
    /// Its consumer group: claims of other groups sharing the topic are ignored.
    pub group_id: String,
    /// The input partitions it holds.
    pub partitions: Vec<i32>,
    /// Lamport-style claim time (milliseconds): later claims win a partition.
    pub claimed_at_ms: i64,
}

/// Input partition → the URL of the instance owning it, from the latest
/// claims read from the membership topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionOwners {
    owners: BTreeMap<i32, String>,
    /// Instances owning at least one partition, sorted.
    members: Vec<String>,
    partition_count: usize,
}

impl PartitionOwners {
    /// Resolves `claims` (the latest per instance) for an input topic of
    /// `partition_count` partitions: each partition goes to the newest claim
    /// naming it (ties broken by URL, so every instance decides alike).
    pub fn resolve<'a>(
        claims: impl IntoIterator<Item = &'a MemberClaim>,
        partition_count: usize,
    ) -> Self {
        let mut best: BTreeMap<i32, (i64, &str)> = BTreeMap::new();
        for claim in claims {
            for &p in &claim.partitions {
                if p < 0 || usize::try_from(p).map_or(true, |p| p >= partition_count) {
                    continue;
                }
                let candidate = (claim.claimed_at_ms, claim.url.as_str());
                let entry = best.entry(p).or_insert(candidate);
                if candidate > *entry {
                    *entry = candidate;
                }
            }
        }
        let owners: BTreeMap<i32, String> = best
            .into_iter()
            .map(|(p, (_, url))| (p, url.to_string()))
            .collect();
        let mut members: Vec<String> = owners.values().cloned().collect();
        members.sort();
        members.dedup();
        PartitionOwners {
            owners,
            members,
            partition_count,
        }
    }

    /// The URL of the instance owning input partition `p`, if known.
    pub fn owner(&self, p: i32) -> Option<&str> {
        self.owners.get(&p).map(String::as_str)
    }

    /// The instances owning at least one partition.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// Partitions of the input topic.
    pub fn partition_count(&self) -> usize {
        self.partition_count
    }

    /// Input partitions no instance is known to own (moving in a
    /// rebalance, or an instance gone before its successor claimed them).
    pub fn unowned(&self) -> Vec<i32> {
        (0..i32::try_from(self.partition_count).unwrap_or(i32::MAX))
            .filter(|p| !self.owners.contains_key(p))
            .collect()
    }

    /// Partition → owner URL.
    pub fn to_map(&self) -> BTreeMap<i32, String> {
        self.owners.clone()
    }
}

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
    Acked(Vec<i32>),
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
    claims: BTreeMap<String, MemberClaim>,
    /// The highest claim time read, for Lamport-style claim times.
    latest_claim_ms: i64,
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
        let mut client =
            super::kafka::consumer_config(config, &format!("{}-membership", config.kafka.group_id));
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
            latest_claim_ms: 0,
            sent: None,
            seq: 0,
            bad_records: LogLimiter::default(),
            errors: LogLimiter::default(),
        }))
    }

    /// Reads new claims (updating the shared [`PartitionOwners`]), then
    /// publishes this instance's claim if its partitions changed.
    pub(super) fn step(&mut self, shared: &WorkerShared, metrics: &Metrics) {
        if self.read() {
            let owners = PartitionOwners::resolve(self.claims.values(), self.input_partitions);
            metrics
                .lookup_partitions_without_owner
                .set(i64::try_from(owners.unowned().len()).unwrap_or(i64::MAX));
            shared.set_partition_owners(owners);
        }
        self.publish(shared);
    }

    /// Applies the records fetched; whether any claim changed.
    fn read(&mut self) -> bool {
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
                        Ok(claim) if claim.url == key => {
                            self.latest_claim_ms = self.latest_claim_ms.max(claim.claimed_at_ms);
                            if claim.group_id == self.group_id {
                                self.claims.insert(key.to_string(), claim);
                                changed = true;
                            }
                        }
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
    fn publish(&mut self, shared: &WorkerShared) {
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
                    Sent::Acked(partitions.clone())
                } else {
                    tracing::warn!(topic = %self.topic, "membership claim not delivered; retrying");
                    Sent::Failed {
                        retry_at: Instant::now() + RETRY_AFTER,
                    }
                });
            }
        }
        let owned: Vec<i32> = shared
            .partition_status()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let due = match &self.sent {
            None => true,
            Some(Sent::Pending { .. }) => false,
            Some(Sent::Acked(partitions)) => *partitions != owned,
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
            claimed_at_ms: wall_clock_ms().max(self.latest_claim_ms + 1),
        };
        self.latest_claim_ms = claim.claimed_at_ms;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(url: &str, partitions: &[i32], at: i64) -> MemberClaim {
        MemberClaim {
            url: url.into(),
            group_id: "g".into(),
            partitions: partitions.to_vec(),
            claimed_at_ms: at,
        }
    }

    #[test]
    fn the_newest_claim_owns_a_partition() {
        // `a` crashed holding 0..4; `b` took 2 and 3 over, later.
        let claims = [
            claim("http://a", &[0, 1, 2, 3], 10),
            claim("http://b", &[2, 3], 20),
        ];
        let owners = PartitionOwners::resolve(&claims, 4);
        assert_eq!(owners.owner(0), Some("http://a"));
        assert_eq!(owners.owner(2), Some("http://b"));
        assert_eq!(owners.members(), ["http://a", "http://b"]);
        assert!(owners.unowned().is_empty());
        // Once `b` claims everything, `a` owns nothing and is no longer asked.
        let claims = [
            claim("http://a", &[0, 1, 2, 3], 10),
            claim("http://b", &[0, 1, 2, 3], 30),
        ];
        let owners = PartitionOwners::resolve(&claims, 4);
        assert_eq!(owners.members(), ["http://b"]);
    }

    #[test]
    fn unclaimed_and_out_of_range_partitions() {
        let claims = [claim("http://a", &[0, 7, -1], 1), claim("http://b", &[], 2)];
        let owners = PartitionOwners::resolve(&claims, 3);
        assert_eq!(owners.unowned(), vec![1, 2]);
        assert_eq!(owners.owner(7), None);
        assert_eq!(
            owners.members(),
            ["http://a"],
            "an idle instance owns nothing"
        );
        // Same claim time: every instance breaks the tie alike.
        let claims = [claim("http://b", &[0], 5), claim("http://a", &[0], 5)];
        assert_eq!(
            PartitionOwners::resolve(&claims, 1).owner(0),
            Some("http://b")
        );
    }
}
