//! Offline replay of JSON-lines event files through the engine, and the
//! `score` command built on it.
//!
//! One replay loop serves `score`, `backtest` and `fit`: it streams the input
//! (memory grows with customers, not events), reports each bad line without
//! stopping, and ignores events past a time limit so that no future leaks in.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use serde::Serialize;

use crate::engine::{CustomerState, CustomerStore};
use crate::event::{EventError, format_timestamp_ms};
use crate::input::{DecodeError, InputFormat, MessageContext};
use crate::model::{EventTimeBounds, RiskModel};

/// Which events a replay takes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeLimit {
    /// Every event.
    None,
    /// Events at or before this time (`score --as-of`).
    Through(i64),
    /// Events strictly before this time (a backtest cutoff).
    Before(i64),
}

impl TimeLimit {
    fn admits(self, t_ms: i64) -> bool {
        match self {
            TimeLimit::None => true,
            TimeLimit::Through(limit) => t_ms <= limit,
            TimeLimit::Before(limit) => t_ms < limit,
        }
    }
}

/// A line the replay could not use.
#[derive(Debug, Clone, PartialEq)]
pub struct BadLine {
    /// 1-based line number.
    pub line: u64,
    /// The parser's error.
    pub error: EventError,
    /// Where a mapped format failed (a JSON pointer such as `/userId`).
    pub source: Option<std::sync::Arc<str>>,
}

impl BadLine {
    /// The reason label with the source that failed (`missing_field: /userId`).
    pub fn reason_with_source(&self) -> std::borrow::Cow<'static, str> {
        DecodeError {
            error: self.error.clone(),
            source: self.source.clone(),
        }
        .reason_with_source()
    }
}

/// Errors that stop a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Reading the input failed.
    #[error("reading events: {0}")]
    Io(#[from] std::io::Error),
    /// `--strict` and a line was bad.
    #[error("line {}: {} ({})", .0.line, .0.error, .0.reason_with_source())]
    Strict(BadLine),
}

/// What a replay read, accepted, rejected and ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReplayStats {
    /// Lines read (blank lines included).
    pub lines_read: u64,
    /// Events applied to the engine.
    pub accepted: u64,
    /// Lines rejected, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Valid events past the time limit, not applied.
    pub ignored_after_limit: u64,
    /// Valid messages the input mapping's `include`/`exclude` lists leave out.
    #[serde(skip_serializing_if = "is_zero")]
    pub excluded: u64,
    /// Latest event time applied.
    pub max_event_ms: Option<i64>,
}

impl ReplayStats {
    /// Lines read that were neither accepted, rejected nor ignored (blank).
    pub fn blank_lines(&self) -> u64 {
        self.lines_read
            .saturating_sub(self.accepted)
            .saturating_sub(self.rejected_total())
            .saturating_sub(self.ignored_after_limit)
            .saturating_sub(self.excluded)
    }

