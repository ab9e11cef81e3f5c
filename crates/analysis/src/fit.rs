//! `fit`: learns a model's points from labelled outcomes.
//!
//! 1. A first pass over the events before the cutoff counts, for every event
//!    type, the labelled customers who produced it. Types with enough support
//!    join the base model's event types.
//! 2. A second pass replays the events into the engine, and every labelled
//!    customer's factor values at the cutoff ([`CustomerState::factor_values`])
//!    become one row of the design matrix.
//! 3. An L2-regularised logistic regression ([`super::logistic`]) is fitted,
//!    its penalty chosen by seeded k-fold cross-validation on ROC AUC.
//! 4. Coefficients become points: points = coefficient × `score.scale`, with
//!    `midpoint = 0` and `base_points = intercept × scale`, so that
//!    risk / 100 is exactly the fitted probability.
//!
//! # Signs
//!
//! The engine holds a decayed factor (an event type's count, long-run
//! activity, spend) at its last-event value when its points add risk, and
//! fades it with the silence since when they protect. So each such factor is
//! two candidate columns: its *held* value, whose weight must be ≥ 0, and its
//! *faded* value, whose weight must be ≤ 0, of which at most one may be used.
//! Left to itself a regression plays the two against each other (held value
//! as risk, faded value as protection: a contrast measuring how long ago the
//! events were, which the engine cannot express), so the side of each factor
//! is chosen first, by a constrained fit at the largest penalty of the grid
//! (where ridge's grouping effect makes correlated columns share a sign), and
//! the weights are then fitted at the cross-validated penalty with only those
//! sides. In both fits a column whose weight crosses its bound (and trend or
//! inactivity below 0) is left out and the rest refitted, and a factor with
//! both sides still in keeps the side of its net direction. The factor's
//! points are the weight of the column kept, whose sign selects exactly the
//! value the engine will compute: the written model scores what was fitted,
//! by construction. Cross-validation repeats the whole procedure per fold.
//!
//! [`CustomerState::factor_values`]: churn_core::engine::CustomerState::factor_values

use std::collections::BTreeMap;
use std::io::BufRead;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use super::alerts::{
    ThresholdRow, labelled_peaks, replay_with_peaks, threshold_for_precision, threshold_for_rate,
    threshold_table,
};
use super::labels::Labels;
use super::logistic::{Design, LogisticError, LogisticFit, LogisticProblem};
use super::metrics;
use churn_core::engine::{CustomerStore, Factor};
use churn_core::event::format_timestamp_ms;
use churn_core::input::{InputFormat, MessageContext};
use churn_core::model::{EventRule, MAX_EVENT_TYPES, ModelError, ModelSpec, RiskModel};
use churn_core::offline::{
    BadLine, ReplayError, ReplayStats, TimeLimit, for_each_line, replay_with,
};

/// The default grid of L2 penalties tried by cross-validation (standardised units).
pub const DEFAULT_LAMBDAS: [f64; 5] = [1e-4, 1e-3, 1e-2, 1e-1, 1.0];

/// Options of `fit`.
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// Only events strictly before this time are used; customers are scored at it.
    pub cutoff_ms: i64,
    /// Cross-validation folds (at least 2).
    pub folds: usize,
    /// Seed of the fold assignment.
    pub seed: u64,
    /// An event type is fitted when at least this many labelled customers produced it.
    pub min_support: u64,
    /// Half-life of event types the base model does not name, in days.
    pub default_half_life_days: f64,
    /// Penalties to try.
    pub lambdas: Vec<f64>,
    /// `model_version` of the fitted model; default `fit-<cutoff date>`.
    pub model_version: Option<String>,
    /// Stop at the first bad event line.
    pub strict: bool,
    /// Choose the largest penalty within one standard error of the best
    /// cross-validated AUC instead of the best one.
    pub one_standard_error: bool,
    /// Set the alert thresholds from the data (see [`AlertTarget`]).
    pub alert_target: Option<AlertTarget>,
    /// Half-lives (days) tried for each fitted event type; empty keeps the
    /// base model's.
    pub half_life_grid: Vec<f64>,
    /// The least cross-validated AUC gain for which a type leaves its
    /// current half-life (default [`HALF_LIFE_MIN_GAIN`]).
    pub half_life_min_gain: f64,
    /// How event lines are read (default: the native format).
    pub input: InputFormat,
}

/// The default half-lives tried per event type, in days.
pub const DEFAULT_HALF_LIFE_GRID: [f64; 4] = [7.0, 30.0, 90.0, 180.0];
/// The penalty at which half-lives are compared (standardised units).
const HALF_LIFE_LAMBDA: f64 = 1e-2;
/// A half-life other than the base model's must raise the cross-validated
/// AUC by at least this much: smaller gains are fold noise, and chasing them
/// lets rare types trade signs with their neighbours.
pub const HALF_LIFE_MIN_GAIN: f64 = 0.002;

/// What the fitted model's at-risk threshold should reach, measured on the
/// labelled customers over the month before the cutoff
/// ([`crate::alerts`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertTarget {
    /// The lowest threshold whose alerted customers churned at least this often.
    Precision(f64),
    /// The lowest threshold alerting at most this share of customers per 30 days.
    Rate(f64),
}

/// Knots of the fitted silence curve in days, beside the base model's steps.
const INACTIVITY_KNOTS_DAYS: [f64; 6] = [7.0, 14.0, 30.0, 60.0, 120.0, 240.0];
/// Knots of the fitted rhythm curve in usual gaps, beside the base model's steps.
const RHYTHM_KNOTS_GAPS: [f64; 6] = [1.0, 2.0, 3.0, 4.0, 6.0, 10.0];

impl FitOptions {
    /// Defaults: 5 folds, seed 42, support 20, 30-day half-life, the default grid.
    pub fn new(cutoff_ms: i64) -> Self {
        FitOptions {
            cutoff_ms,
            folds: 5,
            seed: 42,
            min_support: 20,
            default_half_life_days: 30.0,
            lambdas: DEFAULT_LAMBDAS.to_vec(),
            model_version: None,
            strict: false,
            one_standard_error: false,
            alert_target: None,
            half_life_grid: DEFAULT_HALF_LIFE_GRID.to_vec(),
            half_life_min_gain: HALF_LIFE_MIN_GAIN,
            input: InputFormat::Churn,
        }
    }
}

/// Errors that stop a fit.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// Reading the events failed.
    #[error("reading events: {0}")]
    Io(#[from] std::io::Error),
    /// The replay stopped.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The model built is invalid (a bug, or a base model at its limits).
    #[error("building the model: {0}")]
    Model(#[from] ModelError),
    /// The regression failed.
    #[error("logistic regression: {0}")]
    Logistic(#[from] LogisticError),
    /// Writing the model file failed.
    #[error("writing the model: {0}")]
    Toml(#[from] toml::ser::Error),
    /// An option is out of range.
    #[error("invalid option: {0}")]
    Option(String),
    /// Not enough labelled customers with events for the folds.
    #[error(
        "need at least {folds} churned and {folds} retained labelled customers with events before the cutoff; found {churned} and {retained}"
    )]
    TooFewLabels {
        /// Folds asked for.
        folds: usize,
        /// Churned customers with events.
        churned: u64,
        /// Retained customers with events.
        retained: u64,
    },
}

/// How many labelled customers produced an event type before the cutoff.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeSupport {
    /// The `event_type`.
    pub event_type: String,
    /// Distinct labelled customers with at least one such event.
    pub customers: u64,
    /// Whether the base model names it.
    pub in_base: bool,
    /// Whether its points were fitted (otherwise they are 0, or it is not in the model).
    pub fitted: bool,
}

