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
