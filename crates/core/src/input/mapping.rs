//! Mappings: reading any JSON object as a customer event through JSON
//! pointers (RFC 6901), with the timestamp's encoding, the amount's scale, a
//! `rename` table and `include`/`exclude` lists.
//!
//! Decoding makes one pass over the top-level object, keeping only the raw
//! text of the members the mapping's pointers start with (at most
//! [`MAX_TOP_LEVEL_NAMES`], in a fixed array: nothing is allocated for the
//! members it skips); a pointer into a nested object walks that member's raw
//! text again. Strings without escapes are borrowed from the input, and a
//! renamed event type is borrowed from the mapping.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{DecodeError, MessageContext, PRESETS};
use crate::event::{
    CustomerEvent, EventError, MAX_CUSTOMER_ID_BYTES, MAX_EVENT_TYPE_BYTES, check_timestamp_range,
    classify_json_error, json_string, parse_amount, parse_timestamp_ms, shape_error, validate_text,
};

/// Most distinct top-level members one mapping reads (pointers sharing a
/// first segment count once). Enough for every preset and any sane mapping;
/// it keeps the decoder's working set in a fixed array on the stack.
pub const MAX_TOP_LEVEL_NAMES: usize = 16;

/// Why a mapping (or an input format setting) was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MappingError {
    /// The mapping file could not be read.
    #[error("cannot read mapping file {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        error: String,
    },
    /// The mapping is not valid TOML or has the wrong shape.
    #[error("mapping {origin}: {message}")]
    Syntax {
        /// Where the mapping came from (a file path or a preset).
        origin: String,
        /// The TOML error, with its line and column.
        message: String,
    },
    /// The mapping is well-formed but cannot be used.
    #[error("{0}")]
    Invalid(String),
}

/// How a timestamp is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimestampEncoding {
    /// RFC 3339 with an offset (`2025-03-01T10:15:00.250Z`), as in the native format.
    #[default]
    Rfc3339,
    /// ISO 8601 without an offset (`2025-03-01 10:15:00`), in `timezone`;
    /// a value that has an offset is read with it.
    Iso8601Local,
    /// Seconds since the Unix epoch (a number or a numeric string; fractions allowed).
    EpochS,
    /// Milliseconds since the Unix epoch.
    EpochMs,
    /// Microseconds since the Unix epoch.
    EpochUs,
}

/// One source or a list of sources tried in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Sources {
    /// One.
    One(String),
    /// Tried in order; the first present and not `null` is used.
    Many(Vec<String>),
}

