//! Every metric and the tracing setup, in one place.
//!
//! No other module creates a Prometheus metric or chooses a metric name: they
//! call the typed handles on [`Metrics`]. The deployment files under
//! `deploy/` (rules, dashboard) are checked against [`Metrics::metric_names`]
//! by a test, so a renamed metric cannot leave a dead panel behind.

use prometheus::core::Collector;
use prometheus::local::{LocalHistogram, LocalIntCounter};
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Reason labels of `events_dropped_total`.
pub const DROP_REASONS: [&str; 4] = [
    "alert_rejected",
    "shadow_alert_rejected",
    "dead_letter_rejected",
    "state_rejected",
];

/// Result labels of `model_reloads_total`.
pub const RELOAD_RESULTS: [&str; 2] = ["ok", "invalid"];

/// `opened_by` labels of `shadow_alert_agreement_total`.
pub const SHADOW_OPENED_BY: [&str; 2] = ["live", "shadow"];

/// `other` labels of `shadow_alert_agreement_total`.
pub const SHADOW_OTHER: [&str; 2] = ["open", "not_open"];
/// Result labels of `lookups_forwarded_total` (one per instance asked).
pub const FORWARD_RESULTS: [&str; 5] = ["found", "not_found", "unavailable", "failed", "timeout"];

/// Reason labels of `transactions_aborted_total`.
pub const ABORT_REASONS: [&str; 3] = ["commit_failed", "output_failed", "timed_out"];

/// Prefix of every metric this program exports.
pub const METRIC_PREFIX: &str = "churn_scorer_";

