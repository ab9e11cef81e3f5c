//! Shared helpers for the integration tests: an in-process mock broker, a
//! producer, a topic reader, an in-process worker and a tiny HTTP client.
#![allow(dead_code)]

pub mod kafka;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use churn_core::model::RiskModel;
use churn_devtools::broker::EmbeddedBroker;
use churn_worker::config::{Overrides, WorkerConfig};
use churn_worker::telemetry::Metrics;
use churn_worker::{Worker, WorkerHandles};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

pub const DAY_MS: i64 = 86_400_000;
/// 2025-01-01T00:00:00Z
pub const T0_MS: i64 = 1_735_689_600_000;

/// Whether `topic` exists, asked without allowing its creation.
/// Runs the `openssl` command in `dir` (test certificates for TLS and mTLS:
/// `tests/tls.rs`, `tests/real_broker/security.rs`); panics with its stderr.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn topic_exists(bootstrap: &str, topic: &str) -> bool {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("allow.auto.create.topics", "false")
        .create()
        .expect("metadata client");
    consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .map(|md| {
            md.topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        })
        .unwrap_or(false)
}

/// A broker with the default topics.
pub fn broker(partitions: i32) -> EmbeddedBroker {
    let b = EmbeddedBroker::start(1).expect("mock broker starts");
    b.create_default_topics(&churn_worker::config::TopicsConfig::default(), partitions)
        .expect("topics");
    b
}

/// One event line.
pub fn event(customer: &str, kind: &str, t_ms: i64, amount: Option<f64>) -> String {
    let ts = churn_core::event::format_timestamp_ms(t_ms);
    match amount {
        Some(a) => format!(
            r#"{{"customer_id":"{customer}","event_type":"{kind}","timestamp":"{ts}","amount":{a}}}"#
        ),
        None => {
            format!(r#"{{"customer_id":"{customer}","event_type":"{kind}","timestamp":"{ts}"}}"#)
        }
    }
}

/// Produces (key, value) messages to `topic` and waits for every ack.
pub fn produce(bootstrap: &str, topic: &str, messages: &[(String, Vec<u8>)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "2000000")
        .create()
        .expect("producer");
    for (key, value) in messages {
        loop {
            match producer.send(BaseRecord::to(topic).key(key).payload(value)) {
                Ok(()) => break,
                Err((_, _)) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("all produced");
}

/// Produces event lines keyed by their customer id.
pub fn produce_events(bootstrap: &str, topic: &str, lines: &[String]) {
    let messages: Vec<(String, Vec<u8>)> = lines
        .iter()
        .map(|l| {
            let key = serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["customer_id"].as_str().map(String::from))
                .unwrap_or_else(|| "bad".into());
            (key, l.clone().into_bytes())
        })
        .collect();
    produce(bootstrap, topic, &messages);
}

/// A message read back from a topic.
#[derive(Debug, Clone)]
pub struct TopicMessage {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
}

/// Reads `topic` from the beginning until `want` messages or `timeout`.
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    want: usize,
    timeout: Duration,
) -> Vec<TopicMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("tpl");
        }
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| {
                            (
                                x.key.to_string(),
                                String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(TopicMessage {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: m.payload().map(<[u8]>::to_vec),
                headers,
            });
        }
    }
    out
}

/// Worker configuration for tests: the broker, an ephemeral HTTP port.
pub fn worker_config(bootstrap: &str) -> WorkerConfig {
    let mut c = WorkerConfig::load_with_env(
        None,
        &Overrides {
            bootstrap_servers: Some(bootstrap.to_string()),
            http_addr: Some("127.0.0.1:0".into()),
        },
        Vec::new(),
    )
    .expect("default config");
    c.kafka
        .consumer
        .insert("auto.commit.interval.ms".into(), "200".into());
    c.kafka
        .consumer
        .insert("statistics.interval.ms".into(), "500".into());
    c.kafka
        .consumer
        .insert("session.timeout.ms".into(), "6000".into());
    c.pipeline.batch_size = 200;
    // librdkafka's own debug contexts for chasing a flaky test, e.g.
    // RDK_DEBUG=fetch,cgrp RUST_LOG=debug cargo test --test worker <name>
    if let Ok(debug) = std::env::var("RDK_DEBUG") {
        c.kafka.consumer.insert("debug".into(), debug);
    }
    c
}

/// A worker running in this process.
pub struct RunningWorker {
    pub handles: WorkerHandles,
    pub http: SocketAddr,
    token: CancellationToken,
    runtime: Option<tokio::runtime::Runtime>,
    handle: Option<tokio::task::JoinHandle<Result<(), churn_worker::WorkerError>>>,
}

