//! The consumer's side of the group: rebalance callbacks, statistics and
//! offset commits.
//!
//! librdkafka calls these from inside the group thread's polls of the
//! consumer's main queue; they reach each pipeline thread's [`Core`]
//! through its [`CoreHandle`] (a partition belongs to the core
//! [`owner_of`] names). Pipeline threads poll only their partition queues,
//! which never run callbacks, so holding a core's lock across such a poll
//! cannot deadlock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{ClientContext, Statistics, TopicPartitionList};

use crate::telemetry::Metrics;

use crate::directory::PartitionDirectory;
use crate::pipeline::{CommitResult, CoreHandle, owner_of, set_paused};
use crate::sink::LogLimiter;

/// A partition counts as fetched only if its leader answered this recently:
/// a fetch request returns within `fetch.wait.max.ms` (500 ms by default)
/// even when there is nothing to read.
const MAX_RECEIVE_SILENCE_US: i64 = 5_000_000;

/// How long a revoke waits for its offsets commit to be confirmed.
const REVOKE_COMMIT_WAIT: Duration = Duration::from_secs(5);

/// The consumer's context: rebalance handling, statistics and commit results.
pub struct GroupContext {
    /// One per pipeline thread; partition `p` belongs to `cores[owner_of(p, n)]`.
    pub(super) cores: Arc<[CoreHandle]>,
    pub(super) directory: Arc<PartitionDirectory>,
    pub(super) metrics: Metrics,
    pub(super) input_topic: String,
    pub(super) drain_timeout: Duration,
    /// Background commit failures are logged at a bounded rate.
    pub(super) commit_log: Mutex<LogLimiter>,
    /// The group coordinator's address, from the latest statistics that
    /// named one (for the log while waiting for the first assignment).
    pub(super) coordinator: Mutex<Option<String>>,
    /// Set by the shutdown before it leaves the group: when the leave
    /// budget ends. The revoke that leaving triggers waits for its commit
    /// no longer than that, so the shutdown stays within its bound.
    pub(super) leave_by: Mutex<Option<Instant>>,
    /// `processing.guarantee = "exactly_once"`: offsets are committed by
    /// the producers' transactions.
    pub(super) exactly_once: bool,
}

/// How long a revoke waits for its offsets commit: [`REVOKE_COMMIT_WAIT`],
/// cut to what is left of the leave budget when the worker is shutting down
/// (the final commit was already awaited; the revoke's goes out anyway).
fn revoke_commit_wait(now: Instant, leave_by: Option<Instant>) -> Duration {
    match leave_by {
        Some(until) => REVOKE_COMMIT_WAIT.min(until.saturating_duration_since(now)),
        None => REVOKE_COMMIT_WAIT,
    }
}

impl GroupContext {
    /// The group coordinator's address, if the statistics named one yet.
    pub(super) fn coordinator(&self) -> Option<String> {
        self.coordinator.lock().ok().and_then(|c| c.clone())
    }

    fn input_partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements()
            .iter()
            .filter(|e| e.topic() == self.input_topic)
            .map(|e| e.partition())
            .collect()
    }

    /// `partitions` split by the core that owns them (cores without any left out).
    fn by_core(&self, partitions: &[i32]) -> Vec<(usize, Vec<i32>)> {
        let n = self.cores.len();
        let mut out: Vec<(usize, Vec<i32>)> = Vec::new();
        for &p in partitions {
            let owner = owner_of(p, n);
            match out.iter_mut().find(|(i, _)| *i == owner) {
                Some((_, ps)) => ps.push(p),
                None => out.push((owner, vec![p])),
            }
        }
        out
    }
}

/// The group coordinator's address in the consumer's statistics: librdkafka
/// lists it as a logical broker named `GroupCoordinator` whose node name is
/// set once the coordinator is known.
fn coordinator_of(stats: &Statistics) -> Option<String> {
    stats
        .brokers
        .values()
        .find(|b| b.source == "logical" && b.name.starts_with("GroupCoordinator"))
        .map(|b| b.nodename.clone())
        .filter(|n| !n.is_empty())
}