impl Sources {
    fn list(&self) -> Vec<&str> {
        match self {
            Sources::One(s) => vec![s.as_str()],
            Sources::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// A mapping as written in TOML (a preset, or a user's file laid over one).
/// Every field is optional so that a file can change a preset's fields only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingSpec {
    /// Where the customer id is: JSON pointers or `@key` (the message key),
    /// tried in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<Sources>,
    /// Where the event type is: JSON pointers, tried in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<Sources>,
    /// Where the timestamp is: a JSON pointer, `@timestamp` (the message
    /// timestamp) or `@header:NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// How the timestamp is written (default `rfc3339`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_encoding: Option<TimestampEncoding>,
    /// For `iso8601_local`: a fixed UTC offset (`+01:00`, `-05:30`, `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Where the amount is (a JSON pointer; `""`: no amount).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    /// Multiplies the amount read (0.01 for cents); default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_scale: Option<f64>,
    /// Where the properties object is (the model's segment property is read
    /// from it): JSON pointers, the first present object is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Sources>,
    /// Source event type -> the model's (`"Order Completed" = "purchase"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename: Option<BTreeMap<String, String>>,
    /// If set, only these source event types are read; others are left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    /// Source event types left out (neither applied nor dead-lettered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<String>>,
}

impl MappingSpec {
    /// Parses a mapping from TOML; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, MappingError> {
        toml::from_str(text).map_err(|e| MappingError::Syntax {
            origin: origin.to_string(),
            message: e.to_string(),
        })
    }

    /// A shipped preset by name.
    pub fn preset(name: &str) -> Option<Self> {
        let (_, text) = PRESETS.iter().find(|(n, _)| *n == name)?;
        Self::from_toml(text, name).ok()
    }

    /// This mapping with `user`'s fields in place of its own where `user`
    /// sets them; `rename` tables are merged (the user's entries win).
    pub fn overlaid_with(self, user: MappingSpec) -> MappingSpec {
        let rename = match (self.rename, user.rename) {
            (Some(mut base), Some(more)) => {
                base.extend(more);
                Some(base)
            }
            (base, more) => more.or(base),
        };
        MappingSpec {
            customer_id: user.customer_id.or(self.customer_id),
            event_type: user.event_type.or(self.event_type),
            timestamp: user.timestamp.or(self.timestamp),
            timestamp_encoding: user.timestamp_encoding.or(self.timestamp_encoding),
            timezone: user.timezone.or(self.timezone),
            amount: user.amount.or(self.amount),
            amount_scale: user.amount_scale.or(self.amount_scale),
            properties: user.properties.or(self.properties),
            rename,
            include: user.include.or(self.include),
            exclude: user.exclude.or(self.exclude),
        }
    }

    /// The mapping as TOML (for `inspect` and the docs).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// A JSON pointer, compiled: which kept top-level member it starts at, and
/// the segments below it.
#[derive(Debug)]
struct Pointer {
    slot: usize,
    rest: Box<[Box<str>]>,
    text: Arc<str>,
}

#[derive(Debug)]
enum IdSource {
    Key,
    Field(Pointer),
}

#[derive(Debug)]
enum TimeSource {
    Field(Pointer),
    MessageTimestamp,
    Header(Box<str>),
}

/// A compiled mapping: what [`super::InputFormat::Mapped`] decodes with.
#[derive(Debug)]
pub struct Mapping {
    name: String,
    spec: MappingSpec,
    /// Top-level member names the pointers start with.
    top: Vec<Box<str>>,
    customer_id: Vec<IdSource>,
    customer_id_sources: Arc<str>,
    event_type: Vec<Pointer>,
    event_type_sources: Arc<str>,
    timestamp: TimeSource,
    timestamp_source: Arc<str>,
    encoding: TimestampEncoding,
    /// `iso8601_local`'s fixed offset, milliseconds east of UTC.
    offset_ms: i64,
    amount: Option<Pointer>,
    amount_scale: f64,
    properties: Vec<Pointer>,
    rename: HashMap<Box<str>, Box<str>>,
    include: Option<HashSet<Box<str>>>,
    exclude: HashSet<Box<str>>,
}

impl Mapping {
    /// Checks and compiles `spec`; `name` is the preset's or `mapped`.
    pub fn compile(name: &str, spec: MappingSpec) -> Result<Self, MappingError> {
        let invalid = |m: String| MappingError::Invalid(format!("mapping `{name}`: {m}"));
        let mut top: Vec<Box<str>> = Vec::new();
        let mut pointer = |text: &str, key: &str| -> Result<Pointer, MappingError> {
            let segments = parse_pointer(text).map_err(|m| invalid(format!("{key}: {m}")))?;
            let (first, rest) = segments
                .split_first()
                .ok_or_else(|| invalid(format!("{key}: the whole document is not a field")))?;
            let slot = match top.iter().position(|t| t == first) {
                Some(i) => i,
                None => {
                    if top.len() == MAX_TOP_LEVEL_NAMES {
                        return Err(invalid(format!(
                            "reads more than {MAX_TOP_LEVEL_NAMES} top-level members"
                        )));
                    }
                    top.push(first.clone());
                    top.len() - 1
                }
            };
            Ok(Pointer {
                slot,
                rest: rest.to_vec().into_boxed_slice(),
                text: Arc::from(text),
            })
        };
        let required = |s: &Option<Sources>, key: &str| -> Result<Vec<String>, MappingError> {
            let list: Vec<String> = s
                .as_ref()
                .map(|s| s.list().into_iter().map(str::to_string).collect())
                .unwrap_or_default();
            if list.is_empty() {
                return Err(invalid(format!("`{key}` is required")));
            }
            Ok(list)
        };

        let mut customer_id = Vec::new();
        let id_list = required(&spec.customer_id, "customer_id")?;
        for s in &id_list {
            customer_id.push(if s == "@key" {
                IdSource::Key
            } else {
                IdSource::Field(pointer(s, "customer_id")?)
            });
        }
        let mut event_type = Vec::new();
        let type_list = required(&spec.event_type, "event_type")?;
        for s in &type_list {
            event_type.push(pointer(s, "event_type")?);
        }
        let ts = spec
            .timestamp
            .as_deref()
            .ok_or_else(|| invalid("`timestamp` is required".into()))?;
        let timestamp = if ts == "@timestamp" {
            TimeSource::MessageTimestamp
        } else if let Some(name) = ts.strip_prefix("@header:") {
            if name.is_empty() {
                return Err(invalid("timestamp: `@header:` needs a header name".into()));
            }
            TimeSource::Header(name.into())
        } else {
            TimeSource::Field(pointer(ts, "timestamp")?)
        };
        let encoding = spec.timestamp_encoding.unwrap_or_default();
        let offset_ms = match (encoding, spec.timezone.as_deref()) {
            (TimestampEncoding::Iso8601Local, None) => {
                return Err(invalid(
                    "timestamp_encoding `iso8601_local` needs `timezone`: a fixed UTC offset \
                     such as \"+01:00\" or \"UTC\" (time-zone names are not supported)"
                        .into(),
                ));
            }
            (_, Some(tz)) => parse_offset(tz).ok_or_else(|| {
                invalid(format!(
                    "timezone {tz:?}: expected a fixed UTC offset such as \"+01:00\", \
                     \"-05:30\" or \"UTC\" (time-zone names such as Europe/Paris are not \
                     supported: their offsets change with daylight saving)"
                ))
            })?,
            (_, None) => 0,
        };
        let amount = match spec.amount.as_deref() {
            None | Some("") => None,
            Some(a) => Some(pointer(a, "amount")?),
        };
        let amount_scale = spec.amount_scale.unwrap_or(1.0);
        if !(amount_scale.is_finite() && amount_scale > 0.0) {
            return Err(invalid(format!(
                "amount_scale must be a finite number > 0, got {amount_scale}"
            )));
        }
        let mut properties = Vec::new();
        if let Some(p) = &spec.properties {
            for s in p.list() {
                properties.push(pointer(s, "properties")?);
            }
        }
        let rename: HashMap<Box<str>, Box<str>> = spec
            .rename
            .iter()
            .flatten()
            .map(|(from, to)| {
                validate_text(to, MAX_EVENT_TYPE_BYTES)
                    .map(|()| (Box::from(from.as_str()), Box::from(to.as_str())))
                    .map_err(|m| invalid(format!("rename {from:?} = {to:?}: the new type {m}")))
            })
            .collect::<Result<_, _>>()?;
        let include = spec
            .include
            .as_ref()
            .map(|l| l.iter().map(|s| Box::from(s.as_str())).collect());
        let exclude = spec
            .exclude
            .iter()
            .flatten()
            .map(|s| Box::from(s.as_str()))
            .collect();
        Ok(Mapping {
            name: name.to_string(),
            customer_id,
            customer_id_sources: Arc::from(id_list.join(" or ")),
            event_type,
            event_type_sources: Arc::from(type_list.join(" or ")),
            timestamp,
            timestamp_source: Arc::from(ts),
            encoding,
            offset_ms,
            amount,
            amount_scale,
            properties,
            rename,
            include,
            exclude,
            top,
            spec,
        })
    }

    /// The preset's name, or `mapped`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The mapping as written (a preset with the user's fields laid over it).
    pub fn spec(&self) -> &MappingSpec {
        &self.spec
    }

    /// Whether a source event type is read (`include`/`exclude`).
    pub fn admits(&self, source_type: &str) -> bool {
        self.include
            .as_ref()
            .is_none_or(|inc| inc.contains(source_type))
            && !self.exclude.contains(source_type)
    }

    /// The model's name for a source event type (after `rename`).
    pub fn renamed<'s>(&'s self, source_type: &'s str) -> &'s str {
        self.rename.get(source_type).map_or(source_type, |t| t)
    }

    /// The event type as the message writes it (before `rename`,
    /// `include`/`exclude`), if the message is an object that has one.
    pub fn source_event_type<'a>(&'a self, bytes: &'a [u8]) -> Option<Cow<'a, str>> {
        if shape_error(bytes).is_some() {
            return None;
        }
        let mut slots: Slots<'a> = [None; MAX_TOP_LEVEL_NAMES];
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let scan = TopScan {
            names: &self.top,
            slots: &mut slots,
        };
        serde::Deserializer::deserialize_map(&mut de, scan).ok()?;
        self.event_type
            .iter()
            .find_map(|p| resolve(&slots, p))
            .and_then(json_string)
    }

    /// Decodes one message (see [`super::InputFormat::decode`]). Checks run
    /// in the native parser's order: JSON syntax and shape, duplicate
    /// members, customer id, event type, timestamp, amount, properties.
    pub fn decode<'a>(
        &'a self,
        bytes: &'a [u8],
        cx: &MessageContext<'a>,
    ) -> Result<Option<CustomerEvent<'a>>, DecodeError> {
        shape_error(bytes).map_or(Ok(()), Err)?;
        let mut slots: Slots<'a> = [None; MAX_TOP_LEVEL_NAMES];
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let scan = TopScan {
            names: &self.top,
            slots: &mut slots,
        };
        serde::Deserializer::deserialize_map(&mut de, scan)
            .and_then(|()| de.end())
            .map_err(classify_json_error)?;
        let at = |p: &'a Pointer| -> Option<&'a RawValue> { resolve(&slots, p) };
        let fail = |error: EventError, source: &Arc<str>| DecodeError {
            error,
            source: Some(Arc::clone(source)),
        };

        // Customer id: the first source present.
        let mut customer_id = None;
        for source in &self.customer_id {
            match source {
                IdSource::Key => {
                    let Some(key) = cx.key else { continue };
                    let text = std::str::from_utf8(key).map_err(|_| {
                        fail(
                            EventError::BadCustomerId("message key is not UTF-8"),
                            &Arc::from("@key"),
                        )
                    })?;
                    customer_id = Some((Cow::Borrowed(text), None));
                    break;
                }
                IdSource::Field(p) => {
                    let Some(raw) = at(p) else { continue };
                    let text = json_string(raw).ok_or_else(|| {
                        fail(EventError::BadCustomerId("must be a string"), &p.text)
                    })?;
                    customer_id = Some((text, Some(&p.text)));
                    break;
                }
            }
        }
        let Some((customer_id, id_source)) = customer_id else {
            return Err(fail(
                EventError::MissingField("customer_id"),
                &self.customer_id_sources,
            ));
        };
        validate_text(&customer_id, MAX_CUSTOMER_ID_BYTES).map_err(|m| {
            fail(
                EventError::BadCustomerId(m),
                id_source.unwrap_or(&self.customer_id_sources),
            )
        })?;

        // Event type: the first source present, then include/exclude, rename.
        let mut event_type = None;
        for p in &self.event_type {
            let Some(raw) = at(p) else { continue };
            let text = json_string(raw)
                .ok_or_else(|| fail(EventError::BadEventType("must be a string"), &p.text))?;
            event_type = Some((text, p));
            break;
        }
        let Some((source_type, type_pointer)) = event_type else {
            return Err(fail(
                EventError::MissingField("event_type"),
                &self.event_type_sources,
            ));
        };
        if !self.admits(&source_type) {
            return Ok(None);
        }
        let event_type = match self.rename.get(source_type.as_ref()) {
            Some(to) => Cow::Borrowed(&**to),
            None => source_type,
        };
        validate_text(&event_type, MAX_EVENT_TYPE_BYTES)
            .map_err(|m| fail(EventError::BadEventType(m), &type_pointer.text))?;

        let timestamp_ms = self
            .timestamp_ms(&slots, cx)
            .map_err(|e| fail(e, &self.timestamp_source))?;

        let amount = match &self.amount {
            None => None,
            Some(p) => match at(p) {
                None => None,
                Some(raw) => {
                    Some(parse_amount(raw, self.amount_scale).map_err(|e| fail(e, &p.text))?)
                }
            },
        };

        let mut properties = None;
        for p in &self.properties {
            let Some(raw) = at(p) else { continue };
            if !raw.get().starts_with('{') {
                return Err(fail(EventError::BadProperties, &p.text));
            }
            properties = Some(Cow::Borrowed(raw.get()));
            break;
        }

        Ok(Some(CustomerEvent {
            customer_id,
            event_type,
            timestamp_ms,
            amount,
            properties,
        }))
    }