/// Cross-validated AUC of one penalty.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CvResult {
    /// The penalty.
    pub lambda: f64,
    /// Mean of the folds' AUCs.
    pub mean_auc: f64,
    /// Each fold's AUC on its held-out customers.
    pub fold_aucs: Vec<f64>,
}

/// One fitted factor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FittedFactor {
    /// Factor name as in reasons; `base` is the intercept.
    pub factor: String,
    /// Points per unit of the factor's value in the written model
    /// (inactivity: the multiplier applied to the base model's steps).
    pub points: f64,
    /// Log-odds per unit (points / scale).
    pub coefficient: f64,
    /// Log-odds per standard deviation of the value (comparable across factors).
    pub standardized: f64,
    /// `held` (value at the last event: risk points), `faded` (decayed to the
    /// cutoff: protective points), `plain` (no decay), or `none` (points 0).
    pub value: &'static str,
    /// Customers with a non-zero value.
    pub customers: u64,
    /// Mean value over the fitted customers.
    pub mean_value: f64,
}

/// What a fit did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitSummary {
    /// The cutoff (RFC 3339, UTC).
    pub cutoff: String,
    /// `model_version` of the base model.
    pub base_model_version: String,
    /// `model_version` of the fitted model.
    pub model_version: String,
    /// Labelled customers with events before the cutoff: the rows fitted.
    pub customers: u64,
    /// Of them, churned.
    pub churned: u64,
    /// Labelled customers without events before the cutoff (left out).
    pub labelled_without_events: u64,
    /// Events applied.
    pub events_applied: u64,
    /// Valid events at or after the cutoff, not applied.
    pub events_ignored_after_cutoff: u64,
    /// Event lines rejected.
    pub event_lines_rejected: u64,
    /// Support of every event type seen, highest first.
    pub event_types: Vec<TypeSupport>,
    /// The penalty chosen.
    pub lambda: f64,
    /// Cross-validated AUC of each penalty.
    pub cross_validation: Vec<CvResult>,
    /// Factors whose points are 0 because every weight the data asked for
    /// broke a sign rule (see the module documentation).
    pub left_out: Vec<String>,
    /// The fitted factors, in model order.
    pub factors: Vec<FittedFactor>,
    /// AUC of the fitted model on the customers it was fitted on.
    pub training_auc: Option<f64>,
    /// Largest |risk/100 − fitted probability| over the fitted customers:
    /// the written model scores what was fitted (a few 1e-16 expected).
    pub max_score_deviation: f64,
    /// Cross-validated AUC of the fitted model at the penalty chosen.
    pub cv_auc: f64,
    /// The textbook baseline on the same folds: a logistic regression on
    /// recency, frequency, spend and tenure (its best penalty).
    pub baseline_cv_auc: f64,
    /// The half-life chosen for each fitted event type, in days.
    pub half_lives: Vec<(String, f64)>,
    /// How the penalty was chosen: `best` or `one-standard-error`.
    pub lambda_rule: &'static str,
    /// The at-risk threshold set from the data, with its figures, if asked.
    pub alert_threshold: Option<(AlertTarget, ThresholdRow)>,
}

/// A fitted model and how it was made.
pub struct FitOutcome {
    /// The model file's content.
    pub spec: ModelSpec,
    /// The same, compiled.
    pub model: RiskModel,
    /// What the fit did.
    pub summary: FitSummary,
    /// The replay of the second pass (for an in-sample report).
    pub store: CustomerStore,
    /// Its counts.
    pub replay_stats: ReplayStats,
}

/// Which value of a factor a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Value at the last event; weight ≥ 0.
    Held,
    /// Value decayed to the cutoff; weight ≤ 0.
    Faded,
    /// A factor without decay (trend, tenure).
    Plain,
    /// One segment of a silence curve (inactivity in days, rhythm in usual
    /// gaps): how far the silence has gone from knot `j − 1` to knot `j`, 0
    /// to 1. Its weight, ≥ 0, is the points that segment adds, so the curve
    /// can only rise.
    Ramp(usize),
}

/// A column of the design matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Column {
    factor: Factor,
    side: Side,
}

/// The sign a column's weight is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Free,
    NonNegative,
    NonPositive,
}

impl Bound {
    fn violated_by(self, w: f64) -> bool {
        match self {
            Bound::Free => false,
            Bound::NonNegative => w < 0.0,
            Bound::NonPositive => w > 0.0,
        }
    }
}

impl Column {
    fn bound(self) -> Bound {
        match (self.side, self.factor) {
            (Side::Held, _) => Bound::NonNegative,
            (Side::Faded, _) => Bound::NonPositive,
            // The model file forbids negative trend points and inactivity steps.
            (Side::Plain, Factor::Trend) | (Side::Ramp(_), _) => Bound::NonNegative,
            (Side::Plain, _) => Bound::Free,
        }
    }
}

/// The rules a fit must keep: a bound per column, and pairs of columns (the
/// held and faded values of one factor) of which at most one may be used.
struct Constraints {
    bounds: Vec<Bound>,
    pairs: Vec<(usize, usize)>,
}

/// Counts event types by distinct labelled customers, events before the
/// cutoff only; also sums each labelled customer's amounts (in
/// `labels.sorted()` order) for the baseline.
fn count_support(
    format: &InputFormat,
    input: impl BufRead,
    labels: &Labels,
    cutoff_ms: i64,
) -> Result<(BTreeMap<String, u64>, Vec<f64>), FitError> {
    let customers: FxHashMap<&str, u32> = labels
        .sorted()
        .into_iter()
        .enumerate()
        .map(|(i, (id, _))| (id, i as u32))
        .collect();
    let mut types: FxHashMap<String, u32> = FxHashMap::default();
    let mut support: Vec<u64> = Vec::new();
    // One bit per type for the first 64 types seen; pairs beyond that. Memory
    // grows with customers (and types), never with events.
    let mut masks: Vec<u64> = vec![0; customers.len()];
    let mut spend: Vec<f64> = vec![0.0; customers.len()];
    let mut overflow: FxHashSet<(u32, u32)> = FxHashSet::default();
    let no_context = MessageContext::default();
    for_each_line(input, |_, line| -> Result<(), FitError> {
        let Ok(Some(event)) = format.decode(line, &no_context) else {
            return Ok(());
        };
        if event.timestamp_ms >= cutoff_ms {
            return Ok(());
        }
        let Some(&c) = customers.get(event.customer_id.as_ref()) else {
            return Ok(());
        };
        if let Some(amount) = event.amount.filter(|a| *a > 0.0) {
            spend[c as usize] += amount;
        }
        let t = match types.get(event.event_type.as_ref()) {
            Some(&t) => t,
            None => {
                let t = support.len() as u32;
                types.insert(event.event_type.clone().into_owned(), t);
                support.push(0);
                t
            }
        };
        let first_time = if t < 64 {
            let bit = 1_u64 << t;
            let seen = masks[c as usize] & bit != 0;
            masks[c as usize] |= bit;
            !seen
        } else {
            overflow.insert((c, t))
        };
        if first_time {
            support[t as usize] += 1;
        }
        Ok(())
    })?;
    let support = types
        .into_iter()
        .map(|(name, t)| (name, support[t as usize]))
        .collect();
    Ok((support, spend))
}

