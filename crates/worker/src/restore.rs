//! Restoring a partition's customers from the state changelog.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{InputResetPolicy, WorkerConfig};
use churn_core::changelog::{
    DELETION_POSITION_KEY, PartitionClock, WATERMARK_KEY, decode_clock, decode_position,
    decode_state,
};
use churn_core::engine::CustomerStore;
use churn_core::model::RiskModel;

use crate::clock::wall_clock_ms;
use crate::error::WorkerError;

/// A finished restore.
pub struct Restored {
    /// The customers, with their timers rebuilt.
    pub store: CustomerStore,
    /// The partition's event-time clock, as the previous owner left it (or,
    /// if it left none, derived from the newest event restored), never ahead
    /// of the wall clock plus the allowed skew.
    pub clock: PartitionClock,
    /// How far the deletion topic's partition of the same number has been
    /// applied (next offset to read), if a flush ever wrote it.
    pub deletion_position: Option<i64>,
    /// State records read.
    pub records: u64,
    /// Records that could not be decoded (logged and skipped).
    pub undecodable: u64,
    /// Wall time taken.
    pub elapsed: Duration,
    /// The model the store is held for (the one current when the restore
    /// started; converted on install if a reload happened meanwhile).
    pub model: Arc<RiskModel>,
    /// Set when the changelog's input positions were past the input
    /// partition's end and `state.on_input_reset = "reset_positions"` made
    /// the store forget them: (highest position recorded, log end).
    pub input_reset: Option<(i64, i64)>,
}

/// Reads changelog partition `partition` from its low to its high watermark
/// and rebuilds the store. The last record per customer wins; an empty
/// record (tombstone) forgets the customer.
pub fn restore_partition(
    config: &WorkerConfig,
    model: &Arc<RiskModel>,
    partition: i32,
    progress: &prometheus::Gauge,
) -> Result<Restored, WorkerError> {
    progress.set(0.0);
    let started = Instant::now();
    let topic = &config.topics.state;
    let mut client = super::kafka::reader_config(config);
    // A plain assigned reader: it must not join the group or commit anything.
    client.set("enable.auto.commit", "false");
    client.set("enable.partition.eof", "false");
    client.set("fetch.max.bytes", "52428800");
    client.set("max.partition.fetch.bytes", "10485760");
    let exactly_once = config.processing.exactly_once();
    // Exactly-once: the state of committed transactions only. The log end
    // of every record, committed or not (`read_uncommitted`), is the end to
    // reach: a record of a transaction still open there (a previous owner
    // that crashed or stalls) is waited for until it is committed or
    // aborted, so a restore never misses state whose offsets are committed.
    let uncommitted_end = if exactly_once {
        client.set("isolation.level", "read_uncommitted");
        let probe: BaseConsumer = client.create()?;
        let (_, end) = probe
            .fetch_watermarks(topic, partition, Duration::from_secs(30))
            .map_err(|e| WorkerError::from_reader_error(e, topic))?;
        client.set("isolation.level", "read_committed");
        client.set("enable.partition.eof", "true");
        Some(end)
    } else {
        None
    };
    let consumer: BaseConsumer<RestoreContext> = client.create_with_context(RestoreContext)?;
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(30))
        .map_err(|e| WorkerError::from_reader_error(e, topic))?;
    let high = uncommitted_end.map_or(high, |end| end.max(high));
    // At-least-once: the last record read ends the restore. Exactly-once:
    // the last offset is a transaction marker, never delivered; the end of
    // the partition as read committed (EOF) at or past `high` ends it.
    let last = |offset: i64| !exactly_once && offset >= high - 1;
    let mut store = CustomerStore::new();
    let mut records = 0_u64;
    let mut undecodable = 0_u64;
    let mut saved_clock: Option<PartitionClock> = None;
    let mut deletion_position: Option<i64> = None;
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
                    if msg.key() == Some(WATERMARK_KEY) {
                        match msg.payload().map(decode_clock) {
                            Some(Ok(clock)) => saved_clock = Some(clock),
                            Some(Err(e)) => {
                                undecodable += 1;
                                tracing::warn!(partition, offset = msg.offset(), error = %e, "skipping undecodable partition clock");
                            }
                            None => saved_clock = None,
                        }
                        if last(msg.offset()) {
                            break;
                        }
                        continue;
                    }
                    if msg.key() == Some(DELETION_POSITION_KEY) {
                        match msg.payload().map(decode_position) {
                            Some(Ok(next)) => deletion_position = Some(next),
                            Some(Err(e)) => {
                                undecodable += 1;
                                tracing::warn!(partition, offset = msg.offset(), error = %e, "skipping undecodable deletion position");
                            }
                            None => deletion_position = None,
                        }
                        if last(msg.offset()) {
                            break;
                        }
                        continue;
                    }
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
                    if last(msg.offset()) {
                        break;
                    }
                    if records.is_multiple_of(4096) {
                        progress.set((msg.offset() - low + 1) as f64 / (high - low) as f64);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) if exactly_once => {
                    last_progress = Instant::now();
                    let position = consumer.position().ok().and_then(|p| {
                        p.find_partition(topic, partition)
                            .and_then(|e| e.offset().to_raw())
                    });
                    if position.is_some_and(|p| p >= high) {
                        break;
                    }
                }
                // A connection to a broker that is down (not necessarily
                // this partition's leader) is reported here too; librdkafka
                // reconnects by itself, so keep reading until the stall
                // deadline rather than restart the restore from the low
                // watermark 5 s later (seen on Apache Kafka with one broker
                // of three stopped: tests/real_broker/broker_faults.rs).
                Some(Err(e)) if is_transient(&e) => {
                    if last_progress.elapsed() > Duration::from_secs(60) {
                        return Err(WorkerError::RestoreStalled { partition });
                    }
                }
                Some(Err(e)) => return Err(WorkerError::from_reader_error(e, topic)),
                None => {
                    if last_progress.elapsed() > Duration::from_secs(60) {
                        return Err(WorkerError::RestoreStalled { partition });
                    }
                }
            }
        }
    }
    progress.set(1.0);
    let input_reset = check_input_positions(config, &consumer, &mut store, partition)?;
    let clock = resume_clock(config, &store, saved_clock, wall_clock_ms());
    store.rebuild_timers(model, clock.watermark_ms);
    Ok(Restored {
        clock,
        deletion_position,
        store,
        records,
        undecodable,
        elapsed: started.elapsed(),
        model: Arc::clone(model),
        input_reset,
    })
}

