//! Customer events: the input schema, parsing and validation.
//!
//! One event is one JSON object (see `docs/events.md` and
//! `docs/schemas/event.schema.json`). Parsing borrows from the input bytes
//! where it can, so the hot path allocates nothing for ordinary events.
//! Every rejection is an [`EventError`] with a short, stable
//! [`reason`](EventError::reason) label used in metrics, dead-letter headers
//! and the `score` command's report.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Longest accepted `customer_id`, in bytes.
pub const MAX_CUSTOMER_ID_BYTES: usize = 256;
/// Longest accepted `event_type`, in bytes.
pub const MAX_EVENT_TYPE_BYTES: usize = 128;

/// A validated customer event.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerEvent<'a> {
    /// The customer this event belongs to (1–256 bytes, no control characters).
    pub customer_id: Cow<'a, str>,
    /// What happened, e.g. `purchase` or `support_ticket`. Unknown types are valid.
    pub event_type: Cow<'a, str>,
    /// Event time, milliseconds since the Unix epoch (UTC).
    pub timestamp_ms: i64,
    /// Money involved, if any: finite and non-negative.
    pub amount: Option<f64>,
    /// The `properties` object as raw JSON text, if present and not null.
    /// Validated as an object but not parsed: a model with segments reads
    /// the one property it names ([`CustomerEvent::property`]), and nothing
    /// else ever looks inside.
    pub properties: Option<Cow<'a, str>>,
}

impl CustomerEvent<'_> {
    /// Converts borrowed fields into owned ones so the event outlives its input.
    pub fn into_owned(self) -> CustomerEvent<'static> {
        CustomerEvent {
            customer_id: Cow::Owned(self.customer_id.into_owned()),
            event_type: Cow::Owned(self.event_type.into_owned()),
            timestamp_ms: self.timestamp_ms,
            amount: self.amount,
            properties: self.properties.map(|p| Cow::Owned(p.into_owned())),
        }
    }

    /// The value of property `name` in `properties`, if it is a string
    /// (borrowed from the input unless it has escapes). A property that is
    /// absent, null or of any other JSON type reads as `None`; so does any
    /// `properties` that is not a well-formed object (the parser only
    /// accepts objects). A name given twice reads as its last value, as in
    /// JavaScript.
    pub fn property(&self, name: &str) -> Option<Cow<'_, str>> {
        let raw: &str = self.properties.as_deref()?;
        let mut de = serde_json::Deserializer::from_str(raw);
        serde::Deserializer::deserialize_map(&mut de, PropertySeeker { name }).ok()?
    }
}

/// Walks a `properties` object for one key, keeping the last string value
/// found under it; other values are skipped without being built.
struct PropertySeeker<'n> {
    name: &'n str,
}

impl<'de> serde::de::Visitor<'de> for PropertySeeker<'_> {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(is_it) = map.next_key_seed(KeyIs(self.name))? {
            if is_it {
                let raw: &'de RawValue = map.next_value()?;
                found = json_string(raw);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Deserializes a map key into "is it this name?", without allocating.
struct KeyIs<'n>(&'n str);

impl<'de> serde::de::DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

