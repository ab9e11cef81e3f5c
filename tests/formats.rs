//! Input formats (issue 28): the same events written as Segment calls,
//! CloudEvents and an application's own JSON (epoch milliseconds, cents)
//! score and alert exactly as in the native format, offline and through the
//! worker; `inspect` on a file and on a topic; dead letters and `score`
//! name the source that failed.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use churn_core::alert::{Alert, alert_id};
use churn_core::input::InputFormat;
use churn_core::model::RiskModel;
use churn_core::offline::{ScoreOptions, replay_alerts, replay_alerts_with, run_score_with};
use proptest::prelude::*;
use support::{RunningWorker, broker, committed_offset, produce, read_topic, worker_config};

const BIN: &str = env!("CARGO_BIN_EXE_churn-scorer");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).expect("fixture")
}

/// (events file, --input-format, --mapping file) of every non-native fixture.
const FORMATTED: &[(&str, Option<&str>, &str)] = &[
    ("segment.jsonl", Some("segment"), "segment-mapping.toml"),
    (
        "cloudevents.jsonl",
        Some("cloudevents"),
        "cloudevents-mapping.toml",
    ),
    ("app.jsonl", None, "app-mapping.toml"),
];

fn format_of(format: Option<&str>, mapping: &str) -> InputFormat {
    InputFormat::load(format, Some(&fixtures().join(mapping))).expect("fixture mapping")
}

/// `score`'s output (per-customer JSON lines) and its report.
fn score(format: &InputFormat, text: &str) -> (String, String) {
    let mut out = Vec::new();
    let mut report = Vec::new();
    run_score_with(
        format,
        &RiskModel::default_model(),
        text.as_bytes(),
        &mut out,
        &mut report,
        &ScoreOptions {
            as_of_ms: None,
            strict: false,
        },
    )
    .expect("score");
    (
        String::from_utf8(out).expect("utf8"),
        String::from_utf8(report).expect("utf8"),
    )
}

