//! The development tools' commands (`broker`, `demo`, `generate`, `bench`),
//! compiled only with the `devtools` feature (on by default): the
//! production image builds the binary without them.

use std::path::PathBuf;

use anyhow::{Context, Result};

use churn_core::event::parse_date_arg;

use crate::{cancel_on_signal, runtime};

#[derive(clap::Args)]
pub struct BrokerArgs {
    /// Partitions of each default topic.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Listen on 127.0.0.1:PORT (default: a free port chosen at each start).
    #[arg(long)]
    pub port: Option<u16>,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Events loaded into the input topic.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Customers of the generator.
    #[arg(long, default_value_t = 100_000)]
    pub customers: u32,
    /// Partitions of every topic (the mock broker keeps ~5 MiB per partition).
    #[arg(long, default_value_t = 32)]
    pub partitions: i32,
    /// Seconds of the paced latency phase at half the measured worker rate; 0 skips it.
    #[arg(long, default_value_t = 10.0)]
    pub latency_secs: f64,
    /// Load of the latency phase, as a fraction of the measured worker rate.
    #[arg(long, default_value_t = 0.5)]
    pub latency_load: f64,
    /// Rate of the latency phase in events/s, instead of --latency-load:
    /// to compare builds or settings at the same absolute load.
    #[arg(long)]
    pub latency_rate: Option<f64>,
    /// Worker configuration (TOML) for experiments; built-in defaults when omitted.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Stream shapes, each measured in a run of its own on a fresh broker:
    /// `journeys`, `sparse`, `mixed`, `purchases` (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "journeys")]
    pub shape: Vec<churn_generate::Shape>,
    /// Also measure this Python worker (`benches/python_worker.py`, needs
    /// python3 with confluent-kafka) on the same topic in each run.
    #[arg(long)]
    pub python_worker: Option<PathBuf>,
    /// Also time `kcat` (from PATH) reading the same topic in each round: a
    /// read-only reference from another process.
    #[arg(long)]
    pub kcat: bool,
    /// Rounds of (bare consumer, kcat, Python worker, worker) on the loaded
    /// topic, each in a fresh consumer group; rates and ratios are medians.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Run against this Kafka cluster instead of the embedded mock broker:
    /// topics of the run's own (`churn-bench-<run>-<shape>-<role>`, the
    /// cluster's default replication factor, the state topic compacted) are
    /// created through the admin API and deleted at the end, also on error.
    /// PLAINTEXT only: the benchmark's own clients take no security settings.
    #[arg(long)]
    pub bootstrap_servers: Option<String>,
    /// Seconds to wait for the cluster of --bootstrap-servers to answer
    /// before giving up.
    #[arg(long, default_value_t = 30)]
    pub connect_timeout: u64,
}

pub fn bench(args: BenchArgs) -> Result<()> {
    use churn_devtools::bench::{BenchOptions, run_bench};
    let mut summary = Vec::new();
    for shape in &args.shape {
        let options = BenchOptions {
            events: args.events,
            customers: args.customers,
            partitions: args.partitions,
            latency_secs: args.latency_secs,
            latency_load: args.latency_load,
            latency_rate: args.latency_rate,
            config: args.config.clone(),
            shape: *shape,
            python_worker: args.python_worker.clone(),
            kcat: args.kcat,
            rounds: args.rounds,
            bootstrap_servers: args.bootstrap_servers.clone(),
            connect_timeout: std::time::Duration::from_secs(args.connect_timeout),
        };
        let report = run_bench(&options)?;
        print!("{}", report.render(&options));
        println!();
        summary.push((options, report));
    }
    if summary.len() > 1 {
        println!(
            "shape     events/s   / bare   / kcat   / python   state/event   alerts/event   p50 ms   p99 ms"
        );
        for (o, r) in &summary {
            let n = o.events as f64;
            println!(
                "{:<8} {:>9.0} {:>7.1} % {:>8} {:>8} {:>12.3} {:>14.3} {:>8} {:>8}",
                o.shape.to_string(),
                r.worker.rate(),
                100.0 * r.worker.rate() / r.bare.rate().max(1e-9),
                r.kcat.map_or("-".to_string(), |k| format!(
                    "{:.1} %",
                    100.0 * r.worker.rate() / k.rate().max(1e-9)
                )),
                r.python.map_or("-".to_string(), |p| format!(
                    "{:.1} x",
                    r.worker.rate() / p.rate().max(1e-9)
                )),
                r.state_records as f64 / n,
                r.alerts as f64 / n,
                r.latency
                    .map_or("-".to_string(), |l| format!("{:.1}", l.p50 * 1e3)),
                r.latency
                    .map_or("-".to_string(), |l| format!("{:.1}", l.p99 * 1e3)),
            );
        }
    }
    Ok(())
}