/// Cross-validated AUC of the textbook baseline on the same folds: a
/// logistic regression on recency (days since the last event), frequency
/// (ln of 1 + events), spend (ln of 1 + amounts) and tenure (days from the
/// first to the last event), at its best penalty of `grid`.
#[allow(clippy::too_many_arguments)]
fn baseline_cv_auc(
    store: &CustomerStore,
    rows: &[(&str, bool)],
    spend: &[f64],
    y: &[bool],
    fold_of: &[usize],
    folds: usize,
    grid: &[f64],
    cutoff_ms: i64,
) -> Result<f64, FitError> {
    const DAY: f64 = 86_400_000.0;
    let mut x = Design::new(4);
    for ((id, _), amount) in rows.iter().zip(spend) {
        let row = match store.get(id) {
            Some(s) => [
                (cutoff_ms - s.last_event_ms()) as f64 / DAY,
                f64::from(s.events()).ln_1p(),
                amount.ln_1p(),
                (s.last_event_ms() - s.first_event_ms()) as f64 / DAY,
            ],
            None => [0.0; 4],
        };
        x.push_row(&row)?;
    }
    let all = [true; 4];
    let mut best = f64::NEG_INFINITY;
    for &lambda in grid {
        let mut sum = 0.0;
        for fold in 0..folds {
            let train: Vec<usize> = (0..y.len()).filter(|&i| fold_of[i] != fold).collect();
            let fit = LogisticProblem::new(&x, y, Some(&train), &all)?.fit(lambda, None)?;
            let scored: Vec<(f64, bool)> = (0..y.len())
                .filter(|&i| fold_of[i] == fold)
                .map(|i| (fit.logit(x.row(i)), y[i]))
                .collect();
            sum += metrics::roc_auc(&scored).unwrap_or(0.5);
        }
        best = best.max(sum / folds as f64);
    }
    Ok(best)
}

/// The model's structure: which event types, their half-lives and activity flags.
struct Skeleton {
    /// Base spec with every event type (base and new), activity made explicit.
    spec: ModelSpec,
    /// Event types whose points are fitted.
    fitted: FxHashSet<String>,
    support: Vec<TypeSupport>,
}

fn skeleton(
    base: &RiskModel,
    support: BTreeMap<String, u64>,
    options: &FitOptions,
) -> Result<Skeleton, FitError> {
    let mut spec = base.spec().clone();
    // Activity flags are fixed explicitly: by default they follow the sign of
    // the points, and a fitted sign must not change which events count as activity.
    for (name, rule) in spec.events.iter_mut() {
        let kind = base.kind_of(name).map(|k| &base.kinds()[usize::from(k)]);
        rule.activity = Some(kind.map_or(rule.points <= 0.0, |k| k.activity));
    }
    let mut by_support: Vec<(&String, u64)> = support.iter().map(|(k, v)| (k, *v)).collect();
    by_support.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut fitted = FxHashSet::default();
    for (name, customers) in &by_support {
        if *customers < options.min_support {
            continue;
        }
        if !spec.events.contains_key(*name) {
            if spec.events.len() >= MAX_EVENT_TYPES {
                continue;
            }
            spec.events.insert(
                (*name).clone(),
                EventRule {
                    points: 0.0,
                    half_life_days: options.default_half_life_days,
                    cap: 20.0,
                    // Unknown types already count as activity: naming one keeps that.
                    activity: Some(true),
                    label: None,
                },
            );
        }
        fitted.insert((*name).clone());
    }
    let support = by_support
        .iter()
        .map(|(name, customers)| TypeSupport {
            event_type: (*name).clone(),
            customers: *customers,
            in_base: base.kind_of(name).is_some(),
            fitted: fitted.contains(*name),
        })
        .collect();
    Ok(Skeleton {
        spec,
        fitted,
        support,
    })
}

/// The skeleton with every fitted weight of one sign: +1 (values held at the
/// last event) or −1 (values faded to the cutoff); the base model's
/// inactivity steps (the inactivity column is the base model's points).
fn uniform_model(skeleton: &ModelSpec, sign: f64) -> Result<RiskModel, FitError> {
    let mut spec = skeleton.clone();
    for rule in spec.events.values_mut() {
        rule.points = sign;
    }
    spec.frequency.points_per_event = sign;
    spec.spend.points_per_log_amount = sign;
    spec.trend.points = 1.0;
    spec.tenure.points_per_year = 1.0;
    Ok(RiskModel::from_spec(spec)?)
}

/// Rows of the design matrix: each labelled customer's factor values, held
/// and faded.
/// Where `x` lies on segment `j` of a curve through `knots` (from 0 at 0):
/// 0 before it, 1 after it, linear in between.
fn ramp(knots: &[f64], j: usize, x: f64) -> f64 {
    let lo = if j == 0 { 0.0 } else { knots[j - 1] };
    let hi = knots[j];
    if hi > lo {
        ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    } else {
        f64::from(u8::from(x >= hi))
    }
}

/// The knots of the two silence curves.
struct Knots {
    /// Inactivity, in days.
    days: Vec<f64>,
    /// Rhythm, in usual gaps.
    gaps: Vec<f64>,
}

fn design(
    shape: &RiskModel,
    skeleton: &ModelSpec,
    store: &CustomerStore,
    rows: &[(&str, bool)],
    columns: &[Column],
    knots: &Knots,
    cutoff_ms: i64,
) -> Result<Design, FitError> {
    let held = uniform_model(skeleton, 1.0)?;
    let faded = uniform_model(skeleton, -1.0)?;
    debug_assert_eq!(held.kinds().len(), shape.kinds().len());
    let index: FxHashMap<(Factor, bool), usize> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| !matches!(c.side, Side::Ramp(_)))
        .map(|(j, c)| ((c.factor, c.side == Side::Faded), j))
        .collect();
    let mut x = Design::new(columns.len());
    let mut row = vec![0.0; columns.len()];
    for (id, _) in rows {
        row.iter_mut().for_each(|v| *v = 0.0);
        if let Some(state) = store.get(id) {
            for (model, is_faded) in [(&held, false), (&faded, true)] {
                for fv in state.factor_values(model, cutoff_ms) {
                    if let Some(&j) = index.get(&(fv.factor, is_faded)) {
                        row[j] = fv.value;
                    }
                }
            }
            let silence_ms = (cutoff_ms - state.last_event_ms()).max(0);
            let days = silence_ms as f64 / 86_400_000.0;
            let gaps = state.rhythm(shape).gaps(silence_ms);
            for (j, c) in columns.iter().enumerate() {
                if let Side::Ramp(k) = c.side {
                    row[j] = match c.factor {
                        Factor::Rhythm => ramp(&knots.gaps, k, gaps),
                        _ => ramp(&knots.days, k, days),
                    };
                }
            }
        }
        x.push_row(&row)?;
    }
    Ok(x)
}

