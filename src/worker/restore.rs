//! Restoring a partition's customers from the state changelog.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::changelog::decode_state;
use crate::config::WorkerConfig;
use crate::engine::CustomerStore;
use crate::model::RiskModel;

use super::WorkerError;

/// A finished restore.
pub struct Restored {
    /// The customers, with their timers rebuilt.
    pub store: CustomerStore,
    /// State records read.
    pub records: u64,
    /// Records that could not be decoded (logged and skipped).
    pub undecodable: u64,
    /// Wall time taken.
    pub elapsed: Duration,
}

/// Reads changelog partition `partition` from its low to its high watermark
/// and rebuilds the store. The last record per customer wins; an empty
/// record (tombstone) forgets the customer.
pub fn restore_partition(
    config: &WorkerConfig,
    model: &RiskModel,
    partition: i32,
) -> Result<Restored, WorkerError> {
    let started = Instant::now();
    let topic = &config.topics.state;
    let mut client =
        super::kafka::consumer_config(config, &format!("{}-restore", config.kafka.group_id));
    // A plain assigned reader: it must not join the group or commit anything.
    client.set("enable.auto.commit", "false");
    client.set("enable.partition.eof", "false");
    client.set("fetch.max.bytes", "52428800");
    client.set("max.partition.fetch.bytes", "10485760");
    let consumer: BaseConsumer = client.create()?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(30))?;
    let mut store = CustomerStore::new();
    let mut records = 0_u64;
    let mut undecodable = 0_u64;
    if high > low {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(low))?;
        consumer.assign(&tpl)?;
        let mut last_progress = Instant::now();
        loop {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(msg)) => {
                    last_progress = Instant::now();
                    records += 1;
                    let key = msg.key().and_then(|k| std::str::from_utf8(k).ok());
                    match (key, msg.payload()) {
                        (Some(id), None) | (Some(id), Some([])) => {
                            store.remove(id);
                        }
                        (Some(id), Some(bytes)) => match decode_state(model, bytes) {
                            Ok(state) => store.insert_state(id, state),
                            Err(e) => {
                                undecodable += 1;
                                tracing::warn!(partition, offset = msg.offset(), error = %e, "skipping undecodable state record");
                            }
                        },
                        (None, _) => undecodable += 1,
                    }
                    if msg.offset() >= high - 1 {
                        break;
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => {
                    if last_progress.elapsed() > Duration::from_secs(60) {
                        return Err(WorkerError::RestoreStalled { partition });
                    }
                }
            }
        }
    }
    store.rebuild_timers(model);
    Ok(Restored {
        store,
        records,
        undecodable,
        elapsed: started.elapsed(),
    })
}
