//! The end-to-end benchmark (`churn-scorer bench`): how fast one worker
//! instance consumes, scores, alerts and writes state, against how fast a
//! bare librdkafka consumer can merely read the same messages.
//!
//! Everything runs in this process: an [`EmbeddedBroker`] (librdkafka's mock
//! cluster), a loader that fills the input topic from the [`Generator`], a
//! bare `BaseConsumer` (the limit), the real [`Worker`] (fresh consumer
//! group, HTTP on `127.0.0.1:0`), and a paced producer for the latency
//! phase. With [`BenchOptions::bootstrap_servers`] the same rounds run
//! against an external cluster instead of the mock ([`ExternalBroker`]):
//! topics named for the run, created by admin API and deleted at the end.
//! See `docs/performance.md` for the figures and how to read them.
//!
//! Development tooling only: the worker's code path never depends on it.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use prometheus::core::Metric;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::broker::EmbeddedBroker;
use crate::external::{ExternalBroker, ExternalError, TopicSpec};
use churn_core::model::RiskModel;
use churn_generate::{GenerateConfig, Generator, Shape};
use churn_worker::Worker;
use churn_worker::config::{Overrides, TopicsConfig, WorkerConfig};
use churn_worker::telemetry::Metrics;

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A Kafka client error.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The embedded broker failed.
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    /// The external cluster is unreachable or refused a topic.
    #[error(transparent)]
    External(#[from] ExternalError),
    /// The worker failed.
    #[error(transparent)]
    Worker(#[from] churn_worker::WorkerError),
    /// The worker configuration is invalid.
    #[error(transparent)]
    Config(#[from] churn_worker::config::ConfigError),
    /// The generator rejected its settings.
    #[error(transparent)]
    Generate(#[from] churn_generate::GenerateError),
    /// A bad setting.
    #[error("{0}")]
    Invalid(String),
    /// A check of the benchmark's own bookkeeping failed.
    #[error("benchmark check failed: {0}")]
    Check(String),
    /// No progress for too long.
    #[error("no progress for 60 s while {0}")]
    Stalled(&'static str),
}

/// Settings of one benchmark run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Events loaded into the input topic.
    pub events: u64,
    /// Customers of the generator.
    pub customers: u32,
    /// Partitions of every topic.
    pub partitions: i32,
    /// Seconds of the paced latency phase (0 skips it).
    pub latency_secs: f64,
    /// Rate of the latency phase as a fraction of the measured worker rate.
    pub latency_load: f64,
    /// Rate of the latency phase in events/s, instead of `latency_load`:
    /// compares builds or settings at the same absolute load.
    pub latency_rate: Option<f64>,
    /// Worker configuration file (TOML) for experiments; built-in defaults when `None`.
    pub config: Option<std::path::PathBuf>,
    /// Shape of the generated stream.
    pub shape: Shape,
    /// A Python worker script (`benches/python_worker.py`) to measure on the
    /// same topic in the same run, between the bare consumer and the worker.
    pub python_worker: Option<std::path::PathBuf>,
    /// Also time `kcat` (from `PATH`) reading the same topic: the read-only
    /// reference of the issue that set the targets, in a process of its own.
    pub kcat: bool,
    /// Rounds of (bare consumer, kcat, Python worker, worker) on the loaded
    /// topic; the report's rates and ratios are the medians over rounds.
    pub rounds: u32,
    /// An external Kafka cluster to run on instead of the embedded mock
    /// broker: the benchmark creates topics of its own there (admin API,
    /// the cluster's default replication factor) and deletes them at the end.
    pub bootstrap_servers: Option<String>,
    /// How long to wait for the external cluster to answer at the start.
    pub connect_timeout: Duration,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            events: 1_000_000,
            customers: 100_000,
            partitions: 32,
            latency_secs: 10.0,
            latency_load: 0.5,
            latency_rate: None,
            config: None,
            shape: Shape::Journeys,
            python_worker: None,
            kcat: false,
            rounds: 1,
            bootstrap_servers: None,
            connect_timeout: Duration::from_secs(30),
        }
    }
}

/// Heap allocations made so far by the whole process, if the binary counts
/// them (`benches/alloc.rs` installs a counting allocator and sets this);
/// the benchmark then reports allocations per event of the worker phase.
pub static ALLOCATIONS: std::sync::OnceLock<fn() -> u64> = std::sync::OnceLock::new();

fn allocations() -> Option<u64> {
    ALLOCATIONS.get().map(|f| f())
}

/// What the Python worker reported.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PythonReport {
    /// Events read.
    pub events: u64,
    /// From its first message to its last (s).
    pub seconds: f64,
    /// Alerts it published.
    pub alerts: u64,
}

impl PythonReport {
    /// Events per second.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }
}

/// One consumption measurement.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Throughput {
    /// Events counted.
    pub events: u64,
    /// From subscribing to the last event (includes joining the group).
    pub total: Duration,
    /// From the first event seen to the last.
    pub steady: Duration,
}

impl Throughput {
    /// Events per second between the first and the last event.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.steady.as_secs_f64().max(1e-9)
    }
}

/// What one round measured on the same loaded topic.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Round {
    /// The bare consumer.
    pub bare: Throughput,
    /// `kcat`, if asked.
    pub kcat: Option<Throughput>,
    /// The Python worker, if asked.
    pub python: Option<PythonReport>,
    /// The worker.
    pub worker: Throughput,
}

impl Round {
    /// The worker's rate over kcat's and over the Python worker's in this
    /// round, where they ran.
    pub fn worker_ratios(&self) -> (Option<f64>, Option<f64>) {
        let w = self.worker.rate();
        (
            self.kcat.map(|k| w / k.rate().max(1e-9)),
            self.python.map(|p| w / p.rate().max(1e-9)),
        )
    }
}

