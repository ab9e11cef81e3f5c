//! The `churn-scorer` command line: parses arguments and calls the library.
//! `anyhow` lives here only; the library returns typed errors.

use std::io::{BufReader, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use churn_core::event::parse_date_arg;
use churn_core::model::RiskModel;
use churn_core::offline::{ScoreOptions, run_score_with};
use churn_worker::telemetry::LogFormat;

mod analysis_cli;
#[cfg(feature = "devtools")]
mod devtools_cli;
mod input_cli;
mod kafka_check;

// jemalloc for the whole process, librdkafka's C allocations included (the
// unprefixed feature exports malloc/free on Linux): librdkafka allocates each
// fetched message on its broker thread and a pipeline thread frees it, and
// glibc serialised those frees on the broker thread's arena lock (~10 % of
// pipeline time, ~30 % of the broker thread in allocation). mimalloc removed
// that too but raised p99 latency; docs/performance.md has both measurements.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Live churn-risk scoring of customer event streams.
///
/// Logs go to stderr: human-readable text (coloured only on a terminal), or
/// JSON lines with `--log-format json` / `CHURN_SCORER_LOG_FORMAT=json`;
/// `RUST_LOG` sets the level (default `info`).
#[derive(Parser)]
#[command(name = "churn-scorer", about, long_about)]
struct Cli {
    /// Log format on stderr: `text` or `json` (one object per line; fatal errors too).
    #[arg(
        long,
        global = true,
        env = "CHURN_SCORER_LOG_FORMAT",
        default_value = "text",
        value_parser = ["text", "json"]
    )]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score every customer in a JSON-lines event file.
    Score(ScoreArgs),
    /// Run the streaming worker: consume events, publish alerts, serve metrics.
    Run(RunArgs),
    /// Run a local development Kafka broker (librdkafka's mock cluster).
    #[cfg(feature = "devtools")]
    Broker(devtools_cli::BrokerArgs),
    /// The one-command tour: embedded broker, live synthetic feed, worker, metrics.
    #[cfg(feature = "devtools")]
    Demo(devtools_cli::DemoArgs),
    /// Generate synthetic customer journeys (JSON lines) with planted churn labels.
    #[cfg(feature = "devtools")]
    Generate(devtools_cli::GenerateArgs),
    /// Measure a model against churn labels at a cutoff (AUC, lift, calibration).
    Backtest(analysis_cli::BacktestArgs),
    /// Fit a model's points to churn labels (L2 logistic regression) and write it.
    Fit(analysis_cli::FitArgs),
    /// Show how a sample of a topic (or a file) reads with the input settings:
    /// mapped vs failed, event types vs the model's, time range, suggested renames.
    Inspect(input_cli::InspectArgs),
    /// End-to-end benchmark on an embedded broker (or an external one, --bootstrap-servers): worker vs bare consumer, kcat and Python, latency, memory.
    #[cfg(feature = "devtools")]
    Bench(devtools_cli::BenchArgs),
}

#[derive(clap::Args)]
struct ScoreArgs {
    /// Model file (TOML); the built-in default model when omitted.
    #[arg(long)]
    model: Option<PathBuf>,
    /// JSON-lines events, or `-` for standard input.
    #[arg(long)]
    events: String,
    /// Score at this time: 2025-06-01 (midnight UTC), 2025-06-01T12:30:00 (UTC) or RFC 3339;
    /// default: the latest event time. Later events are ignored.
    #[arg(long)]
    as_of: Option<String>,
    /// Stop with an error at the first bad line, or when no event can be scored.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    input: input_cli::InputArgs,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Worker configuration (TOML); default `config/worker.toml` if present, else built-in
    /// defaults. Relative paths in the file are resolved against its directory.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Kafka bootstrap servers (overrides `kafka.bootstrap_servers`).
    #[arg(long)]
    bootstrap_servers: Option<String>,
    /// HTTP listen address (overrides `http.addr`).
    #[arg(long)]
    http_addr: Option<String>,
    /// Model file (TOML; overrides `model.path`); default: the built-in model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Seconds to wait for the Kafka brokers at startup before giving up.
    #[arg(long, default_value_t = 30)]
    connect_timeout: u64,
}

