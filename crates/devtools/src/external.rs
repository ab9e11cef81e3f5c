//! A Kafka cluster the benchmark did not start (`bench --bootstrap-servers`):
//! checked for reachability within a deadline, given topics of the
//! benchmark's own through the admin API, and rid of them again.
//!
//! Every topic it deletes is one it created: the benchmark never writes to,
//! reads from or deletes a topic that existed before it ran.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer};

/// How long to wait for created topics to be led, and deleted ones to go.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of an external cluster.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    /// Nothing answered a metadata request within the deadline.
    #[error("cannot reach kafka at {bootstrap} (set by --bootstrap-servers) within {} s: {detail}", .timeout.as_secs())]
    Unreachable {
        /// The address given.
        bootstrap: String,
        /// How long it was tried.
        timeout: Duration,
        /// The most specific failure seen.
        detail: String,
    },
    /// The cluster refused to create a topic (no admin API, no CREATE
    /// permission, a policy, a name taken...).
    #[error("kafka at {bootstrap} refused to create topic {topic}: {error}")]
    CreateRefused {
        /// The address given.
        bootstrap: String,
        /// The topic.
        topic: String,
        /// The cluster's answer.
        error: String,
    },
    /// Topic creation got no answer: librdkafka waits for a broker that
    /// supports CreateTopics, which the development broker never is.
    #[error(
        "kafka at {bootstrap} did not create topics {topics} within {} s (no admin API? \
         the development broker `churn-scorer broker` has none): {error}",
        .timeout.as_secs()
    )]
    CreateTimedOut {
        /// The address given.
        bootstrap: String,
        /// The topics, comma-separated.
        topics: String,
        /// How long it was waited for.
        timeout: Duration,
        /// What the client said.
        error: String,
    },
    /// A created topic was not usable (every partition led) in time.
    #[error("topic {topic} on kafka at {bootstrap} was created but not ready within {} s", .timeout.as_secs())]
    NotReady {
        /// The address given.
        bootstrap: String,
        /// The topic.
        topic: String,
        /// How long it was waited for.
        timeout: Duration,
    },
    /// A Kafka client could not be created or answered with an error.
    #[error("kafka at {bootstrap}: {source}")]
    Kafka {
        /// The address given.
        bootstrap: String,
        /// What the client said.
        source: KafkaError,
    },
    /// The runtime the admin requests are awaited on could not start.
    #[error("admin client runtime: {0}")]
    Runtime(std::io::Error),
}

/// A topic to create: its name, partitions and whether it must be compacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partitions.
    pub partitions: i32,
    /// `cleanup.policy=compact` (the state changelog, the membership topic).
    pub compacted: bool,
}

/// Collects librdkafka's error reports ("Connect to ... failed: Connection
/// refused" says more than the request's own "BrokerTransportFailure").
#[derive(Default)]
struct ProbeContext {
    errors: Mutex<Vec<String>>,
}

impl ClientContext for ProbeContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            tracing::debug!(target: "librdkafka", "{fac} {message}");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Ok(mut errors) = self.errors.lock() {
            errors.push(format!("{error}: {reason}"));
        }
    }
}

impl rdkafka::producer::ProducerContext for ProbeContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// An external cluster with the topics the benchmark created on it; they
/// are deleted by [`ExternalBroker::delete_topics`], or on drop (best
/// effort, e.g. when the benchmark fails half-way).
pub struct ExternalBroker {
    bootstrap: String,
    /// Bound of each admin request (the `connect` timeout).
    timeout: Duration,
    admin: AdminClient<DefaultClientContext>,
    runtime: tokio::runtime::Runtime,
    created: Vec<String>,
}

