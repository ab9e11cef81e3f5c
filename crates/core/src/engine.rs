//! The scoring engine: per-customer state, scores with their reasons, alert
//! decisions and inactivity timers.
//!
//! Pure, synchronous and deterministic: no clock, no I/O, no Kafka. Time is
//! event time (milliseconds since the Unix epoch) passed in by the caller. The
//! offline commands and the live worker call exactly this code.
//!
//! Decayed counters are kept as their value at the customer's latest event
//! time; an older event is added with its own decay, so the state (and every
//! score) is the same whatever order the events arrive in.

use compact_str::CompactString;
use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::hash::BuildHasher;

use crate::event::CustomerEvent;
use crate::model::{
    AlertPolicy, GROUP_LONG, GROUP_SHORT, GROUP_SPEND, Quantities, Rhythm, RiskModel, placeholder,
};

const MS_PER_HOUR: f64 = 3_600_000.0;
const MS_PER_DAY: f64 = 86_400_000.0;
const MS_PER_YEAR: f64 = 365.25 * 86_400_000.0;
/// "No offset applied yet."
const NO_OFFSET: i64 = -1;
/// "No timer scheduled" (the model has no inactivity steps) / "no alert yet".
const NEVER: i64 = i64::MIN;
/// Every inactivity step after the latest event has fired. Kept apart from
/// [`NEVER`] so that a restored state does not fire its steps a second time.
const STEPS_DONE: i64 = i64::MAX;

/// Everything the engine remembers about one customer.
///
/// Decayed counters hold their value at `last_event_ms`. Per-type counters
/// are stored only for the types this customer has produced (`type_mask`),
/// which keeps the state near 100 bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerState {
    pub(crate) first_event_ms: i64,
    pub(crate) last_event_ms: i64,
    pub(crate) last_offset: i64,
    pub(crate) last_alert_ms: i64,
    pub(crate) timer_due_ms: i64,
    pub(crate) activity_short: f64,
    pub(crate) activity_long: f64,
    pub(crate) spend: f64,
    pub(crate) last_risk: f32,
    pub(crate) events: u32,
    pub(crate) alert_open: bool,
    /// The open at-risk alert was opened by silence (an inactivity step), so
    /// a late event from before it can show it was false.
    pub(crate) alert_by_inactivity: bool,
    pub(crate) type_mask: u64,
    pub(crate) type_counts: Box<[f64]>,
    /// The customer's segment (an index into the model's segments; 0: the
    /// default segment), from the latest event carrying the segment property.
    pub(crate) segment: u8,
    /// Event time of that event ([`NEVER`]: no event carried it).
    pub(crate) segment_ms: i64,
}

impl Default for CustomerState {
    fn default() -> Self {
        CustomerState {
            first_event_ms: 0,
            last_event_ms: 0,
            last_offset: NO_OFFSET,
            last_alert_ms: NEVER,
            timer_due_ms: NEVER,
            activity_short: 0.0,
            activity_long: 0.0,
            spend: 0.0,
            last_risk: 0.0,
            events: 0,
            alert_open: false,
            alert_by_inactivity: false,
            type_mask: 0,
            type_counts: Box::new([]),
            segment: 0,
            segment_ms: NEVER,
        }
    }
}

/// A contributor to a customer's points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Factor {
    /// The model's base points.
    Base,
    /// Points of one event type the model names (index into the model's kinds).
    Event(u8),
    /// Long-run activity frequency.
    Frequency,
    /// Recent activity against the customer's own long-run level.
    Trend,
    /// Silence since the last event, in days.
    Inactivity,
    /// Silence since the last event, in the customer's usual gaps.
    Rhythm,
    /// Decayed spend.
    Spend,
    /// Active tenure.
    Tenure,
}

impl Factor {
    /// The factor's name in reasons, e.g. `inactivity` or `event:complaint`.
    pub fn name<'m>(&self, model: &'m RiskModel) -> &'m str {
        match self {
            Factor::Base => "base",
            Factor::Event(k) => &model.kinds()[usize::from(*k)].factor,
            Factor::Frequency => "frequency",
            Factor::Trend => "trend",
            Factor::Inactivity => "inactivity",
            Factor::Rhythm => "rhythm",
            Factor::Spend => "spend",
            Factor::Tenure => "tenure",
        }
    }
}

/// One line of a score's explanation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    /// Factor name.
    pub factor: String,
    /// Points it contributed (positive adds risk).
    pub points: f64,
    /// The quantities behind the points (days silent, counts, amounts…),
    /// named as the placeholders of the factor's label
    /// ([`crate::model::label_placeholders`]); see [`RiskModel::reason_label`].
    #[serde(skip)]
    pub quantities: Quantities,
}

/// A risk score with the points behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// 0–100, higher means more likely to churn.
    pub risk_score: f64,
    /// Sum of all factors' points; `risk_score` is the model's mapping of it.
    pub points: f64,
    /// Every non-zero factor, largest points first. Their points add up to `points`.
    pub reasons: Vec<Reason>,
}

/// A factor's input value and the model's weight for it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FactorValue {
    /// Which factor.
    pub factor: Factor,
    /// Its input: a decayed count, 1 − trend ratio, inactivity points, ln(1 + spend), years, or 1 for the base.
    pub value: f64,
    /// The model's points per unit of `value`.
    pub weight: f64,
}

/// Features of a customer at a moment, as the model sees them (for the HTTP
/// API and the analysts' tools).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Features {
    /// Events applied.
    pub events: u32,
    /// Days since the last event.
    pub silence_days: f64,
    /// The customer's usual gap between activity events, in days (when the
    /// model scores rhythm).
    pub usual_gap_days: Option<f64>,
    /// Years between first and last event.
    pub tenure_years: f64,
    /// Decayed activity events, recent counter.
    pub activity_recent: f64,
    /// Decayed activity events, long-run counter.
    pub activity_long_run: f64,
    /// Recent rate over long-run rate (1 = steady, 0 = stopped), if enough history.
    pub trend_ratio: Option<f64>,
    /// Decayed spend.
    pub spend: f64,
    /// Decayed count per event type the model names.
    pub event_counts: BTreeMap<String, f64>,
}

/// What kind of alert to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The customer's risk reached the at-risk threshold.
    AtRisk,
    /// An at-risk customer's risk fell to the recovery threshold.
    Recovered,
}

/// What made the engine decide an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertCause {
    /// An event arrived (on time) and re-scored the customer.
    Event,
    /// The customer stayed silent past an inactivity step.
    Inactivity,
    /// A late event showed the customer was active before an inactivity
    /// alert's time: that alert was false and is closed.
    LateActivity,
}

impl AlertCause {
    /// Every cause, for docs and tests.
    pub const ALL: [AlertCause; 3] = [
        AlertCause::Event,
        AlertCause::Inactivity,
        AlertCause::LateActivity,
    ];

    /// Stable label.
    pub fn as_str(&self) -> &'static str {
        match self {
            AlertCause::Event => "event",
            AlertCause::Inactivity => "inactivity",
            AlertCause::LateActivity => "late_activity",
        }
    }
}

impl AlertKind {
    /// Every kind, for metrics and docs.
    pub const ALL: [AlertKind; 2] = [AlertKind::AtRisk, AlertKind::Recovered];

    /// Stable label.
    pub fn as_str(&self) -> &'static str {
        match self {
            AlertKind::AtRisk => "at_risk",
            AlertKind::Recovered => "recovered",
        }
    }
}

/// The engine's decision to publish an alert.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlertDecision {
    /// Which alert.
    pub kind: AlertKind,
    /// Risk score that triggered it.
    pub risk_score: f64,
    /// Risk score at the customer's previous scoring.
    pub previous_score: f64,
    /// The threshold that was crossed.
    pub threshold: f64,
    /// Event time of the scoring that triggered it.
    pub event_time_ms: i64,
    /// What triggered it.
    pub cause: AlertCause,
    /// The customer's segment when it was decided (0 for a model without
    /// segments; see [`RiskModel::segment_name`]).
    pub segment: u8,
}

impl CustomerState {
    /// Events applied to this state.
    pub fn events(&self) -> u32 {
        self.events
    }

    /// Event time of the latest event.
    pub fn last_event_ms(&self) -> i64 {
        self.last_event_ms
    }

    /// Event time of the earliest event.
    pub fn first_event_ms(&self) -> i64 {
        self.first_event_ms
    }