fn main() -> ExitCode {
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let format: LogFormat = cli.log_format.parse().unwrap_or_default();
    churn_worker::telemetry::init_tracing_with(format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `score … | head`: the reader is gone, which is how such pipes end.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let message = render_error(&e);
            match format {
                LogFormat::Json => tracing::error!(error = %message, "fatal"),
                LogFormat::Text => eprintln!("error: {message}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// The command, with `--version` showing the librdkafka build.
fn command() -> clap::Command {
    let version = format!(
        "{}\nlibrdkafka {} (builtin.features: {})",
        env!("CARGO_PKG_VERSION"),
        rdkafka::util::get_rdkafka_version().1,
        librdkafka_builtin_features()
    );
    // Built once per process: clap keeps the version for the program's lifetime.
    Cli::command().version(&*Box::leak(version.into_boxed_str()))
}

/// librdkafka's `builtin.features` (ssl, sasl_scram, …) of this build.
fn librdkafka_builtin_features() -> String {
    use std::ffi::{CStr, c_char};
    let mut buf = vec![0 as c_char; 1024];
    let mut size = buf.len();
    // SAFETY: a fresh configuration object is read into a buffer of `size`
    // bytes, then destroyed; librdkafka NUL-terminates what it writes.
    unsafe {
        let conf = rdkafka_sys::rd_kafka_conf_new();
        let res = rdkafka_sys::rd_kafka_conf_get(
            conf,
            c"builtin.features".as_ptr(),
            buf.as_mut_ptr(),
            &mut size,
        );
        rdkafka_sys::rd_kafka_conf_destroy(conf);
        if res != rdkafka_sys::rd_kafka_conf_res_t::RD_KAFKA_CONF_OK {
            return "unknown".into();
        }
        CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
    }
}

/// Whether the error is a write to a closed pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<churn_core::offline::ScoreError>()
                .is_some_and(|s| {
                    matches!(s, churn_core::offline::ScoreError::Output(io)
                        if io.kind() == std::io::ErrorKind::BrokenPipe)
                })
    })
}

/// The error and its causes on one line, each cause once (library errors
/// often repeat their source in their own message).
fn render_error(e: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Score(args) => score(args),
        Command::Run(args) => run_worker(args),
        #[cfg(feature = "devtools")]
        Command::Broker(args) => devtools_cli::broker(args),
        #[cfg(feature = "devtools")]
        Command::Demo(args) => devtools_cli::demo(args),
        #[cfg(feature = "devtools")]
        Command::Generate(args) => devtools_cli::generate(args),
        Command::Backtest(args) => analysis_cli::backtest(args),
        Command::Fit(args) => analysis_cli::fit(args),
        Command::Inspect(args) => input_cli::inspect(args),
        #[cfg(feature = "devtools")]
        Command::Bench(args) => devtools_cli::bench(args),
    }
}

fn load_model(path: Option<&PathBuf>) -> Result<RiskModel> {
    match path {
        Some(p) => RiskModel::load(p).with_context(|| format!("loading model {}", p.display())),
        None => Ok(RiskModel::default_model()),
    }
}

fn score(args: ScoreArgs) -> Result<()> {
    let model = load_model(args.model.as_ref())?;
    let format = args.input.format()?;
    let as_of_ms = args
        .as_of
        .as_deref()
        .map(parse_date_arg)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--as-of: {e}"))?;
    let options = ScoreOptions {
        as_of_ms,
        strict: args.strict,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut report = std::io::stderr().lock();
    if args.events == "-" {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            eprintln!("reading events from standard input (Ctrl-D to end)");
        }
        run_score_with(
            &format,
            &model,
            stdin.lock(),
            &mut out,
            &mut report,
            &options,
        )?;
    } else {
        let file = std::fs::File::open(&args.events)
            .with_context(|| format!("opening events file {}", args.events))?;
        run_score_with(
            &format,
            &model,
            BufReader::new(file),
            &mut out,
            &mut report,
            &options,
        )?;
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Re-reads the model file on every SIGHUP until `token` is cancelled
/// (a refused model is logged and counted by the worker, which keeps the
/// previous one).
async fn reload_on_sighup(
    registry: std::sync::Arc<churn_worker::ModelRegistry>,
    token: tokio_util::sync::CancellationToken,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; use POST /admin/reload");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                got = hangup.recv() => if got.is_none() { return },
            }
            tracing::info!("SIGHUP: reloading the model");
            let registry = std::sync::Arc::clone(&registry);
            // Reads a file: off the async workers, and not awaited here, so
            // a file that blocks on read holds no later signal or request
            // (they are refused as busy until it ends). The outcome is
            // logged there, except that there was no file to read.
            tokio::task::spawn_blocking(move || {
                if let Err(churn_worker::ReloadError::NoModelFile) = registry.reload_model() {
                    tracing::warn!(
                        "SIGHUP: nothing to re-read: the built-in model is in use; \
                         start with --model <file> (or `model.path`) to reload a model file"
                    );
                }
            });
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (registry, token);
    }
}

