//! [`WorkerError`]: why the worker stops. At the bottom of the module order
//! (it names only library errors), so every layer can return it.

use std::path::PathBuf;

use churn_core::model::ModelError;
use rdkafka::error::KafkaError;

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
    /// The state topic's partition count differs from the input topic's.
    #[error(
        "state topic `{state}` has {state_partitions} partitions but input topic `{input}` has \
         {input_partitions}; they must match (state records go to their input partition's number)"
    )]
    PartitionMismatch {
        /// State topic.
        state: String,
        /// Its partitions.
        state_partitions: usize,
        /// Input topic.
        input: String,
        /// Its partitions.
        input_partitions: usize,
    },
    /// The deletion topic's partition count differs from the input topic's.
    #[error(
        "deletion topic `{deletion}` has {deletion_partitions} partitions but input topic \
         `{input}` has {input_partitions}; they must match (deletion partition p holds the \
         requests for input partition p's customers)"
    )]
    DeletionPartitionMismatch {
        /// Deletion topic.
        deletion: String,
        /// Its partitions.
        deletion_partitions: usize,
        /// Input topic.
        input: String,
        /// Its partitions.
        input_partitions: usize,
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
