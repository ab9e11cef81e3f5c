//! The risk model: a lead-scoring model file, loaded and validated.
//!
//! The file format is documented line by line in `config/model.toml` and in
//! `docs/model.md`. [`RiskModel`] is the compiled, validated form the engine
//! reads on every event: event types are resolved to small indices, half-lives
//! to decay rates grouped so each distinct half-life is computed once.

use std::collections::BTreeMap;
use std::path::Path;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::event::EventError;

/// Most event types one model may name (one bit each in the customer state).
pub const MAX_EVENT_TYPES: usize = 64;

/// Most segments one model may declare (a customer's segment is one byte).
pub const MAX_SEGMENTS: usize = 64;

/// Longest segment name (a value of the segment property), in bytes. Longer
/// values can never name a declared segment and fall in the default one.
pub const MAX_SEGMENT_NAME_BYTES: usize = 64;

/// The name of the default segment when `segments.default` is not given.
pub const DEFAULT_SEGMENT_NAME: &str = "other";

const MS_PER_DAY: f64 = 86_400_000.0;

/// Why a model file was rejected. Every variant names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file could not be read.
    #[error("cannot read model file {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed, or a key has the wrong type or is unknown.
    #[error("{}", describe_syntax(key, *line, *column, message))]
    Syntax {
        /// Dotted path of the key (empty when the file itself is malformed).
        key: String,
        /// 1-based line of the error in the file (0: unknown).
        line: usize,
        /// 1-based column (in characters) of the error (0: unknown).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A value is out of its allowed range.
    #[error("invalid model value `{key}`: {message}")]
    Invalid {
        /// Dotted path of the key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn describe_syntax(key: &str, line: usize, column: usize, message: &str) -> String {
    let at = if line > 0 {
        format!(" at line {line}, column {column}")
    } else {
        String::new()
    };
    if key.is_empty() {
        format!("invalid model file{at}: {message}")
    } else {
        format!("invalid model file{at}, key `{key}`: {message}")
    }
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The model file as written (see `config/model.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Version string copied into every alert and score.
    pub model_version: String,
    /// Mapping from points to the 0–100 risk score.
    pub score: ScoreSpec,
    /// When alerts open and close.
    pub alert: AlertPolicy,
    /// Half-lives of the recent and long-run activity counters.
    pub activity: ActivitySpec,
    /// Points per (decayed) activity event in the long-run window.
    pub frequency: FrequencySpec,
    /// Points for activity falling below the customer's own long-run level.
    pub trend: TrendSpec,
    /// Points for silence since the last event, in days.
    pub inactivity: InactivitySpec,
    /// Points for silence measured in the customer's own usual gaps
    /// (optional: a model without it scores silence in days only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rhythm: Option<RhythmSpec>,
    /// Points for (decayed) spend.
    pub spend: SpendSpec,
    /// Points for the length of the customer's active life.
    pub tenure: TenureSpec,
    /// Points per event type, keyed by `event_type`.
    #[serde(default)]
    pub events: BTreeMap<String, EventRule>,
    /// Thresholds (and points) per segment of customers, by an event
    /// property (optional: without it every customer shares `[alert]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<SegmentsSpec>,
    /// Which event times are believable (optional: without it the
    /// defaults of [`EventTimeSpec`] apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<EventTimeSpec>,
}

/// `[event_time]`: how old an event may be. In the model file, not the
/// worker's configuration, because the offline commands (`score`,
/// `backtest`, `fit`) and the live worker both read the model file: the
/// same file rejects the same events in both. (How far *ahead* an event may
/// be is the worker's `engine.max_future_skew_secs`: it is measured against
/// the wall clock, which only the live worker has.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTimeSpec {
    /// An event more than this many days behind the newest event time its
    /// stream has accepted (a partition, live; the input read so far,
    /// offline) is rejected as `timestamp_too_old`. Default: 1826 (5 years).
    #[serde(default = "default_max_past_age_days")]
    pub max_past_age_days: f64,
    /// No event before this moment is accepted (RFC 3339 with an offset).
    /// Default: `2000-01-01T00:00:00Z`.
    #[serde(default = "default_earliest")]
    pub earliest: String,
}

/// Default of `event_time.max_past_age_days`: 5 years.
pub const DEFAULT_MAX_PAST_AGE_DAYS: f64 = 1826.0;
/// Default of `event_time.earliest`.
pub const DEFAULT_EARLIEST: &str = "2000-01-01T00:00:00Z";

fn default_max_past_age_days() -> f64 {
    DEFAULT_MAX_PAST_AGE_DAYS
}

fn default_earliest() -> String {
    DEFAULT_EARLIEST.to_string()
}

impl Default for EventTimeSpec {
    fn default() -> Self {
        EventTimeSpec {
            max_past_age_days: DEFAULT_MAX_PAST_AGE_DAYS,
            earliest: default_earliest(),
        }
    }
}

/// `[event_time]` compiled: the rule both shells apply to every event
/// before it touches any state. One login stamped 1970 would otherwise pin
/// its customer's tenure at the maximum for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTimeBounds {
    /// No event before this (ms since the Unix epoch).
    pub earliest_ms: i64,
    /// How far behind the stream's newest accepted event time an event may be.
    pub max_past_age_ms: i64,
}

impl EventTimeBounds {
    /// Accepts an event at `event_ms` in a stream whose newest accepted
    /// event time is `newest_ms` (`None`: nothing accepted yet, so only
    /// `earliest` applies), or says why it is too old.
    #[inline]
    pub fn check(&self, event_ms: i64, newest_ms: Option<i64>) -> Result<(), EventError> {
        // Every event passes here: the comparisons inline, the messages of
        // the rare rejection are built out of line.
        if event_ms < self.earliest_ms
            || newest_ms
                .is_some_and(|newest| event_ms < newest.saturating_sub(self.max_past_age_ms))
        {
            return Err(self.too_old(event_ms, newest_ms));
        }
        Ok(())
    }

    #[cold]
    fn too_old(&self, event_ms: i64, newest_ms: Option<i64>) -> EventError {
        if event_ms < self.earliest_ms {
            return EventError::TimestampTooOld(format!(
                "before event_time.earliest ({})",
                crate::event::format_timestamp_ms(self.earliest_ms)
            ));
        }
        let newest = newest_ms.unwrap_or(event_ms);
        let behind_days = (newest - event_ms) / 86_400_000;
        EventError::TimestampTooOld(format!(
            "{behind_days} days behind the newest event accepted ({}), more than \
             event_time.max_past_age_days ({})",
            crate::event::format_timestamp_ms(newest),
            self.max_past_age_ms / 86_400_000
        ))
    }
}

/// `[segments]`: customers grouped by the value of one event property
/// (`plan`, `country`, …), remembered from their latest event that carries
/// it, each group with its own thresholds and optionally its own points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentsSpec {
    /// The key in an event's `properties` whose (string) value names the
    /// customer's segment.
    pub property: String,
    /// The name of the segment of customers whose value is not declared in
    /// `values` (or who never sent the property): scored with `[alert]` and
    /// `[events]` as they are. Default: `other`.
    #[serde(default = "default_segment_name")]
    pub default: String,
    /// One table per declared value of the property.
    pub values: BTreeMap<String, SegmentRule>,
}

fn default_segment_name() -> String {
    DEFAULT_SEGMENT_NAME.to_string()
}

