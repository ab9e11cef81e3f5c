//! Start-up checks of every topic the worker reads or writes, made with
//! requests that can never create a topic.
//!
//! Apache Kafka creates a topic on a metadata request that names it when the
//! broker has `auto.create.topics.enable=true` (its default) and the client
//! allows it; librdkafka's producers allow it by default. A check made that
//! way creates a missing state topic with the broker's defaults (not
//! compacted, any partition count) and the worker then writes its changelog
//! there. So the checks here ask with a consumer-type client whose
//! `allow.auto.create.topics` is `false`, and report every problem at once,
//! each with the command that fixes it.

use std::fmt;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;

/// What the worker does with a topic, which decides what it must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicRole {
    /// Customer events (read).
    Input,
    /// The state changelog (read at restore, written): compacted, one
    /// partition per input partition.
    State,
    /// At-risk and recovery alerts (written).
    Alerts,
    /// Dead letters (written).
    DeadLetter,
    /// The shadow model's alerts (written).
    ShadowAlerts,
    /// Erasure requests (read): one partition per input partition.
    Deletion,
    /// Instance membership (read and written): compacted.
    Membership,
}

impl TopicRole {
    /// The configuration key that names the topic.
    pub fn config_key(self) -> &'static str {
        match self {
            TopicRole::Input => "topics.input",
            TopicRole::State => "topics.state",
            TopicRole::Alerts => "topics.alerts",
            TopicRole::DeadLetter => "topics.dead_letter",
            TopicRole::ShadowAlerts => "topics.shadow_alerts",
            TopicRole::Deletion => "topics.deletion",
            TopicRole::Membership => "topics.membership",
        }
    }

    /// Whether the topic must have `cleanup.policy=compact`.
    fn compacted(self) -> bool {
        matches!(self, TopicRole::State | TopicRole::Membership)
    }

    /// Whether the topic must have the input topic's partition count.
    fn co_partitioned(self) -> bool {
        matches!(self, TopicRole::State | TopicRole::Deletion)
    }
}

/// One thing wrong with one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicProblem {
    /// The topic does not exist (or this client may not describe it).
    Missing {
        /// Topic name.
        topic: String,
        /// Its role.
        role: TopicRole,
        /// Partitions it should be created with.
        partitions: usize,
    },
    /// The topic's partition count differs from the input topic's.
    PartitionMismatch {
        /// Topic name.
        topic: String,
        /// Its role.
        role: TopicRole,
        /// Its partitions.
        partitions: usize,
        /// The input topic's partitions.
        input_partitions: usize,
    },
    /// The topic must be compacted and is not.
    NotCompacted {
        /// Topic name.
        topic: String,
        /// Its role.
        role: TopicRole,
        /// Its `cleanup.policy`.
        policy: String,
    },
}

impl fmt::Display for TopicProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicProblem::Missing {
                topic,
                role,
                partitions,
            } => {
                let compact = if role.compacted() {
                    " --config cleanup.policy=compact"
                } else {
                    ""
                };
                write!(
                    f,
                    "topic `{topic}` ({}) does not exist; create it, e.g.: kafka-topics.sh \
                     --bootstrap-server <broker> --create --topic {topic} --partitions \
                     {partitions} --replication-factor 3{compact}",
                    role.config_key()
                )
            }
            TopicProblem::PartitionMismatch {
                topic,
                role,
                partitions,
                input_partitions,
            } => write!(
                f,
                "topic `{topic}` ({}) has {partitions} partitions but the input topic has \
                 {input_partitions}; they must match (partition p holds the records of input \
                 partition p); recreate it with --partitions {input_partitions}",
                role.config_key()
            ),
            TopicProblem::NotCompacted {
                topic,
                role,
                policy,
            } => write!(
                f,
                "topic `{topic}` ({}) has cleanup.policy={policy} but must be compacted (its \
                 records are the latest value per key); fix: kafka-configs.sh --bootstrap-server \
                 <broker> --alter --entity-type topics --entity-name {topic} --add-config \
                 cleanup.policy=compact",
                role.config_key()
            ),
        }
    }
}

/// Every problem the start-up check found, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicProblems(pub Vec<TopicProblem>);

