//! Who owns which input partition: the claims instances publish on the
//! membership topic ([`crate::membership`] reads and writes them), the
//! ownership they resolve to, and which URLs a claim may name at all
//! ([`PeerUrlPattern`]). Plain data, low in the module order, so the
//! partition directory and lookup forwarding can hold it without depending
//! on the Kafka side of membership.
//!
//! Anyone who can write the membership topic can publish a claim, so
//! nothing in a claim's payload is trusted for ordering or lifetime: a
//! claim is ordered by its record's position on the (single-partition)
//! topic, lives while its record's Kafka timestamp is recent, and names
//! only a URL the configuration allows. docs/operations.md has the threat
//! model.

use std::collections::BTreeMap;
use std::net::IpAddr;

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
    /// The publisher's clock when it sent the claim (milliseconds). For
    /// operators only: ownership is decided by the record's position and
    /// Kafka timestamp ([`Claim`]), never by this field.
    pub claimed_at_ms: i64,
}

/// A claim as read from the membership topic: what it names, and what the
/// topic says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The claiming instance's URL.
    pub url: String,
    /// The input partitions it holds.
    pub partitions: Vec<i32>,
    /// The record's offset on the single-partition membership topic: a
    /// later record wins a partition.
    pub position: i64,
    /// The record's Kafka timestamp (milliseconds): the claim expires once
    /// it is older than the claim lifetime.
    pub timestamp_ms: i64,
}

/// Why a claim read from the membership topic is not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimRejected {
    /// Its URL is not `http://host:port` with nothing after the authority.
    #[error("its url {0:?} is not http://host:port")]
    MalformedUrl(String),
    /// Its URL matches none of `lookup.peer_urls`.
    #[error("its url {0:?} matches none of lookup.peer_urls")]
    UrlNotAllowed(String),
    /// Its record's timestamp is further ahead of this instance's clock than
    /// clocks drift: it would outlive every honest claim.
    #[error("its record's timestamp is {0} ms ahead of this instance's clock")]
    FromTheFuture(i64),
}

/// One entry of `lookup.peer_urls`: `http://HOST:PORT` where HOST is a host
/// name, `*.suffix` (any name ending in `.suffix`), an IP address or an IP
/// network (`10.0.0.0/8`, `[fd00::]/8`), and PORT a number or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUrlPattern {
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    Suffix(String),
    Network(IpAddr, u8),
}

impl PeerUrlPattern {
    /// Parses one pattern; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| format!("{text:?}: must start with http://"))?;
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?}: must end with :PORT or :*"))?;
        let port = match port {
            "*" => None,
            p => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("{text:?}: {p:?} is not a port"))?,
            ),
        };
        if host.is_empty() {
            return Err(format!("{text:?}: no host"));
        }
        let host = if let Some((net, bits)) = host.split_once('/') {
            let ip: IpAddr = net
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| format!("{text:?}: {net:?} is not an IP network"))?;
            let bits: u8 = bits
                .parse()
                .map_err(|_| format!("{text:?}: {bits:?} is not a prefix length"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            if bits > max {
                return Err(format!("{text:?}: prefix /{bits} is longer than {max}"));
            }
            HostPattern::Network(ip, bits)
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains(['*', '/', '?', '#', '@']) {
                return Err(format!("{text:?}: bad host suffix"));
            }
            HostPattern::Suffix(format!(".{}", suffix.to_ascii_lowercase()))
        } else if host.contains(['*', '/', '?', '#', '@']) {
            return Err(format!(
                "{text:?}: a host is a name, *.suffix, an IP or an IP network"
            ));
        } else {
            HostPattern::Exact(
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_ascii_lowercase(),
            )
        };
        Ok(PeerUrlPattern { host, port })
    }

    /// Whether `url` (`http://host:port`, nothing after) matches.
    pub fn matches(&self, url: &str) -> bool {
        let Some((host, port)) = split_peer_url(url) else {
            return false;
        };
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        match &self.host {
            HostPattern::Exact(h) => *h == host,
            HostPattern::Suffix(s) => host.ends_with(s.as_str()) && host.len() > s.len(),
            HostPattern::Network(net, bits) => host
                .parse::<IpAddr>()
                .is_ok_and(|ip| in_network(ip, *net, *bits)),
        }
    }
}

/// `http://host:port` with nothing after the authority → (lower-case host
/// without brackets, port); `None` for anything else.
pub fn split_peer_url(url: &str) -> Option<(String, u16)> {
    let authority = url.strip_prefix("http://")?;
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ', '\\']) {
        return None;
    }
    let (host, port) = authority.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Checks a claim read from the membership topic: its URL against the
