//! Worker configuration: a TOML file, overridden by environment variables
//! `CHURN_SCORER__<SECTION>__<KEY>`, overridden by command-line flags.
//!
//! `config/worker.toml` documents every key. Read once at startup; the rest
//! of the program receives the typed [`WorkerConfig`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::partitioner::KeyPartitioner;
use churn_core::input::{InputFormat, MappingError};

/// Environment variable prefix; sections and keys are separated by `__`.
pub const ENV_PREFIX: &str = "CHURN_SCORER";

/// Consumer properties the worker sets itself: its delivery guarantee depends on them.
const RESERVED_CONSUMER_KEYS: &[&str] = &[
    "group.id",
    "enable.auto.offset.store",
    "enable.auto.commit",
    "bootstrap.servers",
    "partition.assignment.strategy",
    "group.protocol",
];

/// Producer properties the worker sets itself: with them changed, outputs
/// could be lost (`acks`), duplicated or reordered on retry (idempotence,
/// in-flight requests), or be sent inside transactions nobody commits.
const RESERVED_PRODUCER_KEYS: &[&str] = &[
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "transactional.id",
    "max.in.flight.requests.per.connection",
    "max.in.flight",
    "enable.gapless.guarantee",
    "bootstrap.servers",
];

/// Why the configuration was rejected. Each variant names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be read or has the wrong shape.
    #[error("{}", describe_invalid(key, message))]
    Invalid {
        /// Dotted key (empty if the whole source is unreadable).
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn describe_invalid(key: &str, message: &str) -> String {
    if key.is_empty() {
        format!("configuration: {message}")
    } else {
        format!("configuration key `{key}`: {message}")
    }
}

/// The environment variable that set the key a deserialisation error is
/// about: `key` itself, or, for an unknown field, `key.<field>`.
fn env_variable_of<'e>(
    key: &str,
    message: &str,
    env: &'e BTreeMap<String, String>,
) -> Option<&'e str> {
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| {
            if key.is_empty() || key == "." {
                field.to_string()
            } else {
                format!("{key}.{field}")
            }
        });
    let prefix = format!("{ENV_PREFIX}__");
    env.keys().map(String::as_str).find(|var| {
        let Some(rest) = var.strip_prefix(&prefix) else {
            return false;
        };
        let dotted = rest.to_ascii_lowercase().replace("__", ".");
        dotted == key || unknown.as_deref() == Some(dotted.as_str())
    })
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Everything the worker is configured with.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// `[kafka]`: connection and client properties.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// `[topics]`: topic names.
    #[serde(default)]
    pub topics: TopicsConfig,
    /// `[http]`: the HTTP server.
    #[serde(default)]
    pub http: HttpConfig,
    /// `[model]`: the risk model.
    #[serde(default)]
    pub model: ModelConfig,
    /// `[engine]`: event-time rules.
    #[serde(default)]
    pub engine: EngineConfig,
    /// `[pipeline]`: batching, backpressure and threads.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// `[state]`: the state changelog's write cache.
    #[serde(default)]
    pub state: StateConfig,
    /// `[shutdown]`: graceful shutdown.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// `[lookup]`: answering `/v1` lookups for customers other instances hold.
    #[serde(default)]
    pub lookup: LookupConfig,
    /// `[input]`: how message values become events.
    #[serde(default)]
    pub input: InputConfig,
    /// `[processing]`: the delivery guarantee.
    #[serde(default)]
    pub processing: ProcessingConfig,
}

/// `processing.guarantee`: what a subscriber of the output topics sees
/// after a crash, a rebalance or a broker fault (docs/operations.md,
/// "Delivery guarantees").
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// Outputs are acknowledged before offsets are stored; after a crash
    /// the events since the last committed offsets are read again and the
    /// same alert ids are published again (subscribers de-duplicate).
    #[default]
    AtLeastOnce,
    /// Outputs, state records and input offsets are committed in one Kafka
    /// transaction per pipeline thread; a `read_committed` subscriber sees
    /// every alert exactly once.
    ExactlyOnce,
}

impl Guarantee {
    /// The configuration value.
    pub fn as_str(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "at_least_once",
            Guarantee::ExactlyOnce => "exactly_once",
        }
    }
}

/// `[processing]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessingConfig {
    /// `at_least_once` (default) or `exactly_once`.
    pub guarantee: Guarantee,
    /// `exactly_once` only: milliseconds between transaction commits of a
    /// pipeline thread. Each commit flushes the state of every changed
    /// customer, so this replaces `state.flush_interval_ms`; a
    /// `read_committed` subscriber sees an alert only once its transaction
    /// is committed, so this bounds the added alert latency.
    pub commit_interval_ms: u64,
    /// `exactly_once` only: this instance's stable identity in its
    /// producers' `transactional.id`s (`<group>-<instance>-<thread>`). An
    /// instance restarted with the same identity fences its crashed
    /// predecessor and aborts its open transactions at once; with another
    /// identity they are aborted by the broker after
    /// `transaction_timeout_ms`. Empty (default): the host name. Two
    /// instances running at once must never share one.
    pub instance_id: String,
    /// `exactly_once` only: the producers' `transaction.timeout.ms`, how
    /// long the broker lets a transaction stay open before aborting it (a
    /// stalled instance's transactions, and what `read_committed` readers
    /// of its partitions wait for).
    pub transaction_timeout_ms: u64,
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        ProcessingConfig {
            guarantee: Guarantee::AtLeastOnce,
            commit_interval_ms: 100,
            instance_id: String::new(),
            transaction_timeout_ms: 10_000,
        }
    }
}

impl ProcessingConfig {
    /// Whether outputs and offsets are committed in transactions.
    pub fn exactly_once(&self) -> bool {
        self.guarantee == Guarantee::ExactlyOnce
    }
}