/// One `[segments.values.<value>]` entry: what differs for that segment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentRule {
    /// The segment's at-risk threshold (default: `alert.at_risk_threshold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_risk_threshold: Option<f64>,
    /// The segment's recovery threshold (default: `alert.recovery_threshold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_threshold: Option<f64>,
    /// Points per event, by event type, replacing `events.<type>.points`
    /// for this segment's customers (types must be named in `[events]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub points: BTreeMap<String, f64>,
}

/// `[score]`: risk = 100 / (1 + exp(-(points - midpoint) / scale)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreSpec {
    /// Points every customer starts with.
    pub base_points: f64,
    /// Points at which the risk score is 50.
    pub midpoint: f64,
    /// Points per e-fold of the odds; larger means a gentler curve.
    pub scale: f64,
}

/// `[alert]`: thresholds with hysteresis and a cooldown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertPolicy {
    /// An at-risk alert opens when the risk score reaches this (0–100).
    pub at_risk_threshold: f64,
    /// An open alert closes (a `recovered` alert) when the score falls to this.
    pub recovery_threshold: f64,
    /// No new at-risk alert for a customer within this many hours of their last alert.
    pub cooldown_hours: f64,
}

/// `[activity]`: the two activity counters behind frequency and trend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivitySpec {
    /// Half-life of the recent-activity counter, in days.
    pub short_half_life_days: f64,
    /// Half-life of the long-run activity counter, in days.
    pub long_half_life_days: f64,
}

/// `[frequency]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencySpec {
    /// Points per decayed activity event in the long-run counter (negative lowers risk).
    pub points_per_event: f64,
    /// At most this many decayed events count.
    pub cap: f64,
    /// Human-readable text shown next to the factor in alerts and `/v1`
    /// (default: a built-in label, see [`default_label`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// `[trend]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrendSpec {
    /// Points when recent activity has stopped entirely; scaled down linearly
    /// to 0 as the recent rate reaches the long-run rate. Must be ≥ 0.
    pub points: f64,
    /// The trend counts only once the long-run counter holds this many events.
    pub min_events: f64,
    /// Human-readable text shown next to the factor in alerts and `/v1`
    /// (default: a built-in label, see [`default_label`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// `[inactivity]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InactivitySpec {
    /// Points by days of silence, interpolated linearly between steps (from 0
    /// points at 0 days) and constant after the last. Each step is also a
    /// moment at which the live worker re-scores a quiet customer.
    pub steps: Vec<InactivityStep>,
    /// Human-readable text shown next to the factor in alerts and `/v1`
    /// (default: a built-in label, see [`default_label`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// One `[[inactivity.steps]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InactivityStep {
    /// Days of silence since the last event.
    pub after_days: f64,
    /// Points at that silence.
    pub points: f64,
}

/// `[rhythm]`: silence relative to the customer's own pace.
///
/// The engine estimates each customer's *usual gap* between activity events
/// from its long-run activity counter (half-life `activity.long_half_life_days`)
/// and the time it has been observed, shrunk towards `prior_gap_days` by
/// `prior_events` events' worth of weight — so a customer seen once is assumed
/// to come back about every `prior_gap_days`, and a customer with a long
/// history is judged by its own pace. Silence is then counted in usual gaps:
/// three gaps of silence mean the same for a daily user (three days) and a
/// monthly buyer (three months).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RhythmSpec {
    /// Points by usual gaps of silence, interpolated linearly between steps
    /// (from 0 points at 0 gaps) and constant after the last. Each step is
    /// also a moment at which the live worker re-scores a quiet customer.
    pub steps: Vec<RhythmStep>,
    /// The usual gap, in days, assumed for a customer with a single event.
    pub prior_gap_days: f64,
    /// Weight of that assumption, in events: the more events a customer has
    /// beyond this, the more its own pace counts.
    #[serde(default = "default_prior_events")]
    pub prior_events: f64,
    /// The usual gap is never taken as shorter than this, in days (default
    /// 1): a visit often logs several activity events within minutes, and
    /// a customer active many times a day is judged as a daily one.
    #[serde(default = "default_min_gap_days")]
    pub min_gap_days: f64,
    /// Human-readable text shown next to the factor in alerts and `/v1`
    /// (default: a built-in label, see [`default_label`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

fn default_prior_events() -> f64 {
    1.0
}

fn default_min_gap_days() -> f64 {
    1.0
}

/// One `[[rhythm.steps]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RhythmStep {
    /// Silence in usual gaps.
    pub after_gaps: f64,
    /// Points at that silence.
    pub points: f64,
}

/// `[spend]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpendSpec {
    /// Half-life of the decayed spend, in days.
    pub half_life_days: f64,
    /// Points per unit of ln(1 + decayed spend).
    pub points_per_log_amount: f64,
    /// Human-readable text shown next to the factor in alerts and `/v1`
    /// (default: a built-in label, see [`default_label`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// `[tenure]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenureSpec {
    /// Points per year between the first and the last event.
    pub points_per_year: f64,
    /// Years beyond this count no more.
    pub max_years: f64,
    /// Human-readable text shown next to the factor in alerts and `/v1`
    /// (default: a built-in label, see [`default_label`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// One `[events.<type>]` entry: lead-scoring points for an event type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRule {
    /// Points per event when fresh; positive adds risk, negative lowers it.
    pub points: f64,
    /// Days after which an event's points are halved.
    pub half_life_days: f64,
    /// At most this many decayed events count (default 20).
    #[serde(default = "default_cap")]
    pub cap: f64,
    /// Whether this type counts as activity for frequency and trend
    /// (default: true for types with points ≤ 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<bool>,
    /// Human-readable text shown next to the factor in alerts and `/v1`
    /// (default: a built-in label, see [`default_label`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

fn default_cap() -> f64 {
    20.0
}

/// One event type the model names, compiled.
#[derive(Debug, Clone)]
pub struct EventKind {
    /// The `event_type` string.
    pub name: String,
    /// The factor name used in reasons: `event:<type>`.
    pub factor: String,
    /// Points per fresh event.
    pub points: f64,
    /// Cap on decayed count.
    pub cap: f64,
    /// Index into the model's decay groups.
    pub group: usize,
    /// Counts as activity.
    pub activity: bool,
}

/// The compiled, validated model the engine scores with.
#[derive(Debug, Clone)]
pub struct RiskModel {
    spec: ModelSpec,
    kinds: Vec<EventKind>,
    kind_index: FxHashMap<String, u8>,
    /// Decay rates (per millisecond, natural log) of each distinct half-life.
    rates: Vec<f64>,
    /// Inactivity step positions in milliseconds, with their points.
    steps_ms: Vec<(i64, f64)>,
    /// `(after_gaps, points)` of the rhythm steps (empty without `[rhythm]`).
    rhythm_steps: Vec<(f64, f64)>,
    /// Prior of the usual gap: `(prior_events, prior_events × prior_gap in ms)`.
    rhythm_prior: (f64, f64),
    /// The shortest usual gap, in ms.
    rhythm_min_gap_ms: f64,
    unknown_is_activity: bool,
    /// The compiled `[segments]`, if any.
    segments: Option<Segments>,
    /// The compiled `[event_time]` (or its defaults).
    event_time: EventTimeBounds,
}

