//! Broker faults on a 3-broker cluster (issue 25): replication factor 3,
//! `min.insync.replicas=2`, the worker running as a process while events
//! are produced, and one after the other:
//!
//! 1. `kill -9` of the broker that leads the input, alert and state
//!    partitions (found in the metadata), restarted once the others took over;
//! 2. the new leader stopped (SIGTERM, controlled shutdown) for 60 s; within
//!    that minute the worker is stopped with SIGTERM and a new one restores
//!    from the changelog with a broker down;
//! 3. the new leader paused (SIGSTOP) for 20 s, then resumed (SIGCONT);
//! 4. the leader paused again and the worker stopped with SIGTERM meanwhile
//!    (its outputs cannot be acknowledged: the shutdown bound is what is
//!    tested); a third worker finishes the stream.
//!
//! The faults cannot overlap on one cluster: with one broker down, a
//! second one away leaves a single broker, below `min.insync.replicas` and
//! below the KRaft quorum, so nothing could be written or elected (a full
//! outage, not the fault under test). The test takes no `serial()`: it
//! asserts no timing but the worker's shutdown bound, and its minutes of
//! waiting overlap with the other scenarios.
//!
//! What subscribers see is read with kcat: every input event accounted for
//! (alerts equal to an offline replay, none missing and none extra, a
//! repeated id always with the same content, one dead letter per bad line),
//! and, sampled every second while the faults run, the group's committed
//! offsets never ahead of acknowledged outputs: the alerts and dead letters
//! of every event below a committed offset are below the alert and dead
//! letter topics' high watermarks read right after it. Then SIGTERM stops
//! the worker within its documented bound, and a restarted worker restores
//! from the changelog exactly what the offline replay scores.
//! Reported: each fault's longest alert-publication stall and when
//! publication resumed, and how many alerts were published twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use churn_core::model::RiskModel;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::{
    ALERTS, DLQ, GroupProtocol, INPUT, KcatMessage, Member, STATE, kcat_read, published_alerts,
    replayed_alert_ids, timeline, wait_for,
};
use crate::support::kafka::KafkaCluster;
use crate::support::{
    DAY_MS, T0_MS, assert_matches_offline, committed_offset, http_get, offline_scores,
};

const GROUP: &str = "churn-scorer";
const INPUT_PARTITIONS: i32 = 3;
const ALERT_PARTITIONS: i32 = 2;
/// The worker's documented shutdown bound: `shutdown.drain_timeout_secs`
/// (30 s by default) + 10 s (docs/operations.md).
const SHUTDOWN_BOUND: Duration = Duration::from_secs(30 + 10);
/// Events fed per 100 ms (about 200 a second).
const PER_TICK: usize = 20;
/// Every this many events, a line that is not JSON (a dead letter).
const BAD_EVERY: usize = 1000;