/// `[input]`: the input format (docs/events.md, "Input formats").
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// `churn` (the native schema), `segment`, `cloudevents` or `mapped`.
    pub format: String,
    /// A mapping file (TOML) laid over the format's preset; required for
    /// `mapped`. A relative path is resolved against the configuration
    /// file's directory.
    pub mapping: Option<PathBuf>,
    /// The decoder built from `format` and `mapping` by [`WorkerConfig::load`].
    #[serde(skip)]
    pub decoder: InputFormat,
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig {
            format: "churn".into(),
            mapping: None,
            decoder: InputFormat::Churn,
        }
    }
}

impl InputConfig {
    /// Builds the decoder from `format` and `mapping` (reads the mapping file).
    pub fn build_decoder(&self) -> Result<InputFormat, ConfigError> {
        InputFormat::load(Some(&self.format), self.mapping.as_deref()).map_err(|e| {
            let key = match &e {
                MappingError::Invalid(m) if m.starts_with("unknown input format") => "input.format",
                _ if self.mapping.is_some() => "input.mapping",
                _ => "input.format",
            };
            invalid(key, e.to_string())
        })
    }
}

/// `[kafka]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// librdkafka `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Consumer group id.
    pub group_id: String,
    /// librdkafka consumer properties passed through as is.
    pub consumer: BTreeMap<String, String>,
    /// librdkafka producer properties passed through as is.
    pub producer: BTreeMap<String, String>,
    /// How the group moves partitions between members: `cooperative`
    /// (incremental: only partitions that move are revoked and restored) or
    /// `eager` (every partition of every member is revoked on each rebalance,
    /// for clusters or tools that need it). Every member of a group must use
    /// the same.
    pub rebalance_protocol: RebalanceProtocol,
}

/// `kafka.rebalance_protocol`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RebalanceProtocol {
    /// `partition.assignment.strategy = cooperative-sticky`.
    #[default]
    Cooperative,
    /// `partition.assignment.strategy = range,roundrobin` (librdkafka's default).
    Eager,
    /// KIP-848's consumer group protocol (`group.protocol = consumer`,
    /// Apache Kafka 4.0+): the broker assigns partitions, incrementally, and
    /// owns the session timeout and heartbeat interval
    /// (`group.consumer.session.timeout.ms`, `group.consumer.heartbeat.interval.ms`);
    /// librdkafka refuses `partition.assignment.strategy`,
    /// `session.timeout.ms` and `heartbeat.interval.ms` with it.
    Consumer,
}

impl RebalanceProtocol {
    /// The librdkafka `partition.assignment.strategy` value (`None` with the
    /// consumer protocol: the broker assigns).
    pub fn assignment_strategy(self) -> Option<&'static str> {
        match self {
            RebalanceProtocol::Cooperative => Some("cooperative-sticky"),
            RebalanceProtocol::Eager => Some("range,roundrobin"),
            RebalanceProtocol::Consumer => None,
        }
    }

    /// The librdkafka `group.protocol` value.
    pub fn group_protocol(self) -> &'static str {
        match self {
            RebalanceProtocol::Cooperative | RebalanceProtocol::Eager => "classic",
            RebalanceProtocol::Consumer => "consumer",
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: "localhost:9092".into(),
            group_id: "churn-scorer".into(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
            rebalance_protocol: RebalanceProtocol::default(),
        }
    }
}

/// `[topics]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Customer events.
    pub input: String,
    /// Alerts.
    pub alerts: String,
    /// Dead letters.
    pub dead_letter: String,
    /// State changelog (compacted).
    pub state: String,
    /// Erasure requests for bulk pipelines (optional): a record keyed by a
    /// customer id erases that customer as `DELETE /v1/customers/{id}` does.
    /// Same partition count as `input`, keyed with the same partitioner.
    pub deletion: Option<String>,
    /// Alerts of the shadow model (`model.shadow_path`), optional: unset,
    /// shadow decisions are only counted. Never the live alerts topic.
    pub shadow_alerts: Option<String>,
    /// Membership of the instances (optional, compacted, one partition is
    /// enough): each instance publishes which input partitions it owns and
    /// how to reach it (`http.advertised_url`), and reads everyone's, so
    /// that `/v1/customers/{id}` is answered by any instance, forwarded to
    /// the owner. Unset: each instance answers only for its own partitions.
    pub membership: Option<String>,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            input: "customer-events".into(),
            alerts: "churn-alerts".into(),
            dead_letter: "churn-events-dlq".into(),
            state: "churn-scorer-state".into(),
            deletion: None,
            shadow_alerts: None,
            membership: None,
        }
    }
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address.
    pub addr: String,
    /// Bearer token required on `/v1` when set.
    pub bearer_token: Option<String>,
    /// Bearer token of the admin operations (`POST /admin/reload`,
    /// `DELETE /v1/customers/{id}`); unset: those answer 403. It also
    /// grants what `bearer_token` grants.
    pub admin_token: Option<String>,
    /// How the other instances reach this one's HTTP server
    /// (`http://host:port`, no path), published on the membership topic.
    /// Unset: `http://<addr>` with the port actually bound, which only works
    /// when `addr` names a reachable address; with `addr` on all interfaces
    /// (0.0.0.0 or ::) and a membership topic it must be set (in Kubernetes,
    /// from the pod IP: `http://$(POD_IP):9464`).
    pub advertised_url: Option<String>,
    /// Bearer token the instances send each other with forwarded lookups
    /// (and accept on them): the caller's `Authorization` never leaves the
    /// instance. Required with `topics.membership` when `bearer_token` is
    /// set; grants lookups only, never the admin operations.
    pub peer_token: Option<String>,
    /// Seconds a client has to send a request's head, counted whenever the
    /// server waits for one (after connecting, and between requests on a
    /// kept-alive connection): a silent, slow or idle connection is closed
    /// after this long.
    pub header_read_timeout_secs: u64,
    /// Connections served at once; more clients wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: "0.0.0.0:9464".into(),
            bearer_token: None,
            admin_token: None,
            advertised_url: None,
            peer_token: None,
            header_read_timeout_secs: 10,
            max_connections: 1024,
        }
    }
}

