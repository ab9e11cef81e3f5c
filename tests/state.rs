//! Durable state: crashes, rebalances and broker outages lose nothing and
//! count nothing twice. The worker's scores must equal an offline
//! `score --as-of` over the same events.

mod support;

use std::time::{Duration, Instant};

use churn_core::model::RiskModel;
use support::*;

#[test]
fn a_worker_killed_mid_stream_and_restarted_scores_exactly_as_offline() {
    let broker = broker(6);
    let bootstrap = broker.bootstrap_servers().to_string();
    let model = RiskModel::default_model();
    let lines = history(600, 60, 1);
    let (first, second) = lines.split_at(lines.len() / 3);

    produce_events(&bootstrap, "customer-events", first);
    // Flushes often, so that the kill finds state written.
    let w1 = WorkerProcess::start_with(&bootstrap, "", "[state]\nflush_interval_ms = 50\n");
    let deadline = Instant::now() + Duration::from_secs(60);
    while w1.metric("churn_scorer_events_consumed_total") < first.len() as f64 {
        assert!(Instant::now() < deadline, "first part never consumed");
        std::thread::sleep(Duration::from_millis(20));
    }
    produce_events(&bootstrap, "customer-events", second);
    let target = (first.len() + second.len() / 3) as f64;
    while w1.metric("churn_scorer_events_consumed_total") < target
        || w1.metric("churn_scorer_state_changelog_records_total") == 0.0
    {
        assert!(Instant::now() < deadline, "second part never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let consumed_at_kill = w1.metric("churn_scorer_events_consumed_total");
    w1.kill_abruptly();
    eprintln!("killed after {consumed_at_kill} of {} events", lines.len());

    let w2 = WorkerProcess::start(&bootstrap);
    let as_of = T0_MS + 61 * DAY_MS;
    let expected = offline_scores(&model, &lines, as_of);
    assert_matches_offline(w2.http, &expected, as_of, Duration::from_secs(90));
    // Redelivered events were recognised by their offsets, not applied twice.
    assert!(w2.metric("churn_scorer_state_restored_customers_total") > 0.0);
}

/// The window between a state flush and the offsets commit that follows it:
/// the changelog already holds state of events whose offsets were never
/// committed. A restart re-reads those events, and the offsets kept in the
/// restored state recognise them as applied.
#[test]
fn a_worker_killed_between_a_state_flush_and_the_offset_commit_scores_as_offline() {
    let broker = broker(4);
    let bootstrap = broker.bootstrap_servers().to_string();
    let model = RiskModel::default_model();
    let lines = history(400, 50, 7);
    let (first, second) = lines.split_at(lines.len() / 2);

    produce_events(&bootstrap, "customer-events", first);
    // Flushes every 20 ms but commits offsets only after ten minutes: every
    // flush before the kill lies between a flush and its commit.
    let w1 = WorkerProcess::start_with(
        &bootstrap,
        "\"auto.commit.interval.ms\" = \"600000\"",
        "[state]\nflush_interval_ms = 20\n",
    );
    let customers = first
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["customer_id"].as_str().map(str::to_string))
        .collect::<std::collections::BTreeSet<_>>()
        .len() as f64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let flushed = |w: &WorkerProcess| w.metric("churn_scorer_state_changelog_records_total");
    // Every customer of the first part is in some acknowledged flush.
    while w1.metric("churn_scorer_events_consumed_total") < first.len() as f64
        || flushed(&w1) < customers
    {
        assert!(
            Instant::now() < deadline,
            "first part never consumed and flushed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    w1.kill_abruptly();
    for p in 0..4 {
        assert_eq!(
            committed_offset(&bootstrap, "churn-scorer", "customer-events", p),
            None,
            "partition {p}: nothing may be committed before the kill"
        );
    }

    produce_events(&bootstrap, "customer-events", second);
    let w2 = WorkerProcess::start(&bootstrap);
    let as_of = T0_MS + 51 * DAY_MS;
    let expected = offline_scores(&model, &lines, as_of);
    assert_matches_offline(w2.http, &expected, as_of, Duration::from_secs(90));
    assert!(w2.metric("churn_scorer_state_restored_customers_total") > 0.0);
    assert!(
        w2.metric("churn_scorer_events_duplicate_total") > 0.0,
        "the re-read events were recognised as applied"
    );
}

#[test]
fn when_one_of_two_workers_leaves_the_other_restores_its_partitions() {
    let broker = broker(4);
    let bootstrap = broker.bootstrap_servers().to_string();
    let model = RiskModel::default_model();
    let lines = history(300, 40, 2);
    let (first, second) = lines.split_at(lines.len() / 2);

    let a = RunningWorker::start(worker_config(&bootstrap), model.clone());
    let b = RunningWorker::start(worker_config(&bootstrap), model.clone());
    b.wait_until(
        "both members hold partitions",
        Duration::from_secs(30),
        |b| {
            a.metrics().partitions_assigned.get() > 0
                && b.metrics().partitions_assigned.get() > 0
                && a.handles.directory.is_ready()
                && b.handles.directory.is_ready()
        },
    );
    produce_events(&bootstrap, "customer-events", first);
    let both = |a: &RunningWorker, b: &RunningWorker| {
        a.metrics().events_consumed.get() + b.metrics().events_consumed.get()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while both(&a, &b) < first.len() as u64 {
        assert!(Instant::now() < deadline, "first half never consumed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        a.metrics().events_consumed.get() > 0 && b.metrics().events_consumed.get() > 0,
        "both members consumed"
    );
    b.stop().expect("b leaves cleanly");
    produce_events(&bootstrap, "customer-events", second);
    a.wait_until("a owns every partition", Duration::from_secs(30), |w| {
        w.metrics().partitions_assigned.get() == 4 && w.handles.directory.is_ready()
    });
    let as_of = T0_MS + 41 * DAY_MS;
    let expected = offline_scores(&model, &lines, as_of);
    assert_matches_offline(a.http, &expected, as_of, Duration::from_secs(60));
    assert!(
        a.metrics().state_restored_customers.get() > 0,
        "b's customers came from the changelog"
    );
    a.stop().expect("clean stop");
}

#[test]
fn a_broker_outage_loses_nothing_and_counts_nothing_twice() {
    let broker = broker(3);
    let bootstrap = broker.bootstrap_servers().to_string();
    let model = RiskModel::default_model();
    let lines = history(200, 40, 3);
    let (first, second) = lines.split_at(lines.len() / 2);
    produce_events(&bootstrap, "customer-events", first);
    let w = RunningWorker::start(worker_config(&bootstrap), model.clone());
    w.wait_until("some events consumed", Duration::from_secs(30), |w| {
        w.metrics().events_consumed.get() > 0
    });
    broker.set_broker_up(1, false).expect("broker down");
    std::thread::sleep(Duration::from_secs(3));
    broker.set_broker_up(1, true).expect("broker up");
    produce_events(&bootstrap, "customer-events", second);
    let as_of = T0_MS + 41 * DAY_MS;
    let expected = offline_scores(&model, &lines, as_of);
    assert_matches_offline(w.http, &expected, as_of, Duration::from_secs(90));
    w.stop().expect("clean stop");
}

#[test]
fn customers_silent_past_the_horizon_are_evicted_with_a_tombstone() {
    let broker = broker(1);
    let bootstrap = broker.bootstrap_servers().to_string();
    let model = RiskModel::default_model();
    let last_step_days = model.inactivity_steps_ms().last().expect("steps").0 / DAY_MS;
    let mut lines = Vec::new();
    for day in 0..(last_step_days + 60) {
        if day < 5 {
            lines.push(event("gone", "login", T0_MS + day * DAY_MS, None));
        }
        lines.push(event("busy", "login", T0_MS + day * DAY_MS + 1, None));
    }
    produce_events(&bootstrap, "customer-events", &lines);
    let mut config = worker_config(&bootstrap);
    config.engine.eviction_horizon_days = (last_step_days + 10) as f64;
    config.engine.eviction_interval_secs = 1;
    let w = RunningWorker::start(config, model);
    w.wait_until(
        "the silent customer is evicted",
        Duration::from_secs(30),
        |w| w.metrics().customers_evicted.get() == 1,
    );
    w.wait_until("gauge updated", Duration::from_secs(5), |w| {
        w.metrics().customers_tracked.get() == 1
    });
    assert_eq!(http_get(w.http, "/v1/customers/gone", None).0, 404);
    assert_eq!(http_get(w.http, "/v1/customers/busy", None).0, 200);
    let records = read_topic(
        &bootstrap,
        "churn-scorer-state",
        usize::MAX,
        Duration::from_secs(3),
    );
    let last_gone = records
        .iter()
        .rfind(|r| r.key.as_deref() == Some("gone"))
        .expect("state records for gone");
    assert!(
        last_gone.value.as_deref().is_none_or(<[u8]>::is_empty),
        "tombstone last"
    );
    w.stop().expect("clean stop");
}