    /// Total rejected lines.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Replays JSON-lines events from `input` into `store`.
///
/// Bad lines are passed to `on_bad_line` and counted; with `strict` the first
/// one stops the replay instead.
pub fn replay(
    input: impl BufRead,
    model: &RiskModel,
    store: &mut CustomerStore,
    limit: TimeLimit,
    strict: bool,
    on_bad_line: impl FnMut(&BadLine),
) -> Result<ReplayStats, ReplayError> {
    replay_with(
        &InputFormat::Churn,
        input,
        model,
        store,
        limit,
        strict,
        on_bad_line,
    )
}

/// As [`replay`], with lines read in the input format `format`.
pub fn replay_with(
    format: &InputFormat,
    input: impl BufRead,
    model: &RiskModel,
    store: &mut CustomerStore,
    limit: TimeLimit,
    strict: bool,
    on_bad_line: impl FnMut(&BadLine),
) -> Result<ReplayStats, ReplayError> {
    replay_each_with(
        format,
        input,
        limit,
        model.event_time_bounds(),
        strict,
        on_bad_line,
        |event| {
            store.apply(model, event, None, false);
        },
    )
}

/// The replay loop: parses `input`, counts, reports bad lines (or stops at
/// the first with `strict`), and hands every event the time limit admits to
/// `apply`, in input order.
///
/// An event older than `bounds` allow — against the newest event time
/// applied so far, as the live worker judges it against its partition's —
/// is a bad line (`timestamp_too_old`) and never applied.
pub fn replay_each(
    input: impl BufRead,
    limit: TimeLimit,
    bounds: EventTimeBounds,
    strict: bool,
    on_bad_line: impl FnMut(&BadLine),
    apply: impl FnMut(&crate::event::CustomerEvent<'_>),
) -> Result<ReplayStats, ReplayError> {
    replay_each_with(
        &InputFormat::Churn,
        input,
        limit,
        bounds,
        strict,
        on_bad_line,
        apply,
    )
}

/// As [`replay_each`], with lines read in the input format `format` (a file
/// has no message key, timestamp or headers).
pub fn replay_each_with(
    format: &InputFormat,
    input: impl BufRead,
    limit: TimeLimit,
    bounds: EventTimeBounds,
    strict: bool,
    mut on_bad_line: impl FnMut(&BadLine),
    mut apply: impl FnMut(&crate::event::CustomerEvent<'_>),
) -> Result<ReplayStats, ReplayError> {
    let mut stats = ReplayStats::default();
    let no_context = MessageContext::default();
    for_each_line(input, |line_no, line| {
        stats.lines_read = line_no;
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let decoded = format
            .decode(line, &no_context)
            .and_then(|event| match event {
                Some(event) => bounds
                    .check(event.timestamp_ms, stats.max_event_ms)
                    .map(|()| Some(event))
                    .map_err(|error| DecodeError {
                        error,
                        source: None,
                    }),
                None => Ok(None),
            });
        match decoded {
            Ok(None) => stats.excluded += 1,
            Ok(Some(event)) => {
                if !limit.admits(event.timestamp_ms) {
                    stats.ignored_after_limit += 1;
                    return Ok(());
                }
                apply(&event);
                stats.accepted += 1;
                stats.max_event_ms = Some(
                    stats
                        .max_event_ms
                        .map_or(event.timestamp_ms, |m| m.max(event.timestamp_ms)),
                );
            }
            Err(DecodeError { error, source }) => {
                let bad = BadLine {
                    line: line_no,
                    error,
                    source,
                };
                if strict {
                    return Err(ReplayError::Strict(bad));
                }
                *stats.rejected.entry(bad.error.reason()).or_default() += 1;
                on_bad_line(&bad);
            }
        }
        Ok(())
    })?;
    Ok(stats)
}

/// An alert decision of an offline replay, with its customer.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayedAlert {
    /// The customer.
    pub customer_id: String,
    /// The engine's decision.
    pub decision: crate::engine::AlertDecision,
}

/// Replays events in the order given as the live worker applies one
/// partition's stream ([`CustomerStore::apply_in_stream`]): the clock is the
/// newest event time less `lateness_ms`, and inactivity timers fire as it
/// passes them. Returns every alert decision in order; lines that are not
/// valid events are skipped. Timers after the last event do not fire: only
/// the worker's idle rule (wall clock) would fire them.
pub fn replay_alerts<'a>(
    model: &RiskModel,
    lines: impl IntoIterator<Item = &'a [u8]>,
    lateness_ms: i64,
) -> Vec<ReplayedAlert> {
    replay_alerts_with(&InputFormat::Churn, model, lines, lateness_ms)
}

/// As [`replay_alerts`], with lines read in the input format `format`.
pub fn replay_alerts_with<'a>(
    format: &InputFormat,
    model: &RiskModel,
    lines: impl IntoIterator<Item = &'a [u8]>,
    lateness_ms: i64,
) -> Vec<ReplayedAlert> {
    use crate::engine::{ApplyOutcome, StreamClock};
    let mut store = CustomerStore::new();
    let mut clock = StreamClock::new(lateness_ms);
    let bounds = model.event_time_bounds();
    let mut firings = Vec::new();
    let mut out = Vec::new();
    let no_context = MessageContext::default();
    for line in lines {
        let Ok(Some(event)) = format.decode(line, &no_context) else {
            continue;
        };
        // As the worker dead-letters it: judged against the clock's newest event.
        if bounds
            .check(event.timestamp_ms, clock.max_event_ms)
            .is_err()
        {
            continue;
        }
        firings.clear();
        let (outcome, _late) = store.apply_in_stream(model, &mut clock, &event, None, &mut firings);
        for f in &firings {
            if let Some(decision) = f.decision {
                out.push(ReplayedAlert {
                    customer_id: store.id(f.customer).to_string(),
                    decision,
                });
            }
        }
        if let ApplyOutcome::Scored {
            decision: Some(decision),
            ..
        } = outcome
        {
            out.push(ReplayedAlert {
                customer_id: event.customer_id.to_string(),
                decision,
            });
        }
    }
    out
}