/// `[segments]` compiled. Segment 0 is the default segment; declared values
/// are 1..=n in name order.
#[derive(Debug, Clone)]
struct Segments {
    property: String,
    /// Name of each segment, by index (0: the default's name).
    names: Vec<String>,
    /// Declared value → segment index (1..=n).
    index: FxHashMap<String, u8>,
    /// Alert policy of each segment, by index (0: `[alert]`).
    policies: Vec<AlertPolicy>,
    /// Points per event of each (segment, kind): `points[segment * kinds + kind]`.
    points: Vec<f64>,
}

/// Decay groups that always exist.
pub(crate) const GROUP_SHORT: usize = 0;
pub(crate) const GROUP_LONG: usize = 1;
pub(crate) const GROUP_SPEND: usize = 2;

impl RiskModel {
    /// Reads, parses and validates a model file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// The default model shipped in `config/model.toml`.
    pub fn default_model() -> Self {
        Self::from_toml(DEFAULT_MODEL_TOML).expect("the shipped default model is valid")
    }

    /// Parses and validates a model from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ModelError> {
        let at = |span: Option<std::ops::Range<usize>>| {
            span.map_or((0, 0), |s| line_column(text, s.start))
        };
        let deserializer = toml::Deserializer::parse(text).map_err(|e| {
            let (line, column) = at(e.span());
            ModelError::Syntax {
                key: String::new(),
                line,
                column,
                message: e.message().trim_end().to_string(),
            }
        })?;
        let spec: ModelSpec = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let (line, column) = at(e.inner().span());
            ModelError::Syntax {
                key: e.path().to_string(),
                line,
                column,
                message: e.inner().message().trim_end().to_string(),
            }
        })?;
        Self::from_spec(spec)
    }

    /// Validates a model specification and compiles it.
    pub fn from_spec(spec: ModelSpec) -> Result<Self, ModelError> {
        validate(&spec)?;
        let mut half_lives: Vec<f64> = vec![
            spec.activity.short_half_life_days,
            spec.activity.long_half_life_days,
            spec.spend.half_life_days,
        ];
        let mut kinds = Vec::with_capacity(spec.events.len());
        let mut kind_index = FxHashMap::default();
        for (name, rule) in &spec.events {
            let group = match half_lives.iter().position(|h| *h == rule.half_life_days) {
                Some(g) => g,
                None => {
                    half_lives.push(rule.half_life_days);
                    half_lives.len() - 1
                }
            };
            let index = u8::try_from(kinds.len()).map_err(|_| ModelError::Invalid {
                key: "events".into(),
                message: format!("at most {MAX_EVENT_TYPES} event types"),
            })?;
            kind_index.insert(name.clone(), index);
            kinds.push(EventKind {
                name: name.clone(),
                factor: format!("event:{name}"),
                points: rule.points,
                cap: rule.cap,
                group,
                activity: rule.activity.unwrap_or(rule.points <= 0.0),
            });
        }
        let rates = half_lives
            .iter()
            .map(|days| std::f64::consts::LN_2 / (days * MS_PER_DAY))
            .collect();
        let steps_ms = spec
            .inactivity
            .steps
            .iter()
            .map(|s| ((s.after_days * MS_PER_DAY).round() as i64, s.points))
            .collect();
        let (rhythm_steps, rhythm_prior, rhythm_min_gap_ms) = match &spec.rhythm {
            Some(r) => (
                r.steps.iter().map(|s| (s.after_gaps, s.points)).collect(),
                (
                    r.prior_events,
                    r.prior_events * r.prior_gap_days * MS_PER_DAY,
                ),
                r.min_gap_days * MS_PER_DAY,
            ),
            None => (Vec::new(), (1.0, 0.0), 0.0),
        };
        let segments = spec
            .segments
            .as_ref()
            .map(|seg| compile_segments(seg, &spec.alert, &kinds, &kind_index));
        let event_time = compile_event_time(spec.event_time.as_ref())?;
        Ok(RiskModel {
            event_time,
            spec,
            kinds,
            kind_index,
            rates,
            steps_ms,
            rhythm_steps,
            rhythm_prior,
            rhythm_min_gap_ms,
            unknown_is_activity: true,
            segments,
        })
    }

    /// Which event times this model accepts (`[event_time]`).
    pub fn event_time_bounds(&self) -> EventTimeBounds {
        self.event_time
    }

    /// The specification this model was built from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The model's version string.
    pub fn version(&self) -> &str {
        &self.spec.model_version
    }

    /// The alert policy (of the default segment, when the model has segments).
    pub fn alert_policy(&self) -> &AlertPolicy {
        &self.spec.alert
    }

    /// The alert policy of a segment (see [`RiskModel::segment_index`]);
    /// `[alert]` for segment 0 and for a model without segments.
    #[inline]
    pub fn alert_policy_for(&self, segment: u8) -> &AlertPolicy {
        match &self.segments {
            Some(s) => s
                .policies
                .get(usize::from(segment))
                .unwrap_or(&self.spec.alert),
            None => &self.spec.alert,
        }
    }

    /// Risk band of a score under the alert policy of the customer's segment
    /// (segment 0, the `[alert]` table, for a model without segments):
    /// `high` at or above the at-risk threshold, `low` at or below the
    /// recovery threshold, `medium` between.
    pub fn band(&self, segment: u8, risk_score: f64) -> &'static str {
        let p = self.alert_policy_for(segment);
        if risk_score >= p.at_risk_threshold {
            "high"
        } else if risk_score > p.recovery_threshold {
            "medium"
        } else {
            "low"
        }
    }

    /// Points per fresh event of kind `kind` for a customer of `segment`:
    /// the segment's `points` override, else `events.<type>.points`.
    #[inline]
    pub fn event_points(&self, segment: u8, kind: usize) -> f64 {
        match &self.segments {
            Some(s) if segment != 0 => s
                .points
                .get(usize::from(segment) * self.kinds.len() + kind)
                .copied()
                .unwrap_or(self.kinds[kind].points),
            _ => self.kinds[kind].points,
        }
    }

    /// Whether the model defines `[segments]`.
    pub fn has_segments(&self) -> bool {
        self.segments.is_some()
    }

    /// The event property that names a customer's segment, if the model
    /// has segments.
    pub fn segment_property(&self) -> Option<&str> {
        self.segments.as_ref().map(|s| s.property.as_str())
    }

    /// Every segment's name, by index (0: the default segment); empty for
    /// a model without segments.
    pub fn segment_names(&self) -> &[String] {
        self.segments.as_ref().map_or(&[], |s| &s.names)
    }

    /// The name of segment `segment`, or `None` for a model without
    /// segments (an index the model does not have reads as the default).
    pub fn segment_name(&self, segment: u8) -> Option<&str> {
        let s = self.segments.as_ref()?;
        s.names
            .get(usize::from(segment))
            .or_else(|| s.names.first())
            .map(String::as_str)
    }

    /// The segment a value of the segment property puts a customer in: a
    /// declared value's index, or 0 (the default segment) for any other.
    #[inline]
    pub fn segment_index(&self, value: &str) -> u8 {
        match &self.segments {
            Some(s) if value.len() <= MAX_SEGMENT_NAME_BYTES => {
                s.index.get(value).copied().unwrap_or(0)
            }
            _ => 0,
        }
    }

    /// The index of a declared segment by its name (not the default's):
    /// how a restore or a reload finds a customer's segment again.
    pub fn declared_segment(&self, name: &str) -> Option<u8> {
        self.segments.as_ref()?.index.get(name).copied()
    }

    /// The segment an event puts its customer in, if the model has
    /// segments and the event's `properties` carry the segment property as
    /// a string; `None` leaves the customer's segment as it is. Properties
    /// are not looked at all for a model without segments.
    #[inline]
    pub fn segment_of_event(&self, event: &crate::event::CustomerEvent<'_>) -> Option<u8> {
        let s = self.segments.as_ref()?;
        let value = event.property(&s.property)?;
        Some(self.segment_index(&value))
    }

    /// A reason's label for people: the factor's label template
    /// ([`RiskModel::label`]) filled with the reason's quantities.
    pub fn reason_label(&self, factor: &str, quantities: &Quantities) -> String {
        fill_label(&self.label_template(factor), quantities)
    }

    /// The label template of a factor (`inactivity`, `event:complaint`, …):
    /// the model file's `label`, else the built-in default; its
    /// placeholders (`{days}`, …, see [`label_placeholders`]) are filled per
    /// reason by [`RiskModel::reason_label`].
    pub fn label(&self, factor: &str) -> String {
        self.label_template(factor).into_owned()
    }

    /// [`RiskModel::label`], borrowed from the model file when it gives one.
    fn label_template(&self, factor: &str) -> std::borrow::Cow<'_, str> {
        let spec = &self.spec;
        let custom = match factor {
            "frequency" => spec.frequency.label.as_deref(),
            "trend" => spec.trend.label.as_deref(),
            "inactivity" => spec.inactivity.label.as_deref(),
            "rhythm" => spec.rhythm.as_ref().and_then(|r| r.label.as_deref()),
            "spend" => spec.spend.label.as_deref(),
            "tenure" => spec.tenure.label.as_deref(),
            other => other
                .strip_prefix("event:")
                .and_then(|name| spec.events.get(name))
                .and_then(|rule| rule.label.as_deref()),
        };
        custom.map_or_else(
            || std::borrow::Cow::Owned(default_label(factor)),
            std::borrow::Cow::Borrowed,
        )
    }

    /// The event types the model names, in index order.
    pub fn kinds(&self) -> &[EventKind] {
        &self.kinds
    }

    /// Resolves an event type to its index, if the model names it.
    #[inline]
    pub fn kind_of(&self, event_type: &str) -> Option<u8> {
        self.kind_index.get(event_type).copied()
    }

    /// Whether an event of this (resolved) type counts as activity.
    #[inline]
    pub fn is_activity(&self, kind: Option<u8>) -> bool {
        match kind {
            Some(k) => self.kinds[usize::from(k)].activity,
            None => self.unknown_is_activity,
        }
    }

    /// exp(-rate · dt): the fraction of a contribution left after `dt_ms`.
    #[inline]
    pub(crate) fn decay(&self, group: usize, dt_ms: i64) -> f64 {
        if dt_ms <= 0 {
            1.0
        } else {
            (-self.rates[group] * dt_ms as f64).exp()
        }
    }

    /// Inactivity steps as (silence in ms, points).
    pub fn inactivity_steps_ms(&self) -> &[(i64, f64)] {
        &self.steps_ms
    }

    /// Points for `silence_ms` of silence: piecewise linear through the steps.
    pub fn inactivity_points(&self, silence_ms: i64) -> f64 {
        let mut prev = (0_i64, 0.0_f64);
        for &(at, points) in &self.steps_ms {
            if silence_ms < at {
                let span = (at - prev.0) as f64;
                let frac = if span > 0.0 {
                    (silence_ms - prev.0).max(0) as f64 / span
                } else {
                    1.0
                };
                return prev.1 + (points - prev.1) * frac;
            }
            prev = (at, points);
        }
        prev.1
    }

    /// Maps total points to the 0–100 risk score.
    /// Whether the model scores silence in usual gaps (`[rhythm]`).
    pub fn has_rhythm(&self) -> bool {
        !self.rhythm_steps.is_empty()
    }

    /// `(after_gaps, points)` of the rhythm steps.
    pub fn rhythm_steps(&self) -> &[(f64, f64)] {
        &self.rhythm_steps
    }

    /// A customer's pace (see [`Rhythm`]) from its long-run activity
    /// counter at the last event and the time from its first to its last
    /// event.
    ///
    /// Activity events after the first, weighted by the counter's decay,
    /// over the decayed time they were observed in, shrunk towards the
    /// prior: a Poisson rate's gamma posterior, with the same forgetting as
    /// the counter so that a change of pace shows within a few half-lives.
    pub fn rhythm(&self, activity_long: f64, observed_ms: i64) -> Rhythm {
        let rate = self.rates[GROUP_LONG];
        let observed = observed_ms.max(0) as f64;
        let first_weight = (-rate * observed).exp();
        let exposure = -(-rate * observed).exp_m1() / rate;
        let gaps = (activity_long - first_weight).max(0.0);
        let (prior_events, prior_ms) = self.rhythm_prior;
        let evidence = gaps + prior_events;
        Rhythm {
            gap_ms: ((exposure + prior_ms) / evidence).max(self.rhythm_min_gap_ms),
            evidence,
        }
    }

    /// Rhythm points after `silence_ms` of silence: the steps interpolated
    /// at the silence in usual gaps ([`Rhythm::gaps`]).
    pub fn rhythm_points(&self, silence_ms: i64, rhythm: &Rhythm) -> f64 {
        if self.rhythm_steps.is_empty() {
            return 0.0;
        }
        interpolate(&self.rhythm_steps, rhythm.gaps(silence_ms))
    }

    /// The first moment at or after `from_ms` at which a customer whose last
    /// event was at `last_ms` crosses an inactivity or rhythm step, if any
    /// is left: when the live worker re-scores a quiet customer.
    pub fn next_silence_step(&self, last_ms: i64, rhythm: &Rhythm, from_ms: i64) -> Option<i64> {
        let absolute = self
            .steps_ms
            .iter()
            .map(|&(at, _)| last_ms.saturating_add(at))
            .find(|&d| d >= from_ms);
        let relative = self
            .rhythm_steps
            .iter()
            .map_while(|&(gaps, _)| rhythm.silence_ms(gaps))
            .map(|silence| last_ms.saturating_add(silence))
            .find(|&d| d >= from_ms);
        match (absolute, relative) {
            (Some(a), Some(r)) => Some(a.min(r)),
            (a, r) => a.or(r),
        }
    }

    /// The 0–100 risk score of a total of points: the model's logistic
    /// curve (`[score] midpoint` and `scale`).
    #[inline]
    pub fn risk_from_points(&self, points: f64) -> f64 {
        let s = &self.spec.score;
        100.0 / (1.0 + (-(points - s.midpoint) / s.scale).exp())
    }
}