/// The base model's knots merged with a default grid, ascending.
fn merged_knots(base: impl Iterator<Item = f64>, grid: &[f64]) -> Vec<f64> {
    let mut knots: Vec<f64> = base.chain(grid.iter().copied()).collect();
    knots.sort_by(f64::total_cmp);
    knots.dedup();
    knots
}

/// Stratified, seeded fold of each row.
fn assign_folds(y: &[bool], folds: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut fold = vec![0; y.len()];
    for class in [true, false] {
        let mut members: Vec<usize> = (0..y.len()).filter(|&i| y[i] == class).collect();
        members.shuffle(&mut rng);
        for (k, i) in members.into_iter().enumerate() {
            fold[i] = k % folds;
        }
    }
    fold
}

/// A fit that keeps the constraints. After each fit, a single column whose
/// weight crosses its bound is left out; a pair whose columns are both in use
/// (or either crosses its bound) keeps only the side of its net direction
/// (the sum of the two weights: > 0 adds risk, so the held value; < 0
/// protects, so the faded value). The rest is refitted until nothing changes.
/// Where the data would use a pair as a recency contrast (held risk, faded
/// protection or the reverse), the net direction is what the engine can
/// express. Returns the fit and the columns in it. `warm` (a fit on the same
/// rows) is only a starting point.
fn fit_constrained(
    x: &Design,
    y: &[bool],
    rows: Option<&[usize]>,
    constraints: &Constraints,
    allowed: &[bool],
    lambda: f64,
    warm: Option<&LogisticFit>,
) -> Result<(LogisticFit, Vec<bool>), FitError> {
    let mut active = allowed.to_vec();
    let mut in_pair = vec![false; x.cols()];
    for &(h, f) in &constraints.pairs {
        in_pair[h] = true;
        in_pair[f] = true;
    }
    let mut start = warm.cloned();
    loop {
        let fit = LogisticProblem::new(x, y, rows, &active)?.fit(lambda, start.as_ref())?;
        let w = &fit.coefficients;
        let mut drop: Vec<usize> = (0..active.len())
            .filter(|&j| !in_pair[j] && active[j] && constraints.bounds[j].violated_by(w[j]))
            .collect();
        for &(h, f) in &constraints.pairs {
            let used = |j: usize| active[j] && w[j] != 0.0;
            let crossing = |j: usize| active[j] && constraints.bounds[j].violated_by(w[j]);
            if (used(h) && used(f)) || crossing(h) || crossing(f) {
                let net = if active[h] { w[h] } else { 0.0 } + if active[f] { w[f] } else { 0.0 };
                let (keep, other) = if net >= 0.0 { (h, f) } else { (f, h) };
                if active[other] {
                    drop.push(other);
                }
                // A kept side crossing its bound with its partner unused is a
                // lone column crossing: it goes too.
                if crossing(keep) && !used(other) {
                    drop.push(keep);
                }
            }
        }
        if drop.is_empty() {
            return Ok((fit, active));
        }
        for j in drop {
            active[j] = false;
        }
        start = Some(fit);
    }
}

/// Chooses the side of every pair (held or faded value) with a constrained
/// fit at a strong penalty `lambda`, where ridge's grouping effect makes
/// correlated columns share their sign instead of being played against each
/// other (the held value as risk and the faded one as protection of the
/// same events: a recency contrast the engine cannot express). Returns the
/// columns allowed from then on: one side of each pair that kept a weight,
/// both sides of a pair that did not.
fn choose_sides(
    x: &Design,
    y: &[bool],
    rows: Option<&[usize]>,
    constraints: &Constraints,
    lambda: f64,
) -> Result<Vec<bool>, FitError> {
    let all = vec![true; x.cols()];
    let (fit, active) = fit_constrained(x, y, rows, constraints, &all, lambda, None)?;
    let mut allowed = all;
    for &(h, f) in &constraints.pairs {
        if active[h] && fit.coefficients[h] != 0.0 {
            allowed[f] = false;
        } else if active[f] && fit.coefficients[f] != 0.0 {
            allowed[h] = false;
        }
    }
    Ok(allowed)
}

/// One fold's held-out AUC at every penalty of `grid` (ascending).
fn fold_aucs(
    x: &Design,
    y: &[bool],
    constraints: &Constraints,
    fold_of: &[usize],
    fold: usize,
    grid: &[f64],
) -> Result<Vec<f64>, FitError> {
    let train: Vec<usize> = (0..y.len()).filter(|&i| fold_of[i] != fold).collect();
    let mut aucs = vec![0.0; grid.len()];
    let side_lambda = grid.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let allowed = choose_sides(x, y, Some(&train), constraints, side_lambda)?;
    let mut warm: Option<LogisticFit> = None;
    // Strongest penalty first, each fit starting from the smoother one before it.
    for (l, &lambda) in grid.iter().enumerate().rev() {
        let fitted = fit_constrained(
            x,
            y,
            Some(&train),
            constraints,
            &allowed,
            lambda,
            warm.as_ref(),
        )?;
        let scored: Vec<(f64, bool)> = (0..y.len())
            .filter(|&i| fold_of[i] == fold)
            .map(|i| (fitted.0.logit(x.row(i)), y[i]))
            .collect();
        aucs[l] = metrics::roc_auc(&scored).unwrap_or(0.5);
        warm = Some(fitted.0);
    }
    Ok(aucs)
}