/// The measurement of median `rate` (the higher middle one of an even
/// count); `None` when there is none.
fn median_by_rate<T: Copy>(items: impl IntoIterator<Item = T>, rate: fn(&T) -> f64) -> Option<T> {
    let mut v: Vec<T> = items.into_iter().collect();
    v.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    v.get(v.len() / 2).copied()
}

/// Latency quantiles of the paced phase.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencyReport {
    /// Target rate (events/s).
    pub target_rate: f64,
    /// Events produced in the phase.
    pub produced: u64,
    /// Achieved production rate (events/s).
    pub produced_rate: f64,
    /// Median event-to-acknowledged latency (s), interpolated within buckets.
    pub p50: f64,
    /// 90th percentile (s).
    pub p90: f64,
    /// 99th percentile (s).
    pub p99: f64,
    /// 99.9th percentile (s).
    pub p999: f64,
    /// Mean (s), exact.
    pub mean: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    /// The Python worker on the same topic, if it was run: the round of median rate.
    pub python: Option<PythonReport>,
    /// From the worker's first event to every offset committed (its last
    /// state flush acknowledged and the commit done).
    pub committed_after: Option<Duration>,
    /// Heap allocations of the whole process during the worker phase (see [`ALLOCATIONS`]).
    pub worker_allocations: Option<u64>,
    /// Loader throughput (events/s, acknowledged).
    pub load_rate: f64,
    /// Mean payload bytes per event.
    pub mean_payload: f64,
    /// Distinct customers among the loaded events.
    pub customers: u64,
    /// Every round's measurements, in order.
    pub rounds: Vec<Round>,
    /// The bare consumer: the round of median rate.
    pub bare: Throughput,
    /// `kcat` reading the topic, if asked: the round of median rate.
    pub kcat: Option<Throughput>,
    /// The worker: the round of median rate. The worker phase's other
    /// figures (outputs, CPU, memory, allocations) are the last round's.
    pub worker: Throughput,
    /// Resident set size before the worker started (bytes).
    pub rss_before_worker: u64,
    /// Resident set size once the worker had processed everything (bytes).
    pub rss_after_worker: u64,
    /// Customers held by the worker at the end of the throughput phase.
    pub customers_tracked: i64,
    /// Alerts acknowledged in the throughput phase.
    pub alerts: u64,
    /// State records acknowledged in the throughput phase.
    pub state_records: u64,
    /// Inactivity timers fired in the throughput phase.
    pub timers_fired: u64,
    /// The paced phase, if run.
    pub latency: Option<LatencyReport>,
    /// Peak resident set size of the process (bytes).
    pub peak_rss: u64,
    /// CPU per thread name during the worker's throughput phase (whole process,
    /// the embedded broker included).
    pub worker_cpu: Vec<(String, Duration)>,
    /// CPU per thread name during the bare consumer's read.
    pub bare_cpu: Vec<(String, Duration)>,
    /// CPU per live thread name during the paced phase.
    pub latency_cpu: Vec<(String, Duration)>,
    /// CPU of the whole process during the paced phase (the producer included).
    pub latency_process_cpu: Duration,
}

/// A reading of `/proc/self/status` (Linux), in bytes.
fn proc_status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(0, |kb| kb * 1024)
}

/// Current resident set size (bytes; 0 where unknown).
pub fn rss_bytes() -> u64 {
    proc_status_bytes("VmRSS:")
}

/// Peak resident set size (bytes; 0 where unknown).
pub fn peak_rss_bytes() -> u64 {
    proc_status_bytes("VmHWM:")
}

/// CPU time (user + system) of each live thread of this process, by thread
/// id, with the thread's name. Linux only (empty elsewhere).
fn thread_cpu() -> Vec<(u32, String, Duration)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let tick = 100.0; // USER_HZ on Linux
    dir.filter_map(|e| {
        let e = e.ok()?;
        let tid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((
            tid,
            comm.trim().to_string(),
            Duration::from_secs_f64((utime + stime) / tick),
        ))
    })
    .collect()
}

/// CPU time (user + system) of the whole process so far, threads that have
/// ended included. Linux only (zero elsewhere).
fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Duration::from_secs_f64((ticks(11) + ticks(12)) / 100.0)
}

/// CPU used per thread name between two [`thread_cpu`] snapshots, largest first.
fn cpu_by_thread(
    before: &[(u32, String, Duration)],
    after: &[(u32, String, Duration)],
) -> Vec<(String, Duration)> {
    let mut by_name: std::collections::BTreeMap<String, Duration> = Default::default();
    for (tid, name, cpu) in after {
        let prior = before
            .iter()
            .find(|(t, _, _)| t == tid)
            .map_or(Duration::ZERO, |b| b.2);
        // Group librdkafka's per-broker threads (`rdk:broker1`, ...) by kind.
        let key = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
        *by_name.entry(key.to_string()).or_default() += cpu.saturating_sub(prior);
    }
    let mut v: Vec<_> = by_name.into_iter().filter(|(_, d)| !d.is_zero()).collect();
    v.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
    v
}

/// Generated events forever: when a period ends, the next starts where it
/// ended, with the next seed.
struct EventSource {
    config: GenerateConfig,
    generator: Generator,
}

impl EventSource {
    fn new(config: GenerateConfig) -> Result<Self, BenchError> {
        Ok(EventSource {
            generator: Generator::new(config.clone())?,
            config,
        })
    }

    /// Calls `f` with the next event's (key, payload).
    fn next<R>(&mut self, f: impl FnOnce(&str, &[u8]) -> R) -> Result<R, BenchError> {
        loop {
            if let Some(e) = self.generator.next_event() {
                return Ok(f(e.customer_id, e.line));
            }
            self.config.start_ms = self.generator.end_ms();
            self.config.seed = self.config.seed.wrapping_add(1);
            self.generator = Generator::new(self.config.clone())?;
        }
    }
}

fn send_blocking(
    producer: &BaseProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
) -> Result<(), BenchError> {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

fn loader(bootstrap: &str, linger_ms: u32) -> Result<BaseProducer, BenchError> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", linger_ms.to_string())
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()?)
}

