//! Startup check of the Kafka connection, so that an unreachable broker, a
//! TLS failure or a rejected login stops `run` with an error that names the
//! address, file or key to fix (the worker itself would wait and report a
//! bare `BrokerTransportFailure`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer};
use tokio_util::sync::CancellationToken;

use churn_worker::config::WorkerConfig;

/// Collects librdkafka's error reports of the check client.
#[derive(Default)]
struct CheckContext {
    errors: Mutex<Vec<String>>,
}

impl ClientContext for CheckContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        use RDKafkaLogLevel::{Alert, Critical, Emerg, Error, Warning};
        if matches!(level, Emerg | Alert | Critical | Error | Warning) {
            tracing::debug!(target: "librdkafka", "{fac} {message}");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Ok(mut errors) = self.errors.lock() {
            errors.push(format!("{error}: {reason}"));
        }
    }
}

impl rdkafka::producer::ProducerContext for CheckContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// Failures that retrying cannot fix.
fn is_permanent(message: &str) -> bool {
    // Broker names carry the protocol (`sasl_ssl://host:port/1`): not a finding.
    let m = message
        .to_ascii_lowercase()
        .replace("sasl_ssl://", "")
        .replace("sasl_plaintext://", "")
        .replace("ssl://", "");
    [
        "ssl handshake",
        "ssl_handshake",
        "certificate",
        "authentication",
        "sasl",
    ]
    .iter()
    .any(|w| m.contains(w))
}

/// Checks the client properties of each section, then connects with the
/// worker's producer settings and fetches metadata. Gives up after
/// `deadline` (`run --connect-timeout`).
pub fn check(config: &WorkerConfig, cancel: &CancellationToken, deadline: Duration) -> Result<()> {
    let bootstrap = &config.kafka.bootstrap_servers;
    let consumer_protocol = config.kafka.consumer.get("security.protocol");
    let producer_protocol = config.kafka.producer.get("security.protocol");
    if consumer_protocol != producer_protocol {
        let shown = |p: Option<&String>| p.map_or("unset", String::as_str).to_string();
        tracing::warn!(
            consumer = %shown(consumer_protocol),
            producer = %shown(producer_protocol),
            "`security.protocol` differs between [kafka.consumer] and [kafka.producer]; \
             both clients talk to the same cluster"
        );
    }
    // librdkafka rejects an unknown or malformed property when a client is
    // created: create the consumer now (it does not connect before it is
    // subscribed), so a typo names its section instead of failing later.
    churn_worker::consumer_client_config(config, &config.kafka.group_id)
        .create::<rdkafka::consumer::BaseConsumer>()
        .map_err(|e| anyhow!("kafka client settings ([kafka.consumer]): {e}"))?;
    let mut client_config = ClientConfig::new();
    for (k, v) in &config.kafka.producer {
        client_config.set(k, v);
    }
    client_config.set("bootstrap.servers", bootstrap);
    probe(
        client_config,
        "[kafka.producer]",
        bootstrap,
        "--bootstrap-servers or `kafka.bootstrap_servers`",
        cancel,
        deadline,
        |permanent| tls_hint(config, permanent),
    )
}

/// Connects to `bootstrap` with librdkafka's defaults and fetches metadata
/// (`generate --bootstrap-servers`), giving up after `deadline`.
pub fn check_bootstrap(
    bootstrap: &str,
    cancel: &CancellationToken,
    deadline: Duration,
) -> Result<()> {
    let mut client_config = ClientConfig::new();
    client_config.set("bootstrap.servers", bootstrap);
    probe(
        client_config,
        "kafka client",
        bootstrap,
        "--bootstrap-servers",
        cancel,
        deadline,
        |_| String::new(),
    )
}

/// Creates a producer from `client_config` (its property errors name
/// `section`) and fetches metadata until it answers, a permanent failure
/// (TLS, SASL) is seen, `cancel` is set, or `deadline` passes; errors name
/// `bootstrap` and what set it (`set_by`).
fn probe(
    client_config: ClientConfig,
    section: &str,
    bootstrap: &str,
    set_by: &str,
    cancel: &CancellationToken,
    deadline: Duration,
    hint: impl Fn(&str) -> String,
) -> Result<()> {
    let producer: BaseProducer<CheckContext> = client_config
        .create_with_context(CheckContext::default())
        .map_err(|e| anyhow!("kafka client settings ({section}): {e}"))?;
    let started = Instant::now();
    let mut warned = false;
    // The most specific failure seen ("Connect to … failed: Connection
    // refused" says more than the later "1/1 brokers are down").
    let mut best_detail: Option<String> = None;
    loop {
        let result = producer
            .client()
            .fetch_metadata(None, Duration::from_millis(1500));
        // Error and log reports are delivered through the client's queue.
        producer.poll(Duration::from_millis(100));
        let errors: Vec<String> = producer
            .context()
            .errors
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default();
        match result {
            Ok(_) => {
                if warned {
                    tracing::info!(bootstrap_servers = %bootstrap, "kafka reachable");
                }
                return Ok(());
            }
            Err(e) => {
                if let Some(specific) = errors.iter().find(|m| !m.contains("AllBrokersDown")) {
                    best_detail = Some(specific.clone());
                }
                let detail = best_detail
                    .clone()
                    .or_else(|| errors.last().cloned())
                    .unwrap_or_else(|| e.to_string());
                if let Some(permanent) = errors.iter().find(|m| is_permanent(m)) {
                    return Err(anyhow!(
                        "kafka at {bootstrap} (set by {set_by}): {permanent}{}",
                        hint(permanent)
                    ));
                }
                if cancel.is_cancelled() {
                    return Ok(());
                }
                if started.elapsed() >= deadline {
                    return Err(anyhow!(
                        "cannot reach kafka at {bootstrap} (set by {set_by}) within {} s: {detail}",
                        deadline.as_secs()
                    ));
                }
                if !warned {
                    tracing::warn!(
                        bootstrap_servers = %bootstrap,
                        error = %detail,
                        "waiting for kafka (set by {set_by})"
                    );
                    warned = true;
                }
            }
        }
    }
}

/// What to check after a TLS or SASL failure: the files and keys involved.
fn tls_hint(config: &WorkerConfig, message: &str) -> String {
    let m = message.to_ascii_lowercase();
    let producer = &config.kafka.producer;
    if m.contains("certificate verify failed")
        || m.contains("ssl.ca.location")
        || m.contains("unable to get local issuer")
    {
        return match producer.get("ssl.ca.location") {
            Some(ca) => format!(
                "; the broker's certificate is not signed by the CA in {ca} \
                 (`kafka.producer.ssl.ca.location`)"
            ),
            None => "; no `ssl.ca.location` is set, so the system CA store was used: \
                     set `ssl.ca.location` to the CA file of the cluster"
                .to_string(),
        };
    }
    if m.contains("sasl") || m.contains("authentication") {
        return format!(
            "; check `sasl.mechanisms` ({}) and `sasl.username` ({}) in [kafka.producer] and [kafka.consumer]",
            producer
                .get("sasl.mechanisms")
                .or_else(|| producer.get("sasl.mechanism"))
                .map_or("unset", String::as_str),
            producer
                .get("sasl.username")
                .map_or("unset", String::as_str)
        );
    }
    String::new()
}
