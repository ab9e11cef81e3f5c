//! Alert JSON schema version 3: a `summary` of at most three sentences with
//! numbers; labels (placeholders filled) next to factor codes, one decimal,
//! no `base` reason, `previous_score` null for a first scoring, recovered
//! alerts led by what lowered the risk; docs/schemas/alert.schema.json
//! agrees, and version 2 stays documented beside it.

use churn_core::alert::{ALERT_SCHEMA_VERSION, Alert, alert_id};
use churn_core::engine::{AlertKind, ApplyOutcome, CustomerStore};
use churn_core::event::{format_timestamp_ms, parse_event};
use churn_core::model::{DEFAULT_MODEL_TOML, RiskModel};

const DAY_MS: i64 = 86_400_000;
/// 2025-01-01T00:00:00Z
const T0_MS: i64 = 1_735_689_600_000;

fn line(customer: &str, kind: &str, t_ms: i64) -> String {
    format!(
        r#"{{"customer_id":"{customer}","event_type":"{kind}","timestamp":"{}"}}"#,
        format_timestamp_ms(t_ms)
    )
}

/// Replays `events` of one customer and returns every alert, built as the worker builds them.
fn alerts(model: &RiskModel, events: &[(&str, i64)]) -> Vec<Alert> {
    let mut store = CustomerStore::new();
    let mut out = Vec::new();
    for (i, (kind, t)) in events.iter().enumerate() {
        let text = line("c-1", kind, *t);
        let event = parse_event(text.as_bytes()).expect("valid event");
        if let ApplyOutcome::Scored {
            customer,
            decision: Some(decision),
            ..
        } = store.apply(model, &event, Some(i as i64), true)
        {
            let explanation = store.state(customer).explain(model, decision.event_time_ms);
            out.push(Alert::new("c-1", &decision, &explanation, model));
        }
    }
    out
}

fn labelled_model() -> RiskModel {
    let text = DEFAULT_MODEL_TOML.replace(
        "label = \"Payment failed ({count}× recently)\"",
        "label = \"Card declined {count} times\"",
    );
    RiskModel::from_toml(&text).expect("valid model")
}

fn journey() -> Vec<(&'static str, i64)> {
    let mut events = vec![("session", T0_MS)];
    // A new customer whose first events are bad news: at risk at once.
    events.push(("payment_failed", T0_MS + DAY_MS));
    events.push(("payment_failed", T0_MS + DAY_MS + 500));
    events.push(("subscription_cancelled", T0_MS + DAY_MS + 1000));
    // Then they come back: renewals and purchases bring the risk down.
    for i in 0..12 {
        events.push(("renewal", T0_MS + 3 * DAY_MS + i * 1000));
        events.push(("purchase", T0_MS + 3 * DAY_MS + i * 1000 + 500));
    }
    events
}

fn has_one_decimal(x: f64) -> bool {
    ((x * 10.0).round() - x * 10.0).abs() < 1e-9
}

