//! The start-up checks of every topic the worker reads or writes, run
//! before joining the group, with requests that can never create a topic.
//!
//! Apache Kafka creates a topic on a metadata request that names it when the
//! broker has `auto.create.topics.enable=true` (its default) and the client
//! allows it; librdkafka's producers allow it by default. A check made that
//! way creates a missing state topic with the broker's defaults (not
//! compacted, any partition count) and the worker then writes its changelog
//! there. So the checks here ask with a consumer-type client whose
//! `allow.auto.create.topics` is `false`, and report every problem at once,
//! each with the command that fixes it.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;
use crate::error::WorkerError;
use crate::kafka;
use crate::topics::{TopicProblem, TopicProblems, TopicRole, problems};

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

/// How long the check waits for the brokers to answer at all.
const BROKER_WAIT: Duration = Duration::from_secs(30);
/// How long the cleanup-policy check waits for DescribeConfigs.
const DESCRIBE_CONFIGS_WAIT: Duration = Duration::from_millis(1500);

/// Checks every topic of `config` and returns the input topic's partition
/// count, or `None` if `shutdown` was requested while waiting for the
/// brokers. Runs on the group thread (it blocks), before joining.
pub(crate) fn preflight(
    config: &WorkerConfig,
    shutdown: &CancellationToken,
) -> Result<Option<usize>, WorkerError> {
    let mut client = kafka::consumer_config(config, &config.kafka.group_id);
    // Set last: nothing in the user's pass-through properties may turn the
    // check into a topic factory.
    client.set("allow.auto.create.topics", "false");
    let consumer: BaseConsumer = client.create()?;
    let topics = topics_of(config);
    let deadline = Instant::now() + BROKER_WAIT;
    let mut described: Vec<(&str, TopicRole, usize)> = Vec::with_capacity(topics.len());
    let mut refused = Vec::new();
    for &(topic, role) in &topics {
        match partitions_of(&consumer, topic, deadline, shutdown)? {
            None => return Ok(None),
            Some(Ok(count)) => described.push((topic, role, count)),
            Some(Err(error)) => refused.push(TopicProblem::Refused {
                topic: topic.to_string(),
                role,
                error,
            }),
        }
    }
    let policies = cleanup_policies(config, &described);
    let mut problems = problems(&described, &policies);
    problems.extend(refused);
    if problems.is_empty() {
        Ok(Some(described[0].2))
    } else {
        Err(WorkerError::Topics(TopicProblems(problems)))
    }
}

/// The partition count of `topic` (0: it does not exist), or the error the
/// brokers answered for it (e.g. not authorized), retrying while the brokers
/// cannot be reached, until `deadline`. `None`: shutdown.
fn partitions_of(
    consumer: &BaseConsumer,
    topic: &str,
    deadline: Instant,
    shutdown: &CancellationToken,
) -> Result<Option<Result<usize, String>>, WorkerError> {
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
            Err(e) => return Err(e.into()),
        }
    }
}

fn count_in(md: &Metadata, topic: &str) -> Result<usize, String> {
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(0);
    };
    match t.error() {
        None => Ok(t.partitions().len()),
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => Ok(0),
        Some(code) => Err(RDKafkaErrorCode::from(code).to_string()),
    }
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
    let mut client = kafka::consumer_config(config, &config.kafka.group_id);
    client.set("allow.auto.create.topics", "false");
    let admin: AdminClient<DefaultClientContext> = client.create()?;
    let resources: Vec<ResourceSpecifier<'_>> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    // A broker answers DescribeConfigs in milliseconds; one without the API
    // (the development broker) never answers, and every start would wait
    // out a long deadline for nothing.
    let options = AdminOptions::new().request_timeout(Some(DESCRIBE_CONFIGS_WAIT));
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
                DESCRIBE_CONFIGS_WAIT + Duration::from_millis(500),
                admin.describe_configs(&resources, &options),
            )
            .await
        })
        .map_err(|_| KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut))??;
    let mut found = Vec::new();
    for (topic, result) in topics.iter().zip(results) {
        match result {
            // rust-rdkafka drops a resource's own error (e.g. no
            // DESCRIBE_CONFIGS on the topic: TOPIC_AUTHORIZATION_FAILED) and
            // answers it with no entries; a broker that may describe the
            // topic always lists its cleanup.policy (seen on Apache Kafka
            // 4.1: tests/real_broker/security.rs).
            Ok(resource) => match resource.get("cleanup.policy").and_then(|e| e.value.clone()) {
                Some(value) => found.push(((*topic).to_string(), value)),
                None => tracing::warn!(
                    topic,
                    "could not read the topic's cleanup.policy (not in the DescribeConfigs \
                     answer: the worker's principal may lack DESCRIBE_CONFIGS on it); not checked"
                ),
            },
            Err(code) => tracing::warn!(
                topic,
                error = %code,
                "could not read the topic's cleanup.policy; not checked"
            ),
        }
    }
    Ok(found)
}
