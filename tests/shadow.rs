//! Shadow scoring on librdkafka's mock cluster: a second model scores every
//! event beside the live one; its alerts go to the shadow topic only, its
//! decisions are counted, and `/v1` shows both scores.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use churn_core::alert::{Alert, alert_id};
use churn_core::model::RiskModel;
use churn_core::offline::replay_alerts;
use support::*;

const ADMIN: &str = "s3cret-admin";
const SHADOW_TOPIC: &str = "churn-shadow-alerts";

/// The default model file with another `model_version` and at-risk and
/// recovery thresholds.
fn model_text(version: &str, at_risk: f64, recovery: f64) -> String {
    let text = std::fs::read_to_string("config/model.toml").expect("config/model.toml");
    let default = RiskModel::default_model();
    let mut out = text.replace(
        &format!("model_version = \"{}\"", default.version()),
        &format!("model_version = \"{version}\""),
    );
    for (key, value) in [
        ("at_risk_threshold", at_risk),
        ("recovery_threshold", recovery),
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("config/model.toml sets {key}"))
            .to_string();
        out = out.replace(&line, &format!("{key} = {value:.1}"));
    }
    assert!(out.contains(version), "config/model.toml names its version");
    out
}

/// Alert ids of an offline replay of `lines` (one ordered stream, as one partition).
fn offline_ids(model: &RiskModel, lines: &[String], lateness_ms: i64) -> BTreeSet<String> {
    replay_alerts(model, lines.iter().map(|l| l.as_bytes()), lateness_ms)
        .iter()
        .map(|a| {
            alert_id(
                &a.customer_id,
                a.decision.kind.as_str(),
                a.decision.event_time_ms,
                model.version(),
            )
        })
        .collect()
}

/// Alerts on `topic` once there are at least `count`, or panics at the deadline.
fn alerts_on(bootstrap: &str, topic: &str, count: usize, timeout: Duration) -> Vec<Alert> {
    let deadline = Instant::now() + timeout;
    loop {
        let alerts: Vec<Alert> =
            read_topic(bootstrap, topic, usize::MAX, Duration::from_millis(700))
                .iter()
                .filter_map(|r| serde_json::from_slice(r.value.as_deref()?).ok())
                .collect();
        if alerts.len() >= count {
            return alerts;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: {} alerts of {count} after {timeout:?}",
            alerts.len()
        );
    }
}

/// A live model and a stricter shadow candidate (it alerts earlier), their
/// files, and a worker configuration scoring both with the shadow topic.
/// Timers fire from event times alone, as in the offline replay: the idle
/// rule must not move the clock to today while a test reads.
struct ShadowSetup {
    dir: tempfile::TempDir,
    live: RiskModel,
    shadow: RiskModel,
    config: churn_worker::config::WorkerConfig,
}

impl ShadowSetup {
    fn new(bootstrap: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let live_path = dir.path().join("model.toml");
        let shadow_path = dir.path().join("shadow.toml");
        write_file_atomically(&live_path, &model_text("live-1", 75.0, 55.0));
        write_file_atomically(&shadow_path, &model_text("shadow-1", 55.0, 35.0));
        let live = RiskModel::load(&live_path).expect("live model");
        let shadow = RiskModel::load(&shadow_path).expect("shadow model");
        let mut config = worker_config(bootstrap);
        config.model.path = Some(live_path);
        config.model.shadow_path = Some(shadow_path);
        config.topics.shadow_alerts = Some(SHADOW_TOPIC.into());
        config.engine.idle_timeout_secs = 3600;
        ShadowSetup {
            dir,
            live,
            shadow,
            config,
        }
    }

    fn live_path(&self) -> std::path::PathBuf {
        self.dir.path().join("model.toml")
    }

    fn shadow_path(&self) -> std::path::PathBuf {
        self.dir.path().join("shadow.toml")
    }
}