/// `[lookup]`: forwarding of `/v1/customers/{id}` to the instance that owns
/// the customer (only with `topics.membership`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LookupConfig {
    /// The producers' key partitioner, to ask the owner of the customer's
    /// partition first: `consistent_random` (librdkafka's default),
    /// `murmur2` (the Java client's default) or `none` (unknown: ask every
    /// instance at once). A customer not found where the partitioner points
    /// is still looked for on every other instance, so a wrong choice costs
    /// requests, never a wrong 404.
    pub partitioner: KeyPartitioner,
    /// Milliseconds a forwarded lookup waits for the other instances (one
    /// deadline for all of them); without every answer by then the lookup
    /// answers 504, never a 404.
    pub forward_timeout_ms: u64,
    /// The URLs a membership claim may name, so lookups are forwarded only
    /// there: `http://HOST:PORT` with HOST a name, `*.suffix`, an IP or an
    /// IP network (`10.0.0.0/8`), PORT a number or `*`. Empty (the default)
    /// trusts nobody: with `topics.membership` it must list at least the
    /// instances' own `http.advertised_url`.
    pub peer_urls: Vec<String>,
    /// Seconds a claim lives after its record's Kafka timestamp; each
    /// instance publishes its claim again every third of it, so a stopped
    /// or forged claim stops owning partitions within this long.
    pub claim_ttl_secs: u64,
}

impl Default for LookupConfig {
    fn default() -> Self {
        LookupConfig {
            partitioner: KeyPartitioner::default(),
            forward_timeout_ms: 2000,
            peer_urls: Vec::new(),
            claim_ttl_secs: 90,
        }
    }
}

impl LookupConfig {
    /// `peer_urls`, parsed (validated at load, so this cannot fail then).
    pub fn peer_url_patterns(&self) -> Vec<crate::ownership::PeerUrlPattern> {
        self.peer_urls
            .iter()
            .filter_map(|p| crate::ownership::PeerUrlPattern::parse(p).ok())
            .collect()
    }
}

/// `[model]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Model file path; `None`: the built-in default model. A relative path
    /// in a configuration file is resolved against that file's directory.
    pub path: Option<PathBuf>,
    /// A second model file scored beside the live one (shadow scoring):
    /// its decisions are counted, shown in `/v1`, and published to
    /// `topics.shadow_alerts` if set, never to the alerts topic. Resolved
    /// like `path`; re-read with it on a reload.
    pub shadow_path: Option<PathBuf>,
}

/// librdkafka properties that name files: relative values in a configuration
/// file are resolved against that file's directory.
const PATH_PROPERTIES: &[&str] = &[
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.keystore.location",
    "ssl.crl.location",
    "sasl.kerberos.keytab",
];

/// Resolves a relative `path` found in a configuration file against the
/// file's directory `base`. For configurations written before paths were
/// file-relative, a path that exists only relative to the working directory
/// is kept as is.
pub fn resolve_path(base: Option<&Path>, path: &Path) -> PathBuf {
    match base {
        Some(base) if path.is_relative() => {
            let joined = base.join(path);
            if joined.exists() || !path.exists() {
                joined
            } else {
                path.to_path_buf()
            }
        }
        _ => path.to_path_buf(),
    }
}

/// `[engine]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Seconds an event may lag its partition's newest event time and still alert.
    pub allowed_lateness_secs: u64,
    /// Seconds a partition must be fetched successfully, caught up (lag 0)
    /// and without messages before its clock follows the wall clock (the
    /// idle rule). Never counts during an outage, a fetch error, a restore or
    /// while a backlog is read.
    pub idle_timeout_secs: u64,
    /// Seconds an event may be stamped ahead of the worker's wall clock; an
    /// event further ahead is dead-lettered as `timestamp_in_future` and
    /// touches no state. Also bounds how far a partition's clock may run.
    pub max_future_skew_secs: u64,
    /// Days of silence after which a customer is evicted; 0 disables eviction.
    pub eviction_horizon_days: f64,
    /// Seconds between eviction scans of each partition.
    pub eviction_interval_secs: u64,
}

impl EngineConfig {
    /// `allowed_lateness_secs` in milliseconds.
    pub fn allowed_lateness_ms(&self) -> i64 {
        secs_to_ms(self.allowed_lateness_secs)
    }

    /// `max_future_skew_secs` in milliseconds.
    pub fn max_future_skew_ms(&self) -> i64 {
        secs_to_ms(self.max_future_skew_secs)
    }
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            allowed_lateness_secs: 3600,
            idle_timeout_secs: 60,
            max_future_skew_secs: 300,
            eviction_horizon_days: 0.0,
            eviction_interval_secs: 30,
        }
    }
}

/// `[pipeline]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Most messages per processing batch.
    pub batch_size: usize,
    /// Most outputs and state records handed to the producer and not yet
    /// acknowledged before consumption pauses; state records waiting for
    /// their partition's turn count against four times this.
    pub max_in_flight: usize,
    /// Pipeline threads, each owning a disjoint share of the assigned
    /// partitions; 0 means one per available core.
    pub threads: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            batch_size: 2000,
            max_in_flight: 50_000,
            threads: 0,
        }
    }
}

impl PipelineConfig {
    /// The number of pipeline threads to run: `threads`, or one per
    /// available core if 0.
    pub fn thread_count(&self) -> usize {
        if self.threads > 0 {
            return self.threads;
        }
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    }
}

/// `[state]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Milliseconds between state flushes of a partition: a customer changed
    /// many times in between writes one changelog record. Offsets are
    /// stored only once the flush covering them is acknowledged, so this is
    /// also how far the committed offsets may trail the processed events.
    pub flush_interval_ms: u64,
    /// What to do when the changelog records input positions past the end
    /// of the input partition: the input topic was recreated (or
    /// truncated), its offsets start again, and the old positions would
    /// skip its events as redeliveries. `fail` (default): stop with an
    /// error naming the topic and partition. `reset_positions`: keep every
    /// customer's state, forget the old positions, read the new topic.
    pub on_input_reset: InputResetPolicy,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            flush_interval_ms: 5000,
            on_input_reset: InputResetPolicy::Fail,
        }
    }
}

/// `state.on_input_reset`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InputResetPolicy {
    /// Stop the worker with an error that says what to do.
    Fail,
    /// Keep the customers' state, forget the recorded input positions.
    ResetPositions,
}