pub fn broker(args: BrokerArgs) -> Result<()> {
    use churn_devtools::broker::EmbeddedBroker;
    use churn_worker::config::TopicsConfig;
    anyhow::ensure!(args.partitions >= 1, "--partitions must be at least 1");
    let broker = match args.port {
        Some(port) => EmbeddedBroker::start_on_port(port)?,
        None => EmbeddedBroker::start(1)?,
    };
    broker.create_default_topics(&TopicsConfig::default(), args.partitions)?;
    println!("bootstrap: {}", broker.bootstrap_servers());
    eprintln!(
        "development broker (librdkafka mock cluster): topics {} created with {} partitions each.\n\
         NOT a production broker: it keeps only the most recent ~5 MiB (or 100k batches) per partition,\n\
         never compacts, and has no admin API. Runs until killed (Ctrl-C).",
        [
            "customer-events",
            "churn-alerts",
            "churn-events-dlq",
            "churn-scorer-state"
        ]
        .join(", "),
        args.partitions
    );
    runtime()?.block_on(async {
        let token = tokio_util::sync::CancellationToken::new();
        cancel_on_signal(token.clone()).await;
    });
    drop(broker);
    Ok(())
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Number of customers.
    #[arg(long, default_value_t = 1000)]
    pub customers: u32,
    /// Seed: the same seed and settings always give the same bytes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Start of the period: a date (midnight UTC) or RFC 3339.
    #[arg(long, default_value = "2025-01-01T00:00:00Z")]
    pub start: String,
    /// Length of the period in days.
    #[arg(long, default_value_t = 180)]
    pub days: u32,
    /// Label cutoff in days from the start; default: 30 days before the end.
    #[arg(long)]
    pub cutoff_days: Option<u32>,
    /// Output JSON-lines file, or `-` for standard output.
    #[arg(long, default_value = "-")]
    pub out: String,
    /// Write `customer_id,churned` labels (CSV) to this file.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Event-type names: `default` (the default model's) or `custom` (unknown to it).
    #[arg(long, default_value = "default")]
    pub vocabulary: churn_generate::Vocabulary,
    /// Fraction of lines (0-1) replaced by realistic bad lines.
    #[arg(long, default_value_t = 0.0)]
    pub invalid_rate: f64,
    /// Stream shape: `journeys` (archetype stories), `sparse` (everyone about
    /// once every 18 days, 30 % slowing down), `mixed` (rhythms from daily
    /// to every 40 days, 30 % slowing down) or `purchases` (purchases only,
    /// most customers buy once or twice; e.g. `--days 450 --cutoff-days 270`).
    #[arg(long, default_value = "journeys")]
    pub shape: churn_generate::Shape,
    /// Produce to Kafka instead of writing a file: a live stream that runs until stopped.
    #[arg(long)]
    pub bootstrap_servers: Option<String>,
    /// Topic to produce to (with --bootstrap-servers).
    #[arg(long, default_value = "customer-events")]
    pub topic: String,
    /// Events per second (with --bootstrap-servers).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Seconds to wait for the Kafka brokers before giving up (with --bootstrap-servers).
    #[arg(long, default_value_t = 30)]
    pub connect_timeout: u64,
}

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
    /// HTTP address of the worker.
    #[arg(long, default_value = "0.0.0.0:9464")]
    pub http_addr: String,
    /// Synthetic customers in the feed.
    #[arg(long, default_value_t = 2000)]
    pub customers: u32,
    /// Simulated days per second of the feed.
    #[arg(long, default_value_t = 8.0)]
    pub days_per_second: f64,
}