/// Cross-validates every penalty with the same constrained fit as the final
/// one; returns the penalty chosen by the one-standard-error rule and every
/// penalty's result. Folds run on all cores; each is
/// computed alone, so the result does not depend on the number of threads.
fn choose_lambda(
    x: &Design,
    y: &[bool],
    constraints: &Constraints,
    fold_of: &[usize],
    grid: &[f64],
    options: &FitOptions,
) -> Result<(f64, Vec<CvResult>), FitError> {
    let folds = options.folds;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, folds);
    let mut per_fold: Vec<Option<Result<Vec<f64>, FitError>>> = (0..folds).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..folds)
                        .step_by(threads)
                        .map(|f| (f, fold_aucs(x, y, constraints, fold_of, f, grid)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            // A panicking fold is a bug; re-raise it rather than hide it.
            let done = h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            for (f, r) in done {
                per_fold[f] = Some(r);
            }
        }
    });
    let mut by_fold = Vec::with_capacity(folds);
    for r in per_fold {
        match r {
            Some(r) => by_fold.push(r?),
            None => return Err(FitError::Option("a fold was not computed".into())),
        }
    }
    let results: Vec<CvResult> = grid
        .iter()
        .enumerate()
        .map(|(l, &lambda)| {
            let fold_aucs: Vec<f64> = by_fold.iter().map(|f| f[l]).collect();
            CvResult {
                lambda,
                mean_auc: fold_aucs.iter().sum::<f64>() / fold_aucs.len() as f64,
                fold_aucs,
            }
        })
        .collect();
    // The best mean AUC by default. The one-standard-error rule (an option)
    // takes the largest penalty within one standard error of the best: among
    // nearly equal rankings the smoothest weights, which keeps the signs of
    // collinear activity counts from flipping on noise.
    let best = results
        .iter()
        .max_by(|a, b| {
            a.mean_auc
                .total_cmp(&b.mean_auc)
                .then(b.lambda.total_cmp(&a.lambda))
        })
        .ok_or_else(|| FitError::Option("no penalty to try".into()))?;
    let k = best.fold_aucs.len() as f64;
    let sd = (best
        .fold_aucs
        .iter()
        .map(|a| (a - best.mean_auc).powi(2))
        .sum::<f64>()
        / (k - 1.0).max(1.0))
    .sqrt();
    let floor = best.mean_auc - sd / k.sqrt();
    let chosen = if options.one_standard_error {
        results
            .iter()
            .filter(|r| r.mean_auc >= floor)
            .map(|r| r.lambda)
            .fold(best.lambda, f64::max)
    } else {
        best.lambda
    };
    Ok((chosen, results))
}