impl fmt::Display for TopicProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} topic problem{} (nothing was created):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// Errors of the start-up check.
#[derive(Debug, thiserror::Error)]
pub enum TopicCheckError {
    /// Topics are missing or misconfigured.
    #[error("{0}")]
    Problems(TopicProblems),
    /// The brokers did not answer within the deadline.
    #[error("the brokers did not answer a metadata request within {secs} s: {source}")]
    Unreachable {
        /// The deadline.
        secs: u64,
        /// The last error.
        source: KafkaError,
    },
    /// The check's client could not be created.
    #[error("creating the topic-check client: {0}")]
    Client(KafkaError),
}

/// The topics of a configuration with their roles, input first.
pub fn topics_of(config: &WorkerConfig) -> Vec<(&str, TopicRole)> {
    let t = &config.topics;
    let mut topics = vec![
        (t.input.as_str(), TopicRole::Input),
        (t.state.as_str(), TopicRole::State),
        (t.alerts.as_str(), TopicRole::Alerts),
        (t.dead_letter.as_str(), TopicRole::DeadLetter),
    ];
    if let Some(s) = &t.shadow_alerts {
        topics.push((s, TopicRole::ShadowAlerts));
    }
    if let Some(d) = &t.deletion {
        topics.push((d, TopicRole::Deletion));
    }
    if let Some(m) = &t.membership {
        topics.push((m, TopicRole::Membership));
    }
    topics
}

/// Checks every topic of `config` and returns the input topic's partition
/// count, or `None` if `shutdown` was requested while waiting for the
/// brokers. Runs on a plain thread (it blocks).
pub fn check_topics(
    config: &WorkerConfig,
    wait: Duration,
    shutdown: &CancellationToken,
) -> Result<Option<usize>, TopicCheckError> {
    let mut client = crate::kafka::consumer_config(config, &config.kafka.group_id);
    // Set last: nothing in the user's pass-through properties may turn the
    // check into a topic factory.
    client.set("allow.auto.create.topics", "false");
    let consumer: BaseConsumer = client.create().map_err(TopicCheckError::Client)?;
    let topics = topics_of(config);
    let deadline = Instant::now() + wait;
    let mut partitions = Vec::with_capacity(topics.len());
    for &(topic, _) in &topics {
        match partitions_of(&consumer, topic, deadline, shutdown)? {
            Some(count) => partitions.push(count),
            None => return Ok(None),
        }
    }
    let described: Vec<(&str, TopicRole, usize)> = topics
        .iter()
        .zip(&partitions)
        .map(|(&(t, r), &p)| (t, r, p))
        .collect();
    let policies = cleanup_policies(config, &described);
    let problems = problems(&described, &policies);
    if problems.is_empty() {
        Ok(Some(partitions[0]))
    } else {
        Err(TopicCheckError::Problems(TopicProblems(problems)))
    }
}

/// The partition count of `topic` (0: it does not exist), retrying while
/// the brokers cannot be reached, until `deadline`. `None`: shutdown.
fn partitions_of(
    consumer: &BaseConsumer,
    topic: &str,
    deadline: Instant,
    shutdown: &CancellationToken,
) -> Result<Option<usize>, TopicCheckError> {
    loop {
        if shutdown.is_cancelled() {
            return Ok(None);
        }
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(100), Duration::from_secs(5));
        match consumer.fetch_metadata(Some(topic), wait) {
            Ok(md) => return Ok(Some(count_in(&md, topic))),
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "waiting for the brokers");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(source) => {
                return Err(TopicCheckError::Unreachable {
                    secs: deadline.elapsed().as_secs(),
                    source,
                });
            }
        }
    }
}

fn count_in(md: &Metadata, topic: &str) -> usize {
    md.topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none())
        .map_or(0, |t| t.partitions().len())
}

/// `cleanup.policy` of each existing topic that must be compacted, by
/// DescribeConfigs. A topic whose policy cannot be read (no DESCRIBE_CONFIGS
/// permission, or a broker without the admin API such as the development
/// broker) is left out with a warning: the worker does not demand more
/// permissions than it needs to run.
fn cleanup_policies(
    config: &WorkerConfig,
    described: &[(&str, TopicRole, usize)],
) -> Vec<(String, String)> {
    let wanted: Vec<&str> = described
        .iter()
        .filter(|(_, r, p)| r.compacted() && *p > 0)
        .map(|(t, _, _)| *t)
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    match describe_cleanup_policies(config, &wanted) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(
                topics = ?wanted,
                error = %e,
                "could not read the topics' cleanup.policy (DescribeConfigs); not checked"
            );
            Vec::new()
        }
    }
}