    fn timestamp_ms(&self, slots: &Slots<'_>, cx: &MessageContext<'_>) -> Result<i64, EventError> {
        match &self.timestamp {
            TimeSource::MessageTimestamp => {
                let ms = cx
                    .timestamp_ms
                    .ok_or(EventError::MissingField("timestamp"))?;
                check_timestamp_range(ms, &ms.to_string())
            }
            TimeSource::Header(name) => {
                let value = cx
                    .headers
                    .and_then(|h| h.header(name))
                    .ok_or(EventError::MissingField("timestamp"))?;
                let text = std::str::from_utf8(value)
                    .map_err(|_| EventError::BadTimestamp("header is not UTF-8".into()))?;
                self.timestamp_from_text(text.trim())
            }
            TimeSource::Field(p) => {
                let raw = resolve(slots, p).ok_or(EventError::MissingField("timestamp"))?;
                let text = raw.get();
                if text.starts_with('"') {
                    let s = json_string(raw).ok_or_else(|| {
                        EventError::BadTimestamp("not a valid JSON string".into())
                    })?;
                    self.timestamp_from_text(&s)
                } else if self.encoding.is_epoch() {
                    self.timestamp_from_text(text)
                } else {
                    Err(EventError::BadTimestamp(format!(
                        "must be a string for timestamp_encoding {}, got {}; for a number of \
                         seconds, milliseconds or microseconds set timestamp_encoding epoch_s, \
                         epoch_ms or epoch_us",
                        self.encoding.name(),
                        truncate(text, 32)
                    )))
                }
            }
        }
    }