/// Fits `events` (opened twice by `open_events`: one pass to count event
/// types, one to replay) against `labels`, starting from `base`.
pub fn run_fit<R: BufRead>(
    mut open_events: impl FnMut() -> std::io::Result<R>,
    labels: &Labels,
    base: &RiskModel,
    options: &FitOptions,
    on_bad_line: impl FnMut(&BadLine),
) -> Result<FitOutcome, FitError> {
    if options.folds < 2 {
        return Err(FitError::Option("--folds must be at least 2".into()));
    }
    if options.lambdas.is_empty() || options.lambdas.iter().any(|l| !l.is_finite() || *l < 0.0) {
        return Err(FitError::Option("penalties must be finite and ≥ 0".into()));
    }
    if !(options.default_half_life_days.is_finite() && options.default_half_life_days > 0.0) {
        return Err(FitError::Option("the default half-life must be > 0".into()));
    }

    // Pass 1: which event types have enough support.
    let (support, spend_by_label) =
        count_support(&options.input, open_events()?, labels, options.cutoff_ms)?;
    let mut skeleton = skeleton(base, support, options)?;
    // Silence is fitted in days and in usual gaps: a base model without
    // `[rhythm]` gets the default model's (prior and knots).
    if skeleton.spec.rhythm.is_none() {
        skeleton.spec.rhythm = RiskModel::default_model().spec().rhythm.clone();
    }
    let mut shape = RiskModel::from_spec(skeleton.spec.clone())?;

    // Pass 2: replay into the engine. The state depends on the model's event
    // types, half-lives and activity flags only, never on points, so this one
    // replay serves every model below.
    let mut store = CustomerStore::new();
    let mut replay_stats = replay_with(
        &options.input,
        open_events()?,
        &shape,
        &mut store,
        TimeLimit::Before(options.cutoff_ms),
        options.strict,
        on_bad_line,
    )?;

    let (rows, row_spend): (Vec<(&str, bool)>, Vec<f64>) = labels
        .sorted()
        .into_iter()
        .zip(spend_by_label)
        .filter(|((id, _), _)| store.get(id).is_some())
        .unzip();
    let y: Vec<bool> = rows.iter().map(|r| r.1).collect();
    let churned = y.iter().filter(|v| **v).count() as u64;
    let retained = y.len() as u64 - churned;
    if churned < options.folds as u64 || retained < options.folds as u64 {
        return Err(FitError::TooFewLabels {
            folds: options.folds,
            churned,
            retained,
        });
    }

    // Columns: held and faded values of each fitted event type, frequency and
    // spend; trend, inactivity and tenure as they are.
    let mut columns: Vec<Column> = Vec::new();
    let mut pairs = Vec::new();
    let decayed = shape
        .kinds()
        .iter()
        .enumerate()
        .filter(|(_, k)| skeleton.fitted.contains(&k.name))
        .map(|(i, _)| Factor::Event(i as u8))
        .chain([Factor::Frequency, Factor::Spend]);
    let knots = Knots {
        days: merged_knots(
            skeleton.spec.inactivity.steps.iter().map(|s| s.after_days),
            &INACTIVITY_KNOTS_DAYS,
        ),
        gaps: merged_knots(
            skeleton
                .spec
                .rhythm
                .iter()
                .flat_map(|r| r.steps.iter().map(|s| s.after_gaps)),
            &RHYTHM_KNOTS_GAPS,
        ),
    };
    for factor in decayed {
        pairs.push((columns.len(), columns.len() + 1));
        columns.push(Column {
            factor,
            side: Side::Held,
        });
        columns.push(Column {
            factor,
            side: Side::Faded,
        });
    }
    for (factor, n) in [
        (Factor::Inactivity, knots.days.len()),
        (Factor::Rhythm, knots.gaps.len()),
    ] {
        for j in 0..n {
            columns.push(Column {
                factor,
                side: Side::Ramp(j),
            });
        }
    }
    for factor in [Factor::Trend, Factor::Tenure] {
        columns.push(Column {
            factor,
            side: Side::Plain,
        });
    }
    let constraints = Constraints {
        bounds: columns.iter().map(|c| c.bound()).collect(),
        pairs,
    };
    let mut x = design(
        &shape,
        &skeleton.spec,
        &store,
        &rows,
        &columns,
        &knots,
        options.cutoff_ms,
    )?;

    let mut grid = options.lambdas.clone();
    grid.sort_by(|a, b| a.total_cmp(b));
    grid.dedup();
    let fold_of = assign_folds(&y, options.folds, options.seed);

    // Half-lives per fitted event type: each type in turn takes the grid
    // value with the best cross-validated AUC, the others as chosen so far.
    // A replay per grid value gives every type's columns at that half-life
    // (a type's counters never depend on another type's half-life).
    let mut half_lives = Vec::new();
    if !options.half_life_grid.is_empty() {
        let cv_at = |x: &Design| -> Result<f64, FitError> {
            let (_, cv) =
                choose_lambda(x, &y, &constraints, &fold_of, &[HALF_LIFE_LAMBDA], options)?;
            Ok(cv.first().map_or(0.5, |c| c.mean_auc))
        };
        let mut candidates: Vec<(f64, Design)> = Vec::new();
        for &h in &options.half_life_grid {
            let mut spec_h = skeleton.spec.clone();
            for (name, rule) in spec_h.events.iter_mut() {
                if skeleton.fitted.contains(name) {
                    rule.half_life_days = h;
                }
            }
            let shape_h = RiskModel::from_spec(spec_h.clone())?;
            let mut store_h = CustomerStore::new();
            replay_with(
                &options.input,
                open_events()?,
                &shape_h,
                &mut store_h,
                TimeLimit::Before(options.cutoff_ms),
                false,
                |_| {},
            )?;
            let x_h = design(
                &shape_h,
                &spec_h,
                &store_h,
                &rows,
                &columns,
                &knots,
                options.cutoff_ms,
            )?;
            candidates.push((h, x_h));
        }
        let mut current = cv_at(&x)?;
        let mut changed = false;
        for (k, kind) in shape.kinds().iter().enumerate() {
            if !skeleton.fitted.contains(&kind.name) {
                continue;
            }
            let cols: Vec<usize> = columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.factor == Factor::Event(k as u8))
                .map(|(j, _)| j)
                .collect();
            let mut best: Option<(f64, f64)> = None;
            for (h, x_h) in &candidates {
                let mut trial = x.clone();
                for i in 0..trial.rows() {
                    for &j in &cols {
                        trial.set(i, j, x_h.row(i)[j]);
                    }
                }
                let auc = cv_at(&trial)?;
                if auc > best.map_or(current + options.half_life_min_gain, |b| b.1) {
                    best = Some((*h, auc));
                    x = trial;
                }
            }
            if let Some((h, auc)) = best {
                current = auc;
                changed = true;
                if let Some(rule) = skeleton.spec.events.get_mut(&kind.name) {
                    rule.half_life_days = h;
                }
            }
            let chosen = skeleton
                .spec
                .events
                .get(&kind.name)
                .map_or(0.0, |r| r.half_life_days);
            half_lives.push((kind.name.clone(), chosen));
        }
        // `x` already holds each type's columns at its chosen half-life (a
        // type's counters never depend on another's); the store the model
        // will score must hold them too.
        if changed {
            shape = RiskModel::from_spec(skeleton.spec.clone())?;
            store = CustomerStore::new();
            replay_stats = replay_with(
                &options.input,
                open_events()?,
                &shape,
                &mut store,
                TimeLimit::Before(options.cutoff_ms),
                false,
                |_| {},
            )?;
        }
    }
    let (lambda, cv) = choose_lambda(&x, &y, &constraints, &fold_of, &grid, options)?;
    let cv_auc = cv
        .iter()
        .find(|c| c.lambda == lambda)
        .map_or(0.5, |c| c.mean_auc);
    let baseline_cv_auc = baseline_cv_auc(
        &store,
        &rows,
        &row_spend,
        &y,
        &fold_of,
        options.folds,
        &grid,
        options.cutoff_ms,
    )?;
    let side_lambda = grid.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let allowed = choose_sides(&x, &y, None, &constraints, side_lambda)?;
    let (fit, active) = fit_constrained(&x, &y, None, &constraints, &allowed, lambda, None)?;

    // The weight of each factor: that of the column kept (at most one per factor).
    let scale = base.spec().score.scale;
    let weight_of = |factor: Factor| -> (f64, Option<usize>) {
        columns
            .iter()
            .enumerate()
            .find(|&(j, c)| c.factor == factor && active[j] && fit.coefficients[j] != 0.0)
            .map_or((0.0, None), |(j, _)| (fit.coefficients[j], Some(j)))
    };
    let mut spec = skeleton.spec.clone();
    spec.model_version = options
        .model_version
        .clone()
        .unwrap_or_else(|| format!("fit-{}", &format_timestamp_ms(options.cutoff_ms)[..10]));
    spec.score.base_points = fit.intercept * scale;
    spec.score.midpoint = 0.0;
    for (k, kind) in shape.kinds().iter().enumerate() {
        if let Some(rule) = spec.events.get_mut(&kind.name) {
            rule.points = weight_of(Factor::Event(k as u8)).0 * scale;
        }
    }
    spec.frequency.points_per_event = weight_of(Factor::Frequency).0 * scale;
    spec.spend.points_per_log_amount = weight_of(Factor::Spend).0 * scale;
    spec.trend.points = weight_of(Factor::Trend).0 * scale;
    spec.tenure.points_per_year = weight_of(Factor::Tenure).0 * scale;
    // The silence curves: each knot's points are the sum of the segments'
    // weights up to it (each ≥ 0, so the curve rises).
    let curve = |factor: Factor, knots: &[f64]| -> Vec<(f64, f64)> {
        let mut total = 0.0;
        knots
            .iter()
            .enumerate()
            .map(|(k, &at)| {
                let j = columns
                    .iter()
                    .position(|c| c.factor == factor && c.side == Side::Ramp(k));
                if let Some(j) = j.filter(|&j| active[j]) {
                    total += fit.coefficients[j] * scale;
                }
                (at, total)
            })
            .collect()
    };
    spec.inactivity.steps = curve(Factor::Inactivity, &knots.days)
        .into_iter()
        .map(|(after_days, points)| churn_core::model::InactivityStep { after_days, points })
        .collect();
    if let Some(r) = spec.rhythm.as_mut() {
        r.steps = curve(Factor::Rhythm, &knots.gaps)
            .into_iter()
            .map(|(after_gaps, points)| churn_core::model::RhythmStep { after_gaps, points })
            .collect();
    }
    let mut alert_threshold = None;
    if let Some(target) = options.alert_target {
        let model = RiskModel::from_spec(spec.clone())?;
        let (peak_store, _, peaks) = replay_with_peaks(
            &options.input,
            &model,
            open_events()?,
            options.cutoff_ms,
            false,
            |_| {},
        )?;
        let table = threshold_table(&labelled_peaks(&peak_store, &peaks, labels));
        let row = match target {
            AlertTarget::Precision(p) => threshold_for_precision(&table, p),
            AlertTarget::Rate(r) => threshold_for_rate(&table, r),
        };
        if let Some(row) = row {
            let gap = base.spec().alert.at_risk_threshold - base.spec().alert.recovery_threshold;
            spec.alert.at_risk_threshold = row.threshold;
            spec.alert.recovery_threshold = (row.threshold - gap).max(0.0);
            alert_threshold = Some((target, row.clone()));
        }
    }
    let model = RiskModel::from_spec(spec.clone())?;

    // The written model must score what was fitted.
    let mut max_dev: f64 = 0.0;
    let mut training = Vec::with_capacity(rows.len());
    for (i, (id, churned)) in rows.iter().enumerate() {
        if let Some(state) = store.get(id) {
            let risk = state.risk(&model, options.cutoff_ms);
            max_dev = max_dev.max((risk / 100.0 - fit.probability(x.row(i))).abs());
            training.push((risk, *churned));
        }
    }

    let n = rows.len().max(1) as f64;
    let mut factors = vec![FittedFactor {
        factor: "base".into(),
        points: spec.score.base_points,
        coefficient: fit.intercept,
        standardized: 0.0,
        value: "plain",
        customers: rows.len() as u64,
        mean_value: 1.0,
    }];
    let mut left_out = Vec::new();
    let mut seen: Vec<Factor> = Vec::new();
    for c in &columns {
        if seen.contains(&c.factor) {
            continue;
        }
        seen.push(c.factor);
        if let Side::Ramp(_) = c.side {
            let n = columns.iter().filter(|d| d.factor == c.factor).count();
            let last = columns
                .iter()
                .rposition(|d| d.factor == c.factor)
                .unwrap_or_default();
            let first = last + 1 - n;
            let coefficient: f64 = (first..=last)
                .filter(|&j| active[j])
                .map(|j| fit.coefficients[j])
                .sum();
            let nonzero = (0..x.rows()).filter(|&i| x.row(i)[first] != 0.0).count() as u64;
            let name = c.factor.name(&model).to_string();
            if coefficient == 0.0 {
                left_out.push(name.clone());
            }
            factors.push(FittedFactor {
                factor: name,
                points: coefficient * scale,
                coefficient,
                standardized: 0.0,
                value: if coefficient == 0.0 { "none" } else { "curve" },
                customers: nonzero,
                mean_value: 0.0,
            });
            continue;
        }
        let (coefficient, kept) = weight_of(c.factor);
        // Describe the value the model uses (the held one when none is used).
        let j = kept.unwrap_or_else(|| {
            columns
                .iter()
                .position(|d| d.factor == c.factor)
                .unwrap_or_default()
        });
        let (sum, nonzero) = (0..x.rows()).fold((0.0, 0_u64), |(s, k), i| {
            let v = x.row(i)[j];
            (s + v, k + u64::from(v != 0.0))
        });
        let name = c.factor.name(&model).to_string();
        if kept.is_none() {
            left_out.push(name.clone());
        }
        factors.push(FittedFactor {
            factor: name,
            points: coefficient * scale,
            coefficient,
            standardized: kept.map_or(0.0, |j| fit.standardized_coefficients[j]),
            value: match kept.map(|j| columns[j].side) {
                Some(Side::Held) => "held",
                Some(Side::Faded) => "faded",
                Some(Side::Plain) => "plain",
                Some(Side::Ramp(_)) => "curve",
                None => "none",
            },
            customers: nonzero,
            mean_value: sum / n,
        });
    }

    let summary = FitSummary {
        cutoff: format_timestamp_ms(options.cutoff_ms),
        base_model_version: base.version().to_string(),
        model_version: spec.model_version.clone(),
        customers: rows.len() as u64,
        churned,
        labelled_without_events: labels.len() as u64 - rows.len() as u64,
        events_applied: replay_stats.accepted,
        events_ignored_after_cutoff: replay_stats.ignored_after_limit,
        event_lines_rejected: replay_stats.rejected_total(),
        event_types: skeleton.support,
        lambda,
        cross_validation: cv,
        left_out,
        factors,
        training_auc: metrics::roc_auc(&training),
        max_score_deviation: max_dev,
        cv_auc,
        baseline_cv_auc,
        half_lives,
        lambda_rule: if options.one_standard_error {
            "one-standard-error"
        } else {
            "best"
        },
        alert_threshold,
    };
    Ok(FitOutcome {
        spec,
        model,
        summary,
        store,
        replay_stats,
    })
}

