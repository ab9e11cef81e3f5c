//! The versioned binary encoding of [`CustomerState`] written to the state
//! changelog topic.
//!
//! Record value, format version 2 or 3 (all integers and floats little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | format version (`2` or `3`) |
//! | 8 × 5 | first event, last event (ms), last input offset, last alert (ms), next inactivity step (ms; `i64::MAX`: all steps fired, `i64::MIN`: none scheduled) |
//! | 8 × 3 | recent activity, long-run activity, spend (f64, decayed to the last event) |
//! | 4 | previous risk score (f32) |
//! | 4 | events applied (u32) |
//! | 1 | flags (bit 0: at-risk alert open; bit 1: opened by an inactivity step) |
//! | 1 | number of event-type counters *n* |
//! | n × (1 + len + 8) | name length, event type name, decayed count (f64) |
//! | version 3 only: 8 + 1 + len | event time (ms) of the latest event that carried the segment property, name length, segment name (empty: the model's default segment) |
//!
//! A state with a segment is written as version 3; one without (every state
//! of a model without `[segments]`) as version 2, byte for byte as before,
//! so a release that predates segments still reads it. Segments, like event
//! types, are stored by name: a segment the restoring model does not
//! declare becomes its default segment, and a model without segments drops
//! it.
//!
//! Event types are stored by name, not by their index in the model, so a
//! state written under one model restores under a model that names more,
//! fewer or reordered types (counters of types the new model does not name
//! are dropped). The record key is the customer id; an empty value is a
//! tombstone.
//!
//! Version 1 had the same layout, but wrote "all steps fired" and "none
//! scheduled" alike as `i64::MIN`; it is still read, and such a timer resumes
//! at the partition's restored watermark (see `CustomerStore::rebuild_timers`).
//!
//! One more record per partition carries the partition's event-time clock,
//! under a key no customer id can have ([`WATERMARK_KEY`], it starts with a
//! control character): format version, watermark (ms), newest event time (ms;
//! `i64::MIN` if none).
//!
//! With a deletion topic configured, one more record per partition carries
//! how far that topic's partition of the same number has been applied
//! ([`DELETION_POSITION_KEY`]): format version, next offset to read. It is
//! written in the same flush as the tombstones it covers, after them.

use crate::engine::CustomerState;
use crate::model::RiskModel;

/// The newest format version this release writes (see the module
/// documentation: version 3 only for states with a segment).
pub const STATE_FORMAT_VERSION: u8 = 3;

/// The format version of states without a segment, and of the clock and
/// deletion-position records (unchanged since version 2).
const FORMAT_VERSION_2: u8 = 2;

/// Oldest format version this release reads.
const OLDEST_READABLE_VERSION: u8 = 1;

/// Key of the per-partition clock record. Customer ids cannot contain control
/// characters, so it never collides with one.
pub const WATERMARK_KEY: &[u8] = b"\x00churn-scorer/partition-clock";

/// Key of the per-partition deletion-topic position record (see the module
/// documentation); like [`WATERMARK_KEY`], no customer id can have it.
pub const DELETION_POSITION_KEY: &[u8] = b"\x00churn-scorer/deletion-position";

/// Encodes a deletion-topic position (the next offset to read), appending to `out`.
pub fn encode_position(next_offset: i64, out: &mut Vec<u8>) {
    out.push(FORMAT_VERSION_2);
    out.extend_from_slice(&next_offset.to_le_bytes());
}

/// Decodes a deletion-topic position record.
pub fn decode_position(bytes: &[u8]) -> Result<i64, StateDecodeError> {
    decode_fixed_v2(bytes, |r| r.i64())
}

/// Reads a fixed-layout version-2 record (the clock and position records):
/// the version byte, the fields `read` takes, and nothing after them.
fn decode_fixed_v2<T>(
    bytes: &[u8],
    read: impl FnOnce(&mut Reader<'_>) -> Result<T, StateDecodeError>,
) -> Result<T, StateDecodeError> {
    let mut r = Reader { bytes };
    let version = r
        .u8()
        .map_err(|_| StateDecodeError::Malformed("empty record"))?;
    if version != FORMAT_VERSION_2 {
        return Err(StateDecodeError::UnknownVersion(version));
    }
    let value = read(&mut r)?;
    if !r.bytes.is_empty() {
        return Err(StateDecodeError::Malformed("trailing bytes"));
    }
    Ok(value)
}

/// A partition's event-time clock, as persisted on the changelog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionClock {
    /// Timers up to here have fired; events before it are late.
    pub watermark_ms: i64,
    /// Newest event time seen, if any.
    pub max_event_ms: Option<i64>,
}

