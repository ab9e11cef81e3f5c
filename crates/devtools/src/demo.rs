//! The one-command tour (`churn-scorer demo`) and the live feed that
//! produces synthetic journeys into Kafka (`generate --bootstrap-servers`).
//!
//! Development tooling only: the worker's code path never depends on it.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tokio_util::sync::CancellationToken;

use churn_generate::{GenerateConfig, GenerateError, Generator};

/// Share of the demo feed's lines that are bad on purpose (dead letters).
const INVALID_RATE: f64 = 0.002;

/// Errors of the live feed and the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A Kafka client error.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// Events still queued when the feed stopped were not delivered in time.
    #[error(
        "{undelivered} events not delivered to kafka at {bootstrap} (set by --bootstrap-servers) within 5 s of stopping: {source}"
    )]
    Undelivered {
        /// Messages dropped.
        undelivered: i32,
        /// The brokers.
        bootstrap: String,
        /// librdkafka's flush error.
        source: KafkaError,
    },
    /// The worker's HTTP address is taken or invalid.
    #[error(
        "cannot listen on {addr} (set by --http-addr; `--http-addr 127.0.0.1:0` picks a free port): {source}"
    )]
    HttpAddr {
        /// The address given.
        addr: String,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The generator rejected its settings.
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// The embedded broker failed.
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    /// The worker failed.
    #[error(transparent)]
    Worker(#[from] churn_worker::WorkerError),
    /// The worker configuration is invalid.
    #[error(transparent)]
    Config(#[from] churn_worker::config::ConfigError),
}

/// How fast the feed plays the synthetic timeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// A steady number of events per second.
    EventsPerSecond(f64),
    /// Simulated days per wall-clock second (time compression).
    DaysPerSecond(f64),
}

/// Totals of a feed run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedStats {
    /// Messages produced.
    pub produced: u64,
    /// Of which deliberately bad.
    pub invalid: u64,
}

/// Produces generated journeys to `topic`, keyed by customer, at `pace`,
/// until `stop` (or forever: when a period ends, the next one starts where
/// it ended, with the next seed). Blocking: run it on its own thread.
pub fn run_live_feed(
    bootstrap: &str,
    topic: &str,
    mut config: GenerateConfig,
    pace: Pace,
    stop: &CancellationToken,
) -> Result<FeedStats, DemoError> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .create()?;
    let mut stats = FeedStats::default();
    let started = Instant::now();
    'periods: loop {
        let mut generator = Generator::new(config.clone())?;
        let period_start = generator.start_ms();
        let played_before = started.elapsed();
        while let Some(event) = generator.next_event() {
            if stop.is_cancelled() {
                break 'periods;
            }
            // Wait until this event is due on the wall clock.
            let due = match pace {
                Pace::EventsPerSecond(rate) => {
                    Duration::from_secs_f64(stats.produced as f64 / rate.max(1e-3))
                }
                Pace::DaysPerSecond(speed) => {
                    let days = (event.timestamp_ms - period_start) as f64 / 86_400_000.0;
                    played_before + Duration::from_secs_f64(days / speed.max(1e-6))
                }
            };
            loop {
                let now = started.elapsed();
                if now >= due || stop.is_cancelled() {
                    break;
                }
                producer.poll(Duration::ZERO);
                std::thread::sleep((due - now).min(Duration::from_millis(50)));
            }
            let mut record = BaseRecord::to(topic)
                .key(event.customer_id)
                .payload(event.line);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        producer.poll(Duration::from_millis(50));
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
            stats.produced += 1;
            stats.invalid += u64::from(event.invalid);
            if stats.produced % 1024 == 0 {
                producer.poll(Duration::ZERO);
            }
        }
        config.start_ms = generator.end_ms();
        config.seed = config.seed.wrapping_add(1);
    }
    // A bounded wait: events the broker has not taken by then are reported,
    // not waited for (a stop must not hang on an unreachable broker).
    if let Err(source) = producer.flush(Duration::from_secs(5)) {
        let undelivered = producer.in_flight_count();
        producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        return Err(DemoError::Undelivered {
            undelivered,
            bootstrap: bootstrap.to_string(),
            source,
        });
    }
    Ok(stats)
}

/// Settings of `churn-scorer demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Stop after this long (`None`: until Ctrl-C).
    pub duration: Option<Duration>,
    /// HTTP address of the worker.
    pub http_addr: String,
    /// Partitions of each topic.
    pub partitions: i32,
    /// Synthetic customers.
    pub customers: u32,
    /// Simulated days per second.
    pub days_per_second: f64,
}