/// Loads `n` events keyed by customer; returns (distinct customers, payload bytes).
fn load(
    bootstrap: &str,
    topic: &str,
    source: &mut EventSource,
    n: u64,
) -> Result<(u64, u64), BenchError> {
    let producer = loader(bootstrap, 50)?;
    let mut customers: HashSet<Box<str>> = HashSet::new();
    let mut bytes = 0_u64;
    for i in 0..n {
        source.next(|key, payload| {
            if !customers.contains(key) {
                customers.insert(key.into());
            }
            bytes += payload.len() as u64;
            send_blocking(&producer, topic, key, payload)
        })??;
        if i % 4096 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok((customers.len() as u64, bytes))
}

/// Checks that every partition of `topic` holds its events from offset 0
/// (the mock broker drops the oldest data past ~5 MiB per partition) and
/// that the high watermarks add up to `want`.
fn check_watermarks(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    want: u64,
) -> Result<(), BenchError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let mut total = 0_i64;
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        if low != 0 {
            return Err(BenchError::Check(format!(
                "partition {p} of {topic} starts at offset {low}: data was dropped (the mock \
                 broker's ~5 MiB per partition cap, or the cluster's retention); use more \
                 --partitions or fewer --events"
            )));
        }
        total += high;
    }
    if total != want as i64 {
        return Err(BenchError::Check(format!(
            "high watermarks of {topic} add up to {total}, expected {want}"
        )));
    }
    Ok(())
}

/// The limit: a bare consumer in a fresh group that only reads.
fn bare_consumer(
    config: &WorkerConfig,
    topic: &str,
    n: u64,
    group: &str,
) -> Result<Throughput, BenchError> {
    // The worker's own consumer settings (fetch sizes, queues), without its work.
    let mut client = churn_worker::consumer_client_config(config, group);
    client.set("enable.auto.commit", "false");
    let consumer: BaseConsumer = client.create()?;
    let started = Instant::now();
    consumer.subscribe(&[topic])?;
    let mut first: Option<Instant> = None;
    let mut count = 0_u64;
    let mut bytes = 0_u64;
    let mut last_progress = Instant::now();
    while count < n {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                first.get_or_insert_with(Instant::now);
                count += 1;
                bytes += msg.payload().map_or(0, |p| p.len() as u64);
                last_progress = Instant::now();
            }
            Some(Err(e)) => tracing::warn!(error = %e, "bare consumer error"),
            None if last_progress.elapsed() > Duration::from_secs(60) => {
                return Err(BenchError::Stalled("the bare consumer was reading"));
            }
            None => {}
        }
    }
    let end = Instant::now();
    std::hint::black_box(bytes);
    drop(consumer);
    Ok(Throughput {
        events: count,
        total: end - started,
        steady: end - first.unwrap_or(started),
    })
}

