//! What each topic the worker reads or writes must look like, and what is
//! wrong with one that does not: pure, so it is tested without a broker.
//! [`crate::preflight`] asks the brokers.

use std::fmt;

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

    /// What the worker does with the topic, as ACL operations.
    pub fn operations(self) -> &'static str {
        match self {
            TopicRole::Input | TopicRole::Deletion => "READ",
            TopicRole::State | TopicRole::Membership => "READ and WRITE",
            TopicRole::Alerts | TopicRole::DeadLetter | TopicRole::ShadowAlerts => "WRITE",
        }
    }

    /// Whether the topic must have `cleanup.policy=compact`.
    pub fn compacted(self) -> bool {
        matches!(self, TopicRole::State | TopicRole::Membership)
    }

    /// Whether the topic must have the input topic's partition count.
    pub fn co_partitioned(self) -> bool {
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
    /// The membership topic has more than one partition: claims are
    /// ordered by their position on it, which only one partition gives.
    NotSinglePartition {
        /// Topic name.
        topic: String,
        /// Its partitions.
        partitions: usize,
    },
    /// The brokers refused to describe the topic (e.g. not authorized).
    Refused {
        /// Topic name.
        topic: String,
        /// Its role.
        role: TopicRole,
        /// The brokers' error.
        error: String,
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
            TopicProblem::NotSinglePartition { topic, partitions } => write!(
                f,
                "topic `{topic}` (topics.membership) has {partitions} partitions but must have \
                 exactly 1 (claims are ordered by their position on it); recreate it with \
                 --partitions 1 --config cleanup.policy=compact"
            ),
            TopicProblem::Refused { topic, role, error } => write!(
                f,
                "topic `{topic}` ({}) cannot be described: {error}; the worker's principal needs \
                 DESCRIBE and {} on it (docs/deployment.md lists the ACLs)",
                role.config_key(),
                role.operations()
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
        if role == TopicRole::Membership && partitions > 1 {
            problems.push(TopicProblem::NotSinglePartition {
                topic: topic.to_string(),
                partitions,
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
        let several = problems(&[("m", TopicRole::Membership, 3)], &[]);
        assert_eq!(
            several,
            vec![TopicProblem::NotSinglePartition {
                topic: "m".into(),
                partitions: 3
            }]
        );
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