impl RunningWorker {
    pub fn start(config: WorkerConfig, model: RiskModel) -> Self {
        churn_worker::telemetry::init_tracing();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let worker = runtime
            .block_on(Worker::bind(config, model, Metrics::new()))
            .expect("worker binds");
        let handles = worker.handles();
        let http = worker.http_addr();
        let token = CancellationToken::new();
        let handle = runtime.spawn(worker.run(token.clone()));
        RunningWorker {
            handles,
            http,
            token,
            runtime: Some(runtime),
            handle: Some(handle),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.handles.metrics
    }

    /// Whether the worker has stopped by itself.
    pub fn finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Waits until `cond` holds (checked every 50 ms) or panics after `timeout`.
    pub fn wait_until(&self, what: &str, timeout: Duration, cond: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Graceful shutdown; returns the worker's result.
    pub fn stop(mut self) -> Result<(), churn_worker::WorkerError> {
        self.token.cancel();
        let runtime = self.runtime.take().expect("runtime");
        let handle = self.handle.take().expect("handle");
        runtime
            .block_on(handle)
            .unwrap_or(Err(churn_worker::WorkerError::PipelineStopped))
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        self.token.cancel();
        if let (Some(rt), Some(h)) = (self.runtime.take(), self.handle.take()) {
            let _ = rt.block_on(h);
        }
    }
}

/// `GET path` on `addr`; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> (u16, String) {
    http_request(addr, "GET", path, bearer)
}

/// `method path` (no body) on `addr`; returns (status, body).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, dechunk(&body))
}

/// Removes HTTP/1.1 chunked framing, if present.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size_line, tail)) = rest.split_once("\r\n") else {
            return body.to_string();
        };
        let Ok(size) = usize::from_str_radix(size_line.trim(), 16) else {
            return body.to_string();
        };
        if size == 0 {
            return out;
        }
        if tail.len() < size {
            return body.to_string();
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
}

/// Offline scores: what `churn-scorer score --as-of` computes, via the library.
pub fn offline_scores(
    model: &RiskModel,
    lines: &[String],
    as_of_ms: i64,
) -> BTreeMap<String, (f64, u32)> {
    let input = lines.join("\n");
    let mut out = Vec::new();
    let mut report = Vec::new();
    churn_core::offline::run_score(
        model,
        input.as_bytes(),
        &mut out,
        &mut report,
        &churn_core::offline::ScoreOptions {
            as_of_ms: Some(as_of_ms),
            strict: false,
        },
    )
    .expect("offline score");
    String::from_utf8(out)
        .expect("utf8")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            (
                v["customer_id"].as_str().expect("id").to_string(),
                (
                    v["risk_score"].as_f64().expect("score"),
                    v["events"].as_u64().expect("events") as u32,
                ),
            )
        })
        .collect()
}

/// Asserts two scores agree to 1e-9 relative.
pub fn assert_close(a: f64, b: f64, what: &str) {
    let tol = 1e-9 * a.abs().max(b.abs()).max(1.0);
    assert!((a - b).abs() <= tol, "{what}: {a} vs {b}");
}

/// A worker running as a child process (`churn-scorer run`), so a test can
/// kill it abruptly.
pub struct WorkerProcess {
    pub child: std::process::Child,
    pub http: SocketAddr,
    _config: tempfile::NamedTempFile,
}

impl WorkerProcess {
    pub fn start(bootstrap: &str) -> Self {
        Self::start_with(bootstrap, "", "")
    }

    /// `consumer_extra`: lines added under `[kafka.consumer]`; `sections`:
    /// whole TOML sections appended (any but `[kafka]`, `[kafka.consumer]`,
    /// `[http]`, `[model]` and `[pipeline]`).
    pub fn start_with(bootstrap: &str, consumer_extra: &str, sections: &str) -> Self {
        Self::start_full(
            bootstrap,
            consumer_extra,
            sections,
            "",
            Path::new("config/model.toml"),
        )
    }