/// Encodes a partition's clock, appending to `out`.
pub fn encode_clock(clock: &PartitionClock, out: &mut Vec<u8>) {
    out.push(FORMAT_VERSION_2);
    out.extend_from_slice(&clock.watermark_ms.to_le_bytes());
    out.extend_from_slice(&clock.max_event_ms.unwrap_or(i64::MIN).to_le_bytes());
}

/// Decodes a partition's clock record.
pub fn decode_clock(bytes: &[u8]) -> Result<PartitionClock, StateDecodeError> {
    decode_fixed_v2(bytes, |r| {
        let watermark_ms = r.i64()?;
        let max_event = r.i64()?;
        Ok(PartitionClock {
            watermark_ms,
            max_event_ms: (max_event != i64::MIN).then_some(max_event),
        })
    })
}

const FIXED_LEN: usize = 1 + 8 * 5 + 8 * 3 + 4 + 4 + 1 + 1;

/// Why a state record could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateDecodeError {
    /// Written by a newer release (or not a state record at all).
    #[error(
        "unknown state format version {0} (this release reads versions 1 to {STATE_FORMAT_VERSION}); \
         upgrade churn-scorer or reset the state topic"
    )]
    UnknownVersion(u8),
    /// The record ends early or has trailing bytes.
    #[error("state record is truncated or malformed: {0}")]
    Malformed(&'static str),
}