/// Runs the Python worker on `topic` until it has read `n` events.
fn python_worker(
    script: &Path,
    bootstrap: &str,
    topic: &str,
    alerts_topic: &str,
    n: u64,
) -> Result<PythonReport, BenchError> {
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(["--bootstrap", bootstrap, "--topic", topic])
        .args(["--alerts-topic", alerts_topic, "--events", &n.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| BenchError::Invalid(format!("python3 {}: {e}", script.display())))?;
    if !out.status.success() {
        return Err(BenchError::Check(format!(
            "the Python worker failed ({})",
            out.status
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| BenchError::Check(format!("the Python worker printed {line:?}: {e}")))?;
    let field = |k: &str| v.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
    Ok(PythonReport {
        events: field("events") as u64,
        seconds: field("seconds"),
        alerts: field("alerts") as u64,
    })
}

/// Cumulative bucket counts of the processing-latency histogram.
fn latency_buckets(metrics: &Metrics) -> Vec<(f64, u64)> {
    let m = metrics.processing_latency.metric();
    m.get_histogram()
        .get_bucket()
        .iter()
        .map(|b| (b.upper_bound(), b.cumulative_count()))
        .collect()
}

/// The `q` quantile of the observations between two snapshots of cumulative
/// bucket counts, interpolated linearly within its bucket (as PromQL's
/// `histogram_quantile` does).
pub fn quantile_between(before: &[(f64, u64)], after: &[(f64, u64)], total: u64, q: f64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let rank = q * total as f64;
    let mut lower_bound = 0.0;
    let mut lower_count = 0.0;
    for (i, &(bound, cum)) in after.iter().enumerate() {
        let cum = (cum - before.get(i).map_or(0, |b| b.1)) as f64;
        if cum >= rank {
            let in_bucket = cum - lower_count;
            if in_bucket <= 0.0 {
                return bound;
            }
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / in_bucket;
        }
        lower_bound = bound;
        lower_count = cum;
    }
    // Beyond the last finite bucket: report its bound (a lower bound of the truth).
    lower_bound
}

/// Waits until `cond` holds, failing after 60 s without `progress` changing.
fn wait_for(
    what: &'static str,
    mut progress: impl FnMut() -> u64,
    mut cond: impl FnMut() -> bool,
) -> Result<Instant, BenchError> {
    let mut last = progress();
    let mut last_change = Instant::now();
    loop {
        if cond() {
            return Ok(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(2));
        let now = progress();
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(60) {
            return Err(BenchError::Stalled(what));
        }
    }
}

/// Produces at `rate` events/s for `duration` on its own thread.
fn paced_feed(
    bootstrap: String,
    topic: String,
    mut source: EventSource,
    rate: f64,
    duration: Duration,
) -> std::thread::JoinHandle<Result<(u64, Duration), BenchError>> {
    std::thread::spawn(move || {
        // 20 ms batches, as a busy producer fleet sends them: the mock broker
        // scans its log batch by batch on every fetch, so tiny batches would
        // make the broker, not the worker, the subject of the measurement.
        let producer = loader(&bootstrap, 20)?;
        let started = Instant::now();
        let mut produced = 0_u64;
        while started.elapsed() < duration {
            // Everything due by now, then a short sleep.
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            while produced < due {
                source.next(|key, payload| send_blocking(&producer, &topic, key, payload))??;
                produced += 1;
            }
            producer.poll(Duration::ZERO);
            std::thread::sleep(Duration::from_micros(500));
        }
        let elapsed = started.elapsed();
        producer.flush(Duration::from_secs(60))?;
        Ok((produced, elapsed))
    })
}

/// `kcat` reading the whole topic once (no consumer group: it assigns every
/// partition), counting the messages it prints.
fn kcat_read(bootstrap: &str, topic: &str, n: u64) -> Result<Throughput, BenchError> {
    use std::io::Read;
    let started = Instant::now();
    let mut child = std::process::Command::new("kcat")
        .args([
            "-C",
            "-q",
            "-e",
            "-o",
            "beginning",
            "-b",
            bootstrap,
            "-t",
            topic,
        ])
        // One newline per message: the count, and no formatting work to speak of.
        .args(["-f", "\\n"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| BenchError::Invalid(format!("kcat (is it installed?): {e}")))?;
    let Some(mut out) = child.stdout.take() else {
        return Err(BenchError::Check("kcat's output was not piped".into()));
    };
    let mut buf = vec![0_u8; 1 << 16];
    let mut first: Option<Instant> = None;
    let mut count = 0_u64;
    loop {
        let read = out
            .read(&mut buf)
            .map_err(|e| BenchError::Check(format!("reading kcat's output: {e}")))?;
        if read == 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        count += buf[..read].iter().filter(|&&b| b == b'\n').count() as u64;
    }
    let end = Instant::now();
    let status = child
        .wait()
        .map_err(|e| BenchError::Check(format!("waiting for kcat: {e}")))?;
    if !status.success() || count != n {
        return Err(BenchError::Check(format!(
            "kcat printed {count} messages of {n} and exited with {status}"
        )));
    }
    Ok(Throughput {
        events: count,
        total: end - started,
        steady: end - first.unwrap_or(started),
    })
}

/// Where the rounds run: the embedded mock broker, started for the run, or
/// an external cluster, on topics created for the run and deleted after it
/// (also when the run fails: [`ExternalBroker`]'s drop).
enum BenchBroker {
    Embedded(EmbeddedBroker),
    External(ExternalBroker),
}

impl BenchBroker {
    fn start(options: &BenchOptions) -> Result<Self, BenchError> {
        Ok(match &options.bootstrap_servers {
            None => BenchBroker::Embedded(EmbeddedBroker::start(1)?),
            Some(bootstrap) => {
                BenchBroker::External(ExternalBroker::connect(bootstrap, options.connect_timeout)?)
            }
        })
    }

    fn bootstrap_servers(&self) -> &str {
        match self {
            BenchBroker::Embedded(b) => b.bootstrap_servers(),
            BenchBroker::External(b) => b.bootstrap_servers(),
        }
    }

    fn create_topics(&mut self, topics: &[TopicSpec]) -> Result<(), BenchError> {
        match self {
            // The mock has no admin API and never compacts: partitions only.
            BenchBroker::Embedded(b) => {
                for t in topics {
                    b.create_topic(&t.name, t.partitions)?;
                }
            }
            BenchBroker::External(b) => {
                b.create_topics(topics)?;
                let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
                eprintln!("created on {}: {}", b.bootstrap_servers(), names.join(", "));
            }
        }
        Ok(())
    }

    /// Stops the mock, or deletes the run's topics on the external cluster
    /// (a topic that could not be deleted is named on standard error).
    fn finish(self) {
        match self {
            BenchBroker::Embedded(b) => drop(b),
            BenchBroker::External(mut b) => {
                let count = b.created().len();
                let failed = b.delete_topics();
                for (topic, why) in &failed {
                    eprintln!(
                        "could not delete topic {topic} on {} ({why}): delete it by hand",
                        b.bootstrap_servers()
                    );
                }
                eprintln!(
                    "deleted {} of the run's {count} topics on {}",
                    count - failed.len(),
                    b.bootstrap_servers()
                );
            }
        }
    }
}

/// Every topic `topics` names, as the worker needs it: the state changelog
/// and the deletion topic co-partitioned with the input, the changelog and
/// the membership topic compacted, the membership topic single-partition.
fn topic_specs(topics: &TopicsConfig, partitions: i32) -> Vec<TopicSpec> {
    let spec = |name: &String, partitions: i32, compacted: bool| TopicSpec {
        name: name.clone(),
        partitions,
        compacted,
    };
    let mut specs = vec![
        spec(&topics.input, partitions, false),
        spec(&topics.alerts, partitions, false),
        spec(&topics.dead_letter, partitions, false),
        spec(&topics.state, partitions, true),
    ];
    specs.extend(
        topics
            .shadow_alerts
            .iter()
            .map(|n| spec(n, partitions, false)),
    );
    specs.extend(topics.deletion.iter().map(|n| spec(n, partitions, false)));
    specs.extend(topics.membership.iter().map(|n| spec(n, 1, true)));
    specs
}

/// Names every topic `topics` names `{prefix}-{role}`: on an external
/// cluster the run reads and writes only topics it created.
fn name_topics_for_run(topics: &mut TopicsConfig, prefix: &str) {
    topics.input = format!("{prefix}-input");
    topics.alerts = format!("{prefix}-alerts");
    topics.dead_letter = format!("{prefix}-dlq");
    topics.state = format!("{prefix}-state");
    for (topic, role) in [
        (&mut topics.shadow_alerts, "shadow-alerts"),
        (&mut topics.deletion, "deletion"),
        (&mut topics.membership, "membership"),
    ] {
        if let Some(name) = topic.as_mut() {
            *name = format!("{prefix}-{role}");
        }
    }
}

/// The configuration every worker of the run starts from (each round then
/// takes a group and output topics of its own, [`round_config`]): the
/// `--config` file or the built-in defaults, the broker's address, an HTTP
/// port of its own, and the benchmark's client settings. The one place a
/// worker setting of `bench` goes: a flag of `bench` becomes a field of
/// [`BenchOptions`], applied here, and every round's worker runs with it.
fn worker_config(
    options: &BenchOptions,
    bootstrap: &str,
    mock: bool,
) -> Result<WorkerConfig, BenchError> {
    // No environment: the run's settings are its flags and file only.
    let mut config = WorkerConfig::load_with_env(
        options.config.as_deref(),
        &Overrides {
            bootstrap_servers: Some(bootstrap.to_string()),
            http_addr: Some("127.0.0.1:0".into()),
        },
        Vec::new(),
    )?;
    if mock {
        // The mock broker holds a fetch that finds no data for the full
        // fetch.wait.max.ms even when data arrives meanwhile (a real broker
        // answers as soon as fetch.min.bytes are there): a short wait stands
        // in for that. A real cluster gets the worker's own setting.
        config
            .kafka
            .consumer
            .entry("fetch.wait.max.ms".into())
            .or_insert_with(|| "5".into());
    }
    // Commits follow stored offsets closely, so the time to "everything
    // committed" measures the state flush, not the commit timer.
    config
        .kafka
        .consumer
        .entry("auto.commit.interval.ms".into())
        .or_insert_with(|| "100".into());
    Ok(config)
}

/// The worker configuration of `round`: a group of its own and, after the
/// first round, output topics of its own, created on `broker`.
fn round_config(
    base: &WorkerConfig,
    run_id: &str,
    round: u32,
    broker: &mut BenchBroker,
    partitions: i32,
) -> Result<WorkerConfig, BenchError> {
    let mut config = base.clone();
    config.kafka.group_id = format!("bench-worker-{run_id}-{round}");
    if round > 1 {
        let topics = &mut config.topics;
        let mut specs = Vec::new();
        for (name, compacted) in [
            (&mut topics.alerts, false),
            (&mut topics.dead_letter, false),
            (&mut topics.state, true),
        ]
        .into_iter()
        .chain(topics.shadow_alerts.as_mut().map(|n| (n, false)))
        {
            name.push_str(&format!("-round{round}"));
            specs.push(TopicSpec {
                name: name.clone(),
                partitions,
                compacted,
            });
        }
        broker.create_topics(&specs)?;
    }
    Ok(config)
}

/// A worker left running after its throughput phase.
struct LiveWorker {
    runtime: tokio::runtime::Runtime,
    handle: tokio::task::JoinHandle<Result<(), churn_worker::WorkerError>>,
    token: CancellationToken,
    metrics: Metrics,
    config: WorkerConfig,
}

impl LiveWorker {
    /// Stops the worker gracefully and checks its committed offsets cover
    /// the `expected` events.
    fn stop(
        self,
        bootstrap: &str,
        input: &str,
        partitions: i32,
        expected: u64,
    ) -> Result<(), BenchError> {
        self.token.cancel();
        self.runtime
            .block_on(self.handle)
            .map_err(|_| BenchError::Worker(churn_worker::WorkerError::PipelineStopped))??;
        let committed = committed_total(bootstrap, &self.config.kafka.group_id, input, partitions)?;
        if committed != expected as i64 {
            return Err(BenchError::Check(format!(
                "the worker's committed offsets add up to {committed}, expected {expected}"
            )));
        }
        Ok(())
    }
}

/// Starts a worker in a fresh group, measures it through the `n` loaded
/// events and their commit, and records the worker phase's figures in
/// `report`; the worker is left running.
fn measure_worker(
    config: WorkerConfig,
    model: &RiskModel,
    bootstrap: &str,
    input: &str,
    partitions: i32,
    n: u64,
    report: &mut BenchReport,
) -> Result<(LiveWorker, Throughput), BenchError> {
    eprintln!("worker: consuming, scoring, alerting, writing state...");
    let metrics = Metrics::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| BenchError::Invalid(format!("tokio runtime: {e}")))?;
    report.rss_before_worker = rss_bytes();
    let worker = runtime.block_on(Worker::bind(config.clone(), model.clone(), metrics.clone()))?;
    let http = worker.http_addr();
    let token = CancellationToken::new();
    let started = Instant::now();
    let handle = runtime.spawn(worker.run(token.clone()));
    eprintln!("worker: http on {http}");
    let m = &metrics;
    let cpu0 = thread_cpu();
    let allocations0 = allocations();
    let first = wait_for(
        "the worker was starting",
        || 0,
        || m.events_consumed.get() > 0 || handle.is_finished(),
    )?;
    let mut last_report = Instant::now();
    let done = wait_for(
        "the worker was processing",
        || m.processing_latency.get_sample_count(),
        || {
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                eprintln!(
                    "  {:>5.1} s: consumed {} acknowledged {}",
                    first.elapsed().as_secs_f64(),
                    m.events_consumed.get(),
                    m.processing_latency.get_sample_count()
                );
            }
            m.processing_latency.get_sample_count() >= n || handle.is_finished()
        },
    )?;
    if handle.is_finished() {
        token.cancel();
        runtime
            .block_on(handle)
            .map_err(|_| BenchError::Worker(churn_worker::WorkerError::PipelineStopped))??;
        return Err(BenchError::Check("the worker stopped early".into()));
    }
    let throughput = Throughput {
        events: n,
        total: done - started,
        steady: done - first,
    };
    report.worker_cpu = cpu_by_thread(&cpu0, &thread_cpu());
    report.worker_allocations = allocations().zip(allocations0).map(|(b, a)| b - a);
    report.rss_after_worker = rss_bytes();
    report.alerts = churn_core::engine::AlertKind::ALL
        .iter()
        .map(|k| m.alerts_published.with_label_values(&[k.as_str()]).get())
        .sum();
    // Offsets follow the state flush that covers them.
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed_total(bootstrap, &config.kafka.group_id, input, partitions)? < n as i64 {
        if Instant::now() >= deadline {
            return Err(BenchError::Stalled(
                "waiting for the worker's offsets commit",
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    report.committed_after = Some(first.elapsed());
    report.state_records = m.state_changelog_records.get();
    report.timers_fired = m.inactivity_timers_fired.get();
    // The gauge follows the pipeline's one-second tick.
    std::thread::sleep(Duration::from_millis(1100));
    report.customers_tracked = m.customers_tracked.get();
    Ok((
        LiveWorker {
            runtime,
            handle,
            token,
            metrics,
            config,
        },
        throughput,
    ))
}

/// Runs the benchmark, printing progress to standard error.
pub fn run_bench(options: &BenchOptions) -> Result<BenchReport, BenchError> {
    if options.events == 0 || options.partitions < 1 || options.customers == 0 {
        return Err(BenchError::Invalid(
            "--events, --customers and --partitions must be at least 1".into(),
        ));
    }
    let n = options.events;
    let mut report = BenchReport::default();
    // Declared before the worker of the last round, so dropped after it:
    // on an error the run's topics are deleted once the worker is gone.
    let mut broker = BenchBroker::start(options)?;
    let bootstrap = broker.bootstrap_servers().to_string();
    let mock = matches!(broker, BenchBroker::Embedded(_));
    let mut config = worker_config(options, &bootstrap, mock)?;
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    if !mock {
        name_topics_for_run(
            &mut config.topics,
            &format!("churn-bench-{run_id}-{}", options.shape),
        );
    }
    broker.create_topics(&topic_specs(&config.topics, options.partitions))?;
    let input = config.topics.input.clone();

    // 1. Load.
    eprintln!(
        "loading {n} events ({} customers) into {input} ({} partitions)...",
        options.customers, options.partitions
    );
    let mut source = EventSource::new(GenerateConfig {
        customers: options.customers,
        shape: options.shape,
        ..GenerateConfig::default()
    })?;
    let started = Instant::now();
    let (customers, bytes) = load(&bootstrap, &input, &mut source, n)?;
    report.load_rate = n as f64 / started.elapsed().as_secs_f64();
    report.customers = customers;
    report.mean_payload = bytes as f64 / n as f64;
    check_watermarks(&bootstrap, &input, options.partitions, n)?;
    eprintln!(
        "loaded at {:.0} events/s, {:.0} bytes per event",
        report.load_rate, report.mean_payload
    );

    // 2-3. Rounds: the bare consumer (the limit), kcat and the Python worker
    // when asked, then the worker; each reads the whole topic in a group of
    // its own, and each round's worker writes topics of its own (a worker
    // restoring an earlier round's changelog would skip every event as seen).
    let model = RiskModel::default_model();
    let mut live: Option<LiveWorker> = None;
    for round in 1..=options.rounds.max(1) {
        if let Some(previous) = live.take() {
            previous.stop(&bootstrap, &input, options.partitions, n)?;
        }
        let config = round_config(&config, &run_id, round, &mut broker, options.partitions)?;
        eprintln!(
            "round {round} of {}: bare consumer reading {n} events...",
            options.rounds
        );
        let cpu0 = thread_cpu();
        let bare = bare_consumer(&config, &input, n, &format!("bench-bare-{run_id}-{round}"))?;
        report.bare_cpu = cpu_by_thread(&cpu0, &thread_cpu());
        eprintln!("bare consumer: {:.0} events/s", bare.rate());
        let kcat = if options.kcat {
            eprintln!("kcat: reading {n} events...");
            let k = kcat_read(&bootstrap, &input, n)?;
            eprintln!("kcat: {:.0} events/s", k.rate());
            Some(k)
        } else {
            None
        };
        let python = match &options.python_worker {
            Some(script) => {
                eprintln!("python worker: reading {n} events...");
                let py = python_worker(script, &bootstrap, &input, &config.topics.alerts, n)?;
                eprintln!("python worker: {:.0} events/s", py.rate());
                Some(py)
            }
            None => None,
        };
        let (worker, throughput) = measure_worker(
            config,
            &model,
            &bootstrap,
            &input,
            options.partitions,
            n,
            &mut report,
        )?;
        eprintln!("worker: {:.0} events/s", throughput.rate());
        report.rounds.push(Round {
            bare,
            kcat,
            python,
            worker: throughput,
        });
        live = Some(worker);
    }
    let Some(live) = live else {
        return Err(BenchError::Invalid("--rounds must be at least 1".into()));
    };
    let rounds = &report.rounds;
    let bare = median_by_rate(rounds.iter().map(|r| r.bare), Throughput::rate);
    let worker = median_by_rate(rounds.iter().map(|r| r.worker), Throughput::rate);
    let kcat = median_by_rate(rounds.iter().filter_map(|r| r.kcat), Throughput::rate);
    let python = median_by_rate(rounds.iter().filter_map(|r| r.python), PythonReport::rate);
    (report.bare, report.worker) = (bare.unwrap_or_default(), worker.unwrap_or_default());
    (report.kcat, report.python) = (kcat, python);
    let m = live.metrics.clone();

    // 4. Latency under a steady load below the maximum.
    let mut expected = n;
    if options.latency_secs > 0.0 {
        let rate = options
            .latency_rate
            .unwrap_or(report.worker.rate() * options.latency_load);
        let duration = Duration::from_secs_f64(options.latency_secs);
        eprintln!(
            "latency: producing {rate:.0} events/s for {:.0} s...",
            duration.as_secs_f64()
        );
        let before = latency_buckets(&m);
        let (count0, sum0) = (
            m.processing_latency.get_sample_count(),
            m.processing_latency.get_sample_sum(),
        );
        let cpu0 = thread_cpu();
        let process0 = process_cpu();
        let feed = paced_feed(bootstrap.clone(), input.clone(), source, rate, duration);
        let (produced, elapsed) = feed
            .join()
            .map_err(|_| BenchError::Check("the paced producer panicked".into()))??;
        expected += produced;
        wait_for(
            "the worker was processing the paced feed",
            || m.processing_latency.get_sample_count(),
            || m.processing_latency.get_sample_count() >= expected,
        )?;
        report.latency_cpu = cpu_by_thread(&cpu0, &thread_cpu());
        report.latency_process_cpu = process_cpu().saturating_sub(process0);
        let after = latency_buckets(&m);
        let count = m.processing_latency.get_sample_count() - count0;
        let sum = m.processing_latency.get_sample_sum() - sum0;
        let q = |q| quantile_between(&before, &after, count, q);
        report.latency = Some(LatencyReport {
            target_rate: rate,
            produced,
            produced_rate: produced as f64 / elapsed.as_secs_f64(),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            mean: sum / count.max(1) as f64,
        });
    }

    // 5. Stop gracefully and check the committed offsets cover every event.
    live.stop(&bootstrap, &input, options.partitions, expected)?;
    report.peak_rss = peak_rss_bytes();
    broker.finish();
    Ok(report)
}

/// Sum of a group's committed offsets on `topic` (read without joining it).
fn committed_total(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<i64, BenchError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Invalid)?;
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum())
}

impl BenchReport {
    /// The report as printed by `churn-scorer bench`.
    pub fn render(&self, options: &BenchOptions) -> String {
        use std::fmt::Write;
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let mut s = String::new();
        let ratio = self.worker.rate() / self.bare.rate().max(1e-9);
        let growth = self.rss_after_worker.saturating_sub(self.rss_before_worker);
        let _ = writeln!(
            s,
            "shape {} | events {} | customers {} (distinct {}) | partitions {} | payload {:.0} B/event",
            options.shape,
            options.events,
            options.customers,
            self.customers,
            options.partitions,
            self.mean_payload
        );
        let _ = writeln!(s, "load (acked)        {:>10.0} events/s", self.load_rate);
        if self.rounds.len() > 1 {
            for (i, r) in self.rounds.iter().enumerate() {
                let (to_kcat, to_python) = r.worker_ratios();
                let _ = writeln!(
                    s,
                    "round {:<13} bare {:.0} | kcat {} | python {} | worker {:.0} events/s | worker / bare {:.1} %{}{}",
                    i + 1,
                    r.bare.rate(),
                    r.kcat
                        .map_or("-".to_string(), |k| format!("{:.0}", k.rate())),
                    r.python
                        .map_or("-".to_string(), |p| format!("{:.0}", p.rate())),
                    r.worker.rate(),
                    100.0 * r.worker.rate() / r.bare.rate().max(1e-9),
                    to_kcat.map_or(String::new(), |x| format!(
                        " | worker / kcat {:.1} %",
                        100.0 * x
                    )),
                    to_python.map_or(String::new(), |x| format!(" | worker / python {x:.2} x")),
                );
            }
            // On a busy machine every client's rate moves from round to
            // round; a ratio within one round compares clients that ran
            // moments apart under the same load.
            let ratios = |f: fn(&Round) -> Option<f64>| {
                let mut v: Vec<f64> = self.rounds.iter().filter_map(f).collect();
                v.sort_by(f64::total_cmp);
                v.get(v.len() / 2).copied()
            };
            let bare = ratios(|r| Some(r.worker.rate() / r.bare.rate().max(1e-9)));
            let kcat = ratios(|r| r.worker_ratios().0);
            let python = ratios(|r| r.worker_ratios().1);
            let _ = writeln!(
                s,
                "ratios in a round   median over rounds: worker / bare {:.1} %{}{}",
                100.0 * bare.unwrap_or_default(),
                kcat.map_or(String::new(), |x| format!(
                    " | worker / kcat {:.1} %",
                    100.0 * x
                )),
                python.map_or(String::new(), |x| format!(" | worker / python {x:.2} x")),
            );
            let _ = writeln!(
                s,
                "                    rates below: the median round of each; outputs, cpu and memory: the last round"
            );
        }
        let _ = writeln!(
            s,
            "bare consumer       {:>10.0} events/s  ({:.2} s; {:.2} s with group join)",
            self.bare.rate(),
            self.bare.steady.as_secs_f64(),
            self.bare.total.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "worker              {:>10.0} events/s  ({:.2} s; {:.2} s with join and restore)",
            self.worker.rate(),
            self.worker.steady.as_secs_f64(),
            self.worker.total.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "worker / bare       {:>10.1} %  (target >= 50 %)",
            100.0 * ratio
        );
        if let Some(k) = &self.kcat {
            let _ = writeln!(
                s,
                "kcat (read only)    {:>10.0} events/s  ({:.2} s; {:.2} s from start) | worker / kcat {:.1} %",
                k.rate(),
                k.steady.as_secs_f64(),
                k.total.as_secs_f64(),
                100.0 * self.worker.rate() / k.rate().max(1e-9)
            );
        }
        if let Some(c) = self.committed_after {
            let _ = writeln!(
                s,
                "worker, committed   {:>10.0} events/s  (every offset committed {:.2} s after the first event: last flush and commit included)",
                options.events as f64 / c.as_secs_f64().max(1e-9),
                c.as_secs_f64()
            );
        }
        if let Some(py) = &self.python {
            let _ = writeln!(
                s,
                "python worker       {:>10.0} events/s  ({:.2} s; {} alerts) | worker / python {:.1} x (target >= 3) | python / bare {:.1} %",
                py.rate(),
                py.seconds,
                py.alerts,
                self.worker.rate() / py.rate().max(1e-9),
                100.0 * py.rate() / self.bare.rate().max(1e-9)
            );
        }
        let per_event = |x: u64| x as f64 / options.events as f64;
        let _ = writeln!(
            s,
            "outputs             alerts {} ({:.3} per event) | state records {} ({:.3} per event, target <= 0.3) | timers fired {} ({:.2} per event)",
            self.alerts,
            per_event(self.alerts),
            self.state_records,
            per_event(self.state_records),
            self.timers_fired,
            per_event(self.timers_fired)
        );
        if let Some(a) = self.worker_allocations {
            let _ = writeln!(
                s,
                "allocations         {} in the worker phase ({:.2} per event, whole process)",
                a,
                per_event(a)
            );
        }
        let _ = writeln!(
            s,
            "memory              peak RSS {:.0} MiB | worker phase RSS {:.0} -> {:.0} MiB (+{:.0} MiB) | {} customers tracked, {:.0} B/customer (RSS growth, upper bound)",
            mib(self.peak_rss),
            mib(self.rss_before_worker),
            mib(self.rss_after_worker),
            mib(growth),
            self.customers_tracked,
            growth as f64 / self.customers_tracked.max(1) as f64
        );
        let cpu = |v: &[(String, Duration)], wall: Duration, events: u64| {
            let total: f64 = v.iter().map(|(_, d)| d.as_secs_f64()).sum();
            let parts: Vec<String> = v
                .iter()
                .take(8)
                .map(|(n, d)| format!("{n} {:.2}", d.as_secs_f64()))
                .collect();
            format!(
                "{total:.2} s CPU in {:.2} s wall ({:.2} us/event): {}",
                wall.as_secs_f64(),
                total * 1e6 / events.max(1) as f64,
                parts.join(", ")
            )
        };
        let _ = writeln!(
            s,
            "cpu bare            {}",
            cpu(&self.bare_cpu, self.bare.total, options.events)
        );
        let _ = writeln!(
            s,
            "cpu worker          {}",
            cpu(&self.worker_cpu, self.worker.total, options.events)
        );
        if let Some(l) = &self.latency {
            let _ = writeln!(
                s,
                "latency @ {:.0}/s    p50 {:.1} ms | p90 {:.1} ms | p99 {:.1} ms (target <= 50 ms) | p99.9 {:.1} ms | mean {:.1} ms  ({} events, produced at {:.0}/s)",
                l.target_rate,
                l.p50 * 1e3,
                l.p90 * 1e3,
                l.p99 * 1e3,
                l.p999 * 1e3,
                l.mean * 1e3,
                l.produced,
                l.produced_rate
            );
            let wall = Duration::from_secs_f64(l.produced as f64 / l.produced_rate.max(1e-9));
            let _ = writeln!(
                s,
                "cpu latency phase   {:.2} s CPU in the process (producer and generator included), of which {}",
                self.latency_process_cpu.as_secs_f64(),
                cpu(&self.latency_cpu, wall, l.produced)
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets_of_the_difference() {
        let before = [(0.01, 10), (0.02, 10), (0.05, 10)];
        // 100 new observations: 50 below 10 ms, 40 in 10-20 ms, 10 in 20-50 ms.
        let after = [(0.01, 60), (0.02, 100), (0.05, 110)];
        let q = |q| quantile_between(&before, &after, 100, q);
        assert!((q(0.5) - 0.01).abs() < 1e-12);
        assert!((q(0.7) - 0.015).abs() < 1e-12);
        assert!((q(0.95) - 0.035).abs() < 1e-12);
        assert_eq!(quantile_between(&before, &before, 0, 0.5), 0.0);
    }

    /// On an external cluster the run must read and write only topics it
    /// created: every topic a `--config` names is renamed and created, with
    /// the shape the worker's startup check requires.
    #[test]
    fn every_topic_of_the_run_is_its_own_and_created_as_the_worker_needs_it() {
        let mut topics = TopicsConfig {
            shadow_alerts: Some("shadow".into()),
            deletion: Some("erasures".into()),
            membership: Some("members".into()),
            ..TopicsConfig::default()
        };
        name_topics_for_run(&mut topics, "churn-bench-1-2-sparse");
        let specs = topic_specs(&topics, 8);
        let names: Vec<&str> = specs.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "churn-bench-1-2-sparse-input",
                "churn-bench-1-2-sparse-alerts",
                "churn-bench-1-2-sparse-dlq",
                "churn-bench-1-2-sparse-state",
                "churn-bench-1-2-sparse-shadow-alerts",
                "churn-bench-1-2-sparse-deletion",
                "churn-bench-1-2-sparse-membership",
            ]
        );
        let shape = |name: &str| {
            let t = specs.iter().find(|t| t.name.ends_with(name)).expect(name);
            (t.partitions, t.compacted)
        };
        assert_eq!(shape("-state"), (8, true));
        assert_eq!(shape("-deletion"), (8, false));
        assert_eq!(shape("-membership"), (1, true));
        assert_eq!(shape("-input"), (8, false));

        // Unset optional topics stay unset.
        let mut plain = TopicsConfig::default();
        name_topics_for_run(&mut plain, "p");
        assert_eq!(topic_specs(&plain, 2).len(), 4);
        assert_eq!(plain.membership, None);
    }

    #[test]
    fn round_ratios_compare_the_worker_with_the_clients_of_its_round() {
        let t = |events: u64, secs: u64| Throughput {
            events,
            total: Duration::from_secs(secs),
            steady: Duration::from_secs(secs),
        };
        let round = Round {
            bare: t(100, 1),
            kcat: Some(t(100, 2)),
            python: Some(PythonReport {
                events: 100,
                seconds: 10.0,
                alerts: 0,
            }),
            worker: t(100, 4),
        };
        assert_eq!(round.worker_ratios(), (Some(0.5), Some(2.5)));
        let alone = Round {
            kcat: None,
            python: None,
            ..round
        };
        assert_eq!(alone.worker_ratios(), (None, None));
    }
}
