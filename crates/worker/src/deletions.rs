//! The deletion topic (`topics.deletion`): erasure requests for bulk
//! pipelines, one record per customer, keyed by the customer id.
//!
//! The topic is co-partitioned with the input (same partition count, same
//! key partitioner), so deletion partition `p` holds the requests for the
//! customers of input partition `p`. The group thread reads, with a
//! consumer of its own that joins no group, exactly the deletion partitions
//! of the input partitions this instance holds live, and hands each record
//! to the pipeline thread owning `p` as a command. How far a partition has
//! been applied is not committed anywhere: it is written to the state
//! changelog in the same flush as (and after) the tombstones it caused, and
//! restored with the partition, so a restart or rebalance neither loses a
//! request nor applies one twice.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::WorkerConfig;

use crate::commands::Command;
use crate::error::WorkerError;
use crate::pipeline::{CoreHandle, owner_of};
use crate::sink::LogLimiter;

/// How often the assignment is compared with the live partitions.
const RECONCILE_EVERY: Duration = Duration::from_millis(200);
/// Records handed over per step at most, so the group thread keeps polling
/// the group.
const MAX_PER_STEP: usize = 1024;

/// Reads the deletion partitions of this instance's live input partitions.
pub(super) struct DeletionReader {
    consumer: BaseConsumer,
    topic: String,
    /// Deletion partition → assignment epoch of the input partition it follows.
    assigned: BTreeMap<i32, u64>,
    last_reconcile: Option<Instant>,
    bad_records: LogLimiter,
    errors: LogLimiter,
}

impl DeletionReader {
    /// A reader if `topics.deletion` is set.
    pub(super) fn new(config: &WorkerConfig) -> Result<Option<Self>, WorkerError> {
        let Some(topic) = &config.topics.deletion else {
            return Ok(None);
        };
        let mut client = super::kafka::reader_config(config);
        // A plain assigned reader: positions live in the changelog, not in a group.
        client.set("enable.auto.commit", "false");
        client.set("enable.partition.eof", "false");
        Ok(Some(DeletionReader {
            consumer: client.create()?,
            topic: topic.clone(),
            assigned: BTreeMap::new(),
            last_reconcile: None,
            bad_records: LogLimiter::default(),
            errors: LogLimiter::default(),
        }))
    }

    /// Follows the live partitions, then hands over what was fetched.
    pub(super) fn step(&mut self, cores: &[CoreHandle]) -> Result<(), WorkerError> {
        if self
            .last_reconcile
            .is_none_or(|t| t.elapsed() >= RECONCILE_EVERY)
        {
            self.last_reconcile = Some(Instant::now());
            self.reconcile(cores)?;
        }
        if self.assigned.is_empty() {
            return Ok(());
        }
        for _ in 0..MAX_PER_STEP {
            match self.consumer.poll(Duration::ZERO) {
                Some(Ok(msg)) => {
                    let partition = msg.partition();
                    let Some(&epoch) = self.assigned.get(&partition) else {
                        continue;
                    };
                    let Some(customer_id) = msg.key().and_then(|k| std::str::from_utf8(k).ok())
                    else {
                        if let Some(held_back) = self.bad_records.allow(Duration::from_secs(10)) {
                            tracing::warn!(
                                topic = %self.topic,
                                partition,
                                offset = msg.offset(),
                                similar_not_logged = held_back,
                                "deletion record without a UTF-8 key (the customer id): skipped"
                            );
                        }
                        continue;
                    };
                    cores[owner_of(partition, cores.len())].send(Command::EraseFromTopic {
                        partition,
                        epoch,
                        customer_id: customer_id.to_string(),
                        offset: msg.offset(),
                    });
                }
                Some(Err(e)) => {
                    if let Some(held_back) = self.errors.allow(Duration::from_secs(10)) {
                        tracing::warn!(topic = %self.topic, error = %e, similar_not_logged = held_back, "deletion topic error");
                    }
                    break;
                }
                None => break,
            }
        }
        Ok(())
    }

    /// Reads exactly the deletion partitions of the live input partitions,
    /// each from the position its changelog restored (the beginning if it
    /// has none); a partition re-assigned in a new epoch starts over from
    /// its newly restored position.
    fn reconcile(&mut self, cores: &[CoreHandle]) -> Result<(), WorkerError> {
        let mut wanted: BTreeMap<i32, (u64, Option<i64>)> = BTreeMap::new();
        for handle in cores {
            let core = handle.lock_from_outside()?;
            for (p, epoch, next) in core.deletion_positions() {
                wanted.insert(p, (epoch, next));
            }
        }
        let mut drop_tpl = TopicPartitionList::new();
        let gone: Vec<i32> = self
            .assigned
            .iter()
            .filter(|(p, e)| wanted.get(p).is_none_or(|(we, _)| we != *e))
            .map(|(p, _)| *p)
            .collect();
        for p in &gone {
            drop_tpl.add_partition(&self.topic, *p);
        }
        if drop_tpl.count() > 0 {
            self.consumer.incremental_unassign(&drop_tpl)?;
            for p in &gone {
                self.assigned.remove(p);
            }
        }
        let mut add_tpl = TopicPartitionList::new();
        let mut added = Vec::new();
        for (&p, &(epoch, next)) in &wanted {
            if self.assigned.contains_key(&p) {
                continue;
            }
            let offset = next.map_or(Offset::Beginning, Offset::Offset);
            add_tpl.add_partition_offset(&self.topic, p, offset)?;
            added.push((p, epoch));
        }
        if !added.is_empty() {
            self.consumer.incremental_assign(&add_tpl)?;
            tracing::info!(topic = %self.topic, partitions = ?added.iter().map(|(p, _)| *p).collect::<Vec<_>>(), "reading deletion partitions");
            // Recorded only once assigned: a failed call is retried at the next reconcile.
            self.assigned.extend(added);
        }
        Ok(())
    }
}
