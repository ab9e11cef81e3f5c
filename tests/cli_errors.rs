//! Errors an operator can act on, logs fit for files and pipes, and `run`
//! from any directory (issue 15).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{DAY_MS, T0_MS, event, produce_events, read_topic};

const BIN: &str = env!("CARGO_BIN_EXE_churn-scorer");

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

fn run(args: &[&str], dir: &std::path::Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("CHURN_SCORER_LOG_FORMAT")
        .stdin(Stdio::null())
        .output()
        .expect("binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn port_in_use_names_the_address_and_the_flag() {
    let dir = tempfile::tempdir().expect("dir");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = run(
        &[
            "run",
            "--bootstrap-servers",
            &format!("127.0.0.1:{}", closed_port()),
            "--http-addr",
            &addr,
        ],
        dir.path(),
    );
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains(&addr), "{err}");
    assert!(
        err.contains("--http-addr") && err.contains("http.addr"),
        "{err}"
    );
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
}

#[test]
fn unreachable_broker_names_the_bootstrap_address_and_logs_are_plain_when_piped() {
    let dir = tempfile::tempdir().expect("dir");
    let bootstrap = format!("127.0.0.1:{}", closed_port());
    let started = Instant::now();
    let out = run(
        &[
            "run",
            "--bootstrap-servers",
            &bootstrap,
            "--http-addr",
            "127.0.0.1:0",
            "--connect-timeout",
            "2",
        ],
        dir.path(),
    );
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "gave up in time"
    );
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{err}");
    assert!(last.contains(&bootstrap), "{err}");
    assert!(last.contains("--bootstrap-servers"), "{err}");
    // stderr is a pipe here: no colour escapes anywhere.
    assert!(
        !err.contains('\u{1b}'),
        "ANSI escapes in piped logs: {err:?}"
    );
    assert!(err.contains("INFO"), "logs are written: {err}");
}

