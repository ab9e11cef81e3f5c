//! Output integrity under faults: each test injects a fault a production
//! cluster produces every week and asserts what subscribers see (topics,
//! offsets) and what state holds afterwards.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use churn_core::changelog::{WATERMARK_KEY, decode_state};
use churn_core::model::RiskModel;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka_sys::{RDKafkaApiKey, RDKafkaRespErr};
use support::*;

const GROUP: &str = "churn-scorer";

/// Produces (key, value) pairs, keys optional, with room for large values.
fn produce_raw(bootstrap: &str, messages: &[(Option<&str>, Vec<u8>)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.max.bytes", "4000000")
        .create()
        .expect("producer");
    for (key, value) in messages {
        let mut record = BaseRecord::<str, [u8]>::to("customer-events").payload(value);
        if let Some(k) = key {
            record = record.key(k);
        }
        producer.send(record).map_err(|(e, _)| e).expect("queued");
    }
    producer.flush(Duration::from_secs(30)).expect("produced");
}

#[test]
fn an_oversized_invalid_message_is_dead_lettered_truncated_and_its_partition_moves_on() {
    let broker = broker(1);
    let bootstrap = broker.bootstrap_servers().to_string();
    // 2 MB with an invalid customer_id: the worker's producer accepts at most
    // 1 MB (`message.max.bytes`), so its dead letter cannot go out as it is.
    let big = format!(
        r#"{{"customer_id":"","event_type":"login","timestamp":"2025-01-01T00:00:00Z","pad":"{}"}}"#,
        "x".repeat(2_000_000)
    );
    let messages = vec![
        (Some("c1"), event("c1", "login", T0_MS, None).into_bytes()),
        (Some("big"), big.clone().into_bytes()),
        // Invalid and without a key: its dead letter has no key either.
        (None, b"not json".to_vec()),
        // Keyed by someone else: applied, but counted.
        (
            Some("wrong"),
            event("c2", "login", T0_MS + 1, None).into_bytes(),
        ),
        (
            Some("c1"),
            event("c1", "session", T0_MS + 2, None).into_bytes(),
        ),
    ];
    produce_raw(&bootstrap, &messages);
    let end = high_watermark(&bootstrap, "customer-events", 0);
    assert_eq!(end, 5);

    let w = RunningWorker::start(worker_config(&bootstrap), RiskModel::default_model());
    w.wait_until(
        "the partition's offsets are committed to its end",
        Duration::from_secs(30),
        |_| committed_offset(&bootstrap, GROUP, "customer-events", 0) == Some(end),
    );
    let dlq = read_topic(&bootstrap, "churn-events-dlq", 2, Duration::from_secs(10));
    assert_eq!(dlq.len(), 2, "{dlq:?}");
    let truncated = dlq
        .iter()
        .find(|m| m.key.as_deref() == Some("big"))
        .expect("the big message is dead-lettered with its key");
    assert_eq!(
        truncated.headers.get("truncated").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        truncated.headers.get("original_size"),
        Some(&big.len().to_string())
    );
    assert_eq!(
        truncated.headers.get("reason").map(String::as_str),
        Some("bad_customer_id")
    );
    let kept = truncated.value.as_deref().expect("payload");
    assert!(
        kept.len() < 1_000_000 && kept.len() > 100_000,
        "{}",
        kept.len()
    );
    assert!(big.as_bytes().starts_with(kept), "a prefix of the original");
    let keyless = dlq
        .iter()
        .find(|m| m.headers.get("reason").map(String::as_str) == Some("malformed_json"))
        .expect("the keyless message is dead-lettered");
    assert_eq!(keyless.key, None, "a null key stays null");
    assert_eq!(w.metrics().events_misrouted.get(), 1);
    assert_eq!(
        w.metrics()
            .events_dropped
            .with_label_values(&["dead_letter_rejected"])
            .get(),
        0
    );
    assert_eq!(http_get(w.http, "/v1/customers/c1", None).0, 200);
    assert_eq!(
        w.metrics()
            .dead_letters
            .with_label_values(&["bad_customer_id"])
            .get(),
        1,
        "sent once, not re-sent forever"
    );
    w.stop().expect("clean stop");
}

/// Every customer's last state record on the changelog, decoded, and the
/// highest event count any of its records had.
fn last_and_newest_states(bootstrap: &str, model: &RiskModel) -> BTreeMap<String, (u32, u32)> {
    let records = read_topic(
        bootstrap,
        "churn-scorer-state",
        usize::MAX,
        Duration::from_secs(5),
    );
    let mut by_key: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    let mut ordered = records;
    ordered.sort_by_key(|r| (r.partition, r.offset));
    for r in ordered {
        let Some(key) = r.key else { continue };
        if key.as_bytes() == WATERMARK_KEY {
            continue;
        }
        let Some(value) = r.value.filter(|v| !v.is_empty()) else {
            continue;
        };
        let events = decode_state(model, &value).expect("decodes").events();
        let entry = by_key.entry(key).or_insert((0, 0));
        entry.0 = events;
        entry.1 = entry.1.max(events);
    }
    by_key
}

#[test]
fn a_state_record_that_failed_and_was_resent_never_overwrites_a_newer_one() {
    let broker = broker(2);
    let bootstrap = broker.bootstrap_servers().to_string();
    let model = RiskModel::default_model();
    let lines = history(60, 30, 11);
    produce_events(&bootstrap, "customer-events", &lines);
    // The next produce requests fail, and deliveries time out quickly, so
    // outputs and state records fail after librdkafka's own retries and
    // the worker must send them again.
    broker
        .push_request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 40],
        )
        .expect("errors pushed");
    let mut config = worker_config(&bootstrap);
    config.pipeline.batch_size = 20;
    config
        .kafka
        .producer
        .insert("message.timeout.ms".into(), "150".into());
    config
        .kafka
        .producer
        .insert("retry.backoff.ms".into(), "10".into());
    let w = RunningWorker::start(config, model.clone());
    let as_of = T0_MS + 31 * DAY_MS;
    let expected = offline_scores(&model, &lines, as_of);
    assert_matches_offline(w.http, &expected, as_of, Duration::from_secs(90));
    w.wait_until(
        "offsets committed to the end",
        Duration::from_secs(30),
        |_| {
            (0..2).all(|p| {
                committed_offset(&bootstrap, GROUP, "customer-events", p)
                    == Some(high_watermark(&bootstrap, "customer-events", p))
            })
        },
    );
    assert!(
        w.metrics().producer_errors.get() > 0,
        "the fault made deliveries fail"
    );
    w.stop().expect("clean stop");

    let states = last_and_newest_states(&bootstrap, &model);
    assert_eq!(states.len(), expected.len());
    for (id, (last, newest)) in &states {
        assert_eq!(last, newest, "{id}: an older state record landed last");
        assert_eq!(*last, expected[id].1, "{id}: last record holds every event");
    }
    // And a restore from that changelog scores exactly as offline.
    let again = RunningWorker::start(worker_config(&bootstrap), model.clone());
    assert_matches_offline(again.http, &expected, as_of, Duration::from_secs(60));
    assert_eq!(
        again.metrics().events_consumed.get(),
        0,
        "nothing left to re-read: state and offsets agree"
    );
    again.stop().expect("clean stop");
}