    fn timestamp_from_text(&self, text: &str) -> Result<i64, EventError> {
        match self.encoding {
            TimestampEncoding::Rfc3339 => parse_timestamp_ms(text),
            TimestampEncoding::Iso8601Local => {
                if let Ok(ms) = parse_timestamp_ms(text) {
                    return Ok(ms);
                }
                let naive = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                    .or_else(|_| {
                        chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                    })
                    .map_err(|e| {
                        EventError::BadTimestamp(format!(
                            "{e}: {:?} (expected 2025-03-01T10:15:00 or 2025-03-01 10:15:00, \
                             local time in the mapping's timezone)",
                            truncate(text, 64)
                        ))
                    })?;
                let ms = naive
                    .and_utc()
                    .timestamp_millis()
                    .saturating_sub(self.offset_ms);
                check_timestamp_range(ms, text)
            }
            TimestampEncoding::EpochS => epoch_ms(text, 1000, 1),
            TimestampEncoding::EpochMs => epoch_ms(text, 1, 1),
            TimestampEncoding::EpochUs => epoch_ms(text, 1, 1000),
        }
    }
}

impl TimestampEncoding {
    fn is_epoch(self) -> bool {
        matches!(
            self,
            TimestampEncoding::EpochS | TimestampEncoding::EpochMs | TimestampEncoding::EpochUs
        )
    }

