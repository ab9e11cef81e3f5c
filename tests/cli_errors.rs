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
    assert_eq!(alert["schema_version"], 3);
    assert_eq!(
        alerts[0].headers.get("schema_version").map(String::as_str),
        Some("3")
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

// ---- The first hour, tried as a new user (issue 32) ----

/// A child process whose stderr is collected as it runs.
struct Logged {
    child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Logged {
    fn spawn(args: &[&str], envs: &[(&str, &str)], dir: &std::path::Path) -> Self {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .env_remove("CHURN_SCORER_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("binary starts");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = std::sync::Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut l) = sink.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        Logged {
            child,
            log,
            reader: Some(reader),
        }
    }

    fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; false at the deadline.
    fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "{name} delivered");
    }

    /// Waits for the exit (at most `limit`; then kills it): its status, or
    /// `None` if it had to be killed, and the whole log.
    fn wait(mut self, limit: Duration) -> (Option<std::process::ExitStatus>, String) {
        let deadline = Instant::now() + limit;
        let mut status = None;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (status, self.log())
    }
}

#[test]
fn generate_against_an_unreachable_broker_fails_in_time_naming_the_address() {
    let dir = tempfile::tempdir().expect("dir");
    let bootstrap = format!("127.0.0.1:{}", closed_port());
    let started = Instant::now();
    let gen_ = Logged::spawn(
        &[
            "generate",
            "--bootstrap-servers",
            &bootstrap,
            "--connect-timeout",
            "2",
        ],
        &[],
        dir.path(),
    );
    let (status, err) = gen_.wait(Duration::from_secs(20));
    let status = status.unwrap_or_else(|| panic!("still retrying after 20 s: {err}"));
    assert!(!status.success(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "gave up in time"
    );
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{err}");
    assert!(
        last.contains(&bootstrap) && last.contains("--bootstrap-servers"),
        "{err}"
    );
    assert!(err.lines().count() < 10, "no retry flood: {err}");
}

#[test]
fn bench_against_an_unreachable_broker_fails_in_time_naming_the_address() {
    let dir = tempfile::tempdir().expect("dir");
    let bootstrap = format!("127.0.0.1:{}", closed_port());
    let started = Instant::now();
    let bench = Logged::spawn(
        &[
            "bench",
            "--bootstrap-servers",
            &bootstrap,
            "--connect-timeout",
            "2",
            "--events",
            "100",
            "--latency-secs",
            "0",
        ],
        &[],
        dir.path(),
    );
    let (status, err) = bench.wait(Duration::from_secs(30));
    let status = status.unwrap_or_else(|| panic!("still waiting after 30 s: {err}"));
    assert!(!status.success(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "gave up in time: {:?}",
        started.elapsed()
    );
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: cannot reach kafka at ")
            && last.contains(&bootstrap)
            && last.contains("--bootstrap-servers")
            && last.contains("within 2 s"),
        "{err}"
    );
    assert!(last.contains("Connection refused"), "the cause: {err}");
}

/// The development broker has no admin API (librdkafka waits for a broker
/// that supports CreateTopics): `bench` gives up after --connect-timeout,
/// naming the address and the topics, before loading anything.
#[test]
fn bench_on_a_broker_without_topic_creation_names_the_address_in_time() {
    let dir = tempfile::tempdir().expect("dir");
    let mock = churn_devtools::broker::EmbeddedBroker::start(1).expect("mock broker");
    let bootstrap = mock.bootstrap_servers().to_string();
    let started = Instant::now();
    let bench = Logged::spawn(
        &[
            "bench",
            "--bootstrap-servers",
            &bootstrap,
            "--connect-timeout",
            "3",
            "--events",
            "100",
            "--latency-secs",
            "0",
        ],
        &[],
        dir.path(),
    );
    let (status, err) = bench.wait(Duration::from_secs(60));
    let status = status.unwrap_or_else(|| panic!("still running after 60 s: {err}"));
    assert!(!status.success(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "gave up in time: {:?}",
        started.elapsed()
    );
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "error: kafka at {bootstrap} did not create topics "
        )) && last.contains("-input")
            && last.contains("-state")
            && last.contains("within 3 s (no admin API?"),
        "{err}"
    );
    assert!(!err.contains("loading"), "nothing loaded: {err}");
}