type AlertKey = (String, &'static str, i64, u64);

fn alert_keys(alerts: Vec<churn_core::offline::ReplayedAlert>) -> Vec<AlertKey> {
    alerts
        .into_iter()
        .map(|a| {
            (
                a.customer_id,
                a.decision.kind.as_str(),
                a.decision.event_time_ms,
                a.decision.risk_score.to_bits(),
            )
        })
        .collect()
}

#[test]
fn every_fixture_scores_and_alerts_exactly_as_its_native_twin_offline() {
    let model = RiskModel::default_model();
    let native = read("native.jsonl");
    let (native_scores, _) = score(&InputFormat::Churn, &native);
    let native_alerts = alert_keys(replay_alerts(&model, native.lines().map(str::as_bytes), 0));
    assert_eq!(native_scores.lines().count(), 9, "nine customers");
    assert!(
        native_alerts.len() >= 3,
        "the fixtures must raise alerts: {native_alerts:?}"
    );
    for (file, fmt, mapping) in FORMATTED {
        let format = format_of(*fmt, mapping);
        let text = read(file);
        let (scores, report) = score(&format, &text);
        assert_eq!(scores, native_scores, "{file}: same customers and scores");
        assert!(report.contains("rejected=0"), "{file}: {report}");
        let alerts = alert_keys(replay_alerts_with(
            &format,
            &model,
            text.lines().map(str::as_bytes),
            0,
        ));
        assert_eq!(alerts, native_alerts, "{file}: same alerts, same order");
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("CHURN_SCORER_LOG_FORMAT")
        .stdin(Stdio::null())
        .output()
        .expect("binary runs")
}

fn path(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

#[test]
fn score_reads_a_segment_file_and_names_the_pointer_that_failed() {
    let native = run(&["score", "--events", &path("native.jsonl")]);
    assert!(native.status.success());
    let dir = tempfile::tempdir().expect("dir");
    let with_bad = dir.path().join("segment.jsonl");
    let mut text = read("segment.jsonl");
    text.push_str(
        r#"{"type":"track","event":"Order Completed","timestamp":"2025-03-02T00:00:00Z"}"#,
    );
    text.push('\n');
    std::fs::write(&with_bad, text).expect("write");
    let o = run(&[
        "score",
        "--events",
        &with_bad.display().to_string(),
        "--input-format",
        "segment",
        "--mapping",
        &path("segment-mapping.toml"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, native.stdout, "same scores as the native file");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("line 167: missing_field: /userId or /anonymousId: missing field"),
        "{stderr}"
    );
    assert!(
        stderr.contains("excluded_by_mapping=1") && stderr.contains("(missing_field=1)"),
        "the alias call is left out, the bad line counted under its fixed label: {stderr}"
    );
}

#[test]
fn score_says_a_native_timestamp_lacks_its_offset() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("e.jsonl");
    std::fs::write(
        &file,
        "{\"customer_id\":\"c-1\",\"event_type\":\"login\",\"timestamp\":\"2025-03-01T10:00:00\"}\n",
    )
    .expect("write");
    let o = run(&["score", "--events", &file.display().to_string()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("timestamp has no UTC offset")
            && stderr.contains("add Z or +HH:MM")
            && stderr.contains("iso8601_local")
            && !stderr.contains("premature end of input"),
        "{stderr}"
    );
}

#[test]
fn backtest_and_fit_read_every_format_as_its_native_twin() {
    let dir = tempfile::tempdir().expect("dir");
    let labels = dir.path().join("labels.csv");
    let rows: String = (0..9)
        .map(|c| format!("cust-{c:03},{}\n", u8::from(c % 3 == 0)))
        .collect();
    std::fs::write(&labels, format!("customer_id,churned\n{rows}")).expect("write");
    let labels = labels.display().to_string();
    let backtest = |events: &str, input: &[&str]| {
        let mut args = vec!["backtest", "--events", events, "--labels", &labels];
        args.extend(["--cutoff", "2025-03-08", "--json"]);
        args.extend(input);
        let o = run(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    };
    let fit = |events: &str, input: &[&str], out: &str| {
        let mut args = vec!["fit", "--events", events, "--labels", &labels, "--out", out];
        args.extend([
            "--cutoff",
            "2025-03-08",
            "--min-support",
            "1",
            "--folds",
            "3",
        ]);
        args.extend(input);
        let o = run(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(out).expect("model written")
    };
    let native_events = path("native.jsonl");
    let native_backtest = backtest(&native_events, &[]);
    let native_out = dir.path().join("native.toml").display().to_string();
    let native_model = fit(&native_events, &[], &native_out);
    for (file, fmt, mapping) in FORMATTED {
        let mapping = path(mapping);
        let mut input = vec!["--mapping", mapping.as_str()];
        if let Some(f) = fmt {
            input.extend(["--input-format", f]);
        }
        assert_eq!(
            backtest(&path(file), &input),
            native_backtest,
            "{file}: backtest"
        );
        let out = dir
            .path()
            .join(format!("{file}.toml"))
            .display()
            .to_string();
        assert_eq!(fit(&path(file), &input, &out), native_model, "{file}: fit");
    }
}

#[test]
fn inspect_a_file_shows_outcomes_vocabulary_and_suggested_renames() {
    let o = run(&[
        "inspect",
        "--file",
        &path("segment.jsonl"),
        "--input-format",
        "segment",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    for want in [
        "input format: segment",
        "messages: 166  mapped: 165 (99.4 %)  excluded by the mapping: 1  failed: 0",
        "time range: 2025-03-01T00:00:00.250Z .. 2025-03-10T00:08:30.250Z",
        "\"Order Completed\" = \"purchase\"",
        "\"Payment Failed\" = \"payment_failed\"",
        "[not named by the model (counts as activity only)]",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let o = run(&[
        "inspect",
        "--file",
        &path("segment.jsonl"),
        "--input-format",
        "segment",
        "--mapping",
        &path("segment-mapping.toml"),
        "--json",
    ]);
    assert!(o.status.success());
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(r["mapped"], 165);
    assert_eq!(r["customers"], 9);
    assert_eq!(
        r["suggested_rename"],
        serde_json::json!({}),
        "all renamed already"
    );
    let purchase = r["event_types"]
        .as_array()
        .expect("types")
        .iter()
        .find(|t| t["source_type"] == "Order Completed")
        .expect("Order Completed");
    assert_eq!(purchase["event_type"], "purchase");
    assert_eq!(purchase["status"], "named");
    assert_eq!(purchase["count"], 30);
}

#[test]
fn inspect_samples_the_end_of_each_partition_without_joining_a_group() {
    let broker = broker(3);
    let bootstrap = broker.bootstrap_servers().to_string();
    let messages: Vec<(String, Vec<u8>)> = read("segment.jsonl")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            (
                v["userId"].as_str().expect("id").to_string(),
                l.as_bytes().to_vec(),
            )
        })
        .collect();
    produce(&bootstrap, "customer-events", &messages);
    let per_partition: Vec<i64> = (0..3)
        .map(|p| support::high_watermark(&bootstrap, "customer-events", p))
        .collect();
    let o = run(&[
        "inspect",
        "--bootstrap-servers",
        &bootstrap,
        "--topic",
        "customer-events",
        "--sample",
        "10",
        "--input-format",
        "segment",
        "--json",
        "--timeout",
        "30",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let want: i64 = per_partition.iter().map(|&n| n.min(10)).sum();
    assert_eq!(r["messages"].as_i64(), Some(want), "{per_partition:?}");
    // The sample is the end: the last day's events, not the first's.
    assert!(
        r["first_event_at"]
            .as_str()
            .is_some_and(|t| t > "2025-03-05"),
        "{r}"
    );
    for p in 0..3 {
        assert_eq!(
            committed_offset(&bootstrap, "churn-scorer-inspect", "customer-events", p),
            None,
            "nothing committed"
        );
    }
}

#[test]
fn the_worker_reads_a_segment_topic_into_the_native_alerts_and_names_failing_pointers() {
    let broker = broker(1);
    let bootstrap = broker.bootstrap_servers().to_string();
    let model = RiskModel::default_model();
    let native = read("native.jsonl");
    let expected: BTreeSet<(String, String, String)> = replay_alerts(
        &model,
        native.lines().map(str::as_bytes),
        worker_config(&bootstrap).engine.allowed_lateness_ms(),
    )
    .into_iter()
    .map(|a| {
        let kind = a.decision.kind.as_str();
        let id = alert_id(
            &a.customer_id,
            kind,
            a.decision.event_time_ms,
            model.version(),
        );
        (a.customer_id, kind.to_string(), id)
    })
    .collect();
    assert!(expected.len() >= 3, "{expected:?}");
    let mut messages: Vec<(String, Vec<u8>)> = read("segment.jsonl")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            (
                v["userId"].as_str().expect("id").to_string(),
                l.as_bytes().to_vec(),
            )
        })
        .collect();
    let bad =
        br#"{"type":"track","anonymousId":7,"event":"Signed In","timestamp":"2025-03-02T00:00:00Z"}"#;
    messages.insert(20, ("no-user".into(), bad.to_vec()));
    produce(&bootstrap, "customer-events", &messages);

    let mut config = worker_config(&bootstrap);
    config.input.format = "segment".into();
    config.input.mapping = Some(fixtures().join("segment-mapping.toml"));
    config.input.decoder = config.input.build_decoder().expect("decoder");
    let worker = RunningWorker::start(config, model.clone());
    worker.wait_until("all consumed", Duration::from_secs(30), |w| {
        w.metrics().events_consumed.get() == messages.len() as u64
    });
    let got: BTreeSet<(String, String, String)> = read_topic(
        &bootstrap,
        "churn-alerts",
        expected.len(),
        Duration::from_secs(20),
    )
    .iter()
    .map(|r| {
        let a: Alert = serde_json::from_slice(r.value.as_deref().expect("payload")).expect("alert");
        (a.customer_id, a.kind, a.alert_id)
    })
    .collect();
    assert_eq!(got, expected);
    let dead = read_topic(&bootstrap, "churn-events-dlq", 1, Duration::from_secs(20));
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].headers.get("reason").map(String::as_str),
        Some("bad_customer_id: /anonymousId")
    );
    assert_eq!(dead[0].value.as_deref(), Some(bad.as_slice()));
    assert_eq!(
        worker
            .metrics()
            .events_invalid
            .with_label_values(&["bad_customer_id"])
            .get(),
        1,
        "the metric label stays the fixed reason"
    );
    worker.stop().expect("clean stop");
}

fn native_line(id: &str, kind: &str, t_ms: i64, amount: Option<f64>, plan: Option<&str>) -> String {
    let mut v = serde_json::json!({
        "customer_id": id,
        "event_type": kind,
        "timestamp": churn_core::event::format_timestamp_ms(t_ms),
    });
    if let Some(a) = amount {
        v["amount"] = a.into();
    }
    if let Some(p) = plan {
        v["properties"] = serde_json::json!({ "plan": p });
    }
    v.to_string()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Native events read through the native schema written as a mapping
    /// (the `churn` preset) score exactly as the native parser reads them.
    #[test]
    fn mapped_native_events_score_exactly_like_native(
        events in prop::collection::vec(
            (0..6_u8, 0..8_usize, 0..(40 * 86_400_000_i64), prop::option::of(0.0..500.0_f64), prop::option::of(0..3_u8)),
            1..80,
        )
    ) {
        const KINDS: [&str; 8] = ["purchase", "login", "support_ticket", "payment_failed", "refund", "page", "session", "complaint"];
        const PLANS: [&str; 3] = ["free", "pro", "team"];
        let lines: Vec<String> = events
            .iter()
            .map(|&(c, k, t, amount, plan)| {
                native_line(&format!("c-{c}"), KINDS[k], 1_735_689_600_000 + t, amount, plan.map(|p| PLANS[p as usize]))
            })
            .collect();
        let text = lines.join("\n");
        let mapped = InputFormat::from_settings(
            Some("mapped"),
            Some((churn_core::input::PRESETS[0].1, "churn preset")),
        )
        .expect("the churn preset compiles");
        prop_assert_eq!(score(&mapped, &text), score(&InputFormat::Churn, &text));
        let model = RiskModel::default_model();
        prop_assert_eq!(
            alert_keys(replay_alerts_with(&mapped, &model, lines.iter().map(|l| l.as_bytes()), 0)),
            alert_keys(replay_alerts(&model, lines.iter().map(|l| l.as_bytes()), 0))
        );
        // The same events as Segment track calls, through the preset.
        let segment: Vec<String> = events
            .iter()
            .map(|&(c, k, t, amount, plan)| {
                let mut props = serde_json::Map::new();
                if let Some(a) = amount {
                    props.insert("revenue".into(), a.into());
                }
                if let Some(p) = plan {
                    props.insert("plan".into(), PLANS[p as usize].into());
                }
                serde_json::json!({
                    "type": "track",
                    "userId": format!("c-{c}"),
                    "event": KINDS[k],
                    "timestamp": churn_core::event::format_timestamp_ms(1_735_689_600_000 + t),
                    "properties": props,
                })
                .to_string()
            })
            .collect();
        let preset = InputFormat::from_settings(Some("segment"), None).expect("preset");
        prop_assert_eq!(score(&preset, &segment.join("\n")), score(&InputFormat::Churn, &text));
    }
}
