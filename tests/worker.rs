//! The live worker against librdkafka's mock cluster, in process.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use churn_core::alert::{Alert, alert_id};
use churn_core::engine::{ApplyOutcome, CustomerStore};
use churn_core::event::parse_event;
use churn_core::model::RiskModel;
use support::*;

/// Customers whose complaints push them over the threshold within a few
/// days (no inactivity timer is due within the span), and calm ones.
fn short_history() -> Vec<String> {
    let mut lines = Vec::new();
    for day in 0..5 {
        for c in 0..30 {
            let id = format!("cust-{c:03}");
            let t = T0_MS + day * DAY_MS + c * 60_000;
            let kind = if c % 3 == 0 && day >= 2 {
                "complaint"
            } else if c % 3 == 1 {
                "purchase"
            } else {
                "login"
            };
            let amount = (kind == "purchase").then_some(20.0);
            lines.push(event(&id, kind, t, amount));
        }
    }
    lines
}

/// The alerts the engine decides for these lines, applied in order.
fn expected_alerts(model: &RiskModel, lines: &[String]) -> BTreeSet<(String, String, String)> {
    let mut store = CustomerStore::new();
    let mut out = BTreeSet::new();
    for line in lines {
        let Ok(e) = parse_event(line.as_bytes()) else {
            continue;
        };
        if let ApplyOutcome::Scored {
            decision: Some(d), ..
        } = store.apply(model, &e, None, true)
        {
            let id = alert_id(
                &e.customer_id,
                d.kind.as_str(),
                d.event_time_ms,
                model.version(),
            );
            out.insert((e.customer_id.to_string(), d.kind.as_str().to_string(), id));
        }
    }
    out
}

#[test]
fn events_in_alerts_out_with_keys_json_and_deterministic_ids() {
    let broker = broker(4);
    let bootstrap = broker.bootstrap_servers().to_string();
    let model = RiskModel::default_model();
    let lines = short_history();
    let expected = expected_alerts(&model, &lines);
    assert!(!expected.is_empty(), "the data must produce alerts");
    produce_events(&bootstrap, "customer-events", &lines);

    let worker = RunningWorker::start(worker_config(&bootstrap), model.clone());
    worker.wait_until("all events consumed", Duration::from_secs(30), |w| {
        w.metrics().events_consumed.get() == lines.len() as u64
    });
    let read = read_topic(
        &bootstrap,
        "churn-alerts",
        expected.len(),
        Duration::from_secs(20),
    );
    let mut got = BTreeSet::new();
    for r in &read {
        let alert: Alert = serde_json::from_slice(r.value.as_deref().expect("payload"))
            .expect("alert is valid JSON");
        assert_eq!(
            r.key.as_deref(),
            Some(alert.customer_id.as_str()),
            "keyed by customer"
        );
        assert_eq!(
            r.headers.get("schema_version").map(String::as_str),
            Some("3")
        );
        assert_eq!(alert.schema_version, 3);
        assert!(!alert.summary.is_empty() && alert.summary.len() <= 3);
        assert_eq!(alert.model_version, model.version());
        // Schema 2: one decimal, the base is in `points` but not a reason.
        let sum: f64 = alert.reasons.iter().map(|x| x.points).sum();
        let base = model.spec().score.base_points;
        let slack = 0.05 * (alert.reasons.len() as f64 + 2.0);
        assert!(
            (sum + base - alert.points).abs() <= slack,
            "reasons add up to the points"
        );
        assert!(
            (model.risk_from_points(alert.points) - alert.risk_score).abs() <= 0.25,
            "points map to the score"
        );
        got.insert((alert.customer_id, alert.kind, alert.alert_id));
    }
    assert_eq!(got, expected);
    worker.stop().expect("clean stop");
}

