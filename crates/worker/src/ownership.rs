//! Who owns which input partition: the claims instances publish on the
//! membership topic ([`crate::membership`] reads and writes them) and the
//! ownership they resolve to. Plain data, low in the module order, so the
//! partition directory and lookup forwarding can hold it without depending
//! on the Kafka side of membership.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One instance's claim, the value of its membership record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberClaim {
    /// How the other instances reach it (`http.advertised_url`); also the key.
    pub url: String,
    /// Its consumer group: claims of other groups sharing the topic are ignored.
    pub group_id: String,
    /// The input partitions it holds.
    pub partitions: Vec<i32>,
    /// Lamport-style claim time (milliseconds): later claims win a partition.
    pub claimed_at_ms: i64,
}

/// Input partition → the URL of the instance owning it, from the latest
/// claims read from the membership topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionOwners {
    owners: BTreeMap<i32, String>,
    /// Instances owning at least one partition, sorted.
    members: Vec<String>,
    partition_count: usize,
}

impl PartitionOwners {
    /// Resolves `claims` (the latest per instance) for an input topic of
    /// `partition_count` partitions: each partition goes to the newest claim
    /// naming it (ties broken by URL, so every instance decides alike).
    pub fn resolve<'a>(
        claims: impl IntoIterator<Item = &'a MemberClaim>,
        partition_count: usize,
    ) -> Self {
        let mut best: BTreeMap<i32, (i64, &str)> = BTreeMap::new();
        for claim in claims {
            for &p in &claim.partitions {
                if p < 0 || usize::try_from(p).map_or(true, |p| p >= partition_count) {
                    continue;
                }
                let candidate = (claim.claimed_at_ms, claim.url.as_str());
                let entry = best.entry(p).or_insert(candidate);
                if candidate > *entry {
                    *entry = candidate;
                }
            }
        }
        let owners: BTreeMap<i32, String> = best
            .into_iter()
            .map(|(p, (_, url))| (p, url.to_string()))
            .collect();
        let mut members: Vec<String> = owners.values().cloned().collect();
        members.sort();
        members.dedup();
        PartitionOwners {
            owners,
            members,
            partition_count,
        }
    }

    /// The URL of the instance owning input partition `p`, if known.
    pub fn owner(&self, p: i32) -> Option<&str> {
        self.owners.get(&p).map(String::as_str)
    }

    /// The instances owning at least one partition.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// Partitions of the input topic.
    pub fn partition_count(&self) -> usize {
        self.partition_count
    }

    /// Input partitions no instance is known to own (moving in a
    /// rebalance, or an instance gone before its successor claimed them).
    pub fn unowned(&self) -> Vec<i32> {
        (0..i32::try_from(self.partition_count).unwrap_or(i32::MAX))
            .filter(|p| !self.owners.contains_key(p))
            .collect()
    }

    /// Partition → owner URL.
    pub fn to_map(&self) -> BTreeMap<i32, String> {
        self.owners.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(url: &str, partitions: &[i32], at: i64) -> MemberClaim {
        MemberClaim {
            url: url.into(),
            group_id: "g".into(),
            partitions: partitions.to_vec(),
            claimed_at_ms: at,
        }
    }

    #[test]
    fn the_newest_claim_owns_a_partition() {
        // `a` crashed holding 0..4; `b` took 2 and 3 over, later.
        let claims = [
            claim("http://a", &[0, 1, 2, 3], 10),
            claim("http://b", &[2, 3], 20),
        ];
        let owners = PartitionOwners::resolve(&claims, 4);
        assert_eq!(owners.owner(0), Some("http://a"));
        assert_eq!(owners.owner(2), Some("http://b"));
        assert_eq!(owners.members(), ["http://a", "http://b"]);
        assert!(owners.unowned().is_empty());
        // Once `b` claims everything, `a` owns nothing and is no longer asked.
        let claims = [
            claim("http://a", &[0, 1, 2, 3], 10),
            claim("http://b", &[0, 1, 2, 3], 30),
        ];
        let owners = PartitionOwners::resolve(&claims, 4);
        assert_eq!(owners.members(), ["http://b"]);
    }

    #[test]
    fn unclaimed_and_out_of_range_partitions() {
        let claims = [claim("http://a", &[0, 7, -1], 1), claim("http://b", &[], 2)];
        let owners = PartitionOwners::resolve(&claims, 3);
        assert_eq!(owners.unowned(), vec![1, 2]);
        assert_eq!(owners.owner(7), None);
        assert_eq!(
            owners.members(),
            ["http://a"],
            "an idle instance owns nothing"
        );
        // Same claim time: every instance breaks the tie alike.
        let claims = [claim("http://b", &[0], 5), claim("http://a", &[0], 5)];
        assert_eq!(
            PartitionOwners::resolve(&claims, 1).owner(0),
            Some("http://b")
        );
    }
}