#[test]
fn generate_stops_promptly_on_sigterm_while_the_broker_is_unreachable() {
    let dir = tempfile::tempdir().expect("dir");
    let bootstrap = format!("127.0.0.1:{}", closed_port());
    let gen_ = Logged::spawn(
        &[
            "generate",
            "--bootstrap-servers",
            &bootstrap,
            "--connect-timeout",
            "60",
        ],
        &[],
        dir.path(),
    );
    // Running and failing to connect: the moment the issue saw hang.
    assert!(
        gen_.wait_for("127.0.0.1", Duration::from_secs(20)),
        "{}",
        gen_.log()
    );
    gen_.signal("TERM");
    let started = Instant::now();
    let (status, err) = gen_.wait(Duration::from_secs(20));
    assert!(status.is_some(), "SIGTERM did not stop it: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?} to stop: {err}",
        started.elapsed()
    );
    assert!(!err.contains("Flush error"), "{err}");
}

#[test]
fn demo_port_in_use_names_the_address_and_the_flag() {
    let dir = tempfile::tempdir().expect("dir");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let demo = Logged::spawn(
        &["demo", "--http-addr", &addr, "--duration", "5"],
        &[],
        dir.path(),
    );
    let (status, err) = demo.wait(Duration::from_secs(60));
    assert!(status.is_some_and(|s| !s.success()), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains(&addr) && last.contains("--http-addr"),
        "{err}"
    );
}

#[test]
fn backtest_without_a_usable_label_fails_and_shows_the_format() {
    let dir = tempfile::tempdir().expect("dir");
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        [
            event("c-1", "purchase", T0_MS, Some(10.0)),
            event("c-2", "session", T0_MS + DAY_MS, None),
        ]
        .join("\n"),
    )
    .expect("events");
    for (name, content) in [
        ("yes_no.csv", "customer_id,churned\nc-1,yes\nc-2,no\n"),
        (
            "labels.json",
            "[{\"customer_id\": \"c-1\", \"churned\": true}]\n",
        ),
    ] {
        let labels = dir.path().join(name);
        std::fs::write(&labels, content).expect("labels");
        let out = run(
            &[
                "backtest",
                "--events",
                events.to_str().expect("utf-8"),
                "--labels",
                labels.to_str().expect("utf-8"),
                "--cutoff",
                "2025-01-10",
            ],
            dir.path(),
        );
        let err = stderr(&out);
        assert!(!out.status.success(), "{name}: {err}");
        let last_error = &err[err.rfind("error: ").unwrap_or(0)..];
        assert!(last_error.contains(name), "{err}");
        assert!(last_error.contains("customer_id,churned"), "{err}");
    }
}

#[test]
fn model_syntax_errors_carry_file_line_and_column() {
    let dir = tempfile::tempdir().expect("dir");
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, event("c-1", "purchase", T0_MS, None)).expect("events");
    let model = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/model.toml"))
        .expect("default model");
    // Line 4 of the file: a value without its closing quote.
    let cases = [
        (
            "unclosed.toml",
            "a = 1\n\n\nmodel_version = \"oops\n".to_string(),
            4,
        ),
        (
            "wrong_type.toml",
            model.replacen(
                "at_risk_threshold = 75.0",
                "at_risk_threshold = \"high\"",
                1,
            ),
            1 + model
                .lines()
                .position(|l| l.starts_with("at_risk_threshold"))
                .expect("line"),
        ),
    ];
    for (name, text, line) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("model");
        let out = run(
            &[
                "score",
                "--model",
                path.to_str().expect("utf-8"),
                "--events",
                events.to_str().expect("utf-8"),
            ],
            dir.path(),
        );
        let err = stderr(&out);
        assert!(!out.status.success(), "{err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(last.contains(name), "{err}");
        assert!(last.contains(&format!("line {line}, column ")), "{err}");
        assert!(!last.contains("``"), "{err}");
    }
}