    /// As [`WorkerProcess::start_with`], with lines added under `[http]`
    /// and the model file to load (and reload).
    pub fn start_full(
        bootstrap: &str,
        consumer_extra: &str,
        sections: &str,
        http_extra: &str,
        model: &Path,
    ) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut config = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("temp config");
        let session = if consumer_extra.contains("session.timeout.ms") {
            ""
        } else {
            "\"session.timeout.ms\" = \"6000\"\n"
        };
        let commit = if consumer_extra.contains("auto.commit.interval.ms") {
            ""
        } else {
            "\"auto.commit.interval.ms\" = \"200\"\n"
        };
        write!(
            config,
            "[kafka]\nbootstrap_servers = \"{bootstrap}\"\n\
             [kafka.consumer]\n{session}{commit}\
             {consumer_extra}\n\
             [http]\naddr = \"127.0.0.1:{port}\"\n{http_extra}\n\
             [model]\npath = {model:?}\n\
             [pipeline]\nbatch_size = 500\n\
             {sections}\n"
        )
        .expect("write config");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_churn-scorer"))
            .args(["run", "--config"])
            .arg(config.path())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("worker starts");
        let http = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(http).is_err() {
            assert!(Instant::now() < deadline, "worker HTTP never came up");
            std::thread::sleep(Duration::from_millis(50));
        }
        WorkerProcess {
            child,
            http,
            _config: config,
        }
    }

    /// A counter or gauge from `/metrics` (summed over labels).
    pub fn metric(&self, name: &str) -> f64 {
        let (_, body) = http_get(self.http, "/metrics", None);
        body.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// SIGTERM, then waits (at most `limit`) for the process to exit.
    /// Returns how long it took and its exit status (`None`: still running
    /// at the limit; it is then killed).
    pub fn terminate(mut self, limit: Duration) -> (Duration, Option<std::process::ExitStatus>) {
        let started = Instant::now();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM delivered");
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (started.elapsed(), Some(status));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (started.elapsed(), None)
    }

    /// Sends SIGHUP (the worker re-reads its model file).
    pub fn hangup(&self) {
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGHUP delivered");
    }

    /// SIGKILL: no drain, no commit, no goodbye.
    pub fn kill_abruptly(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `/v1/customers/{id}?as_of=` until every customer's event count
/// matches `expected`, then asserts the scores match too.
pub fn assert_matches_offline(
    http: SocketAddr,
    expected: &BTreeMap<String, (f64, u32)>,
    as_of_ms: i64,
    timeout: Duration,
) {
    let ts = churn_core::event::format_timestamp_ms(as_of_ms);
    let deadline = Instant::now() + timeout;
    for (id, (score, events)) in expected {
        loop {
            let (status, body) = http_get(http, &format!("/v1/customers/{id}?as_of={ts}"), None);
            let v: Option<serde_json::Value> = serde_json::from_str(&body).ok();
            let got = v
                .as_ref()
                .filter(|_| status == 200)
                .and_then(|v| Some((v["risk_score"].as_f64()?, v["events"].as_u64()? as u32)));
            match got {
                Some((s, e)) if e == *events => {
                    assert_close(s, *score, id);
                    break;
                }
                Some((_, e)) if e > *events => panic!("{id}: {e} events applied, {events} sent"),
                _ => {
                    assert!(
                        Instant::now() < deadline,
                        "{id}: never caught up (last answer {status}: {body})"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

/// A history of `customers` customers over `days` days, a few events a day.
pub fn history(customers: usize, days: i64, seed: u64) -> Vec<String> {
    let kinds = [
        "login",
        "session",
        "purchase",
        "support_ticket",
        "feature_used",
        "complaint",
        "login",
        "session",
    ];
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut lines = Vec::new();
    for day in 0..days {
        for c in 0..customers {
            if next() % 3 == 0 {
                continue;
            }
            let kind = kinds[(next() % kinds.len() as u64) as usize];
            let t = T0_MS + day * DAY_MS + (next() % DAY_MS as u64) as i64;
            let amount = (kind == "purchase").then_some((next() % 100) as f64);
            lines.push(event(&format!("c{c:05}"), kind, t, amount));
        }
    }
    lines
}

/// The offset the worker's group has committed for `topic`/`partition`.
pub fn committed_offset(bootstrap: &str, group: &str, topic: &str, partition: i32) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .ok()?;
    match committed.find_partition(topic, partition)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// The high watermark (next offset to be written) of `topic`/`partition`.
pub fn high_watermark(bootstrap: &str, topic: &str, partition: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("consumer");
    consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .expect("watermarks")
        .1
}

/// Alerts read back from the alerts topic.
pub fn read_alerts(bootstrap: &str, timeout: Duration) -> Vec<churn_core::alert::Alert> {
    read_topic(bootstrap, "churn-alerts", usize::MAX, timeout)
        .iter()
        .filter_map(|r| serde_json::from_slice(r.value.as_deref()?).ok())
        .collect()
}

/// `/v1/customers/{id}` (at `as_of_ms`, if given) as JSON, once it answers
/// 200 with `events` events; panics at the deadline with the last answer.
pub fn customer_with_events(
    http: SocketAddr,
    id: &str,
    as_of_ms: Option<i64>,
    events: u64,
    timeout: Duration,
) -> serde_json::Value {
    let path = match as_of_ms {
        Some(t) => format!(
            "/v1/customers/{id}?as_of={}",
            churn_core::event::format_timestamp_ms(t)
        ),
        None => format!("/v1/customers/{id}"),
    };
    let deadline = Instant::now() + timeout;
    loop {
        let (status, body) = http_get(http, &path, None);
        if status == 200 {
            let v: serde_json::Value = serde_json::from_str(&body).expect("json");
            if v["events"].as_u64() == Some(events) {
                return v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{id}: never reached {events} events (last answer {status}: {body})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes `text` aside and renames it into place, as a deployment would:
/// a reader never sees half a file.
pub fn write_file_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write file");
    std::fs::rename(&tmp, path).expect("rename file");
}