/// Whether a consumer error while restoring is one librdkafka recovers from
/// by itself: a broker connection lost or refused, or none up for now.
fn is_transient(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::RDKafkaErrorCode as C;
    matches!(
        error.rdkafka_error_code(),
        Some(C::BrokerTransportFailure | C::AllBrokersDown)
    )
}

/// The restore consumer's context: the end of the partition is how an
/// exactly-once restore knows it is done, not an error to log.
struct RestoreContext;

impl ClientContext for RestoreContext {
    fn error(&self, error: KafkaError, reason: &str) {
        // Otherwise as rdkafka's default context logs it.
        if error.rdkafka_error_code() != Some(rdkafka::error::RDKafkaErrorCode::PartitionEOF) {
            log::error!(target: "rdkafka::client", "librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for RestoreContext {}

/// Compares the highest input offset the changelog records as applied with
/// the input partition's log end. An offset at or past the end cannot have
/// been read from this partition: the topic was recreated (offsets start
/// again at 0) or truncated, and the recorded positions would make the
/// store skip the new events as redeliveries. Kafka's topic ids (KIP-516)
/// would tell incarnations apart even when the new topic has grown past
/// the old positions, but librdkafka does not expose them to consumers;
/// this proof holds from the first restore after the recreation, which is
/// when the positions would start skipping events.
fn check_input_positions(
    config: &WorkerConfig,
    consumer: &BaseConsumer<RestoreContext>,
    store: &mut CustomerStore,
    partition: i32,
) -> Result<Option<(i64, i64)>, WorkerError> {
    let Some(applied) = store.max_applied_offset() else {
        return Ok(None);
    };
    let topic = &config.topics.input;
    let (_, log_end) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(30))?;
    if applied < log_end {
        return Ok(None);
    }
    match config.state.on_input_reset {
        InputResetPolicy::Fail => Err(WorkerError::InputTopicReset {
            topic: topic.clone(),
            partition,
            log_end,
            applied,
            state: config.topics.state.clone(),
        }),
        InputResetPolicy::ResetPositions => {
            store.forget_offsets();
            Ok(Some((applied, log_end)))
        }
    }
}

/// The clock a restored partition resumes with: the saved one if the previous
/// owner left one, else the newest restored event less the allowed lateness.
/// Either is capped at `now_ms` plus the allowed skew, so a clock poisoned by
/// an older release (which accepted events from the far future) heals.
fn resume_clock(
    config: &WorkerConfig,
    store: &CustomerStore,
    saved: Option<PartitionClock>,
    now_ms: i64,
) -> PartitionClock {
    let cap = now_ms.saturating_add(config.engine.max_future_skew_ms());
    let max_event = store
        .iter()
        .map(|(_, s)| s.last_event_ms())
        .max()
        .map(|m| m.min(cap));
    let derived = max_event.map_or(i64::MIN, |m| {
        m.saturating_sub(config.engine.allowed_lateness_ms())
    });
    let watermark = saved
        .map_or(derived, |c| c.watermark_ms.max(derived))
        .min(cap);
    PartitionClock {
        watermark_ms: watermark,
        max_event_ms: max_event,
    }
}

#[cfg(test)]
mod transient_tests {
    use super::is_transient;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode as C};

    #[test]
    fn a_lost_broker_connection_does_not_abort_a_restore_but_other_errors_do() {
        assert!(is_transient(&KafkaError::MessageConsumption(
            C::BrokerTransportFailure
        )));
        assert!(is_transient(&KafkaError::MessageConsumption(
            C::AllBrokersDown
        )));
        assert!(!is_transient(&KafkaError::MessageConsumption(
            C::TopicAuthorizationFailed
        )));
        assert!(!is_transient(&KafkaError::MessageConsumption(
            C::UnknownTopicOrPartition
        )));
        assert!(!is_transient(&KafkaError::MessageConsumption(
            C::OffsetOutOfRange
        )));
    }
}
