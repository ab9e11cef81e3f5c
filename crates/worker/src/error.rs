//! [`WorkerError`]: why the worker stops. Near the bottom of the module
//! order (it names library errors and the topic problems), so every layer
//! can return it.

use std::path::PathBuf;

use churn_core::model::ModelError;
use rdkafka::error::KafkaError;

use crate::topics::TopicProblems;

/// Errors that stop the worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A Kafka client error.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A required topic does not exist.
    #[error(
        "topic `{topic}` does not exist. Create it, e.g.: kafka-topics.sh --create --topic {topic} \
         --partitions {partitions}{extra}"
    )]
    MissingTopic {
        /// Topic name.
        topic: String,
        /// Suggested partitions.
        partitions: i32,
        /// Extra flags for the suggestion.
        extra: &'static str,
    },
    /// Topics are missing or misconfigured (every problem, with its fix).
    #[error("{0}")]
    Topics(TopicProblems),
    /// The changelog records input positions past the end of the input
    /// partition: the input topic was recreated or truncated.
    #[error(
        "input topic `{topic}` partition {partition} ends at offset {log_end} but the state topic \
         records events applied up to offset {applied}: the input topic was recreated (or \
         truncated), and its new events would be skipped as already applied. Nothing was \
         skipped. To keep every customer's state and read the new topic from its start, set \
         state.on_input_reset = \"reset_positions\" \
         (CHURN_SCORER__STATE__ON_INPUT_RESET=reset_positions) and restart; to start from \
         nothing, delete and recreate the state topic `{state}` too"
    )]
    InputTopicReset {
        /// Input topic.
        topic: String,
        /// Input partition.
        partition: i32,
        /// The input partition's log end offset (high watermark).
        log_end: i64,
        /// The highest input offset the changelog records as applied.
        applied: i64,
        /// State topic.
        state: String,
    },
    /// A changelog restore made no progress.
    #[error("restore of partition {partition} made no progress for 60 s")]
    RestoreStalled {
        /// Input partition.
        partition: i32,
    },
    /// The shadow model file is unreadable or not a valid model.
    #[error("shadow model file {} (configuration key `model.shadow_path`): {source}", path.display())]
    ShadowModel {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: ModelError,
    },
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(#[from] std::io::Error),
    /// The pipeline thread panicked or vanished.
    #[error("pipeline thread stopped unexpectedly")]
    PipelineStopped,
    /// An output could not be produced for a reason waiting cannot fix.
    #[error(
        "cannot produce to topic `{topic}`: {cause} (check that the topic exists and that the \
         worker's credentials may write to it)"
    )]
    OutputFatal {
        /// The topic.
        topic: String,
        /// The producer's error.
        cause: String,
    },
    /// The brokers refused an operation the worker needs: its principal
    /// lacks an ACL. Waiting cannot fix it.
    #[error(
        "not authorized: the worker's principal lacks {operation} on {resource} ({cause}). \
         Grant it, e.g.: kafka-acls.sh --bootstrap-server <brokers> --add --allow-principal \
         User:<the worker's principal> --operation {operation} {}; docs/deployment.md \
         (\"Minimal ACLs\") lists every ACL the worker needs",
        .resource.acl_flag()
    )]
    NotAuthorized {
        /// What the principal may not use.
        resource: AclResource,
        /// The ACL operation it lacks (`READ`, `WRITE`, ...).
        operation: &'static str,
        /// The client's error.
        cause: String,
    },
    /// Exactly-once: a transactional producer was fenced or failed for good.
    #[error(
        "exactly-once: transactional producer `{transactional_id}` {cause}; stopping. Its open \
         transaction is aborted, so nothing of it becomes visible to read_committed readers. \
         If it was fenced, another producer with the same transactional.id started: check \
         that no two running instances share processing.instance_id (default: the host name)"
    )]
    TransactionFatal {
        /// The producer's `transactional.id`.
        transactional_id: String,
        /// What happened.
        cause: String,
    },
    /// Shutdown ended before everything was drained and committed.
    #[error(
        "shutdown incomplete (drained: {drained}, offsets committed: {committed}, outputs not \
         acknowledged: {unsettled}); the events concerned are re-read after restart"
    )]
    ShutdownIncomplete {
        /// Every batch acknowledged.
        drained: bool,
        /// The final offsets commit was confirmed.
        committed: bool,
        /// Outputs still not acknowledged at exit.
        unsettled: usize,
    },
}

/// A Kafka resource an ACL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclResource {
    /// A topic.
    Topic(String),
    /// A consumer group.
    Group(String),
    /// The cluster (e.g. `IDEMPOTENT_WRITE` on brokers older than 3.0).
    Cluster,
}