/// A raw JSON value as a string, if it is one (borrowed unless it has escapes).
pub(crate) fn json_string(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    if let Some(s) = unescaped(text) {
        return Some(Cow::Borrowed(s));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

/// The content of a raw JSON string token that has no escapes: then it is
/// the string itself, with no second parse. A `RawValue` has been through
/// the parser already (UTF-8, no control characters, closed quotes), so the
/// only thing left to look for is a backslash.
fn unescaped(token: &str) -> Option<&str> {
    let inner = token.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.as_bytes().contains(&b'\\')).then_some(inner)
}

/// Why an event was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    /// The bytes are not valid JSON (or not UTF-8).
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// Valid JSON, but not an object.
    #[error("event must be a JSON object")]
    NotAnObject,
    /// The same field appears twice.
    #[error("duplicate field `{0}`")]
    DuplicateField(String),
    /// A required field is absent or null.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// `customer_id` is not a string of 1–256 bytes without control characters.
    #[error("bad customer_id: {0}")]
    BadCustomerId(&'static str),
    /// `event_type` is not a string of 1–128 bytes without control characters.
    #[error("bad event_type: {0}")]
    BadEventType(&'static str),
    /// `timestamp` is not an RFC 3339 date-time with an offset.
    #[error("bad timestamp: {0}")]
    BadTimestamp(String),
    /// `amount` is not a finite, non-negative number.
    #[error("bad amount: {0}")]
    BadAmount(&'static str),
    /// `properties` is present but not an object.
    #[error("bad properties: must be a JSON object")]
    BadProperties,
    /// `timestamp` is further ahead of the worker's wall clock than
    /// `engine.max_future_skew_secs` allows: a clock that cannot be trusted.
    #[error(
        "timestamp in the future: {ahead_secs} s ahead of the worker's clock (at most {max_skew_secs} s allowed)"
    )]
    TimestampInFuture {
        /// How far ahead of the wall clock the event is stamped.
        ahead_secs: i64,
        /// The configured bound.
        max_skew_secs: i64,
    },
    /// `timestamp` is older than the model's `[event_time]` bounds allow:
    /// before `earliest`, or more than `max_past_age_days` behind the
    /// newest event time its stream has accepted (see
    /// [`crate::model::EventTimeBounds`]).
    #[error("timestamp too old: {0}")]
    TimestampTooOld(String),
}

impl EventError {
    /// Every reason label, for documentation and tests.
    pub const REASONS: &'static [&'static str] = &[
        "malformed_json",
        "not_an_object",
        "duplicate_field",
        "missing_field",
        "bad_customer_id",
        "bad_event_type",
        "bad_timestamp",
        "bad_amount",
        "bad_properties",
        "timestamp_in_future",
        "timestamp_too_old",
    ];

    /// Short, stable label for metrics and dead-letter headers.
    pub fn reason(&self) -> &'static str {
        match self {
            EventError::MalformedJson(_) => "malformed_json",
            EventError::NotAnObject => "not_an_object",
            EventError::DuplicateField(_) => "duplicate_field",
            EventError::MissingField(_) => "missing_field",
            EventError::BadCustomerId(_) => "bad_customer_id",
            EventError::BadEventType(_) => "bad_event_type",
            EventError::BadTimestamp(_) => "bad_timestamp",
            EventError::BadAmount(_) => "bad_amount",
            EventError::BadProperties => "bad_properties",
            EventError::TimestampInFuture { .. } => "timestamp_in_future",
            EventError::TimestampTooOld(_) => "timestamp_too_old",
        }
    }
}

/// The wire shape: each known field kept raw so that each can be validated
/// with its own error, whatever JSON type it holds. Unknown fields are ignored.
#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(borrow, default)]
    customer_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    amount: Option<&'a RawValue>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
}

/// Parses and validates one event from JSON bytes.
pub fn parse_event(bytes: &[u8]) -> Result<CustomerEvent<'_>, EventError> {
    if let Some(error) = shape_error(bytes) {
        return Err(error);
    }
    // UTF-8 is checked once for the whole line, so that the parser need not
    // check each string and raw value again (`from_str` trusts it; with
    // `from_slice` that was about a tenth of the replay's instructions).
    // Invalid UTF-8 goes through `from_slice` for its positioned error.
    let wire: WireEvent<'_> = match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
    .map_err(classify_json_error)?;

    let customer_id = required_string(wire.customer_id, "customer_id")
        .map_err(|e| e.unwrap_or(EventError::BadCustomerId("must be a string")))?;
    validate_text(&customer_id, MAX_CUSTOMER_ID_BYTES).map_err(EventError::BadCustomerId)?;

    let event_type = required_string(wire.event_type, "event_type")
        .map_err(|e| e.unwrap_or(EventError::BadEventType("must be a string")))?;
    validate_text(&event_type, MAX_EVENT_TYPE_BYTES).map_err(EventError::BadEventType)?;

    let timestamp = required_string(wire.timestamp, "timestamp").map_err(|e| {
        e.unwrap_or_else(|| EventError::BadTimestamp("must be an RFC 3339 string".into()))
    })?;
    let timestamp_ms = parse_timestamp_ms(&timestamp)?;

    let amount = match non_null(wire.amount) {
        None => None,
        Some(raw) => Some(parse_amount(raw, 1.0)?),
    };

    let properties = match non_null(wire.properties) {
        None => None,
        Some(raw) if raw.get().starts_with('{') => Some(Cow::Borrowed(raw.get())),
        Some(_) => return Err(EventError::BadProperties),
    };

    Ok(CustomerEvent {
        customer_id,
        event_type,
        timestamp_ms,
        amount,
        properties,
    })
}

