//! Synthetic customer journeys with a planted churn signal, for demos,
//! benchmarks and backtests.
//!
//! The generator is seeded and deterministic: the same [`GenerateConfig`]
//! always yields the same bytes. Each customer gets a *plan* (archetype,
//! activity rate, drift and stop days, subscription) drawn from its own
//! random stream, and each customer-day is drawn from a stream of its own,
//! so a customer's journey does not depend on how many other customers there
//! are. Events come out in time order, one day at a time: memory holds the
//! plans (about 40 bytes a customer) and one day of pending events, never the
//! whole stream.
//!
//! # Archetypes and the planted outcome
//!
//! The cutoff is `cutoff_days` after the start; a customer is labelled
//! churned (`churned=1`) when it has no event at or after the cutoff. The
//! outcome is decided by the archetype when the plan is drawn, so the signal
//! seen before the cutoff is planted, with some deliberate noise:
//!
//! | archetype  | share | before the cutoff | after the cutoff | churned |
//! |------------|-------|-------------------|------------------|---------|
//! | `loyal`    | 60 %  | steady sessions, features, purchases, renewals, promoters | the same | 0 |
//! | `drifting` | 15 %  | sessions thin out from 20–60 days before the cutoff; tickets, complaints, failed payments, unsubscribes, downgrades, abandoned carts, refunds, detractors | 80 %: nothing (the last event falls 1–10 days before the cutoff) | 1 |
//! |            |       |                   | 20 %: keeps trickling in | 0 |
//! | `churned`  | 15 %  | the same drift from 40–120 days before the cutoff, then stop at least 5 days before it; 40 % end with `subscription_cancelled` | nothing | 1 |
//! | `won_back` | 10 %  | drift with friction, then silence | 70 %: came back before the cutoff with purchases and renewals, active after it | 0 |
//! |            |       |                   | 30 %: still silent at the cutoff, back within 20 days after it (looks churned at the cutoff) | 0 |
//!
//! About 27 % of customers churn. Every customer has at least one event on
//! its first day, and every customer labelled 0 has at least one event at or
//! after the cutoff, so the labels are exact for the stream generated.
//! Lines replaced by bad lines (`invalid_rate`) still count as that
//! customer's activity in the labels.
//!
//! # Rhythm shapes
//!
//! [`Shape::Sparse`] and [`Shape::Mixed`] leave the stories out: each
//! customer is a Poisson process at its own pace (once every 18 days for
//! `sparse`; once every 1, 3, 7, 18 or 40 days for `mixed`), and 30 % slow
//! down by 90 % from 60 % of the period on (day 108 of 180). Those are
//! labelled churned. They test a model on customers it was not designed on.
//!
//! # Vocabularies
//!
//! [`Vocabulary::Default`] uses the event types of the default model
//! (`config/model.toml`) plus `email_open`, which the model does not name.
//! [`Vocabulary::Custom`] renames every type to a collaboration-product
//! vocabulary the default model does not know (`post`, `comment`,
//! `ticket_opened`, `billing_issue`, `seat_removed`, …) with exactly the same
//! events at the same times, so a model fitted on it must find the same
//! planted effects under other names.
//!
//! Only `purchase` and `renewal` events carry `amount`; a refund's and a
//! failed payment's sums are in `properties`, since the engine counts every
//! `amount` as spend.

use std::fmt;
use std::io::Write;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Poisson};

const MS_PER_DAY: i64 = 86_400_000;
const MS_PER_HOUR: f64 = 3_600_000.0;
/// "No such day" in a plan.
const NO_DAY: u16 = u16::MAX;

/// Random-stream domains: each use of randomness has its own stream.
const DOMAIN_PLAN: u64 = 1;
const DOMAIN_DAY: u64 = 2;
const DOMAIN_INVALID: u64 = 3;

/// Why a generator could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// A configuration value is out of range.
    #[error("invalid generator setting `{field}`: {message}")]
    InvalidConfig {
        /// The setting (as the CLI flag names it, without dashes).
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Writing events or labels failed.
    #[error("writing generated data: {0}")]
    Io(#[from] std::io::Error),
}

/// Which event-type names the generator writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Vocabulary {
    /// The default model's event types (plus `email_open`).
    #[default]
    Default,
    /// Names the default model does not know, with the same planted effects.
    Custom,
}

impl Vocabulary {
    /// Every event type this vocabulary can produce.
    pub fn event_types(self) -> &'static [&'static str] {
        match self {
            Vocabulary::Default => &DEFAULT_TYPES,
            Vocabulary::Custom => &CUSTOM_TYPES,
        }
    }
}

impl FromStr for Vocabulary {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(Vocabulary::Default),
            "custom" => Ok(Vocabulary::Custom),
            other => Err(format!(
                "unknown vocabulary {other:?}: expected `default` or `custom`"
            )),
        }
    }
}

impl fmt::Display for Vocabulary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Vocabulary::Default => "default",
            Vocabulary::Custom => "custom",
        })
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    /// Number of customers (at least 1).
    pub customers: u32,
    /// Seed of every random stream.
    pub seed: u64,
    /// Start of the period, milliseconds since the Unix epoch.
    pub start_ms: i64,
    /// Length of the period in days (1–10,000).
    pub days: u32,
    /// Days from the start to the label cutoff (at least 1, below `days`).
    pub cutoff_days: u32,
    /// Event-type names.
    pub vocabulary: Vocabulary,
    /// Fraction of lines (0–1) replaced by realistic bad lines.
    pub invalid_rate: f64,
    /// What the customers' streams look like.
    pub shape: Shape,
}

/// The shape of the generated stream.
///
/// [`Shape::Journeys`] tells the planted archetype stories (daily-ish SaaS
/// users who drift and stop). The two *rhythm* shapes are the kind of stream
/// the project did not design its model on: every customer is a Poisson
/// process at its own pace (sessions, page views as `feature_used`,
/// purchases, a few tickets, abandoned carts and failed payments), and
/// [`SLOWDOWN_SHARE`] of them slow down by [`SLOWDOWN_FACTOR`] from
/// [`SLOWDOWN_AT`] of the period on. A slowed customer is labelled churned
/// (`drifting`, churned = 1); the others are `loyal`, churned = 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// Archetype journeys (see the module documentation).
    #[default]
    Journeys,
    /// Every customer about once every 18 days (a shop's rhythm).
    Sparse,
    /// Customers of five rhythms in equal shares: about once every 1, 3, 7,
    /// 18 and 40 days.
    Mixed,
    /// Purchases only, Pareto/NBD-like: customers arrive through the period
    /// before the cutoff, buy at a gamma-distributed rate while alive and
    /// leave after an exponential lifetime with a gamma-distributed mean;
    /// most buy once or twice. Churned = no purchase at or after the cutoff
    /// (use e.g. `--days 450 --cutoff-days 270`: 9 months of history, 6 to
    /// see who came back).
    Purchases,
}

/// Share of rhythm-shape customers who slow down.
pub const SLOWDOWN_SHARE: f64 = 0.3;
/// Their event rate after the slowdown, as a share of the rate before.
pub const SLOWDOWN_FACTOR: f64 = 0.1;
/// When the slowdown starts, as a share of the period (day 108 of 180).
pub const SLOWDOWN_AT: f64 = 0.6;