/// The human-readable account of a fit: the model file's header without `# `.
pub fn describe(summary: &FitSummary, generated_on: &str, base_name: &str) -> Vec<String> {
    let mut lines = Vec::new();
    lines.push(format!(
        "churn-scorer model fitted by `churn-scorer fit` on {generated_on}."
    ));
    lines.push(format!(
        "base model: {base_name} (model_version {})",
        summary.base_model_version
    ));
    lines.push(format!(
        "cutoff {}: {} labelled customers with events ({} churned, {:.2}%); {} labelled without events left out",
        summary.cutoff,
        summary.customers,
        summary.churned,
        100.0 * summary.churned as f64 / summary.customers.max(1) as f64,
        summary.labelled_without_events
    ));
    lines.push(format!(
        "events used: {} (ignored at or after the cutoff: {}, rejected lines: {})",
        summary.events_applied, summary.events_ignored_after_cutoff, summary.event_lines_rejected
    ));
    let fitted: Vec<String> = summary
        .event_types
        .iter()
        .filter(|t| t.fitted)
        .map(|t| {
            format!(
                "{}{} ({})",
                t.event_type,
                if t.in_base { "" } else { "*" },
                t.customers
            )
        })
        .collect();
    lines.push(format!(
        "event types fitted (customers; * = new): {}",
        if fitted.is_empty() {
            "none".to_string()
        } else {
            fitted.join(", ")
        }
    ));
    if !summary.half_lives.is_empty() {
        let chosen: Vec<String> = summary
            .half_lives
            .iter()
            .map(|(t, h)| format!("{t} {h}"))
            .collect();
        lines.push(format!(
            "half-lives in days, each type's best cross-validated AUC of the grid: {}",
            chosen.join(", ")
        ));
    }
    let unfitted: Vec<String> = summary
        .event_types
        .iter()
        .filter(|t| !t.fitted)
        .map(|t| format!("{} ({})", t.event_type, t.customers))
        .collect();
    if !unfitted.is_empty() {
        lines.push(format!(
            "event types below the support threshold (base types keep points 0): {}",
            unfitted.join(", ")
        ));
    }
    let folds = summary
        .cross_validation
        .first()
        .map_or(0, |c| c.fold_aucs.len());
    lines.push(format!(
        "L2 penalty lambda = {} chosen by {folds}-fold cross-validated ROC AUC ({} rule):",
        summary.lambda,
        if summary.lambda_rule == "best" {
            "best AUC"
        } else {
            summary.lambda_rule
        },
    ));
    for cv in &summary.cross_validation {
        let folds: Vec<String> = cv.fold_aucs.iter().map(|a| format!("{a:.4}")).collect();
        lines.push(format!(
            "  lambda {:<8} mean AUC {:.4}  (folds {})",
            cv.lambda,
            cv.mean_auc,
            folds.join(" ")
        ));
    }
    lines.push(format!(
        "out of fold: this model AUC {:.4}; logistic regression on recency, frequency, spend and tenure AUC {:.4} (same folds, its best penalty){}",
        summary.cv_auc,
        summary.baseline_cv_auc,
        if summary.cv_auc > summary.baseline_cv_auc {
            ""
        } else {
            ": the fit does not beat the textbook baseline here"
        }
    ));
    match &summary.alert_threshold {
        Some((target, row)) => lines.push(format!(
            "alert thresholds from the data ({}): at_risk_threshold {} — in the month before the cutoff {:.2}% of customers reached it, precision {}, recall {}",
            match target {
                AlertTarget::Precision(p) => format!("precision >= {p}"),
                AlertTarget::Rate(r) => format!("at most {}% of customers per 30 days", r * 100.0),
            },
            row.threshold,
            row.rate * 100.0,
            row.precision.map_or("n/a".into(), |p| format!("{p:.4}")),
            row.recall.map_or("n/a".into(), |r| format!("{r:.4}")),
        )),
        None => lines.push("alert thresholds: the base model's".to_string()),
    }
    lines.push(format!(
        "points 0 (every weight the data asked for broke a sign rule): {}",
        if summary.left_out.is_empty() {
            "none".to_string()
        } else {
            summary.left_out.join(", ")
        }
    ));
    lines.push(format!(
        "training AUC {}; max |risk/100 - fitted probability| = {:.1e}",
        summary
            .training_auc
            .map_or("n/a".to_string(), |a| format!("{a:.4}")),
        summary.max_score_deviation
    ));
    lines.push(String::new());
    lines.push(format!(
        "{:<34} {:>12} {:>7} {:>10} {:>11}",
        "factor", "points", "value", "customers", "mean value"
    ));
    for f in &summary.factors {
        let name = if f.value == "curve" {
            format!("{} (curve, at its last knot)", f.factor)
        } else {
            f.factor.clone()
        };
        lines.push(format!(
            "{:<34} {:>12.4} {:>7} {:>10} {:>11.4}",
            name, f.points, f.value, f.customers, f.mean_value
        ));
    }
    lines
}