/// How often the group thread says it is still waiting for its first
/// partition assignment.
pub(super) const ASSIGNMENT_WAIT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Paces the INFO line logged while no assignment has been received: one
/// every [`ASSIGNMENT_WAIT_LOG_EVERY`] (issue 32: a worker waiting on an
/// unreachable or slow coordinator should say so, not stay silent).
pub(super) struct AssignmentWait {
    started: Instant,
    next: Instant,
}

impl AssignmentWait {
    /// Waiting since `now`; the first line is due one period later.
    pub(super) fn new(now: Instant) -> Self {
        AssignmentWait {
            started: now,
            next: now + ASSIGNMENT_WAIT_LOG_EVERY,
        }
    }

    /// `Some(time waited)` when a line is due at `now` (then not again for
    /// one period).
    pub(super) fn due(&mut self, now: Instant) -> Option<Duration> {
        if now < self.next {
            return None;
        }
        self.next = now + ASSIGNMENT_WAIT_LOG_EVERY;
        Some(now.duration_since(self.started))
    }
}

/// The line logged while waiting for the first assignment.
pub(super) fn log_assignment_wait(group: &str, coordinator: Option<&str>, waited: Duration) {
    tracing::info!(
        group,
        coordinator = coordinator.unwrap_or("coordinator unknown"),
        waited_s = waited.as_secs(),
        "waiting for the first partition assignment"
    );
}

