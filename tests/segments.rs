//! Segments (issue 16, item 3): customers grouped by an event property, each
//! group with its own thresholds. On the mock cluster: the same behaviour
//! alerts in one segment and not in another, alerts and `/v1` name the
//! segment, and a restart keeps it. Offline: `backtest` reports figures per
//! segment.

mod support;

use std::time::{Duration, Instant};

use churn_analysis::backtest::{run_backtest, write_json, write_text};
use churn_analysis::labels::Labels;
use churn_core::alert::Alert;
use churn_core::event::format_timestamp_ms;
use churn_core::model::{DEFAULT_MODEL_TOML, RiskModel};
use support::*;

/// The default model (at-risk 75, recovery 55) with segments by `plan`:
/// enterprise accounts alert at 60, free ones at 90, any other plan (or
/// none) is `self-serve` with the default thresholds.
const SEGMENTS: &str = r#"
[segments]
property = "plan"
default = "self-serve"

[segments.values.enterprise]
at_risk_threshold = 60.0
recovery_threshold = 40.0

[segments.values.free]
at_risk_threshold = 90.0
"#;

fn segmented_text() -> String {
    format!("{DEFAULT_MODEL_TOML}\n{SEGMENTS}")
}

/// An event line, with `properties: {"plan": plan}` when a plan is given.
fn event_on(customer: &str, kind: &str, t_ms: i64, plan: Option<&str>) -> String {
    let mut v = serde_json::json!({
        "customer_id": customer,
        "event_type": kind,
        "timestamp": format_timestamp_ms(t_ms),
    });
    if let Some(plan) = plan {
        v["properties"] = serde_json::json!({ "plan": plan, "country": "DE" });
    }
    v.to_string()
}

/// A login on `plan`, then a complaint a day later (no properties): risk
/// 68 under the default model, between the enterprise threshold (60) and
/// the default one (75).
fn journey(customer: &str, plan: &str, from_ms: i64) -> Vec<String> {
    vec![
        event_on(customer, "login", from_ms, Some(plan)),
        event_on(customer, "complaint", from_ms + DAY_MS, None),
    ]
}

/// Waits until the worker's group has committed every input offset: the
/// worker stores an offset only once every alert its events caused is
/// acknowledged, so the alerts topic then holds all of them.
fn wait_all_committed(bootstrap: &str, partitions: i32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let done = (0..partitions).all(|p| {
            let end = high_watermark(bootstrap, "customer-events", p);
            end == 0
                || committed_offset(bootstrap, "churn-scorer", "customer-events", p) == Some(end)
        });
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the commits"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn at_risk_ids(alerts: &[Alert]) -> Vec<&str> {
    let mut ids: Vec<&str> = alerts
        .iter()
        .filter(|a| a.kind == "at_risk")
        .map(|a| a.customer_id.as_str())
        .collect();
    ids.sort_unstable();
    ids
}