/// The built-in label of a factor, used when the model file gives none:
/// fixed texts for the behavioural factors, and the event type in words
/// (`plan_downgrade` → "Plan downgrade") for event factors.
/// Silences beyond this (about 3,000 years) are never reached.
const MAX_SILENCE_MS: f64 = 1e14;

/// A customer's pace: its usual gap between activity events and how much
/// evidence that estimate rests on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rhythm {
    /// The usual gap (the posterior mean gap), in milliseconds.
    pub gap_ms: f64,
    /// Decayed gaps seen plus the prior's weight, in events (the gamma
    /// posterior's shape).
    pub evidence: f64,
}

impl Rhythm {
    /// Silence counted in usual gaps, discounted for uncertainty: the `x`
    /// for which a customer of exactly known pace would be as unlikely to
    /// stay this silent while still active. With gamma-distributed
    /// uncertainty of shape `a` about the rate, staying silent for `g`
    /// usual gaps has probability `(1 + g/a)^-a`, against `e^-x` for a known
    /// pace, so `x = a·ln(1 + g/a)`: close to `g` for a long history, much
    /// less for a customer seen a few times. Grows with silence.
    pub fn gaps(&self, silence_ms: i64) -> f64 {
        if self.gap_ms <= 0.0 {
            return 0.0;
        }
        let g = silence_ms.max(0) as f64 / self.gap_ms;
        self.evidence * (g / self.evidence).ln_1p()
    }

