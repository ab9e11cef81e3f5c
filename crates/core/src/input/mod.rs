//! The input layer: how the bytes of one message (a Kafka value or a line of
//! a file) become a [`CustomerEvent`].
//!
//! [`InputFormat`] is the decoder every reader calls, offline (`score`,
//! `backtest`, `fit`, `inspect`) and live (the worker's partitions):
//!
//! - [`InputFormat::Churn`], the default: the native schema, read by the
//!   dedicated parser in [`crate::event`] (unchanged, and the fastest);
//! - [`InputFormat::Mapped`]: any JSON object, read through a [`Mapping`] of
//!   JSON pointers (customer id, event type, timestamp and its encoding,
//!   amount and its scale, properties), a `rename` table and
//!   `include`/`exclude` lists. The presets (`segment`, `cloudevents`) are
//!   mappings shipped as TOML in `input/presets/`, not code paths.
//!
//! The message's context (key, timestamp, headers) comes in a
//! [`MessageContext`] that names no Kafka type, so this crate stays free of
//! Kafka. A decoder for another encoding (Avro, Protobuf with a schema
//! registry) would be one more variant beside `Mapped`, producing the same
//! `CustomerEvent` and [`DecodeError`].

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use crate::event::{CustomerEvent, EventError, parse_event};

pub mod inspect;
mod mapping;

pub use mapping::{Mapping, MappingError, MappingSpec, Sources, TimestampEncoding};

/// The formats `input.format` / `--input-format` accept.
pub const FORMATS: &[&str] = &["churn", "segment", "cloudevents", "mapped"];

/// The mappings shipped with the binary, by name (TOML text). `churn` is the
/// native schema written as a mapping: the `churn` format itself does not
/// use it, but a custom mapping can start from it.
pub const PRESETS: &[(&str, &str)] = &[
    ("churn", include_str!("presets/churn.toml")),
    ("segment", include_str!("presets/segment.toml")),
    ("cloudevents", include_str!("presets/cloudevents.toml")),
];

/// Message headers, looked up by name (the worker adapts Kafka's).
pub trait HeaderLookup {
    /// The value of the first header called `name`, if any.
    fn header(&self, name: &str) -> Option<&[u8]>;
}

/// What a message carries besides its value. Files have none of it.
#[derive(Clone, Copy, Default)]
pub struct MessageContext<'a> {
    /// The message key.
    pub key: Option<&'a [u8]>,
    /// The message timestamp, Unix milliseconds.
    pub timestamp_ms: Option<i64>,
    /// The message headers.
    pub headers: Option<&'a dyn HeaderLookup>,
}

impl std::fmt::Debug for MessageContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageContext")
            .field("key", &self.key)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("headers", &self.headers.is_some())
            .finish()
    }
}

/// Why a message could not be read as an event: the [`EventError`] (whose
/// [`reason`](EventError::reason) label is one of a fixed set, for metrics)
/// and, for a mapped format, where it failed (a JSON pointer such as
/// `/userId`, or `@key`, `@timestamp`, `@header:NAME`).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    /// The error, with its stable reason label.
    pub error: EventError,
    /// The source that failed, as written in the mapping (`None` for the
    /// native format, whose field names are in the error itself).
    pub source: Option<Arc<str>>,
}

impl DecodeError {
    /// The stable reason label (metrics): never includes the source.
    pub fn reason(&self) -> &'static str {
        self.error.reason()
    }

    /// The reason with the source that failed, `missing_field: /userId`
    /// (dead-letter `reason` header, `score`'s report); the bare label when
    /// there is no source.
    pub fn reason_with_source(&self) -> Cow<'static, str> {
        match &self.source {
            Some(source) => Cow::Owned(format!("{}: {source}", self.reason())),
            None => Cow::Borrowed(self.reason()),
        }
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for DecodeError {}

impl From<EventError> for DecodeError {
    fn from(error: EventError) -> Self {
        DecodeError {
            error,
            source: None,
        }
    }
}