#[test]
fn at_risk_alert_is_readable_by_a_marketer() {
    let model = labelled_model();
    let alerts = alerts(&model, &journey());
    let at_risk = alerts
        .iter()
        .find(|a| a.kind == "at_risk")
        .expect("an at-risk alert");
    assert_eq!(at_risk.schema_version, 3);
    assert_eq!(ALERT_SCHEMA_VERSION, 3);
    // The summary: the reasons that raised the risk, in words with numbers.
    assert!(!at_risk.summary.is_empty() && at_risk.summary.len() <= 3);
    let raising: Vec<&str> = at_risk
        .reasons
        .iter()
        .filter(|r| r.points > 0.0)
        .take(3)
        .map(|r| r.label.as_str())
        .collect();
    assert_eq!(at_risk.summary, raising, "{at_risk:?}");
    assert_eq!(at_risk.summary[0], "Card declined 2 times");
    assert!(
        at_risk.reasons.iter().all(|r| r.factor != "base"),
        "base is not a reason: {at_risk:?}"
    );
    let payment = at_risk
        .reasons
        .iter()
        .find(|r| r.factor == "event:payment_failed")
        .expect("payment reason");
    assert_eq!(
        payment.label, "Card declined 2 times",
        "label from the model file"
    );
    let session = at_risk
        .reasons
        .iter()
        .find(|r| r.factor == "event:session")
        .expect("session reason");
    assert_eq!(session.label, "Visited or used the app (1× recently)");
    assert!(session.points < 0.0);
    assert_eq!(
        at_risk.reasons[0].factor, "event:payment_failed",
        "largest risk first"
    );
    let points: Vec<f64> = at_risk.reasons.iter().map(|r| r.points).collect();
    let mut sorted = points.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    assert_eq!(points, sorted, "at_risk: largest first");
    for x in [at_risk.risk_score, at_risk.points]
        .into_iter()
        .chain(at_risk.reasons.iter().map(|r| r.points))
    {
        assert!(has_one_decimal(x), "{x} is rounded to one decimal");
    }
    let json: serde_json::Value = serde_json::from_slice(&at_risk.to_json()).expect("json");
    let text = json.to_string();
    assert!(!text.contains("\"base\""), "{text}");
    // Numbers print short: no 15-digit floats.
    let mut numbers = vec![
        &json["risk_score"],
        &json["previous_score"],
        &json["points"],
    ];
    numbers.extend(
        json["reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .map(|r| &r["points"]),
    );
    for n in numbers.into_iter().filter(|n| !n.is_null()) {
        let printed = n.to_string();
        assert!(
            printed.split('.').nth(1).is_none_or(|d| d.len() <= 1),
            "{printed} in {text}"
        );
    }
    // Scored before (the session): the previous score is a number.
    assert!(
        at_risk
            .previous_score
            .is_some_and(|p| p > 0.0 && has_one_decimal(p))
    );
    // The id is the idempotency key of schema 1, unchanged.
    assert_eq!(
        at_risk.alert_id,
        alert_id(
            "c-1",
            "at_risk",
            churn_core::event::parse_timestamp_ms(&at_risk.event_time).expect("time"),
            model.version()
        )
    );
}

#[test]
fn first_scoring_has_a_null_previous_score() {
    let model = RiskModel::default_model();
    let alerts = alerts(&model, &[("subscription_cancelled", T0_MS)]);
    let a = alerts.first().expect("an alert on the first event");
    assert_eq!(a.kind, "at_risk");
    assert_eq!(a.previous_score, None);
    let json: serde_json::Value = serde_json::from_slice(&a.to_json()).expect("json");
    assert!(json["previous_score"].is_null());
    let later = alerts_after_history(&model);
    assert!(later.previous_score.is_some_and(|p| p > 0.0));
}

fn alerts_after_history(model: &RiskModel) -> Alert {
    alerts(model, &journey())
        .into_iter()
        .find(|a| a.kind == "recovered")
        .expect("a recovered alert")
}

#[test]
fn recovered_alert_leads_with_what_lowered_the_risk() {
    let model = RiskModel::default_model();
    let recovered = alerts_after_history(&model);
    assert_eq!(recovered.kind, "recovered");
    let first = recovered.reasons.first().expect("reasons");
    assert!(first.points < 0.0, "{:?}", recovered.reasons);
    let points: Vec<f64> = recovered.reasons.iter().map(|r| r.points).collect();
    let mut sorted = points.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(points, sorted, "most negative first");
    assert!(recovered.reasons.iter().all(|r| !r.label.is_empty()));
    // A recovery is summarised by what lowered the risk.
    assert!(!recovered.summary.is_empty() && recovered.summary.len() <= 3);
    let lowering: Vec<&str> = recovered
        .reasons
        .iter()
        .filter(|r| r.points < 0.0)
        .take(3)
        .map(|r| r.label.as_str())
        .collect();
    assert_eq!(recovered.summary, lowering);
    assert!(
        recovered.summary[0].starts_with("Renewed the subscription ("),
        "{:?}",
        recovered.summary
    );
    let _ = AlertKind::Recovered;
}

/// A silent customer's inactivity alert: every sentence about silence
/// says how long, and against what.
#[test]
fn inactivity_alert_says_how_long_and_compared_with_what() {
    let model = RiskModel::default_model();
    let mut store = CustomerStore::new();
    // Every other day for two months, then silence.
    for i in 0..30 {
        let text = line("c-1", "session", T0_MS + i * 2 * DAY_MS);
        let event = parse_event(text.as_bytes()).expect("valid event");
        store.apply(&model, &event, Some(i), true);
    }
    let last = T0_MS + 58 * DAY_MS;
    let mut firings = Vec::new();
    store.fire_due_timers(&model, last + 60 * DAY_MS, &mut firings);
    let decision = firings
        .iter()
        .find_map(|f| f.decision)
        .expect("silence raised an alert");
    let customer = store.find("c-1").expect("customer");
    let explanation = store
        .state(customer)
        .explain(&model, decision.event_time_ms);
    let alert = Alert::new("c-1", &decision, &explanation, &model);
    assert_eq!(alert.cause, "inactivity");
    let features = store
        .state(customer)
        .features(&model, decision.event_time_ms);
    let gap = features
        .usual_gap_days
        .expect("the default model scores rhythm");
    let first = alert.summary.first().expect("a summary");
    assert_eq!(
        first,
        &format!(
            "Quiet for {:.0} days — {:.1}× their usual gap of {:.1} days",
            features.silence_days,
            features.silence_days / gap,
            gap
        ),
        "{alert:?}"
    );
    for text in alert
        .summary
        .iter()
        .chain(alert.reasons.iter().map(|r| &r.label))
    {
        assert!(!text.contains('{'), "placeholders are filled: {text}");
    }
}

#[test]
fn version_2_alerts_still_read() {
    let mut v2: serde_json::Value = serde_json::from_slice(
        &alerts(
            &RiskModel::default_model(),
            &[("subscription_cancelled", T0_MS)],
        )[0]
        .to_json(),
    )
    .expect("json");
    let obj = v2.as_object_mut().expect("object");
    obj.remove("summary");
    obj.insert("schema_version".into(), 2.into());
    let read: Alert = serde_json::from_value(v2).expect("a version 2 alert reads");
    assert!(read.summary.is_empty());
}

#[test]
fn json_schema_documents_version_3_and_keeps_versions_2_and_1() {
    let v3: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/schemas/alert.schema.json"
        ))
        .expect("schema v3"),
    )
    .expect("json");
    assert_eq!(v3["properties"]["schema_version"]["const"], 3);
    assert_eq!(v3["properties"]["summary"]["maxItems"], 3);
    let v2: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/schemas/alert.v2.schema.json"
        ))
        .expect("schema v2"),
    )
    .expect("json");
    assert_eq!(v2["properties"]["schema_version"]["const"], 2);
    // Version 3 is version 2 plus `summary`: nothing else changed.
    let mut v3_without_summary = v3["properties"].clone();
    let props = v3_without_summary.as_object_mut().expect("properties");
    props.remove("summary");
    let keys = |v: &serde_json::Value| {
        v.as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&v3_without_summary), keys(&v2["properties"]));
    let v2 = v3;
    let reason = &v2["properties"]["reasons"]["items"];
    let required: Vec<&str> = reason["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(required, ["factor", "label", "points"]);
    let prev = v2["properties"]["previous_score"]["type"].to_string();
    assert!(prev.contains("null"), "{prev}");
    assert_eq!(
        v2["properties"]["cause"]["enum"],
        serde_json::json!(["event", "inactivity", "late_activity"])
    );
    assert_eq!(
        v2["properties"]["segment"]["type"],
        serde_json::json!(["string", "null"])
    );
    // Every property the worker writes is documented, and every required one is written.
    let model = RiskModel::default_model();
    let alert = alerts(&model, &[("subscription_cancelled", T0_MS)]).remove(0);
    let json: serde_json::Value = serde_json::from_slice(&alert.to_json()).expect("json");
    let props = v2["properties"].as_object().expect("properties");
    for key in json.as_object().expect("object").keys() {
        assert!(props.contains_key(key), "{key} undocumented");
    }
    for key in v2["required"].as_array().expect("required") {
        let key = key.as_str().expect("str");
        assert!(json.get(key).is_some(), "{key} missing");
    }
    let v1: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/schemas/alert.v1.schema.json"
        ))
        .expect("schema v1"),
    )
    .expect("json");
    assert_eq!(v1["properties"]["schema_version"]["const"], 1);
}