    /// The silence, in milliseconds, at which [`Rhythm::gaps`] reaches `x`,
    /// or `None` if that is beyond any time an event can carry (a customer
    /// with almost no evidence and a step far out).
    pub fn silence_ms(&self, x: f64) -> Option<i64> {
        let g = self.evidence * (x / self.evidence).exp_m1();
        let ms = (g * self.gap_ms).ceil();
        (ms.is_finite() && ms < MAX_SILENCE_MS).then_some(ms as i64)
    }
}

/// Piecewise-linear points at `x` over `(x, points)` knots, from 0 points at
/// 0 and flat after the last knot.
fn interpolate(knots: &[(f64, f64)], x: f64) -> f64 {
    let mut prev = (0.0, 0.0);
    for &(at, points) in knots {
        if x < at {
            let span = at - prev.0;
            let frac = if span > 0.0 {
                ((x - prev.0) / span).max(0.0)
            } else {
                1.0
            };
            return prev.1 + (points - prev.1) * frac;
        }
        prev = (at, points);
    }
    prev.1
}

/// The label a factor's reasons carry when the model file gives none.
///
/// Labels are templates: `{days}` and the other [`label_placeholders`] of
/// the factor are filled with the quantities behind a reason
/// ([`fill_label`]), so the defaults read as sentences with numbers.
pub fn default_label(factor: &str) -> String {
    match factor {
        "base" => "Baseline risk".into(),
        "frequency" => "Usually active ({count} recent activities)".into(),
        "trend" => "Less active than usual lately ({percent}% of their usual pace)".into(),
        "inactivity" => "No activity for {days} days".into(),
        "rhythm" => "Quiet for {days} days — {gaps}× their usual gap of {gap} days".into(),
        "spend" => "Spends with us ({amount} recently)".into(),
        "tenure" => "Customer for {years} years".into(),
        other => {
            let name = other.strip_prefix("event:").unwrap_or(other);
            let words = name.replace(['_', '-', '.', '{', '}'], " ");
            let words = words.split_whitespace().collect::<Vec<_>>().join(" ");
            let mut chars = words.chars();
            match chars.next() {
                Some(first) => {
                    let mut label: String = first.to_uppercase().chain(chars).collect();
                    label.push_str(" ({count}× recently)");
                    label
                }
                None => other.to_string(),
            }
        }
    }
}

/// Placeholder names of labels: the quantities behind a reason.
pub mod placeholder {
    /// Days of silence since the customer's last event.
    pub const DAYS: &str = "days";
    /// The customer's usual gap between activity events, in days.
    pub const GAP: &str = "gap";
    /// The silence in usual gaps (days ÷ gap).
    pub const GAPS: &str = "gaps";
    /// Recent events of the factor's type (its decayed count, as scored,
    /// rounded to a whole number, at least 1).
    pub const COUNT: &str = "count";
    /// Recent activity as a percentage of the customer's long-run pace.
    pub const PERCENT: &str = "percent";
    /// Recent (decayed) spend.
    pub const AMOUNT: &str = "amount";
    /// Years between the customer's first and last event.
    pub const YEARS: &str = "years";
}

/// The placeholders a factor's label may use (its reasons carry exactly
/// these quantities). A factor code this does not know has none.
pub fn label_placeholders(factor: &str) -> &'static [&'static str] {
    use placeholder::*;
    match factor {
        "inactivity" => &[DAYS],
        "rhythm" => &[DAYS, GAP, GAPS],
        "frequency" => &[COUNT],
        "trend" => &[PERCENT],
        "spend" => &[AMOUNT],
        "tenure" => &[YEARS],
        f if f.starts_with("event:") => &[COUNT],
        _ => &[],
    }
}

/// Most quantities one reason carries.
const MAX_QUANTITIES: usize = 4;

/// The quantities behind one reason (days silent, counts, amounts…), by
/// placeholder name; fixed size, so a reason carries them without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Quantities {
    items: [(&'static str, f64); MAX_QUANTITIES],
    len: u8,
}

impl Quantities {
    /// Adds (or replaces) a quantity; beyond the capacity it is dropped
    /// (a debug build panics: a factor must not carry more).
    pub fn with(mut self, name: &'static str, value: f64) -> Self {
        if let Some(slot) = self.items[..usize::from(self.len)]
            .iter_mut()
            .find(|(n, _)| *n == name)
        {
            slot.1 = value;
        } else if usize::from(self.len) < MAX_QUANTITIES {
            self.items[usize::from(self.len)] = (name, value);
            self.len += 1;
        } else {
            debug_assert!(false, "more than {MAX_QUANTITIES} quantities");
        }
        self
    }

    /// The quantity named `name`, if the reason carries it.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Every quantity, in the order added.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        self.items[..usize::from(self.len)].iter().copied()
    }
}

/// Fills the `{name}` placeholders of a label template with `quantities`
/// (numbers of 10 and more as whole numbers, smaller ones with at most one
/// decimal). A placeholder without a quantity is left as written.
pub fn fill_label(template: &str, quantities: &Quantities) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(template.len() + 8);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let filled = after
            .find('}')
            .and_then(|close| Some((close, quantities.get(&after[..close])?)));
        match filled {
            Some((close, v)) => {
                // Writing to a String cannot fail.
                let _ = write!(out, "{}", QuantityText(v));
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A quantity as labels print it.
struct QuantityText(f64);

impl std::fmt::Display for QuantityText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let x = self.0;
        if !x.is_finite() {
            return write!(f, "?");
        }
        let tenths = (x * 10.0).round();
        if x.abs() >= 10.0 || tenths % 10.0 == 0.0 {
            let whole = x.round();
            write!(f, "{}", if whole == 0.0 { 0.0 } else { whole })
        } else {
            write!(f, "{:.1}", tenths / 10.0)
        }
    }
}

/// The `{name}` placeholders of a label template.
fn placeholders_in(template: &str) -> impl Iterator<Item = &str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(name, _)| name))
}

/// Compiles a validated `[segments]` table.
fn compile_segments(
    seg: &SegmentsSpec,
    alert: &AlertPolicy,
    kinds: &[EventKind],
    kind_index: &FxHashMap<String, u8>,
) -> Segments {
    let mut names = Vec::with_capacity(seg.values.len() + 1);
    let mut index = FxHashMap::default();
    let mut policies = Vec::with_capacity(seg.values.len() + 1);
    let mut points: Vec<f64> = kinds.iter().map(|k| k.points).collect();
    names.push(seg.default.clone());
    policies.push(alert.clone());
    for (i, (name, rule)) in seg.values.iter().enumerate() {
        // Validation bounds the number of segments to MAX_SEGMENTS.
        index.insert(name.clone(), (i + 1) as u8);
        names.push(name.clone());
        policies.push(AlertPolicy {
            at_risk_threshold: rule.at_risk_threshold.unwrap_or(alert.at_risk_threshold),
            recovery_threshold: rule.recovery_threshold.unwrap_or(alert.recovery_threshold),
            cooldown_hours: alert.cooldown_hours,
        });
        let base = points.len();
        points.extend(kinds.iter().map(|k| k.points));
        for (event_type, p) in &rule.points {
            if let Some(&k) = kind_index.get(event_type) {
                points[base + usize::from(k)] = *p;
            }
        }
    }
    Segments {
        property: seg.property.clone(),
        names,
        index,
        policies,
        points,
    }
}