/// The error for bytes that are not a JSON object at all, if they are not:
/// serde would read a JSON array as a struct's fields in order, so only
/// objects are events.
pub(crate) fn shape_error(bytes: &[u8]) -> Option<EventError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        return None;
    }
    Some(
        match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => EventError::NotAnObject,
            Err(e) => EventError::MalformedJson(e.to_string()),
        },
    )
}

/// Parses an RFC 3339 timestamp (offset required) into Unix milliseconds.
pub fn parse_timestamp_ms(text: &str) -> Result<i64, EventError> {
    let ms = chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            if lacks_offset(text) {
                EventError::BadTimestamp(format!(
                    "timestamp has no UTC offset: {:?}; add Z or +HH:MM \
                     (2025-03-01T10:15:00Z), or read it with an input mapping whose \
                     timestamp_encoding is iso8601_local (see docs/events.md)",
                    truncate(text, 64)
                ))
            } else {
                EventError::BadTimestamp(format!("{e}: {:?}", truncate(text, 64)))
            }
        })?;
    check_timestamp_range(ms, text)
}

/// Whether `text` is a valid date and time that only lacks its offset.
fn lacks_offset(text: &str) -> bool {
    [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dt%H:%M:%S%.f",
    ]
    .iter()
    .any(|f| chrono::NaiveDateTime::parse_from_str(text, f).is_ok())
}

/// Keeps `ms` if RFC 3339 can write it back in UTC (years 0000-9999);
/// `text` is what it was read from, for the error.
pub(crate) fn check_timestamp_range(ms: i64, text: &str) -> Result<i64, EventError> {
    if !(MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS).contains(&ms) {
        return Err(EventError::BadTimestamp(format!(
            "outside 0000-01-01T00:00:00Z..9999-12-31T23:59:59.999Z: {:?}",
            truncate(text, 64)
        )));
    }
    Ok(ms)
}

/// 0000-01-01T00:00:00Z in Unix milliseconds.
const MIN_TIMESTAMP_MS: i64 = -62_167_219_200_000;
/// 9999-12-31T23:59:59.999Z in Unix milliseconds.
const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// Formats Unix milliseconds as an RFC 3339 UTC timestamp (millisecond precision).
pub fn format_timestamp_ms(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => ms.to_string(),
    }
}

pub(crate) fn classify_json_error(err: serde_json::Error) -> EventError {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            EventError::MalformedJson(err.to_string())
        }
        Category::Data => {
            let msg = err.to_string();
            match msg
                .strip_prefix("duplicate field `")
                .and_then(|rest| rest.split('`').next())
            {
                Some(field) => EventError::DuplicateField(field.to_string()),
                None => EventError::MalformedJson(msg),
            }
        }
    }
}

fn non_null(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| r.get() != "null")
}

/// A required string field. `Err(Some(_))` is a definite error, `Err(None)`
/// means "present but not a string", for the caller to name.
fn required_string<'a>(
    raw: Option<&'a RawValue>,
    field: &'static str,
) -> Result<Cow<'a, str>, Option<EventError>> {
    let raw = non_null(raw).ok_or(Some(EventError::MissingField(field)))?;
    let text = raw.get();
    if !text.starts_with('"') {
        return Err(None);
    }
    // Strings without escapes are borrowed straight from the input.
    if let Some(s) = unescaped(text) {
        return Ok(Cow::Borrowed(s));
    }
    serde_json::from_str::<String>(text)
        .map(Cow::Owned)
        .map_err(|_| None)
}

