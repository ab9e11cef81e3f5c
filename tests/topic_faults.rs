//! Topics changing under the worker (development broker): an input topic
//! recreated with offsets starting again at 0 while the changelog remembers
//! the old incarnation's positions. The development broker cannot delete a
//! topic, so the new incarnation is a fresh topic the worker is pointed at
//! with the same state topic: the changelog's positions are then past the
//! input's end, exactly as after a deletion and re-creation. The real-broker
//! suite deletes and recreates the topic itself.

mod support;

use std::time::{Duration, Instant};

use churn_core::model::RiskModel;
use churn_worker::config::InputResetPolicy;
use support::*;

const NEW_INPUT: &str = "customer-events-recreated";

/// Runs a worker over `old` on the default input topic until every event is
/// applied, and stops it gracefully (its last flush writes every position).
fn first_incarnation(bootstrap: &str, old: &[String]) {
    produce_events(bootstrap, "customer-events", old);
    let mut config = worker_config(bootstrap);
    config.state.flush_interval_ms = 50;
    let w = RunningWorker::start(config, RiskModel::default_model());
    w.wait_until("the old topic consumed", Duration::from_secs(60), |w| {
        w.metrics().events_consumed.get() >= old.len() as u64
    });
    w.stop().expect("first worker stops cleanly");
}

/// Events of the same customers after the old history, fewer of them: the
/// new topic's offsets stay below the old positions.
fn new_events(old: &[String]) -> Vec<String> {
    old.iter()
        .take(old.len() / 5)
        .map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line).expect("json");
            let t = churn_core::event::parse_timestamp_ms(v["timestamp"].as_str().expect("ts"))
                .expect("ts");
            v["timestamp"] = churn_core::event::format_timestamp_ms(t + 40 * DAY_MS).into();
            v.to_string()
        })
        .collect()
}

#[test]
fn a_recreated_input_topic_stops_the_worker_naming_it_and_nothing_is_skipped() {
    let broker = broker(4);
    broker.create_topic(NEW_INPUT, 4).expect("new input topic");
    let bootstrap = broker.bootstrap_servers().to_string();
    let old = history(200, 30, 3);
    first_incarnation(&bootstrap, &old);
    produce_events(&bootstrap, NEW_INPUT, &new_events(&old));

    let mut config = worker_config(&bootstrap);
    config.topics.input = NEW_INPUT.into();
    let w = RunningWorker::start(config, RiskModel::default_model());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !w.finished() {
        assert!(
            Instant::now() < deadline,
            "the worker kept running on a recreated input topic (duplicates counted: {})",
            w.metrics().events_duplicate.get()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(w.metrics().events_duplicate.get(), 0, "events were skipped");
    assert!(w.metrics().input_resets.with_label_values(&["fail"]).get() >= 1);
    let error = w.stop().expect_err("the worker stops with an error");
    let text = error.to_string();
    assert!(
        matches!(error, churn_worker::WorkerError::InputTopicReset { .. }),
        "{text}"
    );
    for needle in [
        NEW_INPUT,
        "recreated",
        "on_input_reset",
        "CHURN_SCORER__STATE__ON_INPUT_RESET",
    ] {
        assert!(text.contains(needle), "{needle} missing from: {text}");
    }
}

#[test]
fn with_reset_positions_a_recreated_input_topic_is_read_whole_on_top_of_the_kept_state() {
    let broker = broker(4);
    broker.create_topic(NEW_INPUT, 4).expect("new input topic");
    let bootstrap = broker.bootstrap_servers().to_string();
    let old = history(200, 30, 5);
    first_incarnation(&bootstrap, &old);
    let new = new_events(&old);
    produce_events(&bootstrap, NEW_INPUT, &new);

    let mut config = worker_config(&bootstrap);
    config.topics.input = NEW_INPUT.into();
    config.state.on_input_reset = InputResetPolicy::ResetPositions;
    let w = RunningWorker::start(config, RiskModel::default_model());
    let model = RiskModel::default_model();
    let all: Vec<String> = old.iter().chain(&new).cloned().collect();
    let as_of = T0_MS + 80 * DAY_MS;
    // Every customer's kept state plus every new event: what an offline
    // replay of both incarnations computes.
    assert_matches_offline(
        w.http,
        &offline_scores(&model, &all, as_of),
        as_of,
        Duration::from_secs(60),
    );
    assert_eq!(w.metrics().events_duplicate.get(), 0);
    assert!(
        w.metrics()
            .input_resets
            .with_label_values(&["reset_positions"])
            .get()
            >= 1
    );
    w.stop().expect("worker stops cleanly");
}

#[test]
fn the_start_up_check_names_every_missing_topic_and_creates_none() {
    let broker = churn_devtools::broker::EmbeddedBroker::start(1).expect("broker");
    broker.create_topic("customer-events", 4).expect("input");
    let bootstrap = broker.bootstrap_servers().to_string();
    let mut config = worker_config(&bootstrap);
    config.topics.shadow_alerts = Some("churn-alerts-shadow".into());
    let w = RunningWorker::start(config, RiskModel::default_model());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !w.finished() {
        assert!(
            Instant::now() < deadline,
            "the worker ran without its topics"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let error = w.stop().expect_err("the worker refuses to start");
    let text = error.to_string();
    let missing = [
        "churn-scorer-state",
        "churn-alerts",
        "churn-events-dlq",
        "churn-alerts-shadow",
    ];
    for topic in missing {
        assert!(
            text.contains(&format!("`{topic}`")),
            "{topic} not named: {text}"
        );
        assert!(
            !topic_exists(&bootstrap, topic),
            "{topic} was created by the check"
        );
    }
    assert!(
        text.contains("4 topic problems (nothing was created)"),
        "{text}"
    );
    assert!(
        text.contains("--topic churn-scorer-state --partitions 4 --replication-factor 3 --config cleanup.policy=compact"),
        "{text}"
    );
}

#[test]
fn a_state_topic_with_another_partition_count_is_refused_naming_both_counts() {
    let broker = churn_devtools::broker::EmbeddedBroker::start(1).expect("broker");
    for (topic, partitions) in [
        ("customer-events", 6),
        ("churn-scorer-state", 4),
        ("churn-alerts", 1),
        ("churn-events-dlq", 1),
    ] {
        broker.create_topic(topic, partitions).expect("topic");
    }
    let w = RunningWorker::start(
        worker_config(broker.bootstrap_servers()),
        RiskModel::default_model(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !w.finished() {
        assert!(
            Instant::now() < deadline,
            "the worker ran with mismatched topics"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = w.stop().expect_err("refused").to_string();
    assert!(
        text.contains(
            "`churn-scorer-state` (topics.state) has 4 partitions but the input topic has 6"
        ),
        "{text}"
    );
}

#[test]
fn a_topic_the_worker_may_not_describe_is_refused_at_start_naming_the_permission() {
    let broker = broker(2);
    broker
        .set_topic_error(
            "churn-events-dlq",
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        )
        .expect("topic error set");
    let w = RunningWorker::start(
        worker_config(broker.bootstrap_servers()),
        RiskModel::default_model(),
    );
    w.wait_until(
        "the worker refuses to start",
        Duration::from_secs(60),
        |w| w.finished(),
    );
    let text = w.stop().expect_err("refused").to_string();
    assert!(
        text.contains("`churn-events-dlq` (topics.dead_letter) cannot be described")
            && text.contains("uthoriz")
            && text.contains("DESCRIBE and WRITE"),
        "{text}"
    );
}