fn validate_segments(spec: &ModelSpec, seg: &SegmentsSpec) -> Result<(), ModelError> {
    if seg.property.is_empty()
        || seg.property.len() > MAX_SEGMENT_NAME_BYTES
        || seg.property.chars().any(char::is_control)
    {
        return Err(invalid(
            "segments.property",
            format!("must be 1-{MAX_SEGMENT_NAME_BYTES} bytes without control characters"),
        ));
    }
    let name_ok = |name: &str| {
        !name.trim().is_empty()
            && name.len() <= MAX_SEGMENT_NAME_BYTES
            && !name.chars().any(char::is_control)
    };
    if !name_ok(&seg.default) {
        return Err(invalid(
            "segments.default",
            format!("must be 1-{MAX_SEGMENT_NAME_BYTES} bytes without control characters"),
        ));
    }
    if seg.values.is_empty() {
        return Err(invalid(
            "segments.values",
            "needs at least one segment (remove [segments] to score every customer alike)",
        ));
    }
    if seg.values.len() > MAX_SEGMENTS {
        return Err(invalid(
            "segments.values",
            format!(
                "{} segments declared; at most {MAX_SEGMENTS}",
                seg.values.len()
            ),
        ));
    }
    if seg.values.contains_key(&seg.default) {
        return Err(invalid(
            "segments.default",
            format!(
                "`{}` is also declared in segments.values; the default segment is for every other value",
                seg.default
            ),
        ));
    }
    for (name, rule) in &seg.values {
        let key = format!("segments.values.{name}");
        if !name_ok(name) {
            return Err(invalid(
                key,
                format!(
                    "segment names are 1-{MAX_SEGMENT_NAME_BYTES} bytes without control characters"
                ),
            ));
        }
        for (field, v) in [
            ("at_risk_threshold", rule.at_risk_threshold),
            ("recovery_threshold", rule.recovery_threshold),
        ] {
            if let Some(v) = v {
                let k = format!("{key}.{field}");
                check_finite(&k, v)?;
                if !(0.0..=100.0).contains(&v) {
                    return Err(invalid(k, "must be between 0 and 100"));
                }
            }
        }
        let at_risk = rule
            .at_risk_threshold
            .unwrap_or(spec.alert.at_risk_threshold);
        let recovery = rule
            .recovery_threshold
            .unwrap_or(spec.alert.recovery_threshold);
        if recovery >= at_risk {
            let field = if rule.recovery_threshold.is_some() {
                "recovery_threshold"
            } else {
                "at_risk_threshold"
            };
            return Err(invalid(
                format!("{key}.{field}"),
                format!(
                    "the segment's recovery threshold ({recovery}) must be below its at-risk threshold ({at_risk}) (hysteresis)"
                ),
            ));
        }
        for (event_type, points) in &rule.points {
            let k = format!("{key}.points.{event_type}");
            if !spec.events.contains_key(event_type) {
                return Err(invalid(
                    k,
                    "not an event type of [events] (a segment changes the points of named types only)",
                ));
            }
            check_finite(&k, *points)?;
        }
    }
    Ok(())
}

/// The default model file, compiled in so every command works out of the box.
pub const DEFAULT_MODEL_TOML: &str = include_str!("../../../config/model.toml");

/// `[event_time]` (or its defaults) compiled, checked.
fn compile_event_time(spec: Option<&EventTimeSpec>) -> Result<EventTimeBounds, ModelError> {
    let default = EventTimeSpec::default();
    let spec = spec.unwrap_or(&default);
    check_positive("event_time.max_past_age_days", spec.max_past_age_days)?;
    if spec.max_past_age_days > 1_000_000.0 {
        return Err(invalid(
            "event_time.max_past_age_days",
            "must be at most 1000000",
        ));
    }
    let earliest_ms = crate::event::parse_timestamp_ms(&spec.earliest).map_err(|e| {
        invalid(
            "event_time.earliest",
            format!("must be an RFC 3339 date-time with an offset, e.g. {DEFAULT_EARLIEST}: {e}"),
        )
    })?;
    Ok(EventTimeBounds {
        earliest_ms,
        max_past_age_ms: (spec.max_past_age_days * MS_PER_DAY) as i64,
    })
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ModelError {
    ModelError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

fn check_finite(key: &str, v: f64) -> Result<(), ModelError> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(invalid(key, "must be a finite number"))
    }
}

fn check_positive(key: &str, v: f64) -> Result<(), ModelError> {
    check_finite(key, v)?;
    if v > 0.0 {
        Ok(())
    } else {
        Err(invalid(key, "must be greater than 0"))
    }
}

fn check_non_negative(key: &str, v: f64) -> Result<(), ModelError> {
    check_finite(key, v)?;
    if v >= 0.0 {
        Ok(())
    } else {
        Err(invalid(key, "must not be negative"))
    }
}