pub fn demo(args: DemoArgs) -> Result<()> {
    use churn_devtools::demo::{DemoOptions, run_demo};
    let options = DemoOptions {
        duration: args.duration.map(std::time::Duration::from_secs),
        http_addr: args.http_addr,
        partitions: 6,
        customers: args.customers,
        days_per_second: args.days_per_second,
    };
    runtime()?.block_on(async move {
        let token = tokio_util::sync::CancellationToken::new();
        tokio::spawn(cancel_on_signal(token.clone()));
        run_demo(options, token).await?;
        Ok(())
    })
}

pub fn generate(args: GenerateArgs) -> Result<()> {
    use churn_generate::{GenerateConfig, Generator};
    use std::io::Write;

    let start_ms = parse_date_arg(&args.start).map_err(|e| anyhow::anyhow!("--start: {e}"))?;
    let config = GenerateConfig {
        customers: args.customers,
        seed: args.seed,
        start_ms,
        days: args.days,
        cutoff_days: args
            .cutoff_days
            .unwrap_or_else(|| args.days.saturating_sub(30).max(1)),
        vocabulary: args.vocabulary,
        invalid_rate: args.invalid_rate,
        shape: args.shape,
    };
    if let Some(bootstrap) = &args.bootstrap_servers {
        use churn_devtools::demo::{Pace, run_live_feed};
        anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
        let token = tokio_util::sync::CancellationToken::new();
        let signal_token = token.clone();
        std::thread::spawn(move || {
            if let Ok(rt) = runtime() {
                rt.block_on(cancel_on_signal(signal_token));
            }
        });
        // Like `run`: an unreachable address fails within the timeout,
        // naming it, instead of retrying forever.
        crate::kafka_check::check_bootstrap(
            bootstrap,
            &token,
            std::time::Duration::from_secs(args.connect_timeout),
        )?;
        if token.is_cancelled() {
            return Ok(());
        }
        eprintln!(
            "producing to {} at {} events/s until stopped",
            args.topic, args.rate
        );
        let stats = run_live_feed(
            bootstrap,
            &args.topic,
            config,
            Pace::EventsPerSecond(args.rate),
            &token,
        )?;
        eprintln!("produced={} invalid={}", stats.produced, stats.invalid);
        return Ok(());
    }
    let mut generator = Generator::new(config)?;
    if let Some(path) = &args.labels {
        let file = std::fs::File::create(path)
            .with_context(|| format!("creating labels file {}", path.display()))?;
        generator
            .write_labels_csv(std::io::BufWriter::new(file))
            .with_context(|| format!("writing labels file {}", path.display()))?;
    }
    let stats = if args.out == "-" {
        let stdout = std::io::stdout();
        generator.write_jsonl(std::io::BufWriter::with_capacity(1 << 20, stdout.lock()))?
    } else {
        let file = std::fs::File::create(&args.out)
            .with_context(|| format!("creating events file {}", args.out))?;
        generator
            .write_jsonl(std::io::BufWriter::with_capacity(1 << 20, file))
            .with_context(|| format!("writing events file {}", args.out))?
    };
    let churned = generator.labels().filter(|l| l.churned).count();
    writeln!(
        std::io::stderr(),
        "generated: lines={} invalid={} customers={} churned={} cutoff={}",
        stats.lines,
        stats.invalid,
        generator.config().customers,
        churned,
        churn_core::event::format_timestamp_ms(generator.cutoff_ms()),
    )?;
    Ok(())
}
