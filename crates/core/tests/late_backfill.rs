//! Late events never open an alert: a backfill read behind the partition's
//! clock — of customers the stream already knows and of customers it has
//! never seen — opens no at-risk alert, neither by itself nor through
//! inactivity timers it arms at steps the clock has already passed (the
//! regression behind issue 31: 98-416 alerts opened by one backfill).

use churn_core::engine::{AlertKind, ApplyOutcome, CustomerStore, StreamClock, TimerFiring};
use churn_core::event::parse_event;
use churn_core::model::RiskModel;
use churn_generate::{GenerateConfig, GeneratedEvent, Generator};

const LATENESS_MS: i64 = 3_600_000;
/// 2025-01-01T00:00:00Z
const T0_MS: i64 = 1_735_689_600_000;
const DAY_MS: i64 = 86_400_000;

fn generated(customers: u32, seed: u64, days: u32) -> Vec<GeneratedEvent> {
    Generator::new(GenerateConfig {
        customers,
        seed,
        start_ms: T0_MS,
        days,
        cutoff_days: days - 1,
        ..GenerateConfig::default()
    })
    .expect("valid generator settings")
    .collect()
}

/// Applies `events` as one partition's stream; returns the at-risk alerts
/// decided (by events or by timers) and every timer firing.
fn stream(
    model: &RiskModel,
    store: &mut CustomerStore,
    clock: &mut StreamClock,
    events: &[GeneratedEvent],
) -> (Vec<(String, i64)>, Vec<TimerFiring>, u64) {
    let mut at_risk = Vec::new();
    let mut all_firings = Vec::new();
    let mut late_events = 0;
    let mut firings = Vec::new();
    for e in events {
        let event = parse_event(&e.line).expect("generated events are valid");
        firings.clear();
        let (outcome, late) = store.apply_in_stream(model, clock, &event, None, &mut firings);
        late_events += u64::from(late);
        // As the worker closes a batch: whatever is due at the watermark fires.
        store.fire_due_timers(model, clock.watermark_ms, &mut firings);
        for f in &firings {
            if let Some(d) = f.decision
                && d.kind == AlertKind::AtRisk
            {
                at_risk.push((store.id(f.customer).to_string(), d.event_time_ms));
            }
        }
        all_firings.extend_from_slice(&firings);
        if let ApplyOutcome::Scored {
            decision: Some(d), ..
        } = outcome
            && d.kind == AlertKind::AtRisk
        {
            at_risk.push((event.customer_id.to_string(), d.event_time_ms));
        }
    }
    (at_risk, all_firings, late_events)
}

#[test]
fn a_backfill_behind_the_clock_opens_no_alert_for_new_or_known_customers() {
    let model = RiskModel::default_model();
    // Live: 200 customers for 60 days (cust-0000000..0199).
    let live = generated(200, 1, 60);
    // Backfill: 500 customers' first 40 days (the first 200 are known,
    // 300 are new), all behind the clock the live stream left.
    let backfill = generated(500, 9, 40);
    let mut store = CustomerStore::new();
    let mut clock = StreamClock::new(LATENESS_MS);
    let (live_alerts, _, _) = stream(&model, &mut store, &mut clock, &live);
    assert!(
        !live_alerts.is_empty(),
        "the live stream alerts (the model is not simply silent)"
    );
    let watermark = clock.watermark_ms;
    assert!(backfill.iter().all(|e| e.timestamp_ms < watermark));
    let known = store.len();
    assert_eq!(known, 200);

    let (opened, firings, late) = stream(&model, &mut store, &mut clock, &backfill);
    assert_eq!(
        late,
        backfill.len() as u64,
        "every backfilled event is late"
    );
    assert_eq!(store.len(), 500, "300 new customers");
    assert_eq!(clock.watermark_ms, watermark, "late events move no clock");
    assert!(
        opened.is_empty(),
        "{} at-risk alerts opened by late events, e.g. {:?}",
        opened.len(),
        &opened[..opened.len().min(5)]
    );
    assert!(
        firings.is_empty(),
        "{} timers fired at steps the clock had passed",
        firings.len()
    );

    // The clock moves on (a live event 30 days later): only steps after the
    // clock the backfill found fire, each at its own time.
    let later = generated(200, 1, 90);
    let after: Vec<GeneratedEvent> = later
        .into_iter()
        .filter(|e| e.timestamp_ms >= T0_MS + 60 * DAY_MS)
        .collect();
    let (_, firings, _) = stream(&model, &mut store, &mut clock, &after);
    assert!(!firings.is_empty());
    assert!(
        firings.iter().all(|f| f.as_of_ms > watermark),
        "a step at or before the clock the backfill met fired: {:?}",
        firings.iter().find(|f| f.as_of_ms <= watermark)
    );
}

#[test]
fn state_after_a_backfill_equals_an_offline_replay() {
    let model = RiskModel::default_model();
    let live = generated(200, 1, 60);
    let backfill = generated(500, 9, 40);
    let mut store = CustomerStore::new();
    let mut clock = StreamClock::new(LATENESS_MS);
    stream(&model, &mut store, &mut clock, &live);
    stream(&model, &mut store, &mut clock, &backfill);
    // Offline (`score`): every event applied, in file order, no clock.
    let mut offline = CustomerStore::new();
    for e in live.iter().chain(&backfill) {
        let event = parse_event(&e.line).expect("valid");
        offline.apply(&model, &event, None, false);
    }
    assert_eq!(offline.len(), store.len());
    let as_of = T0_MS + 61 * DAY_MS;
    for (id, state) in offline.iter() {
        let live_state = store.get(id).expect("held live");
        assert_eq!(live_state.events(), state.events(), "{id}");
        let (a, b) = (live_state.risk(&model, as_of), state.risk(&model, as_of));
        assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{id}: {a} vs {b}");
    }
}
