//! Operating a running worker on librdkafka's mock cluster: model reloads
//! (SIGHUP, `POST /admin/reload`) and customer erasure
//! (`DELETE /v1/customers/{id}`).

mod support;

use std::time::{Duration, Instant};

use churn_core::alert::Alert;
use churn_core::model::RiskModel;
use support::*;

const ADMIN: &str = "s3cret-admin";

/// A journey that opens an at-risk alert under the default model: two
/// logins, then a complaint a day for three days.
fn journeys(prefix: &str, customers: usize, from_ms: i64) -> Vec<String> {
    let mut lines = Vec::new();
    for day in 0..5 {
        for c in 0..customers {
            let kind = if day < 2 { "login" } else { "complaint" };
            let t = from_ms + day * DAY_MS + c as i64 * 60_000;
            lines.push(event(&format!("{prefix}-{c}"), kind, t, None));
        }
    }
    lines
}

/// The default model file with another `model_version`.
fn model_text(version: &str) -> String {
    let text = std::fs::read_to_string("config/model.toml").expect("config/model.toml");
    let default = RiskModel::default_model();
    let old = format!("model_version = \"{}\"", default.version());
    assert!(text.contains(&old), "config/model.toml names its version");
    text.replace(&old, &format!("model_version = \"{version}\""))
}

/// Reads the alerts topic until `done` holds for what was read, or panics
/// at the deadline.
fn alerts_until(
    bootstrap: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&[Alert]) -> bool,
) -> Vec<Alert> {
    let deadline = Instant::now() + timeout;
    loop {
        let alerts: Vec<Alert> = read_topic(
            bootstrap,
            "churn-alerts",
            usize::MAX,
            Duration::from_millis(700),
        )
        .iter()
        .filter_map(|r| serde_json::from_slice(r.value.as_deref()?).ok())
        .collect();
        if done(&alerts) {
            return alerts;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
    }
}

fn at_risk_for_all(alerts: &[Alert], prefix: &str, customers: usize) -> bool {
    (0..customers).all(|c| {
        let id = format!("{prefix}-{c}");
        alerts
            .iter()
            .any(|a| a.customer_id == id && a.kind == "at_risk")
    })
}

#[test]
fn a_reloaded_model_scores_the_next_events_and_a_broken_one_is_refused() {
    let broker = broker(2);
    let bootstrap = broker.bootstrap_servers().to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let model_path = dir.path().join("model.toml");
    let v1 = RiskModel::default_model().version().to_string();
    write_file_atomically(&model_path, &model_text(&v1));
    let mut config = worker_config(&bootstrap);
    config.model.path = Some(model_path.clone());
    config.http.admin_token = Some(ADMIN.into());
    config.pipeline.threads = 2;
    let model = RiskModel::load(&model_path).expect("model");
    let worker = RunningWorker::start(config, model);

    let first = journeys("a", 4, T0_MS);
    produce_events(&bootstrap, "customer-events", &first);
    let alerts = alerts_until(&bootstrap, "first alerts", Duration::from_secs(30), |a| {
        at_risk_for_all(a, "a", 4)
    });
    assert!(alerts.iter().all(|a| a.model_version == v1));
    let before = customer_with_events(worker.http, "a-0", None, 5, Duration::from_secs(20));
    assert_eq!(before["model_version"], v1.as_str());

    // A new version, through the admin endpoint.
    write_file_atomically(&model_path, &model_text("reloaded-2"));
    let (status, body) = http_request(worker.http, "POST", "/admin/reload", Some(ADMIN));
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(answer["model_version"], "reloaded-2");
    assert_eq!(answer["previous_version"], v1.as_str());
    assert_eq!(answer["applied"], true, "every pipeline thread confirmed");
    // No restart, no lost state: the same customer, the same events, the new version.
    let after = customer_with_events(worker.http, "a-0", None, 5, Duration::from_secs(5));
    assert_eq!(after["model_version"], "reloaded-2");
    assert_eq!(after["alert_open"], before["alert_open"]);

    let mut second = journeys("b", 4, T0_MS + 6 * DAY_MS);
    second.push(event("a-0", "login", T0_MS + 6 * DAY_MS, None));
    produce_events(&bootstrap, "customer-events", &second);
    let alerts = alerts_until(
        &bootstrap,
        "alerts after the reload",
        Duration::from_secs(30),
        |a| at_risk_for_all(a, "b", 4),
    );
    for a in alerts.iter().filter(|a| a.customer_id.starts_with("b-")) {
        assert_eq!(a.model_version, "reloaded-2", "{a:?}");
    }
    let continued = customer_with_events(worker.http, "a-0", None, 6, Duration::from_secs(20));
    assert_eq!(
        continued["model_version"], "reloaded-2",
        "events count continues"
    );

    // A broken file is refused; the model in use keeps scoring.
    write_file_atomically(
        &model_path,
        "model_version = \"broken\"\n[score]\nmidpoint = \"x\"\n",
    );
    let (status, body) = http_request(worker.http, "POST", "/admin/reload", Some(ADMIN));
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("reloaded-2"), "names the model kept: {body}");
    let reloads = |result: &str| {
        worker
            .metrics()
            .model_reloads
            .with_label_values(&[result])
            .get()
    };
    assert_eq!((reloads("ok"), reloads("invalid")), (1, 1));
    let third = journeys("c", 3, T0_MS + 12 * DAY_MS);
    produce_events(&bootstrap, "customer-events", &third);
    let alerts = alerts_until(
        &bootstrap,
        "alerts after the refusal",
        Duration::from_secs(30),
        |a| at_risk_for_all(a, "c", 3),
    );
    for a in alerts.iter().filter(|a| a.customer_id.starts_with("c-")) {
        assert_eq!(a.model_version, "reloaded-2", "{a:?}");
    }
    let v = customer_with_events(worker.http, "c-0", None, 5, Duration::from_secs(20));
    assert_eq!(v["model_version"], "reloaded-2");
    let (_, metrics) = http_get(worker.http, "/metrics", None);
    assert!(
        metrics.contains("model_version=\"reloaded-2\"")
            && !metrics.contains("model_version=\"broken\""),
        "build_info names the model in use"
    );
    worker.stop().expect("clean stop");
}

