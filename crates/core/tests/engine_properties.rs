//! Properties the engine promises for every input, checked on random ones:
//! order independence, exact half-life decay (with the held/faded rule in
//! silence), a risk score that never falls while a customer is silent, and
//! the rhythm factor: monotone in silence, independent of event order, its
//! timers firing exactly at the steps it predicts.

use std::borrow::Cow;

use churn_core::engine::{CustomerState, CustomerStore, Factor};
use churn_core::event::CustomerEvent;
use churn_core::model::{ModelSpec, RhythmSpec, RhythmStep, RiskModel};
use proptest::prelude::*;

const DAY: i64 = 86_400_000;

/// The default model's event types plus some it does not name.
fn event_types() -> Vec<String> {
    let model = RiskModel::default_model();
    let mut types: Vec<String> = model.kinds().iter().map(|k| k.name.clone()).collect();
    types.extend(["page_view", "email_open", "mystery"].map(String::from));
    types
}

/// (event type, offset in ms within ~200 days, amount)
type RawEvent = (String, i64, Option<f64>);

fn raw_event() -> impl Strategy<Value = RawEvent> {
    (
        prop::sample::select(event_types()),
        0..200 * DAY,
        prop::option::of(0.0..5_000.0_f64),
    )
}

fn state_of(model: &RiskModel, events: &[RawEvent]) -> CustomerState {
    let mut state = CustomerState::default();
    for (kind, t, amount) in events {
        state.apply(model, model.kind_of(kind), *t, *amount);
    }
    state
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(f64::MIN_POSITIVE)
}

/// A random `[rhythm]`: prior, and steps with non-decreasing points.
fn random_rhythm() -> impl Strategy<Value = RhythmSpec> {
    (
        1.0..90.0_f64,
        0.2..5.0_f64,
        prop::collection::vec((0.1..3.0_f64, 0.0..15.0_f64), 1..6),
    )
        .prop_map(|(prior_gap_days, prior_events, increments)| {
            let (mut gaps, mut points) = (0.0, 0.0);
            RhythmSpec {
                prior_gap_days,
                prior_events,
                min_gap_days: 1.0,
                label: None,
                steps: increments
                    .into_iter()
                    .map(|(dg, dp)| {
                        gaps += dg;
                        points += dp;
                        RhythmStep {
                            after_gaps: gaps,
                            points,
                        }
                    })
                    .collect(),
            }
        })
}

/// A valid model with random weights of either sign where the model allows it.
fn random_model() -> impl Strategy<Value = RiskModel> {
    (
        prop::collection::vec(-20.0..20.0_f64, 16),
        -3.0..3.0_f64,
        0.0..20.0_f64,
        -5.0..5.0_f64,
        -5.0..5.0_f64,
        prop::option::of(random_rhythm()),
    )
        .prop_map(|(points, freq, trend, spend, tenure, rhythm)| {
            let mut spec: ModelSpec = RiskModel::default_model().spec().clone();
            for (rule, p) in spec.events.values_mut().zip(points) {
                rule.points = p;
            }
            spec.frequency.points_per_event = freq;
            spec.trend.points = trend;
            spec.spend.points_per_log_amount = spend;
            spec.tenure.points_per_year = tenure;
            spec.rhythm = rhythm;
            RiskModel::from_spec(spec).expect("random weights keep the model valid")
        })
}