impl AclResource {
    /// How `kafka-acls.sh` names it.
    pub fn acl_flag(&self) -> String {
        match self {
            AclResource::Topic(t) => format!("--topic {t}"),
            AclResource::Group(g) => format!("--group {g}"),
            AclResource::Cluster => "--cluster".into(),
        }
    }
}

impl std::fmt::Display for AclResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AclResource::Topic(t) => write!(f, "topic `{t}`"),
            AclResource::Group(g) => write!(f, "group `{g}`"),
            AclResource::Cluster => f.write_str("the cluster"),
        }
    }
}

impl WorkerError {
    /// The error a consumer's error stops the worker with, if waiting
    /// cannot fix it: the group's coordinator refusing the group (no READ
    /// on it), or a fetch refused on the input topic (no READ on it).
    /// librdkafka reports both and then retries forever, so a worker that
    /// only logged them would wait silently.
    pub fn from_consumer_error(error: &KafkaError, group: &str, input: &str) -> Option<Self> {
        use rdkafka::error::RDKafkaErrorCode as C;
        let (resource, operation) = match error.rdkafka_error_code()? {
            C::GroupAuthorizationFailed => (AclResource::Group(group.to_string()), "READ"),
            C::TopicAuthorizationFailed => (AclResource::Topic(input.to_string()), "READ"),
            _ => return None,
        };
        Some(WorkerError::NotAuthorized {
            resource,
            operation,
            cause: error.to_string(),
        })
    }

    /// A reader's error on `topic` (the changelog restore): a refused read
    /// as [`WorkerError::NotAuthorized`] (READ), anything else as is.
    pub fn from_reader_error(error: KafkaError, topic: &str) -> Self {
        match error.rdkafka_error_code() {
            Some(rdkafka::error::RDKafkaErrorCode::TopicAuthorizationFailed) => {
                WorkerError::NotAuthorized {
                    resource: AclResource::Topic(topic.to_string()),
                    operation: "READ",
                    cause: error.to_string(),
                }
            }
            _ => WorkerError::Kafka(error),
        }
    }

    /// The error a fatal output fault stops the worker with: a missing ACL
    /// named as such, anything else as [`WorkerError::OutputFatal`].
    pub fn from_output_fault(
        topic: String,
        code: Option<rdkafka::error::RDKafkaErrorCode>,
        cause: String,
    ) -> Self {
        use rdkafka::error::RDKafkaErrorCode as C;
        match code {
            Some(C::TopicAuthorizationFailed) => WorkerError::NotAuthorized {
                resource: AclResource::Topic(topic),
                operation: "WRITE",
                cause,
            },
            // The idempotent producer's InitProducerId on a broker older
            // than 3.0 (KIP-679): IDEMPOTENT_WRITE on the cluster.
            Some(C::ClusterAuthorizationFailed) => WorkerError::NotAuthorized {
                resource: AclResource::Cluster,
                operation: "IDEMPOTENT_WRITE",
                cause,
            },
            _ => WorkerError::OutputFatal { topic, cause },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::RDKafkaErrorCode as C;

    #[test]
    fn a_group_refused_by_its_coordinator_names_the_group_and_read() {
        let e = KafkaError::MessageConsumption(C::GroupAuthorizationFailed);
        let text = WorkerError::from_consumer_error(&e, "scorers", "events")
            .expect("fatal")
            .to_string();
        assert!(text.contains("lacks READ on group `scorers`"), "{text}");
        assert!(text.contains("--operation READ --group scorers"), "{text}");
    }

    #[test]
    fn a_refused_fetch_names_the_input_topic_and_other_errors_are_not_fatal() {
        let e = KafkaError::MessageConsumption(C::TopicAuthorizationFailed);
        let text = WorkerError::from_consumer_error(&e, "scorers", "events")
            .expect("fatal")
            .to_string();
        assert!(text.contains("lacks READ on topic `events`"), "{text}");
        for c in [
            C::BrokerTransportFailure,
            C::AllBrokersDown,
            C::UnknownTopicOrPartition,
        ] {
            let e = KafkaError::MessageConsumption(c);
            assert!(
                WorkerError::from_consumer_error(&e, "g", "t").is_none(),
                "{c:?}"
            );
        }
    }

    #[test]
    fn a_refused_write_names_the_topic_and_write() {
        let e = WorkerError::from_output_fault(
            "alerts".into(),
            Some(C::TopicAuthorizationFailed),
            "Broker: Topic authorization failed".into(),
        );
        let text = e.to_string();
        assert!(text.contains("lacks WRITE on topic `alerts`"), "{text}");
        assert!(text.contains("--operation WRITE --topic alerts"), "{text}");
        let other =
            WorkerError::from_output_fault("alerts".into(), Some(C::UnknownTopic), "gone".into());
        assert!(matches!(other, WorkerError::OutputFatal { .. }), "{other}");
    }
}