/// Cancels `token` on Ctrl-C or SIGTERM.
async fn cancel_on_signal(token: tokio_util::sync::CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    token.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown requested");
    token.cancel();
}

fn run_worker(args: RunArgs) -> Result<()> {
    use churn_worker::config::{Overrides, WorkerConfig};
    let default_path = PathBuf::from("config/worker.toml");
    let (path, path_source) = match args.config {
        Some(p) => {
            anyhow::ensure!(
                p.is_file(),
                "configuration file {} (given by --config) not found",
                p.display()
            );
            (Some(p), "--config")
        }
        None if default_path.is_file() => (Some(default_path), "the default config/worker.toml"),
        None => (None, "built-in defaults"),
    };
    let overrides = Overrides {
        bootstrap_servers: args.bootstrap_servers,
        http_addr: args.http_addr,
    };
    let mut config = WorkerConfig::load(path.as_deref(), &overrides)?;
    let model = match (&args.model, &config.model.path) {
        (Some(p), _) => RiskModel::load(p)
            .with_context(|| format!("model file {} (given by --model)", p.display()))?,
        (None, Some(p)) => RiskModel::load(p).with_context(|| {
            format!(
                "model file {} (configuration key `model.path`{})",
                p.display(),
                path.as_ref()
                    .map(|c| format!(" in {}", c.display()))
                    .unwrap_or_default()
            )
        })?,
        (None, None) => RiskModel::default_model(),
    };
    if let Some(p) = args.model {
        config.model.path = Some(p);
    }
    tracing::info!(
        config = %path.as_ref().map_or_else(|| "built-in defaults".to_string(), |p| p.display().to_string()),
        source = path_source,
        model = %config.model.path.as_ref().map_or_else(|| "built-in default model".to_string(), |p| p.display().to_string()),
        model_version = model.version(),
        bootstrap_servers = %config.kafka.bootstrap_servers,
        "starting worker"
    );
    let metrics = churn_worker::telemetry::Metrics::new();
    let http_addr = config.http.addr.clone();
    let bootstrap = config.kafka.bootstrap_servers.clone();
    let rt = runtime()?;
    let result = rt.block_on(async move {
        let token = tokio_util::sync::CancellationToken::new();
        tokio::spawn(cancel_on_signal(token.clone()));
        let worker = match churn_worker::Worker::bind(config.clone(), model, metrics).await
        {
            Ok(worker) => worker,
            Err(e @ churn_worker::WorkerError::Http(_)) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot listen on {http_addr} (set by --http-addr or `http.addr`)"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        tokio::spawn(reload_on_sighup(worker.handles().registry, token.clone()));
        let check_config = config.clone();
        let check_token = token.clone();
        let deadline = std::time::Duration::from_secs(args.connect_timeout);
        tokio::task::spawn_blocking(move || {
            kafka_check::check(&check_config, &check_token, deadline)
        })
            .await
            .context("kafka connection check")??;
        worker.run(token).await.map_err(|e| match e {
            churn_worker::WorkerError::Kafka(k) => anyhow::anyhow!(
                "kafka at {bootstrap} (set by --bootstrap-servers or `kafka.bootstrap_servers`): {k}"
            ),
            other => other.into(),
        })?;
        Ok(())
    });
    // The pipeline has already bounded its own shutdown: do not wait for
    // stray blocking tasks (e.g. an HTTP lookup) beyond a moment.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}