/// Encodes a state, appending to `out`.
pub fn encode_state(model: &RiskModel, state: &CustomerState, out: &mut Vec<u8>) {
    out.reserve(FIXED_LEN + 16 * state.type_counts.len());
    let with_segment = state.segment_ms != i64::MIN;
    out.push(if with_segment {
        STATE_FORMAT_VERSION
    } else {
        FORMAT_VERSION_2
    });
    for v in [
        state.first_event_ms,
        state.last_event_ms,
        state.last_offset,
        state.last_alert_ms,
        state.timer_due_ms,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [state.activity_short, state.activity_long, state.spend] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&state.last_risk.to_le_bytes());
    out.extend_from_slice(&state.events.to_le_bytes());
    out.push(u8::from(state.alert_open) | (u8::from(state.alert_by_inactivity) << 1));
    out.push(state.type_mask.count_ones() as u8);
    let mut mask = state.type_mask;
    let mut slot = 0;
    while mask != 0 {
        let k = mask.trailing_zeros() as usize;
        let name = model.kinds()[k].name.as_bytes();
        // Model validation keeps names ≤ 128 bytes.
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&state.type_counts[slot].to_le_bytes());
        mask &= mask - 1;
        slot += 1;
    }
    if with_segment {
        out.extend_from_slice(&state.segment_ms.to_le_bytes());
        // Model validation keeps segment names ≤ 64 bytes.
        let name = match state.segment {
            0 => "",
            k => model.segment_name(k).unwrap_or(""),
        };
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateDecodeError> {
        if self.bytes.len() < n {
            return Err(StateDecodeError::Malformed("record ends early"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], StateDecodeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn i64(&mut self) -> Result<i64, StateDecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn f64(&mut self) -> Result<f64, StateDecodeError> {
        Ok(f64::from_le_bytes(self.array()?))
    }
    fn u8(&mut self) -> Result<u8, StateDecodeError> {
        Ok(self.take(1)?[0])
    }
}

/// Decodes a state record for `model`. Counters of event types the model
/// does not name are dropped.
pub fn decode_state(model: &RiskModel, bytes: &[u8]) -> Result<CustomerState, StateDecodeError> {
    let mut r = Reader { bytes };
    let version = r
        .u8()
        .map_err(|_| StateDecodeError::Malformed("empty record"))?;
    if !(OLDEST_READABLE_VERSION..=STATE_FORMAT_VERSION).contains(&version) {
        return Err(StateDecodeError::UnknownVersion(version));
    }
    let mut state = CustomerState {
        first_event_ms: r.i64()?,
        last_event_ms: r.i64()?,
        last_offset: r.i64()?,
        last_alert_ms: r.i64()?,
        timer_due_ms: r.i64()?,
        activity_short: r.f64()?,
        activity_long: r.f64()?,
        spend: r.f64()?,
        last_risk: f32::from_le_bytes(r.array()?),
        events: u32::from_le_bytes(r.array()?),
        alert_open: false,
        alert_by_inactivity: false,
        type_mask: 0,
        type_counts: Box::new([]),
        segment: 0,
        segment_ms: i64::MIN,
    };
    let flags = r.u8()?;
    state.alert_open = flags & 1 == 1;
    state.alert_by_inactivity = flags & 2 == 2;
    let n = r.u8()?;
    let mut counts: Vec<(u8, f64)> = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let len = usize::from(r.u8()?);
        let name = std::str::from_utf8(r.take(len)?)
            .map_err(|_| StateDecodeError::Malformed("event type name is not UTF-8"))?;
        let count = r.f64()?;
        if let Some(k) = model.kind_of(name) {
            counts.push((k, count));
        }
    }
    if version >= 3 {
        let segment_ms = r.i64()?;
        let len = usize::from(r.u8()?);
        let name = std::str::from_utf8(r.take(len)?)
            .map_err(|_| StateDecodeError::Malformed("segment name is not UTF-8"))?;
        if model.has_segments() && segment_ms != i64::MIN {
            state.segment_ms = segment_ms;
            state.segment = model.declared_segment(name).unwrap_or(0);
        }
    }
    if !r.bytes.is_empty() {
        return Err(StateDecodeError::Malformed("trailing bytes"));
    }
    counts.sort_by_key(|(k, _)| *k);
    counts.dedup_by_key(|(k, _)| *k);
    for (k, _) in &counts {
        state.type_mask |= 1 << k;
    }
    state.type_counts = counts.into_iter().map(|(_, c)| c).collect();
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(model: &RiskModel) -> CustomerState {
        let mut s = CustomerState::default();
        for (i, kind) in ["purchase", "complaint", "login", "mystery"]
            .iter()
            .enumerate()
        {
            s.apply(
                model,
                model.kind_of(kind),
                1_700_000_000_000 + i as i64 * 86_400_000,
                Some(12.5 * i as f64),
            );
        }
        s.last_offset = 42;
        s.decide(model.alert_policy(), 99.0, 1_700_000_000_000, true);
        s
    }

    #[test]
    fn round_trips_bit_exact() {
        let m = RiskModel::default_model();
        let s = sample(&m);
        let mut bytes = Vec::new();
        encode_state(&m, &s, &mut bytes);
        let back = decode_state(&m, &bytes).expect("decodes");
        assert_eq!(back, s);
        assert_eq!(back.activity_long.to_bits(), s.activity_long.to_bits());
        let mut again = Vec::new();
        encode_state(&m, &back, &mut again);
        assert_eq!(again, bytes);
    }

    #[test]
    fn unknown_versions_and_truncation_are_clear_errors() {
        let m = RiskModel::default_model();
        let mut bytes = Vec::new();
        encode_state(&m, &sample(&m), &mut bytes);
        let mut future = bytes.clone();
        future[0] = 9;
        let err = decode_state(&m, &future).expect_err("version 9");
        assert_eq!(err, StateDecodeError::UnknownVersion(9));
        assert!(err.to_string().contains("version 9"));
        assert!(matches!(
            decode_state(&m, &bytes[..bytes.len() - 3]),
            Err(StateDecodeError::Malformed(_))
        ));
        bytes.push(0);
        assert!(matches!(
            decode_state(&m, &bytes),
            Err(StateDecodeError::Malformed(_))
        ));
    }

    #[test]
    fn types_are_matched_by_name_across_models() {
        let m = RiskModel::default_model();
        let s = sample(&m);
        let mut bytes = Vec::new();
        encode_state(&m, &s, &mut bytes);
        let mut spec = m.spec().clone();
        spec.events.remove("login");
        let smaller = RiskModel::from_spec(spec).expect("valid");
        let back = decode_state(&smaller, &bytes).expect("decodes");
        assert_eq!(back.type_mask.count_ones(), s.type_mask.count_ones() - 1);
        let complaint = smaller.kind_of("complaint").expect("named");
        let e = back.explain(&smaller, s.last_event_ms);
        let orig = s.explain(&m, s.last_event_ms);
        let pts = |e: &crate::engine::Explanation, f: &str| {
            e.reasons.iter().find(|r| r.factor == f).map(|r| r.points)
        };
        assert_eq!(pts(&e, "event:complaint"), pts(&orig, "event:complaint"));
        assert!(back.type_mask & (1 << complaint) != 0);
    }

    #[test]
    fn states_without_a_segment_are_written_as_version_2() {
        let m = RiskModel::default_model();
        let mut bytes = Vec::new();
        encode_state(&m, &sample(&m), &mut bytes);
        assert_eq!(bytes[0], 2, "readable by releases before segments");
        let seg = crate::model::tests::segmented();
        let mut again = Vec::new();
        encode_state(&seg, &sample(&seg), &mut again);
        assert_eq!(again, bytes, "no segment seen: the same bytes");
        let mut clock = Vec::new();
        encode_clock(
            &PartitionClock {
                watermark_ms: 1,
                max_event_ms: None,
            },
            &mut clock,
        );
        assert_eq!(clock[0], 2, "clock records keep their version");
    }

    #[test]
    fn segments_round_trip_by_name_across_models() {
        let m = crate::model::tests::segmented();
        let mut s = sample(&m);
        s.set_segment(m.segment_index("free"), 1_700_000_000_000);
        let mut bytes = Vec::new();
        encode_state(&m, &s, &mut bytes);
        assert_eq!(bytes[0], 3);
        assert_eq!(decode_state(&m, &bytes).expect("decodes"), s);
        // A model that declares another value first: found by name.
        let mut spec = m.spec().clone();
        let segments = spec.segments.as_mut().expect("segments");
        segments.values.insert("aaa".into(), Default::default());
        let moved = RiskModel::from_spec(spec.clone()).expect("valid");
        let back = decode_state(&moved, &bytes).expect("decodes");
        assert_eq!(moved.segment_name(back.segment()), Some("free"));
        assert_eq!(back.segment_ms, s.segment_ms);
        // One that no longer declares it: the default segment.
        spec.segments
            .as_mut()
            .expect("segments")
            .values
            .remove("free");
        let dropped = RiskModel::from_spec(spec).expect("valid");
        let back = decode_state(&dropped, &bytes).expect("decodes");
        assert_eq!(back.segment(), 0);
        // One without segments: forgotten, and written as version 2 again.
        let plain = RiskModel::default_model();
        let back = decode_state(&plain, &bytes).expect("decodes");
        assert_eq!(back.segment_ms, i64::MIN);
        let mut out = Vec::new();
        encode_state(&plain, &back, &mut out);
        assert_eq!(out[0], 2);
        // The default segment is stored as an empty name.
        s.set_segment(0, 1_800_000_000_000);
        let mut bytes = Vec::new();
        encode_state(&m, &s, &mut bytes);
        assert_eq!(&bytes[bytes.len() - 1..], [0]);
        assert_eq!(decode_state(&m, &bytes).expect("decodes"), s);
    }

    #[test]
    fn version_1_records_still_restore() {
        let m = RiskModel::default_model();
        let mut s = sample(&m);
        s.alert_by_inactivity = false;
        s.timer_due_ms = i64::MIN;
        let mut bytes = Vec::new();
        encode_state(&m, &s, &mut bytes);
        bytes[0] = 1;
        assert_eq!(decode_state(&m, &bytes).expect("version 1 reads"), s);
    }

    #[test]
    fn the_inactivity_flag_and_the_partition_clock_round_trip() {
        let m = RiskModel::default_model();
        let mut s = sample(&m);
        s.alert_by_inactivity = true;
        s.timer_due_ms = i64::MAX;
        let mut bytes = Vec::new();
        encode_state(&m, &s, &mut bytes);
        assert_eq!(decode_state(&m, &bytes).expect("decodes"), s);
        for clock in [
            PartitionClock {
                watermark_ms: 1_700_000_000_000,
                max_event_ms: Some(1_700_003_600_000),
            },
            PartitionClock {
                watermark_ms: i64::MIN,
                max_event_ms: None,
            },
        ] {
            let mut bytes = Vec::new();
            encode_clock(&clock, &mut bytes);
            assert_eq!(decode_clock(&bytes), Ok(clock));
        }
        assert!(std::str::from_utf8(WATERMARK_KEY).is_ok_and(|k| k.starts_with('\0')));
        assert!(std::str::from_utf8(DELETION_POSITION_KEY).is_ok_and(|k| k.starts_with('\0')));
        let mut out = Vec::new();
        encode_position(42, &mut out);
        assert_eq!(decode_position(&out), Ok(42));
        assert!(decode_position(&out[..5]).is_err());
    }
}