/// Typed handles on every metric churn-scorer exports.
///
/// Cloning is cheap (the handles are reference counted), so each task keeps
/// its own copy.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Events read from the input topic and processed (valid or not); a
    /// message set aside while its partition restores counts when read again.
    pub events_consumed: IntCounter,
    /// Events rejected by the parser, by stable reason label.
    pub events_invalid: IntCounterVec,
    /// Events older than the partition watermark: applied to state, never alerting.
    pub events_late: IntCounter,
    /// Events skipped because the customer's state already contains their offset.
    pub events_duplicate: IntCounter,
    /// Alerts acknowledged by the broker, by kind.
    pub alerts_published: IntCounterVec,
    /// Messages written to the dead-letter topic, by reason.
    pub dead_letters: IntCounterVec,
    /// Producer deliveries that failed (each is retried).
    pub producer_errors: IntCounter,
    /// Errors the consumer reported (a failed fetch, a refused group or
    /// topic: a refusal also stops the worker).
    pub consumer_errors: IntCounter,
    /// From receiving an event to the broker acknowledging what it caused.
    pub processing_latency: Histogram,
    /// Customers held in memory across all assigned partitions.
    pub customers_tracked: IntGauge,
    /// Consumer lag (high watermark minus position), by partition.
    pub consumer_lag: IntGaugeVec,
    /// Risk score computed for each scored event or timer.
    pub risk_score: Histogram,
    /// Inactivity timers that fired and re-scored a quiet customer.
    pub inactivity_timers_fired: IntCounter,
    /// Constant 1, labelled with the build and model versions.
    pub build_info: IntGaugeVec,
    /// Partitions currently assigned to this instance.
    pub partitions_assigned: IntGauge,
    /// Wall time to restore one partition's state from the changelog.
    pub state_restore_seconds: Histogram,
    /// Customers restored from the changelog.
    pub state_restored_customers: IntCounter,
    /// Restores that found the input partition recreated (the changelog's
    /// positions past its end), by the policy applied (`fail`,
    /// `reset_positions`).
    pub input_resets: IntCounterVec,
    /// State records written to the changelog topic.
    pub state_changelog_records: IntCounter,
    /// Customers dropped from memory after the eviction horizon.
    pub customers_evicted: IntCounter,
    /// Event-time watermark of each partition, as Unix seconds; a partition
    /// without one yet (no event accepted or restored) has no series.
    pub partition_watermark_seconds: IntGaugeVec,
    /// Events whose message key is not their `customer_id` (still applied).
    pub events_misrouted: IntCounter,
    /// Outputs given up on by the failure policy, by reason; their partition
    /// moved on without them.
    pub events_dropped: IntCounterVec,
    /// 1 while a partition's clock follows the wall clock (the idle rule), by partition.
    pub partition_idle_rule_active: IntGaugeVec,
    /// Fraction (0-1) of a partition's changelog read by its restore, by partition.
    pub partition_restore_progress: GaugeVec,
    /// Model reloads (SIGHUP or `POST /admin/reload`), by result: `ok` (the
    /// new model scores from the next batch on) or `invalid` (refused; the
    /// previous model keeps scoring).
    pub model_reloads: IntCounterVec,
    /// Customers erased on request (`DELETE /v1/customers/{id}`): state
    /// removed and a tombstone written to the changelog.
    pub customers_erased: IntCounter,
    /// Alert decisions of the shadow model (`model.shadow_path`), by kind:
    /// what it would have published (on the shadow topic, if one is set).
    pub shadow_alerts: IntCounterVec,
    /// At-risk alerts opened by one model (`opened_by`: `live` or `shadow`),
    /// by whether the other model's alert for the same customer was open
    /// after the same event or timer (`other`: `open` or `not_open`).
    pub shadow_alert_agreement: IntCounterVec,
    /// Constant 1, labelled with the shadow model's version (no series
    /// without a shadow model).
    pub shadow_model_info: IntGaugeVec,
    /// Lookups of customers not held locally, sent to another instance, by
    /// its answer: `found`, `not_found`, `unavailable` (it is restoring or
    /// stopping), `failed` (unreachable or a wrong answer) or `timeout`.
    pub lookups_forwarded: IntCounterVec,
    /// Input partitions no instance is known to own, from the membership
    /// topic (0 without one): lookups of their customers answer 503.
    pub lookup_partitions_without_owner: IntGauge,
    /// Membership claims read but not believed (a URL outside
    /// `lookup.peer_urls`, a malformed URL, a timestamp from the future).
    pub membership_claims_rejected: IntCounter,
    /// `processing.guarantee = "exactly_once"`: transactions committed
    /// (each a pipeline thread's outputs, state records and input offsets).
    pub transactions_committed: IntCounter,
    /// `exactly_once`: transactions aborted, by reason: `commit_failed`
    /// (the commit or the offsets were refused), `output_failed` (an
    /// output could not be delivered), `timed_out` (not committed within
    /// its deadline); the thread's partitions are rewound to the last
    /// committed offsets and state.
    pub transactions_aborted: IntCounterVec,
    /// `exactly_once`: a commit's duration, from its start (closing the
    /// batches, flushing state, waiting for every output's acknowledgement)
    /// to the broker's confirmation; the pipeline thread reads nothing
    /// meanwhile.
    pub transaction_duration: Histogram,
}