/// Calls `f` with each line of `input` (1-based number, line ending
/// removed), reusing one buffer: memory does not grow with the input.
pub fn for_each_line<E: From<std::io::Error>>(
    mut input: impl BufRead,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let mut buf = Vec::with_capacity(512);
    let mut line_no = 0_u64;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        line_no += 1;
        f(line_no, trim_line_end(&buf))?;
    }
}

fn trim_line_end(buf: &[u8]) -> &[u8] {
    let mut end = buf.len();
    while end > 0 && (buf[end - 1] == b'\n' || buf[end - 1] == b'\r') {
        end -= 1;
    }
    &buf[..end]
}

/// One line of `score` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomerScore {
    /// The customer.
    pub customer_id: String,
    /// 0–100, higher means more likely to churn.
    pub risk_score: f64,
    /// `low`, `medium` or `high` under the model's alert thresholds.
    pub band: &'static str,
    /// Total points behind the score.
    pub points: f64,
    /// For people: at most three reasons that raised the risk, in words
    /// with their quantities, as an at-risk alert at `as_of` would give them
    /// ([`crate::alert::risk_summary`]).
    pub summary: Vec<String>,
    /// Every non-zero factor, largest points first.
    pub reasons: Vec<ScoredReason>,
    /// Time of the customer's latest event (RFC 3339, UTC).
    pub last_event_at: String,
    /// Events applied.
    pub events: u32,
    /// The customer's segment (absent when the model has no `[segments]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
}

/// One factor of a `score` line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoredReason {
    /// Factor code (`inactivity`, `event:complaint`, …), stable for machines.
    pub factor: String,
    /// The factor in words with its quantities, as alerts and `/v1` show it.
    pub label: String,
    /// Points it contributed (positive adds risk), unrounded.
    pub points: f64,
}

/// Scores one customer at `as_of_ms`.
pub fn score_customer(
    model: &RiskModel,
    customer_id: &str,
    state: &CustomerState,
    as_of_ms: i64,
) -> CustomerScore {
    let e = state.explain(model, as_of_ms);
    CustomerScore {
        customer_id: customer_id.to_string(),
        risk_score: e.risk_score,
        band: model.band(state.segment(), e.risk_score),
        points: e.points,
        summary: crate::alert::risk_summary(&e.reasons, model),
        reasons: e
            .reasons
            .into_iter()
            .map(|r| ScoredReason {
                label: model.reason_label(&r.factor, &r.quantities),
                factor: r.factor,
                points: r.points,
            })
            .collect(),
        last_event_at: format_timestamp_ms(state.last_event_ms()),
        events: state.events(),
        segment: model.segment_name(state.segment()).map(str::to_string),
    }
}

