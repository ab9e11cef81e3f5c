//! Which input partition a producer put a customer's events on, computed
//! from the message key (the customer id) as the producers' client does.
//!
//! Used by `/v1` lookups to ask the instance owning the customer's
//! partition first. It is only a shortcut: when a customer is not found
//! there, every other member is asked too, so a wrong partitioner costs
//! requests, never a wrong answer.

use serde::Deserialize;

/// The producers' key partitioner (`lookup.partitioner`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KeyPartitioner {
    /// librdkafka's default (`consistent_random`, also `consistent`): CRC-32
    /// of the key modulo the partition count. Clients built on librdkafka
    /// (confluent-kafka-python, -go, -dotnet, node-rdkafka, rust-rdkafka).
    #[default]
    ConsistentRandom,
    /// The Java client's default (also librdkafka's `murmur2_random`):
    /// murmur2 of the key, made positive, modulo the partition count.
    Murmur2,
    /// Unknown: every member is asked at once.
    None,
}

impl KeyPartitioner {
    /// The partition of `key` among `partitions`, or `None` when the
    /// partitioner is unknown, the key is empty (both clients then pick a
    /// partition at random) or there are no partitions.
    pub fn partition(self, key: &[u8], partitions: usize) -> Option<i32> {
        let n = u32::try_from(partitions).ok().filter(|n| *n > 0)?;
        if key.is_empty() {
            return None;
        }
        let hash = match self {
            KeyPartitioner::ConsistentRandom => crc32(key),
            KeyPartitioner::Murmur2 => murmur2(key) & 0x7fff_ffff,
            KeyPartitioner::None => return None,
        };
        i32::try_from(hash % n).ok()
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib and librdkafka's `rd_crc32`).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            // Branch-free: the mask is all ones when the low bit is set.
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`, seed
/// 0x9747b28c), as the Java client's default partitioner uses it.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let seed: u32 = 0x9747_b28c;
    // Kafka takes the length as a Java int; keys are far below 2^31 bytes.
    let mut h = seed ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if let Some(&first) = rest.first() {
        h ^= u32::from(first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn murmur2_matches_kafkas_test_vectors() {
        // org.apache.kafka.common.utils.UtilsTest#testMurmur2
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key) as i32, expected, "{key:?}");
        }
    }

    #[test]
    fn partitions_are_in_range_and_unknown_when_they_cannot_be_known() {
        for p in [KeyPartitioner::ConsistentRandom, KeyPartitioner::Murmur2] {
            for key in ["c00001", "x", "a-much-longer-customer-identifier"] {
                let got = p.partition(key.as_bytes(), 12).expect("known");
                assert!((0..12).contains(&got));
            }
            assert_eq!(p.partition(b"", 12), None, "empty key: random");
            assert_eq!(p.partition(b"c1", 0), None);
        }
        assert_eq!(KeyPartitioner::None.partition(b"c1", 12), None);
        assert_eq!(
            KeyPartitioner::ConsistentRandom.partition(b"123456789", 1000),
            Some((0xCBF4_3926u32 % 1000) as i32)
        );
    }
}