pub(crate) fn validate_text(text: &str, max_bytes: usize) -> Result<(), &'static str> {
    if text.is_empty() {
        return Err("must not be empty");
    }
    if text.len() > max_bytes {
        return Err("too long");
    }
    if text.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(())
}

/// A JSON number, times `scale` (1 for the native format; a mapping's
/// `amount_scale`, e.g. 0.01 for cents), checked as an amount.
pub(crate) fn parse_amount(raw: &RawValue, scale: f64) -> Result<f64, EventError> {
    let text = raw.get();
    let first = text.as_bytes().first().copied().unwrap_or(b'"');
    if !(first == b'-' || first.is_ascii_digit()) {
        return Err(EventError::BadAmount("must be a number"));
    }
    let read: f64 =
        serde_json::from_str(text).map_err(|_| EventError::BadAmount("out of range"))?;
    let value = if scale == 1.0 {
        read
    } else {
        // 0.01 is not exact in binary: 4990 × 0.01 is 49.900000000000006,
        // while 4990 / 100 is the double nearest 49.9, as a native amount
        // of 49.9 would read. Divide when the scale is 1/n.
        let inverse = 1.0 / scale;
        if inverse >= 1.0 && (inverse - inverse.round()).abs() < 1e-9 {
            read / inverse.round()
        } else {
            read * scale
        }
    };
    if !value.is_finite() {
        return Err(EventError::BadAmount("out of range"));
    }
    if value < 0.0 {
        return Err(EventError::BadAmount(
            "must not be negative (refunds are their own event type)",
        ));
    }
    // Decayed spend adds amounts up: a bound far above any real payment
    // keeps every sum finite, so the score can never turn into NaN or null.
    if value > MAX_AMOUNT {
        return Err(EventError::BadAmount("larger than 1e15"));
    }
    Ok(value)
}

/// Largest accepted `amount`. Any number of such amounts, decayed and
/// summed, stays far from overflowing an `f64`.
pub const MAX_AMOUNT: f64 = 1e15;

