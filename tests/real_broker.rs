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

mod support;

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
    assert!(
        stderr.contains("topic `customer-events` does not exist"),
        "{stderr}"
    );
    cluster.create_topics(&[(INPUT, 4, &[])]);
    let (status, stderr) = run_until_exit(&bootstrap, 60);
    assert!(!status.success(), "started without a state topic: {stderr}");
    assert!(
        stderr.contains("topic `churn-scorer-state` does not exist")
            && stderr.contains("--partitions 4 --config cleanup.policy=compact"),
        "{stderr}"
    );
    cluster.create_topics(&[(STATE, 2, &[("cleanup.policy", "compact")])]);
    let (status, stderr) = run_until_exit(&bootstrap, 60);
    assert!(
        !status.success(),
        "started with mismatched partitions: {stderr}"
    );
    assert!(
        stderr.contains("state topic `churn-scorer-state` has 2 partitions")
            && stderr.contains("input topic `customer-events` has 4"),
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
