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
use std::collections::BTreeMap;
use std::hash::BuildHasher;

use crate::event::CustomerEvent;
use crate::model::{AlertPolicy, GROUP_LONG, GROUP_SHORT, GROUP_SPEND, RiskModel};

const MS_PER_HOUR: f64 = 3_600_000.0;
const MS_PER_YEAR: f64 = 365.25 * 86_400_000.0;
/// "No offset applied yet."
const NO_OFFSET: i64 = -1;
/// "No timer scheduled" / "no alert yet".
const NEVER: i64 = i64::MIN;

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
    pub(crate) type_mask: u64,
    pub(crate) type_counts: Box<[f64]>,
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
            type_mask: 0,
            type_counts: Box::new([]),
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
    /// Silence since the last event.
    Inactivity,
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
            let count = held_or_faded(self.type_counts[slot], kind.points, &mut cache, kind.group);
            sink(Factor::Event(k as u8), count.min(kind.cap), kind.points);
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
        let mut factors: Vec<(Factor, f64)> = Vec::with_capacity(8);
        self.contributions(model, as_of_ms, |f, v, w| {
            let p = w * v;
            total += p;
            factors.push((f, p));
        });
        factors.retain(|(_, p)| *p != 0.0);
        factors.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Explanation {
            risk_score: model.risk_from_points(total),
            points: total,
            reasons: factors
                .into_iter()
                .map(|(f, p)| Reason {
                    factor: f.name(model).to_string(),
                    points: p,
                })
                .collect(),
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
        let previous = f64::from(self.last_risk);
        self.last_risk = risk as f32;
        if !may_alert {
            return None;
        }
        let cooldown_ms = (policy.cooldown_hours * MS_PER_HOUR) as i64;
        let decision = |kind, threshold| AlertDecision {
            kind,
            risk_score: risk,
            previous_score: previous,
            threshold,
            event_time_ms: as_of_ms,
        };
        if self.alert_open {
            if risk <= policy.recovery_threshold {
                self.alert_open = false;
                return Some(decision(AlertKind::Recovered, policy.recovery_threshold));
            }
        } else if risk >= policy.at_risk_threshold
            && (self.last_alert_ms == NEVER
                || as_of_ms.saturating_sub(self.last_alert_ms) >= cooldown_ms)
        {
            self.alert_open = true;
            self.last_alert_ms = as_of_ms;
            return Some(decision(AlertKind::AtRisk, policy.at_risk_threshold));
        }
        None
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

/// Width of a timer bucket: timers due within the same minute share one.
const TIMER_BUCKET_MS: i64 = 60_000;

/// The customers of one partition (or one offline replay): their states,
/// their ids stored once, and the inactivity timers ordered by due time.
#[derive(Default)]
pub struct CustomerStore {
    index: HashTable<CustomerIndex>,
    hasher: FxBuildHasher,
    ids: Vec<CompactString>,
    states: Vec<CustomerState>,
    free: Vec<CustomerIndex>,
    timers: BTreeMap<i64, Vec<CustomerIndex>>,
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
    /// next timer, or the first inactivity step after its latest event.
    pub fn rebuild_timers(&mut self, model: &RiskModel) {
        self.timers.clear();
        for i in 0..self.states.len() {
            if self.ids[i].is_empty() {
                continue;
            }
            let due = self.states[i].timer_due_ms;
            if due == NEVER {
                self.schedule_after_event(model, i as CustomerIndex);
            } else {
                self.timers
                    .entry(due.div_euclid(TIMER_BUCKET_MS))
                    .or_default()
                    .push(i as CustomerIndex);
            }
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
                    && s.timer_due_ms == NEVER
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
    /// nothing. `may_alert = false` applies the event without alerting (late
    /// events).
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
        let as_of = state.last_event_ms;
        let risk = state.risk(model, as_of);
        let decision = state.decide(model.alert_policy(), risk, as_of, may_alert);
        self.schedule_after_event(model, i);
        ApplyOutcome::Scored {
            customer: i,
            risk_score: risk,
            decision,
        }
    }

    /// Makes sure the customer's first inactivity timer after its latest
    /// event is scheduled. A later event only moves a timer later, so an
    /// earlier entry is kept and corrected when it comes due.
    fn schedule_after_event(&mut self, model: &RiskModel, i: CustomerIndex) {
        let Some(&(first_step, _)) = model.inactivity_steps_ms().first() else {
            return;
        };
        let state = &mut self.states[i as usize];
        let due = state.last_event_ms.saturating_add(first_step);
        if state.timer_due_ms == NEVER || due < state.timer_due_ms {
            state.timer_due_ms = due;
            self.timers
                .entry(due.div_euclid(TIMER_BUCKET_MS))
                .or_default()
                .push(i);
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
        let steps = model.inactivity_steps_ms();
        let last_bucket = watermark_ms.div_euclid(TIMER_BUCKET_MS);
        while let Some(entry) = self.timers.first_entry() {
            let bucket = *entry.key();
            if bucket > last_bucket {
                break;
            }
            let customers = entry.remove();
            let mut not_yet = Vec::new();
            let mut fired: Vec<TimerFiring> = Vec::new();
            for i in customers {
                let state = &mut self.states[i as usize];
                // Stale entries: the customer was rescheduled or removed.
                if state.timer_due_ms == NEVER
                    || state.timer_due_ms.div_euclid(TIMER_BUCKET_MS) != bucket
                {
                    continue;
                }
                let last = state.last_event_ms;
                let from = state.timer_due_ms;
                let Some(due) = steps
                    .iter()
                    .map(|&(at, _)| last.saturating_add(at))
                    .find(|&d| d >= from)
                else {
                    state.timer_due_ms = NEVER;
                    continue;
                };
                if due > watermark_ms {
                    state.timer_due_ms = due;
                    if due.div_euclid(TIMER_BUCKET_MS) == bucket {
                        not_yet.push(i);
                    } else {
                        self.timers
                            .entry(due.div_euclid(TIMER_BUCKET_MS))
                            .or_default()
                            .push(i);
                    }
                    continue;
                }
                let risk = state.risk(model, due);
                let decision = state.decide(model.alert_policy(), risk, due, true);
                fired.push(TimerFiring {
                    customer: i,
                    as_of_ms: due,
                    risk_score: risk,
                    decision,
                });
                match steps
                    .iter()
                    .map(|&(at, _)| last.saturating_add(at))
                    .find(|&d| d > due)
                {
                    Some(next) => {
                        state.timer_due_ms = next;
                        let b = next.div_euclid(TIMER_BUCKET_MS);
                        if b == bucket {
                            not_yet.push(i);
                        } else {
                            self.timers.entry(b).or_default().push(i);
                        }
                    }
                    None => state.timer_due_ms = NEVER,
                }
            }
            fired.sort_by_key(|f| (f.as_of_ms, f.customer));
            out.extend(fired);
            if !not_yet.is_empty() {
                self.timers.insert(bucket, not_yet);
                if bucket == last_bucket {
                    break;
                }
            }
        }
    }

    /// Entries in the timer index (for tests and memory accounting).
    pub fn timer_entries(&self) -> usize {
        self.timers.values().map(Vec::len).sum()
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
        }
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

    #[test]
    fn timers_fire_at_each_inactivity_step_and_follow_new_events() {
        let m = RiskModel::default_model();
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
        // Everything fires eventually, and then nothing is left.
        out.clear();
        store.fire_due_timers(&m, i64::MAX / 4, &mut out);
        assert_eq!(out.len(), 2 * steps.len() - 3);
        assert_eq!(store.timer_entries(), 0);
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
        let m = RiskModel::default_model();
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