/// `[shutdown]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Seconds allowed to drain on shutdown.
    pub drain_timeout_secs: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_timeout_secs: 30,
        }
    }
}

/// Command-line overrides (they win over file and environment).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--bootstrap-servers`.
    pub bootstrap_servers: Option<String>,
    /// `--http-addr`.
    pub http_addr: Option<String>,
}

impl WorkerConfig {
    /// Loads the file (if any), then the environment, then `overrides`, and validates.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::load_with_env(path, overrides, std::env::vars())
    }

    /// As [`WorkerConfig::load`], with the environment given (for tests).
    pub fn load_with_env(
        path: Option<&Path>,
        overrides: &Overrides,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            if !path.is_file() {
                return Err(invalid(
                    "",
                    format!("configuration file {} not found", path.display()),
                ));
            }
            builder = builder.add_source(
                config::File::from(path.to_path_buf()).format(config::FileFormat::Toml),
            );
        }
        let all_env: BTreeMap<String, String> = env.into_iter().collect();
        let env: config::Map<String, String> = all_env
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        let set = |b: config::ConfigBuilder<config::builder::DefaultState>,
                   key: &str,
                   value: &Option<String>| match value {
            Some(v) => b.set_override(key, v.clone()),
            None => Ok(b),
        };
        builder = set(
            builder,
            "kafka.bootstrap_servers",
            &overrides.bootstrap_servers,
        )
        .map_err(|e| invalid("kafka.bootstrap_servers", e.to_string()))?;
        builder = set(builder, "http.addr", &overrides.http_addr)
            .map_err(|e| invalid("http.addr", e.to_string()))?;
        let raw = builder.build().map_err(|e| invalid("", e.to_string()))?;
        let mut config: WorkerConfig = serde_path_to_error::deserialize(raw).map_err(|e| {
            let key = e.path().to_string();
            let mut message = e.into_inner().to_string();
            // A value from the environment is fixed there, not in the file.
            if let Some(var) = env_variable_of(&key, &message, &all_env) {
                message.push_str(&format!(" (set by environment variable {var})"));
            }
            invalid(key, message)
        })?;
        let base = path.map(|p| match p.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        });
        config.resolve_paths(base.as_deref());
        config.expand_env_references(&all_env)?;
        config.validate()?;
        config.input.decoder = config.input.build_decoder()?;
        Ok(config)
    }

    /// Replaces librdkafka property values written `${NAME}` with the
    /// environment variable `NAME` (secrets such as `sasl.password` stay out
    /// of the file). An unset variable is an error naming key and variable.
    pub fn expand_env_references(
        &mut self,
        env: &BTreeMap<String, String>,
    ) -> Result<(), ConfigError> {
        for (section, map) in [
            ("consumer", &mut self.kafka.consumer),
            ("producer", &mut self.kafka.producer),
        ] {
            for (key, value) in map.iter_mut() {
                let Some(name) = value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) else {
                    continue;
                };
                match env.get(name) {
                    Some(v) => *value = v.clone(),
                    None => {
                        return Err(invalid(
                            format!("kafka.{section}.{key}"),
                            format!("refers to environment variable {name}, which is not set"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Resolves relative file paths (`model.path`, librdkafka `*.location`
    /// properties) against `base`, the configuration file's directory.
    pub fn resolve_paths(&mut self, base: Option<&Path>) {
        if let Some(p) = &self.input.mapping {
            self.input.mapping = Some(resolve_path(base, p));
        }
        if let Some(p) = &self.model.path {
            self.model.path = Some(resolve_path(base, p));
        }
        if let Some(p) = &self.model.shadow_path {
            self.model.shadow_path = Some(resolve_path(base, p));
        }
        for map in [&mut self.kafka.consumer, &mut self.kafka.producer] {
            for (key, value) in map.iter_mut() {
                // `probe` is librdkafka's "search the system's CA locations".
                if PATH_PROPERTIES.contains(&key.as_str()) && !value.is_empty() && value != "probe"
                {
                    *value = resolve_path(base, Path::new(value.as_str()))
                        .display()
                        .to_string();
                }
            }
        }
    }

    /// Checks values the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(invalid("kafka.bootstrap_servers", "must not be empty"));
        }
        if self.kafka.group_id.trim().is_empty() {
            return Err(invalid("kafka.group_id", "must not be empty"));
        }
        for key in self.kafka.consumer.keys() {
            if RESERVED_CONSUMER_KEYS.contains(&key.as_str()) {
                return Err(invalid(
                    format!("kafka.consumer.{key}"),
                    "is set by the worker itself (use kafka.group_id, kafka.bootstrap_servers or \
                     kafka.rebalance_protocol)",
                ));
            }
        }
        for key in self.kafka.producer.keys() {
            if RESERVED_PRODUCER_KEYS.contains(&key.as_str()) {
                return Err(invalid(
                    format!("kafka.producer.{key}"),
                    "is set by the worker itself: the delivery guarantee depends on it \
                     (see docs/operations.md, \"Failure policy\")",
                ));
            }
        }
        for (key, name) in [
            ("topics.input", &self.topics.input),
            ("topics.alerts", &self.topics.alerts),
            ("topics.dead_letter", &self.topics.dead_letter),
            ("topics.state", &self.topics.state),
        ] {
            if name.trim().is_empty() {
                return Err(invalid(key, "must not be empty"));
            }
        }
        if let Some(deletion) = &self.topics.deletion {
            if deletion.trim().is_empty() {
                return Err(invalid(
                    "topics.deletion",
                    "must not be empty (remove it to read no deletion topic)",
                ));
            }
            if [
                &self.topics.input,
                &self.topics.alerts,
                &self.topics.dead_letter,
                &self.topics.state,
            ]
            .contains(&deletion)
            {
                return Err(invalid(
                    "topics.deletion",
                    "must differ from the other topics",
                ));
            }
        }
        if let Some(shadow) = &self.topics.shadow_alerts {
            if shadow.trim().is_empty() {
                return Err(invalid(
                    "topics.shadow_alerts",
                    "must not be empty (remove it to publish no shadow alerts)",
                ));
            }
            if self.model.shadow_path.is_none() {
                return Err(invalid(
                    "topics.shadow_alerts",
                    "needs a shadow model (`model.shadow_path`)",
                ));
            }
            if [
                &self.topics.input,
                &self.topics.alerts,
                &self.topics.dead_letter,
                &self.topics.state,
            ]
            .contains(&shadow)
                || self.topics.deletion.as_ref() == Some(shadow)
                || self.topics.membership.as_ref() == Some(shadow)
            {
                return Err(invalid(
                    "topics.shadow_alerts",
                    "must differ from the other topics (shadow alerts never reach the live \
                     alerts topic)",
                ));
            }
        }
        if let Some(membership) = &self.topics.membership {
            if membership.trim().is_empty() {
                return Err(invalid(
                    "topics.membership",
                    "must not be empty (remove it to answer lookups only for local partitions)",
                ));
            }
            if [
                &self.topics.input,
                &self.topics.alerts,
                &self.topics.dead_letter,
                &self.topics.state,
            ]
            .contains(&membership)
                || self.topics.deletion.as_ref() == Some(membership)
            {
                return Err(invalid(
                    "topics.membership",
                    "must differ from the other topics",
                ));
            }
        }
        if [
            &self.topics.alerts,
            &self.topics.dead_letter,
            &self.topics.state,
        ]
        .contains(&&self.topics.input)
        {
            return Err(invalid(
                "topics.input",
                "must differ from the output topics",
            ));
        }
        self.http_addr()?;
        if self.http.bearer_token.as_deref() == Some("") {
            return Err(invalid(
                "http.bearer_token",
                "must not be empty (remove it to disable)",
            ));
        }
        if self.http.admin_token.as_deref() == Some("") {
            return Err(invalid(
                "http.admin_token",
                "must not be empty (remove it to disable the admin operations)",
            ));
        }
        if let Some(url) = &self.http.advertised_url {
            check_advertised_url(url)?;
        } else if self.topics.membership.is_some() && self.http_addr()?.ip().is_unspecified() {
            return Err(invalid(
                "http.advertised_url",
                format!(
                    "must be set with topics.membership while http.addr ({}) listens on all \
                     interfaces: the other instances need an address they can reach, e.g. \
                     http://<pod IP>:{}",
                    self.http.addr,
                    self.http_addr()?.port()
                ),
            ));
        }
        self.validate_peers()?;
        if !(1..=60_000).contains(&self.lookup.forward_timeout_ms) {
            return Err(invalid(
                "lookup.forward_timeout_ms",
                "must be between 1 and 60000",
            ));
        }
        if !(self.engine.eviction_horizon_days.is_finite()
            && self.engine.eviction_horizon_days >= 0.0)
        {
            return Err(invalid(
                "engine.eviction_horizon_days",
                "must be a number ≥ 0",
            ));
        }
        if self.pipeline.batch_size == 0 {
            return Err(invalid("pipeline.batch_size", "must be at least 1"));
        }
        if self.pipeline.max_in_flight == 0 {
            return Err(invalid("pipeline.max_in_flight", "must be at least 1"));
        }
        if self.pipeline.threads > 1024 {
            return Err(invalid(
                "pipeline.threads",
                "must be at most 1024 (0: one per core)",
            ));
        }
        if self.state.flush_interval_ms > 3_600_000 {
            return Err(invalid(
                "state.flush_interval_ms",
                "must be at most 3600000 (an hour of unflushed state)",
            ));
        }
        self.validate_processing()
    }

    fn validate_processing(&self) -> Result<(), ConfigError> {
        let p = &self.processing;
        // librdkafka's bounds are 1000..=2147483647; the broker's default
        // `transaction.max.timeout.ms` is 900000 (init would fail above it).
        if !(1000..=900_000).contains(&p.transaction_timeout_ms) {
            return Err(invalid(
                "processing.transaction_timeout_ms",
                "must be between 1000 and 900000 (the brokers' default \
                 transaction.max.timeout.ms)",
            ));
        }
        if p.commit_interval_ms == 0 || p.commit_interval_ms * 2 > p.transaction_timeout_ms {
            return Err(invalid(
                "processing.commit_interval_ms",
                format!(
                    "must be at least 1 and at most half of processing.transaction_timeout_ms \
                     ({} ms), or transactions time out before they are committed",
                    p.transaction_timeout_ms
                ),
            ));
        }
        if !p
            .instance_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid(
                "processing.instance_id",
                format!(
                    "{:?}: only letters, digits, '-', '_' and '.' (it is part of the \
                     producers' transactional.id)",
                    p.instance_id
                ),
            ));
        }
        if p.exactly_once() {
            if self.kafka.producer.contains_key("transaction.timeout.ms") {
                return Err(invalid(
                    "kafka.producer.transaction.timeout.ms",
                    "is set by the worker under processing.guarantee = \"exactly_once\": use \
                     processing.transaction_timeout_ms",
                ));
            }
            // librdkafka refuses a producer whose message timeout exceeds
            // the transaction timeout: say which key to change.
            for key in ["message.timeout.ms", "delivery.timeout.ms"] {
                if let Some(timeout) = self.kafka.producer.get(key)
                    && timeout
                        .parse::<u64>()
                        .is_ok_and(|t| t > p.transaction_timeout_ms)
                {
                    return Err(invalid(
                        format!("kafka.producer.{key}"),
                        format!(
                            "{timeout} exceeds processing.transaction_timeout_ms ({}), which \
                             processing.guarantee = \"exactly_once\" requires it not to",
                            p.transaction_timeout_ms
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The URL other instances reach this one at: `http.advertised_url`,
    /// else `http://<bound>` (`bound`: the address the listener actually
    /// bound, which knows the port when `http.addr` asked for port 0).
    pub fn advertised_url(&self, bound: SocketAddr) -> String {
        match &self.http.advertised_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{bound}"),
        }
    }

    /// The HTTP listen address, parsed.
    pub fn http_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.http
            .addr
            .parse()
            .map_err(|e| invalid("http.addr", format!("{e}: {:?}", self.http.addr)))
    }
}

impl WorkerConfig {
    /// Lookup forwarding trusts nobody by default: claims may name only the
    /// listed URLs (this instance's own among them), and instances prove
    /// themselves to each other with a token of their own.
    fn validate_peers(&self) -> Result<(), ConfigError> {
        let mut patterns = Vec::new();
        for text in &self.lookup.peer_urls {
            patterns.push(
                crate::ownership::PeerUrlPattern::parse(text)
                    .map_err(|e| invalid("lookup.peer_urls", e))?,
            );
        }
        if !(3..=86_400).contains(&self.lookup.claim_ttl_secs) {
            return Err(invalid(
                "lookup.claim_ttl_secs",
                "must be between 3 and 86400",
            ));
        }
        if !(1..=3600).contains(&self.http.header_read_timeout_secs) {
            return Err(invalid(
                "http.header_read_timeout_secs",
                "must be between 1 and 3600",
            ));
        }
        if !(1..=1_000_000).contains(&self.http.max_connections) {
            return Err(invalid(
                "http.max_connections",
                "must be between 1 and 1000000",
            ));
        }
        if self.http.peer_token.as_deref() == Some("") {
            return Err(invalid(
                "http.peer_token",
                "must not be empty (remove it if /v1 needs no token)",
            ));
        }
        if self.topics.membership.is_none() {
            return Ok(());
        }
        if patterns.is_empty() {
            return Err(invalid(
                "lookup.peer_urls",
                "must list the URLs the instances are reached at when topics.membership is set \
                 (lookups are forwarded only there), e.g. [\"http://10.0.0.0/8:9464\"] or \
                 [\"http://*.churn-scorer.default.svc.cluster.local:9464\"]",
            ));
        }
        if let Some(url) = &self.http.advertised_url
            && !patterns
                .iter()
                .any(|p| p.matches(url.trim_end_matches('/')))
        {
            return Err(invalid(
                "lookup.peer_urls",
                format!(
                    "match no http.advertised_url {url:?}: the other instances would ignore this one's claims"
                ),
            ));
        }
        if self.http.bearer_token.is_some() && self.http.peer_token.is_none() {
            return Err(invalid(
                "http.peer_token",
                "must be set with topics.membership and http.bearer_token: instances forward \
                 lookups to each other with it, never with the caller's token",
            ));
        }
        Ok(())
    }
}

/// `http.advertised_url`: `http://host:port`, nothing after the authority
/// (forwarded requests append the original path).
fn check_advertised_url(url: &str) -> Result<(), ConfigError> {
    let key = "http.advertised_url";
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(invalid(
            key,
            format!("{url:?}: must start with http:// (instances talk plain HTTP to each other)"),
        ));
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', ' ', '@']) {
        return Err(invalid(
            key,
            format!("{url:?}: must be http://host:port with no path, query or user"),
        ));
    }
    if authority.parse::<axum::http::uri::Authority>().is_err() {
        return Err(invalid(key, format!("{url:?}: not a valid host:port")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load(text: &str, env: &[(&str, &str)], o: &Overrides) -> Result<WorkerConfig, ConfigError> {
        let mut f = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        WorkerConfig::load_with_env(Some(f.path()), o, env)
    }

    fn key(e: ConfigError) -> String {
        match e {
            ConfigError::Invalid { key, .. } => key,
        }
    }

    #[test]
    fn shipped_file_loads_with_the_documented_defaults() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/worker.toml"
        ))
        .expect("shipped config");
        let c = load(&text, &[], &Overrides::default()).expect("valid");
        assert_eq!(c.topics, TopicsConfig::default());
        assert_eq!(c.kafka.group_id, "churn-scorer");
        assert_eq!(c.http.addr, "0.0.0.0:9464");
        assert_eq!(c.model.path, Some(std::env::temp_dir().join("model.toml")));
        assert_eq!(
            c.kafka
                .consumer
                .get("auto.offset.reset")
                .map(String::as_str),
            Some("earliest")
        );
    }

    #[test]
    fn built_in_defaults_match_the_shipped_file() {
        // `run` without any file uses the built-in defaults: they are what
        // config/worker.toml documents, except the model (built in) and
        // producer tuning the worker also sets itself.
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/worker.toml"
        ))
        .expect("shipped config");
        let mut shipped = load(&text, &[], &Overrides::default()).expect("valid");
        let builtin =
            WorkerConfig::load_with_env(None, &Overrides::default(), Vec::new()).expect("defaults");
        shipped.model.path = None;
        shipped.kafka.producer.clear();
        shipped.kafka.consumer.remove("auto.offset.reset");
        assert_eq!(shipped, builtin);
    }

    #[test]
    fn the_input_section_builds_its_decoder_and_names_the_key_it_refuses() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(
            dir.path().join("rename.toml"),
            "rename = { \"Order Completed\" = \"purchase\" }\n",
        )
        .expect("write");
        let config = dir.path().join("worker.toml");
        std::fs::write(
            &config,
            "[input]\nformat = \"segment\"\nmapping = \"rename.toml\"\n",
        )
        .expect("write");
        let c = WorkerConfig::load_with_env(Some(&config), &Overrides::default(), Vec::new())
            .expect("valid");
        assert_eq!(c.input.decoder.name(), "segment");
        assert_eq!(c.input.mapping, Some(dir.path().join("rename.toml")));
        let line = br#"{"type":"track","userId":"u","event":"Order Completed","timestamp":"2025-03-01T10:00:00Z"}"#;
        let event = c
            .input
            .decoder
            .decode(line, &Default::default())
            .expect("valid")
            .expect("admitted");
        assert_eq!(
            event.event_type, "purchase",
            "the mapping file is laid over the preset"
        );

        let env = [("CHURN_SCORER__INPUT__FORMAT", "cloudevents")];
        let c = load("", &env, &Overrides::default()).expect("valid");
        assert_eq!(c.input.decoder.name(), "cloudevents");
        let e = load("[input]\nformat = \"avro\"\n", &[], &Overrides::default())
            .expect_err("unknown format");
        assert!(
            e.to_string().contains("`input.format`") && e.to_string().contains("segment"),
            "{e}"
        );
        let e = load("[input]\nformat = \"mapped\"\n", &[], &Overrides::default())
            .expect_err("mapped needs a mapping");
        assert_eq!(key(e), "input.format");
        let e = load(
            "[input]\nformat = \"segment\"\nmapping = \"/nonexistent/m.toml\"\n",
            &[],
            &Overrides::default(),
        )
        .expect_err("missing file");
        assert_eq!(key(e), "input.mapping");
    }

    #[test]
    fn the_guarantee_defaults_to_at_least_once_and_its_keys_are_named_when_wrong() {
        let c = load("", &[], &Overrides::default()).expect("valid");
        assert_eq!(c.processing.guarantee, Guarantee::AtLeastOnce);
        assert!(!c.processing.exactly_once());
        let env = [("CHURN_SCORER__PROCESSING__GUARANTEE", "exactly_once")];
        let c = load("", &env, &Overrides::default()).expect("valid");
        assert_eq!(c.processing.guarantee, Guarantee::ExactlyOnce);
        let e = load(
            "[processing]\nguarantee = \"exactly-once\"\n",
            &[],
            &Overrides::default(),
        )
        .expect_err("unknown guarantee");
        assert!(e.to_string().contains("`processing.guarantee`"), "{e}");
        let env = [("CHURN_SCORER__PROCESSING__GUARANTEE", "twice")];
        let e = load("", &env, &Overrides::default()).expect_err("unknown guarantee");
        assert!(
            e.to_string()
                .contains("environment variable CHURN_SCORER__PROCESSING__GUARANTEE"),
            "{e}"
        );
        for (text, wrong) in [
            (
                "transaction_timeout_ms = 500",
                "processing.transaction_timeout_ms",
            ),
            (
                "transaction_timeout_ms = 1000000",
                "processing.transaction_timeout_ms",
            ),
            ("commit_interval_ms = 0", "processing.commit_interval_ms"),
            ("commit_interval_ms = 6000", "processing.commit_interval_ms"),
            ("instance_id = \"a b\"", "processing.instance_id"),
        ] {
            let e = load(
                &format!("[processing]\n{text}\n"),
                &[],
                &Overrides::default(),
            )
            .expect_err(text);
            assert_eq!(key(e), wrong, "{text}");
        }
        let eos = "[processing]\nguarantee = \"exactly_once\"\n";
        for (producer, wrong) in [
            (
                "\"transaction.timeout.ms\" = \"5000\"",
                "kafka.producer.transaction.timeout.ms",
            ),
            (
                "\"message.timeout.ms\" = \"300000\"",
                "kafka.producer.message.timeout.ms",
            ),
        ] {
            let e = load(
                &format!("{eos}[kafka.producer]\n{producer}\n"),
                &[],
                &Overrides::default(),
            )
            .expect_err(producer);
            assert_eq!(key(e), wrong, "{producer}");
            // Without transactions the keys mean nothing to the guarantee.
            load(
                &format!("[kafka.producer]\n{producer}\n"),
                &[],
                &Overrides::default(),
            )
            .expect("at-least-once accepts it");
        }
        let e = load(
            &format!("{eos}[kafka.producer]\n\"transactional.id\" = \"mine\"\n"),
            &[],
            &Overrides::default(),
        )
        .expect_err("reserved");
        assert_eq!(key(e), "kafka.producer.transactional.id");
    }

    #[test]
    fn environment_overrides_file_and_flags_override_both() {
        let text = "[kafka]\nbootstrap_servers = \"file:1\"\n[topics]\ninput = \"in\"\n";
        let env = [
            ("CHURN_SCORER__KAFKA__BOOTSTRAP_SERVERS", "env:2"),
            ("CHURN_SCORER__TOPICS__ALERTS", "alerts-env"),
        ];
        let c = load(text, &env, &Overrides::default()).expect("valid");
        assert_eq!(c.kafka.bootstrap_servers, "env:2");
        assert_eq!(c.topics.alerts, "alerts-env");
        assert_eq!(c.topics.input, "in");
        let o = Overrides {
            bootstrap_servers: Some("flag:3".into()),
            http_addr: Some("127.0.0.1:1".into()),
        };
        let c = load(text, &env, &o).expect("valid");
        assert_eq!(c.kafka.bootstrap_servers, "flag:3");
        assert_eq!(c.http.addr, "127.0.0.1:1");
    }

    #[test]
    fn relative_paths_resolve_against_the_file_and_secrets_come_from_the_environment() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("worker.toml");
        std::fs::write(
            &file,
            "[model]\npath = \"m/model.toml\"\n[kafka.consumer]\n\"ssl.ca.location\" = \"ca.pem\"\n\
             \"sasl.password\" = \"${KAFKA_PASSWORD}\"\n[kafka.producer]\n\"ssl.ca.location\" = \"/abs/ca.pem\"\n",
        )
        .expect("write");
        let env = vec![("KAFKA_PASSWORD".to_string(), "s3cret".to_string())];
        let c =
            WorkerConfig::load_with_env(Some(&file), &Overrides::default(), env).expect("valid");
        assert_eq!(c.model.path, Some(dir.path().join("m/model.toml")));
        assert_eq!(
            c.kafka.consumer["ssl.ca.location"],
            dir.path().join("ca.pem").display().to_string()
        );
        assert_eq!(c.kafka.consumer["sasl.password"], "s3cret");
        assert_eq!(c.kafka.producer["ssl.ca.location"], "/abs/ca.pem");
        let e = WorkerConfig::load_with_env(Some(&file), &Overrides::default(), Vec::new())
            .expect_err("unset variable");
        let text = e.to_string();
        assert!(
            text.contains("kafka.consumer.sasl.password") && text.contains("KAFKA_PASSWORD"),
            "{text}"
        );
        let missing = dir.path().join("nope.toml");
        let e = WorkerConfig::load_with_env(Some(&missing), &Overrides::default(), Vec::new())
            .expect_err("missing file");
        assert!(!e.to_string().contains("``"), "{e}");
        assert!(e.to_string().contains("nope.toml"), "{e}");
        let c =
            WorkerConfig::load_with_env(None, &Overrides::default(), Vec::new()).expect("defaults");
        assert_eq!(c.model.path, None, "built-in model by default");
    }

    #[test]
    fn bad_values_name_their_key() {
        let o = Overrides::default();
        assert_eq!(
            key(load("[http]\naddr = \"nope\"\n", &[], &o).expect_err("bad addr")),
            "http.addr"
        );
        assert_eq!(
            key(load("[pipeline]\nbatch_size = \"many\"\n", &[], &o).expect_err("bad type")),
            "pipeline.batch_size"
        );
        let e = load("[topics]\nbogus = \"x\"\n", &[], &o).expect_err("unknown key");
        assert!(key(e).starts_with("topics"));
        assert_eq!(
            key(load(
                "[kafka.consumer]\n\"enable.auto.commit\" = \"true\"\n",
                &[],
                &o
            )
            .expect_err("reserved")),
            "kafka.consumer.enable.auto.commit"
        );
        for (k, v) in [
            ("enable.idempotence", "false"),
            ("acks", "0"),
            ("transactional.id", "x"),
            ("max.in.flight.requests.per.connection", "50"),
        ] {
            let file = format!("[kafka.producer]\n\"{k}\" = \"{v}\"\n");
            let e = load(&file, &[], &o).expect_err("reserved producer key");
            assert!(e.to_string().contains("delivery guarantee"), "{e}");
            assert_eq!(key(e), format!("kafka.producer.{k}"));
        }
        assert_eq!(
            key(load("[topics]\ninput = \"churn-alerts\"\n", &[], &o).expect_err("same topic")),
            "topics.input"
        );
        for file in [
            "[topics]\nshadow_alerts = \"shadow\"\n",
            "[model]\nshadow_path = \"m.toml\"\n[topics]\nshadow_alerts = \"churn-alerts\"\n",
            "[model]\nshadow_path = \"m.toml\"\n[topics]\nshadow_alerts = \"\"\n",
        ] {
            assert_eq!(
                key(load(file, &[], &o).expect_err("bad shadow topic")),
                "topics.shadow_alerts",
                "{file}"
            );
        }
        for file in [
            "[topics]\ndeletion = \"\"\n",
            "[topics]\ndeletion = \"customer-events\"\n",
        ] {
            assert_eq!(
                key(load(file, &[], &o).expect_err("bad deletion topic")),
                "topics.deletion"
            );
        }
        assert_eq!(
            key(load("[http]\nadmin_token = \"\"\n", &[], &o).expect_err("empty token")),
            "http.admin_token"
        );
    }

    #[test]
    fn lookup_forwarding_settings_are_checked() {
        let o = Overrides::default();
        let members = "[lookup]\npeer_urls = [\"http://10.0.0.0/8:9464\"]\n\
                       [topics]\nmembership = \"churn-scorer-members\"\n";
        // Trust nobody by default: the peers' URLs must be listed.
        let e = load(
            "[topics]\nmembership = \"m\"\n[http]\nadvertised_url = \"http://10.0.0.7:9464\"\n",
            &[],
            &o,
        )
        .expect_err("no peer urls");
        assert_eq!(key(e), "lookup.peer_urls");
        let e = load(
            &format!("{members}[http]\nadvertised_url = \"http://192.168.1.1:9464\"\n"),
            &[],
            &o,
        )
        .expect_err("own url not listed");
        assert_eq!(key(e), "lookup.peer_urls");
        let e = load(
            &format!(
                "{members}[http]\nadvertised_url = \"http://10.0.0.7:9464\"\nbearer_token = \"t\"\n"
            ),
            &[],
            &o,
        )
        .expect_err("bearer token without a peer token");
        assert_eq!(key(e), "http.peer_token");
        assert_eq!(
            key(load("[lookup]\npeer_urls = [\"10.0.0.0/8\"]\n", &[], &o).expect_err("pattern")),
            "lookup.peer_urls"
        );
        // All interfaces and no advertised URL: nobody could reach it.
        let e = load(members, &[], &o).expect_err("no advertised url");
        assert!(e.to_string().contains("pod IP"), "{e}");
        assert_eq!(key(e), "http.advertised_url");
        // A concrete listen address is advertised as is.
        let c = load(
            &format!("{members}[http]\naddr = \"10.1.2.3:9464\"\n"),
            &[],
            &o,
        )
        .expect("valid");
        let bound: SocketAddr = "10.1.2.3:9464".parse().expect("addr");
        assert_eq!(c.advertised_url(bound), "http://10.1.2.3:9464");
        // The environment sets it (as the Kubernetes manifest does).
        let env = [(
            "CHURN_SCORER__HTTP__ADVERTISED_URL",
            "http://10.0.0.7:9464/",
        )];
        let c = load(members, &env, &o).expect("valid");
        assert_eq!(c.advertised_url(bound), "http://10.0.0.7:9464");
        for url in [
            "10.0.0.7:9464",
            "https://x:1",
            "http://x:1/v1",
            "http://",
            "http://a b",
        ] {
            let file = format!("{members}[http]\nadvertised_url = \"{url}\"\n");
            assert_eq!(
                key(load(&file, &[], &o).expect_err(url)),
                "http.advertised_url",
                "{url}"
            );
        }
        assert_eq!(
            key(load("[topics]\nmembership = \"churn-alerts\"\n", &[], &o).expect_err("same")),
            "topics.membership"
        );
        assert_eq!(
            key(load("[lookup]\nforward_timeout_ms = 0\n", &[], &o).expect_err("zero")),
            "lookup.forward_timeout_ms"
        );
        assert_eq!(
            key(load("[lookup]\npartitioner = \"fnv\"\n", &[], &o).expect_err("unknown")),
            "lookup.partitioner"
        );
        let c = load("[lookup]\npartitioner = \"murmur2\"\n", &[], &o).expect("valid");
        assert_eq!(c.lookup.partitioner, KeyPartitioner::Murmur2);
    }
}