impl Metrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        // Fine below 100 ms, where the latency objective lies (p99 <= 50 ms).
        let latency_buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
            0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let score_buckets = (1..=10).map(|i| f64::from(i) * 10.0).collect();
        let restore_buckets = vec![0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

        let m = Metrics {
            events_consumed: IntCounter::with_opts(opts(
                "events_consumed_total",
                "Events read from the input topic and processed, valid or not.",
            ))
            .expect("valid metric"),
            events_invalid: IntCounterVec::new(
                opts(
                    "events_invalid_total",
                    "Events rejected by the parser, by reason.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            events_late: IntCounter::with_opts(opts(
                "events_late_total",
                "Events older than their partition's watermark (applied, never alerting).",
            ))
            .expect("valid metric"),
            events_duplicate: IntCounter::with_opts(opts(
                "events_duplicate_total",
                "Events skipped because the customer's state already includes their offset.",
            ))
            .expect("valid metric"),
            alerts_published: IntCounterVec::new(
                opts(
                    "alerts_published_total",
                    "Alerts acknowledged by the broker, by kind.",
                ),
                &["kind"],
            )
            .expect("valid metric"),
            dead_letters: IntCounterVec::new(
                opts(
                    "dead_letters_total",
                    "Messages written to the dead-letter topic, by reason.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            producer_errors: IntCounter::with_opts(opts(
                "producer_errors_total",
                "Producer deliveries that failed (each is retried).",
            ))
            .expect("valid metric"),
            consumer_errors: IntCounter::with_opts(opts(
                "consumer_errors_total",
                "Errors the consumer reported (a failed fetch, or a refused group or topic, \
                 which also stops the worker).",
            ))
            .expect("valid metric"),
            processing_latency: Histogram::with_opts(
                HistogramOpts::from(opts(
                    "processing_latency_seconds",
                    "From receiving an event to the broker acknowledging its outputs.",
                ))
                .buckets(latency_buckets),
            )
            .expect("valid metric"),
            customers_tracked: IntGauge::with_opts(opts(
                "customers_tracked",
                "Customers held in memory across assigned partitions.",
            ))
            .expect("valid metric"),
            consumer_lag: IntGaugeVec::new(
                opts(
                    "consumer_lag",
                    "High watermark minus consumer position, by partition.",
                ),
                &["partition"],
            )
            .expect("valid metric"),
            risk_score: Histogram::with_opts(
                HistogramOpts::from(opts(
                    "risk_score",
                    "Risk score (0-100) of each scored event or fired timer.",
                ))
                .buckets(score_buckets),
            )
            .expect("valid metric"),
            inactivity_timers_fired: IntCounter::with_opts(opts(
                "inactivity_timers_fired_total",
                "Inactivity timers that fired and re-scored a quiet customer.",
            ))
            .expect("valid metric"),
            build_info: IntGaugeVec::new(
                opts(
                    "build_info",
                    "Constant 1, labelled with the program and model versions.",
                ),
                &["version", "model_version"],
            )
            .expect("valid metric"),
            partitions_assigned: IntGauge::with_opts(opts(
                "partitions_assigned",
                "Input partitions currently assigned to this instance.",
            ))
            .expect("valid metric"),
            state_restore_seconds: Histogram::with_opts(
                HistogramOpts::from(opts(
                    "state_restore_seconds",
                    "Wall time to restore one partition's state from the changelog.",
                ))
                .buckets(restore_buckets),
            )
            .expect("valid metric"),
            state_restored_customers: IntCounter::with_opts(opts(
                "state_restored_customers_total",
                "Customers restored from the state changelog.",
            ))
            .expect("valid metric"),
            input_resets: IntCounterVec::new(
                opts(
                    "input_resets_total",
                    "Restores that found the input partition recreated (changelog positions \
                     past its end), by the policy applied.",
                ),
                &["policy"],
            )
            .expect("valid metric"),
            state_changelog_records: IntCounter::with_opts(opts(
                "state_changelog_records_total",
                "State records written to the changelog topic.",
            ))
            .expect("valid metric"),
            customers_evicted: IntCounter::with_opts(opts(
                "customers_evicted_total",
                "Customers dropped from memory after the eviction horizon.",
            ))
            .expect("valid metric"),
            partition_watermark_seconds: IntGaugeVec::new(
                opts(
                    "partition_watermark_seconds",
                    "Event-time watermark of each partition, as Unix seconds (no series before its first).",
                ),
                &["partition"],
            )
            .expect("valid metric"),
            events_misrouted: IntCounter::with_opts(opts(
                "events_misrouted_total",
                "Events whose message key is not their customer_id (applied, but that \
                 customer's state may be split across partitions).",
            ))
            .expect("valid metric"),
            events_dropped: IntCounterVec::new(
                opts(
                    "events_dropped_total",
                    "Outputs the failure policy gave up on (rejected by the broker even \
                     truncated), by reason.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            partition_idle_rule_active: IntGaugeVec::new(
                opts(
                    "partition_idle_rule_active",
                    "1 while a partition is fetched, caught up and quiet, so that its \
                     event-time clock follows the wall clock.",
                ),
                &["partition"],
            )
            .expect("valid metric"),
            partition_restore_progress: GaugeVec::new(
                opts(
                    "partition_restore_progress",
                    "Fraction (0-1) of each assigned partition's changelog read by its \
                     restore; 1 once the partition is live.",
                ),
                &["partition"],
            )
            .expect("valid metric"),
            model_reloads: IntCounterVec::new(
                opts(
                    "model_reloads_total",
                    "Model reloads (SIGHUP or POST /admin/reload), by result: ok (swapped in) \
                     or invalid (refused, the previous model keeps scoring).",
                ),
                &["result"],
            )
            .expect("valid metric"),
            customers_erased: IntCounter::with_opts(opts(
                "customers_erased_total",
                "Customers erased on request: state removed, tombstone written to the changelog.",
            ))
            .expect("valid metric"),
            shadow_alerts: IntCounterVec::new(
                opts(
                    "shadow_alerts_total",
                    "Alert decisions of the shadow model, by kind (never published to the \
                     alerts topic).",
                ),
                &["kind"],
            )
            .expect("valid metric"),
            shadow_alert_agreement: IntCounterVec::new(
                opts(
                    "shadow_alert_agreement_total",
                    "At-risk alerts opened by the live or the shadow model (opened_by), by \
                     whether the other model's alert for that customer was open then (other).",
                ),
                &["opened_by", "other"],
            )
            .expect("valid metric"),
            shadow_model_info: IntGaugeVec::new(
                opts(
                    "shadow_model_info",
                    "Constant 1, labelled with the shadow model's version.",
                ),
                &["model_version"],
            )
            .expect("valid metric"),
            lookups_forwarded: IntCounterVec::new(
                opts(
                    "lookups_forwarded_total",
                    "Lookups of customers not held locally, sent to another instance, by its \
                     answer: found, not_found, unavailable, failed or timeout.",
                ),
                &["result"],
            )
            .expect("valid metric"),
            lookup_partitions_without_owner: IntGauge::with_opts(opts(
                "lookup_partitions_without_owner",
                "Input partitions no instance is known to own, from the membership topic.",
            ))
            .expect("valid metric"),
            membership_claims_rejected: IntCounter::with_opts(opts(
                "membership_claims_rejected_total",
                "Membership claims not believed: a URL outside lookup.peer_urls, a malformed \
                 URL, or a record timestamp from the future.",
            ))
            .expect("valid metric"),
            transactions_committed: IntCounter::with_opts(opts(
                "transactions_committed_total",
                "Transactions committed (exactly_once): outputs, state records and input \
                 offsets of one pipeline thread.",
            ))
            .expect("valid metric"),
            transactions_aborted: IntCounterVec::new(
                opts(
                    "transactions_aborted_total",
                    "Transactions aborted (exactly_once), by reason; the pipeline thread's \
                     partitions are rewound to the last commit.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            transaction_duration: Histogram::with_opts(
                HistogramOpts::from(opts(
                    "transaction_duration_seconds",
                    "Time to commit a transaction (exactly_once): outputs and state acknowledged, \
                     offsets sent, commit confirmed.",
                ))
                .buckets(vec![
                    0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
            )
            .expect("valid metric"),
            registry,
        };
        for collector in m.collectors() {
            m.registry
                .register(collector)
                .expect("metric names are unique");
        }
        // Series that exist from the start read 0 instead of "no data".
        for kind in churn_core::engine::AlertKind::ALL {
            m.alerts_published.with_label_values(&[kind.as_str()]);
        }
        for reason in churn_core::event::EventError::REASONS {
            m.events_invalid.with_label_values(&[reason]);
            m.dead_letters.with_label_values(&[reason]);
        }
        for reason in DROP_REASONS {
            m.events_dropped.with_label_values(&[reason]);
        }
        for result in RELOAD_RESULTS {
            m.model_reloads.with_label_values(&[result]);
        }
        for result in FORWARD_RESULTS {
            m.lookups_forwarded.with_label_values(&[result]);
        }
        for reason in ABORT_REASONS {
            m.transactions_aborted.with_label_values(&[reason]);
        }
        m
    }

    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.events_consumed.clone()),
            Box::new(self.events_invalid.clone()),
            Box::new(self.events_late.clone()),
            Box::new(self.events_duplicate.clone()),
            Box::new(self.alerts_published.clone()),
            Box::new(self.dead_letters.clone()),
            Box::new(self.producer_errors.clone()),
            Box::new(self.consumer_errors.clone()),
            Box::new(self.processing_latency.clone()),
            Box::new(self.customers_tracked.clone()),
            Box::new(self.consumer_lag.clone()),
            Box::new(self.risk_score.clone()),
            Box::new(self.inactivity_timers_fired.clone()),
            Box::new(self.build_info.clone()),
            Box::new(self.partitions_assigned.clone()),
            Box::new(self.state_restore_seconds.clone()),
            Box::new(self.state_restored_customers.clone()),
            Box::new(self.input_resets.clone()),
            Box::new(self.state_changelog_records.clone()),
            Box::new(self.customers_evicted.clone()),
            Box::new(self.partition_watermark_seconds.clone()),
            Box::new(self.events_misrouted.clone()),
            Box::new(self.events_dropped.clone()),
            Box::new(self.partition_idle_rule_active.clone()),
            Box::new(self.partition_restore_progress.clone()),
            Box::new(self.model_reloads.clone()),
            Box::new(self.customers_erased.clone()),
            Box::new(self.shadow_alerts.clone()),
            Box::new(self.shadow_alert_agreement.clone()),
            Box::new(self.shadow_model_info.clone()),
            Box::new(self.lookups_forwarded.clone()),
            Box::new(self.lookup_partitions_without_owner.clone()),
            Box::new(self.membership_claims_rejected.clone()),
            Box::new(self.transactions_committed.clone()),
            Box::new(self.transactions_aborted.clone()),
            Box::new(self.transaction_duration.clone()),
        ]
    }

    /// The full name of every metric family, including the series a histogram
    /// exports (`_bucket`, `_sum`, `_count`).
    pub fn metric_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for collector in self.collectors() {
            for desc in collector.desc() {
                let is_histogram = [
                    "processing_latency_seconds",
                    "risk_score",
                    "state_restore_seconds",
                    "transaction_duration_seconds",
                ]
                .iter()
                .any(|h| desc.fq_name == format!("{METRIC_PREFIX}{h}"));
                if is_histogram {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.push(format!("{}{suffix}", desc.fq_name));
                    }
                } else {
                    names.push(desc.fq_name.clone());
                }
            }
        }
        names.sort();
        names
    }

    /// Sets `build_info` for this build and the loaded model.
    pub fn set_build_info(&self, model_version: &str) {
        // One series: the model version in use now (a reload replaces it).
        self.build_info.reset();
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), model_version])
            .set(1);
    }

    /// Sets `shadow_model_info` (`None`: no shadow model, no series) and
    /// makes the shadow series read 0 from the start.
    pub fn set_shadow_model(&self, model_version: Option<&str>) {
        self.shadow_model_info.reset();
        let Some(version) = model_version else {
            return;
        };
        self.shadow_model_info.with_label_values(&[version]).set(1);
        for kind in churn_core::engine::AlertKind::ALL {
            self.shadow_alerts.with_label_values(&[kind.as_str()]);
        }
        for opened_by in SHADOW_OPENED_BY {
            for other in SHADOW_OTHER {
                self.shadow_alert_agreement
                    .with_label_values(&[opened_by, other]);
            }
        }
    }

    /// Renders every metric in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(format!("{METRIC_PREFIX}{name}"), help)
}