fn event_value(values: &[churn_core::engine::FactorValue], k: u8) -> f64 {
    values
        .iter()
        .find(|v| v.factor == Factor::Event(k))
        .map(|v| v.value * v.weight)
        .expect("the customer has this event type")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any permutation of a customer's events gives the same risk.
    #[test]
    fn event_order_does_not_change_the_score(
        (events, shuffled) in prop::collection::vec(raw_event(), 1..80)
            .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
        extra_silence in 0..100 * DAY,
    ) {
        let model = RiskModel::default_model();
        let a = state_of(&model, &events);
        let b = state_of(&model, &shuffled);
        let last = events.iter().map(|e| e.1).max().unwrap_or(0);
        for as_of in [last, last + extra_silence] {
            let (ra, rb) = (a.risk(&model, as_of), b.risk(&model, as_of));
            prop_assert!(close(ra, rb, 1e-9), "risk {ra} vs {rb} at {as_of}");
            let (pa, pb) = (a.points(&model, as_of), b.points(&model, as_of));
            prop_assert!((pa - pb).abs() <= 1e-9 * (1.0 + pa.abs()), "points {pa} vs {pb}");
        }

        // The same through the store, which resolves types from the events.
        let mut store_a = CustomerStore::new();
        let mut store_b = CustomerStore::new();
        for (store, list) in [(&mut store_a, &events), (&mut store_b, &shuffled)] {
            for (kind, t, amount) in list {
                let event = CustomerEvent {
                    customer_id: Cow::Borrowed("c"),
                    event_type: Cow::Borrowed(kind),
                    timestamp_ms: *t,
                    amount: *amount,
                    properties: None,
                };
                store.apply(&model, &event, None, true);
            }
        }
        let sa = store_a.get("c").expect("applied");
        let sb = store_b.get("c").expect("applied");
        prop_assert_eq!(sa.events(), sb.events());
        prop_assert!(close(sa.risk(&model, last), sb.risk(&model, last), 1e-9));
    }

    /// An event type's contribution halves over its half-life: in silence if
    /// its points are protective (risk points hold until the next event), and
    /// at the next event in every case.
    #[test]
    fn contributions_halve_at_their_half_life(
        type_index in 0..15_usize,
        points in prop_oneof![-30.0..-0.01_f64, 0.01..30.0_f64],
        half_life_ms in 3_600_000..400 * DAY,
        ages in prop::collection::vec(0..100 * DAY, 0..15),
        t in 0..100 * DAY,
    ) {
        let mut spec: ModelSpec = RiskModel::default_model().spec().clone();
        let name = spec.events.keys().nth(type_index).expect("in range").clone();
        let rule = spec.events.get_mut(&name).expect("named");
        rule.points = points;
        rule.half_life_days = half_life_ms as f64 / DAY as f64;
        // A high cap: the property is about decay, not about the cap.
        rule.cap = 1e6;
        let model = RiskModel::from_spec(spec).expect("valid");
        let k = model.kind_of(&name).expect("named");

        let mut state = CustomerState::default();
        state.apply(&model, Some(k), t, None);
        for age in &ages {
            state.apply(&model, Some(k), t - age, None);
        }
        let at_t = event_value(&state.factor_values(&model, t), k);
        prop_assert!(at_t != 0.0);

        let silent = event_value(&state.factor_values(&model, t + half_life_ms), k);
        let want_silent = if points < 0.0 { at_t / 2.0 } else { at_t };
        prop_assert!(close(silent, want_silent, 1e-9), "silent: {silent} vs {want_silent}");

        // Any next event (here of a type the model does not name) moves the
        // reference time, and with it every counter.
        state.apply(&model, None, t + half_life_ms, None);
        let after = event_value(&state.factor_values(&model, t + half_life_ms), k);
        prop_assert!(close(after, at_t / 2.0, 1e-9), "after: {after} vs {}", at_t / 2.0);
        let explained = state
            .explain(&model, t + half_life_ms)
            .reasons
            .into_iter()
            .find(|r| r.factor == format!("event:{name}"))
            .map(|r| r.points);
        prop_assert_eq!(explained, Some(after));
    }

    /// With no new events, risk never falls as time passes.
    #[test]
    fn risk_never_falls_in_silence(
        model in prop_oneof![Just(RiskModel::default_model()), random_model()],
        events in prop::collection::vec(raw_event(), 1..60),
        gap1 in 0..300 * DAY,
        gap2 in 1..300 * DAY,
    ) {
        let state = state_of(&model, &events);
        let last = state.last_event_ms();
        let (t1, t2) = (last + gap1, last + gap1 + gap2);
        let (r1, r2) = (state.risk(&model, t1), state.risk(&model, t2));
        prop_assert!(r2 >= r1 - 1e-12, "risk fell from {r1} at {t1} to {r2} at {t2}");
    }

    /// Rhythm points grow with silence, and neither the usual gap nor the
    /// points depend on the order the events arrived in.
    #[test]
    fn rhythm_grows_with_silence_whatever_the_event_order(
        rhythm in random_rhythm(),
        (events, shuffled) in prop::collection::vec(raw_event(), 1..60)
            .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
        gap1 in 0..400 * DAY,
        gap2 in 0..400 * DAY,
    ) {
        let mut spec: ModelSpec = RiskModel::default_model().spec().clone();
        spec.rhythm = Some(rhythm);
        let model = RiskModel::from_spec(spec).expect("valid");
        let a = state_of(&model, &events);
        let b = state_of(&model, &shuffled);
        let (ra, rb) = (a.rhythm(&model), b.rhythm(&model));
        prop_assert!(close(ra.gap_ms, rb.gap_ms, 1e-9), "{ra:?} vs {rb:?}");
        prop_assert!(close(ra.evidence, rb.evidence, 1e-9), "{ra:?} vs {rb:?}");
        let rhythm_points = |state: &CustomerState, at: i64| {
            state
                .factor_values(&model, at)
                .iter()
                .find(|v| v.factor == Factor::Rhythm)
                .map(|v| v.value * v.weight)
                .expect("the model scores rhythm")
        };
        let last = a.last_event_ms();
        let (t1, t2) = (last + gap1.min(gap2), last + gap1.max(gap2));
        let (p1, p2) = (rhythm_points(&a, t1), rhythm_points(&a, t2));
        prop_assert!(p2 >= p1, "rhythm points fell from {p1} to {p2}");
        prop_assert!(close(p1, rhythm_points(&b, t1), 1e-9));
    }

    /// A quiet customer is re-scored exactly at each inactivity step and at
    /// each rhythm step its own pace predicts, once each, in order; and the
    /// rhythm points there are the step's points.
    #[test]
    fn timers_fire_at_the_predicted_instants(
        model in random_model(),
        events in prop::collection::vec(raw_event(), 1..40),
    ) {
        let mut store = CustomerStore::new();
        for (kind, t, amount) in &events {
            let event = CustomerEvent {
                customer_id: Cow::Borrowed("c"),
                event_type: Cow::Borrowed(kind),
                timestamp_ms: *t,
                amount: *amount,
                properties: None,
            };
            store.apply(&model, &event, None, true);
        }
        let state = store.get("c").expect("applied").clone();
        let last = state.last_event_ms();
        let rhythm = state.rhythm(&model);
        let mut predicted: Vec<i64> = model
            .inactivity_steps_ms()
            .iter()
            .map(|&(at, _)| last + at)
            .chain(
                model
                    .rhythm_steps()
                    .iter()
                    .filter_map(|&(x, _)| rhythm.silence_ms(x).map(|s| last + s)),
            )
            .filter(|&t| t > last)
            .collect();
        predicted.sort_unstable();
        predicted.dedup();
        let mut fired = Vec::new();
        store.fire_due_timers(&model, i64::MAX / 4, &mut fired);
        let instants: Vec<i64> = fired.iter().map(|f| f.as_of_ms).collect();
        // Steps fire until one opens an at-risk alert (none if the events
        // left one open): an open alert cannot change while the customer is
        // silent, so later steps would decide nothing.
        let expected: Vec<i64> = if state.alert_open() {
            Vec::new()
        } else {
            match fired.iter().position(|f| f.decision.is_some()) {
                Some(k) => predicted[..=k].to_vec(),
                None => predicted,
            }
        };
        prop_assert_eq!(instants, expected);
        if let Some(last) = fired.last() {
            prop_assert!(fired[..fired.len() - 1].iter().all(|f| f.decision.is_none()));
            prop_assert!(last.decision.is_none() || store.get("c").expect("c").alert_open());
        }
        prop_assert_eq!(store.timer_entries(), 0);
        for &(x, points) in model.rhythm_steps() {
            let Some(silence) = rhythm.silence_ms(x) else { continue };
            let at = last + silence;
            let got = model.rhythm_points(at - last, &rhythm);
            prop_assert!((got - points).abs() < 1e-6 * (1.0 + points), "{got} vs {points} at {x} gaps");
        }
        let risks: Vec<f64> = fired.iter().map(|f| f.risk_score).collect();
        prop_assert!(risks.windows(2).all(|w| w[1] >= w[0] - 1e-12), "{risks:?}");
    }
}
