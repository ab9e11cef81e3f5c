//! Event time that bad clocks, outages and restarts cannot break: each test
//! is a regression for a way the worker once sent false or repeated alerts.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use churn_core::alert::Alert;
use churn_core::engine::CustomerStore;
use churn_core::event::{format_timestamp_ms, parse_event};
use churn_core::model::{InactivityStep, RiskModel};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use support::*;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

fn ready(http: std::net::SocketAddr) -> bool {
    std::net::TcpStream::connect(http).is_ok() && http_get(http, "/readyz", None).0 == 200
}

fn wait_ready(what: &str, http: std::net::SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !ready(http) {
        assert!(Instant::now() < deadline, "{what} never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (alert id, customer, kind) of every alert on the topic.
fn alert_ids(bootstrap: &str) -> Vec<(String, String, String)> {
    read_alerts(bootstrap, Duration::from_secs(3))
        .into_iter()
        .map(|a| (a.alert_id, a.customer_id, a.kind))
        .collect()
}

#[test]
fn a_silent_customer_is_alerted_once_across_restarts_a_kill_and_a_rebalance() {
    let broker = broker(2);
    let bootstrap = broker.bootstrap_servers().to_string();
    let model = RiskModel::default_model();
    let mut lines = Vec::new();
    for day in 0..200 {
        let t = T0_MS + day * DAY_MS;
        for s in 0..10 {
            if day < 10 {
                lines.push(event(&format!("silent-{s}"), "login", t + s, None));
            }
        }
        // Busy customers on every partition keep the clocks moving.
        for b in 0..8 {
            lines.push(event(&format!("busy-{b}"), "login", t + 100 + b, None));
        }
    }
    produce_events(&bootstrap, "customer-events", &lines);
    let silent = |a: &(String, String, String)| a.1.starts_with("silent-");

    let w = WorkerProcess::start(&bootstrap);
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.metric("churn_scorer_events_consumed_total") < lines.len() as f64 {
        assert!(Instant::now() < deadline, "never consumed everything");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut first: Vec<_> = Vec::new();
    while first.iter().filter(|a| silent(a)).count() < 10 {
        assert!(
            Instant::now() < deadline,
            "the silent customers were never alerted"
        );
        first = alert_ids(&bootstrap);
    }
    let first_ids: BTreeSet<String> = first.iter().map(|a| a.0.clone()).collect();
    let silent_alerts: Vec<_> = first.iter().filter(|a| silent(a)).collect();
    assert_eq!(silent_alerts.len(), 10, "{silent_alerts:?}");
    assert!(silent_alerts.iter().all(|a| a.2 == "at_risk"));

    // Restart 1: graceful.
    let (_, status) = w.terminate(Duration::from_secs(60));
    assert!(status.is_some_and(|s| s.success()));
    let w = WorkerProcess::start(&bootstrap);
    wait_ready("after a graceful restart", w.http, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    // Restart 2: kill -9.
    w.kill_abruptly();
    let w = WorkerProcess::start(&bootstrap);
    wait_ready("after kill -9", w.http, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    // A rebalance: a second member joins, takes partitions, and leaves.
    let b = RunningWorker::start(worker_config(&bootstrap), model.clone());
    b.wait_until(
        "the second member holds a partition",
        Duration::from_secs(60),
        |b| b.metrics().partitions_assigned.get() > 0 && b.handles.directory.is_ready(),
    );
    std::thread::sleep(Duration::from_secs(2));
    b.stop().expect("the second member leaves cleanly");
    wait_ready("after the rebalance", w.http, Duration::from_secs(60));
    // Restart 3: graceful again.
    let (_, status) = w.terminate(Duration::from_secs(60));
    assert!(status.is_some_and(|s| s.success()));
    let w = WorkerProcess::start(&bootstrap);
    wait_ready("after the last restart", w.http, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));

    let after = alert_ids(&bootstrap);
    let after_ids: BTreeSet<String> = after.iter().map(|a| a.0.clone()).collect();
    assert_eq!(after_ids, first_ids, "no new alert ids after restarts");
    assert!(
        after.iter().filter(|a| silent(a)).all(|a| a.2 == "at_risk"),
        "no recovered alert for a customer who never came back"
    );
    drop(w);
}

#[test]
fn events_from_a_bad_clock_are_dead_lettered_and_move_nothing() {
    let broker = broker(1);
    let bootstrap = broker.bootstrap_servers().to_string();
    let model = RiskModel::default_model();
    let now = now_ms();
    let mut lines = Vec::new();
    for day in (1..=20).rev() {
        for c in 0..20 {
            lines.push(event(
                &format!("c{c}"),
                "login",
                now - day * DAY_MS + c,
                None,
            ));
        }
    }
    lines.push(event("c3", "login", now + 2 * 365 * DAY_MS, None));
    lines.push(
        r#"{"customer_id":"c4","event_type":"login","timestamp":"9999-12-31T23:59:59Z"}"#
            .to_string(),
    );
    for c in 0..20 {
        lines.push(event(
            &format!("c{c}"),
            "session",
            now - 3_600_000 + c,
            None,
        ));
    }
    produce_events(&bootstrap, "customer-events", &lines);

    let check = |w: &RunningWorker, c3_events: u64| {
        // Everything processed and acknowledged: offsets committed to the end.
        let end = high_watermark(&bootstrap, "customer-events", 0);
        w.wait_until(
            "offsets committed to the end",
            Duration::from_secs(30),
            |_| committed_offset(&bootstrap, "churn-scorer", "customer-events", 0) == Some(end),
        );
        assert_eq!(
            w.metrics().events_late.get(),
            0,
            "later events are not late"
        );
        let (status, body) = http_get(w.http, "/v1/customers/c3", None);
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        let as_of = churn_core::event::parse_timestamp_ms(v["as_of"].as_str().expect("as_of"))
            .expect("timestamp");
        assert!(as_of <= now_ms() + 300_000, "scored at {}", v["as_of"]);
        assert_eq!(
            v["events"].as_u64(),
            Some(c3_events),
            "the future event touched no state"
        );
    };
    let w = RunningWorker::start(worker_config(&bootstrap), model.clone());
    check(&w, 21);
    assert_eq!(
        w.metrics()
            .events_invalid
            .with_label_values(&["timestamp_in_future"])
            .get(),
        2
    );
    w.stop().expect("clean stop");
    let dlq = read_topic(&bootstrap, "churn-events-dlq", 2, Duration::from_secs(10));
    let reasons: Vec<_> = dlq
        .iter()
        .map(|m| m.headers.get("reason").cloned().unwrap_or_default())
        .collect();
    assert_eq!(reasons, ["timestamp_in_future", "timestamp_in_future"]);

    // The same holds after a restart, with more events.
    let more: Vec<String> = (0..20)
        .map(|c| event(&format!("c{c}"), "login", now - 1_800_000 + c, None))
        .collect();
    produce_events(&bootstrap, "customer-events", &more);
    let w = RunningWorker::start(worker_config(&bootstrap), model);
    check(&w, 22);
    w.stop().expect("clean stop");
    assert!(
        read_alerts(&bootstrap, Duration::from_secs(2)).is_empty(),
        "no alert for customers who were active all along"
    );
}

/// The default model with inactivity steps in seconds, so an outage of a
/// few seconds is long enough to matter.
fn model_with_steps_in_seconds(steps: &[(f64, f64)]) -> RiskModel {
    let mut spec = RiskModel::default_model().spec().clone();
    spec.inactivity.steps = steps
        .iter()
        .map(|&(secs, points)| InactivityStep {
            after_days: secs / 86_400.0,
            points,
        })
        .collect();
    spec.model_version = "steps-in-seconds".into();
    RiskModel::from_spec(spec).expect("valid model")
}

/// The moment the engine puts a customer at risk after `lines` (its events).
fn predicted_at_risk(model: &RiskModel, lines: &[String]) -> i64 {
    let mut store = CustomerStore::new();
    let mut id = String::new();
    for l in lines {
        let e = parse_event(l.as_bytes()).expect("valid");
        id = e.customer_id.to_string();
        store.apply(model, &e, None, true);
    }
    let state = store.get(&id).expect("known");
    let last = state.last_event_ms();
    model
        .inactivity_steps_ms()
        .iter()
        .map(|(at, _)| last + at)
        .find(|&t| state.risk(model, t) >= model.alert_policy().at_risk_threshold)
        .expect("silence puts the customer at risk")
}

#[test]
fn a_broker_outage_fires_no_inactivity_alert_for_customers_who_stay_active() {
    let broker = broker(1);
    let bootstrap = broker.bootstrap_servers().to_string();
    let model = model_with_steps_in_seconds(&[(4.0, 200.0), (8.0, 250.0)]);
    let mut config = worker_config(&bootstrap);
    config.engine.allowed_lateness_secs = 1;
    config.engine.idle_timeout_secs = 2;
    config
        .kafka
        .consumer
        .insert("statistics.interval.ms".into(), "200".into());
    // The default session timeout: the member keeps its partitions through
    // the outage (a shorter one would revoke them, hiding the idle rule).
    config
        .kafka
        .consumer
        .insert("session.timeout.ms".into(), "45000".into());
    let w = RunningWorker::start(config, model.clone());
    w.wait_until("ready", Duration::from_secs(30), |w| {
        w.handles.directory.is_ready()
    });

    // Five customers log in every 250 ms, stamped by their own clock, through
    // the outage (their producer buffers); "quiet" logs in twice, then stops.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        // Producers back after an outage within a fraction of the idle
        // timeout: a producer slower to reconnect than the idle timeout would
        // look, to any consumer, like customers who went quiet.
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "200")
        .create()
        .expect("producer");
    let quiet_lines: Vec<String> = (0..2)
        .map(|i| event("quiet", "login", now_ms() + i, None))
        .collect();
    for l in &quiet_lines {
        producer
            .send(BaseRecord::to("customer-events").key("quiet").payload(l))
            .map_err(|(e, _)| e)
            .expect("queued");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(quiet_lines.len()));
    let feeder = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                for c in 0..5 {
                    let id = format!("active-{c}");
                    let line = event(&id, "login", now_ms(), None);
                    producer
                        .send(BaseRecord::to("customer-events").key(&id).payload(&line))
                        .map_err(|(e, _)| e)
                        .expect("queued");
                    sent.fetch_add(1, Ordering::AcqRel);
                }
                producer.poll(Duration::from_millis(250));
            }
            producer.flush(Duration::from_secs(60)).expect("delivered");
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    // Longer than lateness + idle timeout + the first step.
    broker.set_broker_up(1, false).expect("broker down");
    std::thread::sleep(Duration::from_secs(10));
    broker.set_broker_up(1, true).expect("broker up");
    std::thread::sleep(Duration::from_secs(5));
    let active_until = now_ms();
    stop.store(true, Ordering::Release);
    feeder.join().expect("feeder");
    let total = sent.load(Ordering::Acquire) as u64;
    w.wait_until("every event consumed", Duration::from_secs(60), |w| {
        w.metrics().events_consumed.get() >= total
    });
    let quiet_due = predicted_at_risk(&model, &quiet_lines);
    // The quiet customer's alert needs its partition's idle rule, which
    // waits for the consumer's statistics to show it caught up again after
    // the outage: slow on a loaded machine, so wait for it with a deadline.
    w.wait_until("the quiet customer's alert", Duration::from_secs(60), |w| {
        alerts_acknowledged(w) >= 1
    });
    let alerts = read_alerts(&bootstrap, Duration::from_secs(3));
    w.stop().expect("clean stop");

    let false_alerts: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.customer_id.starts_with("active-"))
        .filter(|a| {
            churn_core::event::parse_timestamp_ms(&a.event_time).expect("time") < active_until
        })
        .collect();
    assert!(false_alerts.is_empty(), "{false_alerts:#?}");
    let quiet: Vec<&Alert> = alerts.iter().filter(|a| a.customer_id == "quiet").collect();
    assert_eq!(quiet.len(), 1, "{quiet:#?}");
    assert_eq!(quiet[0].kind, "at_risk");
    assert_eq!(quiet[0].cause, "inactivity");
    assert_eq!(quiet[0].event_time, format_timestamp_ms(quiet_due));
}

/// Alerts of every kind the broker has acknowledged.
fn alerts_acknowledged(w: &RunningWorker) -> u64 {
    churn_core::engine::AlertKind::ALL
        .iter()
        .map(|k| {
            w.metrics()
                .alerts_published
                .with_label_values(&[k.as_str()])
                .get()
        })
        .sum()
}

/// (customer, kind, event time, cause) of alerts, sorted.
type AlertKey = (String, String, String, String);

fn keys(alerts: &[Alert]) -> BTreeSet<AlertKey> {
    alerts
        .iter()
        .map(|a| {
            (
                a.customer_id.clone(),
                a.kind.clone(),
                a.event_time.clone(),
                a.cause.clone(),
            )
        })
        .collect()
}

#[test]
fn a_backlog_alerts_at_the_same_event_times_as_a_live_run_and_offline_replay() {
    let model = RiskModel::default_model();
    let mut lines = Vec::new();
    for day in 0..150 {
        let t = T0_MS + day * DAY_MS;
        for c in 0..20 {
            // Customer c stays active for 10 + 4c days, then goes silent.
            if day < 10 + 4 * c {
                lines.push(event(&format!("c{c:02}"), "login", t + c, None));
            }
        }
        lines.push(event("busy", "session", t + 500, None));
    }
    let config_for = |bootstrap: &str| {
        let mut c = worker_config(bootstrap);
        // No wall-clock help: event time alone fires the timers.
        c.engine.idle_timeout_secs = 86_400;
        c
    };
    let lateness_ms = config_for("unused").engine.allowed_lateness_ms();
    let offline: BTreeSet<AlertKey> =
        churn_core::offline::replay_alerts(&model, lines.iter().map(|l| l.as_bytes()), lateness_ms)
            .into_iter()
            .map(|r| {
                (
                    r.customer_id,
                    r.decision.kind.as_str().to_string(),
                    format_timestamp_ms(r.decision.event_time_ms),
                    r.decision.cause.as_str().to_string(),
                )
            })
            .collect();
    let inactivity = offline.iter().filter(|k| k.3 == "inactivity").count();
    assert!(
        inactivity >= 19,
        "the silent customers are alerted offline: {offline:?}"
    );

    // Backlog: everything is in the topic before the worker starts.
    let backlog_broker = broker(1);
    let bootstrap = backlog_broker.bootstrap_servers().to_string();
    produce_events(&bootstrap, "customer-events", &lines);
    let w = RunningWorker::start(config_for(&bootstrap), model.clone());
    w.wait_until("backlog consumed", Duration::from_secs(60), |w| {
        w.metrics().events_consumed.get() >= lines.len() as u64
    });
    w.wait_until("alerts acknowledged", Duration::from_secs(30), |w| {
        alerts_acknowledged(w) >= offline.len() as u64
    });
    let backlog = keys(&read_alerts(&bootstrap, Duration::from_secs(3)));
    w.stop().expect("clean stop");

    // Live: the worker waits for each chunk of events as it is written.
    let live_broker = broker(1);
    let bootstrap = live_broker.bootstrap_servers().to_string();
    let w = RunningWorker::start(config_for(&bootstrap), model.clone());
    w.wait_until("ready", Duration::from_secs(30), |w| {
        w.handles.directory.is_ready()
    });
    let mut sent = 0;
    for chunk in lines.chunks(97) {
        produce_events(&bootstrap, "customer-events", chunk);
        sent += chunk.len() as u64;
        w.wait_until("chunk consumed", Duration::from_secs(30), |w| {
            w.metrics().events_consumed.get() >= sent
        });
    }
    w.wait_until("alerts acknowledged", Duration::from_secs(30), |w| {
        alerts_acknowledged(w) >= offline.len() as u64
    });
    let live = keys(&read_alerts(&bootstrap, Duration::from_secs(3)));
    w.stop().expect("clean stop");

    let by_customer = |s: &BTreeSet<AlertKey>| -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for k in s {
            *m.entry(k.0.clone()).or_default() += 1;
        }
        m
    };
    assert_eq!(
        backlog,
        offline,
        "backlog vs offline: {:?}",
        by_customer(&backlog)
    );
    assert_eq!(live, offline, "live vs offline: {:?}", by_customer(&live));
}

/// Generated journeys (`churn-scorer generate`) of `customers` customers
/// over `days` days from 2025-01-01, as lines.
fn journeys(customers: u32, seed: u64, days: u32) -> Vec<String> {
    churn_generate::Generator::new(churn_generate::GenerateConfig {
        customers,
        seed,
        start_ms: T0_MS,
        days,
        cutoff_days: days - 1,
        ..churn_generate::GenerateConfig::default()
    })
    .expect("valid generator settings")
    .map(|e| String::from_utf8(e.line).expect("utf-8"))
    .collect()
}

/// Issue 31: a backfill read behind the partition's clock (a live
/// `generate --seed 1`, then `generate --seed 9` into the same worker)
/// opened 98-416 at-risk alerts through inactivity timers armed at steps
/// the clock had already passed. Late events never open an alert.
#[test]
fn a_backfill_of_new_and_known_customers_behind_the_clock_opens_no_alert() {
    let model = RiskModel::default_model();
    // 200 customers for 60 days; then the first 40 days of 500 customers:
    // cust-0000000..0199 are known, 0200..0499 new; every event is late.
    let live = journeys(200, 1, 60);
    let backfill = journeys(500, 9, 40);
    let broker = broker(1);
    let bootstrap = broker.bootstrap_servers().to_string();
    let mut config = worker_config(&bootstrap);
    // Event time alone moves the clock.
    config.engine.idle_timeout_secs = 86_400;
    let lateness_ms = config.engine.allowed_lateness_ms();
    let offline = |lines: &[String]| {
        churn_core::offline::replay_alerts(&model, lines.iter().map(|l| l.as_bytes()), lateness_ms)
    };
    let live_alerts = offline(&live);
    let all: Vec<String> = live.iter().chain(&backfill).cloned().collect();
    let all_alerts = offline(&all);
    let at_risk = |alerts: &[churn_core::offline::ReplayedAlert]| {
        alerts
            .iter()
            .filter(|a| a.decision.kind == churn_core::engine::AlertKind::AtRisk)
            .map(|a| (a.customer_id.clone(), a.decision.event_time_ms))
            .collect::<BTreeSet<_>>()
    };
    assert!(!at_risk(&live_alerts).is_empty(), "the live stream alerts");
    assert_eq!(
        at_risk(&all_alerts),
        at_risk(&live_alerts),
        "offline, the backfill opens no alert either"
    );

    let w = RunningWorker::start(config, model.clone());
    w.wait_until("ready", Duration::from_secs(30), |w| {
        w.handles.directory.is_ready()
    });
    produce_events(&bootstrap, "customer-events", &live);
    w.wait_until("the live stream consumed", Duration::from_secs(60), |w| {
        w.metrics().events_consumed.get() >= live.len() as u64
    });
    w.wait_until("its alerts acknowledged", Duration::from_secs(30), |w| {
        alerts_acknowledged(w) >= live_alerts.len() as u64
    });
    produce_events(&bootstrap, "customer-events", &backfill);
    let end = high_watermark(&bootstrap, "customer-events", 0);
    // Committed to the end: everything processed, its outputs acknowledged.
    w.wait_until(
        "the backfill processed and committed",
        Duration::from_secs(60),
        |_| committed_offset(&bootstrap, "churn-scorer", "customer-events", 0) == Some(end),
    );
    assert_eq!(w.metrics().events_late.get(), backfill.len() as u64);
    let published = read_alerts(&bootstrap, Duration::from_secs(3));
    let opened: BTreeSet<(String, i64)> = published
        .iter()
        .filter(|a| a.kind == "at_risk")
        .map(|a| {
            let t = churn_core::event::parse_timestamp_ms(&a.event_time).expect("time");
            (a.customer_id.clone(), t)
        })
        .collect();
    let before_backfill = at_risk(&live_alerts);
    let new_ones: Vec<_> = opened.difference(&before_backfill).collect();
    assert!(
        new_ones.is_empty(),
        "{} at-risk alerts opened by the backfill, e.g. {:?}",
        new_ones.len(),
        &new_ones[..new_ones.len().min(5)]
    );
    let expected: BTreeSet<AlertKey> = all_alerts
        .iter()
        .map(|r| {
            (
                r.customer_id.clone(),
                r.decision.kind.as_str().to_string(),
                format_timestamp_ms(r.decision.event_time_ms),
                r.decision.cause.as_str().to_string(),
            )
        })
        .collect();
    assert_eq!(keys(&published), expected, "live vs offline replay");
    // State: the scores `score` computes from the same events, for known
    // and new customers alike.
    let as_of = T0_MS + 61 * DAY_MS;
    let scores = offline_scores(&model, &all, as_of);
    assert_eq!(scores.len(), 500);
    assert_matches_offline(w.http, &scores, as_of, Duration::from_secs(30));
    w.stop().expect("clean stop");
}

/// A partition that never had an event has no watermark: no series, not
/// the −9.2e15 its "nothing yet" sentinel would read as in seconds.
#[test]
fn a_partition_without_events_reports_no_watermark() {
    let broker = broker(2);
    let bootstrap = broker.bootstrap_servers().to_string();
    let model = RiskModel::default_model();
    let mut config = worker_config(&bootstrap);
    config.state.flush_interval_ms = 200;
    let lateness_ms = config.engine.allowed_lateness_ms();
    let w = RunningWorker::start(config, model);
    w.wait_until("ready", Duration::from_secs(30), |w| {
        w.handles.directory.is_ready()
    });
    // One customer: its events land on one of the two partitions.
    let t = T0_MS + 10 * DAY_MS;
    produce_events(
        &bootstrap,
        "customer-events",
        &[event("solo", "login", t, None)],
    );
    let series = || -> BTreeMap<String, f64> {
        let (_, body) = http_get(w.http, "/metrics", None);
        body.lines()
            .filter_map(|l| l.strip_prefix("churn_scorer_partition_watermark_seconds{"))
            .filter_map(|rest| {
                let (labels, value) = rest.split_once("} ")?;
                Some((labels.to_string(), value.trim().parse::<f64>().ok()?))
            })
            .collect()
    };
    let expected = ((t - lateness_ms) / 1000) as f64;
    w.wait_until(
        "the busy partition's watermark",
        Duration::from_secs(30),
        |_| series().values().any(|&v| v == expected),
    );
    // Only that series, through about ten state flushes.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let now = series();
        assert_eq!(now.len(), 1, "{now:?}");
        assert!(now.values().all(|&v| v == expected), "{now:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    w.stop().expect("clean stop");
}

/// Issue 31: one `login` stamped 1970 pinned its customer's tenure at the
/// maximum (and year 0000 was accepted). The model's `[event_time]` bounds
/// dead-letter both, and an event more than 5 years behind the partition's
/// newest: `timestamp_too_old`, touching no state, as `score` rejects them.
#[test]
fn events_older_than_the_bounds_are_dead_lettered_as_offline() {
    let broker = broker(1);
    let bootstrap = broker.bootstrap_servers().to_string();
    let model = RiskModel::default_model();
    let mut lines = Vec::new();
    for day in 0..60 {
        for c in 0..5 {
            lines.push(event(
                &format!("c{c}"),
                "login",
                T0_MS + day * DAY_MS + c,
                None,
            ));
        }
    }
    let too_old = [
        r#"{"customer_id":"c0","event_type":"login","timestamp":"1970-01-01T00:00:00Z"}"#,
        r#"{"customer_id":"c1","event_type":"login","timestamp":"0000-01-01T00:00:00Z"}"#,
        r#"{"customer_id":"c2","event_type":"login","timestamp":"2019-01-01T00:00:00Z"}"#,
    ];
    for (i, l) in too_old.iter().enumerate() {
        lines.insert(100 + 50 * i, l.to_string());
    }
    produce_events(&bootstrap, "customer-events", &lines);
    let w = RunningWorker::start(worker_config(&bootstrap), model.clone());
    let as_of = T0_MS + 61 * DAY_MS;
    let expected = offline_scores(&model, &lines, as_of);
    assert_eq!(expected.len(), 5);
    assert!(expected.values().all(|&(_, events)| events == 60));
    assert_matches_offline(w.http, &expected, as_of, Duration::from_secs(60));
    assert_eq!(
        w.metrics()
            .events_invalid
            .with_label_values(&["timestamp_too_old"])
            .get(),
        3
    );
    for c in 0..3 {
        let v = customer_with_events(
            w.http,
            &format!("c{c}"),
            Some(as_of),
            60,
            Duration::from_secs(5),
        );
        assert!(
            v["reasons"]
                .as_array()
                .is_none_or(|r| r.iter().all(|r| r["factor"] != "tenure"
                    || r["points"].as_f64().is_some_and(|p| p.abs() < 1.0))),
            "tenure not pinned: {v}"
        );
    }
    w.stop().expect("clean stop");
    let dlq = read_topic(&bootstrap, "churn-events-dlq", 3, Duration::from_secs(10));
    let got: Vec<(String, String)> = dlq
        .iter()
        .map(|m| {
            (
                m.headers.get("reason").cloned().unwrap_or_default(),
                String::from_utf8_lossy(m.value.as_deref().unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = too_old
        .iter()
        .map(|l| ("timestamp_too_old".to_string(), l.to_string()))
        .collect();
    assert_eq!(got, want);
}