/// How message bytes become events.
#[derive(Debug, Clone, Default)]
pub enum InputFormat {
    /// The native schema (docs/events.md), with its dedicated parser.
    #[default]
    Churn,
    /// Any JSON object, through a mapping (a preset or a user's).
    Mapped(Arc<Mapping>),
}

impl PartialEq for InputFormat {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (InputFormat::Churn, InputFormat::Churn) => true,
            (InputFormat::Mapped(a), InputFormat::Mapped(b)) => {
                a.name() == b.name() && a.spec() == b.spec()
            }
            _ => false,
        }
    }
}

impl InputFormat {
    /// Decodes one message. `Ok(None)`: a valid message the mapping's
    /// `include`/`exclude` lists leave out (not an error, not applied).
    pub fn decode<'a>(
        &'a self,
        bytes: &'a [u8],
        cx: &MessageContext<'a>,
    ) -> Result<Option<CustomerEvent<'a>>, DecodeError> {
        match self {
            InputFormat::Churn => parse_event(bytes).map(Some).map_err(DecodeError::from),
            InputFormat::Mapped(mapping) => mapping.decode(bytes, cx),
        }
    }

    /// The format's name: `churn`, a preset's name, or `mapped`.
    pub fn name(&self) -> &str {
        match self {
            InputFormat::Churn => "churn",
            InputFormat::Mapped(m) => m.name(),
        }
    }

    /// The mapping in effect, as TOML-serializable data (the native format
    /// shows its preset), for `inspect` and the docs.
    pub fn effective_mapping(&self) -> MappingSpec {
        match self {
            InputFormat::Churn => MappingSpec::preset("churn").unwrap_or_default(),
            InputFormat::Mapped(m) => m.spec().clone(),
        }
    }

    /// The format `format` (one of [`FORMATS`]; `None`: `churn`, or `mapped`
    /// when a mapping is given), with `mapping` (TOML) laid over its preset.
    /// `mapping_origin` names the mapping in errors (a file path).
    pub fn from_settings(
        format: Option<&str>,
        mapping: Option<(&str, &str)>,
    ) -> Result<Self, MappingError> {
        let format = format.unwrap_or(if mapping.is_some() { "mapped" } else { "churn" });
        let user = match mapping {
            Some((text, origin)) => Some(MappingSpec::from_toml(text, origin)?),
            None => None,
        };
        match (format, user) {
            ("churn", None) => Ok(InputFormat::Churn),
            ("churn", Some(_)) => Err(MappingError::Invalid(
                "a mapping needs input format `mapped` (or a preset: `segment`, `cloudevents`); \
                 the `churn` format reads the native schema only"
                    .into(),
            )),
            ("mapped", None) => Err(MappingError::Invalid(
                "input format `mapped` needs a mapping (`input.mapping` or `--mapping FILE`)"
                    .into(),
            )),
            ("mapped", Some(user)) => Ok(InputFormat::Mapped(Arc::new(Mapping::compile(
                "mapped", user,
            )?))),
            (preset, user) => {
                let Some(base) = MappingSpec::preset(preset).filter(|_| preset != "churn") else {
                    return Err(MappingError::Invalid(format!(
                        "unknown input format `{preset}`; expected one of: {}",
                        FORMATS.join(", ")
                    )));
                };
                let spec = match user {
                    Some(user) => base.overlaid_with(user),
                    None => base,
                };
                Ok(InputFormat::Mapped(Arc::new(Mapping::compile(
                    preset, spec,
                )?)))
            }
        }
    }

    /// As [`InputFormat::from_settings`], reading the mapping from a file.
    pub fn load(format: Option<&str>, mapping_path: Option<&Path>) -> Result<Self, MappingError> {
        match mapping_path {
            None => Self::from_settings(format, None),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| MappingError::Read {
                    path: path.display().to_string(),
                    error: e.to_string(),
                })?;
                Self::from_settings(format, Some((&text, &path.display().to_string())))
            }
        }
    }
}

#[cfg(test)]
mod tests;