#[test]
fn shadow_alerts_reach_only_the_shadow_topic_and_v1_shows_both_scores() {
    let broker = broker(1);
    let bootstrap = broker.bootstrap_servers().to_string();
    broker.create_topic(SHADOW_TOPIC, 1).expect("shadow topic");
    let setup = ShadowSetup::new(&bootstrap);
    let (live_path, shadow_path) = (setup.live_path(), setup.shadow_path());
    let (live, shadow) = (setup.live.clone(), setup.shadow.clone());
    let mut config = setup.config.clone();
    config.http.admin_token = Some(ADMIN.into());
    let lateness = config.engine.allowed_lateness_ms();

    let lines = history(40, 30, 7);
    let last_ms = T0_MS + 30 * DAY_MS;
    let live_ids = offline_ids(&live, &lines, lateness);
    let shadow_ids = offline_ids(&shadow, &lines, lateness);
    let shadow_at_risk = replay_alerts(&shadow, lines.iter().map(|l| l.as_bytes()), lateness)
        .iter()
        .filter(|a| a.decision.kind.as_str() == "at_risk")
        .count();
    assert!(
        !live_ids.is_empty(),
        "the history alerts under the live model"
    );
    assert!(
        shadow_ids.len() > live_ids.len(),
        "the history tells the models apart ({} live, {} shadow)",
        live_ids.len(),
        shadow_ids.len()
    );

    let worker = RunningWorker::start(config.clone(), live.clone());
    produce_events(&bootstrap, "customer-events", &lines);

    // Subscribers of the live topic see exactly the live model's alerts.
    let live_alerts = alerts_on(
        &bootstrap,
        "churn-alerts",
        live_ids.len(),
        Duration::from_secs(60),
    );
    let shadow_alerts = alerts_on(
        &bootstrap,
        SHADOW_TOPIC,
        shadow_ids.len(),
        Duration::from_secs(60),
    );
    let got_live: BTreeSet<String> = live_alerts.iter().map(|a| a.alert_id.clone()).collect();
    let got_shadow: BTreeSet<String> = shadow_alerts.iter().map(|a| a.alert_id.clone()).collect();
    assert_eq!(got_live, live_ids, "live topic: the live model's alerts");
    assert_eq!(got_shadow, shadow_ids, "shadow topic: the shadow's alerts");
    assert_eq!(live_alerts.len(), live_ids.len(), "no duplicates");
    assert!(live_alerts.iter().all(|a| a.model_version == "live-1"));
    assert!(shadow_alerts.iter().all(|a| a.model_version == "shadow-1"));

    let m = worker.metrics();
    assert_eq!(
        m.shadow_alerts.with_label_values(&["at_risk"]).get() as usize,
        shadow_at_risk
    );
    let agreement = |by: &str, other: &str| {
        m.shadow_alert_agreement
            .with_label_values(&[by, other])
            .get()
    };
    let live_at_risk = live_alerts.iter().filter(|a| a.kind == "at_risk").count() as u64;
    assert_eq!(
        agreement("live", "open") + agreement("live", "not_open"),
        live_at_risk,
        "every live at-risk alert is compared"
    );
    // The stricter shadow was already alerting when the live model opened.
    assert!(agreement("live", "open") > 0);
    assert!(agreement("shadow", "not_open") > 0);

    // `/v1` shows both scores, each as its model scores the same history.
    let as_of = last_ms + DAY_MS;
    let live_scores = offline_scores(&live, &lines, as_of);
    let shadow_scores = offline_scores(&shadow, &lines, as_of);
    let (id, (score, events)) = live_scores.iter().next().expect("customers");
    // That customer, once the worker at `http` holds all its events.
    let lookup =
        |http, timeout| customer_with_events(http, id, Some(as_of), u64::from(*events), timeout);
    let v = lookup(worker.http, Duration::from_secs(30));
    assert_eq!(v["model_version"], "live-1");
    assert_close(v["risk_score"].as_f64().expect("score"), *score, id);
    assert_eq!(v["shadow"]["model_version"], "shadow-1");
    assert_close(
        v["shadow"]["risk_score"].as_f64().expect("shadow score"),
        shadow_scores[id].0,
        id,
    );

    // A reload re-reads both files; a broken shadow file swaps neither.
    write_file_atomically(&shadow_path, &model_text("shadow-2", 55.0, 35.0));
    let (status, body) = http_request(worker.http, "POST", "/admin/reload", Some(ADMIN));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"shadow_version\":\"shadow-2\""), "{body}");
    let v = lookup(worker.http, Duration::from_secs(5));
    assert_eq!(v["shadow"]["model_version"], "shadow-2");
    write_file_atomically(
        &shadow_path,
        "model_version = \"broken\"\n[score]\nscale = \"x\"\n",
    );
    write_file_atomically(&live_path, &model_text("live-2", 75.0, 55.0));
    let (status, body) = http_request(worker.http, "POST", "/admin/reload", Some(ADMIN));
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("shadow"), "names the shadow file: {body}");
    let v = lookup(worker.http, Duration::from_secs(5));
    assert_eq!(
        (&v["model_version"], &v["shadow"]["model_version"]),
        (&"live-1".into(), &"shadow-2".into()),
        "neither model swapped"
    );
    worker.stop().expect("clean stop");

    // After a restart the shadow is seeded from the restored live states.
    write_file_atomically(&shadow_path, &model_text("shadow-1", 55.0, 35.0));
    write_file_atomically(&live_path, &model_text("live-1", 75.0, 55.0));
    let worker = RunningWorker::start(config, live);
    let v = lookup(worker.http, Duration::from_secs(60));
    assert_close(
        v["shadow"]["risk_score"].as_f64().expect("shadow score"),
        shadow_scores[id].0,
        id,
    );
    // Nothing was re-sent to either topic by the restart.
    let again = alerts_on(
        &bootstrap,
        "churn-alerts",
        live_ids.len(),
        Duration::from_secs(5),
    );
    assert_eq!(again.len(), live_ids.len());
    assert_eq!(
        read_topic(&bootstrap, SHADOW_TOPIC, usize::MAX, Duration::from_secs(2)).len(),
        shadow_ids.len()
    );
    worker.stop().expect("clean stop");
}