#[test]
fn environment_variable_errors_name_the_variable() {
    let dir = tempfile::tempdir().expect("dir");
    for (var, value) in [
        ("CHURN_SCORER__ENGINE__IDLE_TIMEOUT_SECZ", "5"),
        ("CHURN_SCORER__ENGINE__IDLE_TIMEOUT_SECS", "soon"),
    ] {
        let out = Command::new(BIN)
            .args([
                "run",
                "--bootstrap-servers",
                "127.0.0.1:9",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .env(var, value)
            .stdin(Stdio::null())
            .output()
            .expect("runs");
        let err = stderr(&out);
        assert!(!out.status.success(), "{err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(last.contains(var), "{var}: {err}");
    }
}

#[test]
fn librdkafka_property_errors_name_the_section() {
    let dir = tempfile::tempdir().expect("dir");
    for section in ["kafka.consumer", "kafka.producer"] {
        let config = dir.path().join("worker.toml");
        std::fs::write(
            &config,
            format!("[{section}]\n\"fetch.wait.max.msz\" = \"10\"\n"),
        )
        .expect("config");
        let out = run(
            &[
                "run",
                "--config",
                config.to_str().expect("utf-8"),
                "--bootstrap-servers",
                &format!("127.0.0.1:{}", closed_port()),
                "--http-addr",
                "127.0.0.1:0",
                "--connect-timeout",
                "2",
            ],
            dir.path(),
        );
        let err = stderr(&out);
        assert!(!out.status.success(), "{err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(last.contains(&format!("[{section}]")), "{section}: {err}");
        assert!(last.contains("fetch.wait.max.msz"), "{err}");
    }
}

#[test]
fn sighup_with_the_built_in_model_says_there_is_no_file_and_logs_show_no_options() {
    let broker = support::broker(2);
    let bootstrap = broker.bootstrap_servers().to_string();
    let dir = tempfile::tempdir().expect("dir");
    // The built-in model: nothing to re-read.
    let worker = Logged::spawn(
        &[
            "run",
            "--bootstrap-servers",
            &bootstrap,
            "--http-addr",
            "127.0.0.1:0",
        ],
        &[],
        dir.path(),
    );
    assert!(
        worker.wait_for("subscribed", Duration::from_secs(30)),
        "{}",
        worker.log()
    );
    worker.signal("HUP");
    assert!(
        worker.wait_for("SIGHUP: nothing to re-read", Duration::from_secs(10)),
        "{}",
        worker.log()
    );
    worker.signal("TERM");
    let (_, first_log) = worker.wait(Duration::from_secs(30));
    // A model file with a shadow beside it: both are re-read and logged.
    let model = dir.path().join("model.toml");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/model.toml"),
        &model,
    )
    .expect("model");
    let model = model.to_str().expect("utf-8");
    let worker = Logged::spawn(
        &[
            "run",
            "--bootstrap-servers",
            &bootstrap,
            "--http-addr",
            "127.0.0.1:0",
            "--model",
            model,
        ],
        &[("CHURN_SCORER__MODEL__SHADOW_PATH", model)],
        dir.path(),
    );
    assert!(
        worker.wait_for("subscribed", Duration::from_secs(30)),
        "{}",
        worker.log()
    );
    worker.signal("HUP");
    assert!(
        worker.wait_for("model reloaded", Duration::from_secs(10)),
        "{}",
        worker.log()
    );
    worker.signal("TERM");
    let (_, second_log) = worker.wait(Duration::from_secs(30));
    for line in first_log.lines().chain(second_log.lines()) {
        assert!(
            !line.contains("Some(") && !line.contains("=None"),
            "an Option printed in a log line: {line}"
        );
    }
    let reloaded = second_log
        .lines()
        .find(|l| l.contains("model reloaded"))
        .expect("reload line");
    assert!(reloaded.contains("shadow_version=\"default-"), "{reloaded}");
}

#[test]
fn generate_help_lists_every_shape() {
    let dir = tempfile::tempdir().expect("dir");
    // The parser's own list of shapes, from its error message.
    let out = run(&["generate", "--shape", "no-such-shape"], dir.path());
    let err = stderr(&out);
    assert!(!out.status.success());
    let expected = err
        .split_once("expected")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no list of shapes: {err}"));
    let shapes: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    assert!(shapes.len() >= 4, "{err}");
    let help =
        String::from_utf8_lossy(&run(&["generate", "--help"], dir.path()).stdout).into_owned();
    for shape in shapes {
        assert!(
            help.contains(&format!("`{shape}`")),
            "{shape} missing from:\n{help}"
        );
    }
}

/// The demo read as a marketer would: each alert's summary has at most
/// three sentences, every sentence about silence carries its numbers; and
/// the demo says why dead letters grow.
#[test]
fn demo_alerts_read_at_a_glance_and_its_dead_letters_are_explained() {
    let dir = tempfile::tempdir().expect("dir");
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--http-addr",
            "127.0.0.1:0",
            "--duration",
            "40",
            "--customers",
            "400",
            "--days-per-second",
            "20",
        ])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("demo starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut banner = String::new();
    let mut bootstrap = None;
    while bootstrap.is_none() {
        let mut line = String::new();
        if stdout.read_line(&mut line).expect("stdout") == 0 {
            break;
        }
        bootstrap = line
            .trim()
            .strip_prefix("bootstrap:")
            .map(|b| b.trim().to_string());
        banner.push_str(&line);
    }
    let bootstrap = bootstrap.unwrap_or_else(|| panic!("no bootstrap line: {banner}"));
    // Alerts are read while the demo (and its broker) runs.
    let alerts = support::read_topic(&bootstrap, "churn-alerts", 200, Duration::from_secs(30));
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest);
    let _ = child.wait();
    let output = format!("{banner}{rest}");
    assert!(
        output.contains("on purpose"),
        "dead letters explained: {output}"
    );
    let alerts: Vec<serde_json::Value> = alerts
        .iter()
        .filter_map(|m| serde_json::from_slice(m.value.as_deref()?).ok())
        .collect();
    let at_risk: Vec<&serde_json::Value> =
        alerts.iter().filter(|a| a["kind"] == "at_risk").collect();
    assert!(at_risk.len() >= 10, "{} at-risk alerts", at_risk.len());
    let mut inactivity_sentences = 0;
    for alert in &alerts {
        let summary: Vec<&str> = alert["summary"]
            .as_array()
            .unwrap_or_else(|| panic!("no summary: {alert}"))
            .iter()
            .filter_map(|s| s.as_str())
            .collect();
        assert!(!summary.is_empty() && summary.len() <= 3, "{alert}");
        for reason in alert["reasons"].as_array().expect("reasons") {
            let label = reason["label"].as_str().expect("label");
            let silence = reason["factor"] == "rhythm" || reason["factor"] == "inactivity";
            if silence && summary.contains(&label) {
                inactivity_sentences += 1;
                let numbers = label
                    .split(|c: char| !c.is_ascii_digit() && c != '.')
                    .filter(|n| n.parse::<f64>().is_ok())
                    .count();
                let wanted = if reason["factor"] == "rhythm" { 3 } else { 1 };
                assert!(
                    numbers >= wanted && label.contains("days"),
                    "an inactivity sentence without its numbers: {label}"
                );
            }
            assert!(!label.contains('{'), "unfilled placeholder: {label}");
        }
    }
    assert!(inactivity_sentences > 0, "no inactivity alert seen");
}