#[test]
fn json_logs_include_the_fatal_error() {
    let dir = tempfile::tempdir().expect("dir");
    let bootstrap = format!("127.0.0.1:{}", closed_port());
    let out = run(
        &[
            "--log-format",
            "json",
            "run",
            "--bootstrap-servers",
            &bootstrap,
            "--http-addr",
            "127.0.0.1:0",
            "--connect-timeout",
            "1",
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let fatal = lines.last().expect("a fatal line");
    assert_eq!(fatal["level"], "ERROR", "{fatal}");
    assert!(
        fatal["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains(&bootstrap)),
        "{fatal}"
    );
    // The environment variable chooses the same format.
    let out = Command::new(BIN)
        .args(["score", "--events", "missing.jsonl"])
        .current_dir(dir.path())
        .env("CHURN_SCORER_LOG_FORMAT", "json")
        .output()
        .expect("runs");
    let err = stderr(&out);
    let fatal: serde_json::Value = serde_json::from_str(err.lines().last().expect("line"))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {err}"));
    assert!(
        fatal["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("missing.jsonl"))
    );
}

#[test]
fn wrong_config_path_names_the_file_and_the_flag() {
    let dir = tempfile::tempdir().expect("dir");
    let out = run(&["run", "--config", "/no/such/worker.toml"], dir.path());
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("/no/such/worker.toml") && err.contains("--config"),
        "{err}"
    );
    assert!(!err.contains("``"), "{err}");
}

#[test]
fn config_relative_model_path_resolves_next_to_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let conf_dir = dir.path().join("etc");
    std::fs::create_dir(&conf_dir).expect("mkdir");
    let default_version = churn_core::model::RiskModel::default_model()
        .version()
        .to_string();
    let model = churn_core::model::DEFAULT_MODEL_TOML.replace(
        &format!("model_version = \"{default_version}\""),
        "model_version = \"next-to-the-file\"",
    );
    std::fs::write(conf_dir.join("my-model.toml"), model).expect("model");
    let config = conf_dir.join("worker.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbootstrap_servers = \"127.0.0.1:{}\"\n[http]\naddr = \"127.0.0.1:0\"\n\
             [model]\npath = \"my-model.toml\"\n",
            closed_port()
        ),
    )
    .expect("config");
    // Run from an unrelated directory with an absolute --config.
    let elsewhere = tempfile::tempdir().expect("dir");
    let out = run(
        &[
            "run",
            "--config",
            config.to_str().expect("utf-8"),
            "--connect-timeout",
            "1",
        ],
        elsewhere.path(),
    );
    let err = stderr(&out);
    assert!(err.contains("model_version=\"next-to-the-file\""), "{err}");
    assert!(!err.contains("cannot read model file"), "{err}");
    // A missing model names the file and the key.
    std::fs::remove_file(conf_dir.join("my-model.toml")).expect("rm");
    let out = run(
        &["run", "--config", config.to_str().expect("utf-8")],
        elsewhere.path(),
    );
    let err = stderr(&out);
    assert!(
        err.contains("my-model.toml") && err.contains("model.path"),
        "{err}"
    );
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}

#[test]
fn bad_as_of_shows_the_accepted_formats_and_a_plain_date_is_midnight_utc() {
    let dir = tempfile::tempdir().expect("dir");
    let events = dir.path().join("e.jsonl");
    std::fs::write(
        &events,
        format!("{}\n", event("c-1", "purchase", T0_MS + 200 * DAY_MS, None)),
    )
    .expect("events");
    let events = events.to_str().expect("utf-8");
    for bad in ["2025-13-01", "yesterday", "2025-06-01T25:00:00"] {
        let out = run(&["score", "--events", events, "--as-of", bad], dir.path());
        let err = stderr(&out);
        assert!(!out.status.success(), "{bad}");
        assert!(err.contains("--as-of") && err.contains(bad), "{err}");
        assert!(
            err.contains("accepted formats") && err.contains("2025-06-01"),
            "{err}"
        );
    }
    for (good, as_of) in [
        ("2025-06-01", "as_of=2025-06-01T00:00:00.000Z"),
        ("2025-06-01T00:00:00", "as_of=2025-06-01T00:00:00.000Z"),
        (
            "2025-06-01T02:00:00+02:00",
            "as_of=2025-06-01T00:00:00.000Z",
        ),
    ] {
        let out = run(&["score", "--events", events, "--as-of", good], dir.path());
        let err = stderr(&out);
        assert!(out.status.success(), "{good}: {err}");
        assert!(err.contains(as_of), "{good}: {err}");
    }
}

#[test]
fn empty_or_all_invalid_input_says_so_and_fails_under_strict() {
    let dir = tempfile::tempdir().expect("dir");
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").expect("write");
    let junk = dir.path().join("junk.jsonl");
    std::fs::write(&junk, "not json\n{\"customer_id\":1}\n").expect("write");
    for (file, why) in [(&empty, "empty"), (&junk, "invalid")] {
        let file = file.to_str().expect("utf-8");
        let out = run(&["score", "--events", file], dir.path());
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains("no events scored") && err.contains(why),
            "{err}"
        );
        assert!(err.contains("as_of=none"), "{err}");
        assert!(!err.contains("1970"), "{err}");
        let out = run(&["score", "--events", file, "--strict"], dir.path());
        assert!(!out.status.success(), "strict fails on {why}");
    }
    let out = run(
        &[
            "score",
            "--events",
            empty.to_str().expect("utf-8"),
            "--strict",
        ],
        dir.path(),
    );
    assert!(
        stderr(&out).contains("no events scored: the input is empty"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn score_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().expect("dir");
    let events = dir.path().join("e.jsonl");
    let mut f = std::fs::File::create(&events).expect("file");
    for c in 0..5000 {
        writeln!(
            f,
            "{}",
            event(&format!("customer-{c:05}"), "purchase", T0_MS + c, None)
        )
        .expect("write");
    }
    drop(f);
    let mut child = Command::new(BIN)
        .args(["score", "--events", events.to_str().expect("utf-8")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Like `| head -1`: read one line, then close the pipe.
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("a line");
    assert!(first.contains("customer-00000"));
    drop(stdout);
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    let status = child.wait().expect("exit");
    assert!(status.success(), "exit status {status:?}: {err}");
    assert!(!err.to_lowercase().contains("broken pipe"), "{err}");
}

#[test]
fn run_from_an_empty_directory_consumes_and_alerts() {
    let broker = support::broker(2);
    let bootstrap = broker.bootstrap_servers().to_string();
    produce_events(
        &bootstrap,
        "customer-events",
        &[
            event("c-anywhere", "session", T0_MS, None),
            event("c-anywhere", "subscription_cancelled", T0_MS + DAY_MS, None),
        ],
    );
    let dir = tempfile::tempdir().expect("empty dir");
    let mut child = Command::new(BIN)
        .args(["run", "--bootstrap-servers", &bootstrap])
        .current_dir(dir.path())
        // Only the address to avoid clashes with other tests; no config file anywhere.
        .env("CHURN_SCORER__HTTP__ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("worker starts");
    let alerts = read_topic(&bootstrap, "churn-alerts", 1, Duration::from_secs(60));
    let _ = child.kill();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let _ = child.wait();
    assert_eq!(
        alerts.len(),
        1,
        "an alert from a worker started in an empty directory: {err}"
    );
    let alert: serde_json::Value =
        serde_json::from_slice(alerts[0].value.as_deref().expect("payload")).expect("json");
    assert_eq!(alert["customer_id"], "c-anywhere");
    assert_eq!(alert["schema_version"], 2);
    assert_eq!(
        alerts[0].headers.get("schema_version").map(String::as_str),
        Some("2")
    );
}

#[test]
fn broker_listens_on_the_given_port() {
    let port = closed_port();
    let mut child = Command::new(BIN)
        .args(["broker", "--partitions", "2", "--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("broker starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("bootstrap line");
    assert_eq!(line.trim(), format!("bootstrap: 127.0.0.1:{port}"));
    let bootstrap = format!("127.0.0.1:{port}");
    produce_events(
        &bootstrap,
        "customer-events",
        &[event("c-port", "purchase", T0_MS, None)],
    );
    let got = read_topic(&bootstrap, "customer-events", 1, Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got.len(), 1, "produced and read back through --port");
    // The port is now taken: a second broker says which address and flag.
    let taken = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let p = taken.local_addr().expect("addr").port();
    let out = Command::new(BIN)
        .args(["broker", "--port", &p.to_string()])
        .output()
        .expect("runs");
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("127.0.0.1:{p}")) && err.contains("--port"),
        "{err}"
    );
}