/// Mean days between events of the [`Shape::Mixed`] rhythms.
const MIXED_GAPS_DAYS: [f32; 5] = [1.0, 3.0, 7.0, 18.0, 40.0];
/// Mean days between events of [`Shape::Sparse`].
const SPARSE_GAP_DAYS: f32 = 18.0;

impl Shape {
    /// The day the slowdown starts in a period of `days`.
    pub fn slowdown_day(days: u32) -> u32 {
        (f64::from(days) * SLOWDOWN_AT).round() as u32
    }
}

impl FromStr for Shape {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "journeys" => Ok(Shape::Journeys),
            "sparse" => Ok(Shape::Sparse),
            "mixed" => Ok(Shape::Mixed),
            "purchases" => Ok(Shape::Purchases),
            other => Err(format!(
                "unknown shape {other:?}: expected `journeys`, `sparse`, `mixed` or `purchases`"
            )),
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Shape::Journeys => "journeys",
            Shape::Sparse => "sparse",
            Shape::Mixed => "mixed",
            Shape::Purchases => "purchases",
        })
    }
}

impl Default for GenerateConfig {
    /// 1,000 customers over 180 days from 2025-01-01, cutoff 30 days before the end.
    fn default() -> Self {
        GenerateConfig {
            customers: 1000,
            seed: 42,
            start_ms: 1_735_689_600_000,
            days: 180,
            cutoff_days: 150,
            vocabulary: Vocabulary::Default,
            invalid_rate: 0.0,
            shape: Shape::Journeys,
        }
    }
}

/// A customer's archetype: the story its events tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Archetype {
    /// Steady use throughout.
    Loyal,
    /// Use thins out towards the cutoff, with friction.
    Drifting,
    /// Drifts, then stops well before the cutoff.
    Churned,
    /// Drifts and goes quiet, then returns.
    WonBack,
}

impl Archetype {
    /// Stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            Archetype::Loyal => "loyal",
            Archetype::Drifting => "drifting",
            Archetype::Churned => "churned",
            Archetype::WonBack => "won_back",
        }
    }
}

/// The planted outcome of one customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// The customer.
    pub customer_id: String,
    /// Its archetype.
    pub archetype: Archetype,
    /// No event at or after the cutoff.
    pub churned: bool,
}

/// One generated line, borrowed from the generator until the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// Event time (also the time of a bad line that replaced an event).
    pub timestamp_ms: i64,
    /// The customer (the Kafka message key), even when the line is bad.
    pub customer_id: &'a str,
    /// The JSON line, without a trailing newline.
    pub line: &'a [u8],
    /// Whether the line was deliberately made bad.
    pub invalid: bool,
}

/// One generated line, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedEvent {
    /// Event time.
    pub timestamp_ms: i64,
    /// The customer (the Kafka message key).
    pub customer_id: String,
    /// The JSON line, without a trailing newline.
    pub line: Vec<u8>,
    /// Whether the line was deliberately made bad.
    pub invalid: bool,
}

/// Counts of what has been generated so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenerateStats {
    /// Lines yielded, bad ones included.
    pub lines: u64,
    /// Lines replaced by bad lines.
    pub invalid: u64,
}

/// Internal event kinds, in the order of the vocabularies' name tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Session,
    Login,
    FeatureUsed,
    Purchase,
    Renewal,
    NpsPromoter,
    EmailOpen,
    SupportTicket,
    Complaint,
    PaymentFailed,
    Refund,
    CartAbandoned,
    EmailUnsubscribe,
    PlanDowngrade,
    SubscriptionCancelled,
    NpsDetractor,
}

const DEFAULT_TYPES: [&str; 16] = [
    "session",
    "login",
    "feature_used",
    "purchase",
    "renewal",
    "nps_promoter",
    "email_open",
    "support_ticket",
    "complaint",
    "payment_failed",
    "refund",
    "cart_abandoned",
    "email_unsubscribe",
    "plan_downgrade",
    "subscription_cancelled",
    "nps_detractor",
];

/// `feature_used` splits into the first four by feature; the rest map one to one.
const CUSTOM_TYPES: [&str; 19] = [
    "post",
    "comment",
    "export_created",
    "invite_sent",
    "workspace_visit",
    "sign_in",
    "addon_purchased",
    "invoice_paid",
    "review_positive",
    "digest_opened",
    "ticket_opened",
    "escalation",
    "billing_issue",
    "credit_issued",
    "checkout_abandoned",
    "notifications_disabled",
    "seat_removed",
    "workspace_closed",
    "review_negative",
];

const FEATURES: [&str; 6] = [
    "reports",
    "dashboards",
    "exports",
    "invites",
    "search",
    "alerts",
];
const PLATFORMS: [&str; 3] = ["web", "ios", "android"];
const LOGIN_METHODS: [&str; 3] = ["password", "sso", "magic_link"];
const CHANNELS: [&str; 3] = ["email", "chat", "phone"];
const TOPICS: [&str; 4] = ["billing", "quality", "delivery", "service"];
const PAYMENT_REASONS: [&str; 3] = ["card_declined", "insufficient_funds", "expired_card"];
const REFUND_REASONS: [&str; 3] = ["damaged", "not_as_described", "changed_mind"];

impl Kind {
    fn name(self, vocabulary: Vocabulary, detail: u8) -> &'static str {
        match vocabulary {
            Vocabulary::Default => DEFAULT_TYPES[self as usize],
            Vocabulary::Custom => match self {
                Kind::FeatureUsed => CUSTOM_TYPES[usize::from(detail) % 4],
                Kind::Session => CUSTOM_TYPES[4],
                Kind::Login => CUSTOM_TYPES[5],
                other => CUSTOM_TYPES[other as usize + 3],
            },
        }
    }
}

/// One customer's plan. Days are offsets from the start; `stop` is the first
/// day of silence, `resume` the first day back (won back, or a lingering
/// drifter's trickle), `forced` a day at or after the cutoff that is
/// guaranteed an event.
#[derive(Debug, Clone, Copy)]
struct Plan {
    archetype: Archetype,
    start: u16,
    drift: u16,
    stop: u16,
    resume: u16,
    forced: u16,
    unsubscribe: u16,
    downgrade: u16,
    /// Day within the billing cycle, or `NO_DAY` without a subscription.
    billing: u16,
    annual: bool,
    cancels: bool,
    hour: u8,
    platform: u8,
    rate: f32,
    drift_tau: f32,
    spend: f32,
    price_cents: u32,
}

/// An event of the day being generated, before rendering.
#[derive(Debug, Clone, Copy)]
struct Pending {
    t: i64,
    customer: u32,
    seq: u16,
    kind: Kind,
    detail: u8,
    cents: u32,
}

/// The event generator: an iterator over lines in time order.
///
/// Use [`Generator::next_event`] on hot paths (no allocation per line) or the
/// [`Iterator`] implementation for owned [`GeneratedEvent`]s.
#[derive(Debug)]
pub struct Generator {
    config: GenerateConfig,
    plans: Vec<Plan>,
    day: u32,
    pending: Vec<Pending>,
    pos: usize,
    invalid_rng: ChaCha8Rng,
    line: Vec<u8>,
    id: String,
    stats: GenerateStats,
}