    /// Input offset of the latest event applied, if it came from Kafka.
    pub fn last_offset(&self) -> Option<i64> {
        (self.last_offset != NO_OFFSET).then_some(self.last_offset)
    }

    /// Whether an at-risk alert is open.
    pub fn alert_open(&self) -> bool {
        self.alert_open
    }

    /// The customer's segment: an index into the model's segments (0: the
    /// default segment, also for a model without segments). Name it with
    /// [`RiskModel::segment_name`].
    pub fn segment(&self) -> u8 {
        self.segment
    }

    /// Puts the customer in `segment`, as an event at `t_ms` carrying the
    /// segment property says, unless an event later in event time already
    /// did: the segment is that of the latest such event whatever order
    /// events arrive in (at the same millisecond, the higher index wins).
    pub fn set_segment(&mut self, segment: u8, t_ms: i64) {
        if self.segment_ms == NEVER
            || t_ms > self.segment_ms
            || (t_ms == self.segment_ms && segment > self.segment)
        {
            self.segment = segment;
            self.segment_ms = t_ms;
        }
    }

    /// Applies one event at its own event time.
    pub fn apply(&mut self, model: &RiskModel, kind: Option<u8>, t_ms: i64, amount: Option<f64>) {
        if self.events == 0 {
            self.first_event_ms = t_ms;
            self.last_event_ms = t_ms;
        } else if t_ms > self.last_event_ms {
            self.advance_to(model, t_ms);
        }
        // Older events land at their own time: weight = decay from t to now.
        let age = self.last_event_ms - t_ms;
        if model.is_activity(kind) {
            self.activity_short += model.decay(GROUP_SHORT, age);
            self.activity_long += model.decay(GROUP_LONG, age);
        }
        // Spend is money a customer chose to spend: amounts on risk events
        // (refunds, failed payments) do not count as value.
        if let Some(amount) = amount
            && amount > 0.0
            && model.is_activity(kind)
        {
            self.spend += amount * model.decay(GROUP_SPEND, age);
        }
        if let Some(k) = kind {
            let group = model.kinds()[usize::from(k)].group;
            let slot = self.type_slot(k);
            self.type_counts[slot] += model.decay(group, age);
        }
        self.first_event_ms = self.first_event_ms.min(t_ms);
        self.events = self.events.saturating_add(1);
    }

    /// Re-keys the per-type counters, held for `old`'s event types, to
    /// `new`'s by type name (as the changelog does); counters of types `new`
    /// does not name are dropped. Counter values are kept as they are, even
    /// where `new` gives the type another half-life: they decay at the new
    /// rate from here on.
    pub(crate) fn remap_kinds(&mut self, old: &RiskModel, new: &RiskModel) {
        let mut counts: Vec<(u8, f64)> = Vec::with_capacity(self.type_counts.len());
        let mut mask = self.type_mask;
        let mut slot = 0;
        while mask != 0 {
            let k = mask.trailing_zeros() as usize;
            if let Some(kind) = old.kinds().get(k)
                && let Some(nk) = new.kind_of(&kind.name)
                && let Some(&c) = self.type_counts.get(slot)
            {
                counts.push((nk, c));
            }
            mask &= mask - 1;
            slot += 1;
        }
        counts.sort_by_key(|(k, _)| *k);
        self.type_mask = counts.iter().fold(0, |m, (k, _)| m | (1 << k));
        self.type_counts = counts.into_iter().map(|(_, c)| c).collect();
        self.remap_segment(old, new);
    }

    /// Re-keys the segment, held as `old`'s index, to `new`'s by name: a
    /// segment `new` does not declare becomes its default segment, and a
    /// `new` without segments forgets it (as a restore does).
    pub(crate) fn remap_segment(&mut self, old: &RiskModel, new: &RiskModel) {
        if !new.has_segments() {
            self.segment = 0;
            self.segment_ms = NEVER;
            return;
        }
        self.segment = match (self.segment, old.segment_name(self.segment)) {
            (0, _) | (_, None) => 0,
            (_, Some(name)) => new.declared_segment(name).unwrap_or(0),
        };
    }

    /// Moves every counter's reference time forward to `t_ms`.
    fn advance_to(&mut self, model: &RiskModel, t_ms: i64) {
        let dt = t_ms - self.last_event_ms;
        let mut cache = DecayCache::new(model, dt);
        self.activity_short *= cache.get(GROUP_SHORT);
        self.activity_long *= cache.get(GROUP_LONG);
        if self.spend != 0.0 {
            self.spend *= cache.get(GROUP_SPEND);
        }
        let mut mask = self.type_mask;
        let mut slot = 0;
        while mask != 0 {
            let k = mask.trailing_zeros() as usize;
            self.type_counts[slot] *= cache.get(model.kinds()[k].group);
            mask &= mask - 1;
            slot += 1;
        }
        self.last_event_ms = t_ms;
    }

    /// Index of type `k`'s counter, inserting a zero counter if absent.
    fn type_slot(&mut self, k: u8) -> usize {
        let bit = 1_u64 << k;
        let slot = (self.type_mask & (bit - 1)).count_ones() as usize;
        if self.type_mask & bit == 0 {
            let mut counts = Vec::with_capacity(self.type_counts.len() + 1);
            counts.extend_from_slice(&self.type_counts[..slot]);
            counts.push(0.0);
            counts.extend_from_slice(&self.type_counts[slot..]);
            self.type_counts = counts.into_boxed_slice();
            self.type_mask |= bit;
        }
        slot
    }

    /// Calls `sink` with every factor's points at `as_of_ms`, in a fixed order.
    ///
    /// `as_of_ms` earlier than the latest event is taken as the latest event.
    /// In silence, protective (negative) points fade with time while risk
    /// (positive) points hold at their value at the last event: so the score
    /// never falls while a customer stays silent.
    ///
    /// The sink receives `(factor, value, weight)`; the factor's points are
    /// `weight * value`, the weight being the model's points for that factor.
    fn contributions(
        &self,
        model: &RiskModel,
        as_of_ms: i64,
        mut sink: impl FnMut(Factor, f64, f64),
    ) {
        let spec = model.spec();
        let silence = (as_of_ms - self.last_event_ms).max(0);
        let mut cache = DecayCache::new(model, silence);

        sink(Factor::Base, 1.0, spec.score.base_points);

        let mut mask = self.type_mask;
        let mut slot = 0;
        while mask != 0 {
            let k = mask.trailing_zeros() as usize;
            let kind = &model.kinds()[k];
            let points = model.event_points(self.segment, k);
            let count = held_or_faded(self.type_counts[slot], points, &mut cache, kind.group);
            sink(Factor::Event(k as u8), count.min(kind.cap), points);
            mask &= mask - 1;
            slot += 1;
        }

        let freq = &spec.frequency;
        let long_now = self.activity_long * cache.get(GROUP_LONG);
        let long_for_freq = if freq.points_per_event > 0.0 {
            self.activity_long
        } else {
            long_now
        };
        sink(
            Factor::Frequency,
            long_for_freq.min(freq.cap),
            freq.points_per_event,
        );

        // Support is judged at the last event so that silence cannot switch the trend off.
        let trend = &spec.trend;
        let trend_value = if self.activity_long >= trend.min_events && self.activity_long > 0.0 {
            let short_now = self.activity_short * cache.get(GROUP_SHORT);
            1.0 - trend_ratio(model, short_now, long_now)
        } else {
            0.0
        };
        sink(Factor::Trend, trend_value, trend.points);

        // The steps carry the points; the weight 1 lets `fit` scale them as one factor.
        sink(Factor::Inactivity, model.inactivity_points(silence), 1.0);
        if model.has_rhythm() {
            sink(
                Factor::Rhythm,
                model.rhythm_points(silence, &self.rhythm(model)),
                1.0,
            );
        }

        let sp = &spec.spend;
        let spend = held_or_faded(
            self.spend,
            sp.points_per_log_amount,
            &mut cache,
            GROUP_SPEND,
        );
        sink(Factor::Spend, spend.ln_1p(), sp.points_per_log_amount);

        let tenure_years = (self.last_event_ms - self.first_event_ms) as f64 / MS_PER_YEAR;
        sink(
            Factor::Tenure,
            tenure_years.min(spec.tenure.max_years),
            spec.tenure.points_per_year,
        );
    }