#[test]
fn a_shadow_topic_the_worker_may_not_write_never_stops_the_live_alerts() {
    let broker = broker(1);
    let bootstrap = broker.bootstrap_servers().to_string();
    broker.create_topic(SHADOW_TOPIC, 1).expect("shadow topic");
    let setup = ShadowSetup::new(&bootstrap);
    let (live, shadow) = (setup.live.clone(), setup.shadow.clone());
    let mut config = setup.config.clone();
    // The mock reports a topic's error in metadata only: the producer must
    // ask again soon to learn that it may no longer write the topic.
    config
        .kafka
        .producer
        .insert("topic.metadata.refresh.interval.ms".into(), "100".into());
    let lateness = config.engine.allowed_lateness_ms();

    let worker = RunningWorker::start(config, live.clone());
    worker.wait_until("ready", Duration::from_secs(30), |w| {
        w.handles.directory.is_ready()
    });
    // Permissions on the shadow topic revoked while the worker runs; its
    // producers refresh metadata ten times before the first event is sent.
    broker
        .set_topic_error(
            SHADOW_TOPIC,
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        )
        .expect("topic error set");
    std::thread::sleep(Duration::from_secs(1));
    let lines = history(40, 30, 7);
    let live_ids = offline_ids(&live, &lines, lateness);
    let shadow_ids = offline_ids(&shadow, &lines, lateness);
    assert!(!shadow_ids.is_empty());
    produce_events(&bootstrap, "customer-events", &lines);

    // Subscribers of the live topic see every live alert, once.
    let alerts = alerts_on(
        &bootstrap,
        "churn-alerts",
        live_ids.len(),
        Duration::from_secs(60),
    );
    let got: BTreeSet<String> = alerts.iter().map(|a| a.alert_id.clone()).collect();
    assert_eq!(got, live_ids);
    assert_eq!(alerts.len(), live_ids.len());
    // The partition moves on: every offset is committed, the worker runs on.
    let end = high_watermark(&bootstrap, "customer-events", 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed_offset(&bootstrap, "churn-scorer", "customer-events", 0) != Some(end) {
        assert!(Instant::now() < deadline, "offsets never committed");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !worker.finished(),
        "a shadow topic must not stop the worker"
    );
    let dropped = worker
        .metrics()
        .events_dropped
        .with_label_values(&["shadow_alert_rejected"])
        .get();
    assert_eq!(
        dropped as usize,
        shadow_ids.len(),
        "each shadow alert counted"
    );
    worker.stop().expect("clean stop");
}