#[test]
fn bad_messages_go_to_the_dead_letter_topic_and_good_ones_still_score() {
    let broker = broker(2);
    let bootstrap = broker.bootstrap_servers().to_string();
    let model = RiskModel::default_model();
    let good = short_history();
    let bad: Vec<(String, Vec<u8>, &str)> = vec![
        ("k1".into(), b"{not json".to_vec(), "malformed_json"),
        ("k2".into(), b"[1,2,3]".to_vec(), "not_an_object"),
        ("k3".into(), b"\"bare\"".to_vec(), "not_an_object"),
        ("k4".into(), br#"{"customer_id":"x","event_type":"login","timestamp":"yesterday"}"#.to_vec(), "bad_timestamp"),
        ("k5".into(), br#"{"customer_id":"x","event_type":"purchase","timestamp":"2025-01-01T00:00:00Z","amount":-5}"#.to_vec(), "bad_amount"),
        ("k6".into(), br#"{"event_type":"login","timestamp":"2025-01-01T00:00:00Z"}"#.to_vec(), "missing_field"),
        ("k7".into(), vec![0xff, 0xfe, 0x00], "malformed_json"),
    ];
    let mut messages: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, line) in good.iter().enumerate() {
        let key = serde_json::from_str::<serde_json::Value>(line).expect("json")["customer_id"]
            .as_str()
            .expect("id")
            .to_string();
        messages.push((key, line.clone().into_bytes()));
        if let Some((k, v, _)) = bad.get(i / 20).filter(|_| i % 20 == 7) {
            messages.push((k.clone(), v.clone()));
        }
    }
    produce(&bootstrap, "customer-events", &messages);
    let worker = RunningWorker::start(worker_config(&bootstrap), model.clone());
    worker.wait_until("all messages consumed", Duration::from_secs(30), |w| {
        w.metrics().events_consumed.get() == messages.len() as u64
    });
    let dead = read_topic(
        &bootstrap,
        "churn-events-dlq",
        bad.len(),
        Duration::from_secs(20),
    );
    assert_eq!(dead.len(), bad.len());
    for (key, value, reason) in &bad {
        let d = dead
            .iter()
            .find(|d| d.key.as_deref() == Some(key.as_str()))
            .unwrap_or_else(|| panic!("dead letter for {key}"));
        assert_eq!(
            d.value.as_deref(),
            Some(value.as_slice()),
            "original bytes kept"
        );
        assert_eq!(d.headers.get("reason").map(String::as_str), Some(*reason));
        assert_eq!(
            d.headers.get("source_topic").map(String::as_str),
            Some("customer-events")
        );
        assert!(
            d.headers.contains_key("source_partition") && d.headers.contains_key("source_offset")
        );
    }
    worker.wait_until("dead letters counted", Duration::from_secs(10), |w| {
        w.metrics()
            .dead_letters
            .with_label_values(&["not_an_object"])
            .get()
            == 2
    });
    assert_eq!(
        worker
            .metrics()
            .events_invalid
            .with_label_values(&["malformed_json"])
            .get(),
        2
    );
    // The good customers score exactly as offline over the good lines alone.
    let as_of = T0_MS + 10 * DAY_MS;
    let offline = offline_scores(&model, &good, as_of);
    for (id, (score, events)) in &offline {
        let (status, body) = http_get(
            worker.http,
            &format!(
                "/v1/customers/{id}?as_of={}",
                churn_core::event::format_timestamp_ms(as_of)
            ),
            None,
        );
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_close(v["risk_score"].as_f64().expect("score"), *score, id);
        assert_eq!(v["events"].as_u64(), Some(u64::from(*events)));
    }
    worker.stop().expect("clean stop");
}

#[test]
fn a_restarted_worker_resumes_from_committed_offsets_without_skipping_or_rereading() {
    let broker = broker(3);
    let bootstrap = broker.bootstrap_servers().to_string();
    let model = RiskModel::default_model();
    let all = short_history();
    let (first, second) = all.split_at(all.len() / 2);
    produce_events(&bootstrap, "customer-events", first);
    let w1 = RunningWorker::start(worker_config(&bootstrap), model.clone());
    w1.wait_until("first half consumed", Duration::from_secs(30), |w| {
        w.metrics().events_consumed.get() == first.len() as u64
    });
    w1.stop().expect("clean stop");

    produce_events(&bootstrap, "customer-events", second);
    let w2 = RunningWorker::start(worker_config(&bootstrap), model.clone());
    w2.wait_until("second half consumed", Duration::from_secs(30), |w| {
        w.metrics().events_consumed.get() >= second.len() as u64
    });
    // Nothing re-read: the second worker consumed exactly the second half...
    assert_eq!(w2.metrics().events_consumed.get(), second.len() as u64);
    assert_eq!(w2.metrics().events_duplicate.get(), 0);
    // ...and every customer's state holds all of their events (restored + new).
    let as_of = T0_MS + 30 * DAY_MS;
    let offline = offline_scores(&model, &all, as_of);
    let ts = churn_core::event::format_timestamp_ms(as_of);
    for (id, (score, events)) in &offline {
        let (status, body) = http_get(w2.http, &format!("/v1/customers/{id}?as_of={ts}"), None);
        assert_eq!(status, 200, "{id}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["events"].as_u64(), Some(u64::from(*events)), "{id}");
        assert_close(v["risk_score"].as_f64().expect("score"), *score, id);
    }
    assert!(w2.metrics().state_restored_customers.get() > 0);
    w2.stop().expect("clean stop");
}

#[test]
fn a_quiet_customer_gets_an_inactivity_alert_without_a_new_event() {
    let broker = broker(1);
    let bootstrap = broker.bootstrap_servers().to_string();
    let model = RiskModel::default_model();
    let mut lines = Vec::new();
    // "quiet" logs in daily for ten days, then goes silent; "busy" keeps
    // going for ninety days, moving the partition's event-time clock.
    for day in 0..90 {
        let t = T0_MS + day * DAY_MS;
        if day < 10 {
            lines.push(event("quiet", "login", t, None));
        }
        lines.push(event("busy", "login", t + 1000, None));
    }
    produce_events(&bootstrap, "customer-events", &lines);

    // The first inactivity step at which the engine puts "quiet" at risk.
    let mut store = CustomerStore::new();
    for l in lines.iter().filter(|l| l.contains("\"quiet\"")) {
        store.apply(
            &model,
            &parse_event(l.as_bytes()).expect("valid"),
            None,
            true,
        );
    }
    let state = store.get("quiet").expect("quiet");
    let last = state.last_event_ms();
    let threshold = model.alert_policy().at_risk_threshold;
    // Silence steps in days and in the customer's own gaps, in time order.
    let rhythm = state.rhythm(&model);
    let due = std::iter::successors(model.next_silence_step(last, &rhythm, last + 1), |&t| {
        model.next_silence_step(last, &rhythm, t + 1)
    })
    .find(|&t| state.risk(&model, t) >= threshold)
    .expect("silence puts the quiet customer at risk");
    assert!(
        due < T0_MS + 89 * DAY_MS,
        "the busy customer's clock passes it"
    );

    let worker = RunningWorker::start(worker_config(&bootstrap), model.clone());
    let alerts = read_topic(&bootstrap, "churn-alerts", 1, Duration::from_secs(30));
    let quiet: Vec<Alert> = alerts
        .iter()
        .filter_map(|r| serde_json::from_slice::<Alert>(r.value.as_deref()?).ok())
        .filter(|a| a.customer_id == "quiet")
        .collect();
    assert_eq!(quiet.len(), 1, "{alerts:?}");
    assert_eq!(quiet[0].kind, "at_risk");
    assert_eq!(
        quiet[0].event_time,
        churn_core::event::format_timestamp_ms(due)
    );
    assert!(
        quiet[0]
            .reasons
            .iter()
            .any(|r| (r.factor == "inactivity" || r.factor == "rhythm") && r.points > 0.0)
    );
    assert!(worker.metrics().inactivity_timers_fired.get() > 0);
    worker.stop().expect("clean stop");
}

#[test]
fn http_endpoints_answer_as_documented() {
    let broker = broker(2);
    let bootstrap = broker.bootstrap_servers().to_string();
    let model = RiskModel::default_model();
    let lines = short_history();
    produce_events(&bootstrap, "customer-events", &lines);
    let mut config = worker_config(&bootstrap);
    config.http.bearer_token = Some("t0ken".into());
    let worker = RunningWorker::start(config, model.clone());
    worker.wait_until("all consumed", Duration::from_secs(30), |w| {
        w.metrics().events_consumed.get() == lines.len() as u64
    });
    let (s, body) = http_get(worker.http, "/healthz", None);
    assert_eq!((s, body.as_str()), (200, "ok\n"));
    let (s, body) = http_get(worker.http, "/readyz", None);
    assert_eq!(s, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["partitions"].as_array().map(Vec::len), Some(2));

    let (s, metrics) = http_get(worker.http, "/metrics", None);
    assert_eq!(s, 200);
    for family in [
        "churn_scorer_events_consumed_total",
        "churn_scorer_alerts_published_total",
        "churn_scorer_processing_latency_seconds_bucket",
        "churn_scorer_customers_tracked",
        "churn_scorer_risk_score_bucket",
        "churn_scorer_build_info",
        "churn_scorer_partitions_assigned",
        "churn_scorer_state_restore_seconds_count",
    ] {
        assert!(metrics.contains(family), "{family} missing from /metrics");
    }

    let path = "/v1/customers/cust-003";
    assert_eq!(http_get(worker.http, path, None).0, 401);
    assert_eq!(http_get(worker.http, path, Some("nope")).0, 401);
    let (s, body) = http_get(worker.http, path, Some("t0ken"));
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["customer_id"], "cust-003");
    assert!(v["reasons"].as_array().is_some_and(|r| !r.is_empty()));
    assert!(v["features"]["events"].as_u64().is_some());
    assert_eq!(
        http_get(worker.http, "/v1/customers/nobody", Some("t0ken")).0,
        404
    );
    worker.stop().expect("clean stop");
}

#[test]
fn an_outside_client_reads_the_alerts() {
    if std::process::Command::new("kcat")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("kcat not installed (.ci/run installs it): skipping");
        return;
    }
    let broker = broker(2);
    let bootstrap = broker.bootstrap_servers().to_string();
    let model = RiskModel::default_model();
    let lines = short_history();
    let expected = expected_alerts(&model, &lines);
    produce_events(&bootstrap, "customer-events", &lines);
    let worker = RunningWorker::start(worker_config(&bootstrap), model);
    worker.wait_until("alerts published", Duration::from_secs(30), |w| {
        w.metrics()
            .alerts_published
            .with_label_values(&["at_risk"])
            .get() as usize
            >= expected.len()
    });
    let out = std::process::Command::new("kcat")
        .args([
            "-C",
            "-b",
            &bootstrap,
            "-t",
            "churn-alerts",
            "-o",
            "beginning",
            "-e",
            "-q",
        ])
        .args(["-f", "%k\t%s\n"])
        .output()
        .expect("kcat runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    let mut by_key: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (key, json) = line.split_once('\t').expect("key and value");
        let alert: Alert = serde_json::from_str(json).expect("valid alert JSON");
        assert_eq!(key, alert.customer_id);
        by_key.insert(alert.alert_id.clone(), key.to_string());
    }
    let want: BTreeMap<String, String> = expected.into_iter().map(|(c, _, id)| (id, c)).collect();
    assert_eq!(by_key, want);
    worker.stop().expect("clean stop");
}