/// Runs the tour: embedded broker, topics, live feed, worker; prints how to
/// look at it and a summary line every few seconds.
pub async fn run_demo(options: DemoOptions, stop: CancellationToken) -> Result<(), DemoError> {
    use crate::broker::EmbeddedBroker;
    use churn_worker::config::{Overrides, WorkerConfig};

    let broker = EmbeddedBroker::start(1)?;
    let bootstrap = broker.bootstrap_servers().to_string();
    let mut config = WorkerConfig::load_with_env(
        None,
        &Overrides {
            bootstrap_servers: Some(bootstrap.clone()),
            http_addr: Some(options.http_addr.clone()),
        },
        std::env::vars(),
    )?;
    // The mock broker waits a full session timeout for a departed member.
    config
        .kafka
        .consumer
        .insert("session.timeout.ms".into(), "6000".into());
    config
        .kafka
        .consumer
        .insert("statistics.interval.ms".into(), "1000".into());
    config.engine.idle_timeout_secs = 5;
    // The feed plays days per second, so its event time runs ahead of the
    // wall clock by design: the skew bound that guards real clocks is off.
    config.engine.max_future_skew_secs = 100 * 365 * 86_400;
    broker.create_default_topics(&config.topics, options.partitions)?;

    let model = churn_core::model::RiskModel::default_model();
    let metrics = churn_worker::telemetry::Metrics::new();
    let worker = match churn_worker::Worker::bind(config.clone(), model, metrics.clone()).await {
        Ok(worker) => worker,
        Err(churn_worker::WorkerError::Http(source)) => {
            return Err(DemoError::HttpAddr {
                addr: options.http_addr.clone(),
                source,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let http = worker.http_addr();
    let handles = worker.handles();
    let worker_stop = CancellationToken::new();
    let worker_task = tokio::spawn(worker.run(worker_stop.clone()));

    let feed_stop = CancellationToken::new();
    let feed = {
        let bootstrap = bootstrap.clone();
        let topic = config.topics.input.clone();
        let feed_stop = feed_stop.clone();
        let generate = GenerateConfig {
            customers: options.customers,
            // Short periods, so drifting customers reach risk within seconds;
            // each period continues where the last ended, with a new seed.
            days: 60,
            cutoff_days: 45,
            invalid_rate: INVALID_RATE,
            ..GenerateConfig::default()
        };
        let pace = Pace::DaysPerSecond(options.days_per_second);
        tokio::task::spawn_blocking(move || {
            run_live_feed(&bootstrap, &topic, generate, pace, &feed_stop)
        })
    };

    let port = http.port();
    println!("churn-scorer demo");
    println!("  bootstrap: {bootstrap}");
    println!("  metrics:   http://localhost:{port}/metrics");
    println!("  customer:  http://localhost:{port}/v1/customers/cust-0000042");
    println!(
        "  alerts:    kcat -C -b {bootstrap} -t {} -o beginning -e -f '%k %s\\n'",
        config.topics.alerts
    );
    println!(
        "  feed:      {} customers, {} simulated days per second; Ctrl-C stops",
        options.customers, options.days_per_second
    );
    println!(
        "  dead letters: the feed injects bad events on purpose (about {:.1} % of lines: \
         malformed JSON, missing fields, bad timestamps) to show that the worker sets \
         them aside on {} with the reason in a header and keeps going",
        INVALID_RATE * 100.0,
        config.topics.dead_letter
    );

    let started = Instant::now();
    let mut last_events = 0_u64;
    let mut last_at = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(3));
    ticker.tick().await;
    loop {
        let deadline = options
            .duration
            .map(|d| d.saturating_sub(started.elapsed()));
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(deadline.unwrap_or(Duration::from_secs(3600))), if deadline.is_some() => break,
            _ = ticker.tick() => {
                let m = &handles.metrics;
                let events = m.events_consumed.get();
                let rate = (events - last_events) as f64 / last_at.elapsed().as_secs_f64();
                last_events = events;
                last_at = Instant::now();
                let at_risk = m.alerts_published.with_label_values(&["at_risk"]).get();
                let recovered = m.alerts_published.with_label_values(&["recovered"]).get();
                let dead: u64 = churn_core::event::EventError::REASONS
                    .iter()
                    .map(|r| m.dead_letters.with_label_values(&[r]).get())
                    .sum();
                println!(
                    "[{:>4}s] events/s={:>7.0} events={} customers={} alerts: at_risk={} recovered={} dead_letters={} (injected on purpose)",
                    started.elapsed().as_secs(),
                    rate,
                    events,
                    m.customers_tracked.get(),
                    at_risk,
                    recovered,
                    dead
                );
            }
        }
    }
    println!("stopping: draining the worker");
    feed_stop.cancel();
    let fed = feed.await.ok().and_then(Result::ok).unwrap_or_default();
    worker_stop.cancel();
    let result = worker_task
        .await
        .unwrap_or(Err(churn_worker::WorkerError::PipelineStopped));
    drop(broker);
    println!(
        "done: produced={} (of which {} bad on purpose, set aside as dead letters), consumed={}",
        fed.produced,
        fed.invalid,
        metrics.events_consumed.get()
    );
    result.map_err(DemoError::from)
}