impl ExternalBroker {
    /// Connects to `bootstrap` and waits until it answers a metadata
    /// request, giving up after `timeout` with an error naming the address;
    /// `timeout` also bounds each admin request.
    pub fn connect(bootstrap: &str, timeout: Duration) -> Result<Self, ExternalError> {
        probe(bootstrap, timeout)?;
        let kafka = |source| ExternalError::Kafka {
            bootstrap: bootstrap.to_string(),
            source,
        };
        let admin = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("log_level", "3")
            .create()
            .map_err(kafka)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ExternalError::Runtime)?;
        Ok(ExternalBroker {
            bootstrap: bootstrap.to_string(),
            timeout,
            admin,
            runtime,
            created: Vec::new(),
        })
    }

    /// `bootstrap.servers` for clients.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// The topics created so far and not yet deleted.
    pub fn created(&self) -> &[String] {
        &self.created
    }

    /// Creates `topics` (replication factor: the cluster's default) and
    /// waits until every partition of each has a leader.
    pub fn create_topics(&mut self, topics: &[TopicSpec]) -> Result<(), ExternalError> {
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| {
                let topic = NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(-1));
                if t.compacted {
                    topic.set("cleanup.policy", "compact")
                } else {
                    topic
                }
            })
            .collect();
        let options = AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout));
        let refused = |topic: &str, error: String| ExternalError::CreateRefused {
            bootstrap: self.bootstrap.clone(),
            topic: topic.to_string(),
            error,
        };
        let results = self
            .runtime
            .block_on(self.admin.create_topics(new.iter(), &options))
            .map_err(|e| {
                let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
                match e {
                    KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut) => {
                        ExternalError::CreateTimedOut {
                            bootstrap: self.bootstrap.clone(),
                            topics: names.join(", "),
                            timeout: self.timeout,
                            error: e.to_string(),
                        }
                    }
                    e => refused(&names.join(", "), e.to_string()),
                }
            })?;
        let mut first_refusal = None;
        for result in results {
            match result {
                Ok(name) => self.created.push(name),
                Err((name, code)) => {
                    first_refusal.get_or_insert_with(|| refused(&name, code.to_string()));
                }
            }
        }
        if let Some(refusal) = first_refusal {
            return Err(refusal);
        }
        self.wait_until_led(topics)
    }

    fn wait_until_led(&self, topics: &[TopicSpec]) -> Result<(), ExternalError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("allow.auto.create.topics", "false")
            .set("log_level", "3")
            .create()
            .map_err(|source| ExternalError::Kafka {
                bootstrap: self.bootstrap.clone(),
                source,
            })?;
        let deadline = Instant::now() + ADMIN_TIMEOUT;
        for spec in topics {
            loop {
                let ready = consumer
                    .fetch_metadata(Some(&spec.name), Duration::from_secs(5))
                    .ok()
                    .is_some_and(|md| {
                        md.topics().iter().any(|t| {
                            t.name() == spec.name
                                && t.error().is_none()
                                && t.partitions().len() == spec.partitions as usize
                                && t.partitions().iter().all(|p| p.leader() >= 0)
                        })
                    });
                if ready {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(ExternalError::NotReady {
                        bootstrap: self.bootstrap.clone(),
                        topic: spec.name.clone(),
                        timeout: ADMIN_TIMEOUT,
                    });
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Deletes every topic this created and waits (at most 30 s) until the
    /// cluster no longer lists them. Returns the topics that could not be
    /// deleted, with why.
    pub fn delete_topics(&mut self) -> Vec<(String, String)> {
        if self.created.is_empty() {
            return Vec::new();
        }
        let names: Vec<&str> = self.created.iter().map(String::as_str).collect();
        let options = AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout));
        let mut failed: Vec<(String, String)> = Vec::new();
        match self
            .runtime
            .block_on(self.admin.delete_topics(&names, &options))
        {
            Ok(results) => {
                for result in results {
                    if let Err((name, code)) = result {
                        failed.push((name, code.to_string()));
                    }
                }
            }
            Err(e) => failed.extend(names.iter().map(|n| (n.to_string(), e.to_string()))),
        }
        let deleted: Vec<String> = self
            .created
            .iter()
            .filter(|n| !failed.iter().any(|(f, _)| f == *n))
            .cloned()
            .collect();
        if let Err(still) = self.wait_until_gone(&deleted) {
            failed.extend(
                still
                    .into_iter()
                    .map(|n| (n, "still listed 30 s after its deletion".to_string())),
            );
        }
        self.created.clear();
        failed
    }

    /// Waits until none of `names` is listed; the ones still listed at the deadline.
    fn wait_until_gone(&self, names: &[String]) -> Result<(), Vec<String>> {
        let Ok(consumer) = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("allow.auto.create.topics", "false")
            .set("log_level", "3")
            .create::<BaseConsumer>()
        else {
            return Err(names.to_vec());
        };
        let deadline = Instant::now() + ADMIN_TIMEOUT;
        loop {
            let listed: Vec<String> = match consumer.fetch_metadata(None, Duration::from_secs(5)) {
                Ok(md) => md
                    .topics()
                    .iter()
                    .map(|t| t.name().to_string())
                    .filter(|t| names.contains(t))
                    .collect(),
                Err(_) => names.to_vec(),
            };
            if listed.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(listed);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ExternalBroker {
    fn drop(&mut self) {
        if self.created.is_empty() {
            return;
        }
        let names = self.created.join(", ");
        eprintln!(
            "deleting the benchmark's topics on {}: {names}",
            self.bootstrap
        );
        for (topic, why) in self.delete_topics() {
            eprintln!(
                "could not delete topic {topic} on {} ({why}): delete it by hand",
                self.bootstrap
            );
        }
    }
}

/// Fetches metadata from `bootstrap` until it answers or `timeout` passes.
fn probe(bootstrap: &str, timeout: Duration) -> Result<(), ExternalError> {
    // A producer: its poll serves the error reports (a consumer's would
    // wait for messages).
    let client: BaseProducer<ProbeContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("log_level", "3")
        .create_with_context(ProbeContext::default())
        .map_err(|source| ExternalError::Kafka {
            bootstrap: bootstrap.to_string(),
            source,
        })?;
    let started = Instant::now();
    let mut detail: Option<String> = None;
    loop {
        let remaining = timeout.saturating_sub(started.elapsed());
        let result = client.client().fetch_metadata(
            None,
            remaining.clamp(Duration::from_millis(100), Duration::from_secs(2)),
        );
        // Error reports arrive through the client's queue.
        client.poll(Duration::from_millis(50));
        let errors: Vec<String> = client
            .context()
            .errors
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default();
        if let Some(specific) = errors.iter().find(|m| !m.contains("AllBrokersDown")) {
            detail = Some(specific.clone());
        }
        match result {
            Ok(_) => return Ok(()),
            Err(e) if started.elapsed() >= timeout => {
                return Err(ExternalError::Unreachable {
                    bootstrap: bootstrap.to_string(),
                    timeout,
                    detail: detail
                        .or_else(|| errors.last().cloned())
                        .unwrap_or_else(|| e.to_string()),
                });
            }
            Err(_) => {}
        }
    }
}