#[test]
fn sighup_reloads_the_model_file_without_a_restart() {
    let broker = broker(2);
    let bootstrap = broker.bootstrap_servers().to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let model_path = dir.path().join("model.toml");
    let v1 = RiskModel::default_model().version().to_string();
    write_file_atomically(&model_path, &model_text(&v1));
    let worker = WorkerProcess::start_full(&bootstrap, "", "", "", &model_path);
    let pid = worker.child.id();

    produce_events(&bootstrap, "customer-events", &journeys("a", 3, T0_MS));
    let before = customer_with_events(worker.http, "a-1", None, 5, Duration::from_secs(30));
    assert_eq!(before["model_version"], v1.as_str());

    write_file_atomically(&model_path, &model_text("hup-2"));
    worker.hangup();
    let deadline = Instant::now() + Duration::from_secs(20);
    while customer_with_events(worker.http, "a-1", None, 5, Duration::from_secs(5))["model_version"]
        != "hup-2"
    {
        assert!(
            Instant::now() < deadline,
            "SIGHUP never swapped the model in"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(worker.metric("churn_scorer_model_reloads_total"), 1.0);

    produce_events(
        &bootstrap,
        "customer-events",
        &journeys("b", 3, T0_MS + 6 * DAY_MS),
    );
    let alerts = alerts_until(
        &bootstrap,
        "alerts after SIGHUP",
        Duration::from_secs(30),
        |a| at_risk_for_all(a, "b", 3),
    );
    for a in alerts.iter().filter(|a| a.customer_id.starts_with("b-")) {
        assert_eq!(a.model_version, "hup-2", "{a:?}");
    }
    // A broken file on SIGHUP: refused, logged, counted; the process goes on.
    write_file_atomically(&model_path, "not a model");
    worker.hangup();
    let deadline = Instant::now() + Duration::from_secs(20);
    while worker.metric("churn_scorer_model_reloads_total{result=\"invalid\"}") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the broken model was never counted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        customer_with_events(worker.http, "a-1", None, 5, Duration::from_secs(5))["model_version"],
        "hup-2"
    );
    assert_eq!(worker.child.id(), pid);
    let (elapsed, status) = worker.terminate(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "clean exit after {elapsed:?}"
    );
}

/// The last changelog record of `key`, once `done` holds for it.
fn last_state_record(
    bootstrap: &str,
    key: &str,
    timeout: Duration,
    done: impl Fn(Option<&TopicMessage>) -> bool,
) -> Option<TopicMessage> {
    let deadline = Instant::now() + timeout;
    loop {
        let records = read_topic(
            bootstrap,
            "churn-scorer-state",
            usize::MAX,
            Duration::from_millis(700),
        );
        let last = records
            .into_iter()
            .filter(|r| r.key.as_deref() == Some(key))
            .max_by_key(|r| r.offset);
        if done(last.as_ref()) {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {key}'s changelog record (last: {last:?})"
        );
    }
}

#[test]
fn an_erased_customer_stays_gone_across_a_restart_until_a_new_event() {
    let broker = broker(2);
    let bootstrap = broker.bootstrap_servers().to_string();
    let mut config = worker_config(&bootstrap);
    config.http.admin_token = Some(ADMIN.into());
    config.pipeline.threads = 2;
    let model = RiskModel::default_model();
    let lines = journeys("e", 6, T0_MS);
    produce_events(&bootstrap, "customer-events", &lines);
    let worker = RunningWorker::start(config.clone(), model.clone());
    for c in 0..6 {
        customer_with_events(
            worker.http,
            &format!("e-{c}"),
            None,
            5,
            Duration::from_secs(30),
        );
    }
    last_state_record(&bootstrap, "e-1", Duration::from_secs(20), |r| {
        r.is_some_and(|r| r.value.is_some())
    });

    let (status, body) = http_request(worker.http, "DELETE", "/v1/customers/e-1", None);
    assert_eq!(status, 401, "the admin token is required: {body}");
    let (status, body) = http_request(worker.http, "DELETE", "/v1/customers/e-1", Some(ADMIN));
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(answer["erased"], true);
    let (status, _) = http_get(worker.http, "/v1/customers/e-1", None);
    assert_eq!(status, 404, "gone at once");
    let (status, _) = http_request(worker.http, "DELETE", "/v1/customers/e-1", Some(ADMIN));
    assert_eq!(status, 404, "nothing left to erase");
    assert_eq!(worker.metrics().customers_erased.get(), 1);
    let tombstone = last_state_record(&bootstrap, "e-1", Duration::from_secs(20), |r| {
        r.is_some_and(|r| r.value.as_deref().is_none_or(<[u8]>::is_empty))
    });
    let tombstone = tombstone.expect("a record");
    assert_eq!(
        tombstone.partition,
        answer["partitions"][0].as_i64().expect("partition") as i32,
        "on the customer's partition"
    );
    customer_with_events(worker.http, "e-2", None, 5, Duration::from_secs(5));
    worker.stop().expect("clean stop");

    // Restored from the changelog: the tombstone wins.
    let worker = RunningWorker::start(config, model);
    worker.wait_until("ready", Duration::from_secs(30), |w| {
        w.handles.directory.is_ready()
    });
    customer_with_events(worker.http, "e-2", None, 5, Duration::from_secs(30));
    let (status, body) = http_get(worker.http, "/v1/customers/e-1", None);
    assert_eq!(status, 404, "still gone after a restart: {body}");
    let last = last_state_record(&bootstrap, "e-1", Duration::from_secs(5), |_| true);
    assert!(
        last.is_some_and(|r| r.value.as_deref().is_none_or(<[u8]>::is_empty)),
        "the last changelog record is a tombstone"
    );

    // A new event starts the customer afresh.
    produce_events(
        &bootstrap,
        "customer-events",
        &[event("e-1", "login", T0_MS + 6 * DAY_MS, None)],
    );
    customer_with_events(worker.http, "e-1", None, 1, Duration::from_secs(30));
    worker.stop().expect("clean stop");
}

#[test]
fn a_deletion_topic_record_erases_once_across_a_restart() {
    let broker = broker(2);
    let bootstrap = broker.bootstrap_servers().to_string();
    broker
        .create_topic("customer-deletions", 2)
        .expect("deletion topic");
    let mut config = worker_config(&bootstrap);
    config.topics.deletion = Some("customer-deletions".into());
    config.pipeline.threads = 2;
    let model = RiskModel::default_model();
    produce_events(&bootstrap, "customer-events", &journeys("d", 4, T0_MS));
    let worker = RunningWorker::start(config.clone(), model.clone());
    for c in 0..4 {
        customer_with_events(
            worker.http,
            &format!("d-{c}"),
            None,
            5,
            Duration::from_secs(30),
        );
    }
    // Keyed like the events, so it lands on the customer's partition number.
    produce(
        &bootstrap,
        "customer-deletions",
        &[("d-2".to_string(), Vec::new())],
    );
    worker.wait_until("d-2 erased", Duration::from_secs(30), |w| {
        http_get(w.http, "/v1/customers/d-2", None).0 == 404
    });
    assert_eq!(worker.metrics().customers_erased.get(), 1);
    let tombstone = last_state_record(&bootstrap, "d-2", Duration::from_secs(20), |r| {
        r.is_some_and(|r| r.value.as_deref().is_none_or(<[u8]>::is_empty))
    })
    .expect("a tombstone");
    // The position applied is on the changelog, after the tombstone.
    let position = last_state_record(
        &bootstrap,
        "\u{0}churn-scorer/deletion-position",
        Duration::from_secs(20),
        |r| r.is_some_and(|r| r.partition == tombstone.partition),
    )
    .expect("a position record");
    assert!(position.offset > tombstone.offset);
    customer_with_events(worker.http, "d-1", None, 5, Duration::from_secs(5));
    worker.stop().expect("clean stop");

    // Restarted: the request is not applied again, so the customer who
    // comes back stays.
    let worker = RunningWorker::start(config, model);
    worker.wait_until("ready", Duration::from_secs(30), |w| {
        w.handles.directory.is_ready()
    });
    let (status, _) = http_get(worker.http, "/v1/customers/d-2", None);
    assert_eq!(status, 404, "still gone after a restart");
    produce_events(
        &bootstrap,
        "customer-events",
        &[event("d-2", "login", T0_MS + 6 * DAY_MS, None)],
    );
    customer_with_events(worker.http, "d-2", None, 1, Duration::from_secs(30));
    produce_events(
        &bootstrap,
        "customer-events",
        &[event("d-2", "login", T0_MS + 7 * DAY_MS, None)],
    );
    customer_with_events(worker.http, "d-2", None, 2, Duration::from_secs(30));
    assert_eq!(
        worker.metrics().customers_erased.get(),
        0,
        "not erased twice"
    );
    customer_with_events(worker.http, "d-1", None, 5, Duration::from_secs(5));
    worker.stop().expect("clean stop");
}

/// Issue 32: before this instance has joined its group (here it never can:
/// no broker listens), a lookup it cannot answer is a 503 `not ready` with
/// the `/readyz` report, not a 404 "unknown customer".
#[test]
fn a_lookup_before_the_first_assignment_answers_not_ready() {
    // A closed port: the worker serves HTTP but waits for the brokers.
    let worker = RunningWorker::start(worker_config("127.0.0.1:9"), RiskModel::default_model());
    let (status, body) = http_get(worker.http, "/v1/customers/nobody", None);
    assert_eq!(status, 503, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json body");
    assert_eq!(json["error"], "not ready", "{body}");
    assert_eq!(json["ready"], false, "{body}");
    assert_eq!(json["partitions"], serde_json::json!([]), "{body}");
    let (status, _) = http_get(worker.http, "/readyz", None);
    assert_eq!(status, 503);
    worker.stop().expect("stops cleanly before joining");
}

/// A model file that blocks on read (a FIFO nobody writes, a hung network
/// mount) holds up no reload request: the first answers 504 within its
/// bound, later ones 409 at once, and the read still swaps the model in
/// when it finally ends.
#[test]
fn a_model_file_that_blocks_on_read_holds_up_no_reload_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model_path = dir.path().join("model.toml");
    let v1 = RiskModel::default_model().version().to_string();
    write_file_atomically(&model_path, &model_text(&v1));
    // A closed port: no broker is needed to reload a model.
    let mut config = worker_config("127.0.0.1:9");
    config.model.path = Some(model_path.clone());
    config.http.admin_token = Some(ADMIN.into());
    let model = RiskModel::load(&model_path).expect("model");
    let worker = RunningWorker::start(config, model);
    std::fs::remove_file(&model_path).expect("remove");
    let made = std::process::Command::new("mkfifo")
        .arg(&model_path)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());

    let started = Instant::now();
    let (status, body) = http_request(worker.http, "POST", "/admin/reload", Some(ADMIN));
    assert_eq!(status, 504, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let (status, body) = http_request(worker.http, "POST", "/admin/reload", Some(ADMIN));
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("still reading"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // The writer comes: the blocked read ends with a valid model.
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(&model_path)
        .expect("open the FIFO for writing");
    std::io::Write::write_all(&mut fifo, model_text("fifo-2").as_bytes()).expect("write");
    drop(fifo);
    worker.wait_until(
        "the blocked read swapped the model in",
        Duration::from_secs(10),
        |w| w.handles.registry.current_model().version() == "fifo-2",
    );
    worker.stop().expect("stops cleanly");
}