/// The note of an in-sample report (`fit --report`): the figures are on the
/// customers the model was fitted on, and flatter it.
pub fn in_sample_notes(summary: &FitSummary) -> Vec<String> {
    let best = summary
        .cross_validation
        .iter()
        .find(|c| c.lambda == summary.lambda)
        .map_or(String::new(), |c| {
            format!(" (cross-validated AUC {:.4})", c.mean_auc)
        });
    vec![format!(
        "In-sample: the model fitted from {} on these same customers, L2 penalty {}{best}. \
             Figures on the customers a model was fitted on flatter it: backtest it on other customers or a later cutoff.",
        summary.base_model_version, summary.lambda
    )]
}

/// The model file: a `#` header describing the fit, then the model.
pub fn model_toml(
    outcome: &FitOutcome,
    generated_on: &str,
    base_name: &str,
) -> Result<String, FitError> {
    let mut text = String::new();
    for line in describe(&outcome.summary, generated_on, base_name) {
        if line.is_empty() {
            text.push_str("#\n");
        } else {
            text.push_str("# ");
            text.push_str(&line);
            text.push('\n');
        }
    }
    text.push_str(
        "#\n# Points = coefficient x score.scale; risk / 100 is the fitted probability.\n\n",
    );
    text.push_str(&toml::to_string_pretty(&outcome.spec)?);
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps_split_a_curve_into_segments_that_add_up() {
        let knots = [7.0, 14.0, 30.0];
        let at = |x: f64| -> Vec<f64> { (0..3).map(|j| ramp(&knots, j, x)).collect() };
        assert_eq!(at(0.0), vec![0.0, 0.0, 0.0]);
        assert_eq!(at(3.5), vec![0.5, 0.0, 0.0]);
        assert_eq!(at(22.0), vec![1.0, 1.0, 0.5]);
        assert_eq!(at(100.0), vec![1.0, 1.0, 1.0]);
        // Weights per segment, summed up to each knot, are the steps' points:
        // the model's linear interpolation between them is the same sum.
        let w = [2.0, 3.0, 5.0];
        let points = |x: f64| at(x).iter().zip(w).map(|(r, w)| r * w).sum::<f64>();
        assert_eq!(points(14.0), 5.0);
        assert_eq!(points(22.0), 7.5);
        assert_eq!(
            merged_knots([14.0, 60.0].into_iter(), &[7.0, 14.0]),
            vec![7.0, 14.0, 60.0]
        );
    }

    #[test]
    fn held_columns_are_non_negative_and_faded_ones_non_positive() {
        let col = |factor, side| Column { factor, side }.bound();
        assert_eq!(col(Factor::Event(0), Side::Held), Bound::NonNegative);
        assert_eq!(col(Factor::Frequency, Side::Faded), Bound::NonPositive);
        assert_eq!(col(Factor::Trend, Side::Plain), Bound::NonNegative);
        assert_eq!(col(Factor::Inactivity, Side::Ramp(0)), Bound::NonNegative);
        assert_eq!(col(Factor::Rhythm, Side::Ramp(3)), Bound::NonNegative);
        assert_eq!(col(Factor::Tenure, Side::Plain), Bound::Free);
    }

    #[test]
    fn support_counts_distinct_labelled_customers_before_the_cutoff() {
        let lines = [
            r#"{"customer_id":"a","event_type":"x","timestamp":"2024-01-01T00:00:00Z"}"#,
            r#"{"customer_id":"a","event_type":"x","timestamp":"2024-01-02T00:00:00Z","amount":5}"#,
            r#"{"customer_id":"b","event_type":"x","timestamp":"2024-01-02T00:00:00Z"}"#,
            r#"{"customer_id":"b","event_type":"y","timestamp":"2024-03-02T00:00:00Z"}"#,
            r#"{"customer_id":"z","event_type":"y","timestamp":"2024-01-02T00:00:00Z"}"#,
            "not json",
        ]
        .join("\n");
        let labels = Labels::from_pairs([("a", true), ("b", false)]);
        let cutoff = churn_core::event::parse_timestamp_ms("2024-02-01T00:00:00Z").expect("valid");
        let (s, spend) = count_support(&InputFormat::Churn, lines.as_bytes(), &labels, cutoff)
            .expect("in memory");
        assert_eq!(s.get("x"), Some(&2));
        assert_eq!(s.get("y"), None);
        assert_eq!(
            spend,
            vec![5.0, 0.0],
            "amounts per labelled customer, in label order"
        );
    }

    #[test]
    fn folds_are_stratified_and_seeded() {
        let y: Vec<bool> = (0..103).map(|i| i % 4 == 0).collect();
        let a = assign_folds(&y, 5, 1);
        assert_eq!(a, assign_folds(&y, 5, 1));
        assert_ne!(a, assign_folds(&y, 5, 2));
        for f in 0..5 {
            let pos = (0..y.len()).filter(|&i| a[i] == f && y[i]).count();
            assert!((5..=6).contains(&pos), "fold {f}: {pos}");
        }
    }

    #[test]
    fn constrained_fit_keeps_bounds_and_one_column_per_pair() {
        // Two near-copies of a protective signal (a pair) and a column whose
        // true effect is negative but which must stay ≥ 0.
        let mut x = Design::new(3);
        let mut y = Vec::new();
        for i in 0..400 {
            let v = f64::from(i % 20);
            let w = f64::from((i * 7) % 13);
            x.push_row(&[v, v * 0.9 + f64::from(i % 3), w])
                .expect("row");
            y.push((i % 20) < 8 || ((i * 7) % 13 == 0 && i % 2 == 0));
        }
        let constraints = Constraints {
            bounds: vec![Bound::NonNegative, Bound::NonPositive, Bound::NonNegative],
            pairs: vec![(0, 1)],
        };
        let (fit, active) =
            fit_constrained(&x, &y, None, &constraints, &[true; 3], 1e-3, None).expect("fit");
        assert!(
            !(active[0] && active[1] && fit.coefficients[0] != 0.0 && fit.coefficients[1] != 0.0)
        );
        for j in 0..3 {
            assert!(
                !constraints.bounds[j].violated_by(fit.coefficients[j]),
                "{fit:?}"
            );
        }
        assert!(
            fit.coefficients[1] < 0.0,
            "the protective signal is kept: {fit:?}"
        );
    }
}