    /// The customer's pace as of its last event (see [`RiskModel::rhythm`]).
    /// Fixed while the customer stays silent, so silence in gaps only grows.
    pub fn rhythm(&self, model: &RiskModel) -> Rhythm {
        model.rhythm(self.activity_long, self.last_event_ms - self.first_event_ms)
    }

    /// Total points at `as_of_ms` (the fast path: no allocation).
    pub fn points(&self, model: &RiskModel, as_of_ms: i64) -> f64 {
        let mut total = 0.0;
        self.contributions(model, as_of_ms, |_, v, w| total += w * v);
        total
    }

    /// Risk score (0–100) at `as_of_ms`.
    pub fn risk(&self, model: &RiskModel, as_of_ms: i64) -> f64 {
        model.risk_from_points(self.points(model, as_of_ms))
    }

    /// The risk score at `as_of_ms` with every factor behind it. Its
    /// `risk_score` equals [`CustomerState::risk`] exactly.
    pub fn explain(&self, model: &RiskModel, as_of_ms: i64) -> Explanation {
        let mut total = 0.0;
        let mut factors: Vec<(Factor, f64, f64)> = Vec::with_capacity(8);
        self.contributions(model, as_of_ms, |f, v, w| {
            let p = w * v;
            total += p;
            factors.push((f, p, v));
        });
        factors.retain(|(_, p, _)| *p != 0.0);
        factors.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Explanation {
            risk_score: model.risk_from_points(total),
            points: total,
            reasons: factors
                .into_iter()
                .map(|(f, p, v)| Reason {
                    factor: f.name(model).to_string(),
                    points: p,
                    quantities: self.quantities(model, f, v, as_of_ms),
                })
                .collect(),
        }
    }

    /// The quantities behind factor `f`'s points at `as_of_ms`, from its
    /// input `value` (as [`CustomerState::contributions`] gives it) and the
    /// state: what the factor's label placeholders show.
    fn quantities(&self, model: &RiskModel, f: Factor, value: f64, as_of_ms: i64) -> Quantities {
        let silence = (as_of_ms - self.last_event_ms).max(0);
        let days = silence as f64 / MS_PER_DAY;
        let q = Quantities::default();
        match f {
            Factor::Base => q,
            Factor::Inactivity => q.with(placeholder::DAYS, days),
            Factor::Rhythm => {
                let gap_ms = self.rhythm(model).gap_ms;
                let gaps = if gap_ms > 0.0 {
                    silence as f64 / gap_ms
                } else {
                    0.0
                };
                q.with(placeholder::DAYS, days)
                    .with(placeholder::GAP, gap_ms / MS_PER_DAY)
                    .with(placeholder::GAPS, gaps)
            }
            // A decayed count, as scored: shown as the whole events it stands for.
            Factor::Event(_) | Factor::Frequency => {
                q.with(placeholder::COUNT, value.round().max(1.0))
            }
            Factor::Trend => q.with(placeholder::PERCENT, (1.0 - value) * 100.0),
            Factor::Spend => q.with(placeholder::AMOUNT, value.exp_m1()),
            Factor::Tenure => q.with(placeholder::YEARS, value),
        }
    }

    /// Every factor's input value at `as_of_ms` with the model's weight for
    /// it: the factor's points are `weight * value`, and the risk score is the
    /// model's mapping of their sum. `fit` uses these as its design matrix so
    /// that a fitted model scores exactly what it was fitted on. (Which
    /// decayed values are held in silence depends on the sign of the weight.)
    pub fn factor_values(&self, model: &RiskModel, as_of_ms: i64) -> Vec<FactorValue> {
        let mut values = Vec::with_capacity(8);
        self.contributions(model, as_of_ms, |factor, value, weight| {
            values.push(FactorValue {
                factor,
                value,
                weight,
            });
        });
        values
    }

    /// The features the model reads, at `as_of_ms`.
    pub fn features(&self, model: &RiskModel, as_of_ms: i64) -> Features {
        let silence = (as_of_ms - self.last_event_ms).max(0);
        let short = self.activity_short * model.decay(GROUP_SHORT, silence);
        let long = self.activity_long * model.decay(GROUP_LONG, silence);
        let mut event_counts = BTreeMap::new();
        let mut mask = self.type_mask;
        let mut slot = 0;
        while mask != 0 {
            let k = mask.trailing_zeros() as usize;
            let kind = &model.kinds()[k];
            event_counts.insert(
                kind.name.clone(),
                self.type_counts[slot] * model.decay(kind.group, silence),
            );
            mask &= mask - 1;
            slot += 1;
        }
        Features {
            events: self.events,
            silence_days: silence as f64 / 86_400_000.0,
            usual_gap_days: model
                .has_rhythm()
                .then(|| self.rhythm(model).gap_ms / 86_400_000.0),
            tenure_years: (self.last_event_ms - self.first_event_ms) as f64 / MS_PER_YEAR,
            activity_recent: short,
            activity_long_run: long,
            trend_ratio: (self.activity_long >= model.spec().trend.min_events
                && self.activity_long > 0.0)
                .then(|| trend_ratio(model, short, long)),
            spend: self.spend * model.decay(GROUP_SPEND, silence),
            event_counts,
        }
    }

    /// Decides whether scoring at `as_of_ms` with `risk` opens or closes an
    /// alert, and records the score as this customer's previous one.
    /// `may_alert = false` (late events) updates the score but never alerts.
    pub fn decide(
        &mut self,
        policy: &AlertPolicy,
        risk: f64,
        as_of_ms: i64,
        may_alert: bool,
    ) -> Option<AlertDecision> {
        let cause = AlertCause::Event;
        self.decide_with(policy, risk, as_of_ms, may_alert, cause)
    }

    fn decide_with(
        &mut self,
        policy: &AlertPolicy,
        risk: f64,
        as_of_ms: i64,
        may_alert: bool,
        cause: AlertCause,
    ) -> Option<AlertDecision> {
        let previous = f64::from(self.last_risk);
        self.last_risk = risk as f32;
        if !may_alert {
            return None;
        }
        let cooldown_ms = (policy.cooldown_hours * MS_PER_HOUR) as i64;
        let segment = self.segment;
        let decision = |kind, threshold| AlertDecision {
            kind,
            risk_score: risk,
            previous_score: previous,
            threshold,
            event_time_ms: as_of_ms,
            cause,
            segment,
        };
        if self.alert_open {
            // A recovery is never stamped before the alert it closes.
            if risk <= policy.recovery_threshold && as_of_ms >= self.last_alert_ms {
                self.alert_open = false;
                self.alert_by_inactivity = false;
                return Some(decision(AlertKind::Recovered, policy.recovery_threshold));
            }
        } else if risk >= policy.at_risk_threshold
            && (self.last_alert_ms == NEVER
                || as_of_ms.saturating_sub(self.last_alert_ms) >= cooldown_ms)
        {
            self.alert_open = true;
            self.alert_by_inactivity = cause == AlertCause::Inactivity;
            self.last_alert_ms = as_of_ms;
            return Some(decision(AlertKind::AtRisk, policy.at_risk_threshold));
        }
        None
    }

    /// After a late event: if it shows the customer active before the time of
    /// the open inactivity alert, re-scores at that time and, if the customer
    /// was not at risk after all, closes the alert (stamped at the alert's
    /// own time, so its id is the same however often the event is replayed).
    fn reconsider_open_alert(
        &mut self,
        model: &RiskModel,
        late_event_ms: i64,
    ) -> Option<AlertDecision> {
        let policy = model.alert_policy_for(self.segment);
        if !self.alert_open || !self.alert_by_inactivity || late_event_ms > self.last_alert_ms {
            return None;
        }
        let at = self.last_alert_ms;
        let risk = self.risk(model, at);
        if risk >= policy.at_risk_threshold {
            return None;
        }
        let previous = f64::from(self.last_risk);
        self.alert_open = false;
        self.alert_by_inactivity = false;
        Some(AlertDecision {
            kind: AlertKind::Recovered,
            risk_score: risk,
            previous_score: previous,
            threshold: policy.at_risk_threshold,
            event_time_ms: at,
            cause: AlertCause::LateActivity,
            segment: self.segment,
        })
    }
}

fn trend_ratio(model: &RiskModel, short: f64, long: f64) -> f64 {
    let a = &model.spec().activity;
    if long <= 0.0 {
        return 0.0;
    }
    // A decayed count with half-life h approximates a rate of count·ln2/h.
    (short / long * (a.long_half_life_days / a.short_half_life_days)).clamp(0.0, 1.0)
}