/// allowed patterns, its record's timestamp against `now_ms` (at most
/// `max_ahead_ms` ahead).
pub fn check_claim(
    url: &str,
    timestamp_ms: i64,
    allowed: &[PeerUrlPattern],
    now_ms: i64,
    max_ahead_ms: i64,
) -> Result<(), ClaimRejected> {
    if split_peer_url(url).is_none() {
        return Err(ClaimRejected::MalformedUrl(url.to_string()));
    }
    if !allowed.iter().any(|p| p.matches(url)) {
        return Err(ClaimRejected::UrlNotAllowed(url.to_string()));
    }
    let ahead = timestamp_ms.saturating_sub(now_ms);
    if ahead > max_ahead_ms {
        return Err(ClaimRejected::FromTheFuture(ahead));
    }
    Ok(())
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
    /// `partition_count` partitions: claims whose record is older than
    /// `expire_before_ms` are ignored, and each partition goes to the
    /// latest record naming it (so every instance decides alike).
    pub fn resolve<'a>(
        claims: impl IntoIterator<Item = &'a Claim>,
        partition_count: usize,
        expire_before_ms: i64,
    ) -> Self {
        let mut best: BTreeMap<i32, (i64, &str)> = BTreeMap::new();
        for claim in claims {
            if claim.timestamp_ms < expire_before_ms {
                continue;
            }
            for &p in &claim.partitions {
                if p < 0 || usize::try_from(p).map_or(true, |p| p >= partition_count) {
                    continue;
                }
                let candidate = (claim.position, claim.url.as_str());
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

    fn claim(url: &str, partitions: &[i32], position: i64) -> Claim {
        Claim {
            url: url.into(),
            partitions: partitions.to_vec(),
            position,
            timestamp_ms: 1_000,
        }
    }

    #[test]
    fn the_newest_claim_owns_a_partition() {
        // `a` crashed holding 0..4; `b` took 2 and 3 over, later.
        let claims = [
            claim("http://a", &[0, 1, 2, 3], 10),
            claim("http://b", &[2, 3], 20),
        ];
        let owners = PartitionOwners::resolve(&claims, 4, i64::MIN);
        assert_eq!(owners.owner(0), Some("http://a"));
        assert_eq!(owners.owner(2), Some("http://b"));
        assert_eq!(owners.members(), ["http://a", "http://b"]);
        assert!(owners.unowned().is_empty());
        // Once `b` claims everything, `a` owns nothing and is no longer asked.
        let claims = [
            claim("http://a", &[0, 1, 2, 3], 10),
            claim("http://b", &[0, 1, 2, 3], 30),
        ];
        let owners = PartitionOwners::resolve(&claims, 4, i64::MIN);
        assert_eq!(owners.members(), ["http://b"]);
    }

    #[test]
    fn unclaimed_and_out_of_range_partitions() {
        let claims = [claim("http://a", &[0, 7, -1], 1), claim("http://b", &[], 2)];
        let owners = PartitionOwners::resolve(&claims, 3, i64::MIN);
        assert_eq!(owners.unowned(), vec![1, 2]);
        assert_eq!(owners.owner(7), None);
        assert_eq!(
            owners.members(),
            ["http://a"],
            "an idle instance owns nothing"
        );
        // Same position (never on one partition): still decided alike.
        let claims = [claim("http://b", &[0], 5), claim("http://a", &[0], 5)];
        assert_eq!(
            PartitionOwners::resolve(&claims, 1, i64::MIN).owner(0),
            Some("http://b")
        );
    }

    #[test]
    fn an_expired_claim_owns_nothing() {
        let mut old = claim("http://a", &[0, 1], 1);
        old.timestamp_ms = 100;
        let fresh = claim("http://b", &[1], 2);
        let owners = PartitionOwners::resolve([&old, &fresh], 2, 500);
        assert_eq!(owners.owner(0), None);
        assert_eq!(owners.owner(1), Some("http://b"));
        assert_eq!(owners.members(), ["http://b"]);
    }

    #[test]
    fn peer_url_patterns_match_hosts_suffixes_networks_and_ports() {
        let p = |t: &str| PeerUrlPattern::parse(t).expect(t);
        assert!(p("http://10.0.0.0/8:9464").matches("http://10.1.2.3:9464"));
        assert!(!p("http://10.0.0.0/8:9464").matches("http://11.1.2.3:9464"));
        assert!(!p("http://10.0.0.0/8:9464").matches("http://10.1.2.3:80"));
        assert!(p("http://127.0.0.1:*").matches("http://127.0.0.1:41234"));
        assert!(p("http://*.churn.svc:9464").matches("http://pod-1.churn.svc:9464"));
        assert!(!p("http://*.churn.svc:9464").matches("http://churn.svc:9464"));
        assert!(!p("http://*.churn.svc:9464").matches("http://evil-churn.svc:9464"));
        assert!(p("http://[fd00::]/8:9464").matches("http://[fd12::1]:9464"));
        assert!(p("http://Worker-A:9464").matches("http://worker-a:9464"));
        // Nothing after the authority, no user info, no other scheme.
        let any = p("http://0.0.0.0/0:*");
        for bad in [
            "http://10.0.0.1:9464/steal",
            "http://10.0.0.1:9464?x",
            "http://user@10.0.0.1:9464",
            "https://10.0.0.1:9464",
            "http://10.0.0.1",
        ] {
            assert!(!any.matches(bad), "{bad}");
        }
        for bad in [
            "10.0.0.1:9464",
            "http://10.0.0.1",
            "http://10.0.0.0/33:1",
            "http://a*b:1",
            "http://x:port",
        ] {
            assert!(PeerUrlPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_forged_claim_is_rejected_for_its_url_or_its_future_timestamp() {
        let allowed = [PeerUrlPattern::parse("http://10.0.0.0/8:9464").expect("pattern")];
        let now = 1_000_000;
        assert_eq!(
            check_claim("http://10.0.0.7:9464", now, &allowed, now, 60_000),
            Ok(())
        );
        assert_eq!(
            check_claim("http://attacker:9464", now, &allowed, now, 60_000),
            Err(ClaimRejected::UrlNotAllowed("http://attacker:9464".into()))
        );
        assert!(matches!(
            check_claim("http://10.0.0.7:9464/x", now, &allowed, now, 60_000),
            Err(ClaimRejected::MalformedUrl(_))
        ));
        assert_eq!(
            check_claim("http://10.0.0.7:9464", i64::MAX, &allowed, now, 60_000),
            Err(ClaimRejected::FromTheFuture(i64::MAX - now))
        );
    }
}