/// Log line format (`--log-format`, `CHURN_SCORER_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines; coloured only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected `text` or `json`)"
            )),
        }
    }
}

impl LogFormat {
    /// The format chosen by `CHURN_SCORER_LOG_FORMAT` (text when unset or unknown).
    pub fn from_env() -> Self {
        std::env::var("CHURN_SCORER_LOG_FORMAT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    }
}

/// Installs the global tracing subscriber in the format of
/// `CHURN_SCORER_LOG_FORMAT` (see [`init_tracing_with`]), for tests and
/// programs embedding the worker: lines go through the standard library's
/// `eprint!`, so a test harness captures them (shown only for failing tests).
pub fn init_tracing() {
    install(LogFormat::from_env(), true);
}

/// Installs the global tracing subscriber: human-readable lines (ANSI colours
/// only when stderr is a terminal and `NO_COLOR` is unset) or JSON lines; the
/// filter comes from `RUST_LOG` (default `info`). Log records of librdkafka
/// pass through [`LogBridge`].
pub fn init_tracing_with(format: LogFormat) {
    install(format, false);
}

fn install(format: LogFormat, capturable: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::fmt::writer::{BoxMakeWriter, TestWriter};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let max_level = filter.max_level_hint();
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let writer = if capturable {
        BoxMakeWriter::new(TestWriter::with_stderr)
    } else {
        BoxMakeWriter::new(std::io::stderr)
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    // A second init (tests) is harmless: keep the first subscriber.
    let installed = match format {
        LogFormat::Json => tracing::subscriber::set_global_default(builder.json().finish()).is_ok(),
        LogFormat::Text => tracing::subscriber::set_global_default(builder.finish()).is_ok(),
    };
    if installed && log::set_boxed_logger(Box::new(LogBridge)).is_ok() {
        log::set_max_level(match max_level {
            Some(l) if l == tracing::level_filters::LevelFilter::OFF => log::LevelFilter::Off,
            Some(l) if l == tracing::level_filters::LevelFilter::ERROR => log::LevelFilter::Error,
            Some(l) if l == tracing::level_filters::LevelFilter::WARN => log::LevelFilter::Warn,
            Some(l) if l == tracing::level_filters::LevelFilter::INFO => log::LevelFilter::Info,
            Some(l) if l == tracing::level_filters::LevelFilter::DEBUG => log::LevelFilter::Debug,
            _ => log::LevelFilter::Trace,
        });
    }
}

/// Forwards `log` records (librdkafka's, through rdkafka) to tracing.
///
/// librdkafka reports every failed connection attempt as an error and then
/// retries on its own, once a second per broker. Those per-attempt reports
/// are logged at DEBUG, and its "all brokers are down" summaries at INFO
/// (visible with the default filter). The worker reports what an operator
/// acts on itself: a broker unreachable at startup stops `run` with an error
/// naming `kafka.bootstrap_servers`, `/readyz` turns 503, and the outputs'
/// delivery failures are counted and logged. TLS and SASL failures and every
/// other record keep their level.
pub struct LogBridge;

/// How rdkafka's default client context starts its statistics dump.
const STATISTICS_PREFIX: &str = "Client stats:";

/// The first `max` bytes (or a little more) of a message, formatting no
/// further: a statistics dump is ~7 KB, and only its start decides its level.
fn message_prefix(args: &std::fmt::Arguments<'_>, max: usize) -> String {
    struct Prefix(String, usize);
    impl std::fmt::Write for Prefix {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.push_str(s);
            if self.0.len() >= self.1 {
                Err(std::fmt::Error)
            } else {
                Ok(())
            }
        }
    }
    let mut out = Prefix(String::new(), max);
    // Err only means "enough".
    let _ = std::fmt::write(&mut out, *args);
    out.0
}

/// The level a librdkafka record is logged at (see [`LogBridge`]).
pub fn librdkafka_level(target: &str, level: log::Level, message: &str) -> log::Level {
    if level == log::Level::Info
        && target.starts_with("rdkafka")
        && message.starts_with(STATISTICS_PREFIX)
    {
        // rdkafka's default client context dumps every statistics report at
        // INFO: the membership and deletion readers (which read none of it)
        // logged a ~7 KB line every `statistics.interval.ms`.
        return log::Level::Debug;
    }
    if level > log::Level::Warn || !(target == "librdkafka" || target.starts_with("rdkafka")) {
        return level;
    }
    let security = ["SSL handshake", "certificate", "SASL", "Authentication"];
    if security.iter().any(|m| message.contains(m)) {
        return level;
    }
    if message.contains("AllBrokersDown") || message.contains("brokers are down") {
        return log::Level::Info;
    }
    let per_attempt = [
        "Connection refused",
        "BrokerTransportFailure",
        "Broker transport failure",
        "Disconnected",
        "Connection reset",
    ];
    if per_attempt.iter().any(|m| message.contains(m)) {
        return log::Level::Debug;
    }
    level
}

impl log::Log for LogBridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        tracing_log::LogTracer::new().enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        let mut level = record.level();
        if level <= log::Level::Warn {
            let message = record.args().to_string();
            level = librdkafka_level(record.target(), level, &message);
        } else if level == log::Level::Info && record.target().starts_with("rdkafka") {
            let start = message_prefix(record.args(), STATISTICS_PREFIX.len());
            level = librdkafka_level(record.target(), level, &start);
        }
        let relevelled = log::Record::builder()
            .level(level)
            .target(record.target())
            .args(*record.args())
            .module_path(record.module_path())
            .file(record.file())
            .line(record.line())
            .build();
        if tracing_log::LogTracer::new().enabled(relevelled.metadata()) {
            let _ = tracing_log::format_trace(&relevelled);
        }
    }