    /// The name used in mappings.
    pub fn name(self) -> &'static str {
        match self {
            TimestampEncoding::Rfc3339 => "rfc3339",
            TimestampEncoding::Iso8601Local => "iso8601_local",
            TimestampEncoding::EpochS => "epoch_s",
            TimestampEncoding::EpochMs => "epoch_ms",
            TimestampEncoding::EpochUs => "epoch_us",
        }
    }
}

/// Epoch text (`1740824100250`, `1740824100.25`) to milliseconds:
/// value × `mul` / `div`, finer digits dropped (rounded down).
fn epoch_ms(text: &str, mul: i64, div: i64) -> Result<i64, EventError> {
    let bad = || EventError::BadTimestamp(format!("not an epoch number: {:?}", truncate(text, 64)));
    let first = text.as_bytes().first().copied().ok_or_else(bad)?;
    if !(first == b'-' || first.is_ascii_digit()) {
        return Err(bad());
    }
    let ms = if let Ok(n) = text.parse::<i64>() {
        n.checked_mul(mul).ok_or_else(bad)?.div_euclid(div)
    } else {
        let v: f64 = text.parse().map_err(|_| bad())?;
        let ms = (v * mul as f64 / div as f64).floor();
        if !ms.is_finite() || ms.abs() > 1e17 {
            return Err(bad());
        }
        ms as i64
    };
    check_timestamp_range(ms, text)
}