/// Checks an event's time against the receiving worker's wall clock: an
/// event stamped more than `max_skew_ms` ahead of `now_ms` comes from a clock
/// that cannot be trusted and must not move event time forward.
pub fn check_not_in_future(event_ms: i64, now_ms: i64, max_skew_ms: i64) -> Result<(), EventError> {
    let ahead = event_ms.saturating_sub(now_ms);
    if ahead > max_skew_ms {
        return Err(EventError::TimestampInFuture {
            ahead_secs: ahead / 1000,
            max_skew_secs: max_skew_ms / 1000,
        });
    }
    Ok(())
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// Parses a date argument (`--as-of`, `--start`, `--cutoff`): RFC 3339 with
/// an offset, a date-time without one (taken as UTC), or a plain date
/// (midnight UTC). The error shows the accepted formats.
pub fn parse_date_arg(text: &str) -> Result<i64, String> {
    use chrono::{NaiveDate, NaiveDateTime};
    let t = text.trim();
    if let Ok(ms) = parse_timestamp_ms(t) {
        return Ok(ms);
    }
    let naive = NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f"))
        .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M"));
    let parsed = match naive {
        Ok(dt) => Ok(dt),
        Err(_) => NaiveDate::parse_from_str(t, "%Y-%m-%d")
            .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists")),
    };
    match parsed {
        Ok(dt) => {
            let ms = dt.and_utc().timestamp_millis();
            parse_timestamp_ms(&format_timestamp_ms(ms)).map_err(|e| format!("{e}; {DATE_FORMATS}"))
        }
        Err(e) => Err(format!(
            "cannot read {text:?} as a date ({e}); {DATE_FORMATS}"
        )),
    }
}

/// The formats [`parse_date_arg`] accepts, for error messages and `--help`.
pub const DATE_FORMATS: &str = "accepted formats: 2025-06-01 (midnight UTC), \
     2025-06-01T12:30:00 (UTC), 2025-06-01T12:30:00Z or 2025-06-01T14:30:00+02:00 (RFC 3339)";

#[cfg(test)]
mod date_arg_tests {
    use super::*;

    #[test]
    fn dates_are_midnight_utc_and_errors_list_the_formats() {
        let midnight = parse_date_arg("2025-06-01").expect("plain date");
        assert_eq!(format_timestamp_ms(midnight), "2025-06-01T00:00:00.000Z");
        assert_eq!(parse_date_arg("2025-06-01T00:00:00"), Ok(midnight));
        assert_eq!(parse_date_arg("2025-06-01T00:00:00Z"), Ok(midnight));
        assert_eq!(parse_date_arg("2025-06-01T02:00:00+02:00"), Ok(midnight));
        for bad in ["2025-13-01", "tomorrow", ""] {
            let e = parse_date_arg(bad).expect_err(bad);
            assert!(
                e.contains("accepted formats") && e.contains("2025-06-01"),
                "{e}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(line: &str) -> &'static str {
        match parse_event(line.as_bytes()) {
            Ok(_) => "ok",
            Err(e) => e.reason(),
        }
    }

    #[test]
    fn parses_a_full_event_and_borrows_plain_strings() {
        let line = br#"{"customer_id":"c-1","event_type":"purchase","timestamp":"2024-03-01T10:00:00+01:00","amount":12.5,"properties":{"sku":"x"},"extra":1}"#;
        let e = parse_event(line).expect("valid event");
        assert_eq!(e.customer_id, "c-1");
        assert!(matches!(e.customer_id, Cow::Borrowed(_)));
        assert_eq!(e.event_type, "purchase");
        assert_eq!(e.timestamp_ms, 1_709_283_600_000);
        assert_eq!(e.amount, Some(12.5));
        assert!(matches!(e.properties, Some(Cow::Borrowed(_))));
        assert_eq!(e.property("sku").as_deref(), Some("x"));
        assert!(matches!(e.property("sku"), Some(Cow::Borrowed(_))));
    }

    #[test]
    fn a_property_reads_only_as_a_string() {
        let with = |props: &str| {
            format!(
                r#"{{"customer_id":"a","event_type":"x","timestamp":"2024-01-01T00:00:00Z","properties":{props}}}"#
            )
        };
        let read = |props: &str| {
            let line = with(props);
            let e = parse_event(line.as_bytes()).expect("valid");
            e.property("plan").map(Cow::into_owned)
        };
        assert_eq!(read(r#"{"plan":"free"}"#).as_deref(), Some("free"));
        assert_eq!(
            read(r#"{"a":{"plan":"nested"},"b":[1,"x"],"plan":"pro","c":null}"#).as_deref(),
            Some("pro"),
            "nested keys are not the property"
        );
        assert_eq!(
            read(r#"{"pl\u0061n":"caf\u00e9"}"#).as_deref(),
            Some("café")
        );
        assert_eq!(read(r#"{"plan":"a","plan":"b"}"#).as_deref(), Some("b"));
        for other in [
            r#"{"plan":3}"#,
            r#"{"plan":true}"#,
            r#"{"plan":null}"#,
            r#"{"plan":{"name":"x"}}"#,
            r#"{"plan":["x"]}"#,
            r#"{}"#,
            r#"{"Plan":"x"}"#,
        ] {
            assert_eq!(read(other), None, "{other}");
        }
        let none = parse_event(
            br#"{"customer_id":"a","event_type":"x","timestamp":"2024-01-01T00:00:00Z"}"#,
        )
        .expect("valid");
        assert_eq!(none.property("plan"), None);
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let line =
            br#"{"customer_id":"c\u00e9","event_type":"login","timestamp":"2024-03-01T10:00:00Z"}"#;
        let e = parse_event(line).expect("valid event");
        assert_eq!(e.customer_id, "cé");
    }

    #[test]
    fn strings_without_escapes_are_borrowed_and_escaped_ones_decoded() {
        let line = br#"{"customer_id":"a\"b\\c","event_type":"log\u0069n","timestamp":"2024-03-01T10:00:00Z","properties":{"plan":"pro\tx","tier":"gold"}}"#;
        let e = parse_event(line).expect("valid event");
        assert_eq!(e.customer_id, "a\"b\\c");
        assert!(matches!(e.customer_id, Cow::Owned(_)));
        assert_eq!(e.event_type, "login");
        assert_eq!(e.property("plan").as_deref(), Some("pro\tx"));
        assert_eq!(e.property("tier").as_deref(), Some("gold"));
        assert!(matches!(e.property("tier"), Some(Cow::Borrowed(_))));
        let plain =
            br#"{"customer_id":"c1","event_type":"login","timestamp":"2024-03-01T10:00:00Z"}"#;
        let e = parse_event(plain).expect("valid event");
        assert!(matches!(e.customer_id, Cow::Borrowed("c1")));
        assert!(matches!(e.event_type, Cow::Borrowed("login")));
    }

    #[test]
    fn invalid_utf8_in_a_field_read_is_malformed_json_with_its_position() {
        for line in [
            &b"{\"customer_id\":\"c\xff\",\"event_type\":\"login\",\"timestamp\":\"2024-03-01T10:00:00Z\"}"[..],
            &b"{\"customer_id\":\"c\",\"event_type\":\"login\",\"timestamp\":\"2024-03-01T10:00:00Z\",\"properties\":{\"p\":\"\xe2\x82\"}}"[..],
        ] {
            let e = parse_event(line).expect_err("not UTF-8");
            assert_eq!(e.reason(), "malformed_json", "{e}");
            assert!(e.to_string().contains("line 1 column"), "{e}");
        }
        // A field the parser skips is not read, so not checked either (as
        // serde_json skips it): the event stands.
        let skipped = b"{\"customer_id\":\"c\",\"event_type\":\"login\",\"timestamp\":\"2024-03-01T10:00:00Z\",\"note\":\"\xc3\"}";
        assert_eq!(parse_event(skipped).expect("valid").customer_id, "c");
    }

    #[test]
    fn each_rejection_has_its_reason() {
        let long_id = "x".repeat(500);
        let cases = [
            ("{not json", "malformed_json"),
            ("", "malformed_json"),
            ("[1,2]", "not_an_object"),
            ("\"bare\"", "not_an_object"),
            ("42", "not_an_object"),
            (
                r#"{"customer_id":"a","customer_id":"b","event_type":"x","timestamp":"2024-01-01T00:00:00Z"}"#,
                "duplicate_field",
            ),
            (
                r#"{"event_type":"x","timestamp":"2024-01-01T00:00:00Z"}"#,
                "missing_field",
            ),
            (
                r#"{"customer_id":null,"event_type":"x","timestamp":"2024-01-01T00:00:00Z"}"#,
                "missing_field",
            ),
            (
                r#"{"customer_id":7,"event_type":"x","timestamp":"2024-01-01T00:00:00Z"}"#,
                "bad_customer_id",
            ),
            (
                r#"{"customer_id":"","event_type":"x","timestamp":"2024-01-01T00:00:00Z"}"#,
                "bad_customer_id",
            ),
            (
                r#"{"customer_id":"a\u0000b","event_type":"x","timestamp":"2024-01-01T00:00:00Z"}"#,
                "bad_customer_id",
            ),
            (
                r#"{"customer_id":"a","event_type":["x"],"timestamp":"2024-01-01T00:00:00Z"}"#,
                "bad_event_type",
            ),
            (
                r#"{"customer_id":"a","event_type":"x","timestamp":"2024-01-01"}"#,
                "bad_timestamp",
            ),
            (
                r#"{"customer_id":"a","event_type":"x","timestamp":"2024-01-01T00:00:00"}"#,
                "bad_timestamp",
            ),
            (
                r#"{"customer_id":"a","event_type":"x","timestamp":1704067200}"#,
                "bad_timestamp",
            ),
            (
                r#"{"customer_id":"a","event_type":"x","timestamp":"2024-01-01T00:00:00Z","amount":-1}"#,
                "bad_amount",
            ),
            (
                r#"{"customer_id":"a","event_type":"x","timestamp":"2024-01-01T00:00:00Z","amount":1e999}"#,
                "bad_amount",
            ),
            (
                r#"{"customer_id":"a","event_type":"x","timestamp":"2024-01-01T00:00:00Z","amount":"3"}"#,
                "bad_amount",
            ),
            (
                r#"{"customer_id":"a","event_type":"x","timestamp":"2024-01-01T00:00:00Z","properties":[1]}"#,
                "bad_properties",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(reason(line), want, "line: {line}");
        }
        let line = format!(
            r#"{{"customer_id":"{long_id}","event_type":"x","timestamp":"2024-01-01T00:00:00Z"}}"#
        );
        assert_eq!(reason(&line), "bad_customer_id");
        assert_eq!(
            parse_event(b"{\"customer_id\":\"a\0\"}").map_err(|e| e.reason()),
            Err("malformed_json")
        );
    }

    #[test]
    fn every_reason_is_listed() {
        let errors = [
            EventError::MalformedJson(String::new()),
            EventError::NotAnObject,
            EventError::DuplicateField(String::new()),
            EventError::MissingField("x"),
            EventError::BadCustomerId(""),
            EventError::BadEventType(""),
            EventError::BadTimestamp(String::new()),
            EventError::BadAmount(""),
            EventError::BadProperties,
            EventError::TimestampInFuture {
                ahead_secs: 0,
                max_skew_secs: 0,
            },
            EventError::TimestampTooOld(String::new()),
        ];
        let reasons: Vec<_> = errors.iter().map(EventError::reason).collect();
        assert_eq!(reasons, EventError::REASONS);
    }

    #[test]
    fn null_optional_fields_are_absent() {
        let e = parse_event(
            br#"{"customer_id":"a","event_type":"x","timestamp":"2024-01-01T00:00:00Z","amount":null,"properties":null}"#,
        )
        .expect("valid");
        assert_eq!(e.amount, None);
    }

    #[test]
    fn timestamps_outside_rfc3339_years_are_rejected() {
        assert!(parse_timestamp_ms("0000-01-01T00:00:00+01:00").is_err());
        assert!(parse_timestamp_ms("0000-01-01T00:00:00Z").is_ok());
        assert!(parse_timestamp_ms("9999-12-31T23:59:59.999Z").is_ok());
        assert!(parse_timestamp_ms("9999-12-31T23:59:59.999-01:00").is_err());
        assert_eq!(
            format_timestamp_ms(MIN_TIMESTAMP_MS),
            "0000-01-01T00:00:00.000Z"
        );
        assert_eq!(
            format_timestamp_ms(MAX_TIMESTAMP_MS),
            "9999-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn timestamps_round_trip() {
        let ms = parse_timestamp_ms("2024-05-06T07:08:09.123Z").expect("valid");
        assert_eq!(format_timestamp_ms(ms), "2024-05-06T07:08:09.123Z");
    }

    #[test]
    fn amounts_that_could_overflow_a_decayed_sum_are_rejected() {
        let line = |a: &str| {
            format!(
                r#"{{"customer_id":"a","event_type":"purchase","timestamp":"2024-01-01T00:00:00Z","amount":{a}}}"#
            )
        };
        assert_eq!(
            parse_event(line("1.5e308").as_bytes()).map_err(|e| e.reason()),
            Err("bad_amount")
        );
        assert_eq!(
            parse_event(line("1e16").as_bytes()).map_err(|e| e.reason()),
            Err("bad_amount")
        );
        let bound = line("1e15");
        let ok = parse_event(bound.as_bytes()).expect("the bound itself is accepted");
        assert_eq!(ok.amount, Some(1e15));
    }

    #[test]
    fn events_stamped_past_the_skew_bound_are_in_the_future() {
        let now = 1_700_000_000_000;
        assert_eq!(check_not_in_future(now + 300_000, now, 300_000), Ok(()));
        assert_eq!(check_not_in_future(now - 86_400_000, now, 300_000), Ok(()));
        let err = check_not_in_future(now + 300_001, now, 300_000).expect_err("ahead");
        assert_eq!(err.reason(), "timestamp_in_future");
        assert!(err.to_string().contains("300 s"), "{err}");
        let far = check_not_in_future(MAX_TIMESTAMP_MS, now, 300_000).expect_err("year 9999");
        assert_eq!(far.reason(), "timestamp_in_future");
    }
}