/// Creates the worker's topics, each partition replicated on all three
/// nodes with node 1 first (so node 1 leads them all to begin with), with
/// `min.insync.replicas=2`; waits until every partition is led and fully
/// in sync.
fn create_replicated_topics(bootstrap: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let replicas: &[i32] = &[1, 2, 3];
    let assignment = |n: i32| vec![replicas; n as usize];
    let (input, state, alerts, dlq) = (
        assignment(INPUT_PARTITIONS),
        assignment(INPUT_PARTITIONS),
        assignment(ALERT_PARTITIONS),
        assignment(1),
    );
    let min_isr = ("min.insync.replicas", "2");
    let topics = [
        NewTopic::new(INPUT, INPUT_PARTITIONS, TopicReplication::Variable(&input))
            .set(min_isr.0, min_isr.1),
        NewTopic::new(STATE, INPUT_PARTITIONS, TopicReplication::Variable(&state))
            .set(min_isr.0, min_isr.1)
            .set("cleanup.policy", "compact"),
        NewTopic::new(
            ALERTS,
            ALERT_PARTITIONS,
            TopicReplication::Variable(&alerts),
        )
        .set(min_isr.0, min_isr.1),
        NewTopic::new(DLQ, 1, TopicReplication::Variable(&dlq)).set(min_isr.0, min_isr.1),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in runtime
        .block_on(admin.create_topics(topics.iter(), &options))
        .expect("create topics")
    {
        if let Err((topic, e)) = r {
            panic!("creating topic {topic} failed: {e}");
        }
    }
    Leadership::new(bootstrap).wait_fully_replicated(Duration::from_secs(60));
}

/// Who leads which partition of the worker's topics, from metadata requests.
struct Leadership {
    client: BaseConsumer,
}

/// (topic, partition) -> (leader, in-sync replicas).
type PartitionLeaders = BTreeMap<(String, i32), (i32, Vec<i32>)>;

impl Leadership {
    fn new(bootstrap: &str) -> Leadership {
        let client = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("log_level", "3")
            .create()
            .expect("metadata client");
        Leadership { client }
    }

    fn partitions(&self) -> Option<PartitionLeaders> {
        let md = self
            .client
            .fetch_metadata(None, Duration::from_secs(5))
            .ok()?;
        let mut out = BTreeMap::new();
        for t in md.topics() {
            if ![INPUT, STATE, ALERTS, DLQ].contains(&t.name()) {
                continue;
            }
            for p in t.partitions() {
                out.insert(
                    (t.name().to_string(), p.id()),
                    (p.leader(), p.isr().to_vec()),
                );
            }
        }
        Some(out)
    }

    /// The broker that leads partitions of the input, alert and state
    /// topics alike (the most partitions, if several do).
    fn leader_of_input_alerts_and_state(&self) -> i32 {
        let partitions = self.partitions().expect("metadata");
        let mut candidates: BTreeMap<i32, usize> = BTreeMap::new();
        for broker in partitions.values().map(|(leader, _)| *leader) {
            let leads = |topic: &str| {
                partitions
                    .iter()
                    .any(|((t, _), (l, _))| t == topic && *l == broker)
            };
            if leads(INPUT) && leads(ALERTS) && leads(STATE) {
                *candidates.entry(broker).or_default() += 1;
            }
        }
        let (broker, _) = candidates
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .unwrap_or_else(|| panic!("no broker leads input, alerts and state: {partitions:?}"));
        broker
    }

    /// Waits until every partition is led and has all three replicas in
    /// sync (a restarted broker caught up), so the next fault leaves two.
    fn wait_fully_replicated(&self, timeout: Duration) -> Duration {
        let mut last = None;
        let started = Instant::now();
        loop {
            let done = self.partitions().is_some_and(|p| {
                let ok = p.len() == (2 * INPUT_PARTITIONS + ALERT_PARTITIONS + 1) as usize
                    && p.values().all(|(l, isr)| *l >= 0 && isr.len() == 3);
                last = Some(p);
                ok
            });
            if done {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "partitions not fully in sync within {timeout:?}: {last:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Counts the feed's failed deliveries.
struct FeedContext {
    failed: Arc<AtomicUsize>,
}

impl ClientContext for FeedContext {}

impl ProducerContext for FeedContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            eprintln!("feed: a delivery failed: {e}");
            self.failed.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Produces `lines` (each with its key) to the input topic, [`PER_TICK`]
/// every 100 ms, with an idempotent producer (acks from all in-sync
/// replicas, no duplicates on retry), so the topic holds each line once.
struct Feed {
    stop: Arc<AtomicBool>,
    fed: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    thread: JoinHandle<()>,
}

impl Feed {
    fn start(bootstrap: &str, lines: Vec<(String, String)>) -> Feed {
        let stop = Arc::new(AtomicBool::new(false));
        let fed = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let (stop_flag, fed_count) = (stop.clone(), fed.clone());
        let producer: BaseProducer<FeedContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("log_level", "3")
            .create_with_context(FeedContext {
                failed: failed.clone(),
            })
            .expect("producer");
        let thread = std::thread::spawn(move || {
            for chunk in lines.chunks(PER_TICK) {
                if stop_flag.load(Ordering::Acquire) {
                    break;
                }
                for (key, line) in chunk {
                    producer
                        .send(BaseRecord::to(INPUT).key(key).payload(line))
                        .map_err(|(e, _)| e)
                        .expect("queued");
                }
                fed_count.fetch_add(chunk.len(), Ordering::AcqRel);
                producer.poll(Duration::from_millis(100));
            }
            producer.flush(Duration::from_secs(60)).expect("flushed");
        });
        Feed {
            stop,
            fed,
            failed,
            thread,
        }
    }

    /// Stops; returns how many lines were fed and how many deliveries failed.
    fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("feeder");
        (
            self.fed.load(Ordering::Acquire),
            self.failed.load(Ordering::Acquire),
        )
    }
}

/// The worker's counters at one moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    /// `churn_scorer_alerts_published_total`: alerts the brokers acknowledged.
    alerts: u64,
}

/// Samples the worker's `/metrics` every 100 ms on a thread of its own.
struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: JoinHandle<()>,
}

/// A counter from a `/metrics` text, summed over its labels.
fn counter(text: &str, name: &str) -> Option<u64> {
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if rest.starts_with(' ') || rest.starts_with('{') {
            let v: f64 = rest.rsplit(' ').next()?.trim().parse().ok()?;
            total = Some(total.unwrap_or(0) + v as u64);
        }
    }
    total
}

impl Sampler {
    fn start(http: std::net::SocketAddr) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (stop_flag, out) = (stop.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            while !stop_flag.load(Ordering::Acquire) {
                let (status, body) = http_get(http, "/metrics", None);
                if status == 200
                    && let Some(alerts) = counter(&body, "churn_scorer_alerts_published_total")
                {
                    let sample = Sample {
                        at: Instant::now(),
                        alerts,
                    };
                    out.lock().expect("samples").push(sample);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Sampler {
            stop,
            samples,
            thread,
        }
    }

    fn alerts_now(&self) -> u64 {
        self.samples
            .lock()
            .expect("samples")
            .last()
            .map_or(0, |s| s.alerts)
    }

    fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("sampler");
        Arc::try_unwrap(self.samples)
            .map(|m| m.into_inner().expect("samples"))
            .unwrap_or_default()
    }
}

/// The group's committed input offsets and, read right after them, the
/// high watermarks of the alert and dead-letter topics.
#[derive(Debug, Clone)]
struct CommitSnapshot {
    at: Instant,
    committed: BTreeMap<i32, i64>,
    alert_ends: BTreeMap<i32, i64>,
    dead_letter_end: i64,
}

/// Takes a [`CommitSnapshot`] every second on a thread of its own; a
/// snapshot whose reads fail (a leader or the coordinator away) is skipped.
struct CommitWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(Vec<CommitSnapshot>, BTreeMap<String, usize>)>,
}

impl CommitWatch {
    fn start(bootstrap: &str) -> CommitWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let bootstrap = bootstrap.to_string();
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", GROUP)
            .set("enable.auto.commit", "false")
            .set("log_level", "3")
            .create()
            .expect("offsets client");
        let thread = std::thread::spawn(move || {
            let mut snapshots = Vec::new();
            let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
            while !stop_flag.load(Ordering::Acquire) {
                match Self::snapshot(&client, &bootstrap) {
                    Ok(s) => snapshots.push(s),
                    Err(why) => *skipped.entry(why).or_default() += 1,
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            (snapshots, skipped)
        });
        CommitWatch { stop, thread }
    }

    fn snapshot(client: &BaseConsumer, bootstrap: &str) -> Result<CommitSnapshot, String> {
        let timeout = Duration::from_secs(5);
        let mut tpl = TopicPartitionList::new();
        for p in 0..INPUT_PARTITIONS {
            tpl.add_partition(INPUT, p);
        }
        let committed = client
            .committed_offsets(tpl, timeout)
            .map_err(|e| format!("committed offsets: {e}"))?;
        let at = Instant::now();
        let mut offsets = BTreeMap::new();
        for p in 0..INPUT_PARTITIONS {
            let offset = match committed.find_partition(INPUT, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                // Nothing committed yet.
                Some(Offset::Invalid) => 0,
                other => return Err(format!("committed offset of {p}: {other:?}")),
            };
            offsets.insert(p, offset);
        }
        // A client of its own per snapshot: a long-lived one kept failing
        // with `UnknownPartition` for the alerts topic once it had (its
        // metadata cache), while a fresh one always asks the brokers.
        let ends: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("log_level", "3")
            .create()
            .map_err(|e| format!("watermark client: {e}"))?;
        let end = |topic: &str, partition: i32| {
            ends.fetch_watermarks(topic, partition, timeout)
                .map(|(_, high)| high)
                .map_err(|e| format!("{topic} watermarks: {e}"))
        };
        let mut alert_ends = BTreeMap::new();
        for q in 0..ALERT_PARTITIONS {
            alert_ends.insert(q, end(ALERTS, q)?);
        }
        let dead_letter_end = end(DLQ, 0)?;
        Ok(CommitSnapshot {
            at,
            committed: offsets,
            alert_ends,
            dead_letter_end,
        })
    }

    /// The snapshots, and why others were skipped (how often).
    fn stop(self) -> (Vec<CommitSnapshot>, BTreeMap<String, usize>) {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("commit watch")
    }
}

/// Asserts, for every snapshot, that the alerts an offline replay decides
/// for the events below the committed offsets were already on the alert
/// topic (below the high watermarks read after the commit), and the dead
/// letters of the bad lines below them on the dead-letter topic. Returns
/// how many distinct snapshots were checked.
fn assert_commits_behind_outputs(
    snapshots: &[CommitSnapshot],
    started: Instant,
    input: &BTreeMap<i32, Vec<String>>,
    alerts: &[KcatMessage],
    dead_letters: &[KcatMessage],
    model: &RiskModel,
    lateness_ms: i64,
) -> usize {
    let mut replays: HashMap<(i32, i64), BTreeSet<String>> = HashMap::new();
    let mut checked = 0;
    let mut previous: Option<&CommitSnapshot> = None;
    for s in snapshots {
        if previous.is_some_and(|p| {
            p.committed == s.committed
                && p.alert_ends == s.alert_ends
                && p.dead_letter_end == s.dead_letter_end
        }) {
            continue;
        }
        previous = Some(s);
        checked += 1;
        let on_topic: BTreeSet<String> = alerts
            .iter()
            .filter(|m| m.offset < s.alert_ends.get(&m.partition).copied().unwrap_or(0))
            .filter_map(|m| {
                let v: serde_json::Value = serde_json::from_str(m.payload.as_deref()?).ok()?;
                Some(v.get("alert_id")?.as_str()?.to_string())
            })
            .collect();
        let dead_on_topic: BTreeSet<(i32, i64)> = dead_letters
            .iter()
            .filter(|m| m.offset < s.dead_letter_end)
            .filter_map(|m| {
                Some((
                    m.headers.get("source_partition")?.parse().ok()?,
                    m.headers.get("source_offset")?.parse().ok()?,
                ))
            })
            .collect();
        for (&p, &committed) in &s.committed {
            let lines = &input[&p];
            assert!(
                committed as usize <= lines.len(),
                "partition {p}: committed {committed} beyond the {} events on the topic",
                lines.len()
            );
            let expected = replays.entry((p, committed)).or_insert_with(|| {
                let prefix: BTreeMap<i32, Vec<String>> =
                    [(p, lines[..committed as usize].to_vec())].into();
                replayed_alert_ids(model, &prefix, lateness_ms).0
            });
            let missing: Vec<&String> = expected
                .iter()
                .filter(|id| !on_topic.contains(*id))
                .collect();
            assert!(
                missing.is_empty(),
                "{:?} after the start: partition {p} committed offset {committed}, but {} alerts \
                 of the events below it were not on the alert topic (ends {:?}): {:?}",
                s.at - started,
                missing.len(),
                s.alert_ends,
                &missing[..missing.len().min(5)]
            );
            for (o, line) in lines[..committed as usize].iter().enumerate() {
                if is_bad(line) {
                    assert!(
                        dead_on_topic.contains(&(p, o as i64)),
                        "{:?} after the start: partition {p} committed offset {committed}, but \
                         the bad line at offset {o} had no dead letter (dead-letter end {})",
                        s.at - started,
                        s.dead_letter_end
                    );
                }
            }
        }
    }
    checked
}

fn is_bad(line: &str) -> bool {
    line.starts_with("{not json")
}

/// The timeline's events keyed by customer, with a line that is not JSON
/// every [`BAD_EVERY`] events (keyed `bad-<n>`).
fn keyed_lines(n: usize) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(n + n / BAD_EVERY);
    for (i, line) in timeline(n).into_iter().enumerate() {
        if i % BAD_EVERY == BAD_EVERY / 2 {
            out.push((format!("bad-{i}"), format!("{{not json {i}")));
        }
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        out.push((v["customer_id"].as_str().expect("id").to_string(), line));
    }
    out
}

/// One fault's effect on alert publication.
#[derive(Debug)]
struct Stall {
    /// The longest time without a newly acknowledged alert in the window.
    longest: Duration,
    /// From the fault until the alert that ended that stall was
    /// acknowledged (`None`: publication had not resumed by the window's end).
    resumed_after: Option<Duration>,
}

/// The longest stretch in `[from, to]` during which no alert was
/// acknowledged, and when it ended, counted from `from`.
fn publication_stall(samples: &[Sample], from: Instant, to: Instant) -> Stall {
    let mut value = samples
        .iter()
        .take_while(|s| s.at <= from)
        .last()
        .map_or(0, |s| s.alerts);
    let mut last_change = from;
    let mut stall = Stall {
        longest: Duration::ZERO,
        resumed_after: Some(Duration::ZERO),
    };
    for s in samples.iter().filter(|s| s.at > from && s.at <= to) {
        if s.alerts > value {
            if s.at - last_change > stall.longest {
                stall.longest = s.at - last_change;
                stall.resumed_after = Some(s.at - from);
            }
            last_change = s.at;
            value = s.alerts;
        }
    }
    if to.saturating_duration_since(last_change) > stall.longest {
        stall.longest = to - last_change;
        stall.resumed_after = None;
    }
    stall
}

/// Waits until the worker publishes and consumes every input partition
/// again after a fault: more alerts acknowledged than when the fault began,
/// and every partition's event-time watermark past where it stood then.
fn wait_until_flowing(
    what: &str,
    worker: &Member,
    sampler: &Sampler,
    alerts_at_fault: u64,
    watermarks_at_fault: &BTreeMap<i32, i64>,
    timeout: Duration,
) -> Duration {
    wait_for(what, timeout, || {
        sampler.alerts_now() > alerts_at_fault
            && worker.progress().is_some_and(|(_, w)| {
                (0..INPUT_PARTITIONS).all(|p| {
                    w.get(&p).copied().unwrap_or(i64::MIN)
                        > watermarks_at_fault.get(&p).copied().unwrap_or(i64::MIN)
                })
            })
    })
}

/// Where the worker stands before a fault: alerts acknowledged, watermarks.
fn position(worker: &Member, sampler: &Sampler) -> (u64, BTreeMap<i32, i64>) {
    let watermarks = worker.progress().map(|(_, w)| w).unwrap_or_default();
    (sampler.alerts_now(), watermarks)
}

/// A worker's counters that say whether it gave anything up.
fn worker_errors(worker: &Member) -> (u64, u64) {
    let (_, metrics) = http_get(worker.http, "/metrics", None);
    (
        counter(&metrics, "churn_scorer_producer_errors_total").unwrap_or(0),
        counter(&metrics, "churn_scorer_events_dropped_total").unwrap_or(0),
    )
}

#[test]
fn broker_faults_on_three_nodes_lose_nothing_and_commit_nothing_early() {
    let test = "broker_faults_on_three_nodes";
    let Some(mut cluster) = KafkaCluster::builder().nodes(3).start(test) else {
        return;
    };
    let started = Instant::now();
    eprintln!("{test}: 3 nodes up in {:?}", cluster.startup);
    let bootstrap = cluster.bootstrap();
    create_replicated_topics(&bootstrap);
    let leadership = Leadership::new(&bootstrap);
    let model = RiskModel::default_model();
    let lateness_ms = churn_worker::config::EngineConfig::default().allowed_lateness_ms();

    let lines = keyed_lines(90_000);
    let feed = Feed::start(&bootstrap, lines.clone());
    let a = Member::start("a", &bootstrap, GroupProtocol::Cooperative);
    let sampler_a = Sampler::start(a.http);
    let watch = CommitWatch::start(&bootstrap);
    wait_for(
        "the worker publishing alerts",
        Duration::from_secs(90),
        || sampler_a.alerts_now() > 20,
    );

    // 1. kill -9 the leader of the input, alert and state partitions.
    let leader = leadership.leader_of_input_alerts_and_state();
    let (alerts_at, watermarks_at) = position(&a, &sampler_a);
    let killed_at = Instant::now();
    cluster.kill(leader);
    wait_until_flowing(
        "alerts and every partition flowing after the leader's kill -9",
        &a,
        &sampler_a,
        alerts_at,
        &watermarks_at,
        Duration::from_secs(90),
    );
    eprintln!(
        "{test}: node {leader} killed; flowing again after {:?}",
        killed_at.elapsed()
    );
    cluster.restart(leader);
    let synced = leadership.wait_fully_replicated(Duration::from_secs(90));
    eprintln!(
        "{test}: node {leader} back and in sync {synced:?} after its restart ({:?} after the kill)",
        killed_at.elapsed()
    );

    // 2. Stop a broker (the leader now) for 60 s. Meanwhile the worker is
    // stopped with SIGTERM and a new one restores from the changelog.
    let stopped = leadership.leader_of_input_alerts_and_state();
    let stopped_at = Instant::now();
    let shutdown = cluster.stop(stopped, Duration::from_secs(50));
    // Flowing again means progress after the broker is gone, not during
    // its controlled shutdown.
    let (alerts_at, watermarks_at) = position(&a, &sampler_a);
    wait_until_flowing(
        "alerts and every partition flowing with a broker stopped",
        &a,
        &sampler_a,
        alerts_at,
        &watermarks_at,
        Duration::from_secs(55),
    );
    eprintln!(
        "{test}: node {stopped} stopped (controlled shutdown {shutdown:?}); flowing again after \
         {:?}",
        stopped_at.elapsed()
    );
    let a_errors = worker_errors(&a);
    let samples_a = sampler_a.stop();
    let a_ended = Instant::now();
    let (a_took, a_status) = a.terminate();
    assert!(
        a_took <= SHUTDOWN_BOUND && a_status.is_some_and(|s| s.success()),
        "SIGTERM with a broker stopped: {a_status:?} after {a_took:?} (bound {SHUTDOWN_BOUND:?})"
    );
    let b = Member::start("b", &bootstrap, GroupProtocol::Cooperative);
    let sampler_b = Sampler::start(b.http);
    let b_flowing = wait_for(
        "a new worker restored and publishing with a broker stopped",
        Duration::from_secs(55),
        || sampler_b.alerts_now() > 0,
    );
    // Every partition restored: a lost connection to the stopped broker
    // used to abort a restore, retried 5 s later (1-3 times per run).
    let b_ready = b_flowing
        + wait_for(
            "a new worker restored every partition with a broker stopped",
            Duration::from_secs(55),
            || {
                b.live_partitions()
                    .is_some_and(|p| p.len() == INPUT_PARTITIONS as usize)
            },
        );
    eprintln!(
        "{test}: worker a stopped by SIGTERM in {a_took:?} ({a_status:?}); b published \
         {b_flowing:?} after its start and had restored every partition after {b_ready:?}, \
         with node {stopped} still down"
    );
    // The fault is the broker's absence: it stays down for 60 s.
    std::thread::sleep(Duration::from_secs(60).saturating_sub(stopped_at.elapsed()));
    cluster.restart(stopped);
    let synced = leadership.wait_fully_replicated(Duration::from_secs(90));
    eprintln!("{test}: node {stopped} back and in sync {synced:?} after its restart");

    // 3. Pause a broker (the leader now) for 20 s.
    let paused = leadership.leader_of_input_alerts_and_state();
    let (alerts_at, watermarks_at) = position(&b, &sampler_b);
    let paused_at = Instant::now();
    cluster.pause(paused);
    // The fault is the pause itself: 20 s, longer than the controller's
    // 9 s broker session, so the other brokers take its partitions over.
    std::thread::sleep(Duration::from_secs(20));
    let flowing_while_paused = sampler_b.alerts_now() > alerts_at
        && b.progress()
            .is_some_and(|(_, w)| (0..INPUT_PARTITIONS).all(|p| w.get(&p) > watermarks_at.get(&p)));
    let leaders_while_paused: BTreeSet<i32> = leadership
        .partitions()
        .map(|p| p.values().map(|(l, _)| *l).collect())
        .unwrap_or_default();
    let continued_at = Instant::now();
    cluster.resume(paused);
    wait_until_flowing(
        "alerts and every partition flowing after SIGCONT",
        &b,
        &sampler_b,
        alerts_at,
        &watermarks_at,
        Duration::from_secs(90),
    );
    let flowing_pause = continued_at.elapsed();
    let synced = leadership.wait_fully_replicated(Duration::from_secs(90));
    eprintln!(
        "{test}: node {paused} paused 20 s (then led by {leaders_while_paused:?}; worker \
         flowing during the pause: {flowing_while_paused}); flowing {flowing_pause:?} after \
         SIGCONT; in sync {synced:?} after that"
    );

    // 4. SIGTERM while the leader is paused: outputs cannot be acknowledged,
    // so the drain runs into its deadline; the exit is still bounded.
    let b_errors = worker_errors(&b);
    let samples_b = sampler_b.stop();
    let b_ended = Instant::now();
    let paused_again = leadership.leader_of_input_alerts_and_state();
    cluster.pause(paused_again);
    std::thread::sleep(Duration::from_secs(2));
    let (b_took, b_status) = b.terminate();
    cluster.resume(paused_again);
    assert!(
        b_took <= SHUTDOWN_BOUND && b_status.is_some(),
        "SIGTERM with the leader paused: {b_status:?} after {b_took:?} (bound {SHUTDOWN_BOUND:?})"
    );
    eprintln!(
        "{test}: worker b stopped by SIGTERM with node {paused_again} paused in {b_took:?} \
         ({b_status:?})"
    );
    let c = Member::start("c", &bootstrap, GroupProtocol::Cooperative);
    leadership.wait_fully_replicated(Duration::from_secs(90));
    // A little traffic on the healed cluster, then the feed stops.
    wait_for("c publishing", Duration::from_secs(60), || {
        c.progress().is_some_and(|(consumed, _)| consumed > 0)
    });
    std::thread::sleep(Duration::from_secs(2));
    let (fed, failed) = feed.stop();
    let fed_at = Instant::now();
    assert_eq!(failed, 0, "the feed lost events");

    // Everything fed is consumed, acknowledged and committed.
    let input = kcat_read(&bootstrap, INPUT);
    assert_eq!(input.len(), fed, "the input topic holds each fed line once");
    let mut by_partition: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let mut sorted = input;
    sorted.sort_by_key(|m| (m.partition, m.offset));
    for m in sorted {
        let lines = by_partition.entry(m.partition).or_default();
        assert_eq!(m.offset, lines.len() as i64, "offsets without gaps");
        lines.push(m.payload.unwrap_or_default());
    }
    let drained = wait_for(
        "every input partition committed to its end",
        Duration::from_secs(90),
        || {
            (0..INPUT_PARTITIONS).all(|p| {
                committed_offset(&bootstrap, GROUP, INPUT, p)
                    == Some(by_partition.get(&p).map_or(0, |l| l.len() as i64))
            })
        },
    );
    let c_errors = worker_errors(&c);
    let (snapshots, skipped) = watch.stop();

    // Committed offsets were never ahead of acknowledged outputs.
    let alert_messages = kcat_read(&bootstrap, ALERTS);
    let checked = assert_commits_behind_outputs(
        &snapshots,
        started,
        &by_partition,
        &alert_messages,
        &kcat_read(&bootstrap, DLQ),
        &model,
        lateness_ms,
    );
    let during_faults = snapshots
        .iter()
        .filter(|s| s.at > killed_at && s.at < fed_at)
        .count();
    assert!(
        during_faults > 30,
        "too few commit snapshots during the faults: {during_faults} (skipped: {skipped:?})"
    );

    // What subscribers see: exactly the replay's alerts, a repeat identical.
    let (expected, _) = replayed_alert_ids(&model, &by_partition, lateness_ms);
    let (published, copies) = published_alerts(&bootstrap);
    let ids: BTreeSet<String> = published.keys().cloned().collect();
    let missing: Vec<&String> = expected.difference(&ids).collect();
    let extra: Vec<&String> = ids.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "alerts differ from the offline replay: {} missing {:?}, {} extra {:?}",
        missing.len(),
        &missing[..missing.len().min(5)],
        extra.len(),
        &extra[..extra.len().min(5)]
    );
    // One dead letter per bad line (repeats allowed), naming its position.
    let dead_letters = kcat_read(&bootstrap, DLQ);
    let mut dead_by_source: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for d in &dead_letters {
        assert_eq!(
            d.headers.get("reason").map(String::as_str),
            Some("malformed_json")
        );
        let source = (
            d.headers["source_partition"].parse().expect("partition"),
            d.headers["source_offset"].parse().expect("offset"),
        );
        assert!(
            by_partition[&source.0][source.1 as usize].as_bytes()
                == d.payload.as_deref().unwrap_or_default().as_bytes(),
            "a dead letter's payload is its source line"
        );
        *dead_by_source.entry(source).or_default() += 1;
    }
    let bad: BTreeSet<(i32, i64)> = by_partition
        .iter()
        .flat_map(|(p, lines)| {
            lines
                .iter()
                .enumerate()
                .filter(|(_, l)| is_bad(l))
                .map(move |(o, _)| (*p, o as i64))
        })
        .collect();
    assert!(bad.len() > 10, "the feed had bad lines: {}", bad.len());
    let dead: BTreeSet<(i32, i64)> = dead_by_source.keys().copied().collect();
    assert_eq!(dead, bad, "a dead letter per bad line, for nothing else");
    for (worker, (_, dropped)) in [("a", a_errors), ("b", b_errors), ("c", c_errors)] {
        assert_eq!(dropped, 0, "worker {worker} gave records up");
    }

    // SIGTERM with the cluster healthy: bounded, drained and committed.
    let (c_took, c_status) = c.terminate();
    assert!(
        c_took <= SHUTDOWN_BOUND && c_status.is_some_and(|s| s.success()),
        "SIGTERM: {c_status:?} after {c_took:?} (bound {SHUTDOWN_BOUND:?})"
    );

    let stalls = [
        ("kill -9 of the leader", &samples_a, killed_at, stopped_at),
        ("60 s stop of the leader", &samples_a, stopped_at, a_ended),
        (
            "SIGSTOP of the leader (20 s)",
            &samples_b,
            paused_at,
            b_ended,
        ),
    ];
    for (what, samples, from, to) in stalls {
        let stall = publication_stall(samples, from, to);
        eprintln!(
            "{test}: {what}: longest alert-publication stall {:?}, publishing again {:?} after \
             the fault",
            stall.longest, stall.resumed_after
        );
    }
    eprintln!(
        "{test}: {fed} events fed ({} bad), all committed {drained:?} after the feed stopped; \
         {} alerts, {copies} copies published ({} duplicates, each identical); {} dead letters \
         for {} bad lines; {checked} distinct commit snapshots checked ({during_faults} during \
         the faults; skipped: {skipped:?}); producer errors \
         (retried) a/b/c: {}/{}/{}; SIGTERM of c with all brokers up: {c_took:?}",
        bad.len(),
        ids.len(),
        copies - ids.len(),
        dead_letters.len(),
        bad.len(),
        a_errors.0,
        b_errors.0,
        c_errors.0,
    );

    // A restarted worker restores from the changelog what the replay scores.
    let restarted = Member::start("restarted", &bootstrap, GroupProtocol::Cooperative);
    let good: Vec<String> = lines
        .iter()
        .take(fed)
        .filter(|(_, l)| !is_bad(l))
        .map(|(_, l)| l.clone())
        .collect();
    let as_of = T0_MS + good.len() as i64 * 600_000 + DAY_MS;
    let scores = offline_scores(&model, &good, as_of);
    assert_matches_offline(restarted.http, &scores, as_of, Duration::from_secs(120));
    let (_, metrics) = http_get(restarted.http, "/metrics", None);
    assert_eq!(
        counter(&metrics, "churn_scorer_state_restored_customers_total"),
        Some(scores.len() as u64),
        "every customer restored from the changelog"
    );
    assert_eq!(
        counter(&metrics, "churn_scorer_events_consumed_total"),
        Some(0),
        "nothing re-read: offsets and state agree"
    );
    eprintln!(
        "{test}: restart restored {} customers, lookups equal the replay; {:?} in all",
        scores.len(),
        started.elapsed()
    );
    let (took, status) = restarted.terminate();
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?} after {took:?}"
    );
}