    fn flush(&self) {}
}

/// Metrics updated for every event, accumulated on the pipeline thread and
/// added to the shared registry in bulk (at every offset store and tick).
pub struct LocalMetrics {
    pub(crate) events_consumed: LocalIntCounter,
    pub(crate) events_late: LocalIntCounter,
    pub(crate) events_duplicate: LocalIntCounter,
    pub(crate) risk_score: LocalHistogram,
    pub(crate) processing_latency: LocalHistogram,
    pub(crate) inactivity_timers_fired: LocalIntCounter,
    pub(crate) state_changelog_records: LocalIntCounter,
}

impl LocalMetrics {
    pub(crate) fn new(m: &Metrics) -> Self {
        LocalMetrics {
            events_consumed: m.events_consumed.local(),
            events_late: m.events_late.local(),
            events_duplicate: m.events_duplicate.local(),
            risk_score: m.risk_score.local(),
            processing_latency: m.processing_latency.local(),
            inactivity_timers_fired: m.inactivity_timers_fired.local(),
            state_changelog_records: m.state_changelog_records.local(),
        }
    }

    pub(crate) fn flush(&self) {
        self.events_consumed.flush();
        self.events_late.flush();
        self.events_duplicate.flush();
        self.risk_score.flush();
        self.processing_latency.flush();
        self.inactivity_timers_fired.flush();
        self.state_changelog_records.flush();
    }
}

