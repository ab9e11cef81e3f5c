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
    ///
    /// Computed by the partitioner functions librdkafka exports, the code
    /// its producers run (its murmur2 is the Java client's).
    pub fn partition(self, key: &[u8], partitions: usize) -> Option<i32> {
        let n = i32::try_from(partitions).ok().filter(|n| *n > 0)?;
        if key.is_empty() {
            return None;
        }
        let partitioner = match self {
            KeyPartitioner::ConsistentRandom => rdkafka_sys::rd_kafka_msg_partitioner_consistent,
            KeyPartitioner::Murmur2 => rdkafka_sys::rd_kafka_msg_partitioner_murmur2,
            KeyPartitioner::None => return None,
        };
        // SAFETY: `key` is valid for `key.len()` bytes for the call. These two
        // partitioners only hash the key (rdkafka_msg.c); the topic handle
        // and opaques they are given are never read, so null is sound.
        let p = unsafe {
            partitioner(
                std::ptr::null(),
                key.as_ptr().cast(),
                key.len(),
                n,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With `i32::MAX` partitions the partition is the positive hash itself
    /// (modulo 2^31 - 1), so known hash values can be checked through it.
    fn hash_through_partition(p: KeyPartitioner, key: &[u8]) -> u32 {
        p.partition(key, i32::MAX as usize).expect("known") as u32
    }

    #[test]
    fn crc32_matches_the_check_value() {
        assert_eq!(
            hash_through_partition(KeyPartitioner::ConsistentRandom, b"123456789"),
            // CRC-32's check value; librdkafka takes it modulo the count unsigned.
            0xCBF4_3926u32 % 0x7fff_ffff
        );
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
            assert_eq!(
                hash_through_partition(KeyPartitioner::Murmur2, key),
                (expected as u32 & 0x7fff_ffff) % 0x7fff_ffff,
                "{key:?}"
            );
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
