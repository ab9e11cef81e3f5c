//! The worker against a real Apache Kafka cluster (tests/support/kafka.rs;
//! the version is pinned in tests/kafka/pom.xml), where librdkafka's mock
//! cluster cannot show the behaviour: topics are never auto-created, groups
//! rebalance as Kafka's coordinator does, the state changelog is compacted.
//!
//! What subscribers see is read with kcat, a client we did not write, and
//! compared with an offline replay (`churn_core::offline`).
//!
//! Skipped, with the reason printed, where Java or the broker's jars are
//! missing, unless `CHURN_SCORER_REQUIRE_KAFKA=1` (as in `.ci/run`). The
//! tests run one at a time: each starts its own JVM broker(s) on a small
//! machine, and the membership test measures pauses.
//! Run: `cargo test --test real_broker -- --nocapture` (figures on stderr).
//!
//! One test binary for every real-broker scenario (this file and the
//! modules below share its helpers), so that scenarios which mostly wait on
//! broker timeouts overlap instead of adding up in CI.

#[path = "../support/mod.rs"]
mod support;

mod bench;
mod broker_faults;
mod exactly_once;
mod security;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use churn_core::alert::{Alert, alert_id};
use churn_core::model::RiskModel;
use churn_core::offline::replay_alerts;
use support::kafka::KafkaCluster;
use support::*;

/// One real-broker test at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const INPUT: &str = "customer-events";
const ALERTS: &str = "churn-alerts";
const DLQ: &str = "churn-events-dlq";
const STATE: &str = "churn-scorer-state";

/// A message as kcat prints it with `-J`.
#[derive(Debug, Clone)]
struct KcatMessage {
    partition: i32,
    offset: i64,
    key: Option<String>,
    payload: Option<String>,
    headers: BTreeMap<String, String>,
}