fn describe_cleanup_policies(
    config: &WorkerConfig,
    topics: &[&str],
) -> Result<Vec<(String, String)>, KafkaError> {
    let mut client = crate::kafka::consumer_config(config, &config.kafka.group_id);
    client.set("allow.auto.create.topics", "false");
    let admin: AdminClient<DefaultClientContext> = client.create()?;
    let resources: Vec<ResourceSpecifier<'_>> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
    // The admin client polls its own queue on a thread of its own; a
    // current-thread runtime is only what waits for the answer, with a
    // deadline of its own in case the request is never answered.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|_| KafkaError::AdminOpCreation("runtime".into()))?;
    let results = runtime
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(7),
                admin.describe_configs(&resources, &options),
            )
            .await
        })
        .map_err(|_| KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut))??;
    let mut found = Vec::new();
    for (topic, result) in topics.iter().zip(results) {
        match result {
            Ok(resource) => {
                if let Some(entry) = resource.get("cleanup.policy")
                    && let Some(value) = &entry.value
                {
                    found.push(((*topic).to_string(), value.clone()));
                }
            }
            Err(code) => tracing::warn!(
                topic,
                error = %code,
                "could not read the topic's cleanup.policy; not checked"
            ),
        }
    }
    Ok(found)
}

/// What is wrong with the described topics: `(topic, role, partitions)`
/// with the input first, and the cleanup policies that could be read.
pub fn problems(
    described: &[(&str, TopicRole, usize)],
    policies: &[(String, String)],
) -> Vec<TopicProblem> {
    let input_partitions = described
        .iter()
        .find(|(_, r, _)| *r == TopicRole::Input)
        .map_or(0, |(_, _, p)| *p);
    let mut problems = Vec::new();
    for &(topic, role, partitions) in described {
        if partitions == 0 {
            let suggested = if role == TopicRole::Membership {
                1
            } else if input_partitions > 0 {
                input_partitions
            } else {
                12
            };
            problems.push(TopicProblem::Missing {
                topic: topic.to_string(),
                role,
                partitions: suggested,
            });
            continue;
        }
        if role.co_partitioned() && input_partitions > 0 && partitions != input_partitions {
            problems.push(TopicProblem::PartitionMismatch {
                topic: topic.to_string(),
                role,
                partitions,
                input_partitions,
            });
        }
        if role.compacted()
            && let Some((_, policy)) = policies.iter().find(|(t, _)| t == topic)
            && !policy.split(',').any(|p| p.trim() == "compact")
        {
            problems.push(TopicProblem::NotCompacted {
                topic: topic.to_string(),
                role,
                policy: policy.clone(),
            });
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_missing_topic_is_named_with_its_fix() {
        let described = [
            ("events", TopicRole::Input, 0),
            ("state", TopicRole::State, 0),
            ("alerts", TopicRole::Alerts, 0),
            ("dlq", TopicRole::DeadLetter, 3),
            ("members", TopicRole::Membership, 0),
        ];
        let p = problems(&described, &[]);
        assert_eq!(p.len(), 4, "{p:?}");
        let text = TopicProblems(p).to_string();
        for name in ["`events`", "`state`", "`alerts`", "`members`"] {
            assert!(text.contains(name), "{text}");
        }
        assert!(!text.contains("`dlq`"), "{text}");
        assert!(
            text.contains("--topic state --partitions 12 --replication-factor 3 --config cleanup.policy=compact"),
            "{text}"
        );
        assert!(text.contains("--topic members --partitions 1"), "{text}");
        assert!(text.contains("(topics.alerts)"), "{text}");
    }

    #[test]
    fn co_partitioned_topics_must_match_the_input_and_state_must_be_compacted() {
        let described = [
            ("events", TopicRole::Input, 6),
            ("state", TopicRole::State, 4),
            ("erase", TopicRole::Deletion, 6),
            ("alerts", TopicRole::Alerts, 1),
        ];
        let policies = [("state".to_string(), "delete".to_string())];
        let p = problems(&described, &policies);
        assert_eq!(
            p,
            vec![
                TopicProblem::PartitionMismatch {
                    topic: "state".into(),
                    role: TopicRole::State,
                    partitions: 4,
                    input_partitions: 6
                },
                TopicProblem::NotCompacted {
                    topic: "state".into(),
                    role: TopicRole::State,
                    policy: "delete".into()
                },
            ]
        );
        let ok = [("state".to_string(), "compact,delete".to_string())];
        let described = [
            ("events", TopicRole::Input, 6),
            ("state", TopicRole::State, 6),
        ];
        assert!(problems(&described, &ok).is_empty());
    }
}
