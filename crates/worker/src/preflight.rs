//! The topic checks run before joining the group.

use std::time::{Duration, Instant};

use rdkafka::producer::BaseProducer;
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;
use crate::error::WorkerError;
use crate::kafka;

/// Checks the topics before joining: the input exists, and the state topic
/// exists with the same partition count. Returns the input topic's
/// partition count, or `None` if `shutdown` was requested while waiting for
/// the brokers.
pub(crate) fn preflight(
    config: &WorkerConfig,
    producer: &BaseProducer<kafka::DeliveryContext>,
    shutdown: &CancellationToken,
) -> Result<Option<usize>, WorkerError> {
    use rdkafka::producer::Producer;
    // None: shutdown was requested while waiting.
    let partitions_of = |topic: &str| -> Result<Option<usize>, WorkerError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if shutdown.is_cancelled() {
                return Ok(None);
            }
            match producer
                .client()
                .fetch_metadata(Some(topic), Duration::from_secs(5))
            {
                Ok(md) => {
                    let t = md.topics().iter().find(|t| t.name() == topic);
                    match t {
                        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                            return Ok(Some(t.partitions().len()));
                        }
                        _ => return Ok(Some(0)),
                    }
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, "waiting for the brokers");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let Some(input) = partitions_of(&config.topics.input)? else {
        return Ok(None);
    };
    if input == 0 {
        return Err(WorkerError::MissingTopic {
            topic: config.topics.input.clone(),
            partitions: 12,
            extra: "",
        });
    }
    let Some(state) = partitions_of(&config.topics.state)? else {
        return Ok(None);
    };
    if state == 0 {
        return Err(WorkerError::MissingTopic {
            topic: config.topics.state.clone(),
            partitions: input as i32,
            extra: " --config cleanup.policy=compact",
        });
    }
    if state != input {
        return Err(WorkerError::PartitionMismatch {
            state: config.topics.state.clone(),
            state_partitions: state,
            input: config.topics.input.clone(),
            input_partitions: input,
        });
    }
    if let Some(deletion) = &config.topics.deletion {
        let Some(count) = partitions_of(deletion)? else {
            return Ok(None);
        };
        if count == 0 {
            return Err(WorkerError::MissingTopic {
                topic: deletion.clone(),
                partitions: input as i32,
                extra: "",
            });
        }
        if count != input {
            return Err(WorkerError::DeletionPartitionMismatch {
                deletion: deletion.clone(),
                deletion_partitions: count,
                input: config.topics.input.clone(),
                input_partitions: input,
            });
        }
    }
    if let Some(shadow) = &config.topics.shadow_alerts {
        let Some(count) = partitions_of(shadow)? else {
            return Ok(None);
        };
        if count == 0 {
            return Err(WorkerError::MissingTopic {
                topic: shadow.clone(),
                partitions: input as i32,
                extra: "",
            });
        }
    }
    Ok(Some(input))
}