/// `UTC`, `Z`, `+01:00`, `-0530`, `+01` as milliseconds east of UTC.
fn parse_offset(text: &str) -> Option<i64> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("utc") || t == "Z" || t == "z" {
        return Some(0);
    }
    let (sign, rest) = match t.as_bytes().first()? {
        b'+' => (1, &t[1..]),
        b'-' => (-1, &t[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !(digits.len() == 2 || digits.len() == 4) {
        return None;
    }
    let h: i64 = digits[..2].parse().ok()?;
    let m: i64 = if digits.len() == 4 {
        digits[2..].parse().ok()?
    } else {
        0
    };
    (h <= 23 && m <= 59).then_some(sign * (h * 3600 + m * 60) * 1000)
}

/// RFC 6901: `/a/b~1c` is `["a", "b/c"]`.
fn parse_pointer(text: &str) -> Result<Vec<Box<str>>, String> {
    let Some(rest) = text.strip_prefix('/') else {
        return Err(format!(
            "{text:?} is not a JSON pointer (it starts with `/`, e.g. \"/userId\")"
        ));
    };
    rest.split('/')
        .map(|seg| {
            if seg.contains('~') {
                let mut out = String::with_capacity(seg.len());
                let mut chars = seg.chars();
                while let Some(c) = chars.next() {
                    if c == '~' {
                        match chars.next() {
                            Some('0') => out.push('~'),
                            Some('1') => out.push('/'),
                            _ => {
                                return Err(format!(
                                    "{text:?}: `~` must be followed by 0 or 1 (RFC 6901)"
                                ));
                            }
                        }
                    } else {
                        out.push(c);
                    }
                }
                Ok(out.into_boxed_str())
            } else {
                Ok(Box::from(seg))
            }
        })
        .collect()
}

/// The raw value a pointer names, if present and not `null`.
fn resolve<'a>(slots: &Slots<'a>, p: &Pointer) -> Option<&'a RawValue> {
    let mut raw = slots[p.slot]?;
    for seg in &p.rest {
        raw = child(raw, seg)?;
    }
    (raw.get() != "null").then_some(raw)
}

/// A member of an object (the last, if repeated) or an element of an array.
fn child<'a>(raw: &'a RawValue, seg: &str) -> Option<&'a RawValue> {
    let text = raw.get();
    let mut de = serde_json::Deserializer::from_str(text);
    match text.as_bytes().first()? {
        b'{' => serde::Deserializer::deserialize_map(&mut de, MemberSeek { name: seg })
            .ok()
            .flatten(),
        b'[' => {
            // RFC 6901 indices: digits, no leading zero.
            if seg.is_empty() || (seg.len() > 1 && seg.starts_with('0')) {
                return None;
            }
            let index: usize = seg.parse().ok()?;
            serde::Deserializer::deserialize_seq(&mut de, ElementSeek { index })
                .ok()
                .flatten()
        }
        _ => None,
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// Top-level members kept: one slot per name of the mapping's `top`.
type Slots<'de> = [Option<&'de RawValue>; MAX_TOP_LEVEL_NAMES];

/// Keeps the raw text of the top-level members named in `names`, written
/// in place (the slots are not moved through serde's return values).
struct TopScan<'n, 's, 'de> {
    names: &'n [Box<str>],
    slots: &'s mut Slots<'de>,
}

impl<'de> Visitor<'de> for TopScan<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let slots = self.slots;
        while let Some(found) = map.next_key_seed(KeyIndex(self.names))? {
            match found {
                Some(i) => {
                    let raw: &'de RawValue = map.next_value()?;
                    if slots[i].is_some() {
                        return Err(A::Error::custom(format_args!(
                            "duplicate field `{}`",
                            self.names[i]
                        )));
                    }
                    slots[i] = Some(raw);
                }
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A map key as its index in a list of names, without allocating.
struct KeyIndex<'n>(&'n [Box<str>]);

impl<'de> DeserializeSeed<'de> for KeyIndex<'_> {
    type Value = Option<usize>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyIndex<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|n| **n == *key))
    }
}

/// A map key as "is it this name?", without allocating.
struct KeyEq<'n>(&'n str);

impl<'de> DeserializeSeed<'de> for KeyEq<'_> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyEq<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

/// Finds one member of an object (the last, if repeated, as in JavaScript).
struct MemberSeek<'n> {
    name: &'n str,
}

impl<'de> Visitor<'de> for MemberSeek<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(is_it) = map.next_key_seed(KeyEq(self.name))? {
            if is_it {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Finds one element of an array.
struct ElementSeek {
    index: usize,
}

impl<'de> Visitor<'de> for ElementSeek {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut i = 0;
        let mut found = None;
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            if i == self.index {
                found = Some(raw);
            }
            i += 1;
        }
        Ok(found)
    }
}