#[test]
fn segment_thresholds_change_which_customers_alert_and_survive_a_restart() {
    let broker = broker(2);
    let bootstrap = broker.bootstrap_servers().to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let model_path = dir.path().join("model.toml");
    std::fs::write(&model_path, segmented_text()).expect("write model");
    let model = RiskModel::load(&model_path).expect("valid model");
    let mut config = worker_config(&bootstrap);
    config.model.path = Some(model_path);
    config.pipeline.threads = 2;
    // The clock moves with events only: no silence step fires on the wall
    // clock's account (event times are in 2025) while the test runs.
    config.engine.idle_timeout_secs = 3600;

    // Identical behaviour on three plans; "startup" is not declared.
    let mut lines = journey("ent-1", "enterprise", T0_MS);
    lines.extend(journey("std-1", "startup", T0_MS));
    lines.extend(journey("free-1", "free", T0_MS));
    // Only the first event before the restart: the second comes after it.
    lines.push(event_on("ent-2", "login", T0_MS, Some("enterprise")));
    lines.push(event_on("std-2", "login", T0_MS, Some("startup")));
    produce_events(&bootstrap, "customer-events", &lines);

    let worker = RunningWorker::start(config.clone(), model.clone());
    let ent = customer_with_events(worker.http, "ent-1", None, 2, Duration::from_secs(30));
    let std = customer_with_events(worker.http, "std-1", None, 2, Duration::from_secs(30));
    let free = customer_with_events(worker.http, "free-1", None, 2, Duration::from_secs(30));
    assert_eq!(ent["segment"], "enterprise");
    assert_eq!(
        std["segment"], "self-serve",
        "an undeclared plan: the default"
    );
    assert_eq!(free["segment"], "free");
    let risk = ent["risk_score"].as_f64().expect("risk");
    assert!(
        (60.0..75.0).contains(&risk),
        "between the thresholds: {risk}"
    );
    for other in [&std, &free] {
        assert_eq!(
            other["risk_score"], ent["risk_score"],
            "identical behaviour"
        );
    }
    // The band follows the segment's thresholds too.
    assert_eq!(ent["band"], "high");
    assert_eq!(std["band"], "medium");
    assert_eq!(free["band"], "medium");

    wait_all_committed(&bootstrap, 2, Duration::from_secs(30));
    let alerts = read_alerts(&bootstrap, Duration::from_secs(2));
    assert_eq!(at_risk_ids(&alerts), ["ent-1"], "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!(alert.segment.as_deref(), Some("enterprise"));
    assert_eq!(alert.threshold, 60.0);
    worker.stop().expect("clean stop");

    // Restored from the changelog: the segment is kept, and still decides.
    let worker = RunningWorker::start(config, model);
    worker.wait_until("ready", Duration::from_secs(30), |w| {
        w.handles.directory.is_ready()
    });
    let ent = customer_with_events(worker.http, "ent-1", None, 2, Duration::from_secs(30));
    assert_eq!(ent["segment"], "enterprise", "kept across the restart");
    let ent2 = customer_with_events(worker.http, "ent-2", None, 1, Duration::from_secs(30));
    assert_eq!(ent2["segment"], "enterprise");
    produce_events(
        &bootstrap,
        "customer-events",
        &[
            event_on("ent-2", "complaint", T0_MS + DAY_MS, None),
            event_on("std-2", "complaint", T0_MS + DAY_MS, None),
        ],
    );
    customer_with_events(worker.http, "ent-2", None, 2, Duration::from_secs(30));
    let std2 = customer_with_events(worker.http, "std-2", None, 2, Duration::from_secs(30));
    assert_eq!(std2["segment"], "self-serve");
    wait_all_committed(&bootstrap, 2, Duration::from_secs(30));
    let alerts = read_alerts(&bootstrap, Duration::from_secs(2));
    assert_eq!(at_risk_ids(&alerts), ["ent-1", "ent-2"], "{alerts:?}");
    assert!(
        alerts
            .iter()
            .all(|a| a.segment.as_deref() == Some("enterprise")),
        "{alerts:?}"
    );
    worker.stop().expect("clean stop");
}

#[test]
fn a_reload_keeps_each_customers_segment_by_name() {
    const ADMIN: &str = "s3cret-admin";
    let broker = broker(2);
    let bootstrap = broker.bootstrap_servers().to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let model_path = dir.path().join("model.toml");
    std::fs::write(&model_path, segmented_text()).expect("write model");
    let model = RiskModel::load(&model_path).expect("valid model");
    let mut config = worker_config(&bootstrap);
    config.model.path = Some(model_path.clone());
    config.http.admin_token = Some(ADMIN.into());
    config.pipeline.threads = 2;
    config.engine.idle_timeout_secs = 3600;
    let worker = RunningWorker::start(config, model);
    produce_events(
        &bootstrap,
        "customer-events",
        &[
            event_on("ent-1", "login", T0_MS, Some("enterprise")),
            event_on("free-1", "login", T0_MS, Some("free")),
        ],
    );
    customer_with_events(worker.http, "ent-1", None, 1, Duration::from_secs(30));
    customer_with_events(worker.http, "free-1", None, 1, Duration::from_secs(30));

    // The new model declares a value sorting first (every index moves),
    // moves enterprise's threshold to 65 and no longer declares free.
    let next = format!(
        "{}\n[segments.values.aaa]\n",
        segmented_text()
            .replace("default-2026.12", "segments-2")
            .replace("at_risk_threshold = 60.0", "at_risk_threshold = 65.0")
            .replace("[segments.values.free]\nat_risk_threshold = 90.0\n", "")
    );
    let reloaded = RiskModel::from_toml(&next).expect("valid model");
    assert_eq!(reloaded.version(), "segments-2");
    assert_eq!(
        reloaded.segment_names(),
        ["self-serve", "aaa", "enterprise"]
    );
    std::fs::write(&model_path, &next).expect("write model");
    let (status, body) = http_request(worker.http, "POST", "/admin/reload", Some(ADMIN));
    assert_eq!(status, 200, "{body}");
    let ent = customer_with_events(worker.http, "ent-1", None, 1, Duration::from_secs(5));
    assert_eq!(ent["model_version"], "segments-2");
    assert_eq!(ent["segment"], "enterprise", "found again by name");
    let free = customer_with_events(worker.http, "free-1", None, 1, Duration::from_secs(5));
    assert_eq!(
        free["segment"], "self-serve",
        "no longer declared: the default"
    );

    produce_events(
        &bootstrap,
        "customer-events",
        &[
            event_on("ent-1", "complaint", T0_MS + DAY_MS, None),
            event_on("free-1", "complaint", T0_MS + DAY_MS, None),
        ],
    );
    customer_with_events(worker.http, "ent-1", None, 2, Duration::from_secs(30));
    customer_with_events(worker.http, "free-1", None, 2, Duration::from_secs(30));
    wait_all_committed(&bootstrap, 2, Duration::from_secs(30));
    let alerts = read_alerts(&bootstrap, Duration::from_secs(2));
    assert_eq!(at_risk_ids(&alerts), ["ent-1"], "{alerts:?}");
    assert_eq!(alerts[0].segment.as_deref(), Some("enterprise"));
    assert_eq!(alerts[0].threshold, 65.0);
    assert_eq!(alerts[0].model_version, "segments-2");
    worker.stop().expect("clean stop");
}

#[test]
fn alerts_of_a_model_without_segments_say_null_and_keep_their_ids() {
    let model = RiskModel::default_model();
    let mut store = churn_core::engine::CustomerStore::new();
    // Properties are not read without [segments]: the plan changes nothing.
    let mut alerts = Vec::new();
    for line in journey("c", "enterprise", T0_MS).iter().chain(&[
        event_on("c", "complaint", T0_MS + DAY_MS + 1, None),
        event_on("c", "complaint", T0_MS + DAY_MS + 2, None),
    ]) {
        let event = churn_core::event::parse_event(line.as_bytes()).expect("valid");
        if let churn_core::engine::ApplyOutcome::Scored {
            customer,
            decision: Some(decision),
            ..
        } = store.apply(&model, &event, None, true)
        {
            let explanation = store
                .state(customer)
                .explain(&model, decision.event_time_ms);
            alerts.push(Alert::new("c", &decision, &explanation, &model));
        }
    }
    let alert = alerts.first().expect("an alert at 75");
    assert_eq!(alert.threshold, 75.0);
    assert_eq!(alert.segment, None);
    let json: serde_json::Value = serde_json::from_slice(&alert.to_json()).expect("json");
    assert!(json["segment"].is_null() && json.get("segment").is_some());
    assert_eq!(
        alert.alert_id,
        churn_core::alert::alert_id("c", "at_risk", T0_MS + DAY_MS + 1, model.version())
    );
}

#[test]
fn backtest_reports_figures_per_segment() {
    let model = RiskModel::from_toml(&segmented_text()).expect("valid");
    let mut lines = Vec::new();
    let mut labels = Vec::new();
    // Per plan: three who complained (and churned), three who bought (and stayed).
    for plan in ["enterprise", "free", "startup"] {
        for i in 0..3 {
            let id = format!("{plan}-churned-{i}");
            lines.extend(journey(&id, plan, T0_MS + i * 60_000));
            labels.push((id, true));
            let id = format!("{plan}-retained-{i}");
            lines.push(event_on(&id, "login", T0_MS, Some(plan)));
            lines.push(event_on(&id, "purchase", T0_MS + DAY_MS, None));
            labels.push((id, false));
        }
    }
    let events = lines.join("\n");
    let labels = Labels::from_pairs(labels.iter().map(|(id, c)| (id.as_str(), *c)));
    let cutoff = T0_MS + 2 * DAY_MS;
    let bt =
        run_backtest(&model, events.as_bytes(), &labels, cutoff, true, |_| {}).expect("backtest");
    let s = &bt.summary;
    let names: Vec<&str> = s.segments.iter().map(|g| g.segment.as_str()).collect();
    assert_eq!(names, ["self-serve", "enterprise", "free"]);
    for g in &s.segments {
        assert_eq!((g.labelled, g.churned, g.scored), (6, 3, 6), "{g:?}");
        assert_eq!(g.roc_auc, Some(1.0), "{g:?}");
    }
    let alerted = |name: &str| {
        let g = s.segments.iter().find(|g| g.segment == name).expect(name);
        (g.alerts.threshold, g.alerts.customers, g.alerts.precision)
    };
    // The complainers score 68: only at the enterprise threshold are they alerted.
    assert_eq!(alerted("enterprise"), (60.0, 3, Some(1.0)));
    assert_eq!(alerted("self-serve"), (75.0, 0, None));
    assert_eq!(alerted("free"), (90.0, 0, None));
    assert_eq!(s.alerts.customers, 3, "each at its own segment's threshold");
    assert_eq!(s.alerts.recall, Some(3.0 / 9.0));

    let mut text = Vec::new();
    write_text(s, &mut text).expect("in memory");
    let text = String::from_utf8(text).expect("utf-8");
    assert!(text.contains("per segment"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("enterprise") && l.contains("60.0")),
        "{text}"
    );
    let mut json = Vec::new();
    write_json(s, &mut json).expect("in memory");
    let v: serde_json::Value = serde_json::from_slice(&json).expect("json");
    assert_eq!(v["segments"][1]["segment"], "enterprise");
    assert_eq!(v["segments"][1]["alerts"]["customers"], 3);
    let html = churn_analysis::report::render_html(&bt, "segments", &[]).expect("report renders");
    assert!(
        html.contains("<h2 id=\"segments\">Segments</h2>")
            && html.contains("<td class=\"name\">enterprise</td>"),
        "the report has a table per segment"
    );

    // A model without segments reports none.
    let plain = run_backtest(
        &RiskModel::default_model(),
        events.as_bytes(),
        &labels,
        cutoff,
        true,
        |_| {},
    )
    .expect("backtest");
    let mut json = Vec::new();
    write_json(&plain.summary, &mut json).expect("in memory");
    let v: serde_json::Value = serde_json::from_slice(&json).expect("json");
    assert!(v.get("segments").is_none());
}