fn validate(spec: &ModelSpec) -> Result<(), ModelError> {
    if spec.model_version.trim().is_empty() {
        return Err(invalid("model_version", "must not be empty"));
    }
    check_finite("score.base_points", spec.score.base_points)?;
    check_finite("score.midpoint", spec.score.midpoint)?;
    check_positive("score.scale", spec.score.scale)?;

    let a = &spec.alert;
    for (key, v) in [
        ("alert.at_risk_threshold", a.at_risk_threshold),
        ("alert.recovery_threshold", a.recovery_threshold),
    ] {
        check_finite(key, v)?;
        if !(0.0..=100.0).contains(&v) {
            return Err(invalid(key, "must be between 0 and 100"));
        }
    }
    if a.recovery_threshold >= a.at_risk_threshold {
        return Err(invalid(
            "alert.recovery_threshold",
            "must be below alert.at_risk_threshold (hysteresis)",
        ));
    }
    check_non_negative("alert.cooldown_hours", a.cooldown_hours)?;

    check_positive(
        "activity.short_half_life_days",
        spec.activity.short_half_life_days,
    )?;
    check_positive(
        "activity.long_half_life_days",
        spec.activity.long_half_life_days,
    )?;
    if spec.activity.short_half_life_days >= spec.activity.long_half_life_days {
        return Err(invalid(
            "activity.short_half_life_days",
            "must be shorter than activity.long_half_life_days",
        ));
    }
    check_finite(
        "frequency.points_per_event",
        spec.frequency.points_per_event,
    )?;
    check_non_negative("frequency.cap", spec.frequency.cap)?;
    // Trend points fall as recent activity rises; a negative value would make
    // silence lower the risk, which the engine promises never happens.
    check_non_negative("trend.points", spec.trend.points)?;
    check_non_negative("trend.min_events", spec.trend.min_events)?;

    let mut prev_days = 0.0;
    let mut prev_points = 0.0;
    for (i, step) in spec.inactivity.steps.iter().enumerate() {
        let key = format!("inactivity.steps[{i}]");
        check_positive(&format!("{key}.after_days"), step.after_days)?;
        check_non_negative(&format!("{key}.points"), step.points)?;
        if step.after_days <= prev_days {
            return Err(invalid(
                format!("{key}.after_days"),
                "steps must be in increasing order of after_days",
            ));
        }
        if step.points < prev_points {
            return Err(invalid(
                format!("{key}.points"),
                "points must not decrease with longer silence",
            ));
        }
        prev_days = step.after_days;
        prev_points = step.points;
    }

    if let Some(rhythm) = &spec.rhythm {
        check_positive("rhythm.prior_gap_days", rhythm.prior_gap_days)?;
        check_positive("rhythm.prior_events", rhythm.prior_events)?;
        check_non_negative("rhythm.min_gap_days", rhythm.min_gap_days)?;
        if rhythm.steps.is_empty() {
            return Err(invalid(
                "rhythm.steps",
                "needs at least one step (remove [rhythm] to score silence in days only)",
            ));
        }
        let mut prev_gaps = 0.0;
        let mut prev_points = 0.0;
        for (i, step) in rhythm.steps.iter().enumerate() {
            let key = format!("rhythm.steps[{i}]");
            check_positive(&format!("{key}.after_gaps"), step.after_gaps)?;
            check_non_negative(&format!("{key}.points"), step.points)?;
            if step.after_gaps <= prev_gaps {
                return Err(invalid(
                    format!("{key}.after_gaps"),
                    "steps must be in increasing order of after_gaps",
                ));
            }
            if step.points < prev_points {
                return Err(invalid(
                    format!("{key}.points"),
                    "points must not decrease with longer silence",
                ));
            }
            prev_gaps = step.after_gaps;
            prev_points = step.points;
        }
        check_label("rhythm.label", "rhythm", rhythm.label.as_deref())?;
    }

    check_positive("spend.half_life_days", spec.spend.half_life_days)?;
    check_finite(
        "spend.points_per_log_amount",
        spec.spend.points_per_log_amount,
    )?;
    check_finite("tenure.points_per_year", spec.tenure.points_per_year)?;
    check_non_negative("tenure.max_years", spec.tenure.max_years)?;

    if spec.events.len() > MAX_EVENT_TYPES {
        return Err(invalid(
            "events",
            format!(
                "{} event types named; at most {MAX_EVENT_TYPES}",
                spec.events.len()
            ),
        ));
    }
    for (name, rule) in &spec.events {
        let key = format!("events.{name}");
        if name.is_empty() || name.len() > crate::event::MAX_EVENT_TYPE_BYTES {
            return Err(invalid(key, "event type names are 1-128 bytes"));
        }
        check_finite(&format!("{key}.points"), rule.points)?;
        check_positive(&format!("{key}.half_life_days"), rule.half_life_days)?;
        check_non_negative(&format!("{key}.cap"), rule.cap)?;
        check_label(
            &format!("{key}.label"),
            &format!("event:{name}"),
            rule.label.as_deref(),
        )?;
    }
    if let Some(seg) = &spec.segments {
        validate_segments(spec, seg)?;
    }
    for (factor, label) in [
        ("frequency", spec.frequency.label.as_deref()),
        ("trend", spec.trend.label.as_deref()),
        ("inactivity", spec.inactivity.label.as_deref()),
        ("spend", spec.spend.label.as_deref()),
        ("tenure", spec.tenure.label.as_deref()),
    ] {
        check_label(&format!("{factor}.label"), factor, label)?;
    }
    Ok(())
}