/// A decayed value at the score's moment: faded if its points are
/// protective, held at the last event if they add risk.
#[inline]
fn held_or_faded(value: f64, points: f64, cache: &mut DecayCache<'_>, group: usize) -> f64 {
    if points < 0.0 {
        value * cache.get(group)
    } else {
        value
    }
}

/// Decay factors for one time step, computed at most once per half-life.
struct DecayCache<'m> {
    model: &'m RiskModel,
    dt_ms: i64,
    factors: [f64; 16],
}

impl<'m> DecayCache<'m> {
    fn new(model: &'m RiskModel, dt_ms: i64) -> Self {
        DecayCache {
            model,
            dt_ms,
            factors: [f64::NAN; 16],
        }
    }

    #[inline]
    fn get(&mut self, group: usize) -> f64 {
        if self.dt_ms <= 0 {
            return 1.0;
        }
        if group >= self.factors.len() {
            return self.model.decay(group, self.dt_ms);
        }
        let f = self.factors[group];
        if f.is_nan() {
            let f = self.model.decay(group, self.dt_ms);
            self.factors[group] = f;
            f
        } else {
            f
        }
    }
}

/// Index of a customer inside a [`CustomerStore`].
pub type CustomerIndex = u32;

/// The result of applying one event to a [`CustomerStore`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ApplyOutcome {
    /// The event was applied and the customer re-scored.
    Scored {
        /// Which customer.
        customer: CustomerIndex,
        /// Risk score right after the event.
        risk_score: f64,
        /// An alert to publish, if any.
        decision: Option<AlertDecision>,
    },
    /// The customer's state already includes this offset; nothing changed.
    Duplicate,
}

/// An inactivity timer that fired.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimerFiring {
    /// Which customer.
    pub customer: CustomerIndex,
    /// The moment it was scored at (last event + an inactivity step).
    pub as_of_ms: i64,
    /// Risk score at that moment.
    pub risk_score: f64,
    /// An alert to publish, if any.
    pub decision: Option<AlertDecision>,
}

/// The event-time clock of one ordered stream of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamClock {
    /// Timers up to here have fired; events before it are late.
    pub watermark_ms: i64,
    /// Newest event time seen.
    pub max_event_ms: Option<i64>,
    /// How far behind the newest event the watermark stays.
    pub lateness_ms: i64,
}

impl StreamClock {
    /// A clock that has seen nothing yet.
    pub fn new(lateness_ms: i64) -> Self {
        StreamClock {
            watermark_ms: i64::MIN,
            max_event_ms: None,
            lateness_ms,
        }
    }
}

/// The customers of one partition (or one offline replay): their states,
/// their ids stored once, and the inactivity timers ordered by due time.
#[derive(Default, Clone)]
pub struct CustomerStore {
    index: HashTable<CustomerIndex>,
    hasher: FxBuildHasher,
    ids: Vec<CompactString>,
    states: Vec<CustomerState>,
    free: Vec<CustomerIndex>,
    /// (due time, customer), earliest first. An entry is live while its
    /// customer's `timer_due_ms` equals its due time; a rescheduled or
    /// removed customer leaves a stale entry, skipped when it comes up.
    /// A heap in one array: no allocation per timer, and firings come out
    /// in due order (ties by customer) however the watermark advances.
    timers: BinaryHeap<Reverse<(i64, CustomerIndex)>>,
    /// The newest watermark timers have fired through (or a restore resumed
    /// at): silence steps at or before it have had their turn.
    fired_through_ms: Option<i64>,
}