impl Generator {
    /// Validates the configuration and draws every customer's plan.
    pub fn new(config: GenerateConfig) -> Result<Self, GenerateError> {
        let bad = |field, message: &str| {
            Err(GenerateError::InvalidConfig {
                field,
                message: message.to_string(),
            })
        };
        if config.customers == 0 {
            return bad("customers", "must be at least 1");
        }
        if config.days == 0 || config.days > 10_000 {
            return bad("days", "must be between 1 and 10000");
        }
        if config.cutoff_days == 0 || config.cutoff_days >= config.days {
            return bad("cutoff-days", "must be at least 1 and below --days");
        }
        if !(0.0..=1.0).contains(&config.invalid_rate) {
            return bad("invalid-rate", "must be between 0 and 1");
        }
        let end = i64::from(config.days) * MS_PER_DAY;
        if config
            .start_ms
            .checked_add(end)
            .and_then(chrono::DateTime::from_timestamp_millis)
            .is_none()
            || chrono::DateTime::from_timestamp_millis(config.start_ms).is_none()
        {
            return bad("start", "the period is out of the representable range");
        }
        let plans = (0..config.customers)
            .map(|c| draw_plan(&config, c))
            .collect();
        Ok(Generator {
            invalid_rng: stream(config.seed, 0, 0, DOMAIN_INVALID),
            config,
            plans,
            day: 0,
            pending: Vec::new(),
            pos: 0,
            line: Vec::with_capacity(256),
            id: String::with_capacity(16),
            stats: GenerateStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &GenerateConfig {
        &self.config
    }

    /// Start of the period (ms since the epoch).
    pub fn start_ms(&self) -> i64 {
        self.config.start_ms
    }

    /// End of the period, exclusive.
    pub fn end_ms(&self) -> i64 {
        self.config.start_ms + i64::from(self.config.days) * MS_PER_DAY
    }

    /// The label cutoff: churned customers have no event at or after it.
    pub fn cutoff_ms(&self) -> i64 {
        self.config.start_ms + i64::from(self.config.cutoff_days) * MS_PER_DAY
    }

    /// What has been generated so far.
    pub fn stats(&self) -> GenerateStats {
        self.stats
    }

    /// The id of customer number `index` (0-based).
    pub fn customer_id(index: u32) -> String {
        let mut id = String::new();
        push_customer_id(&mut id, index);
        id
    }

    /// Every customer's planted outcome, in customer order. Known from the
    /// start: the outcome is part of the plan.
    pub fn labels(&self) -> impl Iterator<Item = Label> + '_ {
        self.plans.iter().enumerate().map(|(i, p)| Label {
            customer_id: Self::customer_id(i as u32),
            archetype: p.archetype,
            churned: match self.config.shape {
                Shape::Journeys | Shape::Purchases => p.forced == NO_DAY,
                Shape::Sparse | Shape::Mixed => p.archetype == Archetype::Drifting,
            },
        })
    }

    /// Writes the labels as CSV: a `customer_id,churned` header, then one
    /// line per customer with `churned` 1 or 0.
    pub fn write_labels_csv(&self, mut out: impl Write) -> Result<(), GenerateError> {
        writeln!(out, "customer_id,churned")?;
        for label in self.labels() {
            writeln!(out, "{},{}", label.customer_id, u8::from(label.churned))?;
        }
        out.flush()?;
        Ok(())
    }

    /// The next line in time order, or `None` at the end of the period.
    /// Lines with equal timestamps come in customer order.
    pub fn next_event(&mut self) -> Option<EventRef<'_>> {
        while self.pos >= self.pending.len() {
            if self.day >= self.config.days {
                return None;
            }
            self.generate_day();
        }
        let p = self.pending[self.pos];
        self.pos += 1;
        self.id.clear();
        push_customer_id(&mut self.id, p.customer);
        let invalid = self.config.invalid_rate > 0.0
            && self.invalid_rng.random::<f64>() < self.config.invalid_rate;
        self.line.clear();
        if invalid {
            let how = self.invalid_rng.random_range(0..4_u8);
            let variant = self.invalid_rng.random_range(0..4_u8);
            let cut = self.invalid_rng.random::<f64>();
            render_bad(
                &mut self.line,
                &p,
                &self.id,
                self.config.vocabulary,
                how,
                variant,
                cut,
            );
            self.stats.invalid += 1;
        } else {
            render(
                &mut self.line,
                &p,
                Some(&self.id),
                self.config.vocabulary,
                Some(p.t),
                None,
            );
        }
        self.stats.lines += 1;
        Some(EventRef {
            timestamp_ms: p.t,
            customer_id: &self.id,
            line: &self.line,
            invalid,
        })
    }

    /// Writes every remaining line to `out`, one per line, and returns the
    /// totals.
    pub fn write_jsonl(&mut self, mut out: impl Write) -> Result<GenerateStats, GenerateError> {
        while let Some(e) = self.next_event() {
            out.write_all(e.line)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(self.stats)
    }

    /// Draws every event of the next day and sorts them by time.
    fn generate_day(&mut self) {
        let day = self.day;
        self.day += 1;
        self.pending.clear();
        self.pos = 0;
        let day_start = self.config.start_ms + i64::from(day) * MS_PER_DAY;
        // 1970-01-01 was a Thursday: day 0 mod 7 = Thursday, so 2 and 3 are the weekend.
        let weekday = (day_start + MS_PER_DAY / 2)
            .div_euclid(MS_PER_DAY)
            .rem_euclid(7);
        let weekend = weekday == 2 || weekday == 3;
        let ctx = DayContext {
            day: day as u16,
            day_start,
            weekend,
            cutoff: self.config.cutoff_days as u16,
            seed: self.config.seed,
        };
        for (c, plan) in self.plans.iter().enumerate() {
            match self.config.shape {
                Shape::Journeys => customer_day(plan, c as u32, &ctx, &mut self.pending),
                Shape::Sparse | Shape::Mixed => {
                    rhythm_day(plan, c as u32, &ctx, &mut self.pending);
                }
                Shape::Purchases => purchase_day(plan, c as u32, &ctx, &mut self.pending),
            }
        }
        self.pending
            .sort_unstable_by_key(|p| (p.t, p.customer, p.seq));
    }
}

impl Iterator for Generator {
    type Item = GeneratedEvent;

    fn next(&mut self) -> Option<GeneratedEvent> {
        self.next_event().map(|e| GeneratedEvent {
            timestamp_ms: e.timestamp_ms,
            customer_id: e.customer_id.to_string(),
            line: e.line.to_vec(),
            invalid: e.invalid,
        })
    }
}

/// A random stream for one (customer, day, use): ChaCha keyed by all three,
/// so streams are independent and reproducible across releases.
fn stream(seed: u64, customer: u64, day: u64, domain: u64) -> ChaCha8Rng {
    let mut key = [0_u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&customer.to_le_bytes());
    key[16..24].copy_from_slice(&day.to_le_bytes());
    key[24..].copy_from_slice(&domain.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

fn day_in(rng: &mut ChaCha8Rng, lo: i64, hi: i64) -> i64 {
    if hi <= lo {
        lo
    } else {
        rng.random_range(lo..=hi)
    }
}

fn to_day(d: i64) -> u16 {
    d.clamp(0, i64::from(NO_DAY) - 1) as u16
}

fn draw_plan(config: &GenerateConfig, customer: u32) -> Plan {
    match config.shape {
        Shape::Journeys => {}
        Shape::Sparse | Shape::Mixed => return draw_rhythm_plan(config, customer),
        Shape::Purchases => return draw_purchase_plan(config, customer),
    }
    let mut rng = stream(config.seed, u64::from(customer), 0, DOMAIN_PLAN);
    let days = i64::from(config.days);
    let cutoff = i64::from(config.cutoff_days);
    let roll: f64 = rng.random();
    let archetype = if roll < 0.60 {
        Archetype::Loyal
    } else if roll < 0.75 {
        Archetype::Drifting
    } else if roll < 0.90 {
        Archetype::Churned
    } else {
        Archetype::WonBack
    };
    // Most customers were already there when the period starts; the rest sign up during it.
    let start = if rng.random_bool(0.6) {
        0
    } else {
        day_in(&mut rng, 0, (cutoff / 2).max(0))
    };
    let rate = LogNormal::new(0.6_f64.ln(), 0.6)
        .map(|d| d.sample(&mut rng))
        .unwrap_or(0.6)
        .clamp(0.08, 4.0) as f32;
    let spend = LogNormal::new(35.0_f64.ln(), 0.5)
        .map(|d| d.sample(&mut rng))
        .unwrap_or(35.0) as f32;
    let subscribed = rng.random_bool(0.7);
    let annual = rng.random_bool(0.15);
    let billing = if subscribed {
        let cycle = if annual { 365 } else { 30 };
        rng.random_range(0..cycle)
    } else {
        NO_DAY
    };
    let price_cents = [900, 1900, 4900, 9900][rng.random_range(0..4)];
    let price_cents = if annual {
        price_cents * 10
    } else {
        price_cents
    };
    let hour = rng.random_range(6..22_u8);
    let platform = rng.random_range(0..3_u8);
    let drift_tau = rng.random_range(6.0..20.0_f32);
    let linger = rng.random_bool(0.2);
    let cancels = rng.random_bool(0.4);
    let back_early = rng.random_bool(0.7);
    let r1: f64 = rng.random();
    let r2: f64 = rng.random();
    let r3: f64 = rng.random();
    let unsubscribes = rng.random_bool(0.5);
    let downgrades = rng.random_bool(0.35);
    let r4: f64 = rng.random();
    let r5: f64 = rng.random();

    let mut plan = Plan {
        archetype,
        start: to_day(start),
        drift: NO_DAY,
        stop: to_day(days),
        resume: NO_DAY,
        forced: NO_DAY,
        unsubscribe: NO_DAY,
        downgrade: NO_DAY,
        billing,
        annual,
        cancels: false,
        hour,
        platform,
        rate,
        drift_tau,
        spend,
        price_cents,
    };
    let lerp = |lo: i64, hi: i64, r: f64| lo + ((hi - lo).max(0) as f64 * r) as i64;
    // Friction one-offs fall somewhere in the drift, before the customer goes quiet.
    let one_offs = |plan: &mut Plan, drift: i64, quiet: i64| {
        if unsubscribes {
            plan.unsubscribe = to_day(lerp(drift, quiet - 1, r4));
        }
        if downgrades && billing != NO_DAY {
            plan.downgrade = to_day(lerp(drift, quiet - 1, r5));
        }
    };
    match archetype {
        Archetype::Loyal => {
            plan.forced = to_day(lerp(cutoff, days - 1, r1));
        }
        Archetype::Drifting => {
            let drift = lerp(cutoff - 60, cutoff - 20, r1).max(start);
            plan.drift = to_day(drift);
            if linger {
                plan.forced = to_day(lerp(cutoff, days - 1, r2));
                one_offs(&mut plan, drift, cutoff);
            } else {
                let stop = lerp(cutoff - 10, cutoff - 1, r2).max(start + 1).min(cutoff);
                plan.stop = to_day(stop);
                one_offs(&mut plan, drift, stop);
            }
        }
        Archetype::Churned => {
            let drift = lerp(cutoff - 120, cutoff - 40, r1).max(start);
            let stop = (drift + lerp(10, 40, r2))
                .min(cutoff - 5)
                .max(start + 1)
                .min(cutoff);
            plan.drift = to_day(drift);
            plan.stop = to_day(stop);
            plan.cancels = cancels;
            one_offs(&mut plan, drift, stop);
        }
        Archetype::WonBack => {
            let drift = lerp(cutoff - 110, cutoff - 45, r1).max(start);
            // max-then-min rather than clamp: short periods can invert the bounds.
            let stop = (drift + lerp(10, 30, r2)).max(start + 1).min(days - 1);
            let resume = if back_early {
                (stop + lerp(7, 35, r3)).min(cutoff - 7)
            } else {
                cutoff + lerp(0, 20, r3)
            }
            .max(stop + 1)
            .min(days - 1);
            plan.drift = to_day(drift);
            plan.stop = to_day(stop);
            plan.resume = to_day(resume);
            plan.forced = to_day(resume.max(lerp(cutoff, days - 1, r2)));
            one_offs(&mut plan, drift, stop);
        }
    }
    plan
}

/// A rhythm-shape plan: a pace (`rate`, events a day), the slowdown day in
/// `drift` for the slowed share, a start day like the journeys' (most
/// customers are there from day 0).
fn draw_rhythm_plan(config: &GenerateConfig, customer: u32) -> Plan {
    let mut rng = stream(config.seed, u64::from(customer), 0, DOMAIN_PLAN);
    let gap = match config.shape {
        Shape::Mixed => MIXED_GAPS_DAYS[rng.random_range(0..MIXED_GAPS_DAYS.len())],
        Shape::Sparse | Shape::Journeys | Shape::Purchases => SPARSE_GAP_DAYS,
    };
    let slows = rng.random_bool(SLOWDOWN_SHARE);
    let days = i64::from(config.days);
    let start = if rng.random_bool(0.8) {
        0
    } else {
        day_in(&mut rng, 0, i64::from(Shape::slowdown_day(config.days)) / 2)
    };
    let spend = LogNormal::new(35.0_f64.ln(), 0.5)
        .map(|d| d.sample(&mut rng))
        .unwrap_or(35.0) as f32;
    Plan {
        archetype: if slows {
            Archetype::Drifting
        } else {
            Archetype::Loyal
        },
        start: to_day(start),
        drift: if slows {
            to_day(i64::from(Shape::slowdown_day(config.days)))
        } else {
            NO_DAY
        },
        stop: to_day(days),
        resume: NO_DAY,
        forced: NO_DAY,
        unsubscribe: NO_DAY,
        downgrade: NO_DAY,
        billing: NO_DAY,
        annual: false,
        cancels: false,
        hour: rng.random_range(6..22_u8),
        platform: rng.random_range(0..3_u8),
        rate: 1.0 / gap,
        drift_tau: 0.0,
        spend,
        price_cents: 0,
    }
}

/// Draws one rhythm-shape customer's events on one day: a Poisson number of
/// events at the customer's pace (cut by [`SLOWDOWN_FACTOR`] once slowed),
/// each of a type drawn from the same mix for everyone, and one event on the
/// first day.
fn rhythm_day(plan: &Plan, customer: u32, ctx: &DayContext, out: &mut Vec<Pending>) {
    if ctx.day < plan.start {
        return;
    }
    let mut rng = stream(
        ctx.seed,
        u64::from(customer),
        u64::from(ctx.day),
        DOMAIN_DAY,
    );
    let mut rate = f64::from(plan.rate);
    if plan.drift != NO_DAY && ctx.day >= plan.drift {
        rate *= SLOWDOWN_FACTOR;
    }
    let mut n = Poisson::new(rate).map_or(0.0, |p| p.sample(&mut rng)) as u32;
    if ctx.day == plan.start {
        n = n.max(1);
    }
    for seq in 0..n.min(12) as u16 {
        let t = ctx.day_start + rng.random_range(0..MS_PER_DAY);
        let roll: f64 = rng.random();
        let (kind, detail, cents) = if roll < 0.45 {
            (Kind::Session, plan.platform, 0)
        } else if roll < 0.72 {
            (Kind::FeatureUsed, rng.random_range(0..6), 0)
        } else if roll < 0.92 {
            let cents = amount_cents(&mut rng, plan.spend);
            (Kind::Purchase, rng.random_range(0..100), cents)
        } else if roll < 0.96 {
            (Kind::CartAbandoned, rng.random_range(1..6), 0)
        } else if roll < 0.985 {
            (Kind::SupportTicket, rng.random_range(0..9), 0)
        } else {
            let cents = amount_cents(&mut rng, plan.spend);
            (Kind::PaymentFailed, rng.random_range(0..3), cents)
        };
        out.push(Pending {
            t,
            customer,
            seq,
            kind,
            detail,
            cents,
        });
    }
}

/// A purchase-only plan (Pareto/NBD): `start` the first purchase, `rate`
/// purchases a day while alive, `stop` the first day after death, and
/// `forced` the first purchase at or after the cutoff (or none): the
/// process's first arrival after the cutoff, drawn here so the label is
/// known from the plan; days between the cutoff and it draw nothing.
fn draw_purchase_plan(config: &GenerateConfig, customer: u32) -> Plan {
    use rand_distr::{Exp, Gamma};
    let mut rng = stream(config.seed, u64::from(customer), 0, DOMAIN_PLAN);
    let cutoff = i64::from(config.cutoff_days);
    let days = i64::from(config.days);
    let start = day_in(&mut rng, 0, cutoff - 1);
    // Heterogeneous rates (gamma, shape 0.6, mean one purchase per 60 days)
    // and lifetimes (exponential, mean itself gamma, shape 1.2, mean 150 days).
    let rate: f64 = Gamma::new(0.6, 1.0 / (60.0 * 0.6))
        .map_or(1.0 / 60.0, |g: Gamma<f64>| g.sample(&mut rng))
        .clamp(1e-4, 1.0);
    let mean_life: f64 = Gamma::new(1.2, 150.0 / 1.2).map_or(150.0, |g| g.sample(&mut rng));
    let life = Exp::new(1.0 / mean_life.max(1.0)).map_or(mean_life, |e| e.sample(&mut rng));
    let stop = (start + 1 + life as i64).min(days);
    // `start` is before the cutoff, so the first purchase after it is a new one.
    let first_after = cutoff + Exp::new(rate).map_or(days, |e| e.sample(&mut rng) as i64);
    let forced = if first_after < stop {
        to_day(first_after)
    } else {
        NO_DAY
    };
    let spend = LogNormal::new(40.0_f64.ln(), 0.7)
        .map(|d| d.sample(&mut rng))
        .unwrap_or(40.0) as f32;
    Plan {
        archetype: if forced == NO_DAY {
            Archetype::Churned
        } else {
            Archetype::Loyal
        },
        start: to_day(start),
        drift: NO_DAY,
        stop: to_day(stop),
        resume: NO_DAY,
        forced,
        unsubscribe: NO_DAY,
        downgrade: NO_DAY,
        billing: NO_DAY,
        annual: false,
        cancels: false,
        hour: rng.random_range(6..22_u8),
        platform: rng.random_range(0..3_u8),
        rate: rate as f32,
        drift_tau: 0.0,
        spend,
        price_cents: 0,
    }
}

/// Draws one purchase-only customer's purchases on one day.
fn purchase_day(plan: &Plan, customer: u32, ctx: &DayContext, out: &mut Vec<Pending>) {
    let day = ctx.day;
    if day < plan.start || day >= plan.stop {
        return;
    }
    let waiting = day >= ctx.cutoff && (plan.forced == NO_DAY || day < plan.forced);
    if waiting {
        return;
    }
    let mut rng = stream(ctx.seed, u64::from(customer), u64::from(day), DOMAIN_DAY);
    let mut n = Poisson::new(f64::from(plan.rate)).map_or(0.0, |p| p.sample(&mut rng)) as u32;
    if day == plan.start || day == plan.forced {
        n = n.max(1);
    }
    for seq in 0..n.min(5) as u16 {
        let t = ctx.day_start + rng.random_range(0..MS_PER_DAY);
        let cents = amount_cents(&mut rng, plan.spend);
        out.push(Pending {
            t,
            customer,
            seq,
            kind: Kind::Purchase,
            detail: rng.random_range(0..100),
            cents,
        });
    }
}

/// Per-day chances of friction events, while drifting.
const P_TICKET: f64 = 0.06;
const P_COMPLAINT: f64 = 0.02;
const P_REFUND: f64 = 0.012;
const P_DETRACTOR: f64 = 0.01;

/// What every customer's draw for one day shares.
struct DayContext {
    day: u16,
    day_start: i64,
    weekend: bool,
    cutoff: u16,
    seed: u64,
}

/// Draws one customer's events on one day into `out`.
fn customer_day(plan: &Plan, customer: u32, ctx: &DayContext, out: &mut Vec<Pending>) {
    let DayContext {
        day,
        day_start,
        weekend,
        cutoff,
        seed,
    } = *ctx;
    if day < plan.start {
        return;
    }
    let active = day < plan.stop || (plan.resume != NO_DAY && day >= plan.resume);
    if !active {
        return;
    }
    let mut rng = stream(seed, u64::from(customer), u64::from(day), DOMAIN_DAY);
    let first = out.len();
    let mut seq: u16 = 0;
    let mut push = |out: &mut Vec<Pending>, t: i64, kind: Kind, detail: u8, cents: u32| {
        out.push(Pending {
            t: t.clamp(day_start, day_start + MS_PER_DAY - 1),
            customer,
            seq,
            kind,
            detail,
            cents,
        });
        seq = seq.wrapping_add(1);
    };

    let returned = plan.resume != NO_DAY && day >= plan.resume;
    let drifting = plan.drift != NO_DAY && day >= plan.drift && !returned;
    let engagement = if drifting {
        let since = f64::from(day - plan.drift);
        (-since / f64::from(plan.drift_tau)).exp().max(0.05)
    } else {
        1.0
    };
    let mut rate = f64::from(plan.rate) * engagement;
    if weekend {
        rate *= 0.6;
    }

    let sessions = if rate > 0.0 {
        Poisson::new(rate).map_or(0.0, |p| p.sample(&mut rng)) as u32
    } else {
        0
    };
    let at_hour = |rng: &mut ChaCha8Rng| {
        let jitter: f64 = rng.random::<f64>() + rng.random::<f64>() + rng.random::<f64>() - 1.5;
        let hour = (f64::from(plan.hour) + jitter * 4.0).clamp(0.0, 23.99);
        day_start + (hour * MS_PER_HOUR) as i64 + rng.random_range(0..60_000)
    };
    let buy_chance = if drifting { 0.03 } else { 0.07 };
    for _ in 0..sessions.min(12) {
        let mut t = at_hour(&mut rng);
        if rng.random_bool(0.35) {
            push(out, t, Kind::Login, rng.random_range(0..3), 0);
            t += rng.random_range(500..5_000);
        }
        push(out, t, Kind::Session, plan.platform, 0);
        let features = if drifting { 1.0 } else { 2.0 };
        let mut n = 0;
        while n < 8 && rng.random::<f64>() < features / (features + 1.0) {
            t += rng.random_range(20_000..600_000);
            push(out, t, Kind::FeatureUsed, rng.random_range(0..6), 0);
            n += 1;
        }
        let abandon = if drifting { 0.10 } else { 0.03 };
        if rng.random_bool(abandon) {
            t += rng.random_range(30_000..300_000);
            push(out, t, Kind::CartAbandoned, rng.random_range(1..6), 0);
        }
        if rng.random_bool(buy_chance) {
            t += rng.random_range(30_000..300_000);
            push(
                out,
                t,
                Kind::Purchase,
                rng.random_range(0..100),
                amount_cents(&mut rng, plan.spend),
            );
        }
    }

    if returned && day == plan.resume {
        // Coming back: a visit and money spent.
        let t = at_hour(&mut rng);
        push(out, t, Kind::Session, plan.platform, 0);
        push(
            out,
            t + 120_000,
            Kind::Purchase,
            rng.random_range(0..100),
            amount_cents(&mut rng, plan.spend * 1.5),
        );
        if plan.billing != NO_DAY {
            push(
                out,
                t + 300_000,
                Kind::Renewal,
                u8::from(plan.annual),
                plan.price_cents,
            );
        }
        if rng.random_bool(0.3) {
            push(out, t + 3_600_000, Kind::NpsPromoter, 0, 0);
        }
    }

    if plan.billing != NO_DAY {
        let cycle = if plan.annual { 365 } else { 30 };
        if u32::from(day) % cycle == u32::from(plan.billing) && !(returned && day == plan.resume) {
            let t = day_start + rng.random_range(0..3_600_000);
            if drifting && rng.random_bool(0.35) {
                push(
                    out,
                    t,
                    Kind::PaymentFailed,
                    rng.random_range(0..3),
                    plan.price_cents,
                );
            } else {
                push(
                    out,
                    t,
                    Kind::Renewal,
                    u8::from(plan.annual),
                    plan.price_cents,
                );
            }
        }
    }

    let friction = |p: f64| if drifting { p } else { p / 15.0 };
    if rng.random_bool(friction(P_TICKET)) {
        push(
            out,
            at_hour(&mut rng),
            Kind::SupportTicket,
            rng.random_range(0..9),
            0,
        );
    }
    if rng.random_bool(friction(P_COMPLAINT) / 2.0) {
        push(
            out,
            at_hour(&mut rng),
            Kind::Complaint,
            rng.random_range(0..4),
            0,
        );
    }
    if rng.random_bool(friction(P_REFUND)) {
        push(
            out,
            at_hour(&mut rng),
            Kind::Refund,
            rng.random_range(0..3),
            amount_cents(&mut rng, plan.spend),
        );
    }
    if rng.random_bool(friction(P_DETRACTOR) / 2.0) {
        push(out, at_hour(&mut rng), Kind::NpsDetractor, 0, 0);
    }
    if !drifting && rng.random_bool(0.004) {
        push(out, at_hour(&mut rng), Kind::NpsPromoter, 0, 0);
    }
    let unsubscribed = plan.unsubscribe != NO_DAY && day >= plan.unsubscribe;
    if !unsubscribed && rng.random_bool(0.05 * engagement) {
        push(out, at_hour(&mut rng), Kind::EmailOpen, 0, 0);
    }
    if day == plan.unsubscribe {
        push(out, at_hour(&mut rng), Kind::EmailUnsubscribe, 0, 0);
    }
    if day == plan.downgrade {
        push(out, at_hour(&mut rng), Kind::PlanDowngrade, 0, 0);
    }

    let last_day = !returned && plan.stop != NO_DAY && day + 1 == plan.stop;
    let guaranteed = day == plan.start || day == plan.forced || (last_day && day < cutoff);
    if guaranteed && out.len() == first {
        push(out, at_hour(&mut rng), Kind::Session, plan.platform, 0);
    }
    if last_day && plan.cancels {
        let latest = out[first..].iter().map(|p| p.t).max().unwrap_or(day_start);
        push(out, latest + 60_000, Kind::SubscriptionCancelled, 0, 0);
    }
}

fn amount_cents(rng: &mut ChaCha8Rng, median: f32) -> u32 {
    let amount = LogNormal::new(f64::from(median).max(1.0).ln(), 0.6)
        .map_or(f64::from(median), |d| d.sample(rng));
    (amount * 100.0).round().clamp(100.0, 10_000_000.0) as u32
}

fn push_customer_id(out: &mut String, index: u32) {
    use std::fmt::Write as _;
    let _ = write!(out, "cust-{index:07}");
}

/// Writes an RFC 3339 UTC timestamp with milliseconds.
fn push_timestamp(out: &mut Vec<u8>, ms: i64) {
    let days = ms.div_euclid(MS_PER_DAY);
    let rem = ms.rem_euclid(MS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let (h, rem) = (rem / 3_600_000, rem % 3_600_000);
    let (min, rem) = (rem / 60_000, rem % 60_000);
    let (s, milli) = (rem / 1000, rem % 1000);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z"
    );
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn push_cents(out: &mut Vec<u8>, cents: i64) {
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    let _ = write!(out, "{sign}{}.{:02}", c / 100, c % 100);
}

/// Renders an event. `customer_id: None` leaves the field out; `timestamp:
/// None` writes `null`; `amount_override` replaces the amount (in cents),
/// and adds one to types that have none.
fn render(
    out: &mut Vec<u8>,
    p: &Pending,
    customer_id: Option<&str>,
    vocabulary: Vocabulary,
    timestamp: Option<i64>,
    amount_override: Option<i64>,
) {
    render_with(
        out,
        p,
        customer_id,
        vocabulary,
        |out| match timestamp {
            Some(t) => {
                out.push(b'"');
                push_timestamp(out, t);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        },
        amount_override,
    );
}

fn render_with(
    out: &mut Vec<u8>,
    p: &Pending,
    customer_id: Option<&str>,
    vocabulary: Vocabulary,
    timestamp: impl FnOnce(&mut Vec<u8>),
    amount_override: Option<i64>,
) {
    out.push(b'{');
    if let Some(id) = customer_id {
        out.extend_from_slice(b"\"customer_id\":\"");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\",");
    }
    out.extend_from_slice(b"\"event_type\":\"");
    out.extend_from_slice(p.kind.name(vocabulary, p.detail).as_bytes());
    out.extend_from_slice(b"\",\"timestamp\":");
    timestamp(out);
    let amount = match p.kind {
        Kind::Purchase | Kind::Renewal => Some(i64::from(p.cents)),
        _ => None,
    };
    if let Some(cents) = amount_override.or(amount) {
        out.extend_from_slice(b",\"amount\":");
        push_cents(out, cents);
    }
    let d = usize::from(p.detail);
    let _ = match p.kind {
        Kind::Session => write!(
            out,
            r#","properties":{{"platform":"{}"}}"#,
            PLATFORMS[d % 3]
        ),
        Kind::Login => write!(
            out,
            r#","properties":{{"method":"{}"}}"#,
            LOGIN_METHODS[d % 3]
        ),
        Kind::FeatureUsed => write!(out, r#","properties":{{"feature":"{}"}}"#, FEATURES[d % 6]),
        Kind::Purchase => write!(
            out,
            r#","properties":{{"sku":"sku-{:04}","currency":"EUR"}}"#,
            d * 37 % 1000
        ),
        Kind::Renewal => write!(
            out,
            r#","properties":{{"plan":"{}","currency":"EUR"}}"#,
            if d == 1 { "annual" } else { "monthly" }
        ),
        Kind::SupportTicket => write!(
            out,
            r#","properties":{{"channel":"{}","priority":"{}"}}"#,
            CHANNELS[d % 3],
            ["low", "normal", "high"][d / 3 % 3]
        ),
        Kind::Complaint => write!(out, r#","properties":{{"topic":"{}"}}"#, TOPICS[d % 4]),
        Kind::PaymentFailed => {
            out.extend_from_slice(br#","properties":{"amount_due":"#);
            push_cents(out, i64::from(p.cents));
            write!(out, r#","reason":"{}"}}"#, PAYMENT_REASONS[d % 3])
        }
        Kind::Refund => {
            out.extend_from_slice(br#","properties":{"refund_amount":"#);
            push_cents(out, i64::from(p.cents));
            write!(out, r#","reason":"{}"}}"#, REFUND_REASONS[d % 3])
        }
        Kind::CartAbandoned => write!(out, r#","properties":{{"items":{}}}"#, d.max(1)),
        Kind::NpsPromoter | Kind::NpsDetractor => {
            write!(out, r#","properties":{{"channel":"survey"}}"#)
        }
        Kind::EmailOpen
        | Kind::EmailUnsubscribe
        | Kind::PlanDowngrade
        | Kind::SubscriptionCancelled => Ok(()),
    };
    out.push(b'}');
}

/// Renders one of four realistic bad lines in place of an event.
fn render_bad(
    out: &mut Vec<u8>,
    p: &Pending,
    customer_id: &str,
    vocabulary: Vocabulary,
    how: u8,
    variant: u8,
    cut: f64,
) {
    match how {
        // A writer died mid-line: any strict prefix of an object is invalid JSON.
        0 => {
            render(out, p, Some(customer_id), vocabulary, Some(p.t), None);
            let keep = 1 + ((out.len() - 2) as f64 * cut) as usize;
            out.truncate(keep.min(out.len() - 1));
        }
        // An upstream mapping lost the key.
        1 => render(out, p, None, vocabulary, Some(p.t), None),
        // Timestamps from systems that don't speak RFC 3339.
        2 => render_with(
            out,
            p,
            Some(customer_id),
            vocabulary,
            |out| {
                let _ = match variant {
                    0 => write!(out, "{}", p.t / 1000),
                    1 => {
                        out.push(b'"');
                        push_timestamp(out, p.t);
                        // Drop the `Z`: a local time without an offset.
                        out.pop();
                        out.push(b'"');
                        Ok(())
                    }
                    2 => write!(out, r#""2025-02-30T10:00:00Z""#),
                    _ => write!(out, r#""yesterday""#),
                };
            },
            None,
        ),
        // A refund booked as a negative purchase.
        _ => {
            let cents = match p.kind {
                Kind::Purchase | Kind::Renewal => i64::from(p.cents),
                _ => 999,
            };
            render(
                out,
                p,
                Some(customer_id),
                vocabulary,
                Some(p.t),
                Some(-cents),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use churn_core::event::parse_event;
    use std::collections::HashMap;

    fn small(customers: u32, seed: u64) -> GenerateConfig {
        GenerateConfig {
            customers,
            seed,
            ..GenerateConfig::default()
        }
    }

    #[test]
    fn same_config_same_bytes_and_time_order() {
        let a: Vec<GeneratedEvent> = Generator::new(small(50, 7)).expect("valid").collect();
        let b: Vec<GeneratedEvent> = Generator::new(small(50, 7)).expect("valid").collect();
        assert_eq!(a, b);
        assert!(a.len() > 1000, "{}", a.len());
        assert!(a.windows(2).all(|w| w[0].timestamp_ms <= w[1].timestamp_ms));
        let c: Vec<GeneratedEvent> = Generator::new(small(50, 8)).expect("valid").collect();
        assert_ne!(a, c);
    }

    #[test]
    fn a_customer_does_not_depend_on_the_others() {
        let of = |n: u32| -> Vec<Vec<u8>> {
            Generator::new(small(n, 3))
                .expect("valid")
                .filter(|e| e.customer_id == "cust-0000004")
                .map(|e| e.line)
                .collect()
        };
        assert_eq!(of(5), of(40));
    }

    #[test]
    fn every_line_parses_and_matches_its_metadata() {
        let mut g = Generator::new(small(100, 1)).expect("valid");
        let cutoff = g.cutoff_ms();
        let mut lines = 0;
        while let Some(e) = g.next_event() {
            let parsed = parse_event(e.line).expect("valid line");
            assert_eq!(parsed.customer_id, e.customer_id);
            assert_eq!(parsed.timestamp_ms, e.timestamp_ms);
            assert!(e.line.len() < 200, "{}", String::from_utf8_lossy(e.line));
            lines += 1;
        }
        assert_eq!(g.stats().lines, lines);
        assert!(cutoff > g.start_ms() && cutoff < g.end_ms());
    }

    #[test]
    fn labels_are_exact_and_planted() {
        let g = Generator::new(small(2000, 5)).expect("valid");
        let cutoff = g.cutoff_ms();
        let labels: Vec<Label> = g.labels().collect();
        let mut first: HashMap<String, i64> = HashMap::new();
        let mut after: HashMap<String, bool> = HashMap::new();
        for e in g {
            first.entry(e.customer_id.clone()).or_insert(e.timestamp_ms);
            if e.timestamp_ms >= cutoff {
                after.insert(e.customer_id, true);
            }
        }
        let mut churned = 0;
        for label in &labels {
            assert!(
                first.contains_key(&label.customer_id),
                "{} has events",
                label.customer_id
            );
            let active_after = after.get(&label.customer_id).copied().unwrap_or(false);
            assert_eq!(label.churned, !active_after, "{label:?}");
            if label.churned {
                churned += 1;
                assert!(matches!(
                    label.archetype,
                    Archetype::Drifting | Archetype::Churned
                ));
            }
        }
        let rate = f64::from(churned) / labels.len() as f64;
        assert!((0.2..0.35).contains(&rate), "churn rate {rate}");
    }

    /// Events per customer before and after the slowdown day, by label.
    fn rhythm_counts(shape: Shape, customers: u32) -> (Vec<Label>, HashMap<String, (u32, u32)>) {
        let config = GenerateConfig {
            shape,
            ..small(customers, 5)
        };
        let slow_ms = config.start_ms + i64::from(Shape::slowdown_day(config.days)) * MS_PER_DAY;
        let mut generator = Generator::new(config).expect("valid");
        let mut counts: HashMap<String, (u32, u32)> = HashMap::new();
        let mut last = i64::MIN;
        for e in generator.by_ref() {
            assert!(e.timestamp_ms >= last, "time order");
            last = e.timestamp_ms;
            let c = counts.entry(e.customer_id).or_default();
            if e.timestamp_ms < slow_ms {
                c.0 += 1;
            } else {
                c.1 += 1;
            }
        }
        (generator.labels().collect(), counts)
    }

    #[test]
    fn the_sparse_shape_has_an_eighteen_day_rhythm_and_a_slowed_share() {
        let (labels, counts) = rhythm_counts(Shape::Sparse, 4000);
        let slowed = labels.iter().filter(|l| l.churned).count() as f64 / labels.len() as f64;
        assert!((0.27..0.33).contains(&slowed), "slowed share {slowed}");
        // Measured after the slowdown day, where no customer's forced first event falls.
        let (mut kept_n, mut after_kept, mut after_slowed, mut slowed_n) = (0.0, 0.0, 0.0, 0.0);
        for label in &labels {
            let (_, after) = counts.get(&label.customer_id).copied().unwrap_or_default();
            if label.churned {
                after_slowed += f64::from(after);
                slowed_n += 1.0;
            } else {
                after_kept += f64::from(after);
                kept_n += 1.0;
            }
        }
        let gap = 72.0 * kept_n / after_kept;
        assert!((17.0..21.5).contains(&gap), "mean gap {gap} days");
        let ratio = (after_slowed / slowed_n) / (after_kept / kept_n);
        assert!((0.07..0.13).contains(&ratio), "slowed rate ratio {ratio}");
    }

    #[test]
    fn the_mixed_shape_spans_daily_to_forty_day_rhythms() {
        let (labels, counts) = rhythm_counts(Shape::Mixed, 2000);
        let mut per_customer: Vec<u32> = labels
            .iter()
            .filter(|l| !l.churned)
            .map(|l| counts.get(&l.customer_id).map_or(0, |c| c.0))
            .collect();
        per_customer.sort_unstable();
        let decile = |q: f64| per_customer[((per_customer.len() - 1) as f64 * q) as usize];
        // Daily customers log about 108 events before day 108; 40-day ones about 3.
        assert!(decile(0.9) >= 80, "top decile {}", decile(0.9));
        assert!(decile(0.1) <= 6, "bottom decile {}", decile(0.1));
    }

    #[test]
    fn custom_vocabulary_renames_only_the_types() {
        let default: Vec<GeneratedEvent> = Generator::new(small(30, 9)).expect("valid").collect();
        let custom: Vec<GeneratedEvent> = Generator::new(GenerateConfig {
            vocabulary: Vocabulary::Custom,
            ..small(30, 9)
        })
        .expect("valid")
        .collect();
        assert_eq!(default.len(), custom.len());
        let model = churn_core::model::RiskModel::default_model();
        for (d, c) in default.iter().zip(&custom) {
            assert_eq!(
                (d.timestamp_ms, &d.customer_id),
                (c.timestamp_ms, &c.customer_id)
            );
            let pc = parse_event(&c.line).expect("valid");
            assert!(model.kind_of(&pc.event_type).is_none(), "{}", pc.event_type);
            assert!(
                Vocabulary::Custom
                    .event_types()
                    .contains(&pc.event_type.as_ref())
            );
            let pd = parse_event(&d.line).expect("valid");
            assert!(
                Vocabulary::Default
                    .event_types()
                    .contains(&pd.event_type.as_ref())
            );
            assert_eq!(pd.amount, pc.amount);
        }
    }

    #[test]
    fn invalid_lines_are_rejected_and_the_rest_unchanged() {
        let clean: Vec<GeneratedEvent> = Generator::new(small(40, 2)).expect("valid").collect();
        let dirty: Vec<GeneratedEvent> = Generator::new(GenerateConfig {
            invalid_rate: 0.05,
            ..small(40, 2)
        })
        .expect("valid")
        .collect();
        assert_eq!(clean.len(), dirty.len());
        let mut reasons: HashMap<&'static str, u32> = HashMap::new();
        for (c, d) in clean.iter().zip(&dirty) {
            if d.invalid {
                let err = parse_event(&d.line).expect_err("bad line");
                *reasons.entry(err.reason()).or_default() += 1;
            } else {
                assert_eq!(c, d);
            }
        }
        let bad = dirty.iter().filter(|e| e.invalid).count() as f64 / dirty.len() as f64;
        assert!((0.03..0.07).contains(&bad), "{bad}");
        for want in [
            "malformed_json",
            "missing_field",
            "bad_timestamp",
            "bad_amount",
        ] {
            assert!(reasons.contains_key(want), "{want}: {reasons:?}");
        }
    }

    #[test]
    fn bad_settings_are_named() {
        let err = |c: GenerateConfig| match Generator::new(c) {
            Err(GenerateError::InvalidConfig { field, .. }) => field,
            other => panic!("expected an error, got {other:?}"),
        };
        assert_eq!(
            err(GenerateConfig {
                customers: 0,
                ..small(1, 1)
            }),
            "customers"
        );
        assert_eq!(
            err(GenerateConfig {
                cutoff_days: 180,
                ..small(1, 1)
            }),
            "cutoff-days"
        );
        assert_eq!(
            err(GenerateConfig {
                invalid_rate: 1.5,
                ..small(1, 1)
            }),
            "invalid-rate"
        );
        assert_eq!(
            err(GenerateConfig {
                days: 0,
                ..small(1, 1)
            }),
            "days"
        );
    }

    #[test]
    fn short_periods_still_keep_the_label_promise() {
        for (days, cutoff) in [(2, 1), (10, 3), (40, 39)] {
            let g = Generator::new(GenerateConfig {
                days,
                cutoff_days: cutoff,
                ..small(300, 4)
            })
            .expect("valid");
            let cut = g.cutoff_ms();
            let labels: HashMap<String, bool> =
                g.labels().map(|l| (l.customer_id, l.churned)).collect();
            let mut seen: HashMap<String, bool> = HashMap::new();
            for e in g {
                *seen.entry(e.customer_id).or_default() |= e.timestamp_ms >= cut;
            }
            assert_eq!(seen.len(), labels.len());
            for (id, churned) in labels {
                assert_eq!(churned, !seen[&id], "{id} days={days} cutoff={cutoff}");
            }
        }
    }

    #[test]
    fn timestamps_format_like_chrono() {
        for ms in [
            0,
            1_735_689_600_123,
            951_782_400_000,
            -86_400_001,
            4_102_444_799_999,
        ] {
            let mut out = Vec::new();
            push_timestamp(&mut out, ms);
            assert_eq!(
                String::from_utf8(out).expect("ascii"),
                churn_core::event::format_timestamp_ms(ms)
            );
        }
    }
}