/// A label is plain text with, optionally, the factor's placeholders
/// (`factor` is the code whose reasons fill them).
fn check_label(key: &str, factor: &str, label: Option<&str>) -> Result<(), ModelError> {
    match label {
        Some(l) if l.trim().is_empty() => Err(invalid(
            key,
            "must not be empty (remove it for the default)",
        )),
        Some(l) if l.chars().count() > 200 => Err(invalid(key, "at most 200 characters")),
        Some(l) => {
            let known = label_placeholders(factor);
            match placeholders_in(l).find(|p| !known.contains(p)) {
                None => Ok(()),
                Some(p) if known.is_empty() => Err(invalid(
                    key,
                    format!("unknown placeholder {{{p}}}: this factor's label takes none"),
                )),
                Some(p) => Err(invalid(
                    key,
                    format!(
                        "unknown placeholder {{{p}}}; this factor's label may use {}",
                        known
                            .iter()
                            .map(|k| format!("{{{k}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            }
        }
        None => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn default_model_loads() {
        let m = RiskModel::default_model();
        assert!(!m.version().is_empty());
        assert!(m.kind_of("purchase").is_some());
        assert!(m.kind_of("no-such-type").is_none());
    }

    fn with_default(edit: impl Fn(&mut toml::Table)) -> Result<RiskModel, ModelError> {
        let mut table: toml::Table = toml::from_str(DEFAULT_MODEL_TOML).expect("valid toml");
        edit(&mut table);
        RiskModel::from_toml(&toml::to_string(&table).expect("serializable"))
    }

    fn key_of(err: ModelError) -> String {
        match err {
            ModelError::Syntax { key, .. } | ModelError::Invalid { key, .. } => key,
            ModelError::Read { path, .. } => path,
        }
    }

    #[test]
    fn errors_name_the_key() {
        let err = with_default(|t| {
            t["score"]
                .as_table_mut()
                .expect("table")
                .insert("scale".into(), toml::Value::Float(0.0));
        })
        .expect_err("zero scale");
        assert_eq!(key_of(err), "score.scale");

        let err = with_default(|t| {
            t["score"]
                .as_table_mut()
                .expect("table")
                .insert("scale".into(), toml::Value::String("ten".into()));
        })
        .expect_err("string scale");
        assert_eq!(key_of(err), "score.scale");

        let err = with_default(|t| {
            t["alert"]
                .as_table_mut()
                .expect("table")
                .insert("bogus".into(), toml::Value::Integer(1));
        })
        .expect_err("unknown key");
        assert!(key_of(err).starts_with("alert"));

        let err = with_default(|t| {
            t["events"]["purchase"]
                .as_table_mut()
                .expect("table")
                .insert("half_life_days".into(), toml::Value::Float(-1.0));
        })
        .expect_err("negative half-life");
        assert_eq!(key_of(err), "events.purchase.half_life_days");

        let err = with_default(|t| {
            t["alert"]
                .as_table_mut()
                .expect("table")
                .insert("recovery_threshold".into(), toml::Value::Float(99.0));
        })
        .expect_err("no hysteresis");
        assert_eq!(key_of(err), "alert.recovery_threshold");

        let err = with_default(|t| {
            t.remove("model_version");
        })
        .expect_err("missing version");
        assert!(err.to_string().contains("model_version"), "{err}");
    }

    #[test]
    fn inactivity_is_piecewise_linear_and_flat_after_the_last_step() {
        let m = RiskModel::default_model();
        let steps = m.inactivity_steps_ms().to_vec();
        assert_eq!(m.inactivity_points(0), 0.0);
        for &(at, points) in &steps {
            assert!((m.inactivity_points(at) - points).abs() < 1e-12);
        }
        let (last_at, last_points) = *steps.last().expect("steps");
        assert_eq!(m.inactivity_points(last_at * 10), last_points);
    }

    #[test]
    fn labels_come_from_the_file_or_the_defaults() {
        let m = with_default(|t| {
            t["events"]["purchase"]
                .as_table_mut()
                .expect("table")
                .insert(
                    "label".into(),
                    toml::Value::String("Bought something".into()),
                );
        })
        .expect("valid");
        assert_eq!(m.label("event:purchase"), "Bought something");
        assert_eq!(
            default_label("event:plan_downgrade"),
            "Plan downgrade ({count}× recently)"
        );
        assert_eq!(
            m.label("event:no-such_type"),
            "No such type ({count}× recently)"
        );
        assert!(!m.label("inactivity").is_empty());
        let e = with_default(|t| {
            t["inactivity"]
                .as_table_mut()
                .expect("table")
                .insert("label".into(), toml::Value::String(" ".into()));
        })
        .expect_err("blank label");
        assert_eq!(key_of(e), "inactivity.label");
    }

    #[test]
    fn labels_are_filled_with_their_reasons_quantities() {
        let q = Quantities::default()
            .with(placeholder::DAYS, 41.4)
            .with(placeholder::GAP, 14.6)
            .with(placeholder::GAPS, 2.83);
        let m = RiskModel::default_model();
        assert_eq!(
            m.reason_label("rhythm", &q),
            "Quiet for 41 days — 2.8× their usual gap of 15 days"
        );
        assert_eq!(
            fill_label("{days}/{gaps}/{nope}/{", &q),
            "41/2.8/{nope}/{",
            "an unknown placeholder stays as written"
        );
        let whole = Quantities::default().with(placeholder::COUNT, 2.0);
        assert_eq!(fill_label("{count}×", &whole), "2×", "no trailing .0");
        // Every default label takes only its factor's placeholders.
        for f in [
            "frequency",
            "trend",
            "inactivity",
            "rhythm",
            "spend",
            "tenure",
            "event:x",
        ] {
            let known = label_placeholders(f);
            assert!(
                placeholders_in(&default_label(f)).all(|p| known.contains(&p)),
                "{f}"
            );
            assert!(
                placeholders_in(&m.label(f)).all(|p| known.contains(&p)),
                "{f}"
            );
        }
        let e = with_default(|t| {
            t["inactivity"].as_table_mut().expect("table").insert(
                "label".into(),
                toml::Value::String("Quiet for {gaps} gaps".into()),
            );
        })
        .expect_err("a placeholder inactivity does not fill");
        let message = e.to_string();
        assert!(message.contains("{days}"), "{message}");
        assert_eq!(key_of(e), "inactivity.label");
    }

    /// The default model with segments by `plan`.
    pub(crate) const SEGMENTS_TOML: &str = r#"
[segments]
property = "plan"
default = "self-serve"

[segments.values.enterprise]
at_risk_threshold = 60.0
recovery_threshold = 40.0

[segments.values.free]
at_risk_threshold = 90.0

[segments.values.free.points]
support_ticket = 1.0
"#;

    /// The default model with [`SEGMENTS_TOML`].
    pub(crate) fn segmented() -> RiskModel {
        RiskModel::from_toml(&format!("{DEFAULT_MODEL_TOML}\n{SEGMENTS_TOML}")).expect("valid")
    }

    #[test]
    fn segments_compile_with_their_own_thresholds_and_points() {
        let m = segmented();
        assert!(m.has_segments());
        assert_eq!(m.segment_property(), Some("plan"));
        assert_eq!(m.segment_names(), ["self-serve", "enterprise", "free"]);
        let ent = m.segment_index("enterprise");
        let free = m.segment_index("free");
        assert_eq!((ent, free), (1, 2));
        assert_eq!(
            m.segment_index("trial"),
            0,
            "undeclared values: the default"
        );
        assert_eq!(m.segment_index(&"x".repeat(65)), 0);
        assert_eq!(m.segment_name(0), Some("self-serve"));
        assert_eq!(m.declared_segment("self-serve"), None);
        let alert = m.alert_policy().clone();
        assert_eq!(m.alert_policy_for(0), &alert);
        assert_eq!(m.alert_policy_for(ent).at_risk_threshold, 60.0);
        assert_eq!(m.alert_policy_for(ent).recovery_threshold, 40.0);
        assert_eq!(m.alert_policy_for(free).at_risk_threshold, 90.0);
        assert_eq!(
            m.alert_policy_for(free).recovery_threshold,
            alert.recovery_threshold
        );
        assert_eq!(
            m.alert_policy_for(free).cooldown_hours,
            alert.cooldown_hours
        );
        let ticket = usize::from(m.kind_of("support_ticket").expect("named"));
        assert_eq!(m.event_points(free, ticket), 1.0);
        assert_eq!(m.event_points(ent, ticket), 5.0);
        assert_eq!(m.event_points(0, ticket), 5.0);
        let plain = RiskModel::default_model();
        assert!(!plain.has_segments());
        assert_eq!(plain.segment_name(0), None);
        assert_eq!(plain.alert_policy_for(3), plain.alert_policy());
    }

    #[test]
    fn segment_errors_name_the_key() {
        let load = |extra: &str| {
            RiskModel::from_toml(&format!("{DEFAULT_MODEL_TOML}\n{extra}"))
                .map(|_| ())
                .map_err(key_of)
        };
        let cases = [
            (
                "[segments]\nproperty = \"plan\"\n[segments.values.pro]\nat_risk_threshold = 101.0\n",
                "segments.values.pro.at_risk_threshold",
            ),
            (
                "[segments]\nproperty = \"plan\"\n[segments.values.pro]\nat_risk_threshold = 50.0\n",
                "segments.values.pro.at_risk_threshold",
            ),
            (
                "[segments]\nproperty = \"plan\"\n[segments.values.pro]\nrecovery_threshold = 80.0\n",
                "segments.values.pro.recovery_threshold",
            ),
            (
                "[segments]\nproperty = \"plan\"\n[segments.values.pro.points]\nno_such_type = 1.0\n",
                "segments.values.pro.points.no_such_type",
            ),
            (
                "[segments]\nproperty = \"\"\n[segments.values.pro]\n",
                "segments.property",
            ),
            (
                "[segments]\nproperty = \"plan\"\ndefault = \"pro\"\n[segments.values.pro]\n",
                "segments.default",
            ),
            (
                "[segments]\nproperty = \"plan\"\nvalues = {}\n",
                "segments.values",
            ),
            (
                "[segments]\nproperty = \"plan\"\n[segments.values.pro]\nbogus = 1\n",
                "segments.values.pro",
            ),
        ];
        for (extra, key) in cases {
            let got = load(extra).expect_err(extra);
            assert!(got.starts_with(key), "{extra}: {got}");
        }
        let many: String = (0..=MAX_SEGMENTS)
            .map(|i| format!("[segments.values.s{i}]\n"))
            .collect();
        assert_eq!(
            load(&format!("[segments]\nproperty = \"plan\"\n{many}")),
            Err("segments.values".to_string())
        );
        let long = "x".repeat(MAX_SEGMENT_NAME_BYTES + 1);
        assert_eq!(
            load(&format!(
                "[segments]\nproperty = \"plan\"\n[segments.values.{long}]\n"
            )),
            Err(format!("segments.values.{long}"))
        );
    }

    #[test]
    fn risk_mapping_is_logistic() {
        let m = RiskModel::default_model();
        let mid = m.spec().score.midpoint;
        assert!((m.risk_from_points(mid) - 50.0).abs() < 1e-12);
        assert!(m.risk_from_points(mid + 1.0) > 50.0);
    }
}