/// Whether a partition is fetched and caught up, from the consumer's
/// statistics: its leader is up and answering, its fetcher is active, and
/// everything up to the high watermark has been handed to the pipeline.
fn caught_up(stats: &Statistics, p: &rdkafka::statistics::Partition) -> bool {
    let leader_ok = stats.brokers.values().any(|b| {
        b.nodeid == p.leader && b.state == "UP" && (0..MAX_RECEIVE_SILENCE_US).contains(&b.rxidle)
    });
    leader_ok
        && p.fetch_state == "active"
        && p.hi_offset >= 0
        && p.next_offset >= p.hi_offset
        && p.fetchq_cnt == 0
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        if let Some(address) = coordinator_of(&statistics)
            && let Ok(mut c) = self.coordinator.lock()
        {
            *c = Some(address);
        }
        let Some(topic) = statistics.topics.get(&self.input_topic) else {
            return;
        };
        let owned: Vec<i32> = self
            .directory
            .partition_status()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let mut health = Vec::with_capacity(owned.len());
        for (p, stats) in &topic.partitions {
            if *p < 0 || !owned.contains(p) {
                continue;
            }
            // librdkafka's lag is from the offsets this consumer committed;
            // under exactly-once the producers' transactions commit them
            // and the consumer never learns of it, so the lag is counted
            // from the position handed to the pipeline instead.
            let lag = if self.exactly_once {
                if stats.ls_offset >= 0 && stats.app_offset >= 0 {
                    (stats.ls_offset - stats.app_offset).max(0)
                } else {
                    -1
                }
            } else {
                stats.consumer_lag
            };
            if lag >= 0 {
                self.metrics
                    .consumer_lag
                    .with_label_values(&[&p.to_string()])
                    .set(lag);
            }
            health.push((*p, caught_up(&statistics, stats)));
        }
        let n = self.cores.len();
        for (i, handle) in self.cores.iter().enumerate() {
            let mine: Vec<(i32, bool)> = health
                .iter()
                .copied()
                .filter(|&(p, _)| owner_of(p, n) == i)
                .collect();
            if !mine.is_empty()
                && let Ok(mut core) = handle.lock_from_outside()
            {
                core.set_caught_up(&mine);
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // Before librdkafka is handed the assignment: it starts fetching
            // at once, and a pipeline thread may poll a message of a new
            // partition before `post_rebalance` runs. Its core must already
            // hold the partition (restoring), so the message is set aside
            // and read again after the restore; a core that does not know
            // the partition drops it as revoked, and its offset would be
            // skipped.
            let partitions = self.input_partitions(tpl);
            tracing::info!(?partitions, "partitions assigned: restoring state");
            for (i, mine) in self.by_core(&partitions) {
                if let Ok(mut core) = self.cores[i].lock_from_outside() {
                    core.assign(&mine);
                }
            }
        }
        if let Rebalance::Revoke(tpl) = rebalance {
            let partitions = self.input_partitions(tpl);
            tracing::info!(?partitions, "partitions revoked: draining");
            // One deadline for every core's share: the member's rejoin waits for all.
            let deadline = Instant::now() + self.drain_timeout;
            let shares = self.by_core(&partitions);
            let mut guards = Vec::with_capacity(shares.len());
            let mut transactional = false;
            for (i, mine) in shares {
                let Ok(mut core) = self.cores[i].lock_from_outside() else {
                    return;
                };
                if core.is_transactional() {
                    // Exactly-once: the open transaction (every partition
                    // of this core) is committed while the group
                    // generation still includes these partitions, so the
                    // next owner starts after it; or aborted, and then the
                    // next owner starts from the previous commit.
                    transactional = true;
                    if core.commit(consumer) != CommitResult::Committed {
                        tracing::warn!(
                            partitions = ?mine,
                            "transaction not committed on revoke; the next owner resumes from \
                             the last committed transaction"
                        );
                    }
                    guards.push((core, mine));
                    continue;
                }
                if !core.drain(&mine, deadline) {
                    tracing::warn!(
                        partitions = ?mine,
                        "drain timed out; uncommitted events will be re-read by the next owner"
                    );
                }
                store_offsets(consumer, &self.input_topic, core.take_offsets());
                guards.push((core, mine));
            }
            // Committed before the partitions are given up, with the current
            // generation, so the next owner starts after what was drained;
            // bounded so that the member's rejoin is never held up for long.
            let leave_by = self.leave_by.lock().ok().and_then(|l| *l);
            let wait = revoke_commit_wait(Instant::now(), leave_by);
            match if transactional {
                CommitOutcome::Committed
            } else {
                commit_with_deadline(consumer, wait)
            } {
                CommitOutcome::Committed => {}
                outcome => tracing::warn!(
                    ?partitions,
                    ?outcome,
                    "offsets of revoked partitions not confirmed; the next owner may re-read \
                     (same alert ids)"
                ),
            }
            for (mut core, mine) in guards {
                core.forget(&mine);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                // Best effort: librdkafka may not have applied the
                // assignment yet, and then ignores the pause. Messages
                // fetched while restoring are set aside and read again.
                for &p in &self.input_partitions(tpl) {
                    if let Err(e) = set_paused(consumer, &self.input_topic, p, true) {
                        tracing::warn!(partition = p, error = %e, "cannot pause partition during restore");
                    }
                }
                self.directory.set_joined();
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance error"),
        }
    }

    /// Results of librdkafka's background (auto) commits.
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            // Expected while the group rebalances; the next commit catches up.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::RebalanceInProgress)) => {
                tracing::debug!("background offset commit deferred: rebalance in progress");
            }
            Err(e) => {
                let allowed = self
                    .commit_log
                    .lock()
                    .ok()
                    .and_then(|mut l| l.allow(Duration::from_secs(10)));
                if let Some(held_back) = allowed {
                    tracing::warn!(error = %e, similar_not_logged = held_back, "background offset commit failed");
                }
            }
        }
    }
}

/// Stores offsets (the last fully handled offset per partition).
pub fn store_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    offsets: Vec<(i32, i64)>,
) {
    for (p, offset) in offsets {
        if let Err(e) = consumer.store_offset(topic, p, offset) {
            tracing::debug!(partition = p, offset, error = %e, "offset not stored (partition no longer assigned)");
        }
    }
}

/// How a commit with a deadline ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The broker confirmed it (or every stored offset was committed already).
    Committed,
    /// No answer before the deadline.
    TimedOut,
    /// The broker or librdkafka refused it.
    Failed(String),
}