/// Every message of `topic`, read with kcat from the beginning to the end
/// of each partition.
fn kcat_read(bootstrap: &str, topic: &str) -> Vec<KcatMessage> {
    let out = Command::new("timeout")
        .args(["60", "kcat", "-b", bootstrap, "-C", "-t", topic])
        .args(["-o", "beginning", "-e", "-J", "-q"])
        .stdin(Stdio::null())
        .output()
        .expect("kcat runs (apt-get install kcat)");
    assert!(
        out.status.success(),
        "kcat -C -t {topic} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("kcat JSON {l:?}: {e}"));
            let headers = v["headers"]
                .as_array()
                .map(|h| {
                    h.chunks(2)
                        .filter_map(|kv| {
                            Some((
                                kv[0].as_str()?.to_string(),
                                kv.get(1)?.as_str()?.to_string(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            KcatMessage {
                partition: v["partition"].as_i64().expect("partition") as i32,
                offset: v["offset"].as_i64().expect("offset"),
                key: v["key"].as_str().map(String::from),
                payload: v["payload"].as_str().map(String::from),
                headers,
            }
        })
        .collect()
}

/// The input topic's events as they landed, per partition in offset order.
fn lines_by_partition(bootstrap: &str) -> BTreeMap<i32, Vec<String>> {
    let mut messages = kcat_read(bootstrap, INPUT);
    messages.sort_by_key(|m| (m.partition, m.offset));
    let mut out: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for m in messages {
        out.entry(m.partition)
            .or_default()
            .push(m.payload.unwrap_or_default());
    }
    out
}

/// Alert ids an offline replay decides, each partition one ordered stream
/// as the worker applies it; with how many alerts that is.
fn replayed_alert_ids(
    model: &RiskModel,
    by_partition: &BTreeMap<i32, Vec<String>>,
    lateness_ms: i64,
) -> (BTreeSet<String>, usize) {
    let mut ids = BTreeSet::new();
    let mut count = 0;
    for lines in by_partition.values() {
        for a in replay_alerts(model, lines.iter().map(|l| l.as_bytes()), lateness_ms) {
            count += 1;
            ids.insert(alert_id(
                &a.customer_id,
                a.decision.kind.as_str(),
                a.decision.event_time_ms,
                model.version(),
            ));
        }
    }
    (ids, count)
}

/// Alerts on the alerts topic, read with kcat: checks each is keyed by its
/// customer and that repeats of an id are identical; returns them by id.
fn published_alerts(bootstrap: &str) -> (BTreeMap<String, Alert>, usize) {
    let messages = kcat_read(bootstrap, ALERTS);
    let mut by_id: BTreeMap<String, Alert> = BTreeMap::new();
    for m in &messages {
        let alert: Alert = serde_json::from_str(m.payload.as_deref().expect("alert payload"))
            .expect("alert is JSON");
        assert_eq!(m.key.as_deref(), Some(alert.customer_id.as_str()), "key");
        if let Some(previous) = by_id.get(&alert.alert_id) {
            assert_eq!(previous, &alert, "an alert id repeated with other content");
        }
        by_id.insert(alert.alert_id.clone(), alert);
    }
    (by_id, messages.len())
}

/// Polls `what` until it holds or panics at `timeout`.
fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
    started.elapsed()
}

/// `churn-scorer run` with a config naming only the broker; returns its
/// exit status and stderr. For runs that must stop by themselves.
fn run_until_exit(bootstrap: &str, limit_secs: u32) -> (std::process::ExitStatus, String) {
    let mut config = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp config");
    write!(
        config,
        "[kafka]\nbootstrap_servers = \"{bootstrap}\"\n[http]\naddr = \"127.0.0.1:0\"\n"
    )
    .expect("write config");
    let out = Command::new("timeout")
        .arg(limit_secs.to_string())
        .arg(env!("CARGO_BIN_EXE_churn-scorer"))
        .args(["run", "--config"])
        .arg(config.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("churn-scorer runs");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Main flow on a cluster that never creates topics by itself: the startup
/// check names the missing topics and a partition-count mismatch; with the
/// topics created through the admin API, events in give exactly the alerts
/// an offline replay decides, dead letters for the bad lines, and one state
/// record per customer on the same partition number as its events.
#[test]
fn main_flow_with_auto_creation_off() {
    let _serial = serial();
    let Some(cluster) = KafkaCluster::builder().start("main_flow_with_auto_creation_off") else {
        return;
    };
    let bootstrap = cluster.bootstrap();
    eprintln!("real broker: 1 node up in {:?}", cluster.startup);

    // The startup check, topic by topic.
    let (status, stderr) = run_until_exit(&bootstrap, 60);
    assert!(!status.success(), "started without topics: {stderr}");
    // Every missing topic at once, with its fix.
    for topic in [INPUT, STATE, ALERTS, DLQ] {
        assert!(
            stderr.contains(&format!("topic `{topic}` (topics.")),
            "{topic}: {stderr}"
        );
    }
    assert!(stderr.contains("(nothing was created)"), "{stderr}");
    cluster.create_topics(&[(INPUT, 4, &[])]);
    let (status, stderr) = run_until_exit(&bootstrap, 60);
    assert!(!status.success(), "started without a state topic: {stderr}");
    assert!(
        stderr.contains("topic `churn-scorer-state` (topics.state) does not exist")
            && stderr
                .contains("--partitions 4 --replication-factor 3 --config cleanup.policy=compact"),
        "{stderr}"
    );
    cluster.create_topics(&[(STATE, 2, &[("cleanup.policy", "compact")])]);
    let (status, stderr) = run_until_exit(&bootstrap, 60);
    assert!(
        !status.success(),
        "started with mismatched partitions: {stderr}"
    );
    assert!(
        stderr.contains(
            "topic `churn-scorer-state` (topics.state) has 2 partitions but the input topic has 4"
        ),
        "{stderr}"
    );
    // The right state topic (a deleted topic's name stays reserved for a
    // moment, so the test uses another name rather than recreating it).
    let state = "churn-scorer-state-4";
    cluster.create_topics(&[
        (state, 4, &[("cleanup.policy", "compact")]),
        (ALERTS, 2, &[]),
        (DLQ, 1, &[]),
    ]);

    let model = RiskModel::default_model();
    let good = history(120, 45, 41);
    let bad: Vec<(String, Vec<u8>, &str)> = vec![
        ("bad-1".into(), b"{not json".to_vec(), "malformed_json"),
        ("bad-2".into(), b"[1,2,3]".to_vec(), "not_an_object"),
        (
            "bad-3".into(),
            br#"{"customer_id":"x","event_type":"login","timestamp":"yesterday"}"#.to_vec(),
            "bad_timestamp",
        ),
        (
            "bad-4".into(),
            br#"{"event_type":"login","timestamp":"2025-01-01T00:00:00Z"}"#.to_vec(),
            "missing_field",
        ),
    ];
    let mut messages: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, line) in good.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        messages.push((
            v["customer_id"].as_str().expect("id").to_string(),
            line.clone().into_bytes(),
        ));
        if i % 500 == 250
            && let Some((k, v, _)) = bad.get(i / 500)
        {
            messages.push((k.clone(), v.clone()));
        }
    }
    assert_eq!(
        messages.len(),
        good.len() + bad.len(),
        "every bad line sent"
    );
    produce(&bootstrap, INPUT, &messages);

    let mut config = worker_config(&bootstrap);
    config.topics.state = state.into();
    // No wall-clock help: alerts come from event time only, as in the replay.
    config.engine.idle_timeout_secs = 86_400;
    let lateness_ms = config.engine.allowed_lateness_ms();
    let worker = RunningWorker::start(config, model.clone());
    worker.wait_until("every message consumed", Duration::from_secs(90), |w| {
        w.metrics().events_consumed.get() == messages.len() as u64
    });

    // Alerts: exactly the replay's, each once.
    let by_partition = lines_by_partition(&bootstrap);
    let (expected, expected_count) = replayed_alert_ids(&model, &by_partition, lateness_ms);
    assert!(
        expected.len() > 20,
        "the data must alert: {}",
        expected.len()
    );
    let mut published = BTreeMap::new();
    let mut published_count = 0;
    wait_for("the replay's alerts", Duration::from_secs(30), || {
        (published, published_count) = published_alerts(&bootstrap);
        published.len() >= expected.len()
    });
    let ids: BTreeSet<String> = published.keys().cloned().collect();
    assert_eq!(ids, expected, "alert ids differ from the offline replay");
    assert_eq!(published_count, expected_count, "alerts published twice");

    // Dead letters: one per bad line, original bytes and reason.
    let mut dead = Vec::new();
    wait_for("the dead letters", Duration::from_secs(30), || {
        dead = kcat_read(&bootstrap, DLQ);
        dead.len() >= bad.len()
    });
    assert_eq!(dead.len(), bad.len());
    for (key, value, reason) in &bad {
        let d = dead
            .iter()
            .find(|d| d.key.as_deref() == Some(key.as_str()))
            .unwrap_or_else(|| panic!("dead letter for {key}"));
        assert_eq!(
            d.payload.as_deref().map(str::as_bytes),
            Some(value.as_slice())
        );
        assert_eq!(d.headers.get("reason").map(String::as_str), Some(*reason));
        assert_eq!(
            d.headers.get("source_topic").map(String::as_str),
            Some(INPUT)
        );
    }

    // State: a record for every customer, on its input partition's number.
    let mut home: BTreeMap<String, i32> = BTreeMap::new();
    for (p, lines) in &by_partition {
        for l in lines {
            if let Ok(e) = churn_core::event::parse_event(l.as_bytes()) {
                home.insert(e.customer_id.to_string(), *p);
            }
        }
    }
    let mut placed: BTreeMap<String, i32> = BTreeMap::new();
    wait_for(
        "a state record per customer",
        Duration::from_secs(30),
        || {
            placed = kcat_read(&bootstrap, state)
                .into_iter()
                .filter_map(|m| {
                    let key = m.key?;
                    (!key.starts_with('\u{0}')).then_some((key, m.partition))
                })
                .collect();
            placed.len() >= home.len()
        },
    );
    assert_eq!(placed, home, "state records by customer and partition");

    // Lookups agree with the offline scores.
    let as_of = T0_MS + 46 * DAY_MS;
    assert_matches_offline(
        worker.http,
        &offline_scores(&model, &good, as_of),
        as_of,
        Duration::from_secs(30),
    );
    worker.stop().expect("clean stop");
}

/// How the members of a group rebalance.
#[derive(Debug, Clone, Copy)]
enum GroupProtocol {
    /// Kafka's classic protocol with cooperative-sticky assignment (the
    /// worker's default), librdkafka's default 45 s session timeout.
    Cooperative,
    /// KIP-848's consumer protocol: the broker assigns, and the session
    /// timeout is the broker's `group.consumer.session.timeout.ms` (45 s).
    Consumer,
}

/// A worker process (`churn-scorer run`) with librdkafka's default group
/// timeouts, so that a test can stop it with SIGTERM or kill it with
/// `kill -9`.
struct Member {
    child: std::process::Child,
    http: std::net::SocketAddr,
    _config: tempfile::NamedTempFile,
}

impl Member {
    fn start(name: &'static str, bootstrap: &str, protocol: GroupProtocol) -> Member {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let group = match protocol {
            GroupProtocol::Cooperative => "rebalance_protocol = \"cooperative\"\n",
            GroupProtocol::Consumer => "rebalance_protocol = \"consumer\"\n",
        };
        // For chasing a failure: librdkafka's group debug log of each
        // member in `$REAL_BROKER_MEMBER_LOGS/member-<name>.log`.
        let debug_log = std::env::var("REAL_BROKER_MEMBER_LOGS").ok();
        let debug = if debug_log.is_some() {
            "\"debug\" = \"cgrp,consumer\"\n"
        } else {
            ""
        };
        let mut config = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("temp config");
        write!(
            config,
            "[kafka]\nbootstrap_servers = \"{bootstrap}\"\n{group}\
             [kafka.consumer]\n\"statistics.interval.ms\" = \"500\"\n{debug}\
             [http]\naddr = \"127.0.0.1:{port}\"\n\
             [model]\npath = \"config/model.toml\"\n\
             [engine]\nidle_timeout_secs = 86400\n"
        )
        .expect("write config");
        let child = Command::new(env!("CARGO_BIN_EXE_churn-scorer"))
            .args(["run", "--config"])
            .arg(config.path())
            .env(
                "RUST_LOG",
                if debug_log.is_some() { "debug" } else { "warn" },
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(match &debug_log {
                Some(dir) => Stdio::from(
                    std::fs::File::create(format!("{dir}/member-{name}.log")).expect("log"),
                ),
                None => Stdio::inherit(),
            })
            .spawn()
            .expect("worker starts");
        let http = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        wait_for(&format!("{name}'s HTTP"), Duration::from_secs(30), || {
            std::net::TcpStream::connect(http).is_ok()
        });
        Member {
            child,
            http,
            _config: config,
        }
    }

    /// Events consumed and each live partition's event-time watermark.
    fn progress(&self) -> Option<(u64, BTreeMap<i32, i64>)> {
        let (status, body) = http_get(self.http, "/metrics", None);
        if status != 200 {
            return None;
        }
        let mut consumed = 0.0;
        let mut watermarks = BTreeMap::new();
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix("churn_scorer_events_consumed_total") {
                consumed += rest.trim().rsplit(' ').next()?.parse::<f64>().ok()?;
            } else if let Some(rest) =
                line.strip_prefix("churn_scorer_partition_watermark_seconds{partition=\"")
            {
                let (p, value) = rest.split_once("\"}")?;
                watermarks.insert(p.parse().ok()?, value.trim().parse().ok()?);
            }
        }
        Some((consumed as u64, watermarks))
    }

    /// The partitions it holds, all live (`/readyz` 200), or `None`.
    fn live_partitions(&self) -> Option<BTreeSet<i32>> {
        let (status, body) = http_get(self.http, "/readyz", None);
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["partitions"]
            .as_array()?
            .iter()
            .map(|p| {
                p["live"]
                    .as_bool()
                    .filter(|live| *live)
                    .and(p["partition"].as_i64().map(|x| x as i32))
            })
            .collect()
    }

    /// SIGTERM; waits for the exit (at most 45 s: drain 30 s + 10 s + slack).
    fn terminate(mut self) -> (Duration, Option<std::process::ExitStatus>) {
        let started = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        while started.elapsed() < Duration::from_secs(45) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (started.elapsed(), Some(status));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (started.elapsed(), None)
    }

    fn kill_abruptly(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Events with strictly increasing event time (10 minutes apart), so each
/// partition's watermark shows when it is consumed; complaints make alerts.
fn timeline(n: usize) -> Vec<String> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let kind = match x % 10 {
                0 | 1 => "complaint",
                2 => "purchase",
                3 => "support_ticket",
                _ => "login",
            };
            let amount = (kind == "purchase").then_some(25.0);
            event(
                &format!("m{:04}", (x >> 8) % 400),
                kind,
                T0_MS + i as i64 * 600_000,
                amount,
            )
        })
        .collect()
}

/// Feeds `lines` to the input topic, `per_tick` every 100 ms, on a thread.
struct Feed {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    fed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

impl Feed {
    fn start(bootstrap: &str, lines: Vec<String>, per_tick: usize) -> Feed {
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let fed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stop_flag, fed_count) = (stop.clone(), fed.clone());
        let bootstrap = bootstrap.to_string();
        let thread = std::thread::spawn(move || {
            let producer: BaseProducer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("linger.ms", "5")
                .create()
                .expect("producer");
            for chunk in lines.chunks(per_tick) {
                if stop_flag.load(Ordering::Acquire) {
                    break;
                }
                for line in chunk {
                    let v: serde_json::Value = serde_json::from_str(line).expect("json");
                    let key = v["customer_id"].as_str().expect("id").to_string();
                    producer
                        .send(BaseRecord::to(INPUT).key(&key).payload(line))
                        .map_err(|(e, _)| e)
                        .expect("queued");
                }
                fed_count.fetch_add(chunk.len(), Ordering::AcqRel);
                producer.poll(Duration::from_millis(100));
            }
            producer.flush(Duration::from_secs(30)).expect("flushed");
        });
        Feed { stop, fed, thread }
    }

    fn fed(&self) -> usize {
        self.fed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stops; returns how many events were fed (all acknowledged).
    fn stop(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.thread.join().expect("feeder");
        self.fed.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Group-wide progress sampled every 100 ms: (when, consumed by everyone, fed).
#[derive(Default)]
struct Samples {
    samples: Vec<(Instant, u64, u64)>,
    /// Last consumed count of members that are gone.
    gone: u64,
}

impl Samples {
    fn sample(&mut self, members: &[&Member], fed: usize) {
        let consumed: u64 = members
            .iter()
            .filter_map(|m| m.progress().map(|p| p.0))
            .sum();
        self.samples
            .push((Instant::now(), consumed + self.gone, fed as u64));
    }

    /// The longest stretch in which the group consumed nothing although
    /// events were waiting.
    fn longest_pause(&self) -> Duration {
        let mut longest = Duration::ZERO;
        let mut since: Option<(Instant, u64)> = None;
        for &(t, n, fed) in &self.samples {
            match since {
                Some((t0, n0)) if n == n0 && fed > n => longest = longest.max(t - t0),
                _ => since = Some((t, n)),
            }
        }
        longest
    }
}

/// Samples until `done` holds, at most `limit`; returns how long it took.
fn sample_until(
    samples: &mut Samples,
    members: &[&Member],
    feed: &Feed,
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        samples.sample(members, feed.fed());
        if done() {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `members` hold all `partitions` between them, each at least one,
/// every one live.
fn spread_over(members: &[&Member], partitions: i32) -> bool {
    let mut all = BTreeSet::new();
    for m in members {
        match m.live_partitions() {
            Some(p) if !p.is_empty() => all.extend(p),
            _ => return false,
        }
    }
    all.len() == partitions as usize
}

/// Members join (2 -> 3), one leaves with SIGTERM, one is killed with
/// `kill -9`, while a steady stream flows, with default group timeouts.
/// The SIGTERM'd member must hand over within seconds: with the classic
/// protocol the worker used to close its consumer while librdkafka still
/// completed the incremental unassign (a commit in flight), the LeaveGroup
/// never went out, and its partitions stood still for the 45 s session
/// timeout (measured 47.9-48.1 s), as after `kill -9` (fixed in
/// crates/worker/src/run.rs `shut_down`).
/// Reports the longest group-wide pause and when the killed member's
/// partitions were consumed again (goal: within the 45 s session timeout
/// + 5 s); nothing is lost: the alerts and the final state equal a replay.
fn membership(protocol: GroupProtocol) {
    const PARTITIONS: i32 = 6;
    let test = format!("membership_{protocol:?}");
    let Some(cluster) = KafkaCluster::builder().start(&test) else {
        return;
    };
    let bootstrap = cluster.bootstrap();
    cluster.create_topics(&[
        (INPUT, PARTITIONS, &[]),
        (STATE, PARTITIONS, &[("cleanup.policy", "compact")]),
        (ALERTS, 2, &[]),
        (DLQ, 1, &[]),
    ]);
    let model = RiskModel::default_model();
    let lines = timeline(60_000);
    // About 200 events a second.
    let feed = Feed::start(&bootstrap, lines.clone(), 20);
    let mut samples = Samples::default();

    let a = Member::start("a", &bootstrap, protocol);
    let b = Member::start("b", &bootstrap, protocol);
    let first = sample_until(
        &mut samples,
        &[&a, &b],
        &feed,
        "a and b share the partitions",
        Duration::from_secs(90),
        || spread_over(&[&a, &b], PARTITIONS),
    );
    let c = Member::start("c", &bootstrap, protocol);
    let joined = sample_until(
        &mut samples,
        &[&a, &b, &c],
        &feed,
        "c joins",
        Duration::from_secs(90),
        || spread_over(&[&a, &b, &c], PARTITIONS),
    );
    // b reads nothing after SIGTERM: its count now is its last.
    samples.gone += b.progress().map_or(0, |p| p.0);
    let (stopped_in, status) = b.terminate();
    assert!(
        status.is_some_and(|s| s.success()),
        "b stops cleanly: {status:?} after {stopped_in:?}"
    );
    let left = sample_until(
        &mut samples,
        &[&a, &c],
        &feed,
        "b's partitions taken over",
        Duration::from_secs(90),
        || spread_over(&[&a, &c], PARTITIONS),
    );

    // Kill c: its partitions wait for its session to expire.
    let c_partitions = c.live_partitions().expect("c is live");
    let (c_consumed, c_watermarks) = c.progress().expect("c's metrics");
    samples.gone += c_consumed;
    let killed_at = Instant::now();
    c.kill_abruptly();
    let recovered = sample_until(
        &mut samples,
        &[&a],
        &feed,
        "the killed member's partitions consumed again",
        Duration::from_secs(120),
        || {
            let Some((_, w)) = a.progress() else {
                return false;
            };
            c_partitions.iter().all(|p| {
                let before = c_watermarks.get(p).copied().unwrap_or(i64::MIN);
                w.get(p).is_some_and(|now| *now > before)
            })
        },
    );
    let since_kill = killed_at.elapsed();
    let sent = feed.stop();
    let pause = samples.longest_pause();
    eprintln!(
        "real broker, {protocol:?}: 2 members settled in {first:?}; 3rd joined in {joined:?}; \
         one left (SIGTERM, exit in {stopped_in:?}) and its partitions were taken over in \
         {left:?}; after kill -9 its partitions {c_partitions:?} were consumed again in \
         {recovered:?} ({since_kill:?} since the kill); longest group-wide pause {pause:?}; \
         {sent} events fed"
    );
    // Classic: the coordinator notices after the 45 s session timeout and
    // the survivors rejoin at once. Consumer protocol: the broker reassigns
    // after its 45 s session timeout, and a survivor learns of it with its
    // next heartbeat (`group.consumer.heartbeat.interval.ms`, 5 s).
    let bound = match protocol {
        GroupProtocol::Cooperative => Duration::from_secs(45 + 5),
        GroupProtocol::Consumer => Duration::from_secs(45 + 5 + 5),
    };
    assert!(
        since_kill <= bound,
        "the killed member's partitions took {since_kill:?} (bound {bound:?})"
    );
    // A member stopped with SIGTERM leaves the group: its partitions move
    // within a heartbeat or two, not after a session timeout.
    assert!(
        left <= Duration::from_secs(15),
        "a gracefully stopped member's partitions took {left:?} to move"
    );

    // Nothing lost: the final state is the replay's, and so are the alerts.
    let as_of = T0_MS + sent as i64 * 600_000 + DAY_MS;
    let expected = offline_scores(&model, &lines[..sent], as_of);
    assert_matches_offline(a.http, &expected, as_of, Duration::from_secs(120));
    let by_partition = lines_by_partition(&bootstrap);
    let lateness_ms = churn_worker::config::EngineConfig::default().allowed_lateness_ms();
    let (expected_ids, _) = replayed_alert_ids(&model, &by_partition, lateness_ms);
    let mut published = BTreeMap::new();
    let mut copies = 0;
    wait_for("every replayed alert", Duration::from_secs(30), || {
        (published, copies) = published_alerts(&bootstrap);
        published.len() >= expected_ids.len()
    });
    let ids: BTreeSet<String> = published.keys().cloned().collect();
    assert_eq!(ids, expected_ids, "alerts differ from the replay");
    eprintln!(
        "real broker, {protocol:?}: {} alerts, {} copies published (re-sent after kill -9: {})",
        ids.len(),
        copies,
        copies - ids.len()
    );
}

#[test]
fn membership_cooperative_with_default_timeouts() {
    let _serial = serial();
    membership(GroupProtocol::Cooperative);
}

/// Compaction for real: the state topic rolls a segment a second and is
/// cleaned as soon as it is dirty; a customer is erased mid-way. Once the
/// cleaner has removed superseded records and the erased customer's
/// tombstone is gone too, a restarted worker restores exactly what an
/// offline replay computes, and the erased customer stays erased.
#[test]
fn compaction_restore_and_erasure_after_the_cleaner_ran() {
    let _serial = serial();
    let Some(cluster) = KafkaCluster::builder()
        .property("log.cleaner.backoff.ms", "500")
        .start("compaction_restore_and_erasure_after_the_cleaner_ran")
    else {
        return;
    };
    let bootstrap = cluster.bootstrap();
    cluster.create_topics(&[
        (INPUT, 2, &[]),
        (
            STATE,
            2,
            &[
                ("cleanup.policy", "compact"),
                ("segment.ms", "1000"),
                ("min.cleanable.dirty.ratio", "0.01"),
                ("delete.retention.ms", "1000"),
            ],
        ),
        (ALERTS, 1, &[]),
        (DLQ, 1, &[]),
    ]);
    const ADMIN: &str = "compaction-admin";
    let model = RiskModel::default_model();
    let config = || {
        let mut c = worker_config(&bootstrap);
        c.state.flush_interval_ms = 300;
        c.engine.idle_timeout_secs = 86_400;
        c.http.admin_token = Some(ADMIN.into());
        c
    };
    let erased = "k007";
    let customers: Vec<String> = (0..40).map(|c| format!("k{c:03}")).collect();
    let kinds = [
        "login",
        "purchase",
        "complaint",
        "session",
        "support_ticket",
    ];
    let round = |r: usize| -> Vec<String> {
        customers
            .iter()
            .enumerate()
            .filter(|(_, id)| r < 4 || id.as_str() != erased)
            .map(|(i, id)| {
                let kind = kinds[(i + r) % kinds.len()];
                let t = T0_MS + r as i64 * DAY_MS + i as i64 * 1000;
                event(id, kind, t, (kind == "purchase").then_some(10.0))
            })
            .collect()
    };

    let worker = RunningWorker::start(config(), model.clone());
    let started = Instant::now();
    let mut sent: Vec<String> = Vec::new();
    let mut compacted_after = None;
    let mut tombstone_gone_after = None;
    let mut tombstone_seen = false;
    let mut r = 0;
    while tombstone_gone_after.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "the cleaner did not compact the state topic and drop the tombstone in time \
             (compacted: {compacted_after:?})\n{}",
            cluster.logs(40)
        );
        let lines = round(r);
        produce_events(&bootstrap, INPUT, &lines);
        sent.extend(lines);
        worker.wait_until("the round consumed", Duration::from_secs(30), |w| {
            w.metrics().events_consumed.get() == sent.len() as u64
        });
        if r == 3 {
            // Erase once its state is on the changelog.
            customer_with_events(worker.http, erased, None, 4, Duration::from_secs(10));
            let (status, body) = http_request(
                worker.http,
                "DELETE",
                &format!("/v1/customers/{erased}"),
                Some(ADMIN),
            );
            assert_eq!(status, 200, "{body}");
        }
        // A segment rolls when a record comes after `segment.ms`.
        std::thread::sleep(Duration::from_millis(1100));
        let records = kcat_read(&bootstrap, STATE);
        let offsets: i64 = (0..2).map(|p| high_watermark(&bootstrap, STATE, p)).sum();
        let low_offsets = records.len() as i64;
        if compacted_after.is_none() && low_offsets < offsets {
            compacted_after = Some(started.elapsed());
            eprintln!(
                "real broker: state topic compacted after {:?}: {low_offsets} records for \
                 {offsets} offsets",
                started.elapsed()
            );
        }
        let erased_records: Vec<&KcatMessage> = records
            .iter()
            .filter(|m| m.key.as_deref() == Some(erased))
            .collect();
        tombstone_seen |= erased_records.iter().any(|m| m.payload.is_none());
        if tombstone_seen && compacted_after.is_some() && erased_records.is_empty() {
            tombstone_gone_after = Some(started.elapsed());
        }
        r += 1;
    }
    eprintln!(
        "real broker: {r} rounds; compacted after {compacted_after:?}; the erased customer's \
         records and tombstone all gone after {tombstone_gone_after:?}"
    );
    worker.stop().expect("clean stop");

    // A new worker restores from the compacted changelog.
    let restarted = RunningWorker::start(config(), model.clone());
    restarted.wait_until("restored and ready", Duration::from_secs(60), |w| {
        w.handles.directory.is_ready() && w.metrics().partitions_assigned.get() == 2
    });
    let kept: Vec<String> = sent
        .iter()
        .filter(|l| !l.contains(&format!("\"{erased}\"")))
        .cloned()
        .collect();
    let as_of = T0_MS + (r as i64 + 1) * DAY_MS;
    let expected = offline_scores(&model, &kept, as_of);
    assert_eq!(expected.len(), customers.len() - 1);
    assert_matches_offline(restarted.http, &expected, as_of, Duration::from_secs(30));
    assert_eq!(
        restarted.metrics().state_restored_customers.get(),
        expected.len() as u64,
        "restored customers"
    );
    let (status, body) = http_get(restarted.http, &format!("/v1/customers/{erased}"), None);
    assert_eq!(status, 404, "the erased customer came back: {body}");
    restarted.stop().expect("clean stop");
}

/// The same with KIP-848's consumer group protocol (`group.protocol =
/// consumer`, GA in Apache Kafka 4.0, supported by librdkafka 2.12).
#[test]
fn membership_consumer_protocol_with_default_timeouts() {
    let _serial = serial();
    membership(GroupProtocol::Consumer);
}

/// Production faults of issue 31 on a broker with Apache Kafka's default
/// `auto.create.topics.enable=true`: the start-up check creates nothing and
/// names the missing state and alerts topics, refuses a state topic that is
/// not compacted (read by DescribeConfigs), and a deleted and recreated
/// input topic stops the worker instead of its events being skipped.
#[test]
fn topic_faults_on_a_broker_that_auto_creates() {
    let _serial = serial();
    let Some(cluster) = KafkaCluster::builder()
        .property("auto.create.topics.enable", "true")
        .start("topic_faults_on_a_broker_that_auto_creates")
    else {
        return;
    };
    let bootstrap = cluster.bootstrap();
    cluster.create_topics(&[(INPUT, 4, &[]), (DLQ, 1, &[])]);
    let (status, stderr) = run_until_exit(&bootstrap, 60);
    assert!(
        !status.success(),
        "started without state and alerts: {stderr}"
    );
    for topic in [STATE, ALERTS] {
        assert!(
            stderr.contains(&format!("topic `{topic}` (topics."))
                && stderr.contains("does not exist"),
            "{topic}: {stderr}"
        );
        assert!(!cluster.topic_exists(topic), "the check created {topic}");
    }

    cluster.create_topics(&[
        (STATE, 4, &[("cleanup.policy", "delete")]),
        (ALERTS, 1, &[]),
    ]);
    let (status, stderr) = run_until_exit(&bootstrap, 60);
    assert!(
        !status.success(),
        "started with a non-compacted state topic: {stderr}"
    );
    assert!(
        stderr.contains(
            "`churn-scorer-state` (topics.state) has cleanup.policy=delete but must be compacted"
        ),
        "{stderr}"
    );
    cluster.delete_topics(&[STATE]);
    // A deleted topic's name may stay reserved for a moment.
    let state = "churn-scorer-state-compacted";
    cluster.create_topics(&[(state, 4, &[("cleanup.policy", "compact")])]);

    // A first incarnation of the input, read whole and flushed.
    let config = || {
        let mut c = worker_config(&bootstrap);
        c.topics.state = state.into();
        c.state.flush_interval_ms = 100;
        c
    };
    let old = history(80, 20, 77);
    produce_events(&bootstrap, INPUT, &old);
    let w = RunningWorker::start(config(), RiskModel::default_model());
    wait_for(
        "the first incarnation read",
        Duration::from_secs(90),
        || w.metrics().events_consumed.get() >= old.len() as u64,
    );
    w.stop().expect("clean stop");
    // The input topic deleted and created again: offsets start at 0.
    cluster.delete_topics(&[INPUT]);
    wait_for("the input topic recreated", Duration::from_secs(60), || {
        let admin_ok = std::panic::catch_unwind(|| cluster.create_topics(&[(INPUT, 4, &[])]));
        admin_ok.is_ok()
    });
    produce_events(&bootstrap, INPUT, &old[..old.len() / 10]);
    let w = RunningWorker::start(config(), RiskModel::default_model());
    wait_for("the worker stops", Duration::from_secs(90), || w.finished());
    assert_eq!(w.metrics().events_duplicate.get(), 0, "events were skipped");
    let text = w
        .stop()
        .expect_err("stopped by the recreated topic")
        .to_string();
    assert!(
        text.contains("input topic `customer-events` partition") && text.contains("recreated"),
        "{text}"
    );
}