impl CustomerStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Customers held.
    pub fn len(&self) -> usize {
        self.states.len() - self.free.len()
    }

    /// Whether no customer is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Looks a customer up by id.
    pub fn find(&self, customer_id: &str) -> Option<CustomerIndex> {
        let hash = self.hasher.hash_one(customer_id);
        self.index
            .find(hash, |&i| self.ids[i as usize] == customer_id)
            .copied()
    }

    /// The state of a customer, by id.
    pub fn get(&self, customer_id: &str) -> Option<&CustomerState> {
        self.find(customer_id).map(|i| &self.states[i as usize])
    }

    /// The id of a customer.
    pub fn id(&self, customer: CustomerIndex) -> &str {
        &self.ids[customer as usize]
    }

    /// The state of a customer.
    pub fn state(&self, customer: CustomerIndex) -> &CustomerState {
        &self.states[customer as usize]
    }

    /// Every customer held, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &CustomerState)> {
        self.ids
            .iter()
            .zip(&self.states)
            .filter(|(id, _)| !id.is_empty())
            .map(|(id, s)| (id.as_str(), s))
    }

    fn find_or_insert(&mut self, customer_id: &str) -> CustomerIndex {
        let hash = self.hasher.hash_one(customer_id);
        if let Some(&i) = self
            .index
            .find(hash, |&i| self.ids[i as usize] == customer_id)
        {
            return i;
        }
        let i = match self.free.pop() {
            Some(i) => {
                self.ids[i as usize] = CompactString::from(customer_id);
                self.states[i as usize] = CustomerState::default();
                i
            }
            None => {
                let i = CustomerIndex::try_from(self.states.len())
                    .expect("fewer than 4 billion customers per store");
                self.ids.push(CompactString::from(customer_id));
                self.states.push(CustomerState::default());
                i
            }
        };
        let (ids, hasher) = (&self.ids, &self.hasher);
        self.index
            .insert_unique(hash, i, |&j| hasher.hash_one(ids[j as usize].as_str()));
        i
    }

    /// Puts a restored state in place (replacing any state of the same id).
    /// Timers are not scheduled: call [`CustomerStore::rebuild_timers`] once
    /// the restore is complete.
    pub fn insert_state(&mut self, customer_id: &str, state: CustomerState) {
        let i = self.find_or_insert(customer_id);
        self.states[i as usize] = state;
    }

    /// Rebuilds the timer index from the states: each customer's restored
    /// next timer exactly as it was saved, so nothing that fired before the
    /// restore fires again. A state saved with no timer at all (written by an
    /// older release, where "done" and "none" were not told apart) resumes at
    /// the first step after `watermark_ms`, the point the writer had reached.
    pub fn rebuild_timers(&mut self, model: &RiskModel, watermark_ms: i64) {
        self.timers.clear();
        self.fired_through_ms = Some(watermark_ms);
        for i in 0..self.states.len() {
            if self.ids[i].is_empty() {
                continue;
            }
            let due = self.states[i].timer_due_ms;
            if due == STEPS_DONE {
                continue;
            }
            if due == NEVER && self.states[i].alert_open {
                // Nothing can change in silence while an alert is open.
                self.states[i].timer_due_ms = STEPS_DONE;
            } else if due == NEVER {
                let state = &mut self.states[i];
                let next = model.next_silence_step(
                    state.last_event_ms,
                    &state.rhythm(model),
                    watermark_ms.saturating_add(1),
                );
                state.timer_due_ms = next.unwrap_or(STEPS_DONE);
                if let Some(next) = next {
                    self.timers.push(Reverse((next, i as CustomerIndex)));
                }
            } else {
                self.timers.push(Reverse((due, i as CustomerIndex)));
            }
        }
    }

    /// Moves every customer from model `old` to model `new` (a hot reload):
    /// per-type counters are re-keyed by type name, and every pending silence
    /// step is re-derived with `new` from `watermark_ms`, the point the
    /// stream has reached, so no step at or before it fires (again).
    pub fn adopt_model(&mut self, old: &RiskModel, new: &RiskModel, watermark_ms: i64) {
        for (id, state) in self.ids.iter().zip(self.states.iter_mut()) {
            if id.is_empty() {
                continue;
            }
            state.remap_kinds(old, new);
            // "Not scheduled": rebuild_timers derives the next step after the watermark.
            state.timer_due_ms = NEVER;
        }
        self.rebuild_timers(new, watermark_ms);
    }

    /// The highest input offset applied to any customer held, if any event
    /// came with one: what the changelog says of how far the input
    /// partition was read.
    pub fn max_applied_offset(&self) -> Option<i64> {
        self.states
            .iter()
            .filter_map(CustomerState::last_offset)
            .max()
    }

    /// Forgets every customer's applied input offset, keeping the rest of
    /// its state: after the input topic was recreated, its offsets start
    /// again at 0 and the old positions would skip new events as
    /// redeliveries.
    pub fn forget_offsets(&mut self) {
        for state in &mut self.states {
            state.last_offset = NO_OFFSET;
        }
    }

    /// Removes a customer (eviction or a tombstone in the changelog).
    pub fn remove(&mut self, customer_id: &str) -> Option<CustomerState> {
        let hash = self.hasher.hash_one(customer_id);
        let ids = &self.ids;
        let entry = self
            .index
            .find_entry(hash, |&i| ids[i as usize] == customer_id)
            .ok()?;
        let (i, _) = entry.remove();
        self.ids[i as usize] = CompactString::default();
        let state = std::mem::take(&mut self.states[i as usize]);
        self.free.push(i);
        Some(state)
    }

    /// Removes customers silent for at least `horizon_ms` at `watermark_ms`
    /// whose inactivity timers have all fired, and returns their ids.
    pub fn evict_silent(&mut self, watermark_ms: i64, horizon_ms: i64) -> Vec<CompactString> {
        let evictable: Vec<CompactString> = self
            .ids
            .iter()
            .zip(&self.states)
            .filter(|(id, s)| {
                !id.is_empty()
                    && (s.timer_due_ms == STEPS_DONE || s.timer_due_ms == NEVER)
                    && watermark_ms.saturating_sub(s.last_event_ms) >= horizon_ms
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &evictable {
            self.remove(id);
        }
        evictable
    }

    /// Applies an event, re-scores its customer at its latest event time and
    /// decides on an alert.
    ///
    /// `offset` is the event's input offset, if it has one: an event at or
    /// below the customer's last applied offset is a redelivery and changes
    /// nothing. `may_alert = false` (a late event) applies the event without
    /// opening an alert; it may still close an inactivity alert that it shows
    /// to have been false ([`AlertCause::LateActivity`]).
    pub fn apply(
        &mut self,
        model: &RiskModel,
        event: &CustomerEvent<'_>,
        offset: Option<i64>,
        may_alert: bool,
    ) -> ApplyOutcome {
        let i = self.find_or_insert(&event.customer_id);
        let state = &mut self.states[i as usize];
        if let Some(offset) = offset {
            if offset <= state.last_offset {
                return ApplyOutcome::Duplicate;
            }
            state.last_offset = offset;
        }
        let kind = model.kind_of(&event.event_type);
        state.apply(model, kind, event.timestamp_ms, event.amount);
        if let Some(segment) = model.segment_of_event(event) {
            state.set_segment(segment, event.timestamp_ms);
        }
        let as_of = state.last_event_ms;
        let risk = state.risk(model, as_of);
        let policy = model.alert_policy_for(state.segment);
        let mut decision = state.decide(policy, risk, as_of, may_alert);
        if !may_alert && model.is_activity(kind) {
            decision = state.reconsider_open_alert(model, event.timestamp_ms);
        }
        // A newer latest event starts a new run of silence steps; a late
        // event changes the customer's pace, and with it the rhythm steps
        // ahead. Either way only steps after the clock are armed: a step
        // the clock has already passed had its turn (for a customer the
        // stream first meets in a backfill, while nobody knew of it), and
        // arming it would fire it at once, opening alerts because of late
        // events (issue 31: a backfill of history opened hundreds).
        let from = state
            .last_event_ms
            .max(self.fired_through_ms.unwrap_or(i64::MIN));
        self.schedule_after(model, i, from.saturating_add(1));
        ApplyOutcome::Scored {
            customer: i,
            risk_score: risk,
            decision,
        }
    }

    /// Makes sure the customer's first silence step at or after `from_ms`
    /// is scheduled. An earlier pending entry is kept and corrected when it
    /// comes due (it re-reads the schedule then): a customer active every
    /// day does not add an entry per event.
    fn schedule_after(&mut self, model: &RiskModel, i: CustomerIndex, from_ms: i64) {
        let state = &mut self.states[i as usize];
        if state.alert_open {
            // Risk only rises in silence: an open at-risk alert can neither
            // close nor open again before the next event, so no step could
            // decide anything. The next event schedules again.
            state.timer_due_ms = STEPS_DONE;
            return;
        }
        let Some(due) = model.next_silence_step(state.last_event_ms, &state.rhythm(model), from_ms)
        else {
            return;
        };
        // STEPS_DONE is i64::MAX: every new due time is earlier.
        if state.timer_due_ms == NEVER || due < state.timer_due_ms {
            state.timer_due_ms = due;
            self.timers.push(Reverse((due, i)));
        }
    }

    /// Fires every inactivity timer due at or before `watermark_ms`: each
    /// quiet customer is re-scored at the moment its silence crossed an
    /// inactivity step. Firings are appended to `out` in due order.
    pub fn fire_due_timers(
        &mut self,
        model: &RiskModel,
        watermark_ms: i64,
        out: &mut Vec<TimerFiring>,
    ) {
        self.fired_through_ms = Some(
            self.fired_through_ms
                .map_or(watermark_ms, |f| f.max(watermark_ms)),
        );
        while let Some(&Reverse((due, i))) = self.timers.peek() {
            if due > watermark_ms {
                break;
            }
            self.timers.pop();
            let state = &mut self.states[i as usize];
            // Stale: the customer was rescheduled or removed since.
            if state.timer_due_ms != due {
                continue;
            }
            let last = state.last_event_ms;
            let rhythm = state.rhythm(model);
            // An event since this entry was made moves the steps later.
            let Some(step) = model.next_silence_step(last, &rhythm, due) else {
                state.timer_due_ms = STEPS_DONE;
                continue;
            };
            if step > due {
                state.timer_due_ms = step;
                self.timers.push(Reverse((step, i)));
                continue;
            }
            let risk = state.risk(model, due);
            let decision = state.decide_with(
                model.alert_policy_for(state.segment),
                risk,
                due,
                true,
                AlertCause::Inactivity,
            );
            out.push(TimerFiring {
                customer: i,
                as_of_ms: due,
                risk_score: risk,
                decision,
            });
            let next = if state.alert_open {
                // As in `schedule_after`: nothing to decide until the next event.
                None
            } else {
                model.next_silence_step(last, &rhythm, due.saturating_add(1))
            };
            match next {
                Some(next) => {
                    state.timer_due_ms = next;
                    self.timers.push(Reverse((next, i)));
                }
                None => state.timer_due_ms = STEPS_DONE,
            }
        }
    }

    /// Applies one event of an ordered stream (a partition, or an offline
    /// replay of one) in event time: first the stream's clock moves to what
    /// this event makes it (its time less the allowed lateness), and every
    /// inactivity timer due by then fires into `firings`; then the event is
    /// applied, alerting only if it is not older than the clock was.
    ///
    /// Firing before applying makes inactivity alerts depend on event times
    /// alone, never on how the stream was cut into batches: a backlog read
    /// at once alerts exactly as the same events read live.
    pub fn apply_in_stream(
        &mut self,
        model: &RiskModel,
        clock: &mut StreamClock,
        event: &CustomerEvent<'_>,
        offset: Option<i64>,
        firings: &mut Vec<TimerFiring>,
    ) -> (ApplyOutcome, bool) {
        let late = event.timestamp_ms < clock.watermark_ms;
        if clock.max_event_ms.is_none_or(|m| event.timestamp_ms > m) {
            clock.max_event_ms = Some(event.timestamp_ms);
            let wm = event.timestamp_ms.saturating_sub(clock.lateness_ms);
            if wm > clock.watermark_ms {
                clock.watermark_ms = wm;
            }
        }
        // Also when something else moved the clock since (the worker's idle
        // rule): steps up to it fire before the event, so the event arms none.
        if self
            .fired_through_ms
            .is_none_or(|through| clock.watermark_ms > through)
        {
            self.fire_due_timers(model, clock.watermark_ms, firings);
        }
        (self.apply(model, event, offset, !late), late)
    }

    /// Entries in the timer index (for tests and memory accounting).
    pub fn timer_entries(&self) -> usize {
        self.timers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    const DAY: i64 = 86_400_000;

    fn ev(id: &str, kind: &str, t: i64, amount: Option<f64>) -> CustomerEvent<'static> {
        CustomerEvent {
            customer_id: Cow::Owned(id.to_string()),
            event_type: Cow::Owned(kind.to_string()),
            timestamp_ms: t,
            amount,
            properties: None,
        }
    }

    /// An event whose `properties` say `{"plan": plan}`.
    fn ev_on(id: &str, kind: &str, t: i64, plan: &str) -> CustomerEvent<'static> {
        CustomerEvent {
            properties: Some(Cow::Owned(serde_json::json!({ "plan": plan }).to_string())),
            ..ev(id, kind, t, None)
        }
    }

    #[test]
    fn segment_thresholds_decide_who_alerts() {
        let m = crate::model::tests::segmented();
        let mut store = CustomerStore::new();
        // The same two events for three customers: a login, then a complaint.
        let mut decided = Vec::new();
        for (id, plan) in [("e", "enterprise"), ("s", "startup"), ("f", "free")] {
            store.apply(&m, &ev_on(id, "login", 0, plan), None, true);
            let ApplyOutcome::Scored {
                risk_score,
                decision,
                ..
            } = store.apply(&m, &ev(id, "complaint", DAY, None), None, true)
            else {
                panic!("applied");
            };
            decided.push((id, risk_score, decision));
        }
        let (_, risk, decision) = decided[0];
        assert!((60.0..75.0).contains(&risk), "{risk}");
        let decision = decision.expect("enterprise alerts at 60");
        assert_eq!(
            (decision.kind, decision.threshold),
            (AlertKind::AtRisk, 60.0)
        );
        assert_eq!(m.segment_name(decision.segment), Some("enterprise"));
        // "startup" is not declared: the default segment, [alert]'s 75.
        assert_eq!(decided[1].1, risk, "identical behaviour, identical score");
        assert_eq!(decided[1].2, None);
        assert_eq!(store.get("s").map(CustomerState::segment), Some(0));
        // "free" counts a ticket as 1 point, not 5; a complaint as usual.
        assert_eq!(decided[2].2, None);
        let free = store.get("f").expect("f");
        assert_eq!(m.segment_name(free.segment()), Some("free"));
        let mut ticket = free.clone();
        let mut plain = store.get("s").expect("s").clone();
        let t = m.kind_of("support_ticket");
        ticket.apply(&m, t, 2 * DAY, None);
        plain.apply(&m, t, 2 * DAY, None);
        let points = |s: &CustomerState| {
            s.explain(&m, 2 * DAY)
                .reasons
                .iter()
                .find(|r| r.factor == "event:support_ticket")
                .map(|r| r.points)
        };
        assert_eq!(points(&ticket), Some(1.0));
        assert_eq!(points(&plain), Some(5.0));
    }

    #[test]
    fn the_segment_is_the_latest_events_whatever_the_order() {
        let m = crate::model::tests::segmented();
        let events = [
            ev_on("c", "login", DAY, "free"),
            ev("c", "login", 3 * DAY, None),
            ev_on("c", "login", 2 * DAY, "enterprise"),
            ev_on("c", "login", 0, "startup"),
        ];
        let mut orders = vec![vec![0, 1, 2, 3], vec![3, 2, 1, 0], vec![1, 3, 0, 2]];
        orders.push(vec![2, 0, 3, 1]);
        let mut seen = Vec::new();
        for order in orders {
            let mut store = CustomerStore::new();
            for i in order {
                store.apply(&m, &events[i], None, false);
            }
            let state = store.get("c").expect("c");
            seen.push((state.segment, state.segment_ms));
        }
        // Counters agree up to rounding (tests/engine_properties.rs); the segment exactly.
        assert!(seen.iter().all(|s| *s == (1, 2 * DAY)), "{seen:?}");
        assert_eq!(m.segment_name(seen[0].0), Some("enterprise"));
        // A value the model does not declare moves the customer to the default.
        let mut store = CustomerStore::new();
        store.apply(&m, &events[2], None, true);
        store.apply(&m, &ev_on("c", "login", 4 * DAY, "trial"), None, true);
        assert_eq!(store.get("c").map(CustomerState::segment), Some(0));
        // A model without segments never reads the property.
        let plain = RiskModel::default_model();
        let mut store = CustomerStore::new();
        store.apply(&plain, &events[2], None, true);
        assert_eq!(store.get("c").map(|s| s.segment_ms), Some(NEVER));
    }

    #[test]
    fn a_reload_keeps_segments_by_name() {
        let old = crate::model::tests::segmented();
        let mut spec = old.spec().clone();
        let segments = spec.segments.as_mut().expect("segments");
        // "aaa" sorts first: every index moves; "free" is dropped.
        segments.values.insert("aaa".into(), Default::default());
        segments.values.remove("free");
        let new = RiskModel::from_spec(spec).expect("valid");
        let mut store = CustomerStore::new();
        store.apply(&old, &ev_on("e", "login", 0, "enterprise"), None, true);
        store.apply(&old, &ev_on("f", "login", 0, "free"), None, true);
        store.adopt_model(&old, &new, 0);
        let name = |id: &str, m: &RiskModel| {
            store
                .get(id)
                .and_then(|s| m.segment_name(s.segment()))
                .map(str::to_string)
        };
        assert_eq!(name("e", &new).as_deref(), Some("enterprise"));
        assert_eq!(name("f", &new).as_deref(), Some("self-serve"));
        let plain = RiskModel::default_model();
        store.adopt_model(&new, &plain, 0);
        assert_eq!(
            store.get("e").map(|s| (s.segment, s.segment_ms)),
            Some((0, NEVER))
        );
    }

    #[test]
    fn explanation_adds_up_and_matches_the_fast_path() {
        let m = RiskModel::default_model();
        let mut s = CustomerState::default();
        for (k, t) in [
            ("purchase", 0),
            ("support_ticket", 3),
            ("login", 5),
            ("complaint", 9),
        ] {
            s.apply(&m, m.kind_of(k), t * DAY, Some(10.0));
        }
        let as_of = 40 * DAY;
        let e = s.explain(&m, as_of);
        let sum: f64 = e.reasons.iter().map(|r| r.points).sum();
        assert!((sum - e.points).abs() < 1e-9, "{sum} vs {}", e.points);
        assert_eq!(e.risk_score, s.risk(&m, as_of));
        assert!(e.reasons.windows(2).all(|w| w[0].points >= w[1].points));
        assert!(e.reasons.iter().any(|r| r.factor == "event:complaint"));
    }

    #[test]
    fn risk_factors_add_risk_and_protective_ones_lower_it() {
        let m = RiskModel::default_model();
        let mut base = CustomerState::default();
        base.apply(&m, m.kind_of("login"), 0, None);
        let mut complained = base.clone();
        complained.apply(&m, m.kind_of("complaint"), 0, None);
        let mut bought = base.clone();
        bought.apply(&m, m.kind_of("purchase"), 0, Some(50.0));
        let r = |s: &CustomerState| s.risk(&m, 0);
        assert!(r(&complained) > r(&base));
        assert!(r(&bought) < r(&base));
    }

    #[test]
    fn alerts_open_once_close_with_hysteresis_and_respect_cooldown() {
        let m = RiskModel::default_model();
        let p = m.alert_policy().clone();
        let mut s = CustomerState::default();
        let hi = p.at_risk_threshold + 1.0;
        let mid = (p.at_risk_threshold + p.recovery_threshold) / 2.0;
        let lo = p.recovery_threshold - 1.0;
        assert_eq!(
            s.decide(&p, hi, 0, true).map(|d| d.kind),
            Some(AlertKind::AtRisk)
        );
        assert_eq!(s.decide(&p, hi + 5.0, DAY, true), None, "one open alert");
        assert_eq!(s.decide(&p, mid, 2 * DAY, true), None, "hysteresis");
        let rec = s.decide(&p, lo, 3 * DAY, true).expect("recovered");
        assert_eq!(rec.kind, AlertKind::Recovered);
        assert_eq!(rec.previous_score, f64::from(mid as f32));
        assert_eq!(s.decide(&p, hi, 4 * DAY, true), None, "cooldown");
        let cooldown = (p.cooldown_hours * 3_600_000.0) as i64;
        assert_eq!(
            s.decide(&p, hi, cooldown, true).map(|d| d.kind),
            Some(AlertKind::AtRisk)
        );
        let mut late = CustomerState::default();
        assert_eq!(
            late.decide(&p, hi, 0, false),
            None,
            "late events never alert"
        );
    }

    #[test]
    fn offsets_guard_against_redelivery() {
        let m = RiskModel::default_model();
        let mut store = CustomerStore::new();
        let e = ev("a", "login", DAY, None);
        assert!(matches!(
            store.apply(&m, &e, Some(5), true),
            ApplyOutcome::Scored { .. }
        ));
        assert_eq!(store.apply(&m, &e, Some(5), true), ApplyOutcome::Duplicate);
        assert_eq!(store.apply(&m, &e, Some(4), true), ApplyOutcome::Duplicate);
        assert_eq!(store.get("a").map(CustomerState::events), Some(1));
    }

    /// The default model without `[rhythm]`: silence steps in days only,
    /// at the same instants for every customer.
    fn days_only() -> RiskModel {
        let mut spec = RiskModel::default_model().spec().clone();
        spec.rhythm = None;
        // Steps strong enough for silence alone to alert an active customer.
        spec.inactivity.steps = [
            (7.0, 4.0),
            (14.0, 10.0),
            (30.0, 20.0),
            (60.0, 30.0),
            (120.0, 38.0),
        ]
        .map(|(after_days, points)| crate::model::InactivityStep { after_days, points })
        .to_vec();
        RiskModel::from_spec(spec).expect("valid")
    }

    #[test]
    fn timers_fire_at_each_inactivity_step_and_follow_new_events() {
        let m = days_only();
        let steps: Vec<i64> = m.inactivity_steps_ms().iter().map(|s| s.0).collect();
        let mut store = CustomerStore::new();
        store.apply(&m, &ev("quiet", "login", 0, None), None, true);
        store.apply(&m, &ev("busy", "login", 0, None), None, true);
        let mut out = Vec::new();
        store.fire_due_timers(&m, steps[0] - 1, &mut out);
        assert!(out.is_empty());
        // "busy" comes back before its first step: its timer moves.
        store.apply(&m, &ev("busy", "login", steps[0] / 2, None), None, true);
        store.fire_due_timers(&m, steps[1], &mut out);
        let quiet = store.find("quiet").expect("known");
        let busy = store.find("busy").expect("known");
        let fired: Vec<(CustomerIndex, i64)> =
            out.iter().map(|f| (f.customer, f.as_of_ms)).collect();
        assert_eq!(
            fired,
            vec![
                (quiet, steps[0]),
                (busy, steps[0] / 2 + steps[0]),
                (quiet, steps[1]),
            ]
        );
        // Risk rises from one step to the next.
        assert!(out[2].risk_score > out[0].risk_score);
        // Each customer's steps fire until silence opens an at-risk alert,
        // and then nothing is left: an open alert cannot change in silence.
        out.clear();
        store.fire_due_timers(&m, i64::MAX / 4, &mut out);
        for c in [quiet, busy] {
            let mine: Vec<&TimerFiring> = out.iter().filter(|f| f.customer == c).collect();
            let last = mine.last().expect("later steps fire");
            assert_eq!(last.decision.map(|d| d.kind), Some(AlertKind::AtRisk));
            assert!(mine[..mine.len() - 1].iter().all(|f| f.decision.is_none()));
            assert!(store.state(c).alert_open());
        }
        assert_eq!(store.timer_entries(), 0);
    }

    #[test]
    fn no_timer_runs_while_an_alert_is_open_and_the_next_event_rearms() {
        let m = days_only();
        let mut store = CustomerStore::new();
        store.apply(&m, &ev("c", "login", 0, None), None, true);
        let mut out = Vec::new();
        store.fire_due_timers(&m, 10_000 * DAY, &mut out);
        let opened = out.iter().filter(|f| f.decision.is_some()).count();
        assert_eq!(opened, 1, "{out:?}");
        assert_eq!(
            out.last().and_then(|f| f.decision).map(|d| d.kind),
            Some(AlertKind::AtRisk)
        );
        assert_eq!(store.timer_entries(), 0);
        // Coming back closes the alert and starts a new run of steps.
        let back = 10_000 * DAY + 1;
        for k in 0..30 {
            store.apply(
                &m,
                &ev("c", "purchase", back + k * 1000, Some(100.0)),
                None,
                true,
            );
        }
        assert!(!store.get("c").expect("c").alert_open());
        out.clear();
        store.fire_due_timers(&m, back + 8 * DAY, &mut out);
        assert_eq!(
            out.len(),
            1,
            "the first step after the return fires: {out:?}"
        );
    }

    /// Copies a store as a restore would see it: every state through the
    /// changelog encoding, then the timer index rebuilt.
    fn restored(m: &RiskModel, store: &CustomerStore, watermark: i64) -> CustomerStore {
        let mut back = CustomerStore::new();
        for (id, state) in store.iter() {
            let mut bytes = Vec::new();
            crate::changelog::encode_state(m, state, &mut bytes);
            let decoded = crate::changelog::decode_state(m, &bytes).expect("decodes");
            back.insert_state(id, decoded);
        }
        back.rebuild_timers(m, watermark);
        back
    }

    #[test]
    fn a_restored_store_fires_nothing_that_fired_before() {
        let m = RiskModel::default_model();
        let steps: Vec<i64> = m.inactivity_steps_ms().iter().map(|s| s.0).collect();
        let mut store = CustomerStore::new();
        store.apply(&m, &ev("done", "login", 0, None), None, true);
        store.apply(&m, &ev("half", "login", steps[2], None), None, true);
        let watermark = steps[2] + steps[1];
        let mut first = Vec::new();
        store.fire_due_timers(&m, watermark, &mut first);
        // "done" went through every step; "half" through its first two.
        store.fire_due_timers(&m, steps[steps.len() - 1], &mut first);
        let mut again = restored(&m, &store, watermark);
        let mut refired = Vec::new();
        again.fire_due_timers(&m, steps[steps.len() - 1], &mut refired);
        assert!(refired.is_empty(), "{refired:?}");
        // Later steps still fire, exactly once, at the same moments as
        // without the restore.
        let end = steps[2] + steps[steps.len() - 1];
        let (mut a, mut b) = (Vec::new(), Vec::new());
        store.fire_due_timers(&m, end, &mut a);
        again.fire_due_timers(&m, end, &mut b);
        let at = |v: &[TimerFiring]| v.iter().map(|f| f.as_of_ms).collect::<Vec<_>>();
        assert_eq!(at(&a), at(&b));
        assert!(!a.is_empty());
        let done = again.get("done").expect("done");
        assert!(done.alert_open(), "the open alert survives the restore");
    }

    #[test]
    fn firings_that_decide_nothing_are_recomputed_by_a_restore() {
        let m = days_only();
        let steps: Vec<i64> = m.inactivity_steps_ms().iter().map(|s| s.0).collect();
        let mut store = CustomerStore::new();
        for d in 0..60 {
            store.apply(&m, &ev("c", "login", d * DAY, None), None, true);
        }
        // The state as last written: after the events, before any firing.
        let written = restored(&m, &store, 0);
        let last = 59 * DAY;
        let mut fired = Vec::new();
        // Fire only the steps that decide nothing.
        let quiet_until = steps
            .iter()
            .map(|s| last + s)
            .take_while(|&t| {
                store.get("c").expect("c").risk(&m, t) < m.alert_policy().at_risk_threshold
            })
            .last()
            .expect("some step decides nothing");
        store.fire_due_timers(&m, quiet_until, &mut fired);
        assert!(!fired.is_empty() && fired.iter().all(|f| f.decision.is_none()));
        // A restore of the written state at the same watermark fires the same
        // steps again, deciding nothing again, and ends in the same state.
        let mut again = written;
        again.rebuild_timers(&m, i64::MIN);
        let mut refired = Vec::new();
        again.fire_due_timers(&m, quiet_until, &mut refired);
        let at = |v: &[TimerFiring]| {
            v.iter()
                .map(|f| (f.as_of_ms, f.decision))
                .collect::<Vec<_>>()
        };
        assert_eq!(at(&refired), at(&fired));
        assert_eq!(again.get("c"), store.get("c"));
        // And later steps decide the same.
        let end = last + steps[steps.len() - 1];
        let (mut a, mut b) = (Vec::new(), Vec::new());
        store.fire_due_timers(&m, end, &mut a);
        again.fire_due_timers(&m, end, &mut b);
        assert_eq!(at(&a), at(&b));
        assert!(a.iter().any(|f| f.decision.is_some()));
    }

    #[test]
    fn a_late_event_does_not_rearm_steps_that_fired() {
        let m = days_only();
        let mut store = CustomerStore::new();
        store.apply(&m, &ev("c", "login", 100 * DAY, None), None, true);
        let mut out = Vec::new();
        store.fire_due_timers(&m, 400 * DAY, &mut out);
        let fired = out.len();
        assert!(fired > 0);
        store.apply(&m, &ev("c", "login", 50 * DAY, None), None, false);
        out.clear();
        store.fire_due_timers(&m, 800 * DAY, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert!(fired >= 2, "steps fired until the alert: {fired}");
    }

    #[test]
    fn a_late_event_moves_rhythm_steps_only_after_the_clock() {
        let m = RiskModel::default_model();
        let mut store = CustomerStore::new();
        for d in [0, 10, 20, 30] {
            store.apply(&m, &ev("c", "login", d * DAY, None), None, true);
        }
        let mut out = Vec::new();
        store.fire_due_timers(&m, 60 * DAY, &mut out);
        assert!(!out.is_empty(), "some steps fall within 30 days of silence");
        // Late activity makes the customer's pace faster: its rhythm steps
        // come sooner, but none at or before the clock fires (again).
        let before = store.get("c").expect("c").rhythm(&m);
        for d in [5, 15, 25] {
            store.apply(&m, &ev("c", "login", d * DAY, None), None, false);
        }
        let after = store.get("c").expect("c").rhythm(&m);
        assert!(after.gap_ms < before.gap_ms, "{before:?} -> {after:?}");
        out.clear();
        store.fire_due_timers(&m, 10_000 * DAY, &mut out);
        assert!(!out.is_empty());
        assert!(out.iter().all(|f| f.as_of_ms > 60 * DAY), "{out:?}");
        assert!(out.windows(2).all(|w| w[0].as_of_ms < w[1].as_of_ms));
    }

    #[test]
    fn a_late_event_from_before_an_inactivity_alert_closes_it() {
        let m = RiskModel::default_model();
        let mut store = CustomerStore::new();
        for d in 0..30 {
            store.apply(&m, &ev("c", "login", d * DAY, None), None, true);
        }
        let mut out = Vec::new();
        store.fire_due_timers(&m, 400 * DAY, &mut out);
        let opened = out
            .iter()
            .filter_map(|f| f.decision)
            .find(|d| d.kind == AlertKind::AtRisk)
            .expect("silence opens an alert");
        assert_eq!(opened.cause, AlertCause::Inactivity);
        // The customer was in fact active just before that alert: the event
        // only arrives now, late.
        let late = ev("c", "login", opened.event_time_ms - DAY, None);
        let ApplyOutcome::Scored { decision, .. } = store.apply(&m, &late, None, false) else {
            panic!("applied");
        };
        let closed = decision.expect("the false alert is closed");
        assert_eq!(closed.kind, AlertKind::Recovered);
        assert_eq!(closed.cause, AlertCause::LateActivity);
        assert_eq!(closed.event_time_ms, opened.event_time_ms);
        assert!(!store.get("c").expect("c").alert_open());
        // A late event from long before the alert changes nothing.
        let mut other = CustomerStore::new();
        for d in 0..30 {
            other.apply(&m, &ev("c", "login", d * DAY, None), None, true);
        }
        other.fire_due_timers(&m, 400 * DAY, &mut out);
        let old = ev("c", "login", 5 * DAY, None);
        let ApplyOutcome::Scored { decision, .. } = other.apply(&m, &old, None, false) else {
            panic!("applied");
        };
        assert_eq!(decision, None);
    }

    #[test]
    fn stream_alerts_do_not_depend_on_batching() {
        let m = RiskModel::default_model();
        // "q" goes silent; "b" keeps the clock moving and logs in again
        // long after q's steps are due.
        let mut events = Vec::new();
        for d in 0..200 {
            if d < 10 {
                events.push(ev("q", "login", d * DAY, None));
            }
            events.push(ev("b", "login", d * DAY + 1, None));
        }
        let run = |close_every: usize| {
            let mut store = CustomerStore::new();
            let mut clock = StreamClock::new(3_600_000);
            let mut firings = Vec::new();
            let mut times = Vec::new();
            for (i, e) in events.iter().enumerate() {
                store.apply_in_stream(&m, &mut clock, e, Some(i as i64), &mut firings);
                if i % close_every == 0 {
                    store.fire_due_timers(&m, clock.watermark_ms, &mut firings);
                }
            }
            for f in firings.iter().filter(|f| f.decision.is_some()) {
                times.push((f.customer, f.as_of_ms));
            }
            times
        };
        let one = run(1);
        assert!(!one.is_empty());
        assert_eq!(one, run(7));
        assert_eq!(one, run(1000));
    }

    #[test]
    fn an_adopted_model_keeps_counters_by_type_name_and_refires_no_past_step() {
        let old = days_only();
        let mut spec = old.spec().clone();
        // A type sorting first shifts every index; one type is dropped.
        let rule = spec.events["complaint"].clone();
        spec.events.insert("aaa_new".into(), rule);
        spec.events.remove("login");
        spec.model_version = "next".into();
        let new = RiskModel::from_spec(spec).expect("valid");
        let steps: Vec<i64> = old.inactivity_steps_ms().iter().map(|s| s.0).collect();
        let wm = steps[1] + 1;
        let mut store = CustomerStore::new();
        store.apply(&old, &ev("c", "complaint", 0, None), None, true);
        store.apply(&old, &ev("c", "login", 1, None), None, true);
        // Purchases keep the customer below the threshold, so silence opens
        // no alert (which would stop the steps) before the last one checked.
        for k in 0..10 {
            store.apply(
                &old,
                &ev("c", "purchase", 1, Some(50.0 + k as f64)),
                None,
                true,
            );
        }
        let mut out = Vec::new();
        store.fire_due_timers(&old, wm, &mut out);
        assert_eq!(out.len(), 2, "two steps fired under the old model");
        let before = store.get("c").expect("kept").clone();
        store.adopt_model(&old, &new, wm);
        let after = store.get("c").expect("kept");
        assert_eq!(after.events(), before.events(), "nothing lost");
        let complaint = |m: &RiskModel, s: &CustomerState| {
            s.explain(m, wm)
                .reasons
                .iter()
                .find(|r| r.factor == "event:complaint")
                .map(|r| r.points)
        };
        assert_eq!(complaint(&new, after), complaint(&old, &before));
        assert!(
            after
                .explain(&new, wm)
                .reasons
                .iter()
                .all(|r| r.factor != "event:login" && r.factor != "event:aaa_new")
        );
        out.clear();
        store.fire_due_timers(&new, wm, &mut out);
        assert!(
            out.is_empty(),
            "steps at or before the watermark never fire again"
        );
        store.fire_due_timers(&new, steps[2] + 1, &mut out);
        assert_eq!(out.len(), 1, "the next step fires under the new model");
    }

    #[test]
    fn removed_customers_are_forgotten_and_slots_reused() {
        let m = RiskModel::default_model();
        let mut store = CustomerStore::new();
        store.apply(&m, &ev("a", "login", 0, None), None, true);
        store.apply(&m, &ev("b", "login", 0, None), None, true);
        assert!(store.remove("a").is_some());
        assert_eq!(store.len(), 1);
        assert!(store.get("a").is_none());
        store.apply(&m, &ev("c", "login", 0, None), None, true);
        assert_eq!(store.len(), 2);
        assert_eq!(store.states.len(), 2, "slot reused");
        let mut out = Vec::new();
        store.fire_due_timers(&m, i64::MAX / 4, &mut out);
        assert!(out.iter().all(|f| store.id(f.customer) != "a"));
    }

    #[test]
    fn only_long_silent_customers_with_no_pending_timer_are_evicted() {
        let m = days_only();
        let last_step = m.inactivity_steps_ms().last().expect("steps").0;
        let mut store = CustomerStore::new();
        store.apply(&m, &ev("old", "login", 0, None), None, true);
        store.apply(&m, &ev("new", "login", last_step, None), None, true);
        let horizon = last_step + DAY;
        // Timers not yet fired: nobody goes.
        assert!(store.evict_silent(horizon + 1, horizon).is_empty());
        let mut out = Vec::new();
        store.fire_due_timers(&m, horizon + 1, &mut out);
        let gone = store.evict_silent(horizon + 1, horizon);
        assert_eq!(gone, vec![CompactString::from("old")]);
        assert!(store.get("old").is_none() && store.get("new").is_some());
    }

    #[test]
    fn state_is_compact() {
        assert!(
            std::mem::size_of::<CustomerState>() <= 112,
            "{}",
            std::mem::size_of::<CustomerState>()
        );
    }
}