/// A worker process with a backlog to work through and a 4 s drain budget.
fn worker_under_load(bootstrap: &str) -> WorkerProcess {
    let lines = history(1000, 60, 5);
    produce_events(bootstrap, "customer-events", &lines);
    let w = WorkerProcess::start_with(
        bootstrap,
        "",
        "[shutdown]\ndrain_timeout_secs = 4\n[kafka.producer]\n\"message.timeout.ms\" = \"60000\"\n",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.metric("churn_scorer_events_consumed_total") < 1.0 {
        assert!(Instant::now() < deadline, "never started consuming");
        std::thread::sleep(Duration::from_millis(20));
    }
    w
}

/// `drain_timeout_secs` + 10 s.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(14);

#[test]
fn sigterm_with_a_healthy_broker_drains_commits_and_exits_zero() {
    let broker = broker(3);
    let bootstrap = broker.bootstrap_servers().to_string();
    let w = worker_under_load(&bootstrap);
    let (took, status) = w.terminate(Duration::from_secs(60));
    let status = status.expect("exited");
    assert!(took <= SHUTDOWN_BOUND, "took {took:?}");
    assert!(status.success(), "{status:?}");
    let committed: i64 = (0..3)
        .filter_map(|p| committed_offset(&bootstrap, GROUP, "customer-events", p))
        .sum();
    assert!(committed > 0, "progress was committed");
}

#[test]
fn sigterm_with_the_broker_down_returns_within_the_bound_and_says_so() {
    let broker = broker(3);
    let bootstrap = broker.bootstrap_servers().to_string();
    let w = worker_under_load(&bootstrap);
    broker.set_broker_up(1, false).expect("broker down");
    let (took, status) = w.terminate(Duration::from_secs(60));
    let status = status.expect("exited");
    assert!(took <= SHUTDOWN_BOUND, "took {took:?}");
    assert!(
        !status.success(),
        "nothing could be committed: non-zero exit"
    );
}

#[test]
fn sigterm_with_the_broker_stalled_returns_within_the_bound() {
    let broker = broker(3);
    let bootstrap = broker.bootstrap_servers().to_string();
    let w = worker_under_load(&bootstrap);
    // Up, but answering nothing for a minute: as a paused broker process.
    broker
        .set_broker_rtt(1, Duration::from_secs(60))
        .expect("rtt set");
    let (took, status) = w.terminate(Duration::from_secs(60));
    assert!(status.is_some(), "still running after {took:?}");
    assert!(took <= SHUTDOWN_BOUND, "took {took:?}");
}

#[test]
fn a_topic_the_worker_may_not_write_stops_it_with_a_message_naming_the_topic() {
    let broker = broker(1);
    let bootstrap = broker.bootstrap_servers().to_string();
    // The permission goes away while the worker runs (the start-up check
    // would refuse a topic it may not describe: tests/topic_faults.rs).
    let w = RunningWorker::start(worker_config(&bootstrap), RiskModel::default_model());
    w.wait_until("partitions assigned", Duration::from_secs(60), |w| {
        w.metrics().partitions_assigned.get() > 0 && w.handles.directory.is_ready()
    });
    broker
        .set_topic_error(
            "churn-events-dlq",
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        )
        .expect("topic error set");
    produce_raw(
        &bootstrap,
        &[
            (Some("c1"), event("c1", "login", T0_MS, None).into_bytes()),
            (Some("bad"), b"not json".to_vec()),
            (
                Some("c1"),
                event("c1", "login", T0_MS + 1, None).into_bytes(),
            ),
        ],
    );
    w.wait_until("the worker stops by itself", Duration::from_secs(60), |w| {
        w.finished()
    });
    let err = w.stop().expect_err("a fatal output error");
    let message = err.to_string();
    assert!(
        message.contains("lacks WRITE on topic `churn-events-dlq`") && message.contains("uthoriz"),
        "{message}"
    );
    // Nothing past the message whose dead letter failed was committed.
    let committed = committed_offset(&bootstrap, GROUP, "customer-events", 0);
    assert!(committed.is_none_or(|o| o <= 1), "committed {committed:?}");
}