#[cfg(test)]
mod log_bridge_tests {
    use super::*;

    #[test]
    fn librdkafka_connection_noise_is_lowered_and_security_errors_are_kept() {
        let e = log::Level::Error;
        let refused = "librdkafka: Global error: BrokerTransportFailure (Local: Broker transport failure): 127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused";
        assert_eq!(
            librdkafka_level("rdkafka::client", e, refused),
            log::Level::Debug
        );
        let down =
            "librdkafka: Global error: AllBrokersDown (Local: All broker connections are down)";
        assert_eq!(
            librdkafka_level("rdkafka::client", e, down),
            log::Level::Info
        );
        let tls = "FAIL ssl://h:1/bootstrap: SSL handshake failed: Disconnected: certificate verify failed";
        assert_eq!(librdkafka_level("librdkafka", e, tls), e);
        assert_eq!(
            librdkafka_level("churn_scorer", e, refused),
            e,
            "only librdkafka's"
        );
    }

    /// Issue 31: with membership on, a ~7 KB statistics line every 5 s at INFO.
    #[test]
    fn statistics_dumps_of_the_default_client_context_are_debug() {
        let i = log::Level::Info;
        // What rdkafka's `ClientContext::stats` logs, cut as the bridge cuts it.
        let dump = format!("{:?}", vec!["broker"; 2000]);
        let args = format_args!("Client stats: {}", dump);
        let start = message_prefix(&args, STATISTICS_PREFIX.len());
        assert!(
            start.len() < 100,
            "formatting stopped early: {}",
            start.len()
        );
        assert_eq!(
            librdkafka_level("rdkafka::client", i, &start),
            log::Level::Debug
        );
        // Other INFO records keep their level.
        let info = "librdkafka: FETCH [thrd:main]: Topic customer-events [0] starts";
        assert_eq!(librdkafka_level("librdkafka", i, info), i);
        assert_eq!(
            librdkafka_level("churn_worker::run", i, "Client stats: not rdkafka's"),
            i
        );
    }
}