/// Commits the stored offsets and waits at most `timeout` for the result.
///
/// librdkafka's synchronous commit cannot be given a deadline, and its
/// asynchronous one reports to nobody unless an `offset_commit_cb` is set
/// (rust-rdkafka sets none), so the reply is sent to a queue of our own and
/// polled with a deadline (`rd_kafka_commit_queue`).
pub fn commit_with_deadline<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    timeout: Duration,
) -> CommitOutcome {
    use rdkafka::types::RDKafkaRespErr as E;
    use rdkafka_sys as sys;
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` is the live handle of `consumer`, borrowed for this call.
    // The queue is ours: created here and destroyed on every path below; a
    // reply still pending keeps its own reference to the queue, so destroying
    // our handle early is safe. Each event polled is destroyed after reading.
    unsafe {
        let queue = sys::rd_kafka_queue_new(rk);
        if queue.is_null() {
            return CommitOutcome::Failed("cannot create a reply queue".into());
        }
        let err =
            sys::rd_kafka_commit_queue(rk, std::ptr::null(), queue, None, std::ptr::null_mut());
        let outcome = match err {
            E::RD_KAFKA_RESP_ERR_NO_ERROR => {
                let deadline = Instant::now() + timeout;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break CommitOutcome::TimedOut;
                    }
                    let event = sys::rd_kafka_queue_poll(queue, left.as_millis().max(1) as i32);
                    if event.is_null() {
                        continue;
                    }
                    let result = sys::rd_kafka_event_error(event);
                    sys::rd_kafka_event_destroy(event);
                    break match result {
                        E::RD_KAFKA_RESP_ERR_NO_ERROR | E::RD_KAFKA_RESP_ERR__NO_OFFSET => {
                            CommitOutcome::Committed
                        }
                        other => CommitOutcome::Failed(RDKafkaErrorCode::from(other).to_string()),
                    };
                }
            }
            E::RD_KAFKA_RESP_ERR__NO_OFFSET => CommitOutcome::Committed,
            other => CommitOutcome::Failed(RDKafkaErrorCode::from(other).to_string()),
        };
        sys::rd_kafka_queue_destroy(queue);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Arc;

    #[test]
    fn a_revoke_while_shutting_down_waits_only_for_the_rest_of_the_leave_budget() {
        let now = Instant::now();
        assert_eq!(revoke_commit_wait(now, None), REVOKE_COMMIT_WAIT);
        assert_eq!(
            revoke_commit_wait(now, Some(now + Duration::from_millis(700))),
            Duration::from_millis(700)
        );
        // Past the leave budget (e.g. a revoke during the close): no wait.
        assert_eq!(
            revoke_commit_wait(now + Duration::from_secs(2), Some(now)),
            Duration::ZERO
        );
        assert_eq!(
            revoke_commit_wait(now, Some(now + Duration::from_secs(60))),
            REVOKE_COMMIT_WAIT
        );
    }

    #[test]
    fn the_assignment_wait_is_logged_every_ten_seconds() {
        let t0 = Instant::now();
        let mut wait = AssignmentWait::new(t0);
        assert_eq!(wait.due(t0), None);
        assert_eq!(wait.due(t0 + Duration::from_millis(9_999)), None);
        assert_eq!(
            wait.due(t0 + Duration::from_secs(10)),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            wait.due(t0 + Duration::from_secs(15)),
            None,
            "once per period"
        );
        assert_eq!(
            wait.due(t0 + Duration::from_secs(21)),
            Some(Duration::from_secs(21))
        );
    }

    /// Collects what a tracing subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut b) = self.0.lock() {
                b.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(f: impl FnOnce()) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = captured.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn the_assignment_wait_line_names_the_group_and_the_coordinator() {
        let line = logged(|| log_assignment_wait("scorers", None, Duration::from_secs(20)));
        assert!(line.contains("INFO"), "{line}");
        assert!(
            line.contains("waiting for the first partition assignment"),
            "{line}"
        );
        assert!(
            line.contains("group=\"scorers\"") || line.contains("group=scorers"),
            "{line}"
        );
        assert!(line.contains("coordinator unknown"), "{line}");
        let line = logged(|| {
            log_assignment_wait("scorers", Some("kafka-2:9092"), Duration::from_secs(30))
        });
        assert!(line.contains("kafka-2:9092"), "{line}");
        assert!(!line.contains("coordinator unknown"), "{line}");
    }
}