/// Options of the `score` command.
#[derive(Debug, Clone)]
pub struct ScoreOptions {
    /// Score at this time; default: the latest event time in the input.
    pub as_of_ms: Option<i64>,
    /// Stop at the first bad line.
    pub strict: bool,
}

/// Runs `score`: replays `input`, writes one JSON line per customer (sorted
/// by id) to `out`, reports bad lines and a summary to `report`.
pub fn run_score(
    model: &RiskModel,
    input: impl BufRead,
    out: &mut impl Write,
    report: &mut impl Write,
    options: &ScoreOptions,
) -> Result<ReplayStats, ScoreError> {
    run_score_with(&InputFormat::Churn, model, input, out, report, options)
}

/// As [`run_score`], with lines read in the input format `format`. A bad
/// line's report names the mapping's source that failed:
/// `line 3: missing_field: /userId or /anonymousId: missing field `customer_id``.
pub fn run_score_with(
    format: &InputFormat,
    model: &RiskModel,
    input: impl BufRead,
    out: &mut impl Write,
    report: &mut impl Write,
    options: &ScoreOptions,
) -> Result<ReplayStats, ScoreError> {
    let mut store = CustomerStore::new();
    let limit = options.as_of_ms.map_or(TimeLimit::None, TimeLimit::Through);
    let mut report_err = None;
    let stats = replay_with(
        format,
        input,
        model,
        &mut store,
        limit,
        options.strict,
        |bad| {
            if let Err(e) = writeln!(
                report,
                "line {}: {}: {}",
                bad.line,
                bad.reason_with_source(),
                bad.error
            ) {
                report_err.get_or_insert(e);
            }
        },
    )?;
    if let Some(e) = report_err {
        return Err(ScoreError::Output(e));
    }
    if stats.accepted == 0 {
        let why = if stats.lines_read == 0 || stats.lines_read == stats.blank_lines() {
            "the input is empty".to_string()
        } else if stats.rejected_total() > 0 && stats.ignored_after_limit == 0 {
            format!("all {} non-blank lines are invalid", stats.rejected_total())
        } else {
            format!(
                "{} invalid, {} after --as-of",
                stats.rejected_total(),
                stats.ignored_after_limit
            )
        };
        if options.strict {
            return Err(ScoreError::NoEvents(why));
        }
        writeln!(report, "warning: no events scored: {why}").map_err(ScoreError::Output)?;
    }
    let as_of = options.as_of_ms.or(stats.max_event_ms);
    let mut customers: Vec<(&str, &CustomerState)> = store.iter().collect();
    customers.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (id, state) in customers {
        let as_of = as_of.unwrap_or_else(|| state.last_event_ms());
        let line = serde_json::to_string(&score_customer(model, id, state, as_of))
            .map_err(|e| ScoreError::Output(e.into()))?;
        writeln!(out, "{line}").map_err(ScoreError::Output)?;
    }
    out.flush().map_err(ScoreError::Output)?;
    let rejected: Vec<String> = stats
        .rejected
        .iter()
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    writeln!(
        report,
        "summary: read={} accepted={} rejected={}{} ignored_after_as_of={}{} customers={} as_of={}",
        stats.lines_read,
        stats.accepted,
        stats.rejected_total(),
        if rejected.is_empty() {
            String::new()
        } else {
            format!(" ({})", rejected.join(" "))
        },
        stats.ignored_after_limit,
        if stats.excluded > 0 {
            format!(" excluded_by_mapping={}", stats.excluded)
        } else {
            String::new()
        },
        store.len(),
        as_of.map_or_else(|| "none".to_string(), format_timestamp_ms)
    )
    .map_err(ScoreError::Output)?;
    Ok(stats)
}

/// Errors of the `score` command.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// The replay stopped.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(std::io::Error),
    /// `--strict` and no event could be scored.
    #[error("no events scored: {0}")]
    NoEvents(String),
}
